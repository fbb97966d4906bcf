//! The monitor's rows in a real activity log (a SQLite file in a tempdir,
//! migrated by `ActivityLog::open`): the baseline, pulled events through
//! the inbox, pushed events, counting each transition once, plan
//! completion and its generations, the views, the task counts, pruning.
//! Fixed times only.

use super::*;
use crate::activity::ActivityLog;
use crate::model::Task;
use crate::model::TaskState::{Failed, Pending, Running, Skipped, Success};
use chrono::{TimeDelta, TimeZone};
use std::path::{Path, PathBuf};

const HOLD: std::time::Duration = std::time::Duration::from_secs(30);

use EventType::{
    PlanCompleted as PLAN_COMPLETED, TaskCompleted as COMPLETED, TaskFailed as FAILED,
    TaskRetried as RETRIED, TaskSkipped as SKIPPED, TaskStarted as STARTED,
};

// ---------------------------------------------------------------- fixtures

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

/// `m` minutes after `now()` (negative: before).
fn at(m: i64) -> DateTime<Utc> {
    now() + TimeDelta::minutes(m)
}

fn task(id: &str, plan: Option<&str>, state: TaskState, attempt: i64) -> Task {
    Task {
        id: id.into(),
        plan_id: plan.map(str::to_string),
        droid_type: "coder".into(),
        state,
        pid: None,
        host: None,
        attempt,
        started_at: None,
        last_progress_at: None,
        finished_at: None,
        error: None,
        pid_start_ticks: None,
        created_at: None,
    }
}

/// A task of plan `p`.
fn pt(id: &str, state: TaskState, attempt: i64) -> Task {
    task(id, Some("p"), state, attempt)
}

fn snap(tasks: &[Task]) -> Snapshot {
    Snapshot {
        rows: tasks.iter().cloned().map(Row::Task).collect(),
    }
}

/// A pushed task event of plan `p`.
fn ev(kind: EventType, task_id: &str, attempt: i64) -> Event {
    Event {
        kind,
        task_id: Some(task_id.into()),
        plan_id: Some("p".into()),
        droid_type: Some("coder".into()),
        attempt,
        at: now(),
    }
}

fn plan_ev(plan: &str, attempt: i64) -> Event {
    Event {
        kind: PLAN_COMPLETED,
        task_id: None,
        plan_id: Some(plan.into()),
        droid_type: None,
        attempt,
        at: now(),
    }
}

/// An event as (type, task or plan, attempt): what the tests compare.
type Brief = (EventType, String, i64);

fn brief(events: &[Event]) -> Vec<Brief> {
    events
        .iter()
        .map(|e| {
            let subject = e.task_id.clone().or(e.plan_id.clone()).unwrap_or_default();
            (e.kind, subject, e.attempt)
        })
        .collect()
}

fn b(kind: EventType, subject: &str, attempt: i64) -> Brief {
    (kind, subject.to_string(), attempt)
}

/// An activity log in a tempdir.
struct Log {
    dir: tempfile::TempDir,
    conn: Connection,
}

fn open(path: &Path) -> Connection {
    ActivityLog::open(path)
        .expect("open the activity log")
        .into_conn()
}

