//! `foreman.toml`: the model, its defaults, and validation. The file is
//! parsed once at startup into validated types (durations, regexes, paths);
//! every error names the file, line, column and key, and how to fix it.

use crate::model::{Kind, Mode, OnHung, OnStray, Signal};
use crate::schedule::{Schedule, Zone};
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
    #[serde(default, with = "humantime_serde::option")]
    future_tolerance: Option<Duration>,
    host: Option<String>,
    mode: Option<Mode>,
    /// Deprecated and ignored: still accepted so that old files load.
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
    #[serde(default)]
    wellbeing: RawWellbeing,
    #[serde(default)]
    review: RawReview,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    monitor: RawMonitor,
    fleet: Option<RawFleet>,
    #[serde(default)]
    maintenance: Vec<RawMaintenance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    schedule: String,
    timezone: Option<String>,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    droid_types: Option<Vec<String>>,
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    schema: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    host_lost_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde::option")]
    request_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_read_jobs: Option<usize>,
    token_env: Option<String>,
    protect_reads: Option<bool>,
}

/// A bearer token or a PostgreSQL URL (which may hold a password), kept
/// out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// `[http]`: the daemon's listener (`/metrics`, `/healthz`, `/twin`,
/// `/plans/{id}`, `POST /events`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// `None`: no listener (`listen = ""`).
    pub listen: Option<std::net::SocketAddr>,
    /// `listen` was given: failing to bind it stops the daemon. The
    /// default address, when taken, only costs the listener.
    pub listen_explicit: bool,
    pub max_body_bytes: usize,
    /// The whole request, body included; also how long a connection may
    /// take to send its headers.
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Reads of the activity log, /proc or the twin running at once for
    /// requests (the rest wait, within `request_timeout`).
    pub max_read_jobs: usize,
    /// The environment variable the bearer token is read from.
    pub token_env: String,
    /// Read from `token_env` when the configuration is loaded.
    pub token: Option<Secret>,
    /// GET endpoints also need the token (`/healthz` never does).
    pub protect_reads: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    queue_capacity: Option<usize>,
    queue_max_bytes: Option<usize>,
    max_plans: Option<usize>,
}

/// `[monitor]`: the execution monitor's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// Batches the queue holds (a pushed request is one batch).
    pub queue_capacity: usize,
    /// Bytes of pushed events the queue holds in memory (beyond: 503).
    pub queue_max_bytes: usize,
    /// Plans tracked at once: beyond, completed plans are evicted (oldest
    /// first), then new plans are refused (a push: 503).
    pub max_plans: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReview {
    schedule: Option<String>,
    timezone: Option<String>,
    ping_url: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    ping_timeout: Option<Duration>,
}

/// `[review]`: the sandbox self-test inside `foreman run`.
#[derive(Debug, Clone)]
pub struct ReviewConfig {
    /// When the daemon runs `foreman review`; `None`: never.
    pub schedule: Option<Schedule>,
    /// Requested (GET) after each passing scheduled review, so that an
    /// outside dead-man's switch notices when Foreman stops proving itself.
    pub ping_url: Option<String>,
    pub ping_timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWellbeing {
    schedule: Option<String>,
    timezone: Option<String>,
    // The limits are listed here rather than flattened from `RawLimits`:
    // serde cannot combine `flatten` with `deny_unknown_fields`.
    #[serde(default, with = "humantime_serde::option")]
    active_within: Option<Duration>,
    max_failure_rate: Option<f64>,
    min_finished: Option<u32>,
    max_findings: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    max_median_runtime: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    dispatch_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    plan_stall_timeout: Option<Duration>,
    max_sweep_errors: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    max_outbox_age: Option<Duration>,
    #[serde(default)]
    droid_types: BTreeMap<String, RawLimits>,
    #[serde(default)]
    sinks: Vec<RawSink>,
}

/// `[wellbeing.droid_types.NAME]`: the limits keys of `[wellbeing]` only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, with = "humantime_serde::option")]
    active_within: Option<Duration>,
    max_failure_rate: Option<f64>,
    min_finished: Option<u32>,
    max_findings: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    max_median_runtime: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    dispatch_timeout: Option<Duration>,
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
    path: Option<PathBuf>,
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
    File,
}

/// Where one `[[alerts]]` or `[[wellbeing.sinks]]` sink sends.
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
    /// Write one file per initiative into this directory (`[[wellbeing.sinks]]` only).
    File { dir: PathBuf },
}

/// One `[[alerts]]` or `[[wellbeing.sinks]]` sink, with every key resolved
/// (a wellbeing sink's `kinds` and `droid_types` are empty: it takes every
/// initiative).
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
    shared_pid_namespace: Option<bool>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
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
    enabled: Option<bool>,
    #[serde(default, with = "humantime_serde::option")]
    max_deferral: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    max_runtime: Option<Duration>,
    /// `[defaults]` only: an error in a `[droid_types.NAME]` section.
    max_actions_per_window: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Sqlite,
    Command,
    Postgres,
}

/// `[fleet]`: one Foreman per host on a PostgreSQL executor; each beats in
/// `<schema>.foreman_hosts`, and one of them (the holder of an advisory
/// lock) fails the RUNNING tasks of a host silent for `host_lost_after`.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub schema: String,
    pub host_lost_after: Duration,
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
    /// The executor and its droids run in Foreman's own PID namespace (one
    /// container holds them all): a Foreman outside the host's initial PID
    /// namespace may then trust "process not found".
    pub shared_pid_namespace: bool,
    /// kind = "postgres": the URL, read from `url_env` or `url_file` at load.
    pub url: Option<Secret>,
    /// Where the URL came from (`env NAME` or `file PATH`), for messages.
    pub url_source: String,
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
    /// Whether this droid type is expected to run (the wellbeing sweep's
    /// `enabled` check); Foreman supervises its tasks either way.
    pub enabled: bool,
    /// `max_deferral` as written, in this section or inherited from
    /// `[defaults]`; `None`: 3 × this policy's own `timeout`. Read it through
    /// [`Policy::max_deferral`].
    pub max_deferral: Option<Duration>,
    /// `max_runtime` as written, in this section or inherited from
    /// `[defaults]`; `None`: no limit. A task running longer than this
    /// (from `started_at`, else its process's start) is `timed_out` even
    /// while it progresses: a busy loop moves its CPU counter forever.
    pub max_runtime: Option<Duration>,
    /// `[defaults] max_actions_per_window`: at most this many actions (marks
    /// and terminations, strays included) within any window of `[defaults]
    /// timeout`. `None`: 2 × the per-sweep limit. Always `None` on a droid
    /// type (the key is allowed only in `[defaults]`): read it from
    /// `Config::defaults`.
    pub max_actions_per_window: Option<u32>,
}

