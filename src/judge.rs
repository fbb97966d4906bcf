//! The verdict on one RUNNING task: a pure function of (task, probe, prior
//! observation, policy, facts) → verdict with evidence, and the observation
//! to remember for the next sweep. No I/O, no clock: `facts.now` is given.

use crate::config::Policy;
use crate::model::{Kind, Mode, OnHung, Signal, SweepKind, Task};
use crate::observation::{Binding, MemberCounters, Observation};
use crate::probe::{BootFacts, Probe};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// What holds for every task of one sweep.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    pub boot: &'a BootFacts,
    pub host: &'a str,
    pub sweep: SweepKind,
    /// After a suspend or a wall-clock step, hang clocks restart here.
    pub hang_floor: Option<DateTime<Utc>>,
    /// `future_tolerance`: a timestamp further ahead of `now` is implausible.
    pub future_tolerance: std::time::Duration,
    /// `kernel.pid_max`: a pid above it is a malformed row.
    pub pid_max: Option<i32>,
}

/// The inputs that led to a verdict, kept with the finding so it can be
/// explained and re-derived.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_start_ticks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_moved_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_moved_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_progress_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_progress_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub kind: Kind,
    pub evidence: Evidence,
    /// Exit grace does not apply (the task started before this boot, or
    /// never had a pid): there is no exit for the executor to record.
    pub grace_exempt: bool,
    /// The process started before the task (a pooled worker): never signal it.
    pub pooled: bool,
    /// The row has neither `started_at` nor `pid_start_ticks`: nothing
    /// proves the process is the task's, so it is never signalled.
    pub unproven: bool,
    /// Why a hung tree looks starved of CPU rather than stuck (runnable
    /// members that got no CPU); the hung verdict may then be deferred.
    pub starved: Option<String>,
    /// The observation to persist; `None` when there is no pid to key it.
    pub observation: Option<Observation>,
}

/// Everything `judge` was given for one task, kept with its finding so that
/// `foreman explain` can show it and judge again from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// The snapshot row as read.
    pub task: Task,
    pub probe: Option<Probe>,
    pub prior: Option<Observation>,
    pub policy: PolicyInputs,
    pub now: DateTime<Utc>,
    pub boot: BootFacts,
    pub host: String,
    pub sweep: SweepKind,
    pub hang_floor: Option<DateTime<Utc>>,
    /// `future_tolerance` in force, in ms (absent in inputs kept before it
    /// existed: the default then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_tolerance_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_max: Option<i32>,
    /// `Config::fingerprint` of the configuration in force.
    pub config_fingerprint: String,
    /// What the judge said then (the finding's kind, unless `continues`).
    pub verdict: Kind,
    /// The kind the finding kept from the open finding it continues, when
    /// that differs from this verdict (an orphan found at startup stays an
    /// orphan when a later sweep sees the task merely dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<Kind>,
}

/// The policy in force, as numbers (`process_match` plays no part in a
/// verdict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInputs {
    pub timeout_ms: u64,
    pub startup_grace_ms: u64,
    pub progress: Vec<Signal>,
    pub pid_start_tolerance_ms: u64,
    pub exit_grace_ms: u64,
    pub on_hung: OnHung,
    pub kill_grace_ms: u64,
    pub mode: Mode,
    /// `max_runtime`, in ms; absent (no limit) in inputs kept before the
    /// key existed, so old findings read and replay as they were judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_ms: Option<u64>,
}

impl PolicyInputs {
    pub fn of(p: &Policy) -> PolicyInputs {
        let ms = |d: std::time::Duration| d.as_millis().min(u64::MAX as u128) as u64;
        PolicyInputs {
            timeout_ms: ms(p.timeout),
            startup_grace_ms: ms(p.startup_grace),
            progress: p.progress.clone(),
            pid_start_tolerance_ms: ms(p.pid_start_tolerance),
            exit_grace_ms: ms(p.exit_grace),
            on_hung: p.on_hung,
            kill_grace_ms: ms(p.kill_grace),
            mode: p.mode,
            max_runtime_ms: p.max_runtime.map(ms),
        }
    }

