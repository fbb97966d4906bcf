//! Table-driven tests of `assess`: every check, every boundary, each firing
//! on its own situation and quiet on a healthy fleet. Fixed times only: the
//! facts are built by hand around `now()`, no clock is read.

use super::*;
use crate::schedule::{Schedule, Zone};
use chrono::TimeZone;

const HERE: &str = "here";
const OTHER: &str = "other";

const M: i64 = 60;
const H: i64 = 3_600;
const D: i64 = 86_400;

/// The sweep interval of the fixtures: sweeps more than 10 minutes apart
/// are a gap.
const INTERVAL: i64 = 5 * M;

// ---------------------------------------------------------------- fixtures

/// The check-up runs at 06:00 UTC.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap()
}

/// `s` seconds before `now()`.
fn t(s: i64) -> DateTime<Utc> {
    now() - chrono::Duration::seconds(s)
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s as u64)
}

/// The built-in limits, with a run-time limit so that check is judged.
fn limits() -> WellbeingLimits {
    WellbeingLimits {
        active_within: secs(D),
        max_failure_rate: 0.25,
        min_finished: 5,
        max_findings: 3,
        max_median_runtime: Some(secs(30 * M)),
        dispatch_timeout: secs(H),
    }
}

fn cfg() -> WellbeingConfig {
    WellbeingConfig {
        schedule: Schedule::parse("0 0 6 * * *", Zone::Named(chrono_tz::UTC)).unwrap(),
        limits: limits(),
        droid_types: BTreeMap::new(),
        plan_stall_timeout: secs(H),
        max_sweep_errors: 5,
        max_outbox_age: secs(H),
        sinks: Vec::new(),
    }
}

fn task(id: &str, droid_type: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        plan_id: None,
        droid_type: droid_type.into(),
        state,
        pid: None,
        host: None,
        attempt: 1,
        started_at: None,
        last_progress_at: None,
        finished_at: None,
        error: None,
        pid_start_ticks: None,
        created_at: None,
    }
}

/// Builders on a task; offsets are seconds before `now()`.
trait TaskExt {
    fn started(self, ago: i64) -> Self;
    fn finished(self, ago: i64) -> Self;
    fn created(self, ago: i64) -> Self;
    fn on(self, host: &str) -> Self;
    fn in_plan(self, plan: &str) -> Self;
}

impl TaskExt for Task {
    fn started(mut self, ago: i64) -> Self {
        self.started_at = Some(t(ago));
        self
    }
    fn finished(mut self, ago: i64) -> Self {
        self.finished_at = Some(t(ago));
        self
    }
    fn created(mut self, ago: i64) -> Self {
        self.created_at = Some(t(ago));
        self
    }
    fn on(mut self, host: &str) -> Self {
        self.host = Some(host.into());
        self
    }
    fn in_plan(mut self, plan: &str) -> Self {
        self.plan_id = Some(plan.into());
        self
    }
}

/// A finished task that started `started` seconds ago and ran `run` seconds.
fn ran(id: &str, droid_type: &str, state: TaskState, started: i64, run: i64) -> Task {
    let mut t = task(id, droid_type, state)
        .started(started)
        .finished(started - run);
    if state == TaskState::Failed {
        t.error = Some("exit status 1".into());
    }
    t
}

fn running(id: &str, droid_type: &str, started: i64) -> Task {
    task(id, droid_type, TaskState::Running).started(started)
}

/// `n` finished tasks `{prefix}-{i}` of one state, started an hour apart
/// from `started` seconds ago, each running 10 minutes.
fn batch(prefix: &str, droid_type: &str, state: TaskState, n: usize, started: i64) -> Vec<Task> {
    (0..n)
        .map(|i| {
            ran(
                &format!("{prefix}-{i}"),
                droid_type,
                state,
                started + i as i64 * H,
                10 * M,
            )
        })
        .collect()
}

fn finding(id: i64, droid_type: Option<&str>, kind: &str, ago: i64) -> FindingFact {
    FindingFact {
        id,
        droid_type: droid_type.map(String::from),
        kind: kind.into(),
        task_id: format!("task-of-finding-{id}"),
        first_seen_at: t(ago),
    }
}

fn sweep(id: i64, ago: i64) -> SweepFact {
    SweepFact {
        id,
        started_at: t(ago),
        error: None,
        action_errors: 0,
    }
}

/// Sweeps at these offsets (oldest first, as the log gives them).
fn sweeps_at(before: Option<i64>, in_window: &[i64]) -> SweepFacts {
    SweepFacts {
        in_window: in_window
            .iter()
            .enumerate()
            .map(|(i, &ago)| sweep(1000 + i as i64, ago))
            .collect(),
        before_window: before.map(t),
    }
}

fn outbox_row(id: i64, sink: &str, ago: i64, last_error: Option<&str>) -> OutboxFact {
    OutboxFact {
        id,
        sink: sink.into(),
        queued_at: t(ago),
        about: format!("finding {id}"),
        attempts: if last_error.is_some() { 3 } else { 0 },
        last_error: last_error.map(String::from),
        expired_at: None,
    }
}

/// A healthy fleet: `alpha` and `beta` enabled in foreman.toml and in the
/// executor, both starting and finishing well; plan p1 moving, plan p0
/// done; a task of another host of a type this host does not run; sweeps
/// every interval over the day and the last one before it; an empty
/// outbox; a passing review.
fn healthy() -> Facts {
    let mut tasks = Vec::new();
    // alpha: 7 successes, 1 failure (12.5%), one running, run time 10m.
    for i in 0..6 {
        let mut t = ran(
            &format!("a-ok-{i}"),
            "alpha",
            TaskState::Success,
            2 * H + i * H,
            10 * M,
        );
        if i % 2 == 0 {
            t = t.on(HERE);
        }
        tasks.push(t);
    }
    tasks.push(ran("a-fail", "alpha", TaskState::Failed, 9 * H, 5 * M));
    tasks.push(ran("a-p0", "alpha", TaskState::Success, 3 * H, 10 * M).in_plan("p0"));
    tasks.push(running("a-run", "alpha", 5 * M).on(HERE));
    // beta: 7 successes, run time 20m, one PENDING just filed in plan p1.
    for i in 0..6 {
        tasks.push(ran(
            &format!("b-ok-{i}"),
            "beta",
            TaskState::Success,
            H + i * 2 * H,
            20 * M,
        ));
    }
    tasks.push(
        ran("b-p1-done", "beta", TaskState::Success, 50 * M, 20 * M)
            .in_plan("p1")
            .created(55 * M),
    );
    tasks.push(
        task("b-p1-next", "beta", TaskState::Pending)
            .in_plan("p1")
            .created(2 * M),
    );
    // Another host's work is not this host's to judge.
    tasks.push(running("z-run", "zeta", 10 * M).on(OTHER));

    // A sweep every interval over the day, the last one 200s ago.
    let in_window: Vec<i64> = (0..)
        .map(|k| D - 100 - k * INTERVAL)
        .take_while(|&ago| ago >= 100)
        .collect();

    Facts {
        now: now(),
        host: HERE.into(),
        interval: secs(INTERVAL),
        executor: Ok(ExecutorFacts {
            tasks,
            bad_rows: Vec::new(),
            droid_types: Some(BTreeMap::from([
                ("alpha".to_string(), true),
                ("beta".to_string(), true),
            ])),
        }),
        configured: BTreeMap::from([("alpha".to_string(), true), ("beta".to_string(), true)]),
        default_enabled: true,
        findings: vec![finding(1, Some("alpha"), "hung", 3 * H)],
        sweeps: sweeps_at(Some(D + 200), &in_window),
        outbox: Vec::new(),
        review: Some(ReviewFact {
            id: "review-1".into(),
            at: t(5 * H),
            passed: true,
            failed: Vec::new(),
        }),
    }
}

fn ex(f: &mut Facts) -> &mut ExecutorFacts {
    f.executor.as_mut().expect("fixture: the executor was read")
}

fn table(f: &mut Facts) -> &mut BTreeMap<String, bool> {
    ex(f)
        .droid_types
        .as_mut()
        .expect("fixture: the executor has a droid_types table")
}

fn dt(name: &str) -> Subject {
    Subject::DroidType(name.into())
}

fn plan(id: &str) -> Subject {
    Subject::Plan(id.into())
}

fn fm() -> Subject {
    Subject::Foreman
}

// ---------------------------------------------------------------- expectations

type Pred = Box<dyn Fn(&Check) -> bool>;

struct Expect {
    subject: Subject,
    check: &'static str,
    /// `None`: the check must not be in the output.
    status: Option<Status>,
    severity: Option<Severity>,
    says: Vec<String>,
    summary_is: Option<String>,
    checks: Vec<(String, Pred)>,
}

fn expect(subject: Subject, check: &'static str, status: Option<Status>) -> Expect {
    Expect {
        subject,
        check,
        status,
        severity: None,
        says: Vec::new(),
        summary_is: None,
        checks: Vec::new(),
    }
}

fn ok(subject: Subject, check: &'static str) -> Expect {
    expect(subject, check, Some(Status::Ok))
}

fn skipped(subject: Subject, check: &'static str) -> Expect {
    expect(subject, check, Some(Status::Skipped))
}

