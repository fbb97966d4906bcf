//! One sweep: snapshot → probe → judge → decide → record → act.
//!
//! Everything is committed to the activity log in one transaction before
//! any action; each action's outcome is recorded after. A finding left
//! `pending` by a crash is re-verified by the next sweep: the task is judged
//! afresh, and the open finding is either acted on (same key) or closed.

use crate::activity::{
    ActivityLog, Committed, Interrupted, NewAlert, NewFinding, StrayHistory, SweepRecord, SweepTx,
};
use crate::config::Config;
use crate::decide::{decide_sweep, Case, Decision, SweepFacts};
use crate::executor::{Executor, Marked};
use crate::judge::{guarded, judge, Facts, Inputs, Judgement, PolicyInputs};
use crate::model::{Action, Kind, Mode, OnStray, Outcome, Row, SweepKind, Task, TaskState};
use crate::observation::Observation;
use crate::probe::{boot_facts, pid_max, Clocks, Probe, ProcTable};
use crate::recovery::{failure_reason, terminate_trees, Identity, Terminated};
use crate::strays::{self, Candidate};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tracing::{error, info, warn};

/// A wall-clock or boot-clock difference larger than this between two
/// sweeps is a suspend or a clock step, not drift.
const CLOCK_JUMP: Duration = Duration::from_secs(5);

/// The result of the `INTENT` signal row written for each member of a tree
/// before any signal is sent to it.
pub const INTENDED: &str = "SIGTERM to follow (recorded before signalling)";

