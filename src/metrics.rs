//! `GET /metrics`: the monitor's and Foreman's own metrics, in the
//! OpenMetrics text format (prometheus-client). Counters and histograms
//! are kept in memory as things happen; gauges are read from the activity
//! log at each scrape, so they are true whoever wrote the rows (and
//! `foreman_proc_blind` from /proc, as the sweep reads it).

use crate::config::Config;
use crate::monitor::{store, Event, EventType};
use crate::sweep::SweepReport;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rusqlite::{Connection, OptionalExtension};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Instant;

/// Whether this sweep is where a finding's conclusion counts: the first
/// sweep that records it with an outcome other than `pending` (reported,
/// braked, would_mark_failed, deferred, or acted on at once), or a later
/// sweep that acted on it (it waited out exit grace, then was marked). A
/// finding seen again with the same outcome (shadow mode's would-be
/// actions, a brake that holds) is not counted again; one withdrawn while
/// pending (the executor wrote its result first) never counts.
pub fn concluded(f: &crate::sweep::FindingReport) -> bool {
    use crate::model::Outcome;
    match f.outcome {
        Outcome::Pending => false,
        Outcome::MarkedFailed
        | Outcome::AlreadyFinished
        | Outcome::Terminated
        | Outcome::Unkillable
        | Outcome::Error => true,
        _ => f.first_seen,
    }
}

/// The OpenMetrics exposition's content type (what Prometheus asks for).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's, for every other client (curl, promtool).
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut fields = part.split(';').map(str::trim);
            let is_om = fields.next() == Some("application/openmetrics-text");
            // `q=0` means "not this".
            is_om && !fields.any(|f| f.replace(' ', "") == "q=0")
        })
    })
}

/// The classic Prometheus text format (0.0.4) from prometheus-client's
/// OpenMetrics: a counter's HELP and TYPE name its `_total` series (as the
/// classic parsers, promtool among them, expect), and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines go.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Default)]
struct FleetGauges {
    leader: Gauge,
    silence: Family<Labels, FloatGauge>,
    running: Family<Labels, Gauge>,
    watched: Family<Labels, Gauge>,
}

pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    stalls: Counter,
    plans_tracked: Gauge,
    plans_refused: Counter,
    health: Family<Labels, FloatGauge>,
    plan_tasks: Family<Labels, Gauge>,
    view_latency: Histogram,
    queue_depth: Gauge,
    queue_rejected: Counter,
    sweeps: Family<Labels, Counter>,
    sweep_duration: Histogram,
    findings: Family<Labels, Counter>,
    tasks: Family<Labels, Gauge>,
    last_sweep: Family<Labels, FloatGauge>,
    alerts_pending: Option<Gauge>,
    interval: FloatGauge,
    snapshot_error: Gauge,
    hung_deferred: Gauge,
    deferral: FloatGauge,
    max_deferral: FloatGauge,
    proc_blind: Gauge,
    silences: Gauge,
    snapshot_error_for: FloatGauge,
    deliveries: Family<Labels, Counter>,
    deferrals: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    config_info: Family<Labels, Gauge>,
    config_loaded: FloatGauge,
    wellbeing_last: Family<Labels, FloatGauge>,
    wellbeing_issues: Family<Labels, Gauge>,
    review_last: Family<Labels, FloatGauge>,
    review_failed: Family<Labels, Gauge>,
    /// `[fleet]` only: whether this Foreman leads, and (from the leader
    /// only, so a fleet's dashboards sum one set) each host's gauges.
    fleet: Option<FleetGauges>,
    /// One scrape at a time: a scrape clears and refills the gauge families.
    scrape: Mutex<()>,
}

