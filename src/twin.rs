//! `foreman twin`: an instant, read-only health snapshot. A fresh executor
//! snapshot, every RUNNING task probed now and judged against the daemon's
//! last observations (no second sample needed), recent failures, and what
//! crashed without being cleaned up. It never writes the executor or the
//! activity log and never signals anything, so it is safe beside the daemon.
//!
//! The overall state follows the Nagios plugin convention, so it can serve
//! as a check: OK 0, WARNING 1, CRITICAL 2, UNKNOWN 3.

use crate::activity::{ts, ActivityLog};
use crate::config::Config;
use crate::executor;
use crate::judge::{judge, Facts};
use crate::model::{Kind, Row, SweepKind, TaskState};
use crate::monitor::MonitorView;
use crate::probe::{boot_facts, rss_bytes, Probe, ProcTable};
use crate::strays;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use unicode_width::UnicodeWidthStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// One RUNNING task as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct Executing {
    pub task_id: String,
    pub plan_id: Option<String>,
    pub droid_type: String,
    pub pid: Option<i32>,
    pub age_ms: Option<i64>,
    pub since_progress_ms: Option<i64>,
    pub progress_signal: Option<String>,
    /// CPU of the whole tree since the daemon's last observation.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the whole tree.
    pub rss_bytes: Option<u64>,
    pub verdict: Kind,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    pub at: String,
    pub task_id: String,
    pub attempt: i64,
    pub droid_type: Option<String>,
    /// The finding's kind, or `failed` for a task the executor failed.
    pub kind: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failures {
    pub window: String,
    pub since: String,
    pub count: usize,
    /// droid type → kind → count.
    pub by_type: BTreeMap<String, BTreeMap<String, usize>>,
    /// Newest first: the latest `RECENT_FAILURES`, or all of them when
    /// asked (`--all-failures`); `count` and `by_type` always cover all.
    pub recent: Vec<FailureRow>,
    /// `recent` holds every failure of the window.
    pub complete: bool,
}

