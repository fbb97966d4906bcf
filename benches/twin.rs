//! The twin benchmark: how long `foreman twin --json` takes, end to end, as
//! an operator or a monitoring system runs it (process start to exit, wall
//! clock), beside the floor of reading each task's `/proc/PID/stat` and
//! `/proc/PID/io` in-process. Target (from the issue): ≤ 100 ms at 1,000
//! RUNNING tasks.
//!
//! `cargo build --release && cargo bench --bench twin [-- N... [--reps R]]`
//! (default N = 100 1000, R = 15). For each N it starts N real `sleep 3600`
//! processes (each leads its own process group, each dies with the bench),
//! writes N RUNNING tasks with fresh heartbeats into a real executor SQLite
//! file, runs `foreman sweep` once (so the activity log holds the daemon's
//! observations, as in production), then R times: `foreman twin --json
//! --config ...` (which must exit 0, state OK, N tasks), and the floor.
//! The setup is benches/sweep.rs's, cut down.

#[allow(dead_code)]
mod common;

use anyhow::{bail, ensure, Context, Result};
use chrono::{SecondsFormat, Utc};
use common::{check_binary, floor, reap, Limits, Sleepers, Stats, BINARY};
use foreman::executor::sqlite::SCHEMA;
use rusqlite::{params, Connection};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const DEFAULT_NS: [usize; 2] = [100, 1000];
const DEFAULT_REPS: usize = 15;
const TARGET_MS: f64 = 100.0;
const TARGET_N: usize = 1000;

const CONFIG: &str = r#"# Written by benches/twin.rs.
interval = "2m"
max_cpu_pressure = 100.0
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
    if let Err(e) = run() {
        eprintln!("twin bench failed: {e:#}");
        std::process::exit(1);
    }
}

struct Row {
    n: usize,
    twin: Stats,
    /// utime + stime of the twin process (ms).
    twin_cpu: Stats,
    floor: Stats,
    sweep_ms: f64,
}

fn run() -> Result<()> {
    let (ns, reps) = common::args(&DEFAULT_NS, DEFAULT_REPS)?;
    let binary = check_binary()?;
    println!("twin bench: N = {ns:?}, {reps} repetitions each; binary {BINARY}");

    let mut rows = Vec::new();
    for &n in &ns {
        println!("\n## N = {n}");
        match Limits::read().and_then(|l| l.check(n)) {
            Ok(()) => rows.push(Ok(
                bench_one(n, reps, &binary).with_context(|| format!("N = {n}"))?
            )),
            Err(e) => {
                println!("N = {n} not reached: {e:#}");
                rows.push(Err(format!("| {n} | not reached: {e:#} | | | |")));
            }
        }
    }

    println!("\n## Results ({reps} repetitions; ms, min / median / max)\n");
    println!("| N | `foreman twin --json` wall | its CPU (user+sys) | floor: /proc stat+io of N pids | `foreman sweep` before |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        let r = match r {
            Ok(r) => r,
            Err(line) => {
                println!("{line}");
                continue;
            }
        };
        let s = |s: &Stats| format!("{:.1} / {:.1} / {:.1}", s.0, s.1, s.2);
        println!(
            "| {} | {} | {} | {} | {:.1} |",
            r.n,
            s(&r.twin),
            s(&r.twin_cpu),
            s(&r.floor),
            r.sweep_ms
        );
    }
    if let Some(r) = rows.iter().flatten().find(|r| r.n == TARGET_N) {
        let met = r.twin.1 <= TARGET_MS;
        println!(
            "\ntarget: twin ≤ {TARGET_MS} ms at {TARGET_N} RUNNING tasks: median {:.1} ms → {}",
            r.twin.1,
            if met { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

fn bench_one(n: usize, reps: usize, binary: &Path) -> Result<Row> {
    let dir = tempfile::Builder::new().prefix("foreman-twin-").tempdir()?;
    let config = dir.path().join("foreman.toml");
    std::fs::write(&config, CONFIG)?;
    let db = Connection::open(dir.path().join("executor.db"))?;
    db.execute_batch(SCHEMA)?;
    db.pragma_update(None, "journal_mode", "WAL")?;

    let mut sleepers = Sleepers(Vec::with_capacity(n));
    let mut started = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let pid = sleepers
            .spawn()
            .with_context(|| format!("starting process {} of {n}", i + 1))?;
        started.push((pid, Utc::now()));
    }
    println!(
        "started {n} `sleep 3600` in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let heartbeat = ts(Utc::now());
    let tx = db.unchecked_transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at, last_progress_at)
             VALUES (?1, ?2, 'builder', 'RUNNING', ?3, 1, ?4, ?5)",
        )?;
        for (i, (pid, at)) in started.iter().enumerate() {
            let (id, plan) = (format!("task-{i:06}"), format!("plan-{:03}", i % 100));
            ins.execute(params![id, plan, pid, ts(*at), heartbeat])?;
        }
    }
    tx.commit()?;
    let pids: Vec<i32> = started.iter().map(|(p, _)| *p).collect();

    // The daemon's sweep first, as in production.
    let (sweep, code, out) = run_timed(binary, &["sweep", "--config"], &config, dir.path())?;
    ensure!(code == 0, "`foreman sweep` exited {code}:\n{out}");
    let sweep_ms = sweep.0;
    println!("`foreman sweep`: {sweep_ms:.1} ms");

    let (mut twin, mut twin_cpu, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    let (mut path, mut buf) = (String::with_capacity(32), Vec::with_capacity(4096));
    let args = ["twin", "--json", "--config"];
    for r in 0..reps {
        let ((wall, cpu), code, out) = run_timed(binary, &args, &config, dir.path())?;
        if code != 0 {
            println!("{out}");
            bail!(
                "`foreman twin --json` exited {code} (expected 0, OK) on rep {}",
                r + 1
            );
        }
        check_json(&out, n)?;
        let t = Instant::now();
        std::hint::black_box(floor(&pids, &mut path, &mut buf)?);
        let f = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "rep {}: twin {wall:.1} ms wall, {cpu:.1} ms cpu; floor {f:.1} ms",
            r + 1
        );
        twin.push(wall);
        twin_cpu.push(cpu);
        floors.push(f);
    }
    drop(sleepers);
    Ok(Row {
        n,
        twin: Stats::of(twin),
        twin_cpu: Stats::of(twin_cpu),
        floor: Stats::of(floors),
        sweep_ms,
    })
}

/// Run `BINARY ARGS... CONFIG` as our child, stdout to a file: (wall ms,
/// user+sys ms from wait4), the exit code, stdout.
fn run_timed(
    bin: &Path,
    args: &[&str],
    config: &Path,
    dir: &Path,
) -> Result<((f64, f64), i32, String)> {
    let out_path = dir.join("out");
    let t0 = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let reaped = reap(child)?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    Ok((
        (wall, reaped.cpu_ms()),
        reaped.code_or(-1),
        std::fs::read_to_string(&out_path)?,
    ))
}

/// The JSON must say OK and list every task, all alive.
fn check_json(out: &str, n: usize) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(out).context("twin's stdout is not JSON")?;
    let executing = v["executing"].as_array().map_or(0, Vec::len);
    let alive = v["executing"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|e| e["verdict"] == "alive").count());
    ensure!(
        v["state"] == "OK" && executing == n && alive == n,
        "twin said state {}, {executing} executing ({alive} alive), expected OK and {n}:\n{out}",
        v["state"]
    );
    Ok(())
}
