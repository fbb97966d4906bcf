//! `foreman twin` through the real binary, on real processes and a real
//! executor database: each section's rows, each Nagios exit code from a real
//! situation, no write anywhere, and beside a running daemon.

use crate::cli::{
    before_boot, insert_task, now_text, reaped_pid, run, wait_for, Out, Running, World, PATIENCE,
};
use rusqlite::Connection;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Processes a test started, killed (with their groups) when it ends.
struct Procs(Vec<Child>);

impl Procs {
    fn spawn(&mut self, argv: &[&str]) -> i32 {
        let c = Command::new(argv[0])
            .args(&argv[1..])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pid = c.id() as i32;
        self.0.push(c);
        pid
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: our unreaped child leads its own group.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// A world whose droid type `quiet` counts heartbeats only, with strays of
/// `marker` reported, and `extra` appended.
fn world(marker: &str) -> World {
    let w = World::new();
    w.config("");
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write(
        "foreman.toml",
        &format!(
            "{text}\n[defaults]\nstartup_grace = \"0s\"\ntimeout = \"3m\"\n\
             pid_start_tolerance = \"1h\"\n\
             [droid_types.quiet]\nprogress = [\"heartbeat\"]\nprocess_match = \"{marker}\"\n"
        ),
    );
    w.executor();
    w
}

fn twin(w: &World) -> (Out, Value) {
    let out = run(&mut w.foreman(&["twin", "--json"]));
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("twin --json is not JSON ({e}): {out:#?}"));
    (out, v)
}

/// The perfdata after the plain text's status line, as `label=value`
/// pairs, checked against the `--json` document `v` of the same world.
fn assert_perfdata_matches(w: &World, v: &Value) {
    let out = run(&mut w.foreman(&["twin"]));
    let first = out.stdout.lines().next().unwrap_or("");
    let (status, perf) = first
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no perfdata after ` | `: {first}"));
    assert!(status.starts_with("FOREMAN "), "{first}");
    let pairs: std::collections::BTreeMap<&str, u64> = perf
        .split(' ')
        .map(|p| {
            let (label, value) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("not label=value: {p:?} in {perf}"));
            assert!(
                !label.is_empty() && !label.contains(['\'', '=', ' ']),
                "{label:?}"
            );
            let n = value
                .parse()
                .unwrap_or_else(|e| panic!("{label}={value}: {e}"));
            (label, n)
        })
        .collect();
    let len = |k: &str| v[k].as_array().map_or(0, Vec::len) as u64;
    let count = |k: &str, f: &dyn Fn(&Value) -> bool| {
        v[k].as_array()
            .map_or(0, |a| a.iter().filter(|x| f(x)).count()) as u64
    };
    let expected = [
        ("running", len("executing")),
        ("dead", count("crashed", &|c| c["what"] == "task")),
        ("hung", count("executing", &|e| e["verdict"] == "hung")),
        (
            "timed_out",
            count("executing", &|e| e["verdict"] == "timed_out"),
        ),
        (
            "failures",
            v["failures"]["count"].as_u64().unwrap_or(u64::MAX),
        ),
        ("zombies", count("crashed", &|c| c["what"] == "zombie")),
        ("strays", count("crashed", &|c| c["what"] == "stray")),
        ("crashed", len("crashed")),
        ("plans", len("plans")),
    ];
    for (label, n) in expected {
        assert_eq!(pairs.get(label), Some(&n), "{label} in {perf}; {v:#}");
    }
}

/// A RUNNING task of `world`'s type `quiet` with this id, alive, beside one
/// of `Procs`'s sleeps, after a sweep (so no state is CRITICAL).
fn one_task(w: &World, p: &mut Procs, id: &str) {
    let pid = p.spawn(&["sleep", "300"]);
    insert_task(
        &w.executor(),
        id,
        "quiet",
        Some(pid),
        &now_text(),
        Some(&now_text()),
    );
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
}

