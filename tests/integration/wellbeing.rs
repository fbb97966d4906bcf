//! The wellbeing sweep end to end, through the real binary: a healthy fleet
//! files nothing; each check fires on its own situation; several problems
//! file one initiative, delivered once to a real webhook receiver, a file
//! sink and a command sink; a slot is filed once however often (and however
//! concurrently) it is run, and across a crash between recording and
//! delivering; the daemon catches up a missed slot once and runs its
//! schedule; a bad cron expression is a configuration error; a dry run
//! records nothing.

use crate::cli::{
    before_boot, reaped_pid, run, toml_array, wait_for, wait_until, Out, Running, Sleeper, World,
    HOST, PATIENCE,
};
use crate::receiver::Receiver;
use chrono::{DateTime, Duration as Span, SecondsFormat, Timelike, Utc};
use rusqlite::{params, Connection};
use serde_json::Value;
use std::collections::BTreeSet;

// ---------------------------------------------------------------- helpers

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn mins_ago(m: i64) -> DateTime<Utc> {
    Utc::now() - Span::minutes(m)
}

fn hours_ago(h: i64) -> DateTime<Utc> {
    Utc::now() - Span::hours(h)
}

/// `foreman.toml`: `top` before the first table, then `[executor]` (its
/// whole body), `[activity]`, and `rest` (droid types, `[wellbeing]`,
/// sinks).
fn configure_with(w: &World, top: &str, executor: &str, rest: &str) {
    w.write(
        "foreman.toml",
        &format!(
            "host = \"{HOST}\"\nmax_cpu_pressure = 100.0\n{top}\n\n\
             [executor]\n{executor}\n\n[activity]\npath = \"foreman.db\"\n\n{rest}\n"
        ),
    );
}

/// The same with the scratch SQLite executor `executor.db`.
fn configure(w: &World, top: &str, rest: &str) {
    configure_with(w, top, "kind = \"sqlite\"\npath = \"executor.db\"", rest);
}

/// The executor's database (the contract's `tasks`) with the optional
/// `created_at` column.
fn executor(w: &World) -> Connection {
    let db = w.executor();
    db.execute_batch("ALTER TABLE tasks ADD COLUMN created_at TEXT")
        .expect("add created_at");
    db
}

/// The executor's optional `droid_types (name, enabled)` table.
fn droid_types_table(db: &Connection, types: &[(&str, bool)]) {
    db.execute_batch("CREATE TABLE droid_types (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL)")
        .expect("droid_types");
    for (name, on) in types {
        db.execute(
            "INSERT INTO droid_types (name, enabled) VALUES (?1, ?2)",
            params![name, *on as i64],
        )
        .expect("droid_types row");
    }
}

/// One row of the executor's `tasks`.
struct Task {
    id: String,
    droid_type: String,
    state: &'static str,
    plan: Option<String>,
    pid: Option<i32>,
    started: Option<String>,
    heartbeat: Option<String>,
    finished: Option<String>,
    created: Option<String>,
    error: Option<String>,
}

fn task(id: &str, droid_type: &str, state: &'static str) -> Task {
    Task {
        id: id.into(),
        droid_type: droid_type.into(),
        state,
        plan: None,
        pid: None,
        started: None,
        heartbeat: None,
        finished: None,
        created: None,
        error: None,
    }
}

impl Task {
    fn plan(mut self, p: &str) -> Self {
        self.plan = Some(p.into());
        self
    }
    fn pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }
    fn started(mut self, t: DateTime<Utc>) -> Self {
        self.started = Some(ts(t));
        self
    }
    fn started_text(mut self, t: String) -> Self {
        self.started = Some(t);
        self
    }
    fn heartbeat(mut self, t: DateTime<Utc>) -> Self {
        self.heartbeat = Some(ts(t));
        self
    }
    fn finished(mut self, t: DateTime<Utc>) -> Self {
        self.finished = Some(ts(t));
        self
    }
    fn created(mut self, t: DateTime<Utc>) -> Self {
        self.created = Some(ts(t));
        self
    }
    fn error(mut self, e: &str) -> Self {
        self.error = Some(e.into());
        self
    }
    fn insert(self, db: &Connection) {
        db.execute(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at,
                                last_progress_at, finished_at, error, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10)",
            params![
                self.id,
                self.plan,
                self.droid_type,
                self.state,
                self.pid,
                self.started,
                self.heartbeat,
                self.finished,
                self.error,
                self.created
            ],
        )
        .unwrap_or_else(|e| panic!("insert task {}: {e}", self.id));
    }
}

/// `ok` successes and `failed` failures of `droid_type`, each started
/// 3h ago and finished 2h ago (well inside the 24h window).
fn finished_tasks(db: &Connection, droid_type: &str, ok: usize, failed: usize) {
    for i in 0..ok + failed {
        let (state, error) = if i < ok {
            ("SUCCESS", None)
        } else {
            ("FAILED", Some("exit 1"))
        };
        let mut t = task(&format!("{droid_type}-done-{i}"), droid_type, state)
            .started(hours_ago(3))
            .finished(hours_ago(2) + Span::minutes(i as i64));
        if let Some(e) = error {
            t = t.error(e);
        }
        t.insert(db);
    }
}

/// `foreman sweep`, which must exit 0.
fn sweep(w: &World) {
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "foreman sweep: {out:#?}");
}

/// `foreman wellbeing --json ARGS`: the output and its JSON report.
fn wellbeing(w: &World, args: &[&str]) -> (Out, Value) {
    let mut all = vec!["wellbeing", "--json"];
    all.extend_from_slice(args);
    let out = run(&mut w.foreman(&all));
    let report = out.json();
    (out, report)
}

/// "droid_type alpha", "plan p-1" or "foreman".
fn subject(c: &Value) -> String {
    let scope = c["subject"]["scope"].as_str().unwrap_or("?");
    match c["subject"]["name"].as_str() {
        Some(name) => format!("{scope} {name}"),
        None => scope.to_string(),
    }
}

/// The check `name` about `subject` in a report; fails with every check.
fn check<'a>(report: &'a Value, subj: &str, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|c| subject(c) == subj && c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} of {subj} in {:#}", report["checks"]))
}

/// Assert a check's status, showing it whole when it differs.
fn assert_status(report: &Value, subj: &str, name: &str, status: &str) -> Value {
    let c = check(report, subj, name);
    assert_eq!(c["status"], status, "{subj} {name}: {c:#}");
    c.clone()
}

