//! The executor's PostgreSQL database: the contract's `tasks` table with
//! PostgreSQL types (TIMESTAMPTZ times, or TEXT / numbers in the formats
//! the SQLite source reads), or any schema through `snapshot_query` /
//! `mark_failed_query`. One Foreman per host reads its own host's rows.
//!
//! One connection, opened lazily and kept: a snapshot is one round trip
//! (its statement prepared once per connection), a mark one more. A lost
//! connection fails that call (a `snapshot_error` sweep, a mark `error`)
//! and is opened again on the next, no sooner than a backoff after the
//! last failed attempt, so a PostgreSQL restart costs a sweep or two and
//! never the daemon. Marks are single autocommit statements: Foreman never
//! holds a transaction, so never a lock, on the executor's table.
//!
//! The same connection carries the fleet's business (`crate::fleet`): this
//! Foreman's heartbeat row and the advisory lock that makes one Foreman of
//! the fleet its leader (a session lock, released by PostgreSQL when the
//! connection ends, however it ends).

use super::{bad_row, parse_row, Executor, History, Marked};
use crate::config::{ExecutorConfig, ExecutorTz, FleetConfig};
use crate::fleet::{Beat, Fleet, ForemanRow, HostRow, View};
use crate::model::{Row, Snapshot, Task, TaskState};
use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use chrono::{DateTime, Duration as Span, Local, NaiveDate, NaiveDateTime, Utc};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, Statement};
use serde_json::{Map, Value};
use std::error::Error as StdError;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The contract's default mark: compare-and-set on (id, RUNNING, pid,
/// attempt). Parameters: `$1` id, `$2` pid, `$3` attempt, `$4` reason,
/// `$5` finished_at (bound in the column's own type).
pub const DEFAULT_MARK_QUERY: &str =
    "UPDATE tasks SET state = 'FAILED', finished_at = $5, error = $4 \
     WHERE id = $1 AND state = 'RUNNING' AND pid IS NOT DISTINCT FROM $2 AND attempt = $3";

/// Backoff between connection attempts after a failure: doubling from the
/// first to the last (or the sweep interval, if shorter: each sweep tries
/// at least once), so a database that is down is not hammered by every
/// host's Foreman (events, the act stage's re-reads, twin requests between
/// sweeps), and one that is back is found within a minute.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_LAST: Duration = Duration::from_secs(60);

/// The advisory lock's first key: "Form" in ASCII. The second is a hash of
/// the fleet's schema, so two fleets on one database have two leaders.
const LOCK_CLASS: i32 = 0x466f_726d;

/// How TLS is asked for in the URL (`sslmode`), with libpq's meanings:
/// `require` encrypts without checking who answers; `verify-full` checks
/// the certificate against `sslrootcert` (or the public roots) and the
/// host name. `verify-ca` is refused rather than approximated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tls {
    Disable,
    Prefer,
    Require,
    VerifyFull { root: Option<PathBuf> },
}

/// The URL split into what tokio-postgres reads and the TLS settings it
/// does not (it knows no `verify-full` and no `sslrootcert`).
struct Parsed {
    config: postgres::Config,
    tls: Tls,
}

/// Whether `url` is one Foreman can use: a libpq URL or key=value string
/// with a TLS mode it supports. The message never repeats the URL (it may
/// hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

fn parse_url(url: &str) -> Result<Parsed, String> {
    let mut mode = None;
    let mut root = None;
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => mode = Some(percent_decode(v)),
                "sslrootcert" => root = Some(percent_decode(v)),
                _ => kept.push(pair),
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.trim_matches('\'').to_string()),
                Some(("sslrootcert", v)) => root = Some(v.trim_matches('\'').to_string()),
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    let tls = match mode.as_deref() {
        None | Some("prefer") => Tls::Prefer,
        Some("disable") => Tls::Disable,
        Some("allow") => Tls::Prefer,
        Some("require") => Tls::Require,
        Some("verify-full") => Tls::VerifyFull {
            root: root.map(PathBuf::from),
        },
        Some("verify-ca") => return Err(
            "sslmode=verify-ca is not supported: use verify-full (which also checks the host name)"
                .into(),
        ),
        Some(other) => {
            return Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-full"
            ))
        }
    };
    let mut config = postgres::Config::from_str(&rest)
        .map_err(|e| format!("not a PostgreSQL URL Foreman can read: {e}"))?;
    if config.get_hosts().is_empty() {
        return Err("the URL names no host (e.g. postgres://foreman@db.internal/executor)".into());
    }
    config.ssl_mode(match tls {
        Tls::Disable => postgres::config::SslMode::Disable,
        Tls::Prefer => postgres::config::SslMode::Prefer,
        Tls::Require | Tls::VerifyFull { .. } => postgres::config::SslMode::Require,
    });
    Ok(Parsed { config, tls })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How `finished_at` is stored, which decides how the default snapshot
