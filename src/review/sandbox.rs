//! The sandbox review: three scratch executors (SQLite, the contract
//! schema) and activity logs in a temp directory, real processes for their
//! tasks, and the same `sweep` the daemon runs, with short timeouts. One
//! timeline serves every check: set up, a first sweep, wait past the
//! progress timeout, a second sweep (the startup world runs the orphan scan
//! twice, as the daemon does across exit grace), then each check reads what
//! Foreman wrote and what became of the processes.

use super::CheckResult;
use crate::activity::ActivityLog;
use crate::config::Config;
use crate::executor::sqlite::SCHEMA;
use crate::executor::{self, Executor, Marked};
use crate::model::{Snapshot, SweepKind, Task};
use crate::outbox;
use crate::probe::{boot_facts, read_stat};
use crate::sandbox::{self, now_text, Droids};
use crate::sweep::{sweep, JudgeFn, LogAccess, SweepOptions};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every sandbox check, in the order they are reported.
pub const CHECKS: [&str; 12] = [
    "dead-detected",
    "healthy-busy-kept",
    "healthy-quiet-kept",
    "wrapper-kept",
    "hung-detected",
    "zombie-detected",
    "pid-reuse-detected",
    "orphans-swept",
    "finished-not-overwritten",
    "other-host-untouched",
    "recovery-triggered",
    "shadow-acts-on-nothing",
];

/// A busy loop that ends when the review that started it is gone (a
/// review killed without its cleanup must not leave CPU burning).
const BUSY: &str = "while kill -0 $PPID 2>/dev/null; do :; done";
/// A shell waiting on the child that does the work (the child inherits
/// `$PPID`, the review).
const WRAPPER: &str = "(while kill -0 $PPID 2>/dev/null; do :; done) & wait";

/// The progress timeout and startup grace in the sandbox: the second sweep
/// comes when every task is past both, plus `MARGIN`.
const TIMEOUT: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_millis(500);
const MARGIN: Duration = Duration::from_millis(500);

pub struct Options {
    /// Only this check (its world is still built whole).
    pub only: Option<String>,
    /// Keep the temp directory (its path is printed) instead of removing it.
    pub keep: bool,
    pub judge: JudgeFn,
    /// Force real PID reuse through `/proc/sys/kernel/ns_last_pid` when
    /// permitted. The daemon's scheduled review does not: on a production
    /// host it would wind the pid counter back every slot.
    pub force_pid_reuse: bool,
}

/// Run the sandbox checks. `Err` only when the sandbox itself cannot be
/// built (no temp directory, no `sh`); a check that cannot run is a skip or
/// a fail with its reason.
pub fn run(opts: &Options) -> Result<Vec<CheckResult>> {
    if let Some(only) = &opts.only {
        if !CHECKS.contains(&only.as_str()) {
            bail!(
                "no review check named {only:?}; the checks are: {}",
                CHECKS.join(", ")
            );
        }
    }
    let wanted = |name: &str| opts.only.as_deref().is_none_or(|o| o == name);
    let dir = tempfile::Builder::new()
        .prefix("foreman-review-")
        .tempdir()
        .context("creating the review's temp directory")?;
    let root = dir.path().to_path_buf();
    if opts.keep {
        eprintln!("foreman review: sandbox kept in {}", root.display());
    }
    // The sandbox's own findings are not the deployment's: they stay out of
    // the log stream (the daemon's journal, the command's stderr).
    let result =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            scenario(&root, opts, &wanted)
        });
    if opts.keep {
        // Leave it for inspection.
        let _ = dir.keep();
    }
    result
}

