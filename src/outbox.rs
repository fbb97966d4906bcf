//! Delivering the alert outbox. A sweep queues each alert in the same
//! transaction as its finding; this module sends what is due, after the
//! finding's action has its outcome, and reschedules what failed with
//! exponential backoff and jitter. Rows live in the activity log, so a
//! crash or a restart loses nothing: whatever was queued is still queued.
//!
//! A round never takes much longer than its budget: no new attempt starts
//! once the budget is spent, and a sink that fails once is not tried again
//! in the same round, so a dead receiver costs one timeout per round.

use crate::activity::{About, ActivityLog, AlertEnd, DueAlert, StoredFinding, StoredInitiative};
use crate::alert::{deliver, next_step, Message, Payload, PAYLOAD_VERSION};
use crate::config::{Config, Sink};
use crate::model::{Action, Kind, Outcome};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Alerts read per query; a round reads again while it has budget.
const PAGE: usize = 100;

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub failed: usize,
    pub expired: usize,
    pub cancelled: usize,
    /// Due alerts left for the next round (budget spent, or their sink
    /// failed in this one).
    pub left: usize,
    /// Each attempt that was made or ended a row, by sink, for the metrics
    /// (`foreman_alert_deliveries_total`): the counts above say how many,
    /// not where.
    pub attempts: Vec<(String, Attempt)>,
}

/// How long a round may start new deliveries: a quarter of the interval,
/// between 1 and 30 seconds, so delivery never delays the next sweep.
pub fn budget(config: &Config) -> Duration {
    (config.interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// The wait before retry number `attempts` (1 = the first retry):
/// `retry_base · 2^(attempts-1)`, at most `retry_cap`, scaled by `jitter`
/// in [0, 1] into its upper half, so that alerts failed together spread
/// out instead of retrying in lockstep.
pub fn backoff(sink: &Sink, attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let full = sink
        .retry_base
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(sink.retry_cap)
        .min(sink.retry_cap);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs per alert, attempt and process.
fn jitter(alert: i64, attempts: i64) -> f64 {
    let h = RandomState::new().hash_one((alert, attempts, Utc::now().timestamp_nanos_opt()));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What one attempt on one outbox row came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Not delivered; retried after a backoff.
    Failed,
    Expired,
    Cancelled,
    /// Not tried now: its sink is not configured here, or its finding is not
    /// settled yet.
    Held,
}

/// Deliver every outbox row that is due, within `budget`.
pub fn deliver_due(config: &Config, log: &ActivityLog, budget: Duration) -> Result<Round> {
    let started = Instant::now();
    let mut round = Round::default();
    let mut failed_sinks: HashSet<String> = HashSet::new();
    let mut after = 0;
    loop {
        let due = log.due_alerts(Utc::now(), after, PAGE)?;
        if due.is_empty() {
            break;
        }
        for alert in due {
            after = alert.id;
            if started.elapsed() >= budget || failed_sinks.contains(&alert.sink) {
                round.left += 1;
                continue;
            }
            let sink = alert.sink.clone();
            let tried = attempt(config, log, &alert)?;
            if tried != Attempt::Held {
                round.attempts.push((sink.clone(), tried));
            }
            match tried {
                Attempt::Delivered => round.delivered += 1,
                Attempt::Failed => {
                    failed_sinks.insert(sink);
                    round.failed += 1;
                }
                Attempt::Expired => round.expired += 1,
                Attempt::Cancelled => round.cancelled += 1,
                Attempt::Held => round.left += 1,
            }
        }
    }
    Ok(round)
}

/// Which configured sink list a row's sink is looked up in.
fn sinks<'a>(config: &'a Config, about: &About) -> &'a [Sink] {
    match about {
        About::Finding(_) => &config.alerts,
        About::Initiative(_) => &config.wellbeing.sinks,
    }
}

/// How a row is named in log lines: "alert" or "initiative", and of what.
fn subject(a: &DueAlert) -> (&'static str, String) {
    match &a.about {
        About::Finding(f) => ("alert", format!("finding {} (task {})", f.id, f.task_id)),
        About::Initiative(i) => (
            "initiative",
            format!("{} (wellbeing run {})", i.id, i.run_id),
        ),
    }
}

/// One attempt on one queued row: deliver it, or expire, cancel or hold it,
/// and record what happened.
pub fn attempt(config: &Config, log: &ActivityLog, alert: &DueAlert) -> Result<Attempt> {
    let now = Utc::now();
    let (noun, what) = subject(alert);
    let Some(sink) = sinks(config, &alert.about)
        .iter()
        .find(|s| s.name == alert.sink)
    else {
        // Renamed, or a one-shot command run with another configuration:
        // kept until the sink is back or it is a day old, never dropped on
        // the spot.
        if now - alert.queued_at > chrono::Duration::days(1) {
            let why = format!("sink {:?} has not been configured for a day", alert.sink);
            error!(alert_id = alert.id, about = %what, "{noun} expired: {why}");
            log.alert_closed(alert.id, AlertEnd::Expired, now, Some(&why), false)?;
            return Ok(Attempt::Expired);
        }
        let why = format!("sink {:?} is not in this configuration", alert.sink);
        warn!(alert_id = alert.id, about = %what, "{noun} held: {why}");
        log.alert_hold(alert.id, now + chrono::Duration::hours(1), &why)?;
        return Ok(Attempt::Held);
    };
    let age = (now - alert.queued_at).to_std().unwrap_or_default();
    if age > sink.max_age {
        let why = format!(
            "not delivered within max_age {} ({} attempts)",
            humantime::format_duration(sink.max_age),
            alert.attempts
        );
        error!(alert_id = alert.id, sink = %sink.name, about = %what, "{noun} expired: {why}");
        log.alert_closed(alert.id, AlertEnd::Expired, now, Some(&why), false)?;
        return Ok(Attempt::Expired);
    }
    let message = match &alert.about {
        About::Finding(f) => {
            match f.outcome.as_str() {
                // Not acted on yet (a crash between commit and act): the
                // next sweep settles it, then the alert says how it ended.
                "pending" => return Ok(Attempt::Held),
                // The task ended by itself or recovered: nothing to
                // recover, unless Foreman signalled it on the way.
                "already_finished" | "cleared" if !log.finding_signalled(f.id)? => {
                    let why = format!("the finding ended {}: nothing to recover", f.outcome);
                    log.alert_closed(alert.id, AlertEnd::Cancelled, now, Some(&why), false)?;
                    return Ok(Attempt::Cancelled);
                }
                _ => {}
            }
            payload(config, alert.id, alert.queued_at, f)
                .map_err(|e| format!("{e:#}"))
                .and_then(|p| Message::alert(&p))
        }
        About::Initiative(i) => Ok(initiative_message(alert.id, i)),
    };
    let message = match message {
        Ok(m) => m,
        Err(why) => {
            // One unreadable row must not block the outbox.
            error!(alert_id = alert.id, about = %what, "{noun} cancelled: {why}");
            log.alert_closed(alert.id, AlertEnd::Cancelled, now, Some(&why), false)?;
            return Ok(Attempt::Cancelled);
        }
    };
    fail::fail_point!("outbox::before_deliver");
    // A crash from here on leaves the row to whoever comes after the lease.
    let lease = chrono::Duration::from_std(sink.timeout + Duration::from_secs(5))
        .unwrap_or(chrono::Duration::MAX);
    let at = Utc::now();
    if !log.alert_claim(alert.id, at, at + lease)? {
        return Ok(Attempt::Held);
    }
    match deliver(sink, &message) {
        Ok(()) => {
            info!(alert_id = alert.id, sink = %sink.name, attempts = alert.attempts + 1, about = %what, "{noun} delivered");
            log.alert_closed(alert.id, AlertEnd::Delivered, Utc::now(), None, true)?;
            Ok(Attempt::Delivered)
        }
        Err(why) => {
            let attempts = alert.attempts + 1;
            let wait = backoff(sink, attempts as u32, jitter(alert.id, attempts));
            let at = Utc::now();
            let next = at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            warn!(alert_id = alert.id, sink = %sink.name, attempts, retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)), error = %why, about = %what, "{noun} not delivered");
            log.alert_failed(alert.id, at, &why, next)?;
            // The sink's other rows wait for the same retry.
            log.alerts_hold_sink(&sink.name, next)?;
            Ok(Attempt::Failed)
        }
    }
}

