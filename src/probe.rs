//! Reading Linux `/proc`: process identity (start ticks), state, thread
//! count, CPU and I/O counters of a task's whole process tree, the host's
//! boot facts and `pid_max`, and whether this `/proc` can show Foreman every
//! process at all ("/proc blindness" below).
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
    /// Field 20, `num_threads`: live threads in the thread group. 0 means
    /// unknown: a `Stat` stored (in a finding's inputs) before Foreman read
    /// this field; the kernel never reports 0 for a process it lists.
    ///
    /// Why it matters: a process whose main thread called `pthread_exit`
    /// while other threads keep working shows its leader in state `Z`, yet
    /// the process is alive. Measured on Linux 6.18 with such a program
    /// (tests/integration/linux.rs): `/proc/PID/stat` says `Z` with
    /// `num_threads` 2 (`/proc/PID/status` says `Threads: 2`) while the
    /// other thread runs, and `Z` with 1 once the last thread has exited
    /// and the process waits to be reaped. So `state == 'Z' && threads > 1`
    /// is a live thread group; see [`Stat::is_zombie`].
    #[serde(default)]
    pub threads: u32,
}

impl Stat {
    /// A zombie: exited, waiting to be reaped. A `Z` leader with other live
    /// threads is not one (its threads still work); with `threads` unknown
    /// (0, a stored `Stat` older than the field) a `Z` counts as a zombie,
    /// as it did when the `Stat` was judged.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' && self.threads <= 1
    }
}

/// Parse the text of `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the last `)`.
///
/// `/proc/PID/stat` (unlike `/proc/PID/task/TID/stat`) describes the whole
/// thread group: utime and stime are summed over every thread, the exited
/// ones included. So `cpu_ticks` of a `Z` leader whose other threads still
/// run keeps rising with their CPU (measured: 197 ticks on the leader's
/// `/proc/PID/stat` while its own `task/PID/stat` said 0), and no per-thread
/// sum is needed.
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
    // Skip 16..=19 (4 fields) to reach num_threads (20).
    let threads = fields.nth(4)?.parse().ok()?;
    // Skip 21 to reach starttime (22).
    let start_ticks = fields.nth(1)?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
        // Saturating: a malformed line must not overflow (panic in debug).
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
        threads,
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
    // Saturating: counters near u64::MAX (or a forged file) must not
    // panic, and a sum pinned at the top still compares as "not moved".
    Some(rchar?.saturating_add(wchar?))
}

/// Facts about this boot of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFacts {
    pub boot_id: String,
    /// Wall-clock time of boot (`btime`, whole seconds).
    pub boot_time: DateTime<Utc>,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    pub clk_tck: u64,
    /// Start ticks of the boot instant: 0 on a real host; the test override
    /// (`FOREMAN_TEST_BOOT_TIME`, see [`boot_facts`]) sets it so the host
    /// looks booted later while every process keeps its real start time.
    /// Absent from facts stored before it existed: 0, a real host.
    #[serde(default)]
    pub ticks_at_boot: u64,
}

impl BootFacts {
    /// Wall-clock start of a process from its start ticks:
    /// `boot_time + (start_ticks − ticks_at_boot) / clk_tck`, rounded down
    /// to the millisecond. Never panics: a time chrono cannot represent
    /// (absurd ticks, say from a malformed row) saturates to
    /// `DateTime::<Utc>::MAX_UTC` (or `MIN_UTC` below the boot), which is no
    /// plausible start of anything. Code that goes on to add to or subtract
    /// from the result should use [`BootFacts::checked_started_at`] and
    /// checked arithmetic instead: `MAX_UTC + 1 s` panics.
    pub fn started_at(&self, start_ticks: u64) -> DateTime<Utc> {
        match self.checked_started_at(start_ticks) {
            Some(t) => t,
            None if start_ticks >= self.ticks_at_boot => DateTime::<Utc>::MAX_UTC,
            None => DateTime::<Utc>::MIN_UTC,
        }
    }

