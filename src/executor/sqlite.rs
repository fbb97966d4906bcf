//! The executor's own SQLite database (the contract's `tasks` table, or any
//! schema through `snapshot_query` / `mark_failed_query`).

use super::{bad_row, parse_enabled, parse_row, Executor, History, Marked};
use crate::config::{ExecutorConfig, ExecutorTz};
use crate::model::{Snapshot, Task};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{named_params, types::ValueRef, Connection, OpenFlags};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tracing::warn;

/// The contract's `tasks` table: what the default queries read and write
/// (the demo's and the review's scratch executors are made with it).
pub const SCHEMA: &str = "CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  plan_id TEXT,
  droid_type TEXT NOT NULL,
  state TEXT NOT NULL,
  pid INTEGER,
  host TEXT,
  attempt INTEGER NOT NULL DEFAULT 1,
  started_at TEXT,
  last_progress_at TEXT,
  finished_at TEXT,
  error TEXT,
  pid_start_ticks INTEGER
);";

pub const DEFAULT_SNAPSHOT_QUERY: &str = "SELECT id, plan_id, droid_type, state, pid, host, attempt, \
     started_at, last_progress_at, finished_at, error, * FROM tasks \
     WHERE state IN ('RUNNING', 'PENDING') OR finished_at IS NULL \
     OR julianday(CASE WHEN typeof(finished_at) IN ('integer', 'real') \
        THEN datetime(finished_at, 'unixepoch') ELSE finished_at END) >= julianday('now') - :history_days";

pub const DEFAULT_MARK_QUERY: &str =
    "UPDATE tasks SET state = 'FAILED', finished_at = :finished_at, error = :reason \
     WHERE id = :id AND state = 'RUNNING' AND pid IS :pid AND attempt = :attempt";

pub struct SqliteExecutor {
    path: PathBuf,
    snapshot_query: String,
    mark_query: String,
    timeout: Duration,
    history: Duration,
    tz: ExecutorTz,
}

impl SqliteExecutor {
    pub fn new(cfg: &ExecutorConfig) -> Result<SqliteExecutor> {
        let path = cfg.path.clone().context("executor.path is not set")?;
        Ok(SqliteExecutor {
            path,
            snapshot_query: cfg
                .snapshot_query
                .clone()
                .unwrap_or_else(|| DEFAULT_SNAPSHOT_QUERY.into()),
            mark_query: cfg
                .mark_failed_query
                .clone()
                .unwrap_or_else(|| DEFAULT_MARK_QUERY.into()),
            timeout: cfg.timeout,
            history: cfg.history_window,
            tz: cfg.timezone,
        })
    }

    fn connect(&self, write: bool) -> Result<Connection> {
        // Never create the executor's database: a missing file is an error.
        let flags = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .with_context(|| format!("opening the executor database {}", self.path.display()))?;
        conn.busy_timeout(self.timeout)?;
        Ok(conn)
    }
}

fn json_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        // JSON has no infinity or NaN (serde_json would make them null,
        // turning `pid = 1e999` into "no pid" and `attempt` into the
        // default): as text they make the row malformed, with the reason.
        ValueRef::Real(f) if !f.is_finite() => Value::from(f.to_string()),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::from(escape_bytes(t)),
        ValueRef::Blob(_) => Value::from("(blob)"),
    }
}

/// Bytes as text: valid UTF-8 as it is, each invalid byte as `\xNN`. Unlike
/// a lossy conversion, two different byte strings stay two texts.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Why an id cannot be named back to the executor exactly: a text that is
/// not UTF-8 (Foreman would read other characters than the executor wrote)
/// or a BLOB (`id = :id` with text never matches it), so the
/// compare-and-set of `mark_failed` could never find the row. Such a row
/// is malformed (`unverifiable`, reported once), never marked.
fn unreadable_id(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) if std::str::from_utf8(t).is_err() => Some(format!(
            "id is not valid UTF-8 text (its bytes: {}); Foreman cannot name it to the executor",
            escape_bytes(t)
        )),
        ValueRef::Blob(b) => Some(format!(
            "id is a BLOB, not text (its bytes: {}); Foreman cannot name it to the executor",
            escape_bytes(b)
        )),
        _ => None,
    }
}

