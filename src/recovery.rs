//! Acting on findings: terminating a hung task's verified process tree and
//! marking tasks failed. Each signal is sent through a pidfd opened *before*
//! the identity check, so the signal reaches the process whose start ticks
//! were verified, or nobody: a pid reused in between cannot be hit.

use crate::probe::{read_stat, Stat};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::{Duration, Instant};

/// One process to signal: a member of the tree that was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub pid: i32,
    pub start_ticks: u64,
}

/// What one signal attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// The process had already exited (or was reaped).
    Gone,
    /// The pid now belongs to another process: not signalled.
    IdentityChanged,
    /// A safety rule forbids it (pid ≤ 1, Foreman itself, its process group).
    Refused(String),
    Failed(String),
}

impl Sent {
    pub fn describe(&self) -> String {
        match self {
            Sent::Delivered => "delivered".into(),
            Sent::Gone => "already gone".into(),
            Sent::IdentityChanged => "not sent: identity changed".into(),
            Sent::Refused(why) => format!("refused: {why}"),
            Sent::Failed(e) => format!("failed: {e}"),
        }
    }
}

/// A record of one signal, for the activity log.
#[derive(Debug, Clone)]
pub struct SignalRecord {
    pub at: DateTime<Utc>,
    pub target: Identity,
    pub signal: &'static str,
    pub sent: Sent,
}

fn own_pgrp() -> i32 {
    // SAFETY: getpgrp has no preconditions and cannot fail.
    unsafe { libc::getpgrp() }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Exited but not reaped. A leader in state Z whose thread group still has
/// threads (it called `pthread_exit`) has not exited: a signal through its
/// pidfd reaches the whole group.
fn exited(s: &Stat) -> bool {
    s.is_zombie() || matches!(s.state, 'X' | 'x')
}

/// Whether the process is still the one we mean and has not exited.
fn still_running(id: Identity) -> bool {
    match read_stat(Path::new("/proc"), id.pid) {
        Ok(Some(s)) => s.start_ticks == id.start_ticks && !exited(&s),
        _ => false,
    }
}

/// Why a process must never be signalled, if it must not.
fn refusal(id: Identity) -> Option<String> {
    if id.pid <= 1 {
        return Some(format!("pid {} is never signalled", id.pid));
    }
    if id.pid == std::process::id() as i32 {
        return Some("that is Foreman itself".into());
    }
    match read_stat(Path::new("/proc"), id.pid) {
        Ok(Some(s)) if s.start_ticks == id.start_ticks && s.pgrp == own_pgrp() => Some(format!(
            "process {} is in Foreman's own process group",
            id.pid
        )),
        _ => None,
    }
}

/// Signal one process after verifying its identity.
pub fn signal_verified(id: Identity, sig: i32) -> Sent {
    let me = std::process::id() as i32;
    if id.pid <= 1 {
        return Sent::Refused(format!("pid {} is never signalled", id.pid));
    }
    if id.pid == me {
        return Sent::Refused("that is Foreman itself".into());
    }
    // SAFETY: pidfd_open takes a pid and flags; it returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) } as i32;
    let fd_errno = if fd < 0 { errno() } else { 0 };
    if fd < 0 && fd_errno == libc::ESRCH {
        return Sent::Gone;
    }
    let current: Stat = match read_stat(Path::new("/proc"), id.pid) {
        Ok(Some(s)) => s,
        Ok(None) => {
            close(fd);
            return Sent::Gone;
        }
        Err(e) => {
            close(fd);
            return Sent::Failed(e);
        }
    };
    let result = if current.start_ticks != id.start_ticks {
        Sent::IdentityChanged
    } else if current.pgrp == own_pgrp() {
        Sent::Refused(format!(
            "process {} is in Foreman's own process group",
            id.pid
        ))
    } else if exited(&current) {
        Sent::Gone
    } else if fd >= 0 {
        // SAFETY: fd is a pidfd we own; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match rc {
            0 => Sent::Delivered,
            _ => failed(id.pid),
        }
    } else if fd_errno == libc::ENOSYS {
        // Kernels before 5.3: kill(2) right after the check.
        // SAFETY: kill with a positive pid signals one process.
        match unsafe { libc::kill(id.pid, sig) } {
            0 => Sent::Delivered,
            _ => failed(id.pid),
        }
    } else {
        Sent::Failed(format!(
            "pidfd_open: {}",
            std::io::Error::from_raw_os_error(fd_errno)
        ))
    };
    close(fd);
    result
}

