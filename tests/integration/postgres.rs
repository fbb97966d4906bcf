//! The PostgreSQL source against a real PostgreSQL (the tests' own clusters,
//! `crate::pg`): the executor suite the SQLite source passes (snapshot
//! shapes, this host's rows and the history window, the compare-and-set,
//! malformed rows, an unreachable database, custom queries), and what only
//! PostgreSQL has: one round trip a call and no transaction ever held,
//! statement and lock timeouts, prepared statements gone stale, TLS by
//! `sslmode`, and the fleet's table and advisory lock. Real processes
//! wherever a sweep judges; conditions are awaited, never slept on.

use crate::cli::{finding_of, run};
use crate::common::*;
use crate::pg::Pg;
use chrono::{DateTime, FixedOffset, SecondsFormat, SubsecRound, TimeZone, Utc};
use foreman::config::ExecutorConfig;
use foreman::executor::postgres::PostgresExecutor;
use foreman::executor::{Executor, Marked};
use foreman::fleet::Beat;
use foreman::model::{Action, Kind, Outcome, Row, Snapshot, SweepKind, Task, TaskState};
use postgres::Client;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SCHEDULED: SweepKind = SweepKind::Scheduled;

/// Workers judged by their heartbeat alone, with a long timeout: the healthy
/// task beside the rows under test stays healthy on a slow machine.
const WORKER: &str = "[droid_types.worker]\ntimeout = \"1h\"\nprogress = [\"heartbeat\"]\n";

/// What a URL's password is in the tests that give one: it must never
/// appear in any message.
const PASSWORD: &str = "pw-Qz81-never-echoed";

const REASON: &str = "dead: its process is gone";

// ---- worlds and executors ----

/// A world (it holds the process lock for the whole test, as every use of
/// a cluster must), or `None` where no PostgreSQL can run (the test is
/// skipped; under CI that fails it).
fn locked_world() -> Option<World> {
    let w = World::new();
    Pg::available().then_some(w)
}

/// Point the world's executor at the database `url`, read from a
/// `url_file` (the URL may hold a password: it never lives in
/// foreman.toml), with these further `[executor]` keys.
fn use_pg(w: &mut World, url: &str, timeout: &str, executor: &str) {
    std::fs::write(w.path("pg.url"), format!("{url}\n")).unwrap();
    w.reconfigure(Cfg {
        executor: Some(format!(
            "kind = \"postgres\"\nurl_file = \"pg.url\"\ntimeout = \"{timeout}\"\n{executor}"
        )),
        tail: WORKER,
        ..Cfg::default()
    });
}

/// The executor a sweep of this world would open, as this world's host.
fn executor(w: &World) -> PostgresExecutor {
    executor_as(w, &w.config.host)
}

fn executor_as(w: &World, host: &str) -> PostgresExecutor {
    with_config(w, &w.config.executor, host)
}

fn with_config(w: &World, cfg: &ExecutorConfig, host: &str) -> PostgresExecutor {
    let c = &w.config;
    PostgresExecutor::new(cfg, host, c.fleet.as_ref(), c.interval).unwrap()
}

