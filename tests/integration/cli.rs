//! The real `foreman` binary end to end: exit codes, `check-config`,
//! `sweep --json` and `scan-orphans --json`, the actor lock, the daemon and
//! its signals, a crash between committing a finding and acting on it, and
//! the demo. Every command runs hermetically: `--config` in a temporary
//! directory, no `$FOREMAN_CONFIG`, no `RUST_LOG`, no `FAILPOINTS` unless a
//! test sets them.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use wait_timeout::ChildExt;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_foreman");

/// How long any awaited condition, or any one-shot command, may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) const HOST: &str = "test-host";

// ---------------------------------------------------------------- helpers

/// Poll `ready` until it holds; fail the test after `limit`.
pub(crate) fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Poll `probe` until it gives a value; fail the test after `limit`.
pub(crate) fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    wait_until(what, limit, || {
        found = probe();
        found.is_some()
    });
    found.expect("wait_until returned, so the value is there")
}

/// `started_at` one hour before this boot (as the tests see it, see
/// `common::boot_time`): exit grace does not apply.
pub(crate) fn before_boot() -> String {
    crate::common::before_boot().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The pid of a process that has exited and been reaped.
pub(crate) fn reaped_pid() -> i32 {
    let mut child = Command::new("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn true");
    let pid = child.id() as i32;
    child.wait().expect("reap true");
    pid
}

fn send(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a child
    // of this test that has not been reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// A long-lived helper process (`sleep`), killed and reaped on drop.
pub(crate) struct Sleeper(Child);

impl Sleeper {
    pub(crate) fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub(crate) fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self:#?}"))
    }
}

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

/// A running `foreman`, its output collected as it comes; killed and reaped
/// on drop if the test did not wait for it.
pub(crate) struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    exited: Option<Option<i32>>,
}

impl Running {
    pub(crate) fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn foreman");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            drain(child.stdout.take().expect("stdout"), stdout.clone()),
            drain(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
            exited: None,
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, signal: libc::c_int) {
        assert!(self.exited.is_none(), "signalling a process already reaped");
        send(self.pid(), signal);
    }

