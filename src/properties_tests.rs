//! Property tests over the pure core: the row and timestamp parsers, the
//! judge and decide, with arbitrary rows, probes, priors, policies and
//! clocks. Nothing may panic, and every verdict keeps its promises.

#![allow(clippy::type_complexity)]

use crate::config::{ExecutorTz, Policy};
use crate::decide::{decide_sweep, limit, window_limit, Case, SweepFacts};
use crate::executor::{parse_row, parse_time};
use crate::judge::{judge, Facts, Judgement};
use crate::model::{
    Action, Kind, Mode, OnHung, OnStray, Outcome, Row, Signal, SweepKind, Task, TaskState,
};
use crate::observation::{Binding, MemberCounters, Observation};
use crate::probe::{BootFacts, Member, Probe, Stat};
use chrono::{DateTime, Datelike, Duration, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------ strategies

/// Any instant chrono can hold, weighted towards the plausible.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        3 => (1_700_000_000i64..1_900_000_000).prop_map(|s| s),
        1 => min..=max,
        1 => Just(max),
        1 => Just(min),
    ]
    .prop_map(|s| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

/// A plausible "now" (the clock Foreman reads).
fn now() -> impl Strategy<Value = DateTime<Utc>> {
    (1_700_000_000i64..1_900_000_000)
        .prop_map(|s| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

fn any_duration() -> impl Strategy<Value = std::time::Duration> {
    prop_oneof![
        4 => (0u64..100_000_000).prop_map(std::time::Duration::from_millis),
        1 => any::<u64>().prop_map(std::time::Duration::from_millis),
        1 => Just(std::time::Duration::MAX),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        any_duration(),
        any_duration(),
        proptest::sample::subsequence(vec![Signal::Heartbeat, Signal::Cpu, Signal::Io], 0..=3),
        any_duration(),
        any_duration(),
        prop::option::of(any_duration()),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(any_duration()),
    )
        .prop_map(
            |(
                timeout,
                startup_grace,
                progress,
                tol,
                exit_grace,
                max_deferral,
                shadow,
                mark_only,
                max_runtime,
            )| Policy {
                timeout,
                startup_grace,
                progress,
                pid_start_tolerance: tol,
                process_match: None,
                exit_grace,
                max_actions_per_sweep: None,
                mode: if shadow { Mode::Shadow } else { Mode::Enforce },
                on_hung: if mark_only {
                    OnHung::MarkOnly
                } else {
                    OnHung::Terminate
                },
                on_stray: OnStray::Report,
                kill_grace: std::time::Duration::from_secs(1),
                enabled: true,
                max_deferral,
                max_runtime,
                max_actions_per_window: None,
            },
        )
}

const PID: i32 = 4242;

fn task() -> impl Strategy<Value = Task> {
    (
        prop_oneof![3 => Just(Some(PID)), 1 => (2i32..=i32::MAX).prop_map(Some), 1 => Just(None)],
        prop::option::of(any_time()),
        prop::option::of(any_time()),
        prop::option::of(any::<u64>()),
        prop_oneof![3 => Just(None), 1 => Just(Some("here".to_string())), 1 => Just(Some("elsewhere".to_string()))],
    )
        .prop_map(|(pid, started_at, last_progress_at, pid_start_ticks, host)| Task {
            id: "t1".into(),
            plan_id: None,
            droid_type: "coder".into(),
            state: TaskState::Running,
            pid,
            host,
            attempt: 1,
            started_at,
            last_progress_at,
            finished_at: None,
            error: None,
            pid_start_ticks,
            created_at: None,
        })
}

fn member() -> impl Strategy<Value = Member> {
    (
        prop_oneof![Just(PID), 2i32..100_000],
        prop::sample::select(vec!['R', 'S', 'D', 'Z', 'T', 't', 'X', 'I']),
        any::<u64>(),
        prop_oneof![3 => 0u64..10_000_000, 1 => any::<u64>()],
        prop::option::of(any::<u64>()),
        0u32..8,
    )
        .prop_map(|(pid, state, cpu, start, io, threads)| Member {
            stat: Stat {
                pid,
                state,
                ppid: 1,
                pgrp: pid,
                cpu_ticks: cpu,
                start_ticks: start,
                threads,
            },
            io_bytes: io,
        })
}

fn probe() -> impl Strategy<Value = Option<Probe>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Probe::Gone)),
        1 => Just(Some(Probe::Unreadable("EACCES".into()))),
        4 => prop::collection::vec(member(), 0..4).prop_map(|m| Some(Probe::Found(m))),
    ]
}

