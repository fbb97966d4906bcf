//! Issue 14, "verdicts you can trust on real hosts", with real processes, a
//! real executor file and the real binary or the in-process sweep: no row
//! crashes a sweep, implausible times are not progress, a bound identity
//! survives a rewritten `started_at`, signals only with proven identity
//! (re-read before the first signal, an interrupted termination completed),
//! Linux processes as they are (pthread_exit, pid_max), a brake that counts
//! this host's work, holds strays and remembers a window, and hang detection
//! on a busy host with bounded deferral.

use crate::cli::Running;
use crate::common::*;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use foreman::activity::ActivityLog;
use foreman::executor;
use foreman::model::{Action, Kind, Outcome, SweepKind};
use foreman::sweep::{sweep, FindingReport, LogAccess, SweepOptions, SweepReport};
use std::process::Command;
use std::time::Duration;

const SCHEDULED: SweepKind = SweepKind::Scheduled;

/// One real in-process sweep with these options (the activity log opened
/// afresh, as after a restart).
fn sweep_with_options(w: &World, opts: &SweepOptions) -> SweepReport {
    let executor = executor::open(&w.config).unwrap();
    let mut log = ActivityLog::open(&w.config.activity.path).unwrap();
    sweep(
        &w.config,
        executor.as_ref(),
        LogAccess::Write(&mut log),
        SCHEDULED,
        opts,
    )
    .unwrap()
}

/// The findings of one task recorded in the activity log: (id, kind,
/// action, outcome, outcome_detail). Read-only, and empty while the log
/// does not exist or has no tables yet (a binary still starting).
fn logged(w: &World, task: &str) -> Vec<(i64, String, String, String, Option<String>)> {
    let path = &w.config.activity.path;
    if !path.exists() {
        return Vec::new();
    }
    let read = || -> rusqlite::Result<Vec<_>> {
        let log = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        log.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = log.prepare(
            "SELECT id, kind, action, outcome, outcome_detail FROM findings WHERE task_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([task], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect()
    };
    read().unwrap_or_default()
}

/// A stale heartbeat for a task whose process runs now: the task started
/// (after the boot) a minute ago, its last heartbeat 30 s ago, both far
/// older than the tests' 1 s timeout.
fn stale() -> (DateTime<Utc>, DateTime<Utc>) {
    started_and_beat(60, 30)
}

fn stray_marker(tag: &str) -> String {
    format!(
        "foreman-trust-{tag}-{}-{}",
        std::process::id(),
        MARKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

static MARKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A shell whose command line holds `marker`, sleeping in a child.
fn matching(w: &mut World, marker: &str) -> i32 {
    let pid = w.spawn(&["sh", "-c", &format!("sleep 300; : {marker}")]);
    wait_for("its sleeping child", || tree(pid).len() == 2);
    pid
}

fn strays(r: &SweepReport) -> Vec<&FindingReport> {
    r.findings
        .iter()
        .filter(|f| f.kind == Kind::Stray)
        .collect()
}

/// Refresh the heartbeat of every RUNNING task (healthy work), then sweep.
fn sweep_fresh(w: &World) -> SweepReport {
    w.exec(
        "UPDATE tasks SET last_progress_at = ?1 WHERE state = 'RUNNING'",
        [rfc(now())],
    );
    w.sweep(SCHEDULED)
}

// ------------------------------------------- nothing from outside crashes

/// Scenario 1: a `started_at` in unix seconds far beyond year 9999 is a
/// malformed row naming the time; `sweep` exits 0 (it panicked, 101) and
/// judges the healthy task beside it; the daemon's startup scan survives.
#[test]
fn a_started_at_beyond_year_9999_is_unverifiable_and_neither_sweep_nor_run_dies() {
    // The healthy task stays healthy for the whole test, daemon included.
    let mut w = World::with(Cfg {
        tail: "[droid_types.patient]\nprogress = [\"heartbeat\"]\ntimeout = \"1h\"\n",
        ..Cfg::default()
    });
    let healthy = w.spawn(&["sleep", "300"]);
    w.task("healthy")
        .droid("patient")
        .pid(healthy.into())
        .started(process_started_at(healthy))
        .heartbeat(now())
        .insert();
    let other = w.spawn(&["sleep", "300"]);
    let other_ticks = start_ticks(other);
    w.exec(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at)
         VALUES ('far-future', 'plan-1', 'quiet', 'RUNNING', ?1, 1, 8210266876795)",
        [other],
    );

    let out = Running::start(&mut w.foreman(&["sweep", "--json"])).finish(PATIENCE * 2);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report = out.json();
    let bad = crate::cli::finding_of(&report, "far-future");
    assert_eq!(bad["kind"], "unverifiable", "{bad:#}");
    assert_eq!(bad["outcome"], "reported", "{bad:#}");
    let why = bad["evidence"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("8210266876795") && why.contains("started_at"),
        "the reason names the time: {why}"
    );
    assert_eq!(report["tasks_checked"], 1, "{report:#}");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM observations WHERE task_id = 'healthy'"),
        1,
        "the healthy task beside it was judged"
    );
    assert_eq!(w.task_state("far-future"), "RUNNING");
    assert_eq!(w.task_state("healthy"), "RUNNING");
    assert!(alive(other, other_ticks), "nothing was signalled");

    // The daemon: its startup scan meets the same row and goes on.
    let before = w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'startup'");
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    wait_for("the daemon's startup scan to finish", || {
        w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'startup' AND finished_at IS NOT NULL")
            > before
    });
    assert!(daemon.still_running(), "{}", daemon.stderr());
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(alive(other, other_ticks));
}

// ------------------------------------------------ timestamps and clocks

/// Scenario 2: a heartbeat in year 2100 is not progress: the quiet task
/// is hung once past the timeout, and the reason says why the heartbeat
/// was not counted. (It read as "progress 0 s ago" forever.)
#[test]
fn a_heartbeat_from_the_future_is_not_progress_and_the_task_is_hung() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    wait_sleeping(pid, "sleep");
    let started = now();
    w.task("future-beat")
        .droid("quiet")
        .pid(pid.into())
        .started(started)
        .heartbeat_text("2100-01-01T00:00:00Z")
        .insert();

    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "future-beat");

    wait_past(started + TimeDelta::milliseconds(1500));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "future-beat");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    let why = reason(f);
    assert!(
        why.contains("2100-01-01") && why.contains("implausible") && why.contains("not counted"),
        "{why}"
    );
    // Its first sight counted as the heartbeat moving (a counter without
    // history); frozen since, it is no progress.
    assert_eq!(
        f.evidence["last_progress_signal"], "heartbeat_moved",
        "{f:#?}"
    );
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    assert_eq!(w.task_state("future-beat"), "FAILED");
}