    /// What it printed on stdout so far.
    pub(crate) fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn still_running(&mut self) -> bool {
        self.exited.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Wait for the exit (at most `limit`), then for its output.
    pub(crate) fn finish(&mut self, limit: Duration) -> Out {
        let status = match self.child.wait_timeout(limit).expect("wait") {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "foreman did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        self.exited = Some(status.code());
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Out {
            code: status.code(),
            stdout: self
                .stdout
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One scratch world: a directory with `foreman.toml`, the executor's
/// database `executor.db` and the activity log `foreman.db`.
pub(crate) struct World {
    dir: TempDir,
}

impl World {
    pub(crate) fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("foreman-cli-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.path("foreman.toml")
    }

    pub(crate) fn activity_path(&self) -> PathBuf {
        self.path("foreman.db")
    }

    pub(crate) fn executor_path(&self) -> PathBuf {
        self.path("executor.db")
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// `foreman.toml`: the scratch SQLite executor and no HTTP listener;
    /// `top` goes before the first table (e.g. `interval = "1s"`).
    pub(crate) fn config(&self, top: &str) {
        self.write(
            "foreman.toml",
            &format!(
                "host = \"{HOST}\"\nmax_cpu_pressure = 100.0\n{top}\n\
                 [executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\n\
                 [activity]\npath = \"foreman.db\"\n\n\
                 # Tests run side by side; the default port is one port.\n\
                 [http]\nlisten = \"\"\n"
            ),
        );
    }

    /// Create the executor's database with the contract schema.
    pub(crate) fn create_executor_at(path: &Path) -> Connection {
        let db = Connection::open(path).expect("open executor db");
        db.execute_batch(foreman::executor::sqlite::SCHEMA)
            .expect("schema");
        db
    }

    pub(crate) fn executor(&self) -> Connection {
        if self.executor_path().exists() {
            Connection::open(self.executor_path()).expect("open executor db")
        } else {
            World::create_executor_at(&self.executor_path())
        }
    }

    /// `foreman --config <world>/foreman.toml ARGS`, hermetic.
    pub(crate) fn foreman(&self, args: &[&str]) -> Command {
        let mut cmd = bare_foreman();
        cmd.arg("--config").arg(self.config_path()).args(args);
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// The activity log, read-only, if it exists and is readable yet.
    pub(crate) fn activity(&self) -> Option<Connection> {
        if !self.activity_path().exists() {
            return None;
        }
        let c = Connection::open_with_flags(
            self.activity_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        c.busy_timeout(Duration::from_secs(5)).ok()?;
        Some(c)
    }

    /// One integer from the activity log; `None` while it cannot say.
    pub(crate) fn log_i64(&self, sql: &str) -> Option<i64> {
        self.activity()?
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .ok()
            .flatten()
    }

    /// (id, action, outcome) of the finding of this task and kind.
    pub(crate) fn finding(&self, task: &str, kind: &str) -> Option<(i64, String, String)> {
        self.activity()?
            .query_row(
                "SELECT id, action, outcome FROM findings WHERE task_id = ?1 AND kind = ?2",
                params![task, kind],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .ok()
            .flatten()
    }

    pub(crate) fn task_state(&self, id: &str) -> (String, Option<String>) {
        self.executor()
            .query_row("SELECT state, error FROM tasks WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("task row")
    }
}

/// The binary with nothing inherited that would change what it does.
pub(crate) fn bare_foreman() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("FOREMAN_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("FAILPOINTS")
        // Tests run under systemd must not notify it, nor log for journald.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env("NO_COLOR", "1");
    cmd
}

/// Run to completion (at most `PATIENCE`).
pub(crate) fn run(cmd: &mut Command) -> Out {
    Running::start(cmd).finish(PATIENCE)
}

pub(crate) fn insert_task(
    db: &Connection,
    id: &str,
    droid_type: &str,
    pid: Option<i32>,
    started_at: &str,
    heartbeat: Option<&str>,
) {
    db.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at, last_progress_at)
         VALUES (?1, 'plan-a', ?2, 'RUNNING', ?3, ?4, ?5)",
        params![id, droid_type, pid, started_at, heartbeat],
    )
    .expect("insert task");
}

/// Every row of the executor's table, for "nothing changed" checks.
fn dump_tasks(db: &Connection) -> Vec<Vec<String>> {
    let mut stmt = db
        .prepare("SELECT * FROM tasks ORDER BY id")
        .expect("prepare dump");
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect()
    })
    .expect("dump")
    .collect::<Result<_, _>>()
    .expect("dump rows")
}

pub(crate) fn finding_of<'a>(report: &'a Value, task: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .find(|f| f["task_id"] == task)
        .unwrap_or_else(|| panic!("no finding for {task} in {report:#}"))
}

fn assert_utc_time(v: &Value, what: &str) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(s.ends_with('Z'), "{what} {s:?} is not UTC");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

// ---------------------------------------------------------- check-config

#[test]
fn check_config_prints_the_effective_config_with_defaults() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    let out = run(&mut w.foreman(&["check-config"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let config = w.config_path();
    for line in [
        format!("# effective configuration of {}", config.display()),
        "interval = \"2m\"".to_string(),
        format!("host = \"{HOST}\""),
        "mode = \"enforce\"".to_string(),
        "[executor]".to_string(),
        format!("path = {:?}", w.executor_path().display().to_string()),
        "timeout = \"30s\"".to_string(),
        "history_window = \"1h\"".to_string(),
        "timezone = \"UTC\"".to_string(),
        format!("path = {:?}", w.activity_path().display().to_string()),
        "[defaults]".to_string(),
        "timeout = \"30m\"".to_string(),
        "startup_grace = \"2m\"".to_string(),
        "exit_grace = \"30s\"".to_string(),
        "progress = [\"heartbeat\", \"cpu\", \"io\"]".to_string(),
        "pid_start_tolerance = \"10s\"".to_string(),
        "on_hung = \"terminate\"".to_string(),
        "kill_grace = \"10s\"".to_string(),
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "no line {line:?} in:\n{}",
            out.stdout
        );
    }

    // What it prints is itself a valid configuration, and says the same.
    let printed = w.write("printed.toml", &out.stdout);
    let again = run(bare_foreman()
        .arg("--config")
        .arg(&printed)
        .arg("check-config"));
    assert_eq!(again.code, Some(0), "{again:#?}");
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("# effective configuration of"))
            .map(String::from)
            .collect()
    };
    assert_eq!(body(&again.stdout), body(&out.stdout));
}

#[test]
fn check_config_rejects_an_unknown_key_naming_file_line_column_and_key() {
    let _g = crate::spawning();
    let w = World::new();
    let path = w.write(
        "foreman.toml",
        "host = \"test-host\"\n# a typo of `interval`\nintervall = \"5m\"\n\n[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n",
    );
    let out = run(&mut w.foreman(&["check-config"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    let want = format!("{}:3:1: key `intervall`", path.display());
    assert!(
        out.stderr.contains(&want),
        "stderr does not say {want:?}: {}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "printed a config: {}", out.stdout);
}

/// The operator's commonest slips, through the real binary: each exits 2
/// with file:line:column: key on stderr, the fix appended, and prints no
/// configuration.
#[test]
fn check_config_tells_how_to_fix_a_typo_a_bare_number_an_empty_file_and_a_short_retention() {
    let _g = crate::spawning();
    let w = World::new();
    let executor = "[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n";
    for (name, text, at, says) in [
        (
            "typo.toml",
            format!("{executor}timout = \"30s\"\n"),
            "4:1: key `executor.timout`",
            "unknown field `timout`, expected one of `kind`, ".to_string(),
        ),
        (
            "typo.toml",
            format!("{executor}timout = \"30s\"\n"),
            "4:1: key `executor.timout`",
            "; did you mean `timeout`?".to_string(),
        ),
        (
            "number.toml",
            format!("interval = 120\n{executor}"),
            "1:12: key `interval`",
            "invalid type: integer `120`, expected a duration: write it as a quoted string such as \"120s\" or \"2m\"".to_string(),
        ),
        (
            "empty.toml",
            String::new(),
            "1:1: key `executor`",
            "missing field `executor`: the smallest configuration is the executor to watch, two lines under a header: `[executor]`, `kind = \"sqlite\"`, `path = \"/path/to/executor.db\"`".to_string(),
        ),
        (
            "retention.toml",
            format!("{executor}[activity]\nretention = \"0s\"\n"),
            "5:1: key `activity.retention`",
            "0s is too short: give at least 1h".to_string(),
        ),
    ] {
        let path = w.write(name, &text);
        let out = run(bare_foreman().arg("--config").arg(&path).arg("check-config"));
        assert_eq!(out.code, Some(2), "{name}: {out:#?}");
        let want = format!("{}:{at}: ", path.display());
        assert!(
            out.stderr.contains(&want) && out.stderr.contains(&says),
            "{name}: stderr does not say {want:?} … {says:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{name}: printed {}", out.stdout);
    }
}

#[test]
fn check_config_rejects_a_bad_duration_naming_file_line_column_and_key() {
    let _g = crate::spawning();
    let w = World::new();
    let path = w.write(
        "foreman.toml",
        "[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\n[defaults]\nexit_grace = \"2 fortnights\"\n",
    );
    let out = run(&mut w.foreman(&["check-config"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    // Line 6, column 14: where the value starts.
    let want = format!("{}:6:14: key `defaults.exit_grace`", path.display());
    assert!(
        out.stderr.contains(&want),
        "stderr does not say {want:?}: {}",
        out.stderr
    );
}

/// A /proc that cannot show the executor's processes fails check-config:
/// exit 3 (the host, not the file), the reason on stderr, nothing on
/// stdout. Made real in scratch namespaces: Foreman in a PID namespace of
/// its own; then also, as root without capabilities, a /proc with hidepid.
#[test]
fn check_config_fails_when_proc_cannot_show_the_executors_processes() {
    let _g = crate::spawning();
    if !crate::linux::can_make_namespaces() {
        return;
    }
    let w = World::new();
    w.config("");
    let out = run(&mut w.foreman(&["check-config"]));
    assert_eq!(
        out.code,
        Some(0),
        "this host's /proc shows everything: {out:#?}"
    );

    let proc = Path::new("/proc");
    let cmd = w.foreman(&["check-config"]);
    let own_ns = run(&mut crate::linux::in_new_namespaces(&cmd, proc, "rw", &[]));
    assert_eq!(own_ns.code, Some(3), "{own_ns:#?}");
    assert!(
        own_ns
            .stderr
            .contains("/proc cannot show the executor's processes")
            && own_ns.stderr.contains("runs in a PID namespace (pid:["),
        "{own_ns:#?}"
    );
    assert!(!own_ns.stderr.contains("hidepid"), "{own_ns:#?}");
    assert!(own_ns.stdout.is_empty(), "{own_ns:#?}");

    let hidden = run(&mut crate::linux::in_new_namespaces(
        &cmd,
        proc,
        "rw,hidepid=invisible",
        crate::linux::ROOT_WITHOUT_CAPS,
    ));
    assert_eq!(hidden.code, Some(3), "{hidden:#?}");
    assert!(
        hidden
            .stderr
            .contains("/proc is mounted with hidepid=invisible")
            && hidden.stderr.contains("no CAP_SYS_PTRACE"),
        "{hidden:#?}"
    );
    assert!(hidden.stdout.is_empty(), "{hidden:#?}");
}

#[test]
fn check_config_on_a_missing_file_exits_2_naming_the_path() {
    let _g = crate::spawning();
    let w = World::new();
    let missing = w.path("nowhere/foreman.toml");
    let out = run(bare_foreman()
        .arg("--config")
        .arg(&missing)
        .arg("check-config"));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "stderr does not name {}: {}",
        missing.display(),
        out.stderr
    );
}

#[test]
fn config_flag_beats_the_environment_which_is_used_without_it() {
    let _g = crate::spawning();
    let w = World::new();
    let from_flag = w.write(
        "flag.toml",
        "interval = \"3m\"\n[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n",
    );
    let from_env = w.write(
        "env.toml",
        "interval = \"7m\"\n[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n",
    );

    let out = run(bare_foreman()
        .env("FOREMAN_CONFIG", &from_env)
        .arg("--config")
        .arg(&from_flag)
        .arg("check-config"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("interval = \"3m\""), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "effective configuration of {}",
            from_flag.display()
        )),
        "{}",
        out.stdout
    );

    let out = run(bare_foreman()
        .env("FOREMAN_CONFIG", &from_env)
        .arg("check-config"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("interval = \"7m\""), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "effective configuration of {}",
            from_env.display()
        )),
        "{}",
        out.stdout
    );

    // A broken $FOREMAN_CONFIG does not matter when --config is given.
    let out = run(bare_foreman()
        .env("FOREMAN_CONFIG", w.path("missing.toml"))
        .arg("--config")
        .arg(&from_flag)
        .arg("check-config"));
    assert_eq!(out.code, Some(0), "{out:#?}");
}

#[test]
fn without_flag_or_environment_the_config_is_never_taken_from_the_working_directory() {
    let _g = crate::spawning();
    let default = Path::new(foreman::config::DEFAULT_PATH);
    if default.exists() {
        // A deployed host: the binary would rightly read it. CI's fresh
        // machine has none, so there this must not pass unseen.
        return crate::common::skip_or_fail(&format!("{} exists on this host", default.display()));
    }
    let w = World::new();
    w.config("");
    let out = run(bare_foreman().current_dir(w.dir.path()).arg("check-config"));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(foreman::config::DEFAULT_PATH),
        "stderr does not name {}: {}",
        foreman::config::DEFAULT_PATH,
        out.stderr
    );
}

// ------------------------------------------------------------ sweep --json

#[test]
fn sweep_json_reports_every_field_and_marks_only_what_it_may() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    let alive = Sleeper::start();
    let pre_boot_pid = reaped_pid();
    let just_gone_pid = reaped_pid();
    {
        let db = w.executor();
        let now = now_text();
        insert_task(
            &db,
            "alive-1",
            "builder",
            Some(alive.pid()),
            &now,
            Some(&now),
        );
        insert_task(
            &db,
            "preboot-1",
            "builder",
            Some(pre_boot_pid),
            &before_boot(),
            None,
        );
        insert_task(
            &db,
            "gone-1",
            "scribe",
            Some(just_gone_pid),
            &now,
            Some(&now),
        );
    }

    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report = out.json();
    let obj = report.as_object().expect("one JSON object");
    for key in [
        "sweep_id",
        "kind",
        "started_at",
        "finished_at",
        "tasks_seen",
        "tasks_checked",
        "findings",
    ] {
        assert!(obj.contains_key(key), "no {key} in {report:#}");
    }
    assert!(report["sweep_id"].is_i64(), "{report:#}");
    assert_eq!(report["kind"], "manual");
    let started = assert_utc_time(&report["started_at"], "started_at");
    let finished = assert_utc_time(&report["finished_at"], "finished_at");
    assert!(started <= finished);
    assert_eq!(report["tasks_seen"], 3);
    assert_eq!(report["tasks_checked"], 3);
    let findings = report["findings"].as_array().expect("findings array");
    assert_eq!(findings.len(), 2, "alive-1 is no finding: {report:#}");
    for f in findings {
        for key in [
            "id",
            "task_id",
            "attempt",
            "droid_type",
            "plan_id",
            "pid",
            "kind",
            "evidence",
            "action",
            "outcome",
        ] {
            assert!(
                f.as_object().expect("finding object").contains_key(key),
                "no {key} in {f:#}"
            );
        }
        assert!(f["id"].is_i64(), "{f:#}");
        assert_eq!(f["attempt"], 1);
        assert_eq!(f["plan_id"], "plan-a");
        assert!(f["evidence"]["reason"].is_string(), "{f:#}");
    }

    // Started before this boot: no exit grace, marked now.
    let pre = finding_of(&report, "preboot-1");
    assert_eq!(pre["droid_type"], "builder");
    assert_eq!(pre["pid"], pre_boot_pid);
    assert_eq!(pre["kind"], "dead");
    assert_eq!(pre["action"], "mark_failed");
    assert_eq!(pre["outcome"], "marked_failed");
    let (state, error) = w.task_state("preboot-1");
    assert_eq!(state, "FAILED");
    assert!(
        error.as_deref().is_some_and(|e| e.starts_with("foreman:")),
        "error {error:?}"
    );

    // Just gone: waits out exit grace, untouched.
    let gone = finding_of(&report, "gone-1");
    assert_eq!(gone["kind"], "dead");
    assert_eq!(gone["action"], "deferred");
    assert_eq!(gone["outcome"], "pending");
    assert_eq!(w.task_state("gone-1").0, "RUNNING");
    assert_eq!(w.task_state("alive-1").0, "RUNNING");

    // The activity log holds the same findings under the same ids.
    let id = pre["id"].as_i64().expect("id");
    assert_eq!(
        w.finding("preboot-1", "dead"),
        Some((id, "mark_failed".into(), "marked_failed".into()))
    );
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM sweeps"),
        Some(1),
        "one sweep recorded"
    );
    assert_eq!(
        w.log_i64("SELECT id FROM sweeps"),
        report["sweep_id"].as_i64()
    );
}

#[test]
fn dry_run_json_has_no_ids_creates_no_activity_log_and_changes_no_row() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    let pid = reaped_pid();
    let before = {
        let db = w.executor();
        insert_task(&db, "preboot-1", "builder", Some(pid), &before_boot(), None);
        dump_tasks(&db)
    };

    let out = run(&mut w.foreman(&["sweep", "--dry-run", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    assert!(report.get("sweep_id").is_none(), "{report:#}");
    let f = finding_of(&report, "preboot-1");
    assert!(f.get("id").is_none(), "a dry run has no finding ids: {f:#}");
    assert_eq!(f["kind"], "dead");
    assert_eq!(f["action"], "mark_failed");
    assert_ne!(f["outcome"], "marked_failed", "{f:#}");

    assert!(
        !w.activity_path().exists(),
        "a dry run created the activity log"
    );
    assert!(
        !foreman::lock::lock_path(&w.activity_path()).exists(),
        "a dry run created the lock file"
    );
    assert_eq!(dump_tasks(&w.executor()), before, "a dry run changed a row");

    // The table form says what would happen.
    let out = run(&mut w.foreman(&["sweep", "--dry-run"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("dry run"), "{}", out.stdout);
    assert!(out.stdout.contains("would mark_failed"), "{}", out.stdout);
    assert!(!w.activity_path().exists());
    assert_eq!(dump_tasks(&w.executor()), before);
}

#[test]
fn a_malformed_row_is_reported_unverifiable_with_its_reason_and_the_sweep_succeeds() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    let alive = Sleeper::start();
    {
        let db = w.executor();
        let now = now_text();
        insert_task(
            &db,
            "alive-1",
            "builder",
            Some(alive.pid()),
            &now,
            Some(&now),
        );
        db.execute(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at)
             VALUES ('bad-1', 'plan-b', 'scribe', 'RUNNING', ?1, 'soon')",
            [alive.pid()],
        )
        .expect("insert bad row");
    }
    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report = out.json();
    assert_eq!(report["tasks_seen"], 2);
    let f = finding_of(&report, "bad-1");
    assert_eq!(f["kind"], "unverifiable");
    assert_eq!(f["action"], "none");
    assert_eq!(f["outcome"], "reported");
    assert_eq!(f["droid_type"], "scribe");
    let reason = f["evidence"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("malformed") && reason.contains("started_at"),
        "reason {reason:?}"
    );
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(1));
    assert_eq!(w.task_state("bad-1").0, "RUNNING");
    assert_eq!(w.task_state("alive-1").0, "RUNNING");
}

#[test]
fn an_unreachable_executor_exits_3_and_marks_nothing() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    assert!(!w.executor_path().exists());
    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(out.stderr.contains("snapshot_error"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&w.executor_path().display().to_string()),
        "stderr does not name the executor database: {}",
        out.stderr
    );
    let report = out.json();
    assert!(report["snapshot_error"].is_string(), "{report:#}");
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(0));
    assert!(
        !w.executor_path().exists(),
        "Foreman created the executor's database"
    );
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE error LIKE 'snapshot_error%'"),
        Some(1)
    );
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM findings"), Some(0));
    assert_eq!(w.log_i64("SELECT SUM(actions) FROM sweeps"), Some(0));
}

#[test]
fn scan_orphans_json_is_a_startup_sweep_that_marks_a_pre_boot_task_orphan() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    let pid = reaped_pid();
    insert_task(
        &w.executor(),
        "left-1",
        "scribe",
        Some(pid),
        &before_boot(),
        None,
    );
    let out = run(&mut w.foreman(&["scan-orphans", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report = out.json();
    assert_eq!(report["kind"], "startup");
    let f = finding_of(&report, "left-1");
    assert_eq!(f["kind"], "orphan");
    assert_eq!(f["evidence"]["cause"], "dead");
    assert_eq!(f["action"], "mark_failed");
    assert_eq!(f["outcome"], "marked_failed");
    assert_eq!(w.task_state("left-1").0, "FAILED");
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE kind = 'startup'"),
        Some(1)
    );
}

// ----------------------------------------------------------- exit code 1

#[test]
fn a_mark_that_fails_exits_1_with_outcome_error() {
    let _g = crate::spawning();
    let w = World::new();
    let pid = reaped_pid();
    let snapshot = w.write(
        "snapshot.json",
        &serde_json::json!({"tasks": [{
            "id": "cmd-1", "plan_id": "plan-c", "droid_type": "builder",
            "state": "RUNNING", "pid": pid, "attempt": 2, "started_at": before_boot(),
        }]})
        .to_string(),
    );
    let calls = w.path("marks.log");
    let mark_script = format!(
        "echo \"$1 $2 $3\" >> '{}'; echo 'the executor refuses' >&2; exit 7",
        calls.display()
    );
    let snapshot_cmd = vec!["cat".to_string(), snapshot.display().to_string()];
    let mark_cmd = vec![
        "sh".to_string(),
        "-c".into(),
        mark_script,
        "mark".into(),
        "{id}".into(),
        "{pid}".into(),
        "{attempt}".into(),
    ];
    w.write(
        "foreman.toml",
        &format!(
            "host = \"{HOST}\"\nmax_cpu_pressure = 100.0\n[executor]\nkind = \"command\"\n\
             snapshot_command = {}\nmark_failed_command = {}\n[activity]\npath = \"foreman.db\"\n",
            toml_array(&snapshot_cmd),
            toml_array(&mark_cmd)
        ),
    );
    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(1), "{out:#?}");
    let report = out.json();
    let f = finding_of(&report, "cmd-1");
    assert_eq!(f["kind"], "dead");
    assert_eq!(f["action"], "mark_failed");
    assert_eq!(f["outcome"], "error");
    let detail = f["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains('7') && detail.contains("the executor refuses"),
        "detail {detail:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&calls).expect("the mark command ran"),
        format!("cmd-1 {pid} 2\n"),
        "the mark command ran once, with the task's id, pid and attempt"
    );
    let id = f["id"].as_i64().expect("id");
    assert_eq!(
        w.finding("cmd-1", "dead"),
        Some((id, "mark_failed".into(), "error".into()))
    );
    assert_eq!(
        w.log_i64("SELECT action_errors FROM sweeps ORDER BY id DESC LIMIT 1"),
        Some(1)
    );
}

pub(crate) fn toml_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).expect("a JSON string is a TOML basic string"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

// --------------------------------------------------------------- the lock

#[test]
fn while_the_daemon_holds_the_lock_a_sweep_exits_3_naming_the_holder() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    w.executor();
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    let lock = foreman::lock::lock_path(&w.activity_path());
    wait_until("the daemon has written its lock file", PATIENCE, || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pid"))
    });

    for cmd in ["sweep", "scan-orphans"] {
        let out = run(&mut w.foreman(&[cmd]));
        assert_eq!(out.code, Some(3), "{cmd}: {out:#?}");
        assert!(
            out.stderr.contains("another Foreman"),
            "{cmd}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("pid {} ", daemon.pid())),
            "{cmd}: stderr does not name the holder pid {}: {}",
            daemon.pid(),
            out.stderr
        );
    }
    // A dry run acts on nothing, so it needs no lock (once the daemon has
    // created the activity log's tables).
    wait_until("the daemon's startup scan is recorded", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL")
            .is_some_and(|n| n >= 1)
    });
    let out = run(&mut w.foreman(&["sweep", "--dry-run"]));
    assert_eq!(out.code, Some(0), "{out:#?}");

