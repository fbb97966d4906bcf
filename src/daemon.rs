//! `foreman run`: the daemon. Its duties, in order:
//! 1. take the actor lock, open and migrate the activity log;
//! 2. the startup orphan scan (which also re-verifies findings a crash left
//!    pending), waiting out exit grace once if the scan found tasks gone;
//! 3. a sweep every `interval`, missed ticks skipped, never bunched; a
//!    pidfd held for every bound task those sweeps judge alive (`watch`),
//!    and an `event` sweep of the tasks whose processes exit, 200 ms after
//!    the exit and again when their exit grace ends;
//! 4. after each sweep, and whenever a queued alert falls due between
//!    sweeps, deliver the alert outbox (bounded: see `outbox`);
//! 5. the wellbeing sweep on its schedule (`[wellbeing] schedule`), and
//!    once at startup for a slot missed while the daemon was down;
//! 6. the sandbox review on its schedule (`[review] schedule`), pinging
//!    `ping_url` after each pass;
//! 7. prune the activity log daily;
//! 8. the execution monitor: each sweep's pulled events fed from the inbox
//!    into the monitor's queue (again each second while it is full), its
//!    consumer thread recording them; the HTTP listener (`[http]`).
//! 9. the systemd notify protocol: READY=1 after the startup scan, STATUS=
//!    after each sweep, WATCHDOG=1 from the idle loop only (a job that
//!    hangs stops the pings), RELOADING=1/READY=1 around a SIGHUP reload of
//!    foreman.toml (validated first; on error the old one stays), STOPPING=1;
//! 10. on SIGTERM/SIGINT, let the sweep in flight finish and return; on a
//!     second signal, return at once.
//!
//! The executor being unreachable never stops it: the sweep records
//! `snapshot_error` and the next tick tries again.

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::executor::{self, Executor};
use crate::http::{self, LiveConfig, Liveness, Shared};
use crate::lock;
use crate::metrics::Metrics;
use crate::model::SweepKind;
use crate::monitor::queue::{self, Cursor};
use crate::monitor::Batch;
use crate::notify::Notifier;
use crate::outbox;
use crate::review;
use crate::schedule::Schedule;
use crate::sweep::{sweep, LogAccess, SweepOptions, SweepReport};
use crate::watch::Watch;
use crate::wellbeing::{self, RunId, RunKind};
use anyhow::{Context, Result};
use chrono::Utc;
use std::collections::HashSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
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
    /// When this daemon started (its fleet row says so).
    born: chrono::DateTime<chrono::Utc>,
}

/// The execution monitor's side of the daemon, shared with the jobs.
#[derive(Clone)]
struct Monitor {
    queue: mpsc::Sender<Batch>,
    cursor: Cursor,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
}

/// How long the daemon waits after a watched process exits before it looks:
/// an executor that reaps its worker and then writes the result gets the
/// moment it needs, deaths in a burst are looked at together (one brake),
/// and the finding still lands well within a second.
const SETTLE: Duration = Duration::from_millis(200);

