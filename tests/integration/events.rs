//! Issue 16, liveness by event, with the real daemon and real processes:
//! a death is recorded by an `event` sweep without waiting for the
//! interval (an hour here), acted on when its exit grace ends, through the
//! same brake when a whole fleet dies at once; a held task with a fresh
//! heartbeat is not read from `/proc` and still goes hung once it stops;
//! pidfds are let go when tasks finish; without pidfds Foreman says so
//! once and finds deaths at the next sweep.

use crate::cli::Running;
use crate::common::*;
use std::time::Duration;

/// A world whose daemon sweeps once an hour: only an event can see a
/// death within the test.
fn hourly(defaults: &str) -> World {
    let mut w = World::with(Cfg {
        defaults,
        ..Cfg::default()
    });
    w.edit_config(|t| {
        t.replace("interval = \"500ms\"", "interval = \"1h\"")
            .replace("timeout = \"1s\"", "timeout = \"2h\"")
    });
    w
}

/// A RUNNING task of a fresh sleeping process, beating now.
fn sleeper(w: &mut World, id: &str) -> i32 {
    let pid = w.spawn(&["sleep", "300"]);
    wait_sleeping(pid, "sleep");
    w.task(id)
        .pid(pid.into())
        .started(process_started_at(pid))
        .heartbeat(now())
        .insert();
    pid
}

/// Start the daemon and wait for its startup scan (which binds every
/// identity and holds its pidfd) to finish.
fn daemon(w: &World) -> Running {
    let mut d = Running::start(&mut w.foreman(&["run"]));
    wait_for("the startup scan", || {
        assert!(d.still_running(), "{}", d.stderr());
        startup_done(w)
    });
    d
}

/// The startup scan has finished (the log may not exist before it).
fn startup_done(w: &World) -> bool {
    w.log()
        .query_row(
            "SELECT COUNT(*) FROM sweeps WHERE kind = 'startup' AND finished_at IS NOT NULL",
            [],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n > 0)
}

fn stop(mut d: Running) -> String {
    d.signal(libc::SIGTERM);
    let out = d.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out.stderr
}

/// The kind of the sweep that first saw, and the one that last touched,
/// the task's finding of `kind`.
fn finding_sweeps(w: &World, task: &str, kind: &str) -> Option<(String, String, String)> {
    w.log()
        .query_row(
            "SELECT a.kind, b.kind, f.outcome FROM findings f
             JOIN sweeps a ON a.id = f.first_sweep_id JOIN sweeps b ON b.id = f.last_sweep_id
             WHERE f.task_id = ?1 AND f.kind = ?2",
            [task, kind],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
}

/// The pidfds a process holds, from its fd links.
fn pidfds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[pidfd]")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_death_is_recorded_at_once_and_acted_on_when_its_exit_grace_ends() {
    let mut w = hourly("");
    let doomed = sleeper(&mut w, "doomed");
    let other = sleeper(&mut w, "other");
    let d = daemon(&w);
    wait_for("a pidfd per task", || pidfds(d.pid()) == 2);

    w.kill(doomed);
    // No scheduled sweep comes within the hour: an event sweep saw it.
    wait_for("the dead finding", || {
        finding_sweeps(&w, "doomed", "dead").is_some()
    });
    let (first, _, _) = finding_sweeps(&w, "doomed", "dead").unwrap();
    assert_eq!(first, "event");
    // Exit grace (1s) ends, the task is looked at again and marked.
    wait_for("the mark", || w.task_state("doomed") == "FAILED");
    let (_, last, outcome) = finding_sweeps(&w, "doomed", "dead").unwrap();
    assert_eq!(
        (last.as_str(), outcome.as_str()),
        ("event", "marked_failed")
    );
    assert_eq!(w.task_state("other"), "RUNNING");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE task_id = 'other'"),
        0,
        "the task beside it was neither judged dead nor touched"
    );
    assert_eq!(pidfds(d.pid()), 1, "the dead task's pidfd was closed");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled'"),
        0,
        "the interval never came"
    );
    let _ = other;
    stop(d);
}

