//! Foreman as a systemd service, through the real binary: the notify
//! protocol over a real `NOTIFY_SOCKET` (a unix datagram socket this test
//! binds, read by a thread that stamps each message's arrival) — READY
//! after the startup scan, STATUS after each sweep, WATCHDOG pings at half
//! `WATCHDOG_USEC` from the idle loop that stop while a sweep is held at a
//! failpoint, `WATCHDOG_PID` honoured, STOPPING on SIGTERM; SIGHUP with a
//! valid file (the new policy from the next sweep, RELOADING/READY around
//! it) and with broken ones (the old policy stays, the error is logged with
//! file:line:column and sent as STATUS); the log formats (journal, chosen by
//! `--log-format` or by `JOURNAL_STREAM` naming stderr; json; text); shell
//! completions and the man page.

use crate::cli::{
    bare_foreman, before_boot, insert_task, reaped_pid, run, wait_for, wait_until, Running, World,
    BIN, PATIENCE,
};
use regex::Regex;
use serde_json::Value;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// One datagram the daemon sent, and when the reader thread received it.
#[derive(Debug, Clone)]
struct Msg {
    at: Instant,
    text: String,
}

impl Msg {
    /// Whether one of its `KEY=VALUE` lines is exactly `line`.
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of its `KEY=` line, if it has one.
    fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    fn is_ping(&self) -> bool {
        self.has("WATCHDOG=1")
    }
}