fn warning(subject: Subject, check: &'static str) -> Expect {
    Expect {
        severity: Some(Severity::Warning),
        ..expect(subject, check, Some(Status::Issue))
    }
}

fn critical(subject: Subject, check: &'static str) -> Expect {
    Expect {
        severity: Some(Severity::Critical),
        ..expect(subject, check, Some(Status::Issue))
    }
}

fn absent(subject: Subject, check: &'static str) -> Expect {
    expect(subject, check, None)
}

impl Expect {
    /// The summary contains each of these.
    fn says(mut self, parts: &[&str]) -> Self {
        self.says.extend(parts.iter().map(|s| s.to_string()));
        self
    }
    fn summary(mut self, s: &str) -> Self {
        self.summary_is = Some(s.into());
        self
    }
    /// The evidence at this JSON pointer is `v`.
    fn ev(mut self, pointer: &'static str, v: Value) -> Self {
        let what = format!("evidence {pointer} == {v}");
        self.checks.push((
            what,
            Box::new(move |c: &Check| c.evidence.pointer(pointer) == Some(&v)),
        ));
        self
    }
    fn types(mut self, types: &[&str]) -> Self {
        let want: Vec<String> = types.iter().map(|s| s.to_string()).collect();
        let what = format!("droid_types == {want:?}");
        self.checks
            .push((what, Box::new(move |c: &Check| c.droid_types == want)));
        self
    }
    fn check(mut self, what: &str, f: impl Fn(&Check) -> bool + 'static) -> Self {
        self.checks.push((what.into(), Box::new(f)));
        self
    }
}

/// The five checks after `enabled`, skipped for a type that is disabled
/// somewhere and idle (a busy one is judged all the same).
fn rest_skipped(name: &str) -> Vec<Expect> {
    [
        "active",
        "failure_rate",
        "findings",
        "median_runtime",
        "dispatch",
    ]
    .into_iter()
    .map(|c| skipped(dt(name), c).summary("not judged: the droid type is disabled and idle"))
    .collect()
}

// ---------------------------------------------------------------- cases

