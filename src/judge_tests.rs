//! Table-driven tests of `judge`: every verdict, every boundary, and the
//! observation it hands to the next sweep. Fixed times only; no clock, no OS.

use super::*;
use crate::model::{Mode, OnHung, TaskState};
use crate::probe::{Member, Stat};
use chrono::TimeZone;

const PID: i32 = 4242;
const CHILD: i32 = 4243;
const HERE: &str = "here";
const BOOT_ID: &str = "boot-a";

// ---------------------------------------------------------------- fixtures

fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).unwrap()
}

/// The host booted at midnight.
fn boot_time() -> DateTime<Utc> {
    utc(0, 0, 0)
}

/// The task started at 06:00 (and so did its process, unless said otherwise).
fn t0() -> DateTime<Utc> {
    utc(6, 0, 0)
}

/// The sweep runs at 07:00.
fn now() -> DateTime<Utc> {
    utc(7, 0, 0)
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

fn mins(n: i64) -> Duration {
    Duration::minutes(n)
}

fn millis(n: i64) -> Duration {
    Duration::milliseconds(n)
}

fn boot() -> BootFacts {
    BootFacts {
        boot_id: BOOT_ID.into(),
        boot_time: boot_time(),
        clk_tck: 100,
        ticks_at_boot: 0,
    }
}

/// Start ticks of a process that started at `t` (100 ticks a second, so
/// one tick is 10 ms; rounds down like the kernel).
fn ticks_at(t: DateTime<Utc>) -> u64 {
    let ms = (t - boot_time()).num_milliseconds();
    assert!(ms >= 0, "fixture: {t} is before boot");
    (ms / 10) as u64
}

/// The DESIGN defaults.
fn policy() -> Policy {
    Policy {
        timeout: std::time::Duration::from_secs(30 * 60),
        startup_grace: std::time::Duration::from_secs(120),
        progress: vec![Signal::Heartbeat, Signal::Cpu, Signal::Io],
        pid_start_tolerance: std::time::Duration::from_secs(10),
        process_match: None,
        exit_grace: std::time::Duration::from_secs(30),
        max_actions_per_sweep: None,
        mode: Mode::Enforce,
        on_hung: OnHung::Terminate,
        on_stray: crate::model::OnStray::Report,
        kill_grace: std::time::Duration::from_secs(10),
        enabled: true,
        max_deferral: None,
        max_runtime: None,
        max_actions_per_window: None,
    }
}

fn progress(signals: &[Signal]) -> Policy {
    Policy {
        progress: signals.to_vec(),
        ..policy()
    }
}

fn heartbeat_only() -> Policy {
    progress(&[Signal::Heartbeat])
}

fn cpu_only() -> Policy {
    progress(&[Signal::Cpu])
}

/// A RUNNING task on this host, started at t0, heartbeat a minute ago.
fn task() -> Task {
    Task {
        id: "t1".into(),
        plan_id: Some("p1".into()),
        droid_type: "coder".into(),
        state: TaskState::Running,
        pid: Some(PID),
        host: None,
        attempt: 1,
        started_at: Some(t0()),
        last_progress_at: Some(now() - mins(1)),
        finished_at: None,
        error: None,
        pid_start_ticks: None,
        created_at: None,
    }
}

fn task_with(f: impl FnOnce(&mut Task)) -> Task {
    let mut t = task();
    f(&mut t);
    t
}

fn member(
    pid: i32,
    ppid: i32,
    state: char,
    cpu: u64,
    started: DateTime<Utc>,
    io: Option<u64>,
) -> Member {
    Member {
        stat: Stat {
            pid,
            state,
            ppid,
            pgrp: PID,
            cpu_ticks: cpu,
            start_ticks: ticks_at(started),
            threads: 1,
        },
        io_bytes: io,
    }
}

/// The task's process: pid 4242, 1000 CPU ticks, 5000 I/O bytes.
fn leader(state: char, started: DateTime<Utc>) -> Member {
    member(PID, 1, state, 1000, started, Some(5000))
}

fn leader_cpu(cpu: u64) -> Member {
    member(PID, 1, 'S', cpu, t0(), Some(5000))
}

fn leader_io(io: Option<u64>) -> Member {
    member(PID, 1, 'S', 1000, t0(), io)
}

fn child(cpu: u64, io: Option<u64>) -> Member {
    member(CHILD, PID, 'R', cpu, t0() + secs(1), io)
}

fn found(members: Vec<Member>) -> Probe {
    Probe::Found(members)
}

/// The task's own process, alive in state `state`.
fn running(state: char) -> Probe {
    found(vec![leader(state, t0())])
}

/// A process at the task's pid that started at `started`.
fn started_at(started: DateTime<Utc>) -> Probe {
    found(vec![leader('S', started)])
}

/// What an earlier sweep remembered: identity bound at first sight to the
/// first member, these counters, these movement times.
fn prior(
    members: &[Member],
    cpu_moved_at: Option<DateTime<Utc>>,
    io_moved_at: Option<DateTime<Utc>>,
) -> Observation {
    let start_ticks = members.first().map(|m| m.stat.start_ticks);
    Observation {
        task_id: "t1".into(),
        attempt: 1,
        pid: PID,
        boot_id: BOOT_ID.into(),
        start_ticks,
        binding: start_ticks.map(|_| Binding::FirstSight),
        first_seen_at: now() - mins(50),
        seen_at: now() - mins(2),
        members: members.iter().map(|m| m.counters()).collect(),
        cpu_moved_at,
        io_moved_at,
        gone_since: None,
        pooled: false,
        unproven: false,
        heartbeat: None,
        heartbeat_moved_at: None,
    }
}

fn prior_with(
    members: &[Member],
    cpu_moved_at: Option<DateTime<Utc>>,
    io_moved_at: Option<DateTime<Utc>>,
    f: impl FnOnce(&mut Observation),
) -> Observation {
    let mut o = prior(members, cpu_moved_at, io_moved_at);
    f(&mut o);
    o
}

fn facts(now: DateTime<Utc>, boot: &BootFacts, sweep: SweepKind) -> Facts<'_> {
    Facts {
        now,
        boot,
        host: HERE,
        sweep,
        hang_floor: None,
        future_tolerance: std::time::Duration::from_secs(300),
        pid_max: Some(4_194_304),
    }
}

// ---------------------------------------------------------------- the table

type Check = Box<dyn Fn(&Judgement) -> bool>;