/// A real `NOTIFY_SOCKET`: a unix datagram socket bound in the world's
/// directory, drained by a thread into a list of messages.
struct Notify {
    path: PathBuf,
    msgs: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Notify {
    fn bind(w: &World) -> Notify {
        let path = w.path("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let msgs = msgs.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match sock.recv(&mut buf) {
                        Ok(n) => {
                            let at = Instant::now();
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            msgs.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Msg { at, text });
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => panic!("reading the notify socket: {e}"),
                    }
                }
            })
        };
        Notify {
            path,
            msgs,
            stop,
            reader: Some(reader),
        }
    }

    fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn len(&self) -> usize {
        self.msgs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The first message at index `from` or later that `pred` accepts, with
    /// its index; fails the test after `PATIENCE`.
    fn await_msg(&self, what: &str, from: usize, pred: impl Fn(&Msg) -> bool) -> (usize, Msg) {
        wait_for(&format!("{what} on the notify socket"), PATIENCE, || {
            self.all()
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| pred(m))
        })
    }

    /// Everything received, for failure messages.
    fn dump(&self) -> String {
        let all = self.all();
        let t0 = all.first().map(|m| m.at);
        all.iter()
            .map(|m| {
                let dt = t0
                    .map(|t| m.at.duration_since(t).as_secs_f64())
                    .unwrap_or(0.0);
                format!("{dt:8.3}s {:?}", m.text)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `foreman ARGS` with `NOTIFY_SOCKET` and `env`; nothing else of systemd's
/// inherited from whatever runs the tests.
fn under_systemd(w: &World, n: &Notify, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = w.foreman(args);
    hermetic(&mut cmd);
    cmd.env("NOTIFY_SOCKET", &n.path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running::start(&mut cmd)
}

fn hermetic(cmd: &mut Command) {
    for k in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
        "INVOCATION_ID",
    ] {
        cmd.env_remove(k);
    }
}

fn count(w: &World, sql: &str) -> i64 {
    w.log_i64(sql).unwrap_or(-1)
}

/// One text column of the activity log, row by row.
fn column(w: &World, sql: &str) -> Vec<String> {
    let Some(db) = w.activity() else {
        return Vec::new();
    };
    let mut stmt = db.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

fn finished_sweeps(w: &World) -> i64 {
    count(
        w,
        "SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL",
    )
}

/// The latest recorded outcome of any finding of `task`.
fn outcome_of(w: &World, task: &str) -> Option<String> {
    w.activity()?
        .query_row(
            "SELECT outcome FROM findings WHERE task_id = ?1 ORDER BY last_sweep_id DESC, id DESC LIMIT 1",
            [task],
            |r| r.get(0),
        )
        .ok()
}

/// The sweeps' modes in order, as `shadow`/`enforce` runs: never back to
/// shadow once enforcing.
fn assert_modes_switch_once(w: &World, want_last: &str) {
    let modes = column(w, "SELECT mode FROM sweeps ORDER BY id");
    let first_enforce = modes.iter().position(|m| m == "enforce");
    if let Some(i) = first_enforce {
        assert!(
            modes[i..].iter().all(|m| m == "enforce"),
            "a shadow sweep after an enforcing one: {modes:?}"
        );
    }
    assert_eq!(
        modes.last().map(String::as_str),
        Some(want_last),
        "{modes:?}"
    );
}

/// `CLOCK_MONOTONIC` in microseconds, as sd_notify's `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A world in shadow mode with one RUNNING task whose process is gone
/// (reaped) and which started before this boot: enforcing, the first sweep
/// would mark it FAILED; in shadow, it is only recorded.
fn shadow_world() -> World {
    let w = World::new();
    w.config(SHADOW);
    insert_task(
        &w.executor(),
        "dead-1",
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    w
}

const SHADOW: &str = "interval = \"500ms\"\nmode = \"shadow\"";
const ENFORCE: &str = "interval = \"500ms\"\nmode = \"enforce\"";

/// Await the startup READY, then findings of `dead-1` recorded as
/// `would_mark_failed` by at least three shadow sweeps, the task untouched.
fn await_shadow_findings(w: &World, n: &Notify) -> usize {
    let (ready, m) = n.await_msg("READY=1 after the startup scan", 0, |m| m.has("READY=1"));
    assert_eq!(
        m.get("STATUS"),
        Some("startup scan done; sweeping every 500ms"),
        "{}",
        n.dump()
    );
    wait_until(
        "three shadow sweeps recorded dead-1 as would_mark_failed",
        PATIENCE,
        || {
            count(
                w,
                "SELECT MAX(times_seen) FROM findings WHERE task_id = 'dead-1' AND outcome = 'would_mark_failed'",
            ) >= 3
        },
    );
    assert_eq!(w.task_state("dead-1").0, "RUNNING", "shadow mode acted");
    assert_modes_switch_once(w, "shadow");
    ready
}

/// SIGHUP, then RELOADING=1 (with MONOTONIC_USEC taken during the reload)
/// and after it READY=1; the READY message.
fn sighup(daemon: &Running, n: &Notify) -> Msg {
    let from = n.len();
    let before = monotonic_usec();
    daemon.signal(libc::SIGHUP);
    let (i, reloading) = n.await_msg("RELOADING=1 after SIGHUP", from, |m| m.has("RELOADING=1"));
    let after = monotonic_usec();
    let usec: u64 = reloading
        .get("MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {:?}", reloading.text))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} is not between {before} and {after} (CLOCK_MONOTONIC around the reload)"
    );
    let (_, ready) = n.await_msg("READY=1 ending the reload", i + 1, |m| m.has("READY=1"));
    // Nothing else from the reload between the two.
    let between: Vec<Msg> = n.all()[i + 1..]
        .iter()
        .take_while(|m| !m.has("READY=1"))
        .filter(|m| m.has("RELOADING=1"))
        .cloned()
        .collect();
    assert!(
        between.is_empty(),
        "two RELOADING=1 for one SIGHUP: {}",
        n.dump()
    );
    ready
}

/// SIGTERM: STOPPING=1, and a clean exit.
fn stop(mut daemon: Running, n: &Notify) {
    let from = n.len();
    daemon.signal(libc::SIGTERM);
    n.await_msg("STOPPING=1 after SIGTERM", from, |m| m.has("STOPPING=1"));
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
}

// ------------------------------------------------------ the notify protocol

/// READY after the startup scan (its STATUS first, no scheduled sweep
/// before it); a STATUS naming each sweep; WATCHDOG=1 every
/// `WATCHDOG_USEC`/2 from the idle loop (the interval is longer than the
/// watchdog timeout, so only the loop's own pings can keep the cadence);
/// no ping at all while a sweep is held at `sweep::before_act`; STOPPING=1
/// on SIGTERM, which waits for that sweep, and a second SIGTERM ends it.
#[cfg(feature = "failpoints")]
#[test]
fn notify_sequence_ready_status_watchdog_that_stops_with_a_held_sweep_and_stopping() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("interval = \"2s\"");
    drop(w.executor());
    let n = Notify::bind(&w);
    // The startup sweep and two scheduled ones pass; the third scheduled
    // sweep (the fourth evaluation) is held for a minute inside its job.
    const PASSING: i64 = 3;
    let mut daemon = under_systemd(
        &w,
        &n,
        &["run"],
        &[
            ("WATCHDOG_USEC", "1000000"),
            ("FAILPOINTS", "sweep::before_act=3*off->sleep(60000)"),
        ],
    );

    // READY=1 once the startup scan is done, after its STATUS and before
    // any scheduled sweep.
    let (ready_i, ready) = n.await_msg("READY=1", 0, |m| m.has("READY=1"));
    assert_eq!(
        ready.get("STATUS"),
        Some("startup scan done; sweeping every 2s"),
        "{}",
        n.dump()
    );
    let before: Vec<Msg> = n.all()[..ready_i].to_vec();
    let startup_status = before
        .iter()
        .filter_map(|m| m.get("STATUS"))
        .collect::<Vec<_>>();
    assert_eq!(
        startup_status.len(),
        1,
        "one STATUS before READY, the startup sweep's: {}",
        n.dump()
    );
    assert!(
        startup_status[0].starts_with("startup sweep #1 at ")
            && startup_status[0].contains(": 0 tasks seen"),
        "{:?}",
        startup_status[0]
    );
    assert!(
        !before
            .iter()
            .any(|m| m.has("READY=1") || m.has("STOPPING=1")),
        "{}",
        n.dump()
    );
    assert_eq!(
        column(&w, "SELECT kind FROM sweeps ORDER BY id LIMIT 1"),
        vec!["startup".to_string()]
    );

    // The held sweep: PASSING finished, one recorded and unfinished.
    wait_until(
        "the passing sweeps finished and the next held at sweep::before_act",
        PATIENCE,
        || {
            finished_sweeps(&w) == PASSING
                && count(&w, "SELECT COUNT(*) FROM sweeps WHERE finished_at IS NULL") == 1
        },
    );
    let held_at = Instant::now();

    // A STATUS for each scheduled sweep that finished, naming it; the held
    // one has none. (The last STATUS was sent before the held sweep began;
    // its datagram may still be on its way to the reader.)
    let scheduled = |all: &[Msg]| -> Vec<String> {
        all.iter()
            .filter_map(|m| m.get("STATUS"))
            .filter_map(|s| s.strip_prefix("scheduled sweep #"))
            .map(|s| s.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    wait_until(
        "a STATUS for each finished scheduled sweep",
        PATIENCE,
        || scheduled(&n.all()).len() == (PASSING - 1) as usize,
    );
    let ids = column(
        &w,
        "SELECT CAST(id AS TEXT) FROM sweeps WHERE kind = 'scheduled' AND finished_at IS NOT NULL ORDER BY id",
    );
    assert_eq!(scheduled(&n.all()), ids, "{}", n.dump());
    for m in n.all().iter().filter_map(|m| m.get("STATUS")) {
        assert!(
            m.starts_with("startup") || (m.contains(" at ") && m.contains("tasks seen")),
            "{m:?}"
        );
    }

    // Pings while sweeping: from READY until the held sweep began, never
    // more than the watchdog timeout apart (1s; 1.5s for a loaded machine),
    // and between two scheduled sweeps (2s apart) more than the one each
    // finished job sends: the idle loop pings on its own.
    let all = n.all();
    let pings: Vec<Instant> = all[ready_i..]
        .iter()
        .filter(|m| m.is_ping() && m.at <= held_at)
        .map(|m| m.at)
        .collect();
    assert!(pings.len() >= 6, "too few pings: {}", n.dump());
    let mut gaps = Vec::new();
    let mut last = ready.at;
    for p in &pings {
        gaps.push(p.duration_since(last));
        last = *p;
    }
    eprintln!("watchdog gaps while sweeping: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1500)),
        "a gap of a watchdog timeout or more between pings: {gaps:?}\n{}",
        n.dump()
    );
    let status_at: Vec<Instant> = all
        .iter()
        .filter(|m| {
            m.get("STATUS")
                .is_some_and(|s| s.starts_with("scheduled sweep #"))
        })
        .map(|m| m.at)
        .collect();
    let idle = pings
        .iter()
        .filter(|p| **p > status_at[0] && **p < status_at[1])
        .count();
    assert!(
        idle >= 2,
        "only {idle} pings between two scheduled sweeps 2s apart: {}",
        n.dump()
    );

    // While the sweep is held: silence.
    std::thread::sleep(Duration::from_millis(2500));
    let all = n.all();
    let late: Vec<(Duration, &str)> = all
        .iter()
        .filter(|m| m.at > held_at + Duration::from_millis(400))
        .map(|m| (m.at.duration_since(held_at), m.text.as_str()))
        .collect();
    assert!(
        late.is_empty(),
        "messages while the sweep was held (time since it was seen held, text): {late:?}\n{}",
        n.dump()
    );
    let last_ping = all.iter().rev().find(|m| m.is_ping()).expect("a ping").at;
    assert!(
        last_ping.elapsed() >= Duration::from_secs(2),
        "the last ping was {:?} ago",
        last_ping.elapsed()
    );
    assert_eq!(finished_sweeps(&w), PASSING, "the held sweep finished");
    assert!(daemon.still_running(), "{}", daemon.stderr());

    // SIGTERM: STOPPING=1 at once, though the daemon waits for the held
    // sweep; a second SIGTERM ends it without waiting.
    let from = n.len();
    daemon.signal(libc::SIGTERM);
    n.await_msg("STOPPING=1 after SIGTERM", from, |m| m.has("STOPPING=1"));
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
        "one SIGTERM must wait for the sweep in flight"
    );
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(130), "{out:#?}");
    let all = n.all();
    assert_eq!(
        all.iter().filter(|m| m.has("STOPPING=1")).count(),
        1,
        "{}",
        n.dump()
    );
    assert!(
        !all[from..].iter().any(|m| m.is_ping() || m.has("READY=1")),
        "{}",
        n.dump()
    );
}

/// `WATCHDOG_PID` naming another process turns the watchdog off
/// (sd_watchdog_enabled(3)): READY and STATUS still come, no WATCHDOG=1.
/// Naming the daemon's own pid (known here because `sh` execs it) turns it
/// on.
#[test]
fn the_watchdog_is_on_only_when_watchdog_pid_is_the_daemon() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("interval = \"500ms\"");
    drop(w.executor());

    // Someone else's watchdog: pid 1.
    let n = Notify::bind(&w);
    let daemon = under_systemd(
        &w,
        &n,
        &["run"],
        &[("WATCHDOG_USEC", "400000"), ("WATCHDOG_PID", "1")],
    );
    let (ready, _) = n.await_msg("READY=1", 0, |m| m.has("READY=1"));
    n.await_msg("a third scheduled sweep's STATUS", ready, |m| {
        m.get("STATUS")
            .is_some_and(|s| s.starts_with("scheduled sweep #4 "))
    });
    assert!(
        !n.all().iter().any(Msg::is_ping),
        "pinged for another pid's watchdog: {}",
        n.dump()
    );
    stop(daemon, &n);
    drop(n);
    std::fs::remove_file(w.path("notify.sock")).expect("remove the socket");

    // Ours: WATCHDOG_PID=$$ in the shell that execs the daemon.
    let n = Notify::bind(&w);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .current_dir(w.path(""))
        .env_remove("FOREMAN_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("FAILPOINTS")
        .env("NO_COLOR", "1");
    hermetic(&mut cmd);
    cmd.env("NOTIFY_SOCKET", &n.path)
        .env("WATCHDOG_USEC", "400000");
    let daemon = Running::start(&mut cmd);
    let (ready, _) = n.await_msg("READY=1", 0, |m| m.has("READY=1"));
    wait_until("three pings after READY", PATIENCE, || {
        n.all()[ready..].iter().filter(|m| m.is_ping()).count() >= 3
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).starts_with(BIN),
        "the pid WATCHDOG_PID named is not the daemon's"
    );
    stop(daemon, &n);
}

// ---------------------------------------------------------------- SIGHUP

/// A valid foreman.toml on SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then
/// READY=1 with "configuration reloaded", logged; shadow mode switched off
/// applies from the next sweep: the dead task that shadow sweeps only
/// recorded is marked FAILED by an enforcing one.
#[test]
fn sighup_with_a_valid_file_applies_the_new_policy_from_the_next_sweep() {
    let _g = crate::spawning();
    let w = shadow_world();
    let n = Notify::bind(&w);
    let daemon = under_systemd(&w, &n, &["run"], &[]);
    await_shadow_findings(&w, &n);

    w.config(ENFORCE);
    let ready = sighup(&daemon, &n);
    assert_eq!(
        ready.get("STATUS"),
        Some("configuration reloaded"),
        "{}",
        n.dump()
    );
    wait_until("the reload is logged", PATIENCE, || {
        daemon
            .stderr()
            .lines()
            .any(|l| l.contains("INFO") && l.contains("SIGHUP: configuration reloaded"))
    });

    wait_until("an enforcing sweep marked dead-1 FAILED", PATIENCE, || {
        w.task_state("dead-1").0 == "FAILED"
    });
    assert_eq!(outcome_of(&w, "dead-1").as_deref(), Some("marked_failed"));
    assert_modes_switch_once(&w, "enforce");
    // The sweep that marked it was an enforcing one.
    assert_eq!(
        column(
            &w,
            "SELECT s.mode FROM findings f JOIN sweeps s ON s.id = f.last_sweep_id WHERE f.task_id = 'dead-1' AND f.outcome = 'marked_failed'"
        ),
        vec!["enforce".to_string()]
    );
    stop(daemon, &n);
}

/// Broken files on SIGHUP, a syntax error and then an invalid value: each
/// time RELOADING=1, then READY=1 with "reload failed, previous
/// configuration in force: <file:line:column …>", and an ERROR (`<3>` in
/// the journal format) naming file, line and column; sweeps go on in
/// shadow mode, the dead task untouched. A valid file after them is still
/// reloaded.
#[test]
fn sighup_with_a_broken_file_keeps_the_old_policy_and_logs_the_error() {
    let _g = crate::spawning();
    let w = shadow_world();
    let n = Notify::bind(&w);
    let daemon = under_systemd(&w, &n, &["run", "--log-format", "journal"], &[]);
    await_shadow_findings(&w, &n);

    let path = w.config_path();
    let broken = [
        (
            "interval = \"500ms\"\nmode = enforce",
            "key `mode`: string values must be quoted",
        ),
        (
            "interval = \"500ms\"\nmode = \"enforcing\"",
            "key `mode`: unknown variant `enforcing`",
        ),
    ];
    for (i, (top, error)) in broken.iter().enumerate() {
        w.config(top);
        // World::config: `host`, `max_cpu_pressure`, then `top`: line 4.
        let at = format!("{}:4:8: {error}", path.display());
        let ready = sighup(&daemon, &n);
        let status = ready.get("STATUS").unwrap_or("");
        assert!(
            status.starts_with("reload failed, previous configuration in force: ")
                && status.contains(&at),
            "STATUS does not say {at:?}: {status:?}"
        );
        wait_until(&format!("ERROR #{} naming {at}", i + 1), PATIENCE, || {
            daemon
                .stderr()
                .lines()
                .filter(|l| {
                    l.starts_with("<3>foreman::daemon: SIGHUP: the configuration was not reloaded")
                        && l.contains(&at)
                })
                .count()
                == 1
        });
    }

    // The old policy stays: more sweeps, still shadow, the task untouched.
    let swept = finished_sweeps(&w);
    wait_until("three more sweeps", PATIENCE, || {
        finished_sweeps(&w) >= swept + 3
    });
    assert_eq!(w.task_state("dead-1").0, "RUNNING");
    assert_eq!(
        outcome_of(&w, "dead-1").as_deref(),
        Some("would_mark_failed")
    );
    assert_modes_switch_once(&w, "shadow");
    assert!(daemon
        .stderr()
        .lines()
        .all(|l| !l.contains("SIGHUP: configuration reloaded")));

    // A good file after the broken ones is taken.
    w.config(ENFORCE);
    let ready = sighup(&daemon, &n);
    assert_eq!(
        ready.get("STATUS"),
        Some("configuration reloaded"),
        "{}",
        n.dump()
    );
    wait_until("an enforcing sweep marked dead-1 FAILED", PATIENCE, || {
        w.task_state("dead-1").0 == "FAILED"
    });
    assert_modes_switch_once(&w, "enforce");
    wait_until("the reload is logged at <6>", PATIENCE, || {
        daemon
            .stderr()
            .lines()
            .any(|l| l.starts_with("<6>foreman::daemon: SIGHUP: configuration reloaded"))
    });

    // Every line in the journal format: a priority, the target, no
    // timestamp, no colour.
    let stderr = daemon.stderr();
    assert_journal(&stderr);
    for want in [
        "<4>foreman::sweep: finding ",
        "<6>foreman::sweep: sweep finished ",
        "<6>foreman::daemon: ready",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(want)),
            "no line starting {want:?}:\n{stderr}"
        );
    }
    stop(daemon, &n);
}