/// After each full sweep on a fleet (`[fleet]`): this Foreman's beat,
/// and, when it holds the fleet's lock, the leader's look at silent hosts.
/// A failure is logged and tried again after the next sweep: the host's
/// own sweep has already been done and recorded.
fn fleet_duty(cfg: &Config, st: &mut State, report: &SweepReport, metrics: &Metrics) {
    let State {
        log,
        executor,
        born,
    } = st;
    let Some(fleet) = executor.fleet() else {
        return;
    };
    let acted = |o: crate::model::Outcome| {
        matches!(
            o,
            crate::model::Outcome::MarkedFailed | crate::model::Outcome::Terminated
        )
    };
    let beat = crate::fleet::Beat {
        boot_id: crate::probe::boot_facts()
            .map(|b| b.boot_id)
            .unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started_at: *born,
        last_sweep_at: Some(report.started_at),
        running: report.tasks_checked as i64,
        findings: report.findings.len() as i64,
        actions: report.findings.iter().filter(|f| acted(f.outcome)).count() as i64,
        snapshot_error: report.snapshot_error.clone(),
    };
    let leads = match fleet.beat(&beat) {
        Ok(leads) => leads,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "the fleet heartbeat failed: other hosts will call this one lost if it stays silent for host_lost_after");
            metrics.on_fleet(None);
            return;
        }
    };
    if !leads {
        metrics.on_fleet(None);
        // What it left open while it led (a crash between record and
        // mark), settled now that another Foreman leads.
        if let Err(e) = crate::sweep::fleet_sweep(cfg, executor.as_ref(), log, None) {
            error!(error = %format!("{e:#}"), "settling this Foreman's open host_lost findings failed");
        }
        return;
    }
    let view = match fleet.view() {
        Ok(v) => v,
        Err(e) => {
            error!(error = %format!("{e:#}"), "reading the fleet failed: lost hosts are looked for after the next sweep");
            metrics.on_fleet(None);
            return;
        }
    };
    metrics.on_fleet(Some(&view));
    let started = std::time::Instant::now();
    match crate::sweep::fleet_sweep(cfg, executor.as_ref(), log, Some(&view)) {
        Ok(Some(r)) => metrics.on_sweep(SweepKind::Fleet.as_str(), Some(&r), started.elapsed()),
        Ok(None) => {}
        Err(e) => {
            metrics.on_sweep(SweepKind::Fleet.as_str(), None, started.elapsed());
            error!(error = %format!("{e:#}"), "the fleet sweep failed");
        }
    }
}

/// Hook for each finished sweep (the demo prints them; the daemon logs).
pub type OnSweep = Arc<dyn Fn(&SweepReport) + Send + Sync>;

pub fn run(config: Config, on_sweep: Option<OnSweep>) -> Result<Exit> {
    tune_malloc();
    // Until the reload handler is installed (after the lock and the
    // migrations), a SIGHUP must not end the daemon. No child is started
    // before then, so none inherits the ignored disposition.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let _lock = lock::acquire(&config.activity.path, "run")?;
    let log = ActivityLog::open(&config.activity.path)?;
    let executor = executor::open(&config)?;
    let watch = open_watch();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let metrics = Arc::new(Metrics::new(&config));
    let (queue, rx) = mpsc::channel(config.monitor.queue_capacity);
    let cursor = Cursor::default();
    let on_new = {
        let metrics = metrics.clone();
        Box::new(move |events: &[crate::monitor::Event]| metrics.on_events(events))
    };
    let consumer = queue::spawn_consumer(config.activity.path.clone(), rx, cursor.clone(), on_new)?;
    let monitor = Monitor {
        queue,
        cursor,
        metrics,
        liveness: Arc::new(Liveness::default()),
    };
    let result = runtime.block_on(main_loop(
        Arc::new(config),
        State {
            log,
            executor,
            born: chrono::Utc::now(),
        },
        monitor,
        Notifier::from_env(),
        on_sweep,
        watch,
    ));
    // A sweep still in flight after a second signal is abandoned, not awaited.
    // The listener's tasks go with the runtime, and with them the last
    // senders: the consumer records what is queued, then ends.
    runtime.shutdown_background();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !consumer.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !consumer.is_finished() {
        warn!("the monitor's queue was not drained within 5s; pulled events stay in the inbox");
    }
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

/// The pidfds of this host's tasks, if the kernel gives them: the soft
/// `RLIMIT_NOFILE` is raised to the hard one first (one fd per task). Said
/// once when Foreman falls back to reading `/proc` for every task.
fn open_watch() -> Option<Arc<Watch>> {
    let limit = raise_nofile();
    match Watch::new() {
        Ok(w) => {
            info!(
                max_open_files = limit.unwrap_or(0),
                "holding a pidfd per running task: a death is seen within a second, a healthy task costs no /proc read"
            );
            Some(Arc::new(w))
        }
        Err(why) => {
            warn!(reason = %why, "pidfds are not available (Linux < 5.3, or a seccomp filter): every task is read from /proc each sweep and a death is seen at the next sweep");
            None
        }
    }
}

/// glibc's allocator, set for a daemon whose every sweep builds and drops a
/// snapshot of megabytes: large blocks always mmapped (the dynamic
/// threshold otherwise rises after the first free and puts them on the
/// heap, where growing a vector copies it and what is freed stays
/// resident), the heap's top trimmed at 128 KiB, and two arenas instead of
/// one per thread that allocates (the blocking pool's, the consumer's),
/// each keeping its own freed megabytes. Measured at 10,000 tasks: resident
/// anonymous memory between sweeps 14.4 → 9.7 MiB (BENCHMARKS.md).
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raise the soft limit on open files to the hard one; the new soft limit.
fn raise_nofile() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    crate::child::remember_nofile(r.rlim_cur);
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads one valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(r.rlim_cur)
}

