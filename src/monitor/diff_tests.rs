//! Table-driven tests of the pure pull side: `diff` (every known state and
//! attempt against every snapshot state, the baseline, `at`, stalls, tasks
//! that left the snapshot, the plans touched) and `plan_step`. Fixed times
//! only; no clock, no database.

use super::*;
use crate::model::TaskState::{Failed, Pending, Running, Skipped, Success};
use chrono::{TimeDelta, TimeZone};

// ---------------------------------------------------------------- fixtures

/// The sweep runs at 10:00.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

/// `m` minutes before `now()`.
fn ago(m: i64) -> DateTime<Utc> {
    now() - TimeDelta::minutes(m)
}

/// When the fixtures' tasks started and finished.
fn started() -> DateTime<Utc> {
    ago(30)
}

fn finished() -> DateTime<Utc> {
    ago(10)
}

/// The snapshot's attempt in the exhaustive tables; the monitor knew the
/// task at the same attempt, a lower one (the snapshot is a retry) or a
/// higher one (a push got there first).
const A: i64 = 2;
const SAME: i64 = A;
const LOWER: i64 = A - 1;
const HIGHER: i64 = A + 1;

/// A task of plan `p1`, droid type `coder`, as the snapshot has it: started
/// unless PENDING, finished when terminal.
fn task(id: &str, state: TaskState, attempt: i64) -> Task {
    Task {
        id: id.into(),
        plan_id: Some("p1".into()),
        droid_type: "coder".into(),
        state,
        pid: None,
        host: None,
        attempt,
        started_at: (state != Pending).then(started),
        last_progress_at: None,
        finished_at: is_finished(state).then(finished),
        error: None,
        pid_start_ticks: None,
        created_at: None,
    }
}

/// The same task as the monitor knew it: current, not stalled, as the
/// last sweep wrote it.
fn known(state: TaskState, attempt: i64) -> Known {
    Known {
        plan_id: Some("p1".into()),
        droid_type: Some("coder".into()),
        state,
        attempt,
        stalled: false,
        current: true,
        pushed_late: false,
    }
}

/// As `known`, moved there by a push after this sweep's snapshot was read
/// (so "never back" holds; see
/// `a_snapshot_newer_than_every_push_is_the_executors_word`).
fn pushed(state: TaskState, attempt: i64) -> Known {
    Known {
        pushed_late: true,
        ..known(state, attempt)
    }
}

fn run(
    known: &[(&str, Known)],
    tasks: &[Task],
    unreadable: &[&str],
    hung: &[&str],
    baseline: bool,
) -> Diff {
    let known: HashMap<String, Known> = known
        .iter()
        .map(|(id, k)| (id.to_string(), k.clone()))
        .collect();
    let tasks: Vec<&Task> = tasks.iter().collect();
    let unreadable: HashSet<&str> = unreadable.iter().copied().collect();
    let hung: HashSet<&str> = hung.iter().copied().collect();
    diff(&known, &tasks, &unreadable, &hung, now(), baseline)
}