struct Case {
    name: &'static str,
    facts: Facts,
    cfg: WellbeingConfig,
    expects: Vec<Expect>,
    /// Issues the case causes besides the expected ones, and accepts.
    also: Vec<(Subject, &'static str)>,
}

/// A case on the healthy fleet.
fn case(name: &'static str) -> Case {
    Case {
        name,
        facts: healthy(),
        cfg: cfg(),
        expects: Vec::new(),
        also: Vec::new(),
    }
}

/// A case on the healthy fleet plus `gamma`, enabled in foreman.toml and
/// in the executor, with no task yet.
fn gamma(name: &'static str) -> Case {
    case(name).facts(|f| {
        f.configured.insert("gamma".into(), true);
        table(f).insert("gamma".into(), true);
    })
}

impl Case {
    fn facts(mut self, f: impl FnOnce(&mut Facts)) -> Self {
        f(&mut self.facts);
        self
    }
    fn cfg(mut self, f: impl FnOnce(&mut WellbeingConfig)) -> Self {
        f(&mut self.cfg);
        self
    }
    fn tasks(mut self, tasks: Vec<Task>) -> Self {
        ex(&mut self.facts).tasks.extend(tasks);
        self
    }
    fn task(self, t: Task) -> Self {
        self.tasks(vec![t])
    }
    fn expect(mut self, e: Expect) -> Self {
        self.expects.push(e);
        self
    }
    fn expect_all(mut self, es: Vec<Expect>) -> Self {
        self.expects.extend(es);
        self
    }
    /// This issue is a side effect of the case's situation, not its point.
    fn also(mut self, subject: Subject, check: &'static str) -> Self {
        self.also.push((subject, check));
        self
    }
}

fn dump(out: &[Check]) -> String {
    out.iter()
        .map(|c| {
            format!(
                "    {:?} {} {:?}{}: {}",
                c.subject,
                c.check,
                c.status,
                c.severity
                    .map(|s| format!("/{}", s.as_str()))
                    .unwrap_or_default(),
                c.summary
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Assess every case, then fail once listing every case that went wrong.
/// Besides its expectations, every case checks that each (subject, check)
/// appears once, that issues and only issues carry a severity and an
/// action, and that no issue appears that the case did not expect.
fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let out = assess(&c.facts, &c.cfg);
        let mut problems: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for k in &out {
            if !seen.insert((k.subject.clone(), k.check)) {
                problems.push(format!("{:?} {} appears twice", k.subject, k.check));
            }
            let issue = k.status == Status::Issue;
            if issue != k.severity.is_some() || issue != k.action.is_some() {
                problems.push(format!(
                    "{:?} {}: status {:?} with severity {:?} and action {:?}",
                    k.subject, k.check, k.status, k.severity, k.action
                ));
            }
        }
        for e in &c.expects {
            let got = out
                .iter()
                .find(|k| k.subject == e.subject && k.check == e.check);
            let label = format!("{:?} {}", e.subject, e.check);
            let Some(k) = got else {
                if e.status.is_some() {
                    problems.push(format!("{label}: missing"));
                }
                continue;
            };
            let Some(status) = e.status else {
                problems.push(format!("{label}: expected no such check"));
                continue;
            };
            if k.status != status {
                problems.push(format!(
                    "{label}: status {:?}, expected {status:?}",
                    k.status
                ));
                continue;
            }
            if e.severity.is_some() && k.severity != e.severity {
                problems.push(format!(
                    "{label}: severity {:?}, expected {:?}",
                    k.severity, e.severity
                ));
            }
            if let Some(s) = &e.summary_is {
                if &k.summary != s {
                    problems.push(format!("{label}: summary {:?}, expected {s:?}", k.summary));
                }
            }
            for part in &e.says {
                if !k.summary.contains(part.as_str()) {
                    problems.push(format!(
                        "{label}: summary {:?} does not say {part:?}",
                        k.summary
                    ));
                }
            }
            for (what, f) in &e.checks {
                if !f(k) {
                    problems.push(format!("{label}: {what} failed; evidence {}", k.evidence));
                }
            }
        }
        for k in out.iter().filter(|k| k.is_issue()) {
            let expected = c.expects.iter().any(|e| {
                e.subject == k.subject && e.check == k.check && e.status == Some(Status::Issue)
            }) || c
                .also
                .iter()
                .any(|(s, ch)| *s == k.subject && *ch == k.check);
            if !expected {
                problems.push(format!(
                    "unexpected issue {:?} {}: {}",
                    k.subject, k.check, k.summary
                ));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "[{}]\n  {}\n  got:\n{}",
                c.name,
                problems.join("\n  "),
                dump(&out)
            ));
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

/// (subject, check) of every check, in output order.
fn order(out: &[Check]) -> Vec<(Subject, &'static str)> {
    out.iter().map(|c| (c.subject.clone(), c.check)).collect()
}

fn type_checks(name: &str) -> Vec<(Subject, &'static str)> {
    [
        "enabled",
        "active",
        "failure_rate",
        "findings",
        "median_runtime",
        "dispatch",
    ]
    .into_iter()
    .map(|c| (dt(name), c))
    .collect()
}

fn foreman_checks() -> Vec<(Subject, &'static str)> {
    ["executor", "sweeps", "sweep_errors", "outbox", "review"]
        .into_iter()
        .map(|c| (fm(), c))
        .collect()
}

// ---------------------------------------------------------------- healthy

#[test]
fn healthy_fleet_has_no_issue() {
    let facts = healthy();
    let out = assess(&facts, &cfg());
    assert!(
        out.iter().all(|c| !c.is_issue()),
        "issues in a healthy fleet:\n{}",
        dump(&out)
    );
    run(vec![case("healthy fleet").expect_all(vec![
        ok(dt("alpha"), "enabled").summary("enabled"),
        ok(dt("alpha"), "active").summary("9 started in the last 1d, 1 running"),
        ok(dt("alpha"), "failure_rate").summary("1 of 8 finished tasks failed (12%)"),
        ok(dt("alpha"), "findings").summary("1 finding(s): 1 hung"),
        ok(dt("alpha"), "median_runtime").summary("median run time 10m over 8 runs"),
        ok(dt("alpha"), "dispatch").summary("0 PENDING, none waiting past 1h"),
        ok(dt("beta"), "enabled").summary("enabled"),
        ok(dt("beta"), "active").summary("7 started in the last 1d, 0 running"),
        ok(dt("beta"), "failure_rate").summary("0 of 7 finished tasks failed (0%)"),
        ok(dt("beta"), "findings").summary("no findings"),
        ok(dt("beta"), "median_runtime").summary("median run time 20m over 7 runs"),
        ok(dt("beta"), "dispatch").summary("1 PENDING, none waiting past 1h"),
        ok(plan("p1"), "stuck_plan")
            .summary("1 PENDING, 0 RUNNING: moving")
            .types(&["beta"]),
        absent(plan("p0"), "stuck_plan"),
        absent(dt("zeta"), "enabled"),
        ok(fm(), "executor").summary(&format!("read {} task(s)", ex(&mut healthy()).tasks.len())),
        ok(fm(), "sweeps").says(&["288 sweeps, none more than 10m apart"]),
        ok(fm(), "sweep_errors").summary("0 sweep(s) with errors"),
        ok(fm(), "outbox").summary("0 queued, none older than 1h"),
        ok(fm(), "review").says(&["passed"]),
    ])]);
    // Every check of both types, the moving plan and Foreman: nothing else.
    let mut want = type_checks("alpha");
    want.extend(type_checks("beta"));
    want.push((plan("p1"), "stuck_plan"));
    want.extend(foreman_checks());
    assert_eq!(order(&out), want);
}

// ---------------------------------------------------------------- enabled

/// Where Foreman's `enabled` for gamma comes from.
#[derive(Clone, Copy, Debug)]
enum Ours {
    Configured(bool),
    Inherited(bool),
}

/// The executor's droid_types table, as far as gamma goes.
#[derive(Clone, Copy, Debug)]
enum Theirs {
    NoTable,
    RowMissing,
    Row(bool),
}

/// gamma is busy (one RUNNING task) or idle (one task that finished two
/// days ago, so gamma is seen in the tasks but nothing started in the
/// window).
fn enabled_case(name: &'static str, ours: Ours, theirs: Theirs, busy: bool) -> Case {
    let mut c = case(name).facts(|f| {
        match ours {
            Ours::Configured(on) => {
                f.configured.insert("gamma".into(), on);
            }
            Ours::Inherited(on) => f.default_enabled = on,
        }
        match theirs {
            Theirs::NoTable => ex(f).droid_types = None,
            Theirs::RowMissing => {}
            Theirs::Row(on) => {
                table(f).insert("gamma".into(), on);
            }
        }
    });
    c = if busy {
        c.task(running("g-run", "gamma", 30 * M))
    } else {
        c.task(ran("g-old", "gamma", TaskState::Success, 2 * D, 10 * M))
    };
    c
}

#[test]
fn enabled_foreman_against_executor() {
    use Ours::*;
    use Theirs::*;
    let on = |name| {
        ok(dt(name), "enabled")
            .summary("enabled")
            .ev("/foreman_enabled", json!(true))
    };
    let off = |name| ok(dt(name), "enabled").summary("disabled, as expected");
    run(vec![
        // Foreman enabled (configured).
        enabled_case("configured on, no table", Configured(true), NoTable, true).expect_all(vec![
            on("gamma")
                .ev("/executor_has_droid_types", json!(false))
                .ev("/executor_enabled", Value::Null)
                .ev("/in_foreman_toml", json!(true)),
            ok(dt("gamma"), "active"),
        ]),
        enabled_case("configured on, row missing", Configured(true), RowMissing, true)
            .expect(
                warning(dt("gamma"), "enabled")
                    .summary("configured in foreman.toml but unknown to the executor's droid_types table")
                    .ev("/executor_has_droid_types", json!(true))
                    .ev("/executor_enabled", Value::Null)
                    .check("the action names the type", |c| {
                        c.action.as_deref().is_some_and(|a| a.contains("Add gamma"))
                    }),
            )
            .expect(ok(dt("gamma"), "active")),
        enabled_case("configured on, row on", Configured(true), Row(true), true).expect_all(vec![
            on("gamma").ev("/executor_enabled", json!(true)),
            ok(dt("gamma"), "active"),
        ]),
        enabled_case("configured on, row off", Configured(true), Row(false), true)
            .expect(
                warning(dt("gamma"), "enabled")
                    .summary("disabled in the executor's droid_types table but enabled in foreman.toml ([droid_types.gamma])")
                    .ev("/foreman_enabled", json!(true))
                    .ev("/executor_enabled", json!(false)),
            )
            .expect(ok(dt("gamma"), "active")),
        // Foreman disabled (configured).
        enabled_case("configured off, no table, running", Configured(false), NoTable, true)
            .expect(
                warning(dt("gamma"), "enabled")
                    .summary("disabled in foreman.toml ([droid_types.gamma]) but the executor still runs its tasks (1 running, 1 started in the last 1d)")
                    .ev("/running", json!(1)),
            )
            .expect(ok(dt("gamma"), "active")),
        enabled_case("configured off, no table, idle", Configured(false), NoTable, false)
            .expect(off("gamma").ev("/running", json!(0)).ev("/started_in_window", json!(0)))
            .expect_all(rest_skipped("gamma")),
        enabled_case("configured off, row missing, idle", Configured(false), RowMissing, false)
            .expect(off("gamma"))
            .expect_all(rest_skipped("gamma")),
        enabled_case("configured off, row on", Configured(false), Row(true), false)
            .expect(
                warning(dt("gamma"), "enabled")
                    .summary("disabled in foreman.toml ([droid_types.gamma]) but enabled in the executor's droid_types table"),
            )
            .expect_all(rest_skipped("gamma")),
        enabled_case("configured off, row off (disabled in both)", Configured(false), Row(false), false)
            .expect(
                off("gamma")
                    .ev("/foreman_enabled", json!(false))
                    .ev("/executor_enabled", json!(false)),
            )
            .expect_all(rest_skipped("gamma")),
        // As implemented: disabled in both stays "as expected" even while
        // the executor still runs (drains) its tasks.
        enabled_case(
            "configured off, row off, running",
            Configured(false),
            Row(false),
            true,
        )
        .expect(off("gamma").ev("/running", json!(1)))
        .expect(ok(dt("gamma"), "active")),
        // Foreman enabled by [defaults]: gamma is only seen in tasks or the table.
        enabled_case("inherited on, no table", Inherited(true), NoTable, true).expect_all(vec![
            on("gamma").ev("/in_foreman_toml", json!(false)),
            ok(dt("gamma"), "active"),
        ]),
        enabled_case("inherited on, row missing: not a configured type", Inherited(true), RowMissing, true)
            .expect_all(vec![on("gamma"), ok(dt("gamma"), "active")]),
        enabled_case("inherited on, row on", Inherited(true), Row(true), true)
            .expect_all(vec![on("gamma"), ok(dt("gamma"), "active")]),
        // Not named in foreman.toml, disabled in the executor and idle: a
        // retired type, not a mismatch to report every day.
        enabled_case("inherited on, row off", Inherited(true), Row(false), false)
            .expect(off("gamma").ev("/in_foreman_toml", json!(false)))
            .expect_all(rest_skipped("gamma")),
        // The same type still running is a mismatch.
        enabled_case("inherited on, row off, running", Inherited(true), Row(false), true)
            .expect(
                warning(dt("gamma"), "enabled")
                    .summary("disabled in the executor's droid_types table but enabled in foreman.toml ([defaults])")
                    .ev("/in_foreman_toml", json!(false)),
            )
            .expect(ok(dt("gamma"), "active")),
        // Foreman disabled by [defaults].
        enabled_case("inherited off, no table, running", Inherited(false), NoTable, true)
            .expect(
                warning(dt("gamma"), "enabled")
                    .says(&["disabled in foreman.toml ([defaults]) but the executor still runs its tasks"])
                    .check("the action names the type", |c| {
                        c.action.as_deref().is_some_and(|a| a.contains("[droid_types.gamma]"))
                    }),
            )
            .expect(ok(dt("gamma"), "active")),
        enabled_case("inherited off, no table, idle", Inherited(false), NoTable, false)
            .expect(off("gamma"))
            .expect_all(rest_skipped("gamma")),
        enabled_case("inherited off, row missing, idle", Inherited(false), RowMissing, false)
            .expect(off("gamma"))
            .expect_all(rest_skipped("gamma")),
        // Idle and not named in foreman.toml: nobody runs it, nothing to say.
        enabled_case("inherited off, row on", Inherited(false), Row(true), false)
            .expect(off("gamma"))
            .expect_all(rest_skipped("gamma")),
        enabled_case("inherited off, row off", Inherited(false), Row(false), false)
            .expect(off("gamma"))
            .expect_all(rest_skipped("gamma")),
        // Disabled with no table: a task that started in the window and
        // finished is busy too, not only a running one.
        case("configured off, no table, started in the window but not running")
            .facts(|f| {
                f.configured.insert("gamma".into(), false);
                ex(f).droid_types = None;
            })
            .task(ran("g-1", "gamma", TaskState::Success, 2 * H, 10 * M))
            .expect(
                warning(dt("gamma"), "enabled")
                    .says(&["(0 running, 1 started in the last 1d)"])
                    .ev("/started_in_window", json!(1)),
            )
            // Busy, so judged all the same.
            .expect(ok(dt("gamma"), "active")),
        // A type only in the executor's table, not in foreman.toml nor in
        // any task, inherits [defaults] too.
        case("only in the executor's table, enabled there, default on")
            .facts(|f| {
                table(f).insert("gamma".into(), true);
            })
            .expect(on("gamma"))
            .expect(warning(dt("gamma"), "active").says(&["no task started in the last 1d and none running"])),
        case("only in the executor's table, disabled there, default off")
            .facts(|f| {
                f.default_enabled = false;
                table(f).insert("gamma".into(), false);
            })
            .expect(off("gamma"))
            .expect_all(rest_skipped("gamma")),
        // Configured types keep their own `enabled` whatever [defaults] says.
        case("default off does not touch configured types")
            .facts(|f| f.default_enabled = false)
            .expect_all(vec![on("alpha"), on("beta"), ok(dt("alpha"), "active")]),
        // Another host's tasks do not make a type known here.
        case("a type only on another host is not a subject")
            .task(running("g-far", "gamma", 10 * M).on(OTHER))
            .expect(absent(dt("gamma"), "enabled"))
            .expect(absent(dt("zeta"), "enabled")),
        // The type's own host name counts as this host.
        case("a type only in tasks of this host by name is a subject")
            .task(running("g-here", "gamma", 10 * M).on(HERE))
            .expect(on("gamma").ev("/running", json!(1))),
    ]);
}

/// Disabled in foreman.toml, the executor's table has no row for the type
/// at all, and the executor runs its tasks: the same issue as with no
/// table, never a silent "disabled, as expected".
#[test]
fn enabled_disabled_here_row_missing_but_running_is_an_issue() {
    run(vec![
        enabled_case(
            "configured off, row missing, running",
            Ours::Configured(false),
            Theirs::RowMissing,
            true,
        )
        .expect(warning(dt("gamma"), "enabled").says(&["the executor still runs its tasks"])),
        enabled_case(
            "inherited off, row missing, running",
            Ours::Inherited(false),
            Theirs::RowMissing,
            true,
        )
        .expect(warning(dt("gamma"), "enabled").says(&["the executor still runs its tasks"])),
    ]);
}

// ---------------------------------------------------------------- active

#[test]
fn active_window() {
    run(vec![
        gamma("a start exactly at the window's start counts")
            .task(ran("g-1", "gamma", TaskState::Success, D, 10 * M))
            .expect(
                ok(dt("gamma"), "active")
                    .summary("1 started in the last 1d, 0 running")
                    .ev("/started_in_window", json!(1))
                    .ev("/active_within_s", json!(D)),
            ),
        gamma("a start one second before the window does not")
            .task(ran("g-1", "gamma", TaskState::Success, D + 1, 10 * M))
            .expect(
                warning(dt("gamma"), "active")
                    .summary(&format!(
                        "no task started in the last 1d and none running (last start seen: {})",
                        t(D + 1).to_rfc3339()
                    ))
                    .ev("/started_in_window", json!(0))
                    .check("the action names the type", |c| {
                        c.action
                            .as_deref()
                            .is_some_and(|a| a.contains("[wellbeing.droid_types.gamma]"))
                    }),
            ),
        gamma("no task ever: no last start").expect(
            warning(dt("gamma"), "active")
                .summary("no task started in the last 1d and none running")
                .ev("/last_started_at", Value::Null),
        ),
        gamma("a RUNNING task started long ago counts")
            .task(running("g-run", "gamma", 3 * D))
            .expect(
                ok(dt("gamma"), "active")
                    .summary("0 started in the last 1d, 1 running")
                    .ev("/running", json!(1)),
            ),
        gamma("a PENDING task is not activity")
            .task(task("g-p", "gamma", TaskState::Pending).created(M))
            .expect(warning(dt("gamma"), "active")),
        gamma("a start on another host is not activity here")
            .tasks(vec![
                running("g-far", "gamma", M).on(OTHER),
                ran("g-far-2", "gamma", TaskState::Success, H, M).on(OTHER),
            ])
            .expect(warning(dt("gamma"), "active").ev("/running", json!(0))),
        gamma("the last start seen is the latest one")
            .tasks(vec![
                ran("g-1", "gamma", TaskState::Success, 3 * D, M),
                ran("g-2", "gamma", TaskState::Success, 2 * D, M),
            ])
            .expect(warning(dt("gamma"), "active").says(&[&t(2 * D).to_rfc3339()])),
        gamma("a per-type active_within applies")
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        active_within: secs(3 * D),
                        ..limits()
                    },
                );
            })
            .task(ran("g-1", "gamma", TaskState::Success, 2 * D, 10 * M))
            .expect(
                ok(dt("gamma"), "active")
                    .summary("1 started in the last 3d, 0 running")
                    .ev("/active_within_s", json!(3 * D)),
            ),
        gamma("the per-type window's start is inclusive too")
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        active_within: secs(3 * D),
                        ..limits()
                    },
                );
            })
            .task(ran("g-1", "gamma", TaskState::Success, 3 * D + 1, 10 * M))
            .expect(warning(dt("gamma"), "active").says(&["in the last 3d"])),
        gamma("another type's override does not apply")
            .cfg(|c| {
                c.droid_types.insert(
                    "alpha".into(),
                    WellbeingLimits {
                        active_within: secs(3 * D),
                        ..limits()
                    },
                );
            })
            .task(ran("g-1", "gamma", TaskState::Success, 2 * D, 10 * M))
            .expect(warning(dt("gamma"), "active").says(&["in the last 1d"])),
        gamma("a shorter per-type window makes an older start stale")
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        active_within: secs(H),
                        ..limits()
                    },
                );
            })
            .task(ran("g-1", "gamma", TaskState::Success, H + 1, 10 * M))
            .expect(warning(dt("gamma"), "active").says(&["in the last 1h"])),
    ]);
}