async fn main_loop(
    config: Arc<Config>,
    state: State,
    monitor: Monitor,
    notifier: Notifier,
    on_sweep: Option<OnSweep>,
    watch: Option<Arc<Watch>>,
) -> Result<Exit> {
    let mut config = config;
    let mut sigs = signals()?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut state = Some(state);
    let mut last_prune = None;
    let live: LiveConfig = Arc::new(std::sync::RwLock::new(config.clone()));
    // Listening before the startup scan: /healthz says it is running.
    http::start(Shared {
        config: live.clone(),
        metrics: monitor.metrics.clone(),
        queue: monitor.queue.clone(),
        liveness: monitor.liveness.clone(),
    })
    .await?;
    // When the inbox should be fed again (the queue was full).
    let mut feed_due: Option<Instant>;

    // When the earliest queued alert is due (retries between sweeps).
    let mut alert_due: Option<Instant>;

    // Watched processes that exited, looked at once `event_due` comes; and
    // the tasks an event sweep found gone, looked at again when their exit
    // grace ends (so a death is acted on then, not at the next tick).
    let exits = match &watch {
        // SAFETY: `Exits` owns an Arc of the watch, whose epoll fd stays
        // open and the same until the watch is dropped, so for as long as
        // the AsyncFd holds it.
        Some(w) => Some(
            unsafe { AsyncFd::register_with_interest(Exits(w.clone()), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
                .context("registering the pidfd set with the runtime")?,
        ),
        None => None,
    };
    let mut exited: HashSet<String> = HashSet::new();
    let mut event_due: Option<Instant> = None;
    let mut recheck: Option<(Instant, HashSet<String>)> = None;

    // One job on the blocking pool (a sweep, a wellbeing run, or delivery
    // alone), then a round of alert delivery; a first signal lets it finish.
    macro_rules! job {
        ($work:expr) => {{
            let st = state.take().context("daemon state lost")?;
            let cfg = config.clone();
            let hook = on_sweep.clone();
            let mon = monitor.clone();
            let watch = watch.clone();
            let work: Work = $work;
            let what = work.name();
            let mut job = tokio::task::spawn_blocking(move || {
                let mut st = st;
                let report = match work {
                    Work::Sweep(kind, lateness, focus) => {
                        let opts = SweepOptions { lateness, watch, focus, ..SweepOptions::default() };
                        let started = std::time::Instant::now();
                        let result = sweep(&cfg, st.executor.as_ref(), LogAccess::Write(&mut st.log), kind, &opts);
                        mon.metrics.on_sweep(kind.as_str(), result.as_ref().ok(), started.elapsed());
                        match result {
                            Ok(report) if kind == SweepKind::Event => {
                                if let Some(h) = &hook {
                                    h(&report);
                                }
                                Some(report)
                            }
                            Ok(report) => {
                                // For /healthz: this sweep, and the deferral
                                // of hung verdicts as the log now has it.
                                let deferral = st
                                    .log
                                    .sweep_health()
                                    .map(|h| h.and_then(|h| h.deferral))
                                    .map_err(|e| format!("{e:#}"));
                                if let Err(e) = &deferral {
                                    error!(error = %e, "reading the deferral of hung verdicts failed");
                                }
                                mon.liveness.swept(http::Swept {
                                    summary: summary(&report),
                                    snapshot_error: report.snapshot_error.clone(),
                                    deferral,
                                });
                                if let Some(h) = &hook {
                                    h(&report);
                                }
                                fleet_duty(&cfg, &mut st, &report, &mon.metrics);
                                Some(report)
                            }
                            // Recoverable: logged, tried again next tick.
                            Err(e) => {
                                error!(error = %format!("{e:#}"), "sweep failed");
                                None
                            }
                        }
                    }
                    Work::Feed => None,
                    Work::Wellbeing(run) => {
                        wellbeing_run(&cfg, &st, &run);
                        None
                    }
                    Work::Review => {
                        review_run(&cfg, &st);
                        None
                    }
                    Work::Deliver => None,
                };
                let due = deliver_alerts(&cfg, &st.log, &mon.metrics);
                let fed = feed(&st.log, &mon);
                (st, report, due, fed)
            });
            let mut stopping = false;
            let outcome = loop {
                tokio::select! {
                    done = &mut job => break done.context("the sweep thread panicked")?,
                    Some(sig) = sigs.recv() => {
                        if stopping {
                            warn!(signal = sig, "second signal: exiting without waiting for the {what} in flight");
                            return Ok(Exit::Immediate);
                        }
                        stopping = true;
                        notifier.stopping();
                        info!(signal = sig, "stopping after the {what} in flight (send again to exit at once)");
                    }
                }
            };
            state = Some(outcome.0);
            alert_due = outcome.2;
            feed_due = outcome.3;
            if stopping {
                return Ok(Exit::Clean);
            }
            // The job finished: the loop is making progress.
            notifier.ping();
            if let Some(r) = outcome.1.as_ref().filter(|r| r.kind != SweepKind::Event) {
                notifier.status(&summary(r));
            }
            outcome.1
        }};
    }
    macro_rules! sweep_now {
        ($kind:expr, $lateness:expr) => {
            job!(Work::Sweep($kind, $lateness, None))
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
        notifier.extend_start(grace + Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(grace + Duration::from_millis(100)) => {}
            Some(_) = sigs.recv() => {
                notifier.stopping();
                return Ok(Exit::Clean);
            }
        }
        sweep_now!(SweepKind::Startup, None);
    }

    notifier.ready(&format!(
        "startup scan done; sweeping every {}",
        humantime::format_duration(config.interval)
    ));
    info!("ready");

    // A wellbeing slot missed while the daemon was down runs once now.
    let checked = Utc::now();
    let missed = match state
        .as_ref()
        .map(|st| wellbeing::missed_slot(&config, &st.log, checked))
    {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            error!(error = %format!("{e:#}"), "checking for a missed wellbeing run failed");
            None
        }
        None => None,
    };
    if let Some(slot) = missed {
        info!(slot = %config.wellbeing.schedule.slot_id(slot), "wellbeing: catching up the run missed while Foreman was down");
        job!(Work::Wellbeing(RunId::slot(
            &config,
            slot,
            RunKind::CatchUp
        )));
    }
    let mut wellbeing_slots = Slots::new(Some(config.wellbeing.schedule.clone()), checked);
    let mut review_slots = Slots::new(config.review.schedule.clone(), checked);
    // Pings come from this loop only: while a job runs (or hangs), none.
    let mut watchdog = notifier.ping_every().map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });

    // Skip, not Burst: after a long sweep or a stall the daemon resumes on
    // the schedule instead of running the missed sweeps back to back.
    let mut ticker = tokio::time::interval_at(Instant::now() + config.interval, config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        // Biased, in this order: a stop or a reload first, the watchdog's
        // ping, watched processes that exited and the event sweeps they
        // call for (a death is recorded within a second), then what is due
        // at most once in a while (schedule slots, alert retries, the
        // monitor's feed), and the sweep ticker last.
        // After a long sweep the ticker is ready at once (a missed tick),
        // so an unbiased choice let it win at random, and on a busy host a
        // due wellbeing slot could lose for tens of seconds.
        tokio::select! {
            biased;
            Some(sig) = sigs.recv() => {
                notifier.stopping();
                info!(signal = sig, "stopping");
                return Ok(Exit::Clean);
            }
            Some(()) = hup.recv() => {
                notifier.reloading();
                match reload(&config, state.as_mut()) {
                    Ok(new) => {
                        if new.interval != config.interval {
                            ticker = tokio::time::interval_at(Instant::now() + new.interval, new.interval);
                            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
                        }
                        let now = Utc::now();
                        wellbeing_slots.reschedule(Some(new.wellbeing.schedule.clone()), now);
                        review_slots.reschedule(new.review.schedule.clone(), now);
                        monitor.metrics.on_reload(Some(&new));
                        match live.write() {
                            Ok(mut l) => *l = new.clone(),
                            Err(poisoned) => *poisoned.into_inner() = new.clone(),
                        }
                        info!(fingerprint = %new.fingerprint, interval = %humantime::format_duration(new.interval), mode = ?new.mode, "SIGHUP: configuration reloaded; the new policy applies from the next sweep");
                        config = new;
                        notifier.ready("configuration reloaded");
                    }
                    Err(e) => {
                        monitor.metrics.on_reload(None);
                        error!(error = %e, "SIGHUP: the configuration was not reloaded; the one in force stays");
                        notifier.ready(&format!("reload failed, previous configuration in force: {e}"));
                    }
                }
            }
            _ = tick(watchdog.as_mut()), if watchdog.is_some() => {
                notifier.ping();
            }
            ids = exits_ready(exits.as_ref()), if exits.is_some() => {
                info!(tasks = ids.len(), "watched task processes exited: looking at them now");
                exited.extend(ids);
                event_due.get_or_insert(Instant::now() + SETTLE);
            }
            _ = sleep_until(event_due), if event_due.is_some() => {
                event_due = None;
                let focus = std::mem::take(&mut exited);
                if let Some(r) = job!(Work::Sweep(SweepKind::Event, None, Some(focus))) {
                    recheck_waiting(&config, &r, &mut recheck);
                }
            }
            _ = sleep_until(recheck.as_ref().map(|r| r.0)), if recheck.is_some() => {
                let focus = recheck.take().map(|r| r.1).unwrap_or_default();
                if let Some(r) = job!(Work::Sweep(SweepKind::Event, None, Some(focus))) {
                    recheck_waiting(&config, &r, &mut recheck);
                }
            }
            // A due slot is ready at once (a zero sleep is not ready until
            // the timer's next turn, so a busy ticker or a signal would
            // always win); otherwise the sleep only wakes the loop.
            _ = wake(wellbeing_slots.wait(), wellbeing_slots.due()), if wellbeing_slots.armed() => {
                if let Some(slot) = wellbeing_slots.take_due() {
                    job!(Work::Wellbeing(RunId::slot(&config, slot, RunKind::Scheduled)));
                }
            }
            _ = wake(review_slots.wait(), review_slots.due()), if review_slots.armed() => {
                if review_slots.take_due().is_some() {
                    job!(Work::Review);
                }
            }
            _ = sleep_until(alert_due), if alert_due.is_some() => {
                job!(Work::Deliver);
            }
            _ = sleep_until(feed_due), if feed_due.is_some() => {
                job!(Work::Feed);
            }
            scheduled = ticker.tick() => {
                let lateness = Instant::now().saturating_duration_since(scheduled);
                sweep_now!(SweepKind::Scheduled, Some(lateness));
                prune(state.as_ref(), &config, &mut last_prune);
            }
        }
    }
}