impl Config {
    /// Why `/proc` cannot show the executor's processes here, if it cannot
    /// (see `probe::proc_blindness`).
    pub fn proc_blindness(&self) -> Option<String> {
        crate::probe::proc_blindness_with(crate::probe::BlindnessOptions {
            shared_pid_namespace: self.executor.shared_pid_namespace,
        })
    }
}

impl Policy {
    pub fn counts(&self, s: Signal) -> bool {
        self.progress.contains(&s)
    }

    /// The longest Foreman defers a hung verdict because the host or the
    /// task was starved of CPU; past it, it acts. The explicit
    /// `max_deferral`, else 3 × `timeout`.
    pub fn max_deferral(&self) -> Duration {
        self.max_deferral
            .unwrap_or_else(|| self.timeout.saturating_mul(3))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    /// FNV-1a (64-bit, hex) of the file's text: kept with each finding, so
    /// `explain` can tell whether the configuration changed since.
    pub fingerprint: String,
    pub interval: Duration,
    /// An executor timestamp (heartbeat, `started_at`) more than this in
    /// the future is implausible: it is not progress.
    pub future_tolerance: Duration,
    pub host: String,
    pub mode: Mode,
    /// Deprecated and ignored: system-wide CPU pressure no longer defers
    /// hang verdicts by itself. Still read (0 to 100) so old files load.
    pub max_cpu_pressure: f64,
    pub executor: ExecutorConfig,
    pub activity: ActivityConfig,
    pub defaults: Policy,
    pub droid_types: BTreeMap<String, Policy>,
    pub alerts: Vec<Sink>,
    pub twin: TwinConfig,
    pub wellbeing: WellbeingConfig,
    pub review: ReviewConfig,
    pub http: HttpConfig,
    pub monitor: MonitorConfig,
    /// Set with kind = "postgres": the fleet's heartbeat and lost hosts.
    pub fleet: Option<FleetConfig>,
    /// `[[maintenance]]`: planned windows in which Foreman records but
    /// holds its actions and alerts.
    pub maintenance: Vec<Maintenance>,
}

/// One planned maintenance window: from each occurrence of `schedule`, for
/// `duration`, for these droid types (all when empty).
#[derive(Debug, Clone)]
pub struct Maintenance {
    pub schedule: Schedule,
    pub duration: Duration,
    pub droid_types: Vec<String>,
    pub reason: String,
}

/// `[wellbeing]`: the daily check-up of every droid type and of Foreman.
#[derive(Debug, Clone)]
pub struct WellbeingConfig {
    /// When scheduled runs happen inside `foreman run`.
    pub schedule: Schedule,
    /// `[wellbeing]`'s own limits: every droid type's unless overridden.
    pub limits: WellbeingLimits,
    /// `[wellbeing.droid_types.NAME]`: limits of one droid type, each key
    /// defaulting to `[wellbeing]`'s.
    pub droid_types: BTreeMap<String, WellbeingLimits>,
    /// A plan with PENDING tasks, none RUNNING, and no task started or
    /// finished for this long is stuck.
    pub plan_stall_timeout: Duration,
    /// More sweeps with an error than this over the window is an issue.
    pub max_sweep_errors: u32,
    /// An alert or initiative still undelivered after this long is an issue.
    pub max_outbox_age: Duration,
    /// `[[wellbeing.sinks]]`: where initiatives go.
    pub sinks: Vec<Sink>,
}

impl WellbeingConfig {
    pub fn limits(&self, droid_type: &str) -> &WellbeingLimits {
        self.droid_types.get(droid_type).unwrap_or(&self.limits)
    }
}

/// What "active and performing" means for one droid type.
#[derive(Debug, Clone, PartialEq)]
pub struct WellbeingLimits {
    /// The window: a task must have started within it (or be running now);
    /// failure rate, findings and run time are counted over it.
    pub active_within: Duration,
    pub max_failure_rate: f64,
    /// Fewer finished tasks than this in the window: the rate is not judged.
    pub min_finished: u32,
    /// Foreman's findings (dead, hung, zombie, pid_reused, orphan).
    pub max_findings: u32,
    pub max_median_runtime: Option<Duration>,
    /// A task PENDING for longer than this was never dispatched.
    pub dispatch_timeout: Duration,
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
            let said = e.message().trim();
            // A missing key is reported at its table, but named itself; an
            // empty span is the top level.
            let missing = said
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
                message: with_hint(said),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let locate = |key: &str| span_of(text, key).map(|s| s.start);
        let mut config = resolve(raw, base, &locate).map_err(|(key, message)| {
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
        out.push_str(&format!(
            "future_tolerance = {:?}\n",
            d(self.future_tolerance)
        ));
        out.push_str(&format!("host = {:?}\n", self.host));
        out.push_str(&format!("mode = {:?}\n", mode_str(self.mode)));
        out.push_str("# max_cpu_pressure: deprecated and ignored\n");
        out.push_str(&format!("max_cpu_pressure = {:?}\n", self.max_cpu_pressure));
        let e = &self.executor;
        out.push_str("\n[executor]\n");
        out.push_str(&format!(
            "kind = {:?}\n",
            match e.kind {
                ExecutorKind::Sqlite => "sqlite",
                ExecutorKind::Command => "command",
                ExecutorKind::Postgres => "postgres",
            }
        ));
        if let Some(from) = e.url_source.strip_prefix("env ") {
            out.push_str(&format!("url_env = {from:?}\n"));
        }
        if let Some(from) = e.url_source.strip_prefix("file ") {
            out.push_str(&format!("url_file = {from:?}\n"));
        }
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
        out.push_str(&format!(
            "shared_pid_namespace = {}\n",
            e.shared_pid_namespace
        ));
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
                None => out.push_str(
                    "# max_actions_per_sweep: 10 or 20% of this host's RUNNING tasks, the larger\n",
                ),
            }
            if header == "defaults" {
                match p.max_actions_per_window {
                    Some(n) => out.push_str(&format!("max_actions_per_window = {n}\n")),
                    None => out.push_str(
                        "# max_actions_per_window: 2 × the per-sweep limit, per `timeout` window\n",
                    ),
                }
            }
            match p.max_deferral {
                Some(m) => out.push_str(&format!("max_deferral = {:?}\n", d(m))),
                None => out.push_str(&format!(
                    "# max_deferral: 3 × timeout ({})\n",
                    d(p.max_deferral())
                )),
            }
            match p.max_runtime {
                Some(m) => out.push_str(&format!("max_runtime = {:?}\n", d(m))),
                None => {
                    out.push_str("# max_runtime: none (a task may run as long as it progresses)\n")
                }
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
            out.push_str(&format!("enabled = {}\n", p.enabled));
        };
        policy(&mut out, "defaults", &self.defaults);
        for (name, p) in &self.droid_types {
            policy(&mut out, &format!("droid_types.{}", toml_key(name)), p);
        }
        out.push_str("\n[twin]\n");
        out.push_str(&format!("window = {:?}\n", d(self.twin.window)));
        out.push_str(&format!("warn_failures = {}\n", self.twin.warn_failures));
        for sink in &self.alerts {
            sink_toml(&mut out, SinkList::Alerts, sink);
        }
        let w = &self.wellbeing;
        out.push_str("\n[wellbeing]\n");
        out.push_str(&format!("schedule = {:?}\n", w.schedule.text()));
        out.push_str(&format!("timezone = {:?}\n", w.schedule.zone().name()));
        limits_toml(&mut out, &w.limits);
        out.push_str(&format!(
            "plan_stall_timeout = {:?}\n",
            d(w.plan_stall_timeout)
        ));
        out.push_str(&format!("max_sweep_errors = {}\n", w.max_sweep_errors));
        out.push_str(&format!("max_outbox_age = {:?}\n", d(w.max_outbox_age)));
        for (name, limits) in &w.droid_types {
            out.push_str(&format!("\n[wellbeing.droid_types.{}]\n", toml_key(name)));
            limits_toml(&mut out, limits);
        }
        for sink in &w.sinks {
            sink_toml(&mut out, SinkList::Wellbeing, sink);
        }
        out.push_str("\n[review]\n");
        match &self.review.schedule {
            Some(s) => {
                out.push_str(&format!("schedule = {:?}\n", s.text()));
                out.push_str(&format!("timezone = {:?}\n", s.zone().name()));
            }
            None => out.push_str("# schedule: none (reviews run only on demand)\n"),
        }
        if let Some(url) = &self.review.ping_url {
            out.push_str(&format!("ping_url = {url:?}\n"));
        }
        out.push_str(&format!(
            "ping_timeout = {:?}\n",
            d(self.review.ping_timeout)
        ));
        let h = &self.http;
        out.push_str("\n[http]\n");
        out.push_str(&format!(
            "listen = {:?}\n",
            h.listen.map(|a| a.to_string()).unwrap_or_default()
        ));
        out.push_str(&format!("max_body_bytes = {}\n", h.max_body_bytes));
        out.push_str(&format!("request_timeout = {:?}\n", d(h.request_timeout)));
        out.push_str(&format!("max_connections = {}\n", h.max_connections));
        out.push_str(&format!("max_read_jobs = {}\n", h.max_read_jobs));
        out.push_str(&format!(
            "token_env = {:?} # {}\n",
            h.token_env,
            if h.token.is_some() { "set" } else { "not set" }
        ));
        out.push_str(&format!("protect_reads = {}\n", h.protect_reads));
        out.push_str("\n[monitor]\n");
        out.push_str(&format!(
            "queue_capacity = {}\n",
            self.monitor.queue_capacity
        ));
        out.push_str(&format!(
            "queue_max_bytes = {}\n",
            self.monitor.queue_max_bytes
        ));
        out.push_str(&format!("max_plans = {}\n", self.monitor.max_plans));
        if let Some(f) = &self.fleet {
            out.push_str("\n[fleet]\n");
            out.push_str(&format!("schema = {:?}\n", f.schema));
            out.push_str(&format!("host_lost_after = {:?}\n", d(f.host_lost_after)));
        }
        out
    }
}

fn limits_toml(out: &mut String, l: &WellbeingLimits) {
    let d = |d: Duration| plain_duration(d);
    out.push_str(&format!("active_within = {:?}\n", d(l.active_within)));
    out.push_str(&format!("max_failure_rate = {:?}\n", l.max_failure_rate));
    out.push_str(&format!("min_finished = {}\n", l.min_finished));
    out.push_str(&format!("max_findings = {}\n", l.max_findings));
    match l.max_median_runtime {
        Some(m) => out.push_str(&format!("max_median_runtime = {:?}\n", d(m))),
        None => out.push_str("# max_median_runtime: none (run time is not judged)\n"),
    }
    out.push_str(&format!("dispatch_timeout = {:?}\n", d(l.dispatch_timeout)));
}

fn sink_toml(out: &mut String, list: SinkList, sink: &Sink) {
    let d = |d: Duration| plain_duration(d);
    out.push_str(&format!("\n[[{}]]\n", list.section()));
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
        SinkTarget::File { dir } => {
            out.push_str("kind = \"file\"\n");
            out.push_str(&format!("path = {:?}\n", dir.display().to_string()));
        }
    }
    out.push_str(&format!("timeout = {:?}\n", d(sink.timeout)));
    // A wellbeing sink takes every initiative once: these keys are errors there.
    if list == SinkList::Alerts {
        let kinds: Vec<&str> = sink.kinds.iter().map(|k| k.as_str()).collect();
        out.push_str(&format!("kinds = {kinds:?}\n"));
        out.push_str(&format!("droid_types = {:?}\n", sink.droid_types));
    }
    out.push_str(&format!("retry_base = {:?}\n", d(sink.retry_base)));
    out.push_str(&format!("retry_cap = {:?}\n", d(sink.retry_cap)));
    out.push_str(&format!("max_age = {:?}\n", d(sink.max_age)));
    if list == SinkList::Alerts {
        out.push_str(&format!("realert_after = {:?}\n", d(sink.realert_after)));
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

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// humantime's year (365.25 days), so that a bound prints as "10years".
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The longest value of each duration key, by its name in its section:
/// far beyond any legitimate setting, far below what date arithmetic can
/// hold (a sum of a few of them with a date stays valid). foreman.toml and
/// docs/operations.md document them.
mod max {
    use super::{Duration, DAY, HOUR, MINUTE, YEAR};
    pub const INTERVAL: Duration = DAY;
    pub const FUTURE_TOLERANCE: Duration = DAY;
    pub const EXECUTOR_TIMEOUT: Duration = HOUR;
    pub const HISTORY_WINDOW: Duration = Duration::from_secs(30 * 86_400);
    pub const RETENTION: Duration = Duration::from_secs(10 * 31_557_600);
    pub const TIMEOUT: Duration = Duration::from_secs(30 * 86_400);
    pub const STARTUP_GRACE: Duration = Duration::from_secs(7 * 86_400);
    pub const PID_START_TOLERANCE: Duration = DAY;
    pub const EXIT_GRACE: Duration = HOUR;
    pub const KILL_GRACE: Duration = HOUR;
    pub const MAX_DEFERRAL: Duration = Duration::from_secs(30 * 86_400);
    pub const MAX_RUNTIME: Duration = Duration::from_secs(30 * 86_400);
    pub const TWIN_WINDOW: Duration = Duration::from_secs(30 * 86_400);
    pub const SINK_TIMEOUT: Duration = MINUTE;
    pub const RETRY_BASE: Duration = DAY;
    pub const RETRY_CAP: Duration = Duration::from_secs(7 * 86_400);
    pub const MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
    pub const REALERT_AFTER: Duration = Duration::from_secs(30 * 86_400);
    pub const ACTIVE_WITHIN: Duration = YEAR;
    pub const MAX_MEDIAN_RUNTIME: Duration = Duration::from_secs(30 * 86_400);
    pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);
    pub const PLAN_STALL_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);
    pub const MAX_OUTBOX_AGE: Duration = Duration::from_secs(30 * 86_400);
    pub const PING_TIMEOUT: Duration = MINUTE;
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    pub const HOST_LOST_AFTER: Duration = Duration::from_secs(7 * 86_400);
    pub const MAINTENANCE: Duration = Duration::from_secs(7 * 86_400);
}

