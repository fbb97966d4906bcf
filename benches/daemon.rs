//! The daemon benchmark: what `foreman run` (the real release binary)
//! costs and how fast it sees a death, on real sleeping processes and a real
//! executor SQLite file.
//!
//! `cargo build --release && cargo bench --bench daemon [-- OPTIONS]`
//!
//! Options (all optional):
//!
//! - `--parts 1,2,3,4`: which parts to run (default all):
//!   1. steady state: N healthy tasks whose heartbeats the bench moves to
//!      now once a second (as an executor would), `interval = "5s"`,
//!      timeouts of 1h; the daemon's CPU per task per scheduled sweep over
//!      `--sweeps` sweeps (default 10) after the startup sweep and two
//!      scheduled sweeps; in the same run, over the same processes, the
//!      bare `/proc` floor and monit 5.33's `validate` (N checks, and 1);
//!   2. stale-heartbeat fleet: heartbeats 10 minutes old (every task needs
//!      its counters read), the new binary and the old one
//!      (`--old PATH`, default `/work/wt-old/target/release/foreman`) on
//!      the same fleet, the same way;
//!   3. death-to-finding latency: `--latency-n` tasks (default 200),
//!      `interval = "30s"`, `--kills` SIGKILLs (default 100) one at a time,
//!      each followed until its finding is in the activity log;
//!   4. the daemon's VmRSS and VmHWM and its pidfds, sampled through the
//!      steady-state run (runs part 1's daemon if part 1 is not selected,
//!      without the floor and monit).
//! - `--ns 1000,10000` (or bare numbers): the fleet sizes of parts 1, 2, 4.
//! - `--sweeps K`: scheduled sweeps measured per run (default 10).
//!
//! CPU is the daemon's own, not wall time: the sum over its threads of
//! `/proc/PID/task/TID/schedstat` (nanoseconds; every thread seen is kept
//! at its last value), cross-checked with utime + stime from
//! `/proc/PID/stat` (clock ticks). The floor is timed with
//! `getrusage(RUSAGE_THREAD)` (the heartbeat thread runs beside it), and
//! monit by `wait4`'s rusage of each `monit validate`.
//!
//! Every process started dies with the bench: the sleepers and the daemon
//! have `PR_SET_PDEATHSIG`, and Drop guards kill and reap them.

// `args` and `check_binary`'s users are the other benches'.
#[allow(dead_code)]
mod common;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use common::{check_binary, floor, reap, tail, Daemon, Limits, Sleepers, Stats};
use foreman::executor::sqlite::SCHEMA;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const OLD_BINARY: &str = "/work/wt-old/target/release/foreman";
const POLL: Duration = Duration::from_millis(20);