fn plans(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The events a table row expects, as `Option`s so rows stay short.
const QUIET: Option<EventType> = None;
const STARTED: Option<EventType> = Some(EventType::TaskStarted);
const RETRIED: Option<EventType> = Some(EventType::TaskRetried);
const COMPLETED: Option<EventType> = Some(EventType::TaskCompleted);
const FAILED: Option<EventType> = Some(EventType::TaskFailed);
const SKIPPED: Option<EventType> = Some(EventType::TaskSkipped);

/// (known before: state and attempt, or unknown; the snapshot's state;
/// the event; the state taken; whether state or attempt changed).
type Pair = (
    Option<(TaskState, i64)>,
    TaskState,
    Option<EventType>,
    TaskState,
    bool,
);

/// One task, the snapshot at attempt `A`, checked in full: the event and
/// its fields, the row written, the plans touched. With the fixtures'
/// plan, droid type, no stall and `current`, the row is written exactly
/// when state or attempt changed.
fn check_pair(
    (before, now_state, want_event, want_state, want_changed): Pair,
    attempt: i64,
    baseline: bool,
) {
    let what = format!("{before:?} -> {now_state:?}@{attempt} (baseline {baseline})");
    let k: Vec<(&str, Known)> = before
        .map(|(s, a)| ("t", pushed(s, a)))
        .into_iter()
        .collect();
    let d = run(&k, &[task("t", now_state, attempt)], &[], &[], baseline);

    let want_events: Vec<Event> = want_event
        .filter(|_| !baseline)
        .map(|kind| Event {
            kind,
            task_id: Some("t".into()),
            plan_id: Some("p1".into()),
            droid_type: Some("coder".into()),
            attempt,
            at: if want_state == Running {
                started()
            } else {
                finished()
            },
        })
        .into_iter()
        .collect();
    assert_eq!(d.events, want_events, "{what}: events");

    let want_upserts = if want_changed {
        vec![("t".to_string(), known(want_state, attempt), true)]
    } else {
        Vec::new()
    };
    assert_eq!(d.upserts, want_upserts, "{what}: upserts");
    let want_plans = if want_changed {
        plans(&["p1"])
    } else {
        plans(&[])
    };
    assert_eq!(d.plans, want_plans, "{what}: plans");
    assert!(d.gone.is_empty() && d.retired.is_empty(), "{what}: left");
    assert_eq!(d.newly_stalled, 0, "{what}: stalls");
}

/// Unknown, and known at the same or a lower attempt, against every
/// snapshot state at attempt `A` (> 1, so RUNNING is a retry).
const PAIRS: &[Pair] = &[
    // First seen: whatever it is now, once (a finished task its terminal
    // event); PENDING says nothing but is taken.
    (None, Pending, QUIET, Pending, true),
    (None, Running, RETRIED, Running, true),
    (None, Success, COMPLETED, Success, true),
    (None, Failed, FAILED, Failed, true),
    (None, Skipped, SKIPPED, Skipped, true),
    // Known PENDING at this attempt.
    (Some((Pending, SAME)), Pending, QUIET, Pending, false),
    (Some((Pending, SAME)), Running, RETRIED, Running, true),
    (Some((Pending, SAME)), Success, COMPLETED, Success, true),
    (Some((Pending, SAME)), Failed, FAILED, Failed, true),
    (Some((Pending, SAME)), Skipped, SKIPPED, Skipped, true),
    // Known RUNNING at this attempt: back to PENDING is taken (RUNNING is
    // not finished, so "never back" does not hold it), silently.
    (Some((Running, SAME)), Pending, QUIET, Pending, true),
    (Some((Running, SAME)), Running, QUIET, Running, false),
    (Some((Running, SAME)), Success, COMPLETED, Success, true),
    (Some((Running, SAME)), Failed, FAILED, Failed, true),
    (Some((Running, SAME)), Skipped, SKIPPED, Skipped, true),
    // Known finished at this attempt: never back to unfinished (a push got
    // there before the snapshot caught up): kept, no event. Another
    // terminal state of the same attempt is taken.
    (Some((Success, SAME)), Pending, QUIET, Success, false),
    (Some((Success, SAME)), Running, QUIET, Success, false),
    (Some((Success, SAME)), Success, QUIET, Success, false),
    (Some((Success, SAME)), Failed, FAILED, Failed, true),
    (Some((Success, SAME)), Skipped, SKIPPED, Skipped, true),
    (Some((Failed, SAME)), Pending, QUIET, Failed, false),
    (Some((Failed, SAME)), Running, QUIET, Failed, false),
    (Some((Failed, SAME)), Success, COMPLETED, Success, true),
    (Some((Failed, SAME)), Failed, QUIET, Failed, false),
    (Some((Failed, SAME)), Skipped, SKIPPED, Skipped, true),
    (Some((Skipped, SAME)), Pending, QUIET, Skipped, false),
    (Some((Skipped, SAME)), Running, QUIET, Skipped, false),
    (Some((Skipped, SAME)), Success, COMPLETED, Success, true),
    (Some((Skipped, SAME)), Failed, FAILED, Failed, true),
    (Some((Skipped, SAME)), Skipped, QUIET, Skipped, false),
    // Known at a lower attempt: the snapshot is a new attempt, whatever the
    // states; it is taken and says what it is now.
    (Some((Pending, LOWER)), Pending, QUIET, Pending, true),
    (Some((Pending, LOWER)), Running, RETRIED, Running, true),
    (Some((Pending, LOWER)), Success, COMPLETED, Success, true),
    (Some((Pending, LOWER)), Failed, FAILED, Failed, true),
    (Some((Pending, LOWER)), Skipped, SKIPPED, Skipped, true),
    (Some((Running, LOWER)), Pending, QUIET, Pending, true),
    (Some((Running, LOWER)), Running, RETRIED, Running, true),
    (Some((Running, LOWER)), Success, COMPLETED, Success, true),
    (Some((Running, LOWER)), Failed, FAILED, Failed, true),
    (Some((Running, LOWER)), Skipped, SKIPPED, Skipped, true),
    (Some((Success, LOWER)), Pending, QUIET, Pending, true),
    (Some((Success, LOWER)), Running, RETRIED, Running, true),
    (Some((Success, LOWER)), Success, COMPLETED, Success, true),
    (Some((Success, LOWER)), Failed, FAILED, Failed, true),
    (Some((Success, LOWER)), Skipped, SKIPPED, Skipped, true),
    (Some((Failed, LOWER)), Pending, QUIET, Pending, true),
    (Some((Failed, LOWER)), Running, RETRIED, Running, true),
    (Some((Failed, LOWER)), Success, COMPLETED, Success, true),
    (Some((Failed, LOWER)), Failed, FAILED, Failed, true),
    (Some((Failed, LOWER)), Skipped, SKIPPED, Skipped, true),
    (Some((Skipped, LOWER)), Pending, QUIET, Pending, true),
    (Some((Skipped, LOWER)), Running, RETRIED, Running, true),
    (Some((Skipped, LOWER)), Success, COMPLETED, Success, true),
    (Some((Skipped, LOWER)), Failed, FAILED, Failed, true),
    (Some((Skipped, LOWER)), Skipped, SKIPPED, Skipped, true),
];

/// Known at a HIGHER attempt than the snapshot's (a push of the next
/// attempt arrived after the snapshot was read): never back, whatever the
/// states: the known attempt is kept, no event, nothing written (else an
/// older snapshot could complete a plan whose task runs again).
const OLDER_SNAPSHOT: &[Pair] = &[
    (Some((Pending, HIGHER)), Pending, QUIET, Pending, false),
    (Some((Pending, HIGHER)), Running, QUIET, Pending, false),
    (Some((Pending, HIGHER)), Success, QUIET, Pending, false),
    (Some((Pending, HIGHER)), Failed, QUIET, Pending, false),
    (Some((Pending, HIGHER)), Skipped, QUIET, Pending, false),
    (Some((Running, HIGHER)), Pending, QUIET, Running, false),
    (Some((Running, HIGHER)), Running, QUIET, Running, false),
    (Some((Running, HIGHER)), Success, QUIET, Running, false),
    (Some((Running, HIGHER)), Failed, QUIET, Running, false),
    (Some((Running, HIGHER)), Skipped, QUIET, Running, false),
    (Some((Success, HIGHER)), Pending, QUIET, Success, false),
    (Some((Success, HIGHER)), Running, QUIET, Success, false),
    (Some((Success, HIGHER)), Success, QUIET, Success, false),
    (Some((Success, HIGHER)), Failed, QUIET, Success, false),
    (Some((Success, HIGHER)), Skipped, QUIET, Success, false),
    (Some((Failed, HIGHER)), Pending, QUIET, Failed, false),
    (Some((Failed, HIGHER)), Running, QUIET, Failed, false),
    (Some((Failed, HIGHER)), Success, QUIET, Failed, false),
    (Some((Failed, HIGHER)), Failed, QUIET, Failed, false),
    (Some((Failed, HIGHER)), Skipped, QUIET, Failed, false),
    (Some((Skipped, HIGHER)), Pending, QUIET, Skipped, false),
    (Some((Skipped, HIGHER)), Running, QUIET, Skipped, false),
    (Some((Skipped, HIGHER)), Success, QUIET, Skipped, false),
    (Some((Skipped, HIGHER)), Failed, QUIET, Skipped, false),
    (Some((Skipped, HIGHER)), Skipped, QUIET, Skipped, false),
];

// ---------------------------------------------------------------- transitions

#[test]
fn every_known_state_and_attempt_against_every_snapshot_state() {
    assert_eq!(
        PAIRS.len(),
        5 + 5 * 5 * 2,
        "unknown, then five states at two attempts"
    );
    for pair in PAIRS {
        check_pair(*pair, A, false);
    }
}

#[test]
fn a_snapshot_older_than_the_known_attempt_changes_nothing() {
    assert_eq!(OLDER_SNAPSHOT.len(), 5 * 5);
    for pair in OLDER_SNAPSHOT {
        check_pair(*pair, A, false);
    }
}

/// The baseline takes every state the same way and emits nothing.
#[test]
fn the_baseline_takes_the_state_and_emits_nothing() {
    for pair in PAIRS.iter().chain(OLDER_SNAPSHOT) {
        check_pair(*pair, A, true);
    }
    // A whole fleet at once: every task written, not one event.
    let tasks = [
        task("a", Pending, 1),
        task("b", Running, 1),
        task("c", Running, 3),
        task("d", Success, 1),
        task("e", Failed, 2),
        task("f", Skipped, 1),
    ];
    let d = run(&[], &tasks, &[], &[], true);
    assert!(d.events.is_empty(), "{:?}", d.events);
    let ids: Vec<&str> = d.upserts.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e", "f"]);
    assert!(d.upserts.iter().all(|(_, _, changed)| *changed));
    assert_eq!(
        d.plans,
        plans(&["p1"]),
        "its plans are still looked at (silently)"
    );
}

/// At attempt 1 RUNNING is a start; at any higher attempt, a retry.
#[test]
fn running_is_started_at_attempt_one_and_retried_after() {
    // (known before, snapshot state, snapshot attempt, event)
    type Case = (Option<(TaskState, i64)>, TaskState, i64, Option<EventType>);
    let table: &[Case] = &[
        (None, Running, 1, STARTED),
        (Some((Pending, 1)), Running, 1, STARTED),
        (None, Running, 2, RETRIED),
        (Some((Pending, 2)), Running, 2, RETRIED),
        (Some((Running, 1)), Running, 2, RETRIED),
        (Some((Failed, 1)), Running, 2, RETRIED),
        (Some((Failed, 4)), Running, 5, RETRIED),
        (None, Pending, 1, QUIET),
        (Some((Running, 1)), Running, 1, QUIET),
        // A terminal state names no attempt kind.
        (None, Success, 1, COMPLETED),
        (None, Failed, 1, FAILED),
        (None, Skipped, 1, SKIPPED),
    ];
    for &(before, state, attempt, want) in table {
        let k: Vec<(&str, Known)> = before
            .map(|(s, a)| ("t", known(s, a)))
            .into_iter()
            .collect();
        let d = run(&k, &[task("t", state, attempt)], &[], &[], false);
        let got: Vec<(EventType, i64)> = d.events.iter().map(|e| (e.kind, e.attempt)).collect();
        let want: Vec<(EventType, i64)> = want.map(|k| (k, attempt)).into_iter().collect();
        assert_eq!(got, want, "{before:?} -> {state:?}@{attempt}");
    }
}

/// A task first seen finished emits its terminal event once: the next
/// sweep, knowing it, says nothing more.
#[test]
fn a_task_first_seen_finished_emits_its_terminal_event_once() {
    for state in [Success, Failed, Skipped] {
        let t = task("t", state, 1);
        let first = run(&[], std::slice::from_ref(&t), &[], &[], false);
        assert_eq!(first.events.len(), 1, "{state:?}");
        assert_eq!(EventType::entering(state, 1), Some(first.events[0].kind));
        let (_, k, _) = first.upserts[0].clone();
        let second = run(&[("t", k)], &[t], &[], &[], false);
        assert!(second.events.is_empty(), "{state:?}: {:?}", second.events);
        assert!(second.upserts.is_empty(), "{state:?}");
        assert!(second.plans.is_empty(), "{state:?}");
    }
}

/// Several tasks in one snapshot: events and rows in snapshot order.
#[test]
fn events_and_rows_follow_the_snapshot_order() {
    let k = [("b", known(Running, 1)), ("c", known(Pending, 1))];
    let tasks = [
        task("c", Running, 1),
        task("a", Success, 1),
        task("b", Failed, 1),
        task("d", Pending, 1),
    ];
    let d = run(&k, &tasks, &[], &[], false);
    let got: Vec<(&str, Option<EventType>)> = d
        .events
        .iter()
        .map(|e| (e.task_id.as_deref().unwrap(), Some(e.kind)))
        .collect();
    assert_eq!(got, [("c", STARTED), ("a", COMPLETED), ("b", FAILED)]);
    let ids: Vec<&str> = d.upserts.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["c", "a", "b", "d"]);
}