/// query bounds the finished rows it reads by `history_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    /// TIMESTAMPTZ: compared with the database's clock.
    Time,
    /// TIMESTAMP without time zone, in the executor's `timezone`: the
    /// database cannot know that zone, so from the day before the window
    /// on, and the exact bound is applied to the parsed rows.
    NaiveTime,
    /// Unix seconds as a number.
    Number,
    /// Text (RFC 3339, `YYYY-MM-DD HH:MM:SS`, or unix seconds): ISO texts
    /// from the day before the window on, and every text that is not ISO
    /// (a cast would fail the whole statement on one malformed row); the
    /// exact bound is applied to the parsed rows.
    Text,
}

fn snapshot_query(time: TimeColumn) -> String {
    let finished = match time {
        TimeColumn::Time => "finished_at >= now() - make_interval(secs => $2)",
        TimeColumn::NaiveTime => {
            "finished_at >= (now() - make_interval(secs => $2) - interval '1 day')::timestamp"
        }
        TimeColumn::Number => "finished_at >= extract(epoch FROM now())::float8 - $2::float8",
        TimeColumn::Text => {
            "finished_at >= to_char(now() - make_interval(secs => $2) - interval '1 day', 'YYYY-MM-DD') \
             OR finished_at !~ '^[0-9]{4}-'"
        }
    };
    format!(
        "SELECT * FROM tasks WHERE host = $1 AND \
         (state IN ('RUNNING', 'PENDING') OR finished_at IS NULL OR {finished})"
    )
}

pub struct PostgresExecutor {
    parsed: Parsed,
    /// Where the URL came from, for messages (never the URL).
    source: String,
    host: String,
    fleet: Option<FleetConfig>,
    custom_snapshot: Option<String>,
    mark_query: String,
    timeout: Duration,
    history: Duration,
    tz: ExecutorTz,
    backoff_cap: Duration,
    state: Mutex<State>,
    round_trips: AtomicU64,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// Failed connection attempts in a row.
    failures: u32,
    /// This Foreman's last beat: (boot id, pid, start).
    beat: Option<(String, i64, DateTime<Utc>)>,
    /// Another Foreman beat as this host since our last beat (two hosts
    /// configured with one `host` name): what it was, and when seen.
    twin_host: Option<(String, Instant)>,
    /// No new attempt before this (backoff).
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

struct Conn {
    client: Client,
    snapshot: Statement,
    /// The default snapshot query bounds finished rows by a day's margin
    /// only (TEXT and TIMESTAMP `finished_at`): the window is applied to
    /// the parsed rows.
    bound_rows: bool,
    mark: Statement,
    /// This connection holds the fleet's advisory lock.
    leader: bool,
}

impl PostgresExecutor {
    pub fn new(
        cfg: &ExecutorConfig,
        host: &str,
        fleet: Option<&FleetConfig>,
        interval: Duration,
    ) -> Result<PostgresExecutor> {
        let url = cfg
            .url
            .as_ref()
            .context("kind = \"postgres\" needs url_env or url_file")?;
        let parsed = parse_url(&url.0)
            .map_err(|why| anyhow!("the PostgreSQL URL ({}): {why}", cfg.url_source))?;
        Ok(PostgresExecutor {
            parsed,
            source: cfg.url_source.clone(),
            host: host.to_string(),
            fleet: fleet.cloned(),
            custom_snapshot: cfg.snapshot_query.clone(),
            mark_query: cfg
                .mark_failed_query
                .clone()
                .unwrap_or_else(|| DEFAULT_MARK_QUERY.into()),
            timeout: cfg.timeout,
            history: cfg.history_window,
            tz: cfg.timezone,
            backoff_cap: BACKOFF_LAST.min(interval),
            state: Mutex::new(State::default()),
            round_trips: AtomicU64::new(0),
        })
    }

    /// Statements sent to the server since this executor was made (each
    /// one round trip): what the benchmark and the tests count.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow!("the PostgreSQL connection's lock is poisoned"))
    }

