//! The monitor's one bounded queue and its consumer. Every event waits in
//! the activity log's inbox until it is recorded: a sweep's pulled events
//! commit there with the sweep, and a pushed batch is written there
//! (`keep`) before `POST /events` answers 202. The queue carries inbox rows
//! to the consumer; the feeder moves rows in while there is room, so a
//! sweep never blocks on the queue, and a crash or a failed batch re-feeds
//! them (recording is once per dedupe key) rather than losing them.
//!
//! The queue is bounded in batches (`[monitor] queue_capacity`) and in the
//! bytes of the events it holds (`[monitor] queue_max_bytes`).

use super::event::{Event, Source};
use super::store::{self, Batch};
use crate::activity::ActivityLog;
use anyhow::{Context, Result};
use chrono::Utc;
use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// How many inbox rows go into the queue as one batch.
const FEED_BATCH: usize = 256;

/// The highest inbox id handed to the queue. The consumer moves it back
/// when a batch could not be recorded, so it is fed again.
#[derive(Debug, Default, Clone)]
pub struct Cursor(Arc<AtomicI64>);

impl Cursor {
    fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn advance(&self, from: i64, to: i64) {
        let _ = self
            .0
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn rewind(&self, before: i64) {
        self.0.fetch_min(before - 1, Ordering::SeqCst);
    }
}

/// Bytes of events in the daemon's queue (it has one): taken before a
/// batch goes in, given back once the consumer is done with it.
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Batches the consumer has recorded: what `/metrics` shows may have
/// changed since a rendering made at a lower count.
static RECORDED: AtomicU64 = AtomicU64::new(0);

/// Batches recorded so far (a rendering cached at another count is stale).
pub fn recorded_batches() -> u64 {
    RECORDED.load(Ordering::SeqCst)
}

/// What one queued event holds in memory, about.
fn bytes_of_event(e: &Event) -> usize {
    std::mem::size_of::<(i64, Event)>()
        + [&e.task_id, &e.plan_id, &e.droid_type]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>()
}

/// What a batch of inbox rows holds in memory, about.
fn bytes_of(rows: &[(i64, Event)]) -> usize {
    rows.iter().map(|(_, e)| bytes_of_event(e)).sum()
}

/// What a pushed batch will hold in the queue, about.
pub fn bytes_of_events(events: &[Event]) -> usize {
    events.iter().map(bytes_of_event).sum()
}

/// A share of `[monitor] queue_max_bytes`, given back on drop unless the
/// batch went into the queue (then the consumer gives it back).
#[derive(Debug)]
pub struct Charge(usize);

impl Charge {
    /// Take `n` bytes if the queue stays within `max` with them.
    pub fn take(n: usize, max: usize) -> Option<Charge> {
        QUEUED_BYTES
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                q.checked_add(n).filter(|t| *t <= max)
            })
            .ok()
            .map(|_| Charge(n))
    }

    /// The batch is in the queue: the consumer gives the bytes back.
    pub fn queued(self) {
        std::mem::forget(self);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        release(self.0);
    }
}

fn release(n: usize) {
    let _ = QUEUED_BYTES.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
        Some(q.saturating_sub(n))
    });
}

/// An inbox row as written: the event, and `"source": "push"` for a pushed
/// one (a pulled row has no source; `store::inbox` reads either as the
/// event).
#[derive(Serialize, Deserialize)]
struct InboxRow {
    #[serde(flatten)]
    event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
}

/// In the queue, a pushed row's inbox id is negated: the consumer records
/// it as pushed (moving its task on) and deletes inbox row `-id`.
fn queued_id(id: i64, pushed: bool) -> i64 {
    if pushed {
        -id
    } else {
        id
    }
}

/// Make a pushed batch durable: its events in the inbox, one transaction,
/// synced to disk. Waits at most `busy` for the activity log's write lock
/// (an error then: the caller refuses the batch). Returns the rows to queue.
/// Refused (`store::PlansFull`, nothing kept) when the batch would start
/// more plans than `max_plans` leaves room for.
pub fn keep(
    path: &Path,
    events: &[Event],
    busy: Duration,
    max_plans: usize,
) -> Result<Vec<(i64, Event)>> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening the activity log {}", path.display()))?;
    conn.busy_timeout(busy)?;
    // A 202 promises the batch survives a power loss too, not only a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if let Err(full) = crate::monitor::store::admit_pushed(&tx, events, max_plans)? {
        return Err(full.into());
    }
    let mut rows = Vec::with_capacity(events.len());
    {
        let mut insert = tx.prepare_cached("INSERT INTO event_inbox (event) VALUES (?1)")?;
        for e in events {
            let json = serde_json::to_string(&InboxRow {
                event: e.clone(),
                source: Some(Source::Push),
            })?;
            insert.execute([json])?;
            rows.push((queued_id(tx.last_insert_rowid(), true), e.clone()));
        }
    }
    tx.commit()?;
    Ok(rows)
}

/// Inbox rows after id `after`, oldest first, pushed ones marked.
fn inbox(conn: &Connection, after: i64, limit: usize) -> Result<Vec<(i64, Event)>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, event FROM event_inbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt
        .query_map(params![after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, json)| {
            let row: InboxRow = serde_json::from_str(&json)
                .with_context(|| format!("event_inbox row {id} is not an event"))?;
            Ok((queued_id(id, row.source == Some(Source::Push)), row.event))
        })
        .collect()
}

