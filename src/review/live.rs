//! `foreman review --live`: read-only checks of the real deployment.
//!
//! In two steps: `gather` does all the I/O and keeps what it saw in `Facts`
//! (an error is a fact too); `judge` turns facts into checks without any
//! I/O, so every boundary is tested with facts written by hand.
//!
//! Nothing is written: the executor and the activity log are opened
//! read-only, no file or directory is created (whether one could be is
//! asked with access(2)), no request is sent to a webhook (a TCP connect
//! only: a request would be a delivery), and processes are probed with
//! signal 0.

use super::CheckResult;
use crate::activity::ActivityLog;
use crate::config::{Config, ExecutorKind, SinkTarget};
use crate::executor;
use crate::model::{Mode, OnHung, Row, Signal};
use crate::probe::{blindness, boot_facts, BlindnessOptions, BootFacts, Clocks, ProcView};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The live checks, in the order they are reported. Stable: scripts and
/// `--only` use these names.
pub const CHECKS: &[&str] = &[
    "config-coherent",
    "executor-reachable",
    "activity-log",
    "daemon-sweeping",
    "sinks-reachable",
    "clock-sane",
    "permissions",
    "proc-visible",
];

/// Columns of `tasks` the default snapshot query reads.
const SNAPSHOT_COLUMNS: &[&str] = &[
    "id",
    "plan_id",
    "droid_type",
    "state",
    "pid",
    "host",
    "attempt",
    "started_at",
    "last_progress_at",
    "finished_at",
    "error",
];

/// Columns of `tasks` the default mark-failed query reads or writes.
const MARK_COLUMNS: &[&str] = &["id", "state", "pid", "attempt", "finished_at", "error"];

/// CLOCK_REALTIME − CLOCK_BOOTTIME is the wall-clock time of boot; the
/// kernel's `btime` is the same instant truncated to whole seconds. More
/// apart than this, one of the clocks (or the boot time read) is wrong.
const BOOT_TOLERANCE: Duration = Duration::from_secs(2);

/// The snapshot may take the executor's timeout; this much more is given
/// for the executor's own timeout to report first (its error says more).
const SNAPSHOT_GRACE: Duration = Duration::from_secs(2);

/// Failures listed one by one in evidence; the rest are counted.
const EVIDENCE_LIMIT: usize = 20;

const CAP_KILL: u32 = 5;
const CAP_SYS_PTRACE: u32 = 19;

// ------------------------------------------------------------------ facts

/// Everything the live checks judge, as gathered from the deployment.
#[derive(Debug, Clone)]
pub struct Facts {
    pub config: ConfigFacts,
    pub executor: ExecutorFacts,
    pub activity: ActivityFacts,
    pub sinks: Vec<SinkFacts>,
    pub clock: ClockFacts,
    pub processes: ProcessFacts,
    /// How long gathering each check's facts took, by check name.
    pub spent: BTreeMap<&'static str, Duration>,
}