    /// Run `f` on the connection, opening it first if needed. An error
    /// that closed the connection drops it, so the next call reconnects.
    fn with<T>(&self, f: impl FnOnce(&Self, &mut Conn) -> Result<T>) -> Result<T> {
        let mut state = self.lock()?;
        if state.conn.is_none() {
            if let Some(at) = state.retry_at.filter(|at| Instant::now() < *at) {
                bail!(
                    "PostgreSQL ({}) is unreachable; next attempt in {:.0?} (last error: {})",
                    self.source,
                    at.saturating_duration_since(Instant::now()),
                    state.last_error.as_deref().unwrap_or("?")
                );
            }
            match self.connect() {
                Ok(c) => {
                    if state.failures > 0 {
                        info!(source = %self.source, failures = state.failures, "connected to PostgreSQL again");
                    }
                    state.failures = 0;
                    state.retry_at = None;
                    state.last_error = None;
                    state.conn = Some(c);
                }
                Err(e) => {
                    let backoff = BACKOFF_FIRST
                        .saturating_mul(1 << state.failures.min(6))
                        .min(self.backoff_cap);
                    state.failures = state.failures.saturating_add(1);
                    state.retry_at = Some(Instant::now() + backoff);
                    state.last_error = Some(format!("{e:#}"));
                    return Err(e);
                }
            }
        }
        let Some(conn) = state.conn.as_mut() else {
            bail!("no PostgreSQL connection");
        };
        let result = f(self, conn);
        // A closed connection, or prepared statements the server no longer
        // honours (the table's columns changed under a `SELECT *`): start
        // afresh on the next call.
        if conn.client.is_closed() || result.as_ref().err().is_some_and(stale_statement) {
            if conn.leader {
                warn!("the PostgreSQL connection closed: this Foreman no longer leads the fleet");
            }
            state.conn = None;
            state.last_error = result.as_ref().err().map(|e| format!("{e:#}"));
        }
        result
    }

    fn connect(&self) -> Result<Conn> {
        let mut config = self.parsed.config.clone();
        let ms = self.timeout.as_millis().min(i32::MAX as u128);
        // Server side: no statement (and no lock wait) longer than the
        // timeout, and a dead client's session (so its advisory lock) is
        // dropped within about a minute instead of the kernel's two hours.
        let ours = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms} \
             -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3 -c TimeZone=UTC -c client_min_messages=warning"
        );
        let options = match config.get_options() {
            Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(&options);
        config.application_name(&format!("foreman@{}", self.host));
        config.connect_timeout(self.timeout);
        // Client side: a server that vanished (a partition) fails the call
        // within the timeout instead of hanging the sweep.
        config.keepalives_idle(Duration::from_secs(30));
        config.tcp_user_timeout(self.timeout);
        let mut client = match &self.parsed.tls {
            Tls::Disable => config.connect(postgres::NoTls),
            tls => config.connect(tls_connector(tls)?),
        }
        .with_context(|| format!("connecting to PostgreSQL ({})", self.source))?;
        self.trip();
        if let Some(fleet) = &self.fleet {
            migrate(&mut client, &fleet.schema).with_context(|| {
                format!("creating the fleet's table in schema {:?}", fleet.schema)
            })?;
            self.trip();
        }
        let (query, bound_rows) = match &self.custom_snapshot {
            Some(q) => (q.clone(), false),
            None => {
                self.trip();
                let time = time_column(&mut client)?;
                (
                    snapshot_query(time),
                    matches!(time, TimeColumn::Text | TimeColumn::NaiveTime),
                )
            }
        };
        let snapshot = client
            .prepare(&query)
            .context("preparing the snapshot query")?;
        self.trip();
        let mark = client
            .prepare(&self.mark_query)
            .context("preparing the mark-failed query")?;
        self.trip();
        Ok(Conn {
            client,
            snapshot,
            bound_rows,
            mark,
            leader: false,
        })
    }

    /// Refuse to read or mark while another Foreman beats under this
    /// host's name: each would judge the other host's pids in its own
    /// `/proc`, and find them dead.
    fn check_alone(&self) -> Result<()> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        let state = self.lock()?;
        if let Some((other, at)) = &state.twin_host {
            if at.elapsed() < fleet.host_lost_after {
                bail!(
                    "another Foreman beats as host {:?} ({other}): two hosts share one `host` name, and each would judge the other's tasks against its own /proc; give each host its own `host` (the value the executor writes in tasks.host). Nothing is judged or marked until only one beats for {}",
                    self.host,
                    humantime::format_duration(fleet.host_lost_after)
                );
            }
        }
        Ok(())
    }

    fn read(&self, history: Duration) -> Result<Snapshot> {
        self.check_alone()?;
        self.with(|me, conn| {
            let all: [Param; 2] = [
                Param::Text(me.host.clone()),
                Param::Float(history.as_secs_f64()),
            ];
            let n = conn.snapshot.params().len();
            if n > all.len() {
                bail!("the snapshot query takes {n} parameters; Foreman gives two: $1 this host, $2 the history window in seconds");
            }
            let rows = conn
                .client
                .query_raw(&conn.snapshot, all[..n].iter())
                .context("reading the snapshot")?;
            me.trip();
            let mut out = collect(rows, me.tz)?;
            if conn.bound_rows {
                let since = Span::from_std(history)
                    .ok()
                    .and_then(|h| Utc::now().checked_sub_signed(h));
                if let Some(since) = since {
                    out.retain(|r| !finished_before(r, since));
                }
            }
            Ok(Snapshot { rows: out })
        })
    }
}

