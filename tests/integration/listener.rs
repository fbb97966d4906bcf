//! The HTTP listener under hostile clients and a busy activity log, through
//! the real daemon on a free loopback port: a push answered 202 is kept
//! (a write-locked log is a 503, and a SIGKILL right after the 202 loses
//! nothing); the queue is bounded in bytes (`[monitor] queue_max_bytes`);
//! readers that never read free their slot within `request_timeout`;
//! concurrent reads do not grow the blocking pool past `max_read_jobs`; a
//! push without `Content-Type` is 415; the token's comparison.
//!
//! HTTP is spoken by hand over a `TcpStream`, one request per connection.

use crate::cli::{wait_for, wait_until, Running, World, PATIENCE};
use crate::http_client::{get, listening, post_json, request, tiny_reader, try_request, Resp};
use rusqlite::Connection;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LOOPBACK: &str = "listen = \"127.0.0.1:0\"";

impl Resp {
    /// A 503 that says when to come back.
    fn assert_retry_later(&self) {
        assert_eq!(self.status, 503, "{self:#?}");
        let after: u64 = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("503 without Retry-After: {self:#?}"))
            .parse()
            .unwrap_or_else(|e| panic!("Retry-After: {e}: {self:#?}"));
        assert!(after >= 1, "{self:#?}");
    }
}

/// `foreman run` and its listener's address, as it logged it.
struct Daemon {
    proc: Running,
    addr: SocketAddr,
}

impl Daemon {
    fn start(w: &World, env: &[(&str, &str)]) -> Daemon {
        let (proc, addr) = listening(w, env);
        let d = Daemon { proc, addr };
        // The first sweep has committed: the activity log is there.
        wait_until("a first sweep", PATIENCE, || {
            w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL")
                .unwrap_or(0)
                >= 1
        });
        d
    }

    fn get(&self, path: &str) -> Resp {
        get(self.addr, path)
    }

    fn push(&self, events: &Value) -> Resp {
        post_json(self.addr, "/events", events.to_string().as_bytes())
    }

    /// The daemon's threads now.
    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.proc.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// `foreman.toml`: a 500ms interval, `[http]` and `[monitor]` as given.
fn config(w: &World, http: &str, monitor: &str) {
    crate::http_client::listener_config(w, &format!("{LOOPBACK}\n{http}"), monitor);
    w.executor();
}

fn started(task: &str) -> Value {
    json!({"type": "TASK_STARTED", "task_id": task, "droid_type": "worker", "attempt": 1})
}

/// (source, count) of the recorded events of this task.
fn recorded(w: &World, task: &str) -> Vec<(String, i64)> {
    let Some(log) = w.activity() else {
        return Vec::new();
    };
    let mut stmt = log
        .prepare("SELECT source, COUNT(*) FROM events WHERE task_id = ?1 GROUP BY source")
        .expect("prepare");
    stmt.query_map([task], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn inbox_len(w: &World) -> i64 {
    w.log_i64("SELECT COUNT(*) FROM event_inbox").unwrap_or(-1)
}

/// With the activity log write-locked, a push cannot be kept: 503 with
/// `Retry-After`, within the request's deadline, and nothing recorded.
/// Released, the same push is 202 and recorded once, as pushed.
#[test]
fn a_push_the_log_cannot_keep_is_503_and_202_once_it_can() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "request_timeout = \"4s\"", "");
    let d = Daemon::start(&w, &[]);

    let locker = Connection::open(w.activity_path()).expect("open the log");
    locker.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    let t = Instant::now();
    let r = d.push(&started("locked-out"));
    let took = t.elapsed();
    r.assert_retry_later();
    assert!(
        took < Duration::from_secs(4),
        "the 503 took {took:?}, past request_timeout"
    );
    locker.execute_batch("COMMIT").expect("release");
    drop(locker);

    let r = d.push(&started("locked-out"));
    assert_eq!(r.status, 202, "{r:#?}");
    wait_until("the event recorded", PATIENCE, || {
        !recorded(&w, "locked-out").is_empty()
    });
    assert_eq!(recorded(&w, "locked-out"), [("push".to_string(), 1)]);
    wait_until("the inbox drained", PATIENCE, || inbox_len(&w) == 0);
}

/// An event answered 202 is in the activity log before the answer: the
/// daemon SIGKILLed right after (its consumer held back by a failpoint, so
/// nothing was recorded yet) records it after the restart, once, as a
/// push that moved its task on.
#[cfg(feature = "failpoints")]
#[test]
fn a_sigkill_right_after_202_loses_nothing() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "", "");
    let mut d = Daemon::start(&w, &[("FAILPOINTS", "monitor::ingest=sleep(5000)")]);
    let r = d.push(&json!([started("kept-1"), started("kept-2")]));
    assert_eq!(r.status, 202, "{r:#?}");
    d.proc.signal(libc::SIGKILL);
    let _ = d.proc.finish(PATIENCE);
    assert!(
        recorded(&w, "kept-1").is_empty(),
        "recorded before the kill: the test proves nothing"
    );
    assert_eq!(inbox_len(&w), 2, "the 202 came before the batch was kept");

    let _d = Daemon::start(&w, &[]);
    wait_until("both events recorded after the restart", PATIENCE, || {
        !recorded(&w, "kept-1").is_empty() && !recorded(&w, "kept-2").is_empty()
    });
    for t in ["kept-1", "kept-2"] {
        assert_eq!(recorded(&w, t), [("push".to_string(), 1)], "{t}");
        assert_eq!(
            w.log_i64(&format!(
                "SELECT COUNT(*) FROM monitor_tasks WHERE task_id = '{t}' AND state = 'RUNNING'"
            )),
            Some(1),
            "the push moved {t} on"
        );
    }
    wait_until("the inbox drained", PATIENCE, || inbox_len(&w) == 0);
}