/// Scenario 3: once the identity is bound at first sight, a `started_at`
/// rewritten to long before the process started (as a forward clock step
/// moves the computed start) does not make it `pid_reused`. The same row
/// never bound is (the time rule still binds at first sight).
#[test]
fn a_bound_identity_survives_a_started_at_moved_back_to_the_boot() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.strict]\nprogress = [\"heartbeat\"]\npid_start_tolerance = \"1s\"\n",
        ..Cfg::default()
    });
    // The process must start well after "just after the boot".
    let early = boot_time() + TimeDelta::seconds(1);
    wait_past(early + TimeDelta::seconds(4));
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    assert!(process_started_at(pid) > early + TimeDelta::seconds(2));
    w.task("bound")
        .droid("strict")
        .pid(pid.into())
        .started(process_started_at(pid))
        .heartbeat(now())
        .insert();

    let first = sweep_fresh(&w);
    assert_no_finding(&first, "bound");

    w.exec(
        "UPDATE tasks SET started_at = ?1 WHERE id = 'bound'",
        [rfc(early)],
    );
    // Control: a row never bound, with the same times, is a reused pid.
    let control = w.spawn(&["sleep", "300"]);
    w.task("unbound")
        .droid("strict")
        .pid(control.into())
        .started(early)
        .heartbeat(now())
        .insert();

    let second = sweep_fresh(&w);
    assert_no_finding(&second, "bound");
    assert_eq!(finding(&second, "unbound").kind, Kind::PidReused);
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE task_id = 'bound'"),
        0
    );
    assert_eq!(w.task_state("bound"), "RUNNING");
    assert!(alive(pid, ticks));
}

/// Scenario 4: a task that started before this boot is failed at once,
/// but whatever holds its pid now is never signalled; a task Foreman bound
/// in this boot is not touched by the rule (its binding is the identity).
#[test]
fn the_pre_boot_rule_marks_at_once_and_never_signals() {
    let mut w = World::new();
    let holder = w.spawn(&["sleep", "300"]);
    let holder_ticks = start_ticks(holder);
    w.task("preboot")
        .droid("quiet")
        .pid(holder.into())
        .started(before_boot())
        .heartbeat(now())
        .insert();
    let bound = w.spawn(&["sleep", "300"]);
    let bound_ticks = start_ticks(bound);
    w.task("bound")
        .droid("quiet")
        .pid(bound.into())
        .started(process_started_at(bound))
        .heartbeat(now())
        .insert();

    let first = sweep_fresh(&w);
    let f = finding(&first, "preboot");
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert!(reason(f).contains("never signalled"), "{f:#?}");
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert_eq!(w.count("SELECT COUNT(*) FROM finding_signals"), 0);
    assert!(
        alive(holder, holder_ticks),
        "the pid's holder was signalled"
    );
    assert_eq!(w.task_state("preboot"), "FAILED");
    assert_no_finding(&first, "bound");

    // Bound in this boot, then its started_at moved before the boot.
    w.exec(
        "UPDATE tasks SET started_at = ?1 WHERE id = 'bound'",
        [rfc(before_boot())],
    );
    let second = sweep_fresh(&w);
    assert_no_finding(&second, "bound");
    assert_eq!(w.task_state("bound"), "RUNNING");
    assert!(alive(bound, bound_ticks));
}

// ------------------------------------------ signals only with proven identity

/// Scenario 5: a row with neither `started_at` nor `pid_start_ticks`
/// naming a process that already ran: hung, marked only, never signalled.
#[test]
fn without_started_at_or_start_ticks_a_hung_task_is_marked_but_never_signalled() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    wait_sleeping(pid, "sleep");
    w.task("unproven").droid("quiet").pid(pid.into()).insert();

    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "unproven");
    wait_past(first.started_at + TimeDelta::milliseconds(1500));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "unproven");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed),
        "{f:#?}"
    );
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("never signalled"), "{detail}");
    let (_, _, _, recorded) = w.recorded(f.id.unwrap());
    assert!(
        recorded
            .as_deref()
            .is_some_and(|d| d.contains("never signalled")),
        "{recorded:?}"
    );
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(alive(pid, ticks), "the process was signalled");
    assert_eq!(w.task_state("unproven"), "FAILED");
}

/// Scenario 6: the executor finishes a hung task between the commit of
/// the finding and the first signal: the row is read again, nothing is
/// signalled, the executor's SUCCESS stands.
#[cfg(feature = "failpoints")]
#[test]
fn a_task_finished_after_the_commit_is_not_signalled() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    let (started, beat) = stale();
    w.task("finishes")
        .droid("quiet")
        .pid(pid.into())
        .started(started)
        .heartbeat(beat)
        .insert();

    let mut held = Running::start(
        w.foreman(&["sweep"])
            .env("FAILPOINTS", "sweep::before_act=sleep(5000)"),
    );
    wait_for("the hung finding committed as pending", || {
        logged(&w, "finishes")
            .iter()
            .any(|(_, kind, action, outcome, _)| {
                kind == "hung" && action == "terminate_and_mark" && outcome == "pending"
            })
    });
    w.exec(
        "UPDATE tasks SET state = 'SUCCESS', finished_at = ?1 WHERE id = 'finishes'",
        [rfc(now())],
    );
    let out = held.finish(PATIENCE * 2);
    assert_eq!(out.code, Some(0), "{out:#?}");

    let rows = logged(&w, "finishes");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let (id, _, _, outcome, detail) = &rows[0];
    assert_eq!(outcome, "already_finished", "{rows:#?}");
    assert!(
        detail.as_deref().is_some_and(|d| d.contains("re-read")),
        "{rows:#?}"
    );
    assert!(w.signals(*id).is_empty(), "{:#?}", w.signals(*id));
    assert!(
        alive(pid, ticks),
        "the finished task's process was signalled"
    );
    assert_eq!(w.task_state("finishes"), "SUCCESS");
    assert_eq!(w.task_error("finishes"), None);
}

/// Scenario 7: Foreman killed between the SIGTERMs and their record: the
/// next sweep completes the termination (tree gone, task marked, signals
/// recorded) instead of closing the finding as `cleared`.
#[cfg(feature = "failpoints")]
#[test]
fn a_termination_interrupted_by_a_crash_is_completed_by_the_next_sweep() {
    let mut w = World::new();
    // The leader dies of SIGTERM; its child ignores it.
    let leader = w.spawn(&["sh", "-c", "(trap '' TERM; exec sleep 300) & wait"]);
    wait_for("the child sleeping with TERM ignored", || {
        tree(leader).len() == 2 && {
            let child = tree(leader)[1].0;
            cmdline(child).starts_with("sleep") && ignores(child, libc::SIGTERM)
        }
    });
    let child = tree(leader)[1].0;
    let child_ticks = start_ticks(child);
    let (started, beat) = stale();
    w.task("interrupted")
        .droid("quiet")
        .pid(leader.into())
        .started(started)
        .heartbeat(beat)
        .insert();

    let mut held = Running::start(
        w.foreman(&["sweep"])
            .env("FAILPOINTS", "recovery::after_sigterm=sleep(60000)"),
    );
    wait_for("the leader to die of its SIGTERM", || {
        proc_state(leader) == Some('Z')
    });
    held.signal(libc::SIGKILL);
    held.finish(PATIENCE);
    let rows = logged(&w, "interrupted");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let (id, kind, action, outcome, _) = rows[0].clone();
    assert_eq!(
        (kind.as_str(), action.as_str(), outcome.as_str()),
        ("hung", "terminate_and_mark", "pending")
    );
    assert!(
        w.signals(id).is_empty(),
        "no signal recorded before the crash: {:#?}",
        w.signals(id)
    );
    let intents: Vec<i32> = w.intents(id).iter().map(|s| s.pid).collect();
    assert_eq!(
        intents,
        vec![child, leader],
        "the intent to signal the whole tree was recorded first"
    );
    assert!(alive(child, child_ticks), "the child ignored its SIGTERM");

    let out = Running::start(&mut w.foreman(&["sweep"])).finish(PATIENCE * 2);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let rows = logged(&w, "interrupted");
    assert_eq!(rows.len(), 1, "the same finding is completed: {rows:#?}");
    let (same, kind, _, outcome, detail) = rows[0].clone();
    assert_eq!(same, id);
    assert_eq!(kind, "hung");
    assert_eq!(outcome, "marked_failed", "{rows:#?}");
    let detail = detail.unwrap_or_default();
    assert!(
        detail.contains("completing the termination") && detail.contains("interrupted"),
        "{detail}"
    );
    assert_eq!(w.task_state("interrupted"), "FAILED");
    let error = w.task_error("interrupted").unwrap_or_default();
    assert!(error.starts_with("foreman: hung:"), "{error}");
    assert!(!alive(child, child_ticks), "the child survived");
    assert!(w.exited(leader).is_some(), "the leader is gone");
    let sigs = w.signals(id);
    assert!(
        sigs.iter()
            .any(|s| s.pid == child && s.result == "delivered"),
        "the completing signals are recorded: {sigs:#?}"
    );
}