    pub fn policy(&self) -> Policy {
        let d = std::time::Duration::from_millis;
        Policy {
            timeout: d(self.timeout_ms),
            startup_grace: d(self.startup_grace_ms),
            progress: self.progress.clone(),
            pid_start_tolerance: d(self.pid_start_tolerance_ms),
            process_match: None,
            exit_grace: d(self.exit_grace_ms),
            max_actions_per_sweep: None,
            mode: self.mode,
            on_hung: self.on_hung,
            on_stray: crate::model::OnStray::Report,
            kill_grace: d(self.kill_grace_ms),
            enabled: true,
            max_deferral: None,
            max_runtime: self.max_runtime_ms.map(d),
            max_actions_per_window: None,
        }
    }
}

impl Inputs {
    /// Judge again from the kept inputs.
    pub fn replay(&self) -> Judgement {
        let facts = Facts {
            now: self.now,
            boot: &self.boot,
            host: &self.host,
            sweep: self.sweep,
            hang_floor: self.hang_floor,
            future_tolerance: self
                .future_tolerance_ms
                .map_or(FUTURE_TOLERANCE, std::time::Duration::from_millis),
            pid_max: self.pid_max,
        };
        guarded(
            judge,
            &self.task,
            self.probe.as_ref(),
            self.prior.as_ref(),
            &self.policy.policy(),
            &facts,
        )
    }
}

fn ms(d: std::time::Duration) -> Duration {
    let ms = d.as_millis().min(i64::MAX as u128) as i64;
    Duration::try_milliseconds(ms).unwrap_or(Duration::MAX)
}

/// `t + d`, or `None` past the end of time: every addition in the judge
/// goes through here, so no timestamp can panic a sweep.
fn plus(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(d)
}

/// The default `future_tolerance`, for inputs kept before it existed.
pub const FUTURE_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Judge one task, turning a panic into an `unverifiable` verdict naming
/// it: one task's odd row may cost that task, never the sweep.
pub fn guarded(
    judge: crate::sweep::JudgeFn,
    task: &Task,
    probe: Option<&Probe>,
    prior: Option<&Observation>,
    policy: &Policy,
    facts: &Facts,
) -> Judgement {
    let run = std::panic::AssertUnwindSafe(|| judge(task, probe, prior, policy, facts));
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Judgement {
            kind: Kind::Unverifiable,
            evidence: Evidence {
                reason: format!("the judge panicked on this task ({what}); nothing was decided"),
                task_started_at: task.started_at,
                heartbeat_at: task.last_progress_at,
                boot_id: facts.boot.boot_id.clone(),
                ..Evidence::default()
            },
            grace_exempt: false,
            pooled: false,
            unproven: false,
            starved: None,
            observation: None,
        }
    })
}

