//! Acting on findings with real processes and real SQLite: terminating hung
//! trees, marking failed, and every safety rule that keeps healthy work (and
//! the executor's own truth) intact.

use crate::common::*;
use chrono::{DateTime, Utc};
use foreman::activity::{ActivityLog, NewFinding, SweepRecord};
use foreman::executor::sqlite::SqliteExecutor;
use foreman::executor::{Executor, Marked};
use foreman::model::{Action, Kind, Mode, Outcome, Snapshot, SweepKind, Task};
use foreman::observation::{Binding, Observation};
use foreman::probe::Clocks;
use foreman::sweep::{sweep, LogAccess, SweepOptions};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};

const SCHEDULED: SweepKind = SweepKind::Scheduled;

/// A quiet (heartbeat-only) task whose heartbeat stopped minutes ago.
fn hung_task(w: &World, id: &str, droid: &str, pid: i32) {
    let (started, beat) = started_and_beat(600, 300);
    w.task(id)
        .droid(droid)
        .pid(pid.into())
        .started(started)
        .heartbeat(beat)
        .insert();
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn hung_tree_is_terminated_then_marked_failed() {
    let mut w = World::new();
    let leader = w.spawn(&["sh", "-c", "sleep 300; true"]);
    wait_for("the sleeping child", || tree(leader).len() == 2);
    let child = tree(leader)[1].0;
    wait_sleeping(child, "sleep");
    let child_ticks = start_ticks(child);
    hung_task(&w, "hung", "quiet", leader);

    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "hung");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(f.action, Action::TerminateAndMark);
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    assert!(!alive(child, child_ticks), "the child is gone");
    assert!(w.exited(leader).is_some(), "the leader is gone");

    let sigs = w.signals(f.id.unwrap());
    let terms: Vec<_> = sigs.iter().filter(|s| s.signal == "SIGTERM").collect();
    assert_eq!(
        terms.iter().map(|s| s.pid).collect::<Vec<_>>(),
        vec![child, leader],
        "descendants first, leader last: {sigs:#?}"
    );
    assert_eq!(terms[0].result, "delivered", "{sigs:#?}");
    // The shell may exit on its own once its child is gone, just before
    // its own SIGTERM: then it is "already gone".
    assert!(
        ["delivered", "already gone"].contains(&terms[1].result.as_str()),
        "{sigs:#?}"
    );
    assert_eq!(w.task_state("hung"), "FAILED");
    assert!(w.task_error("hung").unwrap().starts_with("foreman: hung:"));
}

#[test]
fn process_ignoring_sigterm_gets_sigkill_after_kill_grace() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.stubborn]\nprogress = [\"heartbeat\"]\nkill_grace = \"1s\"\n",
        ..Cfg::default()
    });
    let pid = w.spawn(&["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]);
    wait_for("the TERM trap", || ignores(pid, libc::SIGTERM));
    hung_task(&w, "stubborn", "stubborn", pid);

    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "stubborn");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    let status = w.exited(pid).expect("the leader is gone");
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let sigs = w.signals(f.id.unwrap());
    let term = sigs
        .iter()
        .find(|s| s.pid == pid && s.signal == "SIGTERM")
        .unwrap_or_else(|| panic!("{sigs:#?}"));
    let kill = sigs
        .iter()
        .find(|s| s.pid == pid && s.signal == "SIGKILL")
        .unwrap_or_else(|| panic!("{sigs:#?}"));
    assert_eq!(term.result, "delivered");
    assert_eq!(kill.result, "delivered");
    assert!(
        at(&kill.at) - at(&term.at) >= chrono::Duration::milliseconds(950),
        "SIGKILL only after kill_grace: {sigs:#?}"
    );
    assert_eq!(w.task_state("stubborn"), "FAILED");
}

#[test]
fn on_hung_mark_only_marks_and_leaves_the_process() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.gentle]\nprogress = [\"heartbeat\"]\non_hung = \"mark_only\"\n",
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    hung_task(&w, "gentle", "gentle", pid);
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "gentle");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed)
    );
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(alive(pid, ticks));
    assert_eq!(w.task_state("gentle"), "FAILED");
}

