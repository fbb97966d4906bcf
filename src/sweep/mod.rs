//! One sweep: snapshot → probe → judge → decide → record → act.
//!
//! Everything is committed to the activity log in one transaction before
//! any action; each action's outcome is recorded after. A finding left
//! `pending` by a crash is re-verified by the next sweep: the task is judged
//! afresh, and the open finding is either acted on (same key) or closed.
//!
//! This module is the pipeline and its public types; each stage is a
//! module of its own: `guards` (clocks, starvation), `resume` (what earlier
//! sweeps left open), `judging` (the RUNNING tasks, in batches), `strays`,
//! `plan` (findings, brake, closes, alerts), `record` (the transaction and
//! the monitor's pull), `act` (signals and marking). Every stage logs under
//! the one target `foreman::sweep`, the name operators filter and grep by.

mod act;
mod fleet;
mod guards;
mod judging;
mod plan;
mod record;
mod resume;
mod strays;

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::decide::{decide_sweep, SweepFacts};
use crate::executor::Executor;
use crate::judge::{judge, Facts, Judgement};
use crate::model::{Action, Kind, Mode, Outcome, SweepKind, Task};
use crate::observation::Observation;
use crate::probe::{boot_facts, pid_max, Clocks, Probe, ProcTable};
use crate::watch::Watch;
use act::Acted;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
pub use fleet::fleet_sweep;
use guards::Guards;
use plan::Planned;
use record::{Memory, Recorded};
use resume::Earlier;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info};

/// The result of the `INTENT` signal row written for each member of a tree
/// before any signal is sent to it.
pub const INTENDED: &str = "SIGTERM to follow (recorded before signalling)";

/// How the sweep may touch the activity log.
pub enum LogAccess<'a> {
    /// Record and act.
    Write(&'a mut ActivityLog),
    /// Dry run: read prior observations if there are any; write nothing.
    ReadOnly(Option<&'a ActivityLog>),
}

/// The judge a sweep uses: `judge::judge`, except where `foreman review`'s
/// own tests hand it a deliberately broken one to prove the review fails.
pub type JudgeFn =
    fn(&Task, Option<&Probe>, Option<&Observation>, &crate::config::Policy, &Facts) -> Judgement;

#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// How late the daemon's tick fired against its schedule.
    pub lateness: Option<Duration>,
    pub judge: JudgeFn,
    /// The daemon's pidfds. A task held there whose heartbeat is fresh
    /// (`judge::fresh`) is not read from `/proc`; every bound live task
    /// judged is held. `None` (the one-shot commands): every task is read.
    pub watch: Option<Arc<Watch>>,
    /// An event sweep's tasks, by id: only they are judged, and only their
    /// open findings closed; no strays, no interrupted terminations, no
    /// monitor pull (the next full sweep does those).
    pub focus: Option<HashSet<String>>,
}

impl SweepOptions {
    /// Whether the judge is `judge::judge`, the one `judge::fresh` holds to.
    fn real_judge(&self) -> bool {
        std::ptr::fn_addr_eq(self.judge, judge as JudgeFn)
    }
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            lateness: None,
            judge,
            watch: None,
            focus: None,
        }
    }
}

/// One finding as reported to the user.
#[derive(Debug, Clone, Serialize)]
pub struct FindingReport {
    /// The finding's id in the activity log; absent in a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub task_id: String,
    pub attempt: i64,
    pub droid_type: Option<String>,
    pub plan_id: Option<String>,
    pub pid: Option<i32>,
    pub kind: Kind,
    pub evidence: serde_json::Value,
    pub action: Action,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Recorded for the first time by this sweep (not a finding seen again).
    #[serde(skip)]
    pub first_seen: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_id: Option<i64>,
    pub kind: SweepKind,
    pub dry_run: bool,
    pub mode: Mode,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tasks_seen: usize,
    pub tasks_checked: usize,
    /// Set when the executor could not be read (`snapshot_error`): nothing
    /// was judged and nothing was marked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferral: Option<String>,
    pub findings: Vec<FindingReport>,
    /// What the execution monitor's pull found (absent in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<crate::monitor::Pulled>,
}

impl SweepReport {
    /// Actions this sweep decided on that ended in `error`.
    pub fn action_errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.outcome == Outcome::Error)
            .count()
    }

    /// Findings still waiting (exit grace) to be acted on.
    pub fn waiting(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.action == Action::Deferred && f.outcome == Outcome::Pending)
            .count()
    }
}