/// Every check that is an issue, as "SUBJECT/CHECK".
fn issues(report: &Value) -> BTreeSet<String> {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .filter(|c| c["status"] == "issue")
        .map(|c| format!("{}/{}", subject(c), c["check"].as_str().unwrap_or("?")))
        .collect()
}

fn assert_issues(report: &Value, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(issues(report), want, "checks: {:#}", report["checks"]);
    assert_eq!(report["issues"], want.len(), "{report:#}");
}

/// A `[[wellbeing.sinks]]` webhook with short retries.
fn webhook_sink(name: &str, url: &str) -> String {
    format!(
        "[[wellbeing.sinks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n\
         timeout = \"2s\"\nretry_base = \"100ms\"\nretry_cap = \"300ms\"\n"
    )
}

/// The activity log's strings of one query, row by row.
fn log_rows(w: &World, sql: &str) -> Vec<Vec<Option<String>>> {
    let db = w.activity().expect("the activity log exists");
    let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                    rusqlite::types::Value::Null => None,
                    rusqlite::types::Value::Integer(v) => Some(v.to_string()),
                    rusqlite::types::Value::Real(v) => Some(v.to_string()),
                    rusqlite::types::Value::Text(t) => Some(t),
                    rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
                })
            })
            .collect()
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn count(w: &World, sql: &str) -> i64 {
    w.log_i64(sql)
        .unwrap_or_else(|| panic!("no answer to {sql}"))
}

/// Every table of the activity log, every row, for "nothing changed".
fn dump(w: &World) -> Vec<(String, Vec<String>)> {
    let db = w.activity().expect("the activity log exists");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("tables");
    tables
        .into_iter()
        .map(|t| {
            let mut rows: Vec<String> = log_rows(w, &format!("SELECT * FROM \"{t}\""))
                .into_iter()
                .map(|r| format!("{r:?}"))
                .collect();
            rows.sort();
            (t, rows)
        })
        .collect()
}

/// Create the activity log (migrated) without a sweep in it.
fn create_activity_log(w: &World) {
    foreman::activity::ActivityLog::open(&w.activity_path()).expect("create the activity log");
}

/// Record a finished sweep that started at `at`, as the daemon would have.
fn insert_sweep(w: &World, at: DateTime<Utc>) {
    Connection::open(w.activity_path())
        .expect("open the activity log")
        .execute(
            "INSERT INTO sweeps (kind, host, mode, started_at, finished_at) VALUES ('scheduled', ?1, 'enforce', ?2, ?3)",
            params![HOST, ts(at), ts(at + Span::seconds(1))],
        )
        .expect("insert a sweep");
}

/// The latest 06:00 UTC at or before now: the slot `"0 0 6 * * *"` in UTC
/// is for.
fn latest_six() -> DateTime<Utc> {
    let now = Utc::now();
    let today = now
        .date_naive()
        .and_hms_opt(6, 0, 0)
        .expect("06:00")
        .and_utc();
    if today <= now {
        today
    } else {
        today - Span::days(1)
    }
}

fn slot_id(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

/// The base of most scenarios: `alpha`, configured, with five recent
/// successes, and `rest` of the configuration after it.
fn base(w: &World, rest: &str) -> Connection {
    configure(w, "", &format!("[droid_types.alpha]\n\n{rest}"));
    let db = executor(w);
    finished_tasks(&db, "alpha", 5, 0);
    db
}

// ------------------------------------------------------- a healthy fleet

#[test]
fn a_healthy_fleet_files_nothing_and_records_a_healthy_run() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = World::new();
    configure(
        &w,
        "",
        &format!(
            "[droid_types.alpha]\n[droid_types.beta]\n\n[wellbeing]\ntimezone = \"UTC\"\n\n{}",
            webhook_sink("tracker", &receiver.url())
        ),
    );
    let live = Sleeper::start();
    let db = executor(&w);
    droid_types_table(&db, &[("alpha", true), ("beta", true)]);
    finished_tasks(&db, "alpha", 5, 0);
    finished_tasks(&db, "beta", 5, 0);
    let now = Utc::now();
    task("live-1", "alpha", "RUNNING")
        .plan("flow")
        .pid(live.pid())
        .started(now)
        .heartbeat(now)
        .created(mins_ago(1))
        .insert(&db);
    task("next-1", "beta", "PENDING")
        .plan("flow")
        .created(mins_ago(5))
        .insert(&db);
    sweep(&w);
    assert_eq!(
        count(&w, "SELECT COUNT(*) FROM findings"),
        0,
        "the sweep left the live task alone"
    );

    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_issues(&report, &[]);
    assert_eq!(report["outcome"], "healthy");
    assert_eq!(report["kind"], "manual");
    assert_eq!(report["host"], HOST);
    assert!(report["initiative"].is_null(), "{report:#}");
    assert_eq!(report["filed"]["result"], "recorded", "{report:#}");
    assert!(report["filed"]["initiative_id"].is_null(), "{report:#}");
    for t in ["droid_type alpha", "droid_type beta"] {
        for c in ["enabled", "active", "failure_rate", "findings", "dispatch"] {
            assert_status(&report, t, c, "ok");
        }
    }
    assert_eq!(
        check(&report, "droid_type alpha", "active")["evidence"]["running"],
        1
    );
    assert_eq!(
        check(&report, "droid_type beta", "dispatch")["evidence"]["pending"],
        1
    );
    assert_eq!(
        check(&report, "droid_type alpha", "failure_rate")["evidence"]["finished"],
        5
    );
    assert_status(&report, "plan flow", "stuck_plan", "ok");
    for c in ["executor", "sweeps", "sweep_errors", "outbox"] {
        assert_status(&report, "foreman", c, "ok");
    }

    // Recorded, healthy, with its checks; no initiative, nothing queued.
    let run_id = report["run_id"].as_str().expect("run_id");
    assert!(run_id.starts_with("manual-"), "{run_id}");
    let rows = log_rows(
        &w,
        "SELECT id, kind, host, slot_at, outcome, issues, checks FROM wellbeing_runs",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r[0].as_deref(), Some(run_id));
    assert_eq!(r[1].as_deref(), Some("manual"));
    assert_eq!(r[2].as_deref(), Some(HOST));
    assert_eq!(r[3], None, "a manual run has no slot");
    assert_eq!(r[4].as_deref(), Some("healthy"));
    assert_eq!(r[5].as_deref(), Some("0"));
    let checks: Value = serde_json::from_str(r[6].as_deref().expect("checks")).expect("JSON");
    assert_eq!(
        checks, report["checks"],
        "the checks are recorded as reported"
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM initiatives"), 0);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM alerts"), 0);
    assert!(
        receiver.requests().is_empty(),
        "nothing is delivered when all is well: {:?}",
        receiver.requests()
    );
    // The text form says so too.
    let out = run(&mut w.foreman(&["wellbeing"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("all well"), "{}", out.stdout);
    assert!(out.stdout.contains("Nothing filed."), "{}", out.stdout);
}

// --------------------------------------------- each check on its own

/// A world from `base` plus `setup`, swept once (so Foreman's own checks
/// pass), then `foreman wellbeing --json`, which must exit 1.
fn one_problem(rest: &str, setup: impl FnOnce(&Connection)) -> (World, Value) {
    let w = World::new();
    let db = base(&w, rest);
    setup(&db);
    drop(db);
    sweep(&w);
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "issues exit 1: {out:#?}");
    assert_eq!(report["outcome"], "issues");
    (w, report)
}

