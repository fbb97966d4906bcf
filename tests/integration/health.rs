//! Never blind while saying healthy: `/healthz` over real HTTP on a free
//! loopback port is 503 naming `snapshot_error` while the daemon cannot
//! read its executor (and 200 again once it can), and 503 naming
//! `max_deferral` once hung verdicts have been deferred for starvation
//! longer than that (Foreman's own sweeps held late at a failpoint); the
//! metrics and `foreman twin` show the same. The definition of "deferring
//! since" (`activity::sweep_health`) is checked on a log written by hand.

use crate::cli::{
    insert_task, now_text, run, wait_for, wait_until, Sleeper, World, HOST, PATIENCE,
};
use crate::http_client::{self, listening, Resp};
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use foreman::activity::ActivityLog;
use rusqlite::{params, Connection};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on a connection of its own (`Connection: close`); the
/// answer is not chunked.
fn get(addr: SocketAddr, path: &str) -> Resp {
    let r = http_client::get(addr, path);
    assert!(
        !r.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
        "a chunked answer: {r:#?}"
    );
    r
}

/// `name{}`'s value in a classic exposition.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `foreman.toml`: `interval`, the listener on a free loopback port,
/// `defaults` in `[defaults]`.
fn config(w: &World, interval: &str, defaults: &str) {
    w.write(
        "foreman.toml",
        &format!(
            "interval = \"{interval}\"\nhost = \"{HOST}\"\n\n\
             [executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\n\
             [activity]\npath = \"foreman.db\"\n\n\
             [defaults]\n{defaults}\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\n"
        ),
    );
}

/// The placeholder config's failure: the executor's database does not
/// exist. Every sweep records `snapshot_error`, and `/healthz` says so
/// with 503 (the sweeps themselves are on time); the metric is 1. Once the
/// database appears, the next sweep reads it and `/healthz` is 200 again.
#[test]
fn healthz_is_503_naming_snapshot_error_until_the_executor_can_be_read() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "500ms", "timeout = \"1h\"\nstartup_grace = \"1h\"");
    assert!(!w.executor_path().exists());
    let (mut proc, addr) = listening(&w, &[]);

    let failing = wait_for("/healthz names snapshot_error", PATIENCE, || {
        let r = get(addr, "/healthz");
        (r.status == 503 && !r.json()["snapshot_error"].is_null()).then_some(r)
    });
    let v = failing.json();
    eprintln!("/healthz with no executor: {v:#}");
    assert_eq!(v["status"], "failing", "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("snapshot_error") && reason.contains("executor"),
        "the reason does not name snapshot_error: {v:#}"
    );
    assert!(
        !reason.contains("interval"),
        "the sweeps are on time; only the executor is failing: {v:#}"
    );
    assert!(
        v["last_sweep"]
            .as_str()
            .is_some_and(|s| s.contains("snapshot_error")),
        "{v:#}"
    );
    let m = get(addr, "/metrics");
    assert_eq!(m.status, 200, "{m:#?}");
    assert_eq!(
        metric(&m.body, "foreman_last_sweep_snapshot_error"),
        Some(1.0),
        "{}",
        m.body
    );

    // The executor appears whole (written aside, renamed into place).
    let staged = w.path("staged.db");
    drop(World::create_executor_at(&staged));
    std::fs::rename(&staged, w.executor_path()).expect("rename the executor into place");

    let ok = wait_for("/healthz is 200 again", PATIENCE, || {
        let r = get(addr, "/healthz");
        (r.status == 200).then_some(r)
    });
    let v = ok.json();
    assert_eq!(v["status"], "ok", "{v:#}");
    assert!(v["reason"].is_null(), "{v:#}");
    assert!(v["snapshot_error"].is_null(), "{v:#}");
    assert!(v["proc_blindness"].is_null(), "{v:#}");
    assert!(v["deferral"].is_null(), "{v:#}");
    let m = get(addr, "/metrics");
    assert_eq!(
        metric(&m.body, "foreman_last_sweep_snapshot_error"),
        Some(0.0),
        "{}",
        m.body
    );
    assert_eq!(metric(&m.body, "foreman_proc_blind"), Some(0.0));
    assert_eq!(metric(&m.body, "foreman_hung_deferred"), Some(0.0));
    assert_eq!(metric(&m.body, "foreman_deferral_seconds"), Some(0.0));
    assert_eq!(
        metric(&m.body, "foreman_max_deferral_seconds"),
        Some(3.0 * 3600.0),
        "3 × timeout"
    );

    proc.signal(libc::SIGTERM);
    let out = proc.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
}

