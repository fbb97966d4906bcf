//! What the wellbeing sweep reads from and writes to the activity log:
//! Foreman's own history (findings, sweeps, the outbox, the latest review)
//! and the compare-and-set that records a run and files its initiative.

use super::assess::{FindingFact, OutboxFact, ReviewFact, SweepFact, SweepFacts};
use crate::activity::{ts, ActivityLog};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

fn parse(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
}

/// Findings of the kinds that mean a droid failed Foreman's checks, first
/// seen since `since`.
pub fn findings(conn: &Connection, since: DateTime<Utc>) -> Result<Vec<FindingFact>> {
    let mut stmt = conn.prepare(
        "SELECT id, droid_type, kind, task_id, first_seen_at FROM findings
         WHERE last_seen_at >= ?1 AND first_seen_at >= ?1
           AND kind IN ('dead', 'hung', 'timed_out', 'zombie', 'pid_reused', 'orphan')
           -- Withdrawn: the task finished by itself, or recovered.
           AND outcome NOT IN ('already_finished', 'cleared')
         ORDER BY id",
    )?;
    let rows = stmt.query_map([ts(since)], |r| {
        Ok(FindingFact {
            id: r.get(0)?,
            droid_type: r.get(1)?,
            kind: r.get(2)?,
            task_id: r.get(3)?,
            first_seen_at: parse(&r.get::<_, String>(4)?)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn sweeps(conn: &Connection, since: DateTime<Utc>) -> Result<SweepFacts> {
    let mut stmt = conn.prepare(
        "SELECT id, started_at, error, action_errors FROM sweeps WHERE started_at >= ?1 AND kind NOT IN ('event', 'fleet') ORDER BY started_at",
    )?;
    let in_window = stmt
        .query_map([ts(since)], |r| {
            Ok(SweepFact {
                id: r.get(0)?,
                started_at: parse(&r.get::<_, String>(1)?)?,
                error: r.get(2)?,
                action_errors: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let before: Option<String> = conn.query_row(
        "SELECT MAX(started_at) FROM sweeps WHERE started_at < ?1 AND kind NOT IN ('event', 'fleet')",
        [ts(since)],
        |r| r.get(0),
    )?;
    Ok(SweepFacts {
        in_window,
        before_window: before.as_deref().map(parse).transpose()?,
    })
}

/// Every outbox row still queued, and those that expired undelivered
/// since `since`.
pub fn outbox(conn: &Connection, since: DateTime<Utc>) -> Result<Vec<OutboxFact>> {
    let mut stmt = conn.prepare(
        "SELECT id, sink, queued_at, attempts, last_error, finding_id, initiative_id,
                CASE WHEN state = 'expired' THEN closed_at END
         FROM alerts
         WHERE state = 'queued' OR (state = 'expired' AND closed_at >= ?1) ORDER BY id",
    )?;
    let rows = stmt.query_map([ts(since)], |r| {
        let about = match (r.get::<_, Option<i64>>(5)?, r.get::<_, Option<i64>>(6)?) {
            (Some(f), _) => format!("finding {f}"),
            (None, Some(i)) => format!("initiative {i}"),
            (None, None) => "nothing".into(),
        };
        Ok(OutboxFact {
            id: r.get(0)?,
            sink: r.get(1)?,
            queued_at: parse(&r.get::<_, String>(2)?)?,
            attempts: r.get(3)?,
            last_error: r.get(4)?,
            about,
            expired_at: r
                .get::<_, Option<String>>(7)?
                .as_deref()
                .map(parse)
                .transpose()?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The latest `foreman review`, if the log has reviews (`review_runs`:
/// `id`, `finished_at`, `passed`; `review_checks`: `run_id`, `name`,
/// `status`).
pub fn review(conn: &Connection) -> Result<Option<ReviewFact>> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'review_runs')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(None);
    }
    let latest = conn
        .query_row(
            "SELECT id, finished_at, passed FROM review_runs WHERE finished_at IS NOT NULL
             ORDER BY finished_at DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, rusqlite::types::Value>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            },
        )
        .optional()
        .context("reading the latest review")?;
    let Some((id, at, passed)) = latest else {
        return Ok(None);
    };
    let failed = conn
        .prepare(
            "SELECT name FROM review_checks WHERE run_id = ?1 AND status = 'fail' ORDER BY name",
        )
        .and_then(|mut s| {
            s.query_map([&id], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("reading the latest review's failed checks")?;
    let id = match id {
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Text(t) => t,
        other => format!("{other:?}"),
    };
    Ok(Some(ReviewFact {
        id,
        at: parse(&at)?,
        passed,
        failed,
    }))
}

/// A recorded run of the same id.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub started_at: String,
    pub initiative_id: Option<i64>,
}

pub fn recorded(conn: &Connection, run_id: &str) -> Result<Option<Recorded>> {
    Ok(conn
        .query_row(
            "SELECT r.started_at, i.id FROM wellbeing_runs r LEFT JOIN initiatives i ON i.run_id = r.id
             WHERE r.id = ?1",
            [run_id],
            |r| {
                Ok(Recorded {
                    started_at: r.get(0)?,
                    initiative_id: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// The latest slot a scheduled (or catch-up) run was recorded for.
pub fn last_slot(conn: &Connection) -> Result<Option<DateTime<Utc>>> {
    let t: Option<String> =
        conn.query_row("SELECT MAX(slot_at) FROM wellbeing_runs", [], |r| r.get(0))?;
    Ok(t.as_deref().map(parse).transpose()?)
}

/// Whether Foreman swept here before `t`: it was deployed, so a slot at
/// `t` without a run was missed.
pub fn swept_before(conn: &Connection, t: DateTime<Utc>) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sweeps WHERE started_at < ?1)",
        [ts(t)],
        |r| r.get(0),
    )?)
}

/// One run to record.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub host: &'a str,
    pub slot_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub issues: usize,
    pub checks: &'a serde_json::Value,
    pub initiative: Option<NewInitiative<'a>>,
}

pub struct NewInitiative<'a> {
    pub title: &'a str,
    pub severity: &'a str,
    pub body: &'a str,
    pub payload: &'a serde_json::Value,
    /// The `[[wellbeing.sinks]]` to queue it for.
    pub sinks: Vec<&'a str>,
}

/// What recording did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded now; the initiative's id when it filed one.
    Recorded { initiative_id: Option<i64> },
    /// A run with this id was recorded before: nothing written.
    AlreadyRecorded {
        started_at: String,
        initiative_id: Option<i64>,
    },
}

/// The compare-and-set: the run, its initiative and the initiative's outbox
/// rows in one transaction, only if no run has this id. A crash before the
/// commit leaves nothing (the slot runs again); after it, everything, and
/// the outbox delivers what is queued.
pub fn record(log: &ActivityLog, run: &NewRun<'_>) -> Result<Outcome> {
    write(log, run).with_context(|| format!("recording wellbeing run {}", run.id))
}

fn write(log: &ActivityLog, run: &NewRun<'_>) -> Result<Outcome> {
    let conn = log.conn();
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .context("starting the wellbeing run's transaction")?;
    let inserted = tx.execute(
        "INSERT INTO wellbeing_runs (id, kind, host, slot_at, started_at, finished_at, window_start, outcome, issues, checks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
        params![
            run.id,
            run.kind,
            run.host,
            run.slot_at.map(ts),
            ts(run.started_at),
            ts(run.finished_at),
            ts(run.window_start),
            if run.issues > 0 { "issues" } else { "healthy" },
            run.issues as i64,
            run.checks.to_string(),
        ],
    )?;
    if inserted == 0 {
        let before = recorded(&tx, run.id)?.context("the run vanished while being recorded")?;
        return Ok(Outcome::AlreadyRecorded {
            started_at: before.started_at,
            initiative_id: before.initiative_id,
        });
    }
    let mut initiative_id = None;
    if let Some(i) = &run.initiative {
        tx.execute(
            "INSERT INTO initiatives (run_id, created_at, title, severity, body, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run.id,
                ts(run.finished_at),
                i.title,
                i.severity,
                i.body,
                i.payload.to_string()
            ],
        )?;
        let id = tx.last_insert_rowid();
        for sink in &i.sinks {
            tx.execute(
                "INSERT INTO alerts (initiative_id, sink, state, queued_at, next_attempt_at)
                 VALUES (?1, ?2, 'queued', ?3, ?3)",
                params![id, sink, ts(run.finished_at)],
            )?;
        }
        initiative_id = Some(id);
    }
    tx.commit()?;
    Ok(Outcome::Recorded { initiative_id })
}
