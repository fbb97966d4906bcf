//! The act stage: only in a real sweep, only on decisions that say so, and
//! only after the sweep's record is committed. Every hung tree is
//! terminated together (after the executor's rows are read again and an
//! `INTENT` row per member is written), then marked; each outcome that
//! differs from the decision is written back.

use super::plan::Planned;
use super::{LogAccess, INTENDED};
use crate::activity::ActivityLog;
use crate::config::Config;
use crate::executor::{Executor, Marked};
use crate::model::{Action, Outcome, Row, Task, TaskState};
use crate::recovery::{failure_reason, terminate_trees, Identity, Terminated};
use anyhow::Result;
use chrono::Utc;
use std::collections::HashMap;
use std::time::Duration;

/// What acting came to: each planned finding's outcome and note, and the
/// number of actions taken.
pub(super) struct Acted {
    pub outcomes: Vec<(Outcome, Option<String>)>,
    pub actions: usize,
    /// Per planned finding that acted: the signals sent, summed up
    /// ("SIGTERM 3 delivered, SIGKILL 1 delivered"), for its log line.
    pub signals: Vec<Option<String>>,
    /// Which planned findings were acted on (or tried).
    pub acted: Vec<bool>,
}

/// Act on the planned findings (nothing in a dry run: each keeps its
/// decided outcome).
pub(super) fn act(
    config: &Config,
    executor: &dyn Executor,
    log: &mut LogAccess<'_>,
    planned: &[Planned],
    ids: &[Option<i64>],
) -> Result<Acted> {
    let mut acted = Acted {
        outcomes: planned
            .iter()
            .map(|p| (p.decision.outcome, p.decision.note.clone()))
            .collect(),
        actions: 0,
        signals: vec![None; planned.len()],
        acted: vec![false; planned.len()],
    };
    let LogAccess::Write(l) = log else {
        return Ok(acted);
    };
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
    let mut skipped = reread(executor, planned, &term);
    let term: Vec<usize> = term
        .into_iter()
        .filter(|i| !skipped.contains_key(i))
        .collect();
    record_intent(l, planned, ids, &term)?;
    let (term_result, sent) = terminate(config, l, planned, ids, &term)?;
    for (i, summary) in sent {
        acted.signals[i] = Some(summary);
    }
    for i in to_act {
        acted.acted[i] = true;
        let p = &planned[i];
        if let Some((outcome, note)) = skipped.remove(&i) {
            acted.outcomes[i] = (outcome, Some(note));
            continue;
        }
        acted.actions += 1;
        acted.outcomes[i] = match p.task {
            Some(task) => mark(executor, p, task, term_result.get(&i)),
            None => stray_outcome(p, term_result.get(&i)),
        };
    }
    for (i, (outcome, note)) in acted.outcomes.iter().enumerate() {
        if let Some(fid) = ids[i] {
            if *outcome != planned[i].decision.outcome || *note != planned[i].decision.note {
                l.set_outcome(fid, *outcome, note.as_deref(), Utc::now())?;
            }
        }
    }
    Ok(acted)
}

/// The signals of one tree, counted by signal and result, in the order
/// first sent: "SIGTERM delivered ×3, SIGKILL delivered ×1".
fn summarize(recs: &[crate::recovery::SignalRecord]) -> String {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for r in recs {
        let key = format!("{} {}", r.signal, r.sent.describe());
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => seen.push((key, 1)),
        }
    }
    if seen.is_empty() {
        return "none".into();
    }
    seen.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The executor may have finished a hung task since the snapshot
/// (its worker woke up and reported): read the rows again right
/// before the first signal, and signal only a task still RUNNING
/// with the same pid and attempt. Returns the terminations skipped.
fn reread(
    executor: &dyn Executor,
    planned: &[Planned],
    term: &[usize],
) -> HashMap<usize, (Outcome, String)> {
    let mut skipped: HashMap<usize, (Outcome, String)> = HashMap::new();
    if !term.iter().any(|i| planned[*i].task.is_some()) {
        return skipped;
    }
    let fresh = executor.look();
    for i in term {
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
                    t.state == TaskState::Running && t.pid == task.pid && t.attempt == task.attempt
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
    skipped
}

/// The intent, recorded before the first signal: should Foreman die
/// between a signal and its record, the next sweep sees that it had
/// begun and finishes the termination (a finding without it is
/// judged afresh: nothing was sent).
fn record_intent(
    l: &ActivityLog,
    planned: &[Planned],
    ids: &[Option<i64>],
    term: &[usize],
) -> Result<()> {
    for i in term {
        if let (Some(fid), false) = (ids[*i], planned[*i].resume) {
            for m in &planned[*i].tree {
                l.add_signal(fid, Utc::now(), m.pid, m.start_ticks, "INTENT", INTENDED)?;
            }
        }
    }
    Ok(())
}

/// Terminate the trees together (the longest kill grace of their types),
/// recording every signal sent.
fn terminate(
    config: &Config,
    l: &ActivityLog,
    planned: &[Planned],
    ids: &[Option<i64>],
    term: &[usize],
) -> Result<(HashMap<usize, Terminated>, HashMap<usize, String>)> {
    let mut term_result: HashMap<usize, Terminated> = HashMap::new();
    let mut sent: HashMap<usize, String> = HashMap::new();
    if term.is_empty() {
        return Ok((term_result, sent));
    }
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
        sent.insert(*i, summarize(&recs));
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
    Ok((term_result, sent))
}

/// A stray: terminated, with no task to mark.
fn stray_outcome(p: &Planned, result: Option<&Terminated>) -> (Outcome, Option<String>) {
    match result {
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
    }
}

/// A task: marked failed (compare-and-set) once its tree is gone, or
/// marked only when its tree was not to be signalled; a tree that
/// survived SIGKILL is not marked.
fn mark(
    executor: &dyn Executor,
    p: &Planned,
    task: &Task,
    result: Option<&Terminated>,
) -> (Outcome, Option<String>) {
    let mut note = p.decision.note.clone();
    match result {
        Some(Terminated::Unkillable(left)) => {
            return (
                Outcome::Unkillable,
                Some(format!("processes {left:?} survived SIGKILL (uninterruptible?); not marked, retried next sweep")),
            );
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
    match executor.mark_failed(task, &reason, Utc::now()) {
        Ok(Marked::Failed) => (Outcome::MarkedFailed, note),
        Ok(Marked::NotRunning) => (
            Outcome::AlreadyFinished,
            Some(
                "the task was no longer RUNNING with this pid and attempt; its result was kept"
                    .into(),
            ),
        ),
        Err(e) => (Outcome::Error, Some(format!("{e:#}"))),
    }
}

/// A probed tree as `terminate_trees` wants it: descendants first, leader
/// last.
pub(super) fn tree_of(members: &[crate::probe::Member]) -> Vec<Identity> {
    members
        .iter()
        .rev()
        .map(|m| Identity {
            pid: m.stat.pid,
            start_ticks: m.stat.start_ticks,
        })
        .collect()
}