// ---------------------------------------------------------------- failure rate

#[test]
fn failure_rate() {
    use TaskState::{Failed, Skipped as Skip, Success};
    let ok_n = |n| batch("g-ok", "gamma", Success, n, H);
    let failed_n = |n| batch("g-ko", "gamma", Failed, n, 2 * H);
    run(vec![
        gamma("fewer than min_finished: not judged")
            .tasks(ok_n(1))
            .tasks(failed_n(3))
            .expect(
                skipped(dt("gamma"), "failure_rate")
                    .summary("4 finished in the window, fewer than min_finished (5)")
                    .ev("/failed", json!(3))
                    .ev("/finished", json!(4)),
            ),
        gamma("exactly min_finished is judged")
            .tasks(ok_n(5))
            .expect(ok(dt("gamma"), "failure_rate").summary("0 of 5 finished tasks failed (0%)")),
        gamma("exactly at max_failure_rate is fine")
            .tasks(ok_n(6))
            .tasks(failed_n(2))
            .expect(
                ok(dt("gamma"), "failure_rate")
                    .summary("2 of 8 finished tasks failed (25%)")
                    .ev("/rate", json!(0.25)),
            ),
        gamma("just above max_failure_rate is critical")
            .tasks(ok_n(5))
            .tasks(failed_n(2))
            .expect(
                critical(dt("gamma"), "failure_rate")
                    .summary("2 of 7 finished tasks failed (29%, limit 25%)")
                    .ev("/recent_failures/0/error", json!("exit status 1"))
                    .check("two failures sampled", |c| {
                        c.evidence["recent_failures"].as_array().map(Vec::len) == Some(2)
                    }),
            ),
        gamma("SKIPPED is not finished: 2 of 5, not 2 of 15")
            .tasks(ok_n(3))
            .tasks(failed_n(2))
            .tasks(batch("g-skip", "gamma", Skip, 10, H))
            .expect(critical(dt("gamma"), "failure_rate").says(&["2 of 5 finished"])),
        gamma("SKIPPED does not reach min_finished")
            .tasks(ok_n(4))
            .tasks(batch("g-skip", "gamma", Skip, 3, H))
            .expect(skipped(dt("gamma"), "failure_rate").says(&["4 finished"])),
        gamma("failures finished before the window are not counted")
            .tasks(ok_n(6))
            .tasks(vec![
                ran("g-old-1", "gamma", Failed, D + 10 * M, 9 * M),
                ran("g-old-2", "gamma", Failed, D + 2 * H, M),
            ])
            .expect(ok(dt("gamma"), "failure_rate").summary("0 of 6 finished tasks failed (0%)")),
        gamma("a finish exactly at the window's start is counted")
            .tasks(ok_n(5))
            .tasks(vec![
                ran("g-edge-1", "gamma", Failed, D + 10 * M, 10 * M),
                ran("g-edge-2", "gamma", Failed, D + 20 * M, 20 * M),
            ])
            .expect(critical(dt("gamma"), "failure_rate").says(&["2 of 7"])),
        gamma("another host's failures are not counted")
            .tasks(ok_n(6))
            .tasks(failed_n(3).into_iter().map(|t| t.on(OTHER)).collect())
            .expect(ok(dt("gamma"), "failure_rate").summary("0 of 6 finished tasks failed (0%)")),
        gamma("this host by name and no host are both counted")
            .tasks(ok_n(3))
            .tasks(
                batch("g-here", "gamma", Success, 3, H)
                    .into_iter()
                    .map(|t| t.on(HERE))
                    .collect(),
            )
            .tasks(failed_n(3).into_iter().map(|t| t.on(HERE)).collect())
            .expect(critical(dt("gamma"), "failure_rate").says(&["3 of 9", "33%"])),
        gamma("a failure without finished_at is not counted")
            .tasks(ok_n(5))
            .task(task("g-nofinish", "gamma", Failed).started(H))
            .expect(ok(dt("gamma"), "failure_rate").says(&["0 of 5"])),
        gamma("another type's failures are its own")
            .tasks(ok_n(5))
            .tasks(batch("a-ko", "alpha", Failed, 5, H))
            .also(dt("alpha"), "failure_rate")
            .expect(ok(dt("gamma"), "failure_rate"))
            .expect(critical(dt("alpha"), "failure_rate").says(&["6 of 13"])),
        gamma("a per-type min_finished and max_failure_rate apply")
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        min_finished: 2,
                        max_failure_rate: 0.5,
                        ..limits()
                    },
                );
            })
            .tasks(ok_n(1))
            .tasks(failed_n(1))
            .expect(ok(dt("gamma"), "failure_rate").says(&["1 of 2", "50%"])),
        gamma("max_failure_rate 0: any failure is an issue")
            .cfg(|c| c.limits.max_failure_rate = 0.0)
            .tasks(ok_n(9))
            .tasks(failed_n(1))
            .expect(critical(dt("gamma"), "failure_rate").says(&["1 of 10", "limit 0%"]))
            .also(dt("alpha"), "failure_rate"),
    ]);
}

