//! The sweep benchmark: what one full `foreman::sweep::sweep` costs per
//! RUNNING task, against the floor of reading each task's `/proc/PID/stat`
//! and `/proc/PID/io`, and the peak RSS of the real binary doing one sweep.
//!
//! `cargo build --release && cargo bench --bench sweep [-- N... [--reps R]]`
//! (default N = 1000 10000, R = 9). For each N it starts N real `sleep 3600`
//! processes (each leads its own process group), writes N RUNNING tasks with
//! fresh heartbeats into a real executor SQLite file in a temp directory,
//! and over the same pids measures:
//!
//! 1. the first sweep (binds every identity at first sight, inserts every
//!    observation), reported alone;
//! 2. R steady-state sweeps: wall and process CPU time (getrusage
//!    utime + stime), median (and best) of R, per task;
//! 3. the floor: a bare loop reading `/proc/PID/stat` and `/proc/PID/io` of
//!    every task into a reused buffer, median (and best) of R, per task;
//! 4. the ratio sweep / floor;
//! 5. the peak RSS (`ru_maxrss` from `wait4`) of `target/release/foreman
//!    sweep --config ...` against the same databases (the largest of three
//!    runs), started by a fresh small copy of this bench (see `run_binary`);
//!
//! and, to say where the time and the memory go, each stage of the sweep
//! timed alone (median of R), then once more with a counting allocator: the
//! Rust heap held by the snapshot and the /proc table, the heap peak of one
//! whole `sweep()`, and SQLite's own allocator high-water mark. Each repetition runs a sweep, the floor and a stage pass back to
//! back, so that whatever else the host is doing falls on all three alike.
//! Every process started is killed and reaped at the end, also on error (a
//! Drop guard) and if this bench dies (PR_SET_PDEATHSIG).

// `Stats` is the other benches'.
#[allow(dead_code)]
mod common;

use anyhow::{bail, ensure, Context, Result};
use chrono::{SecondsFormat, Utc};
use common::{check_binary, floor, reap, Limits, Sleepers};
use foreman::activity::{ActivityLog, SweepRecord};
use foreman::config::Config;
use foreman::executor::sqlite::SCHEMA;
use foreman::executor::{self, Executor};
use foreman::judge::{judge, Facts, Judgement};
use foreman::model::{Kind, Mode, SweepKind, Task};
use foreman::probe::{boot_facts, Clocks, Probe, ProcTable};
use foreman::sweep::{sweep, LogAccess, SweepOptions};
use rusqlite::{params, Connection};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Counts the Rust heap while enabled (only in the memory pass: the timed
/// runs pay one relaxed load per allocation). SQLite allocates through
/// libc malloc and is counted by SQLite itself.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};

    static ENABLED: AtomicBool = AtomicBool::new(false);
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    static PEAK: AtomicIsize = AtomicIsize::new(0);

    pub struct Counting;

    fn add(d: isize) {
        if ENABLED.load(Relaxed) {
            let now = LIVE.fetch_add(d, Relaxed) + d;
            PEAK.fetch_max(now, Relaxed);
        }
    }

    // SAFETY: every call is forwarded to System unchanged; only counted.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { System.alloc_zeroed(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(p, l) };
            add(-(l.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() {
                add(new as isize - l.size() as isize);
            }
            q
        }
    }

    /// Start counting from zero. Frees of blocks allocated before this
    /// count negative, so figures are if anything low.
    pub fn start() {
        LIVE.store(0, Relaxed);
        PEAK.store(0, Relaxed);
        ENABLED.store(true, Relaxed);
    }

    pub fn stop() {
        ENABLED.store(false, Relaxed);
    }

    /// Bytes allocated and not freed since `start`.
    pub fn live() -> isize {
        LIVE.load(Relaxed)
    }

    /// The most `live` has been since `start`.
    pub fn peak() -> isize {
        PEAK.load(Relaxed)
    }
}

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// SQLite's own allocator: (in use, high-water since the last call).
fn sqlite_memory(reset: bool) -> (i64, i64) {
    // SAFETY: both only read (and optionally reset) SQLite's counters.
    unsafe {
        (
            rusqlite::ffi::sqlite3_memory_used(),
            rusqlite::ffi::sqlite3_memory_highwater(reset as libc::c_int),
        )
    }
}

