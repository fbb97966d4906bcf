//! The alert outbox end to end, through the real binary: a real HTTP
//! receiver on 127.0.0.1 that fails at first, a kill -9 between queueing an
//! alert and delivering it, a command sink fed a hostile task id, filters,
//! re-alerting and expiry.

use crate::cli::{
    before_boot, insert_task, reaped_pid, run, wait_for, Running, World, HOST, PATIENCE,
};
use crate::receiver::Receiver;
use serde_json::Value;
use std::collections::BTreeMap;

/// A world with the given RUNNING tasks, all gone and started before this
/// boot (acted on at once, no exit grace), and `sinks` appended to the
/// configuration.
fn world(top: &str, tasks: &[&str], sinks: &str) -> World {
    let w = World::new();
    w.config(top);
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write("foreman.toml", &format!("{text}\n{sinks}"));
    let db = w.executor();
    for id in tasks {
        insert_task(&db, id, "builder", Some(reaped_pid()), &before_boot(), None);
    }
    w
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[alerts]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout = \"2s\"\n\
         retry_base = \"100ms\"\nretry_cap = \"300ms\"\n{extra}\n"
    )
}

/// (state, attempts) of every alert row, by sink.
fn alert_rows(w: &World) -> Vec<(String, i64, String, i64)> {
    let db = w.activity().expect("activity log");
    let mut stmt = db
        .prepare("SELECT sink, finding_id, state, attempts FROM alerts ORDER BY id")
        .expect("query");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn every_alert_arrives_exactly_once_through_a_receiver_that_fails_first() {
    let _g = crate::spawning();
    let receiver = Receiver::start(3);
    let w = world(
        "interval = \"1s\"",
        &["gone-1", "gone-2"],
        &format!(
            "{}{}",
            webhook(
                "recovery",
                &receiver.url(),
                "headers = { \"X-Team\" = \"ops\" }"
            ),
            // A filtered-out sink: never queued for these findings.
            webhook("hung-only", &receiver.url(), "kinds = [\"hung\"]")
        ),
    );
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    // 3 refused, then one accepted per finding.
    receiver.wait_for(5, PATIENCE);
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
    // Everything the daemon ever sent, now that it has exited: a late
    // duplicate would be here.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 5, "{requests:#?}");

    let accepted = &requests[3..];
    let mut by_finding: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in accepted {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-team"), Some("ops"));
        let key = r
            .header("idempotency-key")
            .expect("Idempotency-Key")
            .to_string();
        let body = r.json();
        assert_eq!(body["finding_id"].to_string(), key, "{body:#}");
        by_finding.entry(key).or_default().push(body);
    }
    let rows = alert_rows(&w);
    let mut finding_ids: Vec<String> = rows.iter().map(|r| r.1.to_string()).collect();
    finding_ids.sort();
    assert_eq!(
        by_finding.keys().cloned().collect::<Vec<_>>(),
        finding_ids,
        "one accepted request per finding: {rows:?}"
    );
    for bodies in by_finding.values() {
        assert_eq!(bodies.len(), 1, "delivered twice: {bodies:#?}");
        let b = &bodies[0];
        assert_eq!(b["version"], 1);
        assert!(["gone-1", "gone-2"].contains(&b["task_id"].as_str().unwrap_or("")));
        assert_eq!(b["attempt"], 1);
        assert_eq!(b["droid_type"], "builder");
        assert_eq!(b["host"], HOST);
        assert_eq!(b["kind"], "orphan", "found by the startup scan: {b:#}");
        assert_eq!(b["action"], "mark_failed");
        assert_eq!(b["outcome"], "marked_failed");
        assert_eq!(b["next_step"], "recover");
        assert_eq!(b["foreman_version"], env!("CARGO_PKG_VERSION"));
        assert!(b["evidence"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()));
        assert!(b["pid"].as_i64().is_some());
        for t in ["first_seen_at", "queued_at"] {
            assert!(
                b[t].as_str().is_some_and(|s| s.ends_with('Z')),
                "{t}: {b:#}"
            );
        }
    }
    // Only the unfiltered sink was queued, each row delivered; the three
    // refusals are counted as attempts.
    assert!(
        rows.iter().all(|r| r.0 == "recovery" && r.2 == "delivered"),
        "{rows:?}"
    );
    assert_eq!(rows.iter().map(|r| r.3).sum::<i64>(), 5, "{rows:?}");
}

#[cfg(feature = "failpoints")]
#[test]
fn an_alert_queued_before_a_kill_9_is_delivered_after_the_restart() {
    let _g = crate::spawning();
    let receiver = Receiver::start(0);
    let w = world("", &["crash-1"], &webhook("recovery", &receiver.url(), ""));
    let mut held = Running::start(
        w.foreman(&["sweep"])
            .env("FAILPOINTS", "outbox::before_deliver=sleep(60000)"),
    );
    wait_for(
        "the finding is marked and its alert queued",
        PATIENCE,
        || {
            let marked = w.finding("crash-1", "dead")?.2 == "marked_failed";
            let queued = w.log_i64("SELECT COUNT(*) FROM alerts WHERE state = 'queued'")? == 1;
            (marked && queued).then_some(())
        },
    );
    held.signal(libc::SIGKILL);
    let out = held.finish(PATIENCE);
    assert_eq!(out.code, None, "killed: {out:#?}");
    assert!(
        receiver.requests().is_empty(),
        "nothing was sent before the kill"
    );

    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let got = receiver.wait_for(1, PATIENCE);
    assert_eq!(got.len(), 1);
    let (id, _, _) = w.finding("crash-1", "dead").expect("finding");
    assert_eq!(
        got[0].header("idempotency-key"),
        Some(id.to_string().as_str())
    );
    assert_eq!(got[0].json()["outcome"], "marked_failed");
    let rows = alert_rows(&w);
    assert_eq!(
        rows.len(),
        1,
        "the restart did not queue it again: {rows:?}"
    );
    assert_eq!((rows[0].2.as_str(), rows[0].3), ("delivered", 1));
}

#[test]
fn a_command_sink_gets_a_hostile_task_id_verbatim_and_runs_nothing() {
    let _g = crate::spawning();
    let w = World::new();
    let marker = w.path("pwned");
    let hostile = format!(
        "; rm -rf x; touch {m} $(touch {m}2) `touch {m}3` && echo \"$HOME\"",
        m = marker.display()
    );
    let out_file = w.path("payload.json");
    let sink = format!(
        "[[alerts]]\nname = \"pager\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"cat > \\\"$0\\\"; printf %s \\\"$FOREMAN_FINDING_ID\\\" > \\\"$0.id\\\"\", \"{}\"]\n",
        out_file.display()
    );
    let w = {
        w.config("");
        let text = std::fs::read_to_string(w.config_path()).expect("config");
        w.write("foreman.toml", &format!("{text}\n{sink}"));
        let db = w.executor();
        insert_task(
            &db,
            &hostile,
            "builder",
            Some(reaped_pid()),
            &before_boot(),
            None,
        );
        w
    };
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let payload: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).expect("the sink ran"))
            .expect("JSON on stdin");
    assert_eq!(payload["task_id"], hostile.as_str());
    let id = std::fs::read_to_string(format!("{}.id", out_file.display())).expect("id file");
    assert_eq!(id, payload["finding_id"].to_string());
    for suffix in ["", "2", "3"] {
        let p = format!("{}{suffix}", marker.display());
        assert!(!std::path::Path::new(&p).exists(), "{p} was created");
    }
}

