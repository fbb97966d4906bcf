//! Strays: processes whose command line matches a droid type's
//! `process_match` but that no task owns, e.g. a worker that outlived its
//! task after the executor crashed.
//!
//! Ownership is wide on purpose, since the price of a wrong stray is a
//! killed worker: a process is owned when any snapshot row names its pid
//! (any state, any host, a malformed row too), or it descends from such a
//! process, or it shares such a process's group. A candidate with an owned
//! descendant is a pool master or a wrapper, not a stray; a matching child
//! of a candidate is part of that candidate.
//!
//! This finds one sweep's candidates; the sweep reports a candidate only
//! once two consecutive sweeps have seen the same identity, and only once.

use crate::config::Config;
use crate::model::{Row, Snapshot};
use crate::probe::{ProcTable, Stat};
use std::collections::HashSet;

/// A matching process that no task owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub stat: Stat,
    /// The droid type whose own pattern matched; `None` for `[defaults]`.
    pub droid_type: Option<String>,
    pub cmdline: String,
}

/// What tasks own, from one snapshot and one `/proc` scan.
pub struct Owned {
    /// Every pid a snapshot row names.
    pub named: HashSet<i32>,
    /// Those, their descendants, and every process in their groups.
    pub all: HashSet<i32>,
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

pub fn owned(table: &ProcTable, snapshot: &Snapshot) -> Owned {
    let named: HashSet<i32> = snapshot
        .rows
        .iter()
        .filter_map(|r| match r {
            Row::Task(t) => t.pid,
            Row::Bad(b) => b.pid,
        })
        .collect();
    let mut all = HashSet::new();
    let mut groups = HashSet::new();
    for pid in &named {
        if let Some(s) = table.stat(*pid) {
            groups.insert(s.pgrp);
        }
        descend(table, *pid, &mut all);
    }
    let me = std::process::id() as i32;
    if let Some(s) = table.stat(me) {
        groups.insert(s.pgrp);
    }
    all.extend(
        table
            .stats()
            .filter(|s| groups.contains(&s.pgrp))
            .map(|s| s.pid),
    );
    all.insert(me);
    Owned { named, all }
}

/// This sweep's candidates, by pid.
pub fn candidates(table: &ProcTable, config: &Config, owned: &Owned) -> Vec<Candidate> {
    if !enabled(config) {
        return Vec::new();
    }
    // A droid type's pattern inherited from [defaults] is [defaults]' own:
    // the type that happens to sort first must not claim its strays.
    let inherited = config.defaults.process_match.as_ref().map(|r| r.as_str());
    let patterns: Vec<(Option<&str>, &regex::Regex)> = config
        .droid_types
        .iter()
        .filter_map(|(name, p)| p.process_match.as_ref().map(|re| (Some(name.as_str()), re)))
        .filter(|(_, re)| Some(re.as_str()) != inherited)
        .chain(config.defaults.process_match.as_ref().map(|re| (None, re)))
        .collect();
    let mut found: Vec<Candidate> = Vec::new();
    for stat in table.stats() {
        if stat.pid <= 1 || owned.all.contains(&stat.pid) {
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
    let pids: HashSet<i32> = found.iter().map(|c| c.stat.pid).collect();
    found.retain(|c| {
        let mut tree = HashSet::new();
        descend(table, c.stat.pid, &mut tree);
        !has_ancestor_in(table, c.stat, &pids) && tree.is_disjoint(&owned.all)
    });
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