// ---------------------------------------------------------------- at

/// `at` is when the snapshot says it happened: started_at for RUNNING,
/// finished_at for a terminal state, else the sweep's `now`. The other
/// time never stands in.
#[test]
fn at_comes_from_the_snapshot_else_now() {
    let s = Some(ago(30));
    let f = Some(ago(5));
    // (state, attempt, started_at, finished_at, want at)
    type Time = Option<DateTime<Utc>>;
    type Case = (TaskState, i64, Time, Time, DateTime<Utc>);
    let table: &[Case] = &[
        (Running, 1, s, None, ago(30)),
        (Running, 2, s, None, ago(30)),
        (Running, 1, None, None, now()),
        (Running, 1, None, f, now()),
        (Success, 1, s, f, ago(5)),
        (Success, 1, s, None, now()),
        (Failed, 1, s, f, ago(5)),
        (Failed, 1, s, None, now()),
        (Skipped, 1, None, f, ago(5)),
        (Skipped, 1, None, None, now()),
        (Skipped, 1, s, None, now()),
    ];
    for &(state, attempt, started_at, finished_at, want) in table {
        let t = Task {
            started_at,
            finished_at,
            ..task("t", state, attempt)
        };
        let d = run(&[], &[t], &[], &[], false);
        assert_eq!(d.events.len(), 1, "{state:?}");
        assert_eq!(
            d.events[0].at, want,
            "{state:?} started {started_at:?} finished {finished_at:?}"
        );
    }
}