#[test]
fn a_configured_droid_type_without_a_task_in_the_window_is_inactive() {
    let _g = crate::spawning();
    let (_w, report) = one_problem("[droid_types.idle]\n", |db| {
        // Its last run is older than the window (24h).
        task("idle-old", "idle", "SUCCESS")
            .started(hours_ago(30))
            .finished(hours_ago(29))
            .insert(db);
    });
    assert_issues(&report, &["droid_type idle/active"]);
    let c = check(&report, "droid_type idle", "active");
    assert_eq!(c["severity"], "warning");
    assert_eq!(c["evidence"]["started_in_window"], 0);
    assert_eq!(c["evidence"]["running"], 0);
    assert!(
        c["summary"]
            .as_str()
            .is_some_and(|s| s.contains("no task started in the last 1d")),
        "{c:#}"
    );
    assert!(
        c["action"].is_string(),
        "an issue suggests an action: {c:#}"
    );
}

#[test]
fn four_failures_in_six_is_a_failure_rate_issue() {
    let _g = crate::spawning();
    let (_w, report) = one_problem("", |db| finished_tasks(db, "flaky", 2, 4));
    assert_issues(&report, &["droid_type flaky/failure_rate"]);
    let c = check(&report, "droid_type flaky", "failure_rate");
    assert_eq!(c["severity"], "critical");
    assert_eq!(c["evidence"]["failed"], 4);
    assert_eq!(c["evidence"]["finished"], 6);
    assert!(
        c["summary"]
            .as_str()
            .is_some_and(|s| s.contains("4 of 6 finished tasks failed")),
        "{c:#}"
    );
    assert_eq!(c["evidence"]["recent_failures"][0]["error"], "exit 1");
    // Alpha, all successes, is fine by the same measure.
    assert_status(&report, "droid_type alpha", "failure_rate", "ok");
}

#[test]
fn more_dead_findings_than_max_findings_from_real_sweeps_is_an_issue() {
    let _g = crate::spawning();
    let w = World::new();
    let db = base(&w, "[wellbeing]\nmax_findings = 2\n");
    // Tasks whose processes crashed (reaped pids), started after this boot:
    // each sweep finds them `dead` and, within exit grace, waits.
    let crashed = |db: &Connection, id: &str| {
        task(id, "crashy", "RUNNING")
            .pid(reaped_pid())
            .started(crate::common::after_boot(600))
            .heartbeat(crate::common::after_boot(600))
            .insert(db)
    };
    crashed(&db, "crash-1");
    crashed(&db, "crash-2");
    sweep(&w);
    // Two findings are within the limit.
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let c = assert_status(&report, "droid_type crashy", "findings", "ok");
    assert_eq!(c["evidence"]["findings"], 2, "{c:#}");

    crashed(&db, "crash-3");
    sweep(&w);
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM findings WHERE kind = 'dead' AND droid_type = 'crashy'"
        ),
        3
    );
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_issues(&report, &["droid_type crashy/findings"]);
    let c = check(&report, "droid_type crashy", "findings");
    assert_eq!(c["severity"], "warning");
    assert_eq!(c["evidence"]["findings"], 3, "{c:#}");
    assert_eq!(c["evidence"]["by_kind"]["dead"], 3, "{c:#}");
    assert_eq!(c["evidence"]["max_findings"], 2, "{c:#}");
    // Still running in the executor's eyes: active.
    assert_status(&report, "droid_type crashy", "active", "ok");
}

#[test]
fn a_task_pending_for_two_hours_was_never_dispatched() {
    let _g = crate::spawning();
    let (_w, report) = one_problem("", |db| {
        task("backlog-ran", "backlog", "SUCCESS")
            .started(hours_ago(1))
            .finished(mins_ago(50))
            .insert(db);
        task("backlog-late", "backlog", "PENDING")
            .created(hours_ago(2))
            .insert(db);
        task("backlog-fresh", "backlog", "PENDING")
            .created(mins_ago(10))
            .insert(db);
    });
    assert_issues(&report, &["droid_type backlog/dispatch"]);
    let c = check(&report, "droid_type backlog", "dispatch");
    assert_eq!(c["severity"], "critical");
    assert_eq!(c["evidence"]["pending"], 2, "{c:#}");
    assert_eq!(c["evidence"]["late"], 1, "{c:#}");
    assert_eq!(
        c["evidence"]["oldest"][0]["task_id"], "backlog-late",
        "{c:#}"
    );
    assert_status(&report, "droid_type alpha", "dispatch", "ok");
}

#[test]
fn a_plan_with_a_failed_task_and_pending_work_nobody_picks_up_is_stuck() {
    let _g = crate::spawning();
    let (_w, report) = one_problem("[wellbeing]\ndispatch_timeout = \"6h\"\n", |db| {
        task("p-1", "alpha", "FAILED")
            .plan("p-stuck")
            .started(hours_ago(4))
            .finished(hours_ago(3))
            .created(hours_ago(5))
            .error("exit 2")
            .insert(db);
        for id in ["p-2", "p-3"] {
            task(id, "alpha", "PENDING")
                .plan("p-stuck")
                .created(hours_ago(5))
                .insert(db);
        }
    });
    assert_issues(&report, &["plan p-stuck/stuck_plan"]);
    let c = check(&report, "plan p-stuck", "stuck_plan");
    assert_eq!(c["severity"], "critical");
    assert_eq!(c["evidence"]["pending"], 2, "{c:#}");
    assert_eq!(c["evidence"]["running"], 0, "{c:#}");
    assert_eq!(c["evidence"]["failed"], 1, "{c:#}");
    assert_eq!(
        c["evidence"]["recent_failures"][0]["task_id"], "p-1",
        "{c:#}"
    );
    assert_eq!(c["droid_types"], serde_json::json!(["alpha"]), "{c:#}");
    assert!(
        c["summary"]
            .as_str()
            .is_some_and(|s| s.contains("after 1 failed task(s)")),
        "{c:#}"
    );
}