// ------------------------------------------- processes as Linux has them

/// Scenario 8: a pid at `kernel.pid_max` (the kernel hands out pids below
/// it) is a malformed row, not a death; the rest of the sweep proceeds.
#[test]
fn a_pid_above_pid_max_is_unverifiable_and_the_sweep_goes_on() {
    let mut w = World::new();
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    w.task("impossible")
        .droid("quiet")
        .pid(i64::from(max))
        .started(after_boot(60))
        .heartbeat(now())
        .insert();
    let gone = w.spawn_exited(&["true"]);
    w.task("dead")
        .droid("quiet")
        .pid(gone.into())
        .started(before_boot())
        .insert();

    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "impossible");
    assert_eq!(f.kind, Kind::Unverifiable, "{f:#?}");
    assert_eq!((f.action, f.outcome), (Action::None, Outcome::Reported));
    assert!(reason(f).contains("pid_max"), "{f:#?}");
    assert_eq!(w.task_state("impossible"), "RUNNING");
    assert_eq!(finding(&r, "dead").outcome, Outcome::MarkedFailed);
    assert_eq!(w.task_state("dead"), "FAILED");
}

/// Scenario 15: a process whose main thread called `pthread_exit` while
/// another thread works shows its leader in state Z; it is alive (its
/// threads' CPU is its progress), not a zombie.
#[test]
fn a_process_whose_main_thread_exited_while_another_works_is_alive() {
    let mut w = World::new();
    let src = w.path("pthread_exit.c");
    std::fs::write(
        &src,
        r#"#include <pthread.h>
#include <stdio.h>
static void *work(void *arg) {
    volatile unsigned long n = 0;
    (void)arg;
    for (;;) n++;
    return NULL;
}
int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, work, NULL) != 0) return 1;
    printf("ready\n");
    fflush(stdout);
    pthread_exit(NULL);
}
"#,
    )
    .unwrap();
    let bin = w.path("pthread_exit");
    let built = Command::new("cc")
        .args(["-O0", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("cc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => return skip_or_fail(&format!("no C compiler (cc): {e}")),
    }
    let (pid, line) = w.spawn_reading_line(&[bin.to_str().unwrap()]);
    assert_eq!(line, "ready");
    wait_for("the main thread to exit (leader in state Z)", || {
        proc_state(pid) == Some('Z')
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Threads:", "2"])),
        "{status}"
    );
    w.task("threads")
        .droid("cruncher")
        .pid(pid.into())
        .started(process_started_at(pid))
        .insert();

    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "threads");
    // Past exit grace and the timeout: a zombie would now be marked, and a
    // process without CPU progress hung.
    wait_past(first.started_at + TimeDelta::milliseconds(1500));
    let second = w.sweep(SCHEDULED);
    assert_no_finding(&second, "threads");
    assert_eq!(
        proc_state(pid),
        Some('Z'),
        "still working behind a Z leader"
    );
    assert_eq!(w.task_state("threads"), "RUNNING");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE task_id = 'threads'"),
        0
    );
}

// ----------------------------------------------------- the brake and strays

/// Insert `n` RUNNING tasks of this host whose processes exited before the
/// boot (dead at once, no exit grace).
fn dead_tasks(w: &mut World, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i:02}");
            let pid = w.spawn_exited(&["true"]);
            w.task(&id)
                .droid("quiet")
                .pid(pid.into())
                .started(before_boot())
                .insert();
            id
        })
        .collect()
}

/// Scenario 9: the brake's 20% counts this host's RUNNING tasks: 12 local
/// deaths are braked beside 50 rows of another host as they are alone.
#[test]
fn the_brake_counts_only_this_hosts_running_tasks() {
    let mut w = World::new();
    let ids = dead_tasks(&mut w, "dead", 12);

    // Control: alone, 12 > 10.
    let alone = w.sweep(SCHEDULED);
    for id in &ids {
        let f = finding(&alone, id);
        assert_eq!((f.kind, f.outcome), (Kind::Dead, Outcome::Braked), "{f:#?}");
    }

    for i in 0..50 {
        w.task(&format!("elsewhere-{i:02}"))
            .droid("quiet")
            .host("other-host")
            .pid(1000 + i)
            .started(now())
            .heartbeat(now())
            .insert();
    }
    let beside = w.sweep(SCHEDULED);
    for id in &ids {
        let f = finding(&beside, id);
        assert_eq!((f.kind, f.outcome), (Kind::Dead, Outcome::Braked), "{f:#?}");
        let detail = f.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("limit of 10"), "{detail}");
        assert_eq!(w.task_state(id), "RUNNING");
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE outcome = 'marked_failed'"),
        0
    );
}

/// Scenario 10: a braked sweep acts on nothing, strays included.
#[test]
fn a_braked_sweep_terminates_no_stray() {
    let marker = stray_marker("braked");
    let tail = format!(
        "[droid_types.worker]\nprogress = [\"heartbeat\"]\nprocess_match = \"{marker}\"\non_stray = \"terminate\"\n"
    );
    let mut w = World::with(Cfg {
        tail: &tail,
        ..Cfg::default()
    });
    // Healthy work here, so the snapshot is trusted.
    let busy = w.spawn(&["sleep", "300"]);
    w.task("busy")
        .droid("quiet")
        .pid(busy.into())
        .started(process_started_at(busy))
        .heartbeat(now())
        .insert();
    let stray = matching(&mut w, &marker);
    let stray_ticks = start_ticks(stray);
    let ids = dead_tasks(&mut w, "dead", 11);

    let first = sweep_fresh(&w);
    assert!(strays(&first).is_empty(), "seen once is not yet a stray");
    let second = sweep_fresh(&w);
    let found = strays(&second);
    assert_eq!(found.len(), 1, "{:#?}", second.findings);
    let f = found[0];
    assert_eq!(f.pid, Some(stray));
    assert_eq!(
        (f.action, f.outcome),
        (Action::Terminate, Outcome::Braked),
        "{f:#?}"
    );
    assert!(
        f.detail
            .as_deref()
            .is_some_and(|d| d.contains("mass-action brake")),
        "{f:#?}"
    );
    for id in &ids {
        assert_eq!(finding(&second, id).outcome, Outcome::Braked);
        assert_eq!(w.task_state(id), "RUNNING");
    }
    assert!(alive(stray, stray_ticks), "the stray was terminated");
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert_eq!(w.count("SELECT COUNT(*) FROM finding_signals"), 0);
}