impl Log {
    fn new() -> Log {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("activity.db"));
        Log { dir, conn }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("activity.db")
    }

    /// Close the file and open it again, as a restarted daemon does.
    fn reopen(self) -> Log {
        let Log { dir, conn } = self;
        drop(conn);
        let conn = open(&dir.path().join("activity.db"));
        Log { dir, conn }
    }

    fn pull(&self, tasks: &[Task], minute: i64) -> Pulled {
        self.pull_hung(tasks, &[], minute)
    }

    fn pull_hung(&self, tasks: &[Task], hung: &[&str], minute: i64) -> Pulled {
        let hung: HashSet<&str> = hung.iter().copied().collect();
        // A push holds its task for 30s: pushes in an earlier minute than
        // the sweep no longer do, pushes in the same or a later minute do.
        pull(&self.conn, &snap(tasks), &hung, at(minute), HOLD).expect("pull")
    }

    fn inbox(&self) -> Vec<(i64, Event)> {
        inbox(&self.conn, 0, 10_000).expect("inbox")
    }

    /// The consumer taking every pulled event in the inbox.
    fn drain(&mut self, minute: i64) -> Vec<Event> {
        let rows = self.inbox();
        ingest(&mut self.conn, &Batch::Pulled(rows), at(minute)).expect("ingest pulled")
    }

    /// Pull then drain: the events a sweep's snapshot adds.
    fn sweep(&mut self, tasks: &[Task], minute: i64) -> Vec<Brief> {
        self.pull(tasks, minute);
        brief(&self.drain(minute))
    }

    fn push(&mut self, events: &[Event], minute: i64) -> Vec<Event> {
        ingest(&mut self.conn, &Batch::Pushed(events.to_vec()), at(minute)).expect("ingest pushed")
    }

    /// Every recorded event: (type, task or plan, attempt, source).
    fn events(&self) -> Vec<(String, String, i64, String)> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT type, COALESCE(task_id, plan_id), attempt, source FROM events ORDER BY id",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A task's row: (state, attempt, stalled, current).
    fn task(&self, id: &str) -> Option<(String, i64, bool, bool)> {
        self.conn
            .query_row(
                "SELECT state, attempt, stalled, current FROM monitor_tasks WHERE task_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .unwrap()
    }

    /// A plan's row: (completed_at, generation).
    fn plan(&self, id: &str) -> Option<(Option<String>, i64)> {
        self.conn
            .query_row(
                "SELECT completed_at, generation FROM monitor_plans WHERE plan_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .unwrap()
    }

    fn view(&self, id: &str) -> Option<MonitorView> {
        view(&self.conn, id).expect("view")
    }
}

fn row(
    state: &str,
    attempt: i64,
    stalled: bool,
    current: bool,
) -> Option<(String, i64, bool, bool)> {
    Some((state.to_string(), attempt, stalled, current))
}

fn ev_row(
    kind: EventType,
    subject: &str,
    attempt: i64,
    source: &str,
) -> (String, String, i64, String) {
    (kind.as_str().into(), subject.into(), attempt, source.into())
}

// ---------------------------------------------------------------- pull

#[test]
fn the_first_pull_is_the_silent_baseline_and_later_pulls_fill_the_inbox() {
    let log = Log::new();
    let first = [
        pt("a", Running, 1),
        pt("b", Success, 1),
        task("c", Some("q"), Pending, 1),
        task("d", Some("done"), Failed, 2),
    ];
    let pulled = log.pull_hung(&first, &["a"], 0);
    assert_eq!(
        pulled,
        Pulled {
            baseline: true,
            events: 0,
            // Stalls are counted on the baseline too; only events are silent.
            newly_stalled: 1,
            plans_refused: 0,
        }
    );
    assert!(log.inbox().is_empty());
    assert_eq!(log.count("SELECT COUNT(*) FROM events"), 0);
    let taken: String = log
        .conn
        .query_row("SELECT taken_at FROM monitor_baseline", [], |r| r.get(0))
        .unwrap();
    assert_eq!(taken, crate::activity::ts(at(0)));
    // The state is taken: every task, each plan's completion (silently).
    assert_eq!(log.task("a"), row("RUNNING", 1, true, true));
    assert_eq!(log.task("d"), row("FAILED", 2, false, true));
    assert_eq!(log.plan("p"), Some((None, 0)));
    assert_eq!(
        log.plan("done"),
        Some((Some(crate::activity::ts(at(0))), 1))
    );

    // The next pull emits what changed, into the inbox.
    let second = [
        pt("a", Success, 1),
        pt("b", Success, 1),
        task("c", Some("q"), Running, 1),
        task("d", Some("done"), Failed, 2),
    ];
    let pulled = log.pull(&second, 1);
    assert_eq!(
        pulled,
        Pulled {
            baseline: false,
            events: 3,
            newly_stalled: 0,
            plans_refused: 0,
        }
    );
    let inbox = log.inbox();
    let events: Vec<Event> = inbox.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        brief(&events),
        [
            b(COMPLETED, "a", 1),
            b(STARTED, "c", 1),
            b(PLAN_COMPLETED, "p", 1)
        ]
    );
    assert!(inbox.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
    assert_eq!(events[1].droid_type.as_deref(), Some("coder"));
    assert_eq!(
        events[2].at,
        at(1),
        "a plan completes when the sweep sees it"
    );
    assert_eq!(
        log.count("SELECT COUNT(*) FROM events"),
        0,
        "recorded only when the queue takes them"
    );
    assert_eq!(log.count("SELECT COUNT(*) FROM monitor_baseline"), 1);

    // The same snapshot again: nothing new.
    let pulled = log.pull(&second, 2);
    assert_eq!((pulled.baseline, pulled.events), (false, 0));
    assert_eq!(log.inbox().len(), 3);
    // `inbox` pages after an id, in order.
    let first_id = inbox[0].0;
    let page = inbox_page(&log, first_id, 1);
    assert_eq!(page, [inbox[1].0]);
}

fn inbox_page(log: &Log, after: i64, limit: usize) -> Vec<i64> {
    inbox(&log.conn, after, limit)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn a_restart_neither_replays_nor_loses_events() {
    let log = Log::new();
    log.pull(&[pt("a", Pending, 1), pt("b", Running, 1)], 0);
    let pulled = log.pull(&[pt("a", Running, 1), pt("b", Failed, 1)], 1);
    assert_eq!(pulled.events, 2);

    let mut log = log.reopen();
    assert!(log.path().exists());
    let pulled = log.pull(&[pt("a", Running, 1), pt("b", Failed, 1)], 2);
    assert_eq!(
        pulled,
        Pulled {
            baseline: false,
            events: 0,
            newly_stalled: 0,
            plans_refused: 0,
        },
        "no second baseline, no replay"
    );
    // What the queue had not taken before the restart is still there.
    assert_eq!(
        brief(&log.drain(3)),
        [b(STARTED, "a", 1), b(FAILED, "b", 1)]
    );
    let log = log.reopen();
    assert!(log.inbox().is_empty());
    assert_eq!(log.events().len(), 2);
}

/// Unreadable rows keep their tasks; unfinished tasks that leave are
/// dropped and finished ones kept with their plan (not current).
#[test]
fn tasks_that_leave_the_snapshot() {
    let mut log = Log::new();
    log.pull(
        &[
            pt("a", Running, 1),
            pt("b", Success, 1),
            pt("c", Running, 1),
        ],
        0,
    );
    let mut s = snap(&[]);
    s.rows.push(Row::Bad(crate::model::BadRow {
        id: "c".into(),
        droid_type: None,
        plan_id: None,
        attempt: 1,
        reason: "garbled".into(),
        pid: None,
    }));
    pull(&log.conn, &s, &HashSet::new(), at(1), HOLD).unwrap();
    assert_eq!(log.task("a"), None, "unfinished and gone: dropped");
    assert_eq!(
        log.task("b"),
        row("SUCCESS", 1, false, false),
        "finished: kept, not current"
    );
    assert_eq!(
        log.task("c"),
        row("RUNNING", 1, false, true),
        "unreadable: untouched"
    );
    assert!(
        log.drain(1).is_empty(),
        "leaving is no event; c keeps the plan open"
    );
    assert_eq!(log.view("p").unwrap().counts.success, 1);
    // c finishes: the plan is complete with the retired b.
    assert_eq!(
        log.sweep(&[pt("c", Success, 1)], 2),
        [b(COMPLETED, "c", 1), b(PLAN_COMPLETED, "p", 1)]
    );
    // A retired task back on a retry reopens its plan; its row is current again.
    assert_eq!(
        log.sweep(&[pt("b", Running, 2), pt("c", Success, 1)], 3),
        [b(RETRIED, "b", 2)]
    );
    assert_eq!(log.task("b"), row("RUNNING", 2, false, true));
    assert_eq!(log.plan("p").unwrap().0, None);
}

/// A plan's last unfinished task dropped by the executor completes it.
#[test]
fn a_plan_whose_last_unfinished_task_is_dropped_completes() {
    let mut log = Log::new();
    log.pull(&[pt("a", Success, 1), pt("b", Pending, 1)], 0);
    assert_eq!(
        log.sweep(&[pt("a", Success, 1)], 1),
        [b(PLAN_COMPLETED, "p", 1)]
    );
}

// ---------------------------------------------------------------- plan completion

#[test]
fn a_plan_completes_once_a_retry_reopens_it_and_it_completes_again() {
    let mut log = Log::new();
    // (snapshot, new events, plan complete, generation)
    let steps: Vec<(Vec<Task>, Vec<Brief>, bool, i64)> = vec![
        (
            vec![pt("a", Pending, 1), pt("b", Pending, 1)],
            vec![],
            false,
            0,
        ),
        (
            vec![pt("a", Running, 1), pt("b", Pending, 1)],
            vec![b(STARTED, "a", 1)],
            false,
            0,
        ),
        (
            vec![pt("a", Success, 1), pt("b", Running, 1)],
            vec![b(COMPLETED, "a", 1), b(STARTED, "b", 1)],
            false,
            0,
        ),
        (
            vec![pt("a", Success, 1), pt("b", Failed, 1)],
            vec![b(FAILED, "b", 1), b(PLAN_COMPLETED, "p", 1)],
            true,
            1,
        ),
        (
            vec![pt("a", Success, 1), pt("b", Failed, 1)],
            vec![],
            true,
            1,
        ),
        // Another terminal state of the same attempt: complete as it was.
        (
            vec![pt("a", Success, 1), pt("b", Success, 1)],
            vec![b(COMPLETED, "b", 1)],
            true,
            1,
        ),
        (
            vec![pt("a", Success, 1), pt("b", Running, 2)],
            vec![b(RETRIED, "b", 2)],
            false,
            1,
        ),
        (
            vec![pt("a", Success, 1), pt("b", Running, 2)],
            vec![],
            false,
            1,
        ),
        (
            vec![pt("a", Success, 1), pt("b", Success, 2)],
            vec![b(COMPLETED, "b", 2), b(PLAN_COMPLETED, "p", 2)],
            true,
            2,
        ),
        // A task added to a complete plan reopens it too.
        (
            vec![
                pt("a", Success, 1),
                pt("b", Success, 2),
                pt("c", Pending, 1),
            ],
            vec![],
            false,
            2,
        ),
        (
            vec![
                pt("a", Success, 1),
                pt("b", Success, 2),
                pt("c", Skipped, 1),
            ],
            vec![b(SKIPPED, "c", 1), b(PLAN_COMPLETED, "p", 3)],
            true,
            3,
        ),
        // A task added already finished: still complete, no new completion.
        (
            vec![
                pt("a", Success, 1),
                pt("b", Success, 2),
                pt("c", Skipped, 1),
                pt("d", Failed, 1),
            ],
            vec![b(FAILED, "d", 1)],
            true,
            3,
        ),
    ];
    // When the plan last completed: completed_at stays until it reopens.
    let mut completed_at_minute = None;
    for (i, (tasks, want, complete, generation)) in steps.into_iter().enumerate() {
        let minute = i as i64;
        assert_eq!(log.sweep(&tasks, minute), want, "step {i}");
        if want.iter().any(|e| e.0 == PLAN_COMPLETED) {
            completed_at_minute = Some(minute);
        }
        let (completed_at, g) = log.plan("p").expect("plan");
        let want_at = completed_at_minute
            .filter(|_| complete)
            .map(|m| crate::activity::ts(at(m)));
        assert_eq!(completed_at, want_at, "step {i}");
        assert_eq!(g, generation, "step {i}");
        let v = log.view("p").expect("view");
        assert_eq!(v.is_complete, complete, "step {i}");
        assert_eq!(
            v.completed_at,
            want_at.map(|_| at(completed_at_minute.unwrap())),
            "step {i}"
        );
    }
    let plans: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| e.0 == "PLAN_COMPLETED")
        .collect();
    assert_eq!(
        plans,
        [
            ev_row(PLAN_COMPLETED, "p", 1, "pull"),
            ev_row(PLAN_COMPLETED, "p", 2, "pull"),
            ev_row(PLAN_COMPLETED, "p", 3, "pull"),
        ]
    );
}

// ---------------------------------------------------------------- ingest: once

#[test]
fn pulled_events_are_recorded_once_and_leave_the_inbox() {
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1)], 0);
    log.pull(&[pt("a", Success, 1)], 1);
    let rows = log.inbox();
    assert_eq!(rows.len(), 2);
    let new = ingest(&mut log.conn, &Batch::Pulled(rows.clone()), at(2)).unwrap();
    let want: Vec<Event> = rows.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(new, want);
    assert!(log.inbox().is_empty());
    assert_eq!(
        log.events(),
        [
            ev_row(COMPLETED, "a", 1, "pull"),
            ev_row(PLAN_COMPLETED, "p", 1, "pull"),
        ]
    );
    let received: String = log
        .conn
        .query_row("SELECT received_at FROM events LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(received, crate::activity::ts(at(2)));

    // The same batch fed again (a rewound cursor): nothing new.
    assert!(ingest(&mut log.conn, &Batch::Pulled(rows), at(3))
        .unwrap()
        .is_empty());
    // The same transitions pushed afterwards: nothing new, nothing moves.
    let pushed = [ev(COMPLETED, "a", 1), plan_ev("p", 0)];
    assert!(log.push(&pushed, 4).is_empty());
    assert_eq!(log.events().len(), 2);
    assert_eq!(log.plan("p").unwrap().1, 1);
    // And an empty batch of either kind is fine.
    assert!(log.push(&[], 5).is_empty());
    assert!(log.drain(5).is_empty());
}