/// The shortest value of a duration key whose zero or near-zero value is
/// accepted by the parser but makes no sense (see where each is checked).
mod min {
    use super::{Duration, HOUR};
    pub const RETENTION: Duration = HOUR;
}

/// "300000years is more than the maximum of 7days".
fn too_long(d: Duration, max: Duration) -> String {
    format!(
        "{} is more than the maximum of {}",
        humantime::format_duration(d),
        humantime::format_duration(max)
    )
}

/// `d`, the value of `key`, is at most `max`.
fn at_most(key: String, d: Duration, max: Duration) -> Result<(), KeyError> {
    if d > max {
        return Err((key, too_long(d, max)));
    }
    Ok(())
}

/// `locate` gives the byte offset of a dotted key in the file, to tell which
/// of two clashing keys comes later.
fn resolve(
    raw: RawConfig,
    base: &Path,
    locate: &dyn Fn(&str) -> Option<usize>,
) -> Result<Config, KeyError> {
    let interval = raw.interval.unwrap_or(Duration::from_secs(120));
    if interval.is_zero() {
        return Err((
            "interval".into(),
            "must be greater than 0 (e.g. \"2m\")".into(),
        ));
    }
    at_most("interval".into(), interval, max::INTERVAL)?;
    let future_tolerance = raw.future_tolerance.unwrap_or(Duration::from_secs(5 * 60));
    if future_tolerance.is_zero() {
        return Err((
            "future_tolerance".into(),
            "must be greater than 0 (e.g. \"5m\"): a clock a second ahead would hide every heartbeat".into(),
        ));
    }
    at_most(
        "future_tolerance".into(),
        future_tolerance,
        max::FUTURE_TOLERANCE,
    )?;
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
    let fleet = resolve_fleet(raw.fleet, executor.kind, interval)?;
    let mut maintenance = Vec::new();
    for (i, m) in raw.maintenance.into_iter().enumerate() {
        let key = |k: &str| format!("maintenance[{i}].{k}");
        let zone = Zone::parse(m.timezone.as_deref().unwrap_or("local"))
            .map_err(|e| (key("timezone"), e))?;
        let schedule = Schedule::parse(&m.schedule, zone).map_err(|e| (key("schedule"), e))?;
        if m.duration.is_zero() {
            return Err((
                key("duration"),
                "must be greater than 0 (e.g. \"2h\")".into(),
            ));
        }
        at_most(key("duration"), m.duration, max::MAINTENANCE)?;
        maintenance.push(Maintenance {
            schedule,
            duration: m.duration,
            droid_types: m.droid_types.unwrap_or_default(),
            reason: m.reason.unwrap_or_else(|| "planned maintenance".into()),
        });
    }
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
    // Pruning deletes findings and observations older than the retention:
    // shorter than an hour, a finding is gone before a few sweeps have
    // confirmed or cleared it, and the look-backs that count findings
    // (`[twin] window`, 1h by default, and the wellbeing sweep) would read
    // an emptied log and report a healthy fleet.
    if activity.retention < min::RETENTION {
        return Err((
            "activity.retention".into(),
            format!(
                "{} is too short: give at least {} (e.g. \"90d\"); findings must outlive a few sweeps and the wellbeing look-back that counts them",
                humantime::format_duration(activity.retention),
                humantime::format_duration(min::RETENTION)
            ),
        ));
    }
    at_most(
        "activity.retention".into(),
        activity.retention,
        max::RETENTION,
    )?;
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
        enabled: true,
        max_deferral: None,
        max_runtime: None,
        max_actions_per_window: None,
    };
    let defaults = resolve_policy(raw.defaults, &builtin, "defaults", interval)?;
    let mut droid_types = BTreeMap::new();
    for (name, p) in raw.droid_types {
        let key = format!("droid_types.{}", toml_key(&name));
        let policy = resolve_policy(p, &defaults, &key, interval)?;
        droid_types.insert(name, policy);
    }
    let mut alerts = Vec::new();
    for (i, raw) in raw.alerts.into_iter().enumerate() {
        alerts.push(resolve_sink(raw, SinkList::Alerts, i, base)?);
    }
    let wellbeing = resolve_wellbeing(raw.wellbeing, base)?;
    unique_sink_names(&alerts, &wellbeing.sinks, locate)?;
    let review = resolve_review(raw.review)?;
    let http = resolve_http(raw.http)?;
    let queue_capacity = raw.monitor.queue_capacity.unwrap_or(1024);
    if !(1..=1_000_000).contains(&queue_capacity) {
        return Err((
            "monitor.queue_capacity".into(),
            format!("{queue_capacity} is out of range; give 1 to 1000000"),
        ));
    }
    let queue_max_bytes = raw.monitor.queue_max_bytes.unwrap_or(64 << 20);
    if !(1 << 20..=4 << 30).contains(&queue_max_bytes) {
        return Err((
            "monitor.queue_max_bytes".into(),
            format!(
                "{queue_max_bytes} is out of range; give 1048576 (1 MiB) to 4294967296 (4 GiB)"
            ),
        ));
    }
    let max_plans = raw
        .monitor
        .max_plans
        .unwrap_or(crate::monitor::store::DEFAULT_MAX_PLANS);
    if !(1..=1_000_000).contains(&max_plans) {
        return Err((
            "monitor.max_plans".into(),
            format!("{max_plans} is out of range; give 1 to 1000000"),
        ));
    }
    let twin = TwinConfig {
        window: raw.twin.window.unwrap_or(Duration::from_secs(3600)),
        warn_failures: raw.twin.warn_failures.unwrap_or(0),
    };
    at_most("twin.window".into(), twin.window, max::TWIN_WINDOW)?;
    Ok(Config {
        source: PathBuf::new(),
        fingerprint: String::new(),
        interval,
        future_tolerance,
        host,
        mode,
        max_cpu_pressure,
        executor,
        activity,
        defaults,
        droid_types,
        alerts,
        twin,
        wellbeing,
        review,
        http,
        monitor: MonitorConfig {
            queue_capacity,
            queue_max_bytes,
            max_plans,
        },
        fleet,
        maintenance,
    })
}