fn prior() -> impl Strategy<Value = Option<Observation>> {
    prop::option::of(
        (
            prop::option::of(prop_oneof![0u64..10_000_000, any::<u64>()]),
            any::<bool>(),
            any_time(),
            prop::option::of(any_time()),
            prop::option::of(any_time()),
            prop::option::of(any_time()),
            prop::collection::vec(
                (
                    2i32..100_000,
                    any::<u64>(),
                    any::<u64>(),
                    prop::option::of(any::<u64>()),
                ),
                0..3,
            ),
            any::<bool>(),
        )
            .prop_map(
                |(ticks, executor, first_seen_at, cpu, io, gone, members, same_boot)| Observation {
                    task_id: "t1".into(),
                    attempt: 1,
                    pid: PID,
                    boot_id: if same_boot {
                        "boot-a".into()
                    } else {
                        "boot-b".into()
                    },
                    start_ticks: ticks,
                    binding: ticks.map(|_| {
                        if executor {
                            Binding::Executor
                        } else {
                            Binding::FirstSight
                        }
                    }),
                    first_seen_at,
                    seen_at: first_seen_at,
                    members: members
                        .into_iter()
                        .map(|(pid, start_ticks, cpu_ticks, io_bytes)| MemberCounters {
                            pid,
                            start_ticks,
                            cpu_ticks,
                            io_bytes,
                        })
                        .collect(),
                    cpu_moved_at: cpu,
                    io_moved_at: io,
                    gone_since: gone,
                    pooled: false,
                    unproven: false,
                    heartbeat: None,
                    heartbeat_moved_at: None,
                },
            ),
    )
}

fn boot() -> impl Strategy<Value = BootFacts> {
    (
        any_time(),
        0u64..2000,
        prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
    )
        .prop_map(|(boot_time, clk_tck, ticks_at_boot)| BootFacts {
            boot_id: "boot-a".into(),
            boot_time,
            clk_tck,
            ticks_at_boot,
        })
}

fn facts_parts() -> impl Strategy<
    Value = (
        DateTime<Utc>,
        BootFacts,
        bool,
        Option<DateTime<Utc>>,
        std::time::Duration,
        Option<i32>,
    ),
> {
    (
        now(),
        boot(),
        any::<bool>(),
        prop::option::of(any_time()),
        any_duration(),
        prop::option::of(2i32..=i32::MAX),
    )
}

fn to_ms(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

// ------------------------------------------------------------ the parsers

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?".prop_map(Value::String),
        Just(json!("RUNNING")),
        Just(json!(8_210_266_876_795u64)),
        Just(json!(-1)),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// No row panics the parser; a row that parses holds only usable values.
    #[test]
    fn rows_parse_or_say_why(
        fields in prop::collection::vec(
            (prop::sample::select(vec!["id", "droid_type", "state", "pid", "attempt", "started_at",
                "last_progress_at", "finished_at", "pid_start_ticks", "host", "created_at", "plan_id", "error"]),
             json_value()),
            0..14),
        local in any::<bool>(),
    ) {
        let mut row = Map::new();
        for (k, v) in fields {
            row.insert(k.to_string(), v);
        }
        let tz = if local { ExecutorTz::Local } else { ExecutorTz::Utc };
        match parse_row(&row, tz) {
            Row::Task(t) => {
                prop_assert!(t.pid.is_none_or(|p| p > 1));
                for time in [t.started_at, t.last_progress_at, t.finished_at, t.created_at].into_iter().flatten() {
                    prop_assert!((1970..=9999).contains(&time.year()), "{time}");
                }
            }
            Row::Bad(b) => {
                prop_assert!(!b.reason.is_empty());
                prop_assert!(b.pid.is_none_or(|p| p > 1));
            }
        }
    }

    /// Any text or number: a time in 1970..=9999, or none.
    #[test]
    fn timestamps_parse_in_range_or_not_at_all(v in json_value(), local in any::<bool>()) {
        let tz = if local { ExecutorTz::Local } else { ExecutorTz::Utc };
        if let Some(t) = parse_time(&v, tz) {
            prop_assert!((1970..=9999).contains(&t.year()), "{t}");
        }
    }
}