// ---------------------------------------------------------------- stalls

fn stalled(state: TaskState, attempt: i64) -> Known {
    Known {
        stalled: true,
        ..known(state, attempt)
    }
}

/// Hung only stalls a RUNNING task (as taken: a push that finished the
/// attempt wins); a stall counts once, when it starts, per attempt.
#[test]
fn stalls_are_running_tasks_found_hung_and_counted_when_they_start() {
    // (what, known before, the snapshot: (state, attempt, hung), want:
    // (stalled, newly stalled, row written, changed))
    type Stall = (
        &'static str,
        Option<Known>,
        (TaskState, i64, bool),
        (bool, usize, bool, bool),
    );
    let table: Vec<Stall> = vec![
        (
            "first seen hung",
            None,
            (Running, 1, true),
            (true, 1, true, true),
        ),
        (
            "first seen, not hung",
            None,
            (Running, 1, false),
            (false, 0, true, true),
        ),
        (
            "hung but pending",
            None,
            (Pending, 1, true),
            (false, 0, true, true),
        ),
        (
            "hung but finished",
            None,
            (Success, 1, true),
            (false, 0, true, true),
        ),
        (
            "hung but failed",
            None,
            (Failed, 1, true),
            (false, 0, true, true),
        ),
        (
            "starts to hang",
            Some(known(Running, 1)),
            (Running, 1, true),
            (true, 1, true, false),
        ),
        (
            "hangs as it starts",
            Some(known(Pending, 1)),
            (Running, 1, true),
            (true, 1, true, true),
        ),
        (
            "still hung",
            Some(stalled(Running, 1)),
            (Running, 1, true),
            (true, 0, false, false),
        ),
        (
            "hung again on a new attempt",
            Some(stalled(Running, 1)),
            (Running, 2, true),
            (true, 1, true, true),
        ),
        (
            "recovers",
            Some(stalled(Running, 1)),
            (Running, 1, false),
            (false, 0, true, false),
        ),
        (
            "finishes while hung",
            Some(stalled(Running, 1)),
            (Failed, 1, true),
            (false, 0, true, true),
        ),
        (
            "a push finished it: kept",
            Some(pushed(Success, 1)),
            (Running, 1, true),
            (false, 0, false, false),
        ),
        (
            "never stalled, still not",
            Some(known(Running, 1)),
            (Running, 1, false),
            (false, 0, false, false),
        ),
    ];
    for (what, before, (state, attempt, hung), (want_stalled, want_new, want_row, want_changed)) in
        table
    {
        let k: Vec<(&str, Known)> = before.clone().map(|k| ("t", k)).into_iter().collect();
        let h: &[&str] = if hung { &["t"] } else { &[] };
        let d = run(&k, &[task("t", state, attempt)], &[], h, false);
        assert_eq!(d.newly_stalled, want_new, "{what}: newly stalled");
        match d.upserts.as_slice() {
            [] => {
                assert!(!want_row, "{what}: no row written");
                assert_eq!(before.map(|k| k.stalled), Some(want_stalled), "{what}");
            }
            [(_, k, changed)] => {
                assert!(want_row, "{what}: a row written: {k:?}");
                assert_eq!(k.stalled, want_stalled, "{what}: stalled");
                assert_eq!(*changed, want_changed, "{what}: changed");
            }
            more => panic!("{what}: {more:?}"),
        }
        // A stall alone is not a transition: no plan is looked at again.
        if !want_changed {
            assert!(d.plans.is_empty(), "{what}: plans {:?}", d.plans);
            assert!(d.events.is_empty(), "{what}: events");
        }
    }
}