impl PostgresExecutor {
    /// Remember this beat, and whether the row held someone else's before.
    fn note_beat(
        &self,
        before: Option<(String, i64, DateTime<Utc>)>,
        mine: (String, i64, DateTime<Utc>),
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let (Some(last), Some(before)) = (&state.beat, &before) {
            if last != before {
                tracing::error!(
                    host = %self.host,
                    other_boot_id = %before.0,
                    other_pid = before.1,
                    "another Foreman beats as this host: two hosts share one `host` name; judging and marking stop until only one does"
                );
                state.twin_host = Some((
                    format!(
                        "boot id {}, pid {}, started {}",
                        before.0,
                        before.1,
                        before.2.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    Instant::now(),
                ));
            }
        }
        state.beat = Some(mine);
    }
}

/// A well-formed row of a task that finished before `since` (one the
/// default query's day-wide bound let through).
fn finished_before(r: &Row, since: DateTime<Utc>) -> bool {
    matches!(r, Row::Task(t)
        if !matches!(t.state, TaskState::Running | TaskState::Pending)
            && t.finished_at.is_some_and(|f| f < since))
}

/// Whether an error says the connection's prepared statements are stale:
/// `cached plan must not change result type` (0A000) or a statement the
/// server forgot (26000).
fn stale_statement(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<postgres::Error>())
        .filter_map(|pe| pe.code())
        .any(|code| {
            *code == postgres::error::SqlState::FEATURE_NOT_SUPPORTED
                || *code == postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME
        })
}

/// Every row of a result, parsed; one malformed row is that row's problem.
fn collect(mut rows: postgres::RowIter<'_>, tz: ExecutorTz) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    while let Some(r) = rows.next().context("reading the snapshot")? {
        out.push(row(&r, tz));
    }
    Ok(out)
}

fn row(r: &postgres::Row, tz: ExecutorTz) -> Row {
    let mut map = Map::new();
    let mut unreadable = None;
    for (i, col) in r.columns().iter().enumerate() {
        let name = col.name();
        if map.contains_key(name) {
            continue;
        }
        let cell = match r.try_get::<_, Cell>(i) {
            Ok(c) => c,
            Err(e) => Cell(Value::from(format!("(unreadable: {e})"))),
        };
        if name == "id" {
            if let Some(why) = &cell_error(&cell) {
                unreadable = Some(format!("id {why}; Foreman cannot name it to the executor"));
            }
        }
        map.insert(name.to_string(), cell.0);
    }
    match unreadable {
        None => parse_row(&map, tz),
        Some(reason) => bad_row(&map, reason),
    }
}

fn cell_error(c: &Cell) -> Option<String> {
    match &c.0 {
        Value::String(s) if s.starts_with("(unsupported type") || s.starts_with("(unreadable") => {
            Some(format!("is {s}"))
        }
        _ => None,
    }
}

/// How `tasks.finished_at` is stored (the default snapshot query is built
/// for it). A missing table or column is an error that says so.
fn time_column(client: &mut Client) -> Result<TimeColumn> {
    let row = client
        .query_opt(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass('tasks') AND a.attname = 'finished_at' AND NOT a.attisdropped",
            &[],
        )
        .context("reading the type of tasks.finished_at")?;
    let Some(row) = row else {
        bail!("the executor's database has no table `tasks` with a column `finished_at` (in the search path): create the contract's table, or give snapshot_query");
    };
    let ty: String = row.get(0);
    let naive = ty.starts_with("timestamp") && !ty.ends_with("with time zone");
    Ok(if naive {
        TimeColumn::NaiveTime
    } else if ty.starts_with("timestamp") {
        TimeColumn::Time
    } else if [
        "integer",
        "bigint",
        "smallint",
        "double precision",
        "real",
        "numeric",
    ]
    .iter()
    .any(|t| ty.starts_with(t))
    {
        TimeColumn::Number
    } else {
        TimeColumn::Text
    })
}

