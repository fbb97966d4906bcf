//! Foreman's own SQLite activity log: sweeps, findings (with evidence,
//! action and outcome), signals sent, and observations. Opened in one
//! place: WAL (so `twin` and `log` can read while the daemon writes), a busy
//! timeout, and the embedded migrations applied at open.

use crate::model::{Action, Kind, Outcome, SweepKind};
use crate::observation::{Binding, MemberCounters, Observation};
use crate::probe::Clocks;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Migrations, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_alerts.sql"),
    include_str!("../migrations/0003_finding_inputs.sql"),
    include_str!("../migrations/0004_strays.sql"),
    include_str!("../migrations/0005_wellbeing.sql"),
    include_str!("../migrations/0006_review.sql"),
    include_str!("../migrations/0007_monitor.sql"),
    include_str!("../migrations/0008_identity_facts.sql"),
    include_str!("../migrations/0009_pushed_heartbeats.sql"),
    include_str!("../migrations/0010_silences.sql"),
];

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("bad timestamp {s:?} in the activity log"))?
        .with_timezone(&Utc))
}

fn parse_opt(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| parse_ts(&s)).transpose()
}

/// A finding as the sweep records it.
#[derive(Debug, Clone)]
pub struct NewFinding {
    pub task_id: String,
    pub attempt: i64,
    pub kind: Kind,
    pub droid_type: Option<String>,
    pub plan_id: Option<String>,
    pub pid: Option<i32>,
    pub host: Option<String>,
    pub evidence: serde_json::Value,
    pub action: Action,
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// What the judge was given (see `explain`); `Null` when not kept.
    pub inputs: serde_json::Value,
}

/// A finding not yet closed: waiting for exit grace, or committed and not
/// yet acted on when Foreman stopped.
#[derive(Debug, Clone)]
pub struct OpenFinding {
    pub id: i64,
    pub task_id: String,
    pub attempt: i64,
    pub kind: String,
    pub action: Action,
}

/// A pending finding whose action a crash interrupted, as it was committed.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub finding_id: i64,
    pub evidence: serde_json::Value,
    pub inputs: serde_json::Value,
}

/// Everything one sweep commits before it acts, in one transaction.
#[derive(Debug, Clone)]
pub struct SweepRecord {
    pub kind: &'static str,
    pub host: String,
    pub mode: &'static str,
    pub started_at: DateTime<Utc>,
    pub tasks_seen: usize,
    pub tasks_checked: usize,
    pub error: Option<String>,
    pub deferral: Option<String>,
    pub boot_id: String,
    pub clocks: Clocks,
    pub hang_floor: Option<DateTime<Utc>>,
    pub observations: Vec<Observation>,
    pub findings: Vec<NewFinding>,
    /// Open findings to close: (id, outcome, detail).
    pub closes: Vec<(i64, Outcome, String)>,
    /// Alerts to queue with the findings they are about.
    pub alerts: Vec<NewAlert>,
}

/// An alert to put in the outbox for `findings[finding]` of the same record.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub finding: usize,
    pub sink: String,
    /// Not queued again while an alert for the same finding and sink was
    /// queued less than this long ago.
    pub realert_after: Duration,
}

/// A finding as the activity log keeps it: what `explain`, `log` and the
/// alert payload read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredFinding {
    pub id: i64,
    pub task_id: String,
    pub attempt: i64,
    pub kind: String,
    pub droid_type: Option<String>,
    pub plan_id: Option<String>,
    pub pid: Option<i32>,
    pub host: Option<String>,
    pub evidence: serde_json::Value,
    pub action: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub acted_at: Option<String>,
    pub times_seen: i64,
    pub first_sweep_id: i64,
    pub last_sweep_id: i64,
}

/// The columns `StoredFinding::read` takes, in its order, from `findings f`.
pub const FINDING_COLUMNS: &str = "f.id, f.task_id, f.attempt, f.kind, f.droid_type, f.plan_id, f.pid, f.host, \
     f.evidence, f.action, f.outcome, f.outcome_detail, f.first_seen_at, f.last_seen_at, f.acted_at, \
     f.times_seen, f.first_sweep_id, f.last_sweep_id";

impl StoredFinding {
    /// Read `FINDING_COLUMNS` starting at column `at`.
    pub fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StoredFinding> {
        let evidence: String = r.get(at + 8)?;
        Ok(StoredFinding {
            id: r.get(at)?,
            task_id: r.get(at + 1)?,
            attempt: r.get(at + 2)?,
            kind: r.get(at + 3)?,
            droid_type: r.get(at + 4)?,
            plan_id: r.get(at + 5)?,
            pid: r.get(at + 6)?,
            host: r.get(at + 7)?,
            evidence: serde_json::from_str(&evidence).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    at + 8,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            action: r.get(at + 9)?,
            outcome: r.get(at + 10)?,
            detail: r.get(at + 11)?,
            first_seen_at: r.get(at + 12)?,
            last_seen_at: r.get(at + 13)?,
            acted_at: r.get(at + 14)?,
            times_seen: r.get(at + 15)?,
            first_sweep_id: r.get(at + 16)?,
            last_sweep_id: r.get(at + 17)?,
        })
    }