struct Opts {
    parts: Vec<u8>,
    ns: Vec<usize>,
    sweeps: usize,
    latency_n: usize,
    kills: usize,
    old: PathBuf,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        parts: vec![1, 2, 3, 4],
        ns: Vec::new(),
        sweeps: 10,
        latency_n: 200,
        kills: 100,
        old: PathBuf::from(OLD_BINARY),
    };
    let list = |v: &str| -> Result<Vec<usize>> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .with_context(|| format!("{s:?} is not a number"))
            })
            .collect()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().with_context(|| format!("{key} needs a value")),
            }
        };
        match key.as_str() {
            "--bench" => {}
            "--parts" => {
                o.parts = list(&value()?)?.into_iter().map(|p| p as u8).collect();
                ensure!(
                    o.parts.iter().all(|p| (1..=4).contains(p)),
                    "--parts takes 1, 2, 3, 4"
                );
            }
            "--ns" => o.ns.extend(list(&value()?)?),
            "--sweeps" => o.sweeps = value()?.parse().context("--sweeps")?,
            "--latency-n" => o.latency_n = value()?.parse().context("--latency-n")?,
            "--kills" => o.kills = value()?.parse().context("--kills")?,
            "--old" => o.old = PathBuf::from(value()?),
            s if !s.starts_with('-') => o.ns.extend(list(s)?),
            s => bail!("unknown option {s}"),
        }
    }
    if o.ns.is_empty() {
        o.ns = vec![1000, 10_000];
    }
    ensure!(o.sweeps >= 1, "--sweeps must be at least 1");
    ensure!(
        o.kills >= 1 && o.kills <= o.latency_n,
        "--kills must be 1..=--latency-n"
    );
    Ok(o)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("daemon bench failed: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let o = opts()?;
    let binary = check_binary()?;
    println!(
        "daemon bench: parts {:?}, N = {:?}, {} measured sweeps per run; binary {}",
        o.parts,
        o.ns,
        o.sweeps,
        binary.display()
    );
    println!("load average at start: {}", loadavg());
    let monit = if o.parts.contains(&1) {
        Some(find_monit()?)
    } else {
        None
    };
    let old = if o.parts.contains(&2) {
        ensure!(
            o.old.exists(),
            "the old binary {} is missing: `git -C /work/wt-bench worktree add /work/wt-old 62b5780 && \
             cd /work/wt-old && CARGO_TARGET_DIR=/work/wt-old/target cargo build --release`, or pass --old PATH",
            o.old.display()
        );
        Some(o.old.clone())
    } else {
        None
    };

    let mut steady_rows = Vec::new();
    let mut stale_rows = Vec::new();
    for &n in &o.ns {
        if !(o.parts.contains(&1) || o.parts.contains(&2) || o.parts.contains(&4)) {
            break;
        }
        println!("\n## N = {n}");
        if let Err(e) = Limits::read().and_then(|l| l.check(n)) {
            println!("N = {n} cannot be reached: {e:#}");
            continue;
        }
        let fleet = Fleet::spawn(n)?;
        if o.parts.contains(&1) || o.parts.contains(&4) {
            let monit = if o.parts.contains(&1) {
                monit.as_deref()
            } else {
                None
            };
            let row = steady(&fleet, &binary, o.sweeps, monit)
                .with_context(|| format!("steady N = {n}"))?;
            steady_rows.push(row);
        }
        if let Some(old) = &old {
            let new_run =
                stale(&fleet, &binary, o.sweeps).with_context(|| format!("stale N = {n}, new"))?;
            let old_run =
                stale(&fleet, old, o.sweeps).with_context(|| format!("stale N = {n}, old"))?;
            stale_rows.push((n, new_run, old_run));
        }
    }
    let latency_row = if o.parts.contains(&3) {
        println!("\n## Latency, N = {}", o.latency_n);
        Limits::read().and_then(|l| l.check(o.latency_n))?;
        Some(latency(&binary, o.latency_n, o.kills)?)
    } else {
        None
    };

    // The tables.
    let us = |r: &Run, n: usize| r.cpu_s * 1e6 / (r.sweeps as f64 * n as f64);
    if o.parts.contains(&1) && !steady_rows.is_empty() {
        println!("\n## 1. Steady state (healthy, heartbeats moved each second, interval 5s)\n");
        println!("| N | daemon µs/task/sweep (cpu) | per-sweep median, min–max | stat ticks cross-check | floor µs/task (cpu) | monit µs/process (N checks) | monit 1 process ms | monit ÷ daemon | daemon ÷ floor | sweeps | event sweeps | findings |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &steady_rows {
            let d = us(&s.run, s.n);
            let per = s.run.per_sweep_us(s.n);
            let (Some(fl), Some(m)) = (s.floor_us, &s.monit) else {
                continue;
            };
            println!(
                "| {} | {:.2} | {:.2}, {:.2}–{:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0}× | {:.3} | {} | {} | {} |",
                s.n,
                d,
                per.1,
                per.0,
                per.2,
                s.run.ticks_s * 1e6 / (s.run.sweeps as f64 * s.n as f64),
                fl,
                m.per_process_us,
                m.one_ms,
                m.per_process_us / d,
                d / fl,
                s.run.sweeps,
                s.run.event_sweeps,
                s.run.findings,
            );
        }
        println!("\nmonit detail (CPU of each `monit -c monitrc validate`, median of 3):\n");
        println!("| N | N checks ms | 1 check ms | (N − 1) marginal µs/process | monit stderr lines (first) |");
        println!("|---:|---:|---:|---:|---|");
        for s in &steady_rows {
            if let Some(m) = &s.monit {
                println!(
                    "| {} | {:.1} | {:.1} | {:.1} | {} |",
                    s.n,
                    m.n_ms,
                    m.one_ms,
                    m.marginal_us,
                    m.stderr.replace('|', "\\|")
                );
            }
        }
    }
    if !stale_rows.is_empty() {
        println!(
            "\n## 2. Stale-heartbeat fleet (heartbeats 10 min old, timeout 1h, interval 5s)\n"
        );
        println!("| N | new µs/task/sweep (cpu) | old µs/task/sweep (cpu) | new ÷ old | per-sweep median new, old | sweeps each | findings new, old | event sweeps new |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (n, new, old) in &stale_rows {
            println!(
                "| {} | {:.2} | {:.2} | {:.3} | {:.2}, {:.2} | {}, {} | {}, {} | {} |",
                n,
                us(new, *n),
                us(old, *n),
                us(new, *n) / us(old, *n),
                new.per_sweep_us(*n).1,
                old.per_sweep_us(*n).1,
                new.sweeps,
                old.sweeps,
                new.findings,
                old.findings,
                new.event_sweeps,
            );
        }
    }
    if let Some(l) = &latency_row {
        println!("\n## 3. Death-to-finding latency (interval 30s, SIGKILL one at a time)\n");
        println!("| N | kills | seen − kill median ms | worst ms | first_seen_at − kill median ms | worst ms | recorded by | finding kinds | missed |");
        println!("|---:|---:|---:|---:|---:|---:|---|---|---:|");
        let seen = stats(&l.seen_ms);
        let first = stats(&l.first_ms);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            l.n,
            l.kills,
            seen.1,
            seen.2,
            first.1,
            first.2,
            count_words(&l.sweep_kinds),
            count_words(&l.finding_kinds),
            l.missed,
        );
        println!(
            "\n(fastest: seen − kill {:.0} ms, first_seen_at − kill {:.0} ms; daemon stderr: {})",
            seen.0, first.0, l.stderr
        );
    }
    if o.parts.contains(&4) && !steady_rows.is_empty() {
        println!("\n## 4. Daemon memory through the steady-state run\n");
        println!("| N | max VmRSS MiB, startup and settling | max VmRSS MiB, measured sweeps | VmHWM MiB (end) | RssAnon / RssFile MiB (end) | pidfds held (window start, end) | RSS samples |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for s in &steady_rows {
            let r = &s.run;
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {}, {} | {} |",
                s.n,
                kib_mib(r.settle_rss_kib),
                kib_mib(r.max_rss_kib),
                kib_mib(r.hwm_kib),
                kib_mib(r.anon_kib),
                kib_mib(r.file_kib),
                r.pidfds.0,
                r.pidfds.1,
                r.rss_samples,
            );
        }
    }
    println!("\n## Runs\n");
    println!("| run | N | load avg start → end | daemon total cpu s (wait4) | sweep wall ms (median, from the log) | stderr WARN/ERROR lines (first) |");
    println!("|---|---:|---|---:|---:|---|");
    let line = |name: &str, n: usize, r: &Run| {
        println!(
            "| {name} | {n} | {} → {} | {:.2} | {:.1} | {} |",
            r.load.0,
            r.load.1,
            r.total_cpu_s,
            r.sweep_wall_ms,
            r.stderr.replace('|', "\\|")
        );
    };
    for s in &steady_rows {
        line("steady", s.n, &s.run);
    }
    for (n, new, old) in &stale_rows {
        line("stale, new", *n, new);
        line("stale, old", *n, old);
    }
    for s in &steady_rows {
        println!("\nsteady N = {}: each measured sweep (daemon cpu ms between completions, sweep wall ms, VmRSS MiB at completion):", s.n);
        for (i, p) in s.run.points.iter().enumerate() {
            println!(
                "  sweep {:2}: {:7.2} ms cpu, {:7.1} ms wall, {:5.1} MiB",
                i + 1,
                p.cpu_s * 1e3,
                p.wall_ms,
                kib_mib(p.rss_kib)
            );
        }
    }
    println!("\nload average at end: {}", loadavg());
    Ok(())
}

