//! Heartbeats by push: `POST /heartbeat` for executors that cannot write
//! their task table. The latest beat per (task, attempt) is kept in the
//! activity log (`pushed_heartbeats`), stamped with Foreman's clock when it
//! arrives, and a sweep counts it as the task's heartbeat when it is newer
//! than the row's `last_progress_at` (`merge`): the judge sees one
//! heartbeat, whichever way it came, and stays pure.

use crate::activity::{parse_ts, ts};
use crate::model::{Row, Snapshot};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// The longest task id and note a beat may carry (bytes), and the most
/// beats in one request: a push is small, and the table is bounded by the
/// RUNNING tasks.
const MAX_ID: usize = 1024;
const MAX_NOTE: usize = 1024;
const MAX_BEATS: usize = 10_000;

/// One pushed beat, as received.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Beat {
    pub task_id: String,
    #[serde(default = "first")]
    pub attempt: i64,
    #[serde(default)]
    pub note: Option<String>,
}

fn first() -> i64 {
    1
}

/// One beat (an object) or several (an array of them). The reason names
/// what is wrong, for the 400.
pub fn parse(body: &[u8]) -> Result<Vec<Beat>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Body {
        One(Beat),
        Many(Vec<Beat>),
    }
    let beats = match serde_json::from_slice::<Body>(body) {
        Ok(Body::One(b)) => vec![b],
        Ok(Body::Many(v)) => v,
        Err(e) => {
            return Err(format!(
                "not a heartbeat ({e}): send {{\"task_id\": \"…\", \"attempt\": 1, \"note\": \"…\"}} or an array of them"
            ))
        }
    };
    if beats.len() > MAX_BEATS {
        return Err(format!(
            "{} heartbeats in one request; send at most {MAX_BEATS}",
            beats.len()
        ));
    }
    for (i, b) in beats.iter().enumerate() {
        if b.task_id.is_empty() || b.task_id.len() > MAX_ID {
            return Err(format!(
                "heartbeat {i}: task_id must be 1 to {MAX_ID} bytes"
            ));
        }
        if b.attempt < 1 {
            return Err(format!(
                "heartbeat {i}: attempt {} must be 1 or more",
                b.attempt
            ));
        }
        if b.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
            return Err(format!(
                "heartbeat {i}: note is longer than {MAX_NOTE} bytes"
            ));
        }
    }
    Ok(beats)
}

/// Keep the beats, stamped `at`: one transaction, waiting at most `busy`
/// for the activity log's write lock (an error then: the caller refuses
/// the push with 503).
pub fn keep(path: &Path, beats: &[Beat], at: DateTime<Utc>, busy: Duration) -> Result<usize> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening the activity log {}", path.display()))?;
    conn.busy_timeout(busy)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO pushed_heartbeats (task_id, attempt, at, note) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (task_id, attempt) DO UPDATE SET at = excluded.at, note = excluded.note",
        )?;
        for b in beats {
            upsert.execute(rusqlite::params![b.task_id, b.attempt, ts(at), b.note])?;
        }
    }
    tx.commit()?;
    Ok(beats.len())
}

/// Count each RUNNING task's latest pushed beat as its heartbeat when it
/// is newer than the row's. Nothing to read (no log yet, or a log from
/// before heartbeats): the snapshot as it is.
pub fn merge(conn: &Connection, snapshot: &mut Snapshot) -> Result<usize> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pushed_heartbeats')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let mut stmt = conn.prepare_cached("SELECT task_id, attempt, at FROM pushed_heartbeats")?;
    let mut pushed: HashMap<(String, i64), DateTime<Utc>> = HashMap::new();
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (id, attempt, at) = row?;
        if let Ok(at) = parse_ts(&at) {
            pushed.insert((id, attempt), at);
        }
    }
    if pushed.is_empty() {
        return Ok(0);
    }
    let mut merged = 0;
    for r in &mut snapshot.rows {
        let Row::Task(t) = r else { continue };
        if t.state != crate::model::TaskState::Running {
            continue;
        }
        if let Some(at) = pushed.get(&(t.id.clone(), t.attempt)) {
            if t.last_progress_at.is_none_or(|beat| beat < *at) {
                t.last_progress_at = Some(*at);
                merged += 1;
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_is_an_object_or_an_array_and_bad_ones_say_why() {
        assert_eq!(
            parse(br#"{"task_id": "t1"}"#),
            Ok(vec![Beat {
                task_id: "t1".into(),
                attempt: 1,
                note: None
            }])
        );
        assert_eq!(
            parse(br#"[{"task_id": "t1", "attempt": 2, "note": "50%"}, {"task_id": "t2"}]"#)
                .map(|v| v.len()),
            Ok(2)
        );
        let long = format!(r#"{{"task_id": "{}"}}"#, "x".repeat(MAX_ID + 1));
        for (body, says) in [
            (&br#"{"attempt": 1}"#[..], "not a heartbeat"),
            (br#"{"task_id": ""}"#, "task_id must be"),
            (br#"{"task_id": "t", "attempt": 0}"#, "attempt 0 must be"),
            (br#"{"task_id": "t", "attempt": "2"}"#, "not a heartbeat"),
            (long.as_bytes(), "task_id must be"),
            (b"\xff\xfe", "not a heartbeat"),
        ] {
            let why = parse(body).expect_err("refused");
            assert!(why.contains(says), "{why}");
        }
    }
}