/// Whether the kernel would refuse Foreman a signal to `pid` (another
/// user's process, no CAP_KILL): asked with signal 0 before any member of
/// a tree is signalled, so a tree is never half killed for lack of rights.
fn not_permitted(pid: i32) -> Option<String> {
    // SAFETY: signal 0 only checks existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    (rc != 0 && errno() == libc::EPERM).then(|| {
        format!("not permitted to signal process {pid} (EPERM): give Foreman CAP_KILL, or run it as the droids' user")
    })
}

/// A signal that was not sent, by errno: EPERM is a refusal (Foreman may
/// not signal another user's process without CAP_KILL: retrying cannot
/// help), anything else a failure.
fn failed(pid: i32) -> Sent {
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => Sent::Gone,
        Some(libc::EPERM) => Sent::Refused(format!(
            "not permitted to signal process {pid} (EPERM): give Foreman CAP_KILL, or run it as the droids' user"
        )),
        _ => Sent::Failed(e.to_string()),
    }
}

fn close(fd: i32) {
    if fd >= 0 {
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
    }
}

/// How terminating one tree ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminated {
    /// Every member is gone.
    Done,
    /// Members still alive after SIGKILL (e.g. state D).
    Unkillable(Vec<i32>),
    /// Nothing could be signalled safely; the tree is untouched.
    Refused(String),
}

/// Terminate several trees together: SIGTERM to every member (descendants
/// first, leader last), wait up to `kill_grace` for them to exit, SIGKILL
/// the rest, and wait a little for the kernel to finish them. Trees are
/// handled at once so N hung tasks cost one grace period, not N.
pub fn terminate_trees(
    trees: &[Vec<Identity>],
    kill_grace: Duration,
) -> (Vec<Terminated>, Vec<Vec<SignalRecord>>) {
    let mut records: Vec<Vec<SignalRecord>> = vec![Vec::new(); trees.len()];
    let mut refused: Vec<Option<String>> = vec![None; trees.len()];
    let send =
        |records: &mut Vec<SignalRecord>, id: Identity, sig: i32, name: &'static str| -> Sent {
            let sent = signal_verified(id, sig);
            records.push(SignalRecord {
                at: Utc::now(),
                target: id,
                signal: name,
                sent: sent.clone(),
            });
            sent
        };
    // A tree with any member Foreman must never signal is not touched at
    // all: half a tree killed is worse than none.
    for (i, tree) in trees.iter().enumerate() {
        refused[i] = tree
            .iter()
            .find_map(|id| refusal(*id).or_else(|| not_permitted(id.pid)));
        if let Some(why) = &refused[i] {
            records[i].push(SignalRecord {
                at: Utc::now(),
                target: tree.last().copied().unwrap_or(Identity {
                    pid: 0,
                    start_ticks: 0,
                }),
                signal: "SIGTERM",
                sent: Sent::Refused(why.clone()),
            });
            continue;
        }
        for id in tree {
            // Not permitted: the tree will not die of our signals, so it is
            // neither waited on nor sent SIGKILL (marked only, if at all).
            if let Sent::Refused(why) = send(&mut records[i], *id, libc::SIGTERM, "SIGTERM") {
                refused[i].get_or_insert(why);
            }
        }
    }
    // The crash test stops here: SIGTERMs sent, none recorded yet.
    fail::fail_point!("recovery::after_sigterm");
    let alive = |tree: &Vec<Identity>| {
        tree.iter()
            .copied()
            .filter(|id| still_running(*id))
            .collect::<Vec<_>>()
    };
    // Refused trees were not signalled and will not die: never wait on them.
    let all_gone = || {
        (0..trees.len())
            .filter(|i| refused[*i].is_none())
            .all(|i| alive(&trees[i]).is_empty())
    };
    wait_until(kill_grace, all_gone);
    for (i, tree) in trees.iter().enumerate() {
        if refused[i].is_some() {
            continue;
        }
        for id in alive(tree) {
            send(&mut records[i], id, libc::SIGKILL, "SIGKILL");
        }
    }
    wait_until(Duration::from_secs(5), all_gone);
    let outcomes = trees
        .iter()
        .enumerate()
        .map(|(i, tree)| {
            let left: Vec<i32> = alive(tree).iter().map(|id| id.pid).collect();
            match (&refused[i], left.is_empty()) {
                (_, true) => Terminated::Done,
                (Some(why), false) => Terminated::Refused(why.clone()),
                (None, false) => Terminated::Unkillable(left),
            }
        })
        .collect();
    (outcomes, records)
}

/// Poll a condition about other processes until it holds or time runs out.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The error text written to the executor for a failed task.
pub fn failure_reason(kind: &str, evidence_reason: &str) -> String {
    format!("foreman: {kind}: {evidence_reason}")
}
