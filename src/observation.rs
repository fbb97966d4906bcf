//! What Foreman remembers of one (task, attempt, pid) between sweeps: the
//! process identity bound at first sight, the counters of every member of
//! its process tree, and when each progress signal last moved. The judge
//! reads the prior observation and returns the next one; the activity log
//! persists it, so a restart does not reset progress tracking.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How the identity was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Foreman saw the process for the first time and took its start ticks.
    FirstSight,
    /// The executor stored the start ticks (`pid_start_ticks`).
    Executor,
}

/// One member of a task's process tree, keyed by (pid, start ticks) so a
/// reused pid is never mistaken for the member it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounters {
    pub pid: i32,
    pub start_ticks: u64,
    pub cpu_ticks: u64,
    /// `rchar + wchar`; `None` when /proc/PID/io was unreadable.
    pub io_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub task_id: String,
    pub attempt: i64,
    pub pid: i32,
    pub boot_id: String,
    /// The bound identity; `None` while the process was never seen alive.
    pub start_ticks: Option<u64>,
    pub binding: Option<Binding>,
    pub first_seen_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    pub members: Vec<MemberCounters>,
    pub cpu_moved_at: Option<DateTime<Utc>>,
    pub io_moved_at: Option<DateTime<Utc>>,
    /// The first probe that saw the process gone, a zombie or replaced:
    /// exit grace is counted from here.
    pub gone_since: Option<DateTime<Utc>>,
    /// Bound as a pooled worker (started before the task): never signalled.
    /// Sticky, like the two below it, for this (task, attempt, pid).
    #[serde(default)]
    pub pooled: bool,
    /// Bound with nothing to prove it the task's (no `started_at`, no
    /// `pid_start_ticks` at first sight): never signalled.
    #[serde(default)]
    pub unproven: bool,
    /// The heartbeat as last seen.
    #[serde(default)]
    pub heartbeat: Option<DateTime<Utc>>,
    /// When the heartbeat last changed: a heartbeat ahead of this clock
    /// (a skewed executor) counts as progress only by moving.
    #[serde(default)]
    pub heartbeat_moved_at: Option<DateTime<Utc>>,
}

/// A held task is judged in full (and its observation written) at least
/// this often, even when nothing in it changed: the observation stays
/// fresh for `twin` and is never pruned as a task no longer seen (a day).
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

impl Observation {
    /// The same as `prior` in everything but when it was seen: nothing to
    /// write unless `prior` was written longer than `REFRESH` ago.
    pub fn unchanged_since(&self, prior: &Observation) -> bool {
        let Observation {
            task_id,
            attempt,
            pid,
            boot_id,
            start_ticks,
            binding,
            first_seen_at,
            seen_at,
            members,
            cpu_moved_at,
            io_moved_at,
            gone_since,
            pooled,
            unproven,
            heartbeat,
            heartbeat_moved_at,
        } = self;
        let fresh = chrono::Duration::from_std(REFRESH)
            .is_ok_and(|r| seen_at.signed_duration_since(prior.seen_at) < r);
        fresh
            && *task_id == prior.task_id
            && *attempt == prior.attempt
            && *pid == prior.pid
            && *boot_id == prior.boot_id
            && *start_ticks == prior.start_ticks
            && *binding == prior.binding
            && *first_seen_at == prior.first_seen_at
            && *members == prior.members
            && *cpu_moved_at == prior.cpu_moved_at
            && *io_moved_at == prior.io_moved_at
            && *gone_since == prior.gone_since
            && *pooled == prior.pooled
            && *unproven == prior.unproven
            && *heartbeat == prior.heartbeat
            && *heartbeat_moved_at == prior.heartbeat_moved_at
    }

    pub fn member(&self, pid: i32, start_ticks: u64) -> Option<&MemberCounters> {
        self.members
            .iter()
            .find(|m| m.pid == pid && m.start_ticks == start_ticks)
    }
}