/// The failures twin lists by default: an hour of churn on a busy fleet is
/// thousands (a megabyte of JSON), and the counts by type and kind say
/// what the list would.
pub const RECENT_FAILURES: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Crashed {
    /// `task` (not marked yet), `zombie` (a droid's unreaped process) or
    /// `stray` (no task owns it).
    pub what: String,
    pub task_id: Option<String>,
    pub droid_type: Option<String>,
    pub pid: i32,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Daemon {
    pub last_sweep_at: Option<String>,
    pub last_sweep_findings: Option<i64>,
    /// Older than twice the interval (or none at all).
    pub stale: bool,
    /// The last sweep could not read the executor (`snapshot_error`).
    pub last_sweep_error: Option<String>,
    /// Hung verdicts the daemon is deferring for starvation, as of its last
    /// sweep (`activity::sweep_health`).
    pub deferral: Option<Deferring>,
    /// The latest `foreman review`, when one has run.
    pub last_review: Option<LastReview>,
}

/// The daemon deferring hung verdicts for starvation.
#[derive(Debug, Clone, Serialize)]
pub struct Deferring {
    /// Why: Foreman starved, a suspend or clock step, or the task's tree
    /// runnable without getting CPU.
    pub reason: String,
    /// Since when, without a break.
    pub since: String,
    pub seconds: f64,
    /// Hung verdicts the last sweep deferred.
    pub hung_deferred: u64,
    pub max_deferral_seconds: f64,
    /// Deferring for longer than `max_deferral` (`/healthz` fails).
    pub exceeded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastReview {
    pub run_id: String,
    pub at: String,
    pub passed: bool,
    /// The checks that failed.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Twin {
    pub state: State,
    /// Why the state is not OK.
    pub reasons: Vec<String>,
    pub generated_at: String,
    /// Why `/proc` cannot show the executor's processes (hidepid, another
    /// PID namespace): every task would look dead. CRITICAL.
    pub proc_blindness: Option<String>,
    pub executing: Vec<Executing>,
    /// RUNNING tasks per droid type.
    pub executing_by_type: BTreeMap<String, usize>,
    pub failures: Failures,
    pub crashed: Vec<Crashed>,
    pub daemon: Daemon,
    /// The execution monitor's plans: not complete, or completed within
    /// the last hour (as of the daemon's last sweep and pushed events).
    pub plans: Vec<MonitorView>,
    /// Silences and maintenance windows in force: what they cover is
    /// recorded but not acted on.
    pub silences: Vec<crate::silence::Hold>,
}

/// The snapshot now, with the latest `RECENT_FAILURES` failures listed.
/// An unreachable executor is `UNKNOWN`, not an error.
pub fn take(config: &Config, window: std::time::Duration) -> Result<Twin> {
    take_with(config, window, false)
}

/// `take`, listing every failure of the window when `all_failures`.
pub fn take_with(config: &Config, window: std::time::Duration, all_failures: bool) -> Result<Twin> {
    let now = Utc::now();
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let log = ActivityLog::open_read_only(&config.activity.path)?;
    let daemon = daemon(config, log.as_ref(), now)?;
    let plans = match &log {
        Some(l) => crate::monitor::store::views(l.conn(), now)?,
        None => Vec::new(),
    };
    let mut twin = Twin {
        state: State::Ok,
        reasons: Vec::new(),
        generated_at: ts(now),
        proc_blindness: config.proc_blindness(),
        executing: Vec::new(),
        executing_by_type: BTreeMap::new(),
        failures: Failures {
            window: humantime::format_duration(window).to_string(),
            since: ts(since),
            count: 0,
            by_type: BTreeMap::new(),
            recent: Vec::new(),
            complete: true,
        },
        crashed: Vec::new(),
        daemon,
        plans,
        silences: crate::silence::active(log.as_ref().map(|l| l.conn()), config, now)?,
    };
    let mut snapshot = match executor::open(config).and_then(|e| e.snapshot()) {
        Ok(s) => s,
        Err(e) => {
            grade(
                &mut twin,
                Some(&format!("{e:#}")),
                config.twin.warn_failures,
            );
            return Ok(twin);
        }
    };
    // Heartbeats pushed to the daemon count, as they do in its sweeps.
    if let Some(l) = &log {
        crate::heartbeat::merge(l.conn(), &mut snapshot)?;
    }
    let boot = boot_facts()?;
    let table = ProcTable::scan().context("scanning /proc")?;
    let hang_floor = log
        .as_ref()
        .map(|l| l.last_sweep())
        .transpose()?
        .flatten()
        .and_then(|l| l.hang_floor);
    let facts = Facts {
        now,
        boot: &boot,
        host: &config.host,
        sweep: SweepKind::Scheduled,
        hang_floor,
        future_tolerance: config.future_tolerance,
        pid_max: crate::probe::pid_max(),
    };
    // As in a sweep: a /proc that cannot show every process calls nothing gone.
    let blind = twin.proc_blindness.clone();

    for task in snapshot.running() {
        let probe = task.pid.map(|p| match (table.probe(p), &blind) {
            (Probe::Gone, Some(why)) => Probe::Unreadable(format!(
                "not visible, and /proc cannot show every process ({why})"
            )),
            (probe, _) => probe,
        });
        let prior = match (task.pid, &log) {
            (Some(pid), Some(l)) => l.prior(&task.id, task.attempt, pid)?,
            _ => None,
        };
        let j = crate::judge::guarded(
            judge,
            task,
            probe.as_ref(),
            prior.as_ref(),
            config.policy(&task.droid_type),
            &facts,
        );
        let members = match &probe {
            Some(Probe::Found(m)) => m.as_slice(),
            _ => &[],
        };
        let cpu_percent = prior.as_ref().and_then(|p| {
            let secs = (now - p.seen_at).num_milliseconds() as f64 / 1000.0;
            let moved: u64 = members
                .iter()
                .filter_map(|m| {
                    p.member(m.stat.pid, m.stat.start_ticks)
                        .map(|old| m.stat.cpu_ticks.saturating_sub(old.cpu_ticks))
                })
                .sum();
            (secs > 0.0 && !members.is_empty())
                .then(|| 100.0 * moved as f64 / boot.clk_tck as f64 / secs)
        });
        let rss: Option<u64> = (!members.is_empty())
            .then(|| members.iter().filter_map(|m| rss_bytes(m.stat.pid)).sum());
        for m in members.iter().skip(1).filter(|m| m.stat.is_zombie()) {
            twin.crashed.push(Crashed {
                what: "zombie".into(),
                task_id: Some(task.id.clone()),
                droid_type: Some(task.droid_type.clone()),
                pid: m.stat.pid,
                kind: "zombie".into(),
                detail: format!(
                    "a child of task {}'s process tree exited and was not reaped",
                    task.id
                ),
            });
        }
        if j.kind.is_gone() {
            twin.crashed.push(Crashed {
                what: "task".into(),
                task_id: Some(task.id.clone()),
                droid_type: Some(task.droid_type.clone()),
                pid: task.pid.unwrap_or(0),
                kind: j.kind.as_str().into(),
                detail: j.evidence.reason.clone(),
            });
        }
        *twin
            .executing_by_type
            .entry(task.droid_type.clone())
            .or_default() += 1;
        twin.executing.push(Executing {
            task_id: task.id.clone(),
            plan_id: task.plan_id.clone(),
            droid_type: task.droid_type.clone(),
            pid: task.pid,
            age_ms: task.started_at.map(|s| (now - s).num_milliseconds()),
            since_progress_ms: j
                .evidence
                .last_progress_at
                // Within startup grace the clock starts in the future: no
                // progress is due yet.
                .map(|t| (now - t).num_milliseconds().max(0)),
            progress_signal: j.evidence.last_progress_signal.clone(),
            cpu_percent,
            rss_bytes: rss,
            verdict: j.kind,
            reason: j.evidence.reason.clone(),
        });
    }
    twin.executing
        .sort_by(|a, b| (&a.droid_type, &a.task_id).cmp(&(&b.droid_type, &b.task_id)));

    if strays::enabled(config) {
        let owned = strays::owned(&table, &snapshot);
        for c in strays::candidates(&table, config, &owned) {
            twin.crashed.push(Crashed {
                what: "stray".into(),
                task_id: None,
                droid_type: c.droid_type.clone(),
                pid: c.stat.pid,
                kind: "stray".into(),
                detail: format!("no task owns it: {}", c.cmdline),
            });
        }
    }

    // Failures: once per (task, attempt), by the finding's kind when
    // Foreman made one, else `failed` as the executor says.
    let mut failures: BTreeMap<(String, i64), FailureRow> = BTreeMap::new();
    if let Some(l) = &log {
        let mut stmt = l.conn().prepare(
            "SELECT last_seen_at, task_id, attempt, droid_type, kind, json_extract(evidence, '$.reason')
             FROM findings WHERE last_seen_at >= ?1 AND kind != 'unverifiable'
               AND outcome NOT IN ('pending', 'cleared', 'already_finished')",
        )?;
        let rows = stmt.query_map([ts(since)], |r| {
            Ok(FailureRow {
                at: r.get(0)?,
                task_id: r.get(1)?,
                attempt: r.get(2)?,
                droid_type: r.get(3)?,
                kind: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        for f in rows {
            let f = f?;
            failures.insert((f.task_id.clone(), f.attempt), f);
        }
    }
    for row in &snapshot.rows {
        let Row::Task(t) = row else { continue };
        let Some(at) = t.finished_at.filter(|f| *f >= since) else {
            continue;
        };
        if t.state == TaskState::Failed {
            failures
                .entry((t.id.clone(), t.attempt))
                .or_insert_with(|| FailureRow {
                    at: ts(at),
                    task_id: t.id.clone(),
                    attempt: t.attempt,
                    droid_type: Some(t.droid_type.clone()),
                    kind: "failed".into(),
                    reason: t.error.clone(),
                });
        }
    }
    let mut recent: Vec<FailureRow> = failures.into_values().collect();
    recent.sort_by(|a, b| b.at.cmp(&a.at).then(a.task_id.cmp(&b.task_id)));
    for f in &recent {
        *twin
            .failures
            .by_type
            .entry(f.droid_type.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .entry(f.kind.clone())
            .or_default() += 1;
    }
    twin.failures.count = recent.len();
    if !all_failures && recent.len() > RECENT_FAILURES {
        recent.truncate(RECENT_FAILURES);
        twin.failures.complete = false;
    }
    twin.failures.recent = recent;

    grade(&mut twin, None, config.twin.warn_failures);
    Ok(twin)
}

/// The state and its reasons from what the snapshot found. An executor
/// that could not be read (`executor_error`) leaves nothing else to judge:
/// UNKNOWN, unless `/proc` is blind, which is known and CRITICAL.
fn grade(twin: &mut Twin, executor_error: Option<&str>, warn_failures: u32) {
    let raise = |twin: &mut Twin, state: State, why: String| {
        twin.state = twin.state.max(state);
        twin.reasons.push(why);
    };
    if let Some(b) = twin.proc_blindness.clone() {
        raise(
            twin,
            State::Critical,
            format!(
                "/proc cannot show the executor's processes, so no task can be judged gone: {b}"
            ),
        );
    }
    if let Some(e) = executor_error {
        if twin.state != State::Critical {
            twin.state = State::Unknown;
        }
        twin.reasons
            .push(format!("the executor could not be read: {e}"));
        return;
    }
    let gone = twin.crashed.iter().filter(|c| c.what == "task").count();
    if gone > 0 {
        raise(
            twin,
            State::Critical,
            format!("{gone} task(s) dead, zombie or reused and not marked yet"),
        );
    }
    if twin.daemon.stale {
        let why = match &twin.daemon.last_sweep_at {
            Some(t) => format!("the daemon's last sweep ({t}) is older than twice the interval"),
            None => "no sweep recorded: is the daemon running?".to_string(),
        };
        raise(twin, State::Critical, why);
    }
    if let Some(e) = twin.daemon.last_sweep_error.clone() {
        raise(
            twin,
            State::Critical,
            format!("the daemon's last sweep could not read the executor: {e}"),
        );
    }
    if let Some(d) = twin.daemon.deferral.clone() {
        let lasted = std::time::Duration::from_secs(d.seconds as u64);
        let max = std::time::Duration::from_secs(d.max_deferral_seconds as u64);
        if d.exceeded {
            raise(
                twin,
                State::Critical,
                format!(
                    "hung verdicts deferred for starvation for {} (since {}), longer than max_deferral {}: {}",
                    humantime::format_duration(lasted),
                    d.since,
                    humantime::format_duration(max),
                    d.reason
                ),
            );
        } else if d.hung_deferred > 0 {
            raise(
                twin,
                State::Warning,
                format!(
                    "{} hung verdict(s) deferred for starvation since {}: {}",
                    d.hung_deferred, d.since, d.reason
                ),
            );
        }
    }
    if let Some(r) = twin.daemon.last_review.as_ref().filter(|r| !r.passed) {
        let why = format!(
            "the latest review ({}) failed: {}",
            r.at,
            r.failed.join(", ")
        );
        raise(twin, State::Warning, why);
    }
    let hung = twin
        .executing
        .iter()
        .filter(|e| e.verdict == Kind::Hung)
        .count();
    if hung > 0 {
        raise(twin, State::Warning, format!("{hung} task(s) hung"));
    }
    // Past max_runtime: the sweep will stop it as it stops a hung one, so
    // it warns alike.
    let timed_out = twin
        .executing
        .iter()
        .filter(|e| e.verdict == Kind::TimedOut)
        .count();
    if timed_out > 0 {
        raise(
            twin,
            State::Warning,
            format!("{timed_out} task(s) past max_runtime"),
        );
    }
    let others = twin.crashed.iter().filter(|c| c.what != "task").count();
    if others > 0 {
        raise(
            twin,
            State::Warning,
            format!("{others} zombie or stray process(es)"),
        );
    }
    if twin.failures.count > warn_failures as usize {
        let (n, w) = (twin.failures.count, twin.failures.window.clone());
        raise(
            twin,
            State::Warning,
            format!("{n} failure(s) in the last {w}, above warn_failures {warn_failures}"),
        );
    }
}

fn daemon(config: &Config, log: Option<&ActivityLog>, now: DateTime<Utc>) -> Result<Daemon> {
    let last: Option<(String, i64)> = match log {
        Some(l) => l
            .conn()
            .query_row(
                "SELECT started_at, findings FROM sweeps WHERE finished_at IS NOT NULL AND kind NOT IN ('event', 'fleet') ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        None => None,
    };
    let stale = match &last {
        Some((at, _)) => DateTime::parse_from_rfc3339(at)
            .map(|t| now - t.with_timezone(&Utc))
            .map_or(true, |age| {
                age > chrono::Duration::from_std(config.interval * 2)
                    .unwrap_or(chrono::Duration::MAX)
            }),
        None => true,
    };
    let last_review = match log {
        Some(l) => crate::wellbeing::store::review(l.conn())?,
        None => None,
    };
    let health = match log {
        Some(l) => l.sweep_health()?,
        None => None,
    };
    let max = config.defaults.max_deferral();
    let deferral = health.as_ref().and_then(|h| h.deferral.as_ref()).map(|d| {
        let lasted = d.lasted(now);
        Deferring {
            reason: d.reason.clone(),
            since: ts(d.since),
            seconds: lasted.as_secs_f64(),
            hung_deferred: d.hung_deferred,
            max_deferral_seconds: max.as_secs_f64(),
            exceeded: lasted > max,
        }
    });
    Ok(Daemon {
        last_sweep_at: last.as_ref().map(|l| l.0.clone()),
        last_sweep_findings: last.map(|l| l.1),
        stale,
        last_sweep_error: health.and_then(|h| h.error),
        deferral,
        last_review: last_review.map(|r| LastReview {
            run_id: r.id,
            at: ts(r.at),
            passed: r.passed,
            failed: r.failed,
        }),
    })
}

fn dur(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1}M", b as f64 / 1_048_576.0))
}

/// How many terminal columns `s` takes: CJK and most emoji take two, and
/// combining marks none, so a count of chars would misalign and overflow.
fn cols(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `line` cut to at most `width` columns, ending in `…` when cut. A cut
/// row is then exactly as wide as the terminal and never wraps.
fn fit(line: &str, width: usize) -> String {
    if cols(line) <= width {
        return line.to_string();
    }
    let room = width.saturating_sub(1);
    let mut out = String::new();
    for c in line.chars() {
        // The prefix as a whole, not a sum of chars: a variation selector
        // or joiner changes the width of the char before it.
        out.push(c);
        if cols(&out) > room {
            out.pop();
            break;
        }
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// Columns padded to their widest cell (in columns, not chars), indented
/// by 2; the caller fits the lines to the terminal.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| cols(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(cols(c));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                let pad = w[i] - cols(c) + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// Nagios performance data from twin's counts, `label=value` separated by
/// spaces, so that the check that alerts also feeds the graphs.
pub fn perfdata(t: &Twin) -> String {
    let crashed = |what: &str| t.crashed.iter().filter(|c| c.what == what).count();
    let verdict = |k: Kind| t.executing.iter().filter(|e| e.verdict == k).count();
    let counts = [
        ("running", t.executing.len()),
        ("dead", crashed("task")),
        ("hung", verdict(Kind::Hung)),
        ("timed_out", verdict(Kind::TimedOut)),
        ("unverifiable", verdict(Kind::Unverifiable)),
        ("failures", t.failures.count),
        ("zombies", crashed("zombie")),
        ("strays", crashed("stray")),
        ("crashed", t.crashed.len()),
        ("plans", t.plans.len()),
        (
            "plans_complete",
            t.plans.iter().filter(|p| p.is_complete).count(),
        ),
        (
            "hung_deferred",
            t.daemon
                .deferral
                .as_ref()
                .map_or(0, |d| d.hung_deferred as usize),
        ),
        ("daemon_stale", usize::from(t.daemon.stale)),
    ];
    counts
        .iter()
        .map(|(label, n)| format!("{label}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The snapshot as an operator reads it: every line cut to `width`
/// columns (a terminal's), or full with `None`; `color` only on a terminal.
/// The first line is a Nagios plugin's: the state, a summary, then `|` and
/// the performance data.
pub fn text(t: &Twin, width: Option<usize>, color: bool) -> String {
    let mut out = String::new();
    let state = t.state.as_str();
    let summary = if t.reasons.is_empty() {
        format!(
            "{} running, {} failure(s) in the last {}",
            t.executing.len(),
            t.failures.count,
            t.failures.window
        )
    } else {
        t.reasons.join("; ")
    };
    // Nagios takes the first `|` as the start of the performance data: one
    // inside a reason (an error's text) would garble it.
    let summary = summary.replace('|', "/");
    let _ = writeln!(out, "FOREMAN {state} - {summary} | {}", perfdata(t));
    let _ = writeln!(
        out,
        "generated {}; daemon's last sweep {}; last review {}",
        t.generated_at,
        t.daemon.last_sweep_at.as_deref().unwrap_or("never"),
        match &t.daemon.last_review {
            None => "never".to_string(),
            Some(r) if r.passed => format!("{} passed", r.at),
            Some(r) => format!("{} FAILED ({})", r.at, r.failed.join(", ")),
        }
    );

    if let Some(b) = &t.proc_blindness {
        let _ = writeln!(out, "/proc BLIND: {b}");
    }
    if let Some(e) = &t.daemon.last_sweep_error {
        let _ = writeln!(out, "daemon's last sweep: {e}");
    }
    if let Some(d) = &t.daemon.deferral {
        let _ = writeln!(
            out,
            "deferring hung verdicts since {} ({}{}, max_deferral {}): {} deferred by the last sweep; {}",
            d.since,
            dur(Some((d.seconds * 1000.0) as i64)),
            if d.exceeded { ", TOO LONG" } else { "" },
            dur(Some((d.max_deferral_seconds * 1000.0) as i64)),
            d.hung_deferred,
            d.reason
        );
    }

    let counts: Vec<String> = t
        .executing_by_type
        .iter()
        .map(|(ty, n)| format!("{ty} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\nExecuting droids ({}{})",
        t.executing.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        }
    );
    let rows: Vec<Vec<String>> = t
        .executing
        .iter()
        .map(|e| {
            vec![
                e.droid_type.clone(),
                e.task_id.clone(),
                e.plan_id.clone().unwrap_or_else(|| "-".into()),
                e.pid.map_or("-".into(), |p| p.to_string()),
                dur(e.age_ms),
                format!(
                    "{} {}",
                    dur(e.since_progress_ms),
                    e.progress_signal.as_deref().unwrap_or("")
                )
                .trim()
                .to_string(),
                e.cpu_percent.map_or("-".into(), |c| format!("{c:.0}%")),
                mib(e.rss_bytes),
                e.verdict.as_str().to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "TYPE", "TASK", "PLAN", "PID", "AGE", "PROGRESS", "CPU", "RSS", "VERDICT",
        ],
        &rows,
    );

    let complete = t.plans.iter().filter(|p| p.is_complete).count();
    let _ = writeln!(out, "\nPlans ({}, {complete} complete)", t.plans.len());
    let rows: Vec<Vec<String>> = t
        .plans
        .iter()
        .map(|p| {
            let c = &p.counts;
            vec![
                p.plan_id.clone(),
                format!("{:.2}", p.health_score),
                format!(
                    "{}/{}/{}/{}/{}",
                    c.pending, c.running, c.success, c.failed, c.skipped
                ),
                if p.stalled.is_empty() {
                    "-".into()
                } else {
                    p.stalled.join(",")
                },
                if p.is_complete { "complete" } else { "running" }.into(),
                ts(p.updated_at),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(
            &mut out,
            &[
                "PLAN",
                "HEALTH",
                "PEND/RUN/OK/FAIL/SKIP",
                "STALLED",
                "STATE",
                "UPDATED",
            ],
            &rows,
        );
    }

    if !t.silences.is_empty() {
        let _ = writeln!(
            out,
            "\nSilenced ({}): findings recorded, actions and alerts held",
            t.silences.len()
        );
        for h in &t.silences {
            let _ = writeln!(out, "  {}", h.line());
        }
    }
    let _ = writeln!(
        out,
        "\nFailures in the last {} ({})",
        t.failures.window, t.failures.count
    );
    for (ty, kinds) in &t.failures.by_type {
        let k: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "  {ty}: {}", k.join(", "));
    }
    let rows: Vec<Vec<String>> = t
        .failures
        .recent
        .iter()
        .map(|f| {
            vec![
                f.at.clone(),
                format!("{}/{}", f.task_id, f.attempt),
                f.droid_type.clone().unwrap_or_else(|| "-".into()),
                f.kind.clone(),
                f.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(&mut out, &["AT", "TASK", "TYPE", "KIND", "REASON"], &rows);
    }
    if !t.failures.complete {
        let _ = writeln!(
            out,
            "  (the latest {} of {}; --all-failures lists every one)",
            t.failures.recent.len(),
            t.failures.count
        );
    }

    let _ = writeln!(
        out,
        "\nCrashed processes not cleaned up ({})",
        t.crashed.len()
    );
    let rows: Vec<Vec<String>> = t
        .crashed
        .iter()
        .map(|c| {
            vec![
                c.what.clone(),
                c.task_id.clone().unwrap_or_else(|| "-".into()),
                c.droid_type.clone().unwrap_or_else(|| "-".into()),
                c.pid.to_string(),
                c.kind.clone(),
                c.detail.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(
            &mut out,
            &["WHAT", "TASK", "TYPE", "PID", "KIND", "DETAIL"],
            &rows,
        );
    }
    let mut out = match width {
        None => out,
        Some(width) => out.lines().map(|l| fit(l, width) + "\n").collect(),
    };
    // Colour after fitting: escapes take no columns but would be counted,
    // and a cut must not fall inside one.
    let plain = format!("FOREMAN {state}");
    if color && out.starts_with(&plain) {
        let code = match t.state {
            State::Ok => "32",
            State::Warning => "33",
            State::Critical => "31",
            State::Unknown => "35",
        };
        out.replace_range(
            ..plain.len(),
            &format!("FOREMAN \x1b[1;{code}m{state}\x1b[0m"),
        );
    }
    out
}

/// The terminal's columns, or `None` when stdout is not a terminal.
pub fn terminal_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// The terminal's width, or 120 when stdout is not one (`--fleet`'s view).
pub fn terminal_width() -> usize {
    terminal_columns().unwrap_or(120)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(blind: Option<&str>) -> Twin {
        Twin {
            state: State::Ok,
            reasons: Vec::new(),
            generated_at: "2025-01-01T00:00:00.000Z".into(),
            proc_blindness: blind.map(String::from),
            executing: Vec::new(),
            executing_by_type: BTreeMap::new(),
            failures: Failures {
                window: "1h".into(),
                since: "2024-12-31T23:00:00.000Z".into(),
                count: 0,
                by_type: BTreeMap::new(),
                recent: Vec::new(),
                complete: true,
            },
            crashed: Vec::new(),
            daemon: Daemon {
                last_sweep_at: Some("2025-01-01T00:00:00.000Z".into()),
                last_sweep_findings: Some(0),
                stale: false,
                last_sweep_error: None,
                deferral: None,
                last_review: None,
            },
            plans: Vec::new(),
            silences: Vec::new(),
        }
    }

    #[test]
    fn a_blind_proc_is_critical_naming_the_reason_even_when_the_executor_is_unreadable() {
        let mut t = twin(None);
        grade(&mut t, None, 10);
        assert_eq!((t.state, t.reasons.len()), (State::Ok, 0));

        let why = "/proc is mounted with hidepid=2";
        let mut t = twin(Some(why));
        grade(&mut t, None, 10);
        assert_eq!(t.state, State::Critical);
        assert_eq!(t.state.exit_code(), 2);
        assert!(t.reasons.iter().any(|r| r.contains(why)), "{:?}", t.reasons);
        let text = text(&t, None, false);
        assert!(text.starts_with("FOREMAN CRITICAL - "), "{text}");
        assert!(text.contains(why), "{text}");

        // An unreadable executor alone is UNKNOWN; with a blind /proc,
        // what is known wins: CRITICAL, both named.
        let mut t = twin(None);
        grade(&mut t, Some("no such file"), 10);
        assert_eq!(t.state, State::Unknown);
        let mut t = twin(Some(why));
        grade(&mut t, Some("no such file"), 10);
        assert_eq!(t.state, State::Critical);
        assert_eq!(t.reasons.len(), 2, "{:?}", t.reasons);
    }

    #[test]
    fn the_daemons_snapshot_error_is_critical_and_a_short_deferral_warns() {
        let mut t = twin(None);
        t.daemon.last_sweep_error = Some("snapshot_error: unable to open database file".into());
        grade(&mut t, None, 10);
        assert_eq!(t.state, State::Critical);
        assert!(t.reasons[0].contains("unable to open database file"));

        let deferring = |seconds: f64, hung: u64| Deferring {
            reason: "this sweep started 40s late".into(),
            since: "2025-01-01T00:00:00.000Z".into(),
            seconds,
            hung_deferred: hung,
            max_deferral_seconds: 600.0,
            exceeded: seconds > 600.0,
        };
        let mut t = twin(None);
        t.daemon.deferral = Some(deferring(60.0, 0));
        grade(&mut t, None, 10);
        assert_eq!(t.state, State::Ok, "nothing deferred yet: {:?}", t.reasons);
        let mut t = twin(None);
        t.daemon.deferral = Some(deferring(60.0, 2));
        grade(&mut t, None, 10);
        assert_eq!(t.state, State::Warning);
        let mut t = twin(None);
        t.daemon.deferral = Some(deferring(900.0, 0));
        grade(&mut t, None, 10);
        assert_eq!(t.state, State::Critical);
        assert!(
            t.reasons[0].contains("longer than max_deferral 10m") && t.reasons[0].contains("late"),
            "{:?}",
            t.reasons
        );
    }

    fn executing(task_id: &str, verdict: Kind) -> Executing {
        Executing {
            task_id: task_id.into(),
            plan_id: Some("plan-a".into()),
            droid_type: "builder".into(),
            pid: Some(4121),
            age_ms: Some(3_600_000),
            since_progress_ms: Some(2_400_000),
            progress_signal: Some("heartbeat".into()),
            cpu_percent: Some(12.0),
            rss_bytes: Some(52_428_800),
            verdict,
            reason: "the reason".into(),
        }
    }

    /// Task ids of wide CJK characters, emoji (one with a variation
    /// selector, one a joined sequence) and a combining mark: every line,
    /// the status line included, fits the width in columns, and the
    /// widest lines were cut to exactly the width, not short of it.
    #[test]
    fn every_line_fits_the_width_in_columns_with_wide_characters() {
        let mut t = twin(None);
        t.executing = vec![
            executing(
                "构建任务-数据库迁移-第二阶段-非常长的任务标识符",
                Kind::Alive,
            ),
            executing(
                "deploy-🚀🚀🚀-☺\u{fe0f}-👩\u{200d}💻-e\u{301}-long-task-id",
                Kind::Hung,
            ),
            executing(&"x".repeat(150), Kind::Alive),
        ];
        t.executing_by_type.insert("builder".into(), 3);
        t.failures.count = 1;
        t.failures.recent = vec![FailureRow {
            at: "2025-01-01T00:00:00.000Z".into(),
            task_id: "失败的任务🔥".into(),
            attempt: 1,
            droid_type: Some("builder".into()),
            kind: "failed".into(),
            reason: Some("出错了：进程以状态 3 退出 | and a pipe".into()),
        }];
        grade(&mut t, None, 0);
        let full = text(&t, None, false);
        assert!(
            full.lines().any(|l| cols(l) > 150),
            "full rows are not cut:\n{full}"
        );
        for width in [20, 40, 79, 80, 81, 120] {
            for color in [false, true] {
                let out = text(&t, Some(width), color);
                let plain = out.replace("\x1b[1;33m", "").replace("\x1b[0m", "");
                for line in plain.lines() {
                    assert!(
                        cols(line) <= width,
                        "{} columns > {width}: {line:?}",
                        cols(line)
                    );
                }
                assert!(
                    plain.lines().any(|l| cols(l) == width && l.ends_with('…')),
                    "a cut row fills the width {width}:\n{plain}"
                );
                assert_eq!(
                    plain.lines().count(),
                    full.lines().count(),
                    "no line lost or split"
                );
            }
        }
        // The rows line up by columns: each VERDICT starts in one column.
        let wide = text(&t, None, false);
        let at: Vec<usize> = wide
            .lines()
            .filter(|l| l.ends_with(" alive") || l.ends_with(" hung") || l.ends_with("VERDICT"))
            .map(|l| cols(l.trim_end_matches(|c: char| c.is_ascii_alphabetic())))
            .collect();
        assert_eq!(at.len(), 4, "{wide}");
        assert!(at.iter().all(|c| *c == at[0]), "{at:?}\n{wide}");
    }

    #[test]
    fn fit_cuts_by_columns_and_marks_the_cut() {
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("abcd", 3), "ab…");
        // 世 takes two columns: a third would overflow, so one is left blank.
        assert_eq!(fit("世界世界", 4), "世…");
        assert_eq!(cols(&fit("世界世界", 4)), 3);
        assert_eq!(fit("abc", 0), "");
    }

    #[test]
    fn the_status_line_carries_perfdata_matching_the_counts() {
        let mut t = twin(None);
        t.executing = vec![
            executing("a", Kind::Alive),
            executing("b", Kind::Hung),
            executing("c", Kind::Hung),
            executing("d", Kind::TimedOut),
        ];
        t.crashed = vec![Crashed {
            what: "stray".into(),
            task_id: None,
            droid_type: None,
            pid: 7,
            kind: "stray".into(),
            detail: "no task owns it".into(),
        }];
        t.reasons = vec!["the executor said a|b".into()];
        let first = text(&t, None, false);
        let first = first.lines().next().expect("a first line");
        let (status, perf) = first.split_once(" | ").expect("perfdata after ` | `");
        assert!(!status.contains('|'), "one `|` only: {first}");
        let pairs: BTreeMap<&str, &str> = perf
            .split(' ')
            .map(|p| p.split_once('=').expect("label=value"))
            .collect();
        for (label, n) in [
            ("running", "4"),
            ("hung", "2"),
            ("timed_out", "1"),
            ("dead", "0"),
            ("strays", "1"),
            ("crashed", "1"),
        ] {
            assert_eq!(pairs.get(label), Some(&n), "{label} in {perf}");
        }
    }
}