#[derive(Debug, Clone)]
pub struct ConfigFacts {
    pub source: PathBuf,
    pub host: String,
    pub interval: Duration,
    /// `[defaults]` first, then each `[droid_types.NAME]`.
    pub policies: Vec<PolicySummary>,
    pub executor: ExecutorTarget,
    pub activity_path: PathBuf,
    /// The activity log's directory.
    pub activity_dir: DirState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicySummary {
    /// `[defaults]` or the droid type's name.
    pub name: String,
    pub mode: Mode,
    pub timeout: Duration,
    pub progress: Vec<Signal>,
    pub on_hung: OnHung,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorTarget {
    Sqlite {
        path: PathBuf,
        entry: Entry,
    },
    /// Each command's key (`snapshot_command`, `mark_failed_command`), its
    /// program, and where it resolved.
    Command {
        programs: Vec<(&'static str, String, Result<PathBuf, String>)>,
    },
}

/// What is at a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    File,
    Dir,
    Other,
    Missing,
    Unreadable(String),
}

/// A directory Foreman must create files in.
#[derive(Debug, Clone, PartialEq)]
pub enum DirState {
    /// Exists, and this user may create files in it.
    Writable,
    /// Exists; access(W_OK|X_OK) says why not.
    NotWritable(String),
    /// Does not exist; whether this user could create it in its nearest
    /// existing ancestor.
    Missing {
        ancestor: PathBuf,
        creatable: Result<(), String>,
    },
    NotADirectory,
    Unreadable(String),
}

#[derive(Debug, Clone)]
pub struct ExecutorFacts {
    pub kind: ExecutorKind,
    pub timeout: Duration,
    /// How long the snapshot took (or was waited for).
    pub elapsed: Duration,
    pub snapshot: SnapshotFacts,
    /// The `tasks` table's columns, when default queries are in use on an
    /// SQLite executor.
    pub columns: Option<ColumnFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotFacts {
    Taken {
        rows: usize,
        running: usize,
        /// (id, reason) of each row that did not parse.
        bad: Vec<(String, String)>,
    },
    Failed(String),
    /// No answer within the timeout and its grace.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnFacts {
    pub needed: Vec<&'static str>,
    /// The columns of `tasks` (empty: no such table).
    pub found: Result<Vec<String>, String>,
}

#[derive(Debug, Clone)]
pub struct ActivityFacts {
    pub path: PathBuf,
    pub open: LogOpen,
    /// Each path a writer needs to write (the file, its directory, the WAL
    /// and shared-memory files when present) and whether this user may.
    pub writable: Vec<(PathBuf, Result<(), String>)>,
    /// The last sweep that finished.
    pub last_finished: Result<Option<SweepRow>, String>,
    /// The last sweep recorded, finished or not.
    pub latest: Result<Option<SweepRow>, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogOpen {
    Missing,
    /// The file exists but holds no schema yet.
    NoSchema,
    Opened {
        version: i64,
    },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub id: i64,
    pub kind: String,
    pub host: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub realtime_ns: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SinkFacts {
    /// `alerts` or `wellbeing.sinks`.
    pub list: &'static str,
    pub name: String,
    pub timeout: Duration,
    pub probe: SinkProbe,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkProbe {
    Webhook {
        /// `host:port`, or why the URL gives none.
        target: Result<String, String>,
        /// The address connected to, or why none could be.
        connect: Result<SocketAddr, String>,
        /// The proxy variable set in this environment, if any: deliveries
        /// may go through it, this check connects directly.
        proxy_env: Option<String>,
        /// `bearer_token_env` and whether it is set here.
        token_env: Option<(String, bool)>,
    },
    Command {
        program: String,
        resolved: Result<PathBuf, String>,
    },
    File {
        dir: PathBuf,
        state: DirState,
    },
}

#[derive(Debug, Clone)]
pub struct ClockFacts {
    pub boot: Result<BootFacts, String>,
    pub clocks: Clocks,
}

#[derive(Debug, Clone)]
pub struct ProcessFacts {
    pub euid: u32,
    /// `CapEff` of this process.
    pub cap_eff: Option<u64>,
    /// RUNNING tasks of this host with a pid; `None` without a snapshot.
    pub tasks: Option<Vec<ProcFacts>>,
    /// What `/proc` shows Foreman (probe.rs, "/proc blindness").
    pub proc_view: ProcView,
    /// What the operator vouches for about it.
    pub proc_options: BlindnessOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcFacts {
    pub task_id: String,
    pub droid_type: String,
    pub pid: i32,
    /// The process's owner.
    pub uid: Option<u32>,
    /// Reading `/proc/PID/io`.
    pub io: Access,
    /// kill(pid, 0).
    pub signal: Access,
    /// Its policy terminates hung tasks (enforce, on_hung = terminate).
    pub terminates: bool,
    /// Its policy counts I/O as progress.
    pub counts_io: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Granted,
    Denied(String),
    /// The process is gone.
    Gone,
}

// ----------------------------------------------------------------- gather

/// Run the live checks against the deployment `config` describes.
pub fn run(config: &Config) -> Vec<CheckResult> {
    let facts = gather(config);
    let mut checks = judge(&facts, Utc::now());
    for c in &mut checks {
        if let Some(d) = facts.spent.get(c.name.as_str()) {
            c.duration_ms = d.as_millis() as u64;
        }
    }
    checks
}

/// Every fact the checks judge. Reads only.
pub fn gather(config: &Config) -> Facts {
    let mut spent = BTreeMap::new();

    let t = Instant::now();
    let config_facts = gather_config(config);
    spent.insert("config-coherent", t.elapsed());

    let t = Instant::now();
    let (executor, running) = gather_executor(config);
    spent.insert("executor-reachable", t.elapsed());

    let t = Instant::now();
    let (activity, sweeps_took) = gather_activity(&config.activity.path);
    spent.insert("activity-log", t.elapsed().saturating_sub(sweeps_took));
    spent.insert("daemon-sweeping", sweeps_took);

    let t = Instant::now();
    let sinks = config
        .alerts
        .iter()
        .map(|s| ("alerts", s))
        .chain(
            config
                .wellbeing
                .sinks
                .iter()
                .map(|s| ("wellbeing.sinks", s)),
        )
        .collect::<Vec<_>>();
    // Each sink at once: the slowest timeout bounds the wait, not their sum.
    let sinks = std::thread::scope(|scope| {
        let probes: Vec<_> = sinks
            .iter()
            .map(|(_, s)| scope.spawn(|| probe_sink(&s.target, s.timeout)))
            .collect();
        sinks
            .iter()
            .zip(probes)
            .map(|((list, s), probe)| SinkFacts {
                list,
                name: s.name.clone(),
                timeout: s.timeout,
                probe: probe
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            })
            .collect()
    });
    spent.insert("sinks-reachable", t.elapsed());

    let t = Instant::now();
    let clock = ClockFacts {
        boot: boot_facts().map_err(|e| format!("{e:#}")),
        clocks: Clocks::now(),
    };
    spent.insert("clock-sane", t.elapsed());

    let t = Instant::now();
    let proc_view = ProcView::read(Path::new("/proc"));
    spent.insert("proc-visible", t.elapsed());

    let t = Instant::now();
    let processes = ProcessFacts {
        // SAFETY: geteuid has no preconditions and cannot fail.
        euid: unsafe { libc::geteuid() },
        cap_eff: cap_eff(),
        tasks: running.map(|tasks| {
            tasks
                .into_iter()
                .map(|(task_id, droid_type, pid)| {
                    let p = config.policy(&droid_type);
                    let (uid, io, signal) = probe_process(pid);
                    ProcFacts {
                        task_id,
                        pid,
                        uid,
                        io,
                        signal,
                        terminates: p.mode == Mode::Enforce && p.on_hung == OnHung::Terminate,
                        counts_io: p.counts(Signal::Io),
                        droid_type,
                    }
                })
                .collect()
        }),
        proc_view,
        // As the sweep judges it: `[executor] shared_pid_namespace` is the
        // only word of the operator's taken.
        proc_options: BlindnessOptions {
            shared_pid_namespace: config.executor.shared_pid_namespace,
        },
    };
    spent.insert("permissions", t.elapsed());

    Facts {
        config: config_facts,
        executor,
        activity,
        sinks,
        clock,
        processes,
        spent,
    }
}

fn gather_config(config: &Config) -> ConfigFacts {
    let summary = |name: &str, p: &crate::config::Policy| PolicySummary {
        name: name.to_string(),
        mode: p.mode,
        timeout: p.timeout,
        progress: p.progress.clone(),
        on_hung: p.on_hung,
    };
    let mut policies = vec![summary("[defaults]", &config.defaults)];
    policies.extend(config.droid_types.iter().map(|(n, p)| summary(n, p)));
    let e = &config.executor;
    let executor = match e.kind {
        ExecutorKind::Sqlite => {
            let path = e.path.clone().unwrap_or_default();
            ExecutorTarget::Sqlite {
                entry: entry(&path),
                path,
            }
        }
        ExecutorKind::Command => ExecutorTarget::Command {
            programs: [
                ("snapshot_command", &e.snapshot_command),
                ("mark_failed_command", &e.mark_failed_command),
            ]
            .into_iter()
            .map(|(key, argv)| {
                let program = argv.first().cloned().unwrap_or_default();
                let resolved = resolve_program(&program);
                (key, program, resolved)
            })
            .collect(),
        },
    };
    let activity_path = config.activity.path.clone();
    let dir = activity_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ConfigFacts {
        source: config.source.clone(),
        host: config.host.clone(),
        interval: config.interval,
        policies,
        executor,
        activity_dir: dir_state(dir),
        activity_path,
    }
}

type Running = Vec<(String, String, i32)>;

/// The executor's facts, and the RUNNING tasks of this host with a pid
/// (id, droid type, pid) when the snapshot was taken.
fn gather_executor(config: &Config) -> (ExecutorFacts, Option<Running>) {
    let e = &config.executor;
    let columns = match (e.kind, &e.path) {
        (ExecutorKind::Sqlite, Some(path)) => {
            let mut needed: Vec<&'static str> = Vec::new();
            if e.snapshot_query.is_none() {
                needed.extend(SNAPSHOT_COLUMNS);
            }
            if e.mark_failed_query.is_none() {
                for c in MARK_COLUMNS {
                    if !needed.contains(c) {
                        needed.push(c);
                    }
                }
            }
            (!needed.is_empty()).then(|| ColumnFacts {
                needed,
                found: task_columns(path, e.timeout),
            })
        }
        _ => None,
    };
    let start = Instant::now();
    let outcome = match executor::open(config) {
        Err(e) => Err(format!("{e:#}")),
        Ok(exec) => {
            let (tx, rx) = std::sync::mpsc::channel();
            // A snapshot that never returns is left behind: it only reads,
            // and the review ends soon after.
            std::thread::spawn(move || {
                let _ = tx.send(exec.snapshot());
            });
            match rx.recv_timeout(e.timeout + SNAPSHOT_GRACE) {
                Ok(Ok(s)) => Ok(Some(s)),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Ok(None),
            }
        }
    };
    let elapsed = start.elapsed();
    let (snapshot, running) = match outcome {
        Err(why) => (SnapshotFacts::Failed(why), None),
        Ok(None) => (SnapshotFacts::TimedOut, None),
        Ok(Some(s)) => {
            let bad = s
                .rows
                .iter()
                .filter_map(|r| match r {
                    Row::Bad(b) => Some((b.id.clone(), b.reason.clone())),
                    Row::Task(_) => None,
                })
                .collect();
            let running: Running = s
                .running()
                .filter(|t| t.host.as_deref().is_none_or(|h| h == config.host))
                .filter_map(|t| t.pid.map(|p| (t.id.clone(), t.droid_type.clone(), p)))
                .collect();
            (
                SnapshotFacts::Taken {
                    rows: s.rows.len(),
                    running: s.running().count(),
                    bad,
                },
                Some(running),
            )
        }
    };
    (
        ExecutorFacts {
            kind: e.kind,
            timeout: e.timeout,
            elapsed,
            snapshot,
            columns,
        },
        running,
    )
}

/// The columns of `tasks`, read-only (never creates the file).
fn task_columns(path: &Path, timeout: Duration) -> Result<Vec<String>, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening {} read-only: {e}", path.display()))?;
    conn.busy_timeout(timeout).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('tasks')")
        .map_err(|e| format!("reading the columns of tasks: {e}"))?;
    stmt.query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the columns of tasks: {e}"))
}

/// The activity log's facts, and how long reading its sweeps took.
fn gather_activity(path: &Path) -> (ActivityFacts, Duration) {
    let mut writable = Vec::new();
    let mut sweeps_took = Duration::ZERO;
    let none = || Ok(None);
    let (open, last_finished, latest) = if !path.exists() {
        (LogOpen::Missing, none(), none())
    } else {
        match ActivityLog::open_read_only(path) {
            Ok(None) => (LogOpen::NoSchema, none(), none()),
            Err(e) => {
                let why = format!("{e:#}");
                (LogOpen::Failed(why.clone()), Err(why.clone()), Err(why))
            }
            Ok(Some(log)) => {
                let version = log
                    .conn()
                    .pragma_query_value(None, "user_version", |r| r.get(0))
                    .unwrap_or(0);
                let t = Instant::now();
                let sweep = |filter: &str| {
                    log.conn()
                        .query_row(
                            &format!(
                                "SELECT id, kind, host, started_at, finished_at, clock_realtime_ns
                                 FROM sweeps {filter} ORDER BY id DESC LIMIT 1"
                            ),
                            [],
                            |r| {
                                Ok(SweepRow {
                                    id: r.get(0)?,
                                    kind: r.get(1)?,
                                    host: r.get(2)?,
                                    started_at: r.get(3)?,
                                    finished_at: r.get(4)?,
                                    realtime_ns: r.get(5)?,
                                })
                            },
                        )
                        .optional()
                        .map_err(|e| format!("reading the sweeps of {}: {e}", path.display()))
                };
                let finished = sweep("WHERE finished_at IS NOT NULL");
                let latest = sweep("");
                sweeps_took = t.elapsed();
                (LogOpen::Opened { version }, finished, latest)
            }
        }
    };
    if open != LogOpen::Missing {
        writable.push((path.to_path_buf(), access(path, libc::W_OK)));
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        writable.push((dir.to_path_buf(), access(dir, libc::W_OK | libc::X_OK)));
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                writable.push((p.clone(), access(&p, libc::W_OK)));
            }
        }
    }
    (
        ActivityFacts {
            path: path.to_path_buf(),
            open,
            writable,
            last_finished,
            latest,
        },
        sweeps_took,
    )
}

const PROXY_VARS: &[&str] = &[
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

fn probe_sink(target: &SinkTarget, timeout: Duration) -> SinkProbe {
    match target {
        SinkTarget::Webhook {
            url,
            bearer_token_env,
            ..
        } => {
            let target = host_port(url);
            let connect = match &target {
                Err(e) => Err(e.clone()),
                Ok(hp) => connect(hp, timeout),
            };
            SinkProbe::Webhook {
                target,
                connect,
                proxy_env: PROXY_VARS
                    .iter()
                    .find(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
                    .map(|v| v.to_string()),
                token_env: bearer_token_env
                    .as_ref()
                    .map(|v| (v.clone(), std::env::var_os(v).is_some())),
            }
        }
        SinkTarget::Command { argv } => {
            let program = argv.first().cloned().unwrap_or_default();
            SinkProbe::Command {
                resolved: resolve_program(&program),
                program,
            }
        }
        SinkTarget::File { dir } => SinkProbe::File {
            dir: dir.clone(),
            state: dir_state(dir),
        },
    }
}

/// `host:port` of an http(s) URL (the scheme's port when none is given).
fn host_port(url: &str) -> Result<String, String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("the URL does not parse: {e}"))?;
    let host = uri.host().ok_or("the URL names no host")?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, _) => 80,
    };
    Ok(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// A TCP connect to any address of `host:port` within `timeout` (in all);
/// closed at once, nothing sent.
fn connect(host_port: &str, timeout: Duration) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host_port} resolves to no address"));
    }
    let mut errors = Vec::new();
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            errors.push(format!(
                "{addr}: not tried, the timeout ({}) was spent",
                humantime::format_duration(timeout)
            ));
            continue;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(addr),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// Where `Command::new(program)` would find it, if it is an executable file:
/// a path with a `/` as given, else the first match on `$PATH`.
fn resolve_program(program: &str) -> Result<PathBuf, String> {
    if program.is_empty() {
        return Err("no program given".into());
    }
    let executable = |p: &Path| -> Result<(), String> {
        match std::fs::metadata(p) {
            Err(e) => Err(e.to_string()),
            Ok(m) if !m.is_file() => Err("not a regular file".into()),
            Ok(_) => access(p, libc::X_OK).map_err(|e| format!("not executable: {e}")),
        }
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).map(|_| p).map_err(|e| {
            let relative = if program.starts_with('/') {
                ""
            } else {
                " (a relative path: resolved against the working directory)"
            };
            format!("{program}{relative}: {e}")
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let p = dir.join(program);
        if executable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!(
        "{program} is not an executable file on this PATH ({})",
        path.to_string_lossy()
    ))
}

fn entry(path: &Path) -> Entry {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Entry::File,
        Ok(m) if m.is_dir() => Entry::Dir,
        Ok(_) => Entry::Other,
        Err(e) if e.kind() == ErrorKind::NotFound => Entry::Missing,
        Err(e) => Entry::Unreadable(e.to_string()),
    }
}

fn dir_state(dir: &Path) -> DirState {
    match entry(dir) {
        Entry::Dir => match access(dir, libc::W_OK | libc::X_OK) {
            Ok(()) => DirState::Writable,
            Err(e) => DirState::NotWritable(e),
        },
        Entry::File | Entry::Other => DirState::NotADirectory,
        Entry::Unreadable(e) => DirState::Unreadable(e),
        Entry::Missing => {
            let mut ancestor = dir;
            while let Some(up) = ancestor.parent() {
                ancestor = if up.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    up
                };
                if entry(ancestor) != Entry::Missing || ancestor == Path::new(".") {
                    break;
                }
            }
            let creatable = match entry(ancestor) {
                Entry::Dir => access(ancestor, libc::W_OK | libc::X_OK),
                Entry::Missing => Err("no existing ancestor".into()),
                Entry::Unreadable(e) => Err(e),
                Entry::File | Entry::Other => Err("not a directory".into()),
            };
            DirState::Missing {
                ancestor: ancestor.to_path_buf(),
                creatable,
            }
        }
    }
}

/// access(2): may this user (real ids) do `mode` on `path`? Never writes.
fn access(path: &Path, mode: libc::c_int) -> Result<(), String> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} holds a NUL byte", path.display()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