const DEFAULT_NS: [usize; 2] = [1000, 10_000];
const DEFAULT_REPS: usize = 9;
const CONFIG: &str = r#"# Written by benches/sweep.rs.
interval = "2m"
max_cpu_pressure = 100.0
# Every task is healthy; shadow makes sure nothing is ever signalled even if
# a verdict were wrong (the bench then fails on the finding).
mode = "shadow"
[executor]
kind = "sqlite"
path = "executor.db"
[activity]
path = "foreman.db"
[droid_types.builder]
progress = ["heartbeat", "cpu", "io"]
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--rss-of") {
        match rss_of(&args[2..]) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("--rss-of: {e:#}");
                std::process::exit(1);
            }
        }
    }
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("sweep bench failed: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let (ns, reps) = common::args(&DEFAULT_NS, DEFAULT_REPS)?;
    let binary = check_binary()?;

    println!("sweep bench: N = {ns:?}, {reps} repetitions each");
    println!("binary: {}", binary.display());
    let mut rows = Vec::new();
    for &n in &ns {
        println!("\n## N = {n}");
        match Limits::read().and_then(|l| l.check(n)) {
            Ok(()) => {}
            Err(e) => {
                println!("N = {n} cannot be reached: {e:#}");
                rows.push(Outcome::Unreached(n, format!("{e:#}")));
                continue;
            }
        }
        let row = bench_one(n, reps, &binary).with_context(|| format!("N = {n}"))?;
        rows.push(Outcome::Done(Box::new(row)));
    }

    println!("\n## Results ({reps} repetitions, medians; per task = total / N)\n");
    println!("| N | first sweep ms | sweep µs/task (wall, cpu) | floor µs/task (wall, cpu) | ratio (wall, cpu) | binary peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        match r {
            Outcome::Done(r) => println!(
                "| {} | {:.1} | {:.1}, {:.1} | {:.1}, {:.1} | {:.2}, {:.2} | {:.1} |",
                r.n,
                r.first.wall_ms(),
                r.sweep.wall_us_per(r.n),
                r.sweep.cpu_us_per(r.n),
                r.floor.wall_us_per(r.n),
                r.floor.cpu_us_per(r.n),
                r.sweep.wall / r.floor.wall,
                r.sweep.cpu / r.floor.cpu,
                r.binary_rss_kib as f64 / 1024.0,
            ),
            Outcome::Unreached(n, why) => println!("| {n} | not reached: {why} | | | | |"),
        }
    }
    println!("\n## Best of {reps} (the fastest run of each, µs/task wall, cpu)\n");
    println!("| N | sweep | floor | ratio (wall, cpu) |");
    println!("|---:|---:|---:|---:|");
    for r in &rows {
        if let Outcome::Done(r) = r {
            println!(
                "| {} | {:.1}, {:.1} | {:.1}, {:.1} | {:.2}, {:.2} |",
                r.n,
                r.sweep_best.wall_us_per(r.n),
                r.sweep_best.cpu_us_per(r.n),
                r.floor_best.wall_us_per(r.n),
                r.floor_best.cpu_us_per(r.n),
                r.sweep_best.wall / r.floor_best.wall,
                r.sweep_best.cpu / r.floor_best.cpu,
            );
        }
    }
    println!("\n## Stages of one sweep (medians, µs/task wall, cpu)\n");
    println!("| N | log reads | snapshot | /proc scan | probe (io) | judge | record | rest | sum of stages vs sweep |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        if let Outcome::Done(r) = r {
            let s = &r.stages;
            let cell = |t: &Sample| format!("{:.1}, {:.1}", t.wall_us_per(r.n), t.cpu_us_per(r.n));
            let sum = s.sum();
            let rest = Sample {
                wall: (r.sweep.wall - sum.wall).max(0.0),
                cpu: (r.sweep.cpu - sum.cpu).max(0.0),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
                r.n,
                cell(&s.log_reads),
                cell(&s.snapshot),
                cell(&s.scan),
                cell(&s.probe),
                cell(&s.judge),
                cell(&s.record),
                cell(&rest),
                100.0 * sum.wall / r.sweep.wall,
            );
        }
    }
    println!("\n## Memory of one sweep (in the bench process; MiB)\n");
    println!("| N | Rust heap held: snapshot | + /proc table | heap peak of one `sweep()` | SQLite high-water (`sweep()`) | bench RSS anon / file / shmem at end |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        if let Outcome::Done(r) = r {
            let m = &r.memory;
            let at = |stage: &str| {
                m.held
                    .iter()
                    .find(|(s, _)| *s == stage)
                    .map_or("?".into(), |(_, b)| format!("{:.1}", mib(*b)))
            };
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} |",
                r.n,
                at("snapshot"),
                at("/proc table"),
                mib(m.sweep_heap_peak),
                mib(m.sweep_sqlite_peak),
                r.rss.0 as f64 / 1024.0,
                r.rss.1 as f64 / 1024.0,
                r.rss.2 as f64 / 1024.0,
            );
        }
    }
    println!(
        "\nsizes (bytes, without heap parts): Task {}, Observation {}, MemberCounters {}, Judgement {}, Evidence {}, Probe {}, Member {}",
        std::mem::size_of::<Task>(),
        std::mem::size_of::<foreman::observation::Observation>(),
        std::mem::size_of::<foreman::observation::MemberCounters>(),
        std::mem::size_of::<Judgement>(),
        std::mem::size_of::<foreman::judge::Evidence>(),
        std::mem::size_of::<Probe>(),
        std::mem::size_of::<foreman::probe::Member>(),
    );
    println!("\n## Other numbers\n");
    for r in &rows {
        if let Outcome::Done(r) = r {
            println!(
                "N = {}: first sweep {:.1} ms wall, {:.1} ms cpu; binary `foreman sweep` {:.1} ms wall (slowest of 3), peak RSS {:.1} MiB; \
                 this bench's VmHWM {:.1} MiB; /proc held {} processes; spawning took {:.1} s",
                r.n,
                r.first.wall_ms(),
                r.first.cpu * 1e3,
                r.binary_wall.as_secs_f64() * 1e3,
                r.binary_rss_kib as f64 / 1024.0,
                r.bench_hwm_kib as f64 / 1024.0,
                r.procs_seen,
                r.spawn_time.as_secs_f64(),
            );
        }
    }
    Ok(())
}

