//! `[monitor] max_plans` through the real daemon over real HTTP on
//! 127.0.0.1 (a free port, read from the daemon's log): plans from the
//! executor and pushed plans beyond the cap are not tracked, refusals are
//! counted (`foreman_plans_refused_total`), per-plan series on `/metrics`
//! never outnumber the cap, completed plans make room (oldest first), and
//! `/plans` pages through every plan (`limit`, `after`, `next`).

use crate::cli::{now_text, run, wait_until, Running, World, PATIENCE};
use crate::http_client::{get, listening, post_json, Resp};
use regex::Regex;
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

const MAX_PLANS: usize = 20;

/// `foreman run` with its listener's address.
struct Daemon {
    proc: Running,
    addr: SocketAddr,
}

impl Daemon {
    fn start(w: &World) -> Daemon {
        let (proc, addr) = listening(w, &[]);
        Daemon { proc, addr }
    }

    fn get(&self, path: &str) -> Resp {
        get(self.addr, path)
    }

    fn push(&self, events: &Value) -> Resp {
        post_json(self.addr, "/events", events.to_string().as_bytes())
    }

    fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Every plan id `/plans` shows, a page of `limit` at a time.
    fn all_plans(&self, limit: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let path = match &after {
                Some(a) => format!("/plans?limit={limit}&after={a}"),
                None => format!("/plans?limit={limit}"),
            };
            let r = self.get(&path);
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            let page = r.json();
            let plans = page["plans"].as_array().expect("plans").clone();
            assert!(plans.len() <= limit, "{path}: {} plans", plans.len());
            ids.extend(
                plans
                    .iter()
                    .map(|p| p["plan_id"].as_str().expect("plan_id").to_string()),
            );
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => {
                    assert!(page["next"].is_null(), "{page}");
                    return ids;
                }
            }
        }
        panic!("/plans never ended");
    }

    fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        let out = self.proc.finish(PATIENCE);
        assert_eq!(out.code, Some(0), "{out:#?}");
    }
}

fn config(w: &World) {
    config_with(w, &format!("max_plans = {MAX_PLANS}"));
}

fn config_with(w: &World, monitor: &str) {
    crate::http_client::listener_config(w, "listen = \"127.0.0.1:0\"", monitor);
}

fn set_task(db: &Connection, id: &str, plan: &str, state: &str) {
    let finished = (state == "SUCCESS").then(now_text);
    db.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, attempt, finished_at)
         VALUES (?1, ?2, 'worker', ?3, 1, ?4)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, finished_at = excluded.finished_at",
        params![id, plan, state, finished],
    )
    .expect("write task");
}

/// The plans the monitor tracks (rows of `monitor_plans`).
fn tracked(w: &World) -> BTreeSet<String> {
    let Some(log) = w.activity() else {
        return BTreeSet::new();
    };
    let Ok(mut stmt) = log.prepare("SELECT plan_id FROM monitor_plans") else {
        return BTreeSet::new();
    };
    stmt.query_map([], |r| r.get(0))
        .expect("plans")
        .collect::<Result<_, _>>()
        .expect("plan rows")
}