#[test]
fn a_droid_type_disabled_in_the_executor_but_enabled_here_is_a_mismatch() {
    let _g = crate::spawning();
    let (_w, report) = one_problem("[droid_types.beta]\n", |db| {
        droid_types_table(db, &[("alpha", true), ("beta", false)]);
    });
    assert_issues(&report, &["droid_type beta/enabled"]);
    let c = check(&report, "droid_type beta", "enabled");
    assert_eq!(c["severity"], "warning");
    assert_eq!(c["evidence"]["executor_enabled"], false, "{c:#}");
    assert_eq!(c["evidence"]["foreman_enabled"], true, "{c:#}");
    assert!(
        c["summary"].as_str().is_some_and(|s| s
            .contains("disabled in the executor's droid_types table but enabled in foreman.toml")),
        "{c:#}"
    );
    // Not judged further; alpha, enabled in both, is.
    assert_status(&report, "droid_type beta", "active", "skipped");
    assert_status(&report, "droid_type alpha", "enabled", "ok");
}

#[test]
fn no_sweep_in_the_window_or_none_at_all_is_a_sweeps_issue() {
    let _g = crate::spawning();
    // Foreman swept three hours ago, and never since.
    let w = World::new();
    drop(base(&w, ""));
    create_activity_log(&w);
    insert_sweep(&w, hours_ago(3));
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_issues(&report, &["foreman/sweeps"]);
    let c = check(&report, "foreman", "sweeps");
    assert_eq!(c["severity"], "critical");
    assert_eq!(c["evidence"]["gaps"], 1, "{c:#}");
    assert!(
        c["evidence"]["longest"]["seconds"]
            .as_i64()
            .is_some_and(|s| s >= 3 * 3600 - 5),
        "the gap runs up to now: {c:#}"
    );

    // Foreman never ran here: no activity log at all before this run.
    let w = World::new();
    drop(base(&w, ""));
    assert!(!w.activity_path().exists());
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_issues(&report, &["foreman/sweeps"]);
    let c = check(&report, "foreman", "sweeps");
    assert!(
        c["summary"]
            .as_str()
            .is_some_and(|s| s.contains("no sweep recorded")),
        "{c:#}"
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 1);
}

#[test]
fn an_alert_undelivered_for_two_hours_is_an_outbox_issue() {
    let _g = crate::spawning();
    let receiver = Receiver::start(usize::MAX);
    let w = World::new();
    let db = base(
        &w,
        &format!(
            "[[alerts]]\nname = \"recovery\"\nkind = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            receiver.url()
        ),
    );
    // Gone, and started before this boot: marked at once, and alerted.
    task("gone-1", "alpha", "RUNNING")
        .pid(reaped_pid())
        .started_text(before_boot())
        .insert(&db);
    sweep(&w);
    receiver.wait_for(1, PATIENCE);
    assert_eq!(
        count(&w, "SELECT COUNT(*) FROM alerts WHERE state = 'queued'"),
        1,
        "the sink refused it: queued"
    );
    // Queued fresh is fine...
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_status(&report, "foreman", "outbox", "ok");
    // ...queued two hours ago is not.
    Connection::open(w.activity_path())
        .expect("log")
        .execute("UPDATE alerts SET queued_at = ?1", [ts(hours_ago(2))])
        .expect("time-shift");
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_issues(&report, &["foreman/outbox"]);
    let c = check(&report, "foreman", "outbox");
    assert_eq!(c["severity"], "warning");
    assert_eq!(c["evidence"]["older_than_limit"], 1, "{c:#}");
    assert_eq!(c["evidence"]["sinks"], serde_json::json!(["recovery"]));
    assert!(
        c["evidence"]["oldest"][0]["about"]
            .as_str()
            .is_some_and(|a| a.starts_with("finding ")),
        "{c:#}"
    );
    assert!(
        c["summary"].as_str().is_some_and(|s| s.contains("503")),
        "the last error is told: {c:#}"
    );
}

