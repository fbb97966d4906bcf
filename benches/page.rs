//! The status page benchmark (issue 19): what `GET /` costs the daemon, on
//! a fleet and an activity log with a day of history, beside `GET /twin`
//! (the same cached read, answered as JSON) and `foreman twin --json` (the
//! snapshot alone, in its own process). The issue asks that the page be
//! cheap: it reads what /twin and /plans read, under the same bounds and
//! caching, and a page view never makes a sweep.
//!
//! `cargo build --release && cargo bench --bench page [-- N... [--reps R]]`
//! (default N = 100 1000, R = 15). For each N it starts N real `sleep 3600`
//! processes and writes N RUNNING tasks with fresh heartbeats into a real
//! executor SQLite file (as benches/twin.rs does), runs `foreman sweep` once
//! (which creates the activity log), then writes a day of history into the
//! log with plain SQL: 10,000 findings spread over the last 24 h, across 5
//! droid types and 7 kinds. It starts `foreman run` (interval 20m, so the
//! startup sweep is the only one; `[http] listen = "127.0.0.1:0"`, the
//! address read from its log), waits for the startup sweep, then R times:
//!
//! 1. a cold page: over 1 s after the last read (`SCRAPE_FRESH`), `GET /`,
//!    wall clock of the request and the daemon's CPU across it: the sum of
//!    its threads' `/proc/PID/task/TID/schedstat` run time (ns, per view),
//!    and utime + stime of `/proc/PID/stat` (clock ticks of 10 ms, so
//!    reported as the mean over the R views);
//! 2. 50 warm pages: `GET /` at once after, within the second (the cache);
//! 3. a cold `/twin`: over 1 s later, `GET /twin`, wall and daemon CPU;
//! 4. `foreman twin --json`, wall and CPU of that process.
//!
//! Every answer must be 200; the page must list min(N, 200) tasks
//! (`data-task=`) and the 50 latest findings, `/twin` N tasks. Each request
//! is one HTTP/1.1 connection (`Connection: close`), by hand over TcpStream.

#[allow(dead_code)]
mod common;

use anyhow::{ensure, Context, Result};
use chrono::{Duration as Span, SecondsFormat, Utc};
use common::{check_binary, newest_mtime, reap, Daemon, Limits, Sleepers, Stats};
use foreman::executor::sqlite::SCHEMA;
use regex::Regex;
use rusqlite::{params, Connection};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_NS: [usize; 2] = [100, 1000];
const DEFAULT_REPS: usize = 15;
/// Findings of the day of history.
const HISTORY: usize = 10_000;
const TYPES: [&str; 5] = ["builder", "tester", "indexer", "deployer", "crawler"];
const KINDS: [&str; 7] = [
    "dead",
    "hung",
    "zombie",
    "pid_reused",
    "timed_out",
    "orphan",
    "unverifiable",
];
/// Pages read within the second after a cold one.
const WARM: usize = 50;
/// The page's cap on listed RUNNING tasks (`page::MAX_EXECUTING_ROWS`).
const MAX_ROWS: usize = 200;
/// The page's latest findings (`status::LATEST`).
const LATEST: usize = 50;
/// Over `SCRAPE_FRESH` (1 s): the next read is a new one.
const EXPIRE: Duration = Duration::from_millis(1100);

const CONFIG: &str = r#"# Written by benches/page.rs.
interval = "20m"
max_cpu_pressure = 100.0
mode = "shadow"
[executor]
kind = "sqlite"
path = "executor.db"
[activity]
path = "foreman.db"
[http]
listen = "127.0.0.1:0"
[droid_types.builder]
progress = ["heartbeat", "cpu", "io"]
[droid_types.tester]
[droid_types.indexer]
[droid_types.deployer]
[droid_types.crawler]
"#;

fn main() {
    if let Err(e) = run() {
        eprintln!("page bench failed: {e:#}");
        std::process::exit(1);
    }
}

struct Row {
    n: usize,
    /// Cold `GET /`: wall ms, the daemon's CPU ms (schedstat).
    page: Stats,
    page_cpu: Stats,
    /// Mean daemon CPU ms per cold page from `/proc/PID/stat` (all ticks /
    /// R: one reading is in 10 ms ticks).
    page_cpu_mean: f64,
    /// Warm `GET /`, all R × 50: wall ms.
    warm: Stats,
    twin: Stats,
    twin_cpu: Stats,
    twin_cpu_mean: f64,
    /// `foreman twin --json`: wall ms, its CPU ms.
    cli: Stats,
    cli_cpu: Stats,
    bytes: usize,
    twin_bytes: usize,
    /// The day's count for the chart alone (`status::chart::timeline`,
    /// in-process on the same log): a page read keeps it for 30 s, so the
    /// cold pages above pay it only when it was older.
    chart: Stats,
}