    assert!(daemon.still_running());
    daemon.signal(libc::SIGINT);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");

    // Released with the daemon: a sweep may act now.
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
}

// ------------------------------------------------------------- the daemon

#[test]
fn the_daemon_sweeps_on_its_interval_and_stops_cleanly_on_sigterm() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("interval = \"1s\"");
    let alive = Sleeper::start();
    {
        let now = now_text();
        insert_task(
            &w.executor(),
            "alive-1",
            "builder",
            Some(alive.pid()),
            &now,
            Some(&now),
        );
    }
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    wait_until(
        "a startup sweep and two scheduled sweeps are in the activity log",
        PATIENCE,
        || {
            w.log_i64(
                "SELECT COUNT(*) FROM sweeps WHERE kind = 'startup' AND finished_at IS NOT NULL",
            ) == Some(1)
                && w.log_i64(
                    "SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled' AND finished_at IS NOT NULL",
                )
                .is_some_and(|n| n >= 2)
        },
    );
    assert_eq!(
        w.log_i64("SELECT kind = 'startup' FROM sweeps ORDER BY id LIMIT 1"),
        Some(1),
        "the startup scan comes first"
    );
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM findings"), Some(0));
    assert_eq!(w.task_state("alive-1").0, "RUNNING");

    let sent = Instant::now();
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NULL"),
        Some(0),
        "a sweep was left unfinished"
    );
}