/// Every sweep is held a second at `sweep::before_act` with a 500ms
/// interval, so every scheduled sweep starts late: Foreman itself is
/// starved and defers hung verdicts sweep after sweep. A real `sleep`
/// whose heartbeat stops is hung after its 1s timeout: its verdict is
/// deferred (counted in `/healthz` and `foreman_hung_deferred`) until
/// `max_deferral` (4s) past it. While the deferral lasts less than that,
/// `/healthz` shows it (why, since, how many) and stays 200 for it; past
/// it, 503 naming `max_deferral` and why; the metrics and twin say so too.
#[cfg(feature = "failpoints")]
#[test]
fn healthz_is_503_once_hung_verdicts_are_deferred_longer_than_max_deferral() {
    let _g = crate::spawning();
    let w = World::new();
    config(
        &w,
        "500ms",
        "timeout = \"1s\"\nstartup_grace = \"0s\"\npid_start_tolerance = \"1h\"\n\
         progress = [\"heartbeat\"]\nmode = \"shadow\"\nmax_deferral = \"4s\"",
    );
    let quiet = Sleeper::start();
    let now = now_text();
    insert_task(
        &w.executor(),
        "quiet-1",
        "worker",
        Some(quiet.pid()),
        &now,
        Some(&now),
    );
    let (proc, addr) = listening(&w, &[("FAILPOINTS", "sweep::before_act=sleep(1000)")]);

    let deferring = wait_for("/healthz counts a deferred hung verdict", PATIENCE, || {
        let r = get(addr, "/healthz");
        (r.json()["deferral"]["hung_deferred"] == 1).then_some(r)
    });
    let v = deferring.json();
    eprintln!("/healthz deferring: {v:#}");
    let d = &v["deferral"];
    assert!(
        d["reason"].as_str().is_some_and(|r| r.contains("late")),
        "the deferral says why: {v:#}"
    );
    assert_eq!(d["max_deferral_seconds"], 4.0, "{v:#}");
    assert_eq!(d["exceeded"], false, "{v:#}");
    assert!(d["since"].is_string(), "{v:#}");
    assert!(
        !v["reason"].to_string().contains("max_deferral"),
        "within max_deferral: {v:#}"
    );
    wait_until("foreman_hung_deferred is 1", PATIENCE, || {
        metric(&get(addr, "/metrics").body, "foreman_hung_deferred") == Some(1.0)
    });
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM findings WHERE task_id = 'quiet-1' AND kind = 'hung'"),
        Some(1)
    );

    let failing = wait_for("/healthz turns 503 past max_deferral", PATIENCE, || {
        let r = get(addr, "/healthz");
        (r.status == 503 && r.json()["deferral"]["exceeded"] == true).then_some(r)
    });
    let v = failing.json();
    eprintln!("/healthz past max_deferral: {v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("max_deferral") && reason.contains("late"),
        "the reason names max_deferral and why: {v:#}"
    );
    assert!(
        v["deferral"]["seconds"].as_f64().is_some_and(|s| s > 4.0),
        "{v:#}"
    );
    assert!(v["snapshot_error"].is_null(), "{v:#}");

    let m = get(addr, "/metrics");
    assert_eq!(m.status, 200, "{m:#?}");
    assert!(
        metric(&m.body, "foreman_deferral_seconds").is_some_and(|s| s > 4.0),
        "{}",
        m.body
    );
    assert_eq!(metric(&m.body, "foreman_max_deferral_seconds"), Some(4.0));

    // Deferral is bounded: the sweep after the overdue passes max_deferral
    // acts on the verdict (shadow: would mark it), which ends the deferral.
    // Twin, read a moment later, sees one or the other; never silence.
    let out = run(&mut w.foreman(&["twin", "--json"]));
    let t: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("twin --json is not JSON ({e}): {out:#?}"));
    if t["daemon"]["deferral"]["exceeded"] == true {
        assert_eq!(t["state"], "CRITICAL", "{t:#}");
        assert_eq!(out.code, Some(2), "{out:#?}");
        assert!(t["reasons"].to_string().contains("max_deferral"), "{t:#}");
    } else {
        wait_until(
            "the hung verdict is acted on, saying it waited",
            PATIENCE,
            || {
                Connection::open(w.activity_path())
                .ok()
                .and_then(|c| {
                    c.query_row(
                        "SELECT outcome, outcome_detail FROM findings WHERE task_id = 'quiet-1' AND kind = 'hung'",
                        [],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
                    )
                    .ok()
                })
                .is_some_and(|(outcome, detail)| {
                    outcome == "would_mark_failed"
                        && detail.is_some_and(|d| d.contains("waited") && d.contains("max_deferral"))
                })
            },
        );
    }
    // A held sweep would keep a SIGTERM waiting; dropping kills it.
    drop(proc);
}