fn dump(path: &std::path::Path) -> Vec<String> {
    let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("name"))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = db
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("select");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).map(|v| v.to_owned()).ok()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .expect("rows");
        for r in rows {
            out.push(format!("{t}: {}", r.expect("row")));
        }
    }
    out
}

#[test]
fn twin_json_keys_are_stable_and_a_healthy_fleet_is_ok() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    let pid = p.spawn(&["sleep", "300"]);
    insert_task(
        &w.executor(),
        "healthy",
        "quiet",
        Some(pid),
        &now_text(),
        Some(&now_text()),
    );
    assert_eq!(
        run(&mut w.foreman(&["sweep"])).code,
        Some(0),
        "the daemon's stand-in"
    );

    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(v["state"], "OK");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "state",
        "generated_at",
        "executing",
        "failures",
        "crashed",
        "daemon",
    ] {
        assert!(keys.contains(&k), "{k} missing: {keys:?}");
    }
    for k in ["window", "by_type", "recent"] {
        assert!(v["failures"].get(k).is_some(), "failures.{k} missing");
    }
    for k in ["last_sweep_at", "last_sweep_findings"] {
        assert!(v["daemon"].get(k).is_some(), "daemon.{k} missing");
    }
    let e = &v["executing"];
    assert_eq!(e.as_array().map(Vec::len), Some(1), "{v:#}");
    let e = &e[0];
    assert_eq!(
        (e["task_id"].as_str(), e["pid"].as_i64()),
        (Some("healthy"), Some(pid as i64))
    );
    assert_eq!(e["verdict"], "alive");
    assert_eq!(e["droid_type"], "quiet");
    assert!(e["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{e:#}");
    assert!(e["age_ms"].as_i64().is_some());
    assert!(e["progress_signal"].is_string(), "{e:#}");
    assert!(
        e["cpu_percent"].as_f64().is_some(),
        "the daemon's observation gives CPU %: {e:#}"
    );
    assert_eq!(v["executing_by_type"]["quiet"], 1);
    assert_eq!(v["crashed"], Value::Array(Vec::new()));
    assert_eq!(v["failures"]["count"], 0);
    assert_perfdata_matches(&w, &v);

    let out = run(&mut w.foreman(&["twin"]));
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.starts_with("FOREMAN OK - 1 running"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('\x1b'), "no colour off a terminal");
    for section in [
        "Executing droids (1: quiet 1)",
        "Failures in the last 1h (0)",
        "Crashed processes not cleaned up (0)",
    ] {
        assert!(out.stdout.contains(section), "{section}:\n{}", out.stdout);
    }
}

