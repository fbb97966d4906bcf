//! The status page at `/` (`page`), and what it shows: twin's snapshot
//! (the same read as `GET /twin`) with what the activity log adds for
//! people: droids per type, the outbox, the latest wellbeing run and
//! review, the findings of the last 24 h (`chart`) and the latest
//! findings. Read-only, like twin: a page view never sweeps.

pub mod chart;
pub mod page;

use crate::activity::{ActivityLog, StoredFinding, FINDING_COLUMNS};
use crate::config::Config;
use crate::model::Kind;
use crate::twin::{self, Executing, Twin};
use anyhow::Result;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

/// Findings listed in the page's table, newest first.
pub const LATEST: usize = 50;

/// Everything the page shows, read at `generated_at`.
#[derive(Debug, Clone)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    pub twin: Twin,
    /// RUNNING tasks per droid type, with the ones needing a look.
    pub types: Vec<TypeRow>,
    /// The outbox by sink: what is waiting, and why.
    pub outbox: Vec<SinkRow>,
    pub wellbeing: Option<WellbeingRun>,
    pub review: Option<ReviewRun>,
    pub timeline: chart::Timeline,
    /// The latest `LATEST` findings, newest first.
    pub latest: Vec<StoredFinding>,
    /// The parts of the log that could not be read, and why: shown on the
    /// page in their place, so one damaged row costs its section only.
    pub unread: Vec<String>,
}

/// One droid type's RUNNING tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    pub droid_type: String,
    pub running: usize,
    /// Alive, but without progress for more than half the type's timeout:
    /// hung soon unless it moves.
    pub stale: usize,
    pub hung: usize,
    /// Past `max_runtime`.
    pub timed_out: usize,
    /// Dead, zombie, reused or orphaned and not marked yet.
    pub gone: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRow {
    pub sink: String,
    pub queued: i64,
    /// Queued alerts that have been tried and failed at least once.
    pub failing: i64,
    pub oldest_queued_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WellbeingRun {
    pub id: String,
    pub kind: String,
    pub started_at: String,
    pub outcome: String,
    pub issues: i64,
    /// The checks that found an issue: (subject · check, summary).
    pub problems: Vec<(String, String)>,
    pub initiative: Option<Initiative>,
}

#[derive(Debug, Clone)]
pub struct Initiative {
    pub id: i64,
    pub title: String,
    pub severity: String,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct ReviewRun {
    pub id: String,
    pub kind: String,
    pub started_at: String,
    pub passed: bool,
    pub checks: Vec<ReviewCheck>,
}

#[derive(Debug, Clone)]
pub struct ReviewCheck {
    pub name: String,
    /// pass, fail or skip.
    pub status: String,
    pub reason: String,
    pub duration_ms: i64,
}

/// The page's content now: twin's snapshot plus the activity log's
/// history. An unreachable executor is twin's UNKNOWN, not an error; a
/// part of the log that cannot be read is noted in `unread`, the rest
/// shown. `timeline`, when given, is a count made less than
/// `TIMELINE_FRESH` ago for the same hours: it is kept rather than counted
/// again (a day of findings is the costliest read here, and its hourly
/// bars barely move in seconds).
pub fn take(config: &Config, timeline: Option<chart::Timeline>) -> Result<Status> {
    let twin = twin::take(config, config.twin.window)?;
    let now = Utc::now();
    let log = ActivityLog::open_read_only(&config.activity.path)?;
    let mut status = Status {
        generated_at: now,
        types: by_type(&twin.executing, config),
        twin,
        outbox: Vec::new(),
        wellbeing: None,
        review: None,
        timeline: chart::fold(chart::window_start(now), chart::BUCKETS, []),
        latest: Vec::new(),
        unread: Vec::new(),
    };
    let Some(log) = &log else {
        return Ok(status);
    };
    let conn = log.conn();
    let mut unread = Vec::new();
    let mut part = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            unread.push(format!("{what}: {e:#}"));
        }
    };
    part("the outbox", outbox(conn).map(|o| status.outbox = o));
    part(
        "the latest wellbeing run",
        wellbeing(conn).map(|w| status.wellbeing = w),
    );
    part("the latest review", review(conn).map(|r| status.review = r));
    match timeline.filter(|t| t.start == chart::window_start(now)) {
        Some(t) => status.timeline = t,
        None => part(
            "the day's findings",
            chart::timeline(conn, now).map(|t| status.timeline = t),
        ),
    }
    part(
        "the latest findings",
        latest(conn, LATEST).map(|l| status.latest = l),
    );
    status.unread = unread;
    Ok(status)
}