// ---------------------------------------------------------------- findings

#[test]
fn findings() {
    let with = |name: &'static str, fs: Vec<FindingFact>| {
        gamma(name)
            .task(running("g-run", "gamma", 10 * M))
            .facts(move |f| f.findings.extend(fs))
    };
    let g = |id, kind, ago| finding(id, Some("gamma"), kind, ago);
    let cases = vec![
        with(
            "none",
            vec![])
            .expect(ok(dt("gamma"), "findings").summary("no findings").ev("/findings", json!(0))),
        with(
            "exactly max_findings",
            vec![g(10, "hung", H), g(11, "dead", 2 * H), g(12, "hung", 3 * H)]).expect(
            ok(dt("gamma"), "findings")
                .summary("3 finding(s): 1 dead, 2 hung")
                .ev("/by_kind", json!({"dead": 1, "hung": 2}))
                .ev("/max_findings", json!(3)),
        ),
        with(
            "one more than max_findings",
            vec![
            g(10, "hung", H),
            g(11, "dead", 2 * H),
            g(12, "hung", 3 * H),
            g(13, "zombie", 4 * H),
        ])
        .expect(
            warning(dt("gamma"), "findings")
                .summary("Foreman found 4 task(s) dead, hung or lost (1 dead, 2 hung, 1 zombie), more than max_findings (3)")
                .ev("/by_kind", json!({"dead": 1, "hung": 2, "zombie": 1}))
                .ev("/recent_finding_ids", json!([13, 12, 11, 10])),
        ),
        with(
            "other types, no type and before the window do not count",
            vec![
            g(10, "hung", H),
            g(11, "hung", H),
            g(12, "hung", H),
            // Not gamma's, or before the window.
            finding(20, Some("delta"), "dead", H),
            finding(21, None, "orphan", H),
            finding(22, Some("gammas"), "dead", H),
            g(23, "dead", D + 1),
            g(24, "dead", 5 * D),
        ])
        .expect(
            ok(dt("gamma"), "findings")
                .summary("3 finding(s): 3 hung")
                .ev("/by_kind", json!({"hung": 3})),
        ),
        with(
            "a finding exactly at the window's start counts",
            vec![g(10, "hung", H), g(11, "hung", H), g(12, "hung", H), g(13, "dead", D)])
            .expect(warning(dt("gamma"), "findings").says(&["Foreman found 4 task(s)", "1 dead, 3 hung"])),
        with(
            "the ids sample is the latest five",
            (0..7).map(|i| g(100 + i, "pid_reused", H + i)).collect()).expect(
            warning(dt("gamma"), "findings")
                .ev("/findings", json!(7))
                .ev("/recent_finding_ids", json!([106, 105, 104, 103, 102])),
        ),
        with(
            "a per-type max_findings applies",
            vec![g(10, "hung", H)])
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        max_findings: 0,
                        ..limits()
                    },
                );
            })
            .expect(warning(dt("gamma"), "findings").says(&["more than max_findings (0)"])),
    ];
    run(cases);
}

// ---------------------------------------------------------------- median run time

#[test]
fn median_runtime() {
    use TaskState::{Failed, Success};
    /// Finished tasks of gamma running these many seconds, started in the
    /// window.
    fn runs(runs: &[i64]) -> Vec<Task> {
        runs.iter()
            .enumerate()
            .map(|(i, &r)| ran(&format!("g-{i}"), "gamma", Success, 2 * H + i as i64 * M, r))
            .collect()
    }
    run(vec![
        gamma("no limit: not judged")
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        max_median_runtime: None,
                        ..limits()
                    },
                );
            })
            .tasks(runs(&[H; 5]))
            .expect(skipped(dt("gamma"), "median_runtime").summary("no max_median_runtime set")),
        gamma("no finished task")
            .task(running("g-run", "gamma", 10 * M))
            .expect(
                skipped(dt("gamma"), "median_runtime")
                    .summary("no finished task with a start and a finish time in the window")
                    .ev("/measured", json!(0)),
            ),
        gamma("fewer than min_finished measured")
            .tasks(runs(&[H; 4]))
            .expect(
                skipped(dt("gamma"), "median_runtime")
                    .summary("4 run(s) measured, fewer than min_finished (5)")
                    .ev("/median_s", json!(3600.0)),
            ),
        gamma("a finish without a start is not measured")
            .tasks(runs(&[H; 4]))
            .task(task("g-nostart", "gamma", Success).finished(H))
            .expect(ok(dt("gamma"), "failure_rate").says(&["0 of 5"]))
            .expect(skipped(dt("gamma"), "median_runtime").says(&["4 run(s) measured"])),
        gamma("median exactly at the limit is fine")
            .tasks(runs(&[M, 2 * M, 30 * M, 2 * H, 3 * H]))
            .expect(
                ok(dt("gamma"), "median_runtime")
                    .summary("median run time 30m over 5 runs")
                    .ev("/median_s", json!(1800.0))
                    .ev("/max_median_runtime_s", json!(1800)),
            ),
        gamma("median one second above the limit")
            .tasks(runs(&[M, 2 * M, 30 * M + 1, 2 * H, 3 * H]))
            .expect(
                warning(dt("gamma"), "median_runtime")
                    .summary("median run time 30m 1s over 5 runs, above max_median_runtime (30m)")
                    .ev("/median_s", json!(1801.0)),
            ),
        gamma("even count: the mean of the two middle runs (30m)")
            .tasks(runs(&[3 * H, M, 29 * M, 31 * M, 2 * M, 2 * H]))
            .expect(
                ok(dt("gamma"), "median_runtime")
                    .summary("median run time 30m over 6 runs")
                    .ev("/median_s", json!(1800.0)),
            ),
        gamma("even count: the mean of the two middle runs (30m 1s)")
            .tasks(runs(&[3 * H, M, 29 * M, 31 * M + 2, 2 * M, 2 * H]))
            .expect(warning(dt("gamma"), "median_runtime").ev("/median_s", json!(1801.0))),
        gamma("even count: a half-second median")
            .tasks(runs(&[M, M, 10, 11, 5, 5]))
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        max_median_runtime: Some(secs(10)),
                        ..limits()
                    },
                );
            })
            .expect(warning(dt("gamma"), "median_runtime").ev("/median_s", json!(10.5))),
        gamma("failed runs are measured too")
            .tasks(runs(&[M, M]))
            .tasks(vec![
                ran("g-k1", "gamma", Failed, 3 * H, 2 * H),
                ran("g-k2", "gamma", Failed, 4 * H, 2 * H),
                ran("g-k3", "gamma", Failed, 5 * H, 2 * H),
            ])
            .also(dt("gamma"), "failure_rate")
            .expect(
                warning(dt("gamma"), "median_runtime").says(&["median run time 2h over 5 runs"]),
            ),
        gamma("runs finished before the window are not measured")
            .tasks(runs(&[M; 5]))
            .tasks(vec![
                ran("g-old-1", "gamma", Success, 3 * D, 5 * H),
                ran("g-old-2", "gamma", Success, 3 * D, 5 * H),
                ran("g-old-3", "gamma", Success, 3 * D, 5 * H),
            ])
            .expect(ok(dt("gamma"), "median_runtime").summary("median run time 1m over 5 runs")),
        gamma("another host's runs are not measured")
            .tasks(runs(&[M; 5]))
            .tasks(
                runs(&[5 * H; 6])
                    .into_iter()
                    .map(|t| Task {
                        id: format!("far-{}", t.id),
                        ..t.on(OTHER)
                    })
                    .collect(),
            )
            .expect(ok(dt("gamma"), "median_runtime").summary("median run time 1m over 5 runs")),
        gamma("[wellbeing]'s own limit applies to a type without an override")
            .cfg(|c| c.limits.max_median_runtime = Some(secs(30)))
            .tasks(runs(&[M; 5]))
            .also(dt("alpha"), "median_runtime")
            .also(dt("beta"), "median_runtime")
            .expect(
                warning(dt("gamma"), "median_runtime").says(&["above max_median_runtime (30s)"]),
            ),
    ]);
}

// ---------------------------------------------------------------- dispatch

