//! The monitor's rows in the activity log: the pull diff applied inside the
//! sweep's transaction, events recorded once, the inbox of pulled events
//! waiting for the queue, the views read back, pruning.

use super::diff::{self, is_finished, Known, PlanFacts, PlanMark, PlanStep};
use super::event::{Event, EventType, Source};
use super::view::{self, MonitorView};
use crate::activity::{parse_ts, ts};
use crate::model::{Row, Snapshot, Task, TaskState};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tracing::{info, warn};

/// What a sweep's pull found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pulled {
    /// This sweep took the silent baseline: no event was emitted.
    pub baseline: bool,
    /// Events put in the inbox for the monitor.
    pub events: usize,
    pub newly_stalled: usize,
    /// New plans this pull could not track (`[monitor] max_plans`).
    pub plans_refused: usize,
}

/// A plan's `plan_id` series stay this long after it completes.
pub const TRACK_AFTER_COMPLETION: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// `[monitor] max_plans`'s default: plans tracked at once (rows of
/// `monitor_plans`). Each costs six series on `/metrics` (about 500 bytes
/// with UUID plan ids) and one entry of `/plans`: 10,000 plans are about
/// 5 MB of exposition.
pub const DEFAULT_MAX_PLANS: usize = 10_000;

/// The cap `pull` and `ingest` apply; the daemon sets it from the
/// configuration at start (`set_max_plans`).
static MAX_PLANS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_PLANS);
/// New plans refused in this process, for `foreman_plans_refused_total`.
static PLANS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// The cap was hit and nothing could be evicted: logged once, until a new
/// plan fits again.
static AT_CAP: AtomicBool = AtomicBool::new(false);

/// Set the cap `pull` and `ingest` apply (`[monitor] max_plans`).
pub fn set_max_plans(n: usize) {
    MAX_PLANS.store(n.max(1), Ordering::Relaxed);
}

/// The cap `pull` and `ingest` apply.
pub fn max_plans() -> usize {
    MAX_PLANS.load(Ordering::Relaxed)
}

/// New plans refused so far in this process (a counter).
pub fn plans_refused() -> u64 {
    PLANS_REFUSED.load(Ordering::Relaxed)
}

/// A pushed batch refused: it would create more plans than
/// `[monitor] max_plans` leaves room for, once every evictable plan (a
/// completed one, or one with no task left) is counted as room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlansFull {
    /// Plans the batch would create.
    pub new_plans: usize,
    /// Plans that could still be created (free slots and evictable plans).
    pub room: usize,
    pub max_plans: usize,
}

impl std::fmt::Display for PlansFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the monitor tracks its maximum of {} plans ([monitor] max_plans) and too few of them are complete to make room: the batch would start {} new plan(s), there is room for {}; nothing was taken, send it again later",
            self.max_plans, self.new_plans, self.room
        )
    }
}

impl std::error::Error for PlansFull {}

fn refused(n: usize, max: usize) {
    if n == 0 {
        return;
    }
    PLANS_REFUSED.fetch_add(n as u64, Ordering::Relaxed);
    if !AT_CAP.swap(true, Ordering::Relaxed) {
        warn!(
            max_plans = max,
            refused = n,
            "monitor: [monitor] max_plans reached and no plan is complete: new plans are not tracked (their tasks and events still are) and pushed batches that would start one are refused; counted in foreman_plans_refused_total (logged once until there is room again)"
        );
    }
}

fn room_again() {
    if AT_CAP.swap(false, Ordering::Relaxed) {
        info!("monitor: room for new plans again ([monitor] max_plans)");
    }
}

/// Plans that may go to make room: those with no task left first, then
/// completed ones, oldest first.
const EVICTABLE: &str = "FROM monitor_plans p WHERE p.completed_at IS NOT NULL
       OR NOT EXISTS (SELECT 1 FROM monitor_tasks t WHERE t.plan_id = p.plan_id)";

