//! Heartbeats by push (`POST /heartbeat`) through the real daemon: a
//! heartbeat-only task whose row never beats stays alive while its
//! executor pushes, and is found hung soon after the pushes stop; bad
//! bodies are 400, a missing Content-Type 415, a missing token 401.

use crate::cli::{insert_task, wait_until, World, PATIENCE};
use crate::http_client::{listening, post_json, request};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A 500ms interval and a heartbeat-only type with a 2 s timeout.
fn world() -> World {
    let w = World::new();
    crate::http_client::listener_config(&w, "listen = \"127.0.0.1:0\"", "");
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    let text = text.replace(
        "[http]",
        "[droid_types.pushed]\nprogress = [\"heartbeat\"]\ntimeout = \"2s\"\nstartup_grace = \"0s\"\n\n[http]",
    );
    w.write("foreman.toml", &text);
    w.executor();
    w
}

#[test]
fn a_pushed_heartbeat_keeps_a_task_alive_and_its_silence_makes_it_hung() {
    let _g = crate::spawning();
    let w = world();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("sleep");
    let pid = sleeper.id() as i32;
    let started = crate::common::process_started_at(pid).to_rfc3339();
    // The row's own heartbeat is written once, at the start, never again.
    insert_task(
        &w.executor(),
        "pushed-1",
        "pushed",
        Some(pid),
        &started,
        Some(&started),
    );
    let (mut d, addr) = listening(&w, &[]);
    let beat = || {
        let r = post_json(
            addr,
            "/heartbeat",
            br#"{"task_id": "pushed-1", "attempt": 1, "note": "step 3 of 9"}"#,
        );
        assert_eq!(r.status, 202, "{r:#?}");
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["accepted"], 1);
    };
    // Pushing every 300 ms for twice the timeout: never hung.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        beat();
        assert!(d.still_running(), "{}", d.stderr());
        std::thread::park_timeout(Duration::from_millis(300));
    }
    let state = |w: &World| -> String {
        w.executor()
            .query_row("SELECT state FROM tasks WHERE id = 'pushed-1'", [], |r| {
                r.get(0)
            })
            .expect("state")
    };
    assert_eq!(state(&w), "RUNNING", "{}", d.stderr());
    assert_eq!(
        w.log_i64("SELECT COUNT(*) FROM findings WHERE task_id = 'pushed-1'"),
        Some(0),
        "{}",
        d.stderr()
    );
    // The pushes stop: hung within the timeout and a sweep or two.
    let stopped = Instant::now();
    wait_until("pushed-1 failed as hung", PATIENCE, || {
        state(&w) == "FAILED"
    });
    assert!(stopped.elapsed() >= Duration::from_secs(1), "hung too soon");
    let (_, action, outcome) = w.finding("pushed-1", "hung").expect("a hung finding");
    assert_eq!(
        (action.as_str(), outcome.as_str()),
        ("terminate_and_mark", "marked_failed")
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    d.signal(libc::SIGTERM);
    let _ = d.finish(PATIENCE);
}

#[test]
fn heartbeat_pushes_are_refused_clearly() {
    let _g = crate::spawning();
    let w = world();
    let (mut d, addr) = listening(&w, &[("FOREMAN_HTTP_TOKEN", "s3cret")]);
    let auth = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer s3cret"),
    ];
    for (body, says) in [
        (&br#"{"attempt": 1}"#[..], "not a heartbeat"),
        (br#"{"task_id": ""}"#, "task_id must be"),
        (br#"{"task_id": "t", "attempt": 0}"#, "attempt 0"),
        (b"[1, 2]", "not a heartbeat"),
    ] {
        let r = request(addr, "POST", "/heartbeat", &auth, body);
        assert_eq!(r.status, 400, "{r:#?}");
        assert!(r.body.contains(says), "{}", r.body);
    }
    let r = request(
        addr,
        "POST",
        "/heartbeat",
        &auth[1..],
        br#"{"task_id": "t"}"#,
    );
    assert_eq!(r.status, 415, "{r:#?}");
    let r = request(
        addr,
        "POST",
        "/heartbeat",
        &auth[..1],
        br#"{"task_id": "t"}"#,
    );
    assert_eq!(r.status, 401, "{r:#?}");
    let r = request(
        addr,
        "POST",
        "/heartbeat",
        &auth,
        br#"[{"task_id": "a"}, {"task_id": "b", "attempt": 2}]"#,
    );
    assert_eq!(r.status, 202, "{r:#?}");
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM pushed_heartbeats"), Some(2));
    d.signal(libc::SIGTERM);
    let _ = d.finish(PATIENCE);
}
