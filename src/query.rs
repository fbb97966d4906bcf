//! `foreman log`: the activity log, queried. Findings (or sweeps) oldest
//! first, so the newest is last as in `tail`; filters combine with AND.
//! Read-only: safe beside a running daemon.

use crate::activity::{ts, ActivityLog, StoredFinding, FINDING_COLUMNS};
use crate::model::Kind;
use anyhow::Result;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as Sql;
use serde::Serialize;
use serde_json::Value;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<DateTime<Utc>>,
    pub kinds: Vec<Kind>,
    pub task: Option<String>,
    pub droid_type: Option<String>,
}

/// `--since`: a duration back from `now` or an RFC 3339 time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        let d = chrono::Duration::from_std(d).map_err(|_| format!("{text:?} is too long ago"))?;
        return now
            .checked_sub_signed(d)
            .ok_or_else(|| format!("{text:?} is too long ago"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("--since {text:?} is neither a duration (\"1h\", \"2days\") nor an RFC 3339 time (\"2026-11-23T06:00:00Z\")")
        })
}

/// `--kind`: a finding kind by its name.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    serde_json::from_value::<Kind>(Value::String(text.to_string()))
        .ok()
        .filter(|k| *k != Kind::Alive)
        .ok_or_else(|| {
            format!("--kind {text:?} is not a kind of finding; give dead, zombie, pid_reused, hung, timed_out, orphan, unverifiable or stray")
        })
}

/// One line of `log --json`: the finding as kept, with its reason lifted
/// out of the evidence for `jq` and `grep`.
#[derive(Debug, Clone, Serialize)]
pub struct FindingLine {
    #[serde(flatten)]
    pub finding: StoredFinding,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepLine {
    pub id: i64,
    pub kind: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub tasks_seen: i64,
    pub tasks_checked: i64,
    pub findings: i64,
    pub actions: i64,
    pub action_errors: i64,
    pub error: Option<String>,
    pub deferral: Option<String>,
}

/// Findings matching `f` with an id above `after`, oldest first.
pub fn findings(log: &ActivityLog, f: &Filter, after: i64) -> Result<Vec<FindingLine>> {
    let mut sql = format!("SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id > ?1");
    let mut args: Vec<Sql> = vec![Sql::Integer(after)];
    let mut arg = |sql: &mut String, clause: &str, v: Sql| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(t) = f.since {
        arg(&mut sql, " AND f.last_seen_at >= ?", Sql::Text(ts(t)));
    }
    if let Some(t) = &f.task {
        arg(&mut sql, " AND f.task_id = ?", Sql::Text(t.clone()));
    }
    if let Some(t) = &f.droid_type {
        arg(&mut sql, " AND f.droid_type = ?", Sql::Text(t.clone()));
    }
    if !f.kinds.is_empty() {
        let list: Vec<String> = f
            .kinds
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        sql.push_str(&format!(" AND f.kind IN ({})", list.join(", ")));
    }
    sql.push_str(" ORDER BY f.id");
    let mut stmt = log.conn().prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        let finding = StoredFinding::read(r, 0)?;
        Ok(FindingLine {
            reason: finding.reason().map(str::to_string),
            finding,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Finished sweeps started since `since` with an id above `after`.
pub fn sweeps(
    log: &ActivityLog,
    since: Option<DateTime<Utc>>,
    after: i64,
) -> Result<Vec<SweepLine>> {
    let mut stmt = log.conn().prepare(
        "SELECT id, kind, started_at, finished_at, tasks_seen, tasks_checked, findings, actions,
                action_errors, error, deferral
         FROM sweeps WHERE id > ?1 AND started_at >= ?2 AND finished_at IS NOT NULL ORDER BY id",
    )?;
    let since = since.map_or_else(|| "0".to_string(), ts);
    let rows = stmt.query_map(rusqlite::params![after, since], |r| {
        Ok(SweepLine {
            id: r.get(0)?,
            kind: r.get(1)?,
            started_at: r.get(2)?,
            finished_at: r.get(3)?,
            tasks_seen: r.get(4)?,
            tasks_checked: r.get(5)?,
            findings: r.get(6)?,
            actions: r.get(7)?,
            action_errors: r.get(8)?,
            error: r.get(9)?,
            deferral: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One finding as a line. The time is when it was first seen, the order
/// `foreman log` prints in (ids are given in that order); a finding seen
/// again later says when last, at the end.
pub fn finding_text(line: &FindingLine) -> String {
    let f = &line.finding;
    let mut text = format!(
        "{}  #{:<5} {:<12} {}/{}  {}  pid {}  {} -> {}",
        f.first_seen_at,
        f.id,
        f.kind,
        f.task_id,
        f.attempt,
        f.droid_type.as_deref().unwrap_or("-"),
        f.pid.map_or("-".to_string(), |p| p.to_string()),
        f.action,
        f.outcome,
    );
    if let Some(r) = &line.reason {
        text.push_str(&format!("  {r}"));
    }
    if let Some(d) = &f.detail {
        text.push_str(&format!(" ({d})"));
    }
    if f.last_seen_at != f.first_seen_at {
        text.push_str(&format!("  [last seen {}]", f.last_seen_at));
    }
    text
}

pub fn sweep_text(s: &SweepLine) -> String {
    let mut line = format!(
        "{}  sweep #{:<5} {:<9} {} tasks, {} running, {} findings, {} actions, {} errors",
        s.started_at,
        s.id,
        s.kind,
        s.tasks_seen,
        s.tasks_checked,
        s.findings,
        s.actions,
        s.action_errors
    );
    for note in [&s.error, &s.deferral].into_iter().flatten() {
        line.push_str(&format!("  {note}"));
    }
    line
}

/// One `foreman review` run, as `log --reviews` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewLine {
    /// The cursor `--follow` continues from.
    #[serde(skip)]
    pub rowid: i64,
    pub run_id: String,
    pub kind: String,
    pub started_at: String,
    pub finished_at: String,
    pub passed: bool,
    /// Names of the checks that failed.
    pub failed: Vec<String>,
    pub skipped: i64,
}

pub fn reviews(
    log: &ActivityLog,
    since: Option<DateTime<Utc>>,
    after: i64,
) -> Result<Vec<ReviewLine>> {
    let conn = log.conn();
    let mut stmt = conn.prepare(
        "SELECT rowid, id, kind, started_at, finished_at, passed, skipped FROM review_runs
         WHERE rowid > ?1 AND started_at >= ?2 ORDER BY rowid",
    )?;
    let since = since.map_or_else(|| "0".to_string(), ts);
    let mut lines = stmt
        .query_map(rusqlite::params![after, since], |r| {
            Ok(ReviewLine {
                rowid: r.get(0)?,
                run_id: r.get(1)?,
                kind: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                passed: r.get(5)?,
                failed: Vec::new(),
                skipped: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut failed = conn.prepare(
        "SELECT name FROM review_checks WHERE run_id = ?1 AND status = 'fail' ORDER BY name",
    )?;
    for line in &mut lines {
        line.failed = failed
            .query_map([&line.run_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
    }
    Ok(lines)
}

pub fn review_text(r: &ReviewLine) -> String {
    let mut line = format!(
        "{}  review {} {:<7} {}",
        r.started_at,
        r.run_id,
        r.kind,
        if r.passed { "passed" } else { "FAILED" }
    );
    if !r.failed.is_empty() {
        line.push_str(&format!("  failed: {}", r.failed.join(", ")));
    }
    if r.skipped > 0 {
        line.push_str(&format!("  ({} skipped)", r.skipped));
    }
    line
}