impl Metrics {
    pub fn new(config: &Config) -> Metrics {
        let mut r = Registry::default();
        let events = Family::<Labels, Counter>::default();
        r.register(
            "execmon_events",
            "State-transition events recorded, each transition once (pulled and pushed)",
            events.clone(),
        );
        for t in EventType::ALL {
            let _ = events.get_or_create(&vec![("event_type", t.as_str().to_string())]);
        }
        let stalls = Counter::default();
        r.register(
            "execmon_stalls_detected",
            "Times a RUNNING task was found hung (no progress past its droid type's timeout) by a sweep that had not found it hung before",
            stalls.clone(),
        );
        let plans_tracked = Gauge::default();
        r.register(
            "execmon_plans_tracked",
            "Plans with a view: not complete, or completed within the last hour",
            plans_tracked.clone(),
        );
        let plans_refused = Counter::default();
        r.register(
            "foreman_plans_refused",
            "New plans not tracked because [monitor] max_plans was reached and no plan could be evicted: each plan a refused push (503) would have started, and each a sweep or a recorded push could not start",
            plans_refused.clone(),
        );
        // The cap the monitor's store applies from now on (a restart
        // changes it, as every [monitor] key).
        store::set_max_plans(config.monitor.max_plans);
        let max_plans: Gauge = Gauge::default();
        max_plans.set(i64::try_from(config.monitor.max_plans).unwrap_or(i64::MAX));
        r.register(
            "foreman_max_plans",
            "The configured [monitor] max_plans: plans tracked at once (and so the bound on per-plan series)",
            max_plans,
        );
        let health = Family::<Labels, FloatGauge>::default();
        r.register(
            "execmon_health_score",
            "Per plan: SUCCESS / (SUCCESS + FAILED + RUNNING); 1 when nothing counts yet",
            health.clone(),
        );
        let plan_tasks = Family::<Labels, Gauge>::default();
        r.register(
            "execmon_plan_tasks",
            "Per plan: its tasks by state (for the failure ratio FAILED / (SUCCESS + FAILED))",
            plan_tasks.clone(),
        );
        let view_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        r.register_with_unit(
            "execmon_view_latency",
            "Time to compute the plan views from the activity log",
            Unit::Seconds,
            view_latency.clone(),
        );
        let queue_depth = Gauge::default();
        r.register(
            "execmon_queue_depth",
            "Batches waiting in the monitor's queue",
            queue_depth.clone(),
        );
        let queue_rejected = Counter::default();
        r.register(
            "execmon_queue_rejected",
            "POST /events requests refused with 503 because the queue was full",
            queue_rejected.clone(),
        );
        let sweeps = Family::<Labels, Counter>::default();
        r.register(
            "foreman_sweeps",
            "Sweeps run by this daemon, by kind (startup, scheduled) and outcome (ok, snapshot_error, error)",
            sweeps.clone(),
        );
        let sweep_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        r.register_with_unit(
            "foreman_sweep_duration",
            "How long each sweep took, snapshot to last action",
            Unit::Seconds,
            sweep_duration.clone(),
        );
        let findings = Family::<Labels, Counter>::default();
        r.register(
            "foreman_findings",
            "Findings Foreman concluded, by kind, droid type and outcome: counted once, when settled (a finding waiting out exit grace counts when it is marked, not if the executor's result came first and it was withdrawn)",
            findings.clone(),
        );
        let tasks = Family::<Labels, Gauge>::default();
        r.register(
            "foreman_tasks",
            "Tasks in the executor's latest snapshot, by state and droid type",
            tasks.clone(),
        );
        let last_sweep = Family::<Labels, FloatGauge>::default();
        r.register(
            "foreman_last_sweep_timestamp_seconds",
            "When the latest sweep recorded in the activity log finished (Unix time); absent before the first",
            last_sweep.clone(),
        );
        let interval = FloatGauge::default();
        interval.set(config.interval.as_secs_f64());
        r.register(
            "foreman_sweep_interval_seconds",
            "The configured sweep interval",
            interval.clone(),
        );
        let snapshot_error = Gauge::default();
        r.register(
            "foreman_last_sweep_snapshot_error",
            "1 when the latest sweep recorded in the activity log could not read the executor (snapshot_error: nothing judged, nothing marked), else 0",
            snapshot_error.clone(),
        );
        let hung_deferred = Gauge::default();
        r.register(
            "foreman_hung_deferred",
            "Hung verdicts the latest sweep deferred because Foreman or the task was starved of CPU (outcome deferred_starvation)",
            hung_deferred.clone(),
        );
        let deferral = FloatGauge::default();
        r.register(
            "foreman_deferral_seconds",
            "How long Foreman has deferred hung verdicts for starvation without a break; 0 when the latest sweep deferred none",
            deferral.clone(),
        );
        let max_deferral = FloatGauge::default();
        max_deferral.set(config.defaults.max_deferral().as_secs_f64());
        r.register(
            "foreman_max_deferral_seconds",
            "The configured [defaults] max_deferral: a longer deferral fails /healthz",
            max_deferral.clone(),
        );
        let silences = Gauge::default();
        r.register(
            "foreman_silences_active",
            "Silences in force (foreman silence): what they cover is recorded with outcome silenced, not acted on or alerted; maintenance windows are in twin and /healthz",
            silences.clone(),
        );
        let proc_blind = Gauge::default();
        r.register(
            "foreman_proc_blind",
            "1 when /proc cannot show the executor's processes (hidepid, another PID namespace), so no task can be judged gone, else 0",
            proc_blind.clone(),
        );
        let snapshot_error_for = FloatGauge::default();
        r.register(
            "foreman_snapshot_error_seconds",
            "How long the latest sweeps recorded in the activity log have ended in snapshot_error without a break, from the first of them; 0 when the latest read the executor",
            snapshot_error_for.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        r.register(
            "foreman_alert_deliveries",
            "Attempts this daemon made on the alert outbox, by sink and result: delivered, failed (retried after a backoff) or expired (given up: older than the sink's max_age, or its sink gone for a day)",
            deliveries.clone(),
        );
        // Every configured sink's series from the start, so a rule on
        // `failed` sees a 0 before the first failure, not an absent series.
        for sink in config.alerts.iter().chain(&config.wellbeing.sinks) {
            for result in DELIVERY_RESULTS {
                let _ = deliveries.get_or_create(&delivery_labels(&sink.name, result));
            }
        }
        let deferrals = Family::<Labels, Counter>::default();
        r.register(
            "foreman_deferrals",
            "Hung verdicts held back, by reason: foreman_starved and tree_starved count each verdict a sweep deferred (outcome deferred_starvation), at every sweep that deferred it; suspended and clock_step count each sweep that restarted hang clocks after a suspend or a wall-clock step",
            deferrals.clone(),
        );
        for reason in DEFERRAL_REASONS {
            let _ = deferrals.get_or_create(&vec![("reason", reason.to_string())]);
        }
        let reloads = Family::<Labels, Counter>::default();
        r.register(
            "foreman_config_reloads",
            "SIGHUP reloads of foreman.toml, by result: ok, or failed (the configuration in force stays)",
            reloads.clone(),
        );
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&vec![("result", result.to_string())]);
        }
        let config_info = Family::<Labels, Gauge>::default();
        r.register(
            "foreman_config_info",
            "The fingerprint (FNV-1a of foreman.toml's text) of the configuration in force; always 1",
            config_info.clone(),
        );
        let config_loaded = FloatGauge::default();
        r.register(
            "foreman_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded, at start or by a reload (Unix time)",
            config_loaded.clone(),
        );
        let wellbeing_last = Family::<Labels, FloatGauge>::default();
        r.register(
            "foreman_wellbeing_last_run_timestamp_seconds",
            "When the latest wellbeing run recorded in the activity log finished, whoever ran it (Unix time); absent before the first",
            wellbeing_last.clone(),
        );
        let wellbeing_issues = Family::<Labels, Gauge>::default();
        r.register(
            "foreman_wellbeing_last_issues",
            "Issues the latest wellbeing run recorded in the activity log found (0: healthy); absent before the first",
            wellbeing_issues.clone(),
        );
        let review_last = Family::<Labels, FloatGauge>::default();
        r.register(
            "foreman_review_last_run_timestamp_seconds",
            "When the latest review recorded in the activity log finished, whoever ran it (Unix time); absent before the first",
            review_last.clone(),
        );
        let review_failed = Family::<Labels, Gauge>::default();
        r.register(
            "foreman_review_last_failed_checks",
            "Checks that failed in the latest review recorded in the activity log (0: passed); absent before the first",
            review_failed.clone(),
        );
        let alerts_pending = (!config.alerts.is_empty() || !config.wellbeing.sinks.is_empty())
            .then(|| {
                let g = Gauge::default();
                r.register(
                    "foreman_alerts_pending",
                    "Alerts and initiatives queued in the outbox, not yet delivered",
                    g.clone(),
                );
                g
            });
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        r.register("foreman_build_info", "Foreman's version; always 1", build);
        let fleet = config.fleet.as_ref().map(|_| {
            let g = FleetGauges::default();
            r.register(
                "foreman_fleet_leader",
                "1 when this Foreman holds the fleet's advisory lock (it watches for lost hosts and exports the foreman_fleet_host_* series), else 0",
                g.leader.clone(),
            );
            r.register_with_unit(
                "foreman_fleet_host_silence",
                "Since each host's Foreman last beat, by the database's clock (leader only)",
                Unit::Seconds,
                g.silence.clone(),
            );
            r.register(
                "foreman_fleet_host_running_tasks",
                "RUNNING tasks per host in the executor's table (leader only; host=\"\" for rows naming no host)",
                g.running.clone(),
            );
            r.register(
                "foreman_fleet_host_watched",
                "1 for a host some Foreman has beat for, 0 for a host with RUNNING tasks and no Foreman (leader only)",
                g.watched.clone(),
            );
            g
        });
        let m = Metrics {
            fleet,
            registry: r,
            events,
            stalls,
            plans_tracked,
            plans_refused,
            health,
            plan_tasks,
            view_latency,
            queue_depth,
            queue_rejected,
            sweeps,
            sweep_duration,
            findings,
            tasks,
            last_sweep,
            alerts_pending,
            interval,
            snapshot_error,
            hung_deferred,
            deferral,
            max_deferral,
            proc_blind,
            silences,
            snapshot_error_for,
            deliveries,
            deferrals,
            reloads,
            config_info,
            config_loaded,
            wellbeing_last,
            wellbeing_issues,
            review_last,
            review_failed,
            scrape: Mutex::new(()),
        };
        m.set_config(config);
        m
    }

    /// The configuration in force: its fingerprint, and now as its load
    /// time (at start, or a reload that took).
    fn set_config(&self, config: &Config) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&vec![("fingerprint", config.fingerprint.clone())])
            .set(1);
        self.config_loaded
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    }

    /// A SIGHUP reload: `Some(new)` when it took, `None` when it failed (the
    /// configuration in force, and so its info, stays).
    pub fn on_reload(&self, new: Option<&Config>) {
        let result = if new.is_some() { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        if let Some(c) = new {
            self.set_config(c);
            self.set_interval(c.interval);
            self.set_max_deferral(c.defaults.max_deferral());
        }
    }

    /// One round of the outbox: each attempt that ended delivered, failed
    /// or expired, by its sink. (Cancelled rows had nothing to deliver and
    /// held ones were not tried.)
    pub fn on_delivery_round(&self, round: &crate::outbox::Round) {
        use crate::outbox::Attempt;
        for (sink, attempt) in &round.attempts {
            let result = match attempt {
                Attempt::Delivered => "delivered",
                Attempt::Failed => "failed",
                Attempt::Expired => "expired",
                Attempt::Cancelled | Attempt::Held => continue,
            };
            self.deliveries
                .get_or_create(&delivery_labels(sink, result))
                .inc();
        }
    }

    /// Events recorded for the first time.
    pub fn on_events(&self, events: &[Event]) {
        for e in events {
            self.events
                .get_or_create(&vec![("event_type", e.kind.as_str().to_string())])
                .inc();
        }
    }

    /// A reload changed the interval.
    pub fn set_interval(&self, interval: std::time::Duration) {
        self.interval.set(interval.as_secs_f64());
    }

    /// The `max_deferral` in force (it changes with a reload).
    pub fn set_max_deferral(&self, max: std::time::Duration) {
        self.max_deferral.set(max.as_secs_f64());
    }

    /// Whether `/proc` can show every process (read with the config in
    /// force, at each scrape).
    pub fn set_proc_blind(&self, blind: bool) {
        self.proc_blind.set(i64::from(blind));
    }

    /// After each fleet beat: `Some(view)` when this Foreman leads (its
    /// per-host series), `None` when it does not (they go).
    pub fn on_fleet(&self, view: Option<&crate::fleet::View>) {
        let Some(g) = &self.fleet else { return };
        g.leader.set(i64::from(view.is_some()));
        g.silence.clear();
        g.running.clear();
        g.watched.clear();
        for h in view.iter().flat_map(|v| v.hosts.iter()) {
            let host = vec![("host", h.host.clone().unwrap_or_default())];
            g.running.get_or_create(&host).set(h.running as i64);
            g.watched
                .get_or_create(&host)
                .set(i64::from(h.foreman.is_some()));
            if let Some(f) = &h.foreman {
                g.silence.get_or_create(&host).set(f.silent.as_secs_f64());
            }
        }
    }

    pub fn on_rejected(&self) {
        self.queue_rejected.inc();
    }

    /// A sweep the daemon ran: `None` when it failed outright.
    pub fn on_sweep(&self, kind: &str, report: Option<&SweepReport>, took: std::time::Duration) {
        let outcome = match report {
            None => "error",
            Some(r) if r.snapshot_error.is_some() => "snapshot_error",
            Some(_) => "ok",
        };
        self.sweeps
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.sweep_duration.observe(took.as_secs_f64());
        let Some(r) = report else { return };
        for f in r.findings.iter().filter(|f| concluded(f)) {
            self.findings
                .get_or_create(&vec![
                    ("kind", f.kind.as_str().to_string()),
                    ("droid_type", f.droid_type.clone().unwrap_or_default()),
                    ("outcome", f.outcome.as_str().to_string()),
                ])
                .inc();
        }
        if let Some(m) = &r.monitor {
            self.stalls.inc_by(m.newly_stalled as u64);
        }
        for reason in deferral_reasons(r) {
            self.deferrals
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc();
        }
    }

    /// The OpenMetrics exposition: the gauges read from `conn` now, then
    /// everything encoded. `queue_depth` is the monitor queue's length.
    pub fn scrape(
        &self,
        conn: &Connection,
        queue_depth: usize,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let _one = self
            .scrape
            .lock()
            .map_err(|_| anyhow::anyhow!("a scrape panicked"))?;
        let started = Instant::now();
        // Counts by state are all the series need (`store::plan_counts`:
        // the plans `views` shows, without reading each of their tasks).
        let plans = store::plan_counts(conn, now)?;
        self.view_latency.observe(started.elapsed().as_secs_f64());
        self.plans_tracked.set(plans.len() as i64);
        let refused = store::plans_refused();
        let counted = self.plans_refused.get();
        if refused > counted {
            self.plans_refused.inc_by(refused - counted);
        }
        // Plans that left the views (an hour after completing, or evicted
        // at [monitor] max_plans) lose their series: there are never more
        // than max_plans.
        self.health.clear();
        self.plan_tasks.clear();
        for (plan_id, counts) in &plans {
            self.health
                .get_or_create(&vec![("plan_id", plan_id.clone())])
                .set(crate::monitor::view::health_score(counts));
            // Only the states a plan has tasks in: a completed plan keeps
            // its series for an hour, and five per plan (mostly zeros) made
            // /metrics grow with every plan of that hour. The alerting
            // rules sum by plan_id over the states, so an absent zero reads
            // the same.
            for (state, n) in counts.by_state().into_iter().filter(|(_, n)| *n > 0) {
                self.plan_tasks
                    .get_or_create(&vec![
                        ("plan_id", plan_id.clone()),
                        ("state", state.to_string()),
                    ])
                    .set(n as i64);
            }
        }
        self.tasks.clear();
        for (state, droid_type, n) in store::task_counts(conn)? {
            self.tasks
                .get_or_create(&vec![("state", state), ("droid_type", droid_type)])
                .set(n as i64);
        }
        let last: Option<String> = conn
            .query_row(
                "SELECT MAX(finished_at) FROM sweeps WHERE kind NOT IN ('event', 'fleet')",
                [],
                |r| r.get(0),
            )
            .context("reading the latest sweep")?;
        self.last_sweep.clear();
        if let Some(t) = last {
            let t = crate::activity::parse_ts(&t)?;
            self.last_sweep
                .get_or_create(&vec![])
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
        let health = crate::activity::sweep_health(conn)?;
        let errored = health.as_ref().is_some_and(|h| h.error.is_some());
        self.snapshot_error.set(i64::from(errored));
        self.snapshot_error_for
            .set(snapshot_error_for(conn, now)?.as_secs_f64());
        self.read_runs(conn)?;
        let deferral = health.and_then(|h| h.deferral);
        self.hung_deferred
            .set(deferral.as_ref().map_or(0, |d| d.hung_deferred as i64));
        self.deferral.set(
            deferral
                .as_ref()
                .map_or(0.0, |d| d.lasted(now).as_secs_f64()),
        );
        if let Some(g) = &self.alerts_pending {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM alerts WHERE state = 'queued'",
                    [],
                    |r| r.get(0),
                )
                .context("counting queued alerts")?;
            g.set(n);
        }
        let silenced: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM silences WHERE cleared_at IS NULL AND until > ?1",
                [crate::activity::ts(now)],
                |r| r.get(0),
            )
            .context("counting silences")?;
        self.silences.set(silenced);
        self.queue_depth.set(queue_depth as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).context("encoding the metrics")?;
        Ok(without_empty_braces(&out))
    }

    /// The latest wellbeing run and review in the activity log: whoever ran
    /// them (this daemon's schedule, `foreman wellbeing`, `foreman review`),
    /// they are what an operator wants to see. Absent before the first.
    fn read_runs(&self, conn: &Connection) -> Result<()> {
        let wellbeing: Option<(String, i64)> = conn
            .query_row(
                "SELECT finished_at, issues FROM wellbeing_runs ORDER BY finished_at DESC, rowid DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context("reading the latest wellbeing run")?;
        self.wellbeing_last.clear();
        self.wellbeing_issues.clear();
        if let Some((at, issues)) = wellbeing {
            self.wellbeing_last
                .get_or_create(&vec![])
                .set(unix(crate::activity::parse_ts(&at)?));
            self.wellbeing_issues.get_or_create(&vec![]).set(issues);
        }
        let review: Option<(String, i64)> = conn
            .query_row(
                "SELECT finished_at, failed FROM review_runs ORDER BY finished_at DESC, rowid DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context("reading the latest review")?;
        self.review_last.clear();
        self.review_failed.clear();
        if let Some((at, failed)) = review {
            self.review_last
                .get_or_create(&vec![])
                .set(unix(crate::activity::parse_ts(&at)?));
            self.review_failed.get_or_create(&vec![]).set(failed);
        }
        Ok(())
    }
}

/// The results `foreman_alert_deliveries_total` counts.
const DELIVERY_RESULTS: [&str; 3] = ["delivered", "failed", "expired"];

/// The reasons `foreman_deferrals_total` counts: a fixed set, so the
/// family's cardinality never grows with what the sweeps say.
pub const DEFERRAL_REASONS: [&str; 4] =
    ["foreman_starved", "tree_starved", "suspended", "clock_step"];

fn delivery_labels(sink: &str, result: &str) -> Labels {
    vec![("sink", sink.to_string()), ("result", result.to_string())]
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Why a sweep held hung verdicts back, one reason per deferred verdict
/// and one per clock guard. The sweep states these as text only (the
/// record's `deferral`, each finding's detail), so they are recognised by
/// the fixed wording of `sweep::guards` and `decide`: Foreman's own
/// starvation there is "this sweep started … late" or "Foreman waited …";
/// decide prefers it to the tree's, so a verdict deferred in a sweep where
/// Foreman was starved is Foreman's, any other the tree's.
pub fn deferral_reasons(r: &SweepReport) -> Vec<&'static str> {
    let mut out = Vec::new();
    let said = r.deferral.as_deref().unwrap_or("");
    if said.starts_with("host was suspended") {
        out.push("suspended");
    } else if said.starts_with("wall clock stepped") {
        out.push("clock_step");
    }
    for f in &r.findings {
        if f.outcome != crate::model::Outcome::DeferredStarvation {
            continue;
        }
        let detail = f.detail.as_deref().unwrap_or("");
        let why = detail.strip_prefix("hung verdict deferred: ").unwrap_or("");
        let foreman = why.starts_with("this sweep started ") || why.starts_with("Foreman waited ");
        out.push(if foreman {
            "foreman_starved"
        } else {
            "tree_starved"
        });
    }
    out
}

/// How long the latest sweeps (not event or fleet sweeps, as
/// `foreman_last_sweep_snapshot_error`) have failed to read the executor
/// without a break: from the first of that run of failures to now. A rule
/// can then compare it with the interval, which a `for:` cannot.
fn snapshot_error_for(conn: &Connection, now: DateTime<Utc>) -> Result<std::time::Duration> {
    let since: Option<String> = conn
        .query_row(
            "SELECT MIN(started_at) FROM sweeps
             WHERE kind NOT IN ('event', 'fleet') AND error IS NOT NULL
               AND id > COALESCE((SELECT MAX(id) FROM sweeps
                                  WHERE kind NOT IN ('event', 'fleet') AND error IS NULL), 0)",
            [],
            |r| r.get(0),
        )
        .context("reading when the snapshot errors began")?;
    let Some(since) = since else {
        return Ok(std::time::Duration::ZERO);
    };
    let since = crate::activity::parse_ts(&since)?;
    Ok((now - since).to_std().unwrap_or_default())
}

/// `name{} 1.5` → `name 1.5`: a family with an empty label set (the last
/// sweep's timestamp, present only once a sweep finished) is encoded with
/// empty braces, which some parsers refuse and every reader trips on.
/// Only where the braces follow the name itself: a label value holding
/// `{} ` is inside quotes, after a `{` that is not followed by `}`.
fn without_empty_braces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        if !line.starts_with('#') && name_end > 0 && line[name_end..].starts_with("{} ") {
            out.push_str(&line[..name_end]);
            out.push_str(&line[name_end + 2..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_total_series() {
        let om = "# HELP jobs Jobs done.\n# TYPE jobs counter\njobs_total{kind=\"a\"} 3\n\
                  # HELP took How long.\n# TYPE took histogram\n# UNIT took seconds\ntook_sum 1.5\n\
                  # HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{kind=\"a\"} 3\n\
             # HELP took How long.\n# TYPE took histogram\ntook_sum 1.5\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
    }

    #[test]
    fn empty_label_sets_lose_their_braces_and_label_values_keep_theirs() {
        let text = "# HELP x_seconds X.\nx_seconds{} 1.5\nplan{plan_id=\"a{} b\"} 2\nup 1\n";
        assert_eq!(
            without_empty_braces(text),
            "# HELP x_seconds X.\nx_seconds 1.5\nplan{plan_id=\"a{} b\"} 2\nup 1\n"
        );
    }

    #[test]
    fn a_finding_counts_once_when_foreman_concludes_it() {
        use crate::model::{Action, Kind, Outcome};
        use crate::sweep::FindingReport;
        let f = |outcome, first_seen| FindingReport {
            id: Some(1),
            task_id: "t".into(),
            attempt: 1,
            droid_type: Some("builder".into()),
            plan_id: None,
            pid: Some(10),
            kind: Kind::Dead,
            evidence: serde_json::json!({}),
            action: Action::MarkFailed,
            outcome,
            detail: None,
            first_seen,
        };
        // (outcome, first seen by this sweep, counted)
        let table = [
            (Outcome::Pending, true, false),      // waiting out exit grace
            (Outcome::MarkedFailed, false, true), // ...then marked
            (Outcome::MarkedFailed, true, true),  // marked at once
            (Outcome::Reported, true, true),
            (Outcome::Reported, false, false), // unverifiable again
            (Outcome::WouldMarkFailed, true, true),
            (Outcome::WouldMarkFailed, false, false), // shadow, every sweep
            (Outcome::Braked, true, true),
            (Outcome::Braked, false, false),
            (Outcome::AlreadyFinished, false, true),
            (Outcome::Error, false, true),
        ];
        for (outcome, first, want) in table {
            assert_eq!(
                concluded(&f(outcome, first)),
                want,
                "{outcome:?} first_seen={first}"
            );
        }
    }

    /// The reasons come from the sweep's wording (`sweep::guards`, `decide`):
    /// a guard's clock deferral once per sweep, and each deferred verdict as
    /// Foreman's or its tree's starvation; other findings count nothing.
    #[test]
    fn deferral_reasons_follow_what_the_sweep_says() {
        use crate::model::{Action, Kind, Mode, Outcome, SweepKind};
        use crate::sweep::FindingReport;
        let finding = |outcome, detail: &str| FindingReport {
            id: Some(1),
            task_id: "t".into(),
            attempt: 1,
            droid_type: None,
            plan_id: None,
            pid: Some(10),
            kind: Kind::Hung,
            evidence: serde_json::json!({}),
            action: Action::Deferred,
            outcome,
            detail: Some(detail.into()),
            first_seen: false,
        };
        let report = |deferral: Option<&str>, findings| SweepReport {
            sweep_id: Some(1),
            kind: SweepKind::Scheduled,
            dry_run: false,
            mode: Mode::Enforce,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            tasks_seen: 0,
            tasks_checked: 0,
            snapshot_error: None,
            deferral: deferral.map(str::to_string),
            findings,
            monitor: None,
        };
        let late = "hung verdict deferred: this sweep started 40s late (more than half the interval); overdue 1m of at most 3h (max_deferral)";
        let cpu = "hung verdict deferred: Foreman waited 2s for a CPU during this sweep; overdue 0s of at most 3h (max_deferral)";
        let tree = "hung verdict deferred: 2 of its 3 processes are runnable (R) but got no CPU since the last sweep; overdue 0s of at most 3h (max_deferral)";
        let table: [(Option<&str>, Vec<FindingReport>, Vec<&str>); 5] = [
            (None, vec![], vec![]),
            (
                Some("host was suspended for 600s since the last sweep"),
                vec![],
                vec!["suspended"],
            ),
            (
                Some("wall clock stepped by -30s since the last sweep; 1 hung verdicts deferred (1 of them because the task's own processes were runnable without CPU)"),
                vec![finding(Outcome::DeferredStarvation, tree)],
                vec!["clock_step", "tree_starved"],
            ),
            (
                Some("this sweep started 40s late (more than half the interval); 2 hung verdicts deferred (0 of them because the task's own processes were runnable without CPU)"),
                vec![
                    finding(Outcome::DeferredStarvation, late),
                    finding(Outcome::DeferredStarvation, cpu),
                ],
                vec!["foreman_starved", "foreman_starved"],
            ),
            // Exit grace is a deferral too, but not of a hung verdict.
            (
                None,
                vec![finding(Outcome::Pending, "exit grace: first seen gone at …")],
                vec![],
            ),
        ];
        for (deferral, findings, want) in table {
            let r = report(deferral, findings);
            let got = deferral_reasons(&r);
            assert_eq!(got, want, "{deferral:?}");
            assert!(got.iter().all(|g| DEFERRAL_REASONS.contains(g)));
        }
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let table = [
            (None, false),
            (Some("*/*"), false),
            (Some("text/plain"), false),
            (Some("application/openmetrics-text; version=1.0.0"), true),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"),
                true,
            ),
            (Some("application/openmetrics-text; q=0"), false),
        ];
        for (accept, want) in table {
            assert_eq!(wants_openmetrics(accept), want, "{accept:?}");
        }
    }
}