// ---------------------------------------------------------------- logging

/// Every line `<N>target: message…`: a syslog priority, no timestamp, no
/// ANSI escapes.
fn assert_journal(stderr: &str) {
    let line = Regex::new(r"^<[3467]>[a-z_]+(::[a-z_]+)*: \S").unwrap();
    assert!(!stderr.is_empty());
    assert!(
        !stderr.contains('\x1b'),
        "colour in the journal format:\n{stderr}"
    );
    for l in stderr.lines() {
        assert!(line.is_match(l), "not a journal line: {l:?}\n{stderr}");
    }
}

/// A world with a RUNNING task `task` whose process is gone, started
/// before this boot: one sweep finds it (WARN) and marks it.
fn dead_task(w: &World, task: &str) {
    insert_task(
        &w.executor(),
        task,
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
}

#[test]
fn log_format_journal_prints_priorities_without_timestamps_or_colour() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    dead_task(&w, "dead-j");
    let mut cmd = w.foreman(&["--log-format", "journal", "sweep"]);
    hermetic(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_journal(&out.stderr);
    let finding = out
        .stderr
        .lines()
        .find(|l| l.starts_with("<4>foreman::sweep: finding "))
        .unwrap_or_else(|| panic!("no WARN finding line:\n{}", out.stderr));
    assert!(finding.contains("task_id=dead-j"), "{finding}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("<6>foreman::sweep: sweep finished ")
                && l.contains("kind=\"manual\"")),
        "{}",
        out.stderr
    );
    assert_eq!(w.task_state("dead-j").0, "FAILED");
}