/// How long a count of the day's findings is kept between reads.
pub const TIMELINE_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Counts per droid type, in type order. A task is stale when alive with
/// no progress for more than half its type's timeout: the early warning
/// an operator wants before the sweep calls it hung.
pub fn by_type(executing: &[Executing], config: &Config) -> Vec<TypeRow> {
    let mut rows: BTreeMap<&str, TypeRow> = BTreeMap::new();
    for e in executing {
        let row = rows.entry(&e.droid_type).or_insert_with(|| TypeRow {
            droid_type: e.droid_type.clone(),
            running: 0,
            stale: 0,
            hung: 0,
            timed_out: 0,
            gone: 0,
        });
        row.running += 1;
        match e.verdict {
            Kind::Alive if stale(e, config) => row.stale += 1,
            Kind::Hung => row.hung += 1,
            Kind::TimedOut => row.timed_out += 1,
            k if k.is_gone() => row.gone += 1,
            _ => {}
        }
    }
    rows.into_values().collect()
}

/// No progress for more than half the type's timeout.
pub fn stale(e: &Executing, config: &Config) -> bool {
    let half = config.policy(&e.droid_type).timeout.as_millis() / 2;
    e.since_progress_ms
        .is_some_and(|ms| u128::try_from(ms).is_ok_and(|ms| ms > half))
}

fn outbox(conn: &Connection) -> Result<Vec<SinkRow>> {
    let mut stmt = conn.prepare(
        "SELECT sink, COUNT(*), SUM(attempts > 0), MIN(queued_at),
                (SELECT a2.last_error FROM alerts a2
                  WHERE a2.sink = a.sink AND a2.state = 'queued' AND a2.last_error IS NOT NULL
                  ORDER BY a2.last_attempt_at DESC LIMIT 1)
         FROM alerts a WHERE state = 'queued' GROUP BY sink ORDER BY sink",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SinkRow {
            sink: r.get(0)?,
            queued: r.get(1)?,
            failing: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            oldest_queued_at: r.get(3)?,
            last_error: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn wellbeing(conn: &Connection) -> Result<Option<WellbeingRun>> {
    let run = conn
        .query_row(
            "SELECT id, kind, started_at, outcome, issues, checks FROM wellbeing_runs
             ORDER BY started_at DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    WellbeingRun {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        started_at: r.get(2)?,
                        outcome: r.get(3)?,
                        issues: r.get(4)?,
                        problems: Vec::new(),
                        initiative: None,
                    },
                    r.get::<_, String>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((mut run, checks)) = run else {
        return Ok(None);
    };
    // The checks as kept; a run written by another version that does not
    // parse still shows its outcome.
    if let Ok(serde_json::Value::Array(checks)) = serde_json::from_str(&checks) {
        let text = |c: &serde_json::Value, k: &str| {
            c.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        run.problems = checks
            .iter()
            .filter(|c| c.get("status").and_then(|s| s.as_str()) == Some("issue"))
            .map(|c| {
                (
                    format!("{} · {}", subject(c), text(c, "check")),
                    text(c, "summary"),
                )
            })
            .collect();
    }
    run.initiative = conn
        .query_row(
            "SELECT id, title, severity, created_at FROM initiatives WHERE run_id = ?1",
            [&run.id],
            |r| {
                Ok(Initiative {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    severity: r.get(2)?,
                    created_at: r.get(3)?,
                })
            },
        )
        .optional()?;
    Ok(Some(run))
}

/// A wellbeing check's subject as the run printed it, from the JSON it
/// was kept as (`{"scope": "droid_type", "name": "builder"}`).
fn subject(check: &serde_json::Value) -> String {
    serde_json::from_value::<crate::wellbeing::assess::Subject>(check["subject"].clone())
        .map_or_else(|_| "?".into(), |s| s.label())
}

fn review(conn: &Connection) -> Result<Option<ReviewRun>> {
    let run = conn
        .query_row(
            "SELECT id, kind, started_at, passed FROM review_runs ORDER BY finished_at DESC LIMIT 1",
            [],
            |r| {
                Ok(ReviewRun {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    started_at: r.get(2)?,
                    passed: r.get(3)?,
                    checks: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut run) = run else { return Ok(None) };
    // Failures first: they are what the reader came for.
    let mut stmt = conn.prepare(
        "SELECT name, status, reason, duration_ms FROM review_checks WHERE run_id = ?1
         ORDER BY CASE status WHEN 'fail' THEN 0 WHEN 'skip' THEN 1 ELSE 2 END, name",
    )?;
    run.checks = stmt
        .query_map([&run.id], |r| {
            Ok(ReviewCheck {
                name: r.get(0)?,
                status: r.get(1)?,
                reason: r.get(2)?,
                duration_ms: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(run))
}

/// The newest `n` findings by id (ids are given in the order findings are
/// first seen). Evidence that is not JSON (a row damaged by hand) is read
/// as a reason saying so, rather than failing the list.
fn latest(conn: &Connection, n: usize) -> Result<Vec<StoredFinding>> {
    let columns = FINDING_COLUMNS.replacen(
        "f.evidence,",
        "CASE WHEN json_valid(f.evidence) THEN f.evidence \
         ELSE '{\"reason\": \"(the evidence kept for this finding is not valid JSON)\"}' END,",
        1,
    );
    let mut stmt = conn.prepare(&format!(
        "SELECT {columns} FROM findings f ORDER BY f.id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([i64::try_from(n).unwrap_or(i64::MAX)], |r| {
        StoredFinding::read(r, 0)
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