fn plan_count(conn: &Connection) -> Result<usize> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM monitor_plans", [], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}

/// Evict up to `n` plans (none of `keep`): the plan row, and its tasks
/// that left the snapshot (a task still in it stays, so the next sweep
/// does not see it as new). Returns how many went.
fn evict(conn: &Connection, n: usize, keep: &BTreeSet<String>) -> Result<usize> {
    if n == 0 {
        return Ok(0);
    }
    let want = n.saturating_add(keep.len());
    let ids: Vec<String> = conn
        .prepare_cached(&format!(
            "SELECT p.plan_id {EVICTABLE}
             ORDER BY p.completed_at IS NOT NULL, COALESCE(p.completed_at, p.updated_at), p.plan_id
             LIMIT ?1"
        ))?
        .query_map([i64::try_from(want).unwrap_or(i64::MAX)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut plan = conn.prepare_cached("DELETE FROM monitor_plans WHERE plan_id = ?1")?;
    let mut tasks =
        conn.prepare_cached("DELETE FROM monitor_tasks WHERE plan_id = ?1 AND current = 0")?;
    let mut gone = 0;
    for id in ids.iter().filter(|id| !keep.contains(*id)).take(n) {
        plan.execute([id])?;
        tasks.execute([id])?;
        gone += 1;
    }
    Ok(gone)
}

/// The plans a pushed batch would create (distinct `plan_id`s of its task
/// events that the monitor does not track).
fn new_plans(conn: &Connection, events: &[Event]) -> Result<BTreeSet<String>> {
    let mut known = conn.prepare_cached("SELECT 1 FROM monitor_plans WHERE plan_id = ?1")?;
    let mut new = BTreeSet::new();
    for e in events {
        let Some(plan) = e.plan_id.as_deref().filter(|_| e.kind.target().is_some()) else {
            continue;
        };
        if !new.contains(plan) && known.query_row([plan], |_| Ok(())).optional()?.is_none() {
            new.insert(plan.to_string());
        }
    }
    Ok(new)
}

/// Whether a pushed batch may be taken under `max_plans`: `Ok(Err(_))`
/// when it would start more new plans than there is room for (free slots
/// plus evictable plans), counted in `foreman_plans_refused_total` (one per
/// plan it would have started); the listener answers 503 with Retry-After.
/// Read-only: the eviction itself happens when the batch is recorded
/// (`ingest`), which applies the cap again (two batches checked at once may
/// both pass; the later one's new plans are then not tracked, and counted).
pub fn admit_pushed(
    conn: &Connection,
    events: &[Event],
    max_plans: usize,
) -> Result<std::result::Result<(), PlansFull>> {
    let new = new_plans(conn, events)?;
    if new.is_empty() {
        return Ok(Ok(()));
    }
    let count = plan_count(conn)?;
    let free = max_plans.saturating_sub(count);
    if new.len() <= free {
        return Ok(Ok(()));
    }
    let evictable: i64 =
        conn.query_row(&format!("SELECT COUNT(*) {EVICTABLE}"), [], |r| r.get(0))?;
    let room = free.saturating_add(evictable.max(0) as usize);
    if new.len() <= room {
        return Ok(Ok(()));
    }
    refused(new.len(), max_plans);
    Ok(Err(PlansFull {
        new_plans: new.len(),
        room,
        max_plans,
    }))
}

fn state_str(s: TaskState) -> &'static str {
    match s {
        TaskState::Pending => "PENDING",
        TaskState::Running => "RUNNING",
        TaskState::Success => "SUCCESS",
        TaskState::Failed => "FAILED",
        TaskState::Skipped => "SKIPPED",
    }
}

fn parse_state(s: &str) -> Result<TaskState> {
    TaskState::parse(s).with_context(|| format!("bad task state {s:?} in monitor_tasks"))
}

/// A `KNOWN` row: the task id, its state and when a push last moved it as
/// text, and the rest (its state to be parsed, `pushed_late` to be set).
type KnownRow = (String, String, Option<String>, Known);

fn read_known(r: &rusqlite::Row<'_>) -> rusqlite::Result<KnownRow> {
    Ok((
        r.get(0)?,
        r.get(3)?,
        r.get(7)?,
        Known {
            plan_id: r.get(1)?,
            droid_type: r.get(2)?,
            state: TaskState::Pending,
            attempt: r.get(4)?,
            stalled: r.get(5)?,
            current: r.get(6)?,
            pushed_late: false,
        },
    ))
}

/// Parse a `KNOWN` row's state; a push after `held_since` still holds it.
fn finish_known(row: KnownRow, held_since: DateTime<Utc>) -> Result<(String, Known)> {
    let (id, state, pushed, mut k) = row;
    k.state = parse_state(&state)?;
    k.pushed_late = match pushed {
        Some(p) => parse_ts(&p)? > held_since,
        None => false,
    };
    Ok((id, k))
}

const KNOWN: &str =
    "SELECT task_id, plan_id, droid_type, state, attempt, stalled, current, pushed_at
                     FROM monitor_tasks";

/// Diff `snapshot` against the monitor's tasks and write the result, in
/// the sweep's transaction: the new state, the plans' completion, and the
/// events, into the inbox (the queue takes them from there). The first
/// time, the snapshot is the silent baseline. A task a push moved on within
/// `hold` before `now` is not moved back by a snapshot that has not caught
/// up (an executor's table may lag its push; the daemon holds for one
/// interval).
///
/// At most `max_plans()` plans are tracked (see `pull_with`).
pub fn pull(
    conn: &Connection,
    snapshot: &Snapshot,
    hung: &HashSet<&str>,
    now: DateTime<Utc>,
    hold: std::time::Duration,
) -> Result<Pulled> {
    pull_with(conn, snapshot, hung, now, hold, max_plans())
}

/// `pull` under a cap of `max_plans` tracked plans: a plan a change would
/// start beyond it evicts one with no task left or the oldest completed;
/// failing that, it is not tracked (its tasks and events still are) and is
/// counted in `Pulled::plans_refused`.
/// Tasks diffed and written at a time (see `pull_with`).
const CHUNK: usize = 1024;

pub fn pull_with(
    conn: &Connection,
    snapshot: &Snapshot,
    hung: &HashSet<&str>,
    now: DateTime<Utc>,
    hold: std::time::Duration,
    max_plans: usize,
) -> Result<Pulled> {
    let held_since = now - chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX);
    let baseline = conn
        .query_row("SELECT 1 FROM monitor_baseline", [], |_| Ok(()))
        .optional()?
        .is_none();
    // A steady fleet's tasks are as the monitor knows them: such a pair
    // yields nothing in `diff` (no event, no write, not gone), so it is
    // dropped here, and only the rest are held in memory and diffed. At
    // 10,000 tasks the map of every known row was 2.3 MiB of each sweep's
    // peak; the index of the snapshot is a tenth of that.
    let mut index: HashMap<&str, &Task> = HashMap::with_capacity(snapshot.rows.len());
    let mut unreadable = HashSet::new();
    for row in &snapshot.rows {
        match row {
            Row::Task(t) => {
                index.insert(t.id.as_str(), t);
            }
            Row::Bad(b) => {
                unreadable.insert(b.id.as_str());
            }
        }
    }
    let mut known: HashMap<String, Known> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(&format!("{KNOWN} WHERE current = 1"))?;
        for r in stmt.query_map([], read_known)? {
            let (id, k) = finish_known(r?, held_since)?;
            if index
                .get(id.as_str())
                .is_some_and(|t| diff::unchanged(&k, t, hung))
            {
                index.remove(id.as_str());
                continue;
            }
            known.insert(id, k);
        }
    }
    let mut tasks = Vec::new();
    {
        // A task the monitor remembers but no longer counted current (it
        // left the snapshot finished, and is back): looked up one by one.
        let mut one = conn.prepare_cached(&format!("{KNOWN} WHERE task_id = ?1"))?;
        for row in &snapshot.rows {
            let Row::Task(t) = row else { continue };
            if !index.contains_key(t.id.as_str()) {
                continue;
            }
            if !known.contains_key(&t.id) {
                if let Some(row) = one.query_row([&t.id], read_known).optional()? {
                    let (id, k) = finish_known(row, held_since)?;
                    known.insert(id, k);
                }
            }
            tasks.push(t);
        }
    }
    drop(index);
    // Diffed and written a chunk of tasks at a time (a task's diff depends
    // on its own known row only), so a baseline or a mass change holds a
    // chunk's writes, not 10,000 cloned rows; what is known of no task in
    // the snapshot (gone, retired) is diffed once at the end.
    let mut upsert = conn.prepare_cached(
        "INSERT INTO monitor_tasks (task_id, plan_id, droid_type, state, attempt, stalled, current, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)
         ON CONFLICT (task_id) DO UPDATE SET plan_id = excluded.plan_id, droid_type = excluded.droid_type,
            state = excluded.state, attempt = excluded.attempt, stalled = excluded.stalled, current = 1,
            pushed_at = NULL, updated_at = CASE WHEN ?8 THEN excluded.updated_at ELSE monitor_tasks.updated_at END",
    )?;
    let now_s = ts(now);
    let mut d = diff::Diff::default();
    let mut seen: HashSet<&str> = HashSet::with_capacity(tasks.len());
    for chunk in tasks.chunks(CHUNK) {
        let mine: HashMap<String, Known> = chunk
            .iter()
            .filter_map(|t| known.get(&t.id).map(|k| (t.id.clone(), k.clone())))
            .collect();
        seen.extend(chunk.iter().map(|t| t.id.as_str()));
        let part = diff::diff(&mine, chunk, &unreadable, hung, now, baseline);
        for (id, k, changed) in &part.upserts {
            upsert.execute(params![
                id,
                k.plan_id,
                k.droid_type,
                state_str(k.state),
                k.attempt,
                k.stalled,
                now_s,
                changed
            ])?;
        }
        d.events.extend(part.events);
        d.plans.extend(part.plans);
        d.newly_stalled += part.newly_stalled;
    }
    known.retain(|id, _| !seen.contains(id.as_str()));
    let rest = diff::diff(&known, &[], &unreadable, hung, now, baseline);
    d.plans.extend(rest.plans);
    {
        let mut gone = conn.prepare_cached("DELETE FROM monitor_tasks WHERE task_id = ?1")?;
        for id in &rest.gone {
            gone.execute([id])?;
        }
        let mut retire = conn.prepare_cached(
            "UPDATE monitor_tasks SET current = 0, stalled = 0 WHERE task_id = ?1",
        )?;
        for id in &rest.retired {
            retire.execute([id])?;
        }
    }
    let mut events = d.events;
    let (plan_events, plans_refused) = plans(conn, &d.plans, now, baseline, max_plans)?;
    events.extend(plan_events);
    {
        let mut inbox = conn.prepare_cached("INSERT INTO event_inbox (event) VALUES (?1)")?;
        for e in &events {
            inbox.execute([serde_json::to_string(e)?])?;
        }
    }
    if baseline {
        conn.execute(
            "INSERT INTO monitor_baseline (id, taken_at) VALUES (1, ?1)",
            [ts(now)],
        )?;
    }
    Ok(Pulled {
        baseline,
        events: events.len(),
        newly_stalled: d.newly_stalled,
        plans_refused,
    })
}

