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
    /// This host's RUNNING tasks in the snapshot (for the brake's 20%):
    /// other hosts' rows are not Foreman's to act on, so they must not
    /// raise the limit.
    pub running: usize,
    /// `[defaults] max_actions_per_sweep`, if set.
    pub max_actions: Option<u32>,
    /// pids named by more than one RUNNING task: never signal them.
    pub shared_pids: Vec<i32>,
    /// Actions already taken within the rolling window before this sweep.
    pub recent_actions: usize,
    /// `[defaults] max_actions_per_window`, if set.
    pub window_limit: Option<u32>,
    /// The rolling window (`[defaults] timeout`), for the note.
    pub window: std::time::Duration,
    /// Actions this sweep takes besides the cases (strays to terminate):
    /// one brake holds for everything the sweep would do.
    pub extra_actions: usize,
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

/// The most actions within one rolling window: `max_actions_per_window`,
/// else twice the per-sweep limit. A steady trickle under the per-sweep
/// limit (a stalled heartbeat writer failing a few tasks each sweep) is
/// the same fault as a burst, only slower.
pub fn window_limit(explicit: Option<u32>, per_sweep: usize) -> usize {
    explicit
        .map(|n| n as usize)
        .unwrap_or_else(|| per_sweep.saturating_mul(2))
}

/// Why the whole sweep is braked when it would take `acting` actions
/// (tasks and strays together), or `None`.
pub fn brake(acting: usize, facts: &SweepFacts) -> Option<String> {
    let per_sweep = limit(facts.max_actions, facts.running);
    let per_window = window_limit(facts.window_limit, per_sweep);
    if acting > per_sweep {
        Some(format!(
            "mass-action brake: this sweep would act on {acting} {}, more than the limit of {per_sweep}; acting on none",
            if facts.extra_actions > 0 { "tasks and strays" } else { "tasks" }
        ))
    } else if acting > 0 && facts.recent_actions + acting > per_window {
        Some(format!(
            "mass-action brake: {} actions were taken in the last {} and this sweep would add {acting}, more than the limit of {per_window} per window; acting on none",
            facts.recent_actions,
            humantime::format_duration(facts.window)
        ))
    } else {
        None
    }
}

/// Decide every case of one sweep; `cases[i]` ↦ `result[i]`.
/// Alive cases get `Action::None` and are not recorded as findings.
pub fn decide(cases: &[Case], facts: &SweepFacts) -> Vec<Decision> {
    decide_sweep(cases, facts).0
}

/// `decide`, and the whole-sweep brake's note when it held (the sweep then
/// acts on nothing, strays included).
pub fn decide_sweep(cases: &[Case], facts: &SweepFacts) -> (Vec<Decision>, Option<String>) {
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
    // What this sweep really does brakes what it does; a shadow droid
    // type's would-be actions recur every sweep (nothing settles them), so
    // they must not hold enforce types' hands. They are braked as if every
    // type enforced, to show what enforcing would do.
    let real = out
        .iter()
        .filter(|d| d.action.acts() && d.outcome == Outcome::Pending)
        .count();
    let global = brake(real + facts.extra_actions, facts);
    let as_if_enforced = brake(acting(&out, &|_| true) + facts.extra_actions, facts);
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
        let sweep_brake = match d.outcome {
            Outcome::WouldMarkFailed => &as_if_enforced,
            _ => &global,
        };
        if let Some(note) = sweep_brake {
            d.outcome = Outcome::Braked;
            d.note = Some(note.clone());
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
    (out, global)
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
        // Another host's task, its host lost: nothing here to signal or to
        // wait for (the silence was the grace), only the row to mark.
        Kind::HostLost => d(Action::MarkFailed, Outcome::Pending, None),
        Kind::Hung => {
            // Starved (Foreman itself, or this tree's runnable members got
            // no CPU): wait, but not forever. How long the hang is overdue
            // bounds it, so a host busy for hours still gets its hangs
            // handled after `max_deferral`.
            let why = facts.starved.as_deref().or(j.starved.as_deref());
            let mut waited = None;
            if let Some(why) = why {
                let overdue = j
                    .evidence
                    .idle_ms
                    .zip(j.evidence.timeout_ms)
                    .map_or(0, |(idle, timeout)| idle.saturating_sub(timeout).max(0));
                let overdue = std::time::Duration::from_millis(overdue as u64);
                let max = c.policy.max_deferral();
                let fmt = |d: std::time::Duration| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                };
                if overdue <= max {
                    return d(
                        Action::Deferred,
                        Outcome::DeferredStarvation,
                        Some(format!(
                            "hung verdict deferred: {why}; overdue {} of at most {} (max_deferral)",
                            fmt(overdue),
                            fmt(max)
                        )),
                    );
                }
                waited = Some(format!(
                    "waited {} past the timeout, longer than max_deferral ({}), while {why}",
                    fmt(overdue),
                    fmt(max)
                ));
            }
            terminate_or_mark(c, facts, waited)
        }
        // Past max_runtime: wall-clock time, so starvation defers nothing
        // (a starved task is not running any shorter); otherwise exactly
        // the hung rules, on_hung included.
        Kind::TimedOut => terminate_or_mark(c, facts, None),
        Kind::Dead | Kind::Zombie | Kind::PidReused | Kind::Orphan => {
            let grace = Duration::try_milliseconds(
                c.policy.exit_grace.as_millis().min(i64::MAX as u128) as i64,
            )
            .unwrap_or(Duration::MAX);
            let since = j.evidence.gone_since;
            let waited = since.is_some_and(|s| facts.now.signed_duration_since(s) >= grace);
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
                        since
                            .checked_add_signed(grace)
                            .map_or("the end of time".into(), |t| t
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
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

/// A live task to stop (hung or timed out): terminate its tree and mark it,
/// unless `on_hung` says mark only, or the process may not be signalled
/// (unproven identity, a pooled worker, a pid two tasks name): then marked
/// only. `waited` says why a deferral ended, for the note.
fn terminate_or_mark(c: &Case, facts: &SweepFacts, waited: Option<String>) -> Decision {
    let j = c.judgement;
    let d = |action, note| Decision {
        action,
        outcome: Outcome::Pending,
        note,
    };
    let pid_shared = c.task.pid.is_some_and(|p| facts.shared_pids.contains(&p));
    let never = if j.unproven {
        Some("no started_at or pid_start_ticks: nothing proves the process is the task's (it was already running when Foreman first saw the row)")
    } else if j.pooled {
        Some("process started before the task (a pooled worker)")
    } else if pid_shared {
        Some("another RUNNING task names the same pid")
    } else {
        None
    };
    let join = |a: Option<String>, b: Option<String>| match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    match (c.policy.on_hung, never) {
        (OnHung::MarkOnly, _) => d(Action::MarkFailed, waited),
        (OnHung::Terminate, Some(why)) => d(
            Action::MarkFailed,
            join(Some(format!("{why}: marked only, never signalled")), waited),
        ),
        (OnHung::Terminate, None) => d(Action::TerminateAndMark, waited),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
