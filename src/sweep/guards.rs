//! The guards a sweep checks around judging: Foreman's clocks (a suspend
//! or a wall-clock step since the last sweep restarts hang clocks) and its
//! own starvation (a late tick, or a wait for a CPU during the sweep).
//!
//! They return plain data: the hang floor the judge is given, and the
//! reasons decide defers hung verdicts for and the sweep's record states.

use super::judging::Judged;
use crate::activity::LastSweep;
use crate::config::Config;
use crate::decide::Decision;
use crate::model::Outcome;
use crate::probe::Clocks;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::{info, warn};

/// A wall-clock or boot-clock difference larger than this between two
/// sweeps is a suspend or a clock step, not drift.
const CLOCK_JUMP: Duration = Duration::from_secs(5);

/// Waiting longer than this for a CPU within one sweep is starvation: a
/// sweep needs milliseconds of CPU, and the fair scheduler gives a waking
/// task its turn within a few of them even on a host saturated by its own
/// droids.
const RUN_DELAY_STARVED: Duration = Duration::from_secs(1);

/// What the guards found, as the rest of the sweep needs it.
pub(super) struct Guards {
    /// A suspend or a clock step since the last sweep (this boot's).
    pub deferral: Option<String>,
    /// Where hang clocks restart: the last sweep's floor, or a new one.
    pub hang_floor: Option<DateTime<Utc>>,
    /// Why Foreman itself was starved, if it was.
    pub starved: Option<String>,
    /// This thread's wait for a CPU when the sweep started.
    run_delay_at_start: Option<Duration>,
}

impl Guards {
    /// The guards at the start of a sweep: a suspend or a wall-clock step
    /// restarts hang clocks now, and a late tick is starvation.
    pub(super) fn check(
        config: &Config,
        last: Option<&LastSweep>,
        boot_id: &str,
        clocks: &Clocks,
        now: DateTime<Utc>,
        lateness: Option<Duration>,
    ) -> Guards {
        let mut deferral = None;
        let mut hang_floor = last.and_then(|l| l.hang_floor);
        if let Some(last) = last.filter(|l| l.boot_id == boot_id) {
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
                    now,
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
        let starved = lateness.filter(|l| *l > config.interval / 2).map(|late| {
            format!(
                "this sweep started {} late (more than half the interval)",
                humantime::format_duration(Duration::from_millis(late.as_millis() as u64))
            )
        });
        Guards {
            deferral,
            hang_floor,
            starved,
            run_delay_at_start,
        }
    }

    /// Foreman's own starvation: it waited for a CPU during this sweep
    /// (measured after judging, before deciding).
    pub(super) fn measure_cpu_wait(&mut self) {
        if let (Some(a), Some(b)) = (self.run_delay_at_start, run_delay()) {
            let waited = b.saturating_sub(a);
            if waited > RUN_DELAY_STARVED && self.starved.is_none() {
                self.starved = Some(format!(
                    "Foreman waited {} for a CPU during this sweep",
                    humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
                ));
            }
        }
    }

    /// The sweep's deferral as its record states it. Deferral is said where
    /// operators look: the sweep's record (twin, /healthz, metrics read it)
    /// and one log line per sweep that defers.
    pub(super) fn said(&self, judged: &[Judged], decisions: &[Decision]) -> Option<String> {
        let deferred = decisions
            .iter()
            .filter(|d| d.outcome == Outcome::DeferredStarvation)
            .count();
        // Foreman's own starvation is a deferral only when it held a verdict
        // back; a late tick with nothing hung is a log line, not a deferral
        // (/healthz would otherwise call a healthy fleet deferred).
        let starved = &self.starved;
        let mut said: Vec<String> = self.deferral.iter().cloned().collect();
        if let Some(s) = starved.as_ref().filter(|_| deferred > 0) {
            said.push(s.clone());
        } else if let Some(s) = starved {
            info!(target: "foreman::sweep", reason = %s, "Foreman was starved this sweep; no hung verdict to defer");
        }
        if deferred > 0 {
            let trees = judged
                .iter()
                .zip(decisions)
                .filter(|(j, d)| {
                    d.outcome == Outcome::DeferredStarvation && j.judgement.starved.is_some()
                })
                .count();
            said.push(format!(
                "{deferred} hung verdicts deferred ({trees} of them because the task's own processes were runnable without CPU)"
            ));
            warn!(target: "foreman::sweep",
                deferred,
                starved_trees = trees,
                foreman_starved = starved.as_deref().unwrap_or(""),
                "hung verdicts deferred for starvation; each acts at the latest max_deferral past its timeout"
            );
        }
        (!said.is_empty()).then(|| said.join("; "))
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