fn cap_eff() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A process's owner, whether its `/proc/PID/io` reads, and whether it may
/// be signalled (signal 0: nothing is delivered).
fn probe_process(pid: i32) -> (Option<u32>, Access, Access) {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let uid = match std::fs::metadata(&dir) {
        Ok(m) => Some(m.uid()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return (None, Access::Gone, Access::Gone);
        }
        Err(_) => None,
    };
    let io = match std::fs::read_to_string(dir.join("io")) {
        Ok(_) => Access::Granted,
        Err(e) if e.kind() == ErrorKind::NotFound => Access::Gone,
        Err(e) => Access::Denied(e.to_string()),
    };
    // SAFETY: kill(2) with signal 0 delivers nothing; it only checks.
    let signal = if unsafe { libc::kill(pid, 0) } == 0 {
        Access::Granted
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            Access::Gone
        } else {
            Access::Denied(e.to_string())
        }
    };
    (uid, io, signal)
}

// ------------------------------------------------------------------ judge

/// The checks, in `CHECKS` order, from facts alone.
pub fn judge(f: &Facts, now: DateTime<Utc>) -> Vec<CheckResult> {
    vec![
        config_coherent(f),
        executor_reachable(f),
        activity_log(f),
        daemon_sweeping(f, now),
        sinks_reachable(f),
        clock_sane(f, now),
        permissions(f),
        proc_visible(f),
    ]
}

fn human(d: Duration) -> String {
    // Whole milliseconds: nanoseconds are noise here.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

fn on_hung_str(h: OnHung) -> &'static str {
    match h {
        OnHung::Terminate => "terminate",
        OnHung::MarkOnly => "mark_only",
    }
}

fn dir_problem(what: &str, dir: &Path, state: &DirState) -> Option<String> {
    let d = dir.display();
    match state {
        DirState::Writable => None,
        DirState::Missing {
            creatable: Ok(()), ..
        } => None,
        DirState::Missing {
            ancestor,
            creatable: Err(e),
        } => Some(format!(
            "{what} {d} does not exist and cannot be created by this user in {} ({e})",
            ancestor.display()
        )),
        DirState::NotWritable(e) => Some(format!("{what} {d} is not writable by this user ({e})")),
        DirState::NotADirectory => Some(format!("{what} {d} is not a directory")),
        DirState::Unreadable(e) => Some(format!("{what} {d} cannot be inspected ({e})")),
    }
}

fn config_coherent(f: &Facts) -> CheckResult {
    const NAME: &str = "config-coherent";
    let c = &f.config;
    let mut problems = Vec::new();
    let executor = match &c.executor {
        ExecutorTarget::Sqlite { path, entry } => {
            let p = path.display();
            match entry {
                Entry::File => {}
                Entry::Missing => problems.push(format!(
                    "executor.path {p} does not exist (Foreman never creates the executor's database)"
                )),
                Entry::Dir => problems.push(format!(
                    "executor.path {p} is a directory, not the executor's SQLite file"
                )),
                Entry::Other => problems.push(format!("executor.path {p} is not a regular file")),
                Entry::Unreadable(e) => {
                    problems.push(format!("executor.path {p} cannot be inspected ({e})"))
                }
            }
            format!("sqlite {p}")
        }
        ExecutorTarget::Command { programs } => {
            for (key, program, resolved) in programs {
                if let Err(e) = resolved {
                    problems.push(format!("executor.{key} {program:?}: {e}"));
                }
            }
            let names: Vec<&str> = programs.iter().map(|(_, p, _)| p.as_str()).collect();
            format!("command {}", names.join(" / "))
        }
    };
    let dir = c
        .activity_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    problems.extend(dir_problem(
        "the activity log's directory",
        dir,
        &c.activity_dir,
    ));
    if !problems.is_empty() {
        return CheckResult::fail(
            NAME,
            format!(
                "{} loaded, but: {}",
                c.source.display(),
                problems.join("; ")
            ),
            json!({
                "expected": "the executor's database or commands present, the activity log's directory present (or creatable) and writable by this user",
                "found": problems,
            }),
        );
    }
    let policies: Vec<String> = c
        .policies
        .iter()
        .map(|p| {
            let signals: Vec<&str> = p.progress.iter().map(|s| s.as_str()).collect();
            format!(
                "{} ({}, timeout {}, progress {}, on_hung {})",
                p.name,
                mode_str(p.mode),
                human(p.timeout),
                signals.join("+"),
                on_hung_str(p.on_hung)
            )
        })
        .collect();
    let dir_note = match &c.activity_dir {
        DirState::Missing { .. } => format!(
            "; the activity log's directory {} does not exist yet, and the daemon's first write can create it",
            dir.display()
        ),
        _ => String::new(),
    };
    CheckResult::pass(
        NAME,
        format!(
            "{} loaded: host {:?}, interval {}, executor {executor}; {}{dir_note}",
            c.source.display(),
            c.host,
            human(c.interval),
            policies.join(", ")
        ),
    )
}

fn executor_reachable(f: &Facts) -> CheckResult {
    const NAME: &str = "executor-reachable";
    let e = &f.executor;
    let mut problems = Vec::new();
    let mut evidence = serde_json::Map::new();
    let mut missing_columns = Vec::new();
    if let Some(cols) = &e.columns {
        match &cols.found {
            Err(why) => problems.push(format!("the tasks table's columns are unreadable: {why}")),
            Ok(found) if found.is_empty() => {
                problems.push("the executor's database has no tasks table".to_string());
                missing_columns = cols.needed.clone();
            }
            Ok(found) => {
                missing_columns = cols
                    .needed
                    .iter()
                    .copied()
                    .filter(|n| !found.iter().any(|f| f.eq_ignore_ascii_case(n)))
                    .collect();
                if !missing_columns.is_empty() {
                    problems.push(format!(
                        "tasks lacks column(s) the default queries need: {}",
                        missing_columns.join(", ")
                    ));
                }
            }
        }
        if !missing_columns.is_empty() {
            evidence.insert("columns_needed".into(), json!(cols.needed));
            evidence.insert("columns_missing".into(), json!(missing_columns));
            evidence.insert(
                "columns_found".into(),
                json!(cols.found.as_ref().ok().cloned().unwrap_or_default()),
            );
        }
    }
    let took = human(e.elapsed);
    let timeout = human(e.timeout);
    let mut summary = String::new();
    match &e.snapshot {
        SnapshotFacts::Failed(why) => {
            problems.push(format!("the snapshot failed after {took}: {why}"));
            evidence.insert("snapshot_error".into(), json!(why));
        }
        SnapshotFacts::TimedOut => {
            problems.push(format!(
                "no snapshot within {} (executor.timeout {timeout})",
                human(e.elapsed)
            ));
        }
        SnapshotFacts::Taken { rows, running, bad } => {
            if e.elapsed > e.timeout {
                problems.push(format!(
                    "the snapshot took {took}, longer than executor.timeout ({timeout})"
                ));
            }
            if !bad.is_empty() {
                let listed: Vec<String> = bad
                    .iter()
                    .take(EVIDENCE_LIMIT)
                    .map(|(id, why)| format!("{id}: {why}"))
                    .collect();
                problems.push(format!(
                    "{} of {rows} row(s) malformed, each judged unverifiable and never supervised: {}{}",
                    bad.len(),
                    listed.join("; "),
                    if bad.len() > EVIDENCE_LIMIT { "; …" } else { "" }
                ));
                evidence.insert("malformed_rows".into(), json!(bad.len()));
                evidence.insert(
                    "malformed".into(),
                    Value::Array(
                        bad.iter()
                            .take(EVIDENCE_LIMIT)
                            .map(|(id, why)| json!({"id": id, "reason": why}))
                            .collect(),
                    ),
                );
            }
            summary = format!("snapshot of {rows} row(s), {running} RUNNING, in {took} (executor.timeout {timeout})");
        }
    }
    if !problems.is_empty() {
        evidence.insert(
            "expected".into(),
            json!(format!(
                "a snapshot within executor.timeout ({timeout}) whose every row parses{}",
                if e.columns.is_some() {
                    ", from a tasks table with every column the default queries need"
                } else {
                    ""
                }
            )),
        );
        evidence.insert("found".into(), json!(problems));
        evidence.insert("elapsed_ms".into(), json!(e.elapsed.as_millis() as u64));
        return CheckResult::fail(NAME, problems.join("; "), Value::Object(evidence));
    }
    let columns = match &e.columns {
        Some(c) => format!(
            "; tasks has the {} columns the default queries need",
            c.needed.len()
        ),
        None if e.kind == ExecutorKind::Sqlite => {
            "; custom queries: their columns are not checked beyond the snapshot parsing".into()
        }
        None => String::new(),
    };
    CheckResult::pass(NAME, format!("{summary}; every row parses{columns}"))
}