/// Stalls count on the baseline too: only events are silent there.
#[test]
fn stalls_count_on_the_baseline_sweep() {
    let tasks = [
        task("a", Running, 1),
        task("b", Running, 1),
        task("c", Pending, 1),
    ];
    let d = run(&[], &tasks, &[], &["a", "b", "c"], true);
    assert_eq!(d.newly_stalled, 2);
    assert!(d.events.is_empty());
    let flags: Vec<bool> = d.upserts.iter().map(|(_, k, _)| k.stalled).collect();
    assert_eq!(flags, [true, true, false]);
}

// ---------------------------------------------------------------- left the snapshot

#[test]
fn tasks_that_left_the_snapshot_are_retired_or_gone() {
    let mut run2 = known(Running, 1);
    run2.plan_id = Some("p2".into());
    let mut loose = known(Pending, 1);
    loose.plan_id = None;
    let mut old = known(Success, 1);
    old.current = false;
    let mut old_running = known(Running, 2);
    old_running.current = false;
    old_running.plan_id = Some("p3".into());
    let mut bad = known(Running, 1);
    bad.plan_id = Some("p4".into());
    let k = [
        // Finished: kept with their plan, no longer current.
        ("done", known(Success, 1)),
        ("failed", known(Failed, 2)),
        ("skipped", known(Skipped, 1)),
        // Unfinished: the executor dropped them; their plan is looked at.
        ("run", run2),
        ("wait", loose),
        // Already out of the snapshot: nothing more to say.
        ("old", old),
        ("old-running", old_running),
        // Unreadable this sweep: not known to have left.
        ("bad", bad),
        ("bad-done", known(Success, 1)),
        // Still there.
        ("here", known(Running, 1)),
    ];
    let d = run(
        &k,
        &[task("here", Running, 1)],
        &["bad", "bad-done", "nobody"],
        &[],
        false,
    );
    assert_eq!(d.retired, ["done", "failed", "skipped"]);
    assert_eq!(d.gone, ["run", "wait"]);
    assert_eq!(
        d.plans,
        plans(&["p2"]),
        "only a gone task's plan, and only if it has one"
    );
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert!(d.upserts.is_empty(), "{:?}", d.upserts);
    assert_eq!(d.newly_stalled, 0);
}

