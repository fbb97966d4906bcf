//! `foreman.toml`: the model, its defaults, and validation. The file is
//! parsed once at startup into validated types (durations, regexes, paths);
//! every error names the file, line, column and key, and how to fix it.

use crate::model::{Kind, Mode, OnHung, OnStray, Signal};
use chrono::FixedOffset;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/foreman/foreman.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Unreadable { file: String, message: String },
    #[error("{file}:{line}:{column}: key `{key}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, with = "humantime_serde::option")]
    interval: Option<Duration>,
    host: Option<String>,
    mode: Option<Mode>,
    max_cpu_pressure: Option<f64>,
    executor: RawExecutor,
    #[serde(default)]
    activity: RawActivity,
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    droid_types: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    alerts: Vec<RawSink>,
    #[serde(default)]
    twin: RawTwin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTwin {
    #[serde(default, with = "humantime_serde::option")]
    window: Option<Duration>,
    warn_failures: Option<u32>,
}

/// `foreman twin`'s thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinConfig {
    /// How far back "recent failures" look.
    pub window: Duration,
    /// More failures than this in the window is WARNING.
    pub warn_failures: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    name: String,
    kind: SinkKind,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    bearer_token_env: Option<String>,
    argv: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
    kinds: Option<Vec<Kind>>,
    droid_types: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde::option")]
    retry_base: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    retry_cap: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    max_age: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    realert_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Webhook,
    Command,
}

/// Where one `[[alerts]]` sink sends.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkTarget {
    /// POST the payload as JSON; 2xx is delivered.
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
        /// The name of the environment variable holding the bearer token;
        /// the token itself is never in the file.
        bearer_token_env: Option<String>,
    },
    /// Run `argv` (no shell) with the payload on stdin; exit 0 is delivered.
    Command { argv: Vec<String> },
}

/// One `[[alerts]]` sink, with every key resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    /// Stable name: the outbox remembers deliveries per sink by it.
    pub name: String,
    pub target: SinkTarget,
    /// Per attempt.
    pub timeout: Duration,
    /// Empty: every kind.
    pub kinds: Vec<Kind>,
    /// Empty: every droid type.
    pub droid_types: Vec<String>,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Undelivered after this long: `expired`.
    pub max_age: Duration,
    /// A finding seen again is alerted again at most this often.
    pub realert_after: Duration,
}