/// Run one sweep.
pub fn sweep(
    config: &Config,
    executor: &dyn Executor,
    mut log: LogAccess<'_>,
    kind: SweepKind,
    opts: &SweepOptions,
) -> Result<SweepReport> {
    let started_at = Utc::now();
    let clocks = Clocks::now();
    let boot = boot_facts()?;
    let dry_run = matches!(log, LogAccess::ReadOnly(_));
    let reader: Option<&ActivityLog> = match &log {
        LogAccess::Write(l) => Some(&**l),
        LogAccess::ReadOnly(l) => *l,
    };

    // Guards: a suspend or a wall-clock step restarts hang clocks now; a
    // late tick is Foreman's own starvation.
    let last = reader.map(|l| l.last_sweep()).transpose()?.flatten();
    let mut guards = Guards::check(
        config,
        last.as_ref(),
        &boot.boot_id,
        &clocks,
        started_at,
        opts.lateness,
    );
    let mut record = record::sweep_record(config, kind, started_at, &boot, clocks, &guards);
    let mut report = empty_report(config, kind, dry_run, started_at, guards.deferral.clone());

    // Snapshot: an unreachable executor marks nothing.
    // An event sweep only looks: the next full sweep's snapshot must still
    // hold what finished before it (`Executor::look`).
    let read = if opts.focus.is_some() {
        executor.look()
    } else {
        executor.snapshot()
    };
    let mut snapshot = match read {
        Ok(s) => s,
        Err(e) => return record::snapshot_failed(&mut log, &mut record, report, kind, &e),
    };
    // Heartbeats pushed to the daemon (POST /heartbeat) count as the rows'.
    if let Some(l) = reader {
        crate::heartbeat::merge(l.conn(), &mut snapshot).context("reading pushed heartbeats")?;
    }
    report.tasks_seen = snapshot.rows.len();
    record.tasks_seen = snapshot.rows.len();

    // Resume: open findings, recent actions, interrupted terminations (an
    // event sweep takes up only its own tasks' findings).
    let mut earlier = Earlier::load(reader, config, &boot.boot_id, started_at)?;
    let holds = crate::silence::active(reader.map(|l| l.conn()), config, started_at)?;
    // Another host's row is that host's business, not a finding here (it
    // used to be an `unverifiable` finding and a WARN on every sweep). In
    // a fleet it is normal; otherwise it is said once per host an hour.
    let every: Vec<&Task> = snapshot.running().collect();
    let local_count = judging::local_running(config, &every);
    if config.fleet.is_none() {
        judging::note_foreign(config, &every);
    }
    let all: Vec<&Task> = every
        .iter()
        .copied()
        .filter(|t| t.host.as_deref().is_none_or(|h| h == config.host))
        .collect();
    let running: Vec<&Task> = match &opts.focus {
        Some(ids) => {
            earlier.focus(ids);
            all.iter()
                .copied()
                .filter(|t| ids.contains(&t.id))
                .collect()
        }
        None => all.clone(),
    };
    report.tasks_checked = running.len();
    record.tasks_checked = running.len();
    let facts = Facts {
        now: started_at,
        boot: &boot,
        host: &config.host,
        sweep: kind,
        hang_floor: guards.hang_floor,
        future_tolerance: config.future_tolerance,
        pid_max: pid_max(),
    };

    // Probe: a held task with a fresh heartbeat needs no /proc read; the
    // rest are read, from their trees alone when they are few.
    let watch = opts.watch.as_deref();
    let needs: Vec<&Task> = running
        .iter()
        .copied()
        .filter(|t| !skips_read(config, watch, opts, &facts, &earlier, t))
        .collect();
    let table = scan(config, opts, &needs, all.len())?;
    // A /proc that cannot show other processes (hidepid, another PID
    // namespace) would make every task look dead: nothing is called gone.
    let blind = config.proc_blindness();
    if let Some(why) = &blind {
        error!(reason = %why, "/proc cannot show the executor's processes: no task is called dead and no stray terminated");
    }

    // The sweep's transaction is open from here to the commit below: each
    // task's observation is written as soon as it is judged, and an alive
    // task's probe and evidence are dropped at once, so memory does not
    // grow with every task's history.
    let memory = match &mut log {
        LogAccess::Write(l) => Memory::Writing(l.begin(&record)?),
        LogAccess::ReadOnly(l) => Memory::Reading(*l),
    };
    let sight = Sight {
        config,
        judge: opts.judge,
        facts,
        table: &table,
        blind: blind.as_deref(),
        watch,
    };

    // Judge, in batches; then strays (not in an event sweep).
    let judged = judging::judge_running(&sight, &memory, &needs, &earlier)?;
    if let (Some(w), None) = (watch, &opts.focus) {
        release_finished(w, &all);
    }
    let local = local_count;
    guards.measure_cpu_wait();
    let mut strays = match &opts.focus {
        None => strays::plan(&sight, &memory, &snapshot, &all, local, &earlier.open)?,
        Some(_) => strays::Strays::default(),
    };

    // Decide: one brake over tasks and strays.
    let (decisions, brake) = decide_sweep(
        &plan::cases(config, &judged),
        &SweepFacts {
            now: started_at,
            starved: guards.starved.clone(),
            running: local,
            max_actions: config.defaults.max_actions_per_sweep,
            shared_pids: plan::shared_pids(&all),
            recent_actions: earlier.recent_actions,
            window_limit: config.defaults.max_actions_per_window,
            window: config.defaults.timeout,
            extra_actions: strays.acting(),
        },
    );
    record.deferral = guards.said(&judged, &decisions);
    report.deferral = record.deferral.clone();

    // Plan: findings (verdicts, interrupted terminations, bad rows,
    // strays), the closes of open findings, the alerts.
    let mut planned = plan::findings(&judged, decisions, &table)?;
    planned.extend(plan::resumed(&earlier.interrupted, &running));
    if opts.focus.is_none() {
        planned.extend(plan::bad_rows(&snapshot, &boot.boot_id));
    }
    plan::brake_strays(&mut strays.planned, brake.as_deref());
    strays.note_reported(&memory, &boot.boot_id)?;
    planned.extend(strays.planned);
    // Silences and maintenance windows: recorded, not acted on.
    plan::hold(&mut planned, &holds, &config.host);
    record.closes = plan::closes(&earlier.open, &planned, &snapshot);
    record.findings = planned.iter().map(|p| p.finding.clone()).collect();
    record.alerts = plan::alerts(config, &planned);

    // Record: the monitor's pull, then the commit, before anything acts.
    if opts.focus.is_none() {
        report.monitor = record::pull_monitor(&memory, &judged, &snapshot, started_at, config)?;
    }
    let recorded = record::commit(memory, &record, &planned)?;
    report.sweep_id = recorded.sweep_id;

    fail::fail_point!("sweep::before_act");

    // Act: only in a real sweep, only on decisions that say so.
    let acted = act::act(config, executor, &mut log, &planned, &recorded.ids)?;
    finish(&mut log, report, planned, recorded, acted)
}