#[test]
fn an_unreadable_executor_is_an_executor_issue_and_the_run_is_still_recorded() {
    let _g = crate::spawning();
    let w = World::new();
    configure_with(
        &w,
        "",
        "kind = \"sqlite\"\npath = \"missing.db\"",
        "[droid_types.alpha]\n",
    );
    // Foreman sweeps (recording why it could not judge), so only the
    // executor is at fault.
    let out = run(&mut w.foreman(&["sweep"]));
    assert!(out.code.is_some(), "{out:#?}");
    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_issues(&report, &["foreman/executor"]);
    let c = check(&report, "foreman", "executor");
    assert_eq!(c["severity"], "critical");
    assert!(
        c["summary"]
            .as_str()
            .is_some_and(|s| s.contains("missing.db")),
        "names the database: {c:#}"
    );
    assert_status(&report, "droid_type alpha", "active", "skipped");
    assert!(
        !w.path("missing.db").exists(),
        "Foreman created the executor db"
    );
    let rows = log_rows(&w, "SELECT id, outcome, issues FROM wellbeing_runs");
    assert_eq!(
        rows,
        vec![vec![
            report["run_id"].as_str().map(String::from),
            Some("issues".into()),
            Some("1".into())
        ]]
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM initiatives"), 1);
}

// ---------------------------------------- one initiative, three sinks

#[test]
fn three_problems_in_two_droid_types_file_one_initiative_delivered_to_every_sink() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = World::new();
    let out_dir = w.path("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let argv = toml_array(&[
        "sh".into(),
        "-c".into(),
        "cat > \"$0\"; printf %s \"$FOREMAN_INITIATIVE_JSON\" > \"$0.json\"; printf %s \"$1\" > \"$0.title\"; printf %s \"$FOREMAN_RUN_ID\" > \"$0.id\"".into(),
        format!("{}/out-{{run_id}}.md", out_dir.display()),
        "{title}".into(),
    ]);
    configure(
        &w,
        "",
        &format!(
            "[droid_types.alpha]\n[droid_types.beta]\n\n[wellbeing]\ntimezone = \"UTC\"\n\n{}\n\
             [[wellbeing.sinks]]\nname = \"inbox\"\nkind = \"file\"\npath = \"inbox\"\n\n\
             [[wellbeing.sinks]]\nname = \"issues\"\nkind = \"command\"\nargv = {argv}\n",
            webhook_sink("tracker", &receiver.url())
        ),
    );
    let db = executor(&w);
    // alpha: 4 of 6 failed, and a task pending for 2h; beta: nothing at all.
    finished_tasks(&db, "alpha", 2, 4);
    task("alpha-late", "alpha", "PENDING")
        .created(hours_ago(2))
        .insert(&db);
    drop(db);
    sweep(&w);

    let (out, report) = wellbeing(&w, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_issues(
        &report,
        &[
            "droid_type alpha/failure_rate",
            "droid_type alpha/dispatch",
            "droid_type beta/active",
        ],
    );
    for c in ["executor", "sweeps", "sweep_errors", "outbox"] {
        assert_status(&report, "foreman", c, "ok");
    }
    let run_id = report["run_id"].as_str().expect("run_id").to_string();
    let title = format!("Wellbeing: 3 issues in 2 droid types on {HOST}");
    assert_eq!(report["initiative"]["title"], title.as_str(), "{report:#}");
    assert_eq!(report["initiative"]["severity"], "critical");
    let mut delivered: Vec<&str> = report["delivery"]["delivered"]
        .as_array()
        .expect("delivery.delivered")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    delivered.sort();
    assert_eq!(delivered, ["inbox", "issues", "tracker"], "{report:#}");

    // Exactly one initiative, as recorded.
    let rows = log_rows(
        &w,
        "SELECT id, run_id, title, severity, body, payload FROM initiatives",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let [id, rid, rtitle, severity, body, payload] = &rows[0][..] else {
        panic!("{rows:?}")
    };
    let (id, body) = (id.clone().expect("id"), body.clone().expect("body"));
    assert_eq!(report["filed"]["initiative_id"].to_string(), id);
    assert_eq!(rid.as_deref(), Some(run_id.as_str()));
    assert_eq!(rtitle.as_deref(), Some(title.as_str()));
    assert_eq!(severity.as_deref(), Some("critical"));
    let payload: Value = serde_json::from_str(payload.as_deref().expect("payload")).expect("JSON");
    assert!(body.starts_with(&format!("# {title}\n")), "{body}");
    for c in issues(&report) {
        let (subj, name) = c.split_once('/').expect("SUBJECT/CHECK");
        let summary = check(&report, subj, name)["summary"]
            .as_str()
            .expect("summary")
            .to_string();
        assert!(
            body.contains(&summary),
            "the body lacks {c} ({summary}):\n{body}"
        );
        assert!(
            body.contains(&format!("### {} (", name.replace('_', " "))),
            "no heading for {c}:\n{body}"
        );
    }
    for heading in ["## Droid type alpha", "## Droid type beta"] {
        assert!(body.contains(heading), "{heading}:\n{body}");
    }
    let outbox = log_rows(
        &w,
        &format!(
            "SELECT sink, state, attempts FROM alerts WHERE initiative_id = {id} ORDER BY sink"
        ),
    );
    assert_eq!(
        outbox,
        ["inbox", "issues", "tracker"]
            .iter()
            .map(|s| vec![
                Some(s.to_string()),
                Some("delivered".into()),
                Some("1".into())
            ])
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM alerts"), 3);

    // The webhook: once, the JSON, keyed by the run id.
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("idempotency-key"), Some(run_id.as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let sent = r.json();
    assert_eq!(sent, payload, "the webhook got the recorded payload");
    assert_eq!(sent["run_id"], run_id.as_str());
    assert_eq!(sent["title"], title.as_str());
    assert_eq!(sent["host"], HOST);
    assert_eq!(sent["body"], body.as_str());
    assert_eq!(sent["issues"].as_array().map(Vec::len), Some(3), "{sent:#}");

    // The file sink: one `<run id>.md`, the Markdown body.
    let files: Vec<String> = std::fs::read_dir(w.path("inbox"))
        .expect("the inbox directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec![format!("{run_id}.md")]);
    assert_eq!(
        std::fs::read_to_string(w.path("inbox").join(format!("{run_id}.md"))).expect("md"),
        body
    );

    // The command sink: {run_id} and {title} filled in, the Markdown on
    // stdin, the JSON in the environment.
    let md = out_dir.join(format!("out-{run_id}.md"));
    assert_eq!(
        std::fs::read_to_string(&md).unwrap_or_else(|e| panic!("{}: {e}", md.display())),
        body
    );
    let env: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.json", md.display())).expect("json file"),
    )
    .expect("FOREMAN_INITIATIVE_JSON is JSON");
    assert_eq!(env, payload);
    assert_eq!(
        std::fs::read_to_string(format!("{}.title", md.display())).expect("title file"),
        title
    );
    assert_eq!(
        std::fs::read_to_string(format!("{}.id", md.display())).expect("id file"),
        run_id
    );
    let outputs = std::fs::read_dir(&out_dir).expect("out dir").count();
    assert_eq!(outputs, 4, "the command ran once");
}

// ------------------------------------------------------- exactly once

/// A world with one issue (a configured droid type that never ran) and a
/// webhook sink; schedule `"0 0 6 * * *"` in UTC.
fn one_issue_world(receiver: &Receiver) -> World {
    let w = World::new();
    configure(
        &w,
        "",
        &format!(
            "[droid_types.idle]\n\n[wellbeing]\nschedule = \"0 0 6 * * *\"\ntimezone = \"UTC\"\n\n{}",
            webhook_sink("tracker", &receiver.url())
        ),
    );
    drop(executor(&w));
    create_activity_log(&w);
    w
}

#[test]
fn the_same_slot_run_twice_is_filed_once() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = one_issue_world(&receiver);
    let slot = latest_six() - Span::days(1);
    let id = slot_id(slot);

    let (out, first) = wellbeing(&w, &["--slot", &id]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(first["run_id"], id.as_str());
    assert_eq!(first["kind"], "scheduled");
    assert_eq!(first["filed"]["result"], "recorded", "{first:#}");
    let initiative = first["filed"]["initiative_id"].as_i64().expect("filed");
    receiver.wait_for(1, PATIENCE);

    let out = run(&mut w.foreman(&["wellbeing", "--slot", &id]));
    assert_eq!(
        out.code,
        Some(0),
        "a slot already recorded exits 0: {out:#?}"
    );
    assert!(out.stdout.contains("already recorded"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("its initiative is {initiative}")),
        "{}",
        out.stdout
    );
    let (out, again) = wellbeing(&w, &["--slot", &id]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(again["filed"]["result"], "already_recorded", "{again:#}");
    assert_eq!(again["filed"]["initiative_id"], initiative);

    assert_eq!(
        log_rows(&w, "SELECT id, kind, slot_at FROM wellbeing_runs"),
        vec![vec![
            Some(id.clone()),
            Some("scheduled".into()),
            Some(ts(slot))
        ]]
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM initiatives"), 1);
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
    assert_eq!(
        receiver.requests()[0].header("idempotency-key"),
        Some(id.as_str())
    );

    // A time the schedule does not fire at is a usage error.
    let out = run(&mut w.foreman(&["wellbeing", "--slot", &slot_id(slot + Span::hours(1))]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("--slot"), "{}", out.stderr);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 1);
}

#[test]
fn two_concurrent_runs_of_one_slot_file_it_once() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = one_issue_world(&receiver);
    let id = slot_id(latest_six() - Span::days(2));
    let mut a = Running::start(&mut w.foreman(&["wellbeing", "--json", "--slot", &id]));
    let mut b = Running::start(&mut w.foreman(&["wellbeing", "--json", "--slot", &id]));
    let (a, b) = (a.finish(PATIENCE), b.finish(PATIENCE));
    for out in [&a, &b] {
        assert!(matches!(out.code, Some(0 | 1)), "{out:#?}");
    }
    let filed: Vec<Value> = [&a, &b].iter().map(|o| o.json()["filed"].clone()).collect();
    assert_eq!(
        filed.iter().filter(|f| f["result"] == "recorded").count(),
        1,
        "exactly one recorded the slot: {filed:#?}"
    );
    assert_eq!(
        filed[0]["initiative_id"], filed[1]["initiative_id"],
        "both name the one initiative"
    );
    assert_eq!(
        count(
            &w,
            &format!("SELECT COUNT(*) FROM wellbeing_runs WHERE id = '{id}'")
        ),
        1
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM initiatives"), 1);
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
    assert_eq!(
        log_rows(&w, "SELECT state, attempts FROM alerts"),
        vec![vec![Some("delivered".into()), Some("1".into())]]
    );
}

/// Two runs of one slot held in their executor read (after each checked
/// that the slot was not recorded yet), then released together: both
/// assess, both try to record, and the compare-and-set lets one file.
/// Returns (the world, both outputs).
fn race_for_a_slot(receiver: &Receiver, id: &str) -> (World, Out, Out) {
    let w = World::new();
    let gate = w.path("gate");
    std::fs::create_dir(&gate).expect("gate dir");
    let snapshot = toml_array(&[
        "sh".into(),
        "-c".into(),
        "touch \"$0/ready.$$\"; while [ ! -e \"$0/go\" ]; do sleep 0.01; done; echo '{\"tasks\": []}'"
            .into(),
        gate.display().to_string(),
    ]);
    configure_with(
        &w,
        "",
        &format!(
            "kind = \"command\"\nsnapshot_command = {snapshot}\nmark_failed_command = [\"false\"]"
        ),
        &format!(
            "[droid_types.idle]\n\n[wellbeing]\ntimezone = \"UTC\"\n\n{}",
            webhook_sink("tracker", &receiver.url())
        ),
    );
    create_activity_log(&w);
    let mut a = Running::start(&mut w.foreman(&["wellbeing", "--json", "--slot", id]));
    let mut b = Running::start(&mut w.foreman(&["wellbeing", "--json", "--slot", id]));
    wait_until("both runs are reading the executor", PATIENCE, || {
        std::fs::read_dir(&gate).map(|d| d.count()).unwrap_or(0) == 2
    });
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 0);
    std::fs::write(gate.join("go"), "").expect("open the gate");
    let (a, b) = (a.finish(PATIENCE), b.finish(PATIENCE));
    (w, a, b)
}

#[test]
fn a_run_that_loses_the_race_for_its_slot_files_nothing_and_delivers_once() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let id = slot_id(latest_six() - Span::days(3));
    let (w, a, b) = race_for_a_slot(&receiver, &id);
    let (winner, loser) = if a.json()["filed"]["result"] == "recorded" {
        (a, b)
    } else {
        (b, a)
    };
    let (won, lost) = (winner.json(), loser.json());
    assert_eq!(won["filed"]["result"], "recorded", "{won:#}");
    assert_eq!(winner.code, Some(1), "{winner:#?}");
    assert_eq!(lost["filed"]["result"], "already_recorded", "{lost:#}");
    assert_eq!(
        lost["filed"]["initiative_id"], won["filed"]["initiative_id"],
        "the loser names the winner's initiative"
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 1);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM initiatives"), 1);
    assert_eq!(
        receiver.requests().len(),
        1,
        "delivered once: {:?}",
        receiver.requests()
    );
    assert_eq!(
        log_rows(&w, "SELECT state, attempts FROM alerts"),
        vec![vec![Some("delivered".into()), Some("1".into())]]
    );
}

/// A run of a slot someone else recorded first exits 0 and reports the slot
/// as already recorded, however late it found out: `foreman wellbeing
/// --slot` beside the daemon must not say "issues found" (exit 1) for a slot
/// it filed nothing for.
#[test]
fn a_run_that_loses_the_race_for_its_slot_exits_0_like_any_run_of_a_recorded_slot() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let id = slot_id(latest_six() - Span::days(4));
    let (_w, a, b) = race_for_a_slot(&receiver, &id);
    let loser = if a.json()["filed"]["result"] == "recorded" {
        b
    } else {
        a
    };
    let lost = loser.json();
    assert_eq!(lost["filed"]["result"], "already_recorded", "{lost:#}");
    assert_eq!(
        loser.code,
        Some(0),
        "a slot already recorded exits 0: {lost:#}"
    );
    assert_eq!(lost["outcome"], "already_recorded", "{lost:#}");
    assert!(
        lost["initiative"].is_null(),
        "it filed no initiative, so it reports none: {lost:#}"
    );
}

/// `--slot` redoes a slot that was missed; a slot still to come cannot have
/// been, and filing it now would make the daemon skip it when it comes.
#[test]
fn a_slot_still_to_come_is_refused() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = one_issue_world(&receiver);
    let tomorrow = slot_id(latest_six() + Span::days(1));
    let out = run(&mut w.foreman(&["wellbeing", "--slot", &tomorrow]));
    assert_eq!(
        out.code,
        Some(2),
        "a slot to come is a usage error: {out:#?}"
    );
    assert!(out.stderr.contains("--slot"), "{}", out.stderr);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 0);
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
}

