//! The sweep's stray stage: `crate::strays`' candidates (matching
//! processes no task owns) planned as findings. Strays are recorded once
//! seen on two consecutive sweeps, once each.
//! Terminating one needs a snapshot this sweep can trust: no malformed
//! row, and this host's work in it (a snapshot that lost its tasks makes
//! every worker look like a stray).

use super::act::tree_of;
use super::plan::Planned;
use super::record::Memory;
use super::Sight;
use crate::activity::{NewFinding, OpenFinding, StrayHistory};
use crate::config::{Config, Policy};
use crate::decide::Decision;
use crate::model::{Action, Kind, Mode, OnStray, Outcome, Row, Snapshot, Task};
use crate::probe::{BootFacts, Probe};
use crate::strays::Candidate;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// The strays this sweep records, each with the candidate it came from.
#[derive(Default)]
pub(super) struct Strays<'t> {
    pub planned: Vec<Planned<'t>>,
    candidates: Vec<Candidate>,
}

impl Strays<'_> {
    /// Terminations the brake must count with the tasks'.
    pub(super) fn acting(&self) -> usize {
        self.planned
            .iter()
            .filter(|p| p.decision.should_act())
            .count()
    }

    /// Recorded once; a braked stray is decided again next sweep.
    pub(super) fn note_reported(&self, memory: &Memory<'_>, boot_id: &str) -> Result<()> {
        for (p, c) in self.planned.iter().zip(&self.candidates) {
            if p.decision.outcome != Outcome::Braked {
                memory.stray_reported(boot_id, c)?;
            }
        }
        Ok(())
    }
}

/// Plan this sweep's strays (each candidate's sighting noted in memory).
pub(super) fn plan<'t>(
    sight: &Sight<'_>,
    memory: &Memory<'_>,
    snapshot: &Snapshot,
    running: &[&Task],
    local: usize,
    open: &[OpenFinding],
) -> Result<Strays<'t>> {
    let mut strays = Strays {
        planned: Vec::new(),
        candidates: Vec::new(),
    };
    let (config, boot, now) = (sight.config, sight.facts.boot, sight.facts.now);
    if !crate::strays::enabled(config) {
        return Ok(strays);
    }
    let owned = crate::strays::owned(sight.table, snapshot);
    let bad_rows = snapshot.rows.iter().any(|r| matches!(r, Row::Bad(_)));
    let distrust = if bad_rows {
        Some("the snapshot has malformed rows".to_string())
    } else if local == 0 {
        Some("the snapshot shows no RUNNING task on this host".to_string())
    } else {
        sight
            .blind
            .map(|why| format!("/proc cannot show every process ({why})"))
    };
    // A RUNNING task of this host without a pid yet has a worker that
    // may be this very process: a process any such task's type would
    // match is reported only (whichever type's pattern claimed it).
    let pidless: Vec<&str> = running
        .iter()
        .filter(|t| t.pid.is_none() && t.host.as_deref().is_none_or(|h| h == config.host))
        .map(|t| t.droid_type.as_str())
        .collect();
    for c in crate::strays::candidates(sight.table, config, &owned) {
        let seen = memory.stray(&boot.boot_id, &c, now)?;
        let key = format!(
            "stray:{}:{}:{}",
            boot.boot_id.get(..8).unwrap_or(&boot.boot_id),
            c.stat.pid,
            c.stat.start_ticks
        );
        // A stray whose action a crash interrupted is decided again.
        let resumed = open.iter().any(|o| o.task_id == key);
        if !seen.seen_last_sweep || (seen.reported && !resumed) {
            continue;
        }
        let policy = c
            .droid_type
            .as_deref()
            .map_or(&config.defaults, |t| config.policy(t));
        let started = boot.started_at(c.stat.start_ticks);
        let age = (now - started).to_std().unwrap_or_default();
        // As young as a task may be before its first heartbeat: it may
        // still be on its way to being registered.
        if age < policy.startup_grace {
            continue;
        }
        let why_not = distrust
            .clone()
            .or(unregistered(config, &pidless, &c.cmdline));
        let decision = decision(policy, why_not);
        let pid = c.stat.pid;
        let mut tree = Vec::new();
        if let Probe::Found(members) = sight.table.probe(pid) {
            // The same process the scan matched, descendants first.
            if members.first().map(|m| m.stat.start_ticks) == Some(c.stat.start_ticks) {
                tree = tree_of(&members);
            }
        }
        let evidence = evidence(&c, &seen, boot, started, age, tree.len());
        strays.planned.push(Planned {
            task: None,
            finding: NewFinding {
                task_id: key,
                attempt: 0,
                kind: Kind::Stray,
                droid_type: c.droid_type.clone(),
                plan_id: None,
                pid: Some(pid),
                host: None,
                evidence,
                action: decision.action,
                outcome: decision.outcome,
                detail: decision.note.clone(),
                inputs: serde_json::Value::Null,
            },
            decision,
            tree,
            resume: false,
        });
        strays.candidates.push(c);
    }
    Ok(strays)
}

/// Why this process may be the worker of a RUNNING task with no pid yet.
fn unregistered(config: &Config, pidless: &[&str], cmdline: &str) -> Option<String> {
    pidless
        .iter()
        .find(|t| {
            config
                .policy(t)
                .process_match
                .as_ref()
                .is_some_and(|re| re.is_match(cmdline))
        })
        .map(|t| format!("a RUNNING {t} task has no pid recorded yet; this may be its worker"))
}

/// What is done with a stray: terminated only when enforcing and nothing
/// says not to; otherwise reported, saying why.
fn decision(policy: &Policy, why_not: Option<String>) -> Decision {
    match (policy.on_stray, policy.mode, why_not) {
        (OnStray::Terminate, Mode::Enforce, None) => Decision {
            action: Action::Terminate,
            outcome: Outcome::Pending,
            note: None,
        },
        (OnStray::Terminate, Mode::Enforce, Some(why)) => Decision {
            action: Action::None,
            outcome: Outcome::Reported,
            note: Some(format!("not terminated: {why}")),
        },
        (OnStray::Terminate, Mode::Shadow, _) => Decision {
            action: Action::None,
            outcome: Outcome::Reported,
            note: Some("shadow mode: would terminate".into()),
        },
        (OnStray::Report, _, _) => Decision {
            action: Action::None,
            outcome: Outcome::Reported,
            note: None,
        },
    }
}

/// A stray's evidence: the process, its identity, and since when it is seen.
fn evidence(
    c: &Candidate,
    seen: &StrayHistory,
    boot: &BootFacts,
    started: DateTime<Utc>,
    age: std::time::Duration,
    members: usize,
) -> serde_json::Value {
    let pid = c.stat.pid;
    serde_json::json!({
        "reason": format!(
            "process {pid} matches the process_match of {} but no task owns it; seen since {}",
            c.droid_type.as_deref().map_or("[defaults]".to_string(), |t| format!("droid type {t}")),
            seen.first_seen_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        "cmdline": c.cmdline,
        "start_ticks": c.stat.start_ticks,
        "process_started_at": started,
        "age_ms": age.as_millis() as u64,
        "ppid": c.stat.ppid,
        "pgrp": c.stat.pgrp,
        "state": c.stat.state.to_string(),
        "members": members,
        "first_seen_at": seen.first_seen_at,
        "boot_id": boot.boot_id,
    })
}