#[test]
fn foremans_own_process_group_is_never_signalled() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.shared]\nprogress = [\"heartbeat\"]\nkill_grace = \"100ms\"\n",
        ..Cfg::default()
    });
    // No process_group(0): it shares this test's (Foreman's) group.
    let pid = w.spawn_in_our_group(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    hung_task(&w, "shared", "shared", pid);
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "shared");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    let detail = f.detail.as_deref().unwrap();
    assert!(
        detail.contains("not signalled") && detail.contains("own process group"),
        "{detail}"
    );
    assert!(alive(pid, ticks), "still alive");
    let sigs = w.signals(f.id.unwrap());
    assert!(!sigs.is_empty(), "the refusal is recorded");
    assert!(
        sigs.iter().all(|s| s.result.starts_with("refused:")),
        "{sigs:#?}"
    );
    assert_eq!(w.task_state("shared"), "FAILED");
}

/// The executor finishes the task just before Foreman's compare-and-set.
struct CompletesFirst {
    inner: SqliteExecutor,
    db: std::path::PathBuf,
}

impl Executor for CompletesFirst {
    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        self.inner.snapshot()
    }
    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> anyhow::Result<Marked> {
        rusqlite::Connection::open(&self.db)?.execute(
            "UPDATE tasks SET state = 'SUCCESS', finished_at = ?2 WHERE id = ?1",
            rusqlite::params![task.id, rfc(now())],
        )?;
        self.inner.mark_failed(task, reason, at)
    }
}

#[test]
fn task_finished_between_snapshot_and_mark_is_already_finished() {
    let mut w = World::new();
    let pid = w.spawn_exited(&["true"]);
    w.task("racy")
        .pid(pid.into())
        .started(before_boot())
        .insert();
    let exec = CompletesFirst {
        inner: SqliteExecutor::new(&w.config.executor).unwrap(),
        db: w.db.clone(),
    };
    let r = w.sweep_with(&exec, SCHEDULED);
    let f = finding(&r, "racy");
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!(f.action, Action::MarkFailed);
    assert_eq!(f.outcome, Outcome::AlreadyFinished, "{f:#?}");
    assert_eq!(w.recorded(f.id.unwrap()).2, "already_finished");
    assert_eq!(w.task_state("racy"), "SUCCESS");
    assert_eq!(w.task_error("racy"), None, "the executor's result is kept");
}

