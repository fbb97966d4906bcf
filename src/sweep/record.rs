//! The sweep's record in the activity log: where prior observations come
//! from and new ones go (the sweep's transaction, or the log read-only in a
//! dry run), the monitor's pull inside that transaction, and the commit
//! that must land before anything acts.

use super::guards::Guards;
use super::judging::Judged;
use super::plan::Planned;
use super::{LogAccess, SweepReport};
use crate::activity::{ActivityLog, Committed, StrayHistory, SweepRecord, SweepTx};
use crate::config::Config;
use crate::model::{Kind, Mode, Snapshot, SweepKind, Task};
use crate::monitor::Pulled;
use crate::observation::Observation;
use crate::probe::{BootFacts, Clocks};
use crate::strays::Candidate;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use tracing::{error, info, warn};

/// Where prior observations come from and new ones go: the sweep's
/// transaction, or (in a dry run) the log read-only, if there is one.
pub(super) enum Memory<'a> {
    Writing(SweepTx<'a>),
    Reading(Option<&'a ActivityLog>),
}

impl Memory<'_> {
    pub(super) fn prior(&self, task: &Task, pid: i32) -> Result<Option<Observation>> {
        match self {
            Memory::Writing(tx) => tx.prior(&task.id, task.attempt, pid),
            Memory::Reading(Some(log)) => log.prior(&task.id, task.attempt, pid),
            Memory::Reading(None) => Ok(None),
        }
    }

    pub(super) fn observe(&self, o: &Observation) -> Result<()> {
        match self {
            Memory::Writing(tx) => tx.observe(o),
            Memory::Reading(_) => Ok(()),
        }
    }

    /// What was known of a stray candidate before; a real sweep also notes
    /// that it saw it now.
    pub(super) fn stray(
        &self,
        boot_id: &str,
        c: &Candidate,
        now: DateTime<Utc>,
    ) -> Result<StrayHistory> {
        let (pid, ticks) = (c.stat.pid, c.stat.start_ticks);
        let fresh = StrayHistory::first_sight(now);
        match self {
            Memory::Writing(tx) => tx.stray_seen(boot_id, pid, ticks, c.droid_type.as_deref(), now),
            Memory::Reading(Some(log)) => Ok(log.stray(boot_id, pid, ticks)?.unwrap_or(fresh)),
            Memory::Reading(None) => Ok(fresh),
        }
    }

    pub(super) fn stray_reported(&self, boot_id: &str, c: &Candidate) -> Result<()> {
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

/// The sweep's record as it opens: counts and findings come later. Its
/// deferral is the clocks' until decide says more.
pub(super) fn sweep_record(
    config: &Config,
    kind: SweepKind,
    started_at: DateTime<Utc>,
    boot: &BootFacts,
    clocks: Clocks,
    guards: &Guards,
) -> SweepRecord {
    SweepRecord {
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
        deferral: guards.deferral.clone(),
        boot_id: boot.boot_id.clone(),
        clocks,
        hang_floor: guards.hang_floor,
        observations: Vec::new(),
        findings: Vec::new(),
        closes: Vec::new(),
        alerts: Vec::new(),
    }
}

/// The executor could not be read: the sweep is recorded with the error,
/// and an unreachable executor marks nothing.
pub(super) fn snapshot_failed(
    log: &mut LogAccess<'_>,
    record: &mut SweepRecord,
    mut report: SweepReport,
    kind: SweepKind,
    e: &anyhow::Error,
) -> Result<SweepReport> {
    let msg = format!("{e:#}");
    error!(target: "foreman::sweep", kind = kind.as_str(), error = %msg, "snapshot_error: the executor could not be read; nothing judged, nothing marked");
    record.error = Some(format!("snapshot_error: {msg}"));
    if let LogAccess::Write(l) = log {
        let (id, _) = l.record(record)?;
        l.finish_sweep(id, Utc::now(), 0, 0)?;
        report.sweep_id = Some(id);
    }
    report.snapshot_error = Some(msg);
    report.finished_at = Utc::now();
    Ok(report)
}

/// The monitor's pull is part of the sweep's record: the new state and
/// its events commit together, so a restart neither replays nor loses a
/// transition.
/// A failing pull must not cost the sweep: it runs in a savepoint that
/// is rolled back alone, and the sweep commits without it.
pub(super) fn pull_monitor(
    memory: &Memory<'_>,
    judged: &[Judged],
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    config: &Config,
) -> Result<Option<Pulled>> {
    let Memory::Writing(tx) = memory else {
        return Ok(None);
    };
    let hung: HashSet<&str> = judged
        .iter()
        .filter(|j| j.judgement.kind == Kind::Hung)
        .map(|j| j.task.id.as_str())
        .collect();
    let conn = tx.conn();
    conn.execute_batch("SAVEPOINT monitor_pull")?;
    match crate::monitor::store::pull_with(
        conn,
        snapshot,
        &hung,
        now,
        config.interval,
        config.monitor.max_plans,
    ) {
        Ok(pulled) => {
            conn.execute_batch("RELEASE monitor_pull")?;
            Ok(Some(pulled))
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO monitor_pull; RELEASE monitor_pull")?;
            error!(target: "foreman::sweep", error = %format!("{e:#}"), "the execution monitor's pull failed; this sweep's transitions are seen by the next");
            Ok(None)
        }
    }
}

/// What the commit gave each planned finding.
pub(super) struct Recorded {
    /// `None` in a dry run.
    pub sweep_id: Option<i64>,
    /// Each finding's id in the log (`None` in a dry run).
    pub ids: Vec<Option<i64>>,
    /// Whether each finding was recorded for the first time.
    pub first_seen: Vec<bool>,
}

/// Commit the sweep (evidence before action), then log each finding with
/// its id.
pub(super) fn commit(
    memory: Memory<'_>,
    record: &SweepRecord,
    planned: &[Planned],
) -> Result<Recorded> {
    let recorded = match memory.commit(record)? {
        Some(c) => Recorded {
            sweep_id: Some(c.sweep_id),
            ids: c.ids.into_iter().map(Some).collect(),
            first_seen: c.first_seen,
        },
        None => Recorded {
            sweep_id: None,
            ids: vec![None; planned.len()],
            first_seen: vec![true; planned.len()],
        },
    };
    for (p, id) in planned.iter().zip(&recorded.ids) {
        let f = &p.finding;
        // A gone task waiting out its exit grace is not a conclusion yet:
        // the executor may write its result first (most do). Said at
        // INFO; the WARN comes if Foreman acts.
        if f.action == crate::model::Action::Deferred && f.outcome == crate::model::Outcome::Pending
        {
            info!(target: "foreman::sweep",
                foreman_finding_id = *id,
                task_id = %f.task_id,
                attempt = f.attempt,
                kind = f.kind.as_str(),
                pid = f.pid.unwrap_or(0),
                detail = p.decision.note.as_deref().unwrap_or(""),
                "waiting out exit grace"
            );
            continue;
        }
        warn!(target: "foreman::sweep",
            foreman_finding_id = *id,
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
    Ok(recorded)
}