/// `[monitor] queue_max_bytes`: with the consumer held back, a batch that
/// would take the queue past its bytes is 503 with `Retry-After` (one
/// within it is 202); once the queue drained, it is taken.
#[cfg(feature = "failpoints")]
#[test]
fn the_queue_is_bounded_in_bytes() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "max_body_bytes = 4194304", "queue_max_bytes = 1048576");
    let d = Daemon::start(&w, &[("FAILPOINTS", "monitor::ingest=sleep(3000)")]);
    // About 700 KiB in memory each: 2000 events with 250-byte ids.
    let batch = |tag: &str| {
        Value::Array(
            (0..2000)
                .map(|i| started(&format!("{tag}-{i:05}-{}", "x".repeat(240))))
                .collect(),
        )
    };
    let first = d.push(&batch("a"));
    assert_eq!(first.status, 202, "{first:#?}");
    let second = d.push(&batch("b"));
    second.assert_retry_later();
    assert!(second.body.contains("queue_max_bytes"), "{second:#?}");
    let b = batch("b");
    let taken = wait_for(
        "the second batch taken once the queue drained",
        PATIENCE,
        || {
            let r = d.push(&b);
            (r.status == 202).then_some(r)
        },
    );
    assert_eq!(taken.status, 202);
    wait_until("4000 events recorded", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM events WHERE source = 'push'") == Some(4000)
    });
}

/// `max_connections` clients ask for many responses (pipelined) and never
/// read them: each slot frees within `request_timeout` of its stalled
/// write, so `/healthz` answers within that time and a margin.
#[test]
fn readers_that_never_read_free_their_slots_within_request_timeout() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "max_connections = 2\nrequest_timeout = \"2s\"", "");
    let d = Daemon::start(&w, &[]);
    let one = d.get("/metrics");
    assert_eq!(one.status, 200, "{one:#?}");
    // Enough responses to fill both sockets' buffers many times over.
    let n = (8 << 20) / one.body.len().max(1) + 1;
    let ask = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr).repeat(n);
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = tiny_reader(d.addr);
        s.set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        // The server stops reading once it cannot write: a partial write is
        // all it takes.
        let _ = s.write_all(ask.as_bytes());
        hogs.push(s);
    }
    // Both slots are held by now; /healthz waits for one to free.
    let t = Instant::now();
    let r = request(d.addr, "GET", "/healthz", &[], b"");
    let took = t.elapsed();
    assert!(matches!(r.status, 200 | 503), "{r:#?}");
    assert!(
        took < Duration::from_secs(2) + Duration::from_secs(3),
        "/healthz answered after {took:?}, not within request_timeout (2s) and a margin"
    );
    drop(hogs);
}

/// Many concurrent reads (`/plans`, `/twin`, `/metrics`) run at most
/// `max_read_jobs` blocking jobs: the daemon's thread count does not grow
/// by more than that (and a margin for the daemon's own jobs).
#[test]
fn concurrent_reads_do_not_grow_the_blocking_pool_past_max_read_jobs() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "max_read_jobs = 2", "");
    let d = Daemon::start(&w, &[]);
    for i in 0..20 {
        let r = d.push(&started(&format!("warm-{i}")));
        assert_eq!(r.status, 202, "{r:#?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let baseline = d.threads();
    assert!(baseline > 0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let peak = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(d.threads(), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let clients: Vec<_> = (0..48)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    let path = ["/plans", "/twin", "/metrics"][i % 3];
                    for _ in 0..3 {
                        let r = try_request(d.addr, "GET", path, &[], b"");
                        if let Ok(r) = r {
                            assert!(matches!(r.status, 200 | 408 | 503), "{path}: {r:#?}");
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client");
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    // max_read_jobs, plus a sweep's job and /healthz-like quick jobs.
    assert!(
        peak <= baseline + 2 + 2,
        "the daemon went from {baseline} to {peak} threads under 48 concurrent readers (max_read_jobs = 2)"
    );
}

/// `POST /events` without `Content-Type` is 415, like a wrong one; the
/// token is taken exactly (shorter, longer, empty: 401).
#[test]
fn a_push_without_content_type_is_415_and_the_token_must_match_exactly() {
    let _g = crate::spawning();
    let w = World::new();
    config(&w, "", "");
    let d = Daemon::start(&w, &[("FOREMAN_HTTP_TOKEN", "s3cret-token")]);
    let body = started("ct").to_string();
    let auth = |t: &str| format!("Bearer {t}");
    let good = auth("s3cret-token");
    let r = request(
        d.addr,
        "POST",
        "/events",
        &[("Authorization", &good)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 415, "{r:#?}");
    let r = request(
        d.addr,
        "POST",
        "/events",
        &[("Authorization", &good), ("Content-Type", "text/plain")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 415, "{r:#?}");
    for wrong in ["", "s3cret-toke", "s3cret-token!", "s3cret-tokeN", "x"] {
        let a = auth(wrong);
        let r = request(
            d.addr,
            "POST",
            "/events",
            &[("Authorization", &a), ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 401, "token {wrong:?}: {r:#?}");
    }
    let r = request(
        d.addr,
        "POST",
        "/events",
        &[
            ("Authorization", &good),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "{r:#?}");
}