/// The pidfd set as the runtime polls it.
struct Exits(Arc<Watch>);

impl AsRawFd for Exits {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd()
    }
}

/// The tasks whose watched processes exited, once some have; pending for
/// ever without pidfds.
async fn exits_ready(fd: Option<&AsyncFd<Exits>>) -> Vec<String> {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    let watch = &fd.get_ref().0;
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                error!(error = %e, "waiting on the pidfd set failed: deaths are seen at the next sweep");
                return std::future::pending().await;
            }
        };
        let ids = watch.exited();
        if !ids.is_empty() {
            return ids;
        }
        // Drained: wait for the next edge.
        guard.clear_ready();
    }
}

/// After an event sweep, the tasks it found gone and left waiting out their
/// exit grace are looked at again when the longest grace among them ends.
fn recheck_waiting(
    config: &Config,
    report: &SweepReport,
    recheck: &mut Option<(Instant, HashSet<String>)>,
) {
    let waiting: Vec<_> = report
        .findings
        .iter()
        .filter(|f| {
            f.action == crate::model::Action::Deferred
                && f.outcome == crate::model::Outcome::Pending
        })
        .collect();
    if waiting.is_empty() {
        return;
    }
    let grace = waiting
        .iter()
        .map(|f| {
            f.droid_type
                .as_deref()
                .map_or(&config.defaults, |t| config.policy(t))
                .exit_grace
        })
        .max()
        .unwrap_or_default();
    let due = Instant::now() + grace + Duration::from_millis(100);
    let (at, ids) = recheck.get_or_insert_with(|| (due, HashSet::new()));
    *at = (*at).max(due);
    ids.extend(waiting.iter().map(|f| f.task_id.clone()));
}