#[test]
fn dispatch() {
    let pending = |id: &str| task(id, "gamma", TaskState::Pending);
    let active = || running("g-run", "gamma", 10 * M);
    run(vec![
        gamma("PENDING one second past dispatch_timeout: late")
            .task(active())
            .task(pending("g-p1").created(H + 1))
            .expect(
                critical(dt("gamma"), "dispatch")
                    .summary("1 task(s) PENDING for longer than dispatch_timeout (1h); the oldest, g-p1, for 1h")
                    .ev("/late", json!(1))
                    .ev("/oldest/0/task_id", json!("g-p1")),
            ),
        gamma("PENDING exactly dispatch_timeout: not longer than it, fine")
            .task(active())
            .task(pending("g-p1").created(H))
            .expect(
                ok(dt("gamma"), "dispatch")
                    .summary("1 PENDING, none waiting past 1h")
                    .ev("/late", json!(0)),
            ),
        gamma("PENDING without created_at: not judged, with the count")
            .task(active())
            .tasks(vec![pending("g-p1"), pending("g-p2"), pending("g-p3").created(M)])
            .expect(
                skipped(dt("gamma"), "dispatch")
                    .summary("2 PENDING task(s) have no created_at: how long they waited is unknown")
                    .ev("/without_created_at", json!(2))
                    .ev("/pending", json!(3)),
            ),
        gamma("a late task is an issue even beside undated ones")
            .task(active())
            .tasks(vec![pending("g-p1"), pending("g-p2").created(2 * H)])
            .expect(
                critical(dt("gamma"), "dispatch")
                    .says(&["1 task(s)", "g-p2, for 2h"])
                    .ev("/without_created_at", json!(1)),
            ),
        gamma("the oldest is reported first")
            .task(active())
            .tasks(vec![
                pending("g-2h").created(2 * H),
                pending("g-5h").created(5 * H),
                pending("g-young").created(10 * M),
                pending("g-3h").created(3 * H + 5 * M),
            ])
            .expect(
                critical(dt("gamma"), "dispatch")
                    .summary("3 task(s) PENDING for longer than dispatch_timeout (1h); the oldest, g-5h, for 5h")
                    .ev("/pending", json!(4))
                    .check("oldest first", |c| {
                        let ids: Vec<&str> = c.evidence["oldest"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|o| o["task_id"].as_str())
                            .collect();
                        ids == ["g-5h", "g-3h", "g-2h"]
                    }),
            ),
        gamma("at most five late tasks are listed")
            .task(active())
            .tasks((0..7).map(|i| pending(&format!("g-p{i}")).created(2 * H + i * M)).collect())
            .expect(
                critical(dt("gamma"), "dispatch")
                    .says(&["7 task(s)", "the oldest, g-p6"])
                    .check("five listed", |c| c.evidence["oldest"].as_array().map(Vec::len) == Some(5)),
            ),
        gamma("another host's PENDING is not ours")
            .task(active())
            .task(pending("g-far").created(5 * H).on(OTHER))
            .expect(ok(dt("gamma"), "dispatch").summary("0 PENDING, none waiting past 1h")),
        gamma("a per-type dispatch_timeout applies")
            .cfg(|c| {
                c.droid_types.insert(
                    "gamma".into(),
                    WellbeingLimits {
                        dispatch_timeout: secs(6 * H),
                        ..limits()
                    },
                );
            })
            .task(active())
            .task(pending("g-p1").created(5 * H))
            .expect(ok(dt("gamma"), "dispatch").summary("1 PENDING, none waiting past 6h")),
        gamma("only PENDING tasks wait for dispatch")
            .tasks(vec![
                running("g-r", "gamma", 2 * H).created(9 * H),
                ran("g-s", "gamma", TaskState::Success, 2 * H, M).created(9 * H),
                task("g-k", "gamma", TaskState::Skipped).created(9 * H),
            ])
            .expect(ok(dt("gamma"), "dispatch").summary("0 PENDING, none waiting past 1h")),
    ]);
}

// ---------------------------------------------------------------- stuck plans

#[test]
fn stuck_plans() {
    use TaskState::{Failed, Pending, Success};
    // PENDING tasks without created_at: their dispatch is not judged, so
    // the plan's other tasks alone say when it last moved.
    let waiting = || {
        vec![
            task("ps-b", "beta", Pending).in_plan("ps"),
            task("ps-a", "alpha", Pending).in_plan("ps"),
            task("ps-b2", "beta", Pending).in_plan("ps"),
        ]
    };
    let quiet_since =
        |ago: i64| ran("ps-done", "beta", Success, ago + 10 * M, 10 * M).in_plan("ps");
    run(vec![
        case("PENDING, nothing RUNNING, quiet for 2h after a failure: stuck")
            .tasks(waiting())
            .task(ran("ps-fail", "beta", Failed, 2 * H + 10 * M, 10 * M).in_plan("ps").created(3 * H))
            .expect(
                critical(plan("ps"), "stuck_plan")
                    .summary("3 task(s) PENDING, none RUNNING, nothing started or finished for 2h after 1 failed task(s)")
                    .types(&["alpha", "beta"])
                    .ev("/pending", json!(3))
                    .ev("/running", json!(0))
                    .ev("/plan_stall_timeout_s", json!(H))
                    .ev("/pending_droid_types", json!(["alpha", "beta"]))
                    .ev("/failed", json!(1))
                    .ev("/recent_failures/0/task_id", json!("ps-fail"))
                    .check("the action names the plan", |c| {
                        c.action.as_deref().is_some_and(|a| a.contains("plan ps"))
                    }),
            ),
        case("last activity one second past plan_stall_timeout: stuck")
            .tasks(waiting())
            .task(quiet_since(H + 1))
            .expect(
                critical(plan("ps"), "stuck_plan")
                    .summary("3 task(s) PENDING, none RUNNING, nothing started or finished for 1h"),
            ),
        case("last activity exactly plan_stall_timeout ago: not longer, moving")
            .tasks(waiting())
            .task(quiet_since(H))
            .expect(
                ok(plan("ps"), "stuck_plan")
                    .summary("3 PENDING, 0 RUNNING: moving")
                    .types(&["alpha", "beta"]),
            ),
        case("a recent start is activity")
            .tasks(waiting())
            .task(task("ps-s", "beta", Failed).started(10 * M).in_plan("ps"))
            .expect(ok(plan("ps"), "stuck_plan")),
        case("a PENDING filed recently is activity")
            .tasks(waiting())
            .task(task("ps-new", "beta", Pending).created(10 * M).in_plan("ps"))
            .expect(ok(plan("ps"), "stuck_plan").ev("/pending", json!(4))),
        case("a RUNNING task is progress, however old")
            .tasks(waiting())
            .task(running("ps-run", "alpha", 3 * D).in_plan("ps"))
            .expect(ok(plan("ps"), "stuck_plan").summary("3 PENDING, 1 RUNNING: moving")),
        case("a RUNNING task on another host is progress")
            .tasks(waiting())
            .task(running("ps-run", "alpha", 3 * D).in_plan("ps").on(OTHER))
            .expect(ok(plan("ps"), "stuck_plan").ev("/running", json!(1))),
        case("a recent finish on another host is activity")
            .tasks(waiting())
            .task(quiet_since(10 * M).on(OTHER))
            .expect(ok(plan("ps"), "stuck_plan")),
        case("a plan with no PENDING task has no check")
            .tasks(vec![
                ran("pd-1", "beta", Failed, 5 * H, M).in_plan("pd"),
                ran("pd-2", "beta", Success, 6 * H, M).in_plan("pd"),
            ])
            .expect(absent(plan("pd"), "stuck_plan")),
        case("a plan whose tasks are all on another host has no check")
            .tasks(waiting().into_iter().map(|t| t.on(OTHER)).collect())
            .task(quiet_since(5 * H).on(OTHER))
            .expect(absent(plan("ps"), "stuck_plan")),
        case("one local task, even finished, makes the plan ours")
            .tasks(waiting().into_iter().map(|t| t.on(OTHER)).collect())
            .task(quiet_since(5 * H).on(HERE))
            .expect(critical(plan("ps"), "stuck_plan").says(&["for 5h"]).types(&["alpha", "beta"])),
        case("last activity unknown: stuck")
            .task(task("pu-1", "alpha", Pending).in_plan("pu"))
            .expect(
                critical(plan("pu"), "stuck_plan")
                    .summary("1 task(s) PENDING, none RUNNING, nothing started or finished within the executor's history")
                    .ev("/last_activity_at", Value::Null)
                    .types(&["alpha"]),
            ),
        case("a stuck plan whose PENDING are long filed is also late for dispatch")
            .task(task("pl-1", "alpha", Pending).in_plan("pl").created(3 * H))
            .expect(critical(plan("pl"), "stuck_plan").says(&["for 3h"]))
            .expect(critical(dt("alpha"), "dispatch").says(&["pl-1"])),
    ]);
}

#[test]
fn stuck_plan_tasks_without_plan_make_no_plan_check() {
    let mut f = healthy();
    ex(&mut f)
        .tasks
        .push(task("np-1", "alpha", TaskState::Pending));
    let out = assess(&f, &cfg());
    let plans: Vec<&Subject> = out
        .iter()
        .map(|c| &c.subject)
        .filter(|s| matches!(s, Subject::Plan(_)))
        .collect();
    assert_eq!(plans, [&plan("p1")]);
}

