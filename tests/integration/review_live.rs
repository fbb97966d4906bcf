//! `foreman review --live` through the real binary, against scratch
//! deployments: a healthy one passes every check (with a real webhook
//! receiver that gets no request, a real droid process, a real sweep); each
//! broken part fails its own check with evidence; `--only`; and the checks
//! write nothing anywhere (both databases dumped before and after).

use crate::cli::{insert_task, now_text, run, Out, Sleeper, World, HOST};
use crate::receiver::Receiver;
use foreman::activity::ActivityLog;
use foreman::review::live::CHECKS;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// `foreman.toml` of a deployment: the scratch executor and activity log,
/// `interval`, and `sinks` (TOML appended after the tables).
fn deploy(w: &World, interval: &str, sinks: &str) {
    w.write(
        "foreman.toml",
        &format!(
            "host = \"{HOST}\"\ninterval = \"{interval}\"\nmax_cpu_pressure = 100.0\n\n\
             [executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\n\
             [activity]\npath = \"foreman.db\"\n\n{sinks}"
        ),
    );
}

/// One sink of each kind: a webhook at `url`, `cat` as a command, and a
/// file sink into `initiatives/` (created).
fn sinks(w: &World, url: &str) -> String {
    std::fs::create_dir(w.path("initiatives")).expect("initiatives dir");
    format!(
        "[[alerts]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout = \"2s\"\n\n\
         [[alerts]]\nname = \"pager\"\nkind = \"command\"\nargv = [\"cat\"]\n\n\
         [[wellbeing.sinks]]\nname = \"notes\"\nkind = \"file\"\npath = \"initiatives\"\n"
    )
}

/// A healthy deployment: every sink reachable, the executor with one
/// RUNNING task on a live process, and a sweep just run (the daemon's
/// stand-in).
fn healthy(w: &World, receiver: &Receiver, droid: &Sleeper) {
    let sinks = sinks(w, &receiver.url());
    deploy(w, "1m", &sinks);
    insert_task(
        &w.executor(),
        "t-running",
        "worker",
        Some(droid.pid()),
        &now_text(),
        Some(&now_text()),
    );
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "the daemon's stand-in sweep: {out:#?}");
}

/// `foreman review --live --json ARGS`.
fn live(w: &World, args: &[&str]) -> (Out, Value) {
    let mut all = vec!["review", "--live", "--json"];
    all.extend_from_slice(args);
    let out = run(&mut w.foreman(&all));
    let v = out.json();
    (out, v)
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v:#}"))
}

fn status<'a>(v: &'a Value, name: &str) -> &'a str {
    check(v, name)["status"].as_str().expect("status")
}

fn reason<'a>(v: &'a Value, name: &str) -> &'a str {
    check(v, name)["reason"].as_str().expect("reason")
}

/// Every row of every table, for "nothing changed" checks.
fn dump(path: &Path) -> Vec<String> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("name"))
        .collect();
    let mut out = vec![format!(
        "user_version {}",
        db.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .expect("user_version")
    )];
    for t in tables {
        let mut stmt = db
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
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

/// The names in a directory, SQLite's transient `-shm`/`-wal` files aside.
fn files(dir: &Path) -> BTreeSet<String> {
    walk(dir, dir)
}

fn walk(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        let name = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        if name.ends_with("-shm") || name.ends_with("-wal") {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(root, &p));
        }
        out.insert(name);
    }
    out
}

