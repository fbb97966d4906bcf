//! Snapshot sources. An executor gives two operations: `snapshot()` and
//! `mark_failed(task, reason)`. Every source turns its rows into JSON-like
//! maps first, so one parser decides what a malformed row is: such a row
//! becomes a `BadRow` (judged `unverifiable`) and the rest proceed.

pub mod command;
pub mod postgres;
pub mod sqlite;

use crate::config::{Config, ExecutorKind, ExecutorTz};
use crate::model::{BadRow, Row, Snapshot, Task, TaskState};
use anyhow::Result;
use chrono::{DateTime, Datelike, Local, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a compare-and-set mark did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// The row was RUNNING with the same pid and attempt, and is now FAILED.
    Failed,
    /// No row matched: the task finished (or moved on) meanwhile.
    NotRunning,
}

/// A longer look back, for the wellbeing sweep.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// RUNNING and PENDING tasks, and those finished within the asked window.
    pub snapshot: Snapshot,
    /// The executor's own view of its droid types (`name` → `enabled`), when
    /// it keeps one (a `droid_types` table, or `droid_types` in the
    /// command's JSON).
    pub droid_types: Option<BTreeMap<String, bool>>,
}

pub trait Executor: Send + Sync {
    /// The executor's tasks now: RUNNING and PENDING, and those finished
    /// within the history window.
    fn snapshot(&self) -> Result<Snapshot>;
    /// The same, for a look between full sweeps (an event sweep, the
    /// re-read before signalling): a source that reads only what changed
    /// since its last snapshot must not count this one as that snapshot,
    /// or a task finished before it would be missed by the next full
    /// sweep (whose monitor pull records the transition).
    fn look(&self) -> Result<Snapshot> {
        self.snapshot()
    }
    /// The same with tasks finished within `window`, and the executor's
    /// droid types. A source that cannot look further back gives its
    /// snapshot.
    fn history(&self, window: Duration) -> Result<History> {
        let _ = window;
        Ok(History {
            snapshot: self.snapshot()?,
            droid_types: None,
        })
    }
    /// Compare-and-set: only a task still RUNNING with this pid and attempt.
    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> Result<Marked>;
    /// Where the hosts of a fleet meet (the PostgreSQL source with
    /// `[fleet]`); `None` for a single-host source.
    fn fleet(&self) -> Option<&dyn crate::fleet::Fleet> {
        None
    }
}

/// The configured executor.
pub fn open(config: &Config) -> Result<Box<dyn Executor>> {
    Ok(match config.executor.kind {
        ExecutorKind::Sqlite => Box::new(sqlite::SqliteExecutor::new(&config.executor)?),
        ExecutorKind::Command => Box::new(command::CommandExecutor::new(&config.executor)),
        ExecutorKind::Postgres => Box::new(postgres::PostgresExecutor::new(
            &config.executor,
            &config.host,
            config.fleet.as_ref(),
            config.interval,
        )?),
    })
}

/// Parse one row. Never fails the snapshot: a bad row says why.
pub fn parse_row(row: &Map<String, Value>, tz: ExecutorTz) -> Row {
    match parse_task(row, tz) {
        Ok(t) => Row::Task(t),
        Err(reason) => bad_row(row, reason),
    }
}

/// A row the source already knows is malformed (say, an id that is not
/// text), with the reason: what can be read of it is kept, as for a row
/// `parse_row` refuses.
pub fn bad_row(row: &Map<String, Value>, reason: String) -> Row {
    let id = text(row.get("id"))
        .unwrap_or_else(|| format!("(row without id: {})", Value::Object(row.clone())));
    Row::Bad(BadRow {
        id,
        droid_type: text(row.get("droid_type")),
        plan_id: text(row.get("plan_id")),
        attempt: row.get("attempt").and_then(Value::as_i64).unwrap_or(1),
        reason,
        pid: text(row.get("pid"))
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1),
    })
}