/// An initiative as sinks get it: the JSON document, its Markdown for
/// commands' stdin and files, and `{run_id}`, `{title}`, `{severity}` for
/// commands' argv.
fn initiative_message(outbox_id: i64, i: &StoredInitiative) -> Message {
    let mut env = vec![
        ("FOREMAN_RUN_ID", i.run_id.clone()),
        ("FOREMAN_INITIATIVE_ID", i.id.to_string()),
    ];
    // The kernel refuses a single variable over 128 KiB (and the command
    // with it); the JSON is also on file in the activity log.
    if i.payload.len() <= ENV_JSON_LIMIT {
        env.push(("FOREMAN_INITIATIVE_JSON", i.payload.clone()));
    }
    Message {
        json: i.payload.clone().into_bytes(),
        idempotency_key: i.run_id.clone(),
        outbox_id,
        env,
        text: Some(i.body.clone()),
        fill: vec![
            ("run_id", i.run_id.clone()),
            ("title", i.title.clone()),
            ("severity", i.severity.clone()),
        ],
        file_name: format!("{}.md", i.run_id.replace(['/', '\\'], "_")),
    }
}

/// Below the kernel's limit for one environment string (128 KiB).
const ENV_JSON_LIMIT: usize = 120 * 1024;

/// A word the activity log stores as text (`kind`, `action`, `outcome`).
fn word<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .with_context(|| format!("unknown {what} {s:?} in the activity log"))
}

fn payload(
    config: &Config,
    alert_id: i64,
    queued_at: DateTime<Utc>,
    f: &StoredFinding,
) -> Result<Payload> {
    let kind: Kind = word("kind", &f.kind)?;
    let action: Action = word("action", &f.action)?;
    let outcome: Outcome = word("outcome", &f.outcome)?;
    let first_seen_at = DateTime::parse_from_rfc3339(&f.first_seen_at)
        .with_context(|| {
            format!(
                "bad first_seen_at {:?} in the activity log",
                f.first_seen_at
            )
        })?
        .with_timezone(&Utc);
    Ok(Payload {
        version: PAYLOAD_VERSION,
        finding_id: f.id,
        alert_id,
        task_id: f.task_id.clone(),
        attempt: f.attempt,
        plan_id: f.plan_id.clone(),
        droid_type: f.droid_type.clone(),
        host: f.host.clone().unwrap_or_else(|| config.host.clone()),
        pid: f.pid,
        kind,
        evidence: f.evidence.clone(),
        action,
        outcome,
        detail: f.detail.clone(),
        next_step: next_step(kind, outcome),
        first_seen_at,
        queued_at,
        foreman_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