#[test]
fn a_healthy_deployment_passes_every_live_check_and_no_sink_hears_of_it() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let droid = Sleeper::start();
    let w = World::new();
    healthy(&w, &receiver, &droid);

    let (out, v) = live(&w, &[]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(v["kind"], "live");
    assert_eq!(v["passed"], true);
    assert!(v["run_id"].as_str().is_some_and(|r| !r.is_empty()));
    let names: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, CHECKS, "every live check, in order");
    for c in v["checks"].as_array().expect("checks") {
        assert_eq!(c["status"], "pass", "{c:#}");
        assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{c:#}");
        assert!(c["duration_ms"].is_u64(), "{c:#}");
        assert!(c.get("evidence").is_none(), "evidence on a pass: {c:#}");
    }
    assert!(
        reason(&v, "executor-reachable").contains("1 RUNNING"),
        "{v:#}"
    );
    assert!(reason(&v, "daemon-sweeping").contains("manual"), "{v:#}");
    let sinks = reason(&v, "sinks-reachable");
    for s in ["\"ops\"", "\"pager\"", "\"notes\"", "no request sent"] {
        assert!(sinks.contains(s), "{s} not in {sinks:?}");
    }
    assert!(
        reason(&v, "permissions").contains("1 RUNNING droid process"),
        "{v:#}"
    );

    // A TCP connect only: the receiver saw no request, the file sink got
    // no file, and the droid was not signalled.
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
    assert_eq!(
        std::fs::read_dir(w.path("initiatives"))
            .expect("dir")
            .count(),
        0
    );
    assert_eq!(w.task_state("t-running").0, "RUNNING");

    // The text form says the same.
    let text = run(&mut w.foreman(&["review", "--live"]));
    assert_eq!(text.code, Some(0), "{text:#?}");
    for name in CHECKS {
        assert!(text.stdout.contains(&format!("PASS  {name}")), "{text:#?}");
    }
}