fn activity_log(f: &Facts) -> CheckResult {
    const NAME: &str = "activity-log";
    let a = &f.activity;
    let p = a.path.display();
    let denied: Vec<(&PathBuf, &String)> = a
        .writable
        .iter()
        .filter_map(|(path, r)| r.as_ref().err().map(|e| (path, e)))
        .collect();
    let denied_text = denied
        .iter()
        .map(|(path, e)| format!("{} ({e})", path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let denied_json: Vec<Value> = denied
        .iter()
        .map(|(path, e)| json!({"path": path, "error": e}))
        .collect();
    let version = match &a.open {
        LogOpen::Missing => {
            return CheckResult::fail(
                NAME,
                format!("no activity log at {p}: the daemon has not run yet, or activity.path points elsewhere"),
                json!({"expected": "the daemon's activity log", "found": "no file", "path": a.path}),
            )
        }
        LogOpen::NoSchema => {
            return CheckResult::fail(
                NAME,
                format!("{p} holds no schema yet: run a command that writes (e.g. `foreman sweep`) to migrate it"),
                json!({"expected": "a migrated activity log", "found": "schema version 0", "path": a.path}),
            )
        }
        LogOpen::Failed(why) => {
            // A WAL database cannot even be read by a user who may not
            // create its -shm file: say so when that is the likely cause.
            let also = if denied.is_empty() {
                String::new()
            } else {
                format!("; this user cannot write {denied_text}, which a WAL log needs even to be read")
            };
            return CheckResult::fail(
                NAME,
                format!("cannot use {p}: {why}{also}"),
                json!({"expected": "an activity log at this Foreman's schema version, readable and writable by this user", "found": why, "path": a.path, "not_writable": denied_json}),
            );
        }
        LogOpen::Opened { version } => *version,
    };
    if !denied.is_empty() {
        return CheckResult::fail(
            NAME,
            format!(
                "{p} is at schema version {version}, but this user cannot write {denied_text}: the daemon and `foreman sweep` could not record"
            ),
            json!({"expected": "the log, its directory, and its -wal/-shm files writable by this user (access W_OK)", "found": denied_json}),
        );
    }
    CheckResult::pass(
        NAME,
        format!("{p} opens read-only at schema version {version}; it and its directory are writable by this user (access W_OK, nothing written)"),
    )
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn daemon_sweeping(f: &Facts, now: DateTime<Utc>) -> CheckResult {
    const NAME: &str = "daemon-sweeping";
    let limit = f.config.interval * 2;
    let a = &f.activity;
    let p = a.path.display();
    let expected = format!("a sweep finished within 2 × interval ({})", human(limit));
    let row = match &a.last_finished {
        Err(why) => {
            return CheckResult::fail(
                NAME,
                format!("cannot read the sweeps of {p}: {why}"),
                json!({"expected": expected, "found": why}),
            )
        }
        Ok(None) => {
            let why = match a.open {
                LogOpen::Missing => format!("no activity log at {p}: is the daemon running?"),
                _ => format!("no finished sweep recorded in {p}: is the daemon running?"),
            };
            return CheckResult::fail(
                NAME,
                why,
                json!({"expected": expected, "found": "no sweep"}),
            );
        }
        Ok(Some(r)) => r,
    };
    let finished = row.finished_at.as_deref().unwrap_or_default();
    let Some(at) = parse_time(finished) else {
        return CheckResult::fail(
            NAME,
            format!(
                "sweep #{} has an unreadable finished_at {finished:?}",
                row.id
            ),
            json!({"expected": expected, "found": {"sweep_id": row.id, "finished_at": finished}}),
        );
    };
    let what = format!("sweep #{} ({}, host {:?})", row.id, row.kind, row.host);
    let age = now - at;
    let Ok(age) = age.to_std() else {
        return CheckResult::pass(
            NAME,
            format!(
                "the last {what} finished at {finished}, which is in the future (see clock-sane)"
            ),
        );
    };
    if age <= limit {
        CheckResult::pass(
            NAME,
            format!(
                "the last {what} finished at {finished}, {} ago (within 2 × interval = {})",
                human(age),
                human(limit)
            ),
        )
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "the last {what} finished at {finished}, {} ago, more than 2 × interval ({}): is the daemon running?",
                human(age),
                human(limit)
            ),
            json!({
                "expected": expected,
                "found": {"sweep_id": row.id, "kind": row.kind, "finished_at": finished, "age_ms": age.as_millis() as u64},
                "limit_ms": limit.as_millis() as u64,
            }),
        )
    }
}

fn sinks_reachable(f: &Facts) -> CheckResult {
    const NAME: &str = "sinks-reachable";
    if f.sinks.is_empty() {
        return CheckResult::skip(NAME, "no [[alerts]] or [[wellbeing.sinks]] sink configured");
    }
    let mut ok = Vec::new();
    let mut notes = Vec::new();
    let mut bad = Vec::new();
    for s in &f.sinks {
        let who = format!("{}: {:?}", s.list, s.name);
        match &s.probe {
            SinkProbe::Webhook {
                target,
                connect,
                proxy_env,
                token_env,
            } => {
                let hp = target.as_deref().unwrap_or("?");
                match connect {
                    Ok(addr) => ok.push(format!(
                        "{who} webhook {hp} accepted a TCP connection ({addr})"
                    )),
                    Err(e) => bad.push((
                        who.clone(),
                        "webhook",
                        format!(
                            "no TCP connection to {hp} within its timeout ({}): {e}",
                            human(s.timeout)
                        ),
                    )),
                }
                if let Some(v) = proxy_env {
                    notes.push(format!("{who}: {v} is set here, so deliveries may go through that proxy; this check connected directly"));
                }
                if let Some((var, false)) = token_env {
                    notes.push(format!("{who}: bearer_token_env {var} is not set in this environment (the daemon's may differ)"));
                }
            }
            SinkProbe::Command { resolved, .. } => match resolved {
                Ok(p) => ok.push(format!("{who} command {} is executable", p.display())),
                Err(e) => bad.push((who.clone(), "command", e.clone())),
            },
            SinkProbe::File { dir, state } => match dir_problem("the directory", dir, state) {
                None => {
                    let note = if matches!(state, DirState::Missing { .. }) {
                        " (missing: the first delivery creates it)"
                    } else {
                        ""
                    };
                    ok.push(format!(
                        "{who} file sink {} is writable{note}",
                        dir.display()
                    ))
                }
                Some(e) => bad.push((who.clone(), "file", e)),
            },
        }
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; note: {}", notes.join("; "))
    };
    let how = "webhooks tried by TCP connect only, no request sent (a request would be a delivery)";
    if bad.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{} sink(s) reachable; {how}: {}{notes}",
                ok.len(),
                ok.join("; ")
            ),
        )
    } else {
        let list: Vec<String> = bad.iter().map(|(w, _, e)| format!("{w}: {e}")).collect();
        CheckResult::fail(
            NAME,
            format!(
                "{} of {} sink(s) unreachable; {how}: {}{notes}",
                bad.len(),
                f.sinks.len(),
                list.join("; ")
            ),
            json!({
                "expected": "webhooks accept a TCP connection within their timeout, commands resolve to an executable file, file sinks' directories are writable",
                "found": bad.iter().map(|(w, k, e)| json!({"sink": w, "kind": k, "error": e})).collect::<Vec<_>>(),
            }),
        )
    }
}