/// Look at each plan's tasks again: mark it complete (and return its
/// PLAN_COMPLETED) or reopen it. A plan not tracked yet is started only
/// under `max_plans` (evicting to make room); returns the events and how
/// many new plans were refused.
fn plans(
    conn: &Connection,
    ids: &BTreeSet<String>,
    now: DateTime<Utc>,
    silent: bool,
    max_plans: usize,
) -> Result<(Vec<Event>, usize)> {
    let mut facts = conn.prepare_cached(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE state IN ('PENDING', 'RUNNING'))
         FROM monitor_tasks WHERE plan_id = ?1",
    )?;
    let mut mark = conn.prepare_cached(
        "SELECT completed_at IS NOT NULL, generation FROM monitor_plans WHERE plan_id = ?1",
    )?;
    let mut priors = Vec::with_capacity(ids.len());
    let mut new = 0usize;
    for id in ids {
        let prior = mark
            .query_row([id], |r| {
                Ok(PlanMark {
                    completed: r.get(0)?,
                    generation: r.get(1)?,
                })
            })
            .optional()?;
        if prior.is_none() {
            // A plan whose tasks are all gone is not started.
            let tasks: i64 = facts.query_row([id], |r| r.get(0))?;
            if tasks == 0 {
                continue;
            }
            new += 1;
        }
        priors.push((id, prior));
    }
    // Room for the new plans: evict what is needed, then admit what fits
    // (in plan id order), refuse the rest.
    let mut admit = new;
    if new > 0 {
        let count = plan_count(conn)?;
        let over = (count + new).saturating_sub(max_plans);
        let evicted = evict(conn, over, ids)?;
        admit = max_plans.saturating_sub(count - evicted).min(new);
        if admit == new {
            room_again();
        } else {
            refused(new - admit, max_plans);
        }
    }
    let refused_n = new - admit;
    let mut events = Vec::new();
    for (id, prior) in priors {
        if prior.is_none() {
            if admit == 0 {
                continue;
            }
            admit -= 1;
        }
        let (tasks, unfinished): (i64, i64) =
            facts.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let facts = PlanFacts {
            tasks: tasks as usize,
            unfinished: unfinished as usize,
        };
        let step = diff::plan_step(facts, prior.unwrap_or_default());
        let completed_at = match step {
            PlanStep::Complete(_) => Some(ts(now)),
            PlanStep::Reopen => None,
            PlanStep::Nothing if prior.is_some() => continue,
            PlanStep::Nothing => None,
        };
        let generation = match step {
            PlanStep::Complete(g) => g,
            _ => prior.map_or(0, |p| p.generation),
        };
        conn.prepare_cached(
            "INSERT INTO monitor_plans (plan_id, completed_at, generation, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (plan_id) DO UPDATE SET completed_at = excluded.completed_at,
                generation = excluded.generation, updated_at = excluded.updated_at",
        )?
        .execute(params![id, completed_at, generation, ts(now)])?;
        if let (PlanStep::Complete(g), false) = (step, silent) {
            events.push(Event {
                kind: EventType::PlanCompleted,
                task_id: None,
                plan_id: Some(id.clone()),
                droid_type: None,
                attempt: g,
                at: now,
            });
        }
    }
    Ok((events, refused_n))
}

