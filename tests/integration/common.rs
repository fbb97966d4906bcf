//! Helpers for the tests with real processes: a scratch executor database
//! (the contract schema), a config with short durations, processes that are
//! always killed and reaped, the activity log read back, and polling instead
//! of fixed sleeps.

use chrono::{DateTime, SecondsFormat, Utc};
use foreman::activity::ActivityLog;
use foreman::config::Config;
use foreman::executor::{self, Executor};
use foreman::model::SweepKind;
use foreman::probe::{boot_facts, read_stat, BootFacts, Probe, ProcTable};
use foreman::sweep::{sweep, FindingReport, LogAccess, SweepOptions, SweepReport};
use foreman::watch::Watch;
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, OptionalExtension};
use std::any::Any;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The host name every test config gives; tasks with `host` NULL are here.
pub const HOST: &str = "test-host";

/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A foreman.toml with short durations. `top` goes before the first table,
/// `defaults` inside `[defaults]`, `tail` after the built-in droid types.
/// Built-in droid types: `quiet` (heartbeat only) and `cruncher` (CPU only);
/// anything else is judged with `[defaults]` (heartbeat, cpu, io).
/// `pid_start_tolerance` is generous (1h) so tasks can claim to have started
/// minutes before the process the test just spawned (never before this
/// boot: see `after_boot`).
#[derive(Default)]
pub struct Cfg<'a> {
    pub top: &'a str,
    /// The whole `[executor]` body; the scratch SQLite file when `None`.
    pub executor: Option<String>,
    pub defaults: &'a str,
    pub tail: &'a str,
    /// The `[http]` body; no listener when `None` (tests run side by side,
    /// and the default port is one port).
    pub http: Option<&'a str>,
}

impl Cfg<'_> {
    pub fn text(&self) -> String {
        let executor = self
            .executor
            .clone()
            .unwrap_or_else(|| "kind = \"sqlite\"\npath = \"executor.db\"".into());
        format!(
            r#"interval = "500ms"
host = "{HOST}"
max_cpu_pressure = 100.0
{top}
[executor]
{executor}
[activity]
path = "foreman.db"
[defaults]
timeout = "1s"
startup_grace = "0s"
exit_grace = "1s"
kill_grace = "1s"
pid_start_tolerance = "1h"
{defaults}
[droid_types.quiet]
progress = ["heartbeat"]
[droid_types.cruncher]
progress = ["cpu"]
[http]
{http}
{tail}
"#,
            top = self.top,
            defaults = self.defaults,
            http = self.http.unwrap_or("listen = \"\""),
            tail = self.tail
        )
    }
}

struct Spawned {
    child: Child,
    own_group: bool,
    /// Set once waited for: the pid may then belong to someone else and is
    /// never signalled again.
    status: Option<ExitStatus>,
}

/// One test's scratch world: a temp dir with the executor's database and
/// Foreman's activity log, the config, and the processes it started. Holds
/// the process lock (shared, or exclusive for the PID-reuse test) for its
/// whole life; on drop every process is killed (its whole group) and reaped
/// before the lock is released.
pub struct World {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: Config,
    /// The pidfds the world's sweeps hold between them, as the daemon's
    /// do: every test of the judge runs the daemon's path (held tasks with
    /// a fresh heartbeat not read, deaths seen through readable pidfds).
    pub watch: Arc<Watch>,
    children: Vec<Spawned>,
    /// The process lock, released last (after `drop` killed everything).
    _guard: Box<dyn Any>,
}

impl Drop for World {
    fn drop(&mut self) {
        for s in &mut self.children {
            if s.status.is_some() {
                continue;
            }
            let pid = s.child.id() as i32;
            // SAFETY: the child is not reaped, so its pid (and, when it leads
            // one, its process group) is still ours.
            unsafe { libc::kill(if s.own_group { -pid } else { pid }, libc::SIGKILL) };
            let _ = s.child.wait();
        }
    }
}

impl World {
    pub fn new() -> World {
        World::with(Cfg::default())
    }

    pub fn with(cfg: Cfg) -> World {
        World::build(&cfg.text(), Box::new(crate::spawning()))
    }

    /// For a test that holds `crate::spawning()` itself, from before its
    /// worlds exist (a PostgreSQL cluster's connections start server
    /// processes too); a second read lock on one thread could deadlock
    /// behind a waiting writer.
    pub fn under_lock(cfg: Cfg) -> World {
        World::build(&cfg.text(), Box::new(()))
    }

