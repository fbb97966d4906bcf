//! `foreman review`: a self-test that proves Foreman's detection still
//! works, by running the real sweep and startup-scan code (with a judge
//! passed in: the real one, except in the review's own tests) against
//! sandboxes of real processes (`sandbox.rs`), or read-only checks of the
//! real deployment (facts gathered in `facts.rs`, judged in `live.rs`).
//! Each check is pass, fail or skip, with a reason, the evidence on
//! failure, and its duration; every run is recorded in the activity log
//! (`review_runs`, `review_checks`).

pub mod facts;
pub mod live;
pub mod sandbox;

use crate::activity::{ts, ActivityLog};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable: scripts and `--only` use it.
    pub name: String,
    pub status: Status,
    pub reason: String,
    /// On failure: what was expected and what Foreman said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
    pub duration_ms: u64,
}

impl CheckResult {
    pub fn pass(name: &str, reason: impl Into<String>) -> CheckResult {
        CheckResult::new(name, Status::Pass, reason.into(), None)
    }

    pub fn fail(name: &str, reason: impl Into<String>, evidence: Value) -> CheckResult {
        CheckResult::new(name, Status::Fail, reason.into(), Some(evidence))
    }

    pub fn skip(name: &str, reason: impl Into<String>) -> CheckResult {
        CheckResult::new(name, Status::Skip, reason.into(), None)
    }

    fn new(name: &str, status: Status, reason: String, evidence: Option<Value>) -> CheckResult {
        CheckResult {
            name: name.to_string(),
            status,
            reason,
            evidence,
            duration_ms: 0,
        }
    }

    pub fn took(mut self, since: std::time::Instant) -> CheckResult {
        self.duration_ms = since.elapsed().as_millis() as u64;
        self
    }
}

/// One review run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    /// sandbox | live
    pub kind: &'static str,
    pub passed: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn new(kind: &'static str, started_at: DateTime<Utc>, checks: Vec<CheckResult>) -> Report {
        Report {
            run_id: format!(
                "review-{}-{}",
                started_at.format("%Y%m%dT%H%M%S%.3fZ"),
                std::process::id()
            ),
            kind,
            passed: checks.iter().all(|c| c.status != Status::Fail),
            started_at,
            finished_at: Utc::now(),
            checks,
        }
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// Record a run and its checks in one transaction.
pub fn record(log: &ActivityLog, host: &str, r: &Report) -> Result<()> {
    let tx = log
        .conn()
        .unchecked_transaction()
        .context("starting the review's transaction")?;
    tx.execute(
        "INSERT INTO review_runs (id, kind, host, started_at, finished_at, passed, failed, skipped)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.run_id,
            r.kind,
            host,
            ts(r.started_at),
            ts(r.finished_at),
            r.passed,
            r.count(Status::Fail) as i64,
            r.count(Status::Skip) as i64
        ],
    )?;
    for c in &r.checks {
        tx.execute(
            "INSERT INTO review_checks (run_id, name, status, reason, evidence, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.run_id,
                c.name,
                c.status.as_str(),
                c.reason,
                c.evidence.as_ref().map(Value::to_string),
                c.duration_ms as i64
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A run for people: one line per check, the evidence of failures, a
/// verdict line.
pub fn text(r: &Report) -> String {
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in &r.checks {
        let mark = match c.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!(
            "{mark}  {:<width$}  {:>6} ms  {}\n",
            c.name, c.duration_ms, c.reason
        ));
        if let (Status::Fail, Some(e)) = (c.status, &c.evidence) {
            let e = serde_json::to_string_pretty(e).unwrap_or_else(|e| e.to_string());
            for line in e.lines() {
                out.push_str(&format!("        {line}\n"));
            }
        }
    }
    let secs = (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0;
    out.push_str(&format!(
        "\n{} ({} review {}): {} passed, {} failed, {} skipped in {secs:.1} s\n",
        if r.passed { "PASSED" } else { "FAILED" },
        r.kind,
        r.run_id,
        r.count(Status::Pass),
        r.count(Status::Fail),
        r.count(Status::Skip),
    ));
    out
}

/// GET the dead-man's switch; any 2xx is a ping. The error names the host
/// only (such URLs carry their secret in the path).
pub fn ping(url: &str, timeout: std::time::Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_else(|| "the ping_url host".into());
    match agent.get(url).call() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{host} answered HTTP {}", r.status().as_u16())),
        Err(e) => Err(format!("{host}: {e}")),
    }
}