#[test]
fn the_daemon_outlives_a_missing_executor_and_judges_once_it_appears() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("interval = \"1s\"");
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    wait_until("three sweeps recorded snapshot_error", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE error LIKE 'snapshot_error%'")
            .is_some_and(|n| n >= 3)
    });
    assert!(
        daemon.still_running(),
        "the daemon exited on an unreachable executor: {}",
        daemon.stderr()
    );
    assert!(
        !w.executor_path().exists(),
        "Foreman created the executor db"
    );

    // The executor's database appears, whole (written aside, then renamed).
    let pid = reaped_pid();
    {
        let staged = w.path("executor.db.new");
        let db = World::create_executor_at(&staged);
        insert_task(&db, "preboot-1", "builder", Some(pid), &before_boot(), None);
        drop(db);
        std::fs::rename(&staged, w.executor_path()).expect("rename");
    }
    let (id, _, _) = wait_for("the daemon marked the task", PATIENCE, || {
        w.finding("preboot-1", "dead")
            .filter(|(_, _, outcome)| outcome == "marked_failed")
    });
    assert_eq!(w.task_state("preboot-1").0, "FAILED");
    assert_eq!(
        w.log_i64(&format!(
            "SELECT s.kind = 'scheduled' FROM findings f JOIN sweeps s ON s.id = f.first_sweep_id WHERE f.id = {id}"
        )),
        Some(1)
    );
    assert!(daemon.still_running());
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{out:#?}");
}