#[test]
fn pushed_first_then_pulled_counts_once() {
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1), pt("b", Running, 1)], 0);

    // The push moves a on, so the sweep sees nothing new.
    assert_eq!(
        brief(&log.push(&[ev(COMPLETED, "a", 1)], 1)),
        [b(COMPLETED, "a", 1)]
    );
    assert_eq!(
        log.pull(&[pt("a", Success, 1), pt("b", Running, 1)], 2)
            .events,
        0
    );

    // The sweep sees b finish first, the push arrives before the queue
    // takes the sweep's events: each transition once.
    assert_eq!(
        log.pull(&[pt("a", Success, 1), pt("b", Success, 1)], 3)
            .events,
        2
    );
    assert_eq!(
        brief(&log.push(&[ev(COMPLETED, "b", 1)], 4)),
        [b(COMPLETED, "b", 1)]
    );
    assert_eq!(brief(&log.drain(5)), [b(PLAN_COMPLETED, "p", 1)]);
    assert!(log.inbox().is_empty(), "a duplicate leaves the inbox too");

    // The push came first and the pull's copy is fed later: not new.
    let late = Batch::Pulled(vec![(9_999, ev(COMPLETED, "a", 1))]);
    assert!(ingest(&mut log.conn, &late, at(6)).unwrap().is_empty());
    assert_eq!(
        log.events(),
        [
            ev_row(COMPLETED, "a", 1, "push"),
            ev_row(COMPLETED, "b", 1, "push"),
            ev_row(PLAN_COMPLETED, "p", 1, "pull"),
        ]
    );
}

#[test]
fn started_and_retried_of_one_attempt_are_one_transition() {
    let mut log = Log::new();
    // A task of no plan, so that no PLAN_COMPLETED joins in.
    let ev = |kind, attempt| Event {
        plan_id: None,
        ..ev(kind, "a", attempt)
    };
    log.pull(&[task("a", None, Failed, 1)], 0);
    // The sweep calls attempt 2 RETRIED; the executor pushes it as STARTED.
    assert_eq!(log.pull(&[task("a", None, Running, 2)], 1).events, 1);
    assert_eq!(brief(&log.push(&[ev(STARTED, 2)], 2)), [b(STARTED, "a", 2)]);
    assert!(log.drain(3).is_empty());
    // And the other way round, both pushed.
    assert_eq!(log.push(&[ev(RETRIED, 3)], 4).len(), 1);
    assert!(log.push(&[ev(STARTED, 3)], 5).is_empty());
    // Another attempt, another transition; another type, another transition.
    assert_eq!(log.push(&[ev(STARTED, 4)], 6).len(), 1);
    assert_eq!(log.push(&[ev(FAILED, 4)], 7).len(), 1);
    assert_eq!(
        log.events(),
        [
            ev_row(STARTED, "a", 2, "push"),
            ev_row(RETRIED, "a", 3, "push"),
            ev_row(STARTED, "a", 4, "push"),
            ev_row(FAILED, "a", 4, "push"),
        ]
    );
    // A duplicate within one batch counts once too.
    let twice = [ev(COMPLETED, 5), ev(COMPLETED, 5)];
    assert_eq!(log.push(&twice, 8).len(), 1);
}

// ---------------------------------------------------------------- ingest: push moves tasks