/// `[fleet]`: on by itself with kind = "postgres" (the executor's database
/// is where the hosts meet), refused with any other kind.
fn resolve_fleet(
    raw: Option<RawFleet>,
    kind: ExecutorKind,
    interval: Duration,
) -> Result<Option<FleetConfig>, KeyError> {
    if kind != ExecutorKind::Postgres {
        return match raw {
            Some(_) => Err((
                "fleet".into(),
                "[fleet] needs [executor] kind = \"postgres\": the hosts meet in the executor's PostgreSQL database".into(),
            )),
            None => Ok(None),
        };
    }
    let raw = raw.unwrap_or_default();
    let schema = raw.schema.unwrap_or_else(|| "foreman".into());
    let plain = schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err((
            "fleet.schema".into(),
            format!("{schema:?} is not a plain PostgreSQL name; give lowercase letters, digits and _ (e.g. \"foreman\")"),
        ));
    }
    let host_lost_after = raw.host_lost_after.unwrap_or(Duration::from_secs(600));
    // A Foreman beats once per sweep: silence must span several of them
    // (a slow sweep, a restart) before its host is called lost.
    let floor = interval.saturating_mul(3);
    if host_lost_after < floor {
        return Err((
            "fleet.host_lost_after".into(),
            format!(
                "{} is too short: a host is lost only after missing several sweeps; give at least 3 × interval ({})",
                plain_duration(host_lost_after),
                plain_duration(floor)
            ),
        ));
    }
    at_most(
        "fleet.host_lost_after".into(),
        host_lost_after,
        max::HOST_LOST_AFTER,
    )?;
    Ok(Some(FleetConfig {
        schema,
        host_lost_after,
    }))
}

