//! The integration tests' HTTP client: HTTP/1.1 spoken by hand over a
//! `TcpStream` to the daemon's loopback listener, one request per
//! connection (`Connection: close`); and the start of a `foreman run`
//! whose listener address is read from its log.

use crate::cli::{wait_for, Running, World, PATIENCE};
use regex::Regex;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

/// One answer: the status, the head as sent, its headers, the body
/// (de-chunked, cut at `Content-Length`).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:#?}"))
    }
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk size".into()))?;
        let size = std::str::from_utf8(&b[..eol]).map_err(|e| bad(e.to_string()))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| bad(format!("chunk size {size:?}: {e}")))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad("truncated chunk".into()));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(n) = find("content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| bad(format!("content-length {n:?}")))?;
        if rest.len() < n {
            return Err(bad(format!("body truncated: {} of {n} bytes", rest.len())));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        head,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One request on a connection of its own (`Connection: close`).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer (413) and close before it read all of a body:
    // what it answered is what counts, so a failed write is not fatal yet.
    let wrote = s.write_all(&bytes);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        wrote?;
        read?;
        return Err(bad("the server closed without answering".into()));
    }
    parse_response(&raw)
}

/// `try_request`, and a panic if there was no answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

/// `POST path` with a JSON body.
pub fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// A client socket with a tiny receive buffer, connected to `addr`.
pub fn tiny_reader(addr: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it is handed to the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 1024;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let SocketAddr::V4(v4) = addr else {
            panic!("loopback is IPv4")
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// Start `foreman run` (no token in its environment unless `env` gives
/// one) and wait for its listener: the process and the address it logged.
pub fn listening(w: &World, env: &[(&str, &str)]) -> (Running, SocketAddr) {
    let mut cmd = w.foreman(&["run"]);
    cmd.env_remove("FOREMAN_HTTP_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Running::start(&mut cmd);
    let re = Regex::new(r"http: listening .*address=(\S+)").expect("regex");
    let addr = wait_for("the daemon logs its HTTP address", PATIENCE, || {
        if let Some(c) = re.captures(&proc.stderr()) {
            return Some(
                c[1].parse::<SocketAddr>()
                    .unwrap_or_else(|e| panic!("address {:?}: {e}", &c[1])),
            );
        }
        assert!(
            proc.still_running(),
            "the daemon exited before listening:\n{}",
            proc.stderr()
        );
        None
    });
    (proc, addr)
}

/// A `foreman.toml` for listener tests: a 500ms interval, a scratch SQLite
/// executor, long timeouts (nothing goes hung), `[http]` and `[monitor]`
/// bodies as given (`http` names its `listen`).
pub fn listener_config(w: &World, http: &str, monitor: &str) {
    w.write(
        "foreman.toml",
        &format!(
            r#"interval = "500ms"
host = "{host}"
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

[monitor]
{monitor}
"#,
            host = crate::cli::HOST
        ),
    );
}