/// Scenario 11: `max_actions_per_window = 3`: two marks, then two more
/// within the window would be four: the second sweep is braked.
#[test]
fn the_rolling_window_brakes_a_trickle_under_the_per_sweep_limit() {
    let mut w = World::new();
    // A window (`[defaults] timeout`) no slow host outlasts between sweeps.
    w.edit_config(|t| {
        t.replace(
            "[defaults]\ntimeout = \"1s\"\n",
            "[defaults]\ntimeout = \"10m\"\nmax_actions_per_window = 3\n",
        )
    });
    assert_eq!(w.config.defaults.max_actions_per_window, Some(3));

    let early = dead_tasks(&mut w, "early", 2);
    let first = w.sweep(SCHEDULED);
    for id in &early {
        assert_eq!(finding(&first, id).outcome, Outcome::MarkedFailed);
        assert_eq!(w.task_state(id), "FAILED");
    }

    let late = dead_tasks(&mut w, "late", 2);
    let second = w.sweep(SCHEDULED);
    for id in &late {
        let f = finding(&second, id);
        assert_eq!((f.kind, f.outcome), (Kind::Dead, Outcome::Braked), "{f:#?}");
        let detail = f.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("window") && detail.contains("limit of 3"),
            "{detail}"
        );
        assert_eq!(w.task_state(id), "RUNNING");
    }
}

/// Scenario 12: while a local RUNNING task of the droid type has no pid
/// recorded, a matching unowned process may be its worker: reported only.
#[test]
fn a_running_task_without_a_pid_protects_its_types_strays() {
    let marker = stray_marker("pidless");
    let tail = format!(
        "[droid_types.worker]\nprogress = [\"heartbeat\"]\nprocess_match = \"{marker}\"\non_stray = \"terminate\"\n"
    );
    let mut w = World::with(Cfg {
        tail: &tail,
        ..Cfg::default()
    });
    let worker = matching(&mut w, &marker);
    let worker_ticks = start_ticks(worker);
    w.task("registering")
        .droid("worker")
        .started(now())
        .heartbeat(now())
        .insert();

    sweep_fresh(&w);
    let second = sweep_fresh(&w);
    let found = strays(&second);
    assert_eq!(found.len(), 1, "{:#?}", second.findings);
    let f = found[0];
    assert_eq!(f.pid, Some(worker));
    assert_eq!(
        (f.action, f.outcome),
        (Action::None, Outcome::Reported),
        "{f:#?}"
    );
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("RUNNING") && detail.contains("no pid recorded yet"),
        "{detail}"
    );
    assert!(alive(worker, worker_ticks), "the worker was terminated");
    assert_eq!(w.count("SELECT COUNT(*) FROM finding_signals"), 0);
}

// --------------------------------------------- hang detection on a busy host

/// `some avg10` of /proc/pressure/cpu, if the kernel has PSI.
fn cpu_pressure() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some"))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// Scenario 13: a host saturated by its own work (system-wide PSI above
/// 90%, which used to defer every hang forever) still gets a sleeping hung
/// task terminated and marked. The config is left without
/// `max_cpu_pressure`, so the old default threshold (90%) would apply.
#[test]
fn a_hung_sleeper_on_a_busy_host_is_acted_on_not_deferred() {
    let mut w = World::new();
    w.edit_config(|t| t.replace("max_cpu_pressure = 100.0\n", ""));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loops: Vec<i32> = (0..2 * cpus)
        .map(|_| w.spawn(&["sh", "-c", "while :; do :; done"]))
        .collect();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    wait_sleeping(pid, "sleep");
    let (started, beat) = stale();
    w.task("hung-busy")
        .droid("quiet")
        .pid(pid.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    if cpu_pressure().is_some() {
        // PSI's 10 s average takes that long to climb.
        assert!(
            wait_until(Duration::from_secs(90), || cpu_pressure()
                .is_some_and(|p| p > 90.0)),
            "CPU pressure stayed at {:?} with {} busy loops",
            cpu_pressure(),
            loops.len()
        );
    }

    let r = w.sweep(SCHEDULED);
    for l in loops {
        w.kill(l);
    }
    let f = finding(&r, "hung-busy");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_ne!(f.outcome, Outcome::DeferredStarvation, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::TerminateAndMark, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert!(r.deferral.is_none(), "{:?}", r.deferral);
    assert!(!alive(pid, ticks), "the hung sleeper survived");
    assert_eq!(w.task_state("hung-busy"), "FAILED");
}

/// Scenario 14: Foreman starved (a late tick) defers a hang only up to
/// `max_deferral` past the timeout; then it acts and says it waited.
#[test]
fn deferral_for_starvation_ends_after_max_deferral() {
    let mut w = World::with(Cfg {
        defaults: "max_deferral = \"2s\"",
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    wait_sleeping(pid, "sleep");
    let beat = now();
    w.task("starved")
        .droid("quiet")
        .pid(pid.into())
        .started(process_started_at(pid))
        .heartbeat(beat)
        .insert();
    let late = SweepOptions {
        lateness: Some(Duration::from_secs(3600)),
        ..SweepOptions::default()
    };

    // Just past the timeout (1 s): overdue less than max_deferral (2 s).
    wait_past(beat + TimeDelta::milliseconds(1100));
    let first = sweep_with_options(&w, &late);
    let f = finding(&first, "starved");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::Deferred, Outcome::DeferredStarvation),
        "{f:#?}"
    );
    assert!(
        f.detail
            .as_deref()
            .is_some_and(|d| d.contains("late") && d.contains("max_deferral")),
        "{f:#?}"
    );
    assert!(alive(pid, ticks));
    assert_eq!(w.task_state("starved"), "RUNNING");

    // Overdue past max_deferral: still starved, but it acts now.
    wait_past(beat + TimeDelta::milliseconds(3500));
    let second = sweep_with_options(&w, &late);
    let f = finding(&second, "starved");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::TerminateAndMark, Outcome::MarkedFailed),
        "{f:#?}"
    );
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("waited") && detail.contains("max_deferral"),
        "{detail}"
    );
    assert!(!alive(pid, ticks));
    assert_eq!(w.task_state("starved"), "FAILED");
}

// ------------------------------------ after the adversarial review (21f013c)

/// Foreman (the real binary) held at `failpoint` during a sweep, then
/// killed by SIGKILL once `until` holds: a crash at that point.
#[cfg(feature = "failpoints")]
fn crash_at(w: &World, failpoint: &str, what: &str, until: impl FnMut() -> bool) {
    let mut held = Running::start(w.foreman(&["sweep"]).env("FAILPOINTS", failpoint));
    wait_for(what, until);
    held.signal(libc::SIGKILL);
    held.finish(PATIENCE);
}

/// Whether the activity log holds a hung finding of `task` still pending.
fn hung_pending(w: &World, task: &str) -> bool {
    logged(w, task).iter().any(|(_, kind, action, outcome, _)| {
        kind == "hung" && action == "terminate_and_mark" && outcome == "pending"
    })
}