    /// The verdict's reason, from the evidence.
    pub fn reason(&self) -> Option<&str> {
        self.evidence.get("reason").and_then(|r| r.as_str())
    }
}

/// A queued outbox row that is due, with what it is about as it stands now.
#[derive(Debug, Clone)]
pub struct DueAlert {
    pub id: i64,
    pub sink: String,
    pub queued_at: DateTime<Utc>,
    pub attempts: i64,
    pub about: About,
}

/// What an outbox row delivers.
#[derive(Debug, Clone)]
pub enum About {
    Finding(StoredFinding),
    Initiative(StoredInitiative),
}

/// An initiative as the activity log keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredInitiative {
    pub id: i64,
    pub run_id: String,
    pub created_at: String,
    pub title: String,
    pub severity: String,
    /// Markdown.
    pub body: String,
    /// The JSON document sinks receive.
    pub payload: String,
}

/// The columns `StoredInitiative::read` takes, in its order, from `initiatives i`.
pub const INITIATIVE_COLUMNS: &str =
    "i.id, i.run_id, i.created_at, i.title, i.severity, i.body, i.payload";

impl StoredInitiative {
    pub fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StoredInitiative> {
        Ok(StoredInitiative {
            id: r.get(at)?,
            run_id: r.get(at + 1)?,
            created_at: r.get(at + 2)?,
            title: r.get(at + 3)?,
            severity: r.get(at + 4)?,
            body: r.get(at + 5)?,
            payload: r.get(at + 6)?,
        })
    }
}

/// How an alert left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEnd {
    Delivered,
    /// Older than the sink's `max_age`.
    Expired,
    /// Nothing to tell any more (the task finished by itself), or its sink
    /// is gone from the configuration.
    Cancelled,
}

impl AlertEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEnd::Delivered => "delivered",
            AlertEnd::Expired => "expired",
            AlertEnd::Cancelled => "cancelled",
        }
    }
}

/// The clocks and boot of the last sweep, to detect suspends and steps.
#[derive(Debug, Clone)]
pub struct LastSweep {
    pub boot_id: String,
    pub clocks: Clocks,
    pub hang_floor: Option<DateTime<Utc>>,
}

pub struct ActivityLog {
    conn: Connection,
    path: PathBuf,
}

/// One sweep's transaction: nothing in it is visible, and nothing acts,
/// until `commit`.
/// A committed sweep: its id, each finding's id, and whether each finding
/// was recorded for the first time.
pub struct Committed {
    pub sweep_id: i64,
    pub ids: Vec<i64>,
    pub first_seen: Vec<bool>,
}

pub struct SweepTx<'a> {
    tx: rusqlite::Transaction<'a>,
    sweep_id: i64,
}