fn clock_sane(f: &Facts, now: DateTime<Utc>) -> CheckResult {
    const NAME: &str = "clock-sane";
    let c = &f.clock;
    let boot = match &c.boot {
        Ok(b) => b,
        Err(e) => {
            return CheckResult::fail(
                NAME,
                format!("the boot time is unreadable: {e}"),
                json!({"expected": "the boot id and boot time", "found": e}),
            )
        }
    };
    let mut problems = Vec::new();
    let mut evidence = serde_json::Map::new();
    if now <= boot.boot_time {
        problems.push(format!(
            "the wall clock ({}) is not after the boot time ({})",
            crate::activity::ts(now),
            crate::activity::ts(boot.boot_time)
        ));
        evidence.insert("now".into(), json!(crate::activity::ts(now)));
        evidence.insert(
            "boot_time".into(),
            json!(crate::activity::ts(boot.boot_time)),
        );
    }
    let k = c.clocks;
    // REALTIME − BOOTTIME: the wall-clock instant of boot as the clocks say.
    let clocks_boot_ns = k.realtime_ns as i128 - k.boottime_ns as i128;
    // The kernel's boot instant is where tick 0 falls: `boot_time` itself
    // on a real host, earlier under the tests' boot override
    // (`ticks_at_boot`), which the clocks know nothing of.
    let kernel_boot = boot.started_at(0);
    let btime_ns = kernel_boot.timestamp() as i128 * 1_000_000_000
        + kernel_boot.timestamp_subsec_nanos() as i128;
    let apart_ns = (clocks_boot_ns - btime_ns).unsigned_abs();
    let apart = Duration::from_nanos(apart_ns.min(u64::MAX as u128) as u64);
    if apart > BOOT_TOLERANCE {
        problems.push(format!(
            "CLOCK_REALTIME − CLOCK_BOOTTIME puts boot {} away from the kernel's boot time (more than {})",
            human(apart),
            human(BOOT_TOLERANCE)
        ));
        evidence.insert("clock_realtime_ns".into(), json!(k.realtime_ns));
        evidence.insert("clock_boottime_ns".into(), json!(k.boottime_ns));
        evidence.insert(
            "boot_time".into(),
            json!(crate::activity::ts(boot.boot_time)),
        );
        evidence.insert("apart_ms".into(), json!(apart.as_millis() as u64));
    }
    if k.monotonic_ns > k.boottime_ns {
        problems.push(format!(
            "CLOCK_MONOTONIC ({} ns) is ahead of CLOCK_BOOTTIME ({} ns), which counts suspends too",
            k.monotonic_ns, k.boottime_ns
        ));
        evidence.insert("clock_monotonic_ns".into(), json!(k.monotonic_ns));
        evidence.insert("clock_boottime_ns".into(), json!(k.boottime_ns));
    }
    let sweep_note = match &f.activity.latest {
        Ok(Some(r)) => {
            let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
            let mut future = Vec::new();
            for (what, text) in [
                ("started_at", Some(r.started_at.as_str())),
                ("finished_at", r.finished_at.as_deref()),
            ] {
                if let Some(t) = text.and_then(parse_time) {
                    if t > now {
                        future.push(format!("{what} {}", text.unwrap_or_default()));
                    }
                }
            }
            if let Some(ns) = r.realtime_ns.filter(|ns| *ns > now_ns) {
                future.push(format!("clock_realtime_ns {ns}"));
            }
            if future.is_empty() {
                format!(
                    "; the last sweep (#{}, {}) is not in the future",
                    r.id, r.started_at
                )
            } else {
                problems.push(format!(
                    "the last sweep (#{}) was recorded in the future: {} (now {}); the wall clock stepped back since",
                    r.id,
                    future.join(", "),
                    crate::activity::ts(now)
                ));
                evidence.insert("last_sweep".into(), json!({"id": r.id, "started_at": r.started_at, "finished_at": r.finished_at, "clock_realtime_ns": r.realtime_ns}));
                String::new()
            }
        }
        Ok(None) => "; no sweep recorded to compare with".into(),
        Err(_) => "; the sweeps are unreadable (see activity-log), not compared".into(),
    };
    if !problems.is_empty() {
        evidence.insert(
            "expected".into(),
            json!("wall clock after boot; REALTIME − BOOTTIME = boot time; MONOTONIC ≤ BOOTTIME; no sweep recorded in the future"),
        );
        evidence.insert("found".into(), json!(problems));
        return CheckResult::fail(NAME, problems.join("; "), Value::Object(evidence));
    }
    let up = (now - boot.boot_time).to_std().unwrap_or_default();
    CheckResult::pass(
        NAME,
        format!(
            "booted {} ({} ago, boot id {}); CLOCK_REALTIME − CLOCK_BOOTTIME agrees within {}{sweep_note}",
            crate::activity::ts(boot.boot_time),
            humantime::format_duration(Duration::from_secs(up.as_secs())),
            boot.boot_id,
            human(apart)
        ),
    )
}

fn permissions(f: &Facts) -> CheckResult {
    const NAME: &str = "permissions";
    let p = &f.processes;
    let has = |cap: u32| p.cap_eff.map(|c| c & (1 << cap) != 0);
    let who = match (p.euid, has(CAP_KILL), has(CAP_SYS_PTRACE)) {
        (0, _, _) => "root".to_string(),
        (uid, kill, ptrace) => {
            let cap = |name: &str, v: Option<bool>| match v {
                Some(true) => format!("with {name}"),
                Some(false) => format!("without {name}"),
                None => format!("{name} unknown"),
            };
            format!(
                "uid {uid} ({}, {})",
                cap("CAP_KILL", kill),
                cap("CAP_SYS_PTRACE", ptrace)
            )
        }
    };
    let Some(tasks) = &p.tasks else {
        return CheckResult::skip(
            NAME,
            format!("no snapshot to take the droids' pids from (see executor-reachable); Foreman runs as {who}"),
        );
    };
    let live: Vec<&ProcFacts> = tasks
        .iter()
        .filter(|t| t.signal != Access::Gone && t.io != Access::Gone)
        .collect();
    if live.is_empty() {
        return CheckResult::pass(
            NAME,
            format!(
                "no RUNNING task of this host has a live process to try; Foreman runs as {who}"
            ),
        );
    }
    let describe = |t: &ProcFacts, e: &str| json!({"task_id": t.task_id, "droid_type": t.droid_type, "pid": t.pid, "uid": t.uid, "error": e});
    let denied = |a: &Access| matches!(a, Access::Denied(_));
    let err = |a: &Access| match a {
        Access::Denied(e) => e.clone(),
        _ => String::new(),
    };
    let unsignalled: Vec<&ProcFacts> = live.iter().copied().filter(|t| denied(&t.signal)).collect();
    let (fatal, harmless): (Vec<&ProcFacts>, Vec<&ProcFacts>) =
        unsignalled.iter().partition(|t| t.terminates);
    let no_io: Vec<&ProcFacts> = live.iter().copied().filter(|t| denied(&t.io)).collect();
    let pids = |ts: &[&ProcFacts]| {
        let mut s: Vec<String> = ts
            .iter()
            .take(EVIDENCE_LIMIT)
            .map(|t| format!("{} (task {}, {})", t.pid, t.task_id, t.droid_type))
            .collect();
        if ts.len() > EVIDENCE_LIMIT {
            s.push(format!("and {} more", ts.len() - EVIDENCE_LIMIT));
        }
        s.join(", ")
    };
    let mut notes = Vec::new();
    if !harmless.is_empty() {
        notes.push(format!(
            "signals are unavailable for {}: their policy does not terminate (shadow or on_hung = mark_only), so nothing is lost now; CAP_KILL (or running as the droids' user) is needed before it does",
            pids(&harmless)
        ));
    }
    if !no_io.is_empty() {
        let counted = no_io.iter().any(|t| t.counts_io);
        notes.push(format!(
            "/proc/PID/io is unreadable for {}: the io progress signal is unavailable{}; CPU and heartbeat still work; CAP_SYS_PTRACE (or running as the droids' user) makes it readable",
            pids(&no_io),
            if counted { " for droid types that count it" } else { " (their droid types do not count it)" }
        ));
    }
    if !fatal.is_empty() {
        let mut reason = format!(
            "Foreman runs as {who} and cannot signal {} of {} droid process(es): {}; it could not terminate them when hung; run it as the droids' user or grant CAP_KILL",
            fatal.len(),
            live.len(),
            pids(&fatal)
        );
        if !notes.is_empty() {
            reason.push_str(&format!("; also: {}", notes.join("; ")));
        }
        return CheckResult::fail(
            NAME,
            reason,
            json!({
                "expected": "kill(pid, 0) succeeds for every RUNNING droid process whose policy terminates hung tasks (same user, or CAP_KILL)",
                "found": fatal.iter().take(EVIDENCE_LIMIT).map(|t| describe(t, &err(&t.signal))).collect::<Vec<_>>(),
                "io_unreadable": no_io.iter().take(EVIDENCE_LIMIT).map(|t| describe(t, &err(&t.io))).collect::<Vec<_>>(),
            }),
        );
    }
    let head = format!(
        "Foreman runs as {who}; {} RUNNING droid process(es) tried",
        live.len()
    );
    if notes.is_empty() {
        CheckResult::pass(
            NAME,
            format!("{head}: every /proc/PID/io readable and every process signalable (signal 0)"),
        )
    } else {
        CheckResult::pass(NAME, format!("{head}; note: {}", notes.join("; ")))
    }
}