/// The one finding of `task`, a hung `terminate_and_mark` left pending by
/// a crash: its id.
fn the_pending_hung(w: &World, task: &str) -> i64 {
    let rows = logged(w, task);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let (id, kind, action, outcome, _) = rows[0].clone();
    assert_eq!(
        (kind.as_str(), action.as_str(), outcome.as_str()),
        ("hung", "terminate_and_mark", "pending"),
        "{rows:#?}"
    );
    id
}

/// A leader that dies of SIGTERM with a child that ignores it (and sleeps):
/// (leader, child, child's start ticks).
fn leader_with_term_ignoring_child(w: &mut World) -> (i32, i32, u64) {
    let leader = w.spawn(&["sh", "-c", "(trap '' TERM; exec sleep 300) & wait"]);
    wait_for("the child sleeping with TERM ignored", || {
        tree(leader).len() == 2 && {
            let child = tree(leader)[1].0;
            cmdline(child).starts_with("sleep") && ignores(child, libc::SIGTERM)
        }
    });
    let child = tree(leader)[1].0;
    (leader, child, start_ticks(child))
}

/// A crash between the SIGTERMs to `leader`'s tree and their record, the
/// leader dead of its SIGTERM and its child alive: the pending finding's id
/// (its intent naming the whole tree recorded, no signal).
#[cfg(feature = "failpoints")]
fn termination_interrupted_after_the_leader_died(
    w: &World,
    task: &str,
    leader: i32,
    child: i32,
    child_ticks: u64,
) -> i64 {
    crash_at(
        w,
        "recovery::after_sigterm=sleep(60000)",
        "the leader to die of its SIGTERM",
        || proc_state(leader) == Some('Z'),
    );
    let id = the_pending_hung(w, task);
    assert!(
        w.signals(id).is_empty(),
        "no signal recorded before the crash: {:#?}",
        w.signals(id)
    );
    let intents: Vec<i32> = w.intents(id).iter().map(|s| s.pid).collect();
    assert_eq!(intents, vec![child, leader], "the intent names the tree");
    assert!(alive(child, child_ticks), "the child ignored its SIGTERM");
    id
}

/// The executor's row of a task: (state, pid, attempt, error, finished_at).
fn executor_row(w: &World, id: &str) -> (String, Option<i64>, i64, Option<String>, Option<String>) {
    w.conn()
        .query_row(
            "SELECT state, pid, attempt, error, finished_at FROM tasks WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap()
}

fn signal_at(s: &SignalRow) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&s.at)
        .unwrap_or_else(|e| panic!("signal time {:?}: {e}", s.at))
        .with_timezone(&Utc)
}

/// Review item 1: a hung finding committed, then Foreman killed before it
/// recorded any intent or sent anything; the process then exits by itself
/// with its row still RUNNING. Nothing was begun, so nothing is
/// "completed": the task is judged afresh (dead, waiting out exit grace),
/// the hung finding is closed `cleared`, and the executor's SUCCESS,
/// recorded within exit grace, stands.
///
/// Fails before 21f013c: every open hung `terminate_and_mark` finding was
/// resumed once its task looked gone (there was no intent row to tell a
/// begun termination from one never started), so the sweep after the crash
/// turned the dead verdict back into hung, said "completing the
/// termination" and marked the task FAILED at once, before the executor
/// could record its success.
#[cfg(feature = "failpoints")]
#[test]
fn a_hung_finding_never_acted_on_is_judged_afresh_when_its_process_exits() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.lingering]\nprogress = [\"heartbeat\"]\nexit_grace = \"1m\"\n",
        ..Cfg::default()
    });
    // A droid that finishes (exit 0) once told to.
    let go = w.path("go");
    let pid = w.spawn(&[
        "sh",
        "-c",
        "while [ ! -e \"$0\" ]; do sleep 0.05; done",
        go.to_str().unwrap(),
    ]);
    let (started, beat) = stale();
    w.task("exits")
        .droid("lingering")
        .pid(pid.into())
        .started(started)
        .heartbeat(beat)
        .insert();

    crash_at(
        &w,
        "sweep::before_act=sleep(60000)",
        "the hung finding committed as pending",
        || hung_pending(&w, "exits"),
    );
    let hung = the_pending_hung(&w, "exits");
    assert!(w.intents(hung).is_empty(), "{:#?}", w.intents(hung));
    assert!(w.signals(hung).is_empty(), "{:#?}", w.signals(hung));

    std::fs::write(&go, "").unwrap();
    wait_for("the droid to exit by itself", || w.exited(pid).is_some());
    assert_eq!(w.exited(pid).and_then(|s| s.code()), Some(0));
    assert_eq!(w.task_state("exits"), "RUNNING", "not recorded yet");

    let next = w.sweep(SCHEDULED);
    for f in &next.findings {
        let detail = f.detail.as_deref().unwrap_or_default();
        assert!(!detail.contains("completing the termination"), "{f:#?}");
    }
    let f = finding(&next, "exits");
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!((f.action, f.outcome), (Action::Deferred, Outcome::Pending));
    assert!(
        f.detail
            .as_deref()
            .is_some_and(|d| d.contains("exit grace")),
        "{f:#?}"
    );
    let (kind, _, outcome, detail) = w.recorded(hung);
    assert_eq!(
        (kind.as_str(), outcome.as_str()),
        ("hung", "cleared"),
        "{detail:?}"
    );
    assert!(w.signals(hung).is_empty());
    assert_eq!(w.task_state("exits"), "RUNNING");

    // The executor records the success before exit grace ends.
    w.exec(
        "UPDATE tasks SET state = 'SUCCESS', finished_at = ?1 WHERE id = 'exits'",
        [rfc(now())],
    );
    let last = w.sweep(SCHEDULED);
    assert_no_finding(&last, "exits");
    let (_, _, outcome, detail) = w.recorded(f.id.unwrap());
    assert_eq!(outcome, "already_finished", "{detail:?}");
    assert_eq!(w.task_state("exits"), "SUCCESS");
    assert_eq!(w.task_error("exits"), None);
    assert_eq!(
        w.count("SELECT COUNT(*) FROM finding_signals"),
        0,
        "nothing was ever signalled"
    );
}