#[test]
fn shadow_mode_records_what_it_would_do_and_does_nothing() {
    let mut w = World::with(Cfg {
        top: "mode = \"shadow\"",
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    hung_task(&w, "hung", "quiet", pid);
    let gone = w.spawn_exited(&["true"]);
    w.task("dead")
        .pid(gone.into())
        .started(before_boot())
        .insert();

    let r = w.sweep(SCHEDULED);
    assert_eq!(r.mode, Mode::Shadow);
    for id in ["hung", "dead"] {
        let f = finding(&r, id);
        assert_eq!(f.outcome, Outcome::WouldMarkFailed, "{f:#?}");
        assert_eq!(w.recorded(f.id.unwrap()).2, "would_mark_failed");
        assert!(w.signals(f.id.unwrap()).is_empty());
        assert_eq!(w.task_state(id), "RUNNING");
    }
    assert_eq!(finding(&r, "hung").kind, Kind::Hung);
    assert!(alive(pid, ticks), "the hung process is left alone");
}

#[test]
fn dry_run_writes_nothing_anywhere() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    hung_task(&w, "hung", "quiet", pid);
    let gone = w.spawn_exited(&["true"]);
    w.task("dead")
        .pid(gone.into())
        .started(before_boot())
        .insert();
    let executor_bytes = std::fs::read(&w.db).unwrap();
    let log_path = w.config.activity.path.clone();
    assert!(!log_path.exists());

    let exec = foreman::executor::open(&w.config).unwrap();
    let r = sweep(
        &w.config,
        exec.as_ref(),
        LogAccess::ReadOnly(None),
        SCHEDULED,
        &SweepOptions::default(),
    )
    .unwrap();
    assert!(r.dry_run);
    assert_eq!(r.sweep_id, None);
    assert_eq!(finding(&r, "hung").kind, Kind::Hung);
    assert_eq!(finding(&r, "dead").kind, Kind::Dead);
    for f in &r.findings {
        assert_eq!(f.id, None);
        assert_eq!(f.outcome, Outcome::Pending, "decided, not acted: {f:#?}");
    }
    assert!(!log_path.exists(), "no activity log is created");
    assert_eq!(
        std::fs::read(&w.db).unwrap(),
        executor_bytes,
        "executor db untouched"
    );
    assert_eq!(w.task_state("hung"), "RUNNING");
    assert_eq!(w.task_state("dead"), "RUNNING");
    assert!(alive(pid, ticks));

    // With an existing activity log (a real sweep creates it): read, never
    // written.
    let first = w.sweep(SCHEDULED);
    assert_eq!(finding(&first, "hung").outcome, Outcome::MarkedFailed);
    assert_eq!(finding(&first, "dead").outcome, Outcome::MarkedFailed);
    w.task("dead-2")
        .pid(gone.into())
        .started(before_boot())
        .insert();
    let before = (
        w.count("SELECT COUNT(*) FROM sweeps"),
        w.count("SELECT COUNT(*) FROM findings"),
        w.count("SELECT COUNT(*) FROM observations"),
    );
    let executor_bytes = std::fs::read(&w.db).unwrap();
    let log = ActivityLog::open_read_only(&log_path).unwrap();
    let r = sweep(
        &w.config,
        exec.as_ref(),
        LogAccess::ReadOnly(log.as_ref()),
        SCHEDULED,
        &SweepOptions::default(),
    )
    .unwrap();
    drop(log);
    assert_eq!(finding(&r, "dead-2").outcome, Outcome::Pending);
    let after = (
        w.count("SELECT COUNT(*) FROM sweeps"),
        w.count("SELECT COUNT(*) FROM findings"),
        w.count("SELECT COUNT(*) FROM observations"),
    );
    assert_eq!(before, after);
    assert_eq!(std::fs::read(&w.db).unwrap(), executor_bytes);
    assert_eq!(w.task_state("dead-2"), "RUNNING");
}

#[test]
fn mass_action_brake_holds_back_every_action_until_the_limit_allows() {
    let mut w = World::new();
    let ids: Vec<String> = (0..12).map(|i| format!("crash-{i:02}")).collect();
    for id in &ids {
        let pid = w.spawn_exited(&["sh", "-c", "exit 3"]);
        w.task(id).pid(pid.into()).started(now()).insert();
    }
    let first = w.sweep(SCHEDULED);
    assert_eq!(first.waiting(), 12, "exit grace first");

    wait_past(first.started_at + chrono::Duration::seconds(1));
    // Default limit: 10, or 20% of 12 RUNNING: 10.
    let second = w.sweep(SCHEDULED);
    for id in &ids {
        let f = finding(&second, id);
        assert_eq!(f.kind, Kind::Dead);
        assert_eq!(f.outcome, Outcome::Braked, "{f:#?}");
        assert!(f.detail.as_deref().unwrap().contains("mass-action brake"));
        assert_eq!(w.task_state(id), "RUNNING");
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE outcome = 'braked'"),
        12
    );

    w.reconfigure(Cfg {
        defaults: "max_actions_per_sweep = 20",
        ..Cfg::default()
    });
    let third = w.sweep(SCHEDULED);
    for id in &ids {
        assert_eq!(finding(&third, id).outcome, Outcome::MarkedFailed);
        assert_eq!(w.task_state(id), "FAILED");
    }
}

#[test]
fn exit_grace_lets_the_executor_record_success_first() {
    let mut w = World::new();
    let pid = w.spawn_exited(&["true"]);
    w.task("done").pid(pid.into()).started(now()).insert();
    let first = w.sweep(SCHEDULED);
    let f = finding(&first, "done");
    assert_eq!((f.kind, f.outcome), (Kind::Dead, Outcome::Pending));
    let id = f.id.unwrap();

    // The executor records the normal exit, a little late.
    w.exec(
        "UPDATE tasks SET state = 'SUCCESS', finished_at = ?1 WHERE id = 'done'",
        [rfc(now())],
    );
    wait_past(first.started_at + chrono::Duration::seconds(1));
    let second = w.sweep(SCHEDULED);
    assert_no_finding(&second, "done");
    let (_, _, outcome, detail) = w.recorded(id);
    assert_eq!(outcome, "already_finished", "{detail:?}");
    assert_eq!(w.task_state("done"), "SUCCESS");
    assert_eq!(w.task_error("done"), None);
}

#[test]
fn unreachable_executor_is_a_snapshot_error_and_marks_nothing() {
    let w = World::with(Cfg {
        executor: Some("kind = \"sqlite\"\npath = \"missing/executor.db\"".into()),
        ..Cfg::default()
    });
    let r = w.sweep(SCHEDULED);
    let err = r.snapshot_error.as_deref().expect("snapshot_error");
    assert!(err.contains("missing/executor.db"), "{err}");
    assert!(r.findings.is_empty());
    assert_eq!(r.tasks_seen, 0);
    assert!(
        !w.path("missing").exists(),
        "the executor db is never created"
    );
    let recorded: String = w
        .log()
        .query_row(
            "SELECT error FROM sweeps WHERE id = ?1",
            [r.sweep_id.unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(recorded.starts_with("snapshot_error:"), "{recorded}");
    assert_eq!(w.count("SELECT COUNT(*) FROM findings"), 0);
}

/// A world whose executor is reached through commands: the snapshot is the
/// JSON in `tasks.json`, the mark command logs its argc and argv to
/// `marks.log` (printf, so nothing is reinterpreted) and exits with `code`.
fn command_world(code: i32) -> World {
    let mut w = World::new();
    let snap = w.path("tasks.json");
    let log = w.path("marks.log");
    let snapshot = vec![
        "sh".to_string(),
        "-c".into(),
        "cat \"$1\"".into(),
        "snapshot".into(),
        snap.display().to_string(),
    ];
    let mark = vec![
        "sh".to_string(),
        "-c".into(),
        format!(
            "printf '%s|%s|%s|%s|%s\\n' \"$#\" \"$1\" \"$2\" \"$3\" \"$4\" >> '{}'; exit {code}",
            log.display()
        ),
        "mark".into(),
        "{id}".into(),
        "{attempt}".into(),
        "{pid}".into(),
        "{reason}".into(),
    ];
    w.reconfigure(Cfg {
        executor: Some(format!(
            "kind = \"command\"\nsnapshot_command = {}\nmark_failed_command = {}",
            serde_json::to_string(&snapshot).unwrap(),
            serde_json::to_string(&mark).unwrap()
        )),
        ..Cfg::default()
    });
    w
}

/// Write the command executor's snapshot: one dead task (started before
/// this boot, so it is acted on at once).
fn command_snapshot(w: &mut World, id: &str) -> i32 {
    let pid = w.spawn_exited(&["true"]);
    let doc = serde_json::json!({"tasks": [{
        "id": id, "plan_id": "p", "droid_type": "worker", "state": "RUNNING",
        "pid": pid, "attempt": 2, "started_at": rfc(before_boot()),
    }]});
    std::fs::write(w.path("tasks.json"), doc.to_string()).unwrap();
    pid
}

fn marks(w: &World) -> Vec<String> {
    std::fs::read_to_string(w.path("marks.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn command_executor_passes_each_placeholder_as_one_argv_item() {
    let mut w = command_world(0);
    // Quotes, spaces, `$`, backquotes and `;` in the id: nothing may be
    // shell-expanded or split.
    let id = r#"it's "task" $HOME `id`; 7"#;
    let pid = command_snapshot(&mut w, id);
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, id);
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    let reason = format!("foreman: dead: {}", reason(f));
    assert!(reason.contains(' ') && reason.contains(','), "{reason}");
    assert_eq!(marks(&w), vec![format!("4|{id}|2|{pid}|{reason}")]);
}

#[test]
fn command_executor_exit_3_is_already_finished() {
    let mut w = command_world(3);
    command_snapshot(&mut w, "finished");
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "finished");
    assert_eq!(f.outcome, Outcome::AlreadyFinished, "{f:#?}");
    assert_eq!(marks(&w).len(), 1);
    assert_eq!(r.action_errors(), 0);
}

#[test]
fn command_executor_other_exit_is_an_error() {
    let mut w = command_world(7);
    command_snapshot(&mut w, "broken");
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "broken");
    assert_eq!(f.outcome, Outcome::Error, "{f:#?}");
    assert!(f.detail.as_deref().unwrap().contains("7"), "{f:#?}");
    assert_eq!(r.action_errors(), 1);
    assert_eq!(w.recorded(f.id.unwrap()).2, "error");
}

#[test]
fn command_executor_does_not_expand_placeholders_inside_values() {
    let mut w = command_world(0);
    // An id that itself looks like a placeholder must arrive as written.
    let id = "job-{pid}-{reason}";
    let pid = command_snapshot(&mut w, id);
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, id);
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    let reason = format!("foreman: dead: {}", reason(f));
    assert_eq!(marks(&w), vec![format!("4|{id}|2|{pid}|{reason}")]);
}

#[test]
fn timestamps_without_offset_are_utc() {
    let mut w = World::with(Cfg {
        // CURRENT_TIMESTAMP has whole seconds: a heartbeat written now may
        // read as almost a second old, so the timeout must be well above 1s
        // (and below the age of `after_boot`'s times, on a fresh host too).
        tail: "[droid_types.utc]\nprogress = [\"heartbeat\"]\non_hung = \"mark_only\"\ntimeout = \"5s\"\n",
        ..Cfg::default()
    });
    let naive = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let stale = after_boot(600);
    let hung = w.spawn(&["sleep", "300"]);
    w.task("stale")
        .droid("utc")
        .pid(hung.into())
        .started_text(&naive(stale))
        .heartbeat_text(&naive(stale))
        .insert();
    let fresh = w.spawn(&["sleep", "300"]);
    w.task("fresh")
        .droid("utc")
        .pid(fresh.into())
        .started_text(&naive(stale))
        .insert();
    // SQLite's CURRENT_TIMESTAMP, as an executor would write it: UTC, no offset.
    w.exec(
        "UPDATE tasks SET last_progress_at = CURRENT_TIMESTAMP WHERE id = 'fresh'",
        [],
    );

    let r = w.sweep(SCHEDULED);
    assert_no_finding(&r, "fresh");
    assert_eq!(w.task_state("fresh"), "RUNNING");
    let f = finding(&r, "stale");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    let want = stale.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(f.evidence["heartbeat_at"], want.as_str());
    assert_eq!(f.evidence["task_started_at"], want.as_str());
}

/// Counts compare-and-set calls that reach the executor.
struct Counting {
    inner: Box<dyn Executor>,
    marks: AtomicUsize,
}

impl Executor for Counting {
    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        self.inner.snapshot()
    }
    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> anyhow::Result<Marked> {
        self.marks.fetch_add(1, Ordering::SeqCst);
        self.inner.mark_failed(task, reason, at)
    }
}

