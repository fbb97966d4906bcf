//! Strays with real processes: a matching process that no task owns is
//! reported once, after two consecutive sweeps; what tasks own (their
//! process, its descendants, its group) never is; `on_stray = "terminate"`
//! terminates it; a pid reused by another matching process is never
//! signalled for the one it replaced.

use crate::common::*;
use crate::processes::spawn_with_pid;
use foreman::model::{Action, Kind, Outcome, SweepKind};
use foreman::sweep::SweepReport;

const SCHEDULED: SweepKind = SweepKind::Scheduled;

/// A pattern no other test's process can match, and a droid type using it.
fn marker_world(on_stray: &str, exclusive: bool) -> (World, String) {
    let marker = format!(
        "foreman-stray-{}-{}",
        std::process::id(),
        MARKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let tail = format!(
        "[droid_types.worker]\nprogress = [\"heartbeat\"]\nprocess_match = \"{marker}\"\non_stray = \"{on_stray}\"\n"
    );
    let tail: &'static str = Box::leak(tail.into_boxed_str());
    let cfg = Cfg {
        tail,
        ..Cfg::default()
    };
    let w = if exclusive {
        World::exclusive(cfg)
    } else {
        World::with(cfg)
    };
    (w, marker)
}

static MARKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A shell whose command line holds `marker`, sleeping in a child.
fn matching(w: &mut World, marker: &str) -> i32 {
    let pid = w.spawn(&["sh", "-c", &format!("sleep 300; : {marker}")]);
    wait_for("its sleeping child", || tree(pid).len() == 2);
    pid
}

/// A sweep, after the executor recorded a heartbeat for every RUNNING task
/// (the tests' tasks stand for healthy work).
fn sweep(w: &World) -> SweepReport {
    w.exec(
        "UPDATE tasks SET last_progress_at = ?1 WHERE state = 'RUNNING'",
        [rfc(now())],
    );
    w.sweep(SCHEDULED)
}

fn strays(r: &SweepReport) -> Vec<&foreman::sweep::FindingReport> {
    r.findings
        .iter()
        .filter(|f| f.kind == Kind::Stray)
        .collect()
}

#[test]
fn a_matching_process_no_task_owns_is_reported_once_after_two_sweeps() {
    let (mut w, marker) = marker_world("report", false);
    let stray = matching(&mut w, &marker);
    // Owned by tasks: a RUNNING task's process, a PENDING task's process,
    // and a matching child of a RUNNING task's process.
    let running = matching(&mut w, &marker);
    w.task("running")
        .droid("worker")
        .pid(running.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let pending = matching(&mut w, &marker);
    w.task("pending")
        .droid("worker")
        .state("PENDING")
        .pid(pending.into())
        .insert();
    let parent = w.spawn(&["sh", "-c", &format!("sh -c 'sleep 300; : {marker}'; true")]);
    wait_for("the matching child", || tree(parent).len() == 3);
    w.task("parent")
        .droid("worker")
        .pid(parent.into())
        .started(now())
        .heartbeat(now())
        .insert();

    let first = sweep(&w);
    assert!(
        strays(&first).is_empty(),
        "seen once is not yet a stray: {:#?}",
        first.findings
    );
    let second = sweep(&w);
    let found = strays(&second);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = found[0];
    assert_eq!(f.pid, Some(stray));
    assert_eq!(f.droid_type.as_deref(), Some("worker"));
    assert_eq!((f.action, f.outcome), (Action::None, Outcome::Reported));
    assert!(
        f.evidence["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains(&marker)),
        "{f:#?}"
    );
    assert_eq!(f.evidence["start_ticks"], start_ticks(stray));
    assert!(f.evidence["age_ms"].as_i64().is_some());
    assert!(f.id.is_some());

    let third = sweep(&w);
    assert!(strays(&third).is_empty(), "recorded once, not every sweep");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE kind = 'stray'"),
        1
    );
    assert!(alive(stray, start_ticks(stray)), "report never signals");
    assert!(w.signals(f.id.unwrap()).is_empty());
}

#[test]
fn a_stray_with_terminate_is_gone_after_a_verified_sigterm() {
    let (mut w, marker) = marker_world("terminate", false);
    // Work here, so the snapshot is trusted.
    let busy = w.spawn(&["sleep", "300"]);
    w.task("busy")
        .pid(busy.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let stray = matching(&mut w, &marker);
    let child = tree(stray)[1].0;
    sweep(&w);
    let second = sweep(&w);
    let found = strays(&second);
    assert_eq!(found.len(), 1, "{:#?}", second.findings);
    let f = found[0];
    assert_eq!(
        (f.action, f.outcome),
        (Action::Terminate, Outcome::Terminated),
        "{f:#?}"
    );
    assert!(w.exited(stray).is_some(), "the stray is gone");
    assert!(
        proc_state(child).is_none_or(|s| s == 'Z'),
        "its child is gone too"
    );
    let sigs = w.signals(f.id.unwrap());
    assert!(
        sigs.iter().any(|s| s.signal == "SIGTERM" && s.pid == stray),
        "{sigs:#?}"
    );
}

#[test]
fn a_pid_reused_by_another_matching_process_is_never_signalled_for_the_old_one() {
    let (mut w, marker) = marker_world("terminate", true);
    let busy = w.spawn(&["sleep", "300"]);
    w.task("busy")
        .pid(busy.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let old = matching(&mut w, &marker);
    let old_ticks = start_ticks(old);
    let first = sweep(&w);
    assert!(strays(&first).is_empty());

    // The old stray ends; another matching process takes its pid (once its
    // child is gone too: a pid in use as a process group is not reused).
    let old_child = tree(old)[1].0;
    w.kill(old);
    wait_for("the old child is gone", || proc_state(old_child).is_none());
    let new = match spawn_with_pid(
        &mut w,
        old,
        &["sh", "-c", &format!("sleep 300; : {marker}")],
    ) {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&format!("stray pid reuse: {why}")),
    };
    wait_for("its sleeping child", || tree(new).len() == 2);
    let new_ticks = start_ticks(new);
    assert_ne!(new_ticks, old_ticks);

    // Same pid, another identity: first sight again, nothing signalled.
    let second = sweep(&w);
    assert!(strays(&second).is_empty(), "{:#?}", second.findings);
    assert!(alive(new, new_ticks), "the newcomer was not signalled");
    assert_eq!(w.count("SELECT COUNT(*) FROM finding_signals"), 0);
}

#[test]
fn processes_rows_name_are_never_strays_whatever_the_row() {
    let (mut w, marker) = marker_world("terminate", false);
    // A row of another host, a malformed row, a FAILED row: each names a
    // live matching process, which is therefore owned.
    let elsewhere = matching(&mut w, &marker);
    w.task("elsewhere")
        .droid("worker")
        .host("other-host")
        .pid(elsewhere.into())
        .started(now())
        .insert();
    let malformed = matching(&mut w, &marker);
    w.task("malformed")
        .droid("worker")
        .pid(malformed.into())
        .started_text("not a time")
        .insert();
    let finished = matching(&mut w, &marker);
    w.task("finished")
        .droid("worker")
        .state("FAILED")
        .pid(finished.into())
        .started(now())
        .insert();
    // A matching parent whose child is a RUNNING task's process: a pool
    // master, never a stray.
    let master = w.spawn(&[
        "sh",
        "-c",
        &format!("sleep 300 & echo $! ; wait; : {marker}"),
    ]);
    wait_for("the master's child", || tree(master).len() == 2);
    let pooled = tree(master)[1].0;
    w.task("pooled")
        .droid("worker")
        .pid(pooled.into())
        .started(now())
        .heartbeat(now())
        .insert();

    for _ in 0..3 {
        let r = sweep(&w);
        assert!(strays(&r).is_empty(), "{:#?}", strays(&r));
    }
    for pid in [elsewhere, malformed, finished, master, pooled] {
        assert!(alive(pid, start_ticks(pid)), "{pid} was signalled");
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM finding_signals"), 0);
}

#[test]
fn strays_are_not_terminated_when_the_snapshot_shows_no_work_here() {
    let (mut w, marker) = marker_world("terminate", false);
    let stray = matching(&mut w, &marker);
    sweep(&w);
    let r = sweep(&w);
    let found = strays(&r);
    assert_eq!(found.len(), 1, "{:#?}", r.findings);
    assert_eq!(
        (found[0].action, found[0].outcome),
        (Action::None, Outcome::Reported)
    );
    assert!(
        found[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("no RUNNING task on this host")),
        "{:#?}",
        found[0]
    );
    assert!(alive(stray, start_ticks(stray)));
}

#[test]
fn stray_terminations_count_against_the_brake() {
    let (mut w, marker) = marker_world("terminate", false);
    let mut cfg_text = std::fs::read_to_string(w.path("foreman.toml")).unwrap();
    cfg_text = cfg_text.replace("[defaults]\n", "[defaults]\nmax_actions_per_sweep = 1\n");
    std::fs::write(w.path("foreman.toml"), &cfg_text).unwrap();
    w.config = foreman::config::Config::parse(&cfg_text, &w.path("foreman.toml")).unwrap();
    // Work here, so the snapshot is trusted.
    let busy = w.spawn(&["sleep", "300"]);
    w.task("busy")
        .pid(busy.into())
        .started(now())
        .heartbeat(now())
        .insert();
    let a = matching(&mut w, &marker);
    let b = matching(&mut w, &marker);
    sweep(&w);
    let r = sweep(&w);
    let found = strays(&r);
    assert_eq!(found.len(), 2, "{:#?}", r.findings);
    for f in &found {
        assert_eq!(
            (f.action, f.outcome),
            (Action::Terminate, Outcome::Braked),
            "{f:#?}"
        );
    }
    assert!(alive(a, start_ticks(a)) && alive(b, start_ticks(b)));
    // Braked, not forgotten: decided again by the next sweep (and braked
    // again while there are still too many).
    let again = sweep(&w);
    assert_eq!(strays(&again).len(), 2);
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE kind = 'stray'"),
        2
    );
}

/// kill -9 between committing a stray's `terminate` and doing it: the next
/// sweep terminates it, once.
#[cfg(feature = "failpoints")]
#[test]
fn a_stray_terminate_interrupted_by_a_crash_is_done_by_the_next_sweep() {
    use crate::cli::{insert_task, now_text, run, wait_for, Running, World as Cli, HOST, PATIENCE};
    use std::os::unix::process::CommandExt;
    let _g = crate::spawning();
    let w = Cli::new();
    let marker = format!("foreman-stray-crash-{}", std::process::id());
    w.write(
        "foreman.toml",
        &format!(
            "host = \"{HOST}\"\nmax_cpu_pressure = 100.0\n[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\
             [activity]\npath = \"foreman.db\"\n[defaults]\nstartup_grace = \"0s\"\nkill_grace = \"2s\"\n\
             [droid_types.worker]\nprocess_match = \"{marker}\"\non_stray = \"terminate\"\n"
        ),
    );
    let spawn = |argv: &[&str]| {
        std::process::Command::new(argv[0])
            .args(&argv[1..])
            .process_group(0)
            .spawn()
            .expect("spawn")
    };
    // Healthy work here, so the snapshot is trusted.
    let mut busy = spawn(&["sleep", "300"]);
    insert_task(
        &w.executor(),
        "busy",
        "other",
        Some(busy.id() as i32),
        &now_text(),
        Some(&now_text()),
    );
    let mut stray = spawn(&["sh", "-c", &format!("sleep 300; : {marker}")]);
    let stray_pid = stray.id() as i32;
    wait_for("the stray's child", PATIENCE, || {
        (tree(stray_pid).len() == 2).then_some(())
    });

    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    let mut held = Running::start(
        w.foreman(&["sweep"])
            .env("FAILPOINTS", "sweep::before_act=sleep(60000)"),
    );
    wait_for("the stray committed as pending terminate", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM findings WHERE kind = 'stray' AND action = 'terminate' AND outcome = 'pending'")
            .filter(|n| *n == 1)
    });
    held.signal(libc::SIGKILL);
    held.finish(PATIENCE);
    assert!(
        stray.try_wait().expect("try_wait").is_none(),
        "not terminated before the crash"
    );

    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM findings WHERE kind = 'stray' AND outcome = 'terminated'"),
        Some(1),
        "{}",
        out.stderr
    );
    // The shell may exit on its own once its child is killed, just before
    // its own SIGTERM: either way it has ended.
    assert!(
        wait_timeout::ChildExt::wait_timeout(&mut stray, PATIENCE)
            .expect("wait")
            .is_some(),
        "the stray was terminated"
    );
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM findings WHERE kind = 'stray'"),
        Some(1)
    );
    let _ = busy.kill();
    let _ = busy.wait();
}