#[test]
fn a_push_moves_its_task_on_and_never_back() {
    // (task a before, as the baseline took it, or unknown; pushed event;
    // a after). Plan p also has a running task, so it never completes.
    type Push = (
        Option<(TaskState, i64)>,
        (EventType, i64),
        (&'static str, i64),
    );
    let table: &[(&str, Push)] = &[
        ("starts", (Some((Pending, 1)), (STARTED, 1), ("RUNNING", 1))),
        (
            "completes",
            (Some((Running, 1)), (COMPLETED, 1), ("SUCCESS", 1)),
        ),
        ("fails", (Some((Running, 1)), (FAILED, 1), ("FAILED", 1))),
        (
            "is skipped",
            (Some((Pending, 1)), (SKIPPED, 1), ("SKIPPED", 1)),
        ),
        (
            "is retried",
            (Some((Failed, 1)), (RETRIED, 2), ("RUNNING", 2)),
        ),
        (
            "retried as started",
            (Some((Failed, 1)), (STARTED, 2), ("RUNNING", 2)),
        ),
        (
            "retried after success",
            (Some((Success, 1)), (RETRIED, 3), ("RUNNING", 3)),
        ),
        (
            "finishes a later attempt",
            (Some((Running, 1)), (COMPLETED, 2), ("SUCCESS", 2)),
        ),
        (
            "same state",
            (Some((Running, 1)), (STARTED, 1), ("RUNNING", 1)),
        ),
        (
            "one terminal to another",
            (Some((Success, 1)), (FAILED, 1), ("FAILED", 1)),
        ),
        // Never back.
        (
            "older attempt finishing",
            (Some((Running, 2)), (COMPLETED, 1), ("RUNNING", 2)),
        ),
        (
            "older attempt failing",
            (Some((Failed, 2)), (FAILED, 1), ("FAILED", 2)),
        ),
        (
            "older attempt starting",
            (Some((Running, 3)), (RETRIED, 2), ("RUNNING", 3)),
        ),
        (
            "running after success",
            (Some((Success, 1)), (STARTED, 1), ("SUCCESS", 1)),
        ),
        (
            "running after failure",
            (Some((Failed, 2)), (RETRIED, 2), ("FAILED", 2)),
        ),
        (
            "running after skip",
            (Some((Skipped, 1)), (STARTED, 1), ("SKIPPED", 1)),
        ),
        // First heard of by push: taken, current.
        ("unknown, starts", (None, (STARTED, 1), ("RUNNING", 1))),
        ("unknown, finishes", (None, (COMPLETED, 3), ("SUCCESS", 3))),
    ];
    for (what, (before, (kind, attempt), (state, after))) in table {
        let mut log = Log::new();
        let mut tasks = vec![pt("other", Running, 1)];
        tasks.extend(before.map(|(s, a)| pt("a", s, a)));
        log.pull(&tasks, 0);
        let before_view = log.view("p").unwrap();
        let new = log.push(&[ev(*kind, "a", *attempt)], 1);
        // Recorded (the baseline was silent, so it is new) whether or not
        // it moves the task.
        assert_eq!(brief(&new), [b(*kind, "a", *attempt)], "{what}");
        assert_eq!(
            log.events(),
            [ev_row(*kind, "a", *attempt, "push")],
            "{what}"
        );
        assert_eq!(log.task("a"), row(state, *after, false, true), "{what}");
        let v = log.view("p").unwrap();
        let mut want = crate::monitor::view::Counts::default();
        want.add(Running);
        want.add(TaskState::parse(state).unwrap());
        assert_eq!(v.counts, want, "{what}: the view reflects it");
        let moved =
            before.is_none_or(|(s, a)| (s, a) != (TaskState::parse(state).unwrap(), *after));
        if moved {
            assert_eq!(v.updated_at, at(1), "{what}: updated when it moved");
        } else {
            assert_eq!(v, before_view, "{what}: unchanged");
        }
    }
}

/// A push clears the stall: the next sweep decides again.
#[test]
fn a_push_that_moves_a_stalled_task_clears_its_stall() {
    let mut log = Log::new();
    log.pull_hung(&[pt("a", Running, 1), pt("b", Running, 1)], &["a"], 0);
    assert_eq!(log.view("p").unwrap().stalled, ["a"]);
    log.push(&[ev(FAILED, "a", 1)], 2);
    assert_eq!(log.task("a"), row("FAILED", 1, false, true));
    assert!(log.view("p").unwrap().stalled.is_empty());
    // The sweep that read the snapshot (minute 1) before the push: never back.
    let pulled = log.pull_hung(&[pt("a", Running, 1), pt("b", Running, 1)], &["a"], 1);
    assert_eq!((pulled.events, pulled.newly_stalled), (0, 0));
    assert_eq!(log.task("a"), row("FAILED", 1, false, true));
}

#[test]
fn a_push_that_finishes_a_plans_last_task_completes_the_plan() {
    let mut log = Log::new();
    log.pull(&[pt("a", Success, 1), pt("b", Running, 1)], 0);
    let new = log.push(&[ev(COMPLETED, "b", 1)], 1);
    assert_eq!(
        brief(&new),
        [b(COMPLETED, "b", 1), b(PLAN_COMPLETED, "p", 1)]
    );
    assert_eq!(new[1].at, at(1));
    assert_eq!(
        log.events(),
        [
            ev_row(COMPLETED, "b", 1, "push"),
            ev_row(PLAN_COMPLETED, "p", 1, "monitor"),
        ]
    );
    assert_eq!(log.plan("p"), Some((Some(crate::activity::ts(at(1))), 1)));
    assert!(log.view("p").unwrap().is_complete);

    // The sweep catching up, and the executor's own PLAN_COMPLETED: nothing new.
    assert_eq!(
        log.pull(&[pt("a", Success, 1), pt("b", Success, 1)], 2)
            .events,
        0
    );
    assert!(log.push(&[plan_ev("p", 0)], 3).is_empty());
    assert!(log.push(&[plan_ev("p", 1)], 3).is_empty());

    // A pushed retry reopens it; finishing again is generation 2.
    assert_eq!(
        brief(&log.push(&[ev(RETRIED, "b", 2)], 4)),
        [b(RETRIED, "b", 2)]
    );
    assert_eq!(log.plan("p"), Some((None, 1)));
    assert_eq!(
        brief(&log.push(&[ev(FAILED, "b", 2)], 5)),
        [b(FAILED, "b", 2), b(PLAN_COMPLETED, "p", 2)]
    );
    assert_eq!(log.plan("p").unwrap().1, 2);

    // Two plans finished by one batch, each once; a task of no plan
    // completes nothing.
    log.pull(
        &[
            task("x", Some("q"), Running, 1),
            task("y", Some("r"), Running, 1),
        ],
        6,
    );
    let batch = [
        Event {
            plan_id: Some("q".into()),
            ..ev(COMPLETED, "x", 1)
        },
        Event {
            plan_id: Some("r".into()),
            ..ev(SKIPPED, "y", 1)
        },
        Event {
            plan_id: None,
            ..ev(COMPLETED, "z", 1)
        },
    ];
    assert_eq!(
        brief(&log.push(&batch, 7)),
        [
            b(COMPLETED, "x", 1),
            b(SKIPPED, "y", 1),
            b(COMPLETED, "z", 1),
            b(PLAN_COMPLETED, "q", 1),
            b(PLAN_COMPLETED, "r", 1),
        ]
    );
}

/// A task event pushed without its plan keeps the plan the monitor knows.
#[test]
fn a_push_without_a_plan_keeps_the_known_plan() {
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1)], 0);
    let e = Event {
        plan_id: None,
        droid_type: None,
        ..ev(COMPLETED, "a", 1)
    };
    assert_eq!(
        brief(&log.push(&[e], 1)),
        [b(COMPLETED, "a", 1), b(PLAN_COMPLETED, "p", 1)]
    );
    let (plan, droid): (Option<String>, Option<String>) = log
        .conn
        .query_row(
            "SELECT plan_id, droid_type FROM monitor_tasks WHERE task_id = 'a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (plan.as_deref(), droid.as_deref()),
        (Some("p"), Some("coder"))
    );
}