/// Commit what a sweep that crashed right after its commit (before acting)
/// leaves: the observation of a process gone for a minute, and a finding
/// `mark_failed`/`pending`. Returns the finding's id.
fn committed_but_not_acted(w: &World, task: &str, pid: i32, ticks: u64) -> i64 {
    let boot_id = boot().boot_id;
    let t = now();
    let mut log = ActivityLog::open(&w.config.activity.path).unwrap();
    let (_, ids) = log
        .record(&SweepRecord {
            kind: "scheduled",
            host: HOST.into(),
            mode: "enforce",
            started_at: t,
            tasks_seen: 1,
            tasks_checked: 1,
            error: None,
            deferral: None,
            boot_id: boot_id.clone(),
            clocks: Clocks::now(),
            hang_floor: None,
            observations: vec![Observation {
                task_id: task.into(),
                attempt: 1,
                pid,
                boot_id: boot_id.clone(),
                start_ticks: Some(ticks),
                binding: Some(Binding::FirstSight),
                first_seen_at: after_boot(120),
                seen_at: t,
                members: Vec::new(),
                cpu_moved_at: None,
                io_moved_at: None,
                gone_since: Some(after_boot(60)),
                pooled: false,
                unproven: false,
                heartbeat: None,
                heartbeat_moved_at: None,
            }],
            findings: vec![NewFinding {
                task_id: task.into(),
                attempt: 1,
                kind: Kind::Dead,
                droid_type: Some("worker".into()),
                plan_id: Some("plan-1".into()),
                pid: Some(pid),
                host: None,
                evidence: serde_json::json!({"reason": format!("process {pid} not found (exited)"), "boot_id": boot_id}),
                action: Action::MarkFailed,
                outcome: Outcome::Pending,
                detail: None,
                inputs: serde_json::Value::Null,
            }],
            closes: Vec::new(),
            alerts: Vec::new(),
        })
        .unwrap();
    ids[0]
}