fn resolve_http(raw: RawHttp) -> Result<HttpConfig, KeyError> {
    let key = |k: &str| format!("http.{k}");
    let listen = match raw.listen.as_deref().map(str::trim) {
        None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
        Some("") => None,
        Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|_| {
            (
                key("listen"),
                format!("{text:?} is not an IP address and port (e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"); give \"\" to disable the listener"),
            )
        })?),
    };
    let token_env = raw.token_env.unwrap_or_else(|| "FOREMAN_HTTP_TOKEN".into());
    if token_env.is_empty() || token_env.contains('=') || token_env.contains('\0') {
        return Err((
            key("token_env"),
            format!("{token_env:?} is not an environment variable name"),
        ));
    }
    let token = std::env::var(&token_env)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Secret);
    let protect_reads = raw.protect_reads.unwrap_or(false);
    if let Some(addr) = listen.filter(|a| !a.ip().is_loopback()) {
        if token.is_none() {
            return Err((
                key("listen"),
                format!("{addr} is not a loopback address: anyone who can reach it could push events; set a bearer token in the environment variable {token_env} (`token_env`), or listen on 127.0.0.1"),
            ));
        }
    }
    if protect_reads && token.is_none() {
        return Err((
            key("protect_reads"),
            format!("protecting reads needs a token: set the environment variable {token_env} (`token_env`)"),
        ));
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 20);
    if !(1024..=64 << 20).contains(&max_body_bytes) {
        return Err((
            key("max_body_bytes"),
            format!("{max_body_bytes} is out of range; give 1024 to 67108864 (64 MiB)"),
        ));
    }
    let request_timeout = raw.request_timeout.unwrap_or(Duration::from_secs(10));
    if request_timeout.is_zero() {
        return Err((
            key("request_timeout"),
            "give more than 0 and at most 5m".into(),
        ));
    }
    at_most(
        key("request_timeout"),
        request_timeout,
        max::REQUEST_TIMEOUT,
    )?;
    let max_connections = raw.max_connections.unwrap_or(64);
    if !(1..=10_000).contains(&max_connections) {
        return Err((
            key("max_connections"),
            format!("{max_connections} is out of range; give 1 to 10000"),
        ));
    }
    let max_read_jobs = raw.max_read_jobs.unwrap_or(4);
    if !(1..=64).contains(&max_read_jobs) {
        return Err((
            key("max_read_jobs"),
            format!("{max_read_jobs} is out of range; give 1 to 64"),
        ));
    }
    Ok(HttpConfig {
        listen_explicit: raw.listen.is_some(),
        listen,
        max_body_bytes,
        request_timeout,
        max_connections,
        max_read_jobs,
        token_env,
        token,
        protect_reads,
    })
}

fn resolve_review(raw: RawReview) -> Result<ReviewConfig, KeyError> {
    let zone = Zone::parse(raw.timezone.as_deref().unwrap_or("local"))
        .map_err(|e| ("review.timezone".to_string(), e))?;
    let schedule = raw
        .schedule
        .as_deref()
        .map(|s| Schedule::parse(s, zone))
        .transpose()
        .map_err(|e| ("review.schedule".to_string(), e))?;
    if let Some(url) = &raw.ping_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err((
                "review.ping_url".into(),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        if schedule.is_none() {
            return Err((
                "review.ping_url".into(),
                "a ping needs scheduled reviews: set `schedule` too (e.g. \"0 0 * * * *\", hourly)"
                    .into(),
            ));
        }
    }
    let ping_timeout = raw.ping_timeout.unwrap_or(Duration::from_secs(10));
    if ping_timeout.is_zero() {
        return Err((
            "review.ping_timeout".into(),
            "give more than 0 and at most 60s".into(),
        ));
    }
    at_most(
        "review.ping_timeout".into(),
        ping_timeout,
        max::PING_TIMEOUT,
    )?;
    Ok(ReviewConfig {
        schedule,
        ping_url: raw.ping_url,
        ping_timeout,
    })
}

/// Which list a sink is in: `[[alerts]]` take findings' alerts and may
/// filter them; `[[wellbeing.sinks]]` take every initiative, and only they
/// may write files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkList {
    Alerts,
    Wellbeing,
}