#[test]
fn a_missing_executor_database_fails_executor_reachable_and_is_not_created() {
    let w = World::new();
    deploy(&w, "1m", "");
    let (out, v) = live(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(v["passed"], false);
    assert_eq!(status(&v, "executor-reachable"), "fail", "{v:#}");
    let e = &check(&v, "executor-reachable")["evidence"];
    assert!(e["expected"].is_string(), "{e:#}");
    assert!(
        e["snapshot_error"]
            .as_str()
            .is_some_and(|s| s.contains("executor.db")),
        "the error names the file: {e:#}"
    );
    assert_eq!(status(&v, "config-coherent"), "fail", "{v:#}");
    assert!(
        reason(&v, "config-coherent").contains("does not exist"),
        "{v:#}"
    );
    // Without a snapshot there are no pids to try.
    assert_eq!(status(&v, "permissions"), "skip", "{v:#}");
    assert!(
        !w.executor_path().exists(),
        "the review must never create the executor's database"
    );
}

#[test]
fn a_malformed_row_or_a_missing_column_fails_executor_reachable_with_evidence() {
    let w = World::new();
    deploy(&w, "1m", "");
    w.executor()
        .execute(
            "INSERT INTO tasks (id, droid_type, state) VALUES ('t-weird', 'worker', 'WEIRD')",
            [],
        )
        .expect("insert");
    let (out, v) = live(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let c = check(&v, "executor-reachable");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert_eq!(c["evidence"]["malformed_rows"], 1, "{c:#}");
    assert_eq!(c["evidence"]["malformed"][0]["id"], "t-weird", "{c:#}");
    assert!(
        c["evidence"]["malformed"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("WEIRD")),
        "{c:#}"
    );

    // An executor whose tasks table lacks a column the default query reads.
    let w = World::new();
    deploy(&w, "1m", "");
    Connection::open(w.executor_path())
        .expect("open")
        .execute_batch(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, plan_id TEXT, droid_type TEXT, state TEXT,
             pid INTEGER, host TEXT, attempt INTEGER, started_at TEXT, finished_at TEXT, error TEXT)",
        )
        .expect("schema");
    let (out, v) = live(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let c = check(&v, "executor-reachable");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert_eq!(
        c["evidence"]["columns_missing"],
        serde_json::json!(["last_progress_at"]),
        "{c:#}"
    );
}

#[test]
fn without_a_recent_sweep_daemon_sweeping_fails_with_the_age() {
    let receiver = Receiver::start(0);
    let w = World::new();
    let sinks = sinks(&w, &receiver.url());
    deploy(&w, "1m", &sinks);
    w.executor();
    // A migrated activity log that has never recorded a sweep.
    drop(ActivityLog::open(&w.activity_path()).expect("migrate"));
    let (out, v) = live(&w, &["--sandbox-only"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(status(&v, "activity-log"), "pass", "{v:#}");
    assert_eq!(status(&v, "daemon-sweeping"), "fail", "{v:#}");
    assert!(
        reason(&v, "daemon-sweeping").contains("no finished sweep"),
        "{v:#}"
    );
    assert_eq!(
        check(&v, "daemon-sweeping")["evidence"]["found"],
        "no sweep"
    );
    // Everything else is healthy.
    for name in CHECKS.iter().filter(|n| **n != "daemon-sweeping") {
        assert_eq!(status(&v, name), "pass", "{name}: {v:#}");
    }

    // A sweep an hour old.
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Connection::open(w.activity_path())
        .expect("open")
        .execute(
            "UPDATE sweeps SET started_at = ?1, finished_at = ?1",
            [&hour_ago],
        )
        .expect("age the sweep");
    let (out, v) = live(&w, &["--sandbox-only"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let c = check(&v, "daemon-sweeping");
    assert_eq!(c["status"], "fail", "{c:#}");
    let age = c["evidence"]["found"]["age_ms"].as_u64().expect("age_ms");
    assert!((3_600_000..3_700_000).contains(&age), "{c:#}");
    assert_eq!(c["evidence"]["limit_ms"], 120_000, "{c:#}");

    // A sweep recorded an hour ahead: the wall clock stepped back.
    let hour_ahead = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Connection::open(w.activity_path())
        .expect("open")
        .execute(
            "UPDATE sweeps SET started_at = ?1, finished_at = ?1",
            [&hour_ahead],
        )
        .expect("date the sweep ahead");
    let (out, v) = live(&w, &["--sandbox-only"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(status(&v, "clock-sane"), "fail", "{v:#}");
    assert!(reason(&v, "clock-sane").contains("in the future"), "{v:#}");
    assert!(check(&v, "clock-sane")["evidence"]["last_sweep"].is_object());
}

#[test]
fn a_webhook_to_a_closed_port_fails_sinks_reachable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let w = World::new();
    deploy(
        &w,
        "1m",
        &format!(
            "[[alerts]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{closed}/alerts\"\ntimeout = \"1s\"\n\n\
             [[alerts]]\nname = \"pager\"\nkind = \"command\"\nargv = [\"/nonexistent/page\"]\n"
        ),
    );
    w.executor();
    let (out, v) = live(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let c = check(&v, "sinks-reachable");
    assert_eq!(c["status"], "fail", "{c:#}");
    let found = c["evidence"]["found"].as_array().expect("found");
    assert_eq!(found.len(), 2, "{c:#}");
    assert_eq!(found[0]["kind"], "webhook");
    assert!(
        found[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("127.0.0.1:{closed}"))),
        "{c:#}"
    );
    assert_eq!(found[1]["kind"], "command");
    assert!(
        found[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("/nonexistent/page")),
        "{c:#}"
    );
    assert!(
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no request sent")),
        "{c:#}"
    );
}

#[test]
fn without_sinks_sinks_reachable_is_skipped() {
    let w = World::new();
    deploy(&w, "1m", "");
    w.executor();
    let (_, v) = live(&w, &["--only", "sinks-reachable"]);
    assert_eq!(status(&v, "sinks-reachable"), "skip", "{v:#}");
}

#[test]
fn only_runs_one_check_and_its_verdict_alone_sets_the_exit_code() {
    // A broken deployment (no executor, no log): clock-sane alone passes.
    let w = World::new();
    deploy(&w, "1m", "");
    let (out, v) = live(&w, &["--only", "clock-sane", "--sandbox-only"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(v["passed"], true);
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "{v:#}");
    assert_eq!(checks[0]["name"], "clock-sane");
    assert_eq!(checks[0]["status"], "pass", "{v:#}");
    assert!(
        reason(&v, "clock-sane").contains("CLOCK_REALTIME − CLOCK_BOOTTIME"),
        "{v:#}"
    );

    let out = run(&mut w.foreman(&["review", "--live", "--only", "no-such-check"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
}

#[test]
fn the_live_checks_write_nothing() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let droid = Sleeper::start();
    let w = World::new();
    healthy(&w, &receiver, &droid);
    let root = w.path("");
    let before = (
        dump(&w.executor_path()),
        dump(&w.activity_path()),
        files(&root),
    );

    // --sandbox-only: the run is not recorded either, so nothing changes.
    let (out, v) = live(&w, &["--sandbox-only"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(v["passed"], true);
    let after = (
        dump(&w.executor_path()),
        dump(&w.activity_path()),
        files(&root),
    );
    assert_eq!(before.0, after.0, "the executor's database changed");
    assert_eq!(before.1, after.1, "the activity log changed");
    assert_eq!(before.2, after.2, "files were created or removed");

    // Recorded (the default): the run's own rows are the only change.
    let (out, _) = live(&w, &[]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(dump(&w.executor_path()), before.0);
    assert_eq!(files(&root), before.2);
    let added: Vec<String> = dump(&w.activity_path())
        .into_iter()
        .filter(|r| !before.1.contains(r))
        .collect();
    assert!(!added.is_empty(), "the run is recorded");
    assert!(
        added
            .iter()
            .all(|r| r.starts_with("review_runs: ") || r.starts_with("review_checks: ")),
        "only the review's own rows: {added:#?}"
    );
    assert_eq!(
        added
            .iter()
            .filter(|r| r.starts_with("review_checks: "))
            .count(),
        CHECKS.len()
    );
    assert!(receiver.requests().is_empty());
    assert_eq!(w.task_state("t-running").0, "RUNNING");
}

/// A /proc that cannot show the executor's processes fails proc-visible
/// with the reason and evidence: here Foreman runs in a PID namespace of
/// its own (scratch namespaces, root only); on this host it passes.
#[test]
fn a_foreman_in_a_pid_namespace_of_its_own_fails_proc_visible() {
    let _g = crate::spawning();
    if !crate::linux::can_make_namespaces() {
        return;
    }
    let w = World::new();
    deploy(&w, "1m", "");
    w.executor();
    let args = ["--only", "proc-visible", "--sandbox-only"];
    let (out, v) = live(&w, &args);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(status(&v, "proc-visible"), "pass", "{v:#}");
    assert!(
        reason(&v, "proc-visible").contains("pid 1 is visible"),
        "{v:#}"
    );

    let mut all = vec!["review", "--live", "--json"];
    all.extend_from_slice(&args);
    let out = run(&mut crate::linux::in_new_namespaces(
        &w.foreman(&all),
        Path::new("/proc"),
        "rw",
        &[],
    ));
    assert_eq!(out.code, Some(1), "{out:#?}");
    let v = out.json();
    assert_eq!(status(&v, "proc-visible"), "fail", "{v:#}");
    let why = reason(&v, "proc-visible");
    assert!(
        why.starts_with("Foreman cannot tell a dead task from a hidden one: ")
            && why.contains("runs in a PID namespace (pid:["),
        "{v:#}"
    );
    let evidence = &check(&v, "proc-visible")["evidence"];
    assert!(evidence["pid_ns"]["Ok"].as_u64().is_some(), "{v:#}");
    assert_ne!(
        evidence["pid_ns"]["Ok"].as_u64(),
        Some(foreman::probe::INIT_PID_NS_INODE),
        "{v:#}"
    );
}