fn completed(w: &World) -> usize {
    w.activity()
        .and_then(|log| {
            log.query_row(
                "SELECT COUNT(*) FROM monitor_plans WHERE completed_at IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ok()
        })
        .unwrap_or(0) as usize
}

/// A sample's value: `name` with no labels.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The plan ids with a series on `/metrics`.
fn plan_series(metrics: &str) -> BTreeSet<String> {
    let re = Regex::new(r#"plan_id="([^"]*)""#).expect("regex");
    metrics
        .lines()
        .filter_map(|l| re.captures(l).map(|c| c[1].to_string()))
        .collect()
}

fn started(task: &str, plan: &str) -> Value {
    json!({"type": "TASK_STARTED", "task_id": task, "plan_id": plan, "droid_type": "worker", "attempt": 1})
}

/// The executor has more plans than `max_plans`, then pushes start more:
/// the monitor tracks `max_plans`, counts every refusal, keeps `/metrics`
/// to the tracked plans' series, pages `/plans` through all of them; once
/// plans complete, new plans take their place, the oldest completed first.
#[test]
fn plans_beyond_max_plans_are_refused_counted_and_paged() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w);
    let db = w.executor();
    const EXTRA: usize = 7;
    for i in 0..MAX_PLANS + EXTRA {
        set_task(&db, &format!("t{i:02}"), &format!("exec-{i:02}"), "PENDING");
    }
    let d = Daemon::start(&w);
    wait_until("the first sweep tracks the plans", PATIENCE, || {
        tracked(&w).len() == MAX_PLANS
    });
    let first: BTreeSet<String> = (0..MAX_PLANS).map(|i| format!("exec-{i:02}")).collect();
    assert_eq!(tracked(&w), first, "the first plans in plan id order");
    wait_until("the sweep's refusals are counted", PATIENCE, || {
        value(&d.metrics(), "foreman_plans_refused_total") >= Some(EXTRA as f64)
    });

    // Pushes for new plans while every tracked plan is open: refused with
    // 503 + Retry-After, nothing taken, and counted.
    const PUSHED: usize = 30;
    let before = value(&d.metrics(), "foreman_plans_refused_total").unwrap_or(0.0);
    for i in 0..PUSHED {
        let r = d.push(&json!([started(
            &format!("push-{i:02}"),
            &format!("push-{i:02}")
        )]));
        assert_eq!(r.status, 503, "push {i}: {}", r.body);
        assert!(r.header("retry-after").is_some(), "{}", r.head);
        assert!(r.body.contains("max_plans"), "{}", r.body);
    }
    wait_until("the pushes' refusals are counted", PATIENCE, || {
        value(&d.metrics(), "foreman_plans_refused_total") >= Some(before + PUSHED as f64)
    });
    assert_eq!(tracked(&w), first, "no pushed plan is tracked");

    // /metrics: series for the tracked plans only, and a bounded size.
    let m = d.metrics();
    assert_eq!(value(&m, "foreman_max_plans"), Some(MAX_PLANS as f64));
    assert!(value(&m, "execmon_plans_tracked") <= Some(MAX_PLANS as f64));
    let series = plan_series(&m);
    assert!(series.is_subset(&first), "{series:?}");
    assert!(m.len() < 64 * 1024, "/metrics is {} bytes", m.len());

    // /plans, a page at a time.
    let paged = d.all_plans(7);
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), first);
    assert_eq!(paged.len(), MAX_PLANS, "no plan twice: {paged:?}");
    assert_eq!(d.all_plans(1000), paged);
    let r = d.get("/plans");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["plans"].as_array().map(Vec::len), Some(MAX_PLANS));
    for bad in ["/plans?limit=0", "/plans?limit=x", "/plans?offset=2"] {
        assert_eq!(d.get(bad).status, 400, "{bad}");
    }

    // Five plans complete (t00 first, t04 last): five new plans may come.
    for i in 0..5 {
        set_task(&db, &format!("t{i:02}"), &format!("exec-{i:02}"), "SUCCESS");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until("five plans complete", PATIENCE, || completed(&w) == 5);
    let r = d.push(&json!([
        started("new-a", "new-a"),
        started("new-b", "new-b")
    ]));
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("the new plans are tracked", PATIENCE, || {
        let t = tracked(&w);
        t.contains("new-a") && t.contains("new-b")
    });
    let t = tracked(&w);
    assert_eq!(t.len(), MAX_PLANS, "{t:?}");
    let evicted: Vec<&String> = first.difference(&t).collect();
    assert_eq!(evicted.len(), 2, "{t:?}");
    assert!(
        evicted.iter().all(|p| p.as_str() < "exec-05"),
        "only completed plans go: {evicted:?}"
    );
    assert!(plan_series(&d.metrics()).len() <= MAX_PLANS);
    d.stop();
}

/// `check-config` takes `max_plans` from 1 to 1,000,000, shows the default
/// (10,000), and refuses anything else naming the key.
#[test]
fn check_config_bounds_max_plans() {
    let _g = crate::spawning();
    let w = World::new();
    for (monitor, shown) in [
        ("", "max_plans = 10000"),
        ("max_plans = 1", "max_plans = 1"),
        ("max_plans = 1000000", "max_plans = 1000000"),
    ] {
        config_with(&w, monitor);
        let out = run(&mut w.foreman(&["check-config"]));
        assert_eq!(out.code, Some(0), "{monitor}: {out:#?}");
        assert!(out.stdout.contains(shown), "{monitor}: {}", out.stdout);
    }
    for monitor in ["max_plans = 0", "max_plans = 1000001", "max_plans = -1"] {
        config_with(&w, monitor);
        let out = run(&mut w.foreman(&["check-config"]));
        assert_eq!(out.code, Some(2), "{monitor}: {out:#?}");
        assert!(
            out.stderr.contains("max_plans"),
            "{monitor}: {}",
            out.stderr
        );
    }
}