/// What one sweep sees and judges against: the config, the judge, the
/// facts of now and the boot, the `/proc` table, and why `/proc` cannot
/// show every process, if it cannot. Shared by judging and strays.
struct Sight<'a> {
    config: &'a Config,
    judge: JudgeFn,
    facts: Facts<'a>,
    table: &'a ProcTable,
    blind: Option<&'a str>,
    /// The daemon's pidfds: bound live tasks are held as they are judged.
    watch: Option<&'a Watch>,
}

/// Whether this sweep may take a task as alive without reading `/proc`: a
/// full daemon sweep, the task's process held by pidfd (not exited, the
/// identity bound in this boot) and judged in full within `REFRESH`, and a
/// fresh heartbeat (`judge::fresh`: the judge would call it alive).
fn skips_read(
    config: &Config,
    watch: Option<&Watch>,
    opts: &SweepOptions,
    facts: &Facts,
    earlier: &Earlier,
    task: &Task,
) -> bool {
    // `fresh` is proven for the real judge alone: a judge passed in (the
    // review's tests hand it broken ones) sees every task.
    let Some(w) = watch.filter(|_| opts.focus.is_none() && opts.real_judge()) else {
        return false;
    };
    let refresh =
        chrono::Duration::from_std(crate::observation::REFRESH).unwrap_or(chrono::Duration::MAX);
    crate::judge::fresh(
        task,
        config.policy(&task.droid_type),
        facts,
        config.interval,
    ) && !earlier.resuming(task)
        && w.holding(task)
            .is_some_and(|h| facts.now.signed_duration_since(h.observed_at) < refresh)
}