/// Ready at once when `now`, else after `wait`.
async fn wake(wait: Duration, now: bool) {
    if !now {
        tokio::time::sleep(wait).await;
    }
}

async fn tick(t: Option<&mut tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Read foreman.toml again (`Config::source`). Validated whole first: an
/// error leaves everything as it was. What cannot change in a running
/// daemon (the activity log's path, the listener, the monitor's queue)
/// keeps its value, with a warning to restart; the executor is reopened.
fn reload(current: &Config, state: Option<&mut State>) -> Result<Arc<Config>, String> {
    let mut new = Config::load(&current.source).map_err(|e| e.to_string())?;
    if new.activity.path != current.activity.path {
        warn!(old = %current.activity.path.display(), new = %new.activity.path.display(), "SIGHUP: [activity] path changes only at a restart; the old path stays in use");
        new.activity.path = current.activity.path.clone();
    }
    if new.http != current.http {
        warn!("SIGHUP: [http] changes only at a restart; the listener keeps its settings");
        new.http = current.http.clone();
    }
    if new.monitor != current.monitor {
        warn!("SIGHUP: [monitor] changes only at a restart");
        new.monitor = current.monitor.clone();
    }
    let executor = executor::open(&new).map_err(|e| format!("opening the executor: {e:#}"))?;
    if let Some(st) = state {
        st.executor = executor;
    }
    Ok(Arc::new(new))
}

/// What a job on the blocking pool does.
enum Work {
    /// A sweep; an event sweep names the tasks it looks at.
    Sweep(SweepKind, Option<Duration>, Option<HashSet<String>>),
    Wellbeing(RunId),
    /// The sandbox self-test (`[review] schedule`).
    Review,
    /// Deliver the outbox alone (a retry fell due between sweeps).
    Deliver,
    /// Feed the monitor's queue from the inbox (it was full).
    Feed,
}

impl Work {
    fn name(&self) -> &'static str {
        match self {
            Work::Sweep(..) => "sweep",
            Work::Wellbeing(_) => "wellbeing run",
            Work::Review => "review",
            Work::Deliver => "alert delivery",
            Work::Feed => "event feed",
        }
    }
}