// -------------------------------------- a crash between record and deliver

#[cfg(feature = "failpoints")]
fn initiative_rows(w: &World) -> Vec<Vec<Option<String>>> {
    log_rows(
        w,
        "SELECT i.run_id, a.sink, a.state, a.attempts FROM initiatives i JOIN alerts a ON a.initiative_id = i.id",
    )
}

#[cfg(feature = "failpoints")]
#[test]
fn a_crash_after_recording_is_delivered_exactly_once_by_the_next_run_of_the_slot() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = one_issue_world(&receiver);
    let id = slot_id(latest_six());
    let out = run(w
        .foreman(&["wellbeing", "--slot", &id])
        .env("FAILPOINTS", "wellbeing::after_record=panic"));
    assert_ne!(out.code, Some(0), "it crashed: {out:#?}");
    assert_ne!(out.code, Some(1), "it crashed: {out:#?}");
    assert!(out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(
        initiative_rows(&w),
        vec![vec![
            Some(id.clone()),
            Some("tracker".into()),
            Some("queued".into()),
            Some("0".into())
        ]],
        "recorded and queued before the crash"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing sent before the crash"
    );

    let out = run(&mut w.foreman(&["wellbeing", "--slot", &id]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("already recorded"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Delivered to tracker"),
        "{}",
        out.stdout
    );
    let got = receiver.wait_for(1, PATIENCE);
    assert_eq!(got[0].header("idempotency-key"), Some(id.as_str()));
    assert_eq!(got[0].json()["run_id"], id.as_str());

    // Once more: nothing left to send.
    let out = run(&mut w.foreman(&["wellbeing", "--slot", &id]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
    assert_eq!(
        initiative_rows(&w),
        vec![vec![
            Some(id.clone()),
            Some("tracker".into()),
            Some("delivered".into()),
            Some("1".into())
        ]]
    );
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 1);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_kill_9_after_recording_is_delivered_exactly_once_by_the_restarted_daemon() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = one_issue_world(&receiver);
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write("foreman.toml", &format!("interval = \"1s\"\n{text}"));
    let id = slot_id(latest_six());
    let mut held = Running::start(
        w.foreman(&["wellbeing", "--slot", &id])
            .env("FAILPOINTS", "wellbeing::after_record=sleep(60000)"),
    );
    wait_until(
        "the run is recorded and its initiative queued",
        PATIENCE,
        || {
            w.log_i64(
                "SELECT COUNT(*) FROM alerts WHERE state = 'queued' AND initiative_id IS NOT NULL",
            ) == Some(1)
        },
    );
    held.signal(libc::SIGKILL);
    let out = held.finish(PATIENCE);
    assert_eq!(out.code, None, "killed: {out:#?}");
    assert!(
        receiver.requests().is_empty(),
        "nothing sent before the kill"
    );

    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    let got = receiver.wait_for(1, PATIENCE);
    wait_until("the outbox row is delivered", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM alerts WHERE state = 'delivered'") == Some(1)
    });
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(got[0].header("idempotency-key"), Some(id.as_str()));
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
    assert_eq!(count(&w, "SELECT COUNT(*) FROM initiatives"), 1);
    assert_eq!(
        count(&w, "SELECT COUNT(*) FROM wellbeing_runs"),
        1,
        "the daemon did not run the slot again"
    );
}

// ------------------------------------------------------------ the daemon

/// A world for the daemon: interval 1s, schedule `schedule` in UTC, no
/// droid type configured, an empty executor.
fn daemon_world(schedule: &str) -> World {
    let w = World::new();
    configure(
        &w,
        "interval = \"1s\"",
        &format!("[wellbeing]\nschedule = \"{schedule}\"\ntimezone = \"UTC\"\n"),
    );
    drop(executor(&w));
    w
}

/// Stop a daemon with SIGTERM; it must exit 0.
fn stop(mut daemon: Running) {
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
}

/// Wait until the daemon has swept on its interval after `after` (the
/// largest sweep id before it started): it is past its startup, catch-up
/// included.
fn wait_past_startup(w: &World, after: i64) {
    wait_until("the daemon's first scheduled sweep", PATIENCE, || {
        w.log_i64(&format!(
            "SELECT COUNT(*) FROM sweeps WHERE kind = 'scheduled' AND id > {after} AND finished_at IS NOT NULL"
        ))
        .is_some_and(|n| n >= 1)
    });
}

#[test]
fn a_slot_missed_while_the_daemon_was_down_is_caught_up_once() {
    let _g = crate::spawning();
    let w = daemon_world("0 0 6 * * *");
    create_activity_log(&w);
    // Foreman swept two days ago, then was down.
    insert_sweep(&w, hours_ago(48));
    let latest = latest_six();
    let id = slot_id(latest);

    let daemon = Running::start(&mut w.foreman(&["run"]));
    let kind = wait_for("the catch-up run is recorded", PATIENCE, || {
        w.activity()?
            .query_row(
                "SELECT kind FROM wellbeing_runs WHERE id = ?1",
                [&id],
                |r| r.get::<_, String>(0),
            )
            .ok()
    });
    assert_eq!(kind, "catch_up");
    stop(daemon);
    // After the startup scan, not before it.
    let scanned = log_rows(
        &w,
        "SELECT MIN(finished_at) FROM sweeps WHERE kind = 'startup'",
    );
    let scanned = scanned[0][0].clone().expect("the startup scan finished");
    let ran = log_rows(&w, "SELECT started_at FROM wellbeing_runs");
    let ran = ran[0][0].clone().expect("started_at");
    assert!(
        ran >= scanned,
        "caught up at {ran}, before the startup scan ended at {scanned}"
    );
    assert_eq!(
        log_rows(&w, "SELECT id, kind, slot_at FROM wellbeing_runs"),
        vec![vec![
            Some(id.clone()),
            Some("catch_up".into()),
            Some(ts(latest))
        ]],
        "only the latest missed slot, once"
    );

    // Restarted: the slot is done; nothing is caught up again.
    let before = count(&w, "SELECT MAX(id) FROM sweeps");
    let daemon = Running::start(&mut w.foreman(&["run"]));
    wait_past_startup(&w, before);
    stop(daemon);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 1);
}

#[test]
fn a_first_start_does_not_catch_up() {
    let _g = crate::spawning();
    let w = daemon_world("0 0 6 * * *");
    let daemon = Running::start(&mut w.foreman(&["run"]));
    wait_past_startup(&w, 0);
    stop(daemon);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 0);
}