/// Move inbox rows into the queue while it has room. Returns false when
/// the queue filled up first (try again later).
pub fn feed(conn: &Connection, queue: &mpsc::Sender<Batch>, cursor: &Cursor) -> Result<bool> {
    loop {
        let from = cursor.get();
        let rows = inbox(conn, from, FEED_BATCH)?;
        let Some(last) = rows.last().map(|(id, _)| id.abs()) else {
            return Ok(true);
        };
        let n = bytes_of(&rows);
        match queue.try_send(Batch::Pulled(rows)) {
            // A rewind meanwhile (the consumer failed a batch) wins: those
            // rows are fed again, and recording twice counts once.
            Ok(()) => {
                QUEUED_BYTES.fetch_add(n, Ordering::SeqCst);
                cursor.advance(from, last);
            }
            Err(mpsc::error::TrySendError::Full(_)) => return Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                anyhow::bail!("the monitor's queue is closed")
            }
        }
    }
}

/// Record a batch of inbox rows: the pulled ones (deleted from the inbox in
/// the same transaction), then the pushed ones (deleted once recorded: a
/// crash in between feeds them again, and they count once).
fn record(conn: &mut Connection, batch: &Batch) -> Result<Vec<Event>> {
    let rows = match batch {
        Batch::Pulled(rows) => rows,
        Batch::Pushed(_) => return store::ingest(conn, batch, Utc::now()),
    };
    let (pushed, pulled): (Vec<_>, Vec<_>) = rows.iter().cloned().partition(|(id, _)| *id < 0);
    let mut new = Vec::new();
    if !pulled.is_empty() {
        new.extend(store::ingest(conn, &Batch::Pulled(pulled), Utc::now())?);
    }
    if !pushed.is_empty() {
        let events = pushed.iter().map(|(_, e)| e.clone()).collect();
        new.extend(store::ingest(conn, &Batch::Pushed(events), Utc::now())?);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM event_inbox WHERE id = ?1")?;
            for (id, _) in &pushed {
                delete.execute([-id])?;
            }
        }
        tx.commit()?;
    }
    Ok(new)
}

/// Called with the events recorded for the first time (the metrics).
pub type OnNew = Box<dyn Fn(&[Event]) + Send>;

/// The consumer: a thread of its own with its own connection, recording
/// each batch. It ends when every sender is gone and the queue is empty.
pub fn spawn_consumer(
    path: PathBuf,
    mut rx: mpsc::Receiver<Batch>,
    cursor: Cursor,
    on_new: OnNew,
) -> Result<std::thread::JoinHandle<()>> {
    let log = ActivityLog::open(&path)?;
    std::thread::Builder::new()
        .name("foreman-monitor".into())
        .spawn(move || {
            let mut conn = log.into_conn();
            while let Some(batch) = rx.blocking_recv() {
                fail::fail_point!("monitor::ingest");
                // A panic must not end the consumer (the queue would fill
                // and every push be refused): it fails this batch only.
                let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    record(&mut conn, &batch)
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("recording the batch panicked")));
                match recorded {
                    Ok(new) => {
                        on_new(&new);
                        RECORDED.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => match &batch {
                        Batch::Pulled(rows) => {
                            let first = rows.iter().map(|(id, _)| id.abs()).min().unwrap_or(0);
                            warn!(error = %format!("{e:#}"), events = rows.len(), "recording events failed; they stay in the inbox and are fed again");
                            cursor.rewind(first);
                        }
                        Batch::Pushed(events) => {
                            warn!(error = %format!("{e:#}"), events = events.len(), "recording pushed events failed")
                        }
                    },
                }
                if let Batch::Pulled(rows) = &batch {
                    release(bytes_of(rows));
                }
            }
        })
        .context("starting the monitor thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_bytes_are_taken_within_the_bound_and_given_back() {
        // The counter is the process's: measure from where it stands.
        let base = QUEUED_BYTES.load(Ordering::SeqCst);
        let max = base + 1000;
        let a = Charge::take(600, max).expect("within the bound");
        assert!(Charge::take(600, max).is_none(), "past the bound");
        let b = Charge::take(400, max).expect("exactly at the bound");
        drop(a);
        let c = Charge::take(600, max).expect("room again");
        c.queued();
        // Queued: the consumer gives it back.
        release(600);
        drop(b);
        assert_eq!(QUEUED_BYTES.load(Ordering::SeqCst), base);
    }

    #[test]
    fn queue_inbox_rows_say_whether_they_were_pushed() {
        let e = Event {
            kind: super::super::EventType::TaskStarted,
            task_id: Some("t".into()),
            plan_id: None,
            droid_type: None,
            attempt: 1,
            at: Utc::now(),
        };
        let pushed = serde_json::to_string(&InboxRow {
            event: e.clone(),
            source: Some(Source::Push),
        })
        .expect("json");
        let pulled = serde_json::to_string(&e).expect("json");
        let read = |j: &str| serde_json::from_str::<InboxRow>(j).expect("row");
        assert_eq!(read(&pushed).source, Some(Source::Push));
        assert_eq!(read(&pushed).event, e);
        assert_eq!(read(&pulled).source, None);
        // What the store reads back from either is the event.
        assert_eq!(serde_json::from_str::<Event>(&pushed).expect("event"), e);
        assert_eq!(queued_id(7, true), -7);
        assert_eq!(queued_id(7, false), 7);
    }
}
