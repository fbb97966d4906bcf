//! Judging real processes: every verdict from a process in the state it
//! names, and healthy work left alone (no finding, still RUNNING).

use crate::common::*;
use foreman::model::{Action, Kind, Outcome, SweepKind};
use std::io::Write;

const SCHEDULED: SweepKind = SweepKind::Scheduled;
const STARTUP: SweepKind = SweepKind::Startup;

#[test]
fn sleeper_with_fresh_heartbeat_is_alive() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    w.task("t1")
        .pid(pid.into())
        .started(after_boot(600))
        .heartbeat(now())
        .insert();
    let r = w.sweep(SCHEDULED);
    assert_eq!(r.tasks_checked, 1);
    assert_no_finding(&r, "t1");
    assert_eq!(w.task_state("t1"), "RUNNING");
}

#[test]
fn busy_loop_without_heartbeat_is_alive_because_cpu_moved() {
    let mut w = World::new();
    let pid = w.spawn(&["sh", "-c", "while :; do :; done"]);
    let ticks = start_ticks(pid);
    // Default progress: heartbeat (none here), cpu, io (a `:` loop does no I/O).
    w.task("busy")
        .pid(pid.into())
        .started(after_boot(600))
        .insert();
    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "busy");
    let cpu = tree_cpu(pid);
    // Longer than the timeout: without the CPU signal this would be hung.
    wait_past(first.started_at + chrono::Duration::milliseconds(1200));
    wait_for("the busy loop to burn CPU", || tree_cpu(pid) > cpu);
    let second = w.sweep(SCHEDULED);
    assert_no_finding(&second, "busy");
    // Stored with millisecond precision.
    let moved = w.cpu_moved_at("busy").unwrap();
    assert!(
        moved > second.started_at - chrono::Duration::milliseconds(1),
        "the second sweep saw the CPU move: {moved} vs {}",
        second.started_at
    );
    assert_eq!(w.task_state("busy"), "RUNNING");
    assert!(alive(pid, ticks));
}

#[test]
fn shell_wrapping_a_busy_child_is_alive_by_tree_cpu() {
    let mut w = World::new();
    let pid = w.spawn(&["sh", "-c", "sh -c 'while :; do :; done'; true"]);
    // The busy child must exist at the first sweep, so its CPU counts as a
    // member's movement at the second, not as a newcomer's.
    wait_for("the busy child", || {
        tree(pid).len() == 2 && cmdline(tree(pid)[1].0).contains("while")
    });
    w.task("wrapped")
        .droid("cruncher")
        .pid(pid.into())
        .started(after_boot(600))
        .insert();
    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "wrapped");
    let (leader_cpu, cpu) = (tree(pid)[0].1, tree_cpu(pid));
    wait_past(first.started_at + chrono::Duration::milliseconds(1200));
    wait_for("the child to burn CPU", || tree_cpu(pid) > cpu);
    let second = w.sweep(SCHEDULED);
    assert_eq!(
        tree(pid)[0].1,
        leader_cpu,
        "the waiting shell itself is idle"
    );
    assert_no_finding(&second, "wrapped");
    assert_eq!(w.task_state("wrapped"), "RUNNING");
}

#[test]
fn quiet_sleeper_with_stale_heartbeat_is_hung_at_first_sight() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let (started, beat) = started_and_beat(600, 300);
    w.task("quiet")
        .droid("quiet")
        .pid(pid.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "quiet");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(f.evidence["last_progress_signal"], "heartbeat");
    assert_eq!(f.action, Action::TerminateAndMark);
    assert_eq!(f.outcome, Outcome::MarkedFailed);
    assert_eq!(w.task_state("quiet"), "FAILED");
}

#[test]
fn sleeper_is_hung_on_cpu_only_after_being_watched_past_the_timeout() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    wait_sleeping(pid, "sleep");
    w.task("idle")
        .droid("cruncher")
        .pid(pid.into())
        .started(after_boot(600))
        .insert();
    // First sight: a counter never seen before has no history; not hung.
    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "idle");
    assert_eq!(w.task_state("idle"), "RUNNING");
    wait_past(first.started_at + chrono::Duration::milliseconds(1200));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "idle");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(f.evidence["last_progress_signal"], "cpu");
    assert_eq!(w.task_state("idle"), "FAILED");
}

