//! The alert payload and one delivery attempt to one sink. Retries, backoff
//! and the outbox live elsewhere: here a failure is only a one-line reason.

use crate::child::Failure;
use crate::config::{Sink, SinkTarget};
use crate::model::{Action, Kind, Outcome};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// What recovery should do. Only when Foreman marked the task failed
/// (outcome `marked_failed`) is there something for recovery to pick up: the
/// process is gone (dead, zombie, pid_reused, orphan) → `recover`; it was hung
/// or timed out (it ran, so running it again as it was would do the same) →
/// `replan`. Every other outcome (the task was not marked: pending, braked,
/// unkillable, error, deferred_starvation, would_mark_failed, already_finished,
/// reported, cleared, terminated) and every other kind (stray, unverifiable,
/// alive) → `inspect`.
pub fn next_step(kind: Kind, outcome: Outcome) -> NextStep {
    match outcome {
        Outcome::MarkedFailed if kind.is_gone() || kind == Kind::HostLost => NextStep::Recover,
        Outcome::MarkedFailed if matches!(kind, Kind::Hung | Kind::TimedOut) => NextStep::Replan,
        _ => NextStep::Inspect,
    }
}

/// What one delivery sends, whatever it is about (a finding's alert or a
/// wellbeing initiative).
#[derive(Debug, Clone)]
pub struct Message {
    /// The JSON document: a webhook's body, and a command's stdin unless
    /// `text` is set.
    pub json: Vec<u8>,
    /// Receivers dedupe on it: the `Idempotency-Key` header.
    pub idempotency_key: String,
    /// The outbox row (`X-Foreman-Alert-Id`, `FOREMAN_ALERT_ID`).
    pub outbox_id: i64,
    /// Variables a command sink gets beside the fixed ones.
    pub env: Vec<(&'static str, String)>,
    /// Markdown for people: a command's stdin instead of the JSON, and what a
    /// file sink writes.
    pub text: Option<String>,
    /// `{name}` placeholders replaced in a command's argv items.
    pub fill: Vec<(&'static str, String)>,
    /// The file a file sink writes (a plain name, no directory).
    pub file_name: String,
}

impl Message {
    pub fn alert(payload: &Payload) -> Result<Message, String> {
        Ok(Message {
            json: serde_json::to_vec(payload)
                .map_err(|e| format!("cannot encode the payload: {e}"))?,
            idempotency_key: payload.finding_id.to_string(),
            outbox_id: payload.alert_id,
            env: vec![("FOREMAN_FINDING_ID", payload.finding_id.to_string())],
            text: None,
            fill: Vec::new(),
            file_name: format!("finding-{}.json", payload.finding_id),
        })
    }
}

/// One delivery attempt. Ok(()) = delivered. Err(reason) = not delivered, retry later;
/// the reason is one line fit for a log (status code and the start of the body, or
/// "timed out after 5s: <first stderr line>", or "exit status 3: <first
/// stderr line> … <last stderr line>", ...).
///
/// A command sink runs in its own process group with a cleared environment:
/// it sees only PATH, HOME, LANG, LC_ALL, TZ, FOREMAN_ALERT_ID and the
/// message's own variables (see `run`), never the secrets other sinks read.
/// Whatever it leaves running in its group is killed when it exits.
pub fn deliver(sink: &Sink, message: &Message) -> Result<(), String> {
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
            message,
        ),
        SinkTarget::Command { argv } => run(argv, sink.timeout, message),
        SinkTarget::File { dir } => write_file(dir, message),
    }
}

/// Write `text` (else the JSON) to `dir/file_name` atomically: a reader
/// never sees half a file, and writing it again is harmless.
fn write_file(dir: &std::path::Path, message: &Message) -> Result<(), String> {
    let name = &message.file_name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("{name:?} is not a plain file name"));
    }
    let content = message
        .text
        .as_deref()
        .map(str::as_bytes)
        .unwrap_or(&message.json);
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;
    // Readable as any file this user writes (tempfile makes 0600).
    // The umask is read from /proc (setting it to read it would race the
    // daemon's other threads); 022 when unreadable.
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    let mode = 0o666 & !mask;
    tmp.write_all(content)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;
    tmp.persist(dir.join(name))
        .map_err(|e| format!("cannot write {}: {}", dir.join(name).display(), e.error))?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the directory {}: {e}", dir.display()))?;
    Ok(())
}