/// A pushed PLAN_COMPLETED without an attempt is the plan's current
/// completion if it is complete, else its next, so it meets the derived
/// or pulled one. It records; it does not complete the plan by itself.
#[test]
fn a_pushed_plan_completed_without_attempt_takes_the_plans_generation() {
    // (how the plan stands, the generation the push maps to)
    let table: &[(&str, i64)] = &[
        ("unknown", 1),
        ("open", 1),
        ("complete", 1),
        ("reopened", 2),
        ("complete again", 2),
    ];
    for &(how, want) in table {
        let mut log = Log::new();
        log.pull(&[pt("a", Running, 1)], 0);
        let plan = if how == "unknown" { "elsewhere" } else { "p" };
        if how != "open" && how != "unknown" {
            log.sweep(&[pt("a", Success, 1)], 1);
        }
        if how == "reopened" || how == "complete again" {
            log.sweep(&[pt("a", Running, 2)], 2);
        }
        if how == "complete again" {
            log.sweep(&[pt("a", Success, 2)], 3);
        }
        let before = log.plan(plan);
        let new = log.push(&[plan_ev(plan, 0)], 4);
        let recorded: Vec<_> = log
            .events()
            .into_iter()
            .filter(|e| e.0 == "PLAN_COMPLETED" && e.1 == plan && e.2 == want)
            .collect();
        assert_eq!(recorded.len(), 1, "{how}: {:?}", log.events());
        // New only where the monitor had not completed it at that generation.
        assert_eq!(
            new.len(),
            usize::from(matches!(how, "unknown" | "open" | "reopened")),
            "{how}"
        );
        if let Some(e) = new.first() {
            assert_eq!((e.attempt, recorded[0].3.as_str()), (want, "push"), "{how}");
        }
        assert_eq!(
            log.plan(plan),
            before,
            "{how}: the plan itself is not moved"
        );
    }

    // Pushed first, derived by the sweep afterwards: once.
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1)], 0);
    assert_eq!(
        brief(&log.push(&[plan_ev("p", 0)], 1)),
        [b(PLAN_COMPLETED, "p", 1)]
    );
    assert_eq!(log.sweep(&[pt("a", Success, 1)], 2), [b(COMPLETED, "a", 1)]);
    assert_eq!(log.plan("p").unwrap().1, 1);
    // And pushed first, derived by a push afterwards: once.
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1)], 0);
    assert_eq!(log.push(&[plan_ev("p", 0)], 1).len(), 1);
    assert_eq!(
        brief(&log.push(&[ev(COMPLETED, "a", 1)], 2)),
        [b(COMPLETED, "a", 1)]
    );
    assert_eq!(
        log.events(),
        [
            ev_row(PLAN_COMPLETED, "p", 1, "push"),
            ev_row(COMPLETED, "a", 1, "push"),
        ]
    );
}

// ---------------------------------------------------------------- views

#[test]
fn views_show_open_plans_and_plans_completed_within_the_hour() {
    let mut log = Log::new();
    let one = |id: &str, plan: &str, state| task(id, Some(plan), state, 1);
    // Each plan has one task; a plan completes when its task succeeds.
    let plans = ["open", "old", "just-out", "edge", "recent"];
    let mut states: Vec<(&str, TaskState)> = plans.iter().map(|p| (*p, Running)).collect();
    let tasks = |states: &[(&str, TaskState)]| -> Vec<Task> {
        states
            .iter()
            .map(|(p, s)| one(&format!("{p}-1"), p, *s))
            .collect()
    };
    log.pull(&tasks(&states), -180);
    // Completions at 2h ago, 1h and 1ms ago, exactly 1h ago, 30 min ago.
    for (plan, when) in [
        ("old", at(-120)),
        ("just-out", at(-60) - TimeDelta::milliseconds(1)),
        ("edge", at(-60)),
        ("recent", at(-30)),
    ] {
        states.iter_mut().find(|(p, _)| *p == plan).unwrap().1 = Success;
        pull(
            &log.conn,
            &snap(&tasks(&states)),
            &HashSet::new(),
            when,
            HOLD,
        )
        .unwrap();
    }
    log.drain(0);
    log.pull_hung(&tasks(&states), &["open-1"], 0);

    let shown = views(&log.conn, now()).unwrap();
    // /metrics counts the same plans and tasks without building the views.
    let counted = |views: &[MonitorView]| -> Vec<(String, view::Counts)> {
        views
            .iter()
            .map(|v| (v.plan_id.clone(), v.counts))
            .collect()
    };
    assert_eq!(plan_counts(&log.conn, now()).unwrap(), counted(&shown));
    let ids: Vec<&str> = shown.iter().map(|v| v.plan_id.as_str()).collect();
    assert_eq!(
        ids,
        ["edge", "open", "recent"],
        "open plans and the last hour's, by id"
    );
    let open = &shown[1];
    assert_eq!((open.counts.running, open.counts.total()), (1, 1));
    assert_eq!(open.health_score, 0.0);
    assert_eq!(open.stalled, ["open-1"]);
    assert!(!open.is_complete);
    assert_eq!(open.completed_at, None);
    assert_eq!(open.updated_at, at(-180));
    let recent = &shown[2];
    assert_eq!((recent.counts.success, recent.health_score), (1, 1.0));
    assert!(recent.is_complete);
    assert_eq!(recent.completed_at, Some(at(-30)));
    assert_eq!(recent.updated_at, at(-30));
    assert!(recent.stalled.is_empty());

    // Any stored plan by id, whatever its age; none for an unknown one.
    let old = log.view("old").expect("old plan");
    assert!(old.is_complete);
    assert_eq!(old.completed_at, Some(at(-120)));
    assert_eq!(log.view("just-out").unwrap().plan_id, "just-out");
    assert_eq!(log.view("open").as_ref(), Some(open));
    assert_eq!(log.view("missing"), None);
    // A new sweep an hour later: only the open plan is left to show.
    let later = views(&log.conn, at(31)).unwrap();
    assert_eq!(
        later.iter().map(|v| v.plan_id.as_str()).collect::<Vec<_>>(),
        ["open"]
    );
    assert_eq!(plan_counts(&log.conn, at(31)).unwrap(), counted(&later));
}

