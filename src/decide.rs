//! From the sweep's verdicts to the actions Foreman will take: exit grace,
//! the mass-action brake, starvation deferral, shadow mode, and signalling
//! only what is safe to signal. Pure, like the judge: the rules that keep
//! healthy work alive are tested here without processes.

use crate::config::Policy;
use crate::judge::Judgement;
use crate::model::{Action, Kind, Mode, OnHung, Outcome, Task};
use chrono::{DateTime, Duration, Utc};

/// One verdict to decide on, with the policy of its droid type.
pub struct Case<'a> {
    pub task: &'a Task,
    pub judgement: &'a Judgement,
    pub policy: &'a Policy,
}

/// What holds for the whole sweep.
pub struct SweepFacts {
    pub now: DateTime<Utc>,
    /// Why hung verdicts must wait (Foreman starved, host suspended).
    pub starved: Option<String>,
    /// RUNNING tasks in the snapshot (for the brake's 20%).
    pub running: usize,
    /// `[defaults] max_actions_per_sweep`, if set.
    pub max_actions: Option<u32>,
    /// pids named by more than one RUNNING task: never signal them.
    pub shared_pids: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// `Pending` with an acting action means: act now.
    pub outcome: Outcome,
    /// Why the action is what it is, when not obvious.
    pub note: Option<String>,
}

impl Decision {
    pub fn should_act(&self) -> bool {
        self.action.acts() && self.outcome == Outcome::Pending
    }
}

/// The most actions one sweep may take: `max_actions_per_sweep`, else 10
/// or 20% of RUNNING tasks, whichever is larger.
pub fn limit(explicit: Option<u32>, running: usize) -> usize {
    explicit
        .map(|n| n as usize)
        .unwrap_or_else(|| 10usize.max(running.div_ceil(5)))
}

/// Decide every case of one sweep; `cases[i]` ↦ `result[i]`.
/// Alive cases get `Action::None` and are not recorded as findings.
pub fn decide(cases: &[Case], facts: &SweepFacts) -> Vec<Decision> {
    let mut out: Vec<Decision> = cases.iter().map(|c| decide_one(c, facts)).collect();

    // The brake: too many actions at once means something is wrong with the
    // view (a stalled heartbeat writer, a clock step, hidepid), not the fleet.
    let acting = |out: &[Decision], filter: &dyn Fn(usize) -> bool| {
        out.iter()
            .enumerate()
            .filter(|(i, d)| {
                filter(*i)
                    && d.action.acts()
                    && matches!(d.outcome, Outcome::Pending | Outcome::WouldMarkFailed)
            })
            .count()
    };
    let global = limit(facts.max_actions, facts.running);
    let total = acting(&out, &|_| true);
    let mut braked_types: Vec<(String, usize, usize)> = Vec::new();
    for c in cases {
        let t = &c.task.droid_type;
        if let Some(n) = c.policy.max_actions_per_sweep {
            if braked_types.iter().any(|(b, _, _)| b == t) {
                continue;
            }
            let count = acting(&out, &|i| cases[i].task.droid_type == *t);
            if count > n as usize {
                braked_types.push((t.clone(), count, n as usize));
            }
        }
    }
    for (i, d) in out.iter_mut().enumerate() {
        if !(d.action.acts() && matches!(d.outcome, Outcome::Pending | Outcome::WouldMarkFailed)) {
            continue;
        }
        if total > global {
            d.outcome = Outcome::Braked;
            d.note = Some(format!(
                "mass-action brake: this sweep would act on {total} tasks, more than the limit of {global}; acting on none"
            ));
        } else if let Some((t, count, n)) = braked_types
            .iter()
            .find(|(t, _, _)| *t == cases[i].task.droid_type)
        {
            d.outcome = Outcome::Braked;
            d.note = Some(format!(
                "mass-action brake: this sweep would act on {count} {t} tasks, more than its limit of {n}; acting on none"
            ));
        }
    }
    out
}

fn decide_one(c: &Case, facts: &SweepFacts) -> Decision {
    let j = c.judgement;
    let d = |action, outcome, note: Option<String>| Decision {
        action,
        outcome,
        note,
    };
    let mut decision = match j.kind {
        Kind::Alive => return d(Action::None, Outcome::Reported, None),
        Kind::Unverifiable => return d(Action::None, Outcome::Reported, None),
        // Strays are decided by the sweep (`strays`), never here.
        Kind::Stray => return d(Action::None, Outcome::Reported, None),
        Kind::Hung => {
            if let Some(why) = &facts.starved {
                return d(
                    Action::Deferred,
                    Outcome::DeferredStarvation,
                    Some(format!("hung verdict deferred: {why}")),
                );
            }
            let pid_shared = c.task.pid.is_some_and(|p| facts.shared_pids.contains(&p));
            match c.policy.on_hung {
                OnHung::MarkOnly => d(Action::MarkFailed, Outcome::Pending, None),
                OnHung::Terminate if j.pooled => d(
                    Action::MarkFailed,
                    Outcome::Pending,
                    Some("process started before the task (a pooled worker): marked only, never signalled".into()),
                ),
                OnHung::Terminate if pid_shared => d(
                    Action::MarkFailed,
                    Outcome::Pending,
                    Some("another RUNNING task names the same pid: marked only, never signalled".into()),
                ),
                OnHung::Terminate => d(Action::TerminateAndMark, Outcome::Pending, None),
            }
        }
        Kind::Dead | Kind::Zombie | Kind::PidReused | Kind::Orphan => {
            let grace = Duration::milliseconds(
                c.policy.exit_grace.as_millis().min(i64::MAX as u128) as i64,
            );
            let since = j.evidence.gone_since;
            let waited = since.is_some_and(|s| facts.now - s >= grace);
            if j.grace_exempt || waited {
                d(Action::MarkFailed, Outcome::Pending, None)
            } else {
                let since = since.unwrap_or(facts.now);
                d(
                    Action::Deferred,
                    Outcome::Pending,
                    Some(format!(
                        "exit grace: first seen gone at {}; acting after {} if the task is still RUNNING",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        (since + grace).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )),
                )
            }
        }
    };
    if decision.should_act() && c.policy.mode == Mode::Shadow {
        decision.outcome = Outcome::WouldMarkFailed;
    }
    decision
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
