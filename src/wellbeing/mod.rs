//! The wellbeing sweep: once a day (and on demand) check that every droid
//! type is enabled, active and performing, that no work is stuck between
//! stages, and that Foreman itself is sweeping and delivering; record the
//! run, and file exactly one initiative when something is wrong. It
//! escalates; it never acts on a task.
//!
//! gather (executor history + activity log) → assess (pure) → compose the
//! initiative → record (compare-and-set on the run id) → the outbox delivers.

pub mod assess;
pub mod initiative;
pub mod show;
pub mod store;

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::executor::Executor;
use crate::model::Row;
use crate::outbox;
use anyhow::{Context, Result};
use assess::{Check, ExecutorFacts, Facts, SweepFacts};
use chrono::{DateTime, Utc};
use initiative::{Initiative, RunHeader};
use serde::Serialize;
use std::time::Duration;

/// Which run this is. A scheduled run is known by its slot, so the slot is
/// filed once whoever runs it; a manual run has an id of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub id: String,
    pub kind: RunKind,
    pub slot: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Scheduled,
    /// The slot the daemon missed while it was down, run at startup.
    CatchUp,
    Manual,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Scheduled => "scheduled",
            RunKind::CatchUp => "catch_up",
            RunKind::Manual => "manual",
        }
    }
}

impl RunId {
    pub fn slot(config: &Config, slot: DateTime<Utc>, kind: RunKind) -> RunId {
        RunId {
            id: config.wellbeing.schedule.slot_id(slot),
            kind,
            slot: Some(slot),
        }
    }

    /// Unique per process and millisecond, and never a slot id.
    pub fn manual(now: DateTime<Utc>) -> RunId {
        RunId {
            id: format!(
                "manual-{}-{}",
                now.format("%Y%m%dT%H%M%S%.3fZ"),
                std::process::id()
            ),
            kind: RunKind::Manual,
            slot: None,
        }
    }
}

/// One run: its checks, and what it filed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub kind: RunKind,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    /// healthy | issues
    pub outcome: &'static str,
    pub issues: usize,
    pub checks: Vec<Check>,
    pub initiative: Option<Initiative>,
    pub filed: Filed,
}

/// What became of the run's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Filed {
    /// Recorded; `initiative_id` when it filed one.
    Recorded { initiative_id: Option<i64> },
    /// This run id was recorded before (the same slot): nothing filed now.
    AlreadyRecorded {
        started_at: String,
        initiative_id: Option<i64>,
    },
    /// `--dry-run`: nothing recorded.
    DryRun,
}

/// The longest look back any check needs.
fn history_window(config: &Config) -> Duration {
    let w = &config.wellbeing;
    w.droid_types
        .values()
        .map(|l| l.active_within)
        .chain([w.limits.active_within, w.plan_stall_timeout])
        .max()
        .unwrap_or(w.limits.active_within)
}

/// Gather the facts at `now`. An unreachable executor is a fact (an issue),
/// not an error; `log` is `None` when there is no activity log yet.
pub fn gather(
    config: &Config,
    executor: &dyn Executor,
    log: Option<&ActivityLog>,
    now: DateTime<Utc>,
) -> Result<Facts> {
    let window_start = assess::ago(now, config.wellbeing.limits.active_within);
    let executor = executor
        .history(history_window(config))
        .map(|h| {
            let mut ex = ExecutorFacts {
                droid_types: h.droid_types,
                ..ExecutorFacts::default()
            };
            for row in h.snapshot.rows {
                match row {
                    Row::Task(t) => ex.tasks.push(t),
                    Row::Bad(b) => ex.bad_rows.push(b),
                }
            }
            ex
        })
        .map_err(|e| format!("{e:#}"));
    let longest = assess::ago(now, history_window(config));
    let (findings, sweeps, outbox, review) = match log {
        Some(log) => {
            // One read transaction: the log's facts are of one moment. It
            // ends when dropped, also on an error: the daemon's connection
            // must not be left inside it.
            let tx = log.conn().unchecked_transaction()?;
            (
                store::findings(&tx, longest).context("reading findings")?,
                store::sweeps(&tx, window_start).context("reading sweeps")?,
                store::outbox(&tx, window_start).context("reading the outbox")?,
                store::review(&tx)?,
            )
        }
        None => (Vec::new(), SweepFacts::default(), Vec::new(), None),
    };
    Ok(Facts {
        now,
        host: config.host.clone(),
        interval: config.interval,
        executor,
        configured: config
            .droid_types
            .iter()
            .map(|(name, p)| (name.clone(), p.enabled))
            .collect(),
        default_enabled: config.defaults.enabled,
        findings,
        sweeps,
        outbox,
        review,
    })
}