#[test]
fn crash_between_commit_and_act_is_resumed_and_marked_exactly_once() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    w.task("resume")
        .pid(pid.into())
        .started(after_boot(120))
        .insert();
    w.kill(pid);
    let id = committed_but_not_acted(&w, "resume", pid, ticks);
    assert_eq!(w.recorded(id).2, "pending");

    let exec = Counting {
        inner: foreman::executor::open(&w.config).unwrap(),
        marks: AtomicUsize::new(0),
    };
    let r = w.sweep_with(&exec, SCHEDULED);
    let f = finding(&r, "resume");
    assert_eq!(f.id, Some(id), "the same finding");
    assert_eq!(f.kind, Kind::Dead);
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    assert_eq!(w.recorded(id).2, "marked_failed");
    assert_eq!(w.task_state("resume"), "FAILED");

    let again = w.sweep_with(&exec, SCHEDULED);
    assert_no_finding(&again, "resume");
    assert_eq!(exec.marks.load(Ordering::SeqCst), 1, "marked exactly once");
    assert_eq!(w.recorded(id).2, "marked_failed");
    assert_eq!(w.count("SELECT COUNT(*) FROM findings"), 1);
}

#[test]
fn crash_between_mark_and_outcome_closes_the_finding_without_marking_again() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    w.task("marked")
        .pid(pid.into())
        .started(after_boot(120))
        .insert();
    w.kill(pid);
    let id = committed_but_not_acted(&w, "marked", pid, ticks);
    // The mark went through; Foreman stopped before recording the outcome.
    w.exec(
        "UPDATE tasks SET state = 'FAILED', finished_at = ?1, error = 'foreman: dead: process gone' WHERE id = 'marked'",
        [rfc(now())],
    );
    let exec = Counting {
        inner: foreman::executor::open(&w.config).unwrap(),
        marks: AtomicUsize::new(0),
    };
    let r = w.sweep_with(&exec, SCHEDULED);
    assert_no_finding(&r, "marked");
    assert_eq!(exec.marks.load(Ordering::SeqCst), 0);
    let (_, _, outcome, detail) = w.recorded(id);
    assert_eq!(outcome, "marked_failed", "{detail:?}");
    assert_eq!(
        w.task_error("marked").as_deref(),
        Some("foreman: dead: process gone")
    );
}

