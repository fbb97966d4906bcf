//! `foreman explain FINDING_ID`: why Foreman did what it did to a task.
//! Shows the inputs the judge was given (the snapshot row, the probe, the
//! prior observation, the policy, the sweep's facts), what was decided and
//! done (signals, mark, alerts), with every time; then judges again from the
//! same inputs and says whether the verdict is the same.

use crate::activity::{ActivityLog, StoredFinding, FINDING_COLUMNS};
use crate::judge::Inputs;
use crate::model::Kind;
use crate::probe::Probe;
use anyhow::{Context, Result};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct SignalSent {
    pub at: String,
    pub pid: i32,
    pub start_ticks: Option<i64>,
    pub signal: String,
    pub result: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertState {
    pub sink: String,
    pub state: String,
    pub queued_at: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub closed_at: Option<String>,
    pub close_reason: Option<String>,
}

/// The verdict given again from the kept inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub kind: Kind,
    pub reason: String,
    /// The finding's kind and reason are what the judge says again.
    pub same: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub finding: StoredFinding,
    /// `None` for a malformed snapshot row: the judge never saw it.
    pub inputs: Option<Inputs>,
    pub signals: Vec<SignalSent>,
    pub alerts: Vec<AlertState>,
    pub replay: Option<Replay>,
    /// The fingerprint of the configuration now, to compare with the one
    /// in force then.
    pub config_fingerprint_now: String,
}

