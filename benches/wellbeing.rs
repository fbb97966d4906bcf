//! The wellbeing benchmark: what one `foreman wellbeing` run costs at scale,
//! end to end, as the daemon's daily check-up or an operator runs it (the
//! real release binary, process start to exit). The daemon runs the
//! check-up on the thread that sweeps, so its duration is how long one sweep
//! a day is delayed. No target is set.
//!
//! `cargo build --release && cargo bench --bench wellbeing [-- N... [--reps R]]`
//! (default N = 10000 100000, R = 9). For each N it writes a real executor
//! SQLite file in a temp directory (the contract's `tasks` table with the
//! optional `created_at` column, and a `droid_types` table): N finished
//! tasks spread over the last 23 hours (90% SUCCESS, 10% FAILED, over five
//! droid types and N/20 plans), N/100 PENDING tasks filed within the last
//! 30 minutes, and 8 (`RUNNING`) RUNNING tasks whose pids are real
//! `sleep 3600` processes (each leads its own process group, each dies with
//! the bench).
//! It runs `foreman sweep` once, so the activity log exists, is migrated and
//! holds a sweep, then:
//!
//! 1. R times `foreman --config … wellbeing --dry-run --json`: wall (spawn
//!    to `wait4`), CPU (user + sys from `wait4`) and peak RSS (`ru_maxrss`);
//!    each must exit 0 with `"outcome": "healthy"` and every task read;
//! 2. once `foreman --config … wellbeing --json`, which also records the
//!    run and its checks in the activity log (it must report `recorded`).
//!
//! Every run is started by a fresh small copy of this bench (`--rss-of`),
//! for the reason benches/sweep.rs gives in `run_binary`: Linux carries the
//! parent's RSS high-water mark into a vforked child's `ru_maxrss`. The
//! sweep is run again, untimed, before a repetition when the last one is
//! more than `RESWEEP` old, so that the log never shows a gap in sweeping
//! (which would be an issue) however slow the host.

// `floor` and `Limits` are the sweep benches'.
#[allow(dead_code)]
mod common;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use common::{check_binary, reap, Sleepers, Stats, BINARY};
use foreman::executor::sqlite::SCHEMA;
use rusqlite::{params, Connection};
use serde_json::Value;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_NS: [usize; 2] = [10_000, 100_000];
const DEFAULT_REPS: usize = 9;
/// RUNNING tasks, each a real sleeping process.
const RUNNING: usize = 8;
const DROID_TYPES: [&str; 5] = ["builder", "tester", "linter", "packager", "deployer"];
/// Finished tasks end between a minute and this long ago: all stay inside
/// the 24 h window however long the bench runs.
const SPREAD: Duration = Duration::from_secs(23 * 3600);
/// Sweep again (untimed) before a repetition when the last sweep is older:
/// a gap over twice `interval` (4 min) would be an issue.
const RESWEEP: Duration = Duration::from_secs(90);

const CONFIG: &str = r#"# Written by benches/wellbeing.rs.
interval = "2m"
max_cpu_pressure = 100.0
mode = "shadow"
[executor]
kind = "sqlite"
path = "executor.db"
[activity]
path = "foreman.db"
# Every limit at its default: a 24 h window.
[wellbeing]
[droid_types.builder]
progress = ["heartbeat", "cpu", "io"]
[droid_types.tester]
progress = ["heartbeat", "cpu", "io"]
[droid_types.linter]
progress = ["heartbeat", "cpu", "io"]
[droid_types.packager]
progress = ["heartbeat", "cpu", "io"]
[droid_types.deployer]
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
    if let Err(e) = run() {
        eprintln!("wellbeing bench failed: {e:#}");
        std::process::exit(1);
    }
}

/// One run of the binary: wall ms, CPU ms, peak RSS KiB, stdout bytes.
struct Run {
    wall: f64,
    cpu: f64,
    rss_kib: i64,
    out_bytes: usize,
}

struct Row {
    n: usize,
    tasks: usize,
    checks: usize,
    dry_wall: Stats,
    dry_cpu: Stats,
    dry_rss: Stats,
    out_bytes: usize,
    recorded: Run,
    executor_mib: f64,
    sweep_ms: f64,
    starter_mib: f64,
}

