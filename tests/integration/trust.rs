//! Issue 14, "verdicts you can trust on real hosts", with real processes, a
//! real executor file and the real binary or the in-process sweep: no row
//! crashes a sweep, implausible times are not progress, a bound identity
//! survives a rewritten `started_at`, signals only with proven identity
//! (re-read before the first signal, an interrupted termination completed),
//! Linux processes as they are (pthread_exit, pid_max), a brake that counts
//! this host's work, holds strays and remembers a window, and hang detection
//! on a busy host with bounded deferral.

use crate::cli::{bare_foreman, Running};
use crate::common::*;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use foreman::activity::ActivityLog;
use foreman::executor;
use foreman::model::{Action, Kind, Outcome, SweepKind};
use foreman::sweep::{sweep, FindingReport, LogAccess, SweepOptions, SweepReport};
use std::process::Command;
use std::time::Duration;

const SCHEDULED: SweepKind = SweepKind::Scheduled;

/// `foreman --config <world>/foreman.toml ARGS`, hermetic (no inherited
/// `FAILPOINTS`, `RUST_LOG`, ...), run in the world's directory.
fn foreman(w: &World, args: &[&str]) -> Command {
    let mut cmd = bare_foreman();
    cmd.arg("--config")
        .arg(w.path("foreman.toml"))
        .args(args)
        .current_dir(w.dir.path());
    cmd
}

/// Replace the world's config file by its text edited with `edit` (for keys
/// `Cfg` writes itself, e.g. `[defaults] timeout`), and load it.
fn edit_config(w: &mut World, edit: impl FnOnce(String) -> String) {
    let path = w.path("foreman.toml");
    let text = edit(std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, &text).unwrap();
    w.config =
        foreman::config::Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

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

    let out = Running::start(&mut foreman(&w, &["sweep", "--json"])).finish(PATIENCE * 2);
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
    let mut daemon = Running::start(&mut foreman(&w, &["run"]));
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

    let mut held =
        Running::start(foreman(&w, &["sweep"]).env("FAILPOINTS", "sweep::before_act=sleep(5000)"));
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
        foreman(&w, &["sweep"]).env("FAILPOINTS", "recovery::after_sigterm=sleep(60000)"),
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

    let out = Running::start(&mut foreman(&w, &["sweep"])).finish(PATIENCE * 2);
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
    edit_config(&mut w, |t| {
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
    edit_config(&mut w, |t| t.replace("max_cpu_pressure = 100.0\n", ""));
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