/// The fleet's table, in the fleet's schema, made once by whichever
/// Foreman comes first (an advisory transaction lock keeps two from
/// racing on the catalog).
fn migrate(client: &mut Client, schema: &str) -> Result<()> {
    // Once made, the table needs no privilege beyond using it.
    let made: bool = client
        .query_one(
            "SELECT to_regclass(format('%I.foreman_hosts', $1::text)) IS NOT NULL",
            &[&schema],
        )?
        .get(0);
    if made {
        return Ok(());
    }
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, 0)",
        &[&(LOCK_CLASS.wrapping_add(1))],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS \"{schema}\".foreman_hosts (
           host TEXT PRIMARY KEY,
           boot_id TEXT NOT NULL,
           version TEXT NOT NULL,
           pid BIGINT NOT NULL,
           started_at TIMESTAMPTZ NOT NULL,
           last_seen TIMESTAMPTZ NOT NULL,
           last_sweep_at TIMESTAMPTZ,
           running BIGINT NOT NULL DEFAULT 0,
           findings BIGINT NOT NULL DEFAULT 0,
           actions BIGINT NOT NULL DEFAULT 0,
           snapshot_error TEXT
         );"
    ))?;
    tx.commit()?;
    Ok(())
}

fn lock_key(schema: &str) -> i32 {
    // FNV-1a, 32 bits: stable across versions and hosts.
    let mut h: u32 = 0x811c_9dc5;
    for b in schema.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

impl Executor for PostgresExecutor {
    fn snapshot(&self) -> Result<Snapshot> {
        self.read(self.history)
    }

    fn history(&self, window: Duration) -> Result<History> {
        Ok(History {
            snapshot: self.read(window)?,
            droid_types: self.with(|me, conn| {
                me.trip();
                droid_types(&mut conn.client)
            })?,
        })
    }

    fn mark_failed(&self, task: &Task, reason: &str, at: DateTime<Utc>) -> Result<Marked> {
        self.check_alone()?;
        self.with(|me, conn| {
            let all: [Param; 5] = [
                Param::Text(task.id.clone()),
                Param::Int(task.pid.map(i64::from)),
                Param::Int(Some(task.attempt)),
                Param::Text(reason.to_string()),
                Param::Time(at, me.tz),
            ];
            let n = conn.mark.params().len();
            if n > all.len() {
                bail!("the mark-failed query takes {n} parameters; Foreman gives five: $1 id, $2 pid, $3 attempt, $4 reason, $5 finished_at");
            }
            let params: Vec<&(dyn ToSql + Sync)> =
                all[..n].iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let changed = conn
                .client
                .execute(&conn.mark, &params)
                .with_context(|| format!("marking task {} failed", task.id))?;
            me.trip();
            Ok(if changed > 0 {
                Marked::Failed
            } else {
                Marked::NotRunning
            })
        })
    }

    fn fleet(&self) -> Option<&dyn Fleet> {
        self.fleet.as_ref().map(|_| self as &dyn Fleet)
    }
}

/// `droid_types (name, enabled)`, when the executor has that table.
fn droid_types(client: &mut Client) -> Result<Option<std::collections::BTreeMap<String, bool>>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('droid_types') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let mut out = std::collections::BTreeMap::new();
    for r in client.query("SELECT name, enabled FROM droid_types", &[])? {
        let name = r.try_get::<_, Cell>(0).map(|c| c.0).unwrap_or(Value::Null);
        let enabled = r.try_get::<_, Cell>(1).map(|c| c.0).unwrap_or(Value::Null);
        match (name.as_str(), super::parse_enabled(&enabled)) {
            (Some(n), Some(on)) => {
                out.insert(n.to_string(), on);
            }
            _ => {
                warn!(name = %name, enabled = %enabled, "droid_types row left out: its name or enabled is unreadable")
            }
        }
    }
    Ok(Some(out))
}