/// A test's own client, reading times in UTC.
fn client(pg: &Pg, url: &str) -> Client {
    let mut c = pg.client(url);
    c.batch_execute("SET TimeZone = 'UTC'").unwrap();
    c
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

// ---- snapshots ----

fn snap(exec: &dyn Executor) -> Snapshot {
    exec.snapshot()
        .unwrap_or_else(|e| panic!("snapshot: {e:#}"))
}

fn ids(s: &Snapshot) -> BTreeSet<String> {
    s.rows
        .iter()
        .map(|r| match r {
            Row::Task(t) => t.id.clone(),
            Row::Bad(b) => b.id.clone(),
        })
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn task<'a>(s: &'a Snapshot, id: &str) -> &'a Task {
    s.rows
        .iter()
        .find_map(|r| match r {
            Row::Task(t) if t.id == id => Some(t),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no task {id} in {:#?}", s.rows))
}

fn err_text<T>(r: anyhow::Result<T>, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what} succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

// ---- tables ----

/// How an executor's `tasks` table stores ids, pids (and attempts) and
/// times, and the `[executor] timezone` it is read with.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    id: &'static str,
    pid: &'static str,
    time: &'static str,
    tz: &'static str,
    /// A time as the executor writes it (as text, cast to `time`).
    write: fn(DateTime<Utc>) -> String,
    /// `finished_at::text` (in UTC) once Foreman marked the row at a whole
    /// second.
    marked: fn(DateTime<Utc>) -> String,
}

fn offset(secs: i32) -> FixedOffset {
    FixedOffset::east_opt(secs).unwrap()
}

fn rfc_z(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn rfc_plus1(t: DateTime<Utc>) -> String {
    t.with_timezone(&offset(3600))
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn rfc_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn tstz_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

fn naive_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn naive_plus2(t: DateTime<Utc>) -> String {
    t.with_timezone(&offset(2 * 3600))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn naive_minus5(t: DateTime<Utc>) -> String {
    t.with_timezone(&offset(-5 * 3600))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn unix(t: DateTime<Utc>) -> String {
    t.timestamp().to_string()
}

/// The contract's table as an executor on PostgreSQL declares it.
const CONTRACT: Shape = Shape {
    name: "timestamptz",
    id: "text",
    pid: "integer",
    time: "timestamptz",
    tz: "UTC",
    write: rfc_z,
    marked: tstz_text,
};

const TIMESTAMP_PLUS2: Shape = Shape {
    name: "timestamp_plus2",
    time: "timestamp",
    tz: "+02:00",
    write: naive_plus2,
    marked: naive_plus2,
    ..CONTRACT
};

const TIMESTAMP_MINUS5: Shape = Shape {
    name: "timestamp_minus5",
    time: "timestamp",
    tz: "-05:00",
    write: naive_minus5,
    marked: naive_minus5,
    ..CONTRACT
};

const TEXT_RFC3339: Shape = Shape {
    name: "text_rfc3339",
    pid: "bigint",
    time: "text",
    write: rfc_plus1,
    marked: rfc_millis,
    ..CONTRACT
};

const TEXT_NAIVE: Shape = Shape {
    name: "text_naive",
    time: "text",
    write: naive_utc,
    marked: rfc_millis,
    ..CONTRACT
};

const TEXT_UNIX: Shape = Shape {
    name: "text_unix",
    time: "text",
    write: unix,
    marked: rfc_millis,
    ..CONTRACT
};

const BIGINT_UNIX: Shape = Shape {
    name: "bigint_unix",
    pid: "bigint",
    time: "bigint",
    write: unix,
    marked: unix,
    ..CONTRACT
};

/// One row of a `tasks` table (worker tasks of plan-9).
struct NewRow<'a> {
    id: &'a str,
    state: &'a str,
    host: Option<&'a str>,
    pid: Option<i64>,
    attempt: i64,
    started: Option<DateTime<Utc>>,
    beat: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    ticks: Option<i64>,
}

impl<'a> NewRow<'a> {
    /// RUNNING on this host, attempt 1, nothing else known.
    fn running(id: &'a str) -> NewRow<'a> {
        NewRow {
            id,
            state: "RUNNING",
            host: Some(HOST),
            pid: None,
            attempt: 1,
            started: None,
            beat: None,
            finished: None,
            ticks: None,
        }
    }
}

impl Shape {
    /// The database for this shape: its `tasks` table, empty.
    fn create(&self, pg: &Pg) -> (String, Client) {
        let url = pg.create_db(self.name);
        let mut db = client(pg, &url);
        db.batch_execute(&format!(
            "CREATE TABLE tasks (id {id} PRIMARY KEY, plan_id TEXT, droid_type TEXT, state TEXT NOT NULL, \
             pid {pid}, host TEXT, attempt {pid} NOT NULL DEFAULT 1, started_at {t}, last_progress_at {t}, \
             finished_at {t}, error TEXT, pid_start_ticks BIGINT)",
            id = self.id,
            pid = self.pid,
            t = self.time
        ))
        .unwrap();
        (url, db)
    }

    fn insert(&self, db: &mut Client, r: &NewRow) {
        let time = |t: Option<DateTime<Utc>>| t.map(self.write);
        db.execute(
            &format!(
                "INSERT INTO tasks (id, plan_id, droid_type, state, pid, host, attempt, started_at, \
                 last_progress_at, finished_at, pid_start_ticks) \
                 VALUES (CAST($1::text AS {id}), 'plan-9', 'worker', $2, CAST($3::int8 AS {pid}), $4, \
                 CAST($5::int8 AS {pid}), CAST($6::text AS {t}), CAST($7::text AS {t}), CAST($8::text AS {t}), $9)",
                id = self.id,
                pid = self.pid,
                t = self.time
            ),
            &[
                &r.id,
                &r.state,
                &r.pid,
                &r.host,
                &r.attempt,
                &time(r.started),
                &time(r.beat),
                &time(r.finished),
                &r.ticks,
            ],
        )
        .unwrap_or_else(|e| panic!("inserting {} into {}: {e}", r.id, self.name));
    }
}

/// The contract's table (`Pg::create_tasks_table`) in a fresh database.
fn contract_db(pg: &Pg, prefix: &str) -> (String, Client) {
    let url = pg.create_db(prefix);
    pg.create_tasks_table(&url);
    let db = client(pg, &url);
    (url, db)
}

/// (state, error, finished_at) of a contract row.
fn row_of(db: &mut Client, id: &str) -> (String, Option<String>, Option<DateTime<Utc>>) {
    let r = db
        .query_one(
            "SELECT state, error, finished_at FROM tasks WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

// ---- processes ----

/// A sleeping process of this test and its RUNNING contract row with a
/// fresh heartbeat: healthy.
fn healthy(w: &mut World, db: &mut Client, id: &str) -> i32 {
    let pid = w.spawn(&["sleep", "300"]);
    wait_sleeping(pid, "sleep");
    let started = process_started_at(pid);
    CONTRACT.insert(
        db,
        &NewRow {
            pid: Some(pid.into()),
            started: Some(started),
            beat: Some(now()),
            ..NewRow::running(id)
        },
    );
    pid
}

/// A RUNNING contract row whose process exited before this boot: dead, and
/// acted on at once (no exit grace).
fn dead(w: &mut World, db: &mut Client, id: &str) -> i32 {
    let pid = w.spawn_exited(&["true"]);
    CONTRACT.insert(
        db,
        &NewRow {
            pid: Some(pid.into()),
            started: Some(before_boot()),
            ..NewRow::running(id)
        },
    );
    pid
}

// ---- Foreman's session, as the server sees it ----

/// Foreman's backends (application_name `foreman@HOST`) in this database.
#[derive(Debug)]
struct Backend {
    state: Option<String>,
    in_transaction: bool,
    wait_event_type: Option<String>,
    ssl: Option<bool>,
}

fn backends(db: &mut Client, host: &str) -> Vec<Backend> {
    db.query(
        "SELECT a.state, a.xact_start IS NOT NULL OR a.backend_xid IS NOT NULL, a.wait_event_type, s.ssl \
         FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.application_name = $1 AND a.datname = current_database() AND a.pid <> pg_backend_pid()",
        &[&format!("foreman@{host}")],
    )
    .unwrap()
    .iter()
    .map(|r| Backend {
        state: r.get(0),
        in_transaction: r.get(1),
        wait_event_type: r.get(2),
        ssl: r.get(3),
    })
    .collect()
}

/// (state, in a transaction) of Foreman's backends. The backend reports
/// `idle` and has ended its transaction before it answers ReadyForQuery,
/// so this is exact as soon as a call returns (its wait event is not: it
/// waits on ClientRead only once it blocks reading).
fn sessions(db: &mut Client) -> Vec<(Option<String>, bool)> {
    backends(db, HOST)
        .into_iter()
        .map(|b| (b.state, b.in_transaction))
        .collect()
}

fn idle() -> Vec<(Option<String>, bool)> {
    vec![(Some("idle".into()), false)]
}

/// The host names holding the fleet's advisory lock ("Form", 0x466f726d) in
/// this database.
fn leaders(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::int8 = 1181708909 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    )
    .unwrap()
    .into_iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

// ============================================================ 1. shapes

#[test]
fn every_table_shape_reads_as_the_same_task_and_is_marked_in_its_own_types() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let started = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    let beat = started + chrono::Duration::seconds(90);
    let bigint_id = Shape {
        name: "bigint_id",
        id: "bigint",
        ..BIGINT_UNIX
    };
    for shape in [
        CONTRACT,
        TIMESTAMP_PLUS2,
        TEXT_RFC3339,
        TEXT_NAIVE,
        TEXT_UNIX,
        BIGINT_UNIX,
        bigint_id,
    ] {
        let name = shape.name;
        let (url, mut db) = shape.create(pg);
        let id = if shape.id == "bigint" { "7001" } else { "t-1" };
        shape.insert(
            &mut db,
            &NewRow {
                pid: Some(4242),
                attempt: 3,
                started: Some(started),
                beat: Some(beat),
                ticks: Some(123_456_789),
                ..NewRow::running(id)
            },
        );
        use_pg(&mut w, &url, "5s", &format!("timezone = \"{}\"", shape.tz));
        let exec = executor(&w);
        let want = Task {
            id: id.into(),
            plan_id: Some("plan-9".into()),
            droid_type: "worker".into(),
            state: TaskState::Running,
            pid: Some(4242),
            host: Some(HOST.into()),
            attempt: 3,
            started_at: Some(started),
            last_progress_at: Some(beat),
            finished_at: None,
            error: None,
            pid_start_ticks: Some(123_456_789),
            created_at: None,
        };
        assert_eq!(snap(&exec).rows, vec![Row::Task(want.clone())], "{name}");

        // The mark binds every parameter in its column's type: the id as
        // an integer, pid and attempt as INTEGER or BIGINT, finished_at as
        // the column holds times.
        let at = Utc::now().trunc_subsecs(0);
        assert_eq!(
            exec.mark_failed(&want, REASON, at)
                .unwrap_or_else(|e| panic!("{name}: {e:#}")),
            Marked::Failed,
            "{name}"
        );
        let r = db
            .query_one("SELECT state, error, finished_at::text FROM tasks", &[])
            .unwrap();
        assert_eq!(
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2)
            ),
            (
                "FAILED".into(),
                Some(REASON.into()),
                Some((shape.marked)(at))
            ),
            "{name}"
        );
        // ... and reads back as written, in the executor's timezone.
        let after = snap(&exec);
        let t = task(&after, id);
        assert_eq!(
            (t.state, t.finished_at, t.error.as_deref()),
            (TaskState::Failed, Some(at), Some(REASON)),
            "{name}"
        );
        assert_eq!(
            exec.mark_failed(&want, REASON, at).unwrap(),
            Marked::NotRunning,
            "{name}"
        );
    }
}

// ============================================= 2. this host, the window

#[test]
fn the_snapshot_holds_this_hosts_unfinished_rows_and_only_what_finished_within_the_window() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let bigint = Shape {
        name: "window_bigint",
        id: "text",
        ..BIGINT_UNIX
    };
    for shape in [
        CONTRACT,
        TIMESTAMP_MINUS5,
        TEXT_RFC3339,
        TEXT_NAIVE,
        TEXT_UNIX,
        bigint,
    ] {
        let name = shape.name;
        let (url, mut db) = shape.create(pg);
        let base = now().trunc_subsecs(0);
        let ago = |secs: i64| Some(base - chrono::Duration::seconds(secs));
        let row = |id, state, host, finished| NewRow {
            state,
            host,
            finished,
            ..NewRow::running(id)
        };
        for r in [
            row("run", "RUNNING", Some(HOST), None),
            row("pend", "PENDING", Some(HOST), None),
            row("fresh", "SUCCESS", Some(HOST), ago(10 * 60)),
            row("stale", "FAILED", Some(HOST), ago(2 * 3600)),
            row("ancient", "SKIPPED", Some(HOST), ago(3 * 86400)),
            row("theirs", "RUNNING", Some("other-host"), None),
            row("theirs-pend", "PENDING", Some("other-host"), None),
            row("theirs-fresh", "SUCCESS", Some("other-host"), ago(60)),
            row("nohost", "RUNNING", None, None),
            row("nohost-fresh", "SUCCESS", None, ago(60)),
        ] {
            shape.insert(&mut db, &r);
        }
        use_pg(
            &mut w,
            &url,
            "5s",
            &format!("history_window = \"1h\"\ntimezone = \"{}\"", shape.tz),
        );
        let exec = executor(&w);
        let s = snap(&exec);
        assert_eq!(ids(&s), set(&["run", "pend", "fresh"]), "{name}");
        assert_eq!(task(&s, "fresh").finished_at, ago(10 * 60), "{name}");
        assert_eq!(task(&s, "pend").state, TaskState::Pending, "{name}");
        // A longer look back (the wellbeing sweep's) reaches further, and
        // no further.
        let h = exec
            .history(Duration::from_secs(3 * 3600))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            ids(&h.snapshot),
            set(&["run", "pend", "fresh", "stale"]),
            "{name}"
        );
        assert_eq!(h.droid_types, None, "{name}: there is no droid_types table");
    }
}

// =================================================== 3. compare-and-set

#[test]
fn the_mark_is_a_compare_and_set_on_running_pid_and_attempt() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "cas");
    for r in [
        NewRow {
            pid: Some(4242),
            ..NewRow::running("cas")
        },
        NewRow {
            pid: Some(4343),
            ..NewRow::running("racy")
        },
        NewRow {
            pid: Some(4444),
            attempt: 2,
            ..NewRow::running("moved")
        },
        NewRow::running("nopid"),
    ] {
        CONTRACT.insert(&mut db, &r);
    }
    use_pg(&mut w, &url, "5s", "");
    let exec = executor(&w);
    let s = snap(&exec);

    // RUNNING with the same pid and attempt: failed, with the reason and
    // the time.
    let cas = task(&s, "cas");
    let at = Utc::now();
    assert_eq!(exec.mark_failed(cas, REASON, at).unwrap(), Marked::Failed);
    let (state, error, finished) = row_of(&mut db, "cas");
    assert_eq!((state.as_str(), error.as_deref()), ("FAILED", Some(REASON)));
    assert_eq!(finished.map(micros), Some(micros(at)));
    // Again: no longer RUNNING, and nothing is overwritten.
    let later = at + chrono::Duration::seconds(5);
    assert_eq!(
        exec.mark_failed(cas, "another reason", later).unwrap(),
        Marked::NotRunning
    );
    assert_eq!(row_of(&mut db, "cas"), (state, error, finished));

    // The executor finished the task between the snapshot and the mark.
    let racy = task(&s, "racy");
    db.execute(
        "UPDATE tasks SET state = 'SUCCESS', finished_at = now() WHERE id = 'racy'",
        &[],
    )
    .unwrap();
    assert_eq!(
        exec.mark_failed(racy, REASON, Utc::now()).unwrap(),
        Marked::NotRunning
    );
    let (state, error, _) = row_of(&mut db, "racy");
    assert_eq!((state.as_str(), error), ("SUCCESS", None));

    // Another pid or another attempt (the executor moved on): untouched.
    let moved = task(&s, "moved");
    for (what, t) in [
        (
            "another pid",
            Task {
                pid: Some(4445),
                ..moved.clone()
            },
        ),
        (
            "no pid",
            Task {
                pid: None,
                ..moved.clone()
            },
        ),
        (
            "an earlier attempt",
            Task {
                attempt: 1,
                ..moved.clone()
            },
        ),
    ] {
        assert_eq!(
            exec.mark_failed(&t, REASON, Utc::now()).unwrap(),
            Marked::NotRunning,
            "{what}"
        );
        assert_eq!(
            row_of(&mut db, "moved"),
            ("RUNNING".into(), None, None),
            "{what}"
        );
    }
    assert_eq!(
        exec.mark_failed(moved, REASON, Utc::now()).unwrap(),
        Marked::Failed
    );

    // A NULL pid is compared as a value (IS NOT DISTINCT FROM).
    let nopid = task(&s, "nopid");
    assert_eq!(nopid.pid, None);
    let with_pid = Task {
        pid: Some(4242),
        ..nopid.clone()
    };
    assert_eq!(
        exec.mark_failed(&with_pid, REASON, Utc::now()).unwrap(),
        Marked::NotRunning
    );
    assert_eq!(
        exec.mark_failed(nopid, REASON, Utc::now()).unwrap(),
        Marked::Failed
    );
    assert_eq!(row_of(&mut db, "nopid").0, "FAILED");
}

#[test]
fn two_foremen_marking_the_same_task_at_once_fail_it_exactly_once() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "race");
    let names: Vec<String> = (0..12).map(|i| format!("race-{i}")).collect();
    for id in &names {
        CONTRACT.insert(
            &mut db,
            &NewRow {
                pid: Some(4242),
                ..NewRow::running(id)
            },
        );
    }
    use_pg(&mut w, &url, "5s", "");
    let (a, b) = (executor(&w), executor(&w));
    let s = snap(&a);
    snap(&b);
    let tasks: Vec<&Task> = names.iter().map(|id| task(&s, id)).collect();
    let barrier = Barrier::new(2);
    let mark_all = |exec: &PostgresExecutor, reason: &str| -> Vec<Marked> {
        tasks
            .iter()
            .map(|t| {
                barrier.wait();
                exec.mark_failed(t, reason, Utc::now())
                    .unwrap_or_else(|e| panic!("{reason}: {e:#}"))
            })
            .collect()
    };
    let (by_a, by_b) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| mark_all(&a, "marked by a"));
        let tb = scope.spawn(|| mark_all(&b, "marked by b"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    for (i, id) in names.iter().enumerate() {
        let winner = match (by_a[i], by_b[i]) {
            (Marked::Failed, Marked::NotRunning) => "marked by a",
            (Marked::NotRunning, Marked::Failed) => "marked by b",
            other => panic!("{id}: {other:?}: not exactly one Failed"),
        };
        let (state, error, _) = row_of(&mut db, id);
        assert_eq!((state.as_str(), error.as_deref()), ("FAILED", Some(winner)));
    }
}

#[test]
fn a_dead_task_the_executor_finishes_within_exit_grace_is_already_finished() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "grace");
    use_pg(&mut w, &url, "5s", "");
    let pid = w.spawn_exited(&["true"]);
    CONTRACT.insert(
        &mut db,
        &NewRow {
            pid: Some(pid.into()),
            started: Some(now()),
            ..NewRow::running("done")
        },
    );
    let first = w.sweep(SCHEDULED);
    let f = finding(&first, "done");
    assert_eq!(
        (f.kind, f.outcome),
        (Kind::Dead, Outcome::Pending),
        "{f:#?}"
    );
    let id = f.id.unwrap();

    // The executor records the normal exit, a little late.
    db.execute(
        "UPDATE tasks SET state = 'SUCCESS', finished_at = now() WHERE id = 'done'",
        &[],
    )
    .unwrap();
    wait_past(first.started_at + chrono::Duration::seconds(1));
    let second = w.sweep(SCHEDULED);
    assert_no_finding(&second, "done");
    let (_, _, outcome, detail) = w.recorded(id);
    assert_eq!(outcome, "already_finished", "{detail:?}");
    let (state, error, _) = row_of(&mut db, "done");
    assert_eq!((state.as_str(), error), ("SUCCESS", None));
}

