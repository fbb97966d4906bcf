//! Table-driven tests of `decide`: exit grace, starvation, shadow mode,
//! what may be signalled, and the mass-action brake. Fixed times only.

use super::*;
use crate::judge::Evidence;
use crate::model::TaskState;
use chrono::TimeZone;

// ---------------------------------------------------------------- fixtures

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 7, 0, 0).unwrap()
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

fn millis(n: i64) -> Duration {
    Duration::milliseconds(n)
}

/// The DESIGN defaults.
fn policy() -> Policy {
    Policy {
        timeout: std::time::Duration::from_secs(30 * 60),
        startup_grace: std::time::Duration::from_secs(120),
        progress: vec![
            crate::model::Signal::Heartbeat,
            crate::model::Signal::Cpu,
            crate::model::Signal::Io,
        ],
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

fn shadow() -> Policy {
    Policy {
        mode: Mode::Shadow,
        ..policy()
    }
}

fn mark_only() -> Policy {
    Policy {
        on_hung: OnHung::MarkOnly,
        ..policy()
    }
}

fn type_max(n: u32) -> Policy {
    Policy {
        max_actions_per_sweep: Some(n),
        ..policy()
    }
}

/// Task number `n`: id `t<n>`, pid `5000 + n`, droid type `coder`.
fn task(n: usize) -> Task {
    Task {
        id: format!("t{n}"),
        plan_id: Some("p1".into()),
        droid_type: "coder".into(),
        state: TaskState::Running,
        pid: Some(5000 + n as i32),
        host: None,
        attempt: 1,
        started_at: Some(now() - Duration::hours(1)),
        last_progress_at: Some(now() - Duration::minutes(45)),
        finished_at: None,
        error: None,
        pid_start_ticks: None,
        created_at: None,
    }
}

fn judgement(kind: Kind) -> Judgement {
    Judgement {
        kind,
        evidence: Evidence {
            reason: format!("test {kind}"),
            gone_since: kind.is_gone().then(|| now() - secs(60)),
            ..Evidence::default()
        },
        grace_exempt: false,
        pooled: false,
        unproven: false,
        starved: None,
        observation: None,
    }
}

/// A gone verdict first seen gone `ago` before now.
fn gone(kind: Kind, ago: Duration) -> Judgement {
    let mut j = judgement(kind);
    j.evidence.gone_since = Some(now() - ago);
    j
}

/// A dead verdict past its exit grace: acts.
fn actionable() -> Judgement {
    gone(Kind::Dead, secs(60))
}

struct Item {
    task: Task,
    judgement: Judgement,
    policy: Policy,
}

fn item(judgement: Judgement) -> Item {
    Item {
        task: task(0),
        judgement,
        policy: policy(),
    }
}

impl Item {
    fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    fn droid_type(mut self, t: &str) -> Self {
        self.task.droid_type = t.into();
        self
    }
    fn pid(mut self, pid: Option<i32>) -> Self {
        self.task.pid = pid;
        self
    }
    fn pooled(mut self) -> Self {
        self.judgement.pooled = true;
        self
    }
    fn exempt(mut self) -> Self {
        self.judgement.grace_exempt = true;
        self
    }
}

/// `n` copies of an item, with distinct task ids and pids.
fn many(n: usize, make: impl Fn() -> Item) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let mut it = make();
            it.task = Task {
                droid_type: it.task.droid_type.clone(),
                ..task(i)
            };
            it
        })
        .collect()
}

fn sweep() -> SweepFacts {
    SweepFacts {
        now: now(),
        starved: None,
        running: 20,
        max_actions: None,
        shared_pids: Vec::new(),
        recent_actions: 0,
        window_limit: None,
        window: std::time::Duration::from_secs(30 * 60),
        extra_actions: 0,
    }
}