#[cfg(feature = "failpoints")]
#[test]
fn a_second_signal_exits_130_without_waiting_for_the_sweep_in_flight() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("interval = \"1s\"");
    w.executor();
    let mut daemon = Running::start(
        w.foreman(&["run"])
            .env("FAILPOINTS", "sweep::before_act=sleep(30000)"),
    );
    wait_until(
        "the startup sweep is recorded (and held at sweep::before_act)",
        PATIENCE,
        || w.log_i64("SELECT COUNT(*) FROM sweeps") == Some(1),
    );
    daemon.signal(libc::SIGTERM);
    wait_until(
        "the daemon says it stops after the sweep in flight",
        PATIENCE,
        || {
            daemon
                .stderr()
                .contains("stopping after the sweep in flight")
        },
    );
    assert!(
        daemon.still_running(),
        "one signal must wait for the sweep in flight"
    );
    let sent = Instant::now();
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(130), "{out:#?}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the second signal did not end it at once"
    );
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NULL"),
        Some(1),
        "the held sweep should have been abandoned, not finished"
    );
}

// ---------------------------------------------------------- the crash test

/// An executor with one RUNNING task whose process is gone and which
/// started before this boot, and an audit of every update of `tasks`.
#[cfg(feature = "failpoints")]
fn crashed_world(top: &str) -> World {
    let w = World::new();
    w.config(top);
    let db = w.executor();
    insert_task(
        &db,
        "crash-1",
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    db.execute_batch(
        "CREATE TABLE audit(n);
         CREATE TRIGGER t AFTER UPDATE ON tasks BEGIN INSERT INTO audit VALUES (1); END;",
    )
    .expect("audit trigger");
    w
}

#[cfg(feature = "failpoints")]
fn audit_count(w: &World) -> i64 {
    w.executor()
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .expect("audit")
}

/// Run `foreman ARGS` held at `sweep::before_act`, wait until the finding is
/// committed as pending, then kill -9 it. Returns the finding id and kind.
#[cfg(feature = "failpoints")]
fn crash_before_act(w: &World, args: &[&str], kind: &str) -> i64 {
    let mut held = Running::start(
        w.foreman(args)
            .env("FAILPOINTS", "sweep::before_act=sleep(60000)"),
    );
    let (id, _, _) = wait_for(
        "the finding is committed as pending mark_failed",
        PATIENCE,
        || {
            w.finding("crash-1", kind)
                .filter(|(_, action, outcome)| action == "mark_failed" && outcome == "pending")
        },
    );
    assert!(held.still_running(), "{}", held.stderr());
    held.signal(libc::SIGKILL);
    let out = held.finish(PATIENCE);
    assert_eq!(out.code, None, "killed by a signal: {out:#?}");
    assert_eq!(
        w.task_state("crash-1").0,
        "RUNNING",
        "nothing acted before the crash"
    );
    assert_eq!(audit_count(w), 0);
    id
}

#[cfg(feature = "failpoints")]
#[test]
fn a_crash_between_commit_and_mark_is_resumed_by_the_next_sweep_exactly_once() {
    let _g = crate::spawning();
    let w = crashed_world("");
    let id = crash_before_act(&w, &["sweep"], "dead");

    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let f = finding_of(&out.json(), "crash-1").clone();
    assert_eq!(f["id"], id, "the same finding, not a new one: {f:#}");
    assert_eq!(f["outcome"], "marked_failed");
    let (state, error) = w.task_state("crash-1");
    assert_eq!(state, "FAILED");
    assert!(
        error.as_deref().is_some_and(|e| e.starts_with("foreman:")),
        "error {error:?}"
    );
    assert_eq!(
        w.finding("crash-1", "dead"),
        Some((id, "mark_failed".into(), "marked_failed".into()))
    );
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM findings WHERE task_id = 'crash-1'"),
        Some(1)
    );
    assert_eq!(audit_count(&w), 1, "the executor row was updated once");

    // A further sweep leaves the finished task alone.
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(audit_count(&w), 1);
    assert_eq!(
        w.finding("crash-1", "dead"),
        Some((id, "mark_failed".into(), "marked_failed".into()))
    );
}