/// Pulled events waiting for the queue, oldest first, after inbox id `after`.
pub fn inbox(conn: &Connection, after: i64, limit: usize) -> Result<Vec<(i64, Event)>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, event FROM event_inbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt
        .query_map(params![after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, json)| {
            let e: Event = serde_json::from_str(&json)
                .with_context(|| format!("event_inbox row {id} is not an event"))?;
            Ok((id, e))
        })
        .collect()
}

/// What the monitor's queue carries: pulled events (with their inbox ids,
/// removed once recorded) or a pushed batch.
#[derive(Debug, Clone)]
pub enum Batch {
    Pulled(Vec<(i64, Event)>),
    Pushed(Vec<Event>),
}

/// Record a batch, in one transaction. Returns the events recorded for the
/// first time (a duplicate of a transition already recorded, from either
/// source, is not). A pushed event also moves its task on (never back: an
/// older attempt, or RUNNING after the same attempt finished, is recorded
/// but changes nothing), and a plan whose last task it finished completes.
///
/// At most `max_plans()` plans are tracked (see `ingest_with`).
pub fn ingest(conn: &mut Connection, batch: &Batch, now: DateTime<Utc>) -> Result<Vec<Event>> {
    ingest_with(conn, batch, now, max_plans())
}

/// `ingest` under a cap of `max_plans` tracked plans, as `pull_with`: a
/// pushed event that would start a plan beyond it (when `admit_pushed` let
/// its batch through, racing another) is recorded and moves its task on,
/// but the plan is not tracked, and counted.
pub fn ingest_with(
    conn: &mut Connection,
    batch: &Batch,
    now: DateTime<Utc>,
    max_plans: usize,
) -> Result<Vec<Event>> {
    // IMMEDIATE: take the write lock first, waiting out a sweep's
    // transaction (busy timeout), instead of failing when a read inside
    // the transaction would have to be upgraded to a write.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut new = Vec::new();
    match batch {
        Batch::Pulled(events) => {
            for (id, e) in events {
                if record(&tx, e, Source::Pull, now)? {
                    new.push(e.clone());
                }
                tx.prepare_cached("DELETE FROM event_inbox WHERE id = ?1")?
                    .execute([id])?;
            }
        }
        Batch::Pushed(events) => {
            let mut touched = BTreeSet::new();
            for e in events {
                let mut e = e.clone();
                if e.kind == EventType::PlanCompleted && e.attempt == 0 {
                    e.attempt = plan_generation(&tx, e.plan_id.as_deref().unwrap_or(""))?;
                }
                if !record(&tx, &e, Source::Push, now)? {
                    continue;
                }
                if let Some(plan) = apply(&tx, &e, now)? {
                    touched.insert(plan);
                }
                new.push(e);
            }
            for e in plans(&tx, &touched, now, false, max_plans)?.0 {
                if record(&tx, &e, Source::Monitor, now)? {
                    new.push(e);
                }
            }
        }
    }
    tx.commit()?;
    Ok(new)
}