/// Health and counts over a plan's tasks, current or retired.
#[test]
fn a_view_counts_every_task_of_its_plan() {
    let mut log = Log::new();
    let tasks = [
        pt("a", Pending, 1),
        pt("b", Running, 1),
        pt("c", Success, 1),
        pt("d", Success, 1),
        pt("e", Failed, 2),
        pt("f", Skipped, 1),
        task("g", Some("q"), Success, 1),
        task("h", None, Running, 1),
    ];
    log.pull_hung(&tasks, &["b", "a"], 0);
    let v = log.view("p").unwrap();
    assert_eq!(
        v.counts.by_state(),
        [
            ("pending", 1),
            ("running", 1),
            ("success", 2),
            ("failed", 1),
            ("skipped", 1)
        ]
    );
    assert!((v.health_score - 0.5).abs() < 1e-12, "2 / (2 + 1 + 1)");
    assert_eq!(v.stalled, ["b"]);
    // c and d leave the snapshot finished: still counted with their plan.
    log.sweep(
        &[
            pt("a", Pending, 1),
            pt("b", Running, 1),
            pt("e", Failed, 2),
            pt("f", Skipped, 1),
        ],
        1,
    );
    assert_eq!(log.view("p").unwrap().counts.success, 2);
    assert_eq!(
        views(&log.conn, now()).unwrap().len(),
        2,
        "p and q; h has no plan"
    );
}

#[test]
fn task_counts_count_current_tasks_by_state_and_droid_type() {
    let mut log = Log::new();
    let typed = |id: &str, droid: &str, state| Task {
        droid_type: droid.into(),
        ..task(id, None, state, 1)
    };
    let all = [
        typed("a", "coder", Running),
        typed("b", "coder", Running),
        typed("c", "tester", Running),
        typed("d", "coder", Pending),
        typed("e", "coder", Success),
        typed("f", "tester", Failed),
        typed("g", "tester", Skipped),
    ];
    log.pull(&all, 0);
    let c = |s: &str, d: &str, n| (s.to_string(), d.to_string(), n);
    assert_eq!(
        task_counts(&log.conn).unwrap(),
        [
            c("failed", "tester", 1),
            c("pending", "coder", 1),
            c("running", "coder", 2),
            c("running", "tester", 1),
            c("skipped", "tester", 1),
            c("success", "coder", 1),
        ]
    );
    // e and g leave finished (retired), d leaves unfinished (gone): not counted.
    log.sweep(
        &[
            all[0].clone(),
            all[1].clone(),
            all[2].clone(),
            all[5].clone(),
        ],
        1,
    );
    assert_eq!(
        task_counts(&log.conn).unwrap(),
        [
            c("failed", "tester", 1),
            c("running", "coder", 2),
            c("running", "tester", 1)
        ]
    );
    // A task first heard of by push, of no droid type: counted under "".
    let e = Event {
        droid_type: None,
        plan_id: None,
        ..ev(STARTED, "z", 1)
    };
    log.push(&[e], 2);
    assert!(task_counts(&log.conn)
        .unwrap()
        .contains(&c("running", "", 1)));
}

// ---------------------------------------------------------------- prune

#[test]
fn prune_forgets_old_events_and_old_completed_plans_but_keeps_open_ones() {
    const DAY: i64 = 24 * 60;
    let mut log = Log::new();
    let base = [
        task("a", Some("done-old"), Running, 1),
        task("b", Some("done-new"), Running, 1),
        task("c", Some("open-old"), Running, 1),
        task("g", Some("empty-old"), Pending, 1),
        task("loose", None, Success, 1),
    ];
    log.pull(&base, 0);
    // Day 0, an hour in: done-old completes, g and loose leave.
    let day0 = [
        task("a", Some("done-old"), Success, 1),
        task("b", Some("done-new"), Running, 1),
        task("c", Some("open-old"), Running, 1),
    ];
    assert_eq!(
        log.sweep(&day0, 60),
        [b(COMPLETED, "a", 1), b(PLAN_COMPLETED, "done-old", 1)]
    );
    assert_eq!(log.task("loose"), row("SUCCESS", 1, false, false));
    // Day 10: done-new completes.
    let day10 = [
        task("a", Some("done-old"), Success, 1),
        task("b", Some("done-new"), Success, 1),
        task("c", Some("open-old"), Running, 1),
    ];
    assert_eq!(
        log.sweep(&day10, 10 * DAY),
        [b(COMPLETED, "b", 1), b(PLAN_COMPLETED, "done-new", 1)]
    );

    // Keep five days: day 0's events, the plan left with no task, and the
    // retired task of no plan are forgotten. done-old stays while its task
    // a is still in the snapshot (forgetting it would replay a's event).
    let n = prune(&log.conn, at(5 * DAY)).unwrap();
    assert_eq!(n, 2 + 1 + 1, "events, loose and empty-old");
    assert_eq!(
        log.events(),
        [
            ev_row(COMPLETED, "b", 1, "pull"),
            ev_row(PLAN_COMPLETED, "done-new", 1, "pull"),
        ]
    );
    assert!(log.view("done-old").expect("a is current").is_complete);
    assert_eq!(log.task("a"), row("SUCCESS", 1, false, true));
    assert_eq!(log.plan("empty-old"), None);
    assert_eq!(log.task("loose"), None);
    assert!(log.view("done-new").unwrap().is_complete);
    let open = log
        .view("open-old")
        .expect("an open plan is kept, however old");
    assert_eq!(open.counts.running, 1);
    assert_eq!(log.task("c"), row("RUNNING", 1, false, true));

    // Pruning again removes nothing; a sweep of the same tasks replays nothing.
    assert_eq!(prune(&log.conn, at(5 * DAY)).unwrap(), 0);
    assert!(log.sweep(&day10, 10 * DAY + 1).is_empty());
    // a leaves the snapshot: now done-old and a go.
    assert!(log.sweep(&day10[1..], 10 * DAY + 2).is_empty());
    assert_eq!(prune(&log.conn, at(5 * DAY)).unwrap(), 2, "a and done-old");
    assert_eq!(log.view("done-old"), None);
    assert_eq!(log.plan("done-old"), None);
    assert_eq!(log.task("a"), None);
    // A cutoff after everything: only open plans and current tasks stay.
    prune(&log.conn, at(20 * DAY)).unwrap();
    assert_eq!(log.count("SELECT COUNT(*) FROM events"), 0);
    assert!(log.view("done-new").is_some(), "b is still in the snapshot");
    assert_eq!(log.task("b"), row("SUCCESS", 1, false, true));
    assert!(log.view("open-old").is_some());
}

// ---------------------------------------------------------------- races and restarts

/// The executor retries b (FAILED at attempt 1, then RUNNING at attempt 2)
/// and pushes both; a sweep that read its snapshot between the two (b
/// FAILED at attempt 1) pulls after both pushes were recorded. The older
/// snapshot does not move b back to attempt 1, nor complete the plan
/// whose task is running again. A later snapshot is believed (next test).
#[test]
fn a_snapshot_older_than_a_pushed_retry_does_not_complete_the_plan() {
    let mut log = Log::new();
    log.pull(&[pt("a", Success, 1), pt("b", Running, 1)], 0);
    log.push(&[ev(FAILED, "b", 1)], 1);
    log.push(&[ev(RETRIED, "b", 2)], 2);
    assert_eq!(log.task("b"), row("RUNNING", 2, false, true));
    assert_eq!(log.plan("p"), Some((None, 1)));
    // The sweep read its snapshot at minute 1, before the retry's push.
    let new = log.sweep(&[pt("a", Success, 1), pt("b", Failed, 1)], 1);
    assert_eq!(new, [], "events from a stale snapshot");
    assert_eq!(
        log.plan("p"),
        Some((None, 1)),
        "the plan completed while b runs"
    );
    assert_eq!(
        log.task("b"),
        row("RUNNING", 2, false, true),
        "b moved back to attempt 1"
    );
}