/// Review item 2: a termination interrupted after its SIGTERMs (the
/// leader died of it, its child ignores it), then the executor records the
/// leader's death before the next sweep. Foreman had begun killing that
/// tree: the next sweep finishes it (the TERM-ignoring child gets SIGKILL
/// after kill_grace, recorded as delivered), the finding ends `terminated`,
/// and the executor's row is left exactly as it wrote it.
///
/// Fails before 21f013c: an interrupted termination was resumed only from a
/// task still RUNNING (judged gone); a task the executor had finished was
/// not judged at all, so the open finding was closed `already_finished`
/// and the child that ignored SIGTERM lived on.
#[cfg(feature = "failpoints")]
#[test]
fn an_interrupted_termination_is_finished_after_the_executor_recorded_the_death() {
    let mut w = World::new();
    let (leader, child, child_ticks) = leader_with_term_ignoring_child(&mut w);
    let (started, beat) = stale();
    w.task("recorded")
        .droid("quiet")
        .pid(leader.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    let id =
        termination_interrupted_after_the_leader_died(&w, "recorded", leader, child, child_ticks);

    // The executor saw its droid die of SIGTERM and recorded it.
    w.exec(
        "UPDATE tasks SET state = 'FAILED', error = 'droid killed by signal 15', finished_at = ?1
         WHERE id = 'recorded'",
        [rfc(now())],
    );
    let written = executor_row(&w, "recorded");

    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "recorded");
    assert_eq!(f.id, Some(id), "the same finding is finished: {f:#?}");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::Terminate, Outcome::Terminated),
        "{f:#?}"
    );
    assert!(
        f.detail
            .as_deref()
            .is_some_and(|d| d.contains("completing the termination")),
        "{f:#?}"
    );
    let (_, _, outcome, _) = w.recorded(id);
    assert_eq!(outcome, "terminated");
    assert!(
        !alive(child, child_ticks),
        "the TERM-ignoring child survived"
    );
    let sigs = w.signals(id);
    let to_child: Vec<&SignalRow> = sigs.iter().filter(|s| s.pid == child).collect();
    let term = to_child
        .iter()
        .find(|s| s.signal == "SIGTERM")
        .unwrap_or_else(|| panic!("{sigs:#?}"));
    let kill = to_child
        .iter()
        .find(|s| s.signal == "SIGKILL")
        .unwrap_or_else(|| panic!("no SIGKILL for the child: {sigs:#?}"));
    assert_eq!(kill.result, "delivered", "{sigs:#?}");
    assert!(
        signal_at(kill) >= signal_at(term) + TimeDelta::seconds(1),
        "SIGKILL only after kill_grace (1s): {sigs:#?}"
    );
    assert_eq!(
        executor_row(&w, "recorded"),
        written,
        "the executor's row was changed"
    );
}

/// Review item 3: a termination interrupted after its SIGTERM, whose
/// leader caught it and went on running (its trap burns CPU). The next
/// sweep completes it: SIGKILL, the process gone, the task marked FAILED
/// `foreman: hung:`.
///
/// Fails before 21f013c: the interrupted termination was resumed only for
/// a task that now looked gone; this one was judged afresh, its CPU moved
/// (the trap's work), so it was alive and the hung finding was closed
/// `cleared`, the hung droid left running.
#[cfg(feature = "failpoints")]
#[test]
fn an_interrupted_termination_whose_leader_caught_sigterm_is_completed() {
    let mut w = World::new();
    // Sleeps (no CPU, no I/O) until SIGTERM, then burns CPU for ever. Its
    // child ignores SIGTERM: were it to die of its own (it is signalled
    // first), the shell's `wait` would return and the shell exit before
    // its SIGTERM arrived.
    let leader = w.spawn(&[
        "sh",
        "-c",
        "trap 'while :; do :; done' TERM; (trap '' TERM; exec sleep 300) & wait",
    ]);
    wait_for("the leader waiting on its sleeping child", || {
        tree(leader).len() == 2
            && cmdline(tree(leader)[1].0).starts_with("sleep")
            && proc_state(leader) == Some('S')
    });
    let ticks = start_ticks(leader);
    let (started, beat) = stale();
    // Droid type `worker`: heartbeat, CPU and I/O all count as progress.
    w.task("caught")
        .pid(leader.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    // First sight: the counters count as moving; then nothing moves.
    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "caught");
    wait_past(first.started_at + TimeDelta::milliseconds(1500));

    let before = tree_cpu(leader);
    crash_at(
        &w,
        "recovery::after_sigterm=sleep(60000)",
        "the leader to catch its SIGTERM and burn CPU",
        || tree_cpu(leader) > before + 5,
    );
    let id = the_pending_hung(&w, "caught");
    assert!(w.signals(id).is_empty(), "{:#?}", w.signals(id));
    assert!(w.intents(id).iter().any(|s| s.pid == leader));
    // It runs on and makes CPU progress a fresh judgement would count.
    let busy = tree_cpu(leader);
    wait_for("the leader to keep burning CPU", || tree_cpu(leader) > busy);
    assert!(alive(leader, ticks));

    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "caught");
    assert_eq!(f.id, Some(id), "{f:#?}");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::TerminateAndMark, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert!(
        f.detail
            .as_deref()
            .is_some_and(|d| d.contains("completing the termination")),
        "{f:#?}"
    );
    assert_eq!(w.recorded(id).2, "marked_failed");
    assert!(!alive(leader, ticks), "the leader survived");
    let sigs = w.signals(id);
    assert!(
        sigs.iter()
            .any(|s| s.pid == leader && s.signal == "SIGKILL" && s.result == "delivered"),
        "{sigs:#?}"
    );
    assert!(w.exited(leader).is_some(), "the leader is gone");
    assert_eq!(w.task_state("caught"), "FAILED");
    let error = w.task_error("caught").unwrap_or_default();
    assert!(error.starts_with("foreman: hung:"), "{error}");
}

/// Review item 4: an interrupted termination whose kept inputs name
/// another boot (its tree was probed before a reboot: pids and start ticks
/// mean nothing now) is not resumed: no signal reaches the tree, still
/// live, and no delivered signal is recorded for the finding.
///
/// Fails before 21f013c: the boot of the kept inputs was not compared; the
/// task looked gone (its leader a zombie), so the termination was resumed
/// and the surviving child, re-verified by pid and start ticks alone, was
/// killed.
#[cfg(feature = "failpoints")]
#[test]
fn an_interrupted_termination_from_another_boot_is_not_resumed() {
    let mut w = World::new();
    let (leader, child, child_ticks) = leader_with_term_ignoring_child(&mut w);
    let (started, beat) = stale();
    w.task("rebooted")
        .droid("quiet")
        .pid(leader.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    let id =
        termination_interrupted_after_the_leader_died(&w, "rebooted", leader, child, child_ticks);
    let log = w.log();
    let text: String = log
        .query_row("SELECT inputs FROM findings WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    let mut inputs: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(inputs["boot"]["boot_id"], boot().boot_id.as_str());
    inputs["boot"]["boot_id"] = "00000000-0000-4000-8000-000000000000".into();
    log.execute(
        "UPDATE findings SET inputs = ?1 WHERE id = ?2",
        rusqlite::params![inputs.to_string(), id],
    )
    .unwrap();

    let r = w.sweep(SCHEDULED);
    for f in &r.findings {
        let detail = f.detail.as_deref().unwrap_or_default();
        assert!(!detail.contains("completing the termination"), "{f:#?}");
    }
    assert!(
        r.findings
            .iter()
            .all(|f| f.task_id != "rebooted" || f.kind != Kind::Hung),
        "{:#?}",
        r.findings
    );
    assert!(alive(child, child_ticks), "the tree was signalled");
    assert!(w.signals(id).is_empty(), "{:#?}", w.signals(id));
    assert_eq!(
        w.count("SELECT COUNT(*) FROM finding_signals WHERE signal != 'INTENT'"),
        0
    );
    let (_, _, outcome, detail) = w.recorded(id);
    assert_eq!(outcome, "cleared", "{detail:?}");
    assert_eq!(w.task_state("rebooted"), "RUNNING");
}

/// Review item 5: a worker started before its task by more than
/// `pid_start_tolerance` is bound pooled; once `started_at` is rewritten to
/// just before the process's start (as a clock step would move it), the
/// worker is still pooled: the hung verdict is marked only, never
/// signalled, and the process lives.
///
/// Fails before 21f013c: "pooled" was recomputed from the row at every
/// sweep; with the rewritten `started_at` the worker was no longer older
/// than the task, so the hung task's tree was terminated.
#[test]
fn a_pooled_worker_stays_pooled_when_started_at_moves_before_it() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.pool]\nprogress = [\"heartbeat\"]\npid_start_tolerance = \"1s\"\n",
        ..Cfg::default()
    });
    after_boot(5);
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    let process_start = process_started_at(pid);
    // Older than the task by well over the tolerance (and btime's rounding).
    wait_past(process_start + TimeDelta::seconds(3));
    let beat = now();
    w.task("pooled")
        .droid("pool")
        .pid(pid.into())
        .started(beat)
        .heartbeat(beat)
        .insert();

    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "pooled");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM observations WHERE task_id = 'pooled' AND pooled = 1"),
        1,
        "bound pooled"
    );

    w.exec(
        "UPDATE tasks SET started_at = ?1 WHERE id = 'pooled'",
        [rfc(process_start - TimeDelta::milliseconds(500))],
    );
    wait_past(beat + TimeDelta::milliseconds(1500));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "pooled");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed),
        "{f:#?}"
    );
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("pooled") && detail.contains("never signalled"),
        "{detail}"
    );
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(alive(pid, ticks), "the pooled worker was signalled");
    assert_eq!(w.task_state("pooled"), "FAILED");
}