/// The generation a pushed PLAN_COMPLETED without one refers to: the
/// current completion if the plan is complete, else the next.
fn plan_generation(conn: &Connection, plan_id: &str) -> Result<i64> {
    let mark: Option<(bool, i64)> = conn
        .query_row(
            "SELECT completed_at IS NOT NULL, generation FROM monitor_plans WHERE plan_id = ?1",
            [plan_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match mark {
        Some((true, g)) => g,
        Some((false, g)) => g + 1,
        None => 1,
    })
}

/// Insert the event unless its transition is recorded; true if it was new.
fn record(conn: &Connection, e: &Event, source: Source, now: DateTime<Utc>) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO events (type, task_id, plan_id, droid_type, attempt, at, source, received_at, dedupe_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (dedupe_key) DO NOTHING",
        )?
        .execute(params![
            e.kind.as_str(),
            e.task_id,
            e.plan_id,
            e.droid_type,
            e.attempt,
            ts(e.at),
            source.as_str(),
            ts(now),
            e.dedupe_key()
        ])?;
    Ok(n == 1)
}

/// Move a pushed task event's task on; returns its plan, if the state moved.
fn apply(conn: &Connection, e: &Event, now: DateTime<Utc>) -> Result<Option<String>> {
    let (Some(target), Some(task_id)) = (e.kind.target(), e.task_id.as_deref()) else {
        return Ok(None);
    };
    let prior = conn
        .prepare_cached(&format!("{KNOWN} WHERE task_id = ?1"))?
        .query_row([task_id], read_known)
        .optional()?;
    let (plan_id, droid_type) = match &prior {
        Some((_, state, _, k)) => {
            let state = parse_state(state)?;
            let older = e.attempt < k.attempt;
            let back = e.attempt == k.attempt && is_finished(state) && !is_finished(target);
            if older || back || (e.attempt == k.attempt && state == target) {
                return Ok(None);
            }
            (
                e.plan_id.clone().or(k.plan_id.clone()),
                e.droid_type.clone().or(k.droid_type.clone()),
            )
        }
        None => (e.plan_id.clone(), e.droid_type.clone()),
    };
    // A task first heard of by push is current: if the next snapshot does
    // not have it unfinished, the sweep drops it.
    conn.prepare_cached(
        "INSERT INTO monitor_tasks (task_id, plan_id, droid_type, state, attempt, stalled, current, updated_at, pushed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 1, ?6, ?6)
         ON CONFLICT (task_id) DO UPDATE SET plan_id = excluded.plan_id, droid_type = excluded.droid_type,
            state = excluded.state, attempt = excluded.attempt, stalled = 0, current = 1,
            updated_at = excluded.updated_at, pushed_at = excluded.pushed_at",
    )?
    .execute(params![task_id, plan_id, droid_type, state_str(target), e.attempt, ts(now)])?;
    Ok(plan_id)
}

