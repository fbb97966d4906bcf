//! A real HTTP/1.1 receiver on 127.0.0.1 for webhook tests: one thread,
//! one connection at a time, `Connection: close`, Content-Length bodies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Case-insensitive, as HTTP header names are.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

enum Answer {
    /// 503 to the first n requests, 200 after.
    FailFirst(usize),
    /// Hold each request this long before answering.
    Slow(Duration),
    Redirect(String),
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Answers the first `fail_first` requests with 503, the rest with 200.
    pub fn start(fail_first: usize) -> Receiver {
        Receiver::with(Answer::FailFirst(fail_first))
    }

    /// Never answers within `delay` (for timeout tests).
    pub fn start_slow(delay: Duration) -> Receiver {
        Receiver::with(Answer::Slow(delay))
    }

    /// Answers every request with `302 Found` to `location`.
    pub fn start_redirect(location: &str) -> Receiver {
        Receiver::with(Answer::Redirect(location.to_string()))
    }

    fn with(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(listener, &shared, &answer))
        };
        Receiver {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/alerts", self.addr)
    }

    /// Every request received, in order (failed ones too).
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// At least `n` requests, waiting up to `limit` for them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Request> {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, limit, |s| s.requests.len() < n)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            state.requests.len() >= n,
            "expected {n} request(s) at {} within {limit:?}, got {}: {:?}",
            self.url(),
            state.requests.len(),
            state
                .requests
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
        state.requests.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, shared: &Shared, answer: &Answer) {
    for stream in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let Ok(stream) = stream else { continue };
        // A broken client only loses its own exchange.
        let _ = exchange(stream, shared, answer);
    }
}

fn exchange(stream: TcpStream, shared: &Shared, answer: &Answer) -> std::io::Result<()> {
    // A client that stalls mid-request must not wedge the receiver.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(()); // e.g. Drop's wake-up connection
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if find("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let length: usize = find("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let seen = {
        let mut state = shared.lock();
        state.requests.push(Request {
            method,
            path,
            headers,
            body,
        });
        state.requests.len()
    };
    shared.changed.notify_all();

    let (status, extra, text) = match answer {
        Answer::FailFirst(n) if seen <= *n => {
            ("503 Service Unavailable", String::new(), "unavailable")
        }
        Answer::FailFirst(_) => ("200 OK", String::new(), "ok"),
        Answer::Redirect(to) => ("302 Found", format!("Location: {to}\r\n"), ""),
        Answer::Slow(delay) => {
            // Waits on the condvar, so dropping the receiver ends it early.
            let deadline = Instant::now() + *delay;
            let mut state = shared.lock();
            while !state.stopping && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                state = shared
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            ("200 OK", String::new(), "late")
        }
    };
    write!(
        writer,
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    writer.flush()
}