enum Outcome {
    Done(Box<Row>),
    Unreached(usize, String),
}

struct Row {
    n: usize,
    first: Sample,
    sweep: Sample,
    floor: Sample,
    /// The fastest of the R runs: the cost with the least interference.
    sweep_best: Sample,
    floor_best: Sample,
    stages: Stages,
    memory: Memory,
    /// (RssAnon, RssFile, RssShmem) of this bench at the end, KiB.
    rss: (u64, u64, u64),
    /// The largest of three runs.
    binary_rss_kib: i64,
    binary_wall: Duration,
    bench_hwm_kib: u64,
    procs_seen: usize,
    spawn_time: Duration,
}

/// Wall and CPU seconds of one measured run (or a median of several).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
}

impl Sample {
    fn wall_ms(&self) -> f64 {
        self.wall * 1e3
    }
    fn wall_us_per(&self, n: usize) -> f64 {
        self.wall * 1e6 / n as f64
    }
    fn cpu_us_per(&self, n: usize) -> f64 {
        self.cpu * 1e6 / n as f64
    }
    fn best(samples: &[Sample]) -> Sample {
        Sample {
            wall: samples.iter().map(|s| s.wall).fold(f64::INFINITY, f64::min),
            cpu: samples.iter().map(|s| s.cpu).fold(f64::INFINITY, f64::min),
        }
    }

