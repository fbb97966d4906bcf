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

    fn set(&self, id: i64) {
        self.0.store(id, Ordering::SeqCst)
    }

    fn rewind(&self, before: i64) {
        self.0.fetch_min(before - 1, Ordering::SeqCst);
    }
}

/// Move pulled events from the inbox into the queue while it has room.
/// Returns false when the queue filled up first (try again later).
pub fn feed(conn: &Connection, queue: &mpsc::Sender<Batch>, cursor: &Cursor) -> Result<bool> {
    loop {
        let rows = store::inbox(conn, cursor.get(), FEED_BATCH)?;
        let Some(last) = rows.last().map(|(id, _)| *id) else {
            return Ok(true);
        };
        match queue.try_send(Batch::Pulled(rows)) {
            Ok(()) => cursor.set(last),
            Err(mpsc::error::TrySendError::Full(_)) => return Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                anyhow::bail!("the monitor's queue is closed")
            }
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
                match store::ingest(&mut conn, &batch, Utc::now()) {
                    Ok(new) => on_new(&new),
                    Err(e) => match &batch {
                        Batch::Pulled(rows) => {
                            let first = rows.first().map_or(0, |(id, _)| *id);
                            warn!(error = %format!("{e:#}"), events = rows.len(), "recording pulled events failed; they stay in the inbox and are fed again");
                            cursor.rewind(first);
                        }
                        Batch::Pushed(events) => {
                            error!(error = %format!("{e:#}"), events = events.len(), "recording pushed events failed: they are lost (the next sweep still sees each transition it can)")
                        }
                    },
                }
            }
        })
        .context("starting the monitor thread")
}