/// An activity log written by hand: what `sweep_health` says, sweep by sweep.
fn log_with(w: &World) -> (ActivityLog, Connection) {
    let log = ActivityLog::open(&w.activity_path()).expect("open the activity log");
    let conn = Connection::open(w.activity_path()).expect("open it again to write");
    (log, conn)
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A finished sweep started at `t`, with `deferral`; its id.
fn sweep_row(
    conn: &Connection,
    t: DateTime<Utc>,
    error: Option<&str>,
    deferral: Option<&str>,
) -> i64 {
    conn.execute(
        "INSERT INTO sweeps (kind, host, mode, started_at, finished_at, error, deferral)
         VALUES ('scheduled', ?1, 'enforce', ?2, ?3, ?4, ?5)",
        params![
            HOST,
            at(t),
            at(t + ChronoDuration::milliseconds(100)),
            error,
            deferral
        ],
    )
    .expect("insert a sweep");
    conn.last_insert_rowid()
}

/// A hung finding first seen at `first`, last seen by `sweep` with `outcome`.
fn hung(
    conn: &Connection,
    task: &str,
    first: DateTime<Utc>,
    first_sweep: i64,
    sweep: i64,
    outcome: &str,
) {
    conn.execute(
        "INSERT INTO findings (task_id, attempt, kind, evidence, action, outcome, outcome_detail,
                               first_sweep_id, last_sweep_id, first_seen_at, last_seen_at)
         VALUES (?1, 1, 'hung', '{}', 'deferred', ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (task_id, attempt, kind) DO UPDATE SET outcome = excluded.outcome,
            outcome_detail = excluded.outcome_detail, last_sweep_id = excluded.last_sweep_id",
        params![
            task,
            outcome,
            format!("hung verdict deferred: the tree of {task} is runnable and got no CPU"),
            first_sweep,
            sweep,
            at(first),
        ],
    )
    .expect("insert a finding");
}

/// "Deferring since" is the start of the unbroken run of latest sweeps
/// with a `deferral`, or the first sighting of the oldest hung verdict the
/// latest sweep deferred, whichever is earlier; one free sweep ends it.
#[test]
fn sweep_health_dates_a_deferral_from_its_unbroken_run() {
    let w = World::new();
    let (log, conn) = log_with(&w);
    assert_eq!(log.sweep_health().expect("health"), None, "no sweep yet");
    // Whole seconds: the log keeps milliseconds.
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 1800, 0).expect("a time");
    let min = |n: i64| t0 + ChronoDuration::minutes(n);

    // A free sweep, then three starved ones.
    sweep_row(&conn, min(0), None, None);
    sweep_row(&conn, min(1), None, Some("this sweep started 40s late"));
    sweep_row(&conn, min(2), None, Some("this sweep started 41s late"));
    let s3 = sweep_row(&conn, min(3), None, Some("this sweep started 42s late"));
    let h = log.sweep_health().expect("health").expect("a sweep");
    assert_eq!(h.sweep_id, s3);
    assert_eq!(h.error, None);
    let d = h.deferral.expect("deferring");
    assert_eq!(d.since.timestamp_millis(), min(1).timestamp_millis());
    assert_eq!(d.reason, "this sweep started 42s late");
    assert_eq!(d.hung_deferred, 0);
    let lasted = d.lasted(min(4));
    assert_eq!(lasted, Duration::from_secs(180), "{lasted:?}");

    // A free sweep ends it; a task's own deferral starts one at the task's
    // first sighting, and counts.
    let s4 = sweep_row(&conn, min(4), None, None);
    assert_eq!(log.sweep_health().expect("h").expect("s").deferral, None);
    hung(&conn, "a", min(4), s4, s4, "pending");
    let s5 = sweep_row(&conn, min(5), None, None);
    hung(&conn, "a", min(4), s4, s5, "deferred_starvation");
    hung(&conn, "b", min(5), s5, s5, "deferred_starvation");
    let d = log
        .sweep_health()
        .expect("h")
        .expect("s")
        .deferral
        .expect("deferring");
    assert_eq!(d.hung_deferred, 2);
    assert_eq!(d.since.timestamp_millis(), min(4).timestamp_millis());
    assert!(
        d.reason.contains("tree of a"),
        "the oldest one's note: {d:?}"
    );

    // A snapshot error is the latest sweep's; a verdict deferred by an
    // earlier sweep no longer counts.
    let s6 = sweep_row(
        &conn,
        min(6),
        Some("snapshot_error: no such table: tasks"),
        None,
    );
    let h = log.sweep_health().expect("h").expect("s");
    assert_eq!(h.sweep_id, s6);
    assert_eq!(
        h.error.as_deref(),
        Some("snapshot_error: no such table: tasks")
    );
    assert_eq!(h.deferral, None);

    // Sweep-wide and per task together: the earlier start wins.
    sweep_row(
        &conn,
        min(7),
        None,
        Some("Foreman waited 3s for a CPU during this sweep"),
    );
    let s8 = sweep_row(
        &conn,
        min(8),
        None,
        Some("Foreman waited 4s for a CPU during this sweep"),
    );
    hung(&conn, "c", min(2), s8, s8, "deferred_starvation");
    let d = log
        .sweep_health()
        .expect("h")
        .expect("s")
        .deferral
        .expect("deferring");
    assert_eq!(d.since.timestamp_millis(), min(2).timestamp_millis());
    assert_eq!(d.hung_deferred, 1);
    assert_eq!(d.reason, "Foreman waited 4s for a CPU during this sweep");
}