    /// For the PID-reuse test: no other test spawns while this one lives.
    pub fn exclusive(cfg: Cfg) -> World {
        World::build(&cfg.text(), Box::new(crate::exclusive()))
    }

    fn build(text: &str, guard: Box<dyn Any>) -> World {
        let dir = tempfile::Builder::new()
            .prefix("foreman-it-")
            .tempdir()
            .unwrap();
        let db = dir.path().join("executor.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch(foreman::executor::sqlite::SCHEMA)
            .unwrap();
        let path = dir.path().join("foreman.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::parse(text, &path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        World {
            dir,
            db,
            config,
            watch: Arc::new(Watch::new().expect("pidfds (Linux 5.3) on this machine kind")),
            children: Vec::new(),
            _guard: guard,
        }
    }

    /// Replace the config (same directory, same files).
    pub fn reconfigure(&mut self, cfg: Cfg) {
        let text = cfg.text();
        let path = self.dir.path().join("foreman.toml");
        std::fs::write(&path, &text).unwrap();
        self.config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    /// `foreman --config <world>/foreman.toml ARGS`, hermetic (no inherited
    /// `FAILPOINTS`, `RUST_LOG`, ...), run in the world's directory.
    pub fn foreman(&self, args: &[&str]) -> Command {
        let mut cmd = crate::cli::bare_foreman();
        cmd.arg("--config")
            .arg(self.path("foreman.toml"))
            .args(args)
            .current_dir(self.dir.path());
        cmd
    }

    /// Replace the config file by its text edited with `edit` (for keys
    /// `Cfg` writes itself, e.g. `interval` or `[defaults] timeout`), and
    /// load it.
    pub fn edit_config(&mut self, edit: impl FnOnce(String) -> String) {
        let path = self.path("foreman.toml");
        let text = edit(std::fs::read_to_string(&path).unwrap());
        std::fs::write(&path, &text).unwrap();
        self.config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    // ---- the executor's database ----

    pub fn conn(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }

    /// Run a statement on the executor's database, as the executor would.
    pub fn exec(&self, sql: &str, params: impl rusqlite::Params) {
        self.conn().execute(sql, params).unwrap();
    }

    /// A RUNNING task of droid type `worker` (judged with `[defaults]`).
    pub fn task(&self, id: &str) -> TaskBuilder<'_> {
        TaskBuilder {
            world: self,
            id: id.to_string(),
            droid_type: "worker".into(),
            state: "RUNNING".into(),
            pid: Sql::Null,
            host: None,
            attempt: 1,
            started_at: Sql::Null,
            last_progress_at: Sql::Null,
            pid_start_ticks: None,
        }
    }

    pub fn task_state(&self, id: &str) -> String {
        self.conn()
            .query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    pub fn task_error(&self, id: &str) -> Option<String> {
        self.conn()
            .query_row("SELECT error FROM tasks WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    // ---- processes ----

    fn launch(&mut self, argv: &[&str], own_group: bool, stdout: bool) -> &mut Child {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null());
        if own_group {
            // Like a real executor's droids: Foreman never signals its own group.
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?}: {e}"));
        self.children.push(Spawned {
            child,
            own_group,
            status: None,
        });
        &mut self.children.last_mut().unwrap().child
    }

    /// Start a process leading its own process group; returns its pid.
    pub fn spawn(&mut self, argv: &[&str]) -> i32 {
        self.launch(argv, true, false).id() as i32
    }

    /// Start a process in the test's own process group (no `process_group(0)`).
    pub fn spawn_in_our_group(&mut self, argv: &[&str]) -> i32 {
        self.launch(argv, false, false).id() as i32
    }

    /// Start a process with its stdout piped to the test; returns the pid
    /// and the first line it prints.
    pub fn spawn_reading_line(&mut self, argv: &[&str]) -> (i32, String) {
        let child = self.launch(argv, true, true);
        let pid = child.id() as i32;
        let out: ChildStdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
        (pid, line.trim().to_string())
    }

    /// Start a process, wait for it to exit and reap it, as the executor
    /// would; returns its (now free) pid.
    pub fn spawn_exited(&mut self, argv: &[&str]) -> i32 {
        let pid = self.spawn(argv);
        let s = self.spawned(pid);
        s.status = Some(s.child.wait().unwrap());
        pid
    }

    fn spawned(&mut self, pid: i32) -> &mut Spawned {
        self.children
            .iter_mut()
            .find(|s| s.child.id() as i32 == pid && s.status.is_none())
            .unwrap_or_else(|| panic!("pid {pid} is not a live child of this test"))
    }

    /// Kill a child's whole group and reap it.
    pub fn kill(&mut self, pid: i32) {
        let s = self.spawned(pid);
        // SAFETY: not reaped yet, so the group is still ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        s.status = Some(s.child.wait().unwrap());
    }

    /// The exit status of a child that has exited (reaping it), or `None`
    /// while it still runs. What is left of its group is killed first.
    pub fn exited(&mut self, pid: i32) -> Option<ExitStatus> {
        let Some(s) = self
            .children
            .iter_mut()
            .find(|s| s.child.id() as i32 == pid && s.status.is_none())
        else {
            // Reaped before (the latest child that had this pid).
            return self
                .children
                .iter()
                .rev()
                .find(|s| s.child.id() as i32 == pid)
                .and_then(|s| s.status);
        };
        if !matches!(proc_state(pid), Some('Z') | None) {
            return None;
        }
        if s.own_group {
            // SAFETY: the leader is an unreaped zombie, so the group is ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        s.status = Some(s.child.wait().unwrap());
        s.status
    }

    // ---- sweeps ----

    /// One real sweep (records and acts) through the configured executor.
    pub fn sweep(&self, kind: SweepKind) -> SweepReport {
        let executor = executor::open(&self.config).unwrap();
        self.sweep_with(executor.as_ref(), kind)
    }

    /// One real sweep through the given executor. The activity log is opened
    /// afresh each time, as after a restart: nothing is carried in memory.
    pub fn sweep_with(&self, executor: &dyn Executor, kind: SweepKind) -> SweepReport {
        let mut log = ActivityLog::open(&self.config.activity.path).unwrap();
        sweep(
            &self.config,
            executor,
            LogAccess::Write(&mut log),
            kind,
            &SweepOptions {
                watch: Some(self.watch.clone()),
                ..SweepOptions::default()
            },
        )
        .unwrap()
    }

    // ---- the activity log ----

    pub fn log(&self) -> Connection {
        Connection::open(&self.config.activity.path).unwrap()
    }

    /// (kind, action, outcome, outcome_detail) of a finding as recorded.
    pub fn recorded(&self, finding_id: i64) -> (String, String, String, Option<String>) {
        self.log()
            .query_row(
                "SELECT kind, action, outcome, outcome_detail FROM findings WHERE id = ?1",
                [finding_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    }

    /// Signals sent (or refused) for a finding, in order: (pid, signal,
    /// result, at). The intent rows written before any signal are `intents`.
    pub fn signals(&self, finding_id: i64) -> Vec<SignalRow> {
        self.signal_rows(finding_id, "signal != 'INTENT'")
    }

    /// The `INTENT` rows: Foreman had begun terminating the tree.
    pub fn intents(&self, finding_id: i64) -> Vec<SignalRow> {
        self.signal_rows(finding_id, "signal = 'INTENT'")
    }

    fn signal_rows(&self, finding_id: i64, which: &str) -> Vec<SignalRow> {
        let log = self.log();
        let mut stmt = log
            .prepare(&format!(
                "SELECT pid, signal, result, at FROM finding_signals WHERE finding_id = ?1 AND {which} ORDER BY id"
            ))
            .unwrap();
        stmt.query_map([finding_id], |r| {
            Ok(SignalRow {
                pid: r.get(0)?,
                signal: r.get(1)?,
                result: r.get(2)?,
                at: r.get(3)?,
            })
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.log().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// When the persisted observation of a task saw its CPU move last.
    pub fn cpu_moved_at(&self, task: &str) -> Option<DateTime<Utc>> {
        let text: Option<String> = self
            .log()
            .query_row(
                "SELECT cpu_moved_at FROM observations WHERE task_id = ?1",
                [task],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
            .flatten();
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .unwrap()
                .with_timezone(&Utc)
        })
    }
}

#[derive(Debug, Clone)]
pub struct SignalRow {
    pub pid: i32,
    pub signal: String,
    pub result: String,
    pub at: String,
}

/// Builds one row of the executor's `tasks` table.
pub struct TaskBuilder<'w> {
    world: &'w World,
    id: String,
    droid_type: String,
    state: String,
    pid: Sql,
    host: Option<String>,
    attempt: i64,
    started_at: Sql,
    last_progress_at: Sql,
    pid_start_ticks: Option<i64>,
}

impl TaskBuilder<'_> {
    pub fn droid(mut self, t: &str) -> Self {
        self.droid_type = t.into();
        self
    }
    pub fn state(mut self, s: &str) -> Self {
        self.state = s.into();
        self
    }
    pub fn pid(mut self, pid: i64) -> Self {
        self.pid = Sql::Integer(pid);
        self
    }
    pub fn host(mut self, h: &str) -> Self {
        self.host = Some(h.into());
        self
    }
    pub fn started(mut self, t: DateTime<Utc>) -> Self {
        self.started_at = Sql::Text(rfc(t));
        self
    }
    /// `started_at` exactly as given (any contract format, or garbage).
    pub fn started_text(mut self, t: &str) -> Self {
        self.started_at = Sql::Text(t.into());
        self
    }
    pub fn heartbeat(mut self, t: DateTime<Utc>) -> Self {
        self.last_progress_at = Sql::Text(rfc(t));
        self
    }
    pub fn heartbeat_text(mut self, t: &str) -> Self {
        self.last_progress_at = Sql::Text(t.into());
        self
    }
    pub fn start_ticks(mut self, t: u64) -> Self {
        self.pid_start_ticks = Some(t as i64);
        self
    }
    pub fn insert(self) {
        self.world.exec(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, host, attempt, started_at, last_progress_at, pid_start_ticks)
             VALUES (?1, 'plan-1', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                self.id,
                self.droid_type,
                self.state,
                self.pid,
                self.host,
                self.attempt,
                self.started_at,
                self.last_progress_at,
                self.pid_start_ticks
            ],
        );
    }
}

// ---- time ----
//
// No test time that must fall on one side of this boot is a fixed "hours
// ago": on a host booted minutes ago that is before the boot, and Foreman's
// pre-boot rule (nothing that started before this boot can be alive) would
// answer instead of the verdict under test. Times are derived from
// `boot_time()`; scripts/test moves it to a minute before the run
// (`FOREMAN_TEST_BOOT_TIME`) to prove the suite does not need a host that
// has been up for long.

/// Unix seconds: the boot time the tests and Foreman (built with the
/// `failpoints` feature) see, instead of this host's.
pub const TEST_BOOT_TIME: &str = "FOREMAN_TEST_BOOT_TIME";

/// A "while ago" from `after_boot` is at least this old (a stale heartbeat
/// must be older than the timeouts the tests configure).
const MIN_AGE_SECS: i64 = 10;

pub fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// `secs` ago, with no regard to the boot: only for times no boot rule
/// reads (a task without a pid, a row's bookkeeping).
pub fn ago(secs: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds(secs)
}

/// The boot facts Foreman sees (with `FOREMAN_TEST_BOOT_TIME` honoured).
pub fn boot() -> BootFacts {
    let b = boot_facts().unwrap();
    assert_eq!(b.boot_time, boot_time(), "the boot time moved");
    b
}

/// When this host booted, as the tests and Foreman see it: the instant
/// `FOREMAN_TEST_BOOT_TIME` names when it is set (checked to be what
/// Foreman sees too, or the run would prove nothing), else the real one.
pub fn boot_time() -> DateTime<Utc> {
    static BOOT: OnceLock<DateTime<Utc>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let seen = boot_facts().expect("boot facts").boot_time;
        let Ok(text) = std::env::var(TEST_BOOT_TIME) else {
            return seen;
        };
        let secs: i64 = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{TEST_BOOT_TIME}={text:?}: not unix seconds: {e}"));
        let t = DateTime::from_timestamp(secs, 0)
            .unwrap_or_else(|| panic!("{TEST_BOOT_TIME}={text:?}: out of range"));
        assert_eq!(
            seen, t,
            "{TEST_BOOT_TIME} is set but Foreman sees the boot at {seen}: it is honoured only in builds with the `failpoints` feature"
        );
        t
    })
}

/// `secs` ago, but never earlier than a second after the boot: when a task
/// whose process runs now may claim to have started, or last reported
/// progress. At least `MIN_AGE_SECS` (or `secs`, if less) old: on a host
/// up for less than that it waits (seconds, once) until it can be.
pub fn after_boot(secs: i64) -> DateTime<Utc> {
    let earliest = boot_time() + chrono::Duration::seconds(1);
    let old_enough = earliest + chrono::Duration::seconds(secs.min(MIN_AGE_SECS));
    if Utc::now() <= old_enough {
        wait_past(old_enough);
    }
    ago(secs).max(earliest)
}

/// A task that started `started` s ago and last beat `beat` s ago, both as
/// `after_boot` gives them, the beat at least a second after the start even
/// when both fall on the boot (so the heartbeat, not the start, is the last
/// progress): (started_at, last_progress_at).
pub fn started_and_beat(started: i64, beat: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    let s = after_boot(started);
    (s, after_boot(beat).max(s + chrono::Duration::seconds(1)))
}

/// An hour before this boot: nothing that started then can be alive.
pub fn before_boot() -> DateTime<Utc> {
    boot_time() - chrono::Duration::hours(1)
}

/// A test that cannot run here (not root, a kernel knob it needs is
/// missing, the host is not hermetic enough). Under CI (`CI` set, as root
/// on a fresh machine) that is a failure: a test that passes by skipping
/// proves nothing. Elsewhere it prints "skipped: why"; the caller returns.
pub fn skip_or_fail(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    assert!(!ci, "cannot run under CI, where it must: {why}");
    eprintln!("skipped: {why}");
}

/// Whether this test runs as root (some need to, e.g. to run Foreman as
/// another user).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Wait until the wall clock is past `t` (for a timeout or grace that
/// must really elapse).
pub fn wait_past(t: DateTime<Utc>) {
    let left = (t - Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(left + Duration::from_millis(20));
    assert!(Utc::now() > t);
}

/// Poll `cond` until it holds; false if `limit` passed first.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `cond` until it holds, failing the test after `PATIENCE`.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(PATIENCE, cond), "timed out waiting for {what}");
}

// ---- /proc ----

pub fn proc_state(pid: i32) -> Option<char> {
    read_stat(Path::new("/proc"), pid)
        .ok()
        .flatten()
        .map(|s| s.state)
}

pub fn start_ticks(pid: i32) -> u64 {
    read_stat(Path::new("/proc"), pid)
        .unwrap()
        .unwrap_or_else(|| panic!("process {pid} does not exist"))
        .start_ticks
}

/// When the process started, computed exactly as Foreman computes it.
pub fn process_started_at(pid: i32) -> DateTime<Utc> {
    boot().started_at(start_ticks(pid))
}

/// The process (pid with these start ticks) exists and has not exited.
pub fn alive(pid: i32, ticks: u64) -> bool {
    matches!(read_stat(Path::new("/proc"), pid), Ok(Some(s)) if s.start_ticks == ticks && !matches!(s.state, 'Z' | 'X' | 'x'))
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The process and its descendants: (pid, cpu ticks), leader first.
pub fn tree(pid: i32) -> Vec<(i32, u64)> {
    match ProcTable::scan().unwrap().probe(pid) {
        Probe::Found(m) => m.iter().map(|m| (m.stat.pid, m.stat.cpu_ticks)).collect(),
        _ => Vec::new(),
    }
}

pub fn tree_cpu(pid: i32) -> u64 {
    tree(pid).iter().map(|(_, t)| t).sum()
}

/// Wait until `pid` runs `program` (exec done) and sleeps.
pub fn wait_sleeping(pid: i32, program: &str) {
    wait_for(&format!("{pid} to sleep in {program}"), || {
        cmdline(pid).starts_with(program) && proc_state(pid) == Some('S')
    });
}

/// Whether the process ignores `sig` (from /proc/PID/status SigIgn).
pub fn ignores(pid: i32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

// ---- reports ----

/// The finding for a task; fails the test with the whole report if absent.
pub fn finding<'a>(report: &'a SweepReport, task: &str) -> &'a FindingReport {
    report
        .findings
        .iter()
        .find(|f| f.task_id == task)
        .unwrap_or_else(|| panic!("no finding for {task} in {:#?}", report.findings))
}

pub fn assert_no_finding(report: &SweepReport, task: &str) {
    let f: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.task_id == task)
        .collect();
    assert!(f.is_empty(), "unexpected finding for {task}: {f:#?}");
}

pub fn reason(f: &FindingReport) -> &str {
    f.evidence["reason"].as_str().unwrap_or("")
}