    fn median(samples: &[Sample]) -> Sample {
        Sample {
            wall: median(samples.iter().map(|s| s.wall).collect()),
            cpu: median(samples.iter().map(|s| s.cpu).collect()),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Time `f`: wall and process CPU.
fn measure<T>(f: impl FnOnce() -> Result<T>) -> Result<(Sample, T)> {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let out = f()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    Ok((Sample { wall, cpu }, out))
}

/// Each stage of a sweep timed alone (medians).
#[derive(Default)]
struct Stages {
    log_reads: Sample,
    snapshot: Sample,
    scan: Sample,
    probe: Sample,
    judge: Sample,
    record: Sample,
}

impl Stages {
    fn median(all: &[Stages]) -> Stages {
        let med = |f: fn(&Stages) -> Sample| Sample::median(&all.iter().map(f).collect::<Vec<_>>());
        Stages {
            log_reads: med(|s| s.log_reads),
            snapshot: med(|s| s.snapshot),
            scan: med(|s| s.scan),
            probe: med(|s| s.probe),
            judge: med(|s| s.judge),
            record: med(|s| s.record),
        }
    }

    fn sum(&self) -> Sample {
        let all = [
            self.log_reads,
            self.snapshot,
            self.scan,
            self.probe,
            self.judge,
            self.record,
        ];
        Sample {
            wall: all.iter().map(|s| s.wall).sum(),
            cpu: all.iter().map(|s| s.cpu).sum(),
        }
    }
}

fn bench_one(n: usize, reps: usize, binary: &Path) -> Result<Row> {
    let dir = tempfile::Builder::new()
        .prefix("foreman-bench-")
        .tempdir()?;
    let config_path = dir.path().join("foreman.toml");
    std::fs::write(&config_path, CONFIG)?;
    let db = Connection::open(dir.path().join("executor.db"))?;
    db.execute_batch(SCHEMA)?;
    db.pragma_update(None, "journal_mode", "WAL")?;

    // Start the processes; each task's started_at is just after its fork.
    let mut sleepers = Sleepers(Vec::with_capacity(n));
    let mut started = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        match sleepers.spawn() {
            Ok(pid) => started.push((pid, Utc::now())),
            Err(e) => bail!(
                "N = {n} cannot be reached: starting process {} of {n} failed: {e} \
                 (check `ulimit -u`, kernel.pid_max, kernel.threads-max, the pids cgroup)",
                i + 1
            ),
        }
    }
    let spawn_time = t0.elapsed();
    println!(
        "started {n} `sleep 3600` processes in {:.1} s",
        spawn_time.as_secs_f64()
    );
    {
        let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let heartbeat = ts(Utc::now());
        let tx = db.unchecked_transaction()?;
        {
            let mut ins = tx.prepare(
                "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at, last_progress_at)
                 VALUES (?1, ?2, 'builder', 'RUNNING', ?3, 1, ?4, ?5)",
            )?;
            for (i, (pid, at)) in started.iter().enumerate() {
                ins.execute(params![
                    format!("task-{i:06}"),
                    format!("plan-{:03}", i % 100),
                    pid,
                    ts(*at),
                    heartbeat
                ])?;
            }
        }
        tx.commit()?;
    }
    let pids: Vec<i32> = started.iter().map(|(p, _)| *p).collect();

    let config = Config::load(&config_path)?;
    let executor = executor::open(&config)?;
    let mut log = ActivityLog::open(&config.activity.path)?;
    let one = |log: &mut ActivityLog| -> Result<()> {
        let report = sweep(
            &config,
            executor.as_ref(),
            LogAccess::Write(log),
            SweepKind::Scheduled,
            &SweepOptions::default(),
        )?;
        ensure!(
            report.tasks_checked == n,
            "the sweep checked {} tasks, not {n}",
            report.tasks_checked
        );
        if let Some(f) = report.findings.first() {
            bail!(
                "the sweep found {} findings among healthy tasks (first: {} {}: {}); the numbers would not be of a healthy fleet",
                report.findings.len(),
                f.task_id,
                f.kind,
                f.evidence.get("reason").and_then(|r| r.as_str()).unwrap_or("")
            );
        }
        Ok(())
    };

    // 1. The first sweep: first-sight binding of every process.
    let (first, ()) = measure(|| one(&mut log))?;
    println!(
        "first sweep: {:.1} ms wall, {:.1} ms cpu",
        first.wall_ms(),
        first.cpu * 1e3
    );

    // 2-3. Steady-state sweeps, the floor, and each stage of a sweep alone,
    // interleaved so that whatever else the host does falls on all three.
    let mut sweeps = Vec::with_capacity(reps);
    let mut floors = Vec::with_capacity(reps);
    let mut passes = Vec::with_capacity(reps);
    let mut buf = Vec::with_capacity(4096);
    let mut path = String::with_capacity(32);
    let per = |s: &Sample| {
        format!(
            "{:.1} ms wall, {:.1} ms cpu ({:.1} / {:.1} µs/task)",
            s.wall_ms(),
            s.cpu * 1e3,
            s.wall_us_per(n),
            s.cpu_us_per(n)
        )
    };
    for r in 0..reps {
        let (s, ()) = measure(|| one(&mut log))?;
        let (f, bytes) = measure(|| floor(&pids, &mut path, &mut buf))?;
        std::hint::black_box(bytes);
        passes.push(stage_pass(&config, executor.as_ref(), &mut log, n, None)?);
        println!(
            "rep {}: sweep {}; floor {}; ratio {:.2} wall, {:.2} cpu",
            r + 1,
            per(&s),
            per(&f),
            s.wall / f.wall,
            s.cpu / f.cpu
        );
        sweeps.push(s);
        floors.push(f);
    }
    let stages = Stages::median(&passes);

    // 5. The real binary's peak RSS for one sweep on the same databases.
    let mut binary_rss_kib = 0;
    let mut binary_wall = Duration::ZERO;
    for _ in 0..3 {
        let (rss, wall) = run_binary(binary, &config_path, dir.path())?;
        println!(
            "binary `foreman sweep`: {:.1} ms wall, peak RSS {:.1} MiB",
            wall.as_secs_f64() * 1e3,
            rss as f64 / 1024.0
        );
        binary_rss_kib = binary_rss_kib.max(rss);
        binary_wall = binary_wall.max(wall);
    }

    // Where the memory goes.
    let memory = memory(&config, executor.as_ref(), &mut log, n)?;
    let rss = rss_breakdown();
    let procs_seen = ProcTable::scan()?.len();
    let bench_hwm_kib = vm_hwm_kib().unwrap_or(0);

    drop(sleepers);
    Ok(Row {
        n,
        first,
        sweep: Sample::median(&sweeps),
        floor: Sample::median(&floors),
        sweep_best: Sample::best(&sweeps),
        floor_best: Sample::best(&floors),
        stages,
        memory,
        rss,
        binary_rss_kib,
        binary_wall,
        bench_hwm_kib,
        procs_seen,
        spawn_time,
    })
}

/// Run `foreman sweep --config` and return its peak RSS (KiB) and wall.
///
/// Not as our own child: Linux carries the parent's RSS high-water mark
/// into a child's `ru_maxrss` through fork/vfork and exec, so a child of
/// this bench (tens of MiB with its sleepers) would report the bench's
/// peak, not its own. A fresh copy of this bench (`--rss-of`, a few MiB)
/// starts the binary instead and reports its `ru_maxrss`; the figure is then
/// at least that small process's own peak, which is printed beside it.
fn run_binary(binary: &Path, config: &Path, dir: &Path) -> Result<(i64, Duration)> {
    let out_path = dir.join("binary.stdout");
    let err_path = dir.join("binary.stderr");
    let rss_path = dir.join("binary.rss");
    let t0 = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg("--rss-of")
        .arg(&rss_path)
        .arg(binary)
        .arg("sweep")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    let wall = t0.elapsed();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        bail!(
            "`{} sweep --config {}` failed ({status}):\n{stderr}",
            binary.display(),
            config.display()
        );
    }
    let report = std::fs::read_to_string(&rss_path)?;
    let mut fields = report.split_whitespace().map(|f| f.parse::<i64>());
    let (Some(Ok(rss)), Some(Ok(starter))) = (fields.next(), fields.next()) else {
        bail!("bad report from --rss-of: {report:?}");
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if let Some(line) = stdout.lines().find(|l| !l.trim().is_empty()) {
        println!("binary said: {line}");
    }
    println!(
        "(the process that started it peaked at {:.1} MiB: the RSS figure cannot be below that)",
        starter as f64 / 1024.0
    );
    Ok((rss, wall))
}

/// `--rss-of REPORT BINARY ARGS...`: run BINARY, then write its ru_maxrss
/// and this process's own VmHWM (KiB) to REPORT; exit as it exited.
fn rss_of(args: &[String]) -> Result<i32> {
    let [report, binary, rest @ ..] = args else {
        bail!("usage: --rss-of REPORT BINARY ARGS...");
    };
    let child = Command::new(binary)
        .args(rest)
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let reaped = reap(child)?;
    std::fs::write(
        report,
        format!(
            "{} {}\n",
            reaped.rusage.ru_maxrss,
            vm_hwm_kib().unwrap_or(0)
        ),
    )?;
    Ok(reaped.code_or(1))
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn vm_hwm_kib() -> Option<u64> {
    status_kib("VmHWM")
}

fn rss_breakdown() -> (u64, u64, u64) {
    let k = |key| status_kib(key).unwrap_or(0);
    (k("RssAnon"), k("RssFile"), k("RssShmem"))
}

/// The Rust heap held by the stages whose output `sweep()` keeps to the
/// end (snapshot, /proc table), its peak over one `sweep()`, and SQLite's
/// high-water mark.
#[derive(Debug, Default, Clone)]
struct Memory {
    /// (stage, live heap bytes after it).
    held: Vec<(&'static str, i64)>,
    /// The same for one whole `sweep()` call.
    sweep_heap_peak: i64,
    sweep_sqlite_peak: i64,
}

/// One stage pass counting the Rust heap and SQLite's allocator, then one
/// whole `sweep()` the same way.
fn memory(
    config: &Config,
    executor: &dyn Executor,
    log: &mut ActivityLog,
    n: usize,
) -> Result<Memory> {
    let mut memory = Memory::default();
    sqlite_memory(true);
    heap::start();
    stage_pass(config, executor, log, n, Some(&mut memory))?;
    heap::stop();
    sqlite_memory(true);

    heap::start();
    let report = sweep(
        config,
        executor,
        LogAccess::Write(log),
        SweepKind::Scheduled,
        &SweepOptions::default(),
    );
    memory.sweep_heap_peak = heap::peak() as i64;
    heap::stop();
    memory.sweep_sqlite_peak = sqlite_memory(true).1;
    report?;
    Ok(memory)
}

/// One sweep's stages, each over every task in turn so that each can be
/// timed alone. (`sweep()` runs the same stages over batches of 256 tasks
/// and keeps only findings; this pass holds each stage's output for every
/// task until the next, so its memory is not `sweep()`'s: see `memory`.)
fn stage_pass(
    config: &Config,
    executor: &dyn Executor,
    log: &mut ActivityLog,
    n: usize,
    mut memory: Option<&mut Memory>,
) -> Result<Stages> {
    let mut held = |stage: &'static str| {
        if let Some(m) = memory.as_deref_mut() {
            m.held.push((stage, heap::live() as i64));
        }
    };
    let boot = boot_facts()?;
    let now = Utc::now();
    let (snapshot, snap) = measure(|| executor.snapshot())?;
    held("snapshot");
    let (reads_head, (open, last)) = measure(|| {
        let last = log.last_sweep()?;
        let open = log.open_findings()?;
        Ok((open, last))
    })?;
    let (scan, table) = measure(ProcTable::scan)?;
    held("/proc table");
    let running: Vec<&Task> = snap.running().collect();
    ensure!(
        running.len() == n,
        "{} RUNNING tasks, not {n}",
        running.len()
    );
    let record = SweepRecord {
        kind: SweepKind::Scheduled.as_str(),
        host: config.host.clone(),
        mode: match config.mode {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        },
        started_at: now,
        tasks_seen: n,
        tasks_checked: n,
        error: None,
        deferral: None,
        boot_id: boot.boot_id.clone(),
        clocks: Clocks::now(),
        hang_floor: None,
        observations: Vec::new(),
        findings: Vec::new(),
        closes: Vec::new(),
        alerts: Vec::new(),
    };
    let (begin_t, tx) = measure(|| log.begin(&record))?;
    let (probe, probes) = measure(|| {
        Ok(running
            .iter()
            .map(|t| t.pid.map(|p| table.probe(p)))
            .collect::<Vec<Option<Probe>>>())
    })?;
    let (reads_priors, priors) = measure(|| {
        running
            .iter()
            .map(|t| match t.pid {
                Some(p) => tx.prior(&t.id, t.attempt, p),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let facts = Facts {
        now,
        boot: &boot,
        host: &config.host,
        sweep: SweepKind::Scheduled,
        hang_floor: None,
        future_tolerance: config.future_tolerance,
        pid_max: foreman::probe::pid_max(),
    };
    let (judge_t, judged) = measure(|| {
        Ok(running
            .iter()
            .zip(&probes)
            .zip(&priors)
            .map(|((task, probe), prior)| {
                judge(
                    task,
                    probe.as_ref(),
                    prior.as_ref(),
                    config.policy(&task.droid_type),
                    &facts,
                )
            })
            .collect::<Vec<Judgement>>())
    })?;
    ensure!(
        judged.iter().all(|j| j.kind == Kind::Alive),
        "the stage pass judged a healthy task not alive"
    );
    let (write_t, (id, _)) = measure(|| {
        for j in &judged {
            if let Some(o) = &j.observation {
                tx.observe(o)?;
            }
        }
        tx.commit(&record)
    })?;
    log.finish_sweep(id, Utc::now(), 0, 0)?;
    std::hint::black_box((&open, &last));
    Ok(Stages {
        log_reads: Sample {
            wall: reads_head.wall + reads_priors.wall,
            cpu: reads_head.cpu + reads_priors.cpu,
        },
        snapshot,
        scan,
        probe,
        judge: judge_t,
        record: Sample {
            wall: begin_t.wall + write_t.wall,
            cpu: begin_t.cpu + write_t.cpu,
        },
    })
}