impl SinkList {
    fn section(self) -> &'static str {
        match self {
            SinkList::Alerts => "alerts",
            SinkList::Wellbeing => "wellbeing.sinks",
        }
    }

    fn delivers(self) -> &'static str {
        match self {
            SinkList::Alerts => "alerts",
            SinkList::Wellbeing => "initiatives",
        }
    }
}

fn resolve_sink(raw: RawSink, list: SinkList, i: usize, base: &Path) -> Result<Sink, KeyError> {
    let key = |k: &str| format!("{}[{i}].{k}", list.section());
    if raw.name.trim().is_empty() {
        return Err((key("name"), "must not be empty".into()));
    }
    match list {
        SinkList::Alerts => {
            if raw.kind == SinkKind::File {
                return Err((
                    key("kind"),
                    "file sinks are for [[wellbeing.sinks]] (they take initiatives, not alerts); an [[alerts]] sink is \"webhook\" or \"command\"".into(),
                ));
            }
        }
        SinkList::Wellbeing => {
            for (k, set) in [
                ("kinds", raw.kinds.is_some()),
                ("droid_types", raw.droid_types.is_some()),
                ("realert_after", raw.realert_after.is_some()),
            ] {
                if set {
                    return Err((
                        key(k),
                        format!("`{k}` is for [[alerts]]; a [[wellbeing.sinks]] sink takes every initiative, once: remove it"),
                    ));
                }
            }
        }
    }
    // A key of another kind is an error, not ignored: the kind is likely
    // the mistake, and the message names the key this kind takes instead.
    let (this, takes) = match raw.kind {
        SinkKind::Webhook => ("a webhook", "url"),
        SinkKind::Command => ("a command", "argv"),
        SinkKind::File => ("a file sink", "path"),
    };
    for (k, owner, set) in [
        ("url", SinkKind::Webhook, raw.url.is_some()),
        ("headers", SinkKind::Webhook, raw.headers.is_some()),
        (
            "bearer_token_env",
            SinkKind::Webhook,
            raw.bearer_token_env.is_some(),
        ),
        ("argv", SinkKind::Command, raw.argv.is_some()),
        ("path", SinkKind::File, raw.path.is_some()),
    ] {
        if set && owner != raw.kind {
            let owner = match owner {
                SinkKind::Webhook => "kind = \"webhook\"",
                SinkKind::Command => "kind = \"command\"",
                SinkKind::File if list == SinkList::Alerts => {
                    "kind = \"file\", in [[wellbeing.sinks]] only"
                }
                SinkKind::File => "kind = \"file\"",
            };
            return Err((
                key(k),
                format!("`{k}` is for {owner}; {this} takes `{takes}`"),
            ));
        }
    }
    let target = match raw.kind {
        SinkKind::Webhook => {
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
        SinkKind::Command => match raw.argv {
            Some(argv) if !argv.is_empty() && !argv[0].is_empty() => SinkTarget::Command { argv },
            _ => {
                return Err((
                    key("argv"),
                    "kind = \"command\" needs `argv`, a program and its arguments (run without a shell), e.g. [\"/usr/local/bin/page\", \"--team\", \"ops\"]".into(),
                ))
            }
        },
        SinkKind::File => match raw.path {
            Some(dir) if !dir.as_os_str().is_empty() => SinkTarget::File {
                dir: absolute(base, dir),
            },
            _ => {
                return Err((
                    key("path"),
                    "kind = \"file\" needs `path`, the directory each initiative is written into as <run id>.md, e.g. \"/var/lib/foreman/initiatives\"".into(),
                ))
            }
        },
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
    if timeout > max::SINK_TIMEOUT {
        return Err((
            key("timeout"),
            format!(
                "{} for one delivery attempt (failed deliveries are retried)",
                too_long(timeout, max::SINK_TIMEOUT)
            ),
        ));
    }
    let max_age = raw.max_age.unwrap_or(Duration::from_secs(86400));
    let realert_after = raw.realert_after.unwrap_or(Duration::from_secs(3600));
    for (k, d, most) in [
        ("retry_base", retry_base, max::RETRY_BASE),
        ("retry_cap", retry_cap, max::RETRY_CAP),
        ("max_age", max_age, max::MAX_AGE),
        ("realert_after", realert_after, max::REALERT_AFTER),
    ] {
        at_most(key(k), d, most)?;
    }
    if max_age < retry_base {
        return Err((
            key("max_age"),
            format!(
                "{} would expire ({}) before their first retry (`retry_base` {}); raise max_age",
                list.delivers(),
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
        realert_after,
    })
}

/// The outbox holds deliveries per sink name, whichever list the sink is in,
/// so names are unique across both. The later of two in the file is reported.
fn unique_sink_names(
    alerts: &[Sink],
    wellbeing: &[Sink],
    locate: &dyn Fn(&str) -> Option<usize>,
) -> Result<(), KeyError> {
    let mut sinks: Vec<(String, &str)> = alerts
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("alerts[{i}]"), s.name.as_str()))
        .chain(
            wellbeing
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("wellbeing.sinks[{i}]"), s.name.as_str())),
        )
        .collect();
    let mut names: Vec<&str> = sinks.iter().map(|(_, name)| *name).collect();
    names.sort_unstable();
    if names.windows(2).all(|w| w[0] != w[1]) {
        return Ok(());
    }
    // Only now is the file searched for positions: a clash is rare, and
    // every lookup parses the file again.
    sinks.sort_by_key(|(at, _)| locate(&format!("{at}.name")).unwrap_or(usize::MAX));
    for (n, (at, name)) in sinks.iter().enumerate() {
        if let Some((first, _)) = sinks[..n].iter().find(|(_, other)| other == name) {
            return Err((
                format!("{at}.name"),
                format!("another sink, {first}, is already named {name:?}; each sink needs its own name across [[alerts]] and [[wellbeing.sinks]] (the outbox tracks deliveries by it)"),
            ));
        }
    }
    Ok(())
}