#[test]
fn the_daemon_runs_each_slot_of_its_schedule_once() {
    let _g = crate::spawning();
    let w = daemon_world("*/2 * * * * *");
    let daemon = Running::start(&mut w.foreman(&["run"]));
    wait_until("two scheduled wellbeing runs", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM wellbeing_runs WHERE kind = 'scheduled'")
            .is_some_and(|n| n >= 2)
    });
    stop(daemon);
    let rows = log_rows(
        &w,
        "SELECT id, kind, slot_at, started_at FROM wellbeing_runs ORDER BY slot_at",
    );
    let mut slots = BTreeSet::new();
    for r in &rows {
        let (id, slot_at, started) = (
            r[0].as_deref().expect("id"),
            r[2].as_deref().expect("a scheduled run has its slot"),
            r[3].as_deref().expect("started_at"),
        );
        let slot = DateTime::parse_from_rfc3339(slot_at)
            .expect("slot_at")
            .with_timezone(&Utc);
        assert!(
            slot.second() % 2 == 0 && slot.nanosecond() == 0,
            "{slot_at} is not an occurrence of */2 seconds: {rows:?}"
        );
        // To the second; a slot on the minute may leave the seconds out.
        let full = slot.format("%Y-%m-%dT%H:%M:%S").to_string();
        let short = slot.format("%Y-%m-%dT%H:%M").to_string();
        assert!(
            id == full || (slot.second() == 0 && id == short),
            "the run id {id} is not its slot {full}: {rows:?}"
        );
        let started = DateTime::parse_from_rfc3339(started)
            .expect("started_at")
            .with_timezone(&Utc);
        assert!(
            started >= slot,
            "run {id} started before its slot: {rows:?}"
        );
        assert!(
            slots.insert(slot),
            "slot {slot_at} recorded twice: {rows:?}"
        );
    }
    assert!(
        rows.iter()
            .filter(|r| r[1].as_deref() == Some("scheduled"))
            .count()
            >= 2,
        "{rows:?}"
    );
}