fn scenario(
    root: &Path,
    opts: &Options,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<CheckResult>> {
    let started = Instant::now();
    let mut droids = Droids::default();
    let boot = boot_facts()?;
    let sweep_opts = SweepOptions {
        judge: opts.judge,
        ..SweepOptions::default()
    };
    let need_enforce = CHECKS
        .iter()
        .filter(|c| !matches!(**c, "orphans-swept" | "shadow-acts-on-nothing"))
        .any(|c| wanted(c));
    let need_startup = wanted("orphans-swept");
    let need_shadow = wanted("shadow-acts-on-nothing");

    // ---- set up every world
    let mut enforce = if need_enforce {
        let mut w = World::new(root, "enforce", "enforce", true)?;
        w.tasks = enforce_tasks(&mut droids, &w, opts.force_pid_reuse)?;
        w.racing = true;
        Some(w)
    } else {
        None
    };
    let mut shadow = if need_shadow {
        let w = World::new(root, "shadow", "shadow", false)?;
        shadow_tasks(&mut droids, &w)?;
        Some(w)
    } else {
        None
    };
    let mut startup = if need_startup {
        let w = World::new(root, "startup", "enforce", false)?;
        startup_tasks(&mut droids, &w, boot.boot_time)?;
        Some(w)
    } else {
        None
    };

    // ---- first sweeps (and the first orphan scan)
    for (w, kind) in [
        (enforce.as_mut(), SweepKind::Manual),
        (shadow.as_mut(), SweepKind::Manual),
        (startup.as_mut(), SweepKind::Startup),
    ] {
        if let Some(w) = w {
            w.sweep(kind, &sweep_opts)?;
        }
    }
    // A hang shows only past startup grace plus the timeout from the
    // tasks' start, and past the timeout from the first sweep's sight.
    // Counted from when the last first sweep ended: on a loaded machine the
    // later worlds' first sight comes well after `first`.
    let second = (started + GRACE + TIMEOUT + MARGIN).max(Instant::now() + TIMEOUT + MARGIN);
    if !sandbox::pause(second.saturating_duration_since(Instant::now())) {
        bail!("interrupted");
    }
    droids.reap();
    // The quiet droid's executor heartbeats it just before the second look.
    if let Some(w) = &enforce {
        w.heartbeat("quiet")?;
    }
    for (w, kind) in [
        (enforce.as_mut(), SweepKind::Manual),
        (shadow.as_mut(), SweepKind::Manual),
        (startup.as_mut(), SweepKind::Startup),
    ] {
        if let Some(w) = w {
            w.sweep(kind, &sweep_opts)?;
        }
    }
    // Recovery hears of what was marked.
    if let Some(w) = &enforce {
        outbox::deliver_due(&w.config, &w.log, Duration::from_secs(10))?;
    }
    droids.reap();
    let timeline = started.elapsed();

    // ---- the checks
    let mut out = Vec::new();
    let mut check = |name: &str, f: &mut dyn FnMut() -> Result<CheckResult>| {
        if !wanted(name) {
            return;
        }
        let t = Instant::now();
        let r = f().unwrap_or_else(|e| {
            CheckResult::fail(
                name,
                format!("could not be checked: {e:#}"),
                json!({"error": format!("{e:#}")}),
            )
        });
        let mut r = r.took(t);
        // Each check's time includes the shared timeline it waited for.
        r.duration_ms += timeline.as_millis() as u64;
        out.push(r);
    };
    if let Some(w) = &enforce {
        let t = &w.tasks;
        check("dead-detected", &mut || {
            expect_marked(w, "dead-detected", "dead", "dead")
        });
        check("healthy-busy-kept", &mut || {
            expect_kept(w, &mut droids, "healthy-busy-kept", "busy", t.busy)
        });
        check("healthy-quiet-kept", &mut || {
            expect_kept(w, &mut droids, "healthy-quiet-kept", "quiet", t.quiet)
        });
        check("wrapper-kept", &mut || {
            expect_kept(w, &mut droids, "wrapper-kept", "wrapper", t.wrapper)
        });
        check("hung-detected", &mut || {
            let r = expect_marked(w, "hung-detected", "hung", "hung")?;
            if r.status != super::Status::Pass {
                return Ok(r);
            }
            let signals = w.count(
                "SELECT COUNT(*) FROM finding_signals s JOIN findings f ON f.id = s.finding_id
                 WHERE f.task_id = 'hung' AND s.result = 'delivered'",
            )?;
            let gone = gone(&mut droids, t.hung);
            Ok(if signals > 0 && gone {
                CheckResult::pass(
                    "hung-detected",
                    "a sleeper with a stale heartbeat was judged hung, terminated through its verified identity, and marked failed",
                )
            } else {
                CheckResult::fail(
                    "hung-detected",
                    "judged hung and marked failed, but not terminated",
                    json!({"expected": "a delivered signal and the process gone", "signals_delivered": signals, "process_gone": gone}),
                )
            })
        });
        check("zombie-detected", &mut || {
            let f = w.finding("zombie")?;
            Ok(match f.as_ref().map(|f| f.kind.as_str()) {
                Some("zombie") => CheckResult::pass(
                    "zombie-detected",
                    "an exited child its parent never reaped was judged zombie",
                ),
                _ => CheckResult::fail(
                    "zombie-detected",
                    "the unreaped child was not judged zombie",
                    json!({"expected": {"kind": "zombie"}, "foreman_said": f.map(|f| f.json())}),
                ),
            })
        });
        check("pid-reuse-detected", &mut || {
            let f = w.finding("reused")?;
            let innocent_alive = alive(&mut droids, t.reuser);
            let how = if t.forced_reuse {
                "forced for real through /proc/sys/kernel/ns_last_pid (the task's exact start ticks name another process)"
            } else {
                "through a process started long after the task (ns_last_pid was not used: not permitted here, or a scheduled review)"
            };
            Ok(match f.as_ref().map(|f| f.kind.as_str()) {
                Some("pid_reused") if innocent_alive => CheckResult::pass(
                    "pid-reuse-detected",
                    format!("a task whose pid now belongs to another process was judged pid_reused, {how}; that process was left alone"),
                ),
                _ => CheckResult::fail(
                    "pid-reuse-detected",
                    format!("pid reuse, {how}, was not judged pid_reused (or the new process was signalled)"),
                    json!({"expected": {"kind": "pid_reused", "new_process_alive": true}, "foreman_said": f.map(|f| f.json()), "new_process_alive": innocent_alive}),
                ),
            })
        });
        check("finished-not-overwritten", &mut || {
            let f = w.finding("finisher")?;
            let state = w.state("finisher")?;
            Ok(
                match (f.as_ref().map(|f| f.outcome.as_str()), state.as_str()) {
                    (Some("already_finished"), "SUCCESS") => CheckResult::pass(
                        "finished-not-overwritten",
                        "a task the executor completed between snapshot and mark kept its SUCCESS (already_finished)",
                    ),
                    _ => CheckResult::fail(
                        "finished-not-overwritten",
                        "the executor's SUCCESS was not kept",
                        json!({"expected": {"outcome": "already_finished", "state": "SUCCESS"}, "foreman_said": f.map(|f| f.json()), "state": state}),
                    ),
                },
            )
        });
        check("other-host-untouched", &mut || {
            let f = w.finding("elsewhere")?;
            let state = w.state("elsewhere")?;
            Ok(
                // Another host's row is that host's business: not judged
                // here, no finding, left RUNNING (its pid names nothing on
                // this host, so a judgement would call it dead).
                match (f.as_ref().map(|f| f.kind.as_str()), state.as_str()) {
                    (None, "RUNNING") => CheckResult::pass(
                        "other-host-untouched",
                        "a task of another host was not judged here and left RUNNING",
                    ),
                    _ => CheckResult::fail(
                        "other-host-untouched",
                        "a task of another host was judged or touched",
                        json!({"expected": {"finding": null, "state": "RUNNING"}, "foreman_said": f.map(|f| f.json()), "state": state}),
                    ),
                },
            )
        });
        check("recovery-triggered", &mut || recovery(w));
    }
    if let Some(w) = &startup {
        check("orphans-swept", &mut || orphans(w, &mut droids));
    }
    if let Some(w) = &shadow {
        check("shadow-acts-on-nothing", &mut || {
            shadow_check(w, &mut droids)
        });
    }
    // The processes go with `droids`, pass or fail.
    drop(droids);
    out.sort_by_key(|c| CHECKS.iter().position(|n| *n == c.name));
    Ok(out)
}

/// One scratch executor with its activity log.
struct World {
    /// The executor completes `finisher` just before Foreman's mark.
    racing: bool,
    db: PathBuf,
    config: Config,
    executor: Box<dyn Executor>,
    log: ActivityLog,
    tasks: Pids,
    /// The daemon's path: pidfds held across this world's sweeps (held
    /// tasks with a fresh heartbeat not read), where the kernel gives them.
    watch: Option<std::sync::Arc<crate::watch::Watch>>,
}

/// The pids the enforce world's checks look at.
#[derive(Default)]
struct Pids {
    busy: i32,
    quiet: i32,
    wrapper: i32,
    hung: i32,
    reuser: i32,
    forced_reuse: bool,
}

impl World {
    fn new(root: &Path, name: &str, mode: &str, alerts: bool) -> Result<World> {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("alerts"))?;
        let db = dir.join("executor.db");
        Connection::open(&db)?.execute_batch(SCHEMA)?;
        let mut text = format!(
            r#"interval = "1s"
host = "review-host"
mode = "{mode}"
# The sandbox must not defer hangs because the machine running it is busy.
[executor]
kind = "sqlite"
path = "executor.db"
[activity]
path = "foreman.db"
[defaults]
timeout = "{}ms"
startup_grace = "{}ms"
exit_grace = "1s"
kill_grace = "2s"
"#,
            TIMEOUT.as_millis(),
            GRACE.as_millis()
        );
        if alerts {
            // A local recovery: each alert's payload lands in a file.
            text.push_str(&format!(
                r#"[[alerts]]
name = "review"
kind = "command"
argv = ["sh", "-c", "cat > \"$0/$FOREMAN_FINDING_ID.json\"", {:?}]
timeout = "5s"
"#,
                dir.join("alerts").display().to_string()
            ));
        }
        let path = dir.join("foreman.toml");
        std::fs::write(&path, &text)?;
        let config = Config::parse(&text, &path)
            .map_err(|e| anyhow::anyhow!("the sandbox's own configuration: {e}"))?;
        let executor = executor::open(&config)?;
        let log = ActivityLog::open(&config.activity.path)?;
        Ok(World {
            racing: false,
            db,
            config,
            executor,
            log,
            tasks: Pids::default(),
            watch: crate::watch::Watch::new().ok().map(std::sync::Arc::new),
        })
    }

    fn conn(&self) -> Result<Connection> {
        Ok(Connection::open(&self.db)?)
    }

    fn insert(&self, id: &str, pid: Option<i32>, row: Row) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, host, attempt, started_at, last_progress_at, pid_start_ticks)
             VALUES (?1, 'review', 'droid', 'RUNNING', ?2, ?3, 1, ?4, ?5, ?6)",
            params![id, pid, row.host, row.started_at, row.heartbeat, row.ticks.map(|t| t as i64)],
        )?;
        Ok(())
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        self.conn()?.execute(
            "UPDATE tasks SET last_progress_at = ?2 WHERE id = ?1",
            params![id, now_text()],
        )?;
        Ok(())
    }

    fn sweep(&mut self, kind: SweepKind, opts: &SweepOptions) -> Result<()> {
        let executor: &dyn Executor = if self.racing {
            // The enforce world's executor completes `finisher` just before
            // Foreman's compare-and-set, as a real one racing it would.
            &CompletesFirst {
                inner: self.executor.as_ref(),
                db: &self.db,
            }
        } else {
            self.executor.as_ref()
        };
        let opts = SweepOptions {
            watch: self.watch.clone(),
            ..opts.clone()
        };
        sweep(
            &self.config,
            executor,
            LogAccess::Write(&mut self.log),
            kind,
            &opts,
        )?;
        Ok(())
    }

    fn state(&self, id: &str) -> Result<String> {
        Ok(self
            .conn()?
            .query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0))?)
    }

    fn count(&self, sql: &str) -> Result<i64> {
        Ok(self.log.conn().query_row(sql, [], |r| r.get(0))?)
    }

    /// The task's finding that matters: the one acted on, else the latest.
    fn finding(&self, task: &str) -> Result<Option<Found>> {
        Ok(self
            .log
            .conn()
            .query_row(
                "SELECT id, kind, outcome, evidence FROM findings WHERE task_id = ?1
                 ORDER BY (outcome NOT IN ('pending', 'cleared')) DESC, id DESC LIMIT 1",
                [task],
                |r| {
                    Ok(Found {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        outcome: r.get(2)?,
                        evidence: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }
}

struct Found {
    id: i64,
    kind: String,
    outcome: String,
    evidence: String,
}

impl Found {
    fn json(&self) -> Value {
        json!({
            "finding_id": self.id,
            "kind": self.kind,
            "outcome": self.outcome,
            "reason": serde_json::from_str::<Value>(&self.evidence).ok().and_then(|e| e.get("reason").cloned()),
        })
    }
}

#[derive(Default)]
struct Row {
    host: Option<String>,
    started_at: Option<String>,
    heartbeat: Option<String>,
    ticks: Option<u64>,
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A running task, started now, heartbeating now.
fn fresh() -> Row {
    Row {
        started_at: Some(now_text()),
        heartbeat: Some(now_text()),
        ..Row::default()
    }
}

fn ticks(pid: i32) -> Option<u64> {
    read_stat(Path::new("/proc"), pid)
        .ok()
        .flatten()
        .map(|s| s.start_ticks)
}

/// A process that has exited and been reaped: its pid names nothing.
fn exited(droids: &mut Droids, task: &str) -> Result<(i32, Option<u64>)> {
    let pid = droids.spawn(task, &["sh", "-c", "exit 3"])?;
    let t = ticks(pid);
    if let Some((_, child)) = droids.0.last_mut() {
        child.wait()?;
    }
    Ok((pid, t))
}

fn enforce_tasks(droids: &mut Droids, w: &World, force_reuse: bool) -> Result<Pids> {
    let mut p = Pids::default();
    let (dead, dead_ticks) = exited(droids, "dead")?;
    w.insert(
        "dead",
        Some(dead),
        Row {
            ticks: dead_ticks,
            ..fresh()
        },
    )?;
    p.busy = droids.spawn("busy", &["sh", "-c", BUSY])?;
    // No heartbeat at all: only its CPU shows progress.
    w.insert(
        "busy",
        Some(p.busy),
        Row {
            heartbeat: None,
            ..fresh()
        },
    )?;
    p.quiet = droids.spawn("quiet", &["sleep", "300"])?;
    w.insert("quiet", Some(p.quiet), fresh())?;
    // A shell waiting on the child that does the work.
    p.wrapper = droids.spawn("wrapper", &["sh", "-c", WRAPPER])?;
    w.insert(
        "wrapper",
        Some(p.wrapper),
        Row {
            heartbeat: None,
            ..fresh()
        },
    )?;
    p.hung = droids.spawn("hung", &["sleep", "300"])?;
    w.insert("hung", Some(p.hung), fresh())?;
    // The review itself is the parent that never reaps: deterministic,
    // unlike a shell that may reap its own background child before it
    // execs something that would not.
    let zombie = droids.spawn_unreaped("zombie", &["sh", "-c", "exit 0"])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while read_stat(Path::new("/proc"), zombie)
        .ok()
        .flatten()
        .is_none_or(|s| s.state != 'Z')
    {
        if Instant::now() > deadline {
            bail!("process {zombie} did not become a zombie");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    w.insert("zombie", Some(zombie), fresh())?;
    // PID reuse: the real thing where the kernel lets us choose the next
    // pid, else a process whose start is long after the task's.
    let (old, old_ticks) = exited(droids, "reused-before")?;
    let started = now_text();
    // Start ticks count in 1/CLK_TCK s: a reuse within the same tick would
    // be the same identity, which no reuse outside a sandbox can be.
    std::thread::sleep(Duration::from_millis(30));
    let forced = force_reuse
        && std::fs::write("/proc/sys/kernel/ns_last_pid", (old - 1).to_string()).is_ok();
    p.reuser = droids.spawn("reuser", &["sleep", "300"])?;
    p.forced_reuse = forced && p.reuser == old && old_ticks.is_some();
    if p.forced_reuse {
        w.insert(
            "reused",
            Some(old),
            Row {
                started_at: Some(started),
                ticks: old_ticks,
                ..fresh()
            },
        )?;
    } else {
        // Ten minutes before the reuser, but never before this boot: on a
        // host up for less than that, a task "started" before the boot
        // would be judged by the pre-boot rule instead.
        let boot = crate::probe::boot_facts()?.boot_time;
        let claimed =
            (Utc::now() - chrono::Duration::minutes(10)).max(boot + chrono::Duration::seconds(1));
        w.insert(
            "reused",
            Some(p.reuser),
            Row {
                started_at: Some(at(claimed)),
                ..fresh()
            },
        )?;
    }
    let (finisher, finisher_ticks) = exited(droids, "finisher")?;
    w.insert(
        "finisher",
        Some(finisher),
        Row {
            ticks: finisher_ticks,
            ..fresh()
        },
    )?;
    let (elsewhere, _) = exited(droids, "elsewhere")?;
    w.insert(
        "elsewhere",
        Some(elsewhere),
        Row {
            host: Some("another-host".into()),
            ..fresh()
        },
    )?;
    Ok(p)
}

fn shadow_tasks(droids: &mut Droids, w: &World) -> Result<()> {
    let (dead, t) = exited(droids, "shadow-dead")?;
    w.insert(
        "dead",
        Some(dead),
        Row {
            ticks: t,
            ..fresh()
        },
    )?;
    let hung = droids.spawn("shadow-hung", &["sleep", "300"])?;
    w.insert("hung", Some(hung), fresh())?;
    Ok(())
}

fn startup_tasks(droids: &mut Droids, w: &World, boot: DateTime<Utc>) -> Result<()> {
    let (gone, t) = exited(droids, "startup-gone")?;
    w.insert(
        "gone",
        Some(gone),
        Row {
            ticks: t,
            ..fresh()
        },
    )?;
    // Its pid is alive now, so it must be another process: never signalled.
    let live = droids.spawn("startup-pre-boot", &["sleep", "300"])?;
    w.insert(
        "pre-boot",
        Some(live),
        Row {
            started_at: Some(at(boot - chrono::Duration::hours(1))),
            ..Row::default()
        },
    )?;
    w.insert(
        "no-pid",
        None,
        Row {
            started_at: Some(at(Utc::now() - chrono::Duration::minutes(10))),
            ..Row::default()
        },
    )?;
    Ok(())
}

/// Completes `finisher` just before forwarding Foreman's compare-and-set.
struct CompletesFirst<'a> {
    inner: &'a dyn Executor,
    db: &'a Path,
}

impl Executor for CompletesFirst<'_> {
    fn snapshot(&self) -> Result<Snapshot> {
        self.inner.snapshot()
    }

    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> Result<Marked> {
        if task.id == "finisher" {
            Connection::open(self.db)?.execute(
                "UPDATE tasks SET state = 'SUCCESS', finished_at = ?1 WHERE id = 'finisher'",
                [now_text()],
            )?;
        }
        self.inner.mark_failed(task, reason, at)
    }
}

/// The latest process started with this pid: a forced reuse gives two.
fn child_of(droids: &mut Droids, pid: i32) -> Option<&mut std::process::Child> {
    droids
        .0
        .iter_mut()
        .rev()
        .map(|(_, c)| c)
        .find(|c| c.id() as i32 == pid)
}

/// Our child is still running (not exited, not a zombie waiting for us).
fn alive(droids: &mut Droids, pid: i32) -> bool {
    child_of(droids, pid).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
}

/// Our child has exited (waits up to a second for a signal in flight).
fn gone(droids: &mut Droids, pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if !alive(droids, pid) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn expect_marked(w: &World, name: &str, task: &str, kind: &str) -> Result<CheckResult> {
    let f = w.finding(task)?;
    let state = w.state(task)?;
    Ok(
        match (
            f.as_ref().map(|f| (f.kind.as_str(), f.outcome.as_str())),
            state.as_str(),
        ) {
            (Some((k, "marked_failed")), "FAILED") if k == kind => CheckResult::pass(
                name,
                format!("judged {kind} and marked failed in the executor"),
            ),
            _ => CheckResult::fail(
                name,
                format!("task {task:?} was not judged {kind} and marked failed"),
                json!({"expected": {"kind": kind, "outcome": "marked_failed", "state": "FAILED"}, "foreman_said": f.map(|f| f.json()), "state": state}),
            ),
        },
    )
}

fn expect_kept(
    w: &World,
    droids: &mut Droids,
    name: &str,
    task: &str,
    pid: i32,
) -> Result<CheckResult> {
    let f = w.finding(task)?;
    let state = w.state(task)?;
    let alive = alive(droids, pid);
    Ok(if f.is_none() && state == "RUNNING" && alive {
        CheckResult::pass(
            name,
            format!(
                "task {task:?} was judged alive across two sweeps {} apart and left running",
                humantime::format_duration(TIMEOUT + MARGIN)
            ),
        )
    } else {
        CheckResult::fail(
            name,
            format!("a healthy task ({task:?}) was judged or acted on"),
            json!({"expected": {"finding": null, "state": "RUNNING", "alive": true}, "foreman_said": f.map(|f| f.json()), "state": state, "alive": alive}),
        )
    })
}

fn recovery(w: &World) -> Result<CheckResult> {
    let mut stmt = w.log.conn().prepare(
        "SELECT id, task_id, kind FROM findings WHERE outcome = 'marked_failed' ORDER BY id",
    )?;
    let marked: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if marked.is_empty() {
        return Ok(CheckResult::fail(
            "recovery-triggered",
            "nothing was marked failed, so no recovery could be triggered",
            json!({"expected": "at least one marked task with its alert"}),
        ));
    }
    let dir =
        w.db.parent()
            .context("the sandbox world has no directory")?
            .join("alerts");
    let mut missing = Vec::new();
    for (id, task, kind) in &marked {
        let got = std::fs::read_to_string(dir.join(format!("{id}.json")))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let ok = got.as_ref().is_some_and(|p| {
            p["outcome"] == "marked_failed"
                && p["task_id"] == task.as_str()
                && matches!(p["next_step"].as_str(), Some("recover" | "replan"))
        });
        if !ok {
            missing.push(json!({"finding_id": id, "task_id": task, "kind": kind, "payload": got}));
        }
    }
    Ok(if missing.is_empty() {
        CheckResult::pass(
            "recovery-triggered",
            format!(
                "each of the {} marked task(s) reached the local alert sink with next_step recover or replan",
                marked.len()
            ),
        )
    } else {
        CheckResult::fail(
            "recovery-triggered",
            "a marked task produced no alert for recovery",
            json!({"expected": "one payload per marked finding, outcome marked_failed", "missing": missing}),
        )
    })
}

fn orphans(w: &World, droids: &mut Droids) -> Result<CheckResult> {
    let mut wrong = Vec::new();
    for task in ["gone", "pre-boot", "no-pid"] {
        let f = w.finding(task)?;
        let state = w.state(task)?;
        let ok = f
            .as_ref()
            .is_some_and(|f| f.kind == "orphan" && f.outcome == "marked_failed")
            && state == "FAILED";
        if !ok {
            wrong.push(json!({"task": task, "foreman_said": f.map(|f| f.json()), "state": state}));
        }
    }
    // The pre-boot task's pid is someone else's process now.
    let pid: Option<i32> =
        w.conn()?
            .query_row("SELECT pid FROM tasks WHERE id = 'pre-boot'", [], |r| {
                r.get(0)
            })?;
    let untouched = pid.is_some_and(|p| alive(droids, p));
    Ok(if wrong.is_empty() && untouched {
        CheckResult::pass(
            "orphans-swept",
            "the startup scan marked a dead task, a task from before this boot and a task without a pid as orphan, and signalled nothing",
        )
    } else {
        CheckResult::fail(
            "orphans-swept",
            "the startup scan missed an orphan, or signalled a process that is not the task's",
            json!({"expected": {"kind": "orphan", "outcome": "marked_failed", "state": "FAILED"}, "wrong": wrong, "pre_boot_pid_untouched": untouched}),
        )
    })
}

fn shadow_check(w: &World, droids: &mut Droids) -> Result<CheckResult> {
    let states = (w.state("dead")?, w.state("hung")?);
    let signals = w.count("SELECT COUNT(*) FROM finding_signals")?;
    let findings = w.count("SELECT COUNT(*) FROM findings WHERE kind IN ('dead', 'hung')")?;
    let hung_pid: Option<i32> =
        w.conn()?
            .query_row("SELECT pid FROM tasks WHERE id = 'hung'", [], |r| r.get(0))?;
    let hung_alive = hung_pid.is_some_and(|p| alive(droids, p));
    Ok(
        if states.0 == "RUNNING"
            && states.1 == "RUNNING"
            && signals == 0
            && hung_alive
            && findings == 2
        {
            CheckResult::pass(
                "shadow-acts-on-nothing",
                "in shadow mode a dead and a hung task were found and nothing was marked or signalled",
            )
        } else {
            CheckResult::fail(
                "shadow-acts-on-nothing",
                "shadow mode changed something, or found nothing to not act on",
                json!({"expected": {"states": ["RUNNING", "RUNNING"], "signals": 0, "hung_alive": true, "findings": 2}, "states": [states.0, states.1], "signals": signals, "hung_alive": hung_alive, "findings": findings}),
            )
        },
    )
}
