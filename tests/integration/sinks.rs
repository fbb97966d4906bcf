//! One delivery attempt to one sink (`foreman::alert::deliver`): real HTTP to
//! a receiver on 127.0.0.1, real child processes.

use crate::common::{cmdline, proc_state, wait_for, PATIENCE};
use crate::receiver::Receiver;
use chrono::{TimeZone, Utc};
use foreman::alert::{next_step, Message, NextStep, Payload, PAYLOAD_VERSION};
use foreman::config::{Sink, SinkTarget};
use foreman::model::{Action, Kind, Outcome};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One delivery of an alert's payload, as the outbox makes it.
fn deliver(sink: &Sink, p: &Payload) -> Result<(), String> {
    foreman::alert::deliver(sink, &Message::alert(p)?)
}

fn payload() -> Payload {
    Payload {
        version: PAYLOAD_VERSION,
        finding_id: 4711,
        alert_id: 815,
        task_id: "task-1".into(),
        attempt: 2,
        plan_id: Some("plan-9".into()),
        droid_type: Some("quiet".into()),
        host: "test-host".into(),
        pid: Some(12345),
        kind: Kind::Dead,
        evidence: serde_json::json!({"pid_exists": false, "seen": [1, 2]}),
        action: Action::MarkFailed,
        outcome: Outcome::MarkedFailed,
        detail: Some("marked failed".into()),
        next_step: NextStep::Recover,
        first_seen_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
        queued_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 6).unwrap(),
        foreman_version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn sink(target: SinkTarget, timeout: Duration) -> Sink {
    Sink {
        name: "test".into(),
        target,
        timeout,
        kinds: Vec::new(),
        droid_types: Vec::new(),
        retry_base: Duration::from_secs(1),
        retry_cap: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
        realert_after: Duration::from_secs(3600),
    }
}

fn webhook(url: String, headers: &[(&str, &str)], bearer_token_env: Option<&str>) -> Sink {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let target = SinkTarget::Webhook {
        url,
        headers,
        bearer_token_env: bearer_token_env.map(String::from),
    };
    sink(target, Duration::from_secs(5))
}

fn command(argv: &[&str], timeout: Duration) -> Sink {
    let argv = argv.iter().map(|a| a.to_string()).collect();
    sink(SinkTarget::Command { argv }, timeout)
}

#[test]
fn webhook_delivers_the_payload_with_its_headers() {
    let receiver = Receiver::start(0);
    std::env::set_var("FOREMAN_TEST_TOKEN_DELIVERS", "s3cret-token");
    let sink = webhook(
        receiver.url(),
        &[("X-Team", "ops"), ("X-Route", "pager")],
        Some("FOREMAN_TEST_TOKEN_DELIVERS"),
    );
    let p = payload();

    assert_eq!(deliver(&sink, &p), Ok(()));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "exactly one POST");
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/alerts");
    assert_eq!(serde_json::from_value::<Payload>(r.json()).unwrap(), p);
    assert_eq!(r.json()["kind"], "dead");
    assert_eq!(r.json()["next_step"], "recover");
    assert_eq!(r.header("idempotency-key"), Some("4711"));
    assert_eq!(r.header("X-Foreman-Alert-Id"), Some("815"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let ua = format!("foreman/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(r.header("User-Agent"), Some(ua.as_str()));
    assert_eq!(r.header("x-team"), Some("ops"));
    assert_eq!(r.header("X-Route"), Some("pager"));
    assert_eq!(r.header("Authorization"), Some("Bearer s3cret-token"));
}

#[test]
fn configured_headers_cannot_replace_the_identity_headers() {
    let receiver = Receiver::start(0);
    let sink = webhook(
        receiver.url(),
        &[
            ("idempotency-key", "forged"),
            ("Content-Type", "text/plain"),
        ],
        None,
    );
    assert_eq!(deliver(&sink, &payload()), Ok(()));
    let r = &receiver.requests()[0];
    let keys: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 1, "sent once: {:?}", r.headers);
    assert_eq!(r.header("Idempotency-Key"), Some("4711"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Authorization"), None);
}

#[test]
fn webhook_without_its_bearer_token_sends_nothing() {
    let receiver = Receiver::start(0);
    for var in ["FOREMAN_TEST_TOKEN_UNSET", "FOREMAN_TEST_TOKEN_EMPTY"] {
        std::env::remove_var("FOREMAN_TEST_TOKEN_UNSET");
        std::env::set_var("FOREMAN_TEST_TOKEN_EMPTY", "");
        let err = deliver(&webhook(receiver.url(), &[], Some(var)), &payload()).unwrap_err();
        assert!(err.contains(var), "{err}");
        assert!(err.contains("not set"), "{err}");
    }
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
}

#[test]
fn webhook_503_fails_then_the_next_attempt_delivers() {
    let receiver = Receiver::start(1);
    let sink = webhook(receiver.url(), &[], None);

    let err = deliver(&sink, &payload()).unwrap_err();
    assert!(err.contains("503"), "{err}");
    assert!(err.contains("unavailable"), "the start of the body: {err}");

    assert_eq!(deliver(&sink, &payload()), Ok(()));
    let requests = receiver.wait_for(2, PATIENCE);
    assert_eq!(requests.len(), 2);
    // The same finding and alert: the receiver can tell it is a retry.
    assert_eq!(
        requests[0].header("Idempotency-Key"),
        requests[1].header("Idempotency-Key")
    );
    assert_eq!(requests[0].body, requests[1].body);
}

#[test]
fn webhook_redirect_is_a_failure_not_followed() {
    let target = Receiver::start(0);
    let receiver = Receiver::start_redirect(&target.url());
    let err = deliver(&webhook(receiver.url(), &[], None), &payload()).unwrap_err();
    assert!(err.contains("302"), "{err}");
    assert!(err.contains("not followed"), "{err}");
    assert_eq!(receiver.requests().len(), 1);
    assert!(target.requests().is_empty(), "the redirect was followed");
}

#[test]
fn webhook_times_out_on_a_silent_receiver() {
    let delay = Duration::from_secs(10);
    let receiver = Receiver::start_slow(delay);
    let mut sink = webhook(receiver.url(), &[], None);
    sink.timeout = Duration::from_millis(300);

    let started = Instant::now();
    let err = deliver(&sink, &payload()).unwrap_err();
    let elapsed = started.elapsed();

    assert!(err.contains("timed out after 300ms"), "{err}");
    assert!(elapsed < delay, "took {elapsed:?}");
    assert_eq!(
        receiver.wait_for(1, PATIENCE).len(),
        1,
        "the request did arrive"
    );
}

#[test]
fn webhook_connection_refused_is_an_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/alerts");
    let err = deliver(&webhook(url, &[], None), &payload()).unwrap_err();
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[test]
fn webhook_error_never_shows_the_token() {
    std::env::set_var("FOREMAN_TEST_TOKEN_SECRET", "tok-never-logged");
    let receiver = Receiver::start(1);
    let err = deliver(
        &webhook(receiver.url(), &[], Some("FOREMAN_TEST_TOKEN_SECRET")),
        &payload(),
    )
    .unwrap_err();
    assert!(!err.contains("tok-never-logged"), "{err}");
    // A token that cannot be a header value fails without echoing it.
    std::env::set_var("FOREMAN_TEST_TOKEN_SECRET", "tok-never-logged\nX: y");
    let err = deliver(
        &webhook(receiver.url(), &[], Some("FOREMAN_TEST_TOKEN_SECRET")),
        &payload(),
    )
    .unwrap_err();
    assert!(!err.contains("tok-never-logged"), "{err}");
    assert!(err.contains("FOREMAN_TEST_TOKEN_SECRET"), "{err}");
    assert!(err.contains("not a valid header value"), "{err}");
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn command_gets_the_payload_on_stdin_and_the_ids_in_its_environment() {
    let _g = crate::spawning();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payload.json");
    let marker = dir.path().join("pwned");
    let mut p = payload();
    p.task_id = format!("\"; rm -rf x $(touch {}) `back`", marker.display());
    let sink = command(
        &[
            "sh",
            "-c",
            "cat > \"$0\"; printf %s \"$FOREMAN_FINDING_ID\" > \"$0.id\"; printf %s \"$FOREMAN_ALERT_ID\" > \"$0.alert\"",
            out.to_str().unwrap(),
        ],
        PATIENCE,
    );

    assert_eq!(deliver(&sink, &p), Ok(()));

    let written = std::fs::read(&out).unwrap();
    assert_eq!(written, serde_json::to_vec(&p).unwrap());
    let back: Payload = serde_json::from_slice(&written).unwrap();
    assert_eq!(back.task_id, p.task_id, "verbatim");
    assert_eq!(back, p);
    let id = |ext: &str| std::fs::read_to_string(dir.path().join(format!("payload.json.{ext}")));
    assert_eq!(id("id").unwrap(), "4711");
    assert_eq!(id("alert").unwrap(), "815");
    assert!(!marker.exists(), "the task id was run by a shell");
}

#[test]
fn command_failure_names_the_status_and_the_stderr_line() {
    let _g = crate::spawning();
    let sink = command(
        &["sh", "-c", "echo starting >&2; echo boom >&2; exit 3"],
        PATIENCE,
    );
    let err = deliver(&sink, &payload()).unwrap_err();
    assert_eq!(err, "exit status 3: starting … boom");
}

#[test]
fn command_killed_by_a_signal_says_which() {
    let _g = crate::spawning();
    let sink = command(&["sh", "-c", "kill -TERM $$"], PATIENCE);
    let err = deliver(&sink, &payload()).unwrap_err();
    assert_eq!(err, "killed by signal 15 (SIGTERM)");
}

#[test]
fn command_that_cannot_start_is_named() {
    let _g = crate::spawning();
    let sink = command(&["/nonexistent/foreman-pager", "--now"], PATIENCE);
    let err = deliver(&sink, &payload()).unwrap_err();
    assert!(err.contains("/nonexistent/foreman-pager"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn command_timeout_kills_its_whole_group() {
    let _g = crate::spawning();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let timeout = Duration::from_secs(2);
    // The sleep is a grandchild: only a group kill reaches it.
    let sink = command(
        &[
            "sh",
            "-c",
            "sleep 300 & echo $! > \"$0\"; wait",
            pidfile.to_str().unwrap(),
        ],
        timeout,
    );

    let started = Instant::now();
    let delivery = std::thread::spawn(move || deliver(&sink, &payload()));
    // Read while the delivery is still waiting, so a loaded machine cannot
    // time out the shell before it has started the sleep and named it.
    let mut pid = None;
    wait_for("the sleep's pid", || {
        pid = std::fs::read_to_string(&pidfile)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse::<i32>().ok());
        pid.is_some()
    });
    let pid = pid.unwrap();
    let err = delivery.join().unwrap().unwrap_err();
    let elapsed = started.elapsed();

    assert_eq!(err, "timed out after 2s");
    assert!(elapsed < timeout + PATIENCE, "took {elapsed:?}");
    wait_for("the timed-out sleep to be gone", || gone(pid, "sleep"));
}

/// Gone, a zombie left to init, or the pid already reused by another program.
fn gone(pid: i32, program: &str) -> bool {
    !cmdline(pid).starts_with(program) || matches!(proc_state(pid), None | Some('Z' | 'X' | 'x'))
}

#[test]
fn command_leaves_nothing_running_after_it_exits() {
    let _g = crate::spawning();
    for (exit, expected) in [(0, Ok(())), (3, Err("exit status 3: started".to_string()))] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("sleep.pid");
        // The background sleep inherits stderr: left alive, it would hold the
        // pipe (and the reader thread) open as well.
        let script = format!("sleep 300 & echo $! > \"$0\"; echo started >&2; exit {exit}");
        let sink = command(&["sh", "-c", &script, pidfile.to_str().unwrap()], PATIENCE);

        let started = Instant::now();
        assert_eq!(deliver(&sink, &payload()), expected, "exit {exit}");
        assert!(started.elapsed() < PATIENCE, "took {:?}", started.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_for("the backgrounded sleep to be gone", || gone(pid, "sleep"));
    }
}

#[test]
fn command_sees_only_the_allowed_environment() {
    let _g = crate::spawning();
    let secret = format!("FOREMAN_TEST_SINK_SECRET_{}", std::process::id());
    std::env::set_var(&secret, "hunter2-never-passed");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let sink = command(
        &["sh", "-c", "env > \"$0\"", out.to_str().unwrap()],
        PATIENCE,
    );

    assert_eq!(deliver(&sink, &payload()), Ok(()));

    let env = std::fs::read_to_string(&out).unwrap();
    std::env::remove_var(&secret);
    let lines: Vec<&str> = env.lines().collect();
    assert!(!env.contains(&secret), "{env}");
    assert!(!env.contains("hunter2-never-passed"), "{env}");
    assert!(lines.contains(&"FOREMAN_FINDING_ID=4711"), "{env}");
    assert!(lines.contains(&"FOREMAN_ALERT_ID=815"), "{env}");
    let path = format!("PATH={}", std::env::var("PATH").unwrap());
    assert!(lines.contains(&path.as_str()), "{env}");
    // Nothing from the test's own environment beyond the allowlist (sh adds
    // a few of its own, such as PWD and SHLVL).
    for (name, _) in std::env::vars() {
        let allowed = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "PWD", "SHLVL", "_"];
        if !allowed.contains(&name.as_str()) {
            let prefix = format!("{name}=");
            assert!(
                !lines.iter().any(|l| l.starts_with(&prefix)),
                "{name} passed: {env}"
            );
        }
    }
}

#[test]
fn command_that_ignores_a_large_payload_is_delivered() {
    let _g = crate::spawning();
    let mut p = payload();
    p.evidence = serde_json::json!({ "blob": "x".repeat(1 << 20) });
    let started = Instant::now();
    assert_eq!(deliver(&command(&["true"], PATIENCE), &p), Ok(()));
    assert!(started.elapsed() < PATIENCE);
    // A reader that stops early is fine too.
    assert_eq!(
        deliver(&command(&["head", "-c", "10"], PATIENCE), &p),
        Ok(())
    );
}

#[test]
fn command_with_chatty_stderr_does_not_deadlock() {
    let _g = crate::spawning();
    // Far more than a pipe buffer holds, then a failure.
    let sink = command(
        &[
            "sh",
            "-c",
            "head -c 1000000 /dev/zero | tr '\\0' 'e' >&2; echo >&2; echo last words >&2; exit 1",
        ],
        PATIENCE,
    );
    // The first line (a megabyte of 'e', cut to an excerpt) and the last.
    let err = deliver(&sink, &payload()).unwrap_err();
    assert!(
        err.starts_with("exit status 1: eee") && err.ends_with(" … last words"),
        "{err}"
    );
    assert!(
        err.len() < 1000,
        "an excerpt, not the megabyte: {}",
        err.len()
    );
}

#[test]
fn next_step_is_recovery_only_when_foreman_marked_the_task_failed() {
    use Kind::*;
    use NextStep::*;
    let kinds = [
        (Alive, Inspect),
        (Dead, Recover),
        (Zombie, Recover),
        (PidReused, Recover),
        (Orphan, Recover),
        (Hung, Replan),
        (TimedOut, Replan),
        (Unverifiable, Inspect),
        (HostLost, Recover),
        (Stray, Inspect),
    ];
    let not_marked = [
        Outcome::Pending,
        Outcome::AlreadyFinished,
        Outcome::WouldMarkFailed,
        Outcome::DeferredStarvation,
        Outcome::Braked,
        Outcome::Unkillable,
        Outcome::Terminated,
        Outcome::Reported,
        Outcome::Cleared,
        Outcome::Error,
        Outcome::Silenced,
    ];
    // Both lists name every variant: a new one does not compile until it is
    // placed in the table.
    for (kind, _) in kinds {
        match kind {
            Alive | Dead | Zombie | PidReused | Orphan | Hung | TimedOut | Unverifiable | Stray
            | HostLost => {}
        }
    }
    for outcome in not_marked {
        match outcome {
            Outcome::MarkedFailed => unreachable!(),
            Outcome::Pending
            | Outcome::AlreadyFinished
            | Outcome::WouldMarkFailed
            | Outcome::DeferredStarvation
            | Outcome::Braked
            | Outcome::Unkillable
            | Outcome::Terminated
            | Outcome::Reported
            | Outcome::Cleared
            | Outcome::Error
            | Outcome::Silenced => {}
        }
    }
    for (kind, expected) in kinds {
        assert_eq!(
            next_step(kind, Outcome::MarkedFailed),
            expected,
            "{kind} marked_failed"
        );
        for outcome in not_marked {
            assert_eq!(next_step(kind, outcome), Inspect, "{kind} {outcome}");
        }
    }
}
