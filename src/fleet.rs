//! One Foreman per host, meeting in the executor's PostgreSQL database.
//!
//! Each Foreman beats after every full sweep (its row in
//! `<schema>.foreman_hosts`, `last_seen` written with the database's
//! clock, so no host's clock matters). One of them holds an advisory lock,
//! PostgreSQL's own election: that leader reads the fleet and, when a
//! host's Foreman has been silent for `host_lost_after` and none of that
//! host's RUNNING tasks has a heartbeat within it either, fails those tasks
//! (`host_lost`), since the only Foreman that could judge them died with
//! its host. What is lost is decided here, purely; the leader's sweep
//! (`sweep::fleet`) records and acts.

use crate::model::{Row, Snapshot, Task};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a Foreman writes about itself after each full sweep.
#[derive(Debug, Clone)]
pub struct Beat {
    pub boot_id: String,
    pub version: String,
    pub pid: u32,
    /// When this Foreman started.
    pub started_at: DateTime<Utc>,
    pub last_sweep_at: Option<DateTime<Utc>>,
    pub running: i64,
    pub findings: i64,
    pub actions: i64,
    pub snapshot_error: Option<String>,
}

/// A host's Foreman as its row says.
#[derive(Debug, Clone, Serialize)]
pub struct ForemanRow {
    pub boot_id: String,
    pub version: String,
    pub last_seen: DateTime<Utc>,
    pub last_sweep_at: Option<DateTime<Utc>>,
    /// Since `last_seen`, by the database's clock.
    #[serde(serialize_with = "secs")]
    pub silent: Duration,
    pub running_reported: Option<i64>,
    pub findings: Option<i64>,
    pub actions: Option<i64>,
    pub snapshot_error: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// One host: its Foreman's row (none: no Foreman ever beat for it) and
/// its RUNNING tasks now. `host` is `None` for RUNNING rows naming no host.
#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub host: Option<String>,
    pub foreman: Option<ForemanRow>,
    pub running: usize,
}

/// The fleet as the database sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// The database's clock when it was read.
    pub now: DateTime<Utc>,
    /// The host whose Foreman holds the lock, if any does.
    pub leader: Option<String>,
    pub hosts: Vec<HostRow>,
}

pub trait Fleet: Send + Sync {
    /// Write this Foreman's row; true when this Foreman leads (it holds,
    /// or has just taken, the fleet's advisory lock).
    fn beat(&self, beat: &Beat) -> Result<bool>;
    /// Every host's Foreman and RUNNING count.
    fn view(&self) -> Result<View>;
    /// The RUNNING tasks of these hosts, and these tasks whatever their
    /// state (open findings to settle).
    fn tasks_of(&self, hosts: &[String], ids: &[String]) -> Result<Snapshot>;
    /// Whether this Foreman led at its last beat.
    fn leads(&self) -> bool;
}

/// A host judged lost, with the tasks to fail.
#[derive(Debug, Clone)]
pub struct Lost {
    pub host: String,
    pub foreman: ForemanRow,
    pub tasks: Vec<Task>,
}

/// What the leader concludes about the fleet.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    pub lost: Vec<Lost>,
    /// Hosts whose Foreman is silent but some task still beats: the host
    /// lives, only its Foreman is down. Nothing is failed.
    pub foreman_down: Vec<String>,
    /// Hosts with RUNNING tasks and no Foreman row: never watched, never
    /// called lost.
    pub unwatched: Vec<String>,
    /// Hosts that count for the fleet brake: a live Foreman, or RUNNING
    /// tasks (this host always).
    pub known: usize,
    /// Set when more than half of the known hosts look lost at once: the
    /// observer is then more likely the one cut off. Nothing is failed.
    pub brake: Option<String>,
}

/// Hosts worth reading the tasks of: silent past `lost_after`, with
/// RUNNING tasks, watched by a Foreman once, and not this one.
pub fn silent_hosts(view: &View, me: &str, lost_after: Duration) -> Vec<String> {
    view.hosts
        .iter()
        .filter(|h| h.running > 0)
        .filter_map(|h| {
            let host = h.host.as_deref()?;
            let f = h.foreman.as_ref()?;
            (host != me && f.silent > lost_after).then(|| host.to_string())
        })
        .collect()
}

