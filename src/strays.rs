//! Strays: processes whose command line matches a droid type's
//! `process_match` but that belong to no task on this host, e.g. a worker
//! that outlived its task after the executor crashed. A process belongs to
//! a task when it is a RUNNING or PENDING task's process, one of its
//! descendants, or in its process group; a matching child of a stray is
//! part of that stray, not another one.
//!
//! This finds the candidates of one sweep; the sweep reports a candidate
//! only once it has been seen on two consecutive sweeps (a task being
//! registered races its own process), and only once per identity.

use crate::config::Config;
use crate::model::{Snapshot, TaskState};
use crate::probe::{ProcTable, Stat};
use std::collections::HashSet;

/// A matching process that no task owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub stat: Stat,
    /// The droid type whose pattern matched; `None` for `[defaults]`.
    pub droid_type: Option<String>,
    pub cmdline: String,
}

/// Whether any droid type looks for strays at all (reading every command
/// line costs a file read per process).
pub fn enabled(config: &Config) -> bool {
    config.defaults.process_match.is_some()
        || config
            .droid_types
            .values()
            .any(|p| p.process_match.is_some())
}

/// This sweep's candidates, outermost first.
pub fn candidates(table: &ProcTable, config: &Config, snapshot: &Snapshot) -> Vec<Candidate> {
    if !enabled(config) {
        return Vec::new();
    }
    // What tasks own: their processes, their descendants, their groups.
    let mut owned: HashSet<i32> = HashSet::new();
    let mut groups: HashSet<i32> = HashSet::new();
    for row in &snapshot.rows {
        let crate::model::Row::Task(t) = row else {
            continue;
        };
        let local = t.host.as_deref().is_none_or(|h| h == config.host);
        if !(local && matches!(t.state, TaskState::Running | TaskState::Pending)) {
            continue;
        }
        let Some(pid) = t.pid else { continue };
        if let Some(s) = table.stat(pid) {
            groups.insert(s.pgrp);
        }
        descend(table, pid, &mut owned);
    }
    let me = std::process::id() as i32;
    if let Some(s) = table.stat(me) {
        groups.insert(s.pgrp);
    }

    let patterns: Vec<(Option<&str>, &regex::Regex)> = config
        .droid_types
        .iter()
        .filter_map(|(name, p)| p.process_match.as_ref().map(|re| (Some(name.as_str()), re)))
        .chain(config.defaults.process_match.as_ref().map(|re| (None, re)))
        .collect();
    let mut found: Vec<Candidate> = Vec::new();
    for stat in table.stats() {
        if stat.pid <= 1
            || stat.pid == me
            || owned.contains(&stat.pid)
            || groups.contains(&stat.pgrp)
        {
            continue;
        }
        // Kernel threads and zombies have no command line.
        let Some(cmdline) = table.cmdline(stat.pid).filter(|c| !c.is_empty()) else {
            continue;
        };
        if let Some((droid_type, _)) = patterns.iter().find(|(_, re)| re.is_match(&cmdline)) {
            found.push(Candidate {
                stat: *stat,
                droid_type: droid_type.map(str::to_string),
                cmdline,
            });
        }
    }
    // A candidate under another candidate is part of that one's tree.
    let pids: HashSet<i32> = found.iter().map(|c| c.stat.pid).collect();
    found.retain(|c| !has_ancestor_in(table, c.stat, &pids));
    found.sort_by_key(|c| c.stat.pid);
    found
}

fn descend(table: &ProcTable, pid: i32, into: &mut HashSet<i32>) {
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if into.insert(p) {
            stack.extend_from_slice(table.children(p));
        }
    }
}

fn has_ancestor_in(table: &ProcTable, stat: Stat, pids: &HashSet<i32>) -> bool {
    let mut seen = HashSet::new();
    let mut cur = stat;
    while cur.ppid > 1 && seen.insert(cur.ppid) {
        if pids.contains(&cur.ppid) {
            return true;
        }
        match table.stat(cur.ppid) {
            // A parent cannot start after its child: that is a reused pid.
            Some(parent) if parent.start_ticks <= cur.start_ticks => cur = *parent,
            _ => return false,
        }
    }
    false
}