/// Plans to show: every plan not complete, and those completed within the
/// last hour. Sorted by plan id.
pub fn views(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<MonitorView>> {
    read_views(
        conn,
        "WHERE p.completed_at IS NULL OR p.completed_at >= ?1",
        &ts(now - TRACK_AFTER_COMPLETION),
    )
}

/// One page of `views`: the plans after plan id `after` (all when `None`),
/// at most `limit` (at least 1), with the cursor of the next page when
/// there are more.
pub fn views_page(
    conn: &Connection,
    now: DateTime<Utc>,
    after: Option<&str>,
    limit: usize,
) -> Result<view::Page> {
    let since = ts(now - TRACK_AFTER_COMPLETION);
    let limit = limit.max(1);
    let shown = "(completed_at IS NULL OR completed_at >= ?1)";
    let mut ids: Vec<String> = conn
        .prepare_cached(&format!(
            "SELECT plan_id FROM monitor_plans
             WHERE {shown} AND (?2 IS NULL OR plan_id > ?2)
               AND EXISTS (SELECT 1 FROM monitor_tasks t WHERE t.plan_id = monitor_plans.plan_id)
             ORDER BY plan_id LIMIT ?3"
        ))?
        .query_map(
            params![since, after, i64::try_from(limit + 1).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let more = ids.len() > limit;
    ids.truncate(limit);
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(view::Page {
            plans: Vec::new(),
            next: None,
        });
    };
    let plans = read_views_with(
        conn,
        "WHERE (p.completed_at IS NULL OR p.completed_at >= ?1) AND p.plan_id >= ?2 AND p.plan_id <= ?3",
        params![since, first, last],
    )?;
    Ok(view::Page {
        next: more.then(|| last.clone()),
        plans,
    })
}

/// The plans `views` shows, each with its tasks counted by state: what
/// `/metrics` needs, counted by SQLite (one row per plan and state) rather
/// than every task of every plan read into a view (task ids, times and
/// stalled lists that a scrape would build and drop, for each task of each
/// plan completed within the hour). Sorted by plan id.
pub fn plan_counts(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<(String, view::Counts)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.plan_id, t.state, COUNT(*)
         FROM monitor_plans p JOIN monitor_tasks t ON t.plan_id = p.plan_id
         WHERE p.completed_at IS NULL OR p.completed_at >= ?1
         GROUP BY p.plan_id, t.state ORDER BY p.plan_id",
    )?;
    let mut rows = stmt.query([ts(now - TRACK_AFTER_COMPLETION)])?;
    let mut out: Vec<(String, view::Counts)> = Vec::new();
    while let Some(r) = rows.next()? {
        let plan: String = r.get(0)?;
        let state = parse_state(&r.get::<_, String>(1)?)?;
        let n = u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
        if out.last().is_none_or(|(p, _)| *p != plan) {
            out.push((plan, view::Counts::default()));
        }
        if let Some((_, counts)) = out.last_mut() {
            counts.add_n(state, n);
        }
    }
    Ok(out)
}

/// One plan's view, whatever its age (until pruned).
pub fn view(conn: &Connection, plan_id: &str) -> Result<Option<MonitorView>> {
    Ok(read_views(conn, "WHERE p.plan_id = ?1", plan_id)?.pop())
}

fn read_views(conn: &Connection, filter: &str, arg: &str) -> Result<Vec<MonitorView>> {
    read_views_with(conn, filter, [arg])
}

fn read_views_with(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<MonitorView>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT p.plan_id, p.completed_at, t.task_id, t.state, t.stalled, t.updated_at
         FROM monitor_plans p JOIN monitor_tasks t ON t.plan_id = p.plan_id
         {filter} ORDER BY p.plan_id"
    ))?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    let mut plan: Option<(String, Option<String>, Vec<view::Row>)> = None;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        if plan.as_ref().is_none_or(|(p, _, _)| *p != id) {
            if let Some((p, done, rows)) = plan.take() {
                out.push(view::build(
                    &p,
                    &rows,
                    done.as_deref().map(parse_ts).transpose()?,
                ));
            }
            plan = Some((id, r.get(1)?, Vec::new()));
        }
        let state: String = r.get(3)?;
        let updated: String = r.get(5)?;
        if let Some((_, _, rows)) = plan.as_mut() {
            rows.push(view::Row {
                task_id: r.get(2)?,
                state: parse_state(&state)?,
                stalled: r.get(4)?,
                updated_at: parse_ts(&updated)?,
            });
        }
    }
    if let Some((p, done, rows)) = plan {
        out.push(view::build(
            &p,
            &rows,
            done.as_deref().map(parse_ts).transpose()?,
        ));
    }
    Ok(out)
}