#[test]
fn a_hung_task_and_recent_failures_are_warning() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    // Shadow: the sweep records the hung finding and leaves the task alone.
    // A 30s timeout (interval 10s): a heartbeat a minute old is past it on
    // a host booted a minute ago (scripts/test's FOREMAN_TEST_BOOT_TIME),
    // where the world's 3m needed three minutes of uptime.
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write(
        "foreman.toml",
        &text
            .replacen("host =", "mode = \"shadow\"\ninterval = \"10s\"\nhost =", 1)
            .replacen(
                "[droid_types.quiet]\n",
                "[droid_types.quiet]\ntimeout = \"30s\"\n",
                1,
            ),
    );
    let pid = p.spawn(&["sleep", "300"]);
    let stale = crate::common::after_boot(600).to_rfc3339();
    insert_task(
        &w.executor(),
        "stuck",
        "quiet",
        Some(pid),
        &stale,
        Some(&stale),
    );
    w.executor()
        .execute(
            "INSERT INTO tasks (id, droid_type, state, attempt, finished_at, error) VALUES ('done-badly', 'quiet', 'FAILED', 1, ?1, 'exit 3')",
            [now_text()],
        )
        .expect("failed row");
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));

    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(v["state"], "WARNING");
    let stuck = v["executing"]
        .as_array()
        .expect("executing")
        .iter()
        .find(|e| e["task_id"] == "stuck")
        .expect("stuck");
    assert_eq!(stuck["verdict"], "hung", "{stuck:#}");
    let recent = v["failures"]["recent"].as_array().expect("recent");
    let got: Vec<(&str, &str)> = recent
        .iter()
        .map(|f| {
            (
                f["task_id"].as_str().unwrap_or(""),
                f["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got.len(), 2, "{recent:#?}");
    assert!(
        got.contains(&("done-badly", "failed")) && got.contains(&("stuck", "hung")),
        "{got:?}"
    );
    assert_eq!(v["failures"]["by_type"]["quiet"]["failed"], 1);
    assert_eq!(v["failures"]["by_type"]["quiet"]["hung"], 1);
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("hung") && reasons.contains("warn_failures"),
        "{reasons}"
    );
    assert!(v["crashed"].as_array().is_some_and(Vec::is_empty));
    assert_perfdata_matches(&w, &v);
}

#[test]
fn a_dead_task_not_marked_a_zombie_and_a_stray_are_critical_and_listed() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let marker = format!("foreman-twin-stray-{}", std::process::id());
    let w = world(&marker);
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    insert_task(
        &w.executor(),
        "gone",
        "quiet",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    // The task's process leaves a zombie child: `sleep` never reaps.
    let parent = p.spawn(&["sh", "-c", "true & exec sleep 300"]);
    insert_task(
        &w.executor(),
        "parent",
        "quiet",
        Some(parent),
        &now_text(),
        Some(&now_text()),
    );
    wait_for("the zombie child", PATIENCE, || {
        let kids =
            std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
        let child: i32 = kids.split_whitespace().next()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        (stat.rsplit(')').next()?.split_whitespace().next()? == "Z").then_some(child)
    });
    let stray = p.spawn(&["sh", "-c", &format!("sleep 300; : {marker}")]);

    let before = (dump(&w.executor_path()), dump(&w.activity_path()));
    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(v["state"], "CRITICAL");
    let crashed = v["crashed"].as_array().expect("crashed");
    let has =
        |what: &str, f: &dyn Fn(&Value) -> bool| crashed.iter().any(|c| c["what"] == what && f(c));
    assert!(
        has("task", &|c| c["task_id"] == "gone"
            && (c["kind"] == "orphan" || c["kind"] == "dead")),
        "{crashed:#?}"
    );
    assert!(has("zombie", &|c| c["task_id"] == "parent"), "{crashed:#?}");
    assert!(has("stray", &|c| c["pid"] == stray), "{crashed:#?}");
    assert_eq!(crashed.len(), 3, "{crashed:#?}");
    assert_perfdata_matches(&w, &v);
    // Read-only: no row of either database changed.
    assert_eq!((dump(&w.executor_path()), dump(&w.activity_path())), before);
    let out = run(&mut w.foreman(&["twin"]));
    assert!(
        out.stdout.contains("Crashed processes not cleaned up (3)"),
        "{}",
        out.stdout
    );
}

#[test]
fn no_sweep_an_unreachable_executor_and_a_bad_config_are_critical_and_unknown() {
    let _g = crate::spawning();
    let w = world("foreman-twin-none");
    w.executor();
    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(2), "no sweep ever: {out:#?}");
    assert!(
        v["reasons"].to_string().contains("no sweep recorded"),
        "{v:#}"
    );

    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write(
        "foreman.toml",
        &text.replace("path = \"executor.db\"", "path = \"missing/executor.db\""),
    );
    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert_eq!(v["state"], "UNKNOWN");

    w.write("foreman.toml", "intervall = \"2m\"\n");
    let out = run(&mut w.foreman(&["twin"]));
    assert_eq!(
        out.code,
        Some(3),
        "a config error keeps its Nagios meaning: {out:#?}"
    );
    assert!(
        out.stdout.starts_with("FOREMAN UNKNOWN - "),
        "{}",
        out.stdout
    );
}

#[test]
fn twin_works_while_the_daemon_sweeps() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write(
        "foreman.toml",
        &text
            .replacen("host =", "interval = \"1s\"\nhost =", 1)
            .replace("timeout = \"3m\"", "timeout = \"1h\""),
    );
    let pid = p.spawn(&["sleep", "300"]);
    insert_task(
        &w.executor(),
        "healthy",
        "quiet",
        Some(pid),
        &now_text(),
        Some(&now_text()),
    );
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    wait_for("two sweeps", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL")
            .filter(|n| *n >= 2)
    });
    for _ in 0..5 {
        let (out, v) = twin(&w);
        assert_eq!(out.code, Some(0), "{out:#?}");
        assert_eq!(v["executing"][0]["verdict"], "alive");
    }
    assert!(daemon.still_running());
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.finish(PATIENCE).code, Some(0));
}