impl SweepTx<'_> {
    /// The open transaction, for the monitor's pull (`monitor::store`).
    pub fn conn(&self) -> &Connection {
        &self.tx
    }

    /// The prior observation; reads what this transaction has not yet
    /// overwritten, i.e. the last sweep's.
    pub fn prior(&self, task_id: &str, attempt: i64, pid: i32) -> Result<Option<Observation>> {
        read_prior(&self.tx, task_id, attempt, pid)
    }

    pub fn observe(&self, o: &Observation) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO observations (task_id, attempt, pid, boot_id, start_ticks, binding, first_seen_at, seen_at,
                                       cpu_moved_at, io_moved_at, gone_since, members,
                                       pooled, unproven, heartbeat, heartbeat_moved_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (task_id, attempt, pid) DO UPDATE SET
                boot_id = excluded.boot_id, start_ticks = excluded.start_ticks, binding = excluded.binding,
                seen_at = excluded.seen_at, cpu_moved_at = excluded.cpu_moved_at,
                io_moved_at = excluded.io_moved_at, gone_since = excluded.gone_since, members = excluded.members,
                pooled = excluded.pooled, unproven = excluded.unproven,
                heartbeat = excluded.heartbeat, heartbeat_moved_at = excluded.heartbeat_moved_at",
        )?;
        stmt.execute(params![
            o.task_id,
            o.attempt,
            o.pid,
            o.boot_id,
            o.start_ticks.map(|t| t as i64),
            o.binding.map(|b| match b {
                Binding::Executor => "executor",
                Binding::FirstSight => "first_sight",
            }),
            ts(o.first_seen_at),
            ts(o.seen_at),
            o.cpu_moved_at.map(ts),
            o.io_moved_at.map(ts),
            o.gone_since.map(ts),
            serde_json::to_string(&o.members)?,
            o.pooled,
            o.unproven,
            o.heartbeat.map(ts),
            o.heartbeat_moved_at.map(ts),
        ])?;
        Ok(())
    }

    /// Note that a stray candidate is seen by this sweep; what was known of
    /// it before.
    pub fn stray_seen(
        &self,
        boot_id: &str,
        pid: i32,
        start_ticks: u64,
        droid_type: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StrayHistory> {
        let before = read_stray(&self.tx, boot_id, pid, start_ticks, self.sweep_id)?;
        self.tx
            .prepare_cached(
                "INSERT INTO stray_candidates (boot_id, pid, start_ticks, droid_type, first_seen_at, last_sweep_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (boot_id, pid, start_ticks) DO UPDATE SET last_sweep_id = excluded.last_sweep_id",
            )?
            .execute(params![boot_id, pid, start_ticks as i64, droid_type, ts(now), self.sweep_id])?;
        Ok(before.unwrap_or_else(|| StrayHistory::first_sight(now)))
    }

    /// The stray's finding is in this transaction: never record it again.
    pub fn stray_reported(&self, boot_id: &str, pid: i32, start_ticks: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE stray_candidates SET reported = 1 WHERE boot_id = ?1 AND pid = ?2 AND start_ticks = ?3",
            params![boot_id, pid, start_ticks as i64],
        )?;
        Ok(())
    }

    /// Write `rec`'s counts, observations, findings and closes, and commit.
    /// Returns the sweep id and each finding's id.
    pub fn commit(self, rec: &SweepRecord) -> Result<(i64, Vec<i64>)> {
        let c = self.commit_new(rec)?;
        Ok((c.sweep_id, c.ids))
    }

    /// `commit`, also saying which findings were new (first seen now).
    pub fn commit_new(self, rec: &SweepRecord) -> Result<Committed> {
        let sweep_id = self.sweep_id;
        for o in &rec.observations {
            self.observe(o)?;
        }
        let tx = &self.tx;
        tx.execute(
            "UPDATE sweeps SET tasks_seen = ?2, tasks_checked = ?3, findings = ?4, deferral = ?5 WHERE id = ?1",
            params![
                sweep_id,
                rec.tasks_seen as i64,
                rec.tasks_checked as i64,
                rec.findings.len() as i64,
                rec.deferral
            ],
        )?;
        let mut ids = Vec::with_capacity(rec.findings.len());
        let mut first = Vec::with_capacity(rec.findings.len());
        {
            let now = ts(rec.started_at);
            let mut stmt = tx.prepare_cached(
                "INSERT INTO findings (task_id, attempt, kind, droid_type, plan_id, pid, host, evidence, action, outcome,
                                       outcome_detail, first_sweep_id, last_sweep_id, first_seen_at, last_seen_at, inputs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?13, ?14)
                 ON CONFLICT (task_id, attempt, kind) DO UPDATE SET
                    droid_type = excluded.droid_type, plan_id = excluded.plan_id, pid = excluded.pid,
                    host = excluded.host,
                    -- What led to an action stays with it; later sightings only count.
                    evidence = CASE WHEN findings.acted_at IS NULL THEN excluded.evidence ELSE findings.evidence END,
                    inputs = CASE WHEN findings.acted_at IS NULL THEN excluded.inputs ELSE findings.inputs END,
                    action = excluded.action,
                    outcome = excluded.outcome, outcome_detail = excluded.outcome_detail,
                    last_sweep_id = excluded.last_sweep_id, last_seen_at = excluded.last_seen_at,
                    times_seen = times_seen + 1
                 RETURNING id, times_seen = 1",
            )?;
            for f in &rec.findings {
                let (id, new): (i64, bool) = stmt.query_row(
                    params![
                        f.task_id,
                        f.attempt,
                        f.kind.as_str(),
                        f.droid_type,
                        f.plan_id,
                        f.pid,
                        f.host,
                        f.evidence.to_string(),
                        f.action.as_str(),
                        f.outcome.as_str(),
                        f.detail,
                        sweep_id,
                        now,
                        (!f.inputs.is_null()).then(|| f.inputs.to_string()),
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                first.push(new);
                ids.push(id);
            }
            let mut close = tx.prepare_cached(
                "UPDATE findings SET outcome = ?2, outcome_detail = ?3, last_sweep_id = ?4 WHERE id = ?1 AND outcome = 'pending'",
            )?;
            for (id, outcome, detail) in &rec.closes {
                close.execute(params![id, outcome.as_str(), detail, sweep_id])?;
            }
            let mut last = tx.prepare_cached(
                "SELECT MAX(CASE WHEN state = 'queued' THEN '9999' ELSE queued_at END)
                 FROM alerts WHERE finding_id = ?1 AND sink = ?2 AND state != 'cancelled'",
            )?;
            let mut queue = tx.prepare_cached(
                "INSERT INTO alerts (finding_id, sink, state, queued_at, next_attempt_at) VALUES (?1, ?2, 'queued', ?3, ?3)",
            )?;
            for a in &rec.alerts {
                let Some(finding_id) = ids.get(a.finding) else {
                    bail!(
                        "alert for finding #{} of a sweep with {}",
                        a.finding,
                        ids.len()
                    );
                };
                let last: Option<String> =
                    last.query_row(params![finding_id, a.sink], |r| r.get(0))?;
                let realert =
                    chrono::Duration::from_std(a.realert_after).unwrap_or(chrono::Duration::MAX);
                // One still queued is already going to say it.
                let recent = match last.as_deref() {
                    Some("9999") => true,
                    Some(t) => rec.started_at - parse_ts(t)? < realert,
                    None => false,
                };
                if !recent {
                    queue.execute(params![finding_id, a.sink, now])?;
                }
            }
        }
        // A candidate this sweep did not see again starts over if it comes
        // back (two consecutive sweeps), and an identity never comes back.
        // An event sweep looks for no strays: it forgets none.
        if rec.kind != SweepKind::Event.as_str() && rec.kind != SweepKind::Fleet.as_str() {
            self.tx.execute(
                "DELETE FROM stray_candidates WHERE last_sweep_id < ?1",
                [sweep_id],
            )?;
        }
        self.tx
            .commit()
            .context("committing the sweep to the activity log")?;
        Ok(Committed {
            sweep_id,
            ids,
            first_seen: first,
        })
    }
}

