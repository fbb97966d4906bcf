//! The execution monitor through the real daemon on a free loopback port
//! (`listen = "127.0.0.1:0"`; the bound address is read from the daemon's
//! log, so no port is guessed and none is raced for): transitions pulled
//! from a real executor database changing between sweeps and pushed over
//! real HTTP, each recorded and counted once; the silent baseline and a
//! restart; the bounded queue's 503; `/metrics` (promtool, HELP, content
//! type, every family, the contrib dashboard and rules); `/healthz`; the
//! bearer token; the diamond DAG's health; refusals; a taken port.
//!
//! HTTP is spoken by hand over a `TcpStream` (one request per connection),
//! so status lines, headers and malformed requests are exactly as sent.

use crate::cli::{
    before_boot, now_text, reaped_pid, run, wait_for, wait_until, Out, Running, Sleeper, World,
    HOST, PATIENCE,
};
use crate::http_client::{get, listening, request, Resp};
use regex::Regex;
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `/metrics` for a client that asks for OpenMetrics (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `/metrics` for every other client (curl, promtool).
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Accept` header Prometheus 2.x scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `[http]` on a free loopback port.
const LOOPBACK: &str = "listen = \"127.0.0.1:0\"";

const EVENT_TYPES: [&str; 6] = [
    "TASK_STARTED",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_RETRIED",
    "TASK_SKIPPED",
    "PLAN_COMPLETED",
];

// ------------------------------------------------------------------ HTTP

impl Resp {
    /// The `error` of a JSON refusal.
    fn reason(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in {self:#?}"))
            .to_string()
    }
}

// ---------------------------------------------------------------- daemon

/// `foreman run` with its listener's address, as it logged it.
struct Daemon {
    proc: Running,
    /// Where to connect (loopback when it bound the unspecified address).
    addr: SocketAddr,
    /// What it logged.
    bound: SocketAddr,
}

impl Daemon {
    /// Start `foreman run` (no token in its environment unless `env` gives
    /// one) and wait for its listener.
    fn start(w: &World, env: &[(&str, &str)]) -> Daemon {
        let (proc, bound) = listening(w, env);
        let addr = if bound.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], bound.port()))
        } else {
            bound
        };
        assert_ne!(addr.port(), 0);
        Daemon { proc, addr, bound }
    }

    fn get(&self, path: &str) -> Resp {
        get(self.addr, path)
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(self.addr, "GET", path, headers, b"")
    }

    /// `POST /events` with a JSON body and any further headers.
    fn post_events(&self, body: &[u8], headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        request(self.addr, "POST", "/events", &h, body)
    }

    fn push(&self, events: &Value) -> Resp {
        self.post_events(events.to_string().as_bytes(), &[])
    }

    /// Push and insist it was taken.
    fn push_ok(&self, events: &Value) {
        let r = self.push(events);
        assert_eq!(r.status, 202, "push of {events} refused: {r:#?}");
        let n = if events.is_array() {
            events.as_array().map_or(0, Vec::len)
        } else {
            1
        };
        assert_eq!(r.json()["accepted"], n, "{r:#?}");
    }

    fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{r:#?}");
        r.body
    }

    /// SIGTERM; it exits 0.
    fn stop(mut self) -> Out {
        self.proc.signal(libc::SIGTERM);
        let out = self.proc.finish(PATIENCE);
        assert_eq!(out.code, Some(0), "{out:#?}");
        out
    }
}

/// `foreman.toml`: a 500ms interval, a generous timeout (live tasks are
/// never hung), `[http]` as given, `extra` tables after it. Returns the text.
fn config(w: &World, http: &str, extra: &str) -> String {
    let text = format!(
        r#"interval = "500ms"
host = "{HOST}"
max_cpu_pressure = 100.0

[executor]
kind = "sqlite"
path = "executor.db"

[activity]
path = "foreman.db"

[defaults]
timeout = "1h"
startup_grace = "1h"
pid_start_tolerance = "1h"

[http]
{http}

{extra}
"#
    );
    w.write("foreman.toml", &text);
    text
}

// ------------------------------------------------------------- executor

fn executor(w: &World) -> Connection {
    let db = w.executor();
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db
}

/// Write a task's row as the executor would: RUNNING starts now (with a
/// fresh heartbeat), SUCCESS/FAILED/SKIPPED finish now.
fn set_task(db: &Connection, id: &str, plan: &str, state: &str, attempt: i64, pid: Option<i32>) {
    let now = now_text();
    let running = state == "RUNNING";
    let finished = matches!(state, "SUCCESS" | "FAILED" | "SKIPPED");
    db.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at, last_progress_at, finished_at, error)
         VALUES (?1, ?2, 'worker', ?3, ?4, ?5, ?6, ?6, ?7, ?8)
         ON CONFLICT (id) DO UPDATE SET plan_id = excluded.plan_id, state = excluded.state,
            pid = COALESCE(excluded.pid, tasks.pid), attempt = excluded.attempt,
            started_at = COALESCE(excluded.started_at, tasks.started_at),
            last_progress_at = COALESCE(excluded.last_progress_at, tasks.last_progress_at),
            finished_at = excluded.finished_at, error = excluded.error",
        params![
            id,
            plan,
            state,
            pid,
            attempt,
            running.then(|| now.clone()),
            finished.then(|| now.clone()),
            (state == "FAILED").then_some("boom"),
        ],
    )
    .expect("write task");
}

// ---------------------------------------------------------- activity log

/// One row of `events`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    kind: String,
    /// task_id, or plan_id for PLAN_COMPLETED.
    subject: String,
    attempt: i64,
    source: String,
}

fn ev(kind: &str, subject: &str, attempt: i64, source: &str) -> Ev {
    Ev {
        kind: kind.into(),
        subject: subject.into(),
        attempt,
        source: source.into(),
    }
}

/// Every recorded event, in order; empty before the log exists.
fn events(w: &World) -> Vec<Ev> {
    let Some(log) = w.activity() else {
        return Vec::new();
    };
    let mut stmt = match log.prepare(
        "SELECT type, COALESCE(task_id, plan_id, ''), attempt, source FROM events ORDER BY id",
    ) {
        Ok(s) => s,
        // Not migrated yet.
        Err(e) if e.to_string().contains("no such table") => return Vec::new(),
        Err(e) => panic!("reading events: {e}"),
    };
    stmt.query_map([], |r| {
        Ok(Ev {
            kind: r.get(0)?,
            subject: r.get(1)?,
            attempt: r.get(2)?,
            source: r.get(3)?,
        })
    })
    .expect("events")
    .collect::<Result<_, _>>()
    .expect("event rows")
}

fn is_sentinel(e: &Ev) -> bool {
    e.subject.starts_with("sentinel-")
}

/// The events of the test (sentinels left out), sorted.
fn real_events(w: &World) -> Vec<Ev> {
    let mut v: Vec<Ev> = events(w).into_iter().filter(|e| !is_sentinel(e)).collect();
    v.sort();
    v
}

fn recorded(w: &World, kind: &str, subject: &str, attempt: i64) -> usize {
    events(w)
        .iter()
        .filter(|e| e.kind == kind && e.subject == subject && e.attempt == attempt)
        .count()
}

fn await_event(w: &World, kind: &str, subject: &str, attempt: i64) {
    let deadline = Instant::now() + PATIENCE;
    while recorded(w, kind, subject, attempt) == 0 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {kind} {subject} (attempt {attempt}) is recorded;\nevents: {:#?}\nevent_inbox (pulled, not recorded yet): {:#?}",
            events(w),
            inbox(w)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The pulled events waiting in the activity log's inbox: (id, event).
fn inbox(w: &World) -> Vec<(i64, String)> {
    let Some(log) = w.activity() else {
        return Vec::new();
    };
    let Ok(mut stmt) = log.prepare("SELECT id, event FROM event_inbox ORDER BY id") else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("inbox")
        .collect::<Result<_, _>>()
        .expect("inbox rows")
}

/// Sweeps that finished and read the executor.
fn sweeps(w: &World) -> i64 {
    w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL AND error IS NULL")
        .unwrap_or(0)
}

/// Wait until `n` more sweeps have finished (the first may have read the
/// executor before the caller's change; the rest did not).
fn await_sweeps(w: &World, n: i64) {
    let from = sweeps(w);
    wait_until(&format!("{n} more sweeps"), PATIENCE, || {
        sweeps(w) >= from + n
    });
}

static SENTINELS: AtomicUsize = AtomicUsize::new(0);

/// Push a fresh event (a task of no plan, never in the snapshot) and wait
/// until it is recorded: the queue is one FIFO with one consumer, so every
/// batch queued before it has been recorded (or refused as a duplicate).
fn settle(w: &World, d: &Daemon) {
    let id = format!("sentinel-{}", SENTINELS.fetch_add(1, Ordering::SeqCst));
    d.push_ok(&json!({"type": "TASK_STARTED", "task_id": id, "attempt": 1}));
    await_event(w, "TASK_STARTED", &id, 1);
}

// ---------------------------------------------------------------- metrics

/// An exposition, parsed enough for the tests.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut x = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                x.help.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
                x.types.insert(name.to_string(), t.to_string());
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                x.samples.push(Self::sample(line));
            }
        }
        x
    }

    fn sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut key = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        let mut value = String::new();
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => {
                                    if let Some((_, e)) = chars.next() {
                                        value.push(match e {
                                            'n' => '\n',
                                            o => o,
                                        })
                                    }
                                }
                                '"' => break,
                                o => value.push(o),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    o => key.push(o),
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated labels: {line}"));
            rest = &inner[end + 1..];
        }
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("value {v:?} in {line:?}: {e}")),
        };
        (name, labels, value)
    }

    /// The value of the sample with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

fn event_metric(x: &Exposition, kind: &str) -> Option<f64> {
    x.value("execmon_events_total", &[("event_type", kind)])
}

/// Wait until `execmon_events_total` agrees with the `events` table, type
/// by type (the counter moves just after the rows commit); returns the
/// counts.
fn await_metric_matches_table(w: &World, d: &Daemon) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let x = Exposition::parse(&d.metrics());
        let rows = events(w);
        let metric: BTreeMap<String, f64> = EVENT_TYPES
            .iter()
            .map(|t| (t.to_string(), event_metric(&x, t).unwrap_or(-1.0)))
            .collect();
        let table: BTreeMap<String, f64> = EVENT_TYPES
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    rows.iter().filter(|e| e.kind == *t).count() as f64,
                )
            })
            .collect();
        if metric == table {
            return metric;
        }
        assert!(
            Instant::now() < deadline,
            "execmon_events_total does not match the events table:\nmetric {metric:?}\ntable  {table:?}\nrows {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("promtool is not installed (not on PATH, not /usr/bin/promtool): install the Debian package `prometheus`, as CI does")
    })
}

/// Run promtool with `args`, `input` on stdin; (success, stdout + stderr).
fn run_promtool(args: &[&str], input: &str, dir: Option<&std::path::Path>) -> (bool, String) {
    let mut cmd = Command::new(promtool());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("run promtool");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    (
        out.status.success(),
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A daemon with every family populated: a plan with a live task, a task
/// found dead (a finding, marked failed), an `[[alerts]]` sink.
fn populated(alerts: bool) -> (World, Daemon, Sleeper) {
    let w = World::new();
    let sink = "[[alerts]]\nname = \"pager\"\nkind = \"command\"\nargv = [\"true\"]\n";
    config(&w, LOOPBACK, if alerts { sink } else { "" });
    let db = executor(&w);
    let live = Sleeper::start();
    set_task(&db, "live-1", "plan-a", "RUNNING", 1, Some(live.pid()));
    db.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at) VALUES ('dead-1', 'plan-a', 'worker', 'RUNNING', ?1, ?2)",
        params![reaped_pid(), before_boot()],
    )
    .expect("dead task");
    let d = Daemon::start(&w, &[]);
    let mut wanted = vec![
        "foreman_findings_total",
        "execmon_health_score",
        "execmon_plan_tasks",
        "foreman_tasks",
        "foreman_last_sweep_timestamp_seconds",
    ];
    if alerts {
        wanted.push("foreman_alerts_pending");
    }
    wait_until("the exposition has every family", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        wanted.iter().all(|n| x.has(n))
    });
    // The finding was acted on: the executor's row is FAILED.
    wait_until("the dead task is marked failed", PATIENCE, || {
        w.task_state("dead-1").0 == "FAILED"
    });
    (w, d, live)
}

// ================================================================== tests

/// Transitions of a real executor database, changing between sweeps, and
/// the same transitions pushed to `POST /events` (before the sweep sees
/// them and after): each is recorded once, by whichever came first, and
/// counted once in `execmon_events_total`; each plan completes once.
#[test]
fn pulled_and_pushed_transitions_are_each_recorded_and_counted_once() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "");
    let db = executor(&w);
    set_task(&db, "t-ok", "p1", "PENDING", 1, None);
    set_task(&db, "t-bad", "p1", "PENDING", 1, None);
    set_task(&db, "u1", "p2", "PENDING", 1, None);
    let d = Daemon::start(&w, &[]);
    await_sweeps(&w, 1);
    let task = |kind: &str, id: &str, plan: &str| {
        json!({
            "type": kind, "task_id": id, "plan_id": plan, "droid_type": "worker", "attempt": 1
        })
    };

    // t-ok starts: the sweep sees it first, the executor's push comes after.
    let ok_proc = Sleeper::start();
    set_task(&db, "t-ok", "p1", "RUNNING", 1, Some(ok_proc.pid()));
    await_event(&w, "TASK_STARTED", "t-ok", 1);
    d.push_ok(&task("TASK_STARTED", "t-ok", "p1"));
    settle(&w, &d);

    // t-bad starts: pushed first, the executor's row follows.
    d.push_ok(&task("TASK_STARTED", "t-bad", "p1"));
    await_event(&w, "TASK_STARTED", "t-bad", 1);
    let bad_proc = Sleeper::start();
    set_task(&db, "t-bad", "p1", "RUNNING", 1, Some(bad_proc.pid()));
    await_sweeps(&w, 2);

    // t-ok succeeds: pushed first.
    d.push_ok(&task("TASK_COMPLETED", "t-ok", "p1"));
    await_event(&w, "TASK_COMPLETED", "t-ok", 1);
    set_task(&db, "t-ok", "p1", "SUCCESS", 1, None);
    await_sweeps(&w, 2);

    // t-bad fails, the last of p1: the sweep sees it and the plan's
    // completion first; the pushes of both come after.
    set_task(&db, "t-bad", "p1", "FAILED", 1, None);
    await_event(&w, "TASK_FAILED", "t-bad", 1);
    await_event(&w, "PLAN_COMPLETED", "p1", 1);
    d.push_ok(&json!([
        task("TASK_FAILED", "t-bad", "p1"),
        {"type": "PLAN_COMPLETED", "plan_id": "p1"},
    ]));
    settle(&w, &d);

    // u1, the only task of p2, goes from PENDING straight to SUCCESS in the
    // executor's row, and at once the executor pushes both of its
    // transitions in one batch. Which of push and sweep comes first is
    // not known (a push is the executor's word only until a snapshot read
    // after it: the row is written first so that no sweep can see the
    // push contradicted), so the sources of these are not asserted.
    set_task(&db, "u1", "p2", "SUCCESS", 1, None);
    d.push_ok(&json!([
        task("TASK_STARTED", "u1", "p2"),
        task("TASK_COMPLETED", "u1", "p2"),
    ]));
    await_event(&w, "PLAN_COMPLETED", "p2", 1);
    await_sweeps(&w, 2);
    settle(&w, &d);
    let p2: Vec<Ev> = real_events(&w)
        .into_iter()
        .filter(|e| e.subject == "u1" || e.subject == "p2")
        .collect();
    let mut p2_kinds: Vec<(&str, &str, i64)> = p2
        .iter()
        .map(|e| (e.kind.as_str(), e.subject.as_str(), e.attempt))
        .collect();
    p2_kinds.sort();
    assert_eq!(
        p2_kinds,
        [
            ("PLAN_COMPLETED", "p2", 1),
            ("TASK_COMPLETED", "u1", 1),
            ("TASK_STARTED", "u1", 1),
        ],
        "u1 and p2, each transition once: {p2:#?}"
    );

    let mut want = vec![
        ev("TASK_STARTED", "t-ok", 1, "pull"),
        ev("TASK_STARTED", "t-bad", 1, "push"),
        ev("TASK_COMPLETED", "t-ok", 1, "push"),
        ev("TASK_FAILED", "t-bad", 1, "pull"),
        ev("PLAN_COMPLETED", "p1", 1, "pull"),
    ];
    want.extend(p2);
    want.sort();
    assert_eq!(
        real_events(&w),
        want,
        "each transition once, by its first source; event_inbox: {:#?}",
        inbox(&w)
    );

    let counted = await_metric_matches_table(&w, &d);
    let sentinels = events(&w).iter().filter(|e| is_sentinel(e)).count() as f64;
    assert_eq!(counted["TASK_STARTED"], 3.0 + sentinels, "{counted:?}");
    assert_eq!(counted["TASK_COMPLETED"], 2.0, "{counted:?}");
    assert_eq!(counted["TASK_FAILED"], 1.0, "{counted:?}");
    assert_eq!(counted["PLAN_COMPLETED"], 2.0, "{counted:?}");
    assert_eq!(counted["TASK_RETRIED"], 0.0, "{counted:?}");
    assert_eq!(counted["TASK_SKIPPED"], 0.0, "{counted:?}");
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM event_inbox"),
        Some(0),
        "pulled events left in the inbox"
    );
    d.stop();
}

/// History in the executor before the very first start is a silent
/// baseline; after a restart nothing is replayed, and a transition that
/// happened while the daemon was down is emitted once.
#[test]
fn the_first_snapshot_is_a_silent_baseline_and_a_restart_neither_replays_nor_loses() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "");
    let db = executor(&w);
    let running = Sleeper::start();
    let later = Sleeper::start();
    set_task(&db, "done", "hist", "SUCCESS", 1, None);
    set_task(&db, "broke", "hist", "FAILED", 2, None);
    set_task(&db, "skipped", "hist", "SKIPPED", 1, None);
    set_task(&db, "run", "hist", "RUNNING", 3, Some(running.pid()));
    set_task(&db, "pend", "hist", "PENDING", 1, None);
    set_task(&db, "old-1", "finished-plan", "SUCCESS", 1, None);
    set_task(&db, "old-2", "finished-plan", "FAILED", 1, None);

    let d = Daemon::start(&w, &[]);
    await_sweeps(&w, 3);
    assert_eq!(events(&w), Vec::<Ev>::new(), "the baseline emitted events");
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM event_inbox"), Some(0));
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM monitor_baseline"), Some(1));
    let x = Exposition::parse(&d.metrics());
    for t in EVENT_TYPES {
        assert_eq!(event_metric(&x, t), Some(0.0), "{t}");
    }
    // The baseline is a view nonetheless.
    let v = d.get("/plans/hist").json();
    assert_eq!(v["counts"]["running"], 1, "{v:#}");
    assert_eq!(v["counts"]["pending"], 1, "{v:#}");

    // A change after the baseline emits.
    set_task(&db, "pend", "hist", "RUNNING", 1, Some(later.pid()));
    await_event(&w, "TASK_STARTED", "pend", 1);
    d.stop();

    // While the daemon is down, `run` finishes.
    set_task(&db, "run", "hist", "SUCCESS", 3, None);
    let d = Daemon::start(&w, &[]);
    await_event(&w, "TASK_COMPLETED", "run", 3);
    await_sweeps(&w, 3);
    assert_eq!(
        real_events(&w),
        vec![
            ev("TASK_COMPLETED", "run", 3, "pull"),
            ev("TASK_STARTED", "pend", 1, "pull"),
        ],
        "a restart replayed or lost a transition"
    );
    // The new daemon counted only what it recorded itself.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let x = Exposition::parse(&d.metrics());
        let got: Vec<Option<f64>> = EVENT_TYPES.iter().map(|t| event_metric(&x, t)).collect();
        let want = vec![
            Some(0.0),
            Some(1.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
        ];
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: {EVENT_TYPES:?} = {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
}

/// `[monitor] queue_capacity = 1` and a slow consumer: concurrent pushes
/// are refused with 503 and `Retry-After`; retried, every distinct event is
/// recorded and counted exactly once.
#[cfg(feature = "failpoints")]
#[test]
fn a_full_queue_answers_503_with_retry_after_and_loses_nothing() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "[monitor]\nqueue_capacity = 1\n");
    executor(&w);
    let d = Daemon::start(&w, &[("FAILPOINTS", "monitor::ingest=sleep(200)")]);
    const BATCHES: usize = 12;
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..BATCHES {
            let (d, refused) = (&d, &refused);
            s.spawn(move || {
                let id = format!("q-{i}");
                let batch = json!([
                    {"type": "TASK_STARTED", "task_id": id, "droid_type": "worker", "attempt": 1},
                    {"type": "TASK_COMPLETED", "task_id": id, "droid_type": "worker", "attempt": 1},
                    // The same transition in every batch: recorded once.
                    {"type": "TASK_STARTED", "task_id": "shared", "attempt": 1},
                ]);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let r = d.push(&batch);
                    match r.status {
                        202 => {
                            assert_eq!(r.json()["accepted"], 3, "{r:#?}");
                            return;
                        }
                        503 => {
                            let after = r
                                .header("retry-after")
                                .unwrap_or_else(|| panic!("503 without Retry-After: {r:#?}"));
                            let secs: u64 = after
                                .parse()
                                .unwrap_or_else(|e| panic!("Retry-After {after:?}: {e}"));
                            assert!(secs >= 1, "Retry-After {secs}");
                            assert!(!r.reason().is_empty());
                            refused.fetch_add(1, Ordering::SeqCst);
                            assert!(Instant::now() < deadline, "batch {i} was never taken");
                            std::thread::sleep(Duration::from_secs(secs));
                        }
                        _ => panic!("batch {i}: {r:#?}"),
                    }
                }
            });
        }
    });
    let refused = refused.load(Ordering::SeqCst);
    assert!(refused > 0, "no push found the queue of 1 full");

    let want = 2 * BATCHES + 1;
    wait_until(
        &format!("{want} events recorded"),
        Duration::from_secs(30),
        || events(&w).len() >= want,
    );
    let evs = events(&w);
    assert_eq!(evs.len(), want, "{evs:#?}");
    for i in 0..BATCHES {
        let id = format!("q-{i}");
        assert_eq!(recorded(&w, "TASK_STARTED", &id, 1), 1, "{id}");
        assert_eq!(recorded(&w, "TASK_COMPLETED", &id, 1), 1, "{id}");
    }
    assert_eq!(recorded(&w, "TASK_STARTED", "shared", 1), 1);
    let counted = await_metric_matches_table(&w, &d);
    assert_eq!(counted["TASK_STARTED"], (BATCHES + 1) as f64);
    assert_eq!(counted["TASK_COMPLETED"], BATCHES as f64);
    let x = Exposition::parse(&d.metrics());
    assert_eq!(
        x.value("execmon_queue_rejected_total", &[]),
        Some(refused as f64),
        "every 503 is counted"
    );
    d.stop();
}

/// `promtool check metrics` accepts the exposition of a daemon with every
/// family populated.
#[test]
fn metrics_pass_promtool_check_metrics() {
    promtool();
    let _g = crate::spawning();
    let (_w, d, _live) = populated(true);
    let body = d.metrics();
    let (ok, out) = run_promtool(&["check", "metrics"], &body, None);
    assert!(
        ok,
        "promtool check metrics refused /metrics:\n{out}\n--- exposition:\n{body}"
    );
    d.stop();
}

/// `/metrics` is OpenMetrics for a client that asks for it (Prometheus)
/// and the classic text format otherwise; in both, every metric has HELP,
/// and every metric of the issue is there; `foreman_alerts_pending` only
/// with a sink.
#[test]
fn metrics_have_help_and_every_metric_of_the_issue_in_both_formats() {
    let _g = crate::spawning();
    let (_w, d, _live) = populated(true);
    for (accept, content_type) in [(None, CLASSIC), (Some(PROMETHEUS_ACCEPT), OPENMETRICS)] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let r = d.get_with("/metrics", &headers);
        exposition_is_complete(&r, content_type);
    }
    d.stop();

    // Without a sink there is no foreman_alerts_pending at all.
    let (_w, d, _live) = populated(false);
    for accept in [None, Some(PROMETHEUS_ACCEPT)] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let r = d.get_with("/metrics", &headers);
        assert_eq!(r.status, 200, "{r:#?}");
        assert!(!r.body.contains("foreman_alerts_pending"), "{}", r.body);
    }
    d.stop();
}

fn exposition_is_complete(r: &Resp, content_type: &str) {
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.header("content-type"), Some(content_type), "{r:#?}");
    let openmetrics = content_type == OPENMETRICS;
    assert_eq!(
        r.body.ends_with("# EOF\n"),
        openmetrics,
        "{content_type}:\n{}",
        r.body
    );
    let x = Exposition::parse(&r.body);

    // Every sample belongs to a family with HELP (and TYPE) text: in the
    // classic format a counter's HELP names its `_total` series itself.
    let suffixes: &[&str] = if openmetrics {
        &["_total", "_bucket", "_sum", "_count", "_created", "_info"]
    } else {
        &["_bucket", "_sum", "_count"]
    };
    for name in x.names() {
        let family = std::iter::once(name)
            .chain(suffixes.iter().filter_map(|s| name.strip_suffix(s)))
            .find(|f| x.help.contains_key(*f))
            .unwrap_or_else(|| panic!("{name} has no # HELP line:\n{}", r.body));
        assert!(!x.help[family].trim().is_empty(), "{family}: empty HELP");
        assert!(x.types.contains_key(family), "{family}: no # TYPE");
    }

    for name in [
        "execmon_events_total",
        "execmon_plans_tracked",
        "execmon_stalls_detected_total",
        "execmon_health_score",
        "execmon_view_latency_seconds_bucket",
        "execmon_view_latency_seconds_sum",
        "execmon_view_latency_seconds_count",
        "foreman_sweeps_total",
        "foreman_sweep_duration_seconds_bucket",
        "foreman_sweep_duration_seconds_count",
        "foreman_findings_total",
        "foreman_tasks",
        "foreman_last_sweep_timestamp_seconds",
        "foreman_build_info",
        "foreman_alerts_pending",
        "foreman_alert_deliveries_total",
        "foreman_deferrals_total",
        "foreman_config_reloads_total",
        "foreman_config_info",
        "foreman_config_loaded_timestamp_seconds",
        "foreman_snapshot_error_seconds",
    ] {
        assert!(x.has(name), "no {name} in:\n{}", r.body);
    }
    // Fixed label sets, there from the start: a rule's increase() sees the
    // first event, and the families never grow with what happens.
    for reason in ["foreman_starved", "tree_starved", "suspended", "clock_step"] {
        assert_eq!(
            x.value("foreman_deferrals_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}:\n{}",
            r.body
        );
    }
    assert_eq!(
        x.samples
            .iter()
            .filter(|(n, _, _)| n == "foreman_deferrals_total")
            .count(),
        4,
        "{}",
        r.body
    );
    for result in ["ok", "failed"] {
        assert_eq!(
            x.value("foreman_config_reloads_total", &[("result", result)]),
            Some(0.0),
            "{result}"
        );
    }
    for result in ["delivered", "failed", "expired"] {
        assert!(
            x.value(
                "foreman_alert_deliveries_total",
                &[("sink", "pager"), ("result", result)]
            )
            .is_some(),
            "{result}:\n{}",
            r.body
        );
    }
    // The executor reads fine: no run of snapshot errors.
    assert_eq!(x.value("foreman_snapshot_error_seconds", &[]), Some(0.0));
    // A family with no labels is written without empty braces.
    assert!(
        r.body.contains("\nforeman_last_sweep_timestamp_seconds ") && !r.body.contains("{} "),
        "{}",
        r.body
    );
    for (family, t) in [
        ("execmon_view_latency_seconds", "histogram"),
        ("foreman_sweep_duration_seconds", "histogram"),
        ("execmon_health_score", "gauge"),
        ("foreman_tasks", "gauge"),
    ] {
        assert_eq!(x.types.get(family).map(String::as_str), Some(t), "{family}");
    }
    for t in EVENT_TYPES {
        assert!(
            event_metric(&x, t).is_some(),
            "execmon_events_total{{event_type=\"{t}\"}}"
        );
    }
    assert!(
        x.samples
            .iter()
            .any(|(n, l, v)| n == "foreman_findings_total"
                && l.get("kind").is_some_and(|k| k == "orphan" || k == "dead")
                && l.get("droid_type").map(String::as_str) == Some("worker")
                && *v >= 1.0),
        "the finding on dead-1 is counted:\n{}",
        r.body
    );
    assert!(
        x.samples.iter().any(|(n, l, v)| n == "foreman_build_info"
            && l.get("version").map(String::as_str) == Some(env!("CARGO_PKG_VERSION"))
            && *v == 1.0),
        "{}",
        r.body
    );
    let last = x
        .value("foreman_last_sweep_timestamp_seconds", &[])
        .expect("foreman_last_sweep_timestamp_seconds without labels");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&last),
        "last sweep at {last}, now {now}"
    );
}

/// The metric names the contrib dashboard and alerting rules use, in their
/// `expr`s (and the dashboard's variable queries), are all in a live
/// exposition.
#[test]
fn the_dashboard_and_the_rules_use_only_metrics_foreman_exposes() {
    let _g = crate::spawning();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let names = Regex::new(r"\b(?:execmon|foreman)_[a-z_]+").expect("regex");
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();

    let dashboard = root.join("contrib/grafana/foreman.json");
    let text = std::fs::read_to_string(&dashboard).expect("read the dashboard");
    let json: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition" | "query", Value::String(s)) => out.push(s.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    exprs(&json, &mut found);
    for e in &found {
        for m in names.find_iter(e) {
            used.entry(m.as_str().to_string())
                .or_default()
                .insert("grafana");
        }
    }

    // The rules: each `expr:` with the lines indented under it.
    let rules = std::fs::read_to_string(root.join("contrib/prometheus/foreman.rules.yml"))
        .expect("read the rules");
    let mut expr_indent: Option<usize> = None;
    let mut rule_exprs = 0;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        if let Some(i) = expr_indent {
            if body.is_empty() || indent > i {
                for m in names.find_iter(body) {
                    used.entry(m.as_str().to_string())
                        .or_default()
                        .insert("rules");
                }
                continue;
            }
            expr_indent = None;
        }
        if let Some(rest) = body.strip_prefix("expr:") {
            rule_exprs += 1;
            expr_indent = Some(indent);
            for m in names.find_iter(rest) {
                used.entry(m.as_str().to_string())
                    .or_default()
                    .insert("rules");
            }
        }
    }
    assert!(rule_exprs >= 4, "found {rule_exprs} rule exprs");
    assert!(
        used.values().filter(|s| s.contains("grafana")).count() >= 5
            && used.values().filter(|s| s.contains("rules")).count() >= 3,
        "the scan found too little: {used:?}"
    );

    let (_w, d, _live) = populated(true);
    let body = d.metrics();
    let x = Exposition::parse(&body);
    let mut missing = Vec::new();
    for (name, from) in &used {
        // A PostgreSQL fleet's series exist only there: fleet.rs scrapes
        // them from its daemons.
        if name.starts_with("foreman_fleet_") {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| x.types.get(*f).map(String::as_str) == Some("histogram"));
        let present = match family {
            Some(f) => x.help.contains_key(f) && x.has(name),
            None => x.has(name),
        };
        if !present {
            missing.push(format!("{name} (used by {from:?})"));
        }
    }
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:#?}\n--- exposition:\n{body}"
    );
    d.stop();
}

/// `promtool check rules` and `promtool test rules` accept the contrib rules.
#[test]
fn the_alerting_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    let (ok, out) = run_promtool(&["check", "rules", "foreman.rules.yml"], "", Some(&dir));
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run_promtool(&["test", "rules", "foreman.rules.test.yml"], "", Some(&dir));
    assert!(ok, "promtool test rules:\n{out}");
}

/// `/healthz` is 200 `ok` while the daemon sweeps and 503 with a reason
/// naming the interval once sweeps stop (held at `sweep::before_act`).
#[cfg(feature = "failpoints")]
#[test]
fn healthz_turns_503_when_sweeps_stop() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "");
    executor(&w);
    // Six sweeps pass; the seventh is held for a minute.
    let d = Daemon::start(
        &w,
        &[("FAILPOINTS", "sweep::before_act=6*off->sleep(60000)")],
    );
    let ok = wait_for("/healthz says ok", PATIENCE, || {
        let r = d.get("/healthz");
        (r.status == 200).then_some(r)
    });
    let v = ok.json();
    assert_eq!(
        ok.header("content-type"),
        Some("application/json"),
        "{ok:#?}"
    );
    assert_eq!(v["status"], "ok", "{v:#}");
    assert!(v["reason"].is_null(), "{v:#}");
    assert_eq!(v["activity_log_writable"], true, "{v:#}");
    assert_eq!(v["interval_seconds"], 0.5, "{v:#}");
    assert!(
        v["last_sweep"].as_str().is_some_and(|s| !s.is_empty()),
        "{v:#}"
    );

    // The seventh sweep is recorded and held; the six before it finished.
    // (A sweep in flight is recorded unfinished too, so both at once.)
    let count = |sql: &str| w.log_i64(sql).unwrap_or(-1);
    wait_until(
        "six sweeps finished and the seventh held at sweep::before_act",
        PATIENCE,
        || {
            count("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL") == 6
                && count("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NULL") == 1
        },
    );
    let failing = wait_for("/healthz turns 503", PATIENCE, || {
        let r = d.get("/healthz");
        (r.status == 503).then_some(r)
    });
    let v = failing.json();
    assert_eq!(v["status"], "failing", "{v:#}");
    let reason = v["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {v:#}"));
    assert!(
        reason.contains("interval"),
        "the reason does not name the interval: {reason:?}"
    );
    assert!(
        v["last_sweep_age_seconds"]
            .as_f64()
            .is_some_and(|a| a > 1.0),
        "{v:#}"
    );
    eprintln!("/healthz while the sweep is held: {v}");
    // Still held: nothing finished since.
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL"),
        Some(6)
    );
    // The listener is not held with it.
    assert_eq!(d.get("/metrics").status, 200);
    assert_eq!(d.get("/healthz").status, 503);
    // The held sweep would keep a SIGTERM waiting; dropping kills it.
}

/// A non-loopback `listen` needs a token: without one the daemon and
/// `check-config` refuse the config naming `http.listen`; with one, pushes
/// need `Authorization: Bearer`, reads only with `protect_reads`, and
/// `/healthz` never.
#[test]
fn a_non_loopback_listener_requires_the_bearer_token() {
    let _g = crate::spawning();
    let w = World::new();
    let text = config(&w, "listen = \"0.0.0.0:0\"", "");
    executor(&w);
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("listen").map(|c| (i + 1, c + 1)))
        .expect("the listen line");
    let place = format!("{}:{line}:{column}", w.config_path().display());
    for args in [&["run"][..], &["check-config"][..]] {
        let mut cmd = w.foreman(args);
        cmd.env_remove("FOREMAN_HTTP_TOKEN");
        let out = run(&mut cmd);
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        assert!(
            out.stderr.contains("http.listen"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&place),
            "{args:?} does not name {place}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("FOREMAN_HTTP_TOKEN"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(
        !w.activity_path().exists(),
        "a refused config started nothing"
    );

    let d = Daemon::start(&w, &[("FOREMAN_HTTP_TOKEN", "secret")]);
    assert!(d.bound.ip().is_unspecified(), "bound {}", d.bound);
    let one = |id: &str| json!({"type": "TASK_STARTED", "task_id": id, "attempt": 1}).to_string();
    for (id, headers) in [
        ("no-token", vec![]),
        ("wrong-token", vec![("Authorization", "Bearer wrong")]),
        ("longer-token", vec![("Authorization", "Bearer secret2")]),
        ("no-scheme", vec![("Authorization", "secret")]),
        ("basic", vec![("Authorization", "Basic c2VjcmV0")]),
    ] {
        let r = d.post_events(one(id).as_bytes(), &headers);
        assert_eq!(r.status, 401, "{id}: {r:#?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{id}: {r:#?}");
        assert!(r.reason().contains("Bearer"), "{id}: {r:#?}");
    }
    let r = d.post_events(
        one("with-token").as_bytes(),
        &[("Authorization", "Bearer secret")],
    );
    assert_eq!(r.status, 202, "{r:#?}");
    await_event(&w, "TASK_STARTED", "with-token", 1);
    assert_eq!(
        real_events(&w),
        vec![ev("TASK_STARTED", "with-token", 1, "push")],
        "a refused push was ingested"
    );
    for path in ["/metrics", "/twin", "/plans"] {
        let r = d.get(path);
        assert_eq!(
            r.status, 200,
            "{path} is open without protect_reads: {r:#?}"
        );
    }
    wait_until("/healthz is 200 without a token", PATIENCE, || {
        d.get("/healthz").status == 200
    });
    d.stop();

    // protect_reads: the reads too (but never /healthz).
    config(&w, "listen = \"0.0.0.0:0\"\nprotect_reads = true", "");
    let d = Daemon::start(&w, &[("FOREMAN_HTTP_TOKEN", "secret")]);
    for path in ["/metrics", "/twin", "/plans", "/plans/nope"] {
        let r = d.get(path);
        assert_eq!(r.status, 401, "{path} without the token: {r:#?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        let r = d.get_with(path, &[("Authorization", "Bearer wrong")]);
        assert_eq!(r.status, 401, "{path} with a wrong token: {r:#?}");
    }
    for path in ["/metrics", "/twin", "/plans"] {
        let r = d.get_with(path, &[("Authorization", "Bearer secret")]);
        assert_eq!(r.status, 200, "{path} with the token: {r:#?}");
    }
    wait_until("/healthz is 200 without a token", PATIENCE, || {
        d.get("/healthz").status == 200
    });
    d.stop();

    // protect_reads needs a token too, even on loopback.
    let text = config(&w, "listen = \"127.0.0.1:0\"\nprotect_reads = true", "");
    let mut cmd = w.foreman(&["check-config"]);
    cmd.env_remove("FOREMAN_HTTP_TOKEN");
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(2), "{out:#?}");
    let line = text
        .lines()
        .position(|l| l.starts_with("protect_reads"))
        .expect("line")
        + 1;
    assert!(out.stderr.contains("http.protect_reads"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("foreman.toml:{line}:")),
        "{}",
        out.stderr
    );
}

/// The seed's diamond DAG (A → B, C → D) driven through the executor's
/// database and pushes: after each step the view's counts and health score
/// (SUCCESS / (SUCCESS + FAILED + RUNNING)) and the metric agree.
#[test]
fn the_diamond_dag_health_follows_the_seed_formula_step_by_step() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "");
    let db = executor(&w);
    for t in ["A", "B", "C", "D"] {
        set_task(&db, t, "diamond", "PENDING", 1, None);
    }
    let d = Daemon::start(&w, &[]);
    let mut procs: Vec<Sleeper> = Vec::new();
    let mut model: BTreeMap<&str, &str> = ["A", "B", "C", "D"]
        .iter()
        .map(|t| (*t, "PENDING"))
        .collect();
    // (what, task, state, attempt, also pushed as)
    let steps: &[(&str, &str, &str, i64, Option<&str>)] = &[
        ("planned: all pending", "A", "PENDING", 1, None),
        ("A starts", "A", "RUNNING", 1, None),
        ("A succeeds", "A", "SUCCESS", 1, Some("TASK_COMPLETED")),
        ("B starts", "B", "RUNNING", 1, Some("TASK_STARTED")),
        ("C starts", "C", "RUNNING", 1, None),
        ("B succeeds", "B", "SUCCESS", 1, None),
        ("C fails", "C", "FAILED", 1, Some("TASK_FAILED")),
        ("C is retried", "C", "RUNNING", 2, Some("TASK_RETRIED")),
        ("C succeeds", "C", "SUCCESS", 2, None),
        ("D starts", "D", "RUNNING", 1, None),
        ("D succeeds", "D", "SUCCESS", 1, Some("TASK_COMPLETED")),
    ];
    for (i, (what, task, state, attempt, pushed)) in steps.iter().enumerate() {
        if i > 0 {
            let pid = (*state == "RUNNING").then(|| {
                procs.push(Sleeper::start());
                procs.last().map(Sleeper::pid).unwrap_or_default()
            });
            set_task(&db, task, "diamond", state, *attempt, pid);
            if let Some(kind) = pushed {
                d.push_ok(&json!({
                    "type": kind, "task_id": task, "plan_id": "diamond",
                    "droid_type": "worker", "attempt": attempt
                }));
            }
        }
        model.insert(task, state);
        let n = |s: &str| model.values().filter(|v| **v == s).count() as u64;
        let (pending, running, success, failed) =
            (n("PENDING"), n("RUNNING"), n("SUCCESS"), n("FAILED"));
        let health = if success + failed + running == 0 {
            1.0
        } else {
            success as f64 / (success + failed + running) as f64
        };
        let complete = pending + running == 0;
        let want = json!({
            "pending": pending, "running": running, "success": success, "failed": failed,
            "skipped": 0
        });
        let mut seen = (Value::Null, None);
        let settled = crate::common::wait_until(PATIENCE, || {
            let r = d.get("/plans/diamond");
            if r.status != 200 {
                seen = (Value::String(format!("{r:?}")), None);
                return false;
            }
            let v = r.json();
            let metric = Exposition::parse(&d.metrics())
                .value("execmon_health_score", &[("plan_id", "diamond")]);
            let ok = v["counts"] == want && metric.is_some_and(|m| (m - health).abs() < 1e-9);
            seen = (v, metric);
            ok
        });
        let (v, metric) = seen;
        assert!(
            settled,
            "step {i} ({what}): want counts {want} and health {health}; \
             the view is {v:#} and the metric {metric:?}"
        );
        let score = v["health_score"].as_f64().expect("health_score");
        assert!(
            (score - health).abs() < 1e-9,
            "step {i} ({what}): health_score {score}, want {health}"
        );
        assert_eq!(v["is_complete"], complete, "step {i} ({what}): {v:#}");
        assert_eq!(v["plan_id"], "diamond");
        assert_eq!(v["stalled"], json!([]), "step {i} ({what}): {v:#}");
        assert_eq!(
            v["completed_at"].is_string(),
            complete,
            "step {i} ({what}): {v:#}"
        );
    }
    await_sweeps(&w, 2);
    settle(&w, &d);
    let evs = real_events(&w);
    let mut kinds: Vec<(String, String, i64)> = evs
        .iter()
        .map(|e| (e.kind.clone(), e.subject.clone(), e.attempt))
        .collect();
    kinds.sort();
    let mut want: Vec<(String, String, i64)> = [
        ("TASK_STARTED", "A", 1),
        ("TASK_COMPLETED", "A", 1),
        ("TASK_STARTED", "B", 1),
        ("TASK_COMPLETED", "B", 1),
        ("TASK_STARTED", "C", 1),
        ("TASK_FAILED", "C", 1),
        ("TASK_RETRIED", "C", 2),
        ("TASK_COMPLETED", "C", 2),
        ("TASK_STARTED", "D", 1),
        ("TASK_COMPLETED", "D", 1),
        ("PLAN_COMPLETED", "diamond", 1),
    ]
    .iter()
    .map(|(k, s, a)| (k.to_string(), s.to_string(), *a))
    .collect();
    want.sort();
    assert_eq!(
        kinds,
        want,
        "each transition once: {evs:#?}\nevent_inbox: {:#?}",
        inbox(&w)
    );
    let x = Exposition::parse(&d.metrics());
    assert_eq!(
        x.value("execmon_health_score", &[("plan_id", "diamond")]),
        Some(1.0)
    );
    assert_eq!(
        x.value(
            "execmon_plan_tasks",
            &[("plan_id", "diamond"), ("state", "success")]
        ),
        Some(4.0)
    );
    let list = d.get("/plans").json();
    assert!(
        list["plans"].as_array().is_some_and(|p| p
            .iter()
            .any(|v| v["plan_id"] == "diamond" && v["is_complete"] == true)),
        "{list:#}"
    );
    await_metric_matches_table(&w, &d);
    d.stop();
}

/// Malformed, invalid and oversized pushes are refused with the right
/// status and nothing of them is ingested; unknown paths are 404, wrong
/// methods 405; `/plans/nope` 404; `/twin` the twin document.
#[test]
fn refusals_ingest_nothing_and_say_why() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, &format!("{LOOPBACK}\nmax_body_bytes = 1024"), "");
    executor(&w);
    let d = Daemon::start(&w, &[]);
    await_sweeps(&w, 1);
    let before = events(&w);

    let big: Vec<Value> = (0..40)
        .map(|i| {
            let id = format!("refused-big-{i}");
            json!({"type": "TASK_STARTED", "task_id": id, "attempt": 1})
        })
        .collect();
    let big = Value::Array(big).to_string();
    assert!(big.len() > 1024);
    // (what, body, what the 400's reason says)
    let malformed: [(&str, &str, &str); 7] = [
        (
            "malformed JSON",
            r#"{"type": "TASK_STARTED", "task_id": "refused-1""#,
            "not JSON",
        ),
        ("not an event", "42", "event object or an array"),
        (
            "missing attempt",
            r#"{"type": "TASK_STARTED", "task_id": "refused-2"}"#,
            "needs attempt",
        ),
        (
            "missing type",
            r#"{"task_id": "refused-3", "attempt": 1}"#,
            "type",
        ),
        (
            "unknown field",
            r#"{"type": "TASK_STARTED", "task_id": "refused-4", "attempt": 1, "taskid": "x"}"#,
            "unknown field",
        ),
        (
            "unknown type",
            r#"{"type": "TASK_EXPLODED", "task_id": "refused-5", "attempt": 1}"#,
            "unknown type",
        ),
        (
            "a bad event in a batch",
            r#"[{"type": "TASK_STARTED", "task_id": "refused-6", "attempt": 1},
                {"type": "TASK_STARTED", "attempt": 1}]"#,
            "event 1",
        ),
    ];
    for (what, body, why) in malformed {
        let r = d.post_events(body.as_bytes(), &[]);
        assert_eq!(r.status, 400, "{what}: {r:#?}");
        let reason = r.reason();
        assert!(
            reason.contains(why),
            "{what}: reason {reason:?} does not say {why:?}"
        );
    }
    let r = d.post_events(big.as_bytes(), &[]);
    assert_eq!(
        r.status,
        413,
        "{} bytes over a limit of 1024: {r:#?}",
        big.len()
    );
    let r = request(
        d.addr,
        "POST",
        "/events",
        &[("Content-Type", "text/plain")],
        br#"{"type": "TASK_STARTED", "task_id": "refused-7", "attempt": 1}"#,
    );
    assert_eq!(r.status, 415, "{r:#?}");
    settle(&w, &d);
    let after: Vec<Ev> = events(&w).into_iter().filter(|e| !is_sentinel(e)).collect();
    assert_eq!(after, before, "a refused push was ingested");

    for (method, path, status) in [
        ("GET", "/nope", 404),
        ("POST", "/metrics/x", 404),
        ("DELETE", "/metrics", 405),
        ("GET", "/events", 405),
        ("PUT", "/healthz", 405),
        ("POST", "/plans", 405),
    ] {
        let r = request(d.addr, method, path, &[], b"");
        assert_eq!(r.status, status, "{method} {path}: {r:#?}");
    }
    let r = d.get("/nope");
    assert!(!r.reason().is_empty());
    let r = d.get("/plans/nope");
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(r.reason().contains("nope"), "{r:#?}");
    let r = d.get("/twin");
    assert_eq!(r.status, 200, "{r:#?}");
    let twin = r.json();
    assert!(
        twin["state"]
            .as_str()
            .is_some_and(|s| ["OK", "WARNING", "CRITICAL", "UNKNOWN"].contains(&s)),
        "{twin:#}"
    );
    assert!(twin["plans"].is_array(), "{twin:#}");
    d.stop();
}

/// The default address being taken costs only the listener; an explicit
/// `listen` that is taken stops `foreman run`, naming the address.
#[test]
fn a_taken_port_stops_the_daemon_only_when_listen_is_explicit() {
    let _g = crate::spawning();
    let w = World::new();
    executor(&w);

    // Explicit: refused, naming the address.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("addr");
    config(&w, &format!("listen = \"{addr}\""), "");
    let mut cmd = w.foreman(&["run"]);
    cmd.env_remove("FOREMAN_HTTP_TOKEN");
    let out = run(&mut cmd);
    assert!(matches!(out.code, Some(c) if c != 0), "{out:#?}");
    assert!(
        out.stderr.contains(&addr.to_string()),
        "does not name {addr}: {}",
        out.stderr
    );
    drop(taken);

    // The default, taken: the daemon sweeps on without a listener.
    let default = match TcpListener::bind("127.0.0.1:9464") {
        Ok(l) => l,
        Err(e) => {
            crate::common::skip_or_fail(&format!(
                "the default-address half: cannot bind 127.0.0.1:9464 here ({e})"
            ));
            return;
        }
    };
    let text = config(&w, LOOPBACK, "");
    w.write(
        "foreman.toml",
        &text.replace(&format!("[http]\n{LOOPBACK}\n"), ""),
    );
    assert!(!std::fs::read_to_string(w.config_path())
        .expect("config")
        .contains("[http]"));
    let mut cmd = w.foreman(&["run"]);
    cmd.env_remove("FOREMAN_HTTP_TOKEN");
    let mut daemon = Running::start(&mut cmd);
    wait_until(
        "the daemon says the default address is taken",
        PATIENCE,
        || {
            daemon
                .stderr()
                .contains("cannot listen on the default address")
        },
    );
    assert!(
        daemon.stderr().contains("127.0.0.1:9464"),
        "{}",
        daemon.stderr()
    );
    let from = sweeps(&w);
    wait_until("the daemon sweeps on", PATIENCE, || sweeps(&w) >= from + 2);
    assert!(daemon.still_running(), "{}", daemon.stderr());
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
    drop(default);
}

// ------------------------------------------------- reloads, deliveries, runs

/// The single `foreman_config_info` sample: (fingerprint, value).
fn config_info(x: &Exposition) -> (String, f64) {
    let infos: Vec<_> = x
        .samples
        .iter()
        .filter(|(n, _, _)| n == "foreman_config_info")
        .collect();
    assert_eq!(infos.len(), 1, "one configuration in force: {infos:?}");
    let (_, labels, v) = infos[0];
    (labels["fingerprint"].clone(), *v)
}

fn reloads(x: &Exposition, result: &str) -> Option<f64> {
    x.value("foreman_config_reloads_total", &[("result", result)])
}

/// SIGHUP with a changed, valid foreman.toml counts `result="ok"` and puts
/// the new file's fingerprint (FNV-1a of its text, computed here) and load
/// time in force; a broken file counts `result="failed"` and leaves both
/// as they were.
#[test]
fn a_sighup_reload_is_counted_by_result_and_the_config_info_follows_it() {
    let _g = crate::spawning();
    let w = World::new();
    let first = config(&w, LOOPBACK, "");
    executor(&w);
    let d = Daemon::start(&w, &[]);
    let x = Exposition::parse(&d.metrics());
    assert_eq!(reloads(&x, "ok"), Some(0.0));
    assert_eq!(reloads(&x, "failed"), Some(0.0));
    assert_eq!(
        config_info(&x),
        (foreman::config::fnv1a(first.as_bytes()), 1.0)
    );
    let loaded = x
        .value("foreman_config_loaded_timestamp_seconds", &[])
        .expect("foreman_config_loaded_timestamp_seconds");
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        (now - 60.0..=now).contains(&loaded),
        "loaded at {loaded}, now {now}"
    );

    // A valid change: counted ok, the new fingerprint and a later load.
    std::thread::sleep(Duration::from_millis(20));
    let second = config(&w, LOOPBACK, "# changed\n");
    let want = foreman::config::fnv1a(second.as_bytes());
    assert_ne!(want, foreman::config::fnv1a(first.as_bytes()));
    d.proc.signal(libc::SIGHUP);
    let x = wait_for("the reload is counted ok", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        (reloads(&x, "ok") == Some(1.0)).then_some(x)
    });
    assert_eq!(reloads(&x, "failed"), Some(0.0));
    assert_eq!(config_info(&x), (want.clone(), 1.0));
    let reloaded = x
        .value("foreman_config_loaded_timestamp_seconds", &[])
        .expect("loaded timestamp");
    assert!(reloaded > loaded, "{reloaded} after {loaded}");

    // A broken file: counted failed, the configuration in force stays.
    w.write("foreman.toml", "interval = [\n");
    d.proc.signal(libc::SIGHUP);
    let x = wait_for("the failed reload is counted", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        (reloads(&x, "failed") == Some(1.0)).then_some(x)
    });
    assert_eq!(reloads(&x, "ok"), Some(1.0));
    assert_eq!(config_info(&x), (want, 1.0));
    assert_eq!(
        x.value("foreman_config_loaded_timestamp_seconds", &[]),
        Some(reloaded)
    );
    // Fixed again so the daemon stops on a readable file (it does anyway).
    config(&w, LOOPBACK, "");
    d.stop();
}

/// An alert to a webhook nobody listens on: each attempt counts as
/// `failed` for that sink (as many as the outbox row's attempts), none as
/// `delivered`, and past `max_age` the row counts once as `expired`.
#[test]
fn a_failing_webhook_counts_failed_then_expired_deliveries() {
    let _g = crate::spawning();
    let w = World::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let sink = format!(
        "[[alerts]]\nname = \"down\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/alerts\"\n\
         timeout = \"1s\"\nretry_base = \"100ms\"\nretry_cap = \"200ms\"\nmax_age = \"3s\"\n"
    );
    config(&w, LOOPBACK, &sink);
    let db = executor(&w);
    db.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at) VALUES ('dead-1', 'plan-a', 'worker', 'RUNNING', ?1, ?2)",
        params![reaped_pid(), before_boot()],
    )
    .expect("dead task");
    let d = Daemon::start(&w, &[]);
    let deliveries = |x: &Exposition, result: &str| {
        x.value(
            "foreman_alert_deliveries_total",
            &[("sink", "down"), ("result", result)],
        )
    };
    let failed = wait_for("a failed delivery is counted", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        deliveries(&x, "failed").filter(|n| *n >= 1.0)
    });
    assert!(failed >= 1.0);
    // Expired once max_age passes; then nothing moves any more, and the
    // counters agree with the row: every attempt it records failed.
    let x = wait_for("the expiry is counted", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        (deliveries(&x, "expired") == Some(1.0)).then_some(x)
    });
    assert_eq!(deliveries(&x, "delivered"), Some(0.0));
    let attempts = w
        .log_i64("SELECT SUM(attempts) FROM alerts WHERE sink = 'down' AND state = 'expired'")
        .expect("the expired row");
    assert_eq!(deliveries(&x, "failed"), Some(attempts as f64));
    assert!(attempts >= 2, "retried with backoff: {attempts}");
    d.stop();
}

/// The latest wellbeing run and review are read from the activity log at
/// each scrape, so runs by the one-shot commands count too: absent before
/// the first, then the run's own time and result.
#[test]
fn the_latest_wellbeing_run_and_review_are_read_from_the_log_whoever_ran_them() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "");
    executor(&w);
    let d = Daemon::start(&w, &[]);
    let x = Exposition::parse(&d.metrics());
    for name in [
        "foreman_wellbeing_last_run_timestamp_seconds",
        "foreman_wellbeing_last_issues",
        "foreman_review_last_run_timestamp_seconds",
        "foreman_review_last_failed_checks",
    ] {
        assert!(!x.has(name), "{name} before any run");
    }

    let out = run(&mut w.foreman(&["wellbeing", "--json"]));
    assert!(out.code.is_some(), "{out:#?}");
    let report: Value = serde_json::from_str(&out.stdout).expect("wellbeing --json");
    let issues = report["issues"].as_f64().expect("issues");
    let finished =
        chrono::DateTime::parse_from_rfc3339(report["finished_at"].as_str().expect("finished_at"))
            .expect("finished_at is RFC 3339");
    // A scrape is cached briefly (until the next sweep): wait for one
    // made after the run.
    let x = wait_for("the wellbeing run in /metrics", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        x.has("foreman_wellbeing_last_issues").then_some(x)
    });
    assert_eq!(x.value("foreman_wellbeing_last_issues", &[]), Some(issues));
    let at = x
        .value("foreman_wellbeing_last_run_timestamp_seconds", &[])
        .expect("the run's time");
    assert!(
        (at - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.002,
        "{at} vs {finished}"
    );

    let out = run(&mut w.foreman(&["review", "--json", "--only", "pid-reuse-detected"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let x = wait_for("the review in /metrics", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        x.has("foreman_review_last_failed_checks").then_some(x)
    });
    assert_eq!(x.value("foreman_review_last_failed_checks", &[]), Some(0.0));
    let failed = w
        .log_i64("SELECT failed FROM review_runs ORDER BY finished_at DESC LIMIT 1")
        .expect("the review's row");
    assert_eq!(failed, 0);
    let at = x
        .value("foreman_review_last_run_timestamp_seconds", &[])
        .expect("the review's time");
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!((now - 60.0..=now).contains(&at), "{at}, now {now}");
    d.stop();
}

/// An executor Foreman cannot read (its tasks table gone): every sweep
/// records snapshot_error, and `foreman_snapshot_error_seconds` grows from
/// the first of them (what ForemanSnapshotError compares with 3 intervals);
/// one sweep that reads it again sets it back to 0.
#[test]
fn snapshot_errors_in_a_row_are_timed_until_a_sweep_reads_the_executor() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, LOOPBACK, "");
    let db = executor(&w);
    let d = Daemon::start(&w, &[]);
    let gauge = |x: &Exposition| x.value("foreman_snapshot_error_seconds", &[]);
    assert_eq!(gauge(&Exposition::parse(&d.metrics())), Some(0.0));

    db.execute_batch("ALTER TABLE tasks RENAME TO tasks_away")
        .expect("hide the tasks table");
    let first = wait_for("a snapshot error is timed", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        gauge(&x).filter(|s| *s > 0.0)
    });
    // Still failing, the time since the first failure only grows (at a
    // 500ms interval, past 3 intervals within a few sweeps).
    let later = wait_for("the run of snapshot errors grows", PATIENCE, || {
        let x = Exposition::parse(&d.metrics());
        gauge(&x).filter(|s| *s > first + 1.5)
    });
    assert!(later > first);
    let x = Exposition::parse(&d.metrics());
    assert_eq!(x.value("foreman_last_sweep_snapshot_error", &[]), Some(1.0));

    db.execute_batch("ALTER TABLE tasks_away RENAME TO tasks")
        .expect("restore the tasks table");
    wait_until(
        "a sweep that reads the executor resets it",
        PATIENCE,
        || gauge(&Exposition::parse(&d.metrics())) == Some(0.0),
    );
    d.stop();
}