/// Gather, assess and compose, recording nothing.
pub fn assess_now(
    config: &Config,
    executor: &dyn Executor,
    log: Option<&ActivityLog>,
    run: &RunId,
) -> Result<Report> {
    let started_at = Utc::now();
    let facts = gather(config, executor, log, started_at)?;
    let checks = assess::assess(&facts, &config.wellbeing);
    let window_start = assess::ago(started_at, config.wellbeing.limits.active_within);
    let header = RunHeader {
        run_id: run.id.clone(),
        kind: run.kind.as_str(),
        host: config.host.clone(),
        started_at,
        window_start,
    };
    let initiative = initiative::compose(&header, &checks);
    let issues = checks.iter().filter(|c| c.is_issue()).count();
    Ok(Report {
        run_id: run.id.clone(),
        kind: run.kind,
        host: config.host.clone(),
        started_at,
        finished_at: Utc::now(),
        window_start,
        outcome: if issues > 0 { "issues" } else { "healthy" },
        issues,
        checks,
        initiative,
        filed: Filed::DryRun,
    })
}

/// Run and record: the slot (or manual id) is filed at most once. A run id
/// recorded before is not assessed again.
pub fn run(
    config: &Config,
    executor: &dyn Executor,
    log: &ActivityLog,
    run: &RunId,
) -> Result<Report> {
    if let Some(before) = store::recorded(log.conn(), &run.id)? {
        return Ok(already(
            config,
            run,
            before.started_at,
            before.initiative_id,
        ));
    }
    let mut report = assess_now(config, executor, Some(log), run)?;
    let checks = serde_json::to_value(&report.checks).context("encoding the checks")?;
    let new = store::NewRun {
        id: &run.id,
        kind: run.kind.as_str(),
        host: &config.host,
        slot_at: run.slot,
        started_at: report.started_at,
        finished_at: report.finished_at,
        window_start: report.window_start,
        issues: report.issues,
        checks: &checks,
        initiative: report.initiative.as_ref().map(|i| store::NewInitiative {
            title: &i.title,
            severity: i.severity.as_str(),
            body: &i.body,
            payload: &i.payload,
            sinks: config
                .wellbeing
                .sinks
                .iter()
                .map(|s| s.name.as_str())
                .collect(),
        }),
    };
    report.filed = match store::record(log, &new)? {
        store::Outcome::Recorded { initiative_id } => Filed::Recorded { initiative_id },
        // Another process recorded the slot between our check and our
        // write: its record stands, ours is dropped, and this run reports
        // what any run of a recorded slot reports.
        store::Outcome::AlreadyRecorded {
            started_at,
            initiative_id,
        } => return Ok(already(config, run, started_at, initiative_id)),
    };
    fail::fail_point!("wellbeing::after_record");
    Ok(report)
}

/// The report of a run whose id was recorded before: nothing assessed or
/// filed by this one.
fn already(config: &Config, run: &RunId, started_at: String, initiative_id: Option<i64>) -> Report {
    let now = Utc::now();
    Report {
        run_id: run.id.clone(),
        kind: run.kind,
        host: config.host.clone(),
        started_at: now,
        finished_at: now,
        window_start: now,
        outcome: "already_recorded",
        issues: 0,
        checks: Vec::new(),
        initiative: None,
        filed: Filed::AlreadyRecorded {
            started_at,
            initiative_id,
        },
    }
}

/// Deliver one initiative's queued rows now (the on-demand command), each
/// claimed first so a daemon delivering beside it never sends one twice.
pub fn deliver(config: &Config, log: &ActivityLog, initiative_id: i64) -> Result<Delivery> {
    let mut d = Delivery::default();
    for row in log.initiative_alerts(initiative_id)? {
        match outbox::attempt(config, log, &row)? {
            outbox::Attempt::Delivered => d.delivered.push(row.sink),
            outbox::Attempt::Failed => d.failed.push(row.sink),
            _ => d.queued.push(row.sink),
        }
    }
    Ok(d)
}

/// Where an initiative went, by sink name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    pub delivered: Vec<String>,
    /// Tried and failed: retried by the daemon.
    pub failed: Vec<String>,
    /// Not tried now (another process holds it, or it is not due).
    pub queued: Vec<String>,
}

/// The slot to catch up at startup, if the daemon missed one: the latest
/// slot at or before `now` has no run, and Foreman was already sweeping
/// before it (a first start is not a missed run). One slot, never several.
pub fn missed_slot(
    config: &Config,
    log: &ActivityLog,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let Some(latest) = config.wellbeing.schedule.latest_at_or_before(now) else {
        return Ok(None);
    };
    let conn = log.conn();
    if store::last_slot(conn)?.is_some_and(|last| last >= latest) {
        return Ok(None);
    }
    if !store::swept_before(conn, latest)? {
        return Ok(None);
    }
    if store::recorded(conn, &config.wellbeing.schedule.slot_id(latest))?.is_some() {
        return Ok(None);
    }
    Ok(Some(latest))
}