/// Tasks judged per batch (see the judging loop).
const BATCH: usize = 256;

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
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            lateness: None,
            judge,
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

    // Clocks: a suspend or a wall-clock step restarts hang clocks now.
    let last = reader.map(|l| l.last_sweep()).transpose()?.flatten();
    let mut deferral = None;
    let mut hang_floor = last.as_ref().and_then(|l| l.hang_floor);
    if let Some(last) = last.as_ref().filter(|l| l.boot_id == boot.boot_id) {
        let mono = clocks.monotonic_ns - last.clocks.monotonic_ns;
        let suspended = (clocks.boottime_ns - last.clocks.boottime_ns) - mono;
        let stepped = (clocks.realtime_ns - last.clocks.realtime_ns) - mono;
        let jump = CLOCK_JUMP.as_nanos() as i64;
        if suspended > jump {
            deferral = Some(format!(
                "host was suspended for {}s since the last sweep",
                suspended / 1_000_000_000
            ));
        } else if stepped.abs() > jump {
            deferral = Some(format!(
                "wall clock stepped by {}s since the last sweep",
                stepped / 1_000_000_000
            ));
        }
        if deferral.is_some() {
            let step = (suspended <= jump).then_some(stepped);
            hang_floor = Some(next_floor(
                hang_floor,
                started_at,
                step,
                config.defaults.max_deferral(),
            ));
        }
    }
    // Starvation is Foreman's own: its tick fired late, or it waited for a
    // CPU during this sweep (measured below, before deciding). A host busy
    // with its own droids is not starvation: system-wide PSI stays above
    // 90% for hours on a healthy fleet host, and deferring on it would
    // hide every hang. A task's own tree is judged by the judge.
    let run_delay_at_start = run_delay();
    let mut starved = opts
        .lateness
        .filter(|l| *l > config.interval / 2)
        .map(|late| {
            format!(
                "this sweep started {} late (more than half the interval)",
                humantime::format_duration(Duration::from_millis(late.as_millis() as u64))
            )
        });

    let mut record = SweepRecord {
        kind: kind.as_str(),
        host: config.host.clone(),
        mode: match config.mode {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        },
        started_at,
        tasks_seen: 0,
        tasks_checked: 0,
        error: None,
        deferral: deferral.clone(),
        boot_id: boot.boot_id.clone(),
        clocks,
        hang_floor,
        observations: Vec::new(),
        findings: Vec::new(),
        closes: Vec::new(),
        alerts: Vec::new(),
    };
    let mut report = SweepReport {
        sweep_id: None,
        kind,
        dry_run,
        mode: config.mode,
        started_at,
        finished_at: started_at,
        tasks_seen: 0,
        tasks_checked: 0,
        snapshot_error: None,
        deferral: deferral.clone(),
        findings: Vec::new(),
        monitor: None,
    };

    let snapshot = match executor.snapshot() {
        Ok(s) => s,
        Err(e) => {
            // An unreachable executor marks nothing.
            let msg = format!("{e:#}");
            error!(kind = kind.as_str(), error = %msg, "snapshot_error: the executor could not be read; nothing judged, nothing marked");
            record.error = Some(format!("snapshot_error: {msg}"));
            if let LogAccess::Write(l) = &mut log {
                let (id, _) = l.record(&record)?;
                l.finish_sweep(id, Utc::now(), 0, 0)?;
                report.sweep_id = Some(id);
            }
            report.snapshot_error = Some(msg);
            report.finished_at = Utc::now();
            return Ok(report);
        }
    };
    report.tasks_seen = snapshot.rows.len();
    record.tasks_seen = snapshot.rows.len();

    let open = reader
        .map(|l| l.open_findings())
        .transpose()?
        .unwrap_or_default();
    // Actions within the rolling window (`[defaults] timeout`) before this
    // sweep, for the brake.
    let recent_actions = match reader {
        Some(l) => {
            let window = chrono::Duration::from_std(config.defaults.timeout)
                .unwrap_or(chrono::Duration::MAX);
            let since = started_at
                .checked_sub_signed(window)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            l.actions_since(since)?
        }
        None => 0,
    };
    // Terminations a crash interrupted: a hung finding still pending whose
    // intent to signal was recorded, in this boot (after a reboot there is
    // nothing left of the tree to finish). They are completed whatever the
    // task or its process looks like now: Foreman had begun killing it.
    let mut interrupted: Vec<(Interrupted, Inputs)> = Vec::new();
    if let Some(l) = reader {
        for o in open
            .iter()
            .filter(|o| o.kind == Kind::Hung.as_str() && o.action == Action::TerminateAndMark)
        {
            if !l.finding_intended(o.id)? {
                continue;
            }
            let Some(r) = l.resume_of(o.id)? else {
                continue;
            };
            match serde_json::from_value::<Inputs>(r.inputs.clone()) {
                Ok(i) if i.boot.boot_id == boot.boot_id => interrupted.push((r, i)),
                Ok(_) => {}
                Err(e) => {
                    warn!(finding_id = o.id, error = %e, "an interrupted termination's inputs cannot be read; it is not resumed")
                }
            }
        }
    }
    let resuming = |task: &Task| {
        interrupted
            .iter()
            .any(|(_, i)| i.task.id == task.id && i.task.attempt == task.attempt)
    };
    let table = ProcTable::scan().context("scanning /proc")?;
    // A /proc that cannot show other processes (hidepid, another PID
    // namespace) would make every task look dead: nothing is called gone.
    let blind = config.proc_blindness();
    if let Some(why) = &blind {
        error!(reason = %why, "/proc cannot show the executor's processes: no task is called dead and no stray terminated");
    }
    let running: Vec<&Task> = snapshot.running().collect();
    report.tasks_checked = running.len();
    record.tasks_checked = running.len();

    // The sweep's transaction is open from here to the commit below: each
    // task's observation is written as soon as it is judged, and an alive
    // task's probe and evidence are dropped at once, so memory does not
    // grow with every task's history.
    let memory = match &mut log {
        LogAccess::Write(l) => Memory::Writing(l.begin(&record)?),
        LogAccess::ReadOnly(l) => Memory::Reading(*l),
    };

    // Judge every RUNNING task; bad rows are unverifiable with their reason.
    let mut pid_count: HashMap<i32, usize> = HashMap::new();
    for t in &running {
        if let Some(p) = t.pid {
            *pid_count.entry(p).or_default() += 1;
        }
    }
    let facts = Facts {
        now: started_at,
        boot: &boot,
        host: &config.host,
        sweep: kind,
        hang_floor,
        future_tolerance: config.future_tolerance,
        pid_max: pid_max(),
    };
    // Only the tasks that are not alive: they become findings. Tasks go
    // through in batches, each stage over the whole batch: as fast as
    // stage-at-a-time over all tasks (the caches stay warm), while memory
    // holds one batch's probes and observations, not every task's.
    let mut judged: Vec<(&Task, Judgement, Option<Probe>, serde_json::Value)> = Vec::new();
    for batch in running.chunks(BATCH) {
        let probes: Vec<Option<Probe>> = batch
            .iter()
            .map(|t| {
                t.pid.map(|p| match (table.probe(p), &blind) {
                    (Probe::Gone, Some(why)) => Probe::Unreadable(format!(
                        "not visible, and /proc cannot show every process ({why})"
                    )),
                    (probe, _) => probe,
                })
            })
            .collect();
        let priors = batch
            .iter()
            .map(|t| match t.pid {
                Some(pid) => memory.prior(t, pid),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut judgements: Vec<Judgement> = batch
            .iter()
            .zip(&probes)
            .zip(&priors)
            .map(|((task, probe), prior)| {
                guarded(
                    opts.judge,
                    task,
                    probe.as_ref(),
                    prior.as_ref(),
                    config.policy(&task.droid_type),
                    &facts,
                )
            })
            .collect();
        for j in &mut judgements {
            if let Some(o) = j.observation.take() {
                memory.observe(&o)?;
            }
        }
        for (((task, mut j), probe), prior) in batch.iter().zip(judgements).zip(probes).zip(priors)
        {
            // An interrupted termination is finished below, not judged anew.
            if j.kind == Kind::Alive || resuming(task) {
                continue;
            }
            // A gone task keeps the kind of its open finding (an orphan
            // found at startup is still that orphan at the next sweep).
            let verdict = j.kind;
            if j.kind.is_gone() {
                if let Some(o) = open
                    .iter()
                    .find(|o| o.task_id == task.id && o.attempt == task.attempt)
                {
                    if let Some(k) = gone_kind(&o.kind) {
                        j.kind = k;
                    }
                }
            }
            let inputs = Inputs {
                task: (*task).clone(),
                probe: probe.clone(),
                prior,
                policy: PolicyInputs::of(config.policy(&task.droid_type)),
                now: facts.now,
                boot: boot.clone(),
                host: config.host.clone(),
                sweep: kind,
                hang_floor,
                future_tolerance_ms: Some(config.future_tolerance.as_millis() as u64),
                pid_max: facts.pid_max,
                config_fingerprint: config.fingerprint.clone(),
                verdict,
                continues: Some(j.kind).filter(|k| *k != verdict),
            };
            judged.push((task, j, probe, serde_json::to_value(&inputs)?));
        }
    }
    let local = running
        .iter()
        .filter(|t| t.host.as_deref().is_none_or(|h| h == config.host))
        .count();
    if !running.is_empty() && local == 0 {
        warn!(host = %config.host, running = running.len(), "every RUNNING task is on another host: is `host` in foreman.toml right?");
    }

    let shared_pids: Vec<i32> = pid_count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| *p)
        .collect();
    // Foreman's own starvation: it waited for a CPU during this sweep.
    if let (Some(a), Some(b)) = (run_delay_at_start, run_delay()) {
        let waited = b.saturating_sub(a);
        if waited > RUN_DELAY_STARVED && starved.is_none() {
            starved = Some(format!(
                "Foreman waited {} for a CPU during this sweep",
                humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
            ));
        }
    }

    struct Planned<'a> {
        task: Option<&'a Task>,
        finding: NewFinding,
        decision: Decision,
        tree: Vec<Identity>,
        /// Completes a termination a restart interrupted.
        resume: bool,
    }
    // Strays: recorded once seen on two consecutive sweeps, once each.
    // Terminating one needs a snapshot this sweep can trust: no malformed
    // row, and this host's work in it (a snapshot that lost its tasks makes
    // every worker look like a stray).
    let mut stray_planned: Vec<Planned> = Vec::new();
    let mut stray_candidates: Vec<Candidate> = Vec::new();
    if strays::enabled(config) {
        let owned = strays::owned(&table, &snapshot);
        let bad_rows = snapshot.rows.iter().any(|r| matches!(r, Row::Bad(_)));
        let distrust = if bad_rows {
            Some("the snapshot has malformed rows".to_string())
        } else if local == 0 {
            Some("the snapshot shows no RUNNING task on this host".to_string())
        } else {
            blind
                .as_ref()
                .map(|why| format!("/proc cannot show every process ({why})"))
        };
        // A RUNNING task of this host without a pid yet has a worker that
        // may be this very process: a process any such task's type would
        // match is reported only (whichever type's pattern claimed it).
        let pidless: Vec<&str> = running
            .iter()
            .filter(|t| t.pid.is_none() && t.host.as_deref().is_none_or(|h| h == config.host))
            .map(|t| t.droid_type.as_str())
            .collect();
        for c in strays::candidates(&table, config, &owned) {
            let seen = memory.stray(&boot.boot_id, &c, started_at)?;
            let key = format!(
                "stray:{}:{}:{}",
                boot.boot_id.get(..8).unwrap_or(&boot.boot_id),
                c.stat.pid,
                c.stat.start_ticks
            );
            // A stray whose action a crash interrupted is decided again.
            let resumed = open.iter().any(|o| o.task_id == key);
            if !seen.seen_last_sweep || (seen.reported && !resumed) {
                continue;
            }
            let policy = c
                .droid_type
                .as_deref()
                .map_or(&config.defaults, |t| config.policy(t));
            let pid = c.stat.pid;
            let started = boot.started_at(c.stat.start_ticks);
            let age = (started_at - started).to_std().unwrap_or_default();
            // As young as a task may be before its first heartbeat: it may
            // still be on its way to being registered.
            if age < policy.startup_grace {
                continue;
            }
            let unregistered = pidless
                .iter()
                .find(|t| {
                    config
                        .policy(t)
                        .process_match
                        .as_ref()
                        .is_some_and(|re| re.is_match(&c.cmdline))
                })
                .map(|t| {
                    format!("a RUNNING {t} task has no pid recorded yet; this may be its worker")
                });
            let why_not = distrust.clone().or(unregistered);
            let decision = match (policy.on_stray, policy.mode, why_not) {
                (OnStray::Terminate, Mode::Enforce, None) => Decision {
                    action: Action::Terminate,
                    outcome: Outcome::Pending,
                    note: None,
                },
                (OnStray::Terminate, Mode::Enforce, Some(why)) => Decision {
                    action: Action::None,
                    outcome: Outcome::Reported,
                    note: Some(format!("not terminated: {why}")),
                },
                (OnStray::Terminate, Mode::Shadow, _) => Decision {
                    action: Action::None,
                    outcome: Outcome::Reported,
                    note: Some("shadow mode: would terminate".into()),
                },
                (OnStray::Report, _, _) => Decision {
                    action: Action::None,
                    outcome: Outcome::Reported,
                    note: None,
                },
            };
            let mut tree = Vec::new();
            if let Probe::Found(members) = table.probe(pid) {
                // The same process the scan matched, descendants first.
                if members.first().map(|m| m.stat.start_ticks) == Some(c.stat.start_ticks) {
                    tree = tree_of(&members);
                }
            }
            let evidence = serde_json::json!({
                "reason": format!(
                    "process {pid} matches the process_match of {} but no task owns it; seen since {}",
                    c.droid_type.as_deref().map_or("[defaults]".to_string(), |t| format!("droid type {t}")),
                    seen.first_seen_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                "cmdline": c.cmdline,
                "start_ticks": c.stat.start_ticks,
                "process_started_at": started,
                "age_ms": age.as_millis() as u64,
                "ppid": c.stat.ppid,
                "pgrp": c.stat.pgrp,
                "state": c.stat.state.to_string(),
                "members": tree.len(),
                "first_seen_at": seen.first_seen_at,
                "boot_id": boot.boot_id,
            });
            stray_planned.push(Planned {
                task: None,
                finding: NewFinding {
                    task_id: key,
                    attempt: 0,
                    kind: Kind::Stray,
                    droid_type: c.droid_type.clone(),
                    plan_id: None,
                    pid: Some(pid),
                    host: None,
                    evidence,
                    action: decision.action,
                    outcome: decision.outcome,
                    detail: decision.note.clone(),
                    inputs: serde_json::Value::Null,
                },
                decision,
                tree,
                resume: false,
            });
            stray_candidates.push(c);
        }
    }
    let cases: Vec<Case> = judged
        .iter()
        .map(|(task, j, _, _)| Case {
            task,
            judgement: j,
            policy: config.policy(&task.droid_type),
        })
        .collect();
    let (decisions, brake) = decide_sweep(
        &cases,
        &SweepFacts {
            now: started_at,
            starved: starved.clone(),
            running: local,
            max_actions: config.defaults.max_actions_per_sweep,
            shared_pids,
            recent_actions,
            window_limit: config.defaults.max_actions_per_window,
            window: config.defaults.timeout,
            extra_actions: stray_planned
                .iter()
                .filter(|p| p.decision.should_act())
                .count(),
        },
    );

    // Deferral is said where operators look: the sweep's record (twin,
    // /healthz, metrics read it) and one log line per sweep that defers.
    let deferred = decisions
        .iter()
        .filter(|d| d.outcome == Outcome::DeferredStarvation)
        .count();
    // Foreman's own starvation is a deferral only when it held a verdict
    // back; a late tick with nothing hung is a log line, not a deferral
    // (/healthz would otherwise call a healthy fleet deferred).
    let mut said: Vec<String> = deferral.iter().cloned().collect();
    if let Some(s) = starved.as_ref().filter(|_| deferred > 0) {
        said.push(s.clone());
    } else if let Some(s) = &starved {
        info!(reason = %s, "Foreman was starved this sweep; no hung verdict to defer");
    }
    if deferred > 0 {
        let trees = judged
            .iter()
            .zip(&decisions)
            .filter(|((_, j, _, _), d)| {
                d.outcome == Outcome::DeferredStarvation && j.starved.is_some()
            })
            .count();
        said.push(format!(
            "{deferred} hung verdicts deferred ({trees} of them because the task's own processes were runnable without CPU)"
        ));
        warn!(
            deferred,
            starved_trees = trees,
            foreman_starved = starved.as_deref().unwrap_or(""),
            "hung verdicts deferred for starvation; each acts at the latest max_deferral past its timeout"
        );
    }
    record.deferral = (!said.is_empty()).then(|| said.join("; "));
    report.deferral = record.deferral.clone();

    // Findings: every verdict but alive, and every bad row.
    let mut planned: Vec<Planned> = Vec::new();
    for ((task, j, probe, inputs), d) in judged.iter().zip(decisions) {
        let mut evidence = serde_json::to_value(&j.evidence)?;
        let mut tree = Vec::new();
        if let Some(Probe::Found(members)) = probe {
            if let (Some(cmd), Some(map)) = (
                task.pid.and_then(|p| table.cmdline(p)),
                evidence.as_object_mut(),
            ) {
                map.insert("cmdline".into(), serde_json::Value::String(cmd));
            }
            tree = tree_of(members);
        }
        planned.push(Planned {
            task: Some(task),
            finding: NewFinding {
                task_id: task.id.clone(),
                attempt: task.attempt,
                kind: j.kind,
                droid_type: Some(task.droid_type.clone()),
                plan_id: task.plan_id.clone(),
                pid: task.pid,
                host: task.host.clone(),
                evidence,
                action: d.action,
                outcome: d.outcome,
                detail: d.note.clone(),
                inputs: inputs.clone(),
            },
            decision: d,
            tree,
            resume: false,
        });
    }
    // Interrupted terminations: the tree as it was probed then (each member
    // re-verified by its start ticks before any signal), the evidence that
    // decided it; the task marked if it is still RUNNING at that attempt.
    // Neither braked nor re-read: Foreman is finishing what it began.
    for (r, i) in &interrupted {
        let now_task = running
            .iter()
            .copied()
            .find(|t| t.id == i.task.id && t.attempt == i.task.attempt);
        let note = format!(
            "completing the termination of finding {} that a restart interrupted{}; signals sent before the restart may not be recorded",
            r.finding_id,
            if now_task.is_some() {
                ""
            } else {
                " (the task is no longer RUNNING: its tree is finished, the task left as the executor has it)"
            }
        );
        let action = if now_task.is_some() {
            Action::TerminateAndMark
        } else {
            Action::Terminate
        };
        planned.push(Planned {
            task: now_task,
            finding: NewFinding {
                task_id: i.task.id.clone(),
                attempt: i.task.attempt,
                kind: Kind::Hung,
                droid_type: Some(i.task.droid_type.clone()),
                plan_id: i.task.plan_id.clone(),
                pid: i.task.pid,
                host: i.task.host.clone(),
                evidence: r.evidence.clone(),
                action,
                outcome: Outcome::Pending,
                detail: Some(note.clone()),
                inputs: r.inputs.clone(),
            },
            decision: Decision {
                action,
                outcome: Outcome::Pending,
                note: Some(note),
            },
            tree: match &i.probe {
                Some(Probe::Found(members)) => tree_of(members),
                _ => Vec::new(),
            },
            resume: true,
        });
    }
    for row in &snapshot.rows {
        if let Row::Bad(b) = row {
            planned.push(Planned {
                task: None,
                finding: NewFinding {
                    task_id: b.id.clone(),
                    attempt: b.attempt,
                    kind: Kind::Unverifiable,
                    droid_type: b.droid_type.clone(),
                    plan_id: b.plan_id.clone(),
                    pid: None,
                    host: None,
                    evidence: serde_json::json!({"reason": format!("malformed snapshot row: {}", b.reason), "boot_id": boot.boot_id}),
                    action: Action::None,
                    outcome: Outcome::Reported,
                    detail: None,
                    inputs: serde_json::Value::Null,
                },
                decision: Decision {
                    action: Action::None,
                    outcome: Outcome::Reported,
                    note: None,
                },
                tree: Vec::new(),
                resume: false,
            });
        }
    }

    let first_stray = planned.len();
    planned.extend(stray_planned);
    // One brake for every action of the sweep: strays count with tasks,
    // and a braked sweep terminates no stray either.
    if let Some(note) = &brake {
        for p in planned[first_stray..].iter_mut() {
            if p.decision.should_act() {
                p.decision.outcome = Outcome::Braked;
                p.decision.note = Some(note.clone());
                p.finding.outcome = Outcome::Braked;
                p.finding.detail = Some(note.clone());
            }
        }
    }
    // Recorded once; a braked stray is decided again next sweep.
    for (p, c) in planned[first_stray..].iter().zip(&stray_candidates) {
        if p.decision.outcome != Outcome::Braked {
            memory.stray_reported(&boot.boot_id, c)?;
        }
    }

    // Open findings this sweep did not see again are closed, truthfully.
    let seen: HashSet<(&str, i64, &str)> = planned
        .iter()
        .map(|p| {
            (
                p.finding.task_id.as_str(),
                p.finding.attempt,
                p.finding.kind.as_str(),
            )
        })
        .collect();
    for o in &open {
        if seen.contains(&(o.task_id.as_str(), o.attempt, o.kind.as_str())) {
            continue;
        }
        let now_row = snapshot.rows.iter().find_map(|r| match r {
            Row::Task(t) if t.id == o.task_id => Some(t),
            _ => None,
        });
        let (outcome, detail) = match now_row {
            Some(t) if t.state == TaskState::Running && t.attempt == o.attempt => (
                Outcome::Cleared,
                format!("re-verified: no longer {}", o.kind),
            ),
            Some(t)
                if t.state == TaskState::Failed
                    && t.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("foreman:")) =>
            {
                (
                    Outcome::MarkedFailed,
                    "marked failed before Foreman stopped".to_string(),
                )
            }
            Some(t) => (
                Outcome::AlreadyFinished,
                format!("task is now {:?} (attempt {})", t.state, t.attempt),
            ),
            None if o.kind == Kind::Stray.as_str() => (
                Outcome::AlreadyFinished,
                "the stray is gone, or a task owns it now".to_string(),
            ),
            None => (
                Outcome::AlreadyFinished,
                "task is no longer in the snapshot".to_string(),
            ),
        };
        record.closes.push((o.id, outcome, detail));
    }

    record.findings = planned.iter().map(|p| p.finding.clone()).collect();
    // Recovery hears of every finding Foreman is about to act on, and of
    // every braked one (a brake means something is wrong with the view):
    // queued with the finding, delivered once its outcome is recorded.
    for (i, p) in planned.iter().enumerate() {
        let stray = p.finding.kind == Kind::Stray;
        if !(p.decision.should_act() || p.decision.outcome == Outcome::Braked || stray) {
            continue;
        }
        for sink in &config.alerts {
            if sink.wants(p.finding.kind, p.finding.droid_type.as_deref()) {
                record.alerts.push(NewAlert {
                    finding: i,
                    sink: sink.name.clone(),
                    realert_after: sink.realert_after,
                });
            }
        }
    }
    // The monitor's pull is part of the sweep's record: the new state and
    // its events commit together, so a restart neither replays nor loses a
    // transition.
    // A failing pull must not cost the sweep: it runs in a savepoint that
    // is rolled back alone, and the sweep commits without it.
    if let Memory::Writing(tx) = &memory {
        let hung: HashSet<&str> = judged
            .iter()
            .filter(|(_, j, _, _)| j.kind == Kind::Hung)
            .map(|(t, _, _, _)| t.id.as_str())
            .collect();
        let conn = tx.conn();
        conn.execute_batch("SAVEPOINT monitor_pull")?;
        match crate::monitor::store::pull_with(
            conn,
            &snapshot,
            &hung,
            started_at,
            config.interval,
            config.monitor.max_plans,
        ) {
            Ok(pulled) => {
                conn.execute_batch("RELEASE monitor_pull")?;
                report.monitor = Some(pulled);
            }
            Err(e) => {
                conn.execute_batch("ROLLBACK TO monitor_pull; RELEASE monitor_pull")?;
                error!(error = %format!("{e:#}"), "the execution monitor's pull failed; this sweep's transitions are seen by the next");
            }
        }
    }
    let (ids, first_seen): (Vec<Option<i64>>, Vec<bool>) = match memory.commit(&record)? {
        Some(c) => {
            report.sweep_id = Some(c.sweep_id);
            (c.ids.into_iter().map(Some).collect(), c.first_seen)
        }
        None => (vec![None; planned.len()], vec![true; planned.len()]),
    };
    for (p, id) in planned.iter().zip(&ids) {
        let f = &p.finding;
        warn!(
            finding_id = *id,
            task_id = %f.task_id,
            attempt = f.attempt,
            droid_type = f.droid_type.as_deref().unwrap_or(""),
            pid = f.pid.unwrap_or(0),
            kind = f.kind.as_str(),
            action = f.action.as_str(),
            outcome = f.outcome.as_str(),
            reason = f.evidence.get("reason").and_then(|r| r.as_str()).unwrap_or(""),
            "finding"
        );
    }

    fail::fail_point!("sweep::before_act");

    // Act: only in a real sweep, only on decisions that say so.
    let mut outcomes: Vec<(Outcome, Option<String>)> = planned
        .iter()
        .map(|p| (p.decision.outcome, p.decision.note.clone()))
        .collect();
    let mut actions = 0;
    if let LogAccess::Write(l) = &mut log {
        let to_act: Vec<usize> = (0..planned.len())
            .filter(|i| planned[*i].decision.should_act())
            .collect();
        // Terminate every hung tree together, then mark.
        let term: Vec<usize> = to_act
            .iter()
            .copied()
            .filter(|i| {
                matches!(
                    planned[*i].decision.action,
                    Action::TerminateAndMark | Action::Terminate
                )
            })
            .collect();
        // The executor may have finished a hung task since the snapshot
        // (its worker woke up and reported): read the rows again right
        // before the first signal, and signal only a task still RUNNING
        // with the same pid and attempt.
        let mut skipped: HashMap<usize, (Outcome, String)> = HashMap::new();
        if term.iter().any(|i| planned[*i].task.is_some()) {
            let fresh = executor.snapshot();
            for i in &term {
                let Some(task) = planned[*i].task.filter(|_| !planned[*i].resume) else {
                    continue;
                };
                match &fresh {
                    Ok(snap) => {
                        let now_row = snap.rows.iter().find_map(|r| match r {
                            Row::Task(t) if t.id == task.id => Some(t),
                            _ => None,
                        });
                        let same = now_row.is_some_and(|t| {
                            t.state == TaskState::Running
                                && t.pid == task.pid
                                && t.attempt == task.attempt
                        });
                        if !same {
                            let now = now_row.map_or("gone from the snapshot".to_string(), |t| {
                                format!("{:?} (attempt {}, pid {:?})", t.state, t.attempt, t.pid)
                            });
                            skipped.insert(*i, (Outcome::AlreadyFinished, format!(
                                "re-read before signalling: the task is now {now}; nothing signalled, its result kept"
                            )));
                        }
                    }
                    Err(e) => {
                        skipped.insert(*i, (Outcome::Error, format!(
                            "could not re-read the task before signalling ({e:#}); nothing signalled, retried next sweep"
                        )));
                    }
                }
            }
        }
        let term: Vec<usize> = term
            .into_iter()
            .filter(|i| !skipped.contains_key(i))
            .collect();
        // The intent, recorded before the first signal: should Foreman die
        // between a signal and its record, the next sweep sees that it had
        // begun and finishes the termination (a finding without it is
        // judged afresh: nothing was sent).
        for i in &term {
            if let (Some(fid), false) = (ids[*i], planned[*i].resume) {
                for m in &planned[*i].tree {
                    l.add_signal(fid, Utc::now(), m.pid, m.start_ticks, "INTENT", INTENDED)?;
                }
            }
        }
        let mut term_result: HashMap<usize, Terminated> = HashMap::new();
        if !term.is_empty() {
            let trees: Vec<Vec<Identity>> = term.iter().map(|i| planned[*i].tree.clone()).collect();
            let grace = term
                .iter()
                .map(|i| {
                    let p = &planned[*i];
                    let ty = p
                        .task
                        .map(|t| t.droid_type.as_str())
                        .or(p.finding.droid_type.as_deref());
                    ty.map_or(&config.defaults, |t| config.policy(t)).kill_grace
                })
                .max()
                .unwrap_or(Duration::from_secs(10));
            let (results, records) = terminate_trees(&trees, grace);
            for ((i, r), recs) in term.iter().zip(results).zip(records) {
                if let Some(fid) = ids[*i] {
                    for s in recs {
                        l.add_signal(
                            fid,
                            s.at,
                            s.target.pid,
                            s.target.start_ticks,
                            s.signal,
                            &s.sent.describe(),
                        )?;
                    }
                }
                term_result.insert(*i, r);
            }
        }
        for i in to_act {
            let p = &planned[i];
            if let Some((outcome, note)) = skipped.remove(&i) {
                outcomes[i] = (outcome, Some(note));
                continue;
            }
            actions += 1;
            let Some(task) = p.task else {
                // A stray: terminated, with no task to mark.
                outcomes[i] = match term_result.get(&i) {
                    Some(Terminated::Done) => (Outcome::Terminated, p.decision.note.clone()),
                    Some(Terminated::Unkillable(left)) => (
                        Outcome::Unkillable,
                        Some(format!(
                            "processes {left:?} survived SIGKILL (uninterruptible?)"
                        )),
                    ),
                    Some(Terminated::Refused(why)) => {
                        (Outcome::Reported, Some(format!("not signalled ({why})")))
                    }
                    None => (Outcome::Error, Some("no termination result".into())),
                };
                continue;
            };
            let mut note = p.decision.note.clone();
            match term_result.get(&i) {
                Some(Terminated::Unkillable(left)) => {
                    outcomes[i] = (
                        Outcome::Unkillable,
                        Some(format!("processes {left:?} survived SIGKILL (uninterruptible?); not marked, retried next sweep")),
                    );
                    continue;
                }
                Some(Terminated::Refused(why)) => {
                    note = Some(format!("not signalled ({why}); marked only"))
                }
                _ => {}
            }
            let reason = failure_reason(
                p.finding.kind.as_str(),
                p.finding
                    .evidence
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or(""),
            );
            fail::fail_point!("sweep::before_mark");
            outcomes[i] = match executor.mark_failed(task, &reason, Utc::now()) {
                Ok(Marked::Failed) => (Outcome::MarkedFailed, note),
                Ok(Marked::NotRunning) => (
                    Outcome::AlreadyFinished,
                    Some("the task was no longer RUNNING with this pid and attempt; its result was kept".into()),
                ),
                Err(e) => (Outcome::Error, Some(format!("{e:#}"))),
            };
        }
        for (i, (outcome, note)) in outcomes.iter().enumerate() {
            if let Some(fid) = ids[i] {
                if *outcome != planned[i].decision.outcome || *note != planned[i].decision.note {
                    l.set_outcome(fid, *outcome, note.as_deref(), Utc::now())?;
                }
            }
        }
    }

    report.findings = planned
        .into_iter()
        .zip(ids)
        .zip(outcomes)
        .zip(first_seen)
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
    if let (LogAccess::Write(l), Some(id)) = (&mut log, report.sweep_id) {
        l.finish_sweep(id, report.finished_at, actions, errors)?;
    }
    for f in report
        .findings
        .iter()
        .filter(|f| f.outcome == Outcome::Error)
    {
        error!(task_id = %f.task_id, detail = f.detail.as_deref().unwrap_or(""), "action failed");
    }
    info!(
        sweep_id = report.sweep_id,
        kind = kind.as_str(),
        dry_run,
        tasks_seen = report.tasks_seen,
        tasks_checked = report.tasks_checked,
        findings = report.findings.len(),
        actions,
        errors,
        duration_ms = (report.finished_at - started_at).num_milliseconds(),
        "sweep finished"
    );
    Ok(report)
}