/// What the log knew of a stray candidate before this sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayHistory {
    pub first_seen_at: DateTime<Utc>,
    /// Seen by the sweep just before this one.
    pub seen_last_sweep: bool,
    /// Already recorded as a finding.
    pub reported: bool,
}

impl StrayHistory {
    /// A candidate never seen before.
    pub fn first_sight(now: DateTime<Utc>) -> StrayHistory {
        StrayHistory {
            first_seen_at: now,
            seen_last_sweep: false,
            reported: false,
        }
    }
}

/// The candidate as the last sweep before `sweep_id` (or the last sweep at
/// all, for `i64::MAX`) left it.
fn read_stray(
    conn: &Connection,
    boot_id: &str,
    pid: i32,
    start_ticks: u64,
    sweep_id: i64,
) -> Result<Option<StrayHistory>> {
    let row: Option<(String, i64, bool)> = conn
        .prepare_cached(
            "SELECT first_seen_at, last_sweep_id, reported FROM stray_candidates
             WHERE boot_id = ?1 AND pid = ?2 AND start_ticks = ?3",
        )?
        .query_row(params![boot_id, pid, start_ticks as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((first, last, reported)) = row else {
        return Ok(None);
    };
    // Event sweeps do not look for strays: "the last sweep" is the last
    // full one.
    let previous: Option<i64> = conn
        .prepare_cached(
            "SELECT MAX(id) FROM sweeps WHERE id < ?1 AND kind NOT IN ('event', 'fleet')",
        )?
        .query_row([sweep_id], |r| r.get(0))?;
    Ok(Some(StrayHistory {
        first_seen_at: parse_ts(&first)?,
        seen_last_sweep: previous == Some(last),
        reported,
    }))
}

fn read_prior(
    conn: &Connection,
    task_id: &str,
    attempt: i64,
    pid: i32,
) -> Result<Option<Observation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT boot_id, start_ticks, binding, first_seen_at, seen_at,
                cpu_moved_at, io_moved_at, gone_since, members,
                pooled, unproven, heartbeat, heartbeat_moved_at
         FROM observations WHERE task_id = ?1 AND attempt = ?2 AND pid = ?3",
    )?;
    let mut rows = stmt.query(params![task_id, attempt, pid])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let binding: Option<String> = r.get(2)?;
    let members: String = r.get(8)?;
    Ok(Some(Observation {
        task_id: task_id.to_string(),
        attempt,
        pid,
        boot_id: r.get(0)?,
        start_ticks: r.get::<_, Option<i64>>(1)?.map(|t| t as u64),
        binding: match binding.as_deref() {
            Some("executor") => Some(Binding::Executor),
            Some(_) => Some(Binding::FirstSight),
            None => None,
        },
        first_seen_at: parse_ts(&r.get::<_, String>(3)?)?,
        seen_at: parse_ts(&r.get::<_, String>(4)?)?,
        cpu_moved_at: parse_opt(r.get(5)?)?,
        io_moved_at: parse_opt(r.get(6)?)?,
        gone_since: parse_opt(r.get(7)?)?,
        members: serde_json::from_str::<Vec<MemberCounters>>(&members).with_context(|| {
            format!("bad members JSON in the observation of task {task_id} attempt {attempt}")
        })?,
        pooled: r.get(9)?,
        unproven: r.get(10)?,
        heartbeat: parse_opt(r.get(11)?)?,
        heartbeat_moved_at: parse_opt(r.get(12)?)?,
    }))
}