fn run() -> Result<()> {
    let (ns, reps) = common::args(&DEFAULT_NS, DEFAULT_REPS)?;
    let binary = binary()?;
    println!(
        "page bench: N = {ns:?}, {reps} repetitions each, {HISTORY} findings of history; binary {}",
        binary.display()
    );

    let mut rows = Vec::new();
    for &n in &ns {
        println!("\n## N = {n}");
        match Limits::read().and_then(|l| l.check(n)) {
            Ok(()) => rows.push(Ok(
                bench_one(n, reps, &binary).with_context(|| format!("N = {n}"))?
            )),
            Err(e) => {
                println!("N = {n} not reached: {e:#}");
                rows.push(Err(format!("| {n} | not reached: {e:#} | | | | | |")));
            }
        }
    }

    println!("\n## Results ({reps} repetitions; ms, min / median / max)\n");
    println!("| N | cold `GET /` wall | daemon CPU per cold page: schedstat (/proc/PID/stat mean) | warm `GET /` wall, all {WARM} × R | cold `GET /twin` wall | daemon CPU per cold /twin: schedstat (stat mean) | `foreman twin --json` wall / CPU (median) | page / twin bytes | the day's count alone |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let r = match r {
            Ok(r) => r,
            Err(line) => {
                println!("{line}");
                continue;
            }
        };
        let s = |s: &Stats| format!("{:.1} / {:.1} / {:.1}", s.0, s.1, s.2);
        let w = &r.warm;
        println!(
            "| {} | {} | {} ({:.1}) | {:.2} / {:.2} / {:.2} | {} | {} ({:.1}) | {:.1} / {:.1} | {} / {} | {} |",
            r.n,
            s(&r.page),
            s(&r.page_cpu),
            r.page_cpu_mean,
            w.0,
            w.1,
            w.2,
            s(&r.twin),
            s(&r.twin_cpu),
            r.twin_cpu_mean,
            r.cli.1,
            r.cli_cpu.1,
            r.bytes,
            r.twin_bytes,
            s(&r.chart),
        );
    }
    Ok(())
}

/// The release binary of this bench's own target directory (so that
/// `CARGO_TARGET_DIR` is honoured), else `target/release/foreman`.
fn binary() -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("foreman")));
    let Some(binary) = beside.filter(|b| b.is_file()) else {
        return check_binary();
    };
    let built = std::fs::metadata(&binary)?.modified()?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if newest_mtime(&src).is_some_and(|t| t > built) {
        println!(
            "warning: {} is older than a file in src/ (run `cargo build --release`)",
            binary.display()
        );
    }
    Ok(binary)
}