#[test]
fn a_finding_seen_again_is_realerted_only_after_realert_after() {
    let _g = crate::spawning();
    // The executor refuses every mark: the finding ends `error` and is
    // decided again by every sweep.
    let receiver = Receiver::start(0);
    let sinks = format!(
        "{}{}",
        webhook("hourly", &receiver.url(), ""),
        webhook("eager", &receiver.url(), "realert_after = \"1ms\"")
    );
    let w = world("", &["stuck-1"], &sinks);
    w.executor()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE ON tasks BEGIN SELECT RAISE(ABORT, 'the executor refuses'); END;",
        )
        .expect("trigger");
    for _ in 0..3 {
        let out = run(&mut w.foreman(&["sweep"]));
        assert_eq!(out.code, Some(1), "the mark fails: {out:#?}");
    }
    let rows = alert_rows(&w);
    let count = |sink: &str| rows.iter().filter(|r| r.0 == sink).count();
    assert_eq!(count("hourly"), 1, "{rows:?}");
    assert_eq!(count("eager"), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.2 == "delivered"), "{rows:?}");
    let got = receiver.requests();
    assert_eq!(got.len(), 4);
    assert!(got
        .iter()
        .all(|r| r.json()["outcome"] == "error" && r.json()["next_step"] == "inspect"));
}