/// "after N failed task(s)" counts every failed task, not the five the
/// evidence samples.
#[test]
fn stuck_plan_counts_every_failed_task() {
    run(vec![case("seven failed tasks")
        .task(task("ps-p", "alpha", TaskState::Pending).in_plan("ps"))
        .tasks(
            (0..7)
                .map(|i| {
                    ran(&format!("ps-f{i}"), "beta", TaskState::Failed, 3 * H, M)
                        .in_plan("ps")
                        .on(OTHER)
                })
                .collect(),
        )
        .expect(
            critical(plan("ps"), "stuck_plan").says(&["after 7 failed task(s)"]),
        )]);
}

// ---------------------------------------------------------------- executor

#[test]
fn executor_unreachable() {
    let mut f = healthy();
    f.executor = Err("connection refused".into());
    f.configured.insert("off".into(), false);
    let out = assess(&f, &cfg());
    // Configured types get a skipped `active`; nothing else of theirs, no
    // plans; Foreman's own checks still run.
    assert_eq!(
        order(&out),
        [
            (dt("alpha"), "active"),
            (dt("beta"), "active"),
            (dt("off"), "active"),
            (fm(), "executor"),
            (fm(), "sweeps"),
            (fm(), "sweep_errors"),
            (fm(), "outbox"),
            (fm(), "review"),
        ]
    );
    run(vec![
        case("executor unreachable")
            .facts(|f| f.executor = Err("connection refused".into()))
            .expect_all(vec![
                skipped(dt("alpha"), "active").summary("not judged: the executor could not be read"),
                skipped(dt("beta"), "active").summary("not judged: the executor could not be read"),
                absent(dt("alpha"), "enabled"),
                absent(plan("p1"), "stuck_plan"),
                critical(fm(), "executor")
                    .summary("the executor could not be read: connection refused")
                    .ev("/error", json!("connection refused")),
                ok(fm(), "sweeps"),
                ok(fm(), "sweep_errors"),
                ok(fm(), "outbox"),
                ok(fm(), "review"),
            ]),
        case("executor unreachable: Foreman's own issues are still reported")
            .facts(|f| {
                f.executor = Err("timeout".into());
                f.sweeps = SweepFacts::default();
                f.review = None;
            })
            .expect_all(vec![
                critical(fm(), "executor").says(&["timeout"]),
                critical(fm(), "sweeps"),
                skipped(fm(), "review"),
            ]),
        case("malformed rows are mentioned")
            .facts(|f| {
                ex(f).bad_rows = (0..7)
                    .map(|i| BadRow {
                        id: format!("bad-{i}"),
                        droid_type: None,
                        plan_id: None,
                        attempt: 1,
                        reason: "state \"DONE\" is not a state".into(),
                        pid: None,
                    })
                    .collect();
            })
            .expect(
                ok(fm(), "executor")
                    .summary(&format!(
                        "read {} task(s); 7 malformed row(s) left out (each an `unverifiable` finding in sweeps)",
                        ex(&mut healthy()).tasks.len()
                    ))
                    .ev("/malformed_rows/0/id", json!("bad-0"))
                    .ev("/malformed_rows/0/reason", json!("state \"DONE\" is not a state"))
                    .check("five sampled", |c| {
                        c.evidence["malformed_rows"].as_array().map(Vec::len) == Some(5)
                    }),
            ),
        case("no malformed rows: a plain count")
            .facts(|f| ex(f).tasks.truncate(3))
            .also(dt("beta"), "active")
            .expect(
                ok(fm(), "executor")
                    .summary("read 3 task(s)")
                    .ev("/tasks", json!(3))
                    .ev("/malformed_rows", json!([])),
            ),
    ]);
}

// ---------------------------------------------------------------- sweeps

#[test]
fn sweeps() {
    let with = |name, s: SweepFacts| case(name).facts(move |f| f.sweeps = s);
    let limit = 2 * INTERVAL;
    run(vec![
        with("no sweep ever", SweepFacts::default()).expect(
            critical(fm(), "sweeps")
                .summary("no sweep recorded: Foreman has not run here")
                .ev("/last_sweep_at", Value::Null),
        ),
        with("none in the window, one before", sweeps_at(Some(D + H), &[])).expect(
            critical(fm(), "sweeps")
                .summary(&format!("no sweep since {} (1d 1h ago)", t(D + H).to_rfc3339()))
                .ev("/last_sweep_at", json!(t(D + H))),
        ),
        with("gaps of exactly twice the interval", sweeps_at(None, &[2 * limit, limit])).expect(
            ok(fm(), "sweeps")
                .summary("2 sweeps, none more than 10m apart")
                .ev("/gaps", json!(0))
                .ev("/limit_s", json!(limit)),
        ),
        with("a gap one second longer", sweeps_at(None, &[2 * limit + 1, limit])).expect(
            critical(fm(), "sweeps")
                .summary(&format!(
                    "1 gap(s) between sweeps longer than twice the interval (10m); the longest 10m 1s from {}",
                    t(2 * limit + 1).to_rfc3339()
                ))
                .ev("/longest/seconds", json!(limit + 1))
                .ev("/longest/to", json!(t(limit))),
        ),
        with("the gap from the last sweep to now counts", sweeps_at(None, &[limit + 1])).expect(
            critical(fm(), "sweeps")
                .says(&["the longest 10m 1s"])
                .ev("/longest/from", json!(t(limit + 1)))
                .ev("/longest/to", json!(now())),
        ),
        with("the last sweep exactly twice the interval ago", sweeps_at(None, &[limit]))
            .expect(ok(fm(), "sweeps").summary("1 sweeps, none more than 10m apart")),
        with(
            "no sweep before the window: no gap from the window's start",
            sweeps_at(None, &(0..).map(|k| 20 * H - k * INTERVAL).take_while(|&a| a > 0).collect::<Vec<_>>()),
        )
        .expect(ok(fm(), "sweeps").ev("/first_in_window", json!(t(20 * H)))),
        with(
            "a sweep before the window: the gap to the first in it counts",
            sweeps_at(Some(20 * H + limit + 1), &[20 * H, 10 * H, 5 * M]),
        )
        .expect(
            critical(fm(), "sweeps")
                .summary(&format!(
                    "3 gap(s) between sweeps longer than twice the interval (10m); the longest 10h from {}",
                    t(20 * H).to_rfc3339()
                ))
                .ev("/gaps", json!(3)),
        ),
        with(
            "a sweep before the window, exactly twice the interval before the first",
            sweeps_at(Some(20 * H + limit), &(0..).map(|k| 20 * H - k * INTERVAL).take_while(|&a| a > 0).collect::<Vec<_>>()),
        )
        .expect(ok(fm(), "sweeps")),
        with(
            "a sweep before the window, one second more",
            sweeps_at(Some(20 * H + limit + 1), &(0..).map(|k| 20 * H - k * INTERVAL).take_while(|&a| a > 0).collect::<Vec<_>>()),
        )
        .expect(
            critical(fm(), "sweeps")
                .says(&["1 gap(s)", "the longest 10m 1s", &t(20 * H + limit + 1).to_rfc3339()])
                .ev("/longest/to", json!(t(20 * H))),
        ),
        with(
            "the longest gap is reported, with the count",
            sweeps_at(None, &[3 * H, 3 * H - 700, 3 * H - 700 - 900, 3 * H - 1600 - 300, 100]),
        )
        .expect(
            critical(fm(), "sweeps")
                .says(&["3 gap(s)", "the longest 2h 26m"])
                .ev("/longest/seconds", json!(3 * H - 1900 - 100))
                .ev("/longest/from", json!(t(3 * H - 1900))),
        ),
    ]);
}

#[test]
fn sweep_errors() {
    let errored = |n: usize, how: fn(&mut SweepFact)| {
        move |f: &mut Facts| {
            for s in f.sweeps.in_window.iter_mut().take(n) {
                how(s);
            }
        }
    };
    let snapshot: fn(&mut SweepFact) = |s| s.error = Some("executor unreachable".into());
    let actions: fn(&mut SweepFact) = |s| s.action_errors = 2;
    run(vec![
        case("exactly max_sweep_errors")
            .facts(errored(5, snapshot))
            .expect(
                ok(fm(), "sweep_errors")
                    .summary("5 sweep(s) with errors")
                    .ev("/errored", json!(5))
                    .ev("/max_sweep_errors", json!(5)),
            ),
        case("one more").facts(errored(6, snapshot)).expect(
            warning(fm(), "sweep_errors")
                .summary("6 sweep(s) with errors, more than max_sweep_errors (5)")
                .ev("/recent/0/error", json!("executor unreachable"))
                .check("five sampled", |c| {
                    c.evidence["recent"].as_array().map(Vec::len) == Some(5)
                }),
        ),
        case("action errors count as errors")
            .facts(errored(6, actions))
            .expect(
                warning(fm(), "sweep_errors")
                    .ev("/errored", json!(6))
                    .ev("/recent/0/action_errors", json!(2)),
            ),
        case("both kinds add up")
            .facts(errored(3, snapshot))
            .facts(|f| {
                for s in f.sweeps.in_window.iter_mut().rev().take(3) {
                    s.action_errors = 1;
                }
            })
            .expect(warning(fm(), "sweep_errors").says(&["6 sweep(s)"])),
        case("a sweep with both counts once")
            .facts(errored(6, |s| {
                s.error = Some("boom".into());
                s.action_errors = 3;
            }))
            .cfg(|c| c.max_sweep_errors = 6)
            .expect(ok(fm(), "sweep_errors").summary("6 sweep(s) with errors")),
        case("the latest errors are sampled first")
            .facts(|f| {
                let n = f.sweeps.in_window.len();
                f.sweeps.in_window[n - 1].error = Some("latest".into());
                f.sweeps.in_window[0].error = Some("first".into());
            })
            .expect(
                ok(fm(), "sweep_errors")
                    .ev("/recent/0/error", json!("latest"))
                    .ev("/recent/1/error", json!("first")),
            ),
        case("max_sweep_errors 0: one error is an issue")
            .cfg(|c| c.max_sweep_errors = 0)
            .facts(errored(1, actions))
            .expect(warning(fm(), "sweep_errors").says(&["more than max_sweep_errors (0)"])),
    ]);
}