impl ActivityLog {
    /// Open read-write, creating the file and its directory, and migrate.
    pub fn open(path: &Path) -> Result<ActivityLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the activity log's directory {}", dir.display())
            })?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the activity log {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("enabling WAL on {}", path.display()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 512 KiB of page cache, not SQLite's 2 MiB: a sweep's writes land
        // in a few B-tree pages each, and the OS page cache holds the file;
        // at 10,000 tasks the default filled and stayed resident.
        conn.pragma_update(None, "cache_size", -512)?;
        let mut log = ActivityLog {
            conn,
            path: path.to_path_buf(),
        };
        log.migrate()?;
        Ok(log)
    }

    /// Open for reading only (dry runs, and later `twin` and `log`).
    /// `None` when the file does not exist yet or holds no schema yet.
    pub fn open_read_only(path: &Path) -> Result<Option<ActivityLog>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening the activity log {} read-only", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        // A writer that has created the file but not yet committed its first
        // migration (a daemon starting) leaves a log with nothing in it yet.
        if version == 0 {
            return Ok(None);
        }
        if version as usize != MIGRATIONS.len() {
            bail!(
                "the activity log {} is at schema version {version}, this Foreman expects {}; run a command that writes (e.g. `foreman sweep`) to migrate it",
                path.display(),
                MIGRATIONS.len()
            );
        }
        Ok(Some(ActivityLog {
            conn,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection alone, for a thread that writes its own rows (the
    /// monitor's consumer).
    pub fn into_conn(self) -> Connection {
        self.conn
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = version as usize;
        if version > MIGRATIONS.len() {
            bail!(
                "the activity log {} is at schema version {version}, newer than this Foreman ({}); upgrade Foreman",
                self.path.display(),
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("applying migration {}", i + 1))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// What the last sweep knew of a stray candidate (for dry runs).
    pub fn stray(&self, boot_id: &str, pid: i32, start_ticks: u64) -> Result<Option<StrayHistory>> {
        read_stray(&self.conn, boot_id, pid, start_ticks, i64::MAX)
    }

    /// What Foreman remembers of (task id, attempt, pid), if anything.
    pub fn prior(&self, task_id: &str, attempt: i64, pid: i32) -> Result<Option<Observation>> {
        read_prior(&self.conn, task_id, attempt, pid)
    }

    /// Findings whose outcome is still `pending`.
    pub fn open_findings(&self) -> Result<Vec<OpenFinding>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, task_id, attempt, kind, action FROM findings WHERE outcome = 'pending' ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, task_id, attempt, kind, action) = row?;
            out.push(OpenFinding {
                id,
                task_id,
                attempt,
                kind,
                action: Action::parse(&action).unwrap_or(Action::None),
            });
        }
        Ok(out)
    }

    pub fn last_sweep(&self) -> Result<Option<LastSweep>> {
        self.conn
            .query_row(
                "SELECT boot_id, clock_realtime_ns, clock_monotonic_ns, clock_boottime_ns, hang_floor
                 FROM sweeps WHERE clock_monotonic_ns IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .optional()?
            .map(|(boot, rt, mono, boot_ns, floor)| {
                Ok(LastSweep {
                    boot_id: boot.unwrap_or_default(),
                    clocks: Clocks {
                        realtime_ns: rt,
                        monotonic_ns: mono,
                        boottime_ns: boot_ns,
                    },
                    hang_floor: parse_opt(floor)?,
                })
            })
            .transpose()
    }

    /// Commit a sweep's record, observations and findings at once, before
    /// anything acts. Returns the sweep id and each finding's id.
    pub fn record(&mut self, rec: &SweepRecord) -> Result<(i64, Vec<i64>)> {
        self.begin(rec)?.commit(rec)
    }

    /// Open the sweep's one transaction and write its row from `rec`'s
    /// header. A sweep streams its observations through the transaction as
    /// it judges, so it never holds every task's observation at once.
    pub fn begin(&mut self, rec: &SweepRecord) -> Result<SweepTx<'_>> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO sweeps (kind, host, mode, started_at, error, deferral,
                                 boot_id, clock_realtime_ns, clock_monotonic_ns, clock_boottime_ns, hang_floor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                rec.kind,
                rec.host,
                rec.mode,
                ts(rec.started_at),
                rec.error,
                rec.deferral,
                rec.boot_id,
                rec.clocks.realtime_ns,
                rec.clocks.monotonic_ns,
                rec.clocks.boottime_ns,
                rec.hang_floor.map(ts),
            ],
        )?;
        let sweep_id = tx.last_insert_rowid();
        Ok(SweepTx { tx, sweep_id })
    }

    /// Queued outbox rows whose next attempt is due, by id, after `after_id`.
    pub fn due_alerts(
        &self,
        now: DateTime<Utc>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<DueAlert>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM alerts WHERE state = 'queued' AND next_attempt_at <= ?1 AND id > ?2
             ORDER BY id LIMIT ?3",
        )?;
        let ids = stmt
            .query_map(params![ts(now), after_id, limit as i64], |r| {
                r.get::<_, i64>(0)
            })?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.outbox_row(id)?);
        }
        Ok(out)
    }

    /// The queued outbox rows of one initiative, due or not.
    pub fn initiative_alerts(&self, initiative_id: i64) -> Result<Vec<DueAlert>> {
        let ids = self
            .conn
            .prepare_cached(
                "SELECT id FROM alerts WHERE initiative_id = ?1 AND state = 'queued' ORDER BY id",
            )?
            .query_map([initiative_id], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.outbox_row(id)?);
        }
        Ok(out)
    }

    /// One outbox row with its finding or initiative.
    fn outbox_row(&self, id: i64) -> Result<Option<DueAlert>> {
        let head = self
            .conn
            .prepare_cached(
                "SELECT sink, queued_at, attempts, finding_id, initiative_id FROM alerts WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()?;
        let Some((sink, queued_at, attempts, finding, initiative)) = head else {
            return Ok(None);
        };
        let about = match (finding, initiative) {
            (Some(f), _) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = ?1"
                ))?
                .query_row([f], |r| StoredFinding::read(r, 0))
                .optional()?
                .map(About::Finding),
            (None, Some(i)) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {INITIATIVE_COLUMNS} FROM initiatives i WHERE i.id = ?1"
                ))?
                .query_row([i], |r| StoredInitiative::read(r, 0))
                .optional()?
                .map(About::Initiative),
            (None, None) => None,
        };
        let Some(about) = about else {
            return Ok(None);
        };
        Ok(Some(DueAlert {
            id,
            sink,
            queued_at: parse_ts(&queued_at)?,
            attempts,
            about,
        }))
    }

    /// When the earliest queued row is due, if any is queued. Alerts of a
    /// finding not yet acted on wait for the sweep that settles it.
    pub fn next_alert_due(&self) -> Result<Option<DateTime<Utc>>> {
        let t: Option<String> = self.conn.query_row(
            "SELECT MIN(a.next_attempt_at) FROM alerts a LEFT JOIN findings f ON f.id = a.finding_id
             WHERE a.state = 'queued' AND (a.initiative_id IS NOT NULL OR f.outcome != 'pending')",
            [],
            |r| r.get(0),
        )?;
        parse_opt(t)
    }

    /// Take a queued row for one delivery attempt: its next attempt moves to
    /// `until`, so no other process (a daemon beside `foreman wellbeing`)
    /// sends it meanwhile, and a crash mid-delivery frees it then. False
    /// when it is not due any more (someone else took it, or it left the
    /// queue).
    pub fn alert_claim(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE alerts SET next_attempt_at = ?3 WHERE id = ?1 AND state = 'queued' AND next_attempt_at <= ?2",
            params![id, ts(now), ts(until)],
        )?;
        Ok(n == 1)
    }

    /// A failed attempt: counted, and the next one scheduled.
    pub fn alert_failed(
        &self,
        id: i64,
        at: DateTime<Utc>,
        error: &str,
        next: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE alerts SET attempts = attempts + 1, last_attempt_at = ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1 AND state = 'queued'",
            params![id, ts(at), error, ts(next)],
        )?;
        Ok(())
    }

    /// Hold every queued alert of `sink` until `until`: a sink that just
    /// failed is not tried again, for another alert, before its backoff.
    pub fn alerts_hold_sink(&self, sink: &str, until: DateTime<Utc>) -> Result<()> {
        let until = ts(until);
        self.conn.execute(
            "UPDATE alerts SET next_attempt_at = ?2 WHERE sink = ?1 AND state = 'queued' AND next_attempt_at < ?2",
            params![sink, until],
        )?;
        Ok(())
    }

    /// Hold one alert until `until` without counting an attempt.
    pub fn alert_hold(&self, id: i64, until: DateTime<Utc>, why: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE alerts SET next_attempt_at = ?2, last_error = ?3 WHERE id = ?1 AND state = 'queued'",
            params![id, ts(until), why],
        )?;
        Ok(())
    }

    /// Whether Foreman signalled anything on behalf of a finding.
    pub fn finding_signalled(&self, finding_id: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM finding_signals WHERE finding_id = ?1 AND result = 'delivered')",
            [finding_id],
            |r| r.get(0),
        )?)
    }

    /// The alert leaves the queue. `attempted` counts a delivery attempt.
    pub fn alert_closed(
        &self,
        id: i64,
        end: AlertEnd,
        at: DateTime<Utc>,
        reason: Option<&str>,
        attempted: bool,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE alerts SET state = ?2, closed_at = ?3, close_reason = ?4,
                    attempts = attempts + ?5, last_attempt_at = CASE WHEN ?5 = 1 THEN ?3 ELSE last_attempt_at END
             WHERE id = ?1 AND state = 'queued'",
            params![id, end.as_str(), ts(at), reason, attempted as i64],
        )?;
        Ok(())
    }

    /// What a pending finding kept when it was committed: its evidence and
    /// the judge's inputs (with the probed tree). A termination a crash
    /// interrupted is completed from these.
    pub fn resume_of(&self, finding_id: i64) -> Result<Option<Interrupted>> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT evidence, inputs FROM findings WHERE id = ?1",
                params![finding_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((evidence, inputs)) = row else {
            return Ok(None);
        };
        Ok(Some(Interrupted {
            finding_id,
            evidence: serde_json::from_str(&evidence)
                .with_context(|| format!("finding {finding_id}: evidence is not JSON"))?,
            inputs: match inputs {
                Some(i) => serde_json::from_str(&i)
                    .with_context(|| format!("finding {finding_id}: inputs are not JSON"))?,
                None => serde_json::Value::Null,
            },
        }))
    }

    /// Whether Foreman recorded its intent to signal this finding's tree
    /// (`sweep::INTENDED`): it had begun terminating it.
    pub fn finding_intended(&self, finding_id: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM finding_signals WHERE finding_id = ?1 AND signal = 'INTENT')",
            params![finding_id],
            |r| r.get(0),
        )?)
    }

    /// Actions taken since `since`: tasks marked, strays terminated, trees
    /// that survived SIGKILL. The rolling-window brake counts these. Shadow
    /// mode's would-be actions are not actions: they recur every sweep
    /// until the task ends, and counting them would brake the very sweeps
    /// that show them.
    pub fn actions_since(&self, since: DateTime<Utc>) -> Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM findings WHERE
               outcome IN ('marked_failed', 'terminated', 'unkillable') AND acted_at >= ?1",
            params![ts(since)],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as usize)
    }

    /// Record what an action did.
    pub fn set_outcome(
        &self,
        finding_id: i64,
        outcome: Outcome,
        detail: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE findings SET outcome = ?2, outcome_detail = COALESCE(?3, outcome_detail), acted_at = ?4 WHERE id = ?1",
            params![finding_id, outcome.as_str(), detail, ts(at)],
        )?;
        Ok(())
    }

    pub fn add_signal(
        &self,
        finding_id: i64,
        at: DateTime<Utc>,
        pid: i32,
        start_ticks: u64,
        signal: &str,
        result: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO finding_signals (finding_id, at, pid, start_ticks, signal, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![finding_id, ts(at), pid, start_ticks as i64, signal, result],
        )?;
        Ok(())
    }

    pub fn finish_sweep(
        &self,
        sweep_id: i64,
        finished_at: DateTime<Utc>,
        actions: usize,
        action_errors: usize,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sweeps SET finished_at = ?2, actions = ?3, action_errors = ?4 WHERE id = ?1",
            params![
                sweep_id,
                ts(finished_at),
                actions as i64,
                action_errors as i64
            ],
        )?;
        Ok(())
    }

    /// Delete what is older than the retention, and observations of tasks
    /// not seen for a day (they matter only while a task runs).
    pub fn prune(&self, retention: Duration, now: DateTime<Utc>) -> Result<usize> {
        let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let cutoff = ts(now
            .checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC));
        let day = ts(now - chrono::Duration::days(1));
        let mut n = self.conn.execute(
            "DELETE FROM findings WHERE last_seen_at < ?1 AND outcome != 'pending'",
            [&cutoff],
        )?;
        n += self.conn.execute(
            "DELETE FROM sweeps WHERE started_at < ?1 AND id NOT IN (SELECT first_sweep_id FROM findings UNION SELECT last_sweep_id FROM findings)",
            [&cutoff],
        )?;
        n += self
            .conn
            .execute("DELETE FROM observations WHERE seen_at < ?1", [&day])?;
        // A pushed heartbeat older than a day belongs to a task long over
        // (a live one is pushed again within its timeout).
        n += self
            .conn
            .execute("DELETE FROM pushed_heartbeats WHERE at < ?1", [&day])?;
        // The latest scheduled run stays: it is how a restart knows whether
        // it missed a slot.
        n += self.conn.execute(
            "DELETE FROM wellbeing_runs WHERE started_at < ?1 AND id IS NOT (
                 SELECT id FROM wellbeing_runs WHERE slot_at IS NOT NULL ORDER BY slot_at DESC LIMIT 1)",
            [&cutoff],
        )?;
        Ok(n)
    }
}