/// The current tasks by (state, droid type), for `foreman_tasks`.
pub fn task_counts(conn: &Connection) -> Result<Vec<(String, String, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, COALESCE(droid_type, ''), COUNT(*) FROM monitor_tasks WHERE current = 1
         GROUP BY state, droid_type ORDER BY state, droid_type",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(s, d, n)| (s.to_lowercase(), d, n))
        .collect())
}

/// Forget events, and plans completed before `cutoff` with their tasks
/// that left the snapshot. A task still in the snapshot stays (else the next
/// sweep would see it as new and record its transition again), and so does
/// its plan.
pub fn prune(conn: &Connection, cutoff: DateTime<Utc>) -> Result<usize> {
    let cutoff = ts(cutoff);
    let mut n = conn.execute("DELETE FROM events WHERE received_at < ?1", [&cutoff])?;
    n += conn.execute(
        "DELETE FROM monitor_tasks WHERE current = 0
            AND plan_id IN (SELECT plan_id FROM monitor_plans WHERE completed_at < ?1)",
        [&cutoff],
    )?;
    // Finished tasks of no plan, out of the snapshot.
    n += conn.execute(
        "DELETE FROM monitor_tasks WHERE plan_id IS NULL AND current = 0 AND updated_at < ?1",
        [&cutoff],
    )?;
    // Finished tasks of a plan not tracked (evicted, or refused at
    // `max_plans`), out of the snapshot.
    n += conn.execute(
        "DELETE FROM monitor_tasks WHERE plan_id IS NOT NULL AND current = 0 AND updated_at < ?1
            AND plan_id NOT IN (SELECT plan_id FROM monitor_plans)",
        [&cutoff],
    )?;
    // Plans with no task left: completed long ago, or whose tasks the
    // executor dropped.
    n += conn.execute(
        "DELETE FROM monitor_plans WHERE (completed_at < ?1 OR updated_at < ?1)
            AND plan_id NOT IN (SELECT plan_id FROM monitor_tasks WHERE plan_id IS NOT NULL)",
        [&cutoff],
    )?;
    Ok(n)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