/// Where prior observations come from and new ones go: the sweep's
/// transaction, or (in a dry run) the log read-only, if there is one.
enum Memory<'a> {
    Writing(SweepTx<'a>),
    Reading(Option<&'a ActivityLog>),
}

impl Memory<'_> {
    fn prior(&self, task: &Task, pid: i32) -> Result<Option<Observation>> {
        match self {
            Memory::Writing(tx) => tx.prior(&task.id, task.attempt, pid),
            Memory::Reading(Some(log)) => log.prior(&task.id, task.attempt, pid),
            Memory::Reading(None) => Ok(None),
        }
    }

    fn observe(&self, o: &Observation) -> Result<()> {
        match self {
            Memory::Writing(tx) => tx.observe(o),
            Memory::Reading(_) => Ok(()),
        }
    }

    /// What was known of a stray candidate before; a real sweep also notes
    /// that it saw it now.
    fn stray(&self, boot_id: &str, c: &Candidate, now: DateTime<Utc>) -> Result<StrayHistory> {
        let (pid, ticks) = (c.stat.pid, c.stat.start_ticks);
        let fresh = StrayHistory::first_sight(now);
        match self {
            Memory::Writing(tx) => tx.stray_seen(boot_id, pid, ticks, c.droid_type.as_deref(), now),
            Memory::Reading(Some(log)) => Ok(log.stray(boot_id, pid, ticks)?.unwrap_or(fresh)),
            Memory::Reading(None) => Ok(fresh),
        }
    }

    fn stray_reported(&self, boot_id: &str, c: &Candidate) -> Result<()> {
        match self {
            Memory::Writing(tx) => tx.stray_reported(boot_id, c.stat.pid, c.stat.start_ticks),
            Memory::Reading(_) => Ok(()),
        }
    }

    /// Commit a real sweep: its id and its findings' ids. `None` in a dry run.
    fn commit(self, record: &SweepRecord) -> Result<Option<Committed>> {
        match self {
            Memory::Writing(tx) => tx.commit_new(record).map(Some),
            Memory::Reading(_) => Ok(None),
        }
    }
}