// ---------------------------------------------------------------- outbox

#[test]
fn outbox() {
    let with = |name, rows: Vec<OutboxFact>| case(name).facts(move |f| f.outbox = rows);
    run(vec![
        with("queued one second past max_outbox_age: an issue", vec![outbox_row(1, "pager", H + 1, Some("HTTP 503"))])
            .expect(
                warning(fm(), "outbox")
                    .summary(&format!(
                        "1 alert(s) or initiative(s) undelivered for longer than 1h; the oldest since {} (sink \"pager\": HTTP 503)",
                        t(H + 1).to_rfc3339()
                    ))
                    .ev("/older_than_limit", json!(1))
                    .ev("/sinks", json!(["pager"]))
                    .check("the action names the sink", |c| {
                        c.action.as_deref().is_some_and(|a| a.contains("\"pager\""))
                    }),
            ),
        with("queued exactly max_outbox_age ago: not longer, fine", vec![outbox_row(1, "pager", H, Some("HTTP 503"))])
            .expect(
                ok(fm(), "outbox")
                    .summary("1 queued, none older than 1h")
                    .ev("/queued", json!(1))
                    .ev("/older_than_limit", json!(0)),
            ),
        with("never tried", vec![outbox_row(1, "mail", 2 * H, None)])
            .expect(warning(fm(), "outbox").says(&["(sink \"mail\": not tried yet)"])),
        with(
            "the oldest first, young rows left out",
            vec![
                outbox_row(1, "a", 2 * H, Some("e1")),
                outbox_row(2, "b", 3 * H, Some("e2")),
                outbox_row(3, "c", 30 * M, Some("e3")),
            ],
        )
        .expect(
            warning(fm(), "outbox")
                .says(&["2 alert(s)", &t(3 * H).to_rfc3339(), "(sink \"b\": e2)"])
                .ev("/queued", json!(3))
                .ev("/sinks", json!(["a", "b"]))
                .ev("/oldest/0/id", json!(2))
                .ev("/oldest/1/id", json!(1))
                .ev("/oldest/0/about", json!("finding 2"))
                .check("the action names both sinks", |c| {
                    c.action.as_deref().is_some_and(|a| a.contains("\"a\", \"b\""))
                }),
        ),
        case("a per-config max_outbox_age applies")
            .cfg(|c| c.max_outbox_age = secs(4 * H))
            .facts(|f| f.outbox = vec![outbox_row(1, "a", 3 * H, None)])
            .expect(ok(fm(), "outbox").summary("1 queued, none older than 4h")),
    ]);
}

// ---------------------------------------------------------------- review

#[test]
fn review() {
    run(vec![
        case("no review")
            .facts(|f| f.review = None)
            .expect(skipped(fm(), "review").summary("no `foreman review` has run")),
        case("passed").expect(
            ok(fm(), "review")
                .summary(&format!(
                    "the latest review ({}) passed",
                    t(5 * H).to_rfc3339()
                ))
                .ev("/run_id", json!("review-1")),
        ),
        case("failed")
            .facts(|f| {
                f.review = Some(ReviewFact {
                    id: "review-2".into(),
                    at: t(H),
                    passed: false,
                    failed: vec!["dead_detection".into(), "hung_detection".into()],
                })
            })
            .expect(
                critical(fm(), "review")
                    .summary(&format!(
                        "the latest review ({}) failed: dead_detection, hung_detection",
                        t(H).to_rfc3339()
                    ))
                    .ev("/failed", json!(["dead_detection", "hung_detection"]))
                    .ev("/run_id", json!("review-2")),
            ),
    ]);
}

// ---------------------------------------------------------------- order

#[test]
fn order_types_by_name_then_plans_then_foreman() {
    let mut f = healthy();
    // A type only in the table sorts first, one only in tasks last; plans
    // by id whatever the task order.
    table(&mut f).insert("aardvark".into(), false);
    f.default_enabled = false;
    f.configured.insert("mu".into(), true);
    table(&mut f).insert("mu".into(), true);
    ex(&mut f).tasks.extend([
        running("m-1", "mu", M),
        task("pb-1", "mu", TaskState::Pending)
            .in_plan("p-b")
            .created(M),
        task("pa-1", "mu", TaskState::Pending)
            .in_plan("p-a")
            .created(M),
        task("z-1", "zulu", TaskState::Success)
            .started(3 * D)
            .finished(3 * D),
    ]);
    let out = assess(&f, &cfg());
    let mut want = Vec::new();
    for name in ["aardvark", "alpha", "beta", "mu", "zulu"] {
        want.extend(type_checks(name));
    }
    want.extend([
        (plan("p-a"), "stuck_plan"),
        (plan("p-b"), "stuck_plan"),
        (plan("p1"), "stuck_plan"),
    ]);
    want.extend(foreman_checks());
    assert_eq!(order(&out), want, "got:\n{}", dump(&out));
}

// ---------------------------------------------------------------- human

#[test]
fn human_durations() {
    let cases: &[(u64, &str)] = &[
        (0, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (61, "1m 1s"),
        (3_599, "59m 59s"),
        (3_600, "1h"),
        (3_660, "1h 1m"),
        (3_725, "1h 2m"),
        (86_399, "23h 59m"),
        (86_400, "1d"),
        (90_000, "1d 1h"),
        (90_061, "1d 1h"),
        (172_800 + 3_599, "2d"),
        (30 * 86_400, "30d"),
    ];
    let bad: Vec<String> = cases
        .iter()
        .filter(|(s, want)| human(Duration::from_secs(*s)) != *want)
        .map(|(s, want)| {
            format!(
                "{s}s: {:?}, expected {want:?}",
                human(Duration::from_secs(*s))
            )
        })
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Below a second rounds down.
    assert_eq!(human(Duration::from_millis(1_999)), "1s");
    assert_eq!(human(Duration::from_millis(999)), "0s");
}

// ---------------------------------------------------------------- the rest

#[test]
fn labels_and_serialisation() {
    assert_eq!(dt("alpha").label(), "droid type alpha");
    assert_eq!(plan("p1").label(), "plan p1");
    assert_eq!(fm().label(), "Foreman itself");
    assert_eq!(Severity::Warning.as_str(), "warning");
    assert_eq!(Severity::Critical.as_str(), "critical");

    let out = assess(&healthy(), &cfg());
    let enabled = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(
        enabled["subject"],
        json!({"scope": "droid_type", "name": "alpha"})
    );
    assert_eq!(enabled["status"], json!("ok"));
    assert_eq!(enabled["droid_types"], json!(["alpha"]));
    assert!(enabled.get("severity").is_none() && enabled.get("action").is_none());

    let mut f = healthy();
    f.review = Some(ReviewFact {
        id: "r".into(),
        at: t(H),
        passed: false,
        failed: vec!["x".into()],
    });
    let out = assess(&f, &cfg());
    let review = serde_json::to_value(out.last().unwrap()).unwrap();
    assert_eq!(review["subject"], json!({"scope": "foreman"}));
    assert_eq!(review["status"], json!("issue"));
    assert_eq!(review["severity"], json!("critical"));
    assert!(review["action"].is_string());
    // Foreman's checks concern no droid type.
    assert!(review.get("droid_types").is_none());
}

/// A window too long for a date (`active_within = "1000000y"`, accepted by
/// the config) is "since forever", not a panic.
#[test]
fn huge_windows_do_not_panic() {
    let mut panicked = Vec::new();
    for years in [1_000_000u64, 1_000_000_000] {
        let window = Duration::from_secs(years * 365 * 86_400);
        let mut c = cfg();
        c.limits.active_within = window;
        c.limits.dispatch_timeout = window;
        c.plan_stall_timeout = window;
        c.max_outbox_age = window;
        if std::panic::catch_unwind(|| assess(&healthy(), &c)).is_err() {
            panicked.push(years);
        }
    }
    assert!(
        panicked.is_empty(),
        "assess panicked with windows of {panicked:?} years"
    );
}
