//! The executor's own SQLite database (the contract's `tasks` table, or any
//! schema through `snapshot_query` / `mark_failed_query`).

use super::{bad_row, parse_enabled, parse_row, Executor, History, Marked};
use crate::config::{ExecutorConfig, ExecutorTz};
use crate::model::{Row, Snapshot, Task, TaskState};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{named_params, types::ValueRef, Connection, OpenFlags};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
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

/// One row by id, with the default query's columns: a task an earlier
/// snapshot saw unfinished, read again to learn how it ended.
const BY_ID_QUERY: &str = "SELECT id, plan_id, droid_type, state, pid, host, attempt, \
     started_at, last_progress_at, finished_at, error, * FROM tasks WHERE id = :id";

/// How far before the earlier remembered snapshot a later snapshot still
/// looks for finished rows: a row written with a `finished_at` a little in
/// the past (an executor committing after the fact) is not missed. Rows
/// the earlier snapshots saw unfinished are read back by id whatever their
/// `finished_at` (default query), so this only matters for tasks that
/// started and finished between two snapshots.
const LATE_FINISH: Duration = Duration::from_secs(30);

/// Snapshots remembered: the next one reads back to the earlier of the
/// last two full sweeps' (looks between them, `Executor::look`, do not
/// count), a margin of one whole interval for a row written late.
const REMEMBERED: usize = 2;

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
    /// The latest snapshots this executor took (newest last), so the next
    /// reads only what changed since (see `snapshot`).
    seen: Mutex<VecDeque<Seen>>,
}

/// What one snapshot saw: when it was taken (the executor's wall clock is
/// what `finished_at` and SQLite's `'now'` use), and the tasks it saw
/// unfinished.
struct Seen {
    at: DateTime<Utc>,
    unfinished: HashSet<String>,
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
            seen: Mutex::new(VecDeque::new()),
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
        // A snapshot reads each page once: a page cache (2 MiB by default)
        // would only hold the last sweep's rows in memory until the next.
        conn.pragma_update(None, "cache_size", -256)?;
        Ok(conn)
    }
}