fn run() -> Result<()> {
    let (ns, reps) = common::args(&DEFAULT_NS, DEFAULT_REPS)?;
    let binary = check_binary()?;
    println!(
        "wellbeing bench: N = {ns:?} finished tasks, {reps} repetitions each; binary {BINARY}"
    );

    let mut rows = Vec::new();
    for &n in &ns {
        println!("\n## N = {n}");
        rows.push(bench_one(n, reps, &binary).with_context(|| format!("N = {n}"))?);
    }

    println!("\n## Results ({reps} dry runs each; min / median / max)\n");
    println!("| N finished | tasks read | checks | `wellbeing --dry-run --json` wall ms | its CPU ms (user+sys) | its peak RSS MiB | recording run (no --dry-run): wall ms, peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let s = |s: &Stats, p: usize| format!("{:.p$} / {:.p$} / {:.p$}", s.0, s.1, s.2);
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1}, {:.1} |",
            r.n,
            r.tasks,
            r.checks,
            s(&r.dry_wall, 1),
            s(&r.dry_cpu, 1),
            s(&r.dry_rss, 1),
            r.recorded.wall,
            r.recorded.rss_kib as f64 / 1024.0,
        );
    }
    println!("\n## Other numbers\n");
    for r in &rows {
        println!(
            "N = {}: executor file {:.1} MiB; `foreman sweep` before {:.1} ms; JSON output {} bytes (dry), {} bytes (recording); \
             recording run {:.1} ms CPU; the process that started each run peaked at {:.1} MiB (no RSS figure can be below that)",
            r.n,
            r.executor_mib,
            r.sweep_ms,
            r.out_bytes,
            r.recorded.out_bytes,
            r.recorded.cpu,
            r.starter_mib,
        );
    }
    if let Some(r) = rows.iter().max_by_key(|r| r.n) {
        println!(
            "\nthe daemon: its daily check-up records, so at {} finished tasks the sweep due during it waits up to about {:.0} ms \
             (the recording run; dry runs: median {:.0} ms; both include starting the process)",
            r.n, r.recorded.wall, r.dry_wall.1
        );
    }
    Ok(())
}

/// A small deterministic generator (splitmix64): the same fleet every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn secs(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1e3) as i64)
}