#[cfg(feature = "failpoints")]
#[test]
fn a_crash_between_commit_and_mark_is_resumed_by_the_daemon_startup_scan() {
    let _g = crate::spawning();
    let w = crashed_world("interval = \"1s\"");
    let id = crash_before_act(&w, &["sweep"], "dead");

    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    wait_for("the daemon resumed the pending finding", PATIENCE, || {
        w.finding("crash-1", "dead")
            .filter(|(_, _, outcome)| outcome == "marked_failed")
    });
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(w.task_state("crash-1").0, "FAILED");
    assert_eq!(
        w.finding("crash-1", "dead").map(|f| f.0),
        Some(id),
        "the same finding was resumed"
    );
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM findings WHERE task_id = 'crash-1'"),
        Some(1),
        "the startup scan did not add an orphan finding beside the resumed one"
    );
    assert_eq!(audit_count(&w), 1, "the executor row was updated once");
}

// ---------------------------------------------------------------- the demo

/// Run `foreman demo` (at most 30 s); its output and its own start ticks.
fn run_demo() -> (Out, u64) {
    let mut demo = Running::start(bare_foreman().arg("demo"));
    // The demo's own start, to tell its droids from later owners of a pid.
    let started = foreman::probe::read_stat(Path::new("/proc"), demo.pid())
        .expect("read the demo's stat")
        .expect("the demo is not reaped yet")
        .start_ticks;
    let out = demo.finish(Duration::from_secs(30));
    assert_eq!(out.code, Some(0), "{out:#?}");
    (out, started)
}