/// `foreman twin` shows the daemon's deferral (why, since when, how many
/// hung verdicts) in its text and JSON: a WARNING within `max_deferral`,
/// CRITICAL past it.
#[test]
fn twin_shows_the_deferral_and_is_critical_past_max_deferral() {
    let _g = crate::spawning();
    let w = World::new();
    config(
        &w,
        "1m",
        "timeout = \"1h\"\nstartup_grace = \"1h\"\nmax_deferral = \"10m\"",
    );
    drop(w.executor());
    let (_log, conn) = log_with(&w);
    let now = Utc::now();
    // Deferring for 5 minutes: one hung verdict, Foreman starved.
    let first = sweep_row(
        &conn,
        now - ChronoDuration::minutes(5),
        None,
        Some("this sweep started 40s late"),
    );
    let last = sweep_row(
        &conn,
        now - ChronoDuration::seconds(1),
        None,
        Some("this sweep started 41s late"),
    );
    hung(
        &conn,
        "slow-1",
        now - ChronoDuration::minutes(5),
        first,
        last,
        "deferred_starvation",
    );

    let out = run(&mut w.foreman(&["twin", "--json"]));
    let t: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("twin --json is not JSON ({e}): {out:#?}"));
    let d = &t["daemon"]["deferral"];
    assert_eq!(d["reason"], "this sweep started 41s late", "{t:#}");
    assert_eq!(d["hung_deferred"], 1, "{t:#}");
    assert_eq!(d["exceeded"], false, "{t:#}");
    assert_eq!(d["max_deferral_seconds"], 600.0, "{t:#}");
    assert!(
        d["seconds"]
            .as_f64()
            .is_some_and(|s| (299.0..400.0).contains(&s)),
        "{t:#}"
    );
    assert!(d["since"].as_str().is_some_and(|s| !s.is_empty()), "{t:#}");
    assert_eq!(t["state"], "WARNING", "{t:#}");
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        t["reasons"]
            .to_string()
            .contains("1 hung verdict(s) deferred"),
        "{t:#}"
    );

    let out = run(&mut w.foreman(&["twin"]));
    assert!(
        out.stdout.contains("deferring hung verdicts since")
            && out.stdout.contains("1 deferred by the last sweep")
            && out.stdout.contains("this sweep started 41s late"),
        "{}",
        out.stdout
    );

    // Past max_deferral: CRITICAL, naming it.
    config(
        &w,
        "1m",
        "timeout = \"1h\"\nstartup_grace = \"1h\"\nmax_deferral = \"4m\"",
    );
    let out = run(&mut w.foreman(&["twin", "--json"]));
    let t: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("twin --json is not JSON ({e}): {out:#?}"));
    assert_eq!(t["state"], "CRITICAL", "{t:#}");
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(t["daemon"]["deferral"]["exceeded"], true, "{t:#}");
    assert!(
        t["reasons"]
            .to_string()
            .contains("longer than max_deferral 4m"),
        "{t:#}"
    );
    let out = run(&mut w.foreman(&["twin"]));
    assert!(out.stdout.contains("TOO LONG"), "{}", out.stdout);
}