/// Review item 6: a row with a pid but neither `started_at` nor
/// `pid_start_ticks` binds whatever holds the pid, unproven; a `started_at`
/// the executor writes afterwards proves nothing about the process already
/// bound: the hung verdict is marked only, never signalled.
///
/// Fails before 21f013c: "unproven" was recomputed from the row at every
/// sweep; once the row had a `started_at` the bound process counted as the
/// task's and was terminated.
#[test]
fn an_unproven_binding_stays_unproven_when_started_at_arrives() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    wait_sleeping(pid, "sleep");
    w.task("late-start").droid("quiet").pid(pid.into()).insert();

    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "late-start");
    w.exec(
        "UPDATE tasks SET started_at = ?1 WHERE id = 'late-start'",
        [rfc(after_boot(1200))],
    );
    wait_past(first.started_at + TimeDelta::milliseconds(1500));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "late-start");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed),
        "{f:#?}"
    );
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("never signalled") && detail.contains("no started_at"),
        "{detail}"
    );
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(alive(pid, ticks), "the unproven process was signalled");
    assert_eq!(w.task_state("late-start"), "FAILED");
}

/// Review item 7: a heartbeat more than `future_tolerance` ahead of the
/// clock (a skewed executor) is no time of progress, but its moving is: a
/// quiet task whose heartbeat keeps changing stays alive past the timeout;
/// once it stops changing, the task is hung.
///
/// Fails before 21f013c: a future heartbeat was simply not counted, so the
/// quiet task's last progress was its start and it was hung (and killed)
/// one timeout after starting, while its executor was still reporting.
#[test]
fn a_heartbeat_ahead_of_the_clock_that_keeps_moving_is_progress() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut w = World::with(Cfg {
        top: "future_tolerance = \"1s\"",
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    wait_sleeping(pid, "sleep");
    let ahead = || rfc(now() + TimeDelta::seconds(10));
    let started = process_started_at(pid);
    w.task("skewed")
        .droid("quiet")
        .pid(pid.into())
        .started(started)
        .heartbeat_text(&ahead())
        .insert();

    // The executor's clock runs 10 s ahead; it beats every 200 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let beater = {
        let stop = stop.clone();
        let db = w.db.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            while !stop.load(Ordering::SeqCst) {
                conn.execute(
                    "UPDATE tasks SET last_progress_at = ?1 WHERE id = 'skewed'",
                    [ahead()],
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Sweeps a few times a second, well past the 1 s timeout.
    let until = now() + TimeDelta::seconds(3);
    let mut sweeps = 0;
    while now() < until {
        let r = w.sweep(SCHEDULED);
        assert_no_finding(&r, "skewed");
        sweeps += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(sweeps >= 5, "{sweeps} sweeps");
    assert!(now() > started + TimeDelta::seconds(3));
    stop.store(true, Ordering::SeqCst);
    beater.join().unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE task_id = 'skewed'"),
        0
    );
    assert!(alive(pid, ticks));

    // Frozen now: the last change is seen once, then nothing moves.
    let last = w.sweep(SCHEDULED);
    assert_no_finding(&last, "skewed");
    wait_past(last.started_at + TimeDelta::milliseconds(1500));
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "skewed");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        f.evidence["last_progress_signal"], "heartbeat_moved",
        "{f:#?}"
    );
    let why = reason(f);
    assert!(
        why.contains("implausible") && why.contains("only its changing is"),
        "{why}"
    );
    assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
    assert_eq!(w.task_state("skewed"), "FAILED");
}

/// Insert `n` RUNNING tasks of `droid` whose processes just exited (dead,
/// waiting out exit grace once seen gone).
fn just_exited(w: &mut World, droid: &str, prefix: &str, n: usize) -> Vec<String> {
    let started = after_boot(60);
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i:02}");
            let pid = w.spawn_exited(&["true"]);
            w.task(&id)
                .droid(droid)
                .pid(pid.into())
                .started(started)
                .insert();
            id
        })
        .collect()
}

/// Review item 8a: in shadow mode, would-be actions are not actions: the
/// same six deaths sweep after sweep are `would_mark_failed` every time,
/// never braked by a rolling window (`max_actions_per_window = 10`) they
/// would otherwise fill.
///
/// Fails before 21f013c: `would_mark_failed` findings first seen within the
/// window counted as actions taken, so the second sweep saw 6 + 6 > 10 and
/// braked them, and shadow mode showed a brake enforcing would never meet.
#[test]
fn shadow_would_actions_do_not_fill_the_rolling_window() {
    let mut w = World::with(Cfg {
        top: "mode = \"shadow\"",
        ..Cfg::default()
    });
    w.edit_config(|t| {
        t.replace(
            "[defaults]\ntimeout = \"1s\"\n",
            "[defaults]\ntimeout = \"10m\"\nmax_actions_per_window = 10\n",
        )
    });
    assert_eq!(w.config.defaults.max_actions_per_window, Some(10));
    let ids = dead_tasks(&mut w, "dead", 6);

    for sweep in 0..4 {
        let r = w.sweep(SCHEDULED);
        for id in &ids {
            let f = finding(&r, id);
            assert_eq!(
                (f.kind, f.action, f.outcome),
                (Kind::Dead, Action::MarkFailed, Outcome::WouldMarkFailed),
                "sweep {sweep}: {f:#?}"
            );
            assert_eq!(w.task_state(id), "RUNNING");
        }
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE outcome = 'braked'"),
        0
    );
}