// ------------------------------------------------------------ the judge

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_judge_never_panics_and_keeps_its_promises(
        task in task(),
        probe in probe(),
        prior in prior(),
        policy in policy(),
        (now, boot, startup, hang_floor, future_tolerance, pid_max) in facts_parts(),
    ) {
        let facts = Facts {
            now,
            boot: &boot,
            host: "here",
            sweep: if startup { SweepKind::Startup } else { SweepKind::Scheduled },
            hang_floor,
            future_tolerance,
            pid_max,
        };
        let j = judge(&task, probe.as_ref(), prior.as_ref(), &policy, &facts);
        check_judgement(&task, probe.as_ref(), prior.as_ref(), &policy, &facts, &j)?;
    }
}

fn check_judgement(
    task: &Task,
    probe: Option<&Probe>,
    prior: Option<&Observation>,
    policy: &Policy,
    facts: &Facts,
    j: &Judgement,
) -> Result<(), TestCaseError> {
    // Another host's task is never this host's to judge.
    if task.host.as_deref().is_some_and(|h| h != facts.host) {
        prop_assert_eq!(j.kind, Kind::Unverifiable);
    }
    if j.kind == Kind::Hung {
        let idle = j.evidence.idle_ms.unwrap_or(0);
        let timeout = j.evidence.timeout_ms.unwrap_or(0);
        prop_assert!(
            idle > timeout,
            "hung with idle {idle} ms ≤ timeout {timeout} ms"
        );
        // OS evidence is never used before Foreman has watched it for a
        // whole timeout: at first sight CPU counts as moving now.
        let fresh_prior = prior.filter(|p| {
            p.task_id == task.id && p.attempt == task.attempt && Some(p.pid) == task.pid
        });
        if policy.counts(Signal::Cpu) {
            prop_assert!(fresh_prior.is_some(), "hung on CPU evidence at first sight");
            let moved = j.observation.as_ref().and_then(|o| o.cpu_moved_at);
            prop_assert!(
                moved.is_some_and(|m| facts.now.signed_duration_since(m).num_milliseconds()
                    > to_ms(policy.timeout)),
                "hung while CPU moved within the timeout ({moved:?})"
            );
        }
        // A stopped or gone process is never hung.
        let leader = probe.and_then(Probe::leader);
        prop_assert!(leader.is_some_and(|l| !matches!(l.state, 'T' | 't')));
    }
    if j.kind == Kind::TimedOut {
        // Only with a limit, only an alive process (never stopped, gone or
        // a zombie: those verdicts win), only when not hung (hung wins),
        // and only strictly past the limit from the start it names.
        let limit = policy.max_runtime;
        prop_assert!(limit.is_some(), "timed_out without max_runtime");
        let leader = probe.and_then(Probe::leader);
        prop_assert!(
            leader.is_some_and(|l| !l.is_zombie() && !matches!(l.state, 'T' | 't' | 'X' | 'x')),
            "timed_out without a live leader"
        );
        let idle = j.evidence.idle_ms.unwrap_or(0);
        let timeout = j.evidence.timeout_ms.unwrap_or(0);
        prop_assert!(idle <= timeout, "timed_out while hung (hung wins)");
        let start = task.started_at.or(j.evidence.process_started_at);
        let ran = start.map(|s| facts.now.signed_duration_since(s).num_milliseconds());
        prop_assert!(
            ran.zip(limit).is_some_and(|(ran, l)| ran > to_ms(l)),
            "timed_out after running {ran:?} ms, within {limit:?}"
        );
        if task.started_at.is_none() && task.pid_start_ticks.is_none() {
            prop_assert!(j.unproven);
        }
    }
    // A gone process's exit grace counts from when it was first seen gone
    // (a row without a pid has no process, and no grace).
    if j.kind.is_gone() {
        prop_assert!(j.evidence.gone_since.is_some() || (task.pid.is_none() && j.grace_exempt));
    }
    // The executor's ticks matching the live leader are identity: never a reused pid.
    if let (Some(ticks), Some(l)) = (task.pid_start_ticks, probe.and_then(Probe::leader)) {
        if ticks == l.start_ticks && j.kind == Kind::PidReused {
            prop_assert!(false, "pid_reused although the executor's ticks match");
        }
    }
    // Without started_at and ticks, identity is never proven.
    if task.started_at.is_none() && task.pid_start_ticks.is_none() && j.kind == Kind::Hung {
        prop_assert!(j.unproven);
    }
    Ok(())
}

// ------------------------------------------------------------ decide

fn judgement() -> impl Strategy<
    Value = (
        Kind,
        bool,
        bool,
        bool,
        Option<i64>,
        Option<i64>,
        Option<DateTime<Utc>>,
        bool,
    ),