fn ts(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn bench_one(n: usize, reps: usize, binary: &Path) -> Result<Row> {
    let dir = tempfile::Builder::new().prefix("foreman-page-").tempdir()?;
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
    drop(db);

    // The sweep creates the activity log; then the day of history.
    let out = Command::new(binary)
        .args(["sweep", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", binary.display()))?;
    ensure!(
        out.status.success(),
        "`foreman sweep` exited {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    history(&dir.path().join("foreman.db"))?;
    println!(
        "wrote {HISTORY} findings over the last 24 h in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let mut daemon = Daemon::start(binary, &config, dir.path())?;
    let addr = daemon.wait_ready(&dir.path().join("foreman.db"))?;
    println!(
        "daemon {} listening on {addr}, startup sweep done",
        daemon.pid
    );
    std::thread::sleep(EXPIRE);

    let want_rows = n.min(MAX_ROWS);
    let (mut page, mut page_cpu, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut twin, mut twin_cpu, mut cli, mut cli_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut twin_bytes) = (0, 0);
    let (mut page_ticks, mut twin_ticks) = (0u64, 0u64);
    for r in 0..reps {
        // (a) cold page.
        let (s0, c0) = (ThreadCpu::read(daemon.pid), ticks(daemon.pid)?);
        let (ms, body) = get(addr, "/")?;
        let (s1, c1) = (ThreadCpu::read(daemon.pid), ticks(daemon.pid)?);
        check_page(&body, want_rows).with_context(|| format!("rep {}: GET /", r + 1))?;
        bytes = body.len();
        page.push(ms);
        page_cpu.push(s1.since(&s0));
        page_ticks += c1 - c0;
        // (b) warm pages, within the second.
        let w0 = Instant::now();
        let mut these = Vec::with_capacity(WARM);
        for _ in 0..WARM {
            let (ms, body) = get(addr, "/")?;
            ensure!(
                body.len() == bytes,
                "a warm page of {} bytes after a cold one of {bytes}: not the cached read",
                body.len()
            );
            these.push(ms);
        }
        let within = w0.elapsed();
        ensure!(
            within < Duration::from_secs(1),
            "{WARM} warm pages took {within:?}, over the cache's second"
        );
        let w = Stats::of(these.clone());
        warm.extend(these);
        // (c) cold /twin.
        std::thread::sleep(EXPIRE);
        let (s0, c0) = (ThreadCpu::read(daemon.pid), ticks(daemon.pid)?);
        let (tms, body) = get(addr, "/twin")?;
        let (s1, c1) = (ThreadCpu::read(daemon.pid), ticks(daemon.pid)?);
        check_twin(&body, n).with_context(|| format!("rep {}: GET /twin", r + 1))?;
        twin_bytes = body.len();
        twin.push(tms);
        twin_cpu.push(s1.since(&s0));
        twin_ticks += c1 - c0;
        // (d) the snapshot alone, in its own process.
        let (cw, cc) = twin_cli(binary, &config, dir.path(), n)?;
        cli.push(cw);
        cli_cpu.push(cc);
        daemon.check_alive()?;
        println!(
            "rep {}: cold page {ms:.1} ms ({:.1} ms cpu), warm median {:.2} max {:.2} ms ({WARM} in {:.0} ms); \
             cold /twin {tms:.1} ms ({:.1} ms cpu); twin --json {cw:.1} ms ({cc:.1} ms cpu)",
            r + 1,
            page_cpu[r],
            w.1,
            w.2,
            within.as_secs_f64() * 1e3,
            twin_cpu[r],
        );
        std::thread::sleep(EXPIRE);
    }
    let log = Connection::open_with_flags(
        dir.path().join("foreman.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut chart = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let day = foreman::status::chart::timeline(&log, Utc::now())?;
        chart.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(day.total > 0, "the day's count found no finding");
    }
    drop(log);
    let sweeps = sweeps(&dir.path().join("foreman.db"))?;
    ensure!(
        sweeps == 2,
        "{sweeps} sweeps in the log, expected 2 (`foreman sweep` and the startup sweep): a page view swept?"
    );
    let complaints = daemon.complaints();
    daemon.stop()?;
    println!("page {bytes} bytes, /twin {twin_bytes} bytes; sweeps in the log: {sweeps}; daemon WARN/ERROR lines: {complaints}");
    drop(sleepers);
    Ok(Row {
        n,
        page: Stats::of(page),
        page_cpu: Stats::of(page_cpu),
        page_cpu_mean: tick_ms(page_ticks) / reps as f64,
        warm: Stats::of(warm),
        twin: Stats::of(twin),
        twin_cpu: Stats::of(twin_cpu),
        twin_cpu_mean: tick_ms(twin_ticks) / reps as f64,
        cli: Stats::of(cli),
        cli_cpu: Stats::of(cli_cpu),
        bytes,
        twin_bytes,
        chart: Stats::of(chart),
    })
}

/// 10,000 findings over the last 24 h, oldest first (ids in the order seen,
/// as the daemon writes them), all of the existing sweep.
fn history(path: &Path) -> Result<()> {
    let mut log = Connection::open(path)?;
    let sweep: i64 = log.query_row("SELECT MAX(id) FROM sweeps", [], |r| r.get(0))?;
    let now = Utc::now();
    let tx = log.transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO findings (task_id, attempt, kind, droid_type, plan_id, pid, host, evidence,
                 action, outcome, first_sweep_id, last_sweep_id, first_seen_at, last_seen_at, times_seen)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, 'bench', ?6, ?7, ?8, ?9, ?9, ?10, ?10, 1)",
        )?;
        for i in 0..HISTORY {
            let age_ms = (HISTORY - i) as i64 * 86_400_000 / HISTORY as i64 - 1000;
            let at = ts(now - Span::milliseconds(age_ms));
            let kind = KINDS[i % KINDS.len()];
            let droid = TYPES[(i / 3) % TYPES.len()];
            let (action, outcome) = if kind == "unverifiable" {
                ("none", "reported")
            } else {
                ("mark_failed", "would_mark_failed")
            };
            let evidence = format!(
                r#"{{"reason":"{kind}: bench history finding {i}","pid":{}}}"#,
                100_000 + i
            );
            ins.execute(params![
                format!("hist-{i:05}"),
                kind,
                droid,
                format!("plan-{:03}", i % 100),
                100_000 + i as i64,
                evidence,
                action,
                outcome,
                sweep,
                at,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn sweeps(path: &Path) -> Result<i64> {
    let log = Connection::open(path)?;
    Ok(log.query_row("SELECT COUNT(*) FROM sweeps", [], |r| r.get(0))?)
}

/// One `GET path` over a new connection: (wall ms, body). Fails unless 200.
fn get(addr: SocketAddr, path: &str) -> Result<(f64, Vec<u8>)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::with_capacity(256 * 1024);
    s.read_to_end(&mut raw)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    ensure!(
        head.starts_with("http/1.1 200"),
        "GET {path}: {}\n{}",
        head.lines().next().unwrap_or(""),
        String::from_utf8_lossy(&body)
    );
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body)?
    } else {
        body
    };
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        ensure!(
            len == body.len(),
            "content-length {len}, body {}",
            body.len()
        );
    }
    Ok((ms, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        let data = b.get(eol + 2..eol + 2 + size).context("short chunk")?;
        out.extend_from_slice(data);
        b = b.get(eol + 4 + size..).context("short chunk")?;
    }
}

/// min(N, 200) task rows and the table of the 50 latest findings.
fn check_page(body: &[u8], rows: usize) -> Result<()> {
    let text = std::str::from_utf8(body).context("the page is not UTF-8")?;
    let tasks = text.matches("data-task=").count();
    let findings = text.matches("data-finding=").count();
    ensure!(
        tasks == rows,
        "{tasks} task rows (data-task=), expected {rows}"
    );
    ensure!(
        text.contains("id=\"findings\"") && findings == LATEST,
        "no findings table with {LATEST} rows ({findings} data-finding=)"
    );
    Ok(())
}

fn check_twin(body: &[u8], n: usize) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body).context("/twin is not JSON")?;
    let executing = v["executing"].as_array().map_or(0, Vec::len);
    ensure!(
        executing == n,
        "/twin lists {executing} tasks, expected {n}"
    );
    Ok(())
}

/// `foreman twin --json`: (wall ms, user+sys ms from wait4).
fn twin_cli(binary: &Path, config: &Path, dir: &Path, n: usize) -> Result<(f64, f64)> {
    let out_path = dir.join("twin.out");
    let t0 = Instant::now();
    let child = Command::new(binary)
        .args(["twin", "--json", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .spawn()?;
    let reaped = reap(child)?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let status = reaped.status;
    // Exit 0 is OK; 1 WARNING (the day's failures), both fine here.
    let code = libc::WEXITSTATUS(status);
    ensure!(
        libc::WIFEXITED(status) && code <= 1,
        "`foreman twin --json` exited {status:#x}"
    );
    check_twin(&std::fs::read(&out_path)?, n)?;
    Ok((wall, reaped.cpu_ms()))
}

/// Run time of each thread of a process (ns, `schedstat`'s first field).
struct ThreadCpu(std::collections::HashMap<i32, u64>);

impl ThreadCpu {
    fn read(pid: i32) -> ThreadCpu {
        let mut m = std::collections::HashMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for e in dir.flatten() {
                let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let ns = std::fs::read_to_string(e.path().join("schedstat"))
                    .ok()
                    .and_then(|t| t.split_whitespace().next()?.parse().ok());
                if let Some(ns) = ns {
                    m.insert(tid, ns);
                }
            }
        }
        ThreadCpu(m)
    }

    /// CPU ms since `before` (a thread that exited in between is lost).
    fn since(&self, before: &ThreadCpu) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(t, ns)| ns.saturating_sub(before.0.get(t).copied().unwrap_or(0)))
            .sum();
        ns as f64 * 1e-6
    }
}

/// utime + stime of a process, clock ticks (`/proc/PID/stat` 14 and 15).
fn ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let get = |i: usize| -> Result<u64> { Ok(f.get(i - 3).context("short stat")?.parse()?) };
    Ok(get(14)? + get(15)?)
}

fn tick_ms(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 * 1e3 / hz
}

impl Daemon {
    fn wait_ready(&mut self, log: &Path) -> Result<SocketAddr> {
        let re = Regex::new(r"http: listening .*address=(\S+)")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut addr = None;
        loop {
            self.check_alive()?;
            let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if addr.is_none() {
                if let Some(c) = re.captures(&text) {
                    addr = Some(c[1].parse::<SocketAddr>()?);
                }
            }
            if let Some(addr) = addr {
                let done: i64 = Connection::open(log)?.query_row(
                    "SELECT COUNT(*) FROM sweeps WHERE kind = 'startup' AND finished_at IS NOT NULL",
                    [],
                    |r| r.get(0),
                )?;
                if done > 0 {
                    return Ok(addr);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no HTTP address and finished startup sweep within 120 s; stderr:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
