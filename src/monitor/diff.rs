//! The pull side of the monitor, pure: what changed between the task as
//! last known and the task in this snapshot, and what a plan's tasks say
//! about its completion.

use super::event::{Event, EventType};
use crate::model::{Task, TaskState};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};

/// A task as the monitor last knew it.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub plan_id: Option<String>,
    pub droid_type: Option<String>,
    pub state: TaskState,
    pub attempt: i64,
    pub stalled: bool,
    /// In the last snapshot (or pushed since). A finished task that left
    /// the snapshot is kept with its plan but no longer current.
    pub current: bool,
    /// Moved on by a push recently enough (see `store::pull`'s `hold`)
    /// that a snapshot disagreeing with it may not have caught up yet.
    pub pushed_late: bool,
}

/// What one sweep changes.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Tasks to write, and whether their state or attempt changed.
    pub upserts: Vec<(String, Known, bool)>,
    /// Unfinished tasks that left the snapshot: the executor dropped them.
    pub gone: Vec<String>,
    /// Finished tasks that left the snapshot: kept, no longer current.
    pub retired: Vec<String>,
    pub events: Vec<Event>,
    /// Tasks hung now that were not at the last sweep.
    pub newly_stalled: usize,
    /// Plans whose tasks changed: their completion is looked at again.
    pub plans: BTreeSet<String>,
}

/// Diff the snapshot's `tasks` against `known` (every current task, plus
/// any other task of the snapshot the monitor still remembers). Rows that
/// could not be parsed (`unreadable`) are neither changed nor gone.
/// `hung` holds the tasks the judge found hung this sweep. On the
/// `baseline` sweep the state is taken and no event is emitted.
pub fn diff(
    known: &HashMap<String, Known>,
    tasks: &[&Task],
    unreadable: &HashSet<&str>,
    hung: &HashSet<&str>,
    now: DateTime<Utc>,
    baseline: bool,
) -> Diff {
    let mut d = Diff::default();
    let mut seen: HashSet<&str> = HashSet::with_capacity(tasks.len());
    for t in tasks {
        seen.insert(t.id.as_str());
        let before = known.get(&t.id);
        // Never back past a recent push the snapshot has not caught up with
        // (a later attempt, or this attempt finished; a retry is a higher
        // attempt, never the same one unfinished again): the row is left
        // as the push made it. Once the push is older than the hold, the
        // snapshot is the executor's word, so a wrong push cannot freeze a
        // task.
        let stale = before.is_some_and(|k| {
            k.pushed_late
                && (k.attempt > t.attempt
                    || (k.attempt == t.attempt && is_finished(k.state) && !is_finished(t.state)))
        });
        if stale {
            continue;
        }
        let (state, attempt) = (t.state, t.attempt);
        let stalled = state == TaskState::Running && hung.contains(t.id.as_str());
        let changed = before.is_none_or(|k| (k.state, k.attempt) != (state, attempt));
        if changed && !baseline {
            if let Some(kind) = EventType::entering(state, attempt) {
                let at = match state {
                    TaskState::Running => t.started_at,
                    _ => t.finished_at,
                };
                d.events.push(Event {
                    kind,
                    task_id: Some(t.id.clone()),
                    plan_id: t.plan_id.clone(),
                    droid_type: Some(t.droid_type.clone()),
                    attempt,
                    at: at.unwrap_or(now),
                });
            }
        }
        let was_stalled = before.is_some_and(|k| k.stalled && k.attempt == attempt);
        if stalled && !was_stalled {
            d.newly_stalled += 1;
        }
        let next = Known {
            plan_id: t.plan_id.clone(),
            droid_type: Some(t.droid_type.clone()),
            state,
            attempt,
            stalled,
            current: true,
            pushed_late: false,
        };
        let same = before.is_some_and(|k| {
            Known {
                pushed_late: false,
                ..k.clone()
            } == next
        });
        if !same {
            if changed || before.is_some_and(|k| k.plan_id != next.plan_id) {
                d.plans.extend(next.plan_id.clone());
                d.plans.extend(before.and_then(|k| k.plan_id.clone()));
            }
            d.upserts.push((t.id.clone(), next, changed));
        }
    }
    for (id, k) in known {
        if !k.current || seen.contains(id.as_str()) || unreadable.contains(id.as_str()) {
            continue;
        }
        if is_finished(k.state) {
            d.retired.push(id.clone());
        } else {
            d.gone.push(id.clone());
            d.plans.extend(k.plan_id.clone());
        }
    }
    d.retired.sort();
    d.gone.sort();
    d
}

/// A current task the snapshot shows exactly as the monitor knows it:
/// `diff` would do nothing with the pair (no event, no write, not gone,
/// not newly stalled), so the pull need not hold it.
pub fn unchanged(known: &Known, t: &Task, hung: &HashSet<&str>) -> bool {
    let stalled = t.state == TaskState::Running && hung.contains(t.id.as_str());
    known.current
        && known.state == t.state
        && known.attempt == t.attempt
        && known.stalled == stalled
        && known.plan_id == t.plan_id
        && known.droid_type.as_deref() == Some(t.droid_type.as_str())
}

pub fn is_finished(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Success | TaskState::Failed | TaskState::Skipped
    )
}

/// A plan's tasks, counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanFacts {
    pub tasks: usize,
    pub unfinished: usize,
}

/// What the monitor last recorded of a plan: whether it was complete, and
/// how many times it completed (the key of its PLAN_COMPLETED events).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PlanMark {
    pub completed: bool,
    pub generation: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlanStep {
    /// Every task finished: PLAN_COMPLETED with this generation.
    Complete(i64),
    /// A task is unfinished again (a retry, a task added): not complete.
    Reopen,
    Nothing,
}

pub fn plan_step(facts: PlanFacts, mark: PlanMark) -> PlanStep {
    let complete = facts.tasks > 0 && facts.unfinished == 0;
    match (complete, mark.completed) {
        (true, false) => PlanStep::Complete(mark.generation + 1),
        (false, true) => PlanStep::Reopen,
        _ => PlanStep::Nothing,
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