const DEFAULT_SCHEDULE: &str = "0 0 6 * * *";

fn resolve_wellbeing(raw: RawWellbeing, base: &Path) -> Result<WellbeingConfig, KeyError> {
    let zone = Zone::parse(raw.timezone.as_deref().unwrap_or("local"))
        .map_err(|e| ("wellbeing.timezone".to_string(), e))?;
    let schedule = Schedule::parse(raw.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE), zone)
        .map_err(|e| ("wellbeing.schedule".to_string(), e))?;
    let builtin = WellbeingLimits {
        active_within: Duration::from_secs(86400),
        max_failure_rate: 0.25,
        min_finished: 5,
        max_findings: 3,
        max_median_runtime: None,
        dispatch_timeout: Duration::from_secs(3600),
    };
    let own = RawLimits {
        active_within: raw.active_within,
        max_failure_rate: raw.max_failure_rate,
        min_finished: raw.min_finished,
        max_findings: raw.max_findings,
        max_median_runtime: raw.max_median_runtime,
        dispatch_timeout: raw.dispatch_timeout,
    };
    let limits = resolve_limits(own, &builtin, "wellbeing")?;
    let mut droid_types = BTreeMap::new();
    for (name, own) in raw.droid_types {
        let section = format!("wellbeing.droid_types.{}", toml_key(&name));
        let l = resolve_limits(own, &limits, &section)?;
        droid_types.insert(name, l);
    }
    let plan_stall_timeout = raw.plan_stall_timeout.unwrap_or(Duration::from_secs(3600));
    let max_outbox_age = raw.max_outbox_age.unwrap_or(Duration::from_secs(3600));
    for (k, d, most) in [
        (
            "plan_stall_timeout",
            plan_stall_timeout,
            max::PLAN_STALL_TIMEOUT,
        ),
        ("max_outbox_age", max_outbox_age, max::MAX_OUTBOX_AGE),
    ] {
        if d.is_zero() {
            return Err((
                format!("wellbeing.{k}"),
                "must be greater than 0 (e.g. \"1h\")".into(),
            ));
        }
        at_most(format!("wellbeing.{k}"), d, most)?;
    }
    let mut sinks = Vec::new();
    for (i, raw) in raw.sinks.into_iter().enumerate() {
        sinks.push(resolve_sink(raw, SinkList::Wellbeing, i, base)?);
    }
    Ok(WellbeingConfig {
        schedule,
        limits,
        droid_types,
        plan_stall_timeout,
        max_sweep_errors: raw.max_sweep_errors.unwrap_or(5),
        max_outbox_age,
        sinks,
    })
}