#[test]
fn log_format_json_prints_one_object_per_line() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    dead_task(&w, "dead-json");
    let mut cmd = w.foreman(&["sweep", "--log-format", "json"]);
    hermetic(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(!out.stderr.contains('\x1b'), "{}", out.stderr);
    let events: Vec<Value> = out
        .stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{}", out.stderr))
        })
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert!(e["level"].is_string(), "{e}");
        assert!(e["fields"]["message"].is_string(), "{e}");
        assert!(e["target"].is_string(), "{e}");
        assert!(e["timestamp"].is_string(), "{e}");
    }
    let finding = events
        .iter()
        .find(|e| e["fields"]["message"] == "finding")
        .unwrap_or_else(|| panic!("no finding event:\n{}", out.stderr));
    assert_eq!(finding["level"], "WARN", "{finding}");
    assert_eq!(finding["target"], "foreman::sweep", "{finding}");
    assert_eq!(finding["fields"]["task_id"], "dead-json", "{finding}");
    assert_eq!(finding["fields"]["outcome"], "pending", "{finding}");
    let done = events
        .iter()
        .find(|e| e["fields"]["message"] == "sweep finished")
        .unwrap_or_else(|| panic!("no sweep finished event:\n{}", out.stderr));
    assert_eq!(done["level"], "INFO", "{done}");
    assert_eq!(done["fields"]["kind"], "manual", "{done}");
    assert_eq!(done["fields"]["findings"], 1, "{done}");
    assert_eq!(w.task_state("dead-json").0, "FAILED");
}