impl Sink {
    pub fn wants(&self, kind: Kind, droid_type: Option<&str>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.droid_types.is_empty()
                || droid_type.is_some_and(|d| self.droid_types.iter().any(|t| t == d)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecutor {
    kind: ExecutorKind,
    path: Option<PathBuf>,
    snapshot_query: Option<String>,
    mark_failed_query: Option<String>,
    snapshot_command: Option<Vec<String>>,
    mark_failed_command: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    history_window: Option<Duration>,
    timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    path: Option<PathBuf>,
    #[serde(default, with = "humantime_serde::option")]
    retention: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    startup_grace: Option<Duration>,
    progress: Option<Vec<Signal>>,
    #[serde(default, with = "humantime_serde::option")]
    pid_start_tolerance: Option<Duration>,
    process_match: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    exit_grace: Option<Duration>,
    max_actions_per_sweep: Option<u32>,
    mode: Option<Mode>,
    on_hung: Option<OnHung>,
    on_stray: Option<OnStray>,
    #[serde(default, with = "humantime_serde::option")]
    kill_grace: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Sqlite,
    Command,
}

/// How the executor writes timestamps that carry no offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorTz {
    Utc,
    Local,
    Fixed(FixedOffset),
}

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    pub path: Option<PathBuf>,
    pub snapshot_query: Option<String>,
    pub mark_failed_query: Option<String>,
    pub snapshot_command: Vec<String>,
    pub mark_failed_command: Vec<String>,
    pub timeout: Duration,
    pub history_window: Duration,
    pub timezone: ExecutorTz,
    timezone_text: String,
}

#[derive(Debug, Clone)]
pub struct ActivityConfig {
    pub path: PathBuf,
    pub retention: Duration,
}

/// One droid type's policy, with every key resolved.
#[derive(Debug, Clone)]
pub struct Policy {
    pub timeout: Duration,
    pub startup_grace: Duration,
    pub progress: Vec<Signal>,
    pub pid_start_tolerance: Duration,
    pub process_match: Option<Regex>,
    pub exit_grace: Duration,
    /// `None`: 10 or 20% of RUNNING tasks, whichever is larger.
    pub max_actions_per_sweep: Option<u32>,
    pub mode: Mode,
    pub on_hung: OnHung,
    pub on_stray: OnStray,
    pub kill_grace: Duration,
}

impl Policy {
    pub fn counts(&self, s: Signal) -> bool {
        self.progress.contains(&s)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    /// FNV-1a (64-bit, hex) of the file's text: kept with each finding, so
    /// `explain` can tell whether the configuration changed since.
    pub fingerprint: String,
    pub interval: Duration,
    pub host: String,
    pub mode: Mode,
    /// Foreman counts itself starved when the host's CPU pressure (PSI
    /// `some avg10`, percent) is above this; 100 disables the check.
    pub max_cpu_pressure: f64,
    pub executor: ExecutorConfig,
    pub activity: ActivityConfig,
    pub defaults: Policy,
    pub droid_types: BTreeMap<String, Policy>,
    pub alerts: Vec<Sink>,
    pub twin: TwinConfig,
}

impl Config {
    /// The policy of a droid type: its own section, else `[defaults]`.
    pub fn policy(&self, droid_type: &str) -> &Policy {
        self.droid_types.get(droid_type).unwrap_or(&self.defaults)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // Relative paths in the file resolve against its directory, so the
        // file's own path must not depend on the working directory later.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let path = absolute.as_path();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            file: path.display().to_string(),
            message: format!("cannot read the configuration: {e} (give another with --config or $FOREMAN_CONFIG)"),
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = line_col(text, span.start);
            let message = e.message().trim().to_string();
            // A missing key is reported at its table, but named itself; an
            // empty span is the top level.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'));
            let at = if missing.is_some() && span.is_empty() {
                None
            } else {
                key_at(text, span.start)
            };
            let key = match (missing, at) {
                (Some(m), Some(table)) => format!("{table}.{m}"),
                (Some(m), None) => m.to_string(),
                (None, Some(k)) => k,
                (None, None) => "(document)".into(),
            };
            ConfigError::Invalid {
                file: file.clone(),
                line,
                column,
                key,
                message,
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = resolve(raw, base).map_err(|(key, message)| {
            let (line, column) = span_of(text, &key)
                .map(|s| line_col(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                file,
                line,
                column,
                key,
                message,
            }
        })?;
        config.source = path.to_path_buf();
        config.fingerprint = fnv1a(text.as_bytes());
        Ok(config)
    }

    /// The effective configuration, defaults filled in, as TOML.
    pub fn effective_toml(&self) -> String {
        let d = |d: Duration| plain_duration(d);
        let mut out = String::new();
        out.push_str(&format!(
            "# effective configuration of {}\n",
            self.source.display()
        ));
        out.push_str(&format!("interval = {:?}\n", d(self.interval)));
        out.push_str(&format!("host = {:?}\n", self.host));
        out.push_str(&format!("mode = {:?}\n", mode_str(self.mode)));
        out.push_str(&format!("max_cpu_pressure = {:?}\n", self.max_cpu_pressure));
        let e = &self.executor;
        out.push_str("\n[executor]\n");
        out.push_str(&format!(
            "kind = {:?}\n",
            match e.kind {
                ExecutorKind::Sqlite => "sqlite",
                ExecutorKind::Command => "command",
            }
        ));
        if let Some(p) = &e.path {
            out.push_str(&format!("path = {:?}\n", p.display().to_string()));
        }
        if let Some(q) = &e.snapshot_query {
            out.push_str(&format!("snapshot_query = {q:?}\n"));
        }
        if let Some(q) = &e.mark_failed_query {
            out.push_str(&format!("mark_failed_query = {q:?}\n"));
        }
        if !e.snapshot_command.is_empty() {
            out.push_str(&format!("snapshot_command = {:?}\n", e.snapshot_command));
            out.push_str(&format!(
                "mark_failed_command = {:?}\n",
                e.mark_failed_command
            ));
        }
        out.push_str(&format!("timeout = {:?}\n", d(e.timeout)));
        out.push_str(&format!("history_window = {:?}\n", d(e.history_window)));
        out.push_str(&format!("timezone = {:?}\n", e.timezone_text));
        out.push_str("\n[activity]\n");
        out.push_str(&format!(
            "path = {:?}\n",
            self.activity.path.display().to_string()
        ));
        out.push_str(&format!("retention = {:?}\n", d(self.activity.retention)));
        let policy = |out: &mut String, header: &str, p: &Policy| {
            out.push_str(&format!("\n[{header}]\n"));
            out.push_str(&format!("timeout = {:?}\n", d(p.timeout)));
            out.push_str(&format!("startup_grace = {:?}\n", d(p.startup_grace)));
            let sigs: Vec<&str> = p.progress.iter().map(|s| s.as_str()).collect();
            out.push_str(&format!("progress = {sigs:?}\n"));
            out.push_str(&format!(
                "pid_start_tolerance = {:?}\n",
                d(p.pid_start_tolerance)
            ));
            if let Some(r) = &p.process_match {
                out.push_str(&format!("process_match = {:?}\n", r.as_str()));
            }
            out.push_str(&format!("exit_grace = {:?}\n", d(p.exit_grace)));
            match p.max_actions_per_sweep {
                Some(n) => out.push_str(&format!("max_actions_per_sweep = {n}\n")),
                None => out
                    .push_str("# max_actions_per_sweep: 10 or 20% of RUNNING tasks, the larger\n"),
            }
            out.push_str(&format!("mode = {:?}\n", mode_str(p.mode)));
            out.push_str(&format!(
                "on_hung = {:?}\n",
                match p.on_hung {
                    OnHung::Terminate => "terminate",
                    OnHung::MarkOnly => "mark_only",
                }
            ));
            out.push_str(&format!(
                "on_stray = {:?}\n",
                match p.on_stray {
                    OnStray::Report => "report",
                    OnStray::Terminate => "terminate",
                }
            ));
            out.push_str(&format!("kill_grace = {:?}\n", d(p.kill_grace)));
        };
        policy(&mut out, "defaults", &self.defaults);
        for (name, p) in &self.droid_types {
            policy(&mut out, &format!("droid_types.{}", toml_key(name)), p);
        }
        out.push_str("\n[twin]\n");
        out.push_str(&format!("window = {:?}\n", d(self.twin.window)));
        out.push_str(&format!("warn_failures = {}\n", self.twin.warn_failures));
        for sink in &self.alerts {
            out.push_str("\n[[alerts]]\n");
            out.push_str(&format!("name = {:?}\n", sink.name));
            match &sink.target {
                SinkTarget::Webhook {
                    url,
                    headers,
                    bearer_token_env,
                } => {
                    out.push_str("kind = \"webhook\"\n");
                    out.push_str(&format!("url = {url:?}\n"));
                    let h: Vec<String> = headers
                        .iter()
                        .map(|(k, v)| format!("{k:?} = {v:?}"))
                        .collect();
                    out.push_str(&format!("headers = {{ {} }}\n", h.join(", ")));
                    if let Some(var) = bearer_token_env {
                        out.push_str(&format!("bearer_token_env = {var:?}\n"));
                    }
                }
                SinkTarget::Command { argv } => {
                    out.push_str("kind = \"command\"\n");
                    out.push_str(&format!("argv = {argv:?}\n"));
                }
            }
            out.push_str(&format!("timeout = {:?}\n", d(sink.timeout)));
            let kinds: Vec<&str> = sink.kinds.iter().map(|k| k.as_str()).collect();
            out.push_str(&format!("kinds = {kinds:?}\n"));
            out.push_str(&format!("droid_types = {:?}\n", sink.droid_types));
            out.push_str(&format!("retry_base = {:?}\n", d(sink.retry_base)));
            out.push_str(&format!("retry_cap = {:?}\n", d(sink.retry_cap)));
            out.push_str(&format!("max_age = {:?}\n", d(sink.max_age)));
            out.push_str(&format!("realert_after = {:?}\n", d(sink.realert_after)));
        }
        out
    }
}

/// FNV-1a, 64-bit: a fingerprint to notice a changed file, not a defence.
pub fn fnv1a(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A duration in the largest unit that divides it (`90d`, `2m`, `1500ms`),
/// as an operator would write it; humantime reads it back.
pub fn plain_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

type KeyError = (String, String);

fn resolve(raw: RawConfig, base: &Path) -> Result<Config, KeyError> {
    let interval = raw.interval.unwrap_or(Duration::from_secs(120));
    if interval.is_zero() {
        return Err((
            "interval".into(),
            "must be greater than 0 (e.g. \"2m\")".into(),
        ));
    }
    let host = match raw.host {
        Some(h) if h.trim().is_empty() => {
            return Err((
                "host".into(),
                "must not be empty; omit it to use this machine's hostname".into(),
            ))
        }
        Some(h) => h,
        None => sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into()),
    };
    let max_cpu_pressure = raw.max_cpu_pressure.unwrap_or(90.0);
    if !(0.0..=100.0).contains(&max_cpu_pressure) {
        return Err((
            "max_cpu_pressure".into(),
            format!(
                "{max_cpu_pressure} is not a percentage; give 0 to 100 (100 disables the check)"
            ),
        ));
    }
    let mode = raw.mode.unwrap_or(Mode::Enforce);
    let executor = resolve_executor(raw.executor, base)?;
    let activity = ActivityConfig {
        path: absolute(
            base,
            raw.activity
                .path
                .unwrap_or_else(|| PathBuf::from("/var/lib/foreman/foreman.db")),
        ),
        retention: raw
            .activity
            .retention
            .unwrap_or(Duration::from_secs(90 * 86400)),
    };
    let builtin = Policy {
        timeout: Duration::from_secs(30 * 60),
        startup_grace: Duration::from_secs(120),
        progress: vec![Signal::Heartbeat, Signal::Cpu, Signal::Io],
        pid_start_tolerance: Duration::from_secs(10),
        process_match: None,
        exit_grace: Duration::from_secs(30),
        max_actions_per_sweep: None,
        mode,
        on_hung: OnHung::Terminate,
        on_stray: OnStray::Report,
        kill_grace: Duration::from_secs(10),
    };
    let defaults = resolve_policy(raw.defaults, &builtin, "defaults", interval)?;
    let mut droid_types = BTreeMap::new();
    for (name, p) in raw.droid_types {
        let key = format!("droid_types.{}", toml_key(&name));
        let policy = resolve_policy(p, &defaults, &key, interval)?;
        droid_types.insert(name, policy);
    }
    let mut alerts: Vec<Sink> = Vec::new();
    for (i, raw) in raw.alerts.into_iter().enumerate() {
        let sink = resolve_sink(raw, i)?;
        if alerts.iter().any(|s| s.name == sink.name) {
            return Err((
                format!("alerts[{i}].name"),
                format!("another sink is already named {:?}; each needs its own name (the outbox tracks deliveries by it)", sink.name),
            ));
        }
        alerts.push(sink);
    }
    Ok(Config {
        source: PathBuf::new(),
        fingerprint: String::new(),
        interval,
        host,
        mode,
        max_cpu_pressure,
        executor,
        activity,
        defaults,
        droid_types,
        alerts,
        twin: TwinConfig {
            window: raw.twin.window.unwrap_or(Duration::from_secs(3600)),
            warn_failures: raw.twin.warn_failures.unwrap_or(0),
        },
    })
}

fn resolve_sink(raw: RawSink, i: usize) -> Result<Sink, KeyError> {
    let key = |k: &str| format!("alerts[{i}].{k}");
    if raw.name.trim().is_empty() {
        return Err((key("name"), "must not be empty".into()));
    }
    let target = match raw.kind {
        SinkKind::Webhook => {
            if raw.argv.is_some() {
                return Err((
                    key("argv"),
                    "`argv` is for kind = \"command\"; a webhook takes `url`".into(),
                ));
            }
            let Some(url) = raw.url else {
                return Err((
                    key("kind"),
                    "kind = \"webhook\" needs `url` (http:// or https://)".into(),
                ));
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((
                    key("url"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            if let Some(var) = &raw.bearer_token_env {
                if var.is_empty() || var.contains('=') {
                    return Err((
                        key("bearer_token_env"),
                        "give the name of an environment variable (e.g. \"FOREMAN_ALERT_TOKEN\"), never the token".into(),
                    ));
                }
            }
            let headers = raw.headers.unwrap_or_default();
            for (name, value) in &headers {
                let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                if name.is_empty() || !name.chars().all(token) {
                    return Err((
                        key("headers"),
                        format!("{name:?} is not a valid header name"),
                    ));
                }
                if value.chars().any(|c| c.is_control() && c != '\t') {
                    return Err((
                        key("headers"),
                        format!("the value of {name:?} holds a control character (a line break?)"),
                    ));
                }
                // Foreman's own: receivers dedupe and authenticate by them.
                let reserved = [
                    "content-type",
                    "user-agent",
                    "idempotency-key",
                    "x-foreman-alert-id",
                    "authorization",
                ];
                if reserved.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err((
                        key("headers"),
                        format!("{name:?} is set by Foreman itself (use bearer_token_env for Authorization)"),
                    ));
                }
            }
            SinkTarget::Webhook {
                url,
                headers,
                bearer_token_env: raw.bearer_token_env,
            }
        }
        SinkKind::Command => {
            for (k, set) in [
                ("url", raw.url.is_some()),
                ("headers", raw.headers.is_some()),
                ("bearer_token_env", raw.bearer_token_env.is_some()),
            ] {
                if set {
                    return Err((
                        key(k),
                        format!("`{k}` is for kind = \"webhook\"; a command takes `argv`"),
                    ));
                }
            }
            match raw.argv {
                Some(argv) if !argv.is_empty() && !argv[0].is_empty() => SinkTarget::Command { argv },
                _ => {
                    return Err((
                        key("argv"),
                        "kind = \"command\" needs `argv`, a program and its arguments (run without a shell), e.g. [\"/usr/local/bin/page\", \"--team\", \"ops\"]".into(),
                    ))
                }
            }
        }
    };
    let kinds = raw.kinds.unwrap_or_default();
    if kinds.contains(&Kind::Alive) {
        return Err((
            key("kinds"),
            "\"alive\" is never a finding; list kinds such as \"dead\", \"hung\"".into(),
        ));
    }
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(10));
    let retry_base = raw.retry_base.unwrap_or(Duration::from_secs(10));
    let retry_cap = raw.retry_cap.unwrap_or(Duration::from_secs(600));
    for (k, d) in [("timeout", timeout), ("retry_base", retry_base)] {
        if d.is_zero() {
            return Err((key(k), "must be greater than 0".into()));
        }
    }
    // A round of delivery starts nothing after its budget (at most 30s), but
    // an attempt it started runs to its timeout: keep that short.
    if timeout > Duration::from_secs(60) {
        return Err((
            key("timeout"),
            format!(
                "{} is too long for one delivery attempt; give at most 60s (failed deliveries are retried)",
                humantime::format_duration(timeout)
            ),
        ));
    }
    let max_age = raw.max_age.unwrap_or(Duration::from_secs(86400));
    if max_age < retry_base {
        return Err((
            key("max_age"),
            format!(
                "alerts would expire ({}) before their first retry (`retry_base` {}); raise max_age",
                humantime::format_duration(max_age),
                humantime::format_duration(retry_base)
            ),
        ));
    }
    if retry_cap < retry_base {
        return Err((
            key("retry_cap"),
            format!(
                "the cap ({}) is below `retry_base` ({}); raise the cap",
                humantime::format_duration(retry_cap),
                humantime::format_duration(retry_base)
            ),
        ));
    }
    Ok(Sink {
        name: raw.name,
        target,
        timeout,
        kinds,
        droid_types: raw.droid_types.unwrap_or_default(),
        retry_base,
        retry_cap,
        max_age,
        realert_after: raw.realert_after.unwrap_or(Duration::from_secs(3600)),
    })
}

fn absolute(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn resolve_executor(raw: RawExecutor, base: &Path) -> Result<ExecutorConfig, KeyError> {
    let timezone_text = raw.timezone.unwrap_or_else(|| "UTC".into());
    let timezone = match timezone_text.as_str() {
        "UTC" | "utc" | "Z" => ExecutorTz::Utc,
        "local" => ExecutorTz::Local,
        other => match chrono::DateTime::parse_from_str(&format!("2000-01-01 00:00:00 {other}"), "%Y-%m-%d %H:%M:%S %:z") {
            Ok(dt) => ExecutorTz::Fixed(*dt.offset()),
            Err(_) => {
                return Err((
                    "executor.timezone".into(),
                    format!("{other:?} is not a timezone Foreman understands; give \"UTC\", \"local\" or an offset like \"+02:00\""),
                ))
            }
        },
    };
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(30));
    if timeout.is_zero() {
        return Err((
            "executor.timeout".into(),
            "must be greater than 0 (e.g. \"30s\")".into(),
        ));
    }
    match raw.kind {
        ExecutorKind::Sqlite => {
            if raw.path.is_none() {
                return Err((
                    "executor.kind".into(),
                    "kind = \"sqlite\" needs `path`, the executor's database file".into(),
                ));
            }
            if raw.snapshot_command.is_some() || raw.mark_failed_command.is_some() {
                return Err((
                    "executor.snapshot_command".into(),
                    "commands are for kind = \"command\"; remove them or change the kind".into(),
                ));
            }
        }
        ExecutorKind::Command => {
            for (key, v) in [
                ("snapshot_command", &raw.snapshot_command),
                ("mark_failed_command", &raw.mark_failed_command),
            ] {
                if v.as_ref().is_none_or(|v| v.is_empty()) {
                    return Err((
                        format!("executor.{key}"),
                        format!("kind = \"command\" needs `{key}`, an argv list such as [\"/usr/bin/executorctl\", \"…\"]"),
                    ));
                }
            }
        }
    }
    Ok(ExecutorConfig {
        kind: raw.kind,
        path: raw.path.map(|p| absolute(base, p)),
        snapshot_query: raw.snapshot_query,
        mark_failed_query: raw.mark_failed_query,
        snapshot_command: raw.snapshot_command.unwrap_or_default(),
        mark_failed_command: raw.mark_failed_command.unwrap_or_default(),
        timeout,
        history_window: raw.history_window.unwrap_or(Duration::from_secs(3600)),
        timezone,
        timezone_text,
    })
}

fn resolve_policy(
    raw: RawPolicy,
    parent: &Policy,
    section: &str,
    interval: Duration,
) -> Result<Policy, KeyError> {
    let key = |k: &str| format!("{section}.{k}");
    let raw_on_stray = raw.on_stray;
    let p = Policy {
        timeout: raw.timeout.unwrap_or(parent.timeout),
        startup_grace: raw.startup_grace.unwrap_or(parent.startup_grace),
        progress: raw.progress.unwrap_or_else(|| parent.progress.clone()),
        pid_start_tolerance: raw
            .pid_start_tolerance
            .unwrap_or(parent.pid_start_tolerance),
        process_match: match raw.process_match {
            Some(re) => Some(Regex::new(&re).map_err(|e| {
                (
                    key("process_match"),
                    format!("invalid regular expression: {e}"),
                )
            })?),
            None => parent.process_match.clone(),
        },
        exit_grace: raw.exit_grace.unwrap_or(parent.exit_grace),
        max_actions_per_sweep: raw.max_actions_per_sweep.or(parent.max_actions_per_sweep),
        mode: raw.mode.unwrap_or(parent.mode),
        on_hung: raw.on_hung.unwrap_or(parent.on_hung),
        on_stray: raw.on_stray.unwrap_or(parent.on_stray),
        kill_grace: raw.kill_grace.unwrap_or(parent.kill_grace),
    };
    if p.timeout <= interval {
        return Err((
            key("timeout"),
            format!(
                "the progress timeout ({}) must be greater than `interval` ({}), or a task could be judged hung between two sweeps that never saw it; raise the timeout or lower the interval",
                humantime::format_duration(p.timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    if p.progress.is_empty() {
        return Err((
            key("progress"),
            "an empty list leaves no way to see progress; list at least one of \"heartbeat\", \"cpu\", \"io\"".into(),
        ));
    }
    if raw_on_stray == Some(OnStray::Terminate) && p.process_match.is_none() {
        return Err((
            key("on_stray"),
            "\"terminate\" needs `process_match`, the pattern that finds this droid type's processes".into(),
        ));
    }
    if p.max_actions_per_sweep == Some(0) {
        return Err((
            key("max_actions_per_sweep"),
            "0 would brake every action; give at least 1, or omit it".into(),
        ));
    }
    Ok(p)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// The dotted key whose key or value covers `offset`, deepest first.
fn key_at(text: &str, offset: usize) -> Option<String> {
    // A table opened by a `[header]` does not span its body, so descend into
    // every table and keep the path of the key whose key or value covers it.
    // Array-of-tables items (`[[alerts]]`) are entered too, as `[i]`.
    fn walk(t: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        for (k, v) in t.iter() {
            path.push(toml_key(k.get_ref()));
            match v.get_ref() {
                toml::de::DeValue::Table(inner) if walk(inner, offset, path) => return true,
                toml::de::DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::de::DeValue::Table(inner) = item.get_ref() {
                            path.push(format!("[{i}]"));
                            if walk(inner, offset, path) {
                                return true;
                            }
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
            if k.span().contains(&offset) || v.span().contains(&offset) {
                return true;
            }
            path.pop();
        }
        false
    }
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        let mut path = Vec::new();
        walk(doc.get_ref(), offset, &mut path);
        let mut dotted = String::new();
        for k in path {
            if !dotted.is_empty() && !k.starts_with('[') {
                dotted.push('.');
            }
            dotted.push_str(&k);
        }
        return (!dotted.is_empty()).then_some(dotted);
    }
    // A document that does not parse (a syntax error) has no keys: take the
    // key from the line's text before `=`, under the last `[header]` above.
    let bare = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.\"' ".contains(c))
    };
    let header = |l: &str| {
        let name = l.trim().strip_prefix('[')?.trim_start_matches('[');
        Some(name.split(']').next().unwrap_or("").trim().to_string()).filter(|h| bare(h))
    };
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        // A broken `[header` names its table.
        return header(line);
    };
    let key = Some(key.trim()).filter(|k| bare(k))?;
    let above = text[..line_start]
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('['));
    Some(match above.and_then(header) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// The span of a dotted key in the source, for validation errors.
fn span_of(text: &str, dotted: &str) -> Option<Range<usize>> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let parts: Vec<&str> = split_key(dotted);
    let mut best = None;
    for (i, part) in parts.iter().enumerate() {
        // `alerts[2]`: the third table of the array `alerts`.
        let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, n)) => (name, n.parse::<usize>().ok()),
            None => (*part, None),
        };
        // A key that is not in the file (a missing required key) is located
        // at its table's header.
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
            break;
        };
        best = Some(k.span());
        let v = match (v.get_ref(), index) {
            (toml::de::DeValue::Array(items), Some(n)) => match items.get(n) {
                Some(item) => {
                    best = Some(item.span());
                    item.get_ref()
                }
                None => break,
            },
            (v, _) => v,
        };
        if i + 1 == parts.len() {
            break;
        }
        match v {
            toml::de::DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    best
}

fn split_key(dotted: &str) -> Vec<&str> {
    // Droid type names may be quoted keys holding dots.
    let mut parts = Vec::new();
    let mut rest = dotted;
    while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix('"') {
            let end = stripped.find('"').unwrap_or(stripped.len());
            parts.push(&stripped[..end]);
            rest = stripped
                .get(end + 1..)
                .unwrap_or("")
                .trim_start_matches('.');
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            parts.push(&rest[..end]);
            rest = rest.get(end + 1..).unwrap_or("");
        }
    }
    parts
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