/// Foreman without the right to signal a droid (another user's process,
/// no CAP_KILL): the kernel's EPERM is a refusal, not a process that
/// "survived SIGKILL": no waiting out kill_grace, no SIGKILL, the task
/// marked failed with the reason, the process untouched.
#[test]
fn a_process_foreman_may_not_signal_is_marked_only_at_once() {
    if !is_root() {
        return skip_or_fail("needs root to run Foreman as another user (setpriv)");
    }
    let mut w = World::new();
    let leader = w.spawn(&["sleep", "300"]);
    wait_sleeping(leader, "sleep");
    let ticks = start_ticks(leader);
    hung_task(&w, "theirs", "quiet", leader);
    // Foreman runs as nobody: it may read the scratch files, not signal root's sleep.
    use std::os::unix::fs::PermissionsExt;
    for p in [w.dir.path().to_path_buf(), w.db.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_foreman"))
        .arg("--config")
        .arg(w.dir.path().join("foreman.toml"))
        .args(["sweep", "--json"])
        .env_remove("FOREMAN_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let f = &report["findings"][0];
    assert_eq!(f["kind"], "hung", "{report:#}");
    assert_eq!(f["outcome"], "marked_failed", "{report:#}");
    assert!(
        f["detail"].as_str().unwrap_or("").contains("EPERM"),
        "the reason says why: {report:#}"
    );
    assert!(alive(leader, ticks), "root's process is untouched");
    assert_eq!(w.task_state("theirs"), "FAILED");
    // One refused SIGTERM, then nothing: no SIGKILL, no grace waited out.
    let sigs = w.signals(f["id"].as_i64().expect("finding id"));
    assert_eq!(sigs.len(), 1, "{sigs:#?}");
    assert_eq!(sigs[0].signal, "SIGTERM");
    assert!(
        sigs[0].result.starts_with("refused: not permitted"),
        "{sigs:#?}"
    );
}

/// Capabilities granted to Foreman (an ambient CAP_KILL, as a systemd
/// drop-in would give) are not passed on to the commands it runs.
#[test]
fn commands_foreman_runs_do_not_inherit_its_capabilities() {
    if !is_root() {
        return skip_or_fail("needs root to grant an ambient capability (setpriv)");
    }
    let w = World::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let seen = w.dir.path().join("caps");
    let snapshot = format!(
        r#"["sh", "-c", "grep CapEff /proc/self/status > {}; echo '{{\"tasks\": []}}'"]"#,
        seen.display()
    );
    std::fs::write(
        w.dir.path().join("foreman.toml"),
        format!(
            "host = \"test-host\"\nmax_cpu_pressure = 100.0\n[executor]\nkind = \"command\"\n\
             snapshot_command = {snapshot}\nmark_failed_command = [\"false\"]\n\
             [activity]\npath = \"foreman.db\"\n[http]\nlisten = \"\"\n"
        ),
    )
    .unwrap();
    let as_nobody_with_kill = |argv: &[&std::ffi::OsStr]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=+kill", "--ambient-caps=+kill"])
            .args(argv)
            .env_remove("FOREMAN_CONFIG")
            .output()
            .unwrap()
    };
    // The setup works: a process started this way holds CAP_KILL (bit 5).
    let direct = as_nobody_with_kill(&[
        "sh".as_ref(),
        "-c".as_ref(),
        "grep CapEff /proc/self/status".as_ref(),
    ]);
    assert!(
        String::from_utf8_lossy(&direct.stdout).contains("0000000000000020"),
        "{direct:?}"
    );
    let config = w.dir.path().join("foreman.toml");
    let out = as_nobody_with_kill(&[
        env!("CARGO_BIN_EXE_foreman").as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "sweep".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let caps = std::fs::read_to_string(&seen).expect("the snapshot command ran");
    assert_eq!(
        caps.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{caps}"
    );
}

/// The finding's line is written before acting (`outcome="pending"`); one
/// more line per action says how it ended and what was signalled.
#[test]
fn each_action_logs_its_final_outcome_and_the_signals_sent() {
    let mut w = World::new();
    let hung = w.spawn(&["sleep", "300"]);
    wait_sleeping(hung, "sleep");
    hung_task(&w, "hung", "quiet", hung);
    let dead = w.spawn_exited(&["true"]);
    w.task("dead")
        .pid(dead.into())
        .started(before_boot())
        .insert();
    let out = w
        .foreman(&["sweep"])
        .env("RUST_LOG", "info")
        .output()
        .expect("foreman sweep");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = |task: &str| -> String {
        stderr
            .lines()
            .filter(|l| l.contains("action done") && l.contains(&format!("task_id={task} ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let h = line("hung");
    assert!(h.contains("outcome=\"marked_failed\""), "{stderr}");
    assert!(h.contains("SIGTERM delivered ×1"), "{h}");
    let d = line("dead");
    assert!(
        d.contains("outcome=\"marked_failed\"") && d.contains("signals=\"none\""),
        "{stderr}"
    );
    // The pending line came first, for each.
    let pending = stderr
        .find("outcome=\"pending\"")
        .expect("a pending finding line");
    assert!(
        pending < stderr.find("action done").expect("an action line"),
        "{stderr}"
    );
    assert_eq!(w.task_state("hung"), "FAILED");
    assert_eq!(w.task_state("dead"), "FAILED");
}

/// A busy loop progresses (its CPU moves every sweep), so only
/// `max_runtime` stops it: terminated and marked like a hung task, while a
/// healthy task of a type without a limit runs on. The finding reads back
/// by `foreman log --kind timed_out`, and `explain` re-derives it.
#[test]
fn a_busy_loop_past_max_runtime_is_terminated_and_marked_timed_out() {
    let mut w = World::with(Cfg {
        tail:
            "[droid_types.runaway]\nprogress = [\"cpu\"]\ntimeout = \"1h\"\nmax_runtime = \"2s\"\n",
        ..Cfg::default()
    });
    let busy = w.spawn(&["sh", "-c", "while :; do :; done"]);
    let busy_ticks = start_ticks(busy);
    w.task("busy")
        .droid("runaway")
        .pid(busy.into())
        .started(after_boot(10))
        .heartbeat(now())
        .insert();
    let sleeper = w.spawn(&["sleep", "300"]);
    wait_sleeping(sleeper, "sleep");
    let sleeper_ticks = start_ticks(sleeper);
    w.task("sleeper")
        .droid("quiet")
        .pid(sleeper.into())
        .started(after_boot(10))
        .heartbeat(now())
        .insert();

    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "busy");
    assert_eq!(f.kind, Kind::TimedOut, "{f:#?}");
    assert_eq!(f.action, Action::TerminateAndMark, "{f:#?}");
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    assert!(reason(f).contains("past max_runtime of 2s"), "{f:#?}");
    assert!(!alive(busy, busy_ticks), "the busy loop is gone");
    assert!(w.exited(busy).is_some(), "the busy loop was terminated");
    let sigs = w.signals(f.id.unwrap());
    assert!(
        sigs.iter()
            .any(|s| s.pid == busy && s.signal == "SIGTERM" && s.result == "delivered"),
        "{sigs:#?}"
    );
    assert_eq!(w.task_state("busy"), "FAILED");
    let error = w.task_error("busy").unwrap_or_default();
    assert!(error.starts_with("foreman: timed_out:"), "{error}");

    assert_no_finding(&r, "sleeper");
    assert_eq!(w.task_state("sleeper"), "RUNNING");
    assert!(alive(sleeper, sleeper_ticks), "the sleeper is left alone");

    let out = crate::cli::run(&mut w.foreman(&["log", "--json", "--kind", "timed_out"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let tasks: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            assert_eq!(v["kind"], "timed_out", "{v:#}");
            v["task_id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(tasks, ["busy"], "{out:#?}");

    let log = ActivityLog::open_read_only(&w.config.activity.path)
        .unwrap()
        .unwrap();
    let e = foreman::explain::load(&log, f.id.unwrap(), &w.config.fingerprint)
        .unwrap()
        .expect("the finding");
    let inputs = e.inputs.as_ref().expect("inputs kept");
    assert_eq!(inputs.policy.max_runtime_ms, Some(2000));
    let replay = e.replay.as_ref().expect("replayed");
    assert!(replay.same, "{replay:#?} vs {:#?}", e.finding);
    assert_eq!(replay.kind, Kind::TimedOut);
    let text = foreman::explain::text(&e);
    assert!(text.contains("max_runtime 2s"), "{text}");
}