/// Where hang clocks restart after a suspend or a wall-clock step. A
/// suspend restarts them now: nothing ran. A step moves a floor still in
/// force (younger than `max_deferral`) by the step, into the new clock's
/// frame, instead of to now: a clock stepping at every sweep (a broken
/// RTC, a flapping time source) would otherwise restart every hang clock
/// for ever. A floor older than that, or none, starts now.
fn next_floor(
    prev: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    step_ns: Option<i64>,
    max_deferral: Duration,
) -> DateTime<Utc> {
    let (Some(prev), Some(step)) = (prev, step_ns) else {
        return now;
    };
    let moved = prev
        .checked_add_signed(chrono::Duration::nanoseconds(step))
        .unwrap_or(now);
    let max = chrono::Duration::from_std(max_deferral).unwrap_or(chrono::Duration::MAX);
    if moved <= now && now.signed_duration_since(moved) <= max {
        moved
    } else {
        now
    }
}

/// This thread's time spent waiting for a CPU (`/proc/thread-self/schedstat`,
/// second field, ns): the sweep runs on one thread, so the difference over
/// the sweep is how long Foreman itself was kept off the CPU.
fn run_delay() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Waiting longer than this for a CPU within one sweep is starvation: a
/// sweep needs milliseconds of CPU, and the fair scheduler gives a waking
/// task its turn within a few of them even on a host saturated by its own
/// droids.
const RUN_DELAY_STARVED: Duration = Duration::from_secs(1);

