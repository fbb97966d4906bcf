//! The vocabulary shared by every stage: tasks as the executor reports them,
//! the verdicts the judge gives, and the findings the activity log keeps.
//! Nothing here does I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A task's state as the executor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    Pending,
    Running,
    Success,
    Failed,
    Skipped,
}

impl TaskState {
    pub fn parse(s: &str) -> Option<TaskState> {
        match s {
            "PENDING" => Some(TaskState::Pending),
            "RUNNING" => Some(TaskState::Running),
            "SUCCESS" => Some(TaskState::Success),
            "FAILED" => Some(TaskState::Failed),
            "SKIPPED" => Some(TaskState::Skipped),
            _ => None,
        }
    }
}

/// One well-formed row of the executor's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub plan_id: Option<String>,
    pub droid_type: String,
    pub state: TaskState,
    pub pid: Option<i32>,
    /// `None` means this host.
    pub host: Option<String>,
    pub attempt: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub last_progress_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub pid_start_ticks: Option<u64>,
    /// When the task was filed (optional in the contract): how long a
    /// PENDING task has waited for dispatch.
    pub created_at: Option<DateTime<Utc>>,
}

/// A row that could not be parsed. It becomes an `unverifiable` finding and
/// the rest of the snapshot proceeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadRow {
    /// The task id when it could be read, else a description of the row.
    pub id: String,
    pub droid_type: Option<String>,
    pub plan_id: Option<String>,
    pub attempt: i64,
    pub reason: String,
    /// The pid, when the row names one that reads as a number: such a
    /// process is the task's, never a stray, whatever else is wrong.
    pub pid: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Task(Task),
    Bad(BadRow),
}

/// The executor's list of tasks at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub rows: Vec<Row>,
}

impl Snapshot {
    pub fn running(&self) -> impl Iterator<Item = &Task> {
        self.rows.iter().filter_map(|r| match r {
            Row::Task(t) if t.state == TaskState::Running => Some(t),
            _ => None,
        })
    }
}

/// What the judge concluded about one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Alive,
    Dead,
    Zombie,
    PidReused,
    Hung,
    Orphan,
    Unverifiable,
    /// A process matching a droid type's `process_match` that belongs to no
    /// RUNNING task: a crashed worker nobody cleaned up.
    Stray,
    /// Alive, but running longer than its type's `max_runtime` (from
    /// `started_at`, else its process's start), progress or not: a busy
    /// loop never hangs. Terminated and marked like a hung task.
    TimedOut,
    /// A task of another host whose Foreman and every task have been
    /// silent for `[fleet] host_lost_after`: failed by the fleet's leader.
    HostLost,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alive => "alive",
            Kind::Dead => "dead",
            Kind::Zombie => "zombie",
            Kind::PidReused => "pid_reused",
            Kind::Hung => "hung",
            Kind::Orphan => "orphan",
            Kind::Unverifiable => "unverifiable",
            Kind::Stray => "stray",
            Kind::HostLost => "host_lost",
            Kind::TimedOut => "timed_out",
        }
    }

    /// Kinds whose process has exited (or was replaced): exit grace applies.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            Kind::Dead | Kind::Zombie | Kind::PidReused | Kind::Orphan
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Foreman decided to do about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    MarkFailed,
    TerminateAndMark,
    /// A stray: terminate its verified tree; there is no task to mark.
    Terminate,
    None,
    Deferred,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::MarkFailed => "mark_failed",
            Action::TerminateAndMark => "terminate_and_mark",
            Action::Terminate => "terminate",
            Action::None => "none",
            Action::Deferred => "deferred",
        }
    }
    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::MarkFailed,
            Action::TerminateAndMark,
            Action::Terminate,
            Action::None,
            Action::Deferred,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
    /// Actions that change something outside Foreman.
    pub fn acts(self) -> bool {
        matches!(
            self,
            Action::MarkFailed | Action::TerminateAndMark | Action::Terminate
        )
    }
}

/// What happened to a finding's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not acted on yet: waiting for exit grace, or committed and about to act.
    Pending,
    MarkedFailed,
    AlreadyFinished,
    WouldMarkFailed,
    DeferredStarvation,
    Braked,
    Unkillable,
    /// A stray's process tree was terminated.
    Terminated,
    /// Nothing to do: an `unverifiable` finding is reported only.
    Reported,
    /// Re-verified before acting, and no longer true (the process came back
    /// into view, or the verdict changed).
    Cleared,
    Error,
    /// Foreman would act, but a silence (`foreman silence`) or a
    /// maintenance window holds its actions and alerts: recorded only.
    Silenced,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::MarkedFailed => "marked_failed",
            Outcome::AlreadyFinished => "already_finished",
            Outcome::WouldMarkFailed => "would_mark_failed",
            Outcome::DeferredStarvation => "deferred_starvation",
            Outcome::Braked => "braked",
            Outcome::Unkillable => "unkillable",
            Outcome::Terminated => "terminated",
            Outcome::Reported => "reported",
            Outcome::Cleared => "cleared",
            Outcome::Error => "error",
            Outcome::Silenced => "silenced",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which sweep is running: the startup scan calls what it finds `orphan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    Scheduled,
    Startup,
    Manual,
    /// The daemon's look at tasks whose processes just exited (their
    /// pidfds turned readable): only those tasks are judged. Not a full
    /// sweep: health, staleness and gaps read the others.
    Event,
    /// The fleet leader's look at silent hosts: only their tasks, and only
    /// recorded when it finds or settles something. Not a full sweep either.
    Fleet,
}

impl SweepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepKind::Scheduled => "scheduled",
            SweepKind::Startup => "startup",
            SweepKind::Manual => "manual",
            SweepKind::Event => "event",
            SweepKind::Fleet => "fleet",
        }
    }
}

/// `enforce` acts; `shadow` judges and records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Shadow,
}

/// What to do with a stray process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStray {
    Report,
    Terminate,
}

/// What to do with a hung task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHung {
    Terminate,
    MarkOnly,
}

/// A progress signal a droid type can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Heartbeat,
    Cpu,
    Io,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Heartbeat => "heartbeat",
            Signal::Cpu => "cpu",
            Signal::Io => "io",
        }
    }
}