/// The upcoming slots of a schedule, on the wall clock. The daemon sleeps
/// towards the next one at most a minute at a time (the monotonic clock a
/// sleep runs on stops while the host is suspended) and looks at the wall
/// clock again on every wake, so a stepped clock never fires a slot early
/// and a late wake still runs one.
struct Slots {
    schedule: Option<Schedule>,
    next: Option<chrono::DateTime<Utc>>,
}

impl Slots {
    fn new(schedule: Option<Schedule>, after: chrono::DateTime<Utc>) -> Slots {
        let next = schedule.as_ref().and_then(|s| s.next_after(after));
        Slots { schedule, next }
    }

    fn armed(&self) -> bool {
        self.next.is_some()
    }

    fn due(&self) -> bool {
        self.next.is_some_and(|n| n <= Utc::now())
    }

    /// After a reload: an unchanged schedule keeps its next slot (a slot
    /// due now still runs); a changed one starts from `now`.
    fn reschedule(&mut self, schedule: Option<Schedule>, now: chrono::DateTime<Utc>) {
        let key = |s: &Option<Schedule>| {
            s.as_ref()
                .map(|s| (s.text().to_string(), s.zone().name().to_string()))
        };
        if key(&schedule) != key(&self.schedule) {
            *self = Slots::new(schedule, now);
        }
    }