/// A finished task that left the snapshot (retired, not current) is
/// retried by push: "current: in the last snapshot (or pushed since)", so
/// it should count as a current task, and a sweep that no longer lists it
/// unfinished should drop it ("if the next snapshot does not have it
/// unfinished, the sweep drops it").
#[test]
fn a_push_for_a_retired_task_makes_it_current_again() {
    let mut log = Log::new();
    log.pull(&[pt("a", Success, 1), pt("b", Success, 1)], 0);
    log.pull(&[pt("b", Success, 1)], 1);
    assert_eq!(log.task("a"), row("SUCCESS", 1, false, false));
    log.push(&[ev(RETRIED, "a", 2)], 2);
    assert_eq!(
        log.task("a"),
        row("RUNNING", 2, false, true),
        "not current after the push"
    );
    assert!(
        task_counts(&log.conn)
            .unwrap()
            .contains(&("running".into(), "coder".into(), 1)),
        "the running task is not counted"
    );
    // The executor does not list it: the sweep drops it and p completes again.
    log.pull(&[pt("b", Success, 1)], 3);
    assert_eq!(
        log.task("a"),
        None,
        "a running task nobody lists stays forever"
    );
    assert!(log.view("p").unwrap().is_complete, "p is stuck open");
}

/// A completed plan is pruned with its tasks after the retention even if
/// the executor still lists them (a finished task without `finished_at`
/// stays in the default snapshot query; a long `history_window` or a
/// snapshot command may keep them too): the next sweep sees them "first
/// seen finished" and records their terminal events and PLAN_COMPLETED
/// again, once per retention period.
#[test]
fn pruning_does_not_replay_tasks_still_in_the_snapshot() {
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1)], 0);
    assert_eq!(
        log.sweep(&[pt("a", Success, 1)], 1),
        [b(COMPLETED, "a", 1), b(PLAN_COMPLETED, "p", 1)]
    );
    prune(&log.conn, at(100)).unwrap();
    assert_eq!(
        log.sweep(&[pt("a", Success, 1)], 101),
        [],
        "replayed after pruning"
    );
}

/// A push the executor's later snapshots contradict (a wrong attempt, a
/// reused task id) does not freeze the task: a snapshot read after the
/// push is the executor's word.
#[test]
fn a_snapshot_read_after_a_wrong_push_is_believed() {
    let mut log = Log::new();
    log.pull(&[pt("a", Running, 1)], 0);
    log.push(&[ev(COMPLETED, "a", 7)], 1);
    assert_eq!(log.task("a"), row("SUCCESS", 7, false, true));
    let new = log.sweep(&[pt("a", Running, 1)], 2);
    // Taken, with its event (the baseline had kept it silent).
    assert_eq!(new, [b(STARTED, "a", 1)]);
    assert_eq!(log.task("a"), row("RUNNING", 1, false, true));
    // The wrong push had completed the plan once; the real end is the second.
    assert_eq!(
        log.sweep(&[pt("a", Success, 1)], 3),
        [b(COMPLETED, "a", 1), b(PLAN_COMPLETED, "p", 2)]
    );
}

// ---------------------------------------------------------------- max_plans

/// A pushed task event of plan `plan`.
fn pev(kind: EventType, task_id: &str, plan: &str, attempt: i64) -> Event {
    Event {
        plan_id: Some(plan.into()),
        ..ev(kind, task_id, attempt)
    }
}