fn resolve_limits(
    raw: RawLimits,
    parent: &WellbeingLimits,
    section: &str,
) -> Result<WellbeingLimits, KeyError> {
    let key = |k: &str| format!("{section}.{k}");
    let l = WellbeingLimits {
        active_within: raw.active_within.unwrap_or(parent.active_within),
        max_failure_rate: raw.max_failure_rate.unwrap_or(parent.max_failure_rate),
        min_finished: raw.min_finished.unwrap_or(parent.min_finished),
        max_findings: raw.max_findings.unwrap_or(parent.max_findings),
        max_median_runtime: raw.max_median_runtime.or(parent.max_median_runtime),
        dispatch_timeout: raw.dispatch_timeout.unwrap_or(parent.dispatch_timeout),
    };
    for (k, d, most) in [
        ("active_within", Some(l.active_within), max::ACTIVE_WITHIN),
        (
            "max_median_runtime",
            l.max_median_runtime,
            max::MAX_MEDIAN_RUNTIME,
        ),
        (
            "dispatch_timeout",
            Some(l.dispatch_timeout),
            max::DISPATCH_TIMEOUT,
        ),
    ] {
        let Some(d) = d else { continue };
        if d.is_zero() {
            let hint = if k == "max_median_runtime" {
                " (omit it not to judge run time)"
            } else {
                ""
            };
            return Err((key(k), format!("must be greater than 0{hint}")));
        }
        at_most(key(k), d, most)?;
    }
    if !(0.0..=1.0).contains(&l.max_failure_rate) {
        return Err((
            key("max_failure_rate"),
            format!(
                "{} is not a fraction; give 0 to 1 (0.25 for 25%)",
                l.max_failure_rate
            ),
        ));
    }
    if l.min_finished == 0 {
        return Err((
            key("min_finished"),
            "give at least 1: a failure rate over no finished task means nothing".into(),
        ));
    }
    Ok(l)
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
    at_most("executor.timeout".into(), timeout, max::EXECUTOR_TIMEOUT)?;
    let history_window = raw.history_window.unwrap_or(Duration::from_secs(3600));
    at_most(
        "executor.history_window".into(),
        history_window,
        max::HISTORY_WINDOW,
    )?;
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
        ExecutorKind::Postgres => {
            if raw.path.is_some()
                || raw.snapshot_command.is_some()
                || raw.mark_failed_command.is_some()
            {
                return Err((
                    "executor.kind".into(),
                    "kind = \"postgres\" reads `url_env` or `url_file`; `path` and the commands belong to kind = \"sqlite\" and \"command\"".into(),
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
    let (url, url_source) = match raw.kind {
        ExecutorKind::Postgres => resolve_url(raw.url_env, raw.url_file, base)?,
        _ => {
            if raw.url_env.is_some() || raw.url_file.is_some() {
                return Err((
                    "executor.url_env".into(),
                    "a URL is for kind = \"postgres\"; remove it or change the kind".into(),
                ));
            }
            (None, String::new())
        }
    };
    Ok(ExecutorConfig {
        url,
        url_source,
        kind: raw.kind,
        path: raw.path.map(|p| absolute(base, p)),
        snapshot_query: raw.snapshot_query,
        mark_failed_query: raw.mark_failed_query,
        snapshot_command: raw.snapshot_command.unwrap_or_default(),
        mark_failed_command: raw.mark_failed_command.unwrap_or_default(),
        timeout,
        history_window,
        timezone,
        timezone_text,
        shared_pid_namespace: raw.shared_pid_namespace.unwrap_or(false),
    })
}

/// The PostgreSQL URL from the environment or a file (a systemd
/// credential): never from foreman.toml itself, which is world-readable.
fn resolve_url(
    env: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
) -> Result<(Option<Secret>, String), KeyError> {
    let (url, source, key) = match (env, file) {
        (Some(_), Some(_)) => {
            return Err((
                "executor.url_file".into(),
                "give `url_env` or `url_file`, not both".into(),
            ))
        }
        (None, None) => {
            return Err((
                "executor.kind".into(),
                "kind = \"postgres\" needs `url_env` (the name of an environment variable holding the URL, e.g. \"FOREMAN_PG_URL\") or `url_file` (a file holding it, e.g. a systemd credential)".into(),
            ))
        }
        (Some(name), None) => {
            let url = std::env::var(&name).map_err(|_| {
                (
                    "executor.url_env".to_string(),
                    format!("the environment variable {name} is not set (or not UTF-8): it must hold the PostgreSQL URL, e.g. postgres://foreman@db.internal/executor"),
                )
            })?;
            (url, format!("env {name}"), "executor.url_env")
        }
        (None, Some(path)) => {
            let path = absolute(base, path);
            let url = std::fs::read_to_string(&path).map_err(|e| {
                (
                    "executor.url_file".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            (url, format!("file {}", path.display()), "executor.url_file")
        }
    };
    let url = url.trim().to_string();
    if let Err(why) = crate::executor::postgres::check_url(&url) {
        return Err((key.into(), format!("{source}: {why}")));
    }
    Ok((Some(Secret(url)), source))
}

fn resolve_policy(
    raw: RawPolicy,
    parent: &Policy,
    section: &str,
    interval: Duration,
) -> Result<Policy, KeyError> {
    let key = |k: &str| format!("{section}.{k}");
    let raw_on_stray = raw.on_stray;
    // The window brake counts every action of the host, whatever the type.
    let is_defaults = section == "defaults";
    if !is_defaults && raw.max_actions_per_window.is_some() {
        return Err((
            key("max_actions_per_window"),
            "allowed only in [defaults]: the window counts every action on this host, whatever the droid type; move it there".into(),
        ));
    }
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
        enabled: raw.enabled.unwrap_or(parent.enabled),
        max_deferral: raw.max_deferral.or(parent.max_deferral),
        max_runtime: raw.max_runtime.or(parent.max_runtime),
        max_actions_per_window: if is_defaults {
            raw.max_actions_per_window
        } else {
            None
        },
    };
    for (k, d, most) in [
        ("timeout", Some(p.timeout), max::TIMEOUT),
        ("startup_grace", Some(p.startup_grace), max::STARTUP_GRACE),
        (
            "pid_start_tolerance",
            Some(p.pid_start_tolerance),
            max::PID_START_TOLERANCE,
        ),
        ("exit_grace", Some(p.exit_grace), max::EXIT_GRACE),
        ("kill_grace", Some(p.kill_grace), max::KILL_GRACE),
        ("max_deferral", p.max_deferral, max::MAX_DEFERRAL),
        ("max_runtime", p.max_runtime, max::MAX_RUNTIME),
    ] {
        if let Some(d) = d {
            at_most(key(k), d, most)?;
        }
    }
    // Zero would time out every task at its first sweep; "no limit" is
    // the key left out. Only what this section wrote is checked: an
    // inherited value was checked in [defaults].
    if raw.max_runtime == Some(Duration::ZERO) {
        return Err((
            key("max_runtime"),
            "must be greater than 0 (e.g. \"12h\"); leave it out for no limit".into(),
        ));
    }
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
    for (k, n) in [
        ("max_actions_per_sweep", p.max_actions_per_sweep),
        ("max_actions_per_window", p.max_actions_per_window),
    ] {
        if n == Some(0) {
            return Err((
                key(k),
                "0 would brake every action; give at least 1, or omit it".into(),
            ));
        }
    }
    Ok(p)
}

/// The smallest configuration, shown when `[executor]` is missing (an
/// empty file, most often): everything else has a default.
const MINIMAL_HINT: &str = "the smallest configuration is the executor to watch, two lines under a header: \
     `[executor]`, `kind = \"sqlite\"`, `path = \"/path/to/executor.db\"` \
     (or kind = \"command\" with snapshot_command, or kind = \"postgres\" with url_env or url_file); \
     every other key has a default";

/// The parser's message with how to fix it appended, for the mistakes
/// operators make most: a misspelt key, a bare number as a duration, and a
/// file without `[executor]`. serde's wording is kept in front, so the
/// message still says what was found.
fn with_hint(message: &str) -> String {
    if message == "missing field `executor`" {
        return format!("{message}: {MINIMAL_HINT}");
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde: "unknown field `x`, expected one of `a`, `b`" (or
        // "expected `a`"); the names are the backquoted words after the first.
        let mut quoted = rest.split('`').step_by(2);
        let typo = quoted.next().unwrap_or("");
        if let Some(best) = nearest(typo, quoted) {
            return format!("{message}; did you mean `{best}`?");
        }
        return message.to_string();
    }
    // humantime_serde reads only strings: a number gets "invalid type:
    // integer `120`, expected a duration" (a malformed string is an
    // "invalid value", already quoted, and needs no hint).
    if message.starts_with("invalid type: ") && message.ends_with("expected a duration") {
        let example = match message
            .strip_prefix("invalid type: integer `")
            .and_then(|m| m.split('`').next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) if n > 0 && n % 60 == 0 => format!("\"{n}s\" or \"{}m\"", n / 60),
            Some(n) => format!("\"{n}s\" or \"2m\""),
            None => "\"90s\" or \"2m\"".to_string(),
        };
        return format!("{message}: write it as a quoted string such as {example}");
    }
    message.to_string()
}

/// The known name closest to `typo`, if close enough to be a slip of the
/// fingers rather than a different key: at most 2 edits, or a third of the
/// name for long ones, and fewer edits than the typo has letters (else any
/// two-letter key would "suggest" every other).
fn nearest<'a>(typo: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let len = typo.chars().count();
    let (distance, best) = known
        .filter(|k| !k.is_empty())
        .map(|k| (edit_distance(typo, k), k))
        // The first of equally close names: serde lists them in the order
        // the struct declares them, the commonest first.
        .min_by_key(|(d, _)| *d)?;
    (distance < len && (distance <= 2 || distance * 3 <= len)).then_some(best)
}

/// Damerau-Levenshtein distance (optimal string alignment): insertions,
/// deletions, substitutions and swaps of two neighbours each cost 1, so
/// `tiemout` is as near `timeout` as `timout` is.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
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
                            // An error about the item itself (a missing key)
                            // is at its header: name the item, not the array.
                            if walk(inner, offset, path) || item.span().contains(&offset) {
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