impl SqliteExecutor {
    fn snapshot_with(&self, conn: &Connection, history: Duration) -> Result<Snapshot> {
        let mut stmt = conn
            .prepare(&self.snapshot_query)
            .with_context(|| format!("preparing the snapshot query on {}", self.path.display()))?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let days = history.as_secs_f64() / 86400.0;
        let wants_history = stmt.parameter_index(":history_days")?.is_some();
        let mut rows = if wants_history {
            stmt.query(named_params! {":history_days": days})?
        } else {
            stmt.query([])?
        };
        let mut out = Vec::new();
        while let Some(r) = rows.next().context("reading the snapshot")? {
            let mut map = Map::new();
            let mut unreadable = None;
            for (i, name) in names.iter().enumerate() {
                // The first occurrence of a column name wins (`*` repeats them).
                if !map.contains_key(name) {
                    let v = r.get_ref(i)?;
                    if name == "id" {
                        unreadable = unreadable_id(v);
                    }
                    let v = match v {
                        // Each BLOB id its own row, not one "(blob)".
                        ValueRef::Blob(b) if name == "id" => {
                            Value::from(format!("(blob) {}", escape_bytes(b)))
                        }
                        v => json_of(v),
                    };
                    map.insert(name.clone(), v);
                }
            }
            out.push(match unreadable {
                None => parse_row(&map, self.tz),
                Some(reason) => bad_row(&map, reason),
            });
        }
        Ok(Snapshot { rows: out })
    }

    /// `droid_types (name, enabled)`, when the executor has that table.
    /// A row whose `enabled` is unreadable is left out, with a warning.
    fn droid_types(&self, conn: &Connection) -> Result<Option<BTreeMap<String, bool>>> {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'droid_types')",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let mut stmt = conn
            .prepare("SELECT name, enabled FROM droid_types")
            .with_context(|| {
                format!(
                    "reading droid_types (name, enabled) in {}",
                    self.path.display()
                )
            })?;
        let mut rows = stmt.query([])?;
        let mut out = BTreeMap::new();
        while let Some(r) = rows.next()? {
            let name = json_of(r.get_ref(0)?);
            let enabled = json_of(r.get_ref(1)?);
            match (name.as_str(), parse_enabled(&enabled)) {
                (Some(name), Some(on)) => {
                    out.insert(name.to_string(), on);
                }
                _ => {
                    warn!(name = %name, enabled = %enabled, "droid_types row left out: its name or enabled is unreadable")
                }
            }
        }
        Ok(Some(out))
    }
}

impl Executor for SqliteExecutor {
    fn snapshot(&self) -> Result<Snapshot> {
        let conn = self.connect(false)?;
        self.snapshot_with(&conn, self.history)
    }

    fn history(&self, window: Duration) -> Result<History> {
        let conn = self.connect(false)?;
        // One read transaction: the tasks and the types are of one moment.
        let tx = conn.unchecked_transaction()?;
        let snapshot = self.snapshot_with(&tx, window)?;
        let droid_types = self.droid_types(&tx)?;
        drop(tx);
        Ok(History {
            snapshot,
            droid_types,
        })
    }

    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> Result<Marked> {
        let conn = self.connect(true)?;
        let mut stmt = conn
            .prepare(&self.mark_query)
            .context("preparing the mark-failed query")?;
        let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = Vec::new();
        let finished = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let all: [(&str, &dyn rusqlite::ToSql); 5] = [
            (":id", &task.id),
            (":pid", &task.pid),
            (":attempt", &task.attempt),
            (":reason", &reason),
            (":finished_at", &finished),
        ];
        for (name, value) in all {
            if stmt.parameter_index(name)?.is_some() {
                params.push((name, value));
            }
        }
        let changed = stmt.execute(params.as_slice()).with_context(|| {
            format!("marking task {} failed in {}", task.id, self.path.display())
        })?;
        Ok(if changed > 0 {
            Marked::Failed
        } else {
            Marked::NotRunning
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_not_replaced() {
        assert_eq!(escape_bytes(b"plain"), "plain");
        assert_eq!(escape_bytes(b"t\xff\xfe-\xc3\xa9"), "t\\xff\\xfe-\u{e9}");
        assert_ne!(escape_bytes(b"t\xff"), escape_bytes(b"t\xfe"));
        assert!(unreadable_id(ValueRef::Text(b"t\xff")).is_some());
        assert!(unreadable_id(ValueRef::Blob(b"t")).is_some());
        assert!(unreadable_id(ValueRef::Text(b"t")).is_none());
        assert!(unreadable_id(ValueRef::Integer(7)).is_none());
    }

    #[test]
    fn non_finite_reals_are_text_so_the_row_is_malformed() {
        assert_eq!(json_of(ValueRef::Real(f64::INFINITY)), Value::from("inf"));
        assert_eq!(json_of(ValueRef::Real(f64::NAN)), Value::from("NaN"));
        assert_eq!(json_of(ValueRef::Real(1.5)), Value::from(1.5));
        let row = serde_json::json!({"id": "a", "droid_type": "x", "state": "RUNNING",
            "pid": json_of(ValueRef::Real(f64::INFINITY))});
        let row = row.as_object().cloned().unwrap_or_default();
        assert!(matches!(
            crate::executor::parse_row(&row, crate::config::ExecutorTz::Utc),
            crate::model::Row::Bad(b) if b.reason.contains("invalid pid")
        ));
    }
}