/// Write the executor's tasks; returns how many rows.
fn fill(db: &Connection, n: usize, running: &[(i32, DateTime<Utc>)]) -> Result<usize> {
    db.execute_batch(SCHEMA)?;
    db.execute_batch(
        "ALTER TABLE tasks ADD COLUMN created_at TEXT;
         CREATE TABLE droid_types (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL);",
    )?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    let mut rng = Rng(n as u64);
    let plans = (n / 20).max(1) as u64;
    let now = Utc::now();
    let tx = db.unchecked_transaction()?;
    let mut rows = 0;
    {
        let mut types = tx.prepare("INSERT INTO droid_types (name, enabled) VALUES (?1, 1)")?;
        for t in DROID_TYPES {
            types.execute([t])?;
        }
        let mut ins = tx.prepare(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at,
                                last_progress_at, finished_at, error, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        // Finished: ends spread evenly from a minute to SPREAD ago, runs of
        // 30 s to 30 min, filed up to 5 min before they started.
        let span = SPREAD.as_secs_f64() - 60.0;
        for i in 0..n {
            let finished = now - secs(60.0 + span * (i as f64 + rng.unit()) / n as f64);
            let started = finished - secs(30.0 + rng.unit() * 1770.0);
            let created = started - secs(rng.unit() * 300.0);
            let failed = rng.below(10) == 0;
            let (state, error) = if failed {
                (
                    "FAILED",
                    Some(format!(
                        "exit status 1: step {} of the plan failed",
                        rng.below(12) + 1
                    )),
                )
            } else {
                ("SUCCESS", None)
            };
            ins.execute(params![
                format!("task-{i:07}"),
                format!("plan-{:05}", rng.below(plans)),
                DROID_TYPES[i % DROID_TYPES.len()],
                state,
                1000 + rng.below(30_000) as i64,
                1 + (rng.below(20) == 0) as i64,
                ts(started),
                ts(finished),
                ts(finished),
                error,
                ts(created),
            ])?;
            rows += 1;
        }
        // PENDING: filed within the last 30 min (under dispatch_timeout and
        // plan_stall_timeout, so nothing is late or stuck).
        for i in 0..n / 100 {
            let created = now - secs(rng.unit() * 1800.0);
            ins.execute(params![
                format!("pending-{i:06}"),
                format!("plan-{:05}", rng.below(plans)),
                DROID_TYPES[i % DROID_TYPES.len()],
                "PENDING",
                None::<i64>,
                1,
                None::<String>,
                None::<String>,
                None::<String>,
                None::<String>,
                ts(created),
            ])?;
            rows += 1;
        }
        // RUNNING: real processes, started_at just after each fork, a fresh
        // heartbeat.
        let heartbeat = ts(Utc::now());
        for (i, (pid, at)) in running.iter().enumerate() {
            ins.execute(params![
                format!("running-{i:03}"),
                format!("plan-{:05}", rng.below(plans)),
                DROID_TYPES[i % DROID_TYPES.len()],
                "RUNNING",
                pid,
                1,
                ts(*at),
                heartbeat,
                None::<String>,
                None::<String>,
                ts(*at - secs(5.0)),
            ])?;
            rows += 1;
        }
    }
    tx.commit()?;
    Ok(rows)
}

fn bench_one(n: usize, reps: usize, binary: &Path) -> Result<Row> {
    let dir = tempfile::Builder::new()
        .prefix("foreman-wellbeing-")
        .tempdir()?;
    let config = dir.path().join("foreman.toml");
    std::fs::write(&config, CONFIG)?;
    let db_path = dir.path().join("executor.db");

    let mut sleepers = Sleepers(Vec::with_capacity(RUNNING));
    let mut running = Vec::with_capacity(RUNNING);
    for i in 0..RUNNING {
        let pid = sleepers
            .spawn()
            .with_context(|| format!("starting process {} of {RUNNING}", i + 1))?;
        running.push((pid, Utc::now()));
    }
    let t0 = Instant::now();
    let db = Connection::open(&db_path)?;
    let tasks = fill(&db, n, &running)?;
    // Checkpoint the WAL into the file, as an executor at rest would have.
    db.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    drop(db);
    let executor_mib = std::fs::metadata(&db_path)?.len() as f64 / (1024.0 * 1024.0);
    println!(
        "wrote {tasks} tasks ({n} finished, {} PENDING, {RUNNING} RUNNING) in {:.1} s; executor file {executor_mib:.1} MiB",
        n / 100,
        t0.elapsed().as_secs_f64()
    );

    // The daemon's sweep first: the activity log exists, migrated, with a
    // sweep in the window.
    let mut sweep_ms = sweep(binary, &config)?;
    let mut last_sweep = Instant::now();
    println!("`foreman sweep`: {sweep_ms:.1} ms");

    let (mut walls, mut cpus, mut rsss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut out_bytes, mut checks, mut starter_mib) = (0, 0, 0.0f64);
    for r in 0..reps {
        if last_sweep.elapsed() > RESWEEP {
            sweep_ms = sweep(binary, &config)?;
            last_sweep = Instant::now();
            println!("(swept again, untimed: {sweep_ms:.1} ms)");
        }
        let (run, starter, out) = run_binary(
            binary,
            &["wellbeing", "--dry-run", "--json"],
            &config,
            dir.path(),
        )?;
        let doc = check_json(&out, tasks, "dry_run")?;
        checks = doc["checks"].as_array().map_or(0, Vec::len);
        println!(
            "rep {}: {:.1} ms wall, {:.1} ms cpu, peak RSS {:.1} MiB, {checks} checks",
            r + 1,
            run.wall,
            run.cpu,
            run.rss_kib as f64 / 1024.0
        );
        starter_mib = starter_mib.max(starter as f64 / 1024.0);
        out_bytes = run.out_bytes;
        walls.push(run.wall);
        cpus.push(run.cpu);
        rsss.push(run.rss_kib as f64 / 1024.0);
    }

    // One recording run: writes the run and its checks.
    if last_sweep.elapsed() > RESWEEP {
        sweep(binary, &config)?;
    }
    let (recorded, starter, out) =
        run_binary(binary, &["wellbeing", "--json"], &config, dir.path())?;
    check_json(&out, tasks, "recorded")?;
    starter_mib = starter_mib.max(starter as f64 / 1024.0);
    println!(
        "recording run: {:.1} ms wall, {:.1} ms cpu, peak RSS {:.1} MiB",
        recorded.wall,
        recorded.cpu,
        recorded.rss_kib as f64 / 1024.0
    );
    drop(sleepers);
    Ok(Row {
        n,
        tasks,
        checks,
        dry_wall: Stats::of(walls),
        dry_cpu: Stats::of(cpus),
        dry_rss: Stats::of(rsss),
        out_bytes,
        recorded,
        executor_mib,
        sweep_ms,
        starter_mib,
    })
}

/// `foreman sweep --json`: must exit 0 with every RUNNING task checked and
/// no finding. Returns its wall ms.
fn sweep(binary: &Path, config: &Path) -> Result<f64> {
    let t0 = Instant::now();
    let out = Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(["sweep", "--json"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", binary.display()))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`foreman sweep` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).context("sweep's stdout is not JSON")?;
    let found = v["findings"].as_array().map_or(0, Vec::len);
    ensure!(
        v["tasks_checked"] == RUNNING && found == 0,
        "`foreman sweep` checked {} tasks with {found} findings, expected {RUNNING} and none:\n{stdout}",
        v["tasks_checked"]
    );
    Ok(ms)
}

/// The run must be healthy, have read every task, and be filed as `filed`
/// (`dry_run` or `recorded`).
fn check_json(out: &str, tasks: usize, filed: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(out).context("wellbeing's stdout is not JSON")?;
    let checks = v["checks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let read = checks
        .iter()
        .find(|c| c["check"] == "executor")
        .and_then(|c| c["evidence"]["tasks"].as_u64());
    let issues: Vec<&str> = checks
        .iter()
        .filter(|c| c["status"] == "issue")
        .filter_map(|c| c["summary"].as_str())
        .collect();
    ensure!(
        issues.is_empty() && v["outcome"] == "healthy",
        "wellbeing said {} with issues {issues:?}; the figures would not be of a healthy fleet",
        v["outcome"]
    );
    ensure!(
        read == Some(tasks as u64),
        "wellbeing read {read:?} tasks, not {tasks}"
    );
    ensure!(
        v["filed"]["result"] == filed,
        "wellbeing filed {}, expected {filed}",
        v["filed"]
    );
    Ok(v)
}

/// Run `BINARY --config CONFIG ARGS...` through a fresh copy of this bench
/// (`--rss-of`, see the top of this file): the run, the starter's own peak
/// (KiB), stdout. It must exit 0, or 1 with a report.
fn run_binary(
    binary: &Path,
    args: &[&str],
    config: &Path,
    dir: &Path,
) -> Result<(Run, i64, String)> {
    let out_path = dir.join("binary.stdout");
    let err_path = dir.join("binary.stderr");
    let report_path = dir.join("binary.rss");
    let status = Command::new(std::env::current_exe()?)
        .arg("--rss-of")
        .arg(&report_path)
        .arg(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = std::fs::read_to_string(&out_path)?;
    // Exit 1 with a JSON report is a run that found issues: the caller's
    // check says which. Anything else is a failure.
    let reported = status.code() == Some(1) && serde_json::from_str::<Value>(&stdout).is_ok();
    if !status.success() && !reported {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        bail!(
            "`foreman --config {} {}` failed ({status}):\n{stdout}\n{stderr}",
            config.display(),
            args.join(" ")
        );
    }
    let report = std::fs::read_to_string(&report_path)?;
    let f: Vec<f64> = report
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad report from --rss-of: {report:?}"))?;
    let [rss, starter, wall, cpu] = f[..] else {
        bail!("bad report from --rss-of: {report:?}");
    };
    let run = Run {
        wall,
        cpu,
        rss_kib: rss as i64,
        out_bytes: stdout.len(),
    };
    Ok((run, starter as i64, stdout))
}

/// `--rss-of REPORT BINARY ARGS...`: run BINARY, then write its ru_maxrss,
/// this process's own VmHWM (KiB), its wall (spawn to wait4) and its user +
/// sys time (ms) to REPORT; exit as it exited.
fn rss_of(args: &[String]) -> Result<i32> {
    let [report, binary, rest @ ..] = args else {
        bail!("usage: --rss-of REPORT BINARY ARGS...");
    };
    let t0 = Instant::now();
    let child = Command::new(binary)
        .args(rest)
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let reaped = reap(child)?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let cpu = reaped.cpu_ms();
    std::fs::write(
        report,
        format!(
            "{} {} {wall:.3} {cpu:.3}\n",
            reaped.rusage.ru_maxrss,
            vm_hwm_kib().unwrap_or(0)
        ),
    )?;
    Ok(reaped.code_or(1))
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}
