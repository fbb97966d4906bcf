//! The alert payload and one delivery attempt to one sink. Retries, backoff
//! and the outbox live elsewhere: here a failure is only a one-line reason.

use crate::config::{Sink, SinkTarget};
use crate::model::{Action, Kind, Outcome};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use wait_timeout::ChildExt;

/// Bump when a field changes meaning or goes away (adding one does not).
pub const PAYLOAD_VERSION: u32 = 1;

/// How much of a response body or a stderr line goes into a reason.
const EXCERPT_CHARS: usize = 200;
/// How much of a response body or of stderr is kept: enough for a line.
const KEEP_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub version: u32,
    /// Also sent as the `Idempotency-Key` header (webhook) and the
    /// `FOREMAN_FINDING_ID` environment variable (command), so receivers can dedupe.
    pub finding_id: i64,
    /// The outbox row: a re-alert of the same finding has a new one.
    pub alert_id: i64,
    pub task_id: String,
    pub attempt: i64,
    pub plan_id: Option<String>,
    pub droid_type: Option<String>,
    pub host: String,
    pub pid: Option<i32>,
    pub kind: Kind,
    pub evidence: serde_json::Value,
    pub action: Action,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub next_step: NextStep,
    pub first_seen_at: DateTime<Utc>,
    pub queued_at: DateTime<Utc>,
    pub foreman_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextStep {
    Recover,
    Replan,
    Inspect,
}

/// What recovery should do: the task's process is gone → `recover` (dead, zombie,
/// pid_reused, orphan); it was hung → `replan`; anything else (stray, unverifiable,
/// or an outcome where Foreman did not mark the task: braked, unkillable, error) → `inspect`.
pub fn next_step(kind: Kind, outcome: Outcome) -> NextStep {
    match outcome {
        Outcome::Braked | Outcome::Unkillable | Outcome::Error => NextStep::Inspect,
        _ if kind.is_gone() => NextStep::Recover,
        _ if kind == Kind::Hung => NextStep::Replan,
        _ => NextStep::Inspect,
    }
}

/// One delivery attempt. Ok(()) = delivered. Err(reason) = not delivered, retry later;
/// the reason is one line fit for a log (status code and the start of the body, or
/// "timed out after 5s", or "exit status 3: <last stderr line>", ...).
pub fn deliver(sink: &Sink, payload: &Payload) -> Result<(), String> {
    let body =
        serde_json::to_vec(payload).map_err(|e| format!("cannot encode the payload: {e}"))?;
    match &sink.target {
        SinkTarget::Webhook {
            url,
            headers,
            bearer_token_env,
        } => post(
            url,
            headers,
            bearer_token_env.as_deref(),
            sink.timeout,
            payload,
            &body,
        ),
        SinkTarget::Command { argv } => run(argv, sink.timeout, payload, &body),
    }
}