/// An empty snapshot: every current task left. An unreadable row keeps its
/// task even when no row is readable at all.
#[test]
fn an_empty_or_unreadable_snapshot() {
    let k = [("a", known(Running, 1)), ("b", known(Success, 1))];
    let d = run(&k, &[], &[], &[], false);
    assert_eq!(
        (d.gone, d.retired),
        (vec!["a".to_string()], vec!["b".to_string()])
    );
    let d = run(&k, &[], &["a", "b"], &[], false);
    assert_eq!(d, Diff::default());
}

// ---------------------------------------------------------------- plans touched

fn with_plan(mut k: Known, plan: Option<&str>) -> Known {
    k.plan_id = plan.map(str::to_string);
    k
}

#[test]
fn plans_are_looked_at_when_a_task_changes_or_moves() {
    let retired = Known {
        current: false,
        ..known(Success, 1)
    };
    let other_droid = Known {
        droid_type: Some("tester".into()),
        ..known(Running, 1)
    };
    // (what, known before, snapshot task, plans touched, row written, changed)
    type Case = (
        &'static str,
        Option<Known>,
        Task,
        Vec<&'static str>,
        bool,
        bool,
    );
    let table: Vec<Case> = vec![
        (
            "new task",
            None,
            task("t", Pending, 1),
            vec!["p1"],
            true,
            true,
        ),
        (
            "new task of no plan",
            None,
            Task {
                plan_id: None,
                ..task("t", Running, 1)
            },
            vec![],
            true,
            true,
        ),
        (
            "state changes",
            Some(known(Running, 1)),
            task("t", Success, 1),
            vec!["p1"],
            true,
            true,
        ),
        (
            "attempt changes",
            Some(known(Failed, 1)),
            task("t", Failed, 2),
            vec!["p1"],
            true,
            true,
        ),
        (
            "pending again on a retry",
            Some(known(Failed, 1)),
            task("t", Pending, 2),
            vec!["p1"],
            true,
            true,
        ),
        (
            "state changes, no plan",
            Some(with_plan(known(Running, 1), None)),
            Task {
                plan_id: None,
                ..task("t", Success, 1)
            },
            vec![],
            true,
            true,
        ),
        (
            "moves plan",
            Some(with_plan(known(Running, 1), Some("p0"))),
            task("t", Running, 1),
            vec!["p0", "p1"],
            true,
            false,
        ),
        (
            "moves plan and changes",
            Some(with_plan(known(Running, 1), Some("p0"))),
            task("t", Success, 1),
            vec!["p0", "p1"],
            true,
            true,
        ),
        (
            "joins a plan",
            Some(with_plan(known(Running, 1), None)),
            task("t", Running, 1),
            vec!["p1"],
            true,
            false,
        ),
        (
            "leaves its plan",
            Some(known(Running, 1)),
            Task {
                plan_id: None,
                ..task("t", Running, 1)
            },
            vec!["p1"],
            true,
            false,
        ),
        (
            "only stalled changes",
            Some(stalled(Running, 1)),
            task("t", Running, 1),
            vec![],
            true,
            false,
        ),
        (
            "only the droid type changes",
            Some(other_droid),
            task("t", Running, 1),
            vec![],
            true,
            false,
        ),
        (
            "back in the snapshot, unchanged",
            Some(retired),
            task("t", Success, 1),
            vec![],
            true,
            false,
        ),
        (
            "nothing changes",
            Some(known(Running, 1)),
            task("t", Running, 1),
            vec![],
            false,
            false,
        ),
        (
            "never back",
            Some(pushed(Success, 1)),
            task("t", Running, 1),
            vec![],
            false,
            false,
        ),
    ];
    for (what, before, t, want_plans, want_row, want_changed) in table {
        let k: Vec<(&str, Known)> = before.map(|k| ("t", k)).into_iter().collect();
        let d = run(&k, &[t], &[], &[], false);
        assert_eq!(d.plans, plans(&want_plans), "{what}: plans");
        assert_eq!(
            d.upserts.len(),
            usize::from(want_row),
            "{what}: rows {:?}",
            d.upserts
        );
        if let Some((_, k, changed)) = d.upserts.first() {
            assert_eq!(*changed, want_changed, "{what}: changed");
            assert!(k.current, "{what}: a task in the snapshot is current");
        }
        assert_eq!(
            !d.events.is_empty(),
            want_changed && d.upserts[0].1.state != Pending,
            "{what}: events"
        );
    }
}