/// Everything the log knows of finding `id`; `None` if there is none.
pub fn load(log: &ActivityLog, id: i64, fingerprint_now: &str) -> Result<Option<Explanation>> {
    let conn = log.conn();
    let row = conn
        .query_row(
            &format!("SELECT {FINDING_COLUMNS}, f.inputs FROM findings f WHERE f.id = ?1"),
            [id],
            |r| Ok((StoredFinding::read(r, 0)?, r.get::<_, Option<String>>(18)?)),
        )
        .optional()
        .context("reading the finding")?;
    let Some((finding, inputs)) = row else {
        return Ok(None);
    };
    let inputs: Option<Inputs> = inputs
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .context("the finding's inputs")?;

    let mut stmt = conn.prepare(
        "SELECT at, pid, start_ticks, signal, result FROM finding_signals WHERE finding_id = ?1 ORDER BY id",
    )?;
    let signals = stmt
        .query_map([id], |r| {
            Ok(SignalSent {
                at: r.get(0)?,
                pid: r.get(1)?,
                start_ticks: r.get(2)?,
                signal: r.get(3)?,
                result: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare(
        "SELECT sink, state, queued_at, attempts, last_error, closed_at, close_reason
         FROM alerts WHERE finding_id = ?1 ORDER BY id",
    )?;
    let alerts = stmt
        .query_map(params![id], |r| {
            Ok(AlertState {
                sink: r.get(0)?,
                state: r.get(1)?,
                queued_at: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                closed_at: r.get(5)?,
                close_reason: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let replay = inputs.as_ref().map(|i| {
        let j = i.replay();
        let reason_then = finding.reason();
        // The finding may have kept the kind of the open finding it
        // continues; the judge must still say what it said then.
        let kind_ok =
            j.kind == i.verdict && i.continues.unwrap_or(i.verdict).as_str() == finding.kind;
        Replay {
            kind: j.kind,
            same: kind_ok && reason_then == Some(j.evidence.reason.as_str()),
            reason: j.evidence.reason,
        }
    });
    Ok(Some(Explanation {
        finding,
        inputs,
        signals,
        alerts,
        replay,
        config_fingerprint_now: fingerprint_now.to_string(),
    }))
}

fn ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// Times as everywhere else in Foreman: RFC 3339 UTC.
fn at(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn opt_at(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.as_ref().map_or("-".to_string(), at)
}

/// A word as the configuration and JSON spell it.
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

/// The explanation as an operator reads it.
pub fn text(e: &Explanation) -> String {
    let f = &e.finding;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "Finding {}: task {} attempt {} ({}, plan {}) on {}",
        f.id,
        f.task_id,
        f.attempt,
        f.droid_type.as_deref().unwrap_or("no droid type"),
        f.plan_id.as_deref().unwrap_or("-"),
        f.host.as_deref().unwrap_or("this host"),
    );
    let _ = writeln!(w, "  verdict    {}", f.kind);
    let _ = writeln!(w, "  because    {}", f.reason().unwrap_or("-"));
    let _ = writeln!(
        w,
        "  seen       first {} (sweep #{}), last {} (sweep #{}), {} time(s)",
        f.first_seen_at, f.first_sweep_id, f.last_seen_at, f.last_sweep_id, f.times_seen
    );
    let _ = writeln!(
        w,
        "  decided    {} -> {}{}{}",
        f.action,
        f.outcome,
        f.acted_at
            .as_ref()
            .map_or(String::new(), |t| format!(" at {t}")),
        f.detail
            .as_ref()
            .map_or(String::new(), |d| format!(" ({d})")),
    );
    let Some(i) = &e.inputs else {
        let _ = writeln!(
            w,
            "\n{}",
            match f.kind.as_str() {
                "stray" => "A stray is found by its command line, not judged: the reason says what matched, and the evidence its identity.",
                "unverifiable" => "No judge inputs were kept: the snapshot row could not be read (see the reason).",
                "host_lost" => "A lost host is not judged from /proc: the fleet's leader found the host's Foreman silent and none of its RUNNING tasks beating, both by the database's clock; the reason says which host, how long it was silent and when the task last beat.",
                _ => "No judge inputs were kept for this finding (recorded by an older Foreman).",
            }
        );
        history(w, e);
        return out;
    };
    let t = &i.task;
    let _ = writeln!(w, "\nSnapshot row as read");
    let _ = writeln!(
        w,
        "  state {}, pid {}, attempt {}, host {}",
        word(&t.state),
        opt(&t.pid),
        t.attempt,
        t.host.as_deref().unwrap_or("(this host)")
    );
    let _ = writeln!(
        w,
        "  started_at {}, last_progress_at {}, pid_start_ticks {}",
        opt_at(&t.started_at),
        opt_at(&t.last_progress_at),
        opt(&t.pid_start_ticks)
    );
    let _ = writeln!(
        w,
        "\nProbe at {} ({} sweep; boot {} at {}, {} ticks/s)",
        at(&i.now),
        i.sweep.as_str(),
        i.boot.boot_id,
        at(&i.boot.boot_time),
        i.boot.clk_tck
    );
    match &i.probe {
        None => {
            let _ = writeln!(w, "  no pid to probe");
        }
        Some(Probe::Gone) => {
            let _ = writeln!(w, "  the pid does not exist");
        }
        Some(Probe::Unreadable(why)) => {
            let _ = writeln!(w, "  unreadable: {why}");
        }
        Some(Probe::Found(members)) => {
            for m in members {
                let s = &m.stat;
                let _ = writeln!(
                    w,
                    "  pid {} state {} ppid {} pgrp {} start_ticks {} (started {}) cpu_ticks {} io_bytes {}",
                    s.pid,
                    s.state,
                    s.ppid,
                    s.pgrp,
                    s.start_ticks,
                    at(&i.boot.started_at(s.start_ticks)),
                    s.cpu_ticks,
                    opt(&m.io_bytes)
                );
            }
        }
    }
    let _ = writeln!(w, "\nPrior observation");
    match &i.prior {
        None => {
            let _ = writeln!(w, "  none: first sight of this (task, attempt, pid)");
        }
        Some(p) => {
            let _ = writeln!(
                w,
                "  bound start_ticks {} ({}) on boot {}, first seen {}, last seen {}",
                opt(&p.start_ticks),
                p.binding.map_or("-", |b| match b {
                    crate::observation::Binding::FirstSight => "first sight",
                    crate::observation::Binding::Executor => "from the executor",
                }),
                p.boot_id,
                at(&p.first_seen_at),
                at(&p.seen_at)
            );
            let _ = writeln!(
                w,
                "  cpu moved {}, io moved {}, gone since {}",
                opt_at(&p.cpu_moved_at),
                opt_at(&p.io_moved_at),
                opt_at(&p.gone_since)
            );
            for m in &p.members {
                let _ = writeln!(
                    w,
                    "  member pid {} start_ticks {} cpu_ticks {} io_bytes {}",
                    m.pid,
                    m.start_ticks,
                    m.cpu_ticks,
                    opt(&m.io_bytes)
                );
            }
        }
    }
    let p = &i.policy;
    let progress: Vec<&str> = p.progress.iter().map(|s| s.as_str()).collect();
    let _ = writeln!(w, "\nPolicy in force");
    let _ = writeln!(
        w,
        "  timeout {}, startup_grace {}, progress {:?}, pid_start_tolerance {}",
        ms(p.timeout_ms),
        ms(p.startup_grace_ms),
        progress,
        ms(p.pid_start_tolerance_ms)
    );
    let _ = writeln!(
        w,
        "  exit_grace {}, on_hung {}, kill_grace {}, mode {}",
        ms(p.exit_grace_ms),
        word(&p.on_hung),
        ms(p.kill_grace_ms),
        word(&p.mode)
    );
    let _ = writeln!(
        w,
        "  max_runtime {}",
        p.max_runtime_ms.map_or("none".to_string(), ms)
    );
    let same_config = if i.config_fingerprint == e.config_fingerprint_now {
        "the same as now"
    } else {
        "changed since"
    };
    let _ = writeln!(
        w,
        "  configuration fingerprint {} ({same_config})",
        i.config_fingerprint
    );
    history(w, e);
    if let Some(r) = &e.replay {
        let _ = writeln!(w, "\nJudged again from these inputs");
        let _ = writeln!(w, "  verdict {}: {}", r.kind, r.reason);
        if let Some(kept) = i.continues {
            let _ = writeln!(
                w,
                "  (the finding kept the kind {kept} of the open finding it continues)"
            );
        }
        let _ = writeln!(
            w,
            "  {}",
            if r.same {
                "the same verdict"
            } else {
                "A DIFFERENT VERDICT: this Foreman would not decide the same way"
            }
        );
    }
    out
}

/// What was done about the finding: signals and alerts.
fn history(w: &mut String, e: &Explanation) {
    if !e.signals.is_empty() {
        let _ = writeln!(w, "\nSignals");
        for s in &e.signals {
            let _ = writeln!(
                w,
                "  {} {} to pid {} (start_ticks {}): {}",
                s.at,
                s.signal,
                s.pid,
                opt(&s.start_ticks),
                s.result
            );
        }
    }
    if !e.alerts.is_empty() {
        let _ = writeln!(w, "\nAlerts");
        for a in &e.alerts {
            let _ = writeln!(
                w,
                "  {}: {} (queued {}, {} attempt(s){}{})",
                a.sink,
                a.state,
                a.queued_at,
                a.attempts,
                a.closed_at
                    .as_ref()
                    .map_or(String::new(), |t| format!(", closed {t}")),
                a.last_error
                    .as_ref()
                    .filter(|_| a.state != "delivered")
                    .map_or(String::new(), |err| format!(", last error: {err}")),
            );
        }
    }
}