fn post(
    url: &str,
    extra: &std::collections::BTreeMap<String, String>,
    bearer_token_env: Option<&str>,
    timeout: Duration,
    payload: &Payload,
    body: &[u8],
) -> Result<(), String> {
    let mut own = vec![
        ("Content-Type", "application/json".to_string()),
        (
            "User-Agent",
            format!("foreman/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("Idempotency-Key", payload.finding_id.to_string()),
        ("X-Foreman-Alert-Id", payload.alert_id.to_string()),
    ];
    let mut token = None;
    if let Some(var) = bearer_token_env {
        match std::env::var(var) {
            Ok(t) if !t.is_empty() => {
                let value = format!("Bearer {t}");
                // Checked here because ureq's own error would not say which header.
                if ureq::http::HeaderValue::from_str(&value).is_err() {
                    return Err(format!(
                        "environment variable {var} (bearer_token_env) is not a valid header value"
                    ));
                }
                own.push(("Authorization", value));
                token = Some(t);
            }
            _ => {
                return Err(format!(
                    "environment variable {var} (bearer_token_env) is not set"
                ))
            }
        }
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // ureq has no timeout by default: a silent receiver would hold the
        // delivery loop forever.
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A redirected POST is either dropped to a GET or refused, and could
        // carry the token elsewhere: report the 3xx instead.
        .max_redirects(0)
        .build()
        .into();
    let mut request = agent.post(url);
    // The identity headers are what receivers dedupe on, so configuration
    // cannot replace them (nor send them twice).
    for (name, value) in extra {
        if !own.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    for (name, value) in &own {
        request = request.header(*name, value.as_str());
    }
    let mut response = request
        .send(body)
        .map_err(|e| http_error(e, url, timeout))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        let to = response
            .headers()
            .get("location")
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(format!(
            "HTTP {}: redirect to {:?} not followed",
            status.as_u16(),
            excerpt(&to)
        ));
    }
    let mut text = Vec::new();
    // The status is the reason; a body that fails to arrive only shortens it.
    let _ = response
        .body_mut()
        .as_reader()
        .take(KEEP_BYTES as u64)
        .read_to_end(&mut text);
    let mut text = String::from_utf8_lossy(&text).into_owned();
    // Some receivers echo the request back in their error page.
    if let Some(token) = token {
        text = text.replace(&token, "[token]");
    }
    Err(format!("HTTP {}: {}", status.as_u16(), excerpt(&text)))
}

fn http_error(e: ureq::Error, url: &str, timeout: Duration) -> String {
    // The URL may embed a secret (chat webhooks do), so only its host is named.
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.host().to_string()))
        .unwrap_or_else(|| "the receiver".into());
    match e {
        ureq::Error::Timeout(_) => {
            format!("timed out after {}", humantime::format_duration(timeout))
        }
        ureq::Error::HostNotFound => format!("host not found: {host}"),
        ureq::Error::Io(e) => format!("connection to {host} failed: {e}"),
        ureq::Error::BadUri(_) => "the sink's url is not a valid URL".into(),
        other => format!("request to {host} failed: {other}"),
    }
}

fn run(argv: &[String], timeout: Duration, payload: &Payload, body: &[u8]) -> Result<(), String> {
    let program = argv.first().ok_or("the sink's argv is empty")?;
    // The payload goes in through an unlinked file rather than a pipe: a child
    // that never reads it cannot block us or see EPIPE, and no writer thread
    // can be left behind by a grandchild holding the pipe open.
    let stdin = tempfile::tempfile()
        .and_then(|mut f| f.write_all(body).and(f.rewind()).map(|()| f))
        .map_err(|e| format!("cannot buffer the payload for {program:?}: {e}"))?;
    let mut child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("FOREMAN_FINDING_ID", payload.finding_id.to_string())
        .env("FOREMAN_ALERT_ID", payload.alert_id.to_string())
        // Its own group, so a timeout kills whatever it started as well.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        // Read while it runs: a child filling the pipe would otherwise block
        // and look like a timeout.
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => tail.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
                if tail.len() > 2 * KEEP_BYTES {
                    tail.drain(..tail.len() - KEEP_BYTES);
                }
            }
            let _ = tx.send(tail);
        });
    }
    let waited = child.wait_timeout(timeout);
    let status = match waited {
        Ok(Some(status)) => status,
        Ok(None) | Err(_) => {
            // Not reaped yet, so the group id is still ours to signal.
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            return Err(match waited {
                Err(e) => format!("cannot wait for {program:?}: {e} (killed it)"),
                _ => format!("timed out after {}", humantime::format_duration(timeout)),
            });
        }
    };
    if status.success() {
        return Ok(());
    }
    // A grandchild may keep stderr open after the child exits; do not wait on it.
    let tail = rx
        .recv_timeout(Duration::from_millis(500))
        .unwrap_or_default();
    let line = last_line(&tail);
    let what = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (None, None) => format!("{status}"),
    };
    Err(if line.is_empty() {
        what
    } else {
        format!("{what}: {line}")
    })
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    excerpt(
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(""),
    )
}

/// One line, at most `EXCERPT_CHARS` characters: reasons go into log lines.
fn excerpt(text: &str) -> String {
    let flat: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGQUIT => " (SIGQUIT)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_excerpt_is_one_bounded_line() {
        assert_eq!(
            excerpt("  down\r\nfor maintenance \n"),
            "down  for maintenance"
        );
        let long = "é".repeat(500);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn alert_last_line_skips_trailing_blank_lines() {
        assert_eq!(
            last_line(b"starting\nboom: no route\n\n  \n"),
            "boom: no route"
        );
        assert_eq!(last_line(b""), "");
        assert_eq!(last_line(b"\xff\xfebad utf8\n"), "\u{fffd}\u{fffd}bad utf8");
    }

    #[test]
    fn alert_payload_fields_are_snake_case() {
        let p = Payload {
            version: PAYLOAD_VERSION,
            finding_id: 7,
            alert_id: 9,
            task_id: "t".into(),
            attempt: 1,
            plan_id: None,
            droid_type: Some("d".into()),
            host: "h".into(),
            pid: Some(42),
            kind: Kind::PidReused,
            evidence: serde_json::json!({"a": 1}),
            action: Action::TerminateAndMark,
            outcome: Outcome::MarkedFailed,
            detail: None,
            next_step: next_step(Kind::PidReused, Outcome::MarkedFailed),
            first_seen_at: DateTime::UNIX_EPOCH,
            queued_at: DateTime::UNIX_EPOCH,
            foreman_version: env!("CARGO_PKG_VERSION").into(),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["kind"], "pid_reused");
        assert_eq!(v["action"], "terminate_and_mark");
        assert_eq!(v["outcome"], "marked_failed");
        assert_eq!(v["next_step"], "recover");
        assert_eq!(v["first_seen_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["plan_id"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Payload>(v).unwrap(), p);
    }
}