/// The executor finishes the task just before Foreman's compare-and-set.
struct FinishesFirst {
    inner: PostgresExecutor,
    db: Mutex<Client>,
}

impl Executor for FinishesFirst {
    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        self.inner.snapshot()
    }
    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> anyhow::Result<Marked> {
        self.db
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .execute(
                "UPDATE tasks SET state = 'SUCCESS', finished_at = now() WHERE id = $1",
                &[&task.id],
            )?;
        self.inner.mark_failed(task, reason, at)
    }
}

#[test]
fn a_task_finished_between_snapshot_and_mark_is_already_finished() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "racy_sweep");
    use_pg(&mut w, &url, "5s", "");
    dead(&mut w, &mut db, "racy");
    let exec = FinishesFirst {
        inner: executor(&w),
        db: Mutex::new(client(pg, &url)),
    };
    let r = w.sweep_with(&exec, SCHEDULED);
    let f = finding(&r, "racy");
    assert_eq!(f.kind, Kind::Dead, "{f:#?}");
    assert_eq!(f.action, Action::MarkFailed);
    assert_eq!(f.outcome, Outcome::AlreadyFinished, "{f:#?}");
    assert_eq!(w.recorded(f.id.unwrap()).2, "already_finished");
    let (state, error, _) = row_of(&mut db, "racy");
    assert_eq!(
        (state.as_str(), error),
        ("SUCCESS", None),
        "the executor's result is kept"
    );
}