/// The latest sweep as a health check sees it: could it read the executor,
/// and is Foreman deferring hung verdicts (see `sweep_health`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepHealth {
    pub sweep_id: i64,
    pub started_at: DateTime<Utc>,
    /// `snapshot_error: …` when the executor could not be read.
    pub error: Option<String>,
    /// `None` when the latest sweep deferred nothing.
    pub deferral: Option<Deferral>,
}

/// Hung verdicts held back for starvation, as of the latest sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deferral {
    /// The sweep's own `deferral` (Foreman starved, a suspend or clock
    /// step, hung verdicts deferred), else the note of the oldest hung
    /// verdict it deferred.
    pub reason: String,
    /// When the deferral began, without a break since.
    pub since: DateTime<Utc>,
    /// Hung verdicts the latest sweep deferred (`deferred_starvation`).
    pub hung_deferred: u64,
}

impl Deferral {
    /// How long it has lasted at `now`.
    pub fn lasted(&self, now: DateTime<Utc>) -> Duration {
        (now - self.since).to_std().unwrap_or_default()
    }
}

/// The latest sweep's health; `None` before the first. The latest sweep is
/// the latest committed: its record and decisions are in, though its
/// actions (and `finished_at`) may still be under way.
///
/// A sweep *defers* when its row has a `deferral` (why hung verdicts
/// waited: Foreman itself starved, the host suspended or its clock
/// stepped, tasks' own trees runnable without CPU) or it left at least one
/// finding `deferred_starvation`. Foreman has been deferring since the
/// earlier of the start of the unbroken run of latest sweeps that have a
/// `deferral`, and the first sighting of the oldest hung finding the
/// latest sweep deferred. One sweep that defers nothing ends it.
pub fn sweep_health(conn: &Connection) -> Result<Option<SweepHealth>> {
    let latest: Option<(i64, String, Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT id, started_at, error, deferral FROM sweeps WHERE kind NOT IN ('event', 'fleet') ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .context("reading the latest sweep")?;
    let Some((sweep_id, started_at, error, sweep_deferral)) = latest else {
        return Ok(None);
    };
    let (hung, oldest, note): (i64, Option<String>, Option<String>) = conn
        .query_row(
            "SELECT COUNT(*), MIN(first_seen_at),
                    (SELECT outcome_detail FROM findings
                     WHERE outcome = 'deferred_starvation' AND last_sweep_id = ?1
                     ORDER BY first_seen_at, id LIMIT 1)
             FROM findings WHERE outcome = 'deferred_starvation' AND last_sweep_id = ?1",
            [sweep_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .context("reading the hung verdicts the latest sweep deferred")?;
    let mut since = parse_opt(oldest)?;
    if sweep_deferral.is_some() {
        // The last sweep before it that deferred nothing.
        let free: Option<i64> = conn
            .query_row(
                "SELECT id FROM sweeps WHERE deferral IS NULL AND kind NOT IN ('event', 'fleet') AND id < ?1 ORDER BY id DESC LIMIT 1",
                [sweep_id],
                |r| r.get(0),
            )
            .optional()
            .context("reading the last sweep that deferred nothing")?;
        let start: String = conn
            .query_row(
                "SELECT MIN(started_at) FROM sweeps WHERE id > ?1 AND id <= ?2 AND kind NOT IN ('event', 'fleet')",
                params![free.unwrap_or(0), sweep_id],
                |r| r.get(0),
            )
            .context("reading when the deferral began")?;
        let start = parse_ts(&start)?;
        since = Some(since.map_or(start, |s| s.min(start)));
    }
    let deferral = since.map(|since| Deferral {
        reason: sweep_deferral
            .or(note)
            .unwrap_or_else(|| "hung verdicts deferred for starvation".to_string()),
        since,
        hung_deferred: hung.max(0) as u64,
    });
    Ok(Some(SweepHealth {
        sweep_id,
        started_at: parse_ts(&started_at)?,
        error,
        deferral,
    }))
}

impl ActivityLog {
    /// `sweep_health` of this log.
    pub fn sweep_health(&self) -> Result<Option<SweepHealth>> {
        sweep_health(&self.conn)
    }
}
