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

use anyhow::{bail, ensure, Context, Result};
use chrono::{SecondsFormat, Utc};
use foreman::demo::SCHEMA;
use rusqlite::{params, Connection};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime};

const DEFAULT_NS: [usize; 2] = [100, 1000];
const DEFAULT_REPS: usize = 15;
/// Processes left free for everyone else on the host when checking limits.
const HEADROOM: usize = 500;
const TARGET_MS: f64 = 100.0;
const TARGET_N: usize = 1000;
const BINARY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/foreman");

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

/// min, median, max of one series (ms).
struct Stats(f64, f64, f64);

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let med = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats(v[0], med, v[n - 1])
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
    // `cargo bench` passes `--bench`; numbers are task counts.
    let (mut ns, mut reps) = (Vec::new(), DEFAULT_REPS);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reps" {
            let v = args.next().context("--reps needs a number")?;
            reps = v.parse().with_context(|| format!("--reps {v:?}"))?;
        } else if !a.starts_with('-') {
            ns.push(
                a.parse::<usize>()
                    .with_context(|| format!("task count {a:?}"))?,
            );
        }
    }
    if ns.is_empty() {
        ns = DEFAULT_NS.to_vec();
    }
    ensure!(reps > 0, "--reps must be at least 1");
    let binary = check_binary()?;
    println!("twin bench: N = {ns:?}, {reps} repetitions each; binary {BINARY}");

    let mut rows = Vec::new();
    for &n in &ns {
        println!("\n## N = {n}");
        match check_limits(n) {
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
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet waited for; status and ru are writable.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    drop(child); // reaped above; dropping a Child only closes handles
    ensure!(
        got == pid,
        "wait4 on {pid}: {}",
        std::io::Error::last_os_error()
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 * 1e-3;
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(((wall, cpu), code, std::fs::read_to_string(&out_path)?))
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

/// The floor: `/proc/PID/stat` and `/proc/PID/io` of every pid into one
/// reused buffer, as in benches/sweep.rs.
fn floor(pids: &[i32], path: &mut String, buf: &mut Vec<u8>) -> Result<usize> {
    let mut total = 0;
    for pid in pids {
        for file in ["stat", "io"] {
            path.clear();
            let _ = write!(path, "/proc/{pid}/{file}");
            buf.clear();
            File::open(&*path)
                .and_then(|mut f| f.read_to_end(buf))
                .with_context(|| format!("reading {path}"))?;
            total += buf.iter().rposition(|b| *b == b')').unwrap_or(buf.len());
        }
    }
    Ok(total)
}

/// The release binary, which must exist (and should be newer than src/).
fn check_binary() -> Result<PathBuf> {
    let binary = PathBuf::from(BINARY);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .with_context(|| format!("{BINARY} is missing: run `cargo build --release` first"))?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if newest_mtime(&src).is_some_and(|t| t > built) {
        println!("warning: {BINARY} is older than a file in src/ (run `cargo build --release`)");
    }
    Ok(binary)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Can N more processes start? kernel.pid_max, threads-max, `ulimit -u`
/// (not for root) and the pids cgroup, each with HEADROOM to spare.
fn check_limits(n: usize) -> Result<()> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let num = |p: &str| read(p).trim().parse::<u64>().ok();
    // Field 4 of loadavg: runnable/total scheduling entities (threads).
    let threads = read("/proc/loadavg")
        .split_ascii_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1)?.parse::<u64>().ok())
        .context("parsing /proc/loadavg")?;
    // (name, how many threads it allows); pids run from 300 to pid_max - 1.
    let mut limits: Vec<(String, u64)> = Vec::new();
    let mut files = vec![
        "/proc/sys/kernel/pid_max".to_string(),
        "/proc/sys/kernel/threads-max".into(),
    ];
    // The pids.max of this process's cgroup (v1 `pids` or v2).
    for line in read("/proc/self/cgroup").lines() {
        let mut parts = line.splitn(3, ':').skip(1);
        match (parts.next(), parts.next()) {
            (Some(""), Some(path)) => files.push(format!("/sys/fs/cgroup{path}/pids.max")),
            (Some(c), Some(path)) if c.split(',').any(|c| c == "pids") => {
                files.push(format!("/sys/fs/cgroup/pids{path}/pids.max"))
            }
            _ => {}
        }
    }
    for f in files {
        if let Some(max) = num(&f) {
            let max = if f.ends_with("pid_max") {
                max.saturating_sub(300)
            } else {
                max
            };
            limits.push((f, max));
        }
    }
    // SAFETY: an all-zero rlimit is valid; getrlimit only writes into it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: rl is writable; getuid has no preconditions.
    if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) == 0 && libc::getuid() != 0 } {
        limits.push(("`ulimit -u`".into(), rl.rlim_cur));
    }
    let show = |l: &[(String, u64)]| {
        let v: Vec<String> = l.iter().map(|(f, m)| format!("{f} {m}")).collect();
        v.join(", ")
    };
    println!("limits: {}; {threads} threads exist", show(&limits));
    let want = threads + (n + HEADROOM) as u64;
    limits.retain(|(_, max)| want > *max);
    ensure!(
        limits.is_empty(),
        "{}: {threads} threads exist, {n} + {HEADROOM} headroom wanted",
        show(&limits)
    );
    Ok(())
}

/// The sleeping processes; all are killed and reaped on drop.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &self.0 {
            // SAFETY: signalling our own child's process group (it leads one).
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

impl Sleepers {
    fn spawn(&mut self) -> Result<i32> {
        let mut cmd = Command::new("sleep");
        cmd.arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; the sleeper dies with this
        // bench even if the bench is killed before its Drop guard runs.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        self.0.push(child);
        Ok(pid)
    }
}
