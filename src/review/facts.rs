//! `foreman review --live`, step one: the facts of the real deployment.
//!
//! `gather` does all the I/O and keeps what it saw in `Facts` (an error is a
//! fact too); `live.rs` judges them without any I/O, so every boundary is
//! tested with facts written by hand.
//!
//! Nothing is written: the executor and the activity log are opened
//! read-only, no file or directory is created (whether one could be is
//! asked with access(2)), no request is sent to a webhook (a TCP connect
//! only: a request would be a delivery), and processes are probed with
//! signal 0.

use crate::activity::ActivityLog;
use crate::config::{Config, ExecutorConfig, ExecutorKind, SinkTarget};
use crate::executor;
use crate::model::{Mode, OnHung, Row, Signal};
use crate::probe::{boot_facts, BlindnessOptions, BootFacts, Clocks, ProcView};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Columns of `tasks` the default snapshot query reads.
pub const SNAPSHOT_COLUMNS: &[&str] = &[
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
pub const MARK_COLUMNS: &[&str] = &["id", "state", "pid", "attempt", "finished_at", "error"];

/// The snapshot may take the executor's timeout; this much more is given
/// for the executor's own timeout to report first (its error says more).
const SNAPSHOT_GRACE: Duration = Duration::from_secs(2);

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
    /// Where the URL came from (`env NAME`, `file PATH`): the snapshot
    /// check is what proves the database answers.
    Postgres {
        source: String,
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
        ExecutorKind::Postgres => ExecutorTarget::Postgres {
            source: e.url_source.clone(),
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
            let needed = needed_task_columns(e);
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

/// The columns of `tasks` the default queries of a kind = "sqlite"
/// executor read or write: none of a query the configuration replaces
/// (its columns are its own business). Shared with `check-config`.
pub fn needed_task_columns(e: &ExecutorConfig) -> Vec<&'static str> {
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
    needed
}

/// The columns of `tasks`, read-only (never creates the file); none when
/// there is no such table.
pub fn task_columns(path: &Path, timeout: Duration) -> Result<Vec<String>, String> {
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
                // Event sweeps look at a few tasks between full ones: they
                // say nothing of whether the daemon sweeps on schedule.
                let finished =
                    sweep("WHERE finished_at IS NOT NULL AND kind NOT IN ('event', 'fleet')");
                let latest = sweep("WHERE kind NOT IN ('event', 'fleet')");
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