#[test]
fn crashed_process_is_dead_pending_then_marked_after_exit_grace() {
    let mut w = World::new();
    let pid = w.spawn_exited(&["sh", "-c", "exit 3"]);
    w.task("crash")
        .pid(pid.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let first = w.sweep(SCHEDULED);
    let f = finding(&first, "crash");
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!((f.action, f.outcome), (Action::Deferred, Outcome::Pending));
    assert!(f.detail.as_deref().unwrap().contains("exit grace"));
    assert_eq!(w.task_state("crash"), "RUNNING", "within exit_grace");
    let id = f.id;

    wait_past(first.started_at + chrono::Duration::seconds(1));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "crash");
    assert_eq!(f.kind, Kind::Dead);
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed)
    );
    assert_eq!(f.id, id, "the same finding, acted on");
    assert_eq!(w.task_state("crash"), "FAILED");
    assert!(w
        .task_error("crash")
        .unwrap()
        .starts_with("foreman: dead: "));
}

#[test]
fn unreaped_child_is_a_zombie() {
    let mut w = World::new();
    // The child exits once its parent has exec'd `sleep`, which never
    // reaps it (exiting earlier could let the shell reap it first).
    let (_, line) = w.spawn_reading_line(&[
        "sh",
        "-c",
        "sh -c 'until read c < /proc/$PPID/comm && [ \"$c\" = sleep ]; do sleep 0.01; done' & echo $!; exec sleep 300",
    ]);
    let zombie: i32 = line.parse().unwrap();
    wait_for("the child to become a zombie", || {
        proc_state(zombie) == Some('Z')
    });
    w.task("z")
        .pid(zombie.into())
        .started(after_boot(60))
        .heartbeat(now())
        .insert();
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "z");
    assert_eq!(f.kind, Kind::Zombie, "{f:#?}");
    assert_eq!(f.evidence["state"], "Z");
    assert_eq!((f.action, f.outcome), (Action::Deferred, Outcome::Pending));
    assert_eq!(w.task_state("z"), "RUNNING");
}

#[test]
fn stopped_process_is_unverifiable_and_left_alone() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    // SAFETY: our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_for("the process to stop", || proc_state(pid) == Some('T'));
    // Stale heartbeat: were it running, it would be hung.
    let (started, beat) = started_and_beat(600, 300);
    w.task("stopped")
        .droid("quiet")
        .pid(pid.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "stopped");
    assert_eq!(f.kind, Kind::Unverifiable, "{f:#?}");
    assert!(reason(f).contains("stopped"), "{}", reason(f));
    assert_eq!((f.action, f.outcome), (Action::None, Outcome::Reported));
    assert_eq!(w.task_state("stopped"), "RUNNING");
    assert_eq!(proc_state(pid), Some('T'));
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert_eq!(start_ticks(pid), ticks);
}

#[test]
fn task_on_another_host_is_not_judged_here_and_untouched() {
    let mut w = World::new();
    // Its pid here names nothing: on its own host it may be fine.
    let pid = w.spawn_exited(&["true"]);
    w.task("far")
        .pid(pid.into())
        .host("other-host")
        .started(before_boot())
        .heartbeat(before_boot())
        .insert();
    let r = w.sweep(SCHEDULED);
    // Not this host's to judge: no finding (no unverifiable every sweep,
    // no count in foreman_findings_total), not checked, not marked.
    assert_no_finding(&r, "far");
    assert_eq!(r.tasks_checked, 0);
    assert_eq!(w.count("SELECT COUNT(*) FROM findings"), 0);
    assert_eq!(w.task_state("far"), "RUNNING");
    assert_eq!(w.task_error("far"), None);
}