/// `foreman sweep` with stderr on a pipe the test made, `JOURNAL_STREAM`
/// set to `value(pipe's dev, pipe's ino)` and no `--log-format`; stderr.
fn sweep_with_journal_stream(w: &World, value: impl Fn(u64, u64) -> String) -> String {
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let meta = std::fs::File::from(OwnedFd::from(writer.try_clone().expect("dup")))
        .metadata()
        .expect("fstat the pipe");
    let mut cmd = w.foreman(&["sweep"]);
    hermetic(&mut cmd);
    cmd.env("JOURNAL_STREAM", value(meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(writer));
    let mut child = cmd.spawn().expect("spawn foreman");
    // Our copies of the write end go with the command: EOF when it exits.
    drop(cmd);
    let mut stderr = String::new();
    reader.read_to_string(&mut stderr).expect("read stderr");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{stderr}");
    stderr
}

/// Without `--log-format`: journal lines when `JOURNAL_STREAM` names the
/// device and inode of stderr (as systemd sets it), text lines with
/// timestamps when it names anything else (a child whose stderr went
/// elsewhere).
#[test]
fn journal_stream_naming_stderr_chooses_the_journal_format() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");

    dead_task(&w, "dead-stream");
    let stderr = sweep_with_journal_stream(&w, |dev, ino| format!("{dev}:{ino}"));
    assert_journal(&stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<4>foreman::sweep: finding ")
                && l.contains("task_id=dead-stream")),
        "{stderr}"
    );

    dead_task(&w, "dead-other");
    let stderr = sweep_with_journal_stream(&w, |dev, ino| format!("{dev}:{}", ino + 1));
    let timestamped = Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").unwrap();
    assert!(
        stderr
            .lines()
            .all(|l| timestamped.is_match(l) && !l.starts_with('<')),
        "not the text format:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("finding") && l.contains("dead-other")),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr}");
}