    /// [`BootFacts::started_at`], `None` when the time is not representable.
    /// Signed: ticks below `ticks_at_boot` (a process older than an emulated
    /// boot) give a time before `boot_time`. A `clk_tck` of 0 (never from
    /// the kernel; only a hand-made or corrupt stored fact) counts as 1, as
    /// it always has, so a replay judges such inputs as they were judged.
    pub fn checked_started_at(&self, start_ticks: u64) -> Option<DateTime<Utc>> {
        // i128 holds u64::MAX * 1000 with room to spare: no overflow here.
        let since_boot = i128::from(start_ticks) - i128::from(self.ticks_at_boot);
        let ms = (since_boot * 1000).div_euclid(i128::from(self.clk_tck.max(1)));
        let delta = chrono::TimeDelta::try_milliseconds(i64::try_from(ms).ok()?)?;
        self.boot_time.checked_add_signed(delta)
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
    /// No process: for a sweep that reads no `/proc` (the fleet's, whose
    /// tasks run on other hosts).
    pub fn empty() -> ProcTable {
        ProcTable {
            root: PathBuf::from("/proc"),
            stats: HashMap::new(),
            children: HashMap::new(),
            unreadable: HashMap::new(),
        }
    }

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

    /// Only the trees of `pids`: each leader's stat, then its children as
    /// the kernel lists them per thread (`/proc/PID/task/TID/children`),
    /// down the tree. It costs the trees, not the host: the sweep uses it
    /// when few tasks need their counters read. `None` when the kernel
    /// has no children files (CONFIG_PROC_CHILDREN): scan everything then.
    pub fn scan_trees(pids: &[i32]) -> Option<ProcTable> {
        ProcTable::scan_trees_at(Path::new("/proc"), pids)
    }

    pub fn scan_trees_at(root: &Path, pids: &[i32]) -> Option<ProcTable> {
        if !root.join("thread-self/children").exists() {
            return None;
        }
        let mut table = ProcTable {
            root: root.to_path_buf(),
            stats: HashMap::new(),
            children: HashMap::new(),
            unreadable: HashMap::new(),
        };
        let mut buf = String::with_capacity(256);
        let mut stack: Vec<i32> = Vec::new();
        for &pid in pids {
            if table.stats.contains_key(&pid) || table.unreadable.contains_key(&pid) {
                continue;
            }
            match read_stat(root, pid) {
                Ok(Some(s)) => {
                    table.stats.insert(pid, s);
                    stack.push(pid);
                }
                // Absent: `probe` reads it again and calls it gone.
                Ok(None) => {}
                Err(e) => {
                    table.unreadable.insert(pid, e);
                }
            }
            while let Some(parent) = stack.pop() {
                for kid in children_of(root, parent, &mut buf) {
                    if table.stats.contains_key(&kid) {
                        continue;
                    }
                    // A child that exited since the list: not a member.
                    if let Ok(Some(s)) = read_stat(root, kid) {
                        table.stats.insert(kid, s);
                        table.children.entry(parent).or_default().push(kid);
                        stack.push(kid);
                    }
                }
            }
        }
        Some(table)
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

/// The children of every thread of `pid`, as the kernel lists them.
fn children_of(root: &Path, pid: i32, buf: &mut String) -> Vec<i32> {
    let dir = root.join(pid.to_string()).join("task");
    let Ok(threads) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut kids = Vec::new();
    for t in threads.flatten() {
        let mut path = t.path();
        path.push("children");
        if read_to(&path, buf).is_ok() {
            kids.extend(
                buf.split_ascii_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
    }
    kids
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
///
/// Only in builds with the `failpoints` feature (tests), the environment
/// variable `FOREMAN_TEST_BOOT_TIME` (unix seconds, not before the real
/// boot) makes the host look booted at that instant: `boot_time` is moved
/// there and `ticks_at_boot` set to match, so a process's start time stays
/// what it really is. With it the test suite proves it does not depend on
/// how long the host has been up (a freshly booted machine).
pub fn boot_facts() -> Result<BootFacts> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading /proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    let secs = sysinfo::System::boot_time().context("reading the boot time")?;
    let boot_time = i64::try_from(secs)
        .ok()
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
        .context("boot time out of range")?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let clk_tck = u64::try_from(tck).ok().filter(|t| *t > 0).unwrap_or(100);
    let real = BootFacts {
        boot_id,
        boot_time,
        clk_tck,
        ticks_at_boot: 0,
    };
    #[cfg(feature = "failpoints")]
    if let Some(v) = std::env::var_os(TEST_BOOT_TIME_ENV) {
        let text = v.to_string_lossy();
        return emulate_boot(real, &text);
    }
    Ok(real)
}

/// The test-only override of the boot time (see [`boot_facts`]).
#[cfg(any(test, feature = "failpoints"))]
pub const TEST_BOOT_TIME_ENV: &str = "FOREMAN_TEST_BOOT_TIME";

/// `real` as if the host had booted at `secs` (unix seconds, text): the
/// boot time moved there, `ticks_at_boot` the ticks from the real boot to
/// it. Only a later boot can be emulated: ticks before the real boot do not
/// exist.
#[cfg(any(test, feature = "failpoints"))]
fn emulate_boot(real: BootFacts, secs: &str) -> Result<BootFacts> {
    let at: i64 = secs
        .trim()
        .parse()
        .with_context(|| format!("{TEST_BOOT_TIME_ENV}={secs:?} is not unix seconds"))?;
    let boot_time = Utc
        .timestamp_opt(at, 0)
        .single()
        .with_context(|| format!("{TEST_BOOT_TIME_ENV}={at} is out of range"))?;
    let later = at
        .checked_sub(real.boot_time.timestamp())
        .and_then(|d| u64::try_from(d).ok())
        .with_context(|| {
            format!(
                "{TEST_BOOT_TIME_ENV}={at} is before the real boot ({}): only a later boot can be emulated",
                real.boot_time.timestamp()
            )
        })?;
    let ticks_at_boot = later
        .checked_mul(real.clk_tck)
        .with_context(|| format!("{TEST_BOOT_TIME_ENV}={at} is out of range"))?;
    Ok(BootFacts {
        boot_time,
        ticks_at_boot,
        ..real
    })
}

/// `kernel.pid_max`: one more than the largest pid the kernel hands out
/// (proc(5)), so a pid at or above it was never allocated, unless the
/// limit was lowered while that process lived. `None` when unreadable.
pub fn pid_max() -> Option<i32> {
    parse_pid_max(&std::fs::read_to_string("/proc/sys/kernel/pid_max").ok()?)
}

/// The text of `/proc/sys/kernel/pid_max`; `None` unless a positive number.
pub fn parse_pid_max(text: &str) -> Option<i32> {
    text.trim().parse().ok().filter(|n| *n > 0)
}

// ---------------------------------------------------------- /proc blindness
//
// Foreman calls a task dead when its pid is not in /proc. That is only
// evidence when this /proc shows every process of the executor's PID
// namespace, numbered as the executor numbers them. It does not when:
//
// - /proc is mounted with `hidepid=` (1/noaccess, 2/invisible,
//   4/ptraceable; systemd's ProtectProc=): another user's process is hidden
//   (or unreadable) unless the reader has CAP_SYS_PTRACE, or, for
//   noaccess/invisible, is in the mount's `gid=` group. Foreman decides from
//   its own CapEff and groups (what the kernel checks), not from the uid:
//   root without CAP_SYS_PTRACE still cannot see another user's droid. A
//   Foreman running as the droids' own user would see them, but it cannot
//   know the droids' user, so that case is blind too; the remedy (the
//   `gid=` group, or the capability) costs the operator one line.
// - pid 1 is not visible: whatever the options say, processes Foreman does
//   not own are hidden (belt and braces for the rule above).
// - the procfs at /proc belongs to another PID namespace than Foreman's
//   (`/proc/self` is not Foreman's pid): its pids are not pids Foreman can
//   signal, and its own safety rules (never itself, its group) misfire.
// - Foreman runs in a PID namespace other than the host's initial one. A
//   Foreman in the same container as the executor sees the executor's pids
//   fine, but nothing Foreman can read tells that apart from a Foreman in
//   its own container beside a host (or another container's) executor,
//   whose every task would look gone. Of the two ways to be wrong, calling
//   live work dead is the one Foreman must never take, so this is blindness
//   unless the operator says otherwise (`BlindnessOptions::
//   shared_pid_namespace`, an explicit opt-in). The converse (Foreman on
//   the host, the executor inside a container reporting the container's
//   pids) cannot be seen from here at all: the executor must report pids as
//   the host numbers them.
//
// Blind, Foreman must not call any process gone: the judge makes such a
// task unverifiable with the reason, and check-config and review --live
// fail naming it.

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`,
/// 0xEFFFFFFC), fixed by the kernel since namespaces got inodes (3.8).
pub const INIT_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// Bit of CAP_SYS_PTRACE in `CapEff`.
const CAP_SYS_PTRACE: u32 = 19;

/// What Foreman may take on the operator's word because it cannot verify it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlindnessOptions {
    /// The executor and its droids run in Foreman's own PID namespace (one
    /// container holds them all). Without it a Foreman outside the host's
    /// initial PID namespace is blind.
    pub shared_pid_namespace: bool,
}

/// What [`blindness`] judges, read by [`ProcView::read`] and kept as data so
/// every rule is tested on texts written by hand. An error is a fact too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcView {
    /// Where the procfs in question is mounted, as mountinfo spells it.
    pub mount_point: String,
    /// `<mount>/self/mountinfo`.
    pub mountinfo: Result<String, String>,
    /// `<mount>/self/status` (`CapEff`, `Gid`, `Groups`).
    pub status: Result<String, String>,
    /// Reading `<mount>/1/stat`.
    pub pid1: Result<(), String>,
    /// The target of the `<mount>/self` link: this process's pid as that
    /// procfs numbers it.
    pub self_link: Result<String, String>,
    /// This process's pid (getpid).
    pub pid: i32,
    /// The inode of `<mount>/self/ns/pid`; `Ok(None)` on a kernel without
    /// PID namespaces (then there is only one).
    pub pid_ns: Result<Option<u64>, String>,
}

impl ProcView {
    /// Read the facts of the procfs mounted at `mount`.
    pub fn read(mount: &Path) -> ProcView {
        let mount = std::fs::canonicalize(mount).unwrap_or_else(|_| mount.to_path_buf());
        let text = |name: &str| {
            let path = mount.join(name);
            std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
        };
        let ns_path = mount.join("self/ns/pid");
        let pid_ns = match std::fs::read_link(&ns_path) {
            Ok(target) => parse_ns_link(&target.to_string_lossy())
                .map(Some)
                .ok_or_else(|| format!("{} links to {}", ns_path.display(), target.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", ns_path.display())),
        };
        let self_path = mount.join("self");
        ProcView {
            mount_point: mount.to_string_lossy().into_owned(),
            mountinfo: text("self/mountinfo"),
            status: text("self/status"),
            pid1: text("1/stat").map(|_| ()),
            self_link: std::fs::read_link(&self_path)
                .map(|t| t.to_string_lossy().into_owned())
                .map_err(|e| format!("reading {}: {e}", self_path.display())),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            pid_ns,
        }
    }

    /// The file system type and super options of the mount at
    /// `mount_point`, if mountinfo was read and lists one.
    pub fn mount(&self) -> Option<(String, String)> {
        find_mount(self.mountinfo.as_deref().ok()?, &self.mount_point)
    }
}

/// Why Foreman cannot trust "process not found" in `/proc`, or `None` when
/// it can. Strict: nothing is taken on the operator's word.
pub fn proc_blindness() -> Option<String> {
    proc_blindness_with(BlindnessOptions::default())
}

/// [`proc_blindness`] with what the operator vouches for.
pub fn proc_blindness_with(options: BlindnessOptions) -> Option<String> {
    proc_blindness_at(Path::new("/proc"), options)
}

/// [`proc_blindness`] of the procfs mounted at `mount`.
pub fn proc_blindness_at(mount: &Path, options: BlindnessOptions) -> Option<String> {
    blindness(&ProcView::read(mount), options)
}

/// The rules above, on facts alone: every reason found, joined by "; ".
pub fn blindness(view: &ProcView, options: BlindnessOptions) -> Option<String> {
    let m = view.mount_point.as_str();
    let mut reasons = Vec::new();
    match &view.mountinfo {
        Err(e) => reasons.push(format!(
            "the mount table is unreadable ({e}), so whether {m} hides processes is unknown"
        )),
        Ok(text) => match find_mount(text, m) {
            None => reasons.push(format!("no file system is mounted at {m} (mountinfo)")),
            Some((fstype, _)) if fstype != "proc" => {
                reasons.push(format!("{m} is a {fstype} mount, not procfs"))
            }
            Some((_, options)) => reasons.extend(hidepid_reason(m, &options, &view.status)),
        },
    }
    if let Err(e) = &view.pid1 {
        reasons.push(format!(
            "pid 1 is not visible in {m} ({e}): processes Foreman does not own are hidden from it"
        ));
    }
    match &view.self_link {
        Ok(t) if t.parse::<i32>().ok() == Some(view.pid) => {}
        Ok(t) => reasons.push(format!(
            "{m} belongs to another PID namespace than Foreman's: it numbers Foreman {t}, Foreman's own pid is {}; its pids are not ones Foreman can verify or signal",
            view.pid
        )),
        Err(e) => reasons.push(format!(
            "{m}/self is unreadable ({e}): Foreman is not in the PID namespace {m} shows"
        )),
    }
    match &view.pid_ns {
        Ok(Some(ino)) if *ino != INIT_PID_NS_INODE && !options.shared_pid_namespace => {
            reasons.push(format!(
                "Foreman runs in a PID namespace (pid:[{ino}]) other than the host's initial one: an executor outside it names pids {m} cannot show, so its live tasks would look gone; if the executor and its droids run in this same namespace (one container), say so with `shared_pid_namespace = true`"
            ))
        }
        Ok(_) => {}
        Err(e) => reasons.push(format!("Foreman's PID namespace is unknown ({e})")),
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// `pid:[4026531836]` → 4026531836.
fn parse_ns_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The file system type and super options of the topmost mount at
/// `mount_point` in a mountinfo text (proc(5)): `id parent major:minor root
/// mount-point options [optional...] - fstype source super-options`.
fn find_mount(mountinfo: &str, mount_point: &str) -> Option<(String, String)> {
    // Later lines are mounted later, on top of earlier ones: the last match.
    mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let point = unescape_mountinfo(fields.nth(4)?);
        // Optional fields run up to a lone "-".
        let mut rest = fields.skip_while(|f| *f != "-").skip(1);
        let fstype = rest.next()?;
        let _source = rest.next()?;
        let options = rest.next().unwrap_or("");
        (point == mount_point).then(|| (unescape_mountinfo(fstype), options.to_string()))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = octal.map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')));
        if let Some(b) = value.and_then(|v| u8::try_from(v).ok()) {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a procfs mount hides processes (`hidepid=`, proc(5)). Kernels
/// before 5.8 print the number, later ones the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HidePid {
    Off,
    /// 1: other users' /proc/PID listed but unreadable.
    NoAccess,
    /// 2: not listed either.
    Invisible,
    /// 4: only processes the reader may ptrace are listed; `gid=` is no
    /// exemption.
    Ptraceable,
    /// A value this Foreman does not know: assume the strictest.
    Unknown,
}

/// Why the `hidepid` of these super options hides other users' processes
/// from this process (`status`: its /proc/self/status), if it does.
fn hidepid_reason(m: &str, options: &str, status: &Result<String, String>) -> Option<String> {
    let mut hide = HidePid::Off;
    let mut shown = String::new();
    let mut gid: Option<u32> = None;
    for opt in options.split(',') {
        if let Some(v) = opt.strip_prefix("hidepid=") {
            shown = v.to_string();
            hide = match v {
                "0" | "off" => HidePid::Off,
                "1" | "noaccess" => HidePid::NoAccess,
                "2" | "invisible" => HidePid::Invisible,
                "4" | "ptraceable" => HidePid::Ptraceable,
                _ => HidePid::Unknown,
            };
        } else if let Some(v) = opt.strip_prefix("gid=") {
            gid = v.parse().ok();
        }
    }
    if hide == HidePid::Off {
        return None;
    }
    let group_exempts = matches!(hide, HidePid::NoAccess | HidePid::Invisible);
    let effect = if hide == HidePid::NoAccess {
        "makes other users' processes unreadable (their tasks could not be verified)"
    } else {
        "hides other users' processes (their live tasks would look gone)"
    };
    let gid_note = match (gid, group_exempts) {
        (Some(g), true) => format!(", gid={g}"),
        _ => String::new(),
    };
    let remedy = match (gid, group_exempts) {
        (Some(g), true) => format!("grant Foreman CAP_SYS_PTRACE, or add it to group {g}"),
        _ => "grant Foreman CAP_SYS_PTRACE".to_string(),
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "{m} is mounted with hidepid={shown}{gid_note}, which {effect}, and whether Foreman is exempt is unknown ({e})"
            ))
        }
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let ptrace = field("CapEff:")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0);
    if ptrace {
        return None;
    }
    if let (Some(g), true) = (gid, group_exempts) {
        // The kernel's in_group_p: the file-system gid (the fourth of
        // `Gid:`) or a supplementary group.
        let fsgid = field("Gid:").and_then(|v| v.split_whitespace().nth(3)?.parse::<u32>().ok());
        let groups = field("Groups:").unwrap_or("");
        if fsgid == Some(g) || groups.split_whitespace().any(|x| x.parse() == Ok(g)) {
            return None;
        }
    }
    Some(format!(
        "{m} is mounted with hidepid={shown}{gid_note}, which {effect}, and Foreman is not exempt (no CAP_SYS_PTRACE{}); {remedy}, or mount /proc without hidepid (systemd: ProtectProc=default)",
        if gid_note.is_empty() { "" } else { ", not in the group" }
    ))
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

    fn member_pids(p: &Probe) -> Vec<i32> {
        let Probe::Found(m) = p else {
            panic!("not found: {p:?}")
        };
        let mut pids: Vec<i32> = m.iter().map(|m| m.stat.pid).collect();
        pids[1..].sort();
        pids
    }

    /// The targeted walk finds the same tree as the full scan: children of
    /// the leader, grandchildren, and a child forked by a thread other
    /// than the leader (listed under that thread's `children`).
    #[test]
    fn the_targeted_walk_finds_the_whole_tree() {
        // Ready once every member exists and has exec'd: sh says so after
        // forking both sleeps, and Popen returns after the exec.
        let script = "import subprocess,threading,time,sys\n\
sh=subprocess.Popen(['sh','-c','sleep 30 & sleep 30 & echo up; wait'],stdout=subprocess.PIPE)\n\
sh.stdout.readline()\n\
done=threading.Event()\n\
threading.Thread(target=lambda: (subprocess.Popen(['sleep','30']),done.set(),time.sleep(30))).start()\n\
done.wait()\n\
print('ready',flush=True)\n\
time.sleep(30)\n";
        let mut c = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is on this machine kind");
        let pid = c.id() as i32;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("the tree says it is ready");
        assert_eq!(line.trim(), "ready");
        // Leader, sh, its two sleeps, the thread's sleep.
        let full = ProcTable::scan().unwrap().probe(pid);
        assert_eq!(member_pids(&full).len(), 5, "{full:?}");
        let table =
            ProcTable::scan_trees(&[pid, 999_999_999]).expect("children files on this kernel");
        let walked = table.probe(pid);
        assert_eq!(member_pids(&walked), member_pids(&full));
        assert_eq!(table.probe(999_999_999), Probe::Gone);
        assert!(table.len() == 5, "only the tree was read: {}", table.len());
        let _ = c.kill();
        let _ = c.wait();
        // Its children die with their process group's owner only if killed:
        // clean up the tree the full scan saw.
        if let Probe::Found(m) = full {
            for m in &m[1..] {
                // SAFETY: signalling our own test's children.
                unsafe { libc::kill(m.stat.pid, libc::SIGKILL) };
            }
        }
    }

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
        assert_eq!(s.threads, 1);
        assert!(!s.is_zombie());
    }

    /// Lines as the kernel wrote them for a program whose main thread
    /// called pthread_exit (tests/integration/linux.rs): while another
    /// thread runs, and after the last thread exited.
    #[test]
    fn a_z_leader_with_live_threads_is_not_a_zombie() {
        let running = "6190 (t) Z 6183 6179 5204 0 -1 4227084 91 0 2 0 96 0 0 0 20 0 2 0 25532 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(running).expect("parses");
        assert_eq!((s.state, s.threads, s.cpu_ticks), ('Z', 2, 96));
        assert_eq!(s.start_ticks, 25532);
        assert!(!s.is_zombie());
        let reaped_soon = "7379 (u) Z 7375 7375 5204 0 -1 4227084 91 0 0 0 0 0 0 0 20 0 1 0 26012 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(reaped_soon).expect("parses");
        assert_eq!((s.state, s.threads), ('Z', 1));
        assert!(s.is_zombie());
    }

    /// Findings stored before `threads` existed still load: 0, unknown, and
    /// a `Z` is then the zombie it was judged to be.
    #[test]
    fn a_stored_stat_without_threads_loads_as_unknown() {
        let old = r#"{"pid":7,"state":"Z","ppid":1,"pgrp":7,"cpu_ticks":3,"start_ticks":9}"#;
        let s: Stat = serde_json::from_str(old).expect("old row loads");
        assert_eq!(s.threads, 0);
        assert!(s.is_zombie());
        let again: Stat =
            serde_json::from_str(&serde_json::to_string(&s).expect("ser")).expect("de");
        assert_eq!(again, s);
    }

    #[test]
    fn stat_with_absurd_cpu_does_not_overflow() {
        let text = "1 (x) R 0 1 1 0 -1 0 0 0 0 0 18446744073709551615 18446744073709551615 0 0 20 0 1 0 5 0 0\n";
        assert_eq!(parse_stat(text).expect("parses").cpu_ticks, u64::MAX);
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

    fn boot_at(secs: i64) -> BootFacts {
        BootFacts {
            boot_id: "b".repeat(36),
            boot_time: Utc.timestamp_opt(secs, 0).single().expect("in range"),
            clk_tck: 100,
            ticks_at_boot: 0,
        }
    }

    fn ts(secs: i64, ms: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().expect("in range") + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn started_at_is_boot_plus_ticks() {
        let b = boot_at(1_700_000_000);
        assert_eq!(b.started_at(0), ts(1_700_000_000, 0));
        assert_eq!(b.started_at(12_345), ts(1_700_000_123, 450));
        // An odd tick rate rounds down to the millisecond.
        let odd = BootFacts {
            clk_tck: 3,
            ..b.clone()
        };
        assert_eq!(odd.started_at(1), ts(1_700_000_000, 333));
    }

    #[test]
    fn started_at_counts_from_the_ticks_of_the_boot_instant() {
        let b = BootFacts {
            ticks_at_boot: 360_000, // an hour of ticks
            ..boot_at(1_700_003_600)
        };
        assert_eq!(b.started_at(360_000), ts(1_700_003_600, 0));
        assert_eq!(b.started_at(360_150), ts(1_700_003_601, 500));
        // Older than the (emulated) boot: before boot_time, not a panic.
        assert_eq!(b.started_at(0), ts(1_700_000_000, 0));
        assert_eq!(b.started_at(359_999), ts(1_700_003_599, 990));
    }

    #[test]
    fn started_at_never_panics_and_saturates() {
        let b = boot_at(1_700_000_000);
        for (facts, ticks) in [
            (b.clone(), u64::MAX),
            (b.clone(), u64::MAX / 2),
            (
                BootFacts {
                    clk_tck: 0,
                    ..b.clone()
                },
                u64::MAX,
            ),
            (
                BootFacts {
                    clk_tck: u64::MAX,
                    ..b.clone()
                },
                u64::MAX,
            ),
            (
                BootFacts {
                    ticks_at_boot: u64::MAX,
                    ..b.clone()
                },
                0,
            ),
            (
                BootFacts {
                    ticks_at_boot: u64::MAX,
                    ..b.clone()
                },
                u64::MAX,
            ),
            (
                BootFacts {
                    boot_time: DateTime::<Utc>::MAX_UTC,
                    ..b.clone()
                },
                1,
            ),
            (
                BootFacts {
                    boot_time: DateTime::<Utc>::MIN_UTC,
                    ticks_at_boot: 1,
                    ..b.clone()
                },
                0,
            ),
        ] {
            let _ = facts.started_at(ticks);
            let _ = facts.checked_started_at(ticks);
        }
        assert_eq!(b.checked_started_at(u64::MAX), None);
        assert_eq!(b.started_at(u64::MAX), DateTime::<Utc>::MAX_UTC);
        let below = BootFacts {
            ticks_at_boot: u64::MAX,
            ..b.clone()
        };
        assert_eq!(below.checked_started_at(0), None);
        assert_eq!(below.started_at(0), DateTime::<Utc>::MIN_UTC);
        let at_max = BootFacts {
            boot_time: DateTime::<Utc>::MAX_UTC,
            ..b.clone()
        };
        assert_eq!(at_max.started_at(1), DateTime::<Utc>::MAX_UTC);
        assert_eq!(at_max.started_at(0), DateTime::<Utc>::MAX_UTC);
        // clk_tck 0 counts as 1, as it always has.
        let zero = BootFacts {
            clk_tck: 0,
            ..b.clone()
        };
        assert_eq!(zero.started_at(2), ts(1_700_000_002, 0));
        // Huge but representable.
        assert!(b.checked_started_at(u64::MAX / 1_000_000).is_some());
    }

    #[test]
    fn stored_boot_facts_without_ticks_at_boot_are_a_real_host() {
        let old = r#"{"boot_id":"x","boot_time":"2026-11-20T06:00:00Z","clk_tck":100}"#;
        let b: BootFacts = serde_json::from_str(old).expect("old row loads");
        assert_eq!(b.ticks_at_boot, 0);
    }

    #[test]
    fn the_boot_override_moves_the_boot_and_keeps_every_start_time() {
        let real = boot_at(1_700_000_000);
        let emulated = emulate_boot(real.clone(), " 1700004500\n").expect("later boot");
        assert_eq!(emulated.boot_time, ts(1_700_004_500, 0));
        assert_eq!(emulated.ticks_at_boot, 4_500 * 100);
        assert_eq!(emulated.boot_id, real.boot_id);
        assert_eq!(emulated.clk_tck, real.clk_tck);
        for ticks in [0, 1, 449_999, 450_000, 450_001, 10_000_000, u64::MAX] {
            assert_eq!(
                emulated.started_at(ticks),
                real.started_at(ticks),
                "{ticks}"
            );
        }
        // The boot instant itself; and the same instant: nothing moves.
        assert_eq!(
            emulated.started_at(emulated.ticks_at_boot),
            emulated.boot_time
        );
        assert_eq!(
            emulate_boot(real.clone(), "1700000000").expect("same"),
            real
        );
    }

    #[test]
    fn the_boot_override_refuses_what_it_cannot_emulate() {
        let real = boot_at(1_700_000_000);
        for (value, says) in [
            ("1699999999", "before the real boot"),
            ("-5", "before the real boot"),
            ("soon", "not unix seconds"),
            ("", "not unix seconds"),
            ("1.5", "not unix seconds"),
            ("9223372036854775807", "out of range"),
        ] {
            let e = emulate_boot(real.clone(), value).expect_err(value);
            let text = format!("{e:#}");
            assert!(text.contains(says), "{value}: {text}");
            assert!(text.contains(TEST_BOOT_TIME_ENV), "{value}: {text}");
        }
    }

    #[test]
    fn pid_max_parses_the_sysctl() {
        assert_eq!(parse_pid_max("4194304\n"), Some(4_194_304));
        assert_eq!(parse_pid_max(" 32768 "), Some(32_768));
        for bad in ["", "0", "-1", "lots", "99999999999", "32768 1"] {
            assert_eq!(parse_pid_max(bad), None, "{bad:?}");
        }
        let max = pid_max().expect("this host has /proc/sys/kernel/pid_max");
        assert!(max > std::process::id() as i32, "{max}");
    }

    // ------------------------------------------------------- blindness

    const PROC_LINE: &str =
        "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw";
    const OTHER_LINES: &str = "27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
        28 22 0:5 / /proc/sys/fs/binfmt_misc rw,relatime shared:13 - binfmt_misc binfmt_misc rw\n";
    const UNPRIVILEGED: &str = "Name:\tforeman\nUid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nGroups:\t998 1001 \nCapEff:\t0000000000000000\n";

    /// A Foreman that sees everything: plain /proc, pid 1 visible, itself
    /// pid 4242 in the initial namespace.
    fn clear() -> ProcView {
        ProcView {
            mount_point: "/proc".into(),
            mountinfo: Ok(format!("{OTHER_LINES}{PROC_LINE}\n")),
            status: Ok(UNPRIVILEGED.into()),
            pid1: Ok(()),
            self_link: Ok("4242".into()),
            pid: 4242,
            pid_ns: Ok(Some(INIT_PID_NS_INODE)),
        }
    }

    fn with_proc_options(options: &str) -> ProcView {
        let line = PROC_LINE.replace(" - proc proc rw", &format!(" - proc proc {options}"));
        ProcView {
            mountinfo: Ok(format!("{OTHER_LINES}{line}\n")),
            ..clear()
        }
    }

    fn with_status(v: ProcView, status: &str) -> ProcView {
        ProcView {
            status: Ok(status.into()),
            ..v
        }
    }

    #[test]
    fn blindness_rules() {
        const PTRACE: &str = "Gid:\t998\t998\t998\t998\nGroups:\t998\nCapEff:\t0000000000080000\n";
        const ROOT_ALL: &str =
            "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t000001ffffffffff\n";
        const ROOT_NO_CAPS: &str =
            "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t0000000000000000\n";
        const FSGID_27: &str = "Gid:\t998\t998\t998\t27\nGroups:\t998\nCapEff:\t0000000000000000\n";
        const GROUP_27: &str =
            "Gid:\t998\t998\t998\t998\nGroups:\t998 27 \nCapEff:\t0000000000000000\n";
        let shared = BlindnessOptions {
            shared_pid_namespace: true,
        };
        let strict = BlindnessOptions::default();
        // (case, view, options, None = not blind / Some(words the reason has))
        let cases: Vec<(&str, ProcView, BlindnessOptions, Option<&[&str]>)> = vec![
            ("plain /proc", clear(), strict, None),
            ("hidepid=off", with_proc_options("rw,hidepid=off"), strict, None),
            ("hidepid=0 (before 5.8)", with_proc_options("rw,hidepid=0"), strict, None),
            (
                "hidepid=invisible, no capability",
                with_proc_options("rw,hidepid=invisible"),
                strict,
                Some(&["/proc is mounted with hidepid=invisible", "look gone", "CAP_SYS_PTRACE", "ProtectProc=default"]),
            ),
            (
                "hidepid=2 (before 5.8)",
                with_proc_options("rw,hidepid=2"),
                strict,
                Some(&["hidepid=2", "look gone"]),
            ),
            (
                "hidepid=noaccess: unreadable rather than gone, blind all the same",
                with_proc_options("rw,hidepid=noaccess"),
                strict,
                Some(&["hidepid=noaccess", "unreadable"]),
            ),
            (
                "hidepid=ptraceable",
                with_proc_options("rw,hidepid=ptraceable"),
                strict,
                Some(&["hidepid=ptraceable"]),
            ),
            (
                "a hidepid value unknown to Foreman counts as the strictest",
                with_proc_options("rw,hidepid=someday"),
                strict,
                Some(&["hidepid=someday"]),
            ),
            (
                "hidepid, but CAP_SYS_PTRACE",
                with_status(with_proc_options("rw,hidepid=invisible"), PTRACE),
                strict,
                None,
            ),
            (
                "hidepid=ptraceable, CAP_SYS_PTRACE",
                with_status(with_proc_options("rw,hidepid=ptraceable,gid=27"), PTRACE),
                strict,
                None,
            ),
            (
                "hidepid, root with every capability",
                with_status(with_proc_options("rw,hidepid=invisible"), ROOT_ALL),
                strict,
                None,
            ),
            (
                "hidepid, root without CAP_SYS_PTRACE: another user's droid is hidden",
                with_status(with_proc_options("rw,hidepid=invisible"), ROOT_NO_CAPS),
                strict,
                Some(&["hidepid=invisible", "no CAP_SYS_PTRACE"]),
            ),
            (
                "hidepid with gid=, a supplementary group",
                with_status(with_proc_options("rw,hidepid=invisible,gid=27"), GROUP_27),
                strict,
                None,
            ),
            (
                "hidepid with gid=, the file-system gid",
                with_status(with_proc_options("rw,hidepid=noaccess,gid=27"), FSGID_27),
                strict,
                None,
            ),
            (
                "hidepid with gid=, not in it",
                with_proc_options("rw,hidepid=invisible,gid=27"),
                strict,
                Some(&["hidepid=invisible, gid=27", "not in the group", "add it to group 27"]),
            ),
            (
                "hidepid=ptraceable: gid= exempts no one",
                with_status(with_proc_options("rw,hidepid=ptraceable,gid=27"), GROUP_27),
                strict,
                Some(&["hidepid=ptraceable"]),
            ),
            (
                "hidepid, own status unreadable",
                ProcView {
                    status: Err("reading /proc/self/status: EIO".into()),
                    ..with_proc_options("rw,hidepid=invisible")
                },
                strict,
                Some(&["hidepid=invisible", "unknown (reading /proc/self/status: EIO)"]),
            ),
            (
                "the status is not needed without hidepid",
                ProcView {
                    status: Err("gone".into()),
                    ..clear()
                },
                strict,
                None,
            ),
            (
                "the topmost of two /proc mounts counts: hidepid on top",
                ProcView {
                    mountinfo: Ok(format!("{PROC_LINE}\n40 27 0:50 / /proc rw - proc proc rw,hidepid=invisible\n")),
                    ..clear()
                },
                strict,
                Some(&["hidepid=invisible"]),
            ),
            (
                "the topmost of two /proc mounts counts: a plain one on top",
                ProcView {
                    mountinfo: Ok(format!("40 27 0:50 / /proc rw - proc proc rw,hidepid=invisible\n{PROC_LINE}\n")),
                    ..clear()
                },
                strict,
                None,
            ),
            (
                "hidepid on another procfs mount does not matter",
                ProcView {
                    mountinfo: Ok(format!("{PROC_LINE}\n41 27 0:51 / /run/other/proc rw - proc proc rw,hidepid=invisible\n")),
                    ..clear()
                },
                strict,
                None,
            ),
            (
                "a mount point with a space, escaped by the kernel",
                ProcView {
                    mount_point: "/srv/my proc".into(),
                    mountinfo: Ok("41 27 0:51 / /srv/my\\040proc rw - proc proc rw,hidepid=invisible\n".into()),
                    ..clear()
                },
                strict,
                Some(&["/srv/my proc is mounted with hidepid=invisible"]),
            ),
            (
                "nothing mounted at /proc",
                ProcView {
                    mountinfo: Ok(OTHER_LINES.into()),
                    ..clear()
                },
                strict,
                Some(&["no file system is mounted at /proc"]),
            ),
            (
                "/proc is not procfs",
                ProcView {
                    mountinfo: Ok("22 27 0:21 / /proc rw - tmpfs tmpfs rw\n".into()),
                    ..clear()
                },
                strict,
                Some(&["/proc is a tmpfs mount, not procfs"]),
            ),
            (
                "mountinfo unreadable",
                ProcView {
                    mountinfo: Err("reading /proc/self/mountinfo: EACCES".into()),
                    ..clear()
                },
                strict,
                Some(&["mount table is unreadable", "EACCES"]),
            ),
            (
                "pid 1 invisible",
                ProcView {
                    pid1: Err("reading /proc/1/stat: No such file or directory".into()),
                    ..clear()
                },
                strict,
                Some(&["pid 1 is not visible in /proc", "No such file"]),
            ),
            (
                "/proc of another PID namespace",
                ProcView {
                    self_link: Ok("17".into()),
                    ..clear()
                },
                shared,
                Some(&["/proc belongs to another PID namespace", "numbers Foreman 17", "own pid is 4242"]),
            ),
            (
                "/proc/self missing: Foreman is not in that namespace",
                ProcView {
                    self_link: Err("reading /proc/self: No such file or directory".into()),
                    ..clear()
                },
                shared,
                Some(&["/proc/self is unreadable"]),
            ),
            (
                "Foreman in a child PID namespace",
                ProcView {
                    pid_ns: Ok(Some(4026532200)),
                    ..clear()
                },
                strict,
                Some(&["PID namespace (pid:[4026532200])", "shared_pid_namespace = true"]),
            ),
            (
                "Foreman in a child PID namespace, shared with the executor by the operator's word",
                ProcView {
                    pid_ns: Ok(Some(4026532200)),
                    ..clear()
                },
                shared,
                None,
            ),
            (
                "a kernel without PID namespaces",
                ProcView {
                    pid_ns: Ok(None),
                    ..clear()
                },
                strict,
                None,
            ),
            (
                "the namespace unreadable",
                ProcView {
                    pid_ns: Err("reading /proc/self/ns/pid: EPERM".into()),
                    ..clear()
                },
                shared,
                Some(&["PID namespace is unknown", "EPERM"]),
            ),
            (
                "every reason is given",
                ProcView {
                    pid1: Err("hidden".into()),
                    pid_ns: Ok(Some(4026532200)),
                    ..with_proc_options("rw,hidepid=invisible")
                },
                strict,
                Some(&["hidepid=invisible", "; pid 1 is not visible", "; Foreman runs in a PID namespace"]),
            ),
        ];
        for (name, view, options, want) in cases {
            let got = blindness(&view, options);
            match (want, &got) {
                (None, None) => {}
                (Some(words), Some(reason)) => {
                    for w in words {
                        assert!(reason.contains(w), "{name}: {w:?} not in {reason:?}");
                    }
                }
                _ => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        // Not an escape: left as it is.
        assert_eq!(unescape_mountinfo("/x\\9y\\"), "/x\\9y\\");
        assert_eq!(unescape_mountinfo("/é\\040"), "/é ");
        assert_eq!(parse_ns_link("pid:[4026531836]"), Some(INIT_PID_NS_INODE));
        assert_eq!(parse_ns_link("net:[4026531836]"), None);
    }

    #[test]
    fn this_hosts_proc_is_read() {
        let view = ProcView::read(Path::new("/proc"));
        assert_eq!(view.mount_point, "/proc");
        assert!(view.mountinfo.is_ok(), "{view:?}");
        assert!(view.status.is_ok(), "{view:?}");
        assert_eq!(view.self_link, Ok(std::process::id().to_string()));
        let ptrace = cap_has_ptrace(view.status.as_deref().unwrap_or(""));
        if view.pid_ns == Ok(Some(INIT_PID_NS_INODE)) && ptrace {
            assert_eq!(proc_blindness(), None, "{view:?}");
        } else {
            // CI runs as root in the host's namespace: there, this must run.
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
            assert!(
                !ci,
                "not root in the initial PID namespace under CI; blind: {:?}",
                proc_blindness()
            );
            eprintln!(
                "skipped: not root in the initial PID namespace; blind: {:?}",
                proc_blindness()
            );
        }
    }

    fn cap_has_ptrace(status: &str) -> bool {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .is_some_and(|c| c & (1 << CAP_SYS_PTRACE) != 0)
    }

    #[test]
    fn boot_facts_are_sane() {
        let b = boot_facts().expect("boot facts");
        assert_eq!(b.boot_id.len(), 36);
        assert!(b.boot_time < Utc::now());
        assert!(b.clk_tck > 0);
    }
}