fn post(
    url: &str,
    extra: &std::collections::BTreeMap<String, String>,
    bearer_token_env: Option<&str>,
    timeout: Duration,
    message: &Message,
) -> Result<(), String> {
    let mut own = vec![
        ("Content-Type", "application/json".to_string()),
        (
            "User-Agent",
            format!("foreman/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("Idempotency-Key", message.idempotency_key.clone()),
        ("X-Foreman-Alert-Id", message.outbox_id.to_string()),
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
        .send(&message.json[..])
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

/// Variables a command sink inherits from Foreman, when set. Nothing else is
/// passed on: Foreman's environment holds other sinks' tokens
/// (`bearer_token_env`).
const COMMAND_ENV: [&str; 4] = ["HOME", "LANG", "LC_ALL", "TZ"];
/// PATH for a command sink when Foreman has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs a command sink: `{name}` placeholders in argv filled, the message's
/// text (else its JSON) on stdin, stdout discarded, stderr kept for the
/// reason. Its environment is cleared, then gets PATH (Foreman's, or
/// `DEFAULT_PATH` when unset), HOME, LANG, LC_ALL and TZ when set,
/// FOREMAN_ALERT_ID and the message's own variables (FOREMAN_FINDING_ID for
/// an alert). It runs in its own process group,
/// and once it has exited, timed out or could not be waited for, the whole
/// group is SIGKILLed: nothing it started in the background outlives the
/// delivery (nor holds its stderr open).
fn run(argv: &[String], timeout: Duration, message: &Message) -> Result<(), String> {
    let fill: Vec<(String, &str)> = message
        .fill
        .iter()
        .map(|(name, value)| (format!("{{{name}}}"), value.as_str()))
        .collect();
    let fill: Vec<(&str, &str)> = fill.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let argv: Vec<String> = argv
        .iter()
        .map(|item| crate::executor::command::substitute(item, &fill))
        .collect();
    let program = argv.first().ok_or("the sink's argv is empty")?;
    let body = message
        .text
        .as_deref()
        .map(str::as_bytes)
        .unwrap_or(&message.json);
    // The payload goes in through an unlinked file rather than a pipe: a child
    // that never reads it cannot block us or see EPIPE, and no writer thread
    // can be left behind by a grandchild holding the pipe open.
    let stdin = tempfile::tempfile()
        .and_then(|mut f| f.write_all(body).and(f.rewind()).map(|()| f))
        .map_err(|e| format!("cannot buffer the payload for {program:?}: {e}"))?;
    let mut command = Command::new(program);
    command.args(&argv[1..]).env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    for name in COMMAND_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in &message.env {
        command.env(name, value);
    }
    command
        .env("FOREMAN_ALERT_ID", message.outbox_id.to_string())
        .stdin(Stdio::from(stdin));
    // Stdout is discarded; of stderr the head and tail are kept, for the
    // reason. `child::run`: its own group, SIGKILLed with whatever it
    // started once it exits or times out; no thread is left behind.
    let limits = crate::child::Limits {
        timeout,
        stdout: None,
        stderr: KEEP_BYTES,
    };
    let done = match crate::child::run(&mut command, limits) {
        Ok(done) => done,
        Err(Failure::Start(e)) => return Err(format!("cannot start {program:?}: {e}")),
        Err(Failure::TimedOut { stderr }) => {
            // What it said first is usually what it was waiting for
            // ("connecting to smtp.example.org").
            let line = first_line(&stderr);
            let after = humantime::format_duration(timeout);
            return Err(if line.is_empty() {
                format!("timed out after {after}")
            } else {
                format!("timed out after {after}: {line}")
            });
        }
        Err(e) => return Err(format!("{program:?}: {e}")),
    };
    let (status, tail) = (done.status, done.stderr);
    if status.success() {
        return Ok(());
    }
    // The first line says what went wrong first; the last, how it ended.
    let (first, last) = (first_line(&tail), last_line(&tail));
    let line = if first == last {
        first
    } else {
        format!("{first} … {last}")
    };
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

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    excerpt(text.lines().find(|l| !l.trim().is_empty()).unwrap_or(""))
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