> {
    (
        prop::sample::select(vec![
            Kind::Alive,
            Kind::Dead,
            Kind::Zombie,
            Kind::PidReused,
            Kind::Hung,
            Kind::TimedOut,
            Kind::Orphan,
            Kind::Unverifiable,
            Kind::Stray,
        ]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
        prop::option::of(any_time()),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decide_never_panics_never_signals_without_identity_and_keeps_the_brakes(
        items in prop::collection::vec((judgement(), policy(), prop::option::of(2i32..20)), 0..30),
        now in now(),
        starved in any::<bool>(),
        running in 0usize..200,
        max_actions in prop::option::of(0u32..40),
        recent in 0usize..100,
        window_max in prop::option::of(1u32..60),
        extra in 0usize..20,
        shared in prop::collection::vec(2i32..20, 0..3),
    ) {
        let tasks: Vec<Task> = items.iter().enumerate().map(|(i, (_, _, pid))| Task {
            id: format!("t{i}"),
            plan_id: None,
            droid_type: "coder".into(),
            state: TaskState::Running,
            pid: *pid,
            host: None,
            attempt: 1,
            started_at: None,
            last_progress_at: None,
            finished_at: None,
            error: None,
            pid_start_ticks: None,
            created_at: None,
        }).collect();
        let judgements: Vec<Judgement> = items.iter().map(|((kind, exempt, pooled, unproven, idle, timeout, gone, tree_starved), _, _)| Judgement {
            kind: *kind,
            evidence: crate::judge::Evidence {
                idle_ms: *idle,
                timeout_ms: *timeout,
                gone_since: *gone,
                ..Default::default()
            },
            grace_exempt: *exempt,
            pooled: *pooled,
            unproven: *unproven,
            starved: tree_starved.then(|| "runnable".into()),
            observation: None,
        }).collect();
        let cases: Vec<Case> = items.iter().enumerate().map(|(i, (_, p, _))| Case {
            task: &tasks[i],
            judgement: &judgements[i],
            policy: p,
        }).collect();
        let facts = SweepFacts {
            now,
            starved: starved.then(|| "late".into()),
            running,
            max_actions,
            shared_pids: shared.clone(),
            recent_actions: recent,
            window_limit: window_max,
            window: std::time::Duration::from_secs(1800),
            extra_actions: extra,
        };
        let (ds, brake) = decide_sweep(&cases, &facts);
        prop_assert_eq!(ds.len(), cases.len());
        let mut acting = 0;
        for (i, d) in ds.iter().enumerate() {
            let j = &judgements[i];
            let p = cases[i].policy;
            if d.action == Action::TerminateAndMark {
                prop_assert!(matches!(j.kind, Kind::Hung | Kind::TimedOut), "{:?} signalled", j.kind);
                prop_assert!(!j.unproven && !j.pooled, "signal without proven identity");
                prop_assert!(tasks[i].pid.is_none_or(|pid| !shared.contains(&pid)), "signal to a shared pid");
                prop_assert_eq!(p.on_hung, OnHung::Terminate);
            }
            if d.action.acts() {
                prop_assert!(j.kind != Kind::Alive && j.kind != Kind::Unverifiable && j.kind != Kind::Stray);
            }
            if d.outcome == Outcome::DeferredStarvation {
                prop_assert!(starved || j.starved.is_some());
            }
            if d.should_act() {
                prop_assert!(p.mode == Mode::Enforce, "shadow mode acts");
                acting += 1;
            }
            if matches!(d.outcome, Outcome::Pending | Outcome::WouldMarkFailed) && d.action.acts() && brake.is_some() {
                prop_assert!(false, "the sweep is braked but case {i} still acts");
            }
        }
        // The brakes hold: never more than the per-sweep or window limit.
        let per_sweep = limit(max_actions, running);
        if acting > 0 {
            prop_assert!(acting + extra <= per_sweep, "{acting} + {extra} actions over the limit of {per_sweep}");
            prop_assert!(recent + acting + extra <= window_limit(window_max, per_sweep));
        }
        let _ = Duration::zero();
    }
}

proptest! {
    #![proptest_config(config())]

    /// Once bound in this boot, the same live process is never called
    /// reused or dead, whatever the wall clock (and so btime) did since,
    /// and whatever started_at the row says now.
    #[test]
    fn a_bound_process_stays_the_tasks_through_any_clock_step(
        ticks in 0u64..10_000_000,
        boot in boot(),
        now in now(),
        started_at in prop::option::of(any_time()),
        policy in policy(),
    ) {
        let task = Task {
            id: "t1".into(),
            plan_id: None,
            droid_type: "coder".into(),
            state: TaskState::Running,
            pid: Some(PID),
            host: None,
            attempt: 1,
            started_at: started_at.filter(|s| *s <= now),
            last_progress_at: None,
            finished_at: None,
            error: None,
            pid_start_ticks: None,
            created_at: None,
        };
        let leader = Member {
            stat: Stat { pid: PID, state: 'S', ppid: 1, pgrp: PID, cpu_ticks: 5, start_ticks: ticks, threads: 1 },
            io_bytes: Some(1),
        };
        let prior = Observation {
            task_id: "t1".into(),
            attempt: 1,
            pid: PID,
            boot_id: boot.boot_id.clone(),
            start_ticks: Some(ticks),
            binding: Some(Binding::FirstSight),
            first_seen_at: now,
            seen_at: now,
            members: vec![leader.counters()],
            cpu_moved_at: Some(now),
            io_moved_at: Some(now),
            gone_since: None,
            pooled: false,
            unproven: false,
            heartbeat: None,
            heartbeat_moved_at: None,
        };
        let facts = Facts {
            now,
            boot: &boot,
            host: "here",
            sweep: SweepKind::Scheduled,
            hang_floor: None,
            future_tolerance: std::time::Duration::from_secs(300),
            pid_max: None,
        };
        let j = judge(&task, Some(&Probe::Found(vec![leader])), Some(&prior), &policy, &facts);
        prop_assert!(!j.kind.is_gone(), "{:?}: {}", j.kind, j.evidence.reason);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { max_global_rejects: 20_000, ..config() })]

    /// The lazy path's promise: a task `fresh` lets skip (its process held
    /// by pidfd: alive, the identity bound in this boot) is one the judge,
    /// had it read `/proc`, would call alive, whatever the row, the policy,
    /// the clocks and the counters.
    #[test]
    fn a_fresh_held_task_is_one_the_judge_calls_alive(
        mut task in task(),
        ticks in 0u64..10_000_000,
        state in prop::sample::select(vec!['R', 'S', 'D', 'I']),
        exact in any::<bool>(),
        (cpu, io, threads) in (any::<u64>(), prop::option::of(any::<u64>()), 1u32..8),
        prior in prior(),
        policy in policy(),
        interval in any_duration(),
        (now, boot, startup, hang_floor, future_tolerance, pid_max) in facts_parts(),
        (beat_permille, ahead_ms, here) in (0i64..1200, 0i64..400_000, any::<bool>()),
    ) {
        let mut policy = policy;
        if !policy.counts(Signal::Heartbeat) {
            policy.progress.push(Signal::Heartbeat);
        }
        task.pid = Some(PID);
        task.pid_start_ticks = exact.then_some(ticks);
        task.host = here.then(|| "here".to_string());
        // Heartbeats around the window's edge, and a few from the future.
        let window = to_ms(crate::judge::lazy_window(&policy, interval));
        let age = Duration::try_milliseconds((window / 1000).saturating_mul(beat_permille).saturating_sub(ahead_ms))
            .unwrap_or(Duration::zero());
        task.last_progress_at = now.checked_sub_signed(age);
        if task.started_at.is_some_and(|s| s > now) {
            task.started_at = Some(now);
        }
        let facts = Facts {
            now,
            boot: &boot,
            host: "here",
            sweep: if startup { SweepKind::Startup } else { SweepKind::Scheduled },
            hang_floor,
            future_tolerance,
            pid_max,
        };
        prop_assume!(crate::judge::fresh(&task, &policy, &facts, interval));
        // Held: bound in this boot to exactly this live process.
        let mut prior = prior.unwrap_or_else(|| Observation {
            task_id: "t1".into(),
            attempt: 1,
            pid: PID,
            boot_id: String::new(),
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
        prior.boot_id = boot.boot_id.clone();
        prior.start_ticks = Some(ticks);
        prior.binding.get_or_insert(Binding::FirstSight);
        let leader = Member {
            stat: Stat { pid: PID, state, ppid: 1, pgrp: PID, cpu_ticks: cpu, start_ticks: ticks, threads },
            io_bytes: io,
        };
        let j = judge(&task, Some(&Probe::Found(vec![leader])), Some(&prior), &policy, &facts);
        prop_assert_eq!(j.kind, Kind::Alive, "{}", j.evidence.reason);
    }
}
