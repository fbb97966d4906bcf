//! Delivering the alert outbox. A sweep queues each alert in the same
//! transaction as its finding; this module sends what is due, after the
//! finding's action has its outcome, and reschedules what failed with
//! exponential backoff and jitter. Rows live in the activity log, so a
//! crash or a restart loses nothing: whatever was queued is still queued.
//!
//! A round never takes much longer than its budget: no new attempt starts
//! once the budget is spent, and a sink that fails once is not tried again
//! in the same round, so a dead receiver costs one timeout per round.

use crate::activity::{ActivityLog, AlertEnd, DueAlert};
use crate::alert::{deliver, next_step, Payload, PAYLOAD_VERSION};
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

/// Deliver every alert that is due, within `budget`.
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
            let now = Utc::now();
            let Some(sink) = config.alerts.iter().find(|s| s.name == alert.sink) else {
                // Renamed, or a one-shot command run with another
                // configuration: kept until the sink is back or it is a day
                // old, never dropped on the spot.
                if now - alert.queued_at > chrono::Duration::days(1) {
                    let why = format!("sink {:?} has not been configured for a day", alert.sink);
                    error!(alert_id = alert.id, finding_id = alert.finding.id, task_id = %alert.finding.task_id, "alert expired: {why}");
                    log.alert_closed(alert.id, AlertEnd::Expired, now, Some(&why), false)?;
                    round.expired += 1;
                } else {
                    let why = format!("sink {:?} is not in this configuration", alert.sink);
                    warn!(
                        alert_id = alert.id,
                        finding_id = alert.finding.id,
                        "alert held: {why}"
                    );
                    log.alert_hold(alert.id, now + chrono::Duration::hours(1), &why)?;
                    round.left += 1;
                }
                continue;
            };
            let age = (now - alert.queued_at).to_std().unwrap_or_default();
            if age > sink.max_age {
                let why = format!(
                    "not delivered within max_age {} ({} attempts)",
                    humantime::format_duration(sink.max_age),
                    alert.attempts
                );
                error!(alert_id = alert.id, finding_id = alert.finding.id, task_id = %alert.finding.task_id, sink = %sink.name, "alert expired: {why}");
                log.alert_closed(alert.id, AlertEnd::Expired, now, Some(&why), false)?;
                round.expired += 1;
                continue;
            }
            match alert.finding.outcome.as_str() {
                // Not acted on yet (a crash between commit and act): the
                // next sweep settles it, then the alert says how it ended.
                "pending" => continue,
                // The task ended by itself or recovered: nothing to
                // recover, unless Foreman signalled it on the way.
                "already_finished" | "cleared" if !log.finding_signalled(alert.finding.id)? => {
                    let why = format!(
                        "the finding ended {}: nothing to recover",
                        alert.finding.outcome
                    );
                    log.alert_closed(alert.id, AlertEnd::Cancelled, now, Some(&why), false)?;
                    round.cancelled += 1;
                    continue;
                }
                _ => {}
            }
            let payload = match payload(config, &alert) {
                Ok(p) => p,
                Err(e) => {
                    // One unreadable row must not block the outbox.
                    let why = format!("{e:#}");
                    error!(
                        alert_id = alert.id,
                        finding_id = alert.finding.id,
                        "alert cancelled: {why}"
                    );
                    log.alert_closed(alert.id, AlertEnd::Cancelled, now, Some(&why), false)?;
                    round.cancelled += 1;
                    continue;
                }
            };
            fail::fail_point!("outbox::before_deliver");
            match deliver(sink, &payload) {
                Ok(()) => {
                    info!(alert_id = alert.id, finding_id = alert.finding.id, task_id = %alert.finding.task_id, sink = %sink.name, attempts = alert.attempts + 1, "alert delivered");
                    log.alert_closed(alert.id, AlertEnd::Delivered, Utc::now(), None, true)?;
                    round.delivered += 1;
                }
                Err(why) => {
                    let attempts = alert.attempts + 1;
                    let wait = backoff(sink, attempts as u32, jitter(alert.id, attempts));
                    let at = Utc::now();
                    let next =
                        at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    warn!(alert_id = alert.id, finding_id = alert.finding.id, task_id = %alert.finding.task_id, sink = %sink.name, attempts, retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)), error = %why, "alert not delivered");
                    log.alert_failed(alert.id, at, &why, next)?;
                    // The sink's other alerts wait for the same retry.
                    log.alerts_hold_sink(&sink.name, next)?;
                    failed_sinks.insert(sink.name.clone());
                    round.failed += 1;
                }
            }
        }
    }
    Ok(round)
}

/// A word the activity log stores as text (`kind`, `action`, `outcome`).
fn word<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .with_context(|| format!("unknown {what} {s:?} in the activity log"))
}

fn payload(config: &Config, a: &DueAlert) -> Result<Payload> {
    let f = &a.finding;
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
        alert_id: a.id,
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
        queued_at: a.queued_at,
        foreman_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