/// The latest `foreman review` is in the snapshot; a failed one is WARNING
/// naming its failed checks, a passing one after it clears that.
#[test]
fn twin_shows_the_latest_review_and_a_failed_one_warns() {
    let w = world("foreman-twin-review-none");
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(v["daemon"]["last_review"], Value::Null, "no review yet");
    let log = Connection::open(w.activity_path()).expect("log");
    let record = |id: &str, at: &str, passed: i64, failed: &[&str]| {
        log.execute(
            "INSERT INTO review_runs (id, kind, host, started_at, finished_at, passed, failed, skipped)
             VALUES (?1, 'sandbox', 'h', ?2, ?2, ?3, ?4, 0)",
            rusqlite::params![id, at, passed, failed.len() as i64],
        )
        .expect("run");
        for name in failed {
            log.execute(
                "INSERT INTO review_checks (run_id, name, status, reason, duration_ms)
                 VALUES (?1, ?2, 'fail', 'broken', 1)",
                rusqlite::params![id, name],
            )
            .expect("check");
        }
    };
    let a_minute_ago = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    record("r1", &a_minute_ago, 0, &["pid-reuse-detected"]);
    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(1), "WARNING: {out:#?}");
    assert_eq!(v["daemon"]["last_review"]["passed"], false);
    assert_eq!(
        v["daemon"]["last_review"]["failed"],
        serde_json::json!(["pid-reuse-detected"])
    );
    assert!(
        v["reasons"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("pid-reuse-detected")))),
        "{v:#}"
    );
    let text = run(&mut w.foreman(&["twin"]));
    assert!(text.stdout.contains("last review"), "{}", text.stdout);
    record("r2", &now_text(), 1, &[]);
    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(0), "a passing review after it: {out:#?}");
    assert_eq!(v["daemon"]["last_review"]["run_id"], "r2");
}

#[test]
fn twin_shows_the_monitors_plans_with_their_health() {
    let _g = crate::spawning();
    let w = world("no-such-marker-plans");
    let db = w.executor();
    db.execute_batch(
        "INSERT INTO tasks (id, plan_id, droid_type, state, attempt) VALUES
            ('a', 'diamond', 'builder', 'SUCCESS', 1),
            ('b', 'diamond', 'builder', 'FAILED', 1),
            ('c', 'diamond', 'builder', 'PENDING', 1),
            ('x', 'done', 'builder', 'SUCCESS', 1);",
    )
    .expect("tasks");
    let (_, v) = twin(&w);
    assert_eq!(v["plans"], Value::Array(vec![]), "no sweep yet: no views");
    // The first sweep is the silent baseline: views, but no event.
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    let (_, v) = twin(&w);
    let plans = v["plans"].as_array().expect("plans[]");
    assert_eq!(plans.len(), 2, "{plans:#?}");
    let diamond = &plans[0];
    assert_eq!(diamond["plan_id"], "diamond");
    assert_eq!(diamond["health_score"], 0.5, "1 success / (1 + 1 failed)");
    assert_eq!(diamond["counts"]["pending"], 1);
    assert_eq!(diamond["is_complete"], false);
    assert_eq!(plans[1]["plan_id"], "done");
    assert_eq!(plans[1]["is_complete"], true);
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM events"), Some(0));
    let text = run(&mut w.foreman(&["twin"])).stdout;
    assert!(text.contains("Plans (2, 1 complete)"), "{text}");
    assert!(text.contains("diamond"), "{text}");
}