fn count_words(v: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for w in v {
        match counts.iter_mut().find(|(k, _)| k == w) {
            Some((_, c)) => *c += 1,
            None => counts.push((w.clone(), 1)),
        }
    }
    counts
        .iter()
        .map(|(k, c)| format!("{k} ×{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// min, median, max; NaN for none.
fn stats(v: &[f64]) -> Stats {
    if v.is_empty() {
        Stats(f64::NAN, f64::NAN, f64::NAN)
    } else {
        Stats::of(v.to_vec())
    }
}

fn kib_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// N sleeping processes, each with the time just after its fork.
struct Fleet {
    sleepers: Sleepers,
    started: Vec<(i32, DateTime<Utc>)>,
}

impl Fleet {
    fn spawn(n: usize) -> Result<Fleet> {
        let mut sleepers = Sleepers(Vec::with_capacity(n));
        let mut started = Vec::with_capacity(n);
        let t0 = Instant::now();
        for i in 0..n {
            let pid = sleepers.spawn().with_context(|| {
                format!(
                    "starting process {} of {n} (check `ulimit -u`, kernel.pid_max, the pids cgroup)",
                    i + 1
                )
            })?;
            started.push((pid, Utc::now()));
        }
        println!(
            "started {n} `sleep 3600` processes in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        Ok(Fleet { sleepers, started })
    }

    fn pids(&self) -> Vec<i32> {
        self.started.iter().map(|(p, _)| *p).collect()
    }
}

fn task_id(i: usize) -> String {
    format!("task-{i:06}")
}

/// A fresh executor file with one RUNNING task per process, all with the
/// given heartbeat; `bench_dead` lists tasks the heartbeat thread skips.
fn write_executor(
    path: &Path,
    started: &[(i32, DateTime<Utc>)],
    heartbeat: DateTime<Utc>,
) -> Result<()> {
    let db = Connection::open(path)?;
    db.execute_batch(SCHEMA)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.execute_batch("CREATE TABLE bench_dead (id TEXT PRIMARY KEY);")?;
    let tx = db.unchecked_transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at, last_progress_at)
             VALUES (?1, ?2, 'builder', 'RUNNING', ?3, 1, ?4, ?5)",
        )?;
        let beat = ts(heartbeat);
        for (i, (pid, at)) in started.iter().enumerate() {
            ins.execute(params![
                task_id(i),
                format!("plan-{:03}", i % 100),
                pid,
                ts(*at),
                beat
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn write_config(dir: &Path, interval: &str) -> Result<PathBuf> {
    let path = dir.join("foreman.toml");
    std::fs::write(
        &path,
        format!(
            r#"# Written by benches/daemon.rs.
interval = "{interval}"
max_cpu_pressure = 100.0
mode = "shadow"
[executor]
kind = "sqlite"
path = "executor.db"
[activity]
path = "foreman.db"
[http]
listen = ""
[droid_types.builder]
timeout = "1h"
progress = ["heartbeat", "cpu", "io"]
"#
        ),
    )?;
    Ok(path)
}

/// Moves every RUNNING task's heartbeat (but those in `bench_dead`) to now,
/// once a second, as an executor would.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<u64>>>,
}

impl Heartbeat {
    fn start(db: &Path) -> Result<Heartbeat> {
        let db = Connection::open(db)?;
        db.busy_timeout(Duration::from_secs(5))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || -> Result<u64> {
            let mut beats = 0;
            while !flag.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                db.execute(
                    "UPDATE tasks SET last_progress_at = ?1
                     WHERE state = 'RUNNING' AND id NOT IN (SELECT id FROM bench_dead)",
                    params![ts(Utc::now())],
                )?;
                beats += 1;
                let next = Duration::from_secs(1).saturating_sub(t0.elapsed());
                let until = Instant::now() + next;
                while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
                }
            }
            Ok(beats)
        });
        Ok(Heartbeat {
            stop,
            handle: Some(handle),
        })
    }

    fn stop(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the heartbeat thread panicked"))?,
            None => Ok(0),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The daemon's CPU: per-thread schedstat (ns, each thread kept at its
/// last value) and utime + stime of the process (ticks).
struct CpuMeter {
    pid: i32,
    threads: HashMap<i32, u64>,
    tick: f64,
}

impl CpuMeter {
    fn new(pid: i32) -> CpuMeter {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        CpuMeter {
            pid,
            threads: HashMap::new(),
            tick: 1.0 / hz,
        }
    }

    /// Seconds of CPU, precise (schedstat).
    fn sample(&mut self) -> f64 {
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for e in dir.flatten() {
                let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else {
                    continue;
                };
                if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
                    self.threads.insert(tid, ns);
                }
            }
        }
        self.threads.values().sum::<u64>() as f64 * 1e-9
    }

    /// Seconds of CPU from /proc/PID/stat (utime + stime, ticks).
    fn ticks(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return f64::NAN;
        };
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat; `rest` starts at field 3.
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (get(14) + get(15)) as f64 * self.tick
    }
}

/// (VmRSS, VmHWM, RssAnon, RssFile) KiB of a process.
fn memory(pid: i32) -> Option<(u64, u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let get = |key: &str| -> Option<u64> {
        let line = status
            .lines()
            .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
        line.split_ascii_whitespace().nth(1)?.parse().ok()
    };
    Some((
        get("VmRSS")?,
        get("VmHWM")?,
        get("RssAnon")?,
        get("RssFile")?,
    ))
}

fn pidfds(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[pidfd]")
        })
        .count()
}