/// A probed tree as `terminate_trees` wants it: descendants first, leader
/// last.
fn tree_of(members: &[crate::probe::Member]) -> Vec<Identity> {
    members
        .iter()
        .rev()
        .map(|m| Identity {
            pid: m.stat.pid,
            start_ticks: m.stat.start_ticks,
        })
        .collect()
}

fn gone_kind(s: &str) -> Option<Kind> {
    match s {
        "dead" => Some(Kind::Dead),
        "zombie" => Some(Kind::Zombie),
        "pid_reused" => Some(Kind::PidReused),
        "orphan" => Some(Kind::Orphan),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hang_floors_after_suspends_and_clock_steps() {
        let t = |m: i64| {
            Utc.with_ymd_and_hms(2026, 11, 23, 7, 0, 0).unwrap() + chrono::Duration::minutes(m)
        };
        let max = Duration::from_secs(90 * 60);
        let step = |s: i64| Some(s * 1_000_000_000);
        // The first step, or a suspend: hang clocks restart now.
        assert_eq!(next_floor(None, t(0), step(6), max), t(0));
        assert_eq!(next_floor(Some(t(-2)), t(0), None, max), t(0));
        // Another step while the floor is in force moves it by the step,
        // not to now: steps at every sweep cannot hide a hang for ever.
        assert_eq!(
            next_floor(Some(t(-10)), t(0), step(6), max),
            t(-10) + chrono::Duration::seconds(6)
        );
        // A floor older than max_deferral (in the new frame): now.
        assert_eq!(next_floor(Some(t(-200)), t(0), step(6), max), t(0));
        // A large forward step right after another one lands in the new
        // frame; a backward one too.
        assert_eq!(next_floor(Some(t(-5)), t(0), step(-60 * 60), max), t(-65));
        assert_eq!(
            next_floor(Some(t(-3 * 24 * 60 - 5)), t(0), step(3 * 24 * 3600), max),
            t(-5)
        );
        // A floor that the step would put in the future: now.
        assert_eq!(next_floor(Some(t(-1)), t(0), step(120), max), t(0));
    }
}