/// The demo's finding lines (`[ 1.0s] scheduled sweep: TASK KIND OUTCOME …`)
/// as (task, kind).
fn demo_findings(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(" sweep: "))
        .filter_map(|(_, rest)| {
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[test]
fn the_demo_shows_orphan_dead_and_hung_and_leaves_no_process_behind() {
    let _g = crate::spawning();
    let (out, demo_start) = run_demo();

    let findings = demo_findings(&out.stdout);
    let has = |task: &str, kinds: &[&str]| {
        findings
            .iter()
            .any(|(t, k)| t == task && kinds.contains(&k.as_str()))
    };
    assert!(has("scribe-0", &["orphan"]), "no orphan:\n{}", out.stdout);
    assert!(has("scribe-2", &["hung"]), "no hung:\n{}", out.stdout);
    // The demo reaps its droids before each sweep and the crasher exits
    // between ticks, so it is `dead`, never a `zombie` left by the demo.
    assert!(
        has("build-3", &["dead"]) && !has("build-3", &["zombie"]),
        "the crashed droid is no finding:\n{}",
        out.stdout
    );
    for healthy in ["build-1", "build-2", "scribe-1"] {
        assert!(
            !findings.iter().any(|(t, _)| t == healthy),
            "{healthy} is healthy:\n{}",
            out.stdout
        );
    }

    let pids: Vec<i32> = out
        .stdout
        .split("pid ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect();
    assert!(
        pids.len() >= 6,
        "the demo names its droids' pids:\n{}",
        out.stdout
    );
    let boot = foreman::probe::boot_facts().expect("boot facts");
    // Droids lead their own process group and start within the demo's first
    // seconds; a process that holds the pid now and is not both is another.
    let window = demo_start + 5 * boot.clk_tck;
    for pid in pids {
        if let Ok(Some(stat)) = foreman::probe::read_stat(Path::new("/proc"), pid) {
            let droid =
                stat.pgrp == pid && stat.start_ticks >= demo_start && stat.start_ticks <= window;
            assert!(
                !droid,
                "pid {pid} started by the demo is still there: {stat:?}\n{}",
                out.stdout
            );
        }
    }
}