/// An event sweep between two full sweeps (a watched task died) neither
/// forgets a stray candidate nor breaks its "two consecutive sweeps": the
/// stray is reported at the second full sweep, as without the event.
#[test]
fn an_event_sweep_between_two_sweeps_keeps_the_stray_count() {
    let (mut w, marker) = marker_world("report", false);
    let stray = matching(&mut w, &marker);
    let owner = matching(&mut w, &marker);
    w.task("owner")
        .droid("worker")
        .pid(owner.into())
        .started(now())
        .heartbeat(now())
        .insert();
    assert!(strays(&sweep(&w)).is_empty(), "first sight");
    let event = {
        let executor = foreman::executor::open(&w.config).unwrap();
        let mut log = foreman::activity::ActivityLog::open(&w.config.activity.path).unwrap();
        let opts = foreman::sweep::SweepOptions {
            focus: Some(["owner".to_string()].into()),
            ..Default::default()
        };
        foreman::sweep::sweep(
            &w.config,
            executor.as_ref(),
            foreman::sweep::LogAccess::Write(&mut log),
            SweepKind::Event,
            &opts,
        )
        .unwrap()
    };
    assert!(
        strays(&event).is_empty(),
        "an event sweep looks for no strays"
    );
    assert_eq!(event.tasks_checked, 1);
    let second = sweep(&w);
    let found = strays(&second);
    assert_eq!(found.len(), 1, "{:#?}", second.findings);
    assert_eq!(found[0].pid, Some(stray));
}