fn unfinished(state: TaskState) -> bool {
    matches!(state, TaskState::Running | TaskState::Pending)
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
pub(super) fn escape_bytes(bytes: &[u8]) -> String {
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
            out.push(self.row(r, &names)?);
        }
        Ok(Snapshot { rows: out })
    }

    /// One result row, parsed.
    fn row(&self, r: &rusqlite::Row<'_>, names: &[String]) -> Result<Row> {
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
        Ok(match unreadable {
            None => parse_row(&map, self.tz),
            Some(reason) => bad_row(&map, reason),
        })
    }

    /// With the default query: each task an earlier remembered snapshot saw
    /// unfinished that this one lacks (it finished with a `finished_at`
    /// older than the window: an executor writing it late), read by id
    /// (the primary key) and added, so its end is never missed. A task the
    /// executor deleted stays missing: the monitor sees it gone.
    fn read_back(&self, conn: &Connection, snapshot: &mut Snapshot) -> Result<()> {
        if self.snapshot_query != DEFAULT_SNAPSHOT_QUERY {
            return Ok(());
        }
        let missing: Vec<String> = {
            let Ok(seen) = self.seen.lock() else {
                return Ok(());
            };
            let present: HashSet<&str> = snapshot
                .rows
                .iter()
                .map(|r| match r {
                    Row::Task(t) => t.id.as_str(),
                    Row::Bad(b) => b.id.as_str(),
                })
                .collect();
            let mut missing: Vec<String> = seen
                .iter()
                .flat_map(|s| s.unfinished.iter())
                .filter(|id| !present.contains(id.as_str()))
                .cloned()
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut stmt = conn.prepare(BY_ID_QUERY)?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        for id in &missing {
            let mut rows = stmt.query(named_params! {":id": id})?;
            while let Some(r) = rows.next().context("reading a task back by id")? {
                snapshot.rows.push(self.row(r, &names)?);
            }
        }
        Ok(())
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

impl SqliteExecutor {
    /// A snapshot of what changed (see `snapshot`); `record`: it becomes
    /// the latest the next one reads from.
    fn read(&self, record: bool) -> Result<Snapshot> {
        let now = Utc::now();
        let since = self
            .seen
            .lock()
            .ok()
            .and_then(|seen| seen.front().map(|s| s.at));
        let window = match since.map(|t| (now - t).to_std()) {
            Some(Ok(gap)) => self.history.min(gap.saturating_add(LATE_FINISH)),
            // None before (the whole window), or a clock stepped back.
            _ => self.history,
        };
        let result = (|| {
            let conn = self.connect(false)?;
            // One read transaction: the rows read back are of the same
            // moment as the rest.
            let tx = conn.unchecked_transaction()?;
            let mut snapshot = self.snapshot_with(&tx, window)?;
            if window < self.history {
                self.read_back(&tx, &mut snapshot)?;
            }
            Ok(snapshot)
        })();
        if let (true, Ok(mut seen)) = (record, self.seen.lock()) {
            match &result {
                Ok(snapshot) => {
                    seen.push_back(Seen {
                        at: now,
                        unfinished: snapshot
                            .rows
                            .iter()
                            .filter_map(|r| match r {
                                Row::Task(t) if unfinished(t.state) => Some(t.id.clone()),
                                _ => None,
                            })
                            .collect(),
                    });
                    while seen.len() > REMEMBERED {
                        seen.pop_front();
                    }
                }
                // Whatever the failed snapshot missed, the next one reads
                // the whole window again.
                Err(_) => seen.clear(),
            }
        }
        result
    }
}

impl Executor for SqliteExecutor {
    /// The first snapshot of this executor holds every task finished within
    /// `history_window` (a daemon starting up, or a one-shot command, sees
    /// what happened while nothing watched). Each later one holds the
    /// RUNNING and PENDING tasks and only what finished since the earlier
    /// of the last two snapshots (less `LATE_FINISH`), and, with the default
    /// query, every task those saw unfinished, read back by id: what
    /// changed. A sweep's cost and memory then follow the RUNNING set and
    /// the churn, not the history window (thousands of finished rows that
    /// every sweep used to read, parse and diff again). A clock stepped
    /// back, or a failed snapshot, starts from the whole window again.
    fn snapshot(&self) -> Result<Snapshot> {
        self.read(true)
    }

    fn look(&self) -> Result<Snapshot> {
        self.read(false)
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

    fn ids(snapshot: &Snapshot) -> Vec<String> {
        let mut ids: Vec<String> = snapshot
            .rows
            .iter()
            .map(|r| match r {
                Row::Task(t) => format!("{}:{:?}", t.id, t.state),
                Row::Bad(b) => b.id.clone(),
            })
            .collect();
        ids.sort();
        ids
    }

    /// After the first snapshot (the whole history window), a snapshot
    /// holds the unfinished tasks and what changed: rows finished since,
    /// and every task seen unfinished before, read back by id however old
    /// its `finished_at`. A failed snapshot starts from the whole window.
    #[test]
    fn later_snapshots_read_what_changed_not_the_whole_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("executor.db");
        let db = Connection::open(&path).expect("executor");
        db.execute_batch(SCHEMA).expect("schema");
        let ago = |mins: i64| {
            (Utc::now() - chrono::Duration::minutes(mins))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let put = |id: &str, state: &str, finished: Option<String>| {
            db.execute(
                "INSERT INTO tasks (id, droid_type, state, finished_at) VALUES (?1, 'w', ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, finished_at = excluded.finished_at",
                rusqlite::params![id, state, finished],
            )
            .expect("write task");
        };
        put("run", "RUNNING", None);
        put("old", "SUCCESS", Some(ago(30)));
        put("ancient", "SUCCESS", Some(ago(120)));
        let text = format!(
            "[executor]\nkind = \"sqlite\"\npath = {:?}\n",
            path.display().to_string()
        );
        let config =
            crate::config::Config::parse(&text, &dir.path().join("foreman.toml")).expect("config");
        let exec = SqliteExecutor::new(&config.executor).expect("executor");

        let first = exec.snapshot().expect("first");
        assert_eq!(ids(&first), ["old:Success", "run:Running"]);
        // Finished half an hour ago: in the window, but not new.
        let second = exec.snapshot().expect("second");
        assert_eq!(ids(&second), ["run:Running"]);
        // `run` ends with a finished_at written 20 minutes in the past; a
        // new task starts and finishes between two snapshots.
        put("run", "FAILED", Some(ago(20)));
        put("quick", "SUCCESS", Some(ago(0)));
        let third = exec.snapshot().expect("third");
        assert_eq!(ids(&third), ["quick:Success", "run:Failed"]);
        // Both remembered snapshots saw `run` unfinished, so it is read
        // back once more (a sweep's re-read must not hide it from the next
        // sweep), then not again.
        assert_eq!(
            ids(&exec.snapshot().expect("fourth")),
            ["quick:Success", "run:Failed"]
        );
        assert_eq!(ids(&exec.snapshot().expect("fifth")), ["quick:Success"]);

        // Looks between sweeps (event sweeps, the re-read before
        // signalling) are not what the next snapshot reads from: a task
        // seen running, then finished late while only looks came, is still
        // in the next snapshot.
        put("late", "RUNNING", None);
        assert!(ids(&exec.snapshot().expect("sixth")).contains(&"late:Running".to_string()));
        assert!(ids(&exec.snapshot().expect("seventh")).contains(&"late:Running".to_string()));
        put("late", "SUCCESS", Some(ago(20)));
        for _ in 0..3 {
            let look = exec.look().expect("a look");
            assert!(
                ids(&look).contains(&"late:Success".to_string()),
                "{:?}",
                ids(&look)
            );
        }
        assert!(
            ids(&exec.snapshot().expect("eighth")).contains(&"late:Success".to_string()),
            "the next full snapshot still holds how it ended"
        );

        // A snapshot that fails forgets: the next reads the whole window.
        std::fs::rename(&path, dir.path().join("moved.db")).expect("move");
        assert!(exec.snapshot().is_err());
        std::fs::rename(dir.path().join("moved.db"), &path).expect("move back");
        assert_eq!(
            ids(&exec.snapshot().expect("after the failure")),
            ["late:Success", "old:Success", "quick:Success", "run:Failed"]
        );
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