#[test]
fn malformed_rows_are_unverifiable_while_a_good_dead_task_is_still_handled() {
    let mut w = World::new();
    let dead = w.spawn_exited(&["true"]);
    w.task("weird").state("WEIRD").started(now()).insert();
    w.task("pid-one").pid(1).started(now()).insert();
    w.task("pid-neg").pid(-3).started(now()).insert();
    w.task("soon")
        .pid(dead.into())
        .started_text("soon")
        .insert();
    // Started before this boot: no exit grace, marked at once.
    w.task("good")
        .pid(dead.into())
        .started(before_boot())
        .insert();
    let r = w.sweep(SCHEDULED);
    for (id, want) in [
        ("weird", "unknown state \"WEIRD\""),
        ("pid-one", "invalid pid 1"),
        ("pid-neg", "invalid pid -3"),
        ("soon", "unparseable started_at"),
    ] {
        let f = finding(&r, id);
        assert_eq!(f.kind, Kind::Unverifiable, "{f:#?}");
        assert!(reason(f).contains(want), "{id}: {}", reason(f));
        assert_eq!((f.action, f.outcome), (Action::None, Outcome::Reported));
    }
    let f = finding(&r, "good");
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!(f.outcome, Outcome::MarkedFailed);
    assert_eq!(w.task_state("good"), "FAILED");
    for id in ["pid-one", "pid-neg", "soon"] {
        assert_eq!(w.task_state(id), "RUNNING", "{id}");
    }
    assert_eq!(w.task_state("weird"), "WEIRD");
}

#[test]
fn pooled_worker_judged_hung_is_marked_but_never_signalled() {
    let mut w = World::with(Cfg {
        tail: r#"[droid_types.pool]
progress = ["heartbeat"]
pid_start_tolerance = "100ms"
"#,
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    wait_sleeping(pid, "sleep");
    let ticks = start_ticks(pid);
    // The worker was there before the task: started_at is after its start
    // by more than the tolerance.
    let started = process_started_at(pid) + chrono::Duration::milliseconds(500);
    w.task("pooled")
        .droid("pool")
        .pid(pid.into())
        .started(started)
        .heartbeat(started)
        .insert();
    wait_past(started + chrono::Duration::milliseconds(1100));
    let r = w.sweep(SCHEDULED);
    let f = finding(&r, "pooled");
    assert_eq!(f.kind, Kind::Hung, "{f:#?}");
    assert_eq!(
        f.action,
        Action::MarkFailed,
        "never terminate a pooled worker"
    );
    assert_eq!(f.outcome, Outcome::MarkedFailed);
    assert!(f.detail.as_deref().unwrap().contains("pooled worker"));
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(alive(pid, ticks), "the pooled worker lives on");
    assert_eq!(w.task_state("pooled"), "FAILED");
}

#[test]
fn start_ticks_recorded_by_the_executor_that_differ_mean_pid_reused() {
    let mut w = World::new();
    let pid = w.spawn(&["sleep", "300"]);
    let ticks = start_ticks(pid);
    w.task("other")
        .pid(pid.into())
        .started(now())
        .heartbeat(now())
        .start_ticks(ticks + 7)
        .insert();
    let first = w.sweep(SCHEDULED);
    let f = finding(&first, "other");
    assert_eq!(f.kind, Kind::PidReused, "{f:#?}");
    assert_eq!(f.evidence["bound_start_ticks"], ticks + 7);
    assert_eq!(f.evidence["start_ticks"], ticks);
    assert_eq!((f.action, f.outcome), (Action::Deferred, Outcome::Pending));

    wait_past(first.started_at + chrono::Duration::seconds(1));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "other");
    assert_eq!(f.kind, Kind::PidReused);
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed)
    );
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(
        alive(pid, ticks),
        "the process now holding the pid is not ours to kill"
    );
    assert_eq!(w.task_state("other"), "FAILED");
}

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// Make the next process this test starts get `pid`, if the kernel lets us.
pub(crate) fn spawn_with_pid(w: &mut World, pid: i32, argv: &[&str]) -> Result<i32, String> {
    let mut got = Vec::new();
    for _ in 0..20 {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(NS_LAST_PID)
            .map_err(|e| format!("{NS_LAST_PID} is not writable: {e}"))?;
        f.write_all((pid - 1).to_string().as_bytes())
            .map_err(|e| format!("writing {NS_LAST_PID}: {e}"))?;
        drop(f);
        let new = w.spawn(argv);
        if new == pid {
            return Ok(new);
        }
        // Someone else took it first; try again.
        w.kill(new);
        got.push(new);
    }
    Err(format!("pid {pid} not obtained in 20 tries (got {got:?})"))
}