/// The activity log, read-only, opened once the daemon has made it.
struct Log {
    path: PathBuf,
    conn: Option<Connection>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    startup: usize,
    scheduled: usize,
    event: usize,
    findings: usize,
}

impl Log {
    fn new(path: PathBuf) -> Log {
        Log { path, conn: None }
    }

    fn conn(&mut self) -> Option<&Connection> {
        if self.conn.is_none() && self.path.exists() {
            let c =
                Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
            c.busy_timeout(Duration::from_secs(2)).ok()?;
            self.conn = Some(c);
        }
        self.conn.as_ref()
    }

    fn counts(&mut self) -> Counts {
        let Some(c) = self.conn() else {
            return Counts::default();
        };
        c.query_row(
            "SELECT (SELECT count(*) FROM sweeps WHERE kind = 'startup' AND finished_at IS NOT NULL),
                    (SELECT count(*) FROM sweeps WHERE kind = 'scheduled' AND finished_at IS NOT NULL),
                    (SELECT count(*) FROM sweeps WHERE kind = 'event'),
                    (SELECT count(*) FROM findings)",
            [],
            |r| {
                Ok(Counts {
                    startup: r.get::<_, i64>(0)? as usize,
                    scheduled: r.get::<_, i64>(1)? as usize,
                    event: r.get::<_, i64>(2)? as usize,
                    findings: r.get::<_, i64>(3)? as usize,
                })
            },
        )
        .unwrap_or_default()
    }