/// Judge one RUNNING task.
pub fn judge(
    task: &Task,
    probe: Option<&Probe>,
    prior: Option<&Observation>,
    policy: &Policy,
    facts: &Facts,
) -> Judgement {
    let now = facts.now;
    let mut ev = Evidence {
        task_started_at: task.started_at,
        heartbeat_at: task.last_progress_at,
        boot_id: facts.boot.boot_id.clone(),
        ..Evidence::default()
    };
    let startup = facts.sweep == SweepKind::Startup;
    // At the startup scan everything gone is an orphan; the cause is kept.
    let gone = |kind: Kind, mut ev: Evidence| -> (Kind, Evidence) {
        if startup {
            ev.cause = Some(kind);
            (Kind::Orphan, ev)
        } else {
            (kind, ev)
        }
    };
    let verdict = |kind, evidence, grace_exempt, observation| Judgement {
        kind,
        evidence,
        grace_exempt,
        pooled: false,
        unproven: false,
        starved: None,
        observation,
    };

    if let Some(h) = task.host.as_deref() {
        if h != facts.host {
            ev.reason = format!("task runs on host {h:?}, not this host ({:?})", facts.host);
            return verdict(Kind::Unverifiable, ev, false, None);
        }
    }

    // Times from the future cannot be used: a started_at ahead of now
    // makes every age negative (and near chrono's end, arithmetic would
    // overflow); a heartbeat ahead of now would read as fresh forever.
    let tolerance = ms(facts.future_tolerance);
    let latest = plus(now, tolerance).unwrap_or(DateTime::<Utc>::MAX_UTC);
    if let Some(s) = task.started_at.filter(|s| *s > latest) {
        ev.reason = format!(
            "started_at {} is more than {} ahead of now ({}): the row's times cannot be used",
            fmt_time(Some(s)),
            humantime::format_duration(facts.future_tolerance),
            fmt_time(Some(now))
        );
        return verdict(Kind::Unverifiable, ev, false, None);
    }
    let future_heartbeat = task.last_progress_at.filter(|h| *h > latest);
    let heartbeat = task.last_progress_at.filter(|h| *h <= latest);

    let Some(pid) = task.pid else {
        let grace = ms(policy.startup_grace);
        return match task.started_at {
            Some(s) if startup && now - s > grace => {
                ev.reason = format!(
                    "no pid recorded {} after start, past startup_grace ({})",
                    human(now - s),
                    humantime::format_duration(policy.startup_grace)
                );
                verdict(Kind::Orphan, ev, true, None)
            }
            Some(_) => {
                ev.reason = "no pid recorded yet".into();
                verdict(Kind::Unverifiable, ev, false, None)
            }
            None => {
                ev.reason = "no pid and no started_at recorded".into();
                verdict(Kind::Unverifiable, ev, false, None)
            }
        };
    };
    // The kernel hands out pids below pid_max.
    if let Some(max) = facts.pid_max.filter(|max| pid >= *max) {
        ev.reason = format!(
            "malformed row: pid {pid} is not below kernel.pid_max ({max}); no process can have it"
        );
        return verdict(Kind::Unverifiable, ev, false, None);
    }
    // Start ticks that put the process's start after now name no process
    // that can exist: the row's identity cannot be used (taken as exact, they
    // would call the live task's own process a reused pid).
    if let Some(t) = task.pid_start_ticks {
        let start = facts.boot.checked_started_at(t);
        if start.is_none_or(|s| s > latest) {
            ev.reason = format!(
                "malformed row: pid_start_ticks {t} put the process's start at {}, after now ({}); no process can have them",
                start.map_or("beyond the end of time".into(), |s| fmt_time(Some(s))),
                fmt_time(Some(now))
            );
            return verdict(Kind::Unverifiable, ev, false, None);
        }
    }

    // A fresh observation, or the prior one carried forward.
    let prior = prior.filter(|p| p.task_id == task.id && p.attempt == task.attempt && p.pid == pid);
    let mut obs = prior.cloned().unwrap_or_else(|| Observation {
        task_id: task.id.clone(),
        attempt: task.attempt,
        pid,
        boot_id: facts.boot.boot_id.clone(),
        start_ticks: None,
        binding: None,
        first_seen_at: now,
        seen_at: now,
        members: Vec::new(),
        cpu_moved_at: None,
        io_moved_at: None,
        gone_since: None,
        pooled: false,
        unproven: false,
        heartbeat: None,
        heartbeat_moved_at: None,
    });
    obs.seen_at = now;
    let mark_gone = |obs: &mut Observation, ev: &mut Evidence| {
        let since = *obs.gone_since.get_or_insert(now);
        ev.gone_since = Some(since);
    };

    // Nothing that ran before this boot can be alive now. Once Foreman has
    // bound the process in this boot, that binding is the identity: the
    // wall-clock boot time moves with clock steps, the binding does not.
    let bound_this_boot = prior.is_some_and(|p| {
        p.boot_id == facts.boot.boot_id && p.start_ticks.is_some() && p.binding.is_some()
    });
    // The executor's start ticks matching the process exactly are the same
    // proof.
    let exact_ticks = task.pid_start_ticks.is_some()
        && probe.and_then(Probe::leader).map(|l| l.start_ticks) == task.pid_start_ticks;
    let pre_boot = !bound_this_boot
        && !exact_ticks
        && task.started_at.is_some_and(|s| s < facts.boot.boot_time);
    let other_boot = prior.is_some_and(|p| p.boot_id != facts.boot.boot_id);
    if pre_boot || other_boot {
        ev.reason = if other_boot {
            format!(
                "the process was bound at boot {}; the host has rebooted since",
                prior.map(|p| p.boot_id.as_str()).unwrap_or("?")
            )
        } else {
            format!(
                "task started at {}, before this boot at {}; whatever holds pid {pid} now is not its process (marked only, never signalled)",
                fmt_time(task.started_at),
                fmt_time(Some(facts.boot.boot_time))
            )
        };
        mark_gone(&mut obs, &mut ev);
        let (kind, ev) = gone(Kind::Dead, ev);
        return verdict(kind, ev, true, Some(obs));
    }

    let members = match probe {
        None | Some(Probe::Gone) => {
            ev.reason = format!(
                "process {pid} not found (exited) at {}",
                fmt_time(Some(now))
            );
            mark_gone(&mut obs, &mut ev);
            let (kind, ev) = gone(Kind::Dead, ev);
            return verdict(kind, ev, false, Some(obs));
        }
        Some(Probe::Unreadable(why)) => {
            ev.reason = format!("process {pid} cannot be read: {why}");
            return verdict(Kind::Unverifiable, ev, false, Some(obs));
        }
        Some(Probe::Found(m)) if m.is_empty() => {
            ev.reason = format!("process {pid} has no readable members");
            return verdict(Kind::Unverifiable, ev, false, Some(obs));
        }
        Some(Probe::Found(m)) => m,
    };
    let leader = members[0].stat;
    let proc_started = facts.boot.started_at(leader.start_ticks);
    ev.state = Some(leader.state.to_string());
    ev.start_ticks = Some(leader.start_ticks);
    ev.process_started_at = Some(proc_started);
    ev.members = Some(members.len());

    // Identity: the executor's start ticks, else the ones bound at first sight.
    let bound = match task.pid_start_ticks {
        Some(t) => Some((t, Binding::Executor)),
        None => obs.start_ticks.zip(obs.binding),
    };
    ev.bound_start_ticks = bound.map(|b| b.0);
    if let Some((ticks, how)) = bound {
        if ticks != leader.start_ticks {
            ev.reason = format!(
                "pid {pid} now belongs to another process: start ticks {} differ from the identity bound {} ({})",
                leader.start_ticks,
                ticks,
                match how {
                    Binding::Executor => "recorded by the executor",
                    Binding::FirstSight => "at first sight",
                }
            );
            mark_gone(&mut obs, &mut ev);
            let (kind, ev) = gone(Kind::PidReused, ev);
            return verdict(kind, ev, false, Some(obs));
        }
    }
    // The time rule binds: it runs once, before the identity is bound.
    // After that, identity is the boot id and the start ticks only, so a
    // wall-clock step (which moves the computed process start) or a
    // started_at rewritten later cannot turn the same process into a
    // reused pid.
    let tolerance = ms(policy.pid_start_tolerance);
    if let Some(s) = task.started_at.filter(|_| bound.is_none()) {
        let latest_start = plus(s, tolerance).unwrap_or(DateTime::<Utc>::MAX_UTC);
        if proc_started > latest_start {
            ev.reason = format!(
                "pid {pid} now belongs to another process: it started at {}, after the task started at {} (tolerance {})",
                fmt_time(Some(proc_started)),
                fmt_time(Some(s)),
                humantime::format_duration(policy.pid_start_tolerance)
            );
            mark_gone(&mut obs, &mut ev);
            let (kind, ev) = gone(Kind::PidReused, ev);
            return verdict(kind, ev, false, Some(obs));
        }
    }
    // Without started_at or pid_start_ticks nothing ties the process to the
    // task: whatever held the pid when Foreman first looked was bound. It
    // may be marked, never signalled, even if the row gains a started_at
    // later (that would only be checked against a process already bound);
    // the executor's exact start ticks are the one proof that lifts it.
    let unproven_now = task.started_at.is_none() && task.pid_start_ticks.is_none();
    // The process is the task's: bind it if not yet bound.
    if obs.start_ticks.is_none() || task.pid_start_ticks.is_some() {
        if obs.start_ticks.is_none() {
            obs.unproven = unproven_now;
        }
        obs.start_ticks = Some(leader.start_ticks);
        obs.binding = Some(if task.pid_start_ticks.is_some() {
            Binding::Executor
        } else {
            Binding::FirstSight
        });
    }
    let unproven = if exact_ticks {
        false
    } else {
        obs.unproven || unproven_now
    };
    obs.unproven = unproven;
    // Older than the task by more than the tolerance: a pooled worker. The
    // tolerance absorbs boot-time rounding and executors that record
    // `started_at` just after the fork. Once seen pooled, always: the
    // computed start moves with clock steps, and a forward one must not make
    // a pooled worker signallable.
    let pooled = obs.pooled
        || task
            .started_at
            .is_some_and(|s| plus(proc_started, tolerance).is_some_and(|p| p < s));
    obs.pooled = pooled;

    // A leader in state Z whose thread group still has threads (its main
    // thread called pthread_exit) is a working process, not a zombie.
    if leader.is_zombie() || matches!(leader.state, 'X' | 'x') {
        ev.reason = format!(
            "process {pid} exited but was not reaped (state {})",
            leader.state
        );
        mark_gone(&mut obs, &mut ev);
        let (kind, ev) = gone(Kind::Zombie, ev);
        return verdict(kind, ev, false, Some(obs));
    }
    // Alive: it is not gone, whatever an earlier probe saw.
    obs.gone_since = None;
    let alive = |kind, ev, obs, starved| Judgement {
        pooled,
        unproven,
        starved,
        ..verdict(kind, ev, false, Some(obs))
    };
    if matches!(leader.state, 'T' | 't') {
        ev.reason = format!(
            "process {pid} is stopped (state {}), e.g. under a debugger",
            leader.state
        );
        return alive(Kind::Unverifiable, ev, obs, None);
    }

    // Progress. A counter seen for the first time has no history: it counts
    // as moving now, so OS evidence is never used before Foreman has watched
    // it for a full timeout.
    let now_members: Vec<MemberCounters> = members.iter().map(|m| m.counters()).collect();
    let io_readable = now_members.iter().all(|m| m.io_bytes.is_some());
    let cpu_moved = prior.is_none()
        || now_members.iter().any(|m| {
            obs.member(m.pid, m.start_ticks)
                .is_none_or(|p| m.cpu_ticks > p.cpu_ticks)
        });
    let io_moved = prior.is_none()
        || now_members
            .iter()
            .any(|m| match (obs.member(m.pid, m.start_ticks), m.io_bytes) {
                (None, Some(_)) => true,
                (Some(p), Some(now_io)) => p.io_bytes.is_none_or(|pio| now_io > pio),
                (_, None) => false,
            });
    if cpu_moved || obs.cpu_moved_at.is_none() {
        obs.cpu_moved_at = Some(now);
    }
    if io_readable && (io_moved || obs.io_moved_at.is_none()) {
        obs.io_moved_at = Some(now);
    }
    obs.members = now_members;
    ev.cpu_moved_at = obs.cpu_moved_at;
    ev.io_moved_at = obs.io_moved_at.filter(|_| io_readable);
    // Runnable members whose CPU did not move are waiting for a CPU: the
    // tree was starved, not hung. Sleeping members (S, D, I) were not.
    let runnable = members.iter().filter(|m| m.stat.state == 'R').count();
    let starved = (runnable > 0 && !cpu_moved).then(|| {
        format!(
            "{runnable} of its {} processes are runnable (R) but got no CPU since the last sweep",
            members.len()
        )
    });

    // The heartbeat as a counter: when it last changed. A heartbeat ahead
    // of this clock beyond `future_tolerance` (a skewed executor clock, or
    // epoch milliseconds) is no time of progress, but its changing is.
    if prior.is_none() || obs.heartbeat != task.last_progress_at {
        obs.heartbeat_moved_at = Some(now);
    }
    obs.heartbeat = task.last_progress_at;
    let mut candidates: Vec<(DateTime<Utc>, &str)> = Vec::new();
    if policy.counts(Signal::Heartbeat) {
        if let Some(h) = heartbeat {
            candidates.push((h, "heartbeat"));
        } else if let Some(t) = obs
            .heartbeat_moved_at
            .filter(|_| future_heartbeat.is_some())
        {
            candidates.push((t, "heartbeat_moved"));
        }
    }
    if policy.counts(Signal::Cpu) {
        if let Some(t) = obs.cpu_moved_at {
            candidates.push((t, "cpu"));
        }
    }
    if policy.counts(Signal::Io) && io_readable {
        if let Some(t) = obs.io_moved_at {
            candidates.push((t, "io"));
        }
    }
    let no_signal_readable =
        !policy.counts(Signal::Heartbeat) && !policy.counts(Signal::Cpu) && !io_readable;
    if no_signal_readable {
        ev.reason = format!("no enabled progress signal is readable (/proc/{pid}/io unreadable)");
        return alive(Kind::Unverifiable, ev, obs, None);
    }
    let start = task.started_at.unwrap_or(obs.first_seen_at);
    candidates.push((
        plus(start, ms(policy.startup_grace)).unwrap_or(DateTime::<Utc>::MAX_UTC),
        "startup_grace",
    ));
    let latest_of = |c: &[(DateTime<Utc>, &'static str)]| {
        c.iter()
            .copied()
            .max_by_key(|(t, _)| *t)
            .unwrap_or((start, "started_at"))
    };
    if let Some(f) = facts.hang_floor {
        candidates.push((f, "clock_reset"));
    }
    let (last, signal) = latest_of(&candidates);
    let idle = now.signed_duration_since(last);
    let future_note = future_heartbeat
        .map(|h| {
            format!(
                "; heartbeat {} is more than {} ahead of now, implausible: not counted as progress, only its changing is",
                fmt_time(Some(h)),
                humantime::format_duration(facts.future_tolerance)
            )
        })
        .unwrap_or_default();
    ev.last_progress_at = Some(last);
    ev.last_progress_signal = Some(signal.to_string());
    ev.idle_ms = Some(idle.num_milliseconds().max(0));
    ev.timeout_ms = Some(ms(policy.timeout).num_milliseconds());
    if idle > ms(policy.timeout) {
        ev.reason = format!(
            "process {pid}: no progress for {} (last: {} at {}), past the timeout of {}{future_note}",
            human(idle),
            signal,
            fmt_time(Some(last)),
            humantime::format_duration(policy.timeout)
        );
        return alive(Kind::Hung, ev, obs, starved);
    }
    // Past max_runtime, progress or not. Hung wins when both hold: it is
    // the narrower diagnosis (the task stopped, not merely ran long), its
    // finding key is the one earlier sweeps may already have recorded for
    // this attempt, and both are terminated and marked alike. (A hang
    // deferred for starvation holds the timeout back with it, at most
    // max_deferral.)
    if let Some((start, ran)) = past_max_runtime(task, proc_started, policy, now) {
        let limit = policy.max_runtime.unwrap_or_default();
        ev.reason = format!(
            "process {pid}: running for {} (since {}), past max_runtime of {}; last progress {} ago ({signal}){future_note}",
            human(ran),
            fmt_time(Some(start)),
            humantime::format_duration(limit),
            human(idle.max(Duration::zero()))
        );
        return alive(Kind::TimedOut, ev, obs, None);
    }
    ev.reason = format!(
        "process {pid} alive; last progress {} ago ({signal}){future_note}",
        human(idle.max(Duration::zero()))
    );
    alive(Kind::Alive, ev, obs, None)
}

/// When the task started and how long it has run, if that is longer than
/// the policy's `max_runtime`. The start is `started_at`, else the bound
/// process's start. Checked arithmetic throughout: a start near the end
/// of time never times out, and a start after `now` (a clock step within
/// `future_tolerance`) has not run yet. Exactly at the limit is not past it.
fn past_max_runtime(
    task: &Task,
    proc_started: DateTime<Utc>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, Duration)> {
    let limit = policy.max_runtime?;
    let start = task.started_at.unwrap_or(proc_started);
    let deadline = plus(start, ms(limit))?;
    (now > deadline).then(|| (start, now.signed_duration_since(start)))
}

/// How young a heartbeat must be for a held task to need no `/proc` read:
/// `interval`, at most half the timeout. A task that stops at any moment is
/// read again within an interval or two of its last beat, so its counters
/// (which moved while it worked) then start their own clock: the hang
/// verdict comes at most about one interval later than with a read every
/// sweep, and never earlier.
pub fn lazy_window(policy: &Policy, interval: std::time::Duration) -> std::time::Duration {
    interval.min(policy.timeout / 2)
}

/// Whether a task whose process Foreman holds by pidfd (alive, and the
/// process bound in this boot) needs no `/proc` read this sweep: its type
/// counts the heartbeat, the heartbeat is plausible and younger than
/// `lazy_window`, and nothing in the row would make the judge say other
/// than alive (another host, a pid at or past pid_max, times from the
/// future). For such a task the judge, given the probe, says `Alive`
/// (`properties_tests` holds it to that), so the read is skipped.
pub fn fresh(task: &Task, policy: &Policy, facts: &Facts, interval: std::time::Duration) -> bool {
    let now = facts.now;
    let Some(latest) = plus(now, ms(facts.future_tolerance)) else {
        return false;
    };
    let plausible = |t: Option<DateTime<Utc>>| t.is_none_or(|t| t <= latest);
    let Some(pid) = task.pid else {
        return false;
    };
    let Some(beat) = task.last_progress_at.filter(|h| *h <= latest) else {
        return false;
    };
    policy.counts(Signal::Heartbeat)
        && task.host.as_deref().is_none_or(|h| h == facts.host)
        && facts.pid_max.is_none_or(|max| pid < max)
        && plausible(task.started_at)
        && task.pid_start_ticks.is_none_or(|t| {
            plausible(Some(
                facts
                    .boot
                    .checked_started_at(t)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            ))
        })
        && now.signed_duration_since(beat) <= ms(lazy_window(policy, interval))
        // A young heartbeat says nothing about run time: with max_runtime
        // set, only a task whose started_at puts it within the limit skips
        // the read (without started_at the limit runs from the process's
        // start, which only /proc knows).
        && policy.max_runtime.is_none_or(|m| {
            task.started_at
                .and_then(|s| plus(s, ms(m)))
                .is_some_and(|deadline| now <= deadline)
        })
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "?".into())
}

fn human(d: Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