    fn wait(&self) -> Duration {
        self.next
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or_default()
            .min(Duration::from_secs(60))
    }

    /// The slot to run now, if one is due: after several slots went by
    /// (a suspend, a clock step) the latest, never the oldest. The next one
    /// is then the first after it.
    fn take_due(&mut self) -> Option<chrono::DateTime<Utc>> {
        let schedule = self.schedule.as_ref()?;
        let now = Utc::now();
        let due = self.next.filter(|s| *s <= now)?;
        let slot = schedule
            .latest_at_or_before(now)
            .filter(|l| *l >= due)
            .unwrap_or(due);
        self.next = schedule.next_after(slot.max(now));
        Some(slot)
    }
}

/// One wellbeing run, logged; a failure is logged and the next slot tries
/// again.
fn wellbeing_run(config: &Config, st: &State, run: &RunId) {
    match wellbeing::run(config, st.executor.as_ref(), &st.log, run) {
        Ok(r) => match &r.filed {
            wellbeing::Filed::AlreadyRecorded { started_at, .. } => {
                info!(run_id = %r.run_id, recorded_at = %started_at, "wellbeing: this slot was already run; nothing filed")
            }
            wellbeing::Filed::Recorded {
                initiative_id: Some(id),
            } => warn!(
                run_id = %r.run_id,
                initiative_id = id,
                issues = r.issues,
                title = %r.initiative.as_ref().map(|i| i.title.as_str()).unwrap_or(""),
                "wellbeing: filed an initiative"
            ),
            _ => info!(run_id = %r.run_id, "wellbeing: all well, nothing filed"),
        },
        Err(e) => error!(run_id = %run.id, error = %format!("{e:#}"), "wellbeing run failed"),
    }
}

/// The sandbox review, recorded; after a pass, the dead-man's switch is
/// pinged. A failure is logged at ERROR with each failed check.
fn review_run(config: &Config, st: &State) {
    let started = Utc::now();
    let opts = review::sandbox::Options {
        only: None,
        keep: false,
        judge: crate::judge::judge,
        force_pid_reuse: false,
    };
    let checks = match review::sandbox::run(&opts) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %format!("{e:#}"), "review could not build its sandbox");
            return;
        }
    };
    let report = review::Report::new("sandbox", started, checks);
    if let Err(e) = review::record(&st.log, &config.host, &report) {
        error!(error = %format!("{e:#}"), "recording the review failed");
    }
    if !report.passed {
        for c in report
            .checks
            .iter()
            .filter(|c| c.status == review::Status::Fail)
        {
            error!(run_id = %report.run_id, check = %c.name, reason = %c.reason, "review check failed");
        }
        return;
    }
    info!(run_id = %report.run_id, checks = report.checks.len(), "review passed");
    if let Some(url) = config.review.ping_url.clone() {
        // On its own thread: a slow endpoint must not hold up the sweeps.
        let timeout = config.review.ping_timeout;
        std::thread::spawn(move || match review::ping(&url, timeout) {
            Ok(()) => info!("review: pinged ping_url"),
            Err(e) => warn!(error = %e, "review: ping_url failed"),
        });
    }
}