#[test]
fn an_alert_older_than_max_age_expires_and_is_logged_at_error() {
    let _g = crate::spawning();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}/alerts");
    let w = world(
        "",
        &["gone-1"],
        &webhook("down", &url, "max_age = \"100ms\""),
    );
    let first = run(&mut w.foreman(&["sweep"]));
    assert_eq!(
        first.code,
        Some(0),
        "undelivered alerts never fail a sweep: {first:#?}"
    );
    let rows = alert_rows(&w);
    assert_eq!(rows.len(), 1);
    // Past max_age, the next command to look expires it (or, on a host so
    // busy that the first command's own retry came past max_age, the first
    // did: either way one of them says so).
    let queued: String = w
        .activity()
        .expect("log")
        .query_row("SELECT queued_at FROM alerts", [], |r| r.get(0))
        .expect("queued_at");
    let queued = chrono::DateTime::parse_from_rfc3339(&queued).expect("time");
    while chrono::Utc::now() < queued + chrono::Duration::milliseconds(150) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let rows = alert_rows(&w);
    assert_eq!(rows[0].2, "expired", "{rows:?}\n{}", out.stderr);
    let said = format!("{}{}", first.stderr, out.stderr);
    assert!(
        said.contains("ERROR") && said.contains("alert expired"),
        "{}",
        said
    );
}

#[test]
fn a_sink_that_is_down_is_tried_once_per_backoff_and_re_seen_findings_do_not_pile_up() {
    let _g = crate::spawning();
    let receiver = Receiver::start(usize::MAX);
    let w = world(
        "",
        &["stuck-1", "stuck-2", "stuck-3"],
        &webhook("down", &receiver.url(), "realert_after = \"1ms\""),
    );
    // Every mark fails, so every sweep decides on the three findings again.
    w.executor()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE ON tasks BEGIN SELECT RAISE(ABORT, 'the executor refuses'); END;",
        )
        .expect("trigger");
    for _ in 0..2 {
        let out = run(&mut w.foreman(&["sweep"]));
        assert_eq!(out.code, Some(1), "{out:#?}");
    }
    let rows = alert_rows(&w);
    assert_eq!(
        rows.len(),
        3,
        "one queued alert per finding, however often it is re-seen: {rows:?}"
    );
    assert!(rows.iter().all(|r| r.2 == "queued"), "{rows:?}");
    // The first failure holds the sink's other alerts until its retry: at
    // most one attempt per round, whatever the backlog.
    let sent = receiver.requests().len();
    assert!(
        (1..=2).contains(&sent),
        "{sent} requests in 2 rounds: {rows:?}"
    );
    assert_eq!(rows.iter().map(|r| r.3).sum::<i64>(), sent as i64);
}

#[test]
fn alerts_of_a_sink_no_longer_configured_are_held_not_dropped() {
    let _g = crate::spawning();
    let receiver = Receiver::start(usize::MAX);
    let w = world("", &["gone-1"], &webhook("pager", &receiver.url(), ""));
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(receiver.requests().len(), 1, "tried once, refused");

    // The operator renames the sink while it is down; its retry falls due.
    let next: String = w
        .activity()
        .expect("log")
        .query_row("SELECT next_attempt_at FROM alerts", [], |r| r.get(0))
        .expect("next_attempt_at");
    let next = chrono::DateTime::parse_from_rfc3339(&next).expect("time");
    while chrono::Utc::now() <= next {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    w.write(
        "foreman.toml",
        &text.replace("name = \"pager\"", "name = \"pager-2\""),
    );
    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let rows = alert_rows(&w);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].2.as_str()),
        ("pager", "queued"),
        "{rows:?}"
    );
    let why: String = w
        .activity()
        .expect("log")
        .query_row("SELECT last_error FROM alerts", [], |r| r.get(0))
        .expect("last_error");
    assert!(why.contains("not in this configuration"), "{why}");
    assert_eq!(
        receiver.requests().len(),
        1,
        "not sent through another sink"
    );
}