// ====================================================== 4. malformed rows

#[test]
fn malformed_rows_are_unverifiable_and_the_rest_of_the_snapshot_is_judged_by_the_binary() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "malformed");
    db.batch_execute("ALTER TABLE tasks ALTER droid_type DROP NOT NULL")
        .unwrap();
    use_pg(&mut w, &url, "5s", "");
    let fine = healthy(&mut w, &mut db, "fine");
    dead(&mut w, &mut db, "gone");
    // Malformed rows naming live processes: reported, never acted on.
    let mut live = vec![fine];
    for (id, spoil) in [
        ("endless", "started_at = 'infinity'"),
        ("limbo", "state = 'LIMBO'"),
        ("nameless", "droid_type = NULL"),
    ] {
        live.push(healthy(&mut w, &mut db, id));
        db.execute(&format!("UPDATE tasks SET {spoil} WHERE id = $1"), &[&id])
            .unwrap();
    }

    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report = out.json();
    assert_eq!(report["tasks_seen"], 5, "{report:#}");
    for (id, why) in [
        ("endless", "unparseable started_at \"infinity\""),
        ("limbo", "unknown state \"LIMBO\""),
        ("nameless", "missing droid_type"),
    ] {
        let f = finding_of(&report, id);
        assert_eq!(
            (&f["kind"], &f["action"], &f["outcome"]),
            (&"unverifiable".into(), &"none".into(), &"reported".into()),
            "{f:#}"
        );
        let reason = f["evidence"]["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("malformed snapshot row") && reason.contains(why),
            "{id}: {reason:?} does not say {why:?}"
        );
        assert_eq!(
            row_of(&mut db, id).0,
            if id == "limbo" { "LIMBO" } else { "RUNNING" }
        );
    }
    let f = finding_of(&report, "gone");
    assert_eq!(
        (&f["kind"], &f["outcome"]),
        (&"dead".into(), &"marked_failed".into()),
        "{f:#}"
    );
    let (state, error, finished) = row_of(&mut db, "gone");
    assert_eq!(state, "FAILED");
    assert!(error.is_some_and(|e| !e.is_empty()) && finished.is_some());
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["task_id"] != "fine"),
        "{report:#}"
    );
    assert_eq!(row_of(&mut db, "fine").0, "RUNNING");
    for pid in live {
        assert!(w.exited(pid).is_none(), "process {pid} was signalled");
    }
}

/// One snapshot from several sources (tables whose `pid` columns have
/// other types), marking through the first: a sweep sees every row at once.
struct Merged(Vec<PostgresExecutor>);

impl Executor for Merged {
    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut rows = Vec::new();
        for e in &self.0 {
            rows.extend(e.snapshot()?.rows);
        }
        Ok(Snapshot { rows })
    }
    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> anyhow::Result<Marked> {
        self.0[0].mark_failed(task, reason, at)
    }
}