/// One line on a finished sweep, for `/healthz`.
fn summary(r: &SweepReport) -> String {
    let mut s = format!(
        "{} sweep{} at {}: {} tasks seen, {} running checked, {} findings",
        r.kind.as_str(),
        r.sweep_id.map(|i| format!(" #{i}")).unwrap_or_default(),
        r.finished_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.tasks_seen,
        r.tasks_checked,
        r.findings.len()
    );
    if let Some(e) = &r.snapshot_error {
        s.push_str(&format!("; snapshot_error: {e}"));
    }
    let deferred = r
        .findings
        .iter()
        .filter(|f| f.outcome == crate::model::Outcome::DeferredStarvation)
        .count();
    if deferred > 0 || r.deferral.is_some() {
        s.push_str(&format!("; {deferred} hung verdict(s) deferred"));
        if let Some(d) = &r.deferral {
            s.push_str(&format!(": {d}"));
        }
    }
    s
}

/// Move pulled events into the monitor's queue; when to try again if it
/// filled up first.
fn feed(log: &ActivityLog, mon: &Monitor) -> Option<Instant> {
    match queue::feed(log.conn(), &mon.queue, &mon.cursor) {
        Ok(true) => None,
        Ok(false) => Some(Instant::now() + Duration::from_secs(1)),
        Err(e) => {
            error!(error = %format!("{e:#}"), "feeding the monitor's queue failed");
            Some(Instant::now() + Duration::from_secs(1))
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// One round of the outbox; when the next queued alert is due.
fn deliver_alerts(config: &Config, log: &ActivityLog, metrics: &Metrics) -> Option<Instant> {
    if !config.alerts.is_empty() || !config.wellbeing.sinks.is_empty() {
        let round = outbox::deliver_due(config, log, outbox::budget(config));
        if let Ok(r) = &round {
            metrics.on_delivery_round(r);
        }
        match round {
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

/// How often the activity log is pruned: a tenth of the retention, so
/// rows outlive it by at most 10%, and at most daily (the default 90 days
/// prunes once a day; a retention of hours prunes every few minutes).
pub fn prune_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(86_400))
}

fn prune(state: Option<&State>, config: &Config, last: &mut Option<chrono::DateTime<Utc>>) {
    let now = Utc::now();
    let every = chrono::Duration::from_std(prune_every(config.activity.retention))
        .unwrap_or(chrono::Duration::days(1));
    if last.is_some_and(|l| now - l < every) {
        return;
    }
    *last = Some(now);
    if let Some(st) = state {
        let keep =
            chrono::Duration::from_std(config.activity.retention).unwrap_or(chrono::Duration::MAX);
        let cutoff = now
            .checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let pruned = st
            .log
            .prune(config.activity.retention, now)
            .and_then(|n| Ok(n + crate::monitor::store::prune(st.log.conn(), cutoff)?));
        match pruned {
            Ok(n) => info!(rows = n, "pruned the activity log"),
            Err(e) => error!(error = %format!("{e:#}"), "pruning the activity log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_follows_the_retention_and_runs_at_most_daily() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let table = [
            (h(1), Duration::from_secs(360)),
            (h(10), h(1)),
            (h(24 * 10), h(24)),
            (h(24 * 90), h(24)),
            (Duration::from_secs(120), Duration::from_secs(60)),
        ];
        for (retention, every) in table {
            assert_eq!(prune_every(retention), every, "{retention:?}");
        }
    }
}