// ------------------------------------------------- completions, man page

#[test]
fn completions_for_bash_zsh_and_fish() {
    let _g = crate::spawning();
    for (shell, markers) in [
        ("bash", &["_foreman()", "complete -F _foreman"][..]),
        ("zsh", &["#compdef foreman", "_foreman"][..]),
        ("fish", &["complete -c foreman"][..]),
    ] {
        let out = run(bare_foreman().args(["completions", shell]));
        assert_eq!(out.code, Some(0), "{shell}: {out:#?}");
        for m in markers {
            assert!(
                out.stdout.contains(m),
                "{shell}: no {m:?} in\n{}",
                out.stdout
            );
        }
        for sub in [
            "run",
            "sweep",
            "scan-orphans",
            "check-config",
            "completions",
            "man",
        ] {
            assert!(out.stdout.contains(sub), "{shell}: no subcommand {sub}");
        }
        assert!(
            out.stdout.contains("log-format"),
            "{shell}: no --log-format"
        );
        assert!(out.stderr.is_empty(), "{shell}: {}", out.stderr);
    }
    let out = run(bare_foreman().args(["completions", "tcsh"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn man_prints_a_roff_page_naming_the_subcommands() {
    let _g = crate::spawning();
    let out = run(bare_foreman().arg("man"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let page = &out.stdout;
    assert!(
        page.lines().any(|l| l.starts_with(".TH foreman 1")),
        "no .TH foreman 1:\n{page}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section}");
    }
    // roff escapes hyphens: `scan\-orphans`.
    for sub in [
        "run",
        "sweep",
        "scan\\-orphans",
        "check\\-config",
        "completions",
        "man",
        "review",
    ] {
        assert!(
            page.contains(&format!("foreman\\-{sub}")),
            "the page does not name {sub}"
        );
    }
    assert!(page.contains("\\-\\-log\\-format"), "no --log-format");
}

/// Text from elsewhere with newlines in it (an executor command's stderr)
/// cannot forge journal lines with priorities of their own, and the start
/// of a failed run is logged at err.
#[test]
fn a_multi_line_error_stays_one_journal_line() {
    let _g = crate::spawning();
    let w = World::new();
    w.write(
        "foreman.toml",
        "host = \"test-host\"\nmax_cpu_pressure = 100.0\n[executor]\nkind = \"command\"\n\
         snapshot_command = [\"sh\", \"-c\", \"printf 'boom\\\\n<0>forged emergency\\\\n' >&2; exit 1\"]\n\
         mark_failed_command = [\"false\"]\n[activity]\npath = \"foreman.db\"\n[http]\nlisten = \"\"\n",
    );
    let out = run(&mut w.foreman(&["--log-format", "journal", "sweep"]));
    assert!(out.stderr.contains("forged emergency"), "{out:#?}");
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("<0>")),
        "a forged priority:\n{}",
        out.stderr
    );
    assert_journal(&out.stderr);
    // A command that fails to start says so at err, in the journal format.
    let out = run(bare_foreman().args([
        "--log-format",
        "journal",
        "--config",
        "/nonexistent/foreman.toml",
        "check-config",
    ]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.starts_with("<3>foreman: "), "{out:#?}");
}

/// Under systemd with the journal's socket there, `--log-format journal`
/// (and JOURNAL_STREAM) speak the journal's native protocol: every field
/// its own journal field, so `journalctl TASK_ID=… FOREMAN_FINDING_ID=…`
/// finds one task's or one finding's entries. The socket is a real unix
/// datagram socket at the journal's fixed path, in a private mount
/// namespace (a tmpfs on /run), read by a listener in that namespace.
#[test]
fn log_format_journal_uses_native_fields_when_the_journal_socket_answers() {
    let _g = crate::spawning();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        crate::common::skip_or_fail("mounting a private /run needs root");
        return;
    }
    if Command::new("python3").arg("-V").output().is_err() {
        crate::common::skip_or_fail("python3 (the listener) is missing");
        return;
    }
    let w = World::new();
    w.config("");
    dead_task(&w, "dead-native");
    let out = w.path("journal.bin");
    let script = w.path("journal.sh");
    std::fs::write(
        &script,
        r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/run/systemd/journal/socket")
open(sys.argv[1] + ".ready", "w").close()
with open(sys.argv[1], "ab") as f:
    while True:
        d = s.recv(1 << 20)
        f.write(struct.pack(">I", len(d)) + d)
        f.flush()
' "$OUT" &
listener=$!
while [ ! -e "$OUT.ready" ]; do sleep 0.02; done
"$FOREMAN" --config "$CONFIG" --log-format journal sweep
code=$?
kill $listener
exit $code
"#,
    )
    .expect("script");
    let mut cmd = Command::new("unshare");
    hermetic(&mut cmd);
    let result = cmd
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(&script)
        .env("OUT", &out)
        .env("FOREMAN", BIN)
        .env("CONFIG", w.path("foreman.toml"))
        .env_remove("RUST_LOG")
        .env_remove("FAILPOINTS")
        .current_dir(w.path("."))
        .output()
        .expect("unshare");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("<4>")),
        "the journal socket answered, yet lines went to stderr:\n{stderr}"
    );
    let bytes = std::fs::read(&out).expect("the listener's record");
    let entries = journal_entries(&bytes);
    let finding = entries
        .iter()
        .find(|e| e.get("MESSAGE").map(String::as_str) == Some("finding"))
        .unwrap_or_else(|| panic!("no finding entry in {entries:#?}"));
    assert_eq!(finding["TASK_ID"], "dead-native", "{finding:#?}");
    assert_eq!(finding["PRIORITY"], "4", "{finding:#?}");
    assert_eq!(finding["SYSLOG_IDENTIFIER"], "foreman", "{finding:#?}");
    let id = &finding["FOREMAN_FINDING_ID"];
    assert!(id.parse::<i64>().is_ok_and(|n| n > 0), "{finding:#?}");
    // The action's own entry carries the same finding id.
    assert!(
        entries.iter().any(
            |e| e.get("MESSAGE").map(String::as_str) == Some("action done")
                && e.get("FOREMAN_FINDING_ID") == Some(id)
                && e.get("OUTCOME").map(String::as_str) == Some("marked_failed")
        ),
        "{entries:#?}"
    );
    assert_eq!(w.task_state("dead-native").0, "FAILED");
}

/// The journal's native datagrams as the listener framed them (a 4-byte
/// length before each): `KEY=value\n`, or `KEY\n` + 64-bit little-endian
/// length + bytes + `\n` for values with newlines.
fn journal_entries(mut bytes: &[u8]) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let n = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let mut d = &bytes[4..4 + n];
        bytes = &bytes[4 + n..];
        let mut entry = std::collections::BTreeMap::new();
        while !d.is_empty() {
            let line_end = d.iter().position(|b| *b == b'\n').unwrap_or(d.len());
            let line = &d[..line_end];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                entry.insert(
                    String::from_utf8_lossy(&line[..eq]).into_owned(),
                    String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
                );
                d = &d[(line_end + 1).min(d.len())..];
            } else {
                let key = String::from_utf8_lossy(line).into_owned();
                let rest = &d[line_end + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
                entry.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
                d = &rest[(8 + len + 1).min(rest.len())..];
            }
        }
        if !entry.is_empty() {
            out.push(entry);
        }
    }
    out
}