/// A host-wide kill: every death is seen at once, and the marks go through
/// the same brake as a sweep's (here at most 10 actions for 20 tasks).
#[test]
fn a_fleet_killed_at_once_is_braked_not_marked() {
    let mut w = hourly("");
    let pids: Vec<i32> = (0..20).map(|i| sleeper(&mut w, &format!("t{i}"))).collect();
    let d = daemon(&w);
    wait_for("a pidfd per task", || pidfds(d.pid()) == 20);
    for p in pids {
        w.kill(p);
    }
    wait_for("twenty dead findings", || {
        w.count("SELECT COUNT(*) FROM findings WHERE kind = 'dead'") == 20
    });
    wait_for("the brake", || {
        w.count("SELECT COUNT(*) FROM findings WHERE kind = 'dead' AND outcome = 'braked'") == 20
    });
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE outcome = 'marked_failed'"),
        0
    );
    for i in 0..20 {
        assert_eq!(w.task_state(&format!("t{i}")), "RUNNING", "t{i} kept");
    }
    stop(d);
}

/// A heartbeat-only task held by pidfd whose heartbeat keeps beating is
/// not read from `/proc`: its observation is not written again, where the
/// full path rewrites it whenever the heartbeat moves. When the heartbeat
/// stops, it is read again and goes hung past its timeout.
#[test]
fn a_fresh_held_task_is_not_read_and_still_goes_hung_when_it_stops() {
    // interval 500ms, timeout 2s: the window is the interval.
    let mut w = World::with(Cfg {
        tail: "[droid_types.beating]\nprogress = [\"heartbeat\"]\ntimeout = \"2s\"\n",
        top: "mode = \"shadow\"",
        ..Cfg::default()
    });
    let pid = w.spawn(&["sleep", "300"]);
    wait_sleeping(pid, "sleep");
    w.task("beating")
        .droid("beating")
        .pid(pid.into())
        .started(process_started_at(pid))
        .heartbeat(now())
        .insert();
    let beat = |w: &World| {
        w.exec(
            "UPDATE tasks SET last_progress_at = ?1 WHERE id = 'beating'",
            [rfc(now())],
        )
    };
    let d = daemon(&w);
    let seen = |w: &World| -> String {
        w.log()
            .query_row(
                "SELECT seen_at FROM observations WHERE task_id = 'beating'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let scheduled = |w: &World| w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled'");
    wait_for("the pidfd", || pidfds(d.pid()) == 1);
    // Let the first scheduled sweeps settle the observation, then watch
    // five more while beating every 100ms.
    let start = scheduled(&w);
    wait_for("two scheduled sweeps", || {
        beat(&w);
        std::thread::sleep(Duration::from_millis(100));
        scheduled(&w) >= start + 2
    });
    let before = seen(&w);
    let start = scheduled(&w);
    wait_for("five scheduled sweeps while beating", || {
        beat(&w);
        std::thread::sleep(Duration::from_millis(100));
        scheduled(&w) >= start + 5
    });
    assert_eq!(
        seen(&w),
        before,
        "read and rewritten although held and fresh"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE task_id = 'beating'"),
        0
    );
    // It stops beating: read again, then hung past the 2s timeout.
    wait_for("the hung finding", || {
        w.count("SELECT COUNT(*) FROM findings WHERE task_id = 'beating' AND kind = 'hung'") == 1
    });
    assert_ne!(seen(&w), before, "read again once the heartbeat went stale");
    stop(d);
}

/// Pidfds follow the RUNNING set: a task that finishes (its process still
/// alive) or moves to another attempt lets its pidfd go at the next sweep,
/// and a new attempt is held anew.
#[test]
fn pidfds_are_let_go_when_tasks_finish_or_move_on() {
    let mut w = World::new();
    w.edit_config(|t| t.replace("timeout = \"1s\"", "timeout = \"1h\""));
    let a = sleeper(&mut w, "a");
    let _b = sleeper(&mut w, "b");
    let _c = sleeper(&mut w, "c");
    let d = daemon(&w);
    wait_for("three pidfds", || pidfds(d.pid()) == 3);
    w.exec(
        "UPDATE tasks SET state = 'SUCCEEDED', finished_at = ?1 WHERE id = 'b'",
        [rfc(now())],
    );
    wait_for("two pidfds", || pidfds(d.pid()) == 2);
    let next = w.spawn(&["sleep", "300"]);
    wait_sleeping(next, "sleep");
    w.exec(
        "UPDATE tasks SET attempt = 2, pid = ?1, started_at = ?2, last_progress_at = ?3 WHERE id = 'c'",
        rusqlite::params![next, rfc(process_started_at(next)), rfc(now())],
    );
    wait_for("c's second attempt held", || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid())).is_ok() && pidfds(d.pid()) == 2 && {
            w.count("SELECT COUNT(*) FROM observations WHERE task_id = 'c' AND attempt = 2") == 1
        }
    });
    assert!(alive(a, start_ticks(a)));
    stop(d);
}