#[test]
fn real_pid_reuse_is_detected_and_the_new_process_is_not_signalled() {
    let mut w = World::exclusive(Cfg::default());
    let original = w.spawn(&["sleep", "300"]);
    let original_ticks = start_ticks(original);
    w.task("reused")
        .pid(original.into())
        .started(now())
        .heartbeat(now())
        .insert();
    // Bind the identity while the task's own process is alive.
    let first = w.sweep(SCHEDULED);
    assert_no_finding(&first, "reused");

    w.kill(original);
    let newcomer = match spawn_with_pid(&mut w, original, &["sleep", "300"]) {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&format!("real pid reuse: {why}")),
    };
    let new_ticks = start_ticks(newcomer);
    assert_ne!(new_ticks, original_ticks);
    // Heartbeat fresh and the newcomer started within the (generous)
    // tolerance: only the bound identity can tell.
    w.exec("UPDATE tasks SET last_progress_at = ?1", [rfc(now())]);
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "reused");
    assert_eq!(f.kind, Kind::PidReused, "{f:#?}");
    assert_eq!(f.evidence["bound_start_ticks"], original_ticks);
    assert_eq!(f.evidence["start_ticks"], new_ticks);
    assert!(reason(f).contains("at first sight"), "{}", reason(f));
    assert_eq!((f.action, f.outcome), (Action::Deferred, Outcome::Pending));

    wait_past(second.started_at + chrono::Duration::seconds(1));
    let third = w.sweep(SCHEDULED);
    let f = finding(&third, "reused");
    assert_eq!(f.kind, Kind::PidReused);
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed)
    );
    assert!(w.signals(f.id.unwrap()).is_empty());
    assert!(alive(newcomer, new_ticks), "the newcomer is not signalled");
    assert_eq!(w.task_state("reused"), "FAILED");
}