/// The `/proc` table this sweep needs. Every process when strays are
/// looked for (a stray is a process no task names) or without pidfds (the
/// one-shot commands: today's single pass); otherwise only the trees of
/// the tasks that need reading, when they are few (a quarter of the
/// RUNNING tasks or fewer: past that one pass over `/proc` is cheaper than
/// a walk per tree).
fn scan(
    config: &Config,
    opts: &SweepOptions,
    needs: &[&Task],
    running: usize,
) -> Result<ProcTable> {
    let few = opts.focus.is_some()
        || (opts.watch.is_some()
            && !crate::strays::enabled(config)
            && needs.len().saturating_mul(4) <= running);
    if few {
        let pids: Vec<i32> = needs.iter().filter_map(|t| t.pid).collect();
        if let Some(table) = ProcTable::scan_trees(&pids) {
            return Ok(table);
        }
    }
    ProcTable::scan().context("scanning /proc")
}

/// Close the pidfds of tasks no longer RUNNING with the same attempt and
/// pid (finished, retried, re-dispatched): the number held stays bounded
/// by this host's RUNNING tasks.
fn release_finished(watch: &Watch, running: &[&Task]) {
    watch.keep_running(running);
}

/// The report before the snapshot is read.
fn empty_report(
    config: &Config,
    kind: SweepKind,
    dry_run: bool,
    started_at: DateTime<Utc>,
    deferral: Option<String>,
) -> SweepReport {
    SweepReport {
        sweep_id: None,
        kind,
        dry_run,
        mode: config.mode,
        started_at,
        finished_at: started_at,
        tasks_seen: 0,
        tasks_checked: 0,
        snapshot_error: None,
        deferral,
        findings: Vec::new(),
        monitor: None,
    }
}

/// The report: each finding with its outcome; the sweep closed in the log
/// with its counts, and logged.
fn finish(
    log: &mut LogAccess<'_>,
    mut report: SweepReport,
    planned: Vec<Planned>,
    recorded: Recorded,
    acted: Acted,
) -> Result<SweepReport> {
    let Acted {
        outcomes,
        actions,
        signals,
        acted,
    } = acted;
    report.findings = planned
        .into_iter()
        .zip(recorded.ids)
        .zip(outcomes)
        .zip(recorded.first_seen)
        .map(|(((p, id), (outcome, detail)), first_seen)| FindingReport {
            id,
            first_seen,
            task_id: p.finding.task_id,
            attempt: p.finding.attempt,
            droid_type: p.finding.droid_type,
            plan_id: p.finding.plan_id,
            pid: p.finding.pid,
            kind: p.finding.kind,
            evidence: p.finding.evidence,
            action: p.finding.action,
            outcome,
            detail,
        })
        .collect();
    report.finished_at = Utc::now();
    let errors = report.action_errors();
    if let (LogAccess::Write(l), Some(id)) = (log, report.sweep_id) {
        l.finish_sweep(id, report.finished_at, actions, errors)?;
    }
    // The finding's line was written before acting (outcome `pending`):
    // one line per action says how it ended, and what was signalled.
    for ((f, tried), sent) in report.findings.iter().zip(&acted).zip(&signals) {
        if !*tried {
            continue;
        }
        let detail = f.detail.as_deref().unwrap_or("");
        let sent = sent.as_deref().unwrap_or("none");
        if f.outcome == Outcome::Error {
            error!(target: "foreman::sweep", foreman_finding_id = f.id, task_id = %f.task_id, kind = f.kind.as_str(), action = f.action.as_str(), outcome = f.outcome.as_str(), signals = sent, detail, "action failed");
        } else {
            info!(target: "foreman::sweep", foreman_finding_id = f.id, task_id = %f.task_id, kind = f.kind.as_str(), action = f.action.as_str(), outcome = f.outcome.as_str(), signals = sent, detail, "action done");
        }
    }
    info!(
        sweep_id = report.sweep_id,
        kind = report.kind.as_str(),
        dry_run = report.dry_run,
        tasks_seen = report.tasks_seen,
        tasks_checked = report.tasks_checked,
        findings = report.findings.len(),
        actions,
        errors,
        duration_ms = (report.finished_at - report.started_at).num_milliseconds(),
        "sweep finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's options skip reads: its judge is known to be the real
    /// one (an address that compared unequal would silently read every task).
    #[test]
    fn the_default_judge_is_the_real_one_and_others_are_not() {
        assert!(SweepOptions::default().real_judge());
        fn other(
            t: &Task,
            p: Option<&Probe>,
            o: Option<&Observation>,
            c: &crate::config::Policy,
            f: &Facts,
        ) -> Judgement {
            judge(t, p, o, c, f)
        }
        let opts = SweepOptions {
            judge: other,
            ..SweepOptions::default()
        };
        assert!(!opts.real_judge());
    }
}