impl Fleet for PostgresExecutor {
    fn beat(&self, beat: &Beat) -> Result<bool> {
        let Some(fleet) = &self.fleet else {
            bail!("no [fleet]");
        };
        let schema = fleet.schema.clone();
        self.with(|me, conn| {
            let key = lock_key(&schema);
            // The lock is taken once and held by the session; asking again
            // would stack it, so a leader only checks that it still holds it.
            let sql = format!(
                "WITH beat AS (
                   INSERT INTO \"{schema}\".foreman_hosts
                     (host, boot_id, version, pid, started_at, last_seen, last_sweep_at, running, findings, actions, snapshot_error)
                   VALUES ($1, $2, $3, $4, $5, now(), $6, $7, $8, $9, $10)
                   ON CONFLICT (host) DO UPDATE SET boot_id = EXCLUDED.boot_id, version = EXCLUDED.version,
                     pid = EXCLUDED.pid, started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen,
                     last_sweep_at = EXCLUDED.last_sweep_at, running = EXCLUDED.running,
                     findings = EXCLUDED.findings, actions = EXCLUDED.actions,
                     snapshot_error = EXCLUDED.snapshot_error
                   RETURNING 1),
                 old AS (SELECT boot_id, pid, started_at FROM \"{schema}\".foreman_hosts WHERE host = $1)
                 SELECT CASE WHEN $11 THEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                     AND pid = pg_backend_pid() AND granted AND classid::int8 = {c} AND objid::int8 = {k} AND objsubid = 2)
                   ELSE pg_try_advisory_lock({LOCK_CLASS}, {key}) END,
                   (SELECT boot_id FROM old), (SELECT pid FROM old), (SELECT started_at FROM old)",
                c = u32::from_ne_bytes(LOCK_CLASS.to_ne_bytes()),
                k = u32::from_ne_bytes(key.to_ne_bytes()),
            );
            let leading = conn.leader;
            let row = conn
                .client
                .query_one(
                    &sql,
                    &[
                        &me.host,
                        &beat.boot_id,
                        &beat.version,
                        &i64::from(beat.pid),
                        &beat.started_at,
                        &beat.last_sweep_at,
                        &beat.running,
                        &beat.findings,
                        &beat.actions,
                        &beat.snapshot_error,
                        &leading,
                    ],
                )
                .context("writing this Foreman's row in the fleet table")?;
            me.trip();
            let now_leading: bool = row.get(0);
            // The row before this beat (a data-modifying CTE's siblings
            // see the table as it was): anyone but our last beat means
            // another Foreman uses this host's name.
            let before: Option<(String, i64, DateTime<Utc>)> =
                match (row.get(1), row.get(2), row.get(3)) {
                    (Some(b), Some(p), Some(s)) => Some((b, p, s)),
                    _ => None,
                };

            if now_leading != conn.leader {
                if now_leading {
                    info!(host = %me.host, "this Foreman now leads the fleet (it holds the advisory lock): it watches for lost hosts");
                } else {
                    warn!(host = %me.host, "this Foreman lost the fleet's advisory lock");
                }
            }
            conn.leader = now_leading;
            Ok((now_leading, before))
        })
        .map(|(leading, before)| {
            // As PostgreSQL keeps it: microseconds.
            let started = DateTime::<Utc>::from_timestamp_micros(beat.started_at.timestamp_micros())
                .unwrap_or(beat.started_at);
            let mine = (beat.boot_id.clone(), i64::from(beat.pid), started);
            self.note_beat(before, mine);
            leading
        })
    }

    fn view(&self) -> Result<View> {
        self.check_alone()?;
        let Some(fleet) = &self.fleet else {
            bail!("no [fleet]");
        };
        let schema = fleet.schema.clone();
        let key = lock_key(&schema);
        self.with(|me, conn| {
            let sql = format!(
                "WITH r AS (SELECT host, count(*)::int8 AS n FROM tasks WHERE state = 'RUNNING' GROUP BY host),
                 leader AS (SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int8 = {c} AND l.objid::int8 = {k}
                   AND l.objsubid = 2 LIMIT 1)
                 SELECT coalesce(h.host, r.host) AS host, h.host IS NOT NULL AS watched, h.boot_id, h.version,
                   h.last_seen, h.last_sweep_at, extract(epoch FROM now() - h.last_seen)::float8 AS silent,
                   h.running AS reported, h.findings, h.actions, h.snapshot_error,
                   coalesce(r.n, 0) AS running, now() AS db_now, (SELECT application_name FROM leader) AS leader
                 FROM \"{schema}\".foreman_hosts h FULL OUTER JOIN r ON r.host = h.host
                 ORDER BY 1",
                c = u32::from_ne_bytes(LOCK_CLASS.to_ne_bytes()),
                k = u32::from_ne_bytes(key.to_ne_bytes()),
            );
            let rows = conn
                .client
                .query(&sql, &[])
                .context("reading the fleet table")?;
            me.trip();
            let mut view = View {
                now: Utc::now(),
                leader: None,
                hosts: Vec::new(),
            };
            if rows.is_empty() {
                view.now = conn
                    .client
                    .query_one("SELECT now()", &[])?
                    .get::<_, DateTime<Utc>>(0);
                me.trip();
            }
            for r in rows {
                view.now = r.get("db_now");
                view.leader = r
                    .get::<_, Option<String>>("leader")
                    .map(|a| a.strip_prefix("foreman@").map(str::to_string).unwrap_or(a));
                let watched: bool = r.get("watched");
                let foreman = if watched {
                    Some(ForemanRow {
                        boot_id: r.get("boot_id"),
                        version: r.get("version"),
                        last_seen: r.get("last_seen"),
                        last_sweep_at: r.get("last_sweep_at"),
                        silent: Duration::from_secs_f64(
                            r.get::<_, f64>("silent").clamp(0.0, 1e12),
                        ),
                        running_reported: r.get("reported"),
                        findings: r.get("findings"),
                        actions: r.get("actions"),
                        snapshot_error: r.get("snapshot_error"),
                    })
                } else {
                    None
                };
                view.hosts.push(HostRow {
                    host: r.get("host"),
                    foreman,
                    running: usize::try_from(r.get::<_, i64>("running")).unwrap_or(0),
                });
            }
            Ok(view)
        })
    }

    fn tasks_of(&self, hosts: &[String], ids: &[String]) -> Result<Snapshot> {
        self.with(|me, conn| {
            let rows = conn
                .client
                .query_raw(
                    "SELECT * FROM tasks WHERE (state = 'RUNNING' AND host = ANY($1)) OR id::text = ANY($2)",
                    [&hosts as &(dyn ToSql + Sync), &ids as &(dyn ToSql + Sync)],
                )
                .context("reading the RUNNING tasks of silent hosts")?;
            me.trip();
            Ok(Snapshot {
                rows: collect(rows, me.tz)?,
            })
        })
    }

    fn leads(&self) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.conn.as_ref().map(|c| c.leader))
            .unwrap_or(false)
    }
}