// ----------------------------------------------------- the configuration

#[test]
fn a_five_field_cron_expression_is_rejected_at_config_load_with_a_fix() {
    let _g = crate::spawning();
    let w = World::new();
    let path = w.write(
        "foreman.toml",
        "[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\n[wellbeing]\ntimezone = \"UTC\"\nschedule = \"0 6 * * *\"\n",
    );
    drop(executor(&w));
    for args in [
        &["check-config"][..],
        &["wellbeing"],
        &["wellbeing", "--dry-run"],
    ] {
        let out = run(&mut w.foreman(args));
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        // `FILE:7:COLUMN: key `wellbeing.schedule``, the column that of the
        // key or of its value.
        let at = format!("foreman: {}:7:", path.display());
        let rest = out
            .stderr
            .strip_prefix(&at)
            .unwrap_or_else(|| panic!("{args:?}: stderr does not start {at:?}: {}", out.stderr));
        let (column, rest) = rest.split_once(':').expect("FILE:LINE:COLUMN:");
        assert!(
            ["1", "12"].contains(&column),
            "{args:?}: column {column} is neither the key's nor the value's: {}",
            out.stderr
        );
        assert!(
            rest.starts_with(" key `wellbeing.schedule`: "),
            "{args:?}: the key is not named: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("\"0 0 6 * * *\""),
            "{args:?}: no suggestion: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    assert!(!w.activity_path().exists(), "nothing ran");
}

// --------------------------------------------------------------- dry run

#[test]
fn a_dry_run_prints_the_initiative_and_records_nothing() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = World::new();
    configure(
        &w,
        "",
        &format!(
            "[droid_types.alpha]\n[droid_types.idle]\n\n[wellbeing]\ntimezone = \"UTC\"\n\n{}",
            webhook_sink("tracker", &receiver.url())
        ),
    );
    let db = executor(&w);
    finished_tasks(&db, "alpha", 5, 0);
    drop(db);

    // No activity log yet: none is created.
    let out = run(&mut w.foreman(&["wellbeing", "--dry-run"]));
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(!w.activity_path().exists(), "a dry run created the log");

    sweep(&w);
    let before = dump(&w);
    let out = run(&mut w.foreman(&["wellbeing", "--dry-run"]));
    assert_eq!(out.code, Some(1), "{out:#?}");
    let title = format!("Wellbeing: 1 issue in 1 droid type on {HOST}");
    assert!(
        out.stdout.lines().any(|l| l == format!("# {title}")),
        "no title line:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("dry run, nothing recorded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("### active (warning)"),
        "{}",
        out.stdout
    );

    let (out, report) = wellbeing(&w, &["--dry-run"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["filed"]["result"], "dry_run");
    assert_eq!(report["initiative"]["title"], title.as_str());
    assert!(report["delivery"].is_null(), "{report:#}");
    assert_issues(&report, &["droid_type idle/active"]);

    // A slot too: still nothing.
    let out = run(&mut w.foreman(&["wellbeing", "--dry-run", "--slot", &slot_id(latest_six())]));
    assert_eq!(out.code, Some(1), "{out:#?}");

    assert_eq!(dump(&w), before, "a dry run changed the activity log");
    assert_eq!(count(&w, "SELECT COUNT(*) FROM wellbeing_runs"), 0);
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
    // Healthy, a dry run exits 0.
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write("foreman.toml", &text.replace("[droid_types.idle]\n", ""));
    let out = run(&mut w.foreman(&["wellbeing", "--dry-run"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stdout.contains("Nothing would be filed"),
        "{}",
        out.stdout
    );
}

/// Sweeps slower than the interval keep the ticker always due: a due
/// wellbeing slot must still get its turn (a zero sleep is not ready
/// until the timer's next turn, so it used to lose every time).
#[cfg(feature = "failpoints")]
#[test]
fn scheduled_runs_are_not_starved_by_sweeps_longer_than_the_interval() {
    let _g = crate::spawning();
    let w = daemon_world("*/2 * * * * *");
    let daemon = Running::start(
        w.foreman(&["run"])
            .env("FAILPOINTS", "sweep::before_act=sleep(1500)"),
    );
    wait_until("three scheduled wellbeing runs", PATIENCE * 2, || {
        w.log_i64("SELECT COUNT(*) FROM wellbeing_runs WHERE slot_at IS NOT NULL")
            .is_some_and(|n| n >= 3)
    });
    stop_slowly(daemon);
}

/// SIGTERM, then a second one: a sweep held by a failpoint is not awaited.
#[cfg(feature = "failpoints")]
fn stop_slowly(mut daemon: Running) {
    daemon.signal(libc::SIGTERM);
    wait_until("the daemon heard the first signal", PATIENCE, || {
        daemon.stderr().contains("stopping")
    });
    daemon.signal(libc::SIGTERM);
    let _ = daemon.finish(PATIENCE);
}