#[test]
fn a_pid_column_of_a_type_foreman_does_not_read_makes_its_rows_unverifiable_in_the_same_sweep() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "pid_types");
    db.batch_execute(
        "CREATE TABLE pid_as_text (LIKE tasks INCLUDING DEFAULTS);
         ALTER TABLE pid_as_text ALTER pid TYPE text;
         CREATE TABLE pid_as_numeric (LIKE tasks INCLUDING DEFAULTS);
         ALTER TABLE pid_as_numeric ALTER pid TYPE numeric;",
    )
    .unwrap();
    use_pg(&mut w, &url, "5s", "");
    let fine = healthy(&mut w, &mut db, "fine");
    dead(&mut w, &mut db, "gone");
    let mut live = vec![fine];
    for (id, table, ty) in [
        ("text-pid", "pid_as_text", "text"),
        ("numeric-pid", "pid_as_numeric", "numeric"),
    ] {
        let pid = w.spawn(&["sleep", "300"]);
        live.push(pid);
        db.execute(
            &format!(
                "INSERT INTO {table} (id, droid_type, state, pid, host, started_at, last_progress_at) \
                 VALUES ($1, 'worker', 'RUNNING', CAST($2::text AS {ty}), $3, now(), now())"
            ),
            &[&id, &pid.to_string(), &HOST],
        )
        .unwrap();
    }
    let mut sources = vec![executor(&w)];
    for table in ["pid_as_text", "pid_as_numeric"] {
        let mut cfg = w.config.executor.clone();
        cfg.snapshot_query = Some(format!("SELECT * FROM {table} WHERE host = $1"));
        sources.push(with_config(&w, &cfg, HOST));
    }
    let r = w.sweep_with(&Merged(sources), SCHEDULED);
    assert_eq!(r.snapshot_error, None);
    assert_eq!(r.tasks_seen, 4);
    for (id, why) in [
        ("text-pid", format!("invalid pid \"{}\"", live[1])),
        (
            "numeric-pid",
            "unsupported type numeric: cast it to text or a number in snapshot_query".into(),
        ),
    ] {
        let f = finding(&r, id);
        assert_eq!(
            (f.kind, f.action, f.outcome),
            (Kind::Unverifiable, Action::None, Outcome::Reported),
            "{f:#?}"
        );
        assert!(
            reason(f).contains(&why),
            "{id}: {:?} lacks {why:?}",
            reason(f)
        );
    }
    let f = finding(&r, "gone");
    assert_eq!(
        (f.kind, f.outcome),
        (Kind::Dead, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert_eq!(row_of(&mut db, "gone").0, "FAILED");
    assert_no_finding(&r, "fine");
    for pid in live {
        assert!(w.exited(pid).is_none(), "process {pid} was signalled");
    }
}

// ======================================================= 5. unreachable

#[test]
fn a_stopped_database_is_a_quick_snapshot_error_and_after_its_return_the_next_snapshot_reconnects()
{
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::start();
    let url = pg.create_db("down");
    pg.create_tasks_table(&url);
    let mut db = client(&pg, &url);
    // A long timeout: nothing below may wait for it.
    use_pg(&mut w, &with_password(&url), "20s", "");
    dead(&mut w, &mut db, "gone");
    drop(db);
    let exec = executor(&w);
    assert_eq!(ids(&snap(&exec)), set(&["gone"]));
    pg.stop();

    // The kept connection is lost: that sweep is a snapshot_error.
    let began = Instant::now();
    let r = w.sweep_with(&exec, SCHEDULED);
    let took = began.elapsed();
    let err = r.snapshot_error.as_deref().expect("a snapshot_error");
    assert!(took < Duration::from_secs(3), "{took:?}: {err}");
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.tasks_seen, 0);
    assert!(!err.contains(PASSWORD), "{err}");
    // A fresh executor (as `foreman sweep` opens) is refused at once too.
    let began = Instant::now();
    let r = w.sweep(SCHEDULED);
    let err = r.snapshot_error.as_deref().expect("a snapshot_error");
    assert!(
        err.contains("connecting to PostgreSQL") && err.contains("pg.url"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(began.elapsed() < Duration::from_secs(3), "{err}");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM sweeps WHERE error LIKE 'snapshot_error:%'"),
        2
    );
    assert_eq!(w.count("SELECT COUNT(*) FROM findings"), 0);

    // While it stays down, each attempt is refused at once and the next
    // waits out a backoff capped at the interval (500 ms), answered without
    // a connection.
    let cap = w.config.interval;
    let mut attempts: Vec<Instant> = Vec::new();
    let mut held = 0;
    assert!(wait_until(PATIENCE, || {
        let e = err_text(exec.snapshot(), "a snapshot of a stopped server");
        assert!(!e.contains(PASSWORD), "{e}");
        if e.contains("is unreachable; next attempt in") {
            held += 1;
        } else {
            assert!(e.contains("connecting to PostgreSQL"), "{e}");
            attempts.push(Instant::now());
        }
        attempts.len() >= 4
    }));
    assert!(held > 0, "no attempt was held back");
    // Uncapped, the backoff would double from 1 s: 1, 2, 4 s apart.
    let most = cap * 2 + Duration::from_millis(400);
    for pair in attempts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= cap.mul_f64(0.8) && gap <= most,
            "attempts {gap:?} apart (backoff capped at {cap:?})"
        );
    }

    pg.start_again();
    let back = Instant::now();
    wait_for("a snapshot once the server is back", || {
        exec.snapshot().is_ok()
    });
    assert!(back.elapsed() <= most, "{:?}", back.elapsed());
    let mut db = client(&pg, &url);
    assert_eq!(row_of(&mut db, "gone").0, "RUNNING", "marked while down");
    let r = w.sweep_with(&exec, SCHEDULED);
    let f = finding(&r, "gone");
    assert_eq!(
        (f.kind, f.outcome),
        (Kind::Dead, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert_eq!(row_of(&mut db, "gone").0, "FAILED");
}

// ==================================================== 6. custom queries

const JOBS_SQL: &str = "CREATE TABLE jobs (job_id BIGINT PRIMARY KEY, worker_kind TEXT NOT NULL, \
    status TEXT NOT NULL, os_pid INTEGER, node TEXT, try INTEGER NOT NULL DEFAULT 1, \
    begun TIMESTAMPTZ, beat TIMESTAMPTZ, ended TIMESTAMPTZ, failure TEXT)";

const JOBS_SNAPSHOT: &str = "snapshot_query = '''
SELECT job_id AS id, worker_kind AS droid_type, status AS state, os_pid AS pid, node AS host,
       try AS attempt, begun AS started_at, beat AS last_progress_at, ended AS finished_at,
       failure AS error
FROM jobs
WHERE node = $1 AND (status IN ('RUNNING', 'PENDING') OR ended >= now() - make_interval(secs => $2))'''";

const JOBS_MARK: &str = "mark_failed_query = '''
UPDATE jobs SET status = 'FAILED', ended = $5, failure = $4
WHERE job_id = $1 AND status = 'RUNNING' AND os_pid IS NOT DISTINCT FROM $2 AND try = $3'''";

fn job(
    db: &mut Client,
    id: i64,
    status: &str,
    node: &str,
    pid: Option<i32>,
    started: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
) {
    db.execute(
        "INSERT INTO jobs (job_id, worker_kind, status, os_pid, node, begun, beat, ended) \
         VALUES ($1, 'worker', $2, $3, $4, $5, now(), $6)",
        &[&id, &status, &pid, &node, &started, &ended],
    )
    .unwrap();
}

fn job_row(db: &mut Client, id: i64) -> (String, Option<String>, Option<DateTime<Utc>>) {
    let r = db
        .query_one(
            "SELECT status, failure, ended FROM jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn custom_queries_over_another_schema_take_host_and_window_and_mark_with_five_parameters() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let url = pg.create_db("custom");
    let mut db = client(pg, &url);
    db.batch_execute(JOBS_SQL).unwrap();
    use_pg(&mut w, &url, "5s", &format!("{JOBS_SNAPSHOT}\n{JOBS_MARK}"));
    let fine = w.spawn(&["sleep", "300"]);
    wait_sleeping(fine, "sleep");
    job(
        &mut db,
        1,
        "RUNNING",
        HOST,
        Some(fine),
        process_started_at(fine),
        None,
    );
    let gone = w.spawn_exited(&["true"]);
    job(&mut db, 2, "RUNNING", HOST, Some(gone), before_boot(), None);
    let ended = |secs: i64| Some(now() - chrono::Duration::seconds(secs));
    job(&mut db, 3, "SUCCESS", HOST, None, before_boot(), ended(600));
    job(
        &mut db,
        4,
        "SUCCESS",
        HOST,
        None,
        before_boot(),
        ended(7200),
    );
    job(
        &mut db,
        5,
        "RUNNING",
        "other-host",
        Some(gone),
        before_boot(),
        None,
    );

    let r = w.sweep(SCHEDULED);
    assert_eq!(r.snapshot_error, None);
    assert_eq!(r.tasks_seen, 3, "{:#?}", r.findings);
    let f = finding(&r, "2");
    assert_eq!(
        (f.kind, f.outcome),
        (Kind::Dead, Outcome::MarkedFailed),
        "{f:#?}"
    );
    assert_no_finding(&r, "1");
    assert_no_finding(&r, "5");
    let (status, failure, at) = job_row(&mut db, 2);
    assert_eq!(status, "FAILED");
    assert!(failure.is_some_and(|f| !f.is_empty()));
    let at = at.expect("ended written");
    assert!((now() - at).num_seconds().abs() < 60, "{at}");
    assert_eq!(job_row(&mut db, 5).0, "RUNNING", "another host's job");

    let exec = executor(&w);
    let s = snap(&exec);
    assert_eq!(ids(&s), set(&["1", "2", "3"]));
    assert_eq!(task(&s, "2").state, TaskState::Failed);

    // A snapshot of $1 alone, and a mark of a prefix of the parameters.
    job(&mut db, 6, "RUNNING", HOST, Some(4242), before_boot(), None);
    use_pg(
        &mut w,
        &url,
        "5s",
        "snapshot_query = '''SELECT job_id AS id, worker_kind AS droid_type, status AS state, os_pid AS pid, try AS attempt FROM jobs WHERE node = $1 AND status = 'RUNNING' '''\n\
         mark_failed_query = '''UPDATE jobs SET status = 'FAILED' WHERE job_id = $1 AND status = 'RUNNING' '''",
    );
    let exec = executor(&w);
    let s = snap(&exec);
    assert_eq!(ids(&s), set(&["1", "6"]));
    assert_eq!(
        exec.mark_failed(task(&s, "6"), REASON, Utc::now()).unwrap(),
        Marked::Failed
    );
    assert_eq!(job_row(&mut db, 6), ("FAILED".into(), None, None));
    assert_eq!(
        exec.mark_failed(task(&s, "6"), REASON, Utc::now()).unwrap(),
        Marked::NotRunning
    );
}

#[test]
fn a_query_wanting_parameters_foreman_does_not_give_is_a_clear_error() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let url = pg.create_db("custom_bad");
    let mut db = client(pg, &url);
    db.batch_execute(JOBS_SQL).unwrap();
    job(&mut db, 1, "RUNNING", HOST, Some(4242), before_boot(), None);

    use_pg(
        &mut w,
        &url,
        "5s",
        &format!(
            "snapshot_query = '''SELECT job_id AS id, worker_kind AS droid_type, status AS state FROM jobs \
             WHERE node = $1 AND $2::float8 > 0 AND try > $3::int'''\n{JOBS_MARK}"
        ),
    );
    let e = err_text(executor(&w).snapshot(), "a snapshot wanting $3");
    assert!(
        e.contains("the snapshot query takes 3 parameters; Foreman gives two: $1 this host, $2 the history window in seconds"),
        "{e}"
    );
    // Through a sweep: a snapshot_error, nothing else.
    let r = w.sweep(SCHEDULED);
    assert!(
        r.snapshot_error
            .as_deref()
            .is_some_and(|s| s.contains("takes 3 parameters")),
        "{:?}",
        r.snapshot_error
    );

    use_pg(
        &mut w,
        &url,
        "5s",
        &format!(
            "{JOBS_SNAPSHOT}\nmark_failed_query = '''UPDATE jobs SET status = 'FAILED', failure = $6::text \
             WHERE job_id = $1 AND os_pid = $2 AND try = $3 AND $4::text <> '' AND ended IS NOT DISTINCT FROM $5'''"
        ),
    );
    let exec = executor(&w);
    let s = snap(&exec);
    let e = err_text(
        exec.mark_failed(task(&s, "1"), REASON, Utc::now()),
        "a mark wanting $6",
    );
    assert!(
        e.contains("the mark-failed query takes 6 parameters; Foreman gives five: $1 id, $2 pid, $3 attempt, $4 reason, $5 finished_at"),
        "{e}"
    );
    assert_eq!(job_row(&mut db, 1).0, "RUNNING");

    // $2 where PostgreSQL wants a NUMERIC: told how to cast it.
    use_pg(
        &mut w,
        &url,
        "5s",
        &format!(
            "snapshot_query = '''SELECT job_id AS id, worker_kind AS droid_type, status AS state FROM jobs \
             WHERE node = $1 AND (status = 'RUNNING' OR extract(epoch FROM ended) >= extract(epoch FROM now()) - $2)'''\n{JOBS_MARK}"
        ),
    );
    let e = err_text(executor(&w).snapshot(), "a numeric $2");
    assert!(e.contains("cast it, e.g. $2::float8"), "{e}");
}

// ========================================== 7. round trips, no transaction

/// A TCP forwarder to a cluster that counts the round trips its clients
/// make, read off the wire: each ends with the client's Sync (extended
/// protocol) or is one Query (simple protocol). A batch of Close messages
/// alone is not one: tokio-postgres frees a dropped statement so, sending
/// it with the next request and never waiting for its answer. Plain
/// connections only.
struct Wire {
    port: u16,
    trips: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Wire {
    fn to(pg: &Pg) -> Wire {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = pg.port();
        let trips = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let acceptor = {
            let (trips, stop, conns) = (trips.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
                        continue;
                    };
                    let mut held = conns.lock().unwrap_or_else(PoisonError::into_inner);
                    held.push(client.try_clone().unwrap());
                    held.push(server.try_clone().unwrap());
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || relay(s2, c2, None));
                    let trips = trips.clone();
                    std::thread::spawn(move || relay(client, server, Some(&trips)));
                }
            })
        };
        Wire {
            port,
            trips,
            stop,
            conns,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self, db_url: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
            self.port,
            db_name(db_url)
        )
    }

    fn trips(&self) -> u64 {
        self.trips.load(Ordering::SeqCst)
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for s in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copy `from` to `to`; when `trips` is given, count the frontend's
/// round trips (before forwarding: a reply cannot come before its count).
fn relay(mut from: TcpStream, mut to: TcpStream, trips: Option<&AtomicU64>) {
    let mut buf = [0u8; 16 * 1024];
    let mut pending = Vec::new();
    let mut started = false;
    // Messages since the last Sync other than Close.
    let mut asked = false;
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(trips) = trips {
            pending.extend_from_slice(&buf[..n]);
            loop {
                let be = |at: usize| u32::from_be_bytes(pending[at..at + 4].try_into().unwrap());
                if !started {
                    // Untyped: an SSL or GSS request, then the startup message.
                    if pending.len() < 8 || pending.len() < be(0) as usize {
                        break;
                    }
                    let (len, code) = (be(0) as usize, be(4));
                    started = !matches!(code, 80_877_103 | 80_877_104);
                    pending.drain(..len);
                } else {
                    if pending.len() < 5 || pending.len() < 1 + be(1) as usize {
                        break;
                    }
                    match pending[0] {
                        b'Q' => {
                            trips.fetch_add(1, Ordering::SeqCst);
                        }
                        b'S' => {
                            if std::mem::take(&mut asked) {
                                trips.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        b'C' => {}
                        _ => asked = true,
                    }
                    let len = 1 + be(1) as usize;
                    pending.drain(..len);
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
fn a_snapshot_and_a_mark_are_one_round_trip_each_and_no_transaction_is_left_open() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "trips");
    for id in ["one", "two"] {
        CONTRACT.insert(
            &mut db,
            &NewRow {
                pid: Some(4242),
                ..NewRow::running(id)
            },
        );
    }
    let wire = Wire::to(pg);
    use_pg(&mut w, &wire.url(&url), "5s", "");
    let exec = executor(&w);
    snap(&exec);
    assert_eq!(sessions(&mut db), idle());

    // (counted by the executor, seen on the wire) since the last look.
    let mut last = (exec.round_trips(), wire.trips());
    let mut costs = || {
        let now = (exec.round_trips(), wire.trips());
        let spent = (now.0 - last.0, now.1 - last.1);
        last = now;
        spent
    };
    let s = snap(&exec);
    assert_eq!(costs(), (1, 1), "a snapshot");
    assert_eq!(ids(&s), set(&["one", "two"]));
    assert_eq!(sessions(&mut db), idle(), "after a snapshot");
    // A history (the wellbeing sweep's look) frees the statements it
    // made: the next snapshot is still one round trip.
    exec.history(Duration::from_secs(60)).unwrap();
    costs();
    snap(&exec);
    assert_eq!(costs(), (1, 1), "a snapshot after a history");
    assert_eq!(
        exec.mark_failed(task(&s, "one"), REASON, Utc::now())
            .unwrap(),
        Marked::Failed
    );
    assert_eq!(costs(), (1, 1), "a mark");
    assert_eq!(sessions(&mut db), idle(), "after a mark");
    assert_eq!(
        exec.mark_failed(task(&s, "one"), REASON, Utc::now())
            .unwrap(),
        Marked::NotRunning
    );
    assert_eq!(costs(), (1, 1), "a mark that changes nothing");
    assert_eq!(sessions(&mut db), idle(), "one connection, kept idle");
    // The mark is committed: another session sees it at once.
    assert_eq!(row_of(&mut db, "one").0, "FAILED");
}

/// A column added under `SELECT *` makes the prepared snapshot stale: that
/// snapshot fails, the next prepares afresh.
#[test]
fn a_column_added_under_the_prepared_snapshot_costs_one_snapshot() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "stale");
    CONTRACT.insert(
        &mut db,
        &NewRow {
            pid: Some(4242),
            ..NewRow::running("steady")
        },
    );
    use_pg(&mut w, &url, "5s", "");
    let exec = executor(&w);
    snap(&exec);
    db.batch_execute("ALTER TABLE tasks ADD COLUMN queue TEXT")
        .unwrap();
    let e = err_text(exec.snapshot(), "a snapshot of a changed table");
    assert!(e.contains("cached plan must not change result type"), "{e}");
    let s = snap(&exec);
    assert_eq!(ids(&s), set(&["steady"]));
    assert_eq!(
        exec.mark_failed(task(&s, "steady"), REASON, Utc::now())
            .unwrap(),
        Marked::Failed
    );
}

// ============================================================ 8. timeouts

#[test]
fn a_slow_snapshot_and_a_locked_row_fail_within_the_timeout_and_leave_the_row_alone() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "timeouts");
    CONTRACT.insert(
        &mut db,
        &NewRow {
            pid: Some(4242),
            ..NewRow::running("locked")
        },
    );
    use_pg(&mut w, &url, "1s", "");
    let exec = executor(&w);
    let s = snap(&exec);
    let locked = task(&s, "locked");

    // Another session holds the row (an executor's open transaction).
    let mut holder = client(pg, &url);
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "UPDATE tasks SET last_progress_at = now() WHERE id = 'locked'",
        &[],
    )
    .unwrap();
    let (result, took) = std::thread::scope(|scope| {
        let marking = scope.spawn(|| {
            let began = Instant::now();
            let r = exec.mark_failed(locked, REASON, Utc::now());
            (r, began.elapsed())
        });
        // It waits for the row lock, as the server sees it, and no longer
        // than the timeout.
        let mut waited = false;
        wait_for("Foreman's mark to wait on the row lock, or end", || {
            waited = waited
                || backends(&mut db, HOST)
                    .iter()
                    .any(|b| b.wait_event_type.as_deref() == Some("Lock"));
            waited || marking.is_finished()
        });
        assert!(waited, "the mark never waited on the row lock");
        marking.join().unwrap()
    });
    let e = err_text(result, "a mark of a locked row");
    assert!(
        e.contains("canceling statement due to") && e.contains("timeout"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    tx.rollback().unwrap();
    assert_eq!(row_of(&mut db, "locked"), ("RUNNING".into(), None, None));
    // The connection outlived it: once the lock is gone the mark works.
    assert_eq!(
        exec.mark_failed(locked, REASON, Utc::now()).unwrap(),
        Marked::Failed
    );

    // A snapshot that would take 30 s is cancelled by the server.
    CONTRACT.insert(&mut db, &NewRow::running("slow"));
    use_pg(
        &mut w,
        &url,
        "1s",
        "snapshot_query = '''SELECT * FROM tasks WHERE host = $1 AND pg_sleep(30) IS NOT NULL'''",
    );
    let slow = executor(&w);
    let began = Instant::now();
    let e = err_text(slow.snapshot(), "a 30 s snapshot");
    assert!(
        e.contains("canceling statement due to statement timeout"),
        "{e}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    let began = Instant::now();
    let r = w.sweep(SCHEDULED);
    assert!(
        r.snapshot_error
            .as_deref()
            .is_some_and(|e| e.contains("statement timeout")),
        "{:?}",
        r.snapshot_error
    );
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert!(r.findings.is_empty());
}

// ================================================================= 9. TLS

/// A CA of its own (EC P-256), which signed nothing the server holds.
fn other_ca(w: &World) -> std::path::PathBuf {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=Some other CA",
            "-days",
            "2",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
        ])
        .current_dir(w.dir.path())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    w.path("other-ca.crt")
}

#[test]
fn tls_by_sslmode_and_a_certificate_foreman_cannot_verify_is_named_never_the_password() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::start_tls();
    let ca = pg.ca_path().expect("a TLS cluster has a CA").to_path_buf();
    let url = pg.create_db("tls");
    pg.create_tasks_table(&url);
    let mut db = client(&pg, &url);
    CONTRACT.insert(&mut db, &NewRow::running("t-1"));
    let (port, name) = (pg.port(), db_name(&url));
    let gone = |db: &mut Client| {
        wait_for("Foreman's session to end", || backends(db, HOST).is_empty());
    };

    for (what, url) in [
        (
            "sslmode=require",
            format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/{name}?sslmode=require"),
        ),
        (
            "verify-full by name",
            format!(
                "postgres://postgres:{PASSWORD}@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
        ),
        (
            "verify-full by address",
            format!(
                "postgres://postgres:{PASSWORD}@127.0.0.1:{port}/{name}?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
        ),
    ] {
        use_pg(&mut w, &url, "5s", "");
        let exec = executor(&w);
        assert_eq!(
            ids(&exec
                .snapshot()
                .unwrap_or_else(|e| panic!("{what}: {e:#}"))),
            set(&["t-1"]),
            "{what}"
        );
        let b = backends(&mut db, HOST);
        assert_eq!(
            b.iter().map(|b| b.ssl).collect::<Vec<_>>(),
            vec![Some(true)],
            "{what}: {b:?}"
        );
        drop(exec);
        gone(&mut db);
    }

    // Another CA, or the public roots: refused, naming the certificate.
    let other = other_ca(&w);
    for (what, query) in [
        (
            "another CA",
            format!("sslmode=verify-full&sslrootcert={}", other.display()),
        ),
        ("the public roots", "sslmode=verify-full".to_string()),
    ] {
        use_pg(
            &mut w,
            &format!("postgres://postgres:{PASSWORD}@localhost:{port}/{name}?{query}"),
            "5s",
            "",
        );
        let e = err_text(executor(&w).snapshot(), what);
        assert!(
            e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
            "{what}: {e}"
        );
        assert!(!e.contains(PASSWORD), "{what}: {e}");
        assert!(backends(&mut db, HOST).is_empty(), "{what}: a session");
    }

    // The binary says so too (a snapshot_error, exit 3), and nowhere the
    // password: not on stdout, stderr or in the activity log.
    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(3), "{out:#?}");
    let report = out.json();
    assert!(
        report["snapshot_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid peer certificate")),
        "{report:#}"
    );
    assert!(!out.stdout.contains(PASSWORD), "{}", out.stdout);
    assert!(!out.stderr.contains(PASSWORD), "{}", out.stderr);
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM sweeps WHERE error LIKE '%certificate%' AND error NOT LIKE '%{PASSWORD}%'"
        )),
        1
    );
    assert_eq!(row_of(&mut db, "t-1").0, "RUNNING");
}

// ========================================================== 10. the fleet

fn beat_of(boot_id: &str, error: Option<&str>) -> Beat {
    Beat {
        boot_id: boot_id.into(),
        version: "9.9.9-test".into(),
        pid: 4242,
        started_at: Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap(),
        last_sweep_at: Some(Utc.with_ymd_and_hms(2026, 3, 1, 10, 5, 0).unwrap()),
        running: 3,
        findings: 2,
        actions: 1,
        snapshot_error: error.map(str::to_string),
    }
}

#[test]
fn the_fleet_row_carries_the_databases_time_and_one_foreman_leads_until_its_connection_closes() {
    let Some(mut w) = locked_world() else { return };
    let pg = Pg::shared();
    let (url, mut db) = contract_db(pg, "fleet_table");
    use_pg(&mut w, &url, "5s", "");
    let a = executor_as(&w, "host-a");
    let b = executor_as(&w, "host-b");
    let db_now =
        |db: &mut Client| -> DateTime<Utc> { db.query_one("SELECT now()", &[]).unwrap().get(0) };

    let before = db_now(&mut db);
    let a_leads = a
        .fleet()
        .expect("kind = \"postgres\" is a fleet")
        .beat(&beat_of("boot-a", None))
        .unwrap();
    let after = db_now(&mut db);
    let r = db
        .query_one(
            "SELECT boot_id, version, pid, started_at, last_seen, last_sweep_at, running, findings, actions, \
             snapshot_error FROM foreman.foreman_hosts WHERE host = 'host-a'",
            &[],
        )
        .unwrap();
    let want = beat_of("boot-a", None);
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i64>(2),
            r.get::<_, DateTime<Utc>>(3),
            r.get::<_, Option<DateTime<Utc>>>(5),
            (r.get::<_, i64>(6), r.get::<_, i64>(7), r.get::<_, i64>(8)),
            r.get::<_, Option<String>>(9)
        ),
        (
            want.boot_id,
            want.version,
            4242,
            want.started_at,
            want.last_sweep_at,
            (3, 2, 1),
            None
        )
    );
    let seen: DateTime<Utc> = r.get(4);
    assert!(
        before <= seen && seen <= after,
        "last_seen {seen} is not the database's now() ({before} .. {after})"
    );

    let b_leads = b
        .fleet()
        .unwrap()
        .beat(&beat_of("boot-b", Some("snapshot_error: x")))
        .unwrap();
    assert_eq!((a_leads, b_leads), (true, false), "exactly one leads");
    // Beating again changes nothing: the leader keeps the lock (held once),
    // the other still does not get it.
    for _ in 0..2 {
        assert!(a.fleet().unwrap().beat(&beat_of("boot-a", None)).unwrap());
        assert!(!b.fleet().unwrap().beat(&beat_of("boot-b", None)).unwrap());
    }
    assert!(a.fleet().unwrap().leads() && !b.fleet().unwrap().leads());
    assert_eq!(leaders(&mut db), vec!["foreman@host-a".to_string()]);
    assert_eq!(
        db.query_one("SELECT count(*) FROM foreman.foreman_hosts", &[])
            .unwrap()
            .get::<_, i64>(0),
        2
    );
    assert_eq!(
        b.fleet().unwrap().view().unwrap().leader.as_deref(),
        Some("host-a")
    );

    // The leader's connection closes: PostgreSQL releases its lock, and
    // the other takes it on its next beat.
    drop(a);
    wait_for("host-a's lock to be released", || {
        leaders(&mut db).is_empty()
    });
    assert!(b.fleet().unwrap().beat(&beat_of("boot-b", None)).unwrap());
    assert_eq!(leaders(&mut db), vec!["foreman@host-b".to_string()]);
    assert_eq!(
        b.fleet().unwrap().view().unwrap().leader.as_deref(),
        Some("host-b")
    );
}