type Expected = (Action, Outcome, Option<&'static str>);

struct DCase {
    name: &'static str,
    items: Vec<Item>,
    facts: SweepFacts,
    /// One per item; `Some(text)`: the note must contain it; `None`: the
    /// note is not checked.
    expect: Vec<Expected>,
}

fn one(name: &'static str, it: Item, facts: SweepFacts, expect: Expected) -> DCase {
    DCase {
        name,
        items: vec![it],
        facts,
        expect: vec![expect],
    }
}

fn all(n: usize, e: Expected) -> Vec<Expected> {
    vec![e; n]
}

fn run(cases: Vec<DCase>) {
    let mut failures = Vec::new();
    for c in &cases {
        assert_eq!(c.items.len(), c.expect.len(), "[{}] fixture", c.name);
        let cases_in: Vec<Case> = c
            .items
            .iter()
            .map(|i| Case {
                task: &i.task,
                judgement: &i.judgement,
                policy: &i.policy,
            })
            .collect();
        let got = decide(&cases_in, &c.facts);
        if got.len() != c.items.len() {
            failures.push(format!(
                "[{}] {} decisions for {} cases",
                c.name,
                got.len(),
                c.items.len()
            ));
            continue;
        }
        for (i, (d, (action, outcome, note))) in got.iter().zip(&c.expect).enumerate() {
            let who = format!("[{}] case {i} ({})", c.name, c.items[i].task.id);
            if (d.action, d.outcome) != (*action, *outcome) {
                failures.push(format!(
                    "{who}: expected ({action:?}, {outcome:?}), got ({:?}, {:?}) note {:?}",
                    d.action, d.outcome, d.note
                ));
                continue;
            }
            if let Some(text) = note {
                if !d.note.as_deref().is_some_and(|n| n.contains(text)) {
                    failures.push(format!("{who}: note {:?} lacks {text:?}", d.note));
                }
            }
            let act_now = action.acts() && *outcome == Outcome::Pending;
            if d.should_act() != act_now {
                failures.push(format!("{who}: should_act() is {}", d.should_act()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const ACT: Expected = (Action::MarkFailed, Outcome::Pending, None);
const TERMINATE: Expected = (Action::TerminateAndMark, Outcome::Pending, None);
const REPORT: Expected = (Action::None, Outcome::Reported, None);
const WAIT: Expected = (Action::Deferred, Outcome::Pending, Some("exit grace"));
const BRAKED: Expected = (
    Action::MarkFailed,
    Outcome::Braked,
    Some("mass-action brake"),
);

// ---------------------------------------------------------------- per verdict

#[test]
fn single_verdicts() {
    let starved = || SweepFacts {
        starved: Some("cpu pressure 97%".into()),
        ..sweep()
    };
    let shared = |pids: Vec<i32>| SweepFacts {
        shared_pids: pids,
        ..sweep()
    };
    run(vec![
        one(
            "alive: nothing to do",
            item(judgement(Kind::Alive)),
            sweep(),
            REPORT,
        ),
        one(
            "unverifiable: reported only",
            item(judgement(Kind::Unverifiable)),
            sweep(),
            REPORT,
        ),
        one(
            "unverifiable: reported only, even in shadow",
            item(judgement(Kind::Unverifiable)).policy(shadow()),
            sweep(),
            REPORT,
        ),
        one(
            "unverifiable: reported only, even when starved",
            item(judgement(Kind::Unverifiable)),
            starved(),
            REPORT,
        ),
        one(
            "hung: terminate and mark",
            item(judgement(Kind::Hung)),
            sweep(),
            TERMINATE,
        ),
        one(
            "hung: on_hung = mark_only",
            item(judgement(Kind::Hung)).policy(mark_only()),
            sweep(),
            ACT,
        ),
        one(
            "hung: pooled worker is marked only",
            item(judgement(Kind::Hung)).pooled(),
            sweep(),
            (Action::MarkFailed, Outcome::Pending, Some("pooled")),
        ),
        one(
            "hung: pid named by another RUNNING task is marked only",
            item(judgement(Kind::Hung)),
            shared(vec![4999, 5000]),
            (Action::MarkFailed, Outcome::Pending, Some("same pid")),
        ),
        one(
            "hung: other pids shared, this one not",
            item(judgement(Kind::Hung)),
            shared(vec![4999, 5001]),
            TERMINATE,
        ),
        one(
            "hung: no pid is not a shared pid",
            item(judgement(Kind::Hung)).pid(None),
            shared(vec![5000]),
            TERMINATE,
        ),
        one(
            "hung while starved: deferred",
            item(judgement(Kind::Hung)),
            starved(),
            (
                Action::Deferred,
                Outcome::DeferredStarvation,
                Some("cpu pressure 97%"),
            ),
        ),
        one(
            "hung while starved, mark_only: deferred",
            item(judgement(Kind::Hung)).policy(mark_only()),
            starved(),
            (Action::Deferred, Outcome::DeferredStarvation, None),
        ),
        one(
            "hung while starved, shadow: deferred",
            item(judgement(Kind::Hung)).policy(shadow()),
            starved(),
            (Action::Deferred, Outcome::DeferredStarvation, None),
        ),
        one(
            "dead while starved: starvation defers only hung",
            item(actionable()),
            starved(),
            ACT,
        ),
        one(
            "shadow: hung would be terminated and marked",
            item(judgement(Kind::Hung)).policy(shadow()),
            sweep(),
            (Action::TerminateAndMark, Outcome::WouldMarkFailed, None),
        ),
        one(
            "shadow: pooled hung would be marked",
            item(judgement(Kind::Hung)).policy(shadow()).pooled(),
            sweep(),
            (Action::MarkFailed, Outcome::WouldMarkFailed, None),
        ),
        one(
            "shadow: dead past exit grace would be marked",
            item(actionable()).policy(shadow()),
            sweep(),
            (Action::MarkFailed, Outcome::WouldMarkFailed, None),
        ),
        one(
            "shadow: dead within exit grace still waits",
            item(gone(Kind::Dead, secs(5))).policy(shadow()),
            sweep(),
            WAIT,
        ),
    ]);
}

#[test]
fn exit_grace() {
    let mut cases = Vec::new();
    for kind in [Kind::Dead, Kind::Zombie, Kind::PidReused, Kind::Orphan] {
        cases.extend([
            one(
                "gone just now: wait",
                item(gone(kind, Duration::zero())),
                sweep(),
                WAIT,
            ),
            one(
                "gone 1 ms short of exit_grace: wait",
                item(gone(kind, secs(30) - millis(1))),
                sweep(),
                WAIT,
            ),
            one(
                "gone exactly exit_grace ago: act",
                item(gone(kind, secs(30))),
                sweep(),
                ACT,
            ),
            one(
                "gone long ago: act",
                item(gone(kind, secs(600))),
                sweep(),
                ACT,
            ),
            one(
                "grace_exempt acts at once",
                item(gone(kind, Duration::zero())).exempt(),
                sweep(),
                ACT,
            ),
            one(
                "grace_exempt without gone_since acts",
                {
                    let mut j = judgement(kind);
                    j.evidence.gone_since = None;
                    item(j).exempt()
                },
                sweep(),
                ACT,
            ),
            one(
                "no gone_since and not exempt: wait",
                {
                    let mut j = judgement(kind);
                    j.evidence.gone_since = None;
                    item(j)
                },
                sweep(),
                WAIT,
            ),
            one(
                "a longer exit_grace per policy: wait",
                item(gone(kind, secs(60))).policy(Policy {
                    exit_grace: std::time::Duration::from_secs(120),
                    ..policy()
                }),
                sweep(),
                WAIT,
            ),
            one(
                "on_hung does not apply to gone kinds",
                item(gone(kind, secs(60))).policy(mark_only()),
                sweep(),
                ACT,
            ),
            one(
                "pooled does not apply to gone kinds",
                item(gone(kind, secs(60))).pooled(),
                sweep(),
                ACT,
            ),
        ]);
    }
    run(cases);
}

// ---------------------------------------------------------------- the brake

#[test]
fn mass_action_brake() {
    let with = |running: usize, max_actions: Option<u32>| SweepFacts {
        running,
        max_actions,
        ..sweep()
    };
    let mixed = |n: usize| -> Vec<Item> {
        let mut v = many(n, || item(actionable()));
        v.extend(many(1, || item(judgement(Kind::Hung))));
        v
    };
    run(vec![
        DCase {
            name: "10 actions with 20 running: act",
            items: many(10, || item(actionable())),
            facts: with(20, None),
            expect: all(10, ACT),
        },
        DCase {
            name: "11 actions with 20 running: all braked",
            items: many(11, || item(actionable())),
            facts: with(20, None),
            expect: all(
                11,
                (
                    Action::MarkFailed,
                    Outcome::Braked,
                    Some("would act on 11 tasks, more than the limit of 10"),
                ),
            ),
        },
        DCase {
            name: "11 actions with 0 running reported: floor of 10 still brakes",
            items: many(11, || item(actionable())),
            facts: with(0, None),
            expect: all(11, BRAKED),
        },
        DCase {
            name: "hung counts toward the brake, and is braked too",
            items: mixed(10),
            facts: with(20, None),
            expect: {
                let mut e = all(10, BRAKED);
                e.push((Action::TerminateAndMark, Outcome::Braked, None));
                e
            },
        },
        DCase {
            name: "9 dead + 1 hung: act",
            items: mixed(9),
            facts: with(20, None),
            expect: {
                let mut e = all(9, ACT);
                e.push(TERMINATE);
                e
            },
        },
        DCase {
            name: "20% rule: 20 actions with 100 running act",
            items: many(20, || item(actionable())),
            facts: with(100, None),
            expect: all(20, ACT),
        },
        DCase {
            name: "20% rule: 21 actions with 100 running are braked",
            items: many(21, || item(actionable())),
            facts: with(100, None),
            expect: all(21, BRAKED),
        },
        DCase {
            name: "20% rule: 10 is the floor with 30 running (20% = 6)",
            items: many(10, || item(actionable())),
            facts: with(30, None),
            expect: all(10, ACT),
        },
        DCase {
            name: "explicit [defaults] max 3: 3 act",
            items: many(3, || item(actionable())),
            facts: with(100, Some(3)),
            expect: all(3, ACT),
        },
        DCase {
            name: "explicit [defaults] max 3: 4 braked (below the floor of 10)",
            items: many(4, || item(actionable())),
            facts: with(100, Some(3)),
            expect: all(4, BRAKED),
        },
        DCase {
            name: "explicit [defaults] max 50 replaces 20% of 100",
            items: many(50, || item(actionable())),
            facts: with(100, Some(50)),
            expect: all(50, ACT),
        },
        DCase {
            name: "explicit [defaults] max 50: 51 braked",
            items: many(51, || item(actionable())),
            facts: with(100, Some(50)),
            expect: all(51, BRAKED),
        },
        DCase {
            name: "shadow verdicts count and are braked",
            items: many(11, || item(actionable()).policy(shadow())),
            facts: with(20, None),
            expect: all(11, BRAKED),
        },
        DCase {
            name: "shadow: 10 would-act with 20 running is not braked",
            items: many(10, || item(actionable()).policy(shadow())),
            facts: with(20, None),
            expect: all(10, (Action::MarkFailed, Outcome::WouldMarkFailed, None)),
        },
    ]);
}

#[test]
fn brake_ignores_what_does_not_act() {
    let starved = |running: usize| SweepFacts {
        running,
        starved: Some("host was suspended".into()),
        ..sweep()
    };
    // 10 acting + 5 waiting for exit grace + 5 unverifiable + 5 alive.
    let quiet = || {
        let mut v = many(10, || item(actionable()));
        v.extend(many(5, || item(gone(Kind::Dead, secs(1)))));
        v.extend(many(5, || item(judgement(Kind::Unverifiable))));
        v.extend(many(5, || item(judgement(Kind::Alive))));
        v
    };
    let quiet_expect = || {
        let mut e = all(10, ACT);
        e.extend(all(5, WAIT));
        e.extend(all(10, REPORT));
        e
    };
    run(vec![
        DCase {
            name: "deferred, unverifiable and alive do not count",
            items: quiet(),
            facts: SweepFacts {
                running: 25,
                ..sweep()
            },
            expect: quiet_expect(),
        },
        DCase {
            name: "hung deferred for starvation does not count",
            items: {
                let mut v = many(10, || item(actionable()));
                v.extend(many(5, || item(judgement(Kind::Hung))));
                v
            },
            facts: starved(15),
            expect: {
                let mut e = all(10, ACT);
                e.extend(all(
                    5,
                    (Action::Deferred, Outcome::DeferredStarvation, None),
                ));
                e
            },
        },
        DCase {
            name: "when braked, waiting and unverifiable cases keep their outcome",
            items: {
                let mut v = quiet();
                v.extend(many(1, || item(actionable())));
                v
            },
            facts: SweepFacts {
                running: 26,
                ..sweep()
            },
            expect: {
                let mut e = all(10, BRAKED);
                e.extend(all(5, WAIT));
                e.extend(all(10, REPORT));
                e.push(BRAKED);
                e
            },
        },
    ]);
}

#[test]
fn per_type_brake() {
    let with_running = |running: usize| SweepFacts { running, ..sweep() };
    let typed = |t: &'static str, p: fn() -> Policy, n: usize| {
        many(n, move || item(actionable()).droid_type(t).policy(p()))
    };
    run(vec![
        DCase {
            name: "type max 2: 2 act",
            items: typed("scraper", || type_max(2), 2),
            facts: with_running(20),
            expect: all(2, ACT),
        },
        DCase {
            name: "type max 2: 3 of that type braked, another type acts",
            items: {
                let mut v = typed("scraper", || type_max(2), 3);
                v.extend(typed("coder", policy, 3));
                v
            },
            facts: with_running(20),
            expect: {
                let mut e = all(
                    3,
                    (
                        Action::MarkFailed,
                        Outcome::Braked,
                        Some("would act on 3 scraper tasks, more than its limit of 2"),
                    ),
                );
                e.extend(all(3, ACT));
                e
            },
        },
        DCase {
            name: "type max 2, interleaved with another type",
            items: {
                let mut v = Vec::new();
                for (a, b) in typed("scraper", || type_max(2), 3)
                    .into_iter()
                    .zip(typed("coder", policy, 3))
                {
                    v.push(a);
                    v.push(b);
                }
                v
            },
            facts: with_running(20),
            expect: [BRAKED, ACT].repeat(3),
        },
        DCase {
            name: "two typed limits: only the type over its own is braked",
            items: {
                let mut v = typed("scraper", || type_max(2), 3);
                v.extend(typed("coder", || type_max(5), 5));
                v
            },
            facts: with_running(20),
            expect: {
                let mut e = all(3, BRAKED);
                e.extend(all(5, ACT));
                e
            },
        },
        DCase {
            name: "type max: waiting cases of that type do not count",
            items: {
                let mut v = typed("scraper", || type_max(2), 2);
                v.extend(many(3, || {
                    item(gone(Kind::Dead, secs(1)))
                        .droid_type("scraper")
                        .policy(type_max(2))
                }));
                v
            },
            facts: with_running(20),
            expect: {
                let mut e = all(2, ACT);
                e.extend(all(3, WAIT));
                e
            },
        },
        DCase {
            name: "type max above the global limit: the global brake still holds",
            items: typed("scraper", || type_max(50), 11),
            facts: with_running(20),
            expect: all(11, BRAKED),
        },
    ]);
}

// ------------------------------------------------- issue 14: trust on real hosts

/// A hung verdict `overdue` past its 30-minute timeout.
fn hung_overdue(overdue: Duration) -> Judgement {
    let mut j = judgement(Kind::Hung);
    j.evidence.timeout_ms = Some(30 * 60 * 1000);
    j.evidence.idle_ms = Some(30 * 60 * 1000 + overdue.num_milliseconds());
    j
}

#[test]
fn deferral_is_bounded_by_max_deferral() {
    // The default max_deferral is 3 × timeout = 90 minutes.
    let starved = || SweepFacts {
        starved: Some("Foreman waited 3s for a CPU".into()),
        ..sweep()
    };
    let tree_starved = |overdue| {
        let mut j = hung_overdue(overdue);
        j.starved = Some("1 of its 1 processes are runnable".into());
        j
    };
    let explicit = Policy {
        max_deferral: Some(std::time::Duration::from_secs(600)),
        ..policy()
    };
    run(vec![
        one(
            "foreman starved, just overdue: deferred",
            item(hung_overdue(secs(1))),
            starved(),
            (
                Action::Deferred,
                Outcome::DeferredStarvation,
                Some("max_deferral"),
            ),
        ),
        one(
            "foreman starved, overdue exactly max_deferral: still deferred",
            item(hung_overdue(Duration::minutes(90))),
            starved(),
            (Action::Deferred, Outcome::DeferredStarvation, None),
        ),
        one(
            "foreman starved, one ms past max_deferral: acts, and says it waited",
            item(hung_overdue(Duration::minutes(90) + millis(1000))),
            starved(),
            (Action::TerminateAndMark, Outcome::Pending, Some("waited")),
        ),
        one(
            "tree starved: deferred",
            item(tree_starved(Duration::minutes(5))),
            sweep(),
            (
                Action::Deferred,
                Outcome::DeferredStarvation,
                Some("runnable"),
            ),
        ),
        one(
            "tree starved past max_deferral: acts",
            item(tree_starved(Duration::minutes(91))),
            sweep(),
            (Action::TerminateAndMark, Outcome::Pending, Some("runnable")),
        ),
        one(
            "explicit max_deferral 10m: 11m overdue acts",
            item(tree_starved(Duration::minutes(11))).policy(explicit.clone()),
            sweep(),
            (
                Action::TerminateAndMark,
                Outcome::Pending,
                Some("waited 11m"),
            ),
        ),
        one(
            "explicit max_deferral 10m: 9m overdue waits",
            item(tree_starved(Duration::minutes(9))).policy(explicit),
            sweep(),
            (Action::Deferred, Outcome::DeferredStarvation, None),
        ),
        one(
            "not starved: a hung verdict acts at once",
            item(hung_overdue(secs(1))),
            sweep(),
            TERMINATE,
        ),
    ]);
}

#[test]
fn unproven_identity_is_marked_never_signalled() {
    let mut j = judgement(Kind::Hung);
    j.unproven = true;
    run(vec![one(
        "hung, no started_at and no pid_start_ticks",
        item(j),
        sweep(),
        (
            Action::MarkFailed,
            Outcome::Pending,
            Some("never signalled"),
        ),
    )]);
}

#[test]
fn rolling_window_brake() {
    let with = |recent: usize, window_limit: Option<u32>| SweepFacts {
        running: 20,
        recent_actions: recent,
        window_limit,
        ..sweep()
    };
    run(vec![
        DCase {
            // Per sweep 10; per window 2 × 10 = 20: 17 + 3 = 20 acts.
            name: "a trickle up to the window limit acts",
            items: many(3, || item(actionable())),
            facts: with(17, None),
            expect: all(3, ACT),
        },
        DCase {
            name: "one more than the window limit brakes the whole sweep",
            items: many(3, || item(actionable())),
            facts: with(18, None),
            expect: all(3, (Action::MarkFailed, Outcome::Braked, Some("per window"))),
        },
        DCase {
            name: "explicit max_actions_per_window",
            items: many(2, || item(actionable())),
            facts: with(4, Some(5)),
            expect: all(
                2,
                (
                    Action::MarkFailed,
                    Outcome::Braked,
                    Some("limit of 5 per window"),
                ),
            ),
        },
        DCase {
            name: "nothing to act on is never braked by the window",
            items: many(2, || item(judgement(Kind::Unverifiable))),
            facts: with(1000, None),
            expect: all(2, REPORT),
        },
    ]);
}

#[test]
fn strays_count_with_tasks_in_the_brake() {
    let facts = SweepFacts {
        running: 20,
        extra_actions: 5,
        ..sweep()
    };
    // 6 tasks + 5 strays = 11 > 10.
    let cases_in: Vec<Item> = many(6, || item(actionable()));
    let cs: Vec<Case> = cases_in
        .iter()
        .map(|i| Case {
            task: &i.task,
            judgement: &i.judgement,
            policy: &i.policy,
        })
        .collect();
    let (ds, brake) = decide_sweep(&cs, &facts);
    assert!(
        brake.as_deref().is_some_and(|b| b.contains("11")),
        "{brake:?}"
    );
    assert!(ds.iter().all(|d| d.outcome == Outcome::Braked));
    // Strays alone over the limit: the sweep's brake holds for them.
    let (_, brake) = decide_sweep(
        &[],
        &SweepFacts {
            extra_actions: 11,
            ..facts
        },
    );
    assert!(brake.is_some());
}

#[test]
fn shadow_would_actions_never_brake_enforced_ones() {
    // 11 would-be actions of a shadow type beside 1 real one: the real one
    // acts; the shadow ones show the brake enforcing would meet.
    let mut items = many(11, || {
        item(actionable()).droid_type("builder").policy(shadow())
    });
    items.push(item(actionable()));
    let mut expect = all(
        11,
        (
            Action::MarkFailed,
            Outcome::Braked,
            Some("mass-action brake"),
        ),
    );
    expect.push(ACT);
    run(vec![DCase {
        name: "shadow type over the limit, one enforced death",
        items,
        facts: SweepFacts {
            running: 20,
            ..sweep()
        },
        expect,
    }]);
}

#[test]
fn timed_out_is_stopped_like_a_hung_task() {
    let timed_out = || item(judgement(Kind::TimedOut));
    let shared = |pids: Vec<i32>| SweepFacts {
        shared_pids: pids,
        ..sweep()
    };
    let unproven = || {
        let mut it = timed_out();
        it.judgement.unproven = true;
        it
    };
    run(vec![
        one(
            "timed_out: terminate and mark",
            timed_out(),
            sweep(),
            TERMINATE,
        ),
        one(
            "timed_out: on_hung = mark_only",
            timed_out().policy(mark_only()),
            sweep(),
            ACT,
        ),
        one(
            "timed_out: pooled worker is marked only",
            timed_out().pooled(),
            sweep(),
            (Action::MarkFailed, Outcome::Pending, Some("pooled")),
        ),
        one(
            "timed_out: unproven identity is marked only",
            unproven(),
            sweep(),
            (
                Action::MarkFailed,
                Outcome::Pending,
                Some("never signalled"),
            ),
        ),
        one(
            "timed_out: pid named by another RUNNING task is marked only",
            timed_out(),
            shared(vec![5000]),
            (Action::MarkFailed, Outcome::Pending, Some("same pid")),
        ),
        one(
            "shadow: timed_out would be terminated and marked",
            timed_out().policy(shadow()),
            sweep(),
            (Action::TerminateAndMark, Outcome::WouldMarkFailed, None),
        ),
        one(
            "shadow: pooled timed_out would be marked",
            timed_out().policy(shadow()).pooled(),
            sweep(),
            (Action::MarkFailed, Outcome::WouldMarkFailed, None),
        ),
        one(
            "timed_out while starved: run time is wall time, not deferred",
            timed_out(),
            SweepFacts {
                starved: Some("late tick".into()),
                ..sweep()
            },
            TERMINATE,
        ),
        one(
            "timed_out within exit grace: no grace, the process is alive",
            timed_out().policy(Policy {
                exit_grace: std::time::Duration::from_secs(3600),
                ..policy()
            }),
            sweep(),
            TERMINATE,
        ),
    ]);
    // It counts against the brake like any action.
    let over = limit(None, 20) + 1;
    run(vec![DCase {
        name: "timed_out: braked with the rest",
        items: many(over, timed_out),
        facts: sweep(),
        expect: all(
            over,
            (
                Action::TerminateAndMark,
                Outcome::Braked,
                Some("mass-action brake"),
            ),
        ),
    }]);
}
