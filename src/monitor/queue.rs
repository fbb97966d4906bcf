//! The monitor's one bounded queue and its consumer. Pushed batches go in
//! with `try_send` (full: the HTTP layer answers 503); pulled events wait
//! in the activity log's inbox and the feeder moves them in while there is
//! room, so a sweep never blocks on the queue and nothing is lost.

use super::event::Event;
use super::store::{self, Batch};
use crate::activity::ActivityLog;
use anyhow::{Context, Result};
use chrono::Utc;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{error, warn};

/// How many pulled events go into the queue as one batch.
const FEED_BATCH: usize = 256;

/// The highest inbox id handed to the queue. The consumer moves it back
/// when a pulled batch could not be recorded, so it is fed again.
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

/// Move pulled events from the inbox into the queue while it has room.
/// Returns false when the queue filled up first (try again later).
pub fn feed(conn: &Connection, queue: &mpsc::Sender<Batch>, cursor: &Cursor) -> Result<bool> {
    loop {
        let from = cursor.get();
        let rows = store::inbox(conn, from, FEED_BATCH)?;
        let Some(last) = rows.last().map(|(id, _)| *id) else {
            return Ok(true);
        };
        match queue.try_send(Batch::Pulled(rows)) {
            // A rewind meanwhile (the consumer failed a batch) wins: those
            // rows are fed again, and recording twice counts once.
            Ok(()) => cursor.advance(from, last),
            Err(mpsc::error::TrySendError::Full(_)) => return Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                anyhow::bail!("the monitor's queue is closed")
            }
        }
    }
}

/// Record a batch. A pushed batch exists nowhere else, so a failure (the
/// log busy past its timeout, say) is retried a few times before it is
/// given up; a pulled one stays in the inbox and is fed again.
fn record(conn: &mut Connection, batch: &Batch) -> Result<Vec<Event>> {
    let tries = match batch {
        Batch::Pushed(_) => 3,
        Batch::Pulled(_) => 1,
    };
    let mut n = 1;
    loop {
        match store::ingest(conn, batch, Utc::now()) {
            Err(e) if n < tries => {
                warn!(error = %format!("{e:#}"), attempt = n, "recording pushed events failed; trying again");
                std::thread::sleep(std::time::Duration::from_secs(1));
                n += 1;
            }
            other => return other,
        }
    }
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
                    Ok(new) => on_new(&new),
                    Err(e) => match &batch {
                        Batch::Pulled(rows) => {
                            let first = rows.first().map_or(0, |(id, _)| *id);
                            warn!(error = %format!("{e:#}"), events = rows.len(), "recording pulled events failed; they stay in the inbox and are fed again");
                            cursor.rewind(first);
                        }
                        Batch::Pushed(events) => {
                            error!(error = %format!("{e:#}"), events = events.len(), "recording pushed events failed after retries: they are lost (the next sweep still sees each transition it can)")
                        }
                    },
                }
            }
        })
        .context("starting the monitor thread")
}