/// An `enabled` value as executors write it: a boolean, 0/1, or text.
pub fn parse_enabled(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "enabled" => Some(true),
            "0" | "false" | "no" | "off" | "disabled" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_task(row: &Map<String, Value>, tz: ExecutorTz) -> Result<Task, String> {
    let id = text(row.get("id"))
        .filter(|s| !s.is_empty())
        .ok_or("missing id")?;
    let droid_type = text(row.get("droid_type"))
        .filter(|s| !s.is_empty())
        .ok_or("missing droid_type")?;
    let state_text = text(row.get("state")).ok_or("missing state")?;
    let state =
        TaskState::parse(&state_text).ok_or_else(|| format!("unknown state {state_text:?}"))?;
    let pid = match row.get("pid") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(p) if p > 1 && p <= i32::MAX as i64 => Some(p as i32),
            _ => {
                return Err(format!(
                    "invalid pid {n} (must be an integer greater than 1)"
                ))
            }
        },
        Some(other) => {
            return Err(format!(
                "invalid pid {other} (must be an integer greater than 1)"
            ))
        }
    };
    let attempt = match row.get("attempt") {
        None | Some(Value::Null) => 1,
        Some(v) => v.as_i64().ok_or_else(|| format!("invalid attempt {v}"))?,
    };
    let time = |key: &str| -> Result<Option<DateTime<Utc>>, String> {
        match row.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_time(v, tz).map(Some).ok_or_else(|| {
                format!("unparseable {key} {v} (a time from 1970 to 9999 is required)")
            }),
        }
    };
    let pid_start_ticks = match row.get("pid_start_ticks") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("invalid pid_start_ticks {v}"))?,
        ),
    };
    Ok(Task {
        id,
        plan_id: text(row.get("plan_id")),
        droid_type,
        state,
        pid,
        host: text(row.get("host")).filter(|h| !h.is_empty()),
        attempt,
        started_at: time("started_at")?,
        last_progress_at: time("last_progress_at")?,
        finished_at: time("finished_at")?,
        error: text(row.get("error")),
        pid_start_ticks,
        created_at: time("created_at")?,
    })
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` (SQLite's `CURRENT_TIMESTAMP`,
/// in the executor's timezone), or unix seconds as a number or string.
/// Times outside 1970..=9999 are refused: no executor writes them on
/// purpose (epoch milliseconds read as seconds land in year 50000), and
/// arithmetic near chrono's limits would overflow.
pub fn parse_time(v: &Value, tz: ExecutorTz) -> Option<DateTime<Utc>> {
    parse_time_any(v, tz).filter(|t| (1970..=9999).contains(&t.year()))
}

fn parse_time_any(v: &Value, tz: ExecutorTz) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => from_unix(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
                    return match tz {
                        ExecutorTz::Utc => Some(naive.and_utc()),
                        ExecutorTz::Local => Local
                            .from_local_datetime(&naive)
                            .earliest()
                            .map(|t| t.with_timezone(&Utc)),
                        ExecutorTz::Fixed(off) => off
                            .from_local_datetime(&naive)
                            .single()
                            .map(|t| t.with_timezone(&Utc)),
                    };
                }
            }
            s.parse::<f64>().ok().and_then(from_unix)
        }
        _ => None,
    }
}

fn from_unix(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let whole = secs.trunc() as i64;
    let nanos = ((secs - secs.trunc()) * 1e9) as u32;
    Utc.timestamp_opt(whole, nanos).single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn timestamps_in_every_contract_format() {
        let want = Utc
            .with_ymd_and_hms(2026, 11, 23, 6, 0, 0)
            .single()
            .expect("valid");
        let cases = [
            json!("2026-11-23T06:00:00Z"),
            json!("2026-11-23T07:00:00+01:00"),
            json!("2026-11-23 06:00:00"),
            json!("2026-11-23T06:00:00"),
            json!(want.timestamp()),
            json!(want.timestamp() as f64),
            json!(want.timestamp().to_string()),
        ];
        for c in cases {
            assert_eq!(parse_time(&c, ExecutorTz::Utc), Some(want), "{c}");
        }
        let plus2 = ExecutorTz::Fixed(chrono::FixedOffset::east_opt(7200).expect("offset"));
        assert_eq!(parse_time(&json!("2026-11-23 08:00:00"), plus2), Some(want));
        assert_eq!(parse_time(&json!("yesterday"), ExecutorTz::Utc), None);
        assert_eq!(parse_time(&json!(-5), ExecutorTz::Utc), None);
    }

    #[test]
    fn bad_rows_say_why_and_keep_their_id() {
        let cases = [
            (
                json!({"id": "a", "droid_type": "x", "state": "WEIRD"}),
                "unknown state \"WEIRD\"",
            ),
            (
                json!({"id": "a", "droid_type": "x", "state": "RUNNING", "pid": 1}),
                "invalid pid 1",
            ),
            (
                json!({"id": "a", "droid_type": "x", "state": "RUNNING", "pid": -4}),
                "invalid pid -4",
            ),
            (
                json!({"id": "a", "droid_type": "x", "state": "RUNNING", "pid": "12"}),
                "invalid pid",
            ),
            (
                json!({"id": "a", "droid_type": "x", "state": "RUNNING", "started_at": "soon"}),
                "unparseable started_at",
            ),
            (json!({"id": "a", "state": "RUNNING"}), "missing droid_type"),
        ];
        for (input, want) in cases {
            match parse_row(&row(input.clone()), ExecutorTz::Utc) {
                Row::Bad(b) => {
                    assert!(
                        b.reason.contains(want),
                        "{input}: {} lacks {want}",
                        b.reason
                    );
                    assert_eq!(b.id, "a");
                }
                Row::Task(t) => panic!("{input} parsed as {t:?}"),
            }
        }
    }

    #[test]
    fn good_row_parses_every_field() {
        let r = row(
            json!({"id": "t1", "plan_id": "p", "droid_type": "builder", "state": "RUNNING",
            "pid": 4121, "host": null, "attempt": 2, "started_at": "2026-11-23 06:00:00",
            "last_progress_at": 1795413600, "finished_at": null, "error": null, "pid_start_ticks": 99}),
        );
        let Row::Task(t) = parse_row(&r, ExecutorTz::Utc) else {
            panic!("bad row")
        };
        assert_eq!(t.pid, Some(4121));
        assert_eq!(t.attempt, 2);
        assert_eq!(t.pid_start_ticks, Some(99));
        assert_eq!(t.state, TaskState::Running);
        assert!(t.last_progress_at.is_some());
    }
}
