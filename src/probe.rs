//! Reading Linux `/proc`: process identity (start ticks), state, CPU and I/O
//! counters of a task's whole process tree, and the host's boot facts.
//!
//! Why not sysinfo here: its process start time is rounded to whole seconds,
//! too coarse to tell a reused pid from the original, and a targeted refresh
//! costs 2-3x a raw read of `/proc/PID/stat`. One pass over `/proc/*/stat`
//! per sweep gives every pid's parent, state, start ticks and CPU ticks, so
//! the trees come from that single scan; `/proc/PID/io` is then read only for
//! members of trees a RUNNING task names.

use crate::observation::MemberCounters;
use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Fields of `/proc/PID/stat` Foreman needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22: start time in clock ticks since boot. With the boot id this
    /// is the process's identity.
    pub start_ticks: u64,
}

/// Parse the text of `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    // Fields from 3 on; index 0 here is field 3.
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Skip fields 6..=13 (8 fields) to reach utime (14).
    let mut fields = fields.skip(8);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Skip 16..=21 (6 fields) to reach starttime (22).
    let start_ticks = fields.nth(6)?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
        cpu_ticks: utime + stime,
        start_ticks,
    })
}

/// `rchar + wchar` from `/proc/PID/io`: every read and write syscall,
/// sockets and pipes included, which says more about a worker waiting on the
/// network than the storage-only counters.
pub fn parse_io(text: &str) -> Option<u64> {
    let mut rchar = None;
    let mut wchar = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("rchar:") {
            rchar = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("wchar:") {
            wchar = v.trim().parse::<u64>().ok();
        }
    }
    Some(rchar? + wchar?)
}

/// Facts about this boot of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFacts {
    pub boot_id: String,
    /// Wall-clock time of boot (`btime`, whole seconds).
    pub boot_time: DateTime<Utc>,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    pub clk_tck: u64,
}

impl BootFacts {
    /// Wall-clock start of a process from its start ticks.
    pub fn started_at(&self, start_ticks: u64) -> DateTime<Utc> {
        let ms = start_ticks.saturating_mul(1000) / self.clk_tck.max(1);
        self.boot_time + chrono::Duration::milliseconds(ms as i64)
    }
}

/// One member of a task's process tree as probed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub stat: Stat,
    /// `None` when `/proc/PID/io` could not be read (another user's process
    /// without CAP_SYS_PTRACE): the I/O signal is unavailable, not still.
    pub io_bytes: Option<u64>,
}

impl Member {
    pub fn counters(&self) -> MemberCounters {
        MemberCounters {
            pid: self.stat.pid,
            start_ticks: self.stat.start_ticks,
            cpu_ticks: self.stat.cpu_ticks,
            io_bytes: self.io_bytes,
        }
    }
}

/// What the OS says about a task's pid now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// No such process.
    Gone,
    /// The process may exist but Foreman cannot read it.
    Unreadable(String),
    /// The process and its descendants; `members[0]` is the leader.
    Found(Vec<Member>),
}

impl Probe {
    pub fn leader(&self) -> Option<&Stat> {
        match self {
            Probe::Found(m) => m.first().map(|m| &m.stat),
            _ => None,
        }
    }
}

/// One pass over `/proc`: every process's stat, indexed by pid, and its
/// children. Built once per sweep.
pub struct ProcTable {
    root: PathBuf,
    stats: HashMap<i32, Stat>,
    children: HashMap<i32, Vec<i32>>,
    unreadable: HashMap<i32, String>,
}

impl ProcTable {
    /// Scan `/proc`.
    pub fn scan() -> Result<ProcTable> {
        ProcTable::scan_at(Path::new("/proc"))
    }

    pub fn scan_at(root: &Path) -> Result<ProcTable> {
        let mut stats = HashMap::new();
        let mut unreadable = HashMap::new();
        let mut buf = String::with_capacity(512);
        let mut path = root.to_path_buf();
        for entry in
            std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?
        {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            path.push(name);
            path.push("stat");
            match read_to(&path, &mut buf) {
                Ok(()) => {
                    if let Some(stat) = parse_stat(&buf) {
                        stats.insert(pid, stat);
                    } else {
                        unreadable.insert(pid, format!("{} is malformed", path.display()));
                    }
                }
                // Exited between the listing and the read: gone.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    unreadable.insert(pid, format!("reading {}: {e}", path.display()));
                }
            }
            path.pop();
            path.pop();
        }
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for s in stats.values() {
            children.entry(s.ppid).or_default().push(s.pid);
        }
        Ok(ProcTable {
            root: root.to_path_buf(),
            stats,
            children,
            unreadable,
        })
    }

    pub fn stat(&self, pid: i32) -> Option<&Stat> {
        self.stats.get(&pid)
    }

    /// Every process seen, in no particular order.
    pub fn stats(&self) -> impl Iterator<Item = &Stat> {
        self.stats.values()
    }

    /// The pids of `pid`'s children.
    pub fn children(&self, pid: i32) -> &[i32] {
        self.children.get(&pid).map_or(&[], |c| c.as_slice())
    }

    pub fn len(&self) -> usize {
        self.stats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// Probe a task's pid: the leader and all its descendants, leader first.
    /// A pid absent from the scan is re-checked directly, so a process
    /// started after the scan is not called gone.
    pub fn probe(&self, pid: i32) -> Probe {
        if let Some(reason) = self.unreadable.get(&pid) {
            return Probe::Unreadable(reason.clone());
        }
        let leader = match self.stats.get(&pid) {
            Some(s) => *s,
            None => match read_stat(&self.root, pid) {
                Ok(Some(s)) => s,
                Ok(None) => return Probe::Gone,
                Err(e) => return Probe::Unreadable(e),
            },
        };
        let mut members = Vec::new();
        let mut stack = vec![leader];
        let mut buf = String::with_capacity(256);
        while let Some(stat) = stack.pop() {
            let io_bytes = read_io(&self.root, stat.pid, &mut buf);
            members.push(Member { stat, io_bytes });
            if let Some(kids) = self.children.get(&stat.pid) {
                for k in kids {
                    if let Some(s) = self.stats.get(k) {
                        // A child cannot start before its parent; one that
                        // seems to is a reused pid listed under a stale ppid.
                        if s.start_ticks >= stat.start_ticks {
                            stack.push(*s);
                        }
                    }
                }
            }
        }
        Probe::Found(members)
    }

    /// The process's command line, for evidence (read only for findings).
    pub fn cmdline(&self, pid: i32) -> Option<String> {
        cmdline_at(&self.root, pid)
    }
}