/// Review item 8b: a shadow droid type's 11 would-be actions beside one
/// real death of an enforce type: the enforce task is marked failed in the
/// first sweep past exit grace; the shadow ones are braked as if every type
/// enforced (12 > 10), to show what enforcing would meet.
///
/// Fails before 21f013c: the brake counted would-be actions with real ones,
/// so the whole sweep was braked and the enforce type's dead task stayed
/// RUNNING.
#[test]
fn shadow_would_actions_do_not_brake_an_enforced_one() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.trial]\nprogress = [\"heartbeat\"]\nmode = \"shadow\"\n",
        ..Cfg::default()
    });
    let shadow = just_exited(&mut w, "trial", "trial", 11);
    let enforced = just_exited(&mut w, "quiet", "real", 1).remove(0);

    let first = w.sweep(SCHEDULED);
    for id in shadow.iter().chain([&enforced]) {
        let f = finding(&first, id);
        assert_eq!(
            (f.kind, f.action, f.outcome),
            (Kind::Dead, Action::Deferred, Outcome::Pending),
            "{f:#?}"
        );
        assert!(
            f.detail
                .as_deref()
                .is_some_and(|d| d.contains("exit grace")),
            "{f:#?}"
        );
    }

    wait_past(first.started_at + TimeDelta::milliseconds(1100));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, &enforced);
    assert_eq!(
        (f.kind, f.action, f.outcome),
        (Kind::Dead, Action::MarkFailed, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert_eq!(w.task_state(&enforced), "FAILED");
    for id in &shadow {
        let f = finding(&second, id);
        assert_eq!((f.kind, f.outcome), (Kind::Dead, Outcome::Braked), "{f:#?}");
        let detail = f.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("mass-action brake") && detail.contains("limit of 10"),
            "{detail}"
        );
        assert_eq!(w.task_state(id), "RUNNING");
    }
}

/// `GET path` over a connection of its own: (status, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers: {raw:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line of {raw:?}"));
    (status, body.to_string())
}

/// Review item 9: late ticks with nothing hung are not a deferral: every
/// sweep is held a second (interval 500ms, so every tick is late) for
/// longer than `max_deferral` (3s) beside one healthy task; `/healthz`
/// does not report a deferral, and `foreman_hung_deferred` is 0.
///
/// Fails before 21f013c: Foreman's lateness was written as the sweep's
/// deferral whether or not anything was deferred, so after 3 s of late
/// ticks `/healthz` was 503 "deferred ... longer than max_deferral" on a
/// healthy fleet.
#[cfg(feature = "failpoints")]
#[test]
fn late_ticks_with_nothing_hung_are_no_deferral_in_healthz() {
    let mut w = World::with(Cfg {
        defaults: "max_deferral = \"3s\"",
        tail: "[droid_types.patient]\nprogress = [\"heartbeat\"]\ntimeout = \"1h\"\n",
        http: Some("listen = \"127.0.0.1:0\""),
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    w.task("healthy")
        .droid("patient")
        .pid(pid.into())
        .started(process_started_at(pid))
        .heartbeat(now())
        .insert();

    let mut cmd = w.foreman(&["run"]);
    cmd.env("FAILPOINTS", "sweep::before_act=sleep(1000)")
        .env_remove("FOREMAN_HTTP_TOKEN");
    let mut daemon = Running::start(&mut cmd);
    let re = regex::Regex::new(r"http: listening .*address=(\S+)").unwrap();
    let mut addr = None;
    wait_for("the daemon to log its HTTP address", || {
        assert!(daemon.still_running(), "{}", daemon.stderr());
        addr = re
            .captures(&daemon.stderr())
            .map(|c| c[1].parse::<std::net::SocketAddr>().unwrap());
        addr.is_some()
    });
    let addr = addr.unwrap();
    let scheduled =
        "SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled' AND finished_at IS NOT NULL";
    assert!(
        wait_until(Duration::from_secs(30), || w.count(scheduled) >= 5),
        "five scheduled sweeps: {}",
        daemon.stderr()
    );
    let first: String = w
        .log()
        .query_row(
            "SELECT MIN(started_at) FROM sweeps WHERE kind = 'scheduled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let first = DateTime::parse_from_rfc3339(&first).unwrap();
    assert!(
        now() > first + TimeDelta::milliseconds(3500),
        "late sweeps for longer than max_deferral"
    );
    assert!(
        daemon.stderr().contains("no hung verdict to defer"),
        "the ticks were late: {}",
        daemon.stderr()
    );

    let (status, body) = http_get(addr, "/healthz");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["deferral"].is_null(), "{v:#}");
    let why = v["reason"].as_str().unwrap_or_default();
    assert!(
        !why.contains("deferr") && !why.contains("max_deferral"),
        "{status}: {v:#}"
    );
    if status != 200 {
        // Sweeps held a second with a 500ms interval may be "late" for
        // /healthz's own liveness rule; nothing else may fail it.
        assert!(why.contains("twice the interval"), "{status}: {v:#}");
    }
    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let metric = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    assert_eq!(metric("foreman_hung_deferred"), Some(0.0), "{metrics}");
    assert_eq!(metric("foreman_deferral_seconds"), Some(0.0), "{metrics}");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM sweeps WHERE deferral IS NOT NULL"),
        0
    );
    assert_eq!(w.task_state("healthy"), "RUNNING");
    // A held sweep would keep a SIGTERM waiting; dropping kills it.
    drop(daemon);
}

/// Review item 10: two droid types whose stray patterns overlap (alpha's
/// matches everything beta's does, and claims it), and a RUNNING beta task
/// with no pid yet: an unowned process matching both may be that task's
/// worker, so it is reported only and lives.
///
/// Fails before 21f013c: only the claiming type (alpha) was checked for
/// pidless rows; the beta task's pidless row protected nothing, and the
/// process was terminated.
#[test]
fn a_pidless_row_protects_every_process_its_type_would_match() {
    let n = format!(
        "{}{}",
        std::process::id(),
        MARKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let (alpha, beta) = (format!("9{n}"), format!("9{n}7"));
    let tail = format!(
        "[droid_types.alpha]\nprocess_match = \"^sleep {alpha}\"\non_stray = \"terminate\"\n\
         [droid_types.beta]\nprocess_match = \"^sleep {beta}\"\non_stray = \"terminate\"\n"
    );
    let mut w = World::with(Cfg {
        tail: &tail,
        ..Cfg::default()
    });
    let worker = w.spawn(&["sleep", &beta]);
    let worker_ticks = start_ticks(worker);
    wait_sleeping(worker, "sleep");
    w.task("registering")
        .droid("beta")
        .started(now())
        .heartbeat(now())
        .insert();

    let first = sweep_fresh(&w);
    assert!(strays(&first).is_empty(), "{:#?}", first.findings);
    let second = sweep_fresh(&w);
    let found = strays(&second);
    assert_eq!(found.len(), 1, "{:#?}", second.findings);
    let f = found[0];
    assert_eq!(f.pid, Some(worker));
    assert_eq!(
        f.droid_type.as_deref(),
        Some("alpha"),
        "the overlapping pattern claims it: {f:#?}"
    );
    assert_eq!(
        (f.action, f.outcome),
        (Action::None, Outcome::Reported),
        "{f:#?}"
    );
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("RUNNING beta task") && detail.contains("no pid recorded yet"),
        "{detail}"
    );
    assert!(alive(worker, worker_ticks), "the worker was terminated");
    assert_eq!(w.count("SELECT COUNT(*) FROM finding_signals"), 0);
}