    /// Wall ms of the last `k` finished scheduled sweeps.
    fn sweep_walls(&mut self, k: usize) -> Vec<f64> {
        let Some(c) = self.conn() else {
            return Vec::new();
        };
        let Ok(mut st) = c.prepare(
            "SELECT started_at, finished_at FROM sweeps
             WHERE kind = 'scheduled' AND finished_at IS NOT NULL ORDER BY id DESC LIMIT ?1",
        ) else {
            return Vec::new();
        };
        let rows = st.query_map(params![k as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        });
        let mut out: Vec<f64> = rows
            .map(|rows| {
                rows.flatten()
                    .filter_map(|(a, b)| {
                        let a = DateTime::parse_from_rfc3339(&a).ok()?;
                        let b = DateTime::parse_from_rfc3339(&b).ok()?;
                        Some((b - a).num_microseconds()? as f64 / 1e3)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.reverse();
        out
    }

    /// A task's first finding: (kind, first_seen_at, kind of the sweep that recorded it).
    fn finding(&mut self, task: &str) -> Result<Option<(String, String, String)>> {
        let Some(c) = self.conn() else {
            return Ok(None);
        };
        let got = c
            .query_row(
                "SELECT f.kind, f.first_seen_at, s.kind FROM findings f JOIN sweeps s ON s.id = f.first_sweep_id
                 WHERE f.task_id = ?1 ORDER BY f.id LIMIT 1",
                params![task],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional();
        match got {
            Ok(v) => Ok(v),
            // Before the daemon's migrations, the tables are missing.
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// One measured daemon run.
#[derive(Default)]
struct Run {
    sweeps: usize,
    /// Daemon CPU over the measured sweeps (schedstat), seconds.
    cpu_s: f64,
    /// The same from /proc/PID/stat ticks.
    ticks_s: f64,
    points: Vec<Point>,
    event_sweeps: usize,
    findings: usize,
    total_cpu_s: f64,
    sweep_wall_ms: f64,
    max_rss_kib: u64,
    /// The largest VmRSS sampled before the measured sweeps: the startup
    /// sweep (every task read, bound and written) and the first ones.
    settle_rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    rss_samples: usize,
    pidfds: (usize, usize),
    load: (String, String),
    stderr: String,
}

struct Point {
    cpu_s: f64,
    wall_ms: f64,
    rss_kib: u64,
}

impl Run {
    /// (min, median, max) of the per-sweep CPU, µs per task.
    fn per_sweep_us(&self, n: usize) -> (f64, f64, f64) {
        if self.points.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let s = Stats::of(
            self.points
                .iter()
                .map(|p| p.cpu_s * 1e6 / n as f64)
                .collect(),
        );
        (s.0, s.1, s.2)
    }
}

/// Start the daemon in `dir` (config and executor already there), let the
/// startup sweep and `settle` scheduled sweeps finish, then measure
/// `sweeps` scheduled sweeps. `during` runs after the window, daemon still
/// up (the floor and monit). Stops the daemon.
fn measure_daemon(
    binary: &Path,
    dir: &Path,
    n: usize,
    sweeps: usize,
    settle: usize,
    interval: Duration,
    during: impl FnOnce() -> Result<()>,
) -> Result<Run> {
    let config = dir.join("foreman.toml");
    let load0 = loadavg();
    let mut daemon = Daemon::start(binary, &config, dir)?;
    let mut meter = CpuMeter::new(daemon.pid);
    let mut log = Log::new(dir.join("foreman.db"));
    let mut run = Run::default();
    let timeout = interval * (settle + sweeps + 4) as u32 + Duration::from_secs(120);
    let t0 = Instant::now();
    // Settle.
    let base = loop {
        daemon.check_alive()?;
        if let Some((rss, ..)) = memory(daemon.pid) {
            run.settle_rss_kib = run.settle_rss_kib.max(rss);
            run.rss_samples += 1;
        }
        let c = log.counts();
        if c.startup >= 1 && c.scheduled >= settle {
            break c;
        }
        ensure!(
            t0.elapsed() < timeout,
            "no startup sweep and {settle} scheduled sweeps within {timeout:?} ({c:?}); stderr:\n{}",
            tail(&daemon.stderr, 10)
        );
        std::thread::sleep(POLL);
    };
    let cpu0 = meter.sample();
    let ticks0 = meter.ticks();
    run.pidfds.0 = pidfds(daemon.pid);
    println!(
        "settled after {:.1} s ({} scheduled sweeps done, {} pidfds held, daemon cpu so far {:.2} s); measuring {sweeps} sweeps",
        t0.elapsed().as_secs_f64(),
        base.scheduled,
        run.pidfds.0,
        cpu0
    );
    let mut last_cpu = cpu0;
    let mut done = base.scheduled;
    let mut last_mem = Instant::now() - Duration::from_secs(1);
    let t1 = Instant::now();
    loop {
        daemon.check_alive()?;
        let cpu = meter.sample();
        if last_mem.elapsed() >= POLL {
            if let Some((rss, ..)) = memory(daemon.pid) {
                run.max_rss_kib = run.max_rss_kib.max(rss);
                run.rss_samples += 1;
            }
            last_mem = Instant::now();
        }
        let c = log.counts();
        if c.scheduled > done {
            let rss = memory(daemon.pid).map_or(0, |m| m.0);
            run.max_rss_kib = run.max_rss_kib.max(rss);
            // Two completions seen in one poll cannot happen at 5 s apart;
            // if they did, the CPU is shared between them.
            let k = c.scheduled - done;
            for _ in 0..k {
                run.points.push(Point {
                    cpu_s: (cpu - last_cpu) / k as f64,
                    wall_ms: 0.0,
                    rss_kib: rss,
                });
            }
            last_cpu = cpu;
            done = c.scheduled;
            if done >= base.scheduled + sweeps {
                break;
            }
        }
        ensure!(
            t1.elapsed() < interval * (sweeps + 3) as u32 + Duration::from_secs(60),
            "only {} of {sweeps} sweeps within the time allowed",
            done - base.scheduled
        );
        std::thread::sleep(POLL);
    }
    let cpu1 = meter.sample();
    run.ticks_s = meter.ticks() - ticks0;
    run.cpu_s = cpu1 - cpu0;
    run.sweeps = done - base.scheduled;
    let walls = log.sweep_walls(run.sweeps);
    for (p, w) in run.points.iter_mut().zip(&walls) {
        p.wall_ms = *w;
    }
    run.sweep_wall_ms = Stats::of(if walls.is_empty() {
        vec![f64::NAN]
    } else {
        walls
    })
    .1;
    run.pidfds.1 = pidfds(daemon.pid);
    if let Some((rss, hwm, anon, file)) = memory(daemon.pid) {
        run.max_rss_kib = run.max_rss_kib.max(rss);
        run.hwm_kib = hwm;
        run.anon_kib = anon;
        run.file_kib = file;
    }
    let c = log.counts();
    run.event_sweeps = c.event;
    run.findings = c.findings;
    println!(
        "{} sweeps: daemon cpu {:.1} ms ({:.2} µs/task/sweep; ticks say {:.0} ms); {} event sweeps, {} findings; VmHWM {:.1} MiB",
        run.sweeps,
        run.cpu_s * 1e3,
        run.cpu_s * 1e6 / (run.sweeps * n) as f64,
        run.ticks_s * 1e3,
        c.event,
        c.findings,
        kib_mib(run.hwm_kib)
    );
    during()?;
    daemon.check_alive()?;
    // The HWM once more, in case the floor and monit ran over a sweep.
    if let Some((_, hwm, ..)) = memory(daemon.pid) {
        run.hwm_kib = run.hwm_kib.max(hwm);
    }
    run.total_cpu_s = daemon.stop()?;
    run.stderr = daemon.complaints();
    run.load = (load0, loadavg());
    Ok(run)
}

struct Steady {
    n: usize,
    run: Run,
    floor_us: Option<f64>,
    monit: Option<Monit>,
}

fn steady(fleet: &Fleet, binary: &Path, sweeps: usize, monit: Option<&Path>) -> Result<Steady> {
    let n = fleet.started.len();
    println!("\n### steady state, N = {n}");
    let dir = tempfile::Builder::new()
        .prefix("foreman-daemon-")
        .tempdir()?;
    write_config(dir.path(), "5s")?;
    let exec = dir.path().join("executor.db");
    write_executor(&exec, &fleet.started, Utc::now())?;
    let mut beat = Heartbeat::start(&exec)?;
    let pids = fleet.pids();
    let mut floor_us = None;
    let mut monit_row = None;
    let run = measure_daemon(
        binary,
        dir.path(),
        n,
        sweeps,
        2,
        Duration::from_secs(5),
        || {
            if let Some(monit) = monit {
                floor_us = Some(floor_cpu(&pids)?);
                monit_row = Some(run_monit(monit, &pids, dir.path())?);
            }
            Ok(())
        },
    )?;
    let beats = beat.stop()?;
    println!("heartbeat thread: {beats} updates");
    Ok(Steady {
        n,
        run,
        floor_us,
        monit: monit_row,
    })
}

fn stale(fleet: &Fleet, binary: &Path, sweeps: usize) -> Result<Run> {
    let n = fleet.started.len();
    println!("\n### stale fleet, N = {n}, {}", binary.display());
    let dir = tempfile::Builder::new()
        .prefix("foreman-daemon-")
        .tempdir()?;
    write_config(dir.path(), "5s")?;
    write_executor(
        &dir.path().join("executor.db"),
        &fleet.started,
        Utc::now() - chrono::Duration::minutes(10),
    )?;
    measure_daemon(
        binary,
        dir.path(),
        n,
        sweeps,
        2,
        Duration::from_secs(5),
        || Ok(()),
    )
}

/// CPU seconds of this thread.
fn thread_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The floor, median of 5, µs per task (this thread's CPU).
fn floor_cpu(pids: &[i32]) -> Result<f64> {
    let mut buf = Vec::with_capacity(4096);
    let mut path = String::with_capacity(32);
    let mut v = Vec::new();
    for _ in 0..5 {
        let c0 = thread_cpu();
        std::hint::black_box(floor(pids, &mut path, &mut buf)?);
        v.push((thread_cpu() - c0) * 1e6 / pids.len() as f64);
    }
    let s = Stats::of(v);
    println!("floor: {:.2} µs/task (min {:.2}, max {:.2})", s.1, s.0, s.2);
    Ok(s.1)
}

struct Monit {
    per_process_us: f64,
    n_ms: f64,
    one_ms: f64,
    marginal_us: f64,
    stderr: String,
}

fn find_monit() -> Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("monit");
        if p.is_file() {
            let v = Command::new(&p).arg("-V").output()?;
            let text = String::from_utf8_lossy(&v.stdout);
            println!(
                "monit: {} ({})",
                p.display(),
                text.lines().next().unwrap_or("?")
            );
            return Ok(p);
        }
    }
    bail!("monit is not on PATH: install it with `apt-get install -y monit` (part 1 compares against it), or run other parts with `--parts 2,3,4`")
}

/// `monit -c RC validate`, 3 times: median CPU seconds, and stderr.
fn monit_validate(monit: &Path, rc: &Path, dir: &Path) -> Result<(f64, String)> {
    let mut v = Vec::new();
    let err_path = dir.join("monit.stderr");
    for _ in 0..3 {
        let child = Command::new(monit)
            .arg("-c")
            .arg(rc)
            .arg("validate")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("starting {}", monit.display()))?;
        v.push(reap(child).context("monit validate")?.cpu_ms() / 1e3);
    }
    let text = std::fs::read_to_string(&err_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let stderr = match lines.first() {
        None => "none".into(),
        Some(l) => format!(
            "{}: {}",
            lines.len(),
            l.chars().take(160).collect::<String>()
        ),
    };
    Ok((Stats::of(v).1, stderr))
}

fn run_monit(monit: &Path, pids: &[i32], dir: &Path) -> Result<Monit> {
    let mdir = dir.join("monit");
    std::fs::create_dir_all(&mdir)?;
    let write_rc = |name: &str, k: usize| -> Result<PathBuf> {
        let mut rc = String::new();
        let _ = writeln!(rc, "# Written by benches/daemon.rs.");
        let _ = writeln!(
            rc,
            "set idfile {}",
            mdir.join(format!("{name}.id")).display()
        );
        let _ = writeln!(
            rc,
            "set statefile {}",
            mdir.join(format!("{name}.state")).display()
        );
        let _ = writeln!(
            rc,
            "set pidfile {}",
            mdir.join(format!("{name}.pid")).display()
        );
        for (i, pid) in pids.iter().take(k).enumerate() {
            let pf = mdir.join(format!("p{i}.pid"));
            std::fs::write(&pf, format!("{pid}\n"))?;
            let _ = writeln!(rc, "check process p{i} with pidfile {}", pf.display());
        }
        let path = mdir.join(format!("{name}.rc"));
        std::fs::write(&path, rc)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    };
    let n = pids.len();
    let rc_n = write_rc("all", n)?;
    let rc_1 = write_rc("one", 1)?;
    let (cpu_n, stderr) = monit_validate(monit, &rc_n, &mdir)?;
    let (cpu_1, _) = monit_validate(monit, &rc_1, &mdir)?;
    let m = Monit {
        per_process_us: cpu_n * 1e6 / n as f64,
        n_ms: cpu_n * 1e3,
        one_ms: cpu_1 * 1e3,
        marginal_us: if n > 1 {
            (cpu_n - cpu_1) * 1e6 / (n - 1) as f64
        } else {
            f64::NAN
        },
        stderr,
    };
    println!(
        "monit validate: {n} checks {:.1} ms cpu ({:.1} µs/process), 1 check {:.1} ms; stderr {}",
        m.n_ms, m.per_process_us, m.one_ms, m.stderr
    );
    Ok(m)
}

struct Latency {
    n: usize,
    kills: usize,
    seen_ms: Vec<f64>,
    first_ms: Vec<f64>,
    sweep_kinds: Vec<String>,
    finding_kinds: Vec<String>,
    missed: usize,
    stderr: String,
}

fn latency(binary: &Path, n: usize, kills: usize) -> Result<Latency> {
    let mut fleet = Fleet::spawn(n)?;
    let dir = tempfile::Builder::new()
        .prefix("foreman-daemon-")
        .tempdir()?;
    write_config(dir.path(), "30s")?;
    let exec = dir.path().join("executor.db");
    write_executor(&exec, &fleet.started, Utc::now())?;
    let mut beat = Heartbeat::start(&exec)?;
    let writer = Connection::open(&exec)?;
    writer.busy_timeout(Duration::from_secs(5))?;
    let mut daemon = Daemon::start(binary, &dir.path().join("foreman.toml"), dir.path())?;
    let mut log = Log::new(dir.path().join("foreman.db"));
    let t0 = Instant::now();
    // Wait for the startup sweep and the pidfds.
    loop {
        daemon.check_alive()?;
        if log.counts().startup >= 1 && pidfds(daemon.pid) >= n {
            break;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(100),
            "no startup sweep with {n} pidfds held within 100 s ({} held, {:?})",
            pidfds(daemon.pid),
            log.counts()
        );
        std::thread::sleep(POLL);
    }
    println!(
        "startup sweep done and {n} pidfds held after {:.1} s; killing {kills} tasks one at a time",
        t0.elapsed().as_secs_f64()
    );
    let mut out = Latency {
        n,
        kills,
        seen_ms: Vec::new(),
        first_ms: Vec::new(),
        sweep_kinds: Vec::new(),
        finding_kinds: Vec::new(),
        missed: 0,
        stderr: String::new(),
    };
    for i in 0..kills {
        let id = task_id(i);
        // The task stops heartbeating when it dies (its row stays RUNNING:
        // the executor has not noticed).
        writer.execute("INSERT INTO bench_dead (id) VALUES (?1)", params![id])?;
        let child = &mut fleet.sleepers.0[i];
        let killed_at = Utc::now();
        let k0 = Instant::now();
        // SAFETY: signalling our own child's process group (it leads one).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait()?;
        loop {
            if let Some((kind, first_seen, sweep_kind)) = log.finding(&id)? {
                let seen = k0.elapsed().as_secs_f64() * 1e3;
                let first = DateTime::parse_from_rfc3339(&first_seen)
                    .with_context(|| format!("first_seen_at {first_seen:?}"))?
                    .with_timezone(&Utc);
                let first_ms = (first - killed_at).num_microseconds().unwrap_or(0) as f64 / 1e3;
                out.seen_ms.push(seen);
                out.first_ms.push(first_ms);
                out.sweep_kinds.push(sweep_kind);
                out.finding_kinds.push(kind);
                break;
            }
            if k0.elapsed() > Duration::from_secs(45) {
                println!("kill {}: no finding for {id} within 45 s", i + 1);
                out.missed += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if (i + 1) % 20 == 0 {
            daemon.check_alive()?;
            let s = stats(&out.seen_ms);
            println!(
                "{} kills: seen − kill median {:.0} ms, worst {:.0} ms",
                i + 1,
                s.1,
                s.2
            );
        }
    }
    daemon.check_alive()?;
    let c = log.counts();
    println!(
        "after the kills: {} event sweeps, {} scheduled, {} findings",
        c.event, c.scheduled, c.findings
    );
    daemon.stop()?;
    beat.stop()?;
    out.stderr = daemon.complaints();
    Ok(out)
}