/// The lazy path cannot be fooled by a reused pid: the task's process is
/// held by pidfd with a fresh heartbeat (so its read is skipped), it dies
/// and another process takes its pid before anything drains the exit. The
/// next sweep does not take the held task as alive: the pidfd is readable,
/// so the task is read, and the newcomer is a reused pid, never signalled.
#[test]
fn a_pid_reused_while_held_is_not_taken_as_alive() {
    let mut w = World::exclusive(Cfg::default());
    w.edit_config(|t| t.replace("timeout = \"1s\"", "timeout = \"1h\""));
    let original = w.spawn(&["sleep", "300"]);
    let original_ticks = start_ticks(original);
    w.task("reused")
        .pid(original.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let watch = std::sync::Arc::new(foreman::watch::Watch::new().expect("pidfds on this kernel"));
    let opts = foreman::sweep::SweepOptions {
        watch: Some(watch.clone()),
        ..Default::default()
    };
    let run = |w: &World| {
        let executor = foreman::executor::open(&w.config).unwrap();
        let mut log = foreman::activity::ActivityLog::open(&w.config.activity.path).unwrap();
        foreman::sweep::sweep(
            &w.config,
            executor.as_ref(),
            foreman::sweep::LogAccess::Write(&mut log),
            SCHEDULED,
            &opts,
        )
        .unwrap()
    };
    assert_no_finding(&run(&w), "reused");
    assert_eq!(watch.len(), 1, "bound and held");
    let seen = |w: &World| -> String {
        w.log()
            .query_row(
                "SELECT seen_at FROM observations WHERE task_id = 'reused'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let before = seen(&w);
    w.exec("UPDATE tasks SET last_progress_at = ?1", [rfc(now())]);
    assert_no_finding(&run(&w), "reused");
    assert_eq!(seen(&w), before, "held and fresh: not read");

    w.kill(original);
    let newcomer = match spawn_with_pid(&mut w, original, &["sleep", "300"]) {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&format!("real pid reuse: {why}")),
    };
    let new_ticks = start_ticks(newcomer);
    assert_ne!(new_ticks, original_ticks);
    w.exec("UPDATE tasks SET last_progress_at = ?1", [rfc(now())]);
    let after = run(&w);
    let f = finding(&after, "reused");
    assert_eq!(f.kind, Kind::PidReused, "{f:#?}");
    assert_eq!(f.evidence["bound_start_ticks"], original_ticks);
    assert!(alive(newcomer, new_ticks), "the newcomer is not signalled");
    assert_eq!(watch.len(), 0, "the newcomer is not held for the task");
}

#[test]
fn startup_scan_marks_a_task_started_before_boot_as_orphan_at_once() {
    let mut w = World::new();
    let pid = w.spawn_exited(&["true"]);
    w.task("old")
        .pid(pid.into())
        .started(before_boot())
        .heartbeat(before_boot())
        .insert();
    let r = w.sweep(STARTUP);
    let f = finding(&r, "old");
    assert_eq!(f.kind, Kind::Orphan, "{f:#?}");
    assert_eq!(f.evidence["cause"], "dead");
    assert_eq!(
        (f.action, f.outcome),
        (Action::MarkFailed, Outcome::MarkedFailed)
    );
    assert_eq!(w.task_state("old"), "FAILED");
    assert!(w
        .task_error("old")
        .unwrap()
        .starts_with("foreman: orphan: "));
}

#[test]
fn startup_scan_calls_a_task_without_pid_past_startup_grace_an_orphan() {
    let w = World::with(Cfg {
        tail: "[droid_types.slow]\nstartup_grace = \"1m\"\n",
        ..Cfg::default()
    });
    // No pid: no boot rule applies, only startup_grace (1m) against the clock.
    w.task("never").droid("slow").started(ago(600)).insert();
    w.task("starting").droid("slow").started(ago(5)).insert();
    let r = w.sweep(STARTUP);
    let f = finding(&r, "never");
    assert_eq!(f.kind, Kind::Orphan, "{f:#?}");
    assert!(reason(f).contains("no pid"), "{}", reason(f));
    assert_eq!(f.outcome, Outcome::MarkedFailed);
    assert_eq!(w.task_state("never"), "FAILED");
    let f = finding(&r, "starting");
    assert_eq!(f.kind, Kind::Unverifiable, "within its startup grace");
    assert_eq!(w.task_state("starting"), "RUNNING");
}

#[test]
fn startup_scan_calls_a_dead_task_an_orphan_and_acts_after_exit_grace() {
    let mut w = World::new();
    let pid = w.spawn_exited(&["sh", "-c", "exit 1"]);
    w.task("gone")
        .pid(pid.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let first = w.sweep(STARTUP);
    let f = finding(&first, "gone");
    assert_eq!(f.kind, Kind::Orphan, "{f:#?}");
    assert_eq!(f.evidence["cause"], "dead");
    assert_eq!((f.action, f.outcome), (Action::Deferred, Outcome::Pending));
    assert_eq!(w.task_state("gone"), "RUNNING");
    let id = f.id;

    wait_past(first.started_at + chrono::Duration::seconds(1));
    let second = w.sweep(SCHEDULED);
    let f = finding(&second, "gone");
    assert_eq!(f.kind, Kind::Orphan, "still the orphan found at startup");
    assert_eq!(f.id, id);
    assert_eq!(f.outcome, Outcome::MarkedFailed);
    assert!(w
        .task_error("gone")
        .unwrap()
        .starts_with("foreman: orphan: "));
}

/// Another host's rows are said once (per host, an hour), not at every
/// sweep, and never become findings, however many sweeps see them.
#[test]
fn another_hosts_rows_are_said_once_not_every_sweep() {
    let mut w = World::with(Cfg {
        tail: "[droid_types.worker]\ntimeout = \"1h\"\nprogress = [\"heartbeat\"]\n",
        ..Cfg::default()
    });
    let here = w.spawn(&["sleep", "300"]);
    w.task("here")
        .droid("worker")
        .pid(here.into())
        .started(process_started_at(here))
        .heartbeat(now())
        .insert();
    for (id, host) in [
        ("far-1", "other-host"),
        ("far-2", "other-host"),
        ("far-3", "third-host"),
    ] {
        w.task(id)
            .pid(4242)
            .host(host)
            .started(now())
            .heartbeat(now())
            .insert();
    }
    let mut d = crate::cli::Running::start(&mut w.foreman(&["run"]));
    wait_for("four sweeps", || {
        assert!(d.still_running(), "{}", d.stderr());
        w.log()
            .query_row(
                "SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|n| n >= 4)
    });
    d.signal(libc::SIGTERM);
    let out = d.finish(PATIENCE);
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("RUNNING tasks of another host"))
        .collect();
    assert_eq!(said.len(), 2, "once per host: {said:#?}");
    assert!(
        said.iter()
            .any(|l| l.contains("other-host") && l.contains("running=2")),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|l| l.contains("third-host") && l.contains("running=1")),
        "{said:#?}"
    );
    assert_eq!(w.count("SELECT COUNT(*) FROM findings"), 0);
}