/// Whether `/proc` shows Foreman every process it must judge: when it
/// cannot, every task looks dead (probe.rs, "/proc blindness").
fn proc_visible(f: &Facts) -> CheckResult {
    const NAME: &str = "proc-visible";
    let p = &f.processes;
    let v = &p.proc_view;
    let Some(reason) = blindness(v, p.proc_options) else {
        let ns = match v.pid_ns {
            Ok(Some(crate::probe::INIT_PID_NS_INODE)) | Ok(None) => "the host's PID namespace",
            Ok(Some(_)) => "a PID namespace shared with the executor (on the operator's word)",
            // blindness() reports an unknown namespace: not reached.
            Err(_) => "an unknown PID namespace",
        };
        return CheckResult::pass(
            NAME,
            format!(
                "{} hides no process from Foreman (mounted {}), pid 1 is visible, and Foreman is pid {} in {ns}",
                v.mount_point,
                v.mount()
                    .map(|(_, options)| options)
                    .unwrap_or_default(),
                v.pid
            ),
        );
    };
    CheckResult::fail(
        NAME,
        format!("Foreman cannot tell a dead task from a hidden one: {reason}"),
        json!({
            "expected": "a /proc that shows every process (no hidepid, or CAP_SYS_PTRACE / its gid= group), pid 1 visible, Foreman's own pid, the host's PID namespace",
            "found": reason,
            "mount_point": v.mount_point,
            "mount": v.mount().map(|(fstype, options)| json!({"fstype": fstype, "options": options})),
            "pid1": v.pid1.as_ref().err(),
            "self": v.self_link,
            "pid": v.pid,
            "pid_ns": v.pid_ns,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::Status;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).expect("time")
    }

    const NOW: &str = "2026-11-23T06:00:00.000Z";
    const BOOT: &str = "2026-11-20T06:00:00Z";

    fn ns(t: DateTime<Utc>) -> i64 {
        t.timestamp_nanos_opt().expect("in range")
    }

    fn sweep(id: i64, started: &str, finished: Option<&str>) -> SweepRow {
        SweepRow {
            id,
            kind: "scheduled".into(),
            host: "h".into(),
            started_at: started.into(),
            finished_at: finished.map(str::to_string),
            realtime_ns: Some(ns(at(started))),
        }
    }

    fn proc(pid: i32) -> ProcFacts {
        ProcFacts {
            task_id: format!("t{pid}"),
            droid_type: "builder".into(),
            pid,
            uid: Some(1000),
            io: Access::Granted,
            signal: Access::Granted,
            terminates: true,
            counts_io: true,
        }
    }

    /// A healthy deployment: every check passes.
    fn healthy() -> Facts {
        let now = at(NOW);
        let boot = at(BOOT);
        let boottime_ns = ns(now) - ns(boot);
        let last = "2026-11-23T05:59:00.000Z";
        Facts {
            config: ConfigFacts {
                source: "/etc/foreman/foreman.toml".into(),
                host: "h".into(),
                interval: Duration::from_secs(60),
                policies: vec![PolicySummary {
                    name: "[defaults]".into(),
                    mode: Mode::Enforce,
                    timeout: Duration::from_secs(600),
                    progress: vec![Signal::Heartbeat, Signal::Cpu, Signal::Io],
                    on_hung: OnHung::Terminate,
                }],
                executor: ExecutorTarget::Sqlite {
                    path: "/var/lib/executor/executor.db".into(),
                    entry: Entry::File,
                },
                activity_path: "/var/lib/foreman/foreman.db".into(),
                activity_dir: DirState::Writable,
            },
            executor: ExecutorFacts {
                kind: ExecutorKind::Sqlite,
                timeout: Duration::from_secs(30),
                elapsed: Duration::from_millis(12),
                snapshot: SnapshotFacts::Taken {
                    rows: 3,
                    running: 1,
                    bad: vec![],
                },
                columns: Some(ColumnFacts {
                    needed: SNAPSHOT_COLUMNS.to_vec(),
                    found: Ok(SNAPSHOT_COLUMNS.iter().map(|c| c.to_string()).collect()),
                }),
            },
            activity: ActivityFacts {
                path: "/var/lib/foreman/foreman.db".into(),
                open: LogOpen::Opened { version: 6 },
                writable: vec![
                    ("/var/lib/foreman/foreman.db".into(), Ok(())),
                    ("/var/lib/foreman".into(), Ok(())),
                ],
                last_finished: Ok(Some(sweep(7, last, Some(last)))),
                latest: Ok(Some(sweep(7, last, Some(last)))),
            },
            sinks: vec![SinkFacts {
                list: "alerts",
                name: "ops".into(),
                timeout: Duration::from_secs(5),
                probe: SinkProbe::Webhook {
                    target: Ok("127.0.0.1:8080".into()),
                    connect: Ok("127.0.0.1:8080".parse().expect("addr")),
                    proxy_env: None,
                    token_env: None,
                },
            }],
            clock: ClockFacts {
                boot: Ok(BootFacts {
                    boot_id: "b".repeat(36),
                    boot_time: boot,
                    clk_tck: 100,
                    ticks_at_boot: 0,
                }),
                clocks: Clocks {
                    realtime_ns: ns(now),
                    // A minute of suspend since boot.
                    monotonic_ns: boottime_ns - 60_000_000_000,
                    boottime_ns,
                },
            },
            processes: ProcessFacts {
                euid: 1000,
                cap_eff: Some(0),
                tasks: Some(vec![proc(4121)]),
                proc_view: clear_proc(),
                proc_options: BlindnessOptions::default(),
            },
            spent: BTreeMap::new(),
        }
    }

    /// A /proc that shows everything: no hidepid, pid 1 visible, Foreman
    /// pid 4242 in the initial PID namespace.
    fn clear_proc() -> ProcView {
        ProcView {
            mount_point: "/proc".into(),
            mountinfo: Ok(
                "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
                    .into(),
            ),
            status: Ok(
                "Gid:\t998\t998\t998\t998\nGroups:\t998\nCapEff:\t0000000000000000\n".into(),
            ),
            pid1: Ok(()),
            self_link: Ok("4242".into()),
            pid: 4242,
            pid_ns: Ok(Some(crate::probe::INIT_PID_NS_INODE)),
        }
    }

    fn status_of(f: &Facts, name: &str) -> CheckResult {
        judge(f, at(NOW))
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    }

    #[test]
    fn a_healthy_deployment_passes_every_check_in_order() {
        let checks = judge(&healthy(), at(NOW));
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, CHECKS);
        for c in &checks {
            assert_eq!(c.status, Status::Pass, "{c:?}");
            assert!(c.evidence.is_none(), "{c:?}");
        }
    }

    type Case = (
        &'static str,
        &'static str,
        fn(&mut Facts),
        Status,
        &'static str,
    );

    /// (case, check, how the facts differ from healthy, status, a word the reason holds)
    const CASES: &[Case] = &[
        // config-coherent
        (
            "executor db missing",
            "config-coherent",
            |f| {
                f.config.executor = ExecutorTarget::Sqlite {
                    path: "/x/executor.db".into(),
                    entry: Entry::Missing,
                }
            },
            Status::Fail,
            "does not exist",
        ),
        (
            "executor path is a dir",
            "config-coherent",
            |f| {
                f.config.executor = ExecutorTarget::Sqlite {
                    path: "/x".into(),
                    entry: Entry::Dir,
                }
            },
            Status::Fail,
            "is a directory",
        ),
        (
            "command executor resolves",
            "config-coherent",
            |f| {
                f.config.executor = ExecutorTarget::Command {
                    programs: vec![
                        (
                            "snapshot_command",
                            "snap".into(),
                            Ok("/usr/bin/snap".into()),
                        ),
                        (
                            "mark_failed_command",
                            "mark".into(),
                            Ok("/usr/bin/mark".into()),
                        ),
                    ],
                }
            },
            Status::Pass,
            "command snap / mark",
        ),
        (
            "command executor missing program",
            "config-coherent",
            |f| {
                f.config.executor = ExecutorTarget::Command {
                    programs: vec![
                        (
                            "snapshot_command",
                            "snap".into(),
                            Ok("/usr/bin/snap".into()),
                        ),
                        (
                            "mark_failed_command",
                            "mark".into(),
                            Err("mark is not an executable file".into()),
                        ),
                    ],
                }
            },
            Status::Fail,
            "executor.mark_failed_command",
        ),
        (
            "activity dir creatable",
            "config-coherent",
            |f| {
                f.config.activity_dir = DirState::Missing {
                    ancestor: "/var/lib".into(),
                    creatable: Ok(()),
                }
            },
            Status::Pass,
            "can create it",
        ),
        (
            "activity dir not creatable",
            "config-coherent",
            |f| {
                f.config.activity_dir = DirState::Missing {
                    ancestor: "/var/lib".into(),
                    creatable: Err("Permission denied".into()),
                }
            },
            Status::Fail,
            "cannot be created",
        ),
        (
            "activity dir not writable",
            "config-coherent",
            |f| f.config.activity_dir = DirState::NotWritable("Permission denied".into()),
            Status::Fail,
            "not writable",
        ),
        (
            "activity dir is a file",
            "config-coherent",
            |f| f.config.activity_dir = DirState::NotADirectory,
            Status::Fail,
            "not a directory",
        ),
        (
            "policies summarised",
            "config-coherent",
            |f| {
                f.config.policies.push(PolicySummary {
                    name: "scribe".into(),
                    mode: Mode::Shadow,
                    timeout: Duration::from_secs(90),
                    progress: vec![Signal::Heartbeat],
                    on_hung: OnHung::MarkOnly,
                });
            },
            Status::Pass,
            "scribe (shadow, timeout 1m 30s, progress heartbeat, on_hung mark_only)",
        ),
        // executor-reachable
        (
            "snapshot failed",
            "executor-reachable",
            |f| {
                f.executor.snapshot = SnapshotFacts::Failed("unable to open database file".into());
            },
            Status::Fail,
            "unable to open",
        ),
        (
            "snapshot timed out",
            "executor-reachable",
            |f| {
                f.executor.snapshot = SnapshotFacts::TimedOut;
                f.executor.elapsed = Duration::from_secs(32);
            },
            Status::Fail,
            "no snapshot within",
        ),
        (
            "snapshot took exactly the timeout",
            "executor-reachable",
            |f| {
                f.executor.elapsed = Duration::from_secs(30);
            },
            Status::Pass,
            "in 30s",
        ),
        (
            "snapshot took 1 ms more than the timeout",
            "executor-reachable",
            |f| {
                f.executor.elapsed = Duration::from_millis(30_001);
            },
            Status::Fail,
            "longer than executor.timeout",
        ),
        (
            "a malformed row",
            "executor-reachable",
            |f| {
                f.executor.snapshot = SnapshotFacts::Taken {
                    rows: 3,
                    running: 1,
                    bad: vec![("t9".into(), "unknown state \"WEIRD\"".into())],
                };
            },
            Status::Fail,
            "t9: unknown state",
        ),
        (
            "a missing column",
            "executor-reachable",
            |f| {
                f.executor.columns = Some(ColumnFacts {
                    needed: SNAPSHOT_COLUMNS.to_vec(),
                    found: Ok(SNAPSHOT_COLUMNS
                        .iter()
                        .filter(|c| **c != "last_progress_at")
                        .map(|c| c.to_string())
                        .collect()),
                });
            },
            Status::Fail,
            "last_progress_at",
        ),
        (
            "columns match case-insensitively",
            "executor-reachable",
            |f| {
                f.executor.columns = Some(ColumnFacts {
                    needed: SNAPSHOT_COLUMNS.to_vec(),
                    found: Ok(SNAPSHOT_COLUMNS.iter().map(|c| c.to_uppercase()).collect()),
                });
            },
            Status::Pass,
            "columns the default queries need",
        ),
        (
            "no tasks table",
            "executor-reachable",
            |f| {
                f.executor.columns = Some(ColumnFacts {
                    needed: SNAPSHOT_COLUMNS.to_vec(),
                    found: Ok(vec![]),
                });
            },
            Status::Fail,
            "no tasks table",
        ),
        (
            "custom queries",
            "executor-reachable",
            |f| {
                f.executor.columns = None;
            },
            Status::Pass,
            "custom queries",
        ),
        // activity-log
        (
            "log missing",
            "activity-log",
            |f| {
                f.activity.open = LogOpen::Missing;
            },
            Status::Fail,
            "no activity log",
        ),
        (
            "log without schema",
            "activity-log",
            |f| {
                f.activity.open = LogOpen::NoSchema;
            },
            Status::Fail,
            "no schema",
        ),
        (
            "log at another version",
            "activity-log",
            |f| {
                f.activity.open = LogOpen::Failed(
                    "the activity log x is at schema version 5, this Foreman expects 6".into(),
                );
            },
            Status::Fail,
            "schema version 5",
        ),
        (
            "log not writable",
            "activity-log",
            |f| {
                f.activity.writable[0].1 = Err("Permission denied (os error 13)".into());
            },
            Status::Fail,
            "cannot write /var/lib/foreman/foreman.db",
        ),
        (
            "log unopenable for want of write access",
            "activity-log",
            |f| {
                f.activity.open = LogOpen::Failed("attempt to write a readonly database".into());
                f.activity.writable[1].1 = Err("Permission denied (os error 13)".into());
            },
            Status::Fail,
            "which a WAL log needs even to be read",
        ),
        (
            "log dir not writable",
            "activity-log",
            |f| {
                f.activity.writable[1].1 = Err("Read-only file system (os error 30)".into());
            },
            Status::Fail,
            "Read-only file system",
        ),
        // daemon-sweeping (interval 60 s: the limit is 120 s)
        (
            "last sweep exactly 2 × interval old",
            "daemon-sweeping",
            |f| {
                f.activity.last_finished = Ok(Some(sweep(
                    7,
                    "2026-11-23T05:57:59.000Z",
                    Some("2026-11-23T05:58:00.000Z"),
                )));
            },
            Status::Pass,
            "2m ago",
        ),
        (
            "last sweep 1 ms older than 2 × interval",
            "daemon-sweeping",
            |f| {
                f.activity.last_finished = Ok(Some(sweep(
                    7,
                    "2026-11-23T05:57:59.000Z",
                    Some("2026-11-23T05:57:59.999Z"),
                )));
            },
            Status::Fail,
            "2m 1ms ago",
        ),
        (
            "no sweep",
            "daemon-sweeping",
            |f| {
                f.activity.last_finished = Ok(None);
            },
            Status::Fail,
            "no finished sweep",
        ),
        (
            "no log, so no sweep",
            "daemon-sweeping",
            |f| {
                f.activity.open = LogOpen::Missing;
                f.activity.last_finished = Ok(None);
            },
            Status::Fail,
            "no activity log",
        ),
        (
            "sweeps unreadable",
            "daemon-sweeping",
            |f| {
                f.activity.last_finished = Err("database is locked".into());
            },
            Status::Fail,
            "database is locked",
        ),
        // sinks-reachable
        (
            "no sinks",
            "sinks-reachable",
            |f| {
                f.sinks.clear();
            },
            Status::Skip,
            "no [[alerts]]",
        ),
        (
            "webhook refused",
            "sinks-reachable",
            |f| {
                f.sinks[0].probe = SinkProbe::Webhook {
                    target: Ok("127.0.0.1:9".into()),
                    connect: Err("127.0.0.1:9: Connection refused (os error 111)".into()),
                    proxy_env: None,
                    token_env: None,
                };
            },
            Status::Fail,
            "Connection refused",
        ),
        (
            "webhook reason says no request was sent",
            "sinks-reachable",
            |_| {},
            Status::Pass,
            "no request sent",
        ),
        (
            "proxy and token noted",
            "sinks-reachable",
            |f| {
                if let SinkProbe::Webhook {
                    proxy_env,
                    token_env,
                    ..
                } = &mut f.sinks[0].probe
                {
                    *proxy_env = Some("HTTPS_PROXY".into());
                    *token_env = Some(("OPS_TOKEN".into(), false));
                }
            },
            Status::Pass,
            "OPS_TOKEN is not set",
        ),
        (
            "command sink missing",
            "sinks-reachable",
            |f| {
                f.sinks.push(SinkFacts {
                    list: "alerts",
                    name: "pager".into(),
                    timeout: Duration::from_secs(5),
                    probe: SinkProbe::Command {
                        program: "page".into(),
                        resolved: Err("page is not an executable file on this PATH".into()),
                    },
                });
            },
            Status::Fail,
            "1 of 2 sink(s) unreachable",
        ),
        (
            "command sink executable",
            "sinks-reachable",
            |f| {
                f.sinks.push(SinkFacts {
                    list: "alerts",
                    name: "pager".into(),
                    timeout: Duration::from_secs(5),
                    probe: SinkProbe::Command {
                        program: "page".into(),
                        resolved: Ok("/usr/bin/page".into()),
                    },
                });
            },
            Status::Pass,
            "/usr/bin/page is executable",
        ),
        (
            "file sink not writable",
            "sinks-reachable",
            |f| {
                f.sinks.push(SinkFacts {
                    list: "wellbeing.sinks",
                    name: "notes".into(),
                    timeout: Duration::from_secs(5),
                    probe: SinkProbe::File {
                        dir: "/srv/notes".into(),
                        state: DirState::NotWritable("Permission denied".into()),
                    },
                });
            },
            Status::Fail,
            "/srv/notes is not writable",
        ),
        (
            "file sink to be created",
            "sinks-reachable",
            |f| {
                f.sinks.push(SinkFacts {
                    list: "wellbeing.sinks",
                    name: "notes".into(),
                    timeout: Duration::from_secs(5),
                    probe: SinkProbe::File {
                        dir: "/srv/notes".into(),
                        state: DirState::Missing {
                            ancestor: "/srv".into(),
                            creatable: Ok(()),
                        },
                    },
                });
            },
            Status::Pass,
            "the first delivery creates it",
        ),
        // clock-sane
        (
            "boot time unreadable",
            "clock-sane",
            |f| {
                f.clock.boot = Err("reading /proc/sys/kernel/random/boot_id: No such file".into());
            },
            Status::Fail,
            "unreadable",
        ),
        (
            "wall clock before boot",
            "clock-sane",
            |f| {
                if let Ok(b) = &mut f.clock.boot {
                    b.boot_time = at("2026-11-24T00:00:00Z");
                }
            },
            Status::Fail,
            "not after the boot time",
        ),
        (
            "realtime − boottime exactly the tolerance from btime",
            "clock-sane",
            |f| {
                f.clock.clocks.boottime_ns -= BOOT_TOLERANCE.as_nanos() as i64;
            },
            Status::Pass,
            "agrees within 2s",
        ),
        (
            "realtime − boottime 1 ms beyond the tolerance",
            "clock-sane",
            |f| {
                f.clock.clocks.boottime_ns -= BOOT_TOLERANCE.as_nanos() as i64 + 1_000_000;
            },
            Status::Fail,
            "2s 1ms away",
        ),
        (
            "monotonic ahead of boottime",
            "clock-sane",
            |f| {
                f.clock.clocks.monotonic_ns = f.clock.clocks.boottime_ns + 1;
            },
            Status::Fail,
            "CLOCK_MONOTONIC",
        ),
        (
            "last sweep recorded exactly now",
            "clock-sane",
            |f| {
                f.activity.latest = Ok(Some(sweep(8, NOW, None)));
            },
            Status::Pass,
            "not in the future",
        ),
        (
            "last sweep recorded 1 ms in the future",
            "clock-sane",
            |f| {
                f.activity.latest = Ok(Some(sweep(8, "2026-11-23T06:00:00.001Z", None)));
            },
            Status::Fail,
            "in the future",
        ),
        (
            "last sweep finished 1 ms in the future",
            "clock-sane",
            |f| {
                f.activity.latest = Ok(Some(sweep(8, NOW, Some("2026-11-23T06:00:00.001Z"))));
            },
            Status::Fail,
            "finished_at",
        ),
        (
            "no sweep to compare",
            "clock-sane",
            |f| {
                f.activity.latest = Ok(None);
            },
            Status::Pass,
            "no sweep recorded",
        ),
        // permissions
        (
            "no snapshot",
            "permissions",
            |f| {
                f.processes.tasks = None;
            },
            Status::Skip,
            "no snapshot",
        ),
        (
            "no RUNNING task",
            "permissions",
            |f| {
                f.processes.tasks = Some(vec![]);
            },
            Status::Pass,
            "no RUNNING task",
        ),
        (
            "only gone processes",
            "permissions",
            |f| {
                let mut p = proc(5);
                p.io = Access::Gone;
                p.signal = Access::Gone;
                f.processes.tasks = Some(vec![p]);
            },
            Status::Pass,
            "no RUNNING task",
        ),
        (
            "signal denied, policy terminates",
            "permissions",
            |f| {
                let mut p = proc(4121);
                p.signal = Access::Denied("Operation not permitted (os error 1)".into());
                p.io = Access::Denied("Permission denied (os error 13)".into());
                f.processes.tasks = Some(vec![p, proc(4122)]);
            },
            Status::Fail,
            "CAP_KILL",
        ),
        (
            "signal denied, policy does not terminate",
            "permissions",
            |f| {
                let mut p = proc(4121);
                p.signal = Access::Denied("Operation not permitted (os error 1)".into());
                p.terminates = false;
                f.processes.tasks = Some(vec![p]);
            },
            Status::Pass,
            "signals are unavailable for 4121",
        ),
        (
            "io unreadable only",
            "permissions",
            |f| {
                let mut p = proc(4121);
                p.io = Access::Denied("Permission denied (os error 13)".into());
                f.processes.tasks = Some(vec![p]);
            },
            Status::Pass,
            "CPU and heartbeat still work",
        ),
        (
            "io unreadable names CAP_SYS_PTRACE",
            "permissions",
            |f| {
                let mut p = proc(4121);
                p.io = Access::Denied("Permission denied (os error 13)".into());
                f.processes.tasks = Some(vec![p]);
            },
            Status::Pass,
            "CAP_SYS_PTRACE",
        ),
        (
            "the user and capabilities are named",
            "permissions",
            |_| {},
            Status::Pass,
            "uid 1000 (without CAP_KILL, without CAP_SYS_PTRACE)",
        ),
        (
            "root",
            "permissions",
            |f| {
                f.processes.euid = 0;
            },
            Status::Pass,
            "runs as root",
        ),
        // proc-visible
        (
            "a plain /proc",
            "proc-visible",
            |_| {},
            Status::Pass,
            "/proc hides no process from Foreman (mounted rw), pid 1 is visible, and Foreman is pid 4242 in the host's PID namespace",
        ),
        (
            "hidepid without CAP_SYS_PTRACE",
            "proc-visible",
            |f| {
                f.processes.proc_view.mountinfo =
                    Ok("22 27 0:21 / /proc rw - proc proc rw,hidepid=invisible\n".into());
            },
            Status::Fail,
            "Foreman cannot tell a dead task from a hidden one: /proc is mounted with hidepid=invisible",
        ),
        (
            "hidepid with CAP_SYS_PTRACE",
            "proc-visible",
            |f| {
                f.processes.proc_view.mountinfo =
                    Ok("22 27 0:21 / /proc rw - proc proc rw,hidepid=invisible\n".into());
                f.processes.proc_view.status = Ok("CapEff:\t0000000000080000\n".into());
            },
            Status::Pass,
            "mounted rw,hidepid=invisible",
        ),
        (
            "pid 1 hidden",
            "proc-visible",
            |f| {
                f.processes.proc_view.pid1 = Err("No such file or directory".into());
            },
            Status::Fail,
            "pid 1 is not visible",
        ),
        (
            "another PID namespace",
            "proc-visible",
            |f| {
                f.processes.proc_view.pid_ns = Ok(Some(4026532200));
            },
            Status::Fail,
            "PID namespace (pid:[4026532200])",
        ),
        (
            "another PID namespace, shared on the operator's word",
            "proc-visible",
            |f| {
                f.processes.proc_view.pid_ns = Ok(Some(4026532200));
                f.processes.proc_options.shared_pid_namespace = true;
            },
            Status::Pass,
            "shared with the executor",
        ),
    ];

    #[test]
    fn every_check_passes_and_fails_at_its_boundary() {
        for (case, check, change, want, says) in CASES {
            let mut f = healthy();
            change(&mut f);
            let c = status_of(&f, check);
            assert_eq!(c.status, *want, "{case}: {c:#?}");
            assert!(
                c.reason.contains(says),
                "{case}: {:?} lacks {says:?}",
                c.reason
            );
            match c.status {
                Status::Fail => {
                    let e = c
                        .evidence
                        .as_ref()
                        .unwrap_or_else(|| panic!("{case}: no evidence"));
                    assert!(
                        e.get("expected").is_some(),
                        "{case}: evidence without expected: {e}"
                    );
                }
                _ => assert!(c.evidence.is_none(), "{case}: evidence on {:?}", c.status),
            }
            // A change to one check's facts leaves the others as they were,
            // except where facts are shared on purpose.
            for other in judge(&f, at(NOW)) {
                if other.name != *check {
                    // No log at all is also no sweep.
                    let shared = *case == "no log, so no sweep" && other.name == "activity-log";
                    if !shared {
                        assert_ne!(
                            other.status,
                            Status::Fail,
                            "{case} failed {}: {other:#?}",
                            other.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_rows_are_listed_up_to_the_limit_and_counted() {
        let mut f = healthy();
        let bad: Vec<(String, String)> = (0..25)
            .map(|i| (format!("t{i}"), "missing droid_type".into()))
            .collect();
        f.executor.snapshot = SnapshotFacts::Taken {
            rows: 30,
            running: 0,
            bad,
        };
        let c = status_of(&f, "executor-reachable");
        assert_eq!(c.status, Status::Fail);
        let e = c.evidence.expect("evidence");
        assert_eq!(e["malformed_rows"], 25);
        assert_eq!(
            e["malformed"].as_array().expect("list").len(),
            EVIDENCE_LIMIT
        );
        assert!(
            c.reason.contains("25 of 30 row(s) malformed"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_stale_sweep_gives_its_age_and_the_limit() {
        let mut f = healthy();
        f.activity.last_finished = Ok(Some(sweep(
            3,
            "2026-11-23T05:00:00.000Z",
            Some("2026-11-23T05:00:00.000Z"),
        )));
        let c = status_of(&f, "daemon-sweeping");
        assert_eq!(c.status, Status::Fail);
        let e = c.evidence.expect("evidence");
        assert_eq!(e["found"]["age_ms"], 3_600_000);
        assert_eq!(e["limit_ms"], 120_000);
        assert!(c.reason.contains("1h ago"), "{}", c.reason);
    }

    #[test]
    fn a_sweep_in_the_future_is_clock_sanes_failure_not_the_daemons() {
        let mut f = healthy();
        let future = Some(sweep(
            9,
            "2026-11-23T07:00:00.000Z",
            Some("2026-11-23T07:00:00.000Z"),
        ));
        f.activity.last_finished = Ok(future.clone());
        f.activity.latest = Ok(future);
        assert_eq!(status_of(&f, "daemon-sweeping").status, Status::Pass);
        assert_eq!(status_of(&f, "clock-sane").status, Status::Fail);
    }

    #[test]
    fn the_snapshot_time_boundary_is_inclusive() {
        for (ms, want) in [
            (29_999, Status::Pass),
            (30_000, Status::Pass),
            (30_001, Status::Fail),
        ] {
            let mut f = healthy();
            f.executor.elapsed = Duration::from_millis(ms);
            assert_eq!(status_of(&f, "executor-reachable").status, want, "{ms} ms");
        }
    }

    // ---- the fact gatherers' pure parts, on this machine

    #[test]
    fn webhook_targets_get_the_schemes_port() {
        assert_eq!(
            host_port("http://example.com/x").as_deref(),
            Ok("example.com:80")
        );
        assert_eq!(
            host_port("https://example.com/x").as_deref(),
            Ok("example.com:443")
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/a").as_deref(),
            Ok("127.0.0.1:8080")
        );
        assert_eq!(
            host_port("http://[::1]:9000/a").as_deref(),
            Ok("[::1]:9000")
        );
    }

    #[test]
    fn programs_resolve_on_path_or_as_given() {
        assert!(resolve_program("sh").is_ok());
        assert!(resolve_program("/bin/sh").is_ok());
        assert!(resolve_program("no-such-program-foreman").is_err());
        assert!(resolve_program("/etc/passwd").is_err(), "not executable");
        assert!(resolve_program("/").is_err(), "a directory");
    }

    #[test]
    fn a_missing_directory_names_its_nearest_ancestor() {
        let tmp = tempfile::tempdir().expect("tmp");
        let deep = tmp.path().join("a/b/c");
        match dir_state(&deep) {
            DirState::Missing {
                ancestor,
                creatable,
            } => {
                assert_eq!(ancestor, tmp.path());
                assert_eq!(creatable, Ok(()));
            }
            other => panic!("{other:?}"),
        }
        assert!(!tmp.path().join("a").exists(), "nothing created");
        assert_eq!(dir_state(tmp.path()), DirState::Writable);
        let file = tmp.path().join("f");
        std::fs::write(&file, "").expect("write");
        assert_eq!(dir_state(&file), DirState::NotADirectory);
    }

    #[test]
    fn this_process_can_probe_itself() {
        let (uid, io, signal) = probe_process(std::process::id() as i32);
        assert!(uid.is_some());
        assert_eq!(io, Access::Granted);
        assert_eq!(signal, Access::Granted);
        assert_eq!(probe_process(i32::MAX), (None, Access::Gone, Access::Gone));
    }

    #[test]
    fn the_real_clocks_are_sane_here() {
        let mut f = healthy();
        f.clock = ClockFacts {
            boot: boot_facts().map_err(|e| e.to_string()),
            clocks: Clocks::now(),
        };
        f.activity.latest = Ok(None);
        // Judged at the real now, not the test's fixed one.
        let c = judge(&f, Utc::now())
            .into_iter()
            .find(|c| c.name == "clock-sane")
            .expect("check");
        assert_eq!(c.status, Status::Pass, "{c:#?}");
    }
}
