//! `foreman run`: the daemon. Its duties, in order:
//! 1. take the actor lock, open and migrate the activity log;
//! 2. the startup orphan scan (which also re-verifies findings a crash left
//!    pending), waiting out exit grace once if the scan found tasks gone;
//! 3. a sweep every `interval`, missed ticks skipped, never bunched;
//! 4. after each sweep, and whenever a queued alert falls due between
//!    sweeps, deliver the alert outbox (bounded: see `outbox`);
//! 5. prune the activity log daily;
//! 6. on SIGTERM/SIGINT, let the sweep in flight finish and return; on a
//!    second signal, return at once.
//!
//! The executor being unreachable never stops it: the sweep records
//! `snapshot_error` and the next tick tries again.

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::executor::{self, Executor};
use crate::lock;
use crate::model::SweepKind;
use crate::outbox;
use crate::sweep::{sweep, LogAccess, SweepOptions, SweepReport};
use anyhow::{Context, Result};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};

/// How the daemon ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Shut down cleanly after the sweep in flight.
    Clean,
    /// A second signal: returned without waiting for the sweep in flight.
    Immediate,
}

struct State {
    log: ActivityLog,
    executor: Box<dyn Executor>,
}

/// Hook for each finished sweep (the demo prints them; the daemon logs).
pub type OnSweep = Arc<dyn Fn(&SweepReport) + Send + Sync>;

pub fn run(config: Config, on_sweep: Option<OnSweep>) -> Result<Exit> {
    let _lock = lock::acquire(&config.activity.path, "run")?;
    let log = ActivityLog::open(&config.activity.path)?;
    let executor = executor::open(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(main_loop(
        Arc::new(config),
        State { log, executor },
        on_sweep,
    ));
    // A sweep still in flight after a second signal is abandoned, not awaited.
    runtime.shutdown_background();
    result
}

/// SIGTERM and SIGINT, merged.
fn signals() -> Result<mpsc::UnboundedReceiver<&'static str>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let mut s = signal(kind).with_context(|| format!("installing the {name} handler"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(name).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

async fn main_loop(config: Arc<Config>, state: State, on_sweep: Option<OnSweep>) -> Result<Exit> {
    let mut sigs = signals()?;
    let mut state = Some(state);
    let mut last_prune = None;

    // When the earliest queued alert is due (retries between sweeps).
    let mut alert_due: Option<Instant>;

    // One job on the blocking pool (a sweep, or `None` for delivery alone),
    // then a round of alert delivery; a first signal lets it finish.
    macro_rules! job {
        ($kind:expr, $lateness:expr) => {{
            let st = state.take().context("daemon state lost")?;
            let cfg = config.clone();
            let hook = on_sweep.clone();
            let kind: Option<SweepKind> = $kind;
            let lateness = $lateness;
            let mut job = tokio::task::spawn_blocking(move || {
                let mut st = st;
                let report = kind.and_then(|kind| {
                    let opts = SweepOptions { lateness };
                    let r = sweep(&cfg, st.executor.as_ref(), LogAccess::Write(&mut st.log), kind, &opts);
                    match r {
                        Ok(report) => {
                            if let Some(h) = &hook {
                                h(&report);
                            }
                            Some(report)
                        }
                        // Recoverable: logged, tried again next tick.
                        Err(e) => {
                            error!(error = %format!("{e:#}"), "sweep failed");
                            None
                        }
                    }
                });
                let due = deliver_alerts(&cfg, &st.log);
                (st, report, due)
            });
            let mut stopping = false;
            let outcome = loop {
                tokio::select! {
                    done = &mut job => break done.context("the sweep thread panicked")?,
                    Some(sig) = sigs.recv() => {
                        if stopping {
                            warn!(signal = sig, "second signal: exiting without waiting for the sweep in flight");
                            return Ok(Exit::Immediate);
                        }
                        stopping = true;
                        info!(signal = sig, "stopping after the sweep in flight (send again to exit at once)");
                    }
                }
            };
            state = Some(outcome.0);
            alert_due = outcome.2;
            if stopping {
                return Ok(Exit::Clean);
            }
            outcome.1
        }};
    }
    macro_rules! sweep_now {
        ($kind:expr, $lateness:expr) => {
            job!(Some($kind), $lateness)
        };
    }

    prune(state.as_ref(), &config, &mut last_prune);
    info!(interval = %humantime::format_duration(config.interval), host = %config.host, "startup orphan scan");
    let first = sweep_now!(SweepKind::Startup, None);
    // Tasks found gone wait out their exit grace once, then are re-judged,
    // so the startup scan settles what it found instead of the next sweep.
    if first.as_ref().is_some_and(|r| r.waiting() > 0) {
        let grace = config
            .droid_types
            .values()
            .map(|p| p.exit_grace)
            .chain([config.defaults.exit_grace])
            .max()
            .unwrap_or(Duration::from_secs(30));
        info!(wait = %humantime::format_duration(grace), "startup scan: waiting out exit grace for tasks found gone");
        tokio::select! {
            _ = tokio::time::sleep(grace + Duration::from_millis(100)) => {}
            Some(_) = sigs.recv() => return Ok(Exit::Clean),
        }
        sweep_now!(SweepKind::Startup, None);
    }

    // Skip, not Burst: after a long sweep or a stall the daemon resumes on
    // the schedule instead of running the missed sweeps back to back.
    let mut ticker = tokio::time::interval_at(Instant::now() + config.interval, config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            scheduled = ticker.tick() => {
                let lateness = Instant::now().saturating_duration_since(scheduled);
                sweep_now!(SweepKind::Scheduled, Some(lateness));
                prune(state.as_ref(), &config, &mut last_prune);
            }
            _ = sleep_until(alert_due), if alert_due.is_some() => {
                job!(None, None);
            }
            Some(sig) = sigs.recv() => {
                info!(signal = sig, "stopping");
                return Ok(Exit::Clean);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// One round of the outbox; when the next queued alert is due.
fn deliver_alerts(config: &Config, log: &ActivityLog) -> Option<Instant> {
    if !config.alerts.is_empty() {
        match outbox::deliver_due(config, log, outbox::budget(config)) {
            Ok(round) if round != outbox::Round::default() => info!(
                delivered = round.delivered,
                failed = round.failed,
                expired = round.expired,
                cancelled = round.cancelled,
                left = round.left,
                "alert round"
            ),
            Ok(_) => {}
            Err(e) => error!(error = %format!("{e:#}"), "alert delivery failed"),
        }
    }
    match log.next_alert_due() {
        Ok(Some(at)) => {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            // Never spin: at most one round per second.
            Some(Instant::now() + wait.max(Duration::from_secs(1)))
        }
        Ok(None) => None,
        Err(e) => {
            error!(error = %format!("{e:#}"), "reading the alert outbox failed");
            None
        }
    }
}

fn prune(state: Option<&State>, config: &Config, last: &mut Option<chrono::DateTime<Utc>>) {
    let now = Utc::now();
    if last.is_some_and(|l| now - l < chrono::Duration::days(1)) {
        return;
    }
    *last = Some(now);
    if let Some(st) = state {
        match st.log.prune(config.activity.retention, now) {
            Ok(n) => info!(rows = n, "pruned the activity log"),
            Err(e) => error!(error = %format!("{e:#}"), "pruning the activity log failed"),
        }
    }
}