fn read_to(path: &Path, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf)?;
    Ok(())
}

/// Read one pid's stat: `Ok(None)` when it does not exist.
pub fn read_stat(root: &Path, pid: i32) -> Result<Option<Stat>, String> {
    let path = root.join(pid.to_string()).join("stat");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_stat(&text)
            .map(Some)
            .ok_or_else(|| format!("{} is malformed", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Resident memory of a process in bytes (`/proc/PID/statm`), if readable.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

fn read_io(root: &Path, pid: i32, buf: &mut String) -> Option<u64> {
    let path = root.join(pid.to_string()).join("io");
    read_to(&path, buf).ok()?;
    parse_io(buf)
}

fn cmdline_at(root: &Path, pid: i32) -> Option<String> {
    let raw = std::fs::read(root.join(pid.to_string()).join("cmdline")).ok()?;
    let text: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    Some(text.join(" "))
}

/// The host's boot facts. The boot time comes from sysinfo (a host fact it
/// serves well); the boot id from the kernel.
pub fn boot_facts() -> Result<BootFacts> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading /proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    let secs = sysinfo::System::boot_time().context("reading the boot time")?;
    let boot_time = Utc
        .timestamp_opt(secs as i64, 0)
        .single()
        .context("boot time out of range")?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let clk_tck = if tck > 0 { tck as u64 } else { 100 };
    Ok(BootFacts {
        boot_id,
        boot_time,
        clk_tck,
    })
}

/// Readings of the three clocks, taken together, so a later sweep can tell
/// a suspend (BOOTTIME ran ahead of MONOTONIC) or a wall-clock step
/// (REALTIME moved differently from MONOTONIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    pub realtime_ns: i64,
    pub monotonic_ns: i64,
    pub boottime_ns: i64,
}

impl Clocks {
    pub fn now() -> Clocks {
        Clocks {
            realtime_ns: clock_ns(libc::CLOCK_REALTIME),
            monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC),
            boottime_ns: clock_ns(libc::CLOCK_BOOTTIME),
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `some avg10` of `/proc/pressure/cpu`: the share of the last 10 s in which
/// at least one runnable task waited for a CPU. `None` without PSI.
pub fn cpu_pressure() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let line = text.lines().find(|l| l.starts_with("some"))?;
    line.split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let text = "4121 (my (odd) worker) S 1 4121 4121 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 987654 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.pid, 4121);
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4121);
        assert_eq!(s.cpu_ticks, 10);
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn stat_truncated_is_none() {
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn io_sums_rchar_and_wchar() {
        let text = "rchar: 100\nwchar: 23\nsyscr: 1\nsyscw: 1\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(text), Some(123));
        assert_eq!(parse_io("rchar: 1\n"), None);
    }

    #[test]
    fn own_process_is_found_with_exact_start_ticks() {
        let table = ProcTable::scan().expect("scan");
        let me = std::process::id() as i32;
        let Probe::Found(members) = table.probe(me) else {
            panic!("own pid not found")
        };
        let direct = read_stat(Path::new("/proc"), me)
            .expect("read")
            .expect("exists");
        assert_eq!(members[0].stat.start_ticks, direct.start_ticks);
        assert!(
            members[0].io_bytes.is_some(),
            "own /proc/self/io is readable"
        );
    }

    #[test]
    fn absent_pid_is_gone() {
        let table = ProcTable::scan().expect("scan");
        // pid_max is at most 4194304; this one cannot exist.
        assert_eq!(table.probe(i32::MAX), Probe::Gone);
    }

    #[test]
    fn boot_facts_are_sane() {
        let b = boot_facts().expect("boot facts");
        assert_eq!(b.boot_id.len(), 36);
        assert!(b.boot_time < Utc::now());
        assert!(b.clk_tck > 0);
    }
}