/// Which silent hosts are lost. A task's heartbeat is `last_progress_at`,
/// else `started_at`; it is stale when older than `lost_after` by the
/// database's clock, or absent. One beating task keeps its host alive; a
/// heartbeat from the future counts as beating (never fail on a clock we
/// cannot read). Malformed rows are not failed.
pub fn assess(view: &View, tasks: &Snapshot, me: &str, lost_after: Duration) -> Assessment {
    let silent = silent_hosts(view, me, lost_after);
    let mut by_host: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for r in &tasks.rows {
        if let Row::Task(t) = r {
            if t.state == crate::model::TaskState::Running {
                if let Some(h) = t.host.as_deref().filter(|h| silent.iter().any(|s| s == h)) {
                    by_host.entry(h).or_default().push(t);
                }
            }
        }
    }
    let limit = chrono::Duration::from_std(lost_after).unwrap_or(chrono::Duration::MAX);
    let stale = |t: &Task| match t.last_progress_at.or(t.started_at) {
        None => true,
        Some(beat) => view.now.signed_duration_since(beat) > limit,
    };
    let mut out = Assessment::default();
    for host in &silent {
        let Some(row) = view.hosts.iter().find(|h| h.host.as_deref() == Some(host)) else {
            continue;
        };
        let Some(foreman) = row.foreman.clone() else {
            continue;
        };
        let tasks = by_host.remove(host.as_str()).unwrap_or_default();
        if tasks.is_empty() {
            continue;
        }
        if tasks.iter().all(|t| stale(t)) {
            out.lost.push(Lost {
                host: host.clone(),
                foreman,
                tasks: tasks.into_iter().cloned().collect(),
            });
        } else {
            out.foreman_down.push(host.clone());
        }
    }
    for h in &view.hosts {
        match (&h.host, &h.foreman) {
            (Some(host), None) if h.running > 0 => out.unwatched.push(host.clone()),
            _ => {}
        }
    }
    out.known = view
        .hosts
        .iter()
        .filter(|h| h.host.is_some())
        .filter(|h| {
            h.host.as_deref() == Some(me)
                || h.running > 0
                || h.foreman.as_ref().is_some_and(|f| f.silent <= lost_after)
        })
        .count()
        .max(1);
    if !out.lost.is_empty() && out.lost.len() * 2 > out.known {
        out.brake = Some(format!(
            "fleet brake: {} of {} known hosts look lost at once ({}); this Foreman is more likely the one cut off: failing none",
            out.lost.len(),
            out.known,
            out.lost
                .iter()
                .map(|l| l.host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// The reason a lost host's task is failed with: the host, how long its
/// Foreman has been silent, and the task's own last sign of life.
/// The reason names the Foreman that judged (`by`, its host): after a
/// crash between record and mark, a Foreman tells its own mark from
/// another leader's by it (`marked_by`).
pub fn reason(
    lost: &Lost,
    task: &Task,
    now: DateTime<Utc>,
    lost_after: Duration,
    by: &str,
) -> String {
    let ago = |t: DateTime<Utc>| {
        let s = now.signed_duration_since(t).num_seconds().max(0) as u64;
        humantime::format_duration(Duration::from_secs(s)).to_string()
    };
    let beat = match task.last_progress_at.or(task.started_at) {
        Some(t) => format!("its last heartbeat was {} ago", ago(t)),
        None => "it has no heartbeat or start time".to_string(),
    };
    format!(
        "host {:?} is lost: its Foreman has been silent for {} (last seen {}; host_lost_after is {}) and none of its RUNNING tasks beats; {beat}; {}",
        lost.host,
        humantime::format_duration(Duration::from_secs(lost.foreman.silent.as_secs())),
        lost.foreman
            .last_seen
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        humantime::format_duration(lost_after),
        marked_by(by),
    )
}

/// The words in a `host_lost` reason that name the Foreman that judged.
pub fn marked_by(host: &str) -> String {
    format!("judged by the Foreman of host {host:?}")
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