impl Log {
    fn plan_ids(&self) -> Vec<String> {
        let mut stmt = self
            .conn
            .prepare("SELECT plan_id FROM monitor_plans ORDER BY plan_id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn pull_capped(&self, tasks: &[Task], minute: i64, max: usize) -> Pulled {
        pull_with(
            &self.conn,
            &snap(tasks),
            &HashSet::new(),
            at(minute),
            HOLD,
            max,
        )
        .expect("pull")
    }

    fn push_capped(&mut self, events: &[Event], minute: i64, max: usize) -> Vec<Event> {
        ingest_with(
            &mut self.conn,
            &Batch::Pushed(events.to_vec()),
            at(minute),
            max,
        )
        .expect("ingest pushed")
    }
}

/// A sweep that sees more plans than `max_plans` tracks the first ones
/// (plan id order) and refuses the rest, whose tasks are still recorded;
/// once plans complete, a new plan evicts the oldest completed one (its
/// tasks still in the snapshot stay), and an open plan is never evicted.
#[test]
fn pulled_plans_beyond_max_plans_evict_the_oldest_completed_then_are_refused() {
    let mut log = Log::new();
    let t = |id: &str, plan: &str, state| task(id, Some(plan), state, 1);
    let mut tasks = vec![
        t("a", "p1", Running),
        t("b", "p2", Running),
        t("c", "p3", Running),
        t("d", "p4", Running),
    ];
    let pulled = log.pull_capped(&tasks, 0, 3);
    assert_eq!(pulled.plans_refused, 1);
    assert_eq!(log.plan_ids(), ["p1", "p2", "p3"]);
    assert_eq!(
        log.task("d"),
        row("RUNNING", 1, false, true),
        "its task is kept"
    );
    assert_eq!(log.view("p4"), None);

    // p2 completes, then p1: both may go, p2 first.
    tasks[1] = t("b", "p2", Success);
    log.pull_capped(&tasks, 1, 3);
    tasks[0] = t("a", "p1", Success);
    log.pull_capped(&tasks, 2, 3);
    log.drain(2);
    assert_eq!(log.plan_ids(), ["p1", "p2", "p3"]);
    // A new plan: p2 is evicted for it; its task b, still in the snapshot,
    // stays (no replay).
    tasks.push(t("e", "p5", Running));
    let pulled = log.pull_capped(&tasks, 3, 3);
    assert_eq!(pulled.plans_refused, 0);
    assert_eq!(log.plan_ids(), ["p1", "p3", "p5"]);
    assert_eq!(log.task("b"), row("SUCCESS", 1, false, true));
    assert!(log
        .drain(3)
        .iter()
        .all(|e| e.task_id.as_deref() == Some("e")));
    // Two more new plans: p1 goes for one, the other is refused (p3 and
    // p5 are open).
    tasks.push(t("f", "p6", Running));
    tasks.push(t("g", "p7", Running));
    let pulled = log.pull_capped(&tasks, 4, 3);
    assert_eq!(pulled.plans_refused, 1);
    assert_eq!(log.plan_ids(), ["p3", "p5", "p6"]);
    assert_eq!(log.count("SELECT COUNT(*) FROM monitor_plans"), 3);
}

/// A pushed batch that would start more plans than there is room for is
/// refused before it is taken (`admit_pushed`, counted); one for tracked
/// plans passes; a batch let through that finds no room when recorded is
/// recorded without its plan; a completed plan makes room.
#[test]
fn pushed_plans_beyond_max_plans_are_refused_or_evict_a_completed_plan() {
    let mut log = Log::new();
    log.push_capped(
        &[pev(STARTED, "a", "pa", 1), pev(STARTED, "b", "pb", 1)],
        0,
        2,
    );
    assert_eq!(log.plan_ids(), ["pa", "pb"]);

    let before = plans_refused();
    let new = [pev(STARTED, "c", "pc", 1), pev(STARTED, "d", "pd", 1)];
    let full = admit_pushed(&log.conn, &new, 2)
        .unwrap()
        .expect_err("no room");
    assert_eq!(
        full,
        PlansFull {
            new_plans: 2,
            room: 0,
            max_plans: 2
        }
    );
    assert!(full.to_string().contains("max_plans"), "{full}");
    assert!(plans_refused() >= before + 2, "counted");
    // Events of tracked plans, and of no plan, pass.
    let known = [pev(COMPLETED, "a", "pa", 1), ev(STARTED, "x", 1)];
    let known = [
        known[0].clone(),
        Event {
            plan_id: None,
            ..known[1].clone()
        },
    ];
    assert_eq!(admit_pushed(&log.conn, &known, 2).unwrap(), Ok(()));

    // Recorded anyway (a race past the check): the event and the task are,
    // the plan is not.
    let recorded = log.push_capped(&new[..1], 1, 2);
    assert_eq!(brief(&recorded), [b(STARTED, "c", 1)]);
    assert_eq!(log.task("c"), row("RUNNING", 1, false, true));
    assert_eq!(log.plan_ids(), ["pa", "pb"]);

    // pa completes: room for one new plan (not two).
    log.push_capped(&known[..1], 2, 2);
    assert!(log.view("pa").unwrap().is_complete);
    let full = admit_pushed(&log.conn, &new, 2).unwrap().expect_err("one");
    assert_eq!((full.new_plans, full.room), (2, 1));
    assert_eq!(admit_pushed(&log.conn, &new[1..], 2).unwrap(), Ok(()));
    log.push_capped(&new[1..], 3, 2);
    assert_eq!(log.plan_ids(), ["pb", "pd"]);
    assert_eq!(log.view("pa"), None, "evicted");
    assert_eq!(log.task("a"), row("SUCCESS", 1, false, true));
}

/// A plan whose tasks all left (a push the snapshot never had) holds no
/// view and goes first.
#[test]
fn a_plan_with_no_task_left_is_evicted_before_a_completed_one() {
    let mut log = Log::new();
    log.pull_capped(&[task("a", Some("done"), Running, 1)], 0, 2);
    log.pull_capped(&[task("a", Some("done"), Success, 1)], 1, 2);
    log.push_capped(&[pev(STARTED, "ghost", "empty", 1)], 2, 2);
    // The next sweep (past the hold) drops ghost: "empty" has no task.
    log.pull_capped(&[task("a", Some("done"), Success, 1)], 10, 2);
    assert_eq!(log.task("ghost"), None);
    assert_eq!(log.plan_ids(), ["done", "empty"]);
    log.push_capped(&[pev(STARTED, "n", "new", 1)], 11, 2);
    assert_eq!(log.plan_ids(), ["done", "new"]);
}

/// `/plans` a page at a time: plan id order, `next` until the last page,
/// plans not shown (completed over an hour ago, or with no task) skipped.
#[test]
fn views_page_through_every_shown_plan() {
    let log = Log::new();
    let mut tasks: Vec<Task> = (1..=5)
        .map(|i| task(&format!("t{i}"), Some(&format!("p{i}")), Running, 1))
        .collect();
    tasks.push(task("old", Some("p0"), Running, 1));
    log.pull(&tasks, 0);
    tasks[5] = task("old", Some("p0"), Success, 1);
    log.pull(&tasks, 1);
    let now = at(3 * 60);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = views_page(&log.conn, now, after.as_deref(), 2).unwrap();
        assert!(page.plans.len() <= 2);
        seen.extend(page.plans.iter().map(|v| v.plan_id.clone()));
        pages += 1;
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(pages, 3);
    let all = views_page(&log.conn, now, None, 100).unwrap();
    assert_eq!(all.plans, views(&log.conn, now).unwrap());
    assert_eq!(all.next, None);
    let past = views_page(&log.conn, now, Some("p5"), 2).unwrap();
    assert!(past.plans.is_empty() && past.next.is_none());
}

/// Tasks of a plan that is not tracked are pruned once out of the snapshot.
#[test]
fn prune_forgets_finished_tasks_of_untracked_plans() {
    let mut log = Log::new();
    log.pull_capped(&[task("a", Some("p1"), Running, 1)], 0, 1);
    log.pull_capped(
        &[
            task("a", Some("p1"), Running, 1),
            task("b", Some("p2"), Success, 1),
        ],
        1,
        1,
    );
    log.drain(1);
    assert_eq!(log.plan_ids(), ["p1"]);
    log.pull_capped(&[task("a", Some("p1"), Running, 1)], 2, 1);
    assert_eq!(log.task("b"), row("SUCCESS", 1, false, false));
    prune(&log.conn, at(60)).unwrap();
    assert_eq!(log.task("b"), None);
    assert_eq!(log.task("a"), row("RUNNING", 1, false, true));
}

/// More tasks than one chunk of the pull (1024): the baseline takes them
/// all; a later pull sees changes in every chunk, a task gone from the
/// snapshot, and emits each event once, whichever chunk it fell in.
#[test]
fn a_pull_over_several_chunks_sees_every_change_once() {
    let log = Log::new();
    let n = 2500;
    let all: Vec<Task> = (0..n)
        .map(|i| task(&format!("t{i:04}"), Some("big"), Running, 1))
        .collect();
    assert_eq!(log.pull(&all, 0).events, 0);
    assert_eq!(log.count("SELECT COUNT(*) FROM monitor_tasks"), n);
    // One change in each chunk, and the last task dropped unfinished.
    let mut next: Vec<Task> = all[..n as usize - 1].to_vec();
    for i in [5usize, 1500, 2400] {
        next[i].state = Success;
    }
    let pulled = log.pull(&next, 1);
    assert_eq!(pulled.events, 3, "{:?}", log.inbox());
    assert_eq!(log.task("t0005"), row("SUCCESS", 1, false, true));
    assert_eq!(log.task("t1500"), row("SUCCESS", 1, false, true));
    assert_eq!(log.task("t2400"), row("SUCCESS", 1, false, true));
    assert_eq!(log.task("t2398"), row("RUNNING", 1, false, true));
    assert_eq!(
        log.count("SELECT COUNT(*) FROM monitor_tasks WHERE task_id = 't2499'"),
        0,
        "dropped unfinished: gone"
    );
    // Nothing changed: nothing emitted.
    assert_eq!(log.pull(&next, 2).events, 0);
}