/// A TLS connector for the URL's mode, on rustls (ring), the stack ureq
/// already brings: no OpenSSL to build or to keep patched.
fn tls_connector(tls: &Tls) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match tls {
        Tls::VerifyFull { root } => {
            let mut roots = rustls::RootCertStore::empty();
            match root {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("reading sslrootcert {}", path.display()))?;
                    let mut found = 0;
                    for cert in rustls_pemfile_certs(&pem)? {
                        roots
                            .add(cert)
                            .with_context(|| format!("a certificate in {}", path.display()))?;
                        found += 1;
                    }
                    if found == 0 {
                        bail!("sslrootcert {} holds no certificate", path.display());
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        // prefer / require: encrypted, but (as libpq does) without checking
        // who answers; verify-full is for that.
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("reading PEM certificates: {e:?}"))
}

/// sslmode=require: the handshake's signatures are checked (the channel
/// is encrypted to whoever holds the key), the certificate is not.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One column's value as the parser reads it (JSON-like, as from every
/// source): numbers, text, times as RFC 3339 text. What Foreman cannot
/// read becomes a text that says so, which makes the row malformed only
/// where the column matters.
struct Cell(Value);

/// Microseconds between the unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn pg_time(micros: i64) -> Option<NaiveDateTime> {
    let unix = micros.checked_add(PG_EPOCH_MICROS)?;
    DateTime::<Utc>::from_timestamp_micros(unix).map(|t| t.naive_utc())
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, Box<dyn StdError + Sync + Send>> {
        let v = match *ty {
            Type::BOOL => Value::from(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
            Type::OID => Value::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 | Type::FLOAT8 => {
                let f = if *ty == Type::FLOAT4 {
                    f64::from(f32::from_sql(ty, raw)?)
                } else {
                    f64::from_sql(ty, raw)?
                };
                // As in the SQLite source: JSON has no infinity or NaN, and
                // null would read as "no pid".
                if f.is_finite() {
                    Value::from(f)
                } else {
                    Value::from(f.to_string())
                }
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::from(super::sqlite::escape_bytes(raw))
            }
            Type::JSON => Value::from(super::sqlite::escape_bytes(raw)),
            Type::JSONB => Value::from(super::sqlite::escape_bytes(raw.get(1..).unwrap_or(&[]))),
            Type::TIMESTAMPTZ | Type::TIMESTAMP => {
                let micros = i64::from_sql(&Type::INT8, raw)?;
                let text = match micros {
                    i64::MAX => "infinity".to_string(),
                    i64::MIN => "-infinity".to_string(),
                    m => match pg_time(m) {
                        Some(t) if *ty == Type::TIMESTAMPTZ => t
                            .and_utc()
                            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                        None => "(timestamp out of range)".to_string(),
                    },
                };
                Value::from(text)
            }
            Type::DATE => {
                let days = i32::from_sql(&Type::INT4, raw)?;
                let text = NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|d| d.checked_add_signed(Span::days(i64::from(days))))
                    .map_or_else(|| "(date out of range)".to_string(), |d| d.to_string());
                Value::from(text)
            }
            ref other => Value::from(format!(
                "(unsupported type {}: cast it to text or a number in snapshot_query)",
                other.name()
            )),
        };
        Ok(Cell(v))
    }

    fn from_sql_null(_: &Type) -> Result<Cell, Box<dyn StdError + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter bound in the type the statement asks for: the same id,
/// pid or time goes into TEXT, INTEGER, BIGINT or TIMESTAMPTZ columns,
/// whatever the executor's schema chose.
#[derive(Debug)]
enum Param {
    Text(String),
    Int(Option<i64>),
    Float(f64),
    /// A time, and the executor's `timezone`: a TIMESTAMP (without time
    /// zone) column holds the executor's wall-clock time, as it is read.
    Time(DateTime<Utc>, ExecutorTz),
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mut int = |v: i64| -> Result<IsNull, BoxError> {
            match *ty {
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT8 => v.to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    v.to_string().to_sql(&Type::TEXT, out)
                }
                ref other => {
                    Err(format!("cannot bind a number to a {} parameter", other.name()).into())
                }
            }
        };
        match self {
            Param::Int(None) => Ok(IsNull::Yes),
            Param::Int(Some(v)) => int(*v),
            Param::Text(s) => match *ty {
                Type::INT2 | Type::INT4 | Type::INT8 => {
                    int(s.trim().parse::<i64>().map_err(|_| {
                        format!("{s:?} is not an integer, and the statement wants one")
                    })?)
                }
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(&Type::TEXT, out)
                }
                ref other => {
                    Err(format!("cannot bind text to a {} parameter", other.name()).into())
                }
            },
            Param::Float(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT2 | Type::INT4 | Type::INT8 => int(f.ceil() as i64),
                Type::NUMERIC => {
                    Err("cannot bind to a numeric parameter: cast it, e.g. $2::float8".into())
                }
                Type::INTERVAL => {
                    // microseconds, days, months
                    let micros = (f * 1e6) as i64;
                    out.extend_from_slice(&micros.to_be_bytes());
                    out.extend_from_slice(&0i32.to_be_bytes());
                    out.extend_from_slice(&0i32.to_be_bytes());
                    Ok(IsNull::No)
                }
                _ => f.to_string().to_sql(&Type::TEXT, out),
            },
            Param::Time(t, tz) => match *ty {
                Type::TIMESTAMPTZ | Type::TIMESTAMP => {
                    let wall = match (*ty == Type::TIMESTAMP).then_some(*tz) {
                        None | Some(ExecutorTz::Utc) => t.naive_utc(),
                        Some(ExecutorTz::Local) => t.with_timezone(&Local).naive_local(),
                        Some(ExecutorTz::Fixed(off)) => t.with_timezone(&off).naive_local(),
                    };
                    let micros = wall
                        .and_utc()
                        .timestamp_micros()
                        .checked_sub(PG_EPOCH_MICROS)
                        .ok_or("time out of range")?;
                    micros.to_sql(&Type::INT8, out)
                }
                Type::INT8 | Type::INT4 | Type::INT2 | Type::FLOAT8 | Type::FLOAT4 => {
                    int(t.timestamp())
                }
                _ => t
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .to_sql(&Type::TEXT, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_tls_mode_and_never_echo_a_password() {
        let p = parse_url("postgres://u:secret@db:5433/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a")
            .expect("parses");
        assert_eq!(
            p.tls,
            Tls::VerifyFull {
                root: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        assert_eq!(p.config.get_ports(), &[5433]);
        assert_eq!(parse_url("postgres://db/x").expect("ok").tls, Tls::Prefer);
        assert_eq!(
            parse_url("host=db sslmode=require dbname=x")
                .expect("ok")
                .tls,
            Tls::Require
        );
        assert_eq!(
            parse_url("postgres://db/x?sslmode=disable")
                .expect("ok")
                .tls,
            Tls::Disable
        );
        for bad in [
            "postgres://u:secret@db/x?sslmode=verify-ca",
            "postgres://u:secret@db/x?sslmode=sometimes",
            "postgres://u:secret@db/x?nonsense=1",
            "postgres://u:secret@/x",
        ] {
            let why = parse_url(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(!why.contains("secret"), "{why}");
        }
    }

    #[test]
    fn the_lock_key_is_stable_and_differs_by_schema() {
        assert_eq!(lock_key("foreman"), lock_key("foreman"));
        assert_ne!(lock_key("foreman"), lock_key("foreman_b"));
    }

    #[test]
    fn the_default_query_bounds_finished_rows_for_each_time_type() {
        for t in [
            TimeColumn::Time,
            TimeColumn::NaiveTime,
            TimeColumn::Number,
            TimeColumn::Text,
        ] {
            let q = snapshot_query(t);
            assert!(q.contains("host = $1") && q.contains("$2"), "{q}");
        }
    }
}