/// Off a terminal every row is whole, however long: a task id of 150
/// columns is printed in full, where it used to be cut at 120; `--wide`
/// says the same anywhere.
#[test]
fn piped_and_wide_twin_print_full_rows() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    let id = format!("long-{}", "x".repeat(145));
    one_task(&w, &mut p, &id);
    for args in [&["twin"][..], &["twin", "--wide"]] {
        let out = run(&mut w.foreman(args));
        assert_eq!(out.code, Some(0), "{args:?}: {out:#?}");
        let row = out
            .stdout
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("{args:?}: no whole row with the id:\n{}", out.stdout));
        assert!(row.chars().count() > 120, "{args:?}: {row}");
        assert!(row.trim_end().ends_with("alive"), "{args:?}: cut: {row}");
        assert!(!out.stdout.contains('…'), "{args:?}: {}", out.stdout);
    }
}

/// `--watch 1` (bare seconds) is accepted; into a pipe each frame is plain
/// text, no escape, the next after a blank line. Zero is still refused.
#[test]
fn watch_takes_bare_seconds_and_writes_plain_frames_into_a_pipe() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    one_task(&w, &mut p, "watched");
    let watch = Running::start(&mut w.foreman(&["twin", "--watch", "1"]));
    let both = wait_for("two frames", PATIENCE, || {
        let out = watch.stdout();
        (out.matches("Crashed processes not cleaned up").count() >= 2).then_some(out)
    });
    drop(watch);
    assert!(!both.contains('\x1b'), "an escape in a pipe: {both:?}");
    assert!(both.starts_with("FOREMAN OK - "), "{both}");
    assert!(
        both.contains("\n\nFOREMAN OK - "),
        "the second frame after a blank line:\n{both}"
    );
    assert!(both.contains("watched"), "{both}");

    for bad in ["0", "-1", "soon"] {
        let out = run(&mut w.foreman(&["twin", &format!("--watch={bad}")]));
        assert_eq!(out.code, Some(3), "--watch {bad}: {out:#?}");
        assert!(
            out.stdout.starts_with("FOREMAN UNKNOWN - --watch"),
            "{}",
            out.stdout
        );
    }
}

/// `--json --watch 0.5`: one compact JSON document a line, each whole, no
/// escape between them.
#[test]
fn json_watch_prints_one_document_per_line() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    one_task(&w, &mut p, "watched");
    let watch = Running::start(&mut w.foreman(&["twin", "--json", "--watch", "0.5"]));
    let lines = wait_for("two JSON lines", PATIENCE, || {
        let out = watch.stdout();
        // Only lines a newline ended: the last may still be coming.
        let done = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<String> = done.lines().map(String::from).collect();
        (lines.len() >= 2).then_some(lines)
    });
    drop(watch);
    for line in &lines {
        assert!(!line.contains('\x1b'), "{line:?}");
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {line}"));
        assert_eq!(v["state"], "OK", "{v:#}");
        assert_eq!(v["executing"][0]["task_id"], "watched", "{v:#}");
    }
    assert_ne!(lines[0], lines[1], "two snapshots, each generated anew");
}

/// `cmd`'s stdout on a pseudo-terminal `columns` wide, its colour escapes
/// removed, and its exit code.
fn on_a_terminal(mut cmd: Command, columns: u16) -> (String, Option<i32>) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use wait_timeout::ChildExt;
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 50,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two descriptors, which we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are open and nothing else owns them.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(slave)
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn on a terminal");
    // The command holds the terminal's other end: while it is open, reading
    // the master never ends.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // EIO once the child's end is closed: the end of its output.
        let _ = master.read_to_end(&mut bytes);
        bytes
    });
    let status = child
        .wait_timeout(PATIENCE)
        .expect("wait")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("twin did not exit on a terminal")
        });
    let text = String::from_utf8(reader.join().expect("reader")).expect("UTF-8");
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            // A colour: ESC [ … m.
            '\x1b' => {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            }
            // The terminal turns each newline into CR LF.
            '\r' => {}
            c => plain.push(c),
        }
    }
    (plain, status.code())
}

