//! What a sweep will record and do: every verdict but alive, every
//! interrupted termination and every bad row as a planned finding with its
//! decision and the tree it would signal; the brake on strays; the closes
//! of open findings not seen again; the alerts queued with the findings.
//!
//! Nothing here writes: the log, the executor and every process are left
//! alone (a finding's command line is read from `/proc`, nothing more).

use super::act::tree_of;
use super::judging::Judged;
use crate::activity::{Interrupted, NewAlert, NewFinding, OpenFinding};
use crate::config::Config;
use crate::decide::{Case, Decision};
use crate::judge::Inputs;
use crate::model::{Action, Kind, Outcome, Row, Snapshot, Task, TaskState};
use crate::probe::{Probe, ProcTable};
use crate::recovery::Identity;
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// One finding as the sweep will record it and act on it.
pub(super) struct Planned<'t> {
    /// The RUNNING task acted on; `None` for a stray or a bad row, and for
    /// an interrupted termination whose task is no longer RUNNING.
    pub task: Option<&'t Task>,
    pub finding: NewFinding,
    pub decision: Decision,
    /// The tree to terminate, descendants first.
    pub tree: Vec<Identity>,
    /// Completes a termination a restart interrupted.
    pub resume: bool,
}

/// What decide is given of each judged task.
pub(super) fn cases<'a>(config: &'a Config, judged: &'a [Judged]) -> Vec<Case<'a>> {
    judged
        .iter()
        .map(|j| Case {
            task: j.task,
            judgement: &j.judgement,
            policy: config.policy(&j.task.droid_type),
        })
        .collect()
}

/// Pids more than one RUNNING task names: never signalled.
pub(super) fn shared_pids(running: &[&Task]) -> Vec<i32> {
    let mut pid_count: HashMap<i32, usize> = HashMap::new();
    for t in running {
        if let Some(p) = t.pid {
            *pid_count.entry(p).or_default() += 1;
        }
    }
    pid_count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| *p)
        .collect()
}

/// Findings: every verdict but alive, with its decision, the process's
/// command line in the evidence and the tree it would signal.
pub(super) fn findings<'t>(
    judged: &[Judged<'t>],
    decisions: Vec<Decision>,
    table: &ProcTable,
) -> Result<Vec<Planned<'t>>> {
    let mut planned: Vec<Planned> = Vec::new();
    for (j, d) in judged.iter().zip(decisions) {
        let task = j.task;
        let mut evidence = serde_json::to_value(&j.judgement.evidence)?;
        let mut tree = Vec::new();
        if let Some(Probe::Found(members)) = &j.probe {
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
                kind: j.judgement.kind,
                droid_type: Some(task.droid_type.clone()),
                plan_id: task.plan_id.clone(),
                pid: task.pid,
                host: task.host.clone(),
                evidence,
                action: d.action,
                outcome: d.outcome,
                detail: d.note.clone(),
                inputs: j.inputs.clone(),
            },
            decision: d,
            tree,
            resume: false,
        });
    }
    Ok(planned)
}

/// Interrupted terminations: the tree as it was probed then (each member
/// re-verified by its start ticks before any signal), the evidence that
/// decided it; the task marked if it is still RUNNING at that attempt.
/// Neither braked nor re-read: Foreman is finishing what it began.
pub(super) fn resumed<'t>(
    interrupted: &[(Interrupted, Inputs)],
    running: &[&'t Task],
) -> Vec<Planned<'t>> {
    let mut planned = Vec::new();
    for (r, i) in interrupted {
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
                // The interrupted finding's own kind (hung or timed_out),
                // so this one settles it under the same key.
                kind: i.continues.unwrap_or(i.verdict),
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
    planned
}

/// Every bad row: unverifiable with its reason, reported only.
pub(super) fn bad_rows<'t>(snapshot: &Snapshot, boot_id: &str) -> Vec<Planned<'t>> {
    let mut planned = Vec::new();
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
                    evidence: serde_json::json!({"reason": format!("malformed snapshot row: {}", b.reason), "boot_id": boot_id}),
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
    planned
}

/// One brake for every action of the sweep: strays count with tasks,
/// and a braked sweep terminates no stray either.
pub(super) fn brake_strays(strays: &mut [Planned], brake: Option<&str>) {
    let Some(note) = brake else {
        return;
    };
    for p in strays.iter_mut() {
        if p.decision.should_act() {
            p.decision.outcome = Outcome::Braked;
            p.decision.note = Some(note.to_string());
            p.finding.outcome = Outcome::Braked;
            p.finding.detail = Some(note.to_string());
        }
    }
}

/// Open findings this sweep did not see again are closed, truthfully.
pub(super) fn closes(
    open: &[OpenFinding],
    planned: &[Planned],
    snapshot: &Snapshot,
) -> Vec<(i64, Outcome, String)> {
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
    let mut closes = Vec::new();
    for o in open {
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
        closes.push((o.id, outcome, detail));
    }
    closes
}

/// Recovery hears of every finding Foreman is about to act on, and of
/// every braked one (a brake means something is wrong with the view):
/// queued with the finding, delivered once its outcome is recorded.
pub(super) fn alerts(config: &Config, planned: &[Planned]) -> Vec<NewAlert> {
    let mut alerts = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        let stray = p.finding.kind == Kind::Stray;
        if !(p.decision.should_act() || p.decision.outcome == Outcome::Braked || stray) {
            continue;
        }
        for sink in &config.alerts {
            if sink.wants(p.finding.kind, p.finding.droid_type.as_deref()) {
                alerts.push(NewAlert {
                    finding: i,
                    sink: sink.name.clone(),
                    realert_after: sink.realert_after,
                });
            }
        }
    }
    alerts
}

/// Hold what a silence or a maintenance window covers: each finding that
/// would act (or queue an alert) is recorded `silenced` with the hold's
/// note, and acts on nothing. A termination a crash interrupted is
/// finished regardless: Foreman had begun killing that tree.
pub(super) fn hold(planned: &mut [Planned], holds: &[crate::silence::Hold], me: &str) {
    if holds.is_empty() {
        return;
    }
    for p in planned.iter_mut().filter(|p| !p.resume) {
        let acts = p.decision.should_act();
        if !(acts || p.decision.outcome == Outcome::Braked) {
            continue;
        }
        let f = &p.finding;
        let Some(h) = crate::silence::covering(
            holds,
            &f.task_id,
            f.droid_type.as_deref(),
            f.host.as_deref(),
            me,
        ) else {
            continue;
        };
        let note = h.note();
        p.decision.outcome = Outcome::Silenced;
        p.decision.note = Some(note.clone());
        p.finding.outcome = Outcome::Silenced;
        p.finding.detail = Some(note);
    }
}