struct Expect {
    kind: Kind,
    grace_exempt: bool,
    pooled: bool,
    cause: Option<Kind>,
    gone_since: Option<DateTime<Utc>>,
    signal: Option<&'static str>,
    last_progress_at: Option<DateTime<Utc>>,
    reason_has: Vec<&'static str>,
    checks: Vec<(&'static str, Check)>,
}

/// By default: not exempt, not pooled, no cause, and `gone_since == now`
/// exactly for the kinds whose process is gone.
fn expect(kind: Kind) -> Expect {
    Expect {
        kind,
        grace_exempt: false,
        pooled: false,
        cause: None,
        gone_since: kind.is_gone().then(now),
        signal: None,
        last_progress_at: None,
        reason_has: Vec::new(),
        checks: Vec::new(),
    }
}

impl Expect {
    fn exempt(mut self) -> Self {
        self.grace_exempt = true;
        self
    }
    fn pooled(mut self) -> Self {
        self.pooled = true;
        self
    }
    fn cause(mut self, k: Kind) -> Self {
        self.cause = Some(k);
        self
    }
    fn gone_since(mut self, t: Option<DateTime<Utc>>) -> Self {
        self.gone_since = t;
        self
    }
    /// `last_progress_signal` and `last_progress_at`.
    fn last(mut self, signal: &'static str, at: DateTime<Utc>) -> Self {
        self.signal = Some(signal);
        self.last_progress_at = Some(at);
        self
    }
    fn reason(mut self, parts: &[&'static str]) -> Self {
        self.reason_has.extend_from_slice(parts);
        self
    }
    fn check(mut self, what: &'static str, f: impl Fn(&Judgement) -> bool + 'static) -> Self {
        self.checks.push((what, Box::new(f)));
        self
    }
}

struct JCase {
    name: &'static str,
    task: Task,
    probe: Option<Probe>,
    prior: Option<Observation>,
    policy: Policy,
    now: DateTime<Utc>,
    sweep: SweepKind,
    hang_floor: Option<DateTime<Utc>>,
    expect: Expect,
}

/// A case with the defaults: the task's own process running, no prior,
/// DESIGN policy, a scheduled sweep at `now()`.
fn case(name: &'static str) -> JCase {
    JCase {
        name,
        task: task(),
        probe: Some(running('S')),
        prior: None,
        policy: policy(),
        now: now(),
        sweep: SweepKind::Scheduled,
        hang_floor: None,
        expect: expect(Kind::Alive),
    }
}

impl JCase {
    fn task(mut self, t: Task) -> Self {
        self.task = t;
        self
    }
    fn probe(mut self, p: Option<Probe>) -> Self {
        self.probe = p;
        self
    }
    fn prior(mut self, o: Observation) -> Self {
        self.prior = Some(o);
        self
    }
    fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    fn startup(mut self) -> Self {
        self.sweep = SweepKind::Startup;
        self
    }
    fn floor(mut self, t: DateTime<Utc>) -> Self {
        self.hang_floor = Some(t);
        self
    }
    fn expect(mut self, e: Expect) -> Self {
        self.expect = e;
        self
    }
}

/// Judge every case, then fail once listing every case that went wrong.
fn run(cases: Vec<JCase>) {
    let boot = boot();
    let mut failures = Vec::new();
    for c in &cases {
        let f = Facts {
            hang_floor: c.hang_floor,
            ..facts(c.now, &boot, c.sweep)
        };
        let j = judge(&c.task, c.probe.as_ref(), c.prior.as_ref(), &c.policy, &f);
        let e = &c.expect;
        let mut bad = |what: String| failures.push(format!("[{}] {what}\n    got {j:#?}", c.name));
        if j.kind != e.kind {
            bad(format!("kind: expected {:?}, got {:?}", e.kind, j.kind));
            continue;
        }
        if j.grace_exempt != e.grace_exempt {
            bad(format!("grace_exempt: expected {}", e.grace_exempt));
        }
        if j.pooled != e.pooled {
            bad(format!("pooled: expected {}", e.pooled));
        }
        if j.evidence.cause != e.cause {
            bad(format!("evidence.cause: expected {:?}", e.cause));
        }
        if j.evidence.gone_since != e.gone_since {
            bad(format!("evidence.gone_since: expected {:?}", e.gone_since));
        }
        if let Some(obs) = &j.observation {
            if obs.gone_since != e.gone_since {
                bad(format!(
                    "observation.gone_since: expected {:?}",
                    e.gone_since
                ));
            }
        }
        if j.evidence.boot_id != BOOT_ID {
            bad("evidence.boot_id is not this boot's".into());
        }
        if let Some(s) = e.signal {
            if j.evidence.last_progress_signal.as_deref() != Some(s) {
                bad(format!("last_progress_signal: expected {s:?}"));
            }
        }
        if let Some(t) = e.last_progress_at {
            if j.evidence.last_progress_at != Some(t) {
                bad(format!("last_progress_at: expected {t}"));
            }
        }
        for part in &e.reason_has {
            if !j.evidence.reason.contains(part) {
                bad(format!(
                    "reason {:?} does not mention {part:?}",
                    j.evidence.reason
                ));
            }
        }
        for (what, check) in &e.checks {
            if !check(&j) {
                bad(format!("check failed: {what}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn obs(j: &Judgement) -> &Observation {
    j.observation.as_ref().expect("an observation")
}

// ---------------------------------------------------------------- verdicts

#[test]
fn alive_dead_and_zombie() {
    run(vec![
        case("alive: running, fresh heartbeat").expect(
            expect(Kind::Alive)
                .check("last progress is now", |j| {
                    j.evidence.last_progress_at == Some(now())
                })
                .check("timeout_ms is the policy's", |j| {
                    j.evidence.timeout_ms == Some(30 * 60 * 1000)
                })
                .check("idle_ms is 0 at first sight", |j| {
                    j.evidence.idle_ms == Some(0)
                }),
        ),
        case("alive: state R").probe(Some(running('R'))),
        case("alive: state D (uninterruptible I/O is busy, not dead)").probe(Some(running('D'))),
        case("alive: host names this host").task(task_with(|t| t.host = Some(HERE.into()))),
        case("dead: pid not found").probe(Some(Probe::Gone)).expect(
            expect(Kind::Dead)
                .reason(&["4242"])
                .check("never seen alive: nothing bound", |j| {
                    obs(j).start_ticks.is_none() && obs(j).binding.is_none()
                }),
        ),
        case("dead: no probe taken for the pid")
            .probe(None)
            .expect(expect(Kind::Dead).reason(&["4242"])),
        case("dead: a bound process that exited")
            .probe(Some(Probe::Gone))
            .prior(prior(&[leader('S', t0())], Some(now() - mins(2)), None))
            .expect(expect(Kind::Dead).check("identity kept", |j| {
                obs(j).start_ticks == Some(ticks_at(t0()))
            })),
        case("zombie: state Z")
            .probe(Some(running('Z')))
            .expect(expect(Kind::Zombie).reason(&["4242", "Z"])),
        case("zombie: state X")
            .probe(Some(running('X')))
            .expect(expect(Kind::Zombie).reason(&["4242", "X"])),
        case("zombie: state x (older kernels)")
            .probe(Some(running('x')))
            .expect(expect(Kind::Zombie)),
        case("zombie: with a stale heartbeat is still zombie, not hung")
            .task(task_with(|t| t.last_progress_at = Some(now() - mins(45))))
            .policy(heartbeat_only())
            .probe(Some(running('Z')))
            .expect(expect(Kind::Zombie)),
    ]);
}

#[test]
fn pid_reuse() {
    let bound = [leader('S', t0())];
    run(vec![
        case("pid_reused: start ticks differ from the identity bound at first sight")
            // 5 s after the task: within tolerance, so only identity tells.
            .probe(Some(started_at(t0() + secs(5))))
            .prior(prior(&bound, Some(now() - mins(2)), None))
            .expect(
                expect(Kind::PidReused)
                    .reason(&["4242", "first sight"])
                    .check("evidence keeps both identities", |j| {
                        j.evidence.bound_start_ticks == Some(ticks_at(t0()))
                            && j.evidence.start_ticks == Some(ticks_at(t0() + secs(5)))
                            && j.evidence.process_started_at == Some(t0() + secs(5))
                    })
                    .check("the bound identity is not overwritten", |j| {
                        obs(j).start_ticks == Some(ticks_at(t0()))
                    }),
            ),
        case("pid_reused: an older process than the one bound")
            .probe(Some(started_at(t0() - secs(1))))
            .prior(prior(&bound, Some(now() - mins(2)), None))
            .expect(expect(Kind::PidReused)),
        case("pid_reused: start ticks differ from the executor's pid_start_ticks")
            .task(task_with(|t| t.pid_start_ticks = Some(ticks_at(t0()) + 1)))
            .expect(
                expect(Kind::PidReused)
                    .reason(&["4242", "executor"])
                    .check("bound_start_ticks is the executor's", |j| {
                        j.evidence.bound_start_ticks == Some(ticks_at(t0()) + 1)
                    }),
            ),
        case("pid_reused: the executor's ticks win over a first-sight binding")
            .task(task_with(|t| t.pid_start_ticks = Some(ticks_at(t0()) + 1)))
            .prior(prior(&bound, Some(now() - mins(2)), None))
            .expect(expect(Kind::PidReused).reason(&["executor"])),
        case("alive: the executor's ticks match (and replace the first-sight binding)")
            .task(task_with(|t| t.pid_start_ticks = Some(ticks_at(t0()))))
            .expect(expect(Kind::Alive).check("bound by the executor", |j| {
                obs(j).binding == Some(Binding::Executor)
                    && obs(j).start_ticks == Some(ticks_at(t0()))
            })),
        case("alive: process started exactly pid_start_tolerance after the task")
            .probe(Some(started_at(t0() + secs(10)))),
        case("pid_reused: process started one tick past the tolerance")
            .probe(Some(started_at(t0() + secs(10) + millis(10))))
            .expect(expect(Kind::PidReused).reason(&["4242", "after the task started"])),
        case("pid_reused: process started 1 ms past the tolerance")
            .task(task_with(|t| t.started_at = Some(t0() - millis(1))))
            .probe(Some(started_at(t0() + secs(10))))
            .expect(expect(Kind::PidReused)),
        case("pid_reused: process started long after the task")
            .probe(Some(started_at(now() - mins(1))))
            .expect(expect(Kind::PidReused)),
        case("pid_reused: a later process that is a zombie is reused, not zombie")
            .probe(Some(found(vec![leader('Z', now() - mins(1))])))
            .expect(expect(Kind::PidReused)),
        case("pid_reused: a wider tolerance accepts a late fork")
            .policy(Policy {
                pid_start_tolerance: std::time::Duration::from_secs(60),
                ..policy()
            })
            .probe(Some(started_at(t0() + secs(59)))),
    ]);
}

/// DESIGN: `pid_start_ticks` is the process's exact identity. When it
/// matches, the process *is* the task's, even if the executor recorded
/// `started_at` more than the tolerance before it forked.
#[test]
fn executor_identity_match_is_not_reuse_even_past_tolerance() {
    run(vec![case(
        "alive: executor ticks match a process forked 15 s after started_at",
    )
    .task(task_with(|t| {
        t.pid_start_ticks = Some(ticks_at(t0() + secs(15)))
    }))
    .probe(Some(started_at(t0() + secs(15))))
    .expect(expect(Kind::Alive))]);
}

#[test]
fn pooled_workers() {
    run(vec![
        case("pooled: process started an hour before the task is alive")
            .probe(Some(started_at(t0() - mins(60))))
            .expect(expect(Kind::Alive).pooled()),
        case("pooled: one tick more than the tolerance before the task")
            .probe(Some(started_at(t0() - secs(10) - millis(10))))
            .expect(expect(Kind::Alive).pooled()),
        case("not pooled: exactly the tolerance before the task")
            .probe(Some(started_at(t0() - secs(10)))),
        case("not pooled: started with the task").probe(Some(started_at(t0()))),
        case("pooled and hung: the verdict keeps pooled for decide")
            .task(task_with(|t| t.last_progress_at = Some(now() - mins(45))))
            .policy(heartbeat_only())
            .probe(Some(started_at(t0() - mins(60))))
            .expect(expect(Kind::Hung).pooled()),
        case("pooled and stopped: unverifiable, still pooled")
            .probe(Some(found(vec![leader('T', t0() - mins(60))])))
            .expect(expect(Kind::Unverifiable).pooled()),
        case("pooled: a bound pooled worker stays alive on the next sweep")
            .probe(Some(started_at(t0() - mins(60))))
            .prior(prior(
                &[leader('S', t0() - mins(60))],
                Some(now() - mins(2)),
                Some(now() - mins(2)),
            ))
            .expect(expect(Kind::Alive).pooled()),
    ]);
}

#[test]
fn hung_boundaries() {
    let hb = |at: DateTime<Utc>| task_with(|t| t.last_progress_at = Some(at));
    let stale = [leader_cpu(1000)];
    run(vec![
        case("alive: heartbeat exactly at the timeout is not hung")
            .task(hb(now() - mins(30)))
            .policy(heartbeat_only())
            .expect(expect(Kind::Alive).last("heartbeat", now() - mins(30))),
        case("hung: heartbeat 1 ms past the timeout")
            .task(hb(now() - mins(30) - millis(1)))
            .policy(heartbeat_only())
            .expect(
                expect(Kind::Hung)
                    .last("heartbeat", now() - mins(30) - millis(1))
                    .check("idle_ms and timeout_ms", |j| {
                        j.evidence.idle_ms == Some(30 * 60 * 1000 + 1)
                            && j.evidence.timeout_ms == Some(30 * 60 * 1000)
                    }),
            ),
        case("alive: never heartbeated, exactly started_at + startup_grace + timeout")
            .task(task_with(|t| {
                t.last_progress_at = None;
                t.started_at = Some(now() - mins(32));
            }))
            .probe(Some(started_at(now() - mins(32))))
            .policy(heartbeat_only())
            .expect(expect(Kind::Alive).last("startup_grace", now() - mins(30))),
        case("hung: never heartbeated, 1 ms past started_at + startup_grace + timeout")
            .task(task_with(|t| {
                t.last_progress_at = None;
                t.started_at = Some(now() - mins(32) - millis(1));
            }))
            .probe(Some(started_at(now() - mins(32) - millis(10))))
            .policy(heartbeat_only())
            .expect(expect(Kind::Hung).last("startup_grace", now() - mins(30) - millis(1))),
        case("alive: a heartbeat older than the start counts from the startup grace")
            .task(task_with(|t| {
                t.last_progress_at = Some(now() - mins(45));
                t.started_at = Some(now() - mins(31));
            }))
            .probe(Some(started_at(now() - mins(31))))
            .policy(heartbeat_only())
            .expect(expect(Kind::Alive).last("startup_grace", now() - mins(29))),
        case("hung: cpu only, counters still, moved exactly past the timeout + 1 ms")
            .policy(cpu_only())
            .probe(Some(found(stale.to_vec())))
            .prior(prior(&stale, Some(now() - mins(30) - millis(1)), None))
            .expect(expect(Kind::Hung).last("cpu", now() - mins(30) - millis(1))),
        case("alive: cpu only, counters still, moved exactly at the timeout")
            .policy(cpu_only())
            .probe(Some(found(stale.to_vec())))
            .prior(prior(&stale, Some(now() - mins(30)), None))
            .expect(expect(Kind::Alive).last("cpu", now() - mins(30))),
        case("hung: every signal stale (heartbeat, cpu, io)")
            .task(hb(now() - mins(31)))
            .probe(Some(found(stale.to_vec())))
            .prior(prior(
                &stale,
                Some(now() - mins(31)),
                Some(now() - mins(31)),
            ))
            .expect(expect(Kind::Hung).reason(&["no progress", "30m"])),
        case("alive: busy is not hung (heartbeat stale, cpu moving)")
            .task(hb(now() - mins(45)))
            .probe(Some(found(vec![leader_cpu(1001)])))
            .prior(prior(
                &stale,
                Some(now() - mins(45)),
                Some(now() - mins(45)),
            ))
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("alive: waiting on the network (only io moving)")
            .task(hb(now() - mins(45)))
            .probe(Some(found(vec![leader_io(Some(5001))])))
            .prior(prior(
                &stale,
                Some(now() - mins(45)),
                Some(now() - mins(45)),
            ))
            .expect(expect(Kind::Alive).last("io", now())),
        case("hung: a disabled signal does not count (cpu moving, heartbeat only)")
            .task(hb(now() - mins(45)))
            .policy(heartbeat_only())
            .probe(Some(found(vec![leader_cpu(1001)])))
            .prior(prior(&stale, Some(now() - mins(45)), None))
            .expect(expect(Kind::Hung).last("heartbeat", now() - mins(45))),
        case("alive: hang_floor (clock reset) postpones hung")
            .task(hb(now() - mins(45)))
            .policy(heartbeat_only())
            .floor(now() - mins(10))
            .expect(expect(Kind::Alive).last("clock_reset", now() - mins(10))),
        case("alive: hang_floor exactly at the timeout")
            .task(hb(now() - mins(45)))
            .policy(heartbeat_only())
            .floor(now() - mins(30))
            .expect(expect(Kind::Alive).last("clock_reset", now() - mins(30))),
        case("hung: hang_floor 1 ms past the timeout")
            .task(hb(now() - mins(45)))
            .policy(heartbeat_only())
            .floor(now() - mins(30) - millis(1))
            .expect(expect(Kind::Hung).last("clock_reset", now() - mins(30) - millis(1))),
        case("hung: an old hang_floor does not hide a stale heartbeat")
            .task(hb(now() - mins(45)))
            .policy(heartbeat_only())
            .floor(now() - mins(50))
            .expect(expect(Kind::Hung).last("heartbeat", now() - mins(45))),
        case("alive: a longer timeout is honoured per policy")
            .task(hb(now() - mins(45)))
            .policy(Policy {
                timeout: std::time::Duration::from_secs(60 * 60),
                ..heartbeat_only()
            })
            .expect(expect(Kind::Alive).last("heartbeat", now() - mins(45))),
    ]);
}

#[test]
fn first_sight() {
    let long_ago = now() - mins(5 * 60);
    run(vec![
        case("alive: cpu only, no prior, task started 5 h ago: never hung at first sight")
            .task(task_with(|t| {
                t.started_at = Some(long_ago);
                t.last_progress_at = None;
            }))
            .probe(Some(started_at(long_ago)))
            .policy(cpu_only())
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("alive: default signals, stale heartbeat, no prior: OS counters have no history")
            .task(task_with(|t| {
                t.started_at = Some(long_ago);
                t.last_progress_at = Some(long_ago);
            }))
            .probe(Some(started_at(long_ago)))
            .expect(expect(Kind::Alive).check("cpu and io moved now", |j| {
                j.evidence.cpu_moved_at == Some(now()) && j.evidence.io_moved_at == Some(now())
            })),
        case("hung: heartbeat only, stale heartbeat, no prior: hung at first sight")
            .task(task_with(|t| {
                t.started_at = Some(long_ago);
                t.last_progress_at = Some(now() - mins(90));
            }))
            .probe(Some(started_at(long_ago)))
            .policy(heartbeat_only())
            .expect(expect(Kind::Hung).last("heartbeat", now() - mins(90))),
        case("hung: heartbeat only, never heartbeated, no prior, past grace + timeout")
            .task(task_with(|t| {
                t.started_at = Some(long_ago);
                t.last_progress_at = None;
            }))
            .probe(Some(started_at(long_ago)))
            .policy(heartbeat_only())
            .expect(expect(Kind::Hung).last("startup_grace", long_ago + mins(2))),
        case("alive: no started_at: the grace counts from first sight")
            .task(task_with(|t| {
                t.started_at = None;
                t.last_progress_at = None;
            }))
            .policy(heartbeat_only())
            .expect(expect(Kind::Alive).last("startup_grace", now() + mins(2))),
    ]);
}

#[test]
fn process_tree_and_io() {
    let hb_old = task_with(|t| t.last_progress_at = Some(now() - mins(45)));
    let old = Some(now() - mins(40));
    let tree = [leader_cpu(1000), child(50, Some(10))];
    run(vec![
        case("alive: a child's cpu moving counts as progress")
            .task(hb_old.clone())
            .policy(cpu_only())
            .probe(Some(found(vec![leader_cpu(1000), child(51, Some(10))])))
            .prior(prior(&tree, old, old))
            .expect(
                expect(Kind::Alive)
                    .last("cpu", now())
                    .check("members counted", |j| j.evidence.members == Some(2)),
            ),
        case("hung: nothing in the tree moved")
            .task(hb_old.clone())
            .policy(cpu_only())
            .probe(Some(found(tree.to_vec())))
            .prior(prior(&tree, old, old))
            .expect(expect(Kind::Hung).last("cpu", now() - mins(40))),
        case("alive: a child exiting (sum drops) is not hung early")
            .task(hb_old.clone())
            .policy(cpu_only())
            .probe(Some(found(vec![leader_cpu(1000)])))
            .prior(prior(
                &[leader_cpu(1000), child(5000, Some(10))],
                Some(now() - mins(10)),
                old,
            ))
            .expect(
                expect(Kind::Alive)
                    .last("cpu", now() - mins(10))
                    .check("the child is forgotten", |j| obs(j).members.len() == 1),
            ),
        case("alive: the leader moving while a bigger child exits (sum drops) is progress")
            .task(hb_old.clone())
            .policy(cpu_only())
            .probe(Some(found(vec![leader_cpu(1001)])))
            .prior(prior(&[leader_cpu(1000), child(5000, Some(10))], old, old))
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("alive: a new member counts as movement")
            .task(hb_old.clone())
            .policy(cpu_only())
            .probe(Some(found(vec![leader_cpu(1000), child(0, Some(0))])))
            .prior(prior(&[leader_cpu(1000)], old, old))
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("alive: a member whose pid was reused (new start ticks) is a new member")
            .task(hb_old.clone())
            .policy(cpu_only())
            .probe(Some(found(vec![
                leader_cpu(1000),
                member(CHILD, PID, 'R', 5, now() - mins(1), Some(0)),
            ])))
            .prior(prior(&tree, old, old))
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("alive: io only, a child's io moving")
            .task(hb_old.clone())
            .policy(progress(&[Signal::Io]))
            .probe(Some(found(vec![leader_cpu(1000), child(50, Some(11))])))
            .prior(prior(&tree, old, old))
            .expect(expect(Kind::Alive).last("io", now())),
        case("hung: io only, io still while cpu moves")
            .task(hb_old.clone())
            .policy(progress(&[Signal::Io]))
            .probe(Some(found(vec![leader_cpu(2000), child(50, Some(10))])))
            .prior(prior(&tree, old, old))
            .expect(expect(Kind::Hung).last("io", now() - mins(40))),
        case("alive: io unreadable while cpu is enabled is not unverifiable (first sight)")
            .probe(Some(found(vec![leader_io(None)])))
            .expect(
                expect(Kind::Alive)
                    .last("cpu", now())
                    .check("io evidence absent", |j| j.evidence.io_moved_at.is_none()),
            ),
        case("alive: io unreadable, cpu moving, with a prior")
            .task(hb_old.clone())
            .probe(Some(found(vec![member(PID, 1, 'S', 1001, t0(), None)])))
            .prior(prior(&[leader_io(None)], old, None))
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("hung: io unreadable is unavailable, not progress (cpu still)")
            .task(hb_old.clone())
            .probe(Some(found(vec![leader_io(None)])))
            .prior(prior(&[leader_io(None)], old, None))
            .expect(expect(Kind::Hung).last("cpu", now() - mins(40))),
        case("unverifiable: progress = [io] and io unreadable")
            .policy(progress(&[Signal::Io]))
            .probe(Some(found(vec![leader_io(None)])))
            .expect(expect(Kind::Unverifiable).reason(&["4242", "io"])),
        case("unverifiable: progress = [io] and a child's io unreadable")
            .policy(progress(&[Signal::Io]))
            .probe(Some(found(vec![leader_io(Some(5000)), child(1, None)])))
            .expect(expect(Kind::Unverifiable)),
        case("unverifiable: progress = [io], unreadable with a prior that saw io")
            .task(hb_old)
            .policy(progress(&[Signal::Io]))
            .probe(Some(found(vec![leader_io(None)])))
            .prior(prior(&[leader_io(Some(5000))], old, old))
            .expect(expect(Kind::Unverifiable)),
    ]);
}

#[test]
fn orphans_at_startup() {
    let no_pid = |started: DateTime<Utc>| {
        task_with(|t| {
            t.pid = None;
            t.started_at = Some(started);
        })
    };
    run(vec![
        case("orphan: dead at startup, cause kept")
            .startup()
            .probe(Some(Probe::Gone))
            .expect(expect(Kind::Orphan).cause(Kind::Dead).reason(&["4242"])),
        case("orphan: zombie at startup")
            .startup()
            .probe(Some(running('Z')))
            .expect(expect(Kind::Orphan).cause(Kind::Zombie)),
        case("orphan: pid reused at startup (started after the task)")
            .startup()
            .probe(Some(started_at(now() - mins(1))))
            .expect(expect(Kind::Orphan).cause(Kind::PidReused)),
        case("orphan: pid reused at startup (bound identity differs)")
            .startup()
            .probe(Some(started_at(t0() + secs(5))))
            .prior(prior(&[leader('S', t0())], Some(now() - mins(2)), None))
            .expect(expect(Kind::Orphan).cause(Kind::PidReused)),
        case("alive at startup is not an orphan").startup(),
        case("hung at startup is hung, not an orphan")
            .startup()
            .task(task_with(|t| t.last_progress_at = Some(now() - mins(45))))
            .policy(heartbeat_only())
            .expect(expect(Kind::Hung)),
        case("unverifiable at startup stays unverifiable")
            .startup()
            .probe(Some(Probe::Unreadable("permission denied".into())))
            .expect(expect(Kind::Unverifiable)),
        case("orphan: no pid 1 ms past startup_grace")
            .startup()
            .task(no_pid(now() - mins(2) - millis(1)))
            .probe(None)
            .expect(
                expect(Kind::Orphan)
                    .exempt()
                    .gone_since(None)
                    .reason(&["no pid"])
                    .check("no observation without a pid", |j| j.observation.is_none()),
            ),
        case("unverifiable: no pid exactly at startup_grace")
            .startup()
            .task(no_pid(now() - mins(2)))
            .probe(None)
            .expect(expect(Kind::Unverifiable)),
        case("unverifiable: no pid past grace in a scheduled sweep")
            .task(no_pid(now() - mins(50)))
            .probe(None)
            .expect(expect(Kind::Unverifiable)),
    ]);
}

#[test]
fn unverifiable() {
    run(vec![
        case("unverifiable: task on another host")
            .task(task_with(|t| t.host = Some("elsewhere".into())))
            .probe(Some(Probe::Gone))
            .expect(
                expect(Kind::Unverifiable)
                    .reason(&["elsewhere"])
                    .check("no observation", |j| j.observation.is_none()),
            ),
        case("unverifiable: another host even at startup")
            .startup()
            .task(task_with(|t| t.host = Some("elsewhere".into())))
            .probe(Some(Probe::Gone))
            .expect(expect(Kind::Unverifiable)),
        case("unverifiable: another host even if started before boot")
            .task(task_with(|t| {
                t.host = Some("elsewhere".into());
                t.started_at = Some(boot_time() - mins(5));
            }))
            .probe(None)
            .expect(expect(Kind::Unverifiable)),
        case("unverifiable: probe unreadable")
            .probe(Some(Probe::Unreadable("permission denied".into())))
            .expect(expect(Kind::Unverifiable).reason(&["4242", "permission denied"])),
        case("unverifiable: probe found no members")
            .probe(Some(found(vec![])))
            .expect(expect(Kind::Unverifiable).reason(&["4242"])),
        case("unverifiable: stopped (state T)")
            .probe(Some(running('T')))
            .expect(expect(Kind::Unverifiable).reason(&["4242", "stopped"])),
        case("unverifiable: traced (state t)")
            .probe(Some(running('t')))
            .expect(expect(Kind::Unverifiable)),
        case("unverifiable: stopped with a stale heartbeat is not hung")
            .task(task_with(|t| t.last_progress_at = Some(now() - mins(45))))
            .policy(heartbeat_only())
            .probe(Some(running('T')))
            .expect(expect(Kind::Unverifiable)),
        case("unverifiable: no pid recorded yet")
            .task(task_with(|t| t.pid = None))
            .probe(None)
            .expect(expect(Kind::Unverifiable).reason(&["no pid"])),
        case("unverifiable: no pid and no started_at, even at startup")
            .startup()
            .task(task_with(|t| {
                t.pid = None;
                t.started_at = None;
            }))
            .probe(None)
            .expect(expect(Kind::Unverifiable)),
    ]);
}

#[test]
fn boots() {
    let pre_boot = task_with(|t| t.started_at = Some(boot_time() - mins(5)));
    let other_boot = prior_with(&[leader('S', t0())], Some(now() - mins(2)), None, |o| {
        o.boot_id = "boot-old".into()
    });
    run(vec![
        case("dead: started before this boot (process gone)")
            .task(pre_boot.clone())
            .probe(Some(Probe::Gone))
            .expect(expect(Kind::Dead).exempt().reason(&["before this boot"])),
        case("dead: started before this boot, whatever now holds the pid")
            .task(pre_boot.clone())
            .probe(Some(running('S')))
            .expect(expect(Kind::Dead).exempt()),
        case("dead: started before this boot, no probe")
            .task(pre_boot.clone())
            .probe(None)
            .expect(expect(Kind::Dead).exempt()),
        case("orphan: started before this boot, at startup")
            .startup()
            .task(pre_boot.clone())
            .probe(Some(Probe::Gone))
            .expect(expect(Kind::Orphan).cause(Kind::Dead).exempt()),
        case("dead: prior observation from another boot")
            .prior(other_boot.clone())
            .expect(expect(Kind::Dead).exempt().reason(&["boot-old"])),
        case("orphan: prior observation from another boot, at startup")
            .startup()
            .prior(other_boot)
            .expect(expect(Kind::Orphan).cause(Kind::Dead).exempt()),
        case("alive: a prior of another attempt from another boot is ignored").prior(prior_with(
            &[leader('S', t0())],
            Some(now() - mins(2)),
            None,
            |o| {
                o.boot_id = "boot-old".into();
                o.attempt = 0;
            },
        )),
        case("alive: started exactly at boot is not pre-boot")
            .task(task_with(|t| t.started_at = Some(boot_time())))
            .probe(Some(started_at(boot_time())))
            .policy(heartbeat_only()),
    ]);
}

#[test]
fn evidence_and_observation() {
    let bound = [leader('S', t0())];
    let was_gone = prior_with(&bound, Some(now() - mins(2)), Some(now() - mins(2)), |o| {
        o.gone_since = Some(now() - secs(20))
    });
    run(vec![
        case("dead: gone_since carried from the prior observation")
            .probe(Some(Probe::Gone))
            .prior(was_gone.clone())
            .expect(expect(Kind::Dead).gone_since(Some(now() - secs(20)))),
        case("zombie after dead: gone_since still carried")
            .probe(Some(running('Z')))
            .prior(was_gone.clone())
            .expect(expect(Kind::Zombie).gone_since(Some(now() - secs(20)))),
        case("orphan at startup: gone_since carried")
            .startup()
            .probe(Some(Probe::Gone))
            .prior(was_gone.clone())
            .expect(
                expect(Kind::Orphan)
                    .cause(Kind::Dead)
                    .gone_since(Some(now() - secs(20))),
            ),
        case("alive again: gone_since cleared")
            .probe(Some(running('S')))
            .prior(was_gone.clone())
            .expect(
                expect(Kind::Alive).check("observation.gone_since cleared", |j| {
                    obs(j).gone_since.is_none()
                }),
            ),
        case("stopped after gone: gone_since cleared (it exists)")
            .probe(Some(running('T')))
            .prior(was_gone)
            .expect(expect(Kind::Unverifiable)),
        case("first sight binds the start ticks").expect(expect(Kind::Alive).check(
            "bound at first sight",
            |j| {
                let o = obs(j);
                o.start_ticks == Some(ticks_at(t0()))
                    && o.binding == Some(Binding::FirstSight)
                    && o.first_seen_at == now()
                    && o.seen_at == now()
                    && o.task_id == "t1"
                    && o.attempt == 1
                    && o.pid == PID
                    && o.boot_id == BOOT_ID
                    && o.members == vec![leader('S', t0()).counters()]
            },
        )),
        case("a bound identity is kept and first_seen_at too")
            .prior(prior(&bound, Some(now() - mins(2)), Some(now() - mins(2))))
            .expect(expect(Kind::Alive).check("binding kept", |j| {
                let o = obs(j);
                o.start_ticks == Some(ticks_at(t0()))
                    && o.binding == Some(Binding::FirstSight)
                    && o.first_seen_at == now() - mins(50)
                    && o.seen_at == now()
            })),
        case("a new attempt binds afresh")
            .task(task_with(|t| {
                t.attempt = 2;
                t.started_at = Some(now() - mins(5));
            }))
            .probe(Some(started_at(now() - mins(5))))
            .prior(prior(&bound, Some(now() - mins(2)), None))
            .expect(expect(Kind::Alive).check("bound to the new process", |j| {
                let o = obs(j);
                o.attempt == 2
                    && o.start_ticks == Some(ticks_at(now() - mins(5)))
                    && o.first_seen_at == now()
            })),
        case("a new pid binds afresh")
            .task(task_with(|t| t.pid = Some(PID + 100)))
            .probe(Some(found(vec![member(
                PID + 100,
                1,
                'S',
                1,
                t0() + secs(2),
                Some(0),
            )])))
            .prior(prior(&bound, Some(now() - mins(2)), None))
            .expect(expect(Kind::Alive).check("bound to the new pid", |j| {
                let o = obs(j);
                o.pid == PID + 100 && o.start_ticks == Some(ticks_at(t0() + secs(2)))
            })),
        case("a prior of another task is ignored")
            .probe(Some(started_at(t0() + secs(5))))
            .prior(prior_with(&bound, None, None, |o| o.task_id = "t2".into()))
            .expect(expect(Kind::Alive).check("bound afresh", |j| {
                obs(j).start_ticks == Some(ticks_at(t0() + secs(5)))
            })),
        case("evidence carries the task's inputs")
            .task(task_with(|t| t.last_progress_at = Some(now() - mins(3))))
            .expect(expect(Kind::Alive).check("evidence fields", |j| {
                let e = &j.evidence;
                e.task_started_at == Some(t0())
                    && e.heartbeat_at == Some(now() - mins(3))
                    && e.state.as_deref() == Some("S")
                    && e.start_ticks == Some(ticks_at(t0()))
                    && e.process_started_at == Some(t0())
                    && e.members == Some(1)
                    && e.boot_id == BOOT_ID
            })),
    ]);
}

/// Three sweeps over the same task: the identity bound at the first is kept
/// by the second and convicts the impostor at the third.
#[test]
fn binding_persists_across_sweeps() {
    let boot = boot();
    let t = task_with(|t| t.last_progress_at = None);
    let p = policy();

    let j1 = judge(
        &t,
        Some(&running('S')),
        None,
        &p,
        &facts(now(), &boot, SweepKind::Scheduled),
    );
    assert_eq!(j1.kind, Kind::Alive, "sweep 1: {}", j1.evidence.reason);
    let o1 = j1.observation.expect("sweep 1 observation");
    assert_eq!(o1.start_ticks, Some(ticks_at(t0())), "sweep 1 binds");

    let later = now() + mins(2);
    let j2 = judge(
        &t,
        Some(&found(vec![leader_cpu(1500)])),
        Some(&o1),
        &p,
        &facts(later, &boot, SweepKind::Scheduled),
    );
    assert_eq!(j2.kind, Kind::Alive, "sweep 2: {}", j2.evidence.reason);
    let o2 = j2.observation.expect("sweep 2 observation");
    assert_eq!(o2.start_ticks, o1.start_ticks, "sweep 2 keeps the identity");
    assert_eq!(o2.first_seen_at, now(), "sweep 2 keeps first_seen_at");
    assert_eq!(o2.seen_at, later, "sweep 2 updates seen_at");
    assert_eq!(o2.cpu_moved_at, Some(later), "sweep 2 saw cpu move");
    assert_eq!(o2.members[0].cpu_ticks, 1500, "sweep 2 keeps new counters");

    let latest = later + mins(2);
    let j3 = judge(
        &t,
        Some(&started_at(t0() + secs(3))),
        Some(&o2),
        &p,
        &facts(latest, &boot, SweepKind::Scheduled),
    );
    assert_eq!(j3.kind, Kind::PidReused, "sweep 3: {}", j3.evidence.reason);
    let o3 = j3.observation.expect("sweep 3 observation");
    assert_eq!(o3.start_ticks, o1.start_ticks, "sweep 3 keeps the identity");
    assert_eq!(o3.gone_since, Some(latest), "sweep 3 starts exit grace");

    // The impostor stays convicted; exit grace counts from sweep 3.
    let j4 = judge(
        &t,
        Some(&started_at(t0() + secs(3))),
        Some(&o3),
        &p,
        &facts(latest + mins(2), &boot, SweepKind::Scheduled),
    );
    assert_eq!(j4.kind, Kind::PidReused, "sweep 4: {}", j4.evidence.reason);
    assert_eq!(j4.evidence.gone_since, Some(latest), "sweep 4 gone_since");
}

/// A cpu signal that stops moving turns hung exactly one timeout after its
/// last movement, across sweeps fed with the previous observation.
#[test]
fn cpu_stall_across_sweeps() {
    let boot = boot();
    let t = task_with(|t| t.last_progress_at = None);
    let p = cpu_only();
    let probe = found(vec![leader_cpu(1000)]);
    let sweep = |at: DateTime<Utc>, prior: Option<&Observation>| {
        judge(
            &t,
            Some(&probe),
            prior,
            &p,
            &facts(at, &boot, SweepKind::Scheduled),
        )
    };
    let j = sweep(now(), None);
    assert_eq!(j.kind, Kind::Alive, "first sight");
    let mut o = j.observation.expect("observation");
    let mut at = now();
    for _ in 0..15 {
        at += mins(2);
        let j = sweep(at, Some(&o));
        assert_eq!(j.kind, Kind::Alive, "at {at}: {}", j.evidence.reason);
        assert_eq!(j.evidence.cpu_moved_at, Some(now()), "at {at}");
        o = j.observation.expect("observation");
    }
    assert_eq!(at, now() + mins(30));
    let j = sweep(at + millis(1), Some(&o));
    assert_eq!(j.kind, Kind::Hung, "1 ms past: {}", j.evidence.reason);
}

// ------------------------------------------------- issue 14: trust on real hosts

/// A boot facts whose wall-clock boot time moved by `by` (an NTP step moves
/// `btime`, and so every computed process start, while ticks stay).
fn boot_stepped(by: Duration) -> BootFacts {
    BootFacts {
        boot_time: boot_time() + by,
        ..boot()
    }
}

#[test]
fn times_from_the_future() {
    let far = Utc.timestamp_opt(8_210_266_876_795, 0).single();
    run(vec![
        case("started_at far in the future: unverifiable, no panic")
            .task(task_with(|t| t.started_at = far))
            .expect(expect(Kind::Unverifiable).reason(&["started_at", "ahead of now"])),
        case("started_at just inside future_tolerance is used")
            .task(task_with(|t| t.started_at = Some(now() + mins(5))))
            .probe(Some(started_at(t0())))
            .expect(expect(Kind::Alive).pooled()),
        case("started_at one second past future_tolerance is not")
            .task(task_with(|t| {
                t.started_at = Some(now() + mins(5) + secs(1))
            }))
            .expect(expect(Kind::Unverifiable).reason(&["ahead of now"])),
        case("heartbeat far in the future and frozen is not progress: the hang shows")
            .task(task_with(|t| t.last_progress_at = far))
            .prior(prior_with(&[leader('S', t0())], None, None, |o| {
                o.heartbeat = far;
                o.heartbeat_moved_at = Some(now() - mins(50));
            }))
            .policy(heartbeat_only())
            .expect(
                expect(Kind::Hung)
                    .reason(&["implausible", "not counted as progress"])
                    .last("heartbeat_moved", now() - mins(50)),
            ),
        case("heartbeat an hour ahead at first sight counts once, as moving now")
            .task(task_with(|t| t.last_progress_at = Some(now() + mins(60))))
            .policy(heartbeat_only())
            .expect(
                expect(Kind::Alive)
                    .reason(&["implausible"])
                    .last("heartbeat_moved", now()),
            ),
        case("heartbeat exactly at the tolerance still counts")
            .task(task_with(|t| t.last_progress_at = Some(now() + mins(5))))
            .policy(heartbeat_only())
            .expect(expect(Kind::Alive).last("heartbeat", now() + mins(5))),
        case("heartbeat in the future on an alive task: the reason says so")
            .task(task_with(|t| t.last_progress_at = Some(now() + mins(60))))
            .expect(expect(Kind::Alive).reason(&["implausible"])),
    ]);
}

#[test]
fn pid_above_pid_max_is_a_malformed_row() {
    run(vec![
        case("pid exactly kernel.pid_max")
            .task(task_with(|t| t.pid = Some(4_194_304)))
            .probe(Some(Probe::Gone))
            .expect(
                expect(Kind::Unverifiable)
                    .gone_since(None)
                    .reason(&["pid_max", "malformed"]),
            ),
        case("pid one below pid_max is judged")
            .task(task_with(|t| t.pid = Some(4_194_303)))
            .probe(Some(Probe::Gone))
            .expect(expect(Kind::Dead)),
    ]);
}

#[test]
fn a_bound_identity_survives_clock_steps() {
    let boot = boot();
    let bound = prior(
        &[leader('S', t0())],
        Some(now() - mins(2)),
        Some(now() - mins(2)),
    );
    // The same live process, judged after the wall clock stepped: `btime`
    // (wall clock minus uptime) and now move together, so its computed
    // start moves too, an hour or days away from the task's started_at.
    // The sweep restarts hang clocks at a step (hang_floor).
    for step in [mins(60), mins(-60), Duration::days(3)] {
        let stepped = boot_stepped(step);
        let f = Facts {
            boot: &stepped,
            hang_floor: Some(now() + step),
            ..facts(now() + step, &boot, SweepKind::Scheduled)
        };
        let j = judge(&task(), Some(&running('S')), Some(&bound), &policy(), &f);
        assert_eq!(j.kind, Kind::Alive, "step {step}: {j:#?}");
        // And with the executor's ticks as identity.
        let t = task_with(|t| t.pid_start_ticks = Some(ticks_at(t0())));
        let j = judge(&t, Some(&running('S')), None, &policy(), &f);
        assert_eq!(j.kind, Kind::Alive, "step {step}, executor ticks: {j:#?}");
    }
    // started_at rewritten later (moved back hours) after binding: same.
    let t = task_with(|t| t.started_at = Some(t0() - Duration::hours(5)));
    let j = judge(
        &t,
        Some(&running('S')),
        Some(&bound),
        &policy(),
        &facts(now(), &boot, SweepKind::Scheduled),
    );
    assert_eq!(j.kind, Kind::Alive, "{j:#?}");
    // Unbound, the time rule still catches a reused pid at first sight.
    let j = judge(
        &task(),
        Some(&started_at(t0() + mins(30))),
        None,
        &policy(),
        &facts(now(), &boot, SweepKind::Scheduled),
    );
    assert_eq!(j.kind, Kind::PidReused, "{j:#?}");
}

#[test]
fn executor_ticks_after_now_are_a_malformed_row() {
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    let t = task_with(|t| t.pid_start_ticks = Some(ticks_at(now() + mins(10))));
    let j = judge(&t, Some(&running('S')), None, &policy(), &f);
    assert_eq!(j.kind, Kind::Unverifiable, "{j:#?}");
    assert!(j.evidence.reason.contains("pid_start_ticks"));
    let t = task_with(|t| t.pid_start_ticks = Some(u64::MAX));
    let j = judge(&t, Some(&running('S')), None, &policy(), &f);
    assert_eq!(j.kind, Kind::Unverifiable, "{j:#?}");
}

#[test]
fn never_signal_facts_stick_to_the_binding() {
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    // Bound without proof; the row later gains a started_at: still unproven.
    let bare = task_with(|t| {
        t.started_at = None;
        t.last_progress_at = None;
    });
    let first = judge(&bare, Some(&running('S')), None, &policy(), &f);
    let o = first.observation.clone().expect("observation");
    assert!(o.unproven && first.unproven);
    let later = task_with(|t| t.last_progress_at = None);
    let j = judge(&later, Some(&running('S')), Some(&o), &policy(), &f);
    assert!(j.unproven, "{j:#?}");
    // The executor's exact ticks are proof.
    let ticked = task_with(|t| t.pid_start_ticks = Some(ticks_at(t0())));
    let j = judge(&ticked, Some(&running('S')), Some(&o), &policy(), &f);
    assert!(!j.unproven, "{j:#?}");
    // Seen pooled once, pooled after a clock step that moves the start.
    let pooled_task = task_with(|t| t.started_at = Some(t0() + mins(5)));
    let first = judge(&pooled_task, Some(&running('S')), None, &policy(), &f);
    assert!(first.pooled);
    let o = first.observation.clone().expect("observation");
    let stepped = boot_stepped(mins(5));
    let f2 = Facts {
        boot: &stepped,
        ..facts(now(), &boot, SweepKind::Scheduled)
    };
    let j = judge(&pooled_task, Some(&running('S')), Some(&o), &policy(), &f2);
    assert!(j.pooled, "{j:#?}");
}

#[test]
fn a_moving_heartbeat_ahead_of_this_clock_is_progress() {
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    let ahead = |m| task_with(|t| t.last_progress_at = Some(now() + mins(m)));
    let mut seen = prior(
        &[leader('S', t0())],
        Some(now() - mins(40)),
        Some(now() - mins(40)),
    );
    seen.heartbeat = Some(now() + mins(5));
    seen.heartbeat_moved_at = Some(now() - mins(40));
    // Changed since the last sweep: progress now.
    let j = judge(
        &ahead(6),
        Some(&running('S')),
        Some(&seen),
        &heartbeat_only(),
        &f,
    );
    assert_eq!(j.kind, Kind::Alive, "{j:#?}");
    assert_eq!(
        j.evidence.last_progress_signal.as_deref(),
        Some("heartbeat_moved")
    );
    // Frozen ahead of the clock (epoch milliseconds written once): hung.
    seen.heartbeat = Some(now() + mins(6));
    let j = judge(
        &ahead(6),
        Some(&running('S')),
        Some(&seen),
        &heartbeat_only(),
        &f,
    );
    assert_eq!(j.kind, Kind::Hung, "{j:#?}");
    assert!(j.evidence.reason.contains("implausible"));
}

#[test]
fn the_pre_boot_rule_prefers_the_bound_boot_id() {
    let boot = boot();
    // Bound in this boot: a wall-clock step that puts started_at before
    // btime does not make the live process dead.
    let bound = prior(
        &[leader('S', t0())],
        Some(now() - mins(2)),
        Some(now() - mins(2)),
    );
    let stepped = boot_stepped(Duration::hours(7));
    let f = Facts {
        boot: &stepped,
        ..facts(now(), &boot, SweepKind::Scheduled)
    };
    let j = judge(&task(), Some(&running('S')), Some(&bound), &policy(), &f);
    assert_eq!(j.kind, Kind::Alive, "{j:#?}");
    // Unbound: marked (grace exempt), and the reason says never signalled.
    let t = task_with(|t| t.started_at = Some(boot_time() - mins(1)));
    let j = judge(
        &t,
        Some(&running('S')),
        None,
        &policy(),
        &facts(now(), &boot, SweepKind::Scheduled),
    );
    assert_eq!(j.kind, Kind::Dead);
    assert!(j.grace_exempt);
    assert!(
        j.evidence.reason.contains("never signalled"),
        "{}",
        j.evidence.reason
    );
}

#[test]
fn identity_without_started_at_or_ticks_is_unproven() {
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    let t = task_with(|t| {
        t.started_at = None;
        t.last_progress_at = None;
    });
    let stale = prior(
        &[leader('S', t0())],
        Some(now() - mins(40)),
        Some(now() - mins(40)),
    );
    let j = judge(&t, Some(&running('S')), Some(&stale), &policy(), &f);
    assert_eq!(j.kind, Kind::Hung, "{j:#?}");
    assert!(j.unproven);
    // With started_at, or with the executor's ticks, it is proven.
    let j = judge(
        &task_with(|t| t.last_progress_at = None),
        Some(&running('S')),
        Some(&stale),
        &policy(),
        &f,
    );
    assert!(!j.unproven);
    let t = task_with(|t| {
        t.started_at = None;
        t.pid_start_ticks = Some(ticks_at(t0()));
    });
    assert!(!judge(&t, Some(&running('S')), Some(&stale), &policy(), &f).unproven);
}

#[test]
fn a_leader_that_exited_with_live_threads_is_not_a_zombie() {
    let mut l = leader('Z', t0());
    l.stat.threads = 3;
    run(vec![
        case("leader Z with 3 threads: alive").probe(Some(found(vec![l.clone()]))),
        case("leader Z with 1 thread: zombie")
            .probe(Some(running('Z')))
            .expect(expect(Kind::Zombie)),
    ]);
    // Its threads' CPU is progress.
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    let before = prior(&[l.clone()], Some(now() - mins(40)), Some(now() - mins(40)));
    let mut busy = l.clone();
    busy.stat.cpu_ticks += 50;
    let j = judge(
        &task_with(|t| t.last_progress_at = None),
        Some(&found(vec![busy])),
        Some(&before),
        &cpu_only(),
        &f,
    );
    assert_eq!(j.kind, Kind::Alive, "{j:#?}");
    let j = judge(
        &task_with(|t| t.last_progress_at = None),
        Some(&found(vec![l])),
        Some(&before),
        &cpu_only(),
        &f,
    );
    assert_eq!(j.kind, Kind::Hung, "{j:#?}");
}

#[test]
fn a_runnable_tree_without_cpu_is_starved_not_hung() {
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    let t = task_with(|t| t.last_progress_at = None);
    // R with no CPU gain since the last sweep: starved.
    let r = leader('R', t0());
    let before = prior(
        std::slice::from_ref(&r),
        Some(now() - mins(40)),
        Some(now() - mins(40)),
    );
    let j = judge(&t, Some(&found(vec![r])), Some(&before), &cpu_only(), &f);
    assert_eq!(j.kind, Kind::Hung);
    assert!(
        j.starved.as_deref().is_some_and(|s| s.contains("runnable")),
        "{j:#?}"
    );
    // All sleeping with no CPU: a real hang, not starvation.
    let s = leader('S', t0());
    let before = prior(
        std::slice::from_ref(&s),
        Some(now() - mins(40)),
        Some(now() - mins(40)),
    );
    let j = judge(&t, Some(&found(vec![s])), Some(&before), &cpu_only(), &f);
    assert_eq!(j.kind, Kind::Hung);
    assert_eq!(j.starved, None);
    // A busy loop getting CPU but with a stale heartbeat: hung, not starved.
    let busy = leader('R', t0());
    let before = prior(
        std::slice::from_ref(&busy),
        Some(now() - mins(40)),
        Some(now() - mins(40)),
    );
    let mut more = busy.clone();
    more.stat.cpu_ticks += 500;
    let stale = task_with(|t| t.last_progress_at = Some(now() - mins(40)));
    let j = judge(
        &stale,
        Some(&found(vec![more])),
        Some(&before),
        &heartbeat_only(),
        &f,
    );
    assert_eq!(j.kind, Kind::Hung);
    assert_eq!(j.starved, None);
}

#[test]
fn a_panicking_judge_costs_only_its_task() {
    fn boom(
        _: &Task,
        _: Option<&Probe>,
        _: Option<&Observation>,
        _: &Policy,
        _: &Facts,
    ) -> Judgement {
        panic!("boom at the test's request")
    }
    let boot = boot();
    let f = facts(now(), &boot, SweepKind::Scheduled);
    let j = guarded(boom, &task(), None, None, &policy(), &f);
    assert_eq!(j.kind, Kind::Unverifiable);
    assert!(
        j.evidence.reason.contains("boom at the test's request"),
        "{}",
        j.evidence.reason
    );
    assert!(j.observation.is_none());
}

// ---------------------------------------------------------------- lazy reads

/// When a held task's `/proc` read may be skipped: every rule, and the
/// window's edge to the millisecond (interval 2 min, timeout 30 min: the
/// window is the interval; a 3-minute timeout halves it to 90 s).
#[test]
fn fresh_skips_the_read_only_for_a_young_plausible_heartbeat() {
    let interval = std::time::Duration::from_secs(120);
    let short = Policy {
        timeout: std::time::Duration::from_secs(180),
        ..policy()
    };
    let b = boot();
    let f = facts(now(), &b, SweepKind::Scheduled);
    let beat = |age: Duration| task_with(|t| t.last_progress_at = Some(now() - age));
    let cases: Vec<(&str, Task, Policy, bool)> = vec![
        ("a beat a minute ago", task(), policy(), true),
        ("exactly the window", beat(secs(120)), policy(), true),
        (
            "one ms past the window",
            beat(secs(120) + millis(1)),
            policy(),
            false,
        ),
        ("half a short timeout", beat(secs(90)), short.clone(), true),
        ("past half a short timeout", beat(secs(91)), short, false),
        (
            "a beat from the near future",
            beat(secs(-60)),
            policy(),
            true,
        ),
        (
            "a beat past future_tolerance",
            beat(secs(-301)),
            policy(),
            false,
        ),
        (
            "no heartbeat",
            task_with(|t| t.last_progress_at = None),
            policy(),
            false,
        ),
        ("the type ignores heartbeats", task(), cpu_only(), false),
        (
            "another host",
            task_with(|t| t.host = Some("elsewhere".into())),
            policy(),
            false,
        ),
        (
            "this host by name",
            task_with(|t| t.host = Some(HERE.into())),
            policy(),
            true,
        ),
        ("no pid", task_with(|t| t.pid = None), policy(), false),
        (
            "pid at pid_max",
            task_with(|t| t.pid = Some(4_194_304)),
            policy(),
            false,
        ),
        (
            "started_at from the future",
            task_with(|t| t.started_at = Some(now() + mins(6))),
            policy(),
            false,
        ),
        (
            "start ticks after now",
            task_with(|t| t.pid_start_ticks = Some(ticks_at(now() + mins(6)))),
            policy(),
            false,
        ),
        (
            "start ticks before now",
            task_with(|t| t.pid_start_ticks = Some(ticks_at(t0()))),
            policy(),
            true,
        ),
    ];
    for (name, task, policy, want) in cases {
        assert_eq!(fresh(&task, &policy, &f, interval), want, "{name}");
    }
}

// ---------------------------------------------------------------- max_runtime

fn max_runtime(limit: Duration) -> Policy {
    Policy {
        max_runtime: Some(limit.to_std().expect("a positive limit")),
        ..policy()
    }
}

#[test]
fn max_runtime_boundaries() {
    // A busy loop: CPU moved since the last sweep, so it is never hung.
    let busy_then = [leader_cpu(1000)];
    let busy = || Some(found(vec![leader_cpu(1001)]));
    let busy_prior = || prior(&busy_then, Some(now() - mins(2)), Some(now() - mins(2)));
    let since = |at: DateTime<Utc>| task_with(|t| t.started_at = Some(at));
    // The fixtures' task has run exactly an hour at `now()`.
    let hour = mins(60);
    run(vec![
        case("alive: no max_runtime, a busy loop runs for ever")
            .probe(busy())
            .prior(busy_prior())
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("alive: exactly at max_runtime from started_at")
            .policy(max_runtime(hour))
            .probe(busy())
            .prior(busy_prior())
            .expect(expect(Kind::Alive).last("cpu", now())),
        case("timed_out: 1 ms past max_runtime from started_at")
            .task(since(now() - hour - millis(1)))
            .probe(Some(started_at(now() - hour - millis(10))))
            .policy(max_runtime(hour))
            .expect(
                expect(Kind::TimedOut)
                    .reason(&["past max_runtime of 1h", "running for 1h"])
                    .check("never starved: wall time", |j| j.starved.is_none()),
            ),
        case("timed_out: a busy loop progressing, past max_runtime")
            .policy(max_runtime(hour - millis(1)))
            .probe(busy())
            .prior(busy_prior())
            .expect(
                expect(Kind::TimedOut)
                    .last("cpu", now())
                    .check("progress is recorded, not hung", |j| {
                        j.evidence.idle_ms == Some(0)
                    }),
            ),
        case("alive: without started_at, exactly at max_runtime from the process's start")
            .task(task_with(|t| t.started_at = None))
            .policy(max_runtime(hour))
            .expect(expect(Kind::Alive)),
        case("timed_out: without started_at, one tick (10 ms) past max_runtime from the process's start; unproven")
            .task(task_with(|t| t.started_at = None))
            .policy(max_runtime(hour - millis(10)))
            .expect(
                expect(Kind::TimedOut).check("unproven: never signalled", |j| j.unproven),
            ),
        case("timed_out: the executor's start ticks prove it; measured from started_at")
            .task(task_with(|t| t.pid_start_ticks = Some(ticks_at(t0()))))
            .policy(max_runtime(hour - millis(1)))
            .expect(expect(Kind::TimedOut).check("proven", |j| !j.unproven)),
        case("hung wins over timed_out when both hold")
            .task(task_with(|t| t.last_progress_at = Some(now() - mins(31))))
            .policy(Policy {
                max_runtime: Some(std::time::Duration::from_secs(60)),
                ..heartbeat_only()
            })
            .expect(expect(Kind::Hung)),
        case("dead wins: past max_runtime but exited")
            .probe(Some(Probe::Gone))
            .policy(max_runtime(mins(1)))
            .expect(expect(Kind::Dead)),
        case("zombie wins: past max_runtime but not reaped")
            .probe(Some(running('Z')))
            .policy(max_runtime(mins(1)))
            .expect(expect(Kind::Zombie)),
        case("pid_reused wins: past max_runtime but another process")
            .task(task_with(|t| t.pid_start_ticks = Some(ticks_at(t0()) + 1)))
            .policy(max_runtime(mins(1)))
            .expect(expect(Kind::PidReused)),
        case("stopped: unverifiable, not timed_out")
            .probe(Some(running('T')))
            .policy(max_runtime(mins(1)))
            .expect(expect(Kind::Unverifiable)),
        case("alive: started_at in the near future has not run yet (clock step)")
            .task(since(now() + mins(1)))
            .probe(Some(started_at(now() + mins(1))))
            .policy(max_runtime(secs(1)))
            .expect(expect(Kind::Alive)),
        case("unverifiable: started_at past future_tolerance, whatever max_runtime says")
            .task(since(now() + mins(6)))
            .policy(max_runtime(secs(1)))
            .expect(expect(Kind::Unverifiable).reason(&["ahead of now"])),
        case("alive: a limit past the end of time never times out (checked arithmetic)")
            .policy(Policy {
                max_runtime: Some(std::time::Duration::MAX),
                ..policy()
            })
            .expect(expect(Kind::Alive)),
    ]);
}

#[test]
fn max_runtime_is_kept_with_the_inputs_and_replayed() {
    let p = max_runtime(mins(59));
    let inputs = PolicyInputs::of(&p);
    assert_eq!(inputs.max_runtime_ms, Some(59 * 60 * 1000));
    assert_eq!(inputs.policy().max_runtime, p.max_runtime);
    let json = serde_json::to_value(&inputs).expect("json");
    assert_eq!(json["max_runtime_ms"], 59 * 60 * 1000);
    // Inputs kept before the key existed read as no limit.
    let mut old = json.clone();
    old.as_object_mut()
        .expect("object")
        .remove("max_runtime_ms");
    let old: PolicyInputs = serde_json::from_value(old).expect("old inputs read");
    assert_eq!(old.max_runtime_ms, None);
    assert_eq!(old.policy().max_runtime, None);
    // No limit is not written at all.
    let none = serde_json::to_value(PolicyInputs::of(&policy())).expect("json");
    assert!(none.get("max_runtime_ms").is_none(), "{none}");

    // The replay of a timed_out finding says timed_out again.
    let b = boot();
    let kept = Inputs {
        task: task(),
        probe: Some(running('S')),
        prior: None,
        policy: inputs,
        now: now(),
        boot: b.clone(),
        host: HERE.into(),
        sweep: SweepKind::Scheduled,
        hang_floor: None,
        future_tolerance_ms: None,
        pid_max: None,
        config_fingerprint: "f".into(),
        verdict: Kind::TimedOut,
        continues: None,
    };
    let back: Inputs =
        serde_json::from_value(serde_json::to_value(&kept).expect("json")).expect("read back");
    assert_eq!(back.replay().kind, Kind::TimedOut);
}

#[test]
fn fresh_reads_a_task_that_may_be_past_max_runtime() {
    let interval = std::time::Duration::from_secs(120);
    let b = boot();
    let f = facts(now(), &b, SweepKind::Scheduled);
    for (name, task, policy, want) in [
        ("no limit", task(), policy(), true),
        ("exactly at the limit", task(), max_runtime(mins(60)), true),
        (
            "1 ms past the limit",
            task(),
            max_runtime(mins(60) - millis(1)),
            false,
        ),
        (
            "a limit but no started_at: only /proc knows the start",
            task_with(|t| t.started_at = None),
            max_runtime(Duration::days(1)),
            false,
        ),
    ] {
        assert_eq!(fresh(&task, &policy, &f, interval), want, "{name}");
    }
}