/// On an 80-column terminal every line fits exactly, wide CJK characters
/// counted as two columns, so none wraps; `--wide` prints the whole row.
#[test]
fn on_a_terminal_rows_fit_its_width_and_wide_prints_them_whole() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    let id = format!("构建任务-{}", "数据库迁移".repeat(12));
    one_task(&w, &mut p, &id);
    let (out, code) = on_a_terminal(w.foreman(&["twin"]), 80);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("FOREMAN OK - "), "{out}");
    for line in out.lines() {
        assert!(
            unicode_width::UnicodeWidthStr::width(line) <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    assert!(
        out.lines().any(|l| l.contains("构建任务")
            && l.ends_with('…')
            && unicode_width::UnicodeWidthStr::width(l) >= 79),
        "the task's row cut at the edge:\n{out}"
    );
    let (out, code) = on_a_terminal(w.foreman(&["twin", "--wide"]), 80);
    assert_eq!(code, Some(0), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no whole row:\n{out}"));
    assert!(row.ends_with("alive"), "{row}");
}

/// After an hour of churn twin lists the latest failures, not every one:
/// the counts by type and kind still cover all, and `--all-failures` lists
/// them all.
#[test]
fn twin_lists_the_latest_failures_and_all_of_them_on_request() {
    let _g = crate::spawning();
    let w = world("twin-churn");
    let db = w.executor();
    for i in 0..25 {
        db.execute(
            "INSERT INTO tasks (id, droid_type, state, attempt, finished_at, error) VALUES (?1, 'quiet', 'FAILED', 1, ?2, 'exit 3')",
            rusqlite::params![format!("churn-{i:02}"), now_text()],
        )
        .expect("a failed row");
    }
    let (_, v) = twin(&w);
    let f = &v["failures"];
    assert_eq!(f["count"], 25, "{f:#}");
    assert_eq!(f["by_type"]["quiet"]["failed"], 25, "{f:#}");
    assert_eq!(f["recent"].as_array().map(Vec::len), Some(20), "{f:#}");
    assert_eq!(f["complete"], false);
    let text = run(&mut w.foreman(&["twin"])).stdout;
    assert!(
        text.contains("(the latest 20 of 25; --all-failures lists every one)"),
        "{text}"
    );

    let out = run(&mut w.foreman(&["twin", "--json", "--all-failures"]));
    let all: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(all["failures"]["recent"].as_array().map(Vec::len), Some(25));
    assert_eq!(all["failures"]["complete"], true);
}

/// A busy loop past its type's `max_runtime` progresses, so it is not hung,
/// but twin shows it `timed_out` and warns, as it does for a hung task.
#[test]
fn a_task_past_max_runtime_shows_timed_out_and_warns() {
    let _g = crate::spawning();
    let mut p = Procs(Vec::new());
    let w = world("foreman-twin-none");
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write(
        "foreman.toml",
        // Shadow: the sweep records the finding and leaves the task alone.
        &format!(
            "{}\n[droid_types.runaway]\nprogress = [\"cpu\"]\nmax_runtime = \"2s\"\n",
            text.replacen("host =", "mode = \"shadow\"\nhost =", 1)
        ),
    );
    let pid = p.spawn(&["sh", "-c", "while :; do :; done"]);
    let started = crate::common::after_boot(10).to_rfc3339();
    insert_task(
        &w.executor(),
        "runaway",
        "runaway",
        Some(pid),
        &started,
        Some(&now_text()),
    );
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));

    let (out, v) = twin(&w);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(v["state"], "WARNING", "{v:#}");
    let runaway = v["executing"]
        .as_array()
        .expect("executing")
        .iter()
        .find(|e| e["task_id"] == "runaway")
        .expect("runaway");
    assert_eq!(runaway["verdict"], "timed_out", "{runaway:#}");
    let reasons = v["reasons"].to_string();
    assert!(reasons.contains("past max_runtime"), "{reasons}");
    assert_perfdata_matches(&w, &v);
    // Shadow and a read-only twin: nothing stopped it.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
}
