//! The wellbeing checks, pure: facts gathered from the executor and the
//! activity log in, one `Check` per (subject, check) out. Nothing here does
//! I/O or reads a clock, so every verdict and boundary is tested by table.

use crate::config::{WellbeingConfig, WellbeingLimits};
use crate::model::{BadRow, Task, TaskState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Everything the checks look at, gathered at `now`.
#[derive(Debug, Clone)]
pub struct Facts {
    pub now: DateTime<Utc>,
    pub host: String,
    pub interval: Duration,
    /// The executor's rows over the longest window (every host), or why it
    /// could not be read.
    pub executor: Result<ExecutorFacts, String>,
    /// Droid types in foreman.toml, with their `enabled`.
    pub configured: BTreeMap<String, bool>,
    /// `[defaults] enabled`: what a type not in foreman.toml inherits.
    pub default_enabled: bool,
    /// Foreman's findings of the gone-or-stuck kinds within the window.
    pub findings: Vec<FindingFact>,
    pub sweeps: SweepFacts,
    /// Outbox rows still queued (alerts and initiatives).
    pub outbox: Vec<OutboxFact>,
    /// The latest `foreman review`, when one has run.
    pub review: Option<ReviewFact>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecutorFacts {
    pub tasks: Vec<Task>,
    pub bad_rows: Vec<BadRow>,
    /// The executor's own `droid_types` (name → enabled), when it has one.
    pub droid_types: Option<BTreeMap<String, bool>>,
}

#[derive(Debug, Clone)]
pub struct FindingFact {
    pub id: i64,
    pub droid_type: Option<String>,
    pub kind: String,
    pub task_id: String,
    pub first_seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct SweepFacts {
    /// Sweeps started within the window, oldest first.
    pub in_window: Vec<SweepFact>,
    /// The last sweep before the window, if any: Foreman was deployed then,
    /// so a window that starts without sweeps is a gap.
    pub before_window: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SweepFact {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    /// The snapshot error, when the sweep could judge nothing.
    pub error: Option<String>,
    pub action_errors: i64,
}

#[derive(Debug, Clone)]
pub struct OutboxFact {
    pub id: i64,
    pub sink: String,
    pub queued_at: DateTime<Utc>,
    /// "finding 12" or "initiative 3".
    pub about: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When it expired undelivered (lost); `None` while still queued.
    pub expired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ReviewFact {
    pub id: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
    /// Names of the checks that failed.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Issue,
    /// Not judged, and why is in the summary (too few tasks, disabled type,
    /// executor unreadable).
    Skipped,
}

/// What a check is about (read back from a kept run by the status page).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum Subject {
    DroidType(String),
    Plan(String),
    Foreman,
}

impl Subject {
    pub fn label(&self) -> String {
        match self {
            Subject::DroidType(t) => format!("droid type {t}"),
            Subject::Plan(p) => format!("plan {p}"),
            Subject::Foreman => "Foreman itself".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub subject: Subject,
    /// enabled | active | failure_rate | findings | median_runtime |
    /// dispatch | stuck_plan | executor | sweeps | sweep_errors | outbox |
    /// review
    pub check: &'static str,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub summary: String,
    pub evidence: Value,
    /// What the owner should do, for issues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The droid types an issue concerns (a plan's pending tasks' types).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub droid_types: Vec<String>,
}

impl Check {
    fn new(subject: Subject, check: &'static str, status: Status, summary: String) -> Check {
        let droid_types = match &subject {
            Subject::DroidType(t) => vec![t.clone()],
            _ => Vec::new(),
        };
        Check {
            subject,
            check,
            status,
            severity: None,
            summary,
            evidence: Value::Null,
            action: None,
            droid_types,
        }
    }

    fn ok(subject: Subject, check: &'static str, summary: String) -> Check {
        Check::new(subject, check, Status::Ok, summary)
    }

    fn skipped(subject: Subject, check: &'static str, summary: String) -> Check {
        Check::new(subject, check, Status::Skipped, summary)
    }

    fn issue(
        subject: Subject,
        check: &'static str,
        severity: Severity,
        summary: String,
        action: String,
    ) -> Check {
        let mut c = Check::new(subject, check, Status::Issue, summary);
        c.severity = Some(severity);
        c.action = Some(action);
        c
    }

    fn with(mut self, evidence: Value) -> Check {
        self.evidence = evidence;
        self
    }

    pub fn is_issue(&self) -> bool {
        self.status == Status::Issue
    }
}

/// How many ids an evidence list names at most.
const SAMPLE: usize = 5;

/// A duration as people read it: its two largest units ("1d", "5h 12m",
/// "3m 5s").
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (big, unit, rest, small) = match s {
        86_400.. => (s / 86_400, "d", s % 86_400 / 3_600, "h"),
        3_600.. => (s / 3_600, "h", s % 3_600 / 60, "m"),
        60.. => (s / 60, "m", s % 60, "s"),
        _ => return format!("{s}s"),
    };
    if rest == 0 {
        format!("{big}{unit}")
    } else {
        format!("{big}{unit} {rest}{small}")
    }
}

fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

/// `d` before `now`; the beginning of time for a window longer than the
/// calendar (an `active_within` of a million years is allowed).
pub fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Every check, in a stable order: droid types by name, plans by id, then
/// Foreman itself.
pub fn assess(facts: &Facts, cfg: &WellbeingConfig) -> Vec<Check> {
    let mut out = Vec::new();
    match &facts.executor {
        Ok(ex) => {
            let local: Vec<&Task> = ex
                .tasks
                .iter()
                .filter(|t| t.host.as_deref().is_none_or(|h| h == facts.host))
                .collect();
            for name in droid_types(facts, ex, &local) {
                droid_type(&mut out, facts, ex, &local, &name, cfg.limits(&name));
            }
            plans(&mut out, facts, ex, cfg);
            out.push(executor_ok(ex));
        }
        Err(why) => {
            for name in facts.configured.keys() {
                out.push(Check::skipped(
                    Subject::DroidType(name.clone()),
                    "active",
                    "not judged: the executor could not be read".into(),
                ));
            }
            out.push(
                Check::issue(
                    Subject::Foreman,
                    "executor",
                    Severity::Critical,
                    format!("the executor could not be read: {why}"),
                    "Check that the executor is up and that Foreman can read it (`foreman review --live`, `foreman check-config`); while it cannot, no task is supervised.".into(),
                )
                .with(json!({ "error": why })),
            );
        }
    }
    out.push(sweeps(facts));
    out.push(sweep_errors(facts, cfg));
    out.push(outbox(facts, cfg));
    out.push(review(facts));
    out
}

/// Droid types configured, known to the executor, or seen in its tasks.
fn droid_types(facts: &Facts, ex: &ExecutorFacts, local: &[&Task]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = facts.configured.keys().cloned().collect();
    if let Some(t) = &ex.droid_types {
        names.extend(t.keys().cloned());
    }
    names.extend(local.iter().map(|t| t.droid_type.clone()));
    names
}

fn droid_type(
    out: &mut Vec<Check>,
    facts: &Facts,
    ex: &ExecutorFacts,
    local: &[&Task],
    name: &str,
    limits: &WellbeingLimits,
) {
    let subject = || Subject::DroidType(name.to_string());
    let now = facts.now;
    let tasks: Vec<&Task> = local
        .iter()
        .copied()
        .filter(|t| t.droid_type == name)
        .collect();
    let window_start = ago(now, limits.active_within);
    let running = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count();
    let started: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.started_at.is_some_and(|s| s >= window_start))
        .collect();
    let busy = running > 0 || !started.is_empty();

    // enabled: Foreman's view against the executor's.
    let in_config = facts.configured.contains_key(name);
    let ours = facts
        .configured
        .get(name)
        .copied()
        .unwrap_or(facts.default_enabled);
    let theirs = ex.droid_types.as_ref().map(|t| t.get(name).copied());
    let where_ours = if in_config {
        format!("[droid_types.{name}]")
    } else {
        "[defaults]".to_string()
    };
    let evidence = json!({
        "foreman_enabled": ours,
        "executor_enabled": theirs.flatten(),
        "executor_has_droid_types": theirs.is_some(),
        "in_foreman_toml": in_config,
        "running": running,
        "started_in_window": started.len(),
    });
    let enabled = match theirs {
        // A type foreman.toml does not name, disabled in the executor and
        // idle, is retired there: not a mismatch.
        Some(Some(theirs)) if theirs != ours && (in_config || busy) => {
            let table = "the executor's droid_types table".to_string();
            let file = format!("foreman.toml ({where_ours})");
            let (off, on) = if ours { (table, file) } else { (file, table) };
            out.push(
                Check::issue(
                    subject(),
                    "enabled",
                    Severity::Warning,
                    format!("disabled in {off} but enabled in {on}"),
                    format!("Decide whether {name} should run, then make foreman.toml (`enabled` in [droid_types.{name}]) and the executor's droid_types table agree."),
                )
                .with(evidence),
            );
            false
        }
        Some(None) if ours && in_config => {
            out.push(
                Check::issue(
                    subject(),
                    "enabled",
                    Severity::Warning,
                    "configured in foreman.toml but unknown to the executor's droid_types table".into(),
                    format!("Add {name} to the executor's droid_types table, or remove [droid_types.{name}] (or set enabled = false) if it is retired."),
                )
                .with(evidence),
            );
            false
        }
        // Disabled here, and the executor does not say otherwise, yet its
        // tasks run.
        None | Some(None) if !ours && busy => {
            out.push(
                Check::issue(
                    subject(),
                    "enabled",
                    Severity::Warning,
                    format!("disabled in foreman.toml ({where_ours}) but the executor still runs its tasks ({running} running, {} started in the last {})", started.len(), human(limits.active_within)),
                    format!("Stop dispatching {name} in the executor, or set enabled = true in [droid_types.{name}]."),
                )
                .with(evidence),
            );
            false
        }
        _ => {
            let on = ours && theirs.flatten().unwrap_or(true);
            out.push(
                Check::ok(
                    subject(),
                    "enabled",
                    if on {
                        "enabled".into()
                    } else {
                        "disabled, as expected".into()
                    },
                )
                .with(evidence),
            );
            on
        }
    };
    let rest = [
        "active",
        "failure_rate",
        "findings",
        "median_runtime",
        "dispatch",
    ];
    // A type disabled somewhere but still running is judged all the same:
    // its work is real.
    if !enabled && !busy {
        for check in rest {
            out.push(Check::skipped(
                subject(),
                check,
                "not judged: the droid type is disabled and idle".into(),
            ));
        }
        return;
    }

    // active
    let last_start = tasks.iter().filter_map(|t| t.started_at).max();
    let evidence = json!({
        "running": running,
        "started_in_window": started.len(),
        "last_started_at": last_start,
        "active_within_s": limits.active_within.as_secs(),
    });
    out.push(if busy {
        Check::ok(
            subject(),
            "active",
            format!(
                "{} started in the last {}, {running} running",
                started.len(),
                human(limits.active_within)
            ),
        )
        .with(evidence)
    } else {
        Check::issue(
            subject(),
            "active",
            Severity::Warning,
            format!(
                "no task started in the last {} and none running{}",
                human(limits.active_within),
                match last_start {
                    Some(t) => format!(" (last start seen: {})", t.to_rfc3339()),
                    None => String::new(),
                }
            ),
            format!("Check that the executor still dispatches {name} tasks (its queue, workers and credentials). If {name} runs less often, raise active_within in [wellbeing.droid_types.{name}]; if it is retired, set enabled = false."),
        )
        .with(evidence)
    });

    // failure_rate, over tasks finished in the window (SKIPPED is neither).
    let finished: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| matches!(t.state, TaskState::Success | TaskState::Failed))
        .filter(|t| t.finished_at.is_some_and(|f| f >= window_start))
        .collect();
    let failed: Vec<&Task> = finished
        .iter()
        .copied()
        .filter(|t| t.state == TaskState::Failed)
        .collect();
    let judged = finished.len() as u64 >= u64::from(limits.min_finished);
    let rate = if finished.is_empty() {
        0.0
    } else {
        failed.len() as f64 / finished.len() as f64
    };
    let mut newest = failed.clone();
    newest.sort_by_key(|t| std::cmp::Reverse(t.finished_at));
    let sample: Vec<Value> = newest
        .iter()
        .take(SAMPLE)
        .map(|t| json!({"task_id": t.id, "plan_id": t.plan_id, "finished_at": t.finished_at, "error": t.error}))
        .collect();
    let evidence = json!({
        "failed": failed.len(),
        "finished": finished.len(),
        "rate": rate,
        "max_failure_rate": limits.max_failure_rate,
        "min_finished": limits.min_finished,
        "recent_failures": sample,
    });
    let pct = |r: f64| format!("{:.0}%", r * 100.0);
    out.push(if !judged {
        Check::skipped(
            subject(),
            "failure_rate",
            format!(
                "{} finished in the window, fewer than min_finished ({})",
                finished.len(),
                limits.min_finished
            ),
        )
        .with(evidence)
    } else if rate > limits.max_failure_rate {
        Check::issue(
            subject(),
            "failure_rate",
            Severity::Critical,
            format!(
                "{} of {} finished tasks failed ({}, limit {})",
                failed.len(),
                finished.len(),
                pct(rate),
                pct(limits.max_failure_rate)
            ),
            format!("Read the failed tasks' errors (below, and in the executor's logs; `foreman log --type {name}` for Foreman's findings). A recent change to {name} or to what it depends on is the usual cause; pause its plans if the rate keeps rising."),
        )
        .with(evidence)
    } else {
        Check::ok(
            subject(),
            "failure_rate",
            format!(
                "{} of {} finished tasks failed ({})",
                failed.len(),
                finished.len(),
                pct(rate)
            ),
        )
        .with(evidence)
    });

    // findings: Foreman had to step in.
    let found: Vec<&FindingFact> = facts
        .findings
        .iter()
        .filter(|f| f.droid_type.as_deref() == Some(name) && f.first_seen_at >= window_start)
        .collect();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &found {
        *by_kind.entry(f.kind.as_str()).or_default() += 1;
    }
    let ids: Vec<i64> = found.iter().rev().take(SAMPLE).map(|f| f.id).collect();
    let evidence = json!({
        "findings": found.len(),
        "by_kind": by_kind,
        "max_findings": limits.max_findings,
        "recent_finding_ids": ids,
    });
    let kinds = by_kind
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    out.push(if found.len() as u64 > u64::from(limits.max_findings) {
        Check::issue(
            subject(),
            "findings",
            Severity::Warning,
            format!(
                "Foreman found {} task(s) dead, hung or lost ({kinds}), more than max_findings ({})",
                found.len(),
                limits.max_findings
            ),
            format!("Run `foreman explain ID` for the findings below. Hung: fix {name}'s heartbeats or raise its timeout; timed out: {name} runs past its max_runtime (a loop that never ends, or a limit too low); dead or zombie: {name} crashes or its parent does not reap it; orphan: the executor lost track of its tasks."),
        )
        .with(evidence)
    } else {
        Check::ok(
            subject(),
            "findings",
            if found.is_empty() {
                "no findings".into()
            } else {
                format!("{} finding(s): {kinds}", found.len())
            },
        )
        .with(evidence)
    });

    // median_runtime
    match limits.max_median_runtime {
        None => out.push(Check::skipped(
            subject(),
            "median_runtime",
            "no max_median_runtime set".into(),
        )),
        Some(max) => {
            let mut runs: Vec<Duration> = finished
                .iter()
                .filter_map(|t| {
                    Some(
                        (t.finished_at? - t.started_at?)
                            .to_std()
                            .unwrap_or_default(),
                    )
                })
                .collect();
            runs.sort();
            let median = median(&runs);
            let evidence = json!({
                "measured": runs.len(),
                "median_s": median.map(|m| m.as_secs_f64()),
                "max_median_runtime_s": max.as_secs(),
            });
            out.push(match median {
                Some(_) if (runs.len() as u64) < u64::from(limits.min_finished) => {
                    Check::skipped(
                        subject(),
                        "median_runtime",
                        format!(
                            "{} run(s) measured, fewer than min_finished ({})",
                            runs.len(),
                            limits.min_finished
                        ),
                    )
                    .with(evidence)
                }
                None => Check::skipped(
                    subject(),
                    "median_runtime",
                    "no finished task with a start and a finish time in the window".into(),
                )
                .with(evidence),
                Some(m) if m > max => Check::issue(
                    subject(),
                    "median_runtime",
                    Severity::Warning,
                    format!(
                        "median run time {} over {} runs, above max_median_runtime ({})",
                        human(m),
                        runs.len(),
                        human(max)
                    ),
                    format!("{name} has slowed down: compare with its usual run time, and look at what it waits on (inputs, locks, the host's load)."),
                )
                .with(evidence),
                Some(m) => Check::ok(
                    subject(),
                    "median_runtime",
                    format!("median run time {} over {} runs", human(m), runs.len()),
                )
                .with(evidence),
            });
        }
    }

    // dispatch: filed but never started.
    let pending: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    let undated = pending.iter().filter(|t| t.created_at.is_none()).count();
    let late_since = ago(now, limits.dispatch_timeout);
    let mut late: Vec<&Task> = pending
        .iter()
        .copied()
        .filter(|t| t.created_at.is_some_and(|c| c < late_since))
        .collect();
    late.sort_by_key(|t| t.created_at);
    let evidence = json!({
        "pending": pending.len(),
        "late": late.len(),
        "without_created_at": undated,
        "dispatch_timeout_s": limits.dispatch_timeout.as_secs(),
        "oldest": late.iter().take(SAMPLE).map(|t| json!({"task_id": t.id, "plan_id": t.plan_id, "created_at": t.created_at})).collect::<Vec<_>>(),
    });
    out.push(if let Some(oldest) = late.first() {
        let waited = oldest
            .created_at
            .map(|c| human(since(now, c)))
            .unwrap_or_default();
        Check::issue(
            subject(),
            "dispatch",
            Severity::Critical,
            format!(
                "{} task(s) PENDING for longer than dispatch_timeout ({}); the oldest, {}, for {waited}",
                late.len(),
                human(limits.dispatch_timeout),
                oldest.id
            ),
            format!("Work for {name} is filed but not dispatched: check the executor's dispatcher and {name}'s worker capacity and concurrency limits."),
        )
        .with(evidence)
    } else if undated > 0 {
        Check::skipped(
            subject(),
            "dispatch",
            format!("{undated} PENDING task(s) have no created_at: how long they waited is unknown"),
        )
        .with(evidence)
    } else {
        Check::ok(
            subject(),
            "dispatch",
            format!("{} PENDING, none waiting past {}", pending.len(), human(limits.dispatch_timeout)),
        )
        .with(evidence)
    });
}

fn median(sorted: &[Duration]) -> Option<Duration> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Stuck plans: PENDING work, nothing RUNNING, and nothing started or
/// finished for `plan_stall_timeout`. A plan is judged on every host's
/// rows (work running elsewhere is progress) and reported by the hosts
/// that hold one of its tasks.
fn plans(out: &mut Vec<Check>, facts: &Facts, ex: &ExecutorFacts, cfg: &WellbeingConfig) {
    let mut by_plan: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in &ex.tasks {
        if let Some(p) = &t.plan_id {
            by_plan.entry(p.as_str()).or_default().push(t);
        }
    }
    let stall_since = ago(facts.now, cfg.plan_stall_timeout);
    for (plan, tasks) in by_plan {
        let pending: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| t.state == TaskState::Pending)
            .collect();
        let ours = tasks
            .iter()
            .any(|t| t.host.as_deref().is_none_or(|h| h == facts.host));
        if pending.is_empty() || !ours {
            continue;
        }
        let subject = Subject::Plan(plan.to_string());
        let running = tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .count();
        let last_activity = tasks
            .iter()
            .flat_map(|t| [t.started_at, t.finished_at, t.created_at])
            .flatten()
            .max();
        let failed_count = tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .count();
        let mut failed_tasks: Vec<&&Task> = tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .collect();
        failed_tasks.sort_by_key(|t| std::cmp::Reverse(t.finished_at));
        let failed: Vec<Value> = failed_tasks
            .iter()
            .take(SAMPLE)
            .map(|t| json!({"task_id": t.id, "droid_type": t.droid_type, "finished_at": t.finished_at, "error": t.error}))
            .collect();
        let types: Vec<String> = pending
            .iter()
            .map(|t| t.droid_type.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let evidence = json!({
            "pending": pending.len(),
            "running": running,
            "last_activity_at": last_activity,
            "plan_stall_timeout_s": cfg.plan_stall_timeout.as_secs(),
            "failed": failed_count,
            "recent_failures": failed,
            "pending_droid_types": types,
        });
        let stuck = running == 0 && last_activity.is_none_or(|t| t < stall_since);
        let mut check = if stuck {
            let quiet = match last_activity {
                Some(t) => format!("for {}", human(since(facts.now, t))),
                None => "within the executor's history".into(),
            };
            let after = match failed_count {
                0 => String::new(),
                n => format!(" after {n} failed task(s)"),
            };
            Check::issue(
                subject,
                "stuck_plan",
                Severity::Critical,
                format!(
                    "{} task(s) PENDING, none RUNNING, nothing started or finished {quiet}{after}",
                    pending.len()
                ),
                if failed_count > 0 {
                    format!("Nobody picks up plan {plan}: in the executor, retry or skip its failed task(s) so the rest can run, or cancel the plan.")
                } else {
                    format!("Plan {plan}'s PENDING tasks are not being dispatched: check the executor's dispatcher and what they wait on, or cancel the plan.")
                },
            )
        } else {
            Check::ok(
                subject,
                "stuck_plan",
                format!("{} PENDING, {running} RUNNING: moving", pending.len()),
            )
        };
        check.evidence = evidence;
        check.droid_types = types;
        out.push(check);
    }
}

fn executor_ok(ex: &ExecutorFacts) -> Check {
    let mut c = Check::ok(
        Subject::Foreman,
        "executor",
        format!("read {} task(s)", ex.tasks.len()),
    );
    if !ex.bad_rows.is_empty() {
        c.summary = format!(
            "read {} task(s); {} malformed row(s) left out (each an `unverifiable` finding in sweeps)",
            ex.tasks.len(),
            ex.bad_rows.len()
        );
    }
    c.with(json!({
        "tasks": ex.tasks.len(),
        "malformed_rows": ex.bad_rows.iter().take(SAMPLE).map(|b| json!({"id": b.id, "reason": b.reason})).collect::<Vec<_>>(),
    }))
}

/// Sweeps ran on schedule: no gap longer than twice the interval over the
/// window, counting from the window's start when Foreman already ran
/// before it, and up to now.
fn sweeps(facts: &Facts) -> Check {
    let now = facts.now;
    let limit = facts.interval * 2;
    let s = &facts.sweeps;
    let Some(first) = s.in_window.first() else {
        let (summary, evidence) = match s.before_window {
            Some(last) => (
                format!(
                    "no sweep since {} ({} ago)",
                    last.to_rfc3339(),
                    human(since(now, last))
                ),
                json!({"last_sweep_at": last}),
            ),
            None => (
                "no sweep recorded: Foreman has not run here".into(),
                json!({"last_sweep_at": null}),
            ),
        };
        return Check::issue(
            Subject::Foreman,
            "sweeps",
            Severity::Critical,
            summary,
            "Start the daemon (`systemctl start foreman`, or `foreman run`) and check its journal for why it stopped: until it runs, no task is supervised.".into(),
        )
        .with(evidence);
    };
    let mut points: Vec<DateTime<Utc>> = Vec::new();
    if let Some(before) = s.before_window {
        points.push(before);
    }
    points.extend(s.in_window.iter().map(|s| s.started_at));
    points.push(now);
    let mut gaps: Vec<(DateTime<Utc>, DateTime<Utc>)> = points
        .windows(2)
        .filter(|w| since(w[1], w[0]) > limit)
        .map(|w| (w[0], w[1]))
        .collect();
    gaps.sort_by_key(|(a, b)| std::cmp::Reverse(*b - *a));
    let evidence = json!({
        "sweeps": s.in_window.len(),
        "first_in_window": first.started_at,
        "limit_s": limit.as_secs(),
        "gaps": gaps.len(),
        "longest": gaps.first().map(|(a, b)| json!({"from": a, "to": b, "seconds": (*b - *a).num_seconds()})),
    });
    match gaps.first() {
        Some((a, b)) => Check::issue(
            Subject::Foreman,
            "sweeps",
            Severity::Critical,
            format!(
                "{} gap(s) between sweeps longer than twice the interval ({}); the longest {} from {}",
                gaps.len(),
                human(limit),
                human(since(*b, *a)),
                a.to_rfc3339()
            ),
            "Find out why the daemon stopped sweeping then (its journal: restarts, a stuck executor, the host suspended); systemd's watchdog restarts a stuck daemon.".into(),
        )
        .with(evidence),
        None => Check::ok(
            Subject::Foreman,
            "sweeps",
            format!("{} sweeps, none more than {} apart", s.in_window.len(), human(limit)),
        )
        .with(evidence),
    }
}

fn sweep_errors(facts: &Facts, cfg: &WellbeingConfig) -> Check {
    let errored: Vec<&SweepFact> = facts
        .sweeps
        .in_window
        .iter()
        .filter(|s| s.error.is_some() || s.action_errors > 0)
        .collect();
    let evidence = json!({
        "errored": errored.len(),
        "max_sweep_errors": cfg.max_sweep_errors,
        "recent": errored.iter().rev().take(SAMPLE).map(|s| json!({"sweep_id": s.id, "at": s.started_at, "error": s.error, "action_errors": s.action_errors})).collect::<Vec<_>>(),
    });
    if errored.len() as u64 > u64::from(cfg.max_sweep_errors) {
        Check::issue(
            Subject::Foreman,
            "sweep_errors",
            Severity::Warning,
            format!(
                "{} sweep(s) with errors, more than max_sweep_errors ({})",
                errored.len(),
                cfg.max_sweep_errors
            ),
            "`foreman log --sweeps --since 1d` shows each error: an unreachable executor, or marks and signals that failed (permissions).".into(),
        )
        .with(evidence)
    } else {
        Check::ok(
            Subject::Foreman,
            "sweep_errors",
            format!("{} sweep(s) with errors", errored.len()),
        )
        .with(evidence)
    }
}

fn outbox(facts: &Facts, cfg: &WellbeingConfig) -> Check {
    let old_since = ago(facts.now, cfg.max_outbox_age);
    let queued: Vec<&OutboxFact> = facts
        .outbox
        .iter()
        .filter(|o| o.expired_at.is_none())
        .collect();
    let lost: Vec<&OutboxFact> = facts
        .outbox
        .iter()
        .filter(|o| o.expired_at.is_some())
        .collect();
    let mut old: Vec<&OutboxFact> = queued
        .iter()
        .copied()
        .filter(|o| o.queued_at < old_since)
        .collect();
    old.sort_by_key(|o| o.queued_at);
    let sinks: BTreeSet<&str> = old.iter().chain(&lost).map(|o| o.sink.as_str()).collect();
    let row = |o: &&OutboxFact| json!({"id": o.id, "about": o.about, "sink": o.sink, "queued_at": o.queued_at, "attempts": o.attempts, "last_error": o.last_error, "expired_at": o.expired_at});
    let evidence = json!({
        "queued": queued.len(),
        "older_than_limit": old.len(),
        "expired_in_window": lost.len(),
        "max_outbox_age_s": cfg.max_outbox_age.as_secs(),
        "sinks": sinks,
        "oldest": old.iter().take(SAMPLE).map(row).collect::<Vec<_>>(),
        "expired": lost.iter().take(SAMPLE).map(row).collect::<Vec<_>>(),
    });
    let fix = format!(
        "Fix the sink(s) {} (the last error is below): until then recovery is not told what Foreman found.",
        sinks
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(o) = lost.first() {
        return Check::issue(
            Subject::Foreman,
            "outbox",
            Severity::Critical,
            format!(
                "{} alert(s) or initiative(s) expired undelivered in the window (sink {:?}: {}){}",
                lost.len(),
                o.sink,
                o.last_error.as_deref().unwrap_or("never tried"),
                if old.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} more queued for longer than {}",
                        old.len(),
                        human(cfg.max_outbox_age)
                    )
                }
            ),
            fix,
        )
        .with(evidence);
    }
    match old.first() {
        Some(o) => Check::issue(
            Subject::Foreman,
            "outbox",
            Severity::Warning,
            format!(
                "{} alert(s) or initiative(s) undelivered for longer than {}; the oldest since {} (sink {:?}: {})",
                old.len(),
                human(cfg.max_outbox_age),
                o.queued_at.to_rfc3339(),
                o.sink,
                o.last_error.as_deref().unwrap_or("not tried yet")
            ),
            fix,
        )
        .with(evidence),
        None => Check::ok(
            Subject::Foreman,
            "outbox",
            format!(
                "{} queued, none older than {}",
                queued.len(),
                human(cfg.max_outbox_age)
            ),
        )
        .with(evidence),
    }
}

fn review(facts: &Facts) -> Check {
    match &facts.review {
        None => Check::skipped(Subject::Foreman, "review", "no `foreman review` has run".into()),
        Some(r) if r.passed => Check::ok(
            Subject::Foreman,
            "review",
            format!("the latest review ({}) passed", r.at.to_rfc3339()),
        )
        .with(json!({"run_id": r.id, "at": r.at})),
        Some(r) => Check::issue(
            Subject::Foreman,
            "review",
            Severity::Critical,
            format!(
                "the latest review ({}) failed: {}",
                r.at.to_rfc3339(),
                r.failed.join(", ")
            ),
            "Run `foreman review` to see each failed check's evidence: Foreman's detection may be broken on this host; do not trust its verdicts until it passes.".into(),
        )
        .with(json!({"run_id": r.id, "at": r.at, "failed": r.failed})),
    }
}

#[cfg(test)]
#[path = "assess_tests.rs"]
mod tests;