/// Without pidfds (an old kernel, a seccomp filter; here a failpoint)
/// Foreman says so once and goes on as before: deaths are found by the
/// next scheduled sweep.
#[cfg(feature = "failpoints")]
#[test]
fn without_pidfds_foreman_says_so_once_and_sweeps_as_before() {
    let mut w = World::new();
    let pid = sleeper(&mut w, "doomed");
    let mut cmd = w.foreman(&["run"]);
    cmd.env("FAILPOINTS", "watch::no_pidfd=return");
    let mut d = Running::start(&mut cmd);
    wait_for("the startup scan", || {
        assert!(d.still_running(), "{}", d.stderr());
        startup_done(&w)
    });
    assert_eq!(pidfds(d.pid()), 0);
    w.kill(pid);
    wait_for("the dead finding", || {
        finding_sweeps(&w, "doomed", "dead").is_some()
    });
    let (first, _, _) = finding_sweeps(&w, "doomed", "dead").unwrap();
    assert_eq!(first, "scheduled");
    let err = stop(d);
    assert_eq!(
        err.matches("pidfds are not available").count(),
        1,
        "said once: {err}"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'event'"),
        0
    );
}

/// Pidfds never take the files Foreman needs for its own work: under an
/// open-file limit it cannot raise (300) and with more tasks than that, it
/// holds at most the limit less the reserve (256), says so once, and goes
/// on sweeping (one pidfd per task would leave SQLite no descriptor); a
/// task it could not hold is read from `/proc` and its death found by the
/// next sweep.
#[test]
fn under_a_low_open_file_limit_pidfds_leave_room_and_sweeps_go_on() {
    use std::os::unix::process::CommandExt;
    const TASKS: usize = 320;
    let mut w = World::new();
    w.edit_config(|t| t.replace("timeout = \"1s\"", "timeout = \"1h\""));
    let pids: Vec<i32> = (0..TASKS).map(|_| w.spawn(&["sleep", "300"])).collect();
    for (i, p) in pids.iter().enumerate() {
        w.task(&format!("t{i}"))
            .pid((*p).into())
            .started(process_started_at(*p))
            .heartbeat(now())
            .insert();
    }
    let mut cmd = w.foreman(&["run"]);
    // SAFETY: setrlimit is async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 300,
                rlim_max: 300,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            Ok(())
        });
    }
    let mut d = Running::start(&mut cmd);
    wait_for("the startup scan", || {
        assert!(d.still_running(), "{}", d.stderr());
        startup_done(&w)
    });
    let limit = 300 - foreman::watch::RESERVE as usize;
    wait_for("the pidfds up to the limit", || pidfds(d.pid()) == limit);
    let held_before = pidfds(d.pid());
    // Kill every task: those held by an event, the rest by the next sweep.
    for p in &pids {
        w.kill(*p);
    }
    wait_for("every task's dead finding", || {
        w.count("SELECT COUNT(*) FROM findings WHERE kind = 'dead'") == TASKS as i64
    });
    assert!(
        w.count("SELECT COUNT(*) FROM findings f JOIN sweeps s ON s.id = f.first_sweep_id WHERE s.kind = 'scheduled'") > 0,
        "the tasks not held were found by a scheduled sweep"
    );
    assert_eq!(held_before, limit);
    let scheduled =
        w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled' AND error IS NULL");
    wait_for("more scheduled sweeps", || {
        w.count("SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled' AND error IS NULL")
            >= scheduled + 2
    });
    let err = stop(d);
    assert_eq!(
        err.matches("could not hold a pidfd").count(),
        1,
        "said once: {err}"
    );
    assert!(!err.contains("Too many open files"), "{err}");
}