// ---------------------------------------------------------------- plan_step

#[test]
fn plan_step_completes_reopens_or_does_nothing() {
    // (has tasks, has unfinished tasks, marked complete) -> step for
    // generation g. A plan with no task is never complete.
    type Want = fn(i64) -> PlanStep;
    let table: &[(bool, bool, bool, Want)] = &[
        (false, false, false, |_| PlanStep::Nothing),
        (false, false, true, |_| PlanStep::Reopen),
        (false, true, false, |_| PlanStep::Nothing),
        (false, true, true, |_| PlanStep::Reopen),
        (true, false, false, |g| PlanStep::Complete(g + 1)),
        (true, false, true, |_| PlanStep::Nothing),
        (true, true, false, |_| PlanStep::Nothing),
        (true, true, true, |_| PlanStep::Reopen),
    ];
    let mut cases = 0;
    for &(has_tasks, has_unfinished, completed, want) in table {
        let task_counts: &[usize] = if has_tasks { &[1, 2, 7] } else { &[0] };
        let unfinished_counts: &[usize] = if has_unfinished { &[1, 2, 7] } else { &[0] };
        for &tasks in task_counts {
            for &unfinished in unfinished_counts {
                for generation in [0, 1, 5] {
                    let facts = PlanFacts { tasks, unfinished };
                    let mark = PlanMark {
                        completed,
                        generation,
                    };
                    assert_eq!(
                        plan_step(facts, mark),
                        want(generation),
                        "{facts:?} {mark:?}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 3 * (1 + 3 + 3 + 9) * 2);
}

/// A plan the monitor never recorded starts at generation 0, not complete:
/// its first completion is generation 1.
#[test]
fn a_new_plans_first_completion_is_generation_one() {
    let facts = PlanFacts {
        tasks: 3,
        unfinished: 0,
    };
    assert_eq!(plan_step(facts, PlanMark::default()), PlanStep::Complete(1));
}

#[test]
fn finished_states() {
    let table = [
        (Pending, false),
        (Running, false),
        (Success, true),
        (Failed, true),
        (Skipped, true),
    ];
    for (state, want) in table {
        assert_eq!(is_finished(state), want, "{state:?}");
    }
}

/// A snapshot read after the last push is the executor's word: an older
/// attempt, or this attempt unfinished again, is taken (a wrong push, a
/// reused task id), with its event, instead of freezing the task.
#[test]
fn a_snapshot_newer_than_every_push_is_the_executors_word() {
    let table = [
        (Success, 3, Running, 2, RETRIED),
        (Failed, 2, Pending, 2, QUIET),
        (Success, 1, Running, 1, STARTED),
        (Running, 5, Failed, 1, FAILED),
    ];
    for (was, was_attempt, now_state, now_attempt, want) in table {
        let before = Known {
            pushed_late: false,
            ..known(was, was_attempt)
        };
        let d = run(
            &[("t", before)],
            &[task("t", now_state, now_attempt)],
            &[],
            &[],
            false,
        );
        let what = format!("{was:?}@{was_attempt} -> {now_state:?}@{now_attempt}");
        assert_eq!(d.events.first().map(|e| e.kind), want, "{what}");
        assert_eq!(d.upserts.len(), 1, "{what}");
        let (_, k, changed) = &d.upserts[0];
        assert_eq!(
            (k.state, k.attempt, *changed),
            (now_state, now_attempt, true),
            "{what}"
        );
        assert!(!k.pushed_late, "{what}");
    }
}

mod unchanged_pairs {
    use super::*;
    use proptest::prelude::*;

    fn state() -> impl Strategy<Value = TaskState> {
        prop::sample::select(vec![Pending, Running, Success, Failed, Skipped])
    }

    proptest! {
        /// What the pull drops before diffing (a current task exactly as
        /// known) changes nothing in the diff: the same events, writes,
        /// gone, retired, plans and stalls, whatever else is known.
        #[test]
        fn dropping_unchanged_pairs_changes_no_diff(
            rows in prop::collection::vec(
                (0usize..6, prop::option::of((state(), 1i64..3, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())),
                 prop::option::of((state(), 1i64..3, any::<bool>()))),
                0..12),
            baseline in any::<bool>(),
        ) {
            let mut known_all: HashMap<String, Known> = HashMap::new();
            let mut tasks_all: Vec<Task> = Vec::new();
            let mut hung_ids: Vec<String> = Vec::new();
            for (n, k, t) in rows {
                let id = format!("t{n}");
                if let Some((state, attempt, stalled, current, pushed_late, other_plan)) = k {
                    known_all.insert(id.clone(), Known {
                        plan_id: Some(if other_plan { "p2" } else { "p1" }.into()),
                        stalled,
                        current,
                        pushed_late,
                        ..known(state, attempt)
                    });
                }
                if let Some((state, attempt, is_hung)) = t {
                    if !tasks_all.iter().any(|x| x.id == id) {
                        tasks_all.push(task(&id, state, attempt));
                        if is_hung {
                            hung_ids.push(id.clone());
                        }
                    }
                }
            }
            let hung: HashSet<&str> = hung_ids.iter().map(|s| s.as_str()).collect();
            let none = HashSet::new();
            let all: Vec<&Task> = tasks_all.iter().collect();
            let full = diff(&known_all, &all, &none, &hung, now(), baseline);
            let same: HashSet<&str> = all
                .iter()
                .filter(|t| known_all.get(&t.id).is_some_and(|k| unchanged(k, t, &hung)))
                .map(|t| t.id.as_str())
                .collect();
            let known_rest: HashMap<String, Known> = known_all
                .iter()
                .filter(|(id, _)| !same.contains(id.as_str()))
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect();
            let rest: Vec<&Task> = all.iter().copied().filter(|t| !same.contains(t.id.as_str())).collect();
            let mut cut = diff(&known_rest, &rest, &none, &hung, now(), baseline);
            let mut full = full;
            for d in [&mut full, &mut cut] {
                d.upserts.sort_by(|a, b| a.0.cmp(&b.0));
                d.events.sort_by(|a, b| a.task_id.cmp(&b.task_id));
            }
            prop_assert_eq!(full, cut);
        }
    }
}
