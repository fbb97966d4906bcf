//! The soak benchmark: the real daemon (`target/release/foreman run`, enforce
//! mode, a 5 s interval, the listener on a free loopback port) left running
//! for minutes against a churning executor, to see whether its memory and
//! per-sweep work follow the RUNNING set (they should) or the executor's
//! history window (they must not).
//!
//! `cargo build --release && cargo bench --bench soak [-- DURATION [TASKS]]`
//! (default 10m and 500; DURATION as `90s`, `10m` or seconds; `--every 10s`
//! sets the print period).
//!
//! It keeps about TASKS RUNNING tasks of real `sleep` processes (each leads
//! its own process group and dies with the bench) in a real executor SQLite
//! file (`foreman::executor::sqlite::SCHEMA`, WAL). Every second, with
//! k = TASKS / 50 (10 at 500): it kills the process of k/5 tasks and leaves
//! their rows RUNNING (dead: Foreman marks them after `exit_grace`), stops
//! heartbeating k/10 (hung: Foreman terminates them after `timeout`),
//! completes k/2 (process ended, row SUCCESS with `finished_at`), fails k/5
//! the executor's way (row FAILED), starts new tasks (ten to a plan, so new
//! plan ids keep coming) to bring the RUNNING rows back to TASKS, and
//! heartbeats the rest. Finished rows stay in the table, so the snapshot's
//! history window (1 h) grows by about k rows a second.
//!
//! Every period it prints one line: elapsed time; the daemon's VmRSS and
//! VmHWM; its threads (tokio's blocking pool grows and shrinks; each thread
//! that allocates may take a glibc malloc arena of its own); its CPU
//! seconds (utime + stime) in the period; the latest scheduled sweep's
//! duration and the largest of the period (from the activity log's
//! `sweeps`: finished_at − started_at) and the rows its snapshot held
//! (`tasks_seen`); RUNNING rows and
//! rows finished within the history window in the executor; the monitor's
//! `monitor_tasks` and `monitor_plans` rows; and the series on `/metrics`.

// `floor`, `Stats` and `args` are the other benches'.
#[allow(dead_code)]
mod common;

use anyhow::{bail, Context, Result};
use chrono::{SecondsFormat, Utc};
use common::{check_binary, Limits, Sleepers};
use foreman::executor::sqlite::SCHEMA;
use rusqlite::{params, Connection, OpenFlags};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if let Err(e) = run() {
        eprintln!("soak bench failed: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    duration: Duration,
    tasks: usize,
    every: Duration,
}

fn parse_duration(s: &str) -> Result<Duration> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).with_context(|| format!("duration {s:?}"))
}

fn args() -> Result<Args> {
    let mut out = Args {
        duration: Duration::from_secs(600),
        tasks: 500,
        every: Duration::from_secs(10),
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--every" {
            out.every = parse_duration(&it.next().context("--every needs a duration")?)?;
        } else if a.starts_with('-') {
            // `cargo bench` passes `--bench`.
            continue;
        } else {
            match positional {
                0 => out.duration = parse_duration(&a)?,
                1 => out.tasks = a.parse().with_context(|| format!("task count {a:?}"))?,
                _ => bail!("unexpected argument {a:?}"),
            }
            positional += 1;
        }
    }
    anyhow::ensure!(out.tasks >= 10, "at least 10 tasks");
    anyhow::ensure!(!out.every.is_zero(), "--every must be more than zero");
    Ok(out)
}

/// The daemon: SIGTERM and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One task the bench runs: its row id and the index of its process in
/// `Procs`.
struct Live {
    id: String,
    proc: usize,
    heartbeat: bool,
}

/// A small xorshift: the churn needs no more than "pick some".
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn free_port() -> Result<SocketAddr> {
    // Bound and released at once: a small race with other processes, which
    // a soak on a test VM can live with (the daemon fails loudly if taken).
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn run() -> Result<()> {
    let args = args()?;
    let binary = check_binary()?;
    Limits::read()?.check(args.tasks * 2)?;
    let dir = tempfile::Builder::new().prefix("foreman-soak").tempdir()?;
    let exec_path = dir.path().join("executor.db");
    let log_path = dir.path().join("foreman.db");
    let addr = free_port()?;
    let exec = Connection::open(&exec_path)?;
    exec.pragma_update(None, "journal_mode", "WAL")?;
    exec.busy_timeout(Duration::from_secs(10))?;
    exec.execute_batch(SCHEMA)?;
    exec.execute_batch("CREATE INDEX tasks_state ON tasks(state)")?;
    let config = dir.path().join("foreman.toml");
    std::fs::write(
        &config,
        format!(
            r#"interval = "5s"
mode = "enforce"
max_cpu_pressure = 100.0

[executor]
kind = "sqlite"
path = "{exec}"

[activity]
path = "{log}"

[defaults]
timeout = "20s"
startup_grace = "10s"
exit_grace = "5s"
kill_grace = "2s"

[http]
listen = "{addr}"
"#,
            exec = exec_path.display(),
            log = log_path.display(),
        ),
    )?;

    let mut sleepers = Procs(Vec::new());
    let mut live: Vec<Live> = Vec::new();
    let mut seq = 0usize;
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1);
    let start_tasks = |n: usize,
                       seq: &mut usize,
                       live: &mut Vec<Live>,
                       sleepers: &mut Procs,
                       exec: &Connection|
     -> Result<()> {
        let tx = exec.unchecked_transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO tasks (id, plan_id, droid_type, state, pid, attempt, started_at, last_progress_at)
                 VALUES (?1, ?2, 'soaker', 'RUNNING', ?3, 1, ?4, ?4)",
            )?;
            for _ in 0..n {
                let pid = sleepers.spawn()?;
                let id = format!("task-{seq:07}");
                // Ten tasks to a plan: plans complete and new ones start.
                let plan = format!("plan-{:06}", *seq / 10);
                ins.execute(params![id, plan, pid, now_text()])?;
                live.push(Live {
                    id,
                    proc: sleepers.0.len() - 1,
                    heartbeat: true,
                });
                *seq += 1;
            }
        }
        tx.commit()?;
        Ok(())
    };
    start_tasks(args.tasks, &mut seq, &mut live, &mut sleepers, &exec)?;

    let stderr = std::fs::File::create(dir.path().join("daemon.log"))?;
    let daemon = Daemon(
        Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env_remove("FOREMAN_HTTP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting foreman run")?,
    );
    let pid = daemon.0.id() as i32;
    println!(
        "soak: {} tasks, {:?}, a line every {:?}; daemon pid {pid}, listener {addr}, files in {}",
        args.tasks,
        args.duration,
        args.every,
        dir.path().display()
    );
    println!(
        "{:>6} {:>8} {:>8} {:>4} {:>7} {:>9} {:>9} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8}",
        "t_s",
        "rss_MiB",
        "hwm_MiB",
        "thr",
        "cpu_s",
        "sweep_ms",
        "max_ms",
        "seen",
        "running",
        "window",
        "mon_task",
        "mon_plan",
        "series"
    );

    let k = (args.tasks / 50).max(1);
    let (kills, hangs, completes, fails) = (
        (k / 5).max(1),
        (k / 10).max(1),
        (k / 2).max(1),
        (k / 5).max(1),
    );
    let began = Instant::now();
    let mut next_print = began + args.every;
    let mut last_cpu = cpu_seconds(pid)?;
    let mut last_sweep_id = 0i64;
    let mut tick = began;
    while began.elapsed() < args.duration {
        tick += Duration::from_secs(1);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Some(code) = daemon_exited(pid) {
            bail!(
                "the daemon exited ({code}); its log:\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            );
        }
        // What Foreman marked (dead or hung tasks) leaves our set; a hung
        // task's process is ended as the executor would.
        let running: HashSet<String> = exec
            .prepare_cached("SELECT id FROM tasks WHERE state = 'RUNNING'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        live.retain(|t| {
            let keep = running.contains(&t.id);
            if !keep {
                end(&mut sleepers, t.proc);
            }
            keep
        });
        let now = now_text();
        let tx = exec.unchecked_transaction()?;
        for _ in 0..kills {
            // Dead: the process goes, the row stays RUNNING.
            let i = rng.below(live.len());
            if live[i].heartbeat {
                end(&mut sleepers, live[i].proc);
                live[i].heartbeat = false;
            }
        }
        for _ in 0..hangs {
            let i = rng.below(live.len());
            live[i].heartbeat = false;
        }
        for (n, state) in [(completes, "SUCCESS"), (fails, "FAILED")] {
            for _ in 0..n {
                let i = rng.below(live.len());
                let t = live.swap_remove(i);
                end(&mut sleepers, t.proc);
                tx.execute(
                    "UPDATE tasks SET state = ?2, finished_at = ?3, last_progress_at = ?3,
                        error = CASE WHEN ?2 = 'FAILED' THEN 'soak: failed' END
                     WHERE id = ?1 AND state = 'RUNNING'",
                    params![t.id, state, now],
                )?;
            }
        }
        {
            let mut hb =
                tx.prepare_cached("UPDATE tasks SET last_progress_at = ?2 WHERE id = ?1")?;
            for t in live.iter().filter(|t| t.heartbeat) {
                hb.execute(params![t.id, now])?;
            }
        }
        tx.commit()?;
        let running: i64 = exec.query_row(
            "SELECT COUNT(*) FROM tasks WHERE state = 'RUNNING'",
            [],
            |r| r.get(0),
        )?;
        let want = (args.tasks as i64 - running).max(0) as usize;
        start_tasks(want, &mut seq, &mut live, &mut sleepers, &exec)?;

        if Instant::now() >= next_print {
            next_print += args.every;
            let cpu = cpu_seconds(pid)?;
            let (rss, hwm) = (status_kib(pid, "VmRSS:")?, status_kib(pid, "VmHWM:")?);
            // Each thread that allocates may get its own glibc arena.
            let threads = status_kib(pid, "Threads:")?;
            let log = Connection::open_with_flags(&log_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            log.busy_timeout(Duration::from_secs(10))?;
            let sweeps: Vec<(i64, f64, i64)> = log
                .prepare(
                    "SELECT id, (julianday(finished_at) - julianday(started_at)) * 86400000.0, tasks_seen
                     FROM sweeps WHERE kind = 'scheduled' AND finished_at IS NOT NULL AND id > ?1
                     ORDER BY id",
                )?
                .query_map([last_sweep_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let latest = sweeps.last().map(|s| s.1);
            let seen = sweeps.last().map_or("-".into(), |s| s.2.to_string());
            let max = sweeps
                .iter()
                .map(|s| s.1)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            if let Some(s) = sweeps.last() {
                last_sweep_id = s.0;
            }
            let count = |sql: &str| -> Result<i64> { Ok(log.query_row(sql, [], |r| r.get(0))?) };
            let (mon_tasks, mon_plans) = (
                count("SELECT COUNT(*) FROM monitor_tasks")?,
                count("SELECT COUNT(*) FROM monitor_plans")?,
            );
            let window: i64 = exec.query_row(
                "SELECT COUNT(*) FROM tasks WHERE state NOT IN ('RUNNING', 'PENDING')
                   AND julianday(finished_at) >= julianday('now') - 1.0 / 24",
                [],
                |r| r.get(0),
            )?;
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
            println!(
                "{:>6.0} {:>8.1} {:>8.1} {:>4} {:>7.2} {:>9} {:>9} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8}",
                began.elapsed().as_secs_f64(),
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0,
                threads,
                cpu - last_cpu,
                ms(latest),
                ms(max),
                seen,
                running,
                window,
                mon_tasks,
                mon_plans,
                series(addr).map_or("-".into(), |n| n.to_string()),
            );
            last_cpu = cpu;
        }
    }
    drop(daemon);
    drop(sleepers);
    Ok(())
}

/// The tasks' processes. Each is killed and reaped as soon as its task
/// ends, and never signalled again: thousands start in a soak, and a
/// process group id signalled after its leader was reaped could be someone
/// else's. The rest are killed and reaped on drop.
struct Procs(Vec<Option<Child>>);

impl Procs {
    fn spawn(&mut self) -> Result<i32> {
        // `Sleepers` starts it (its own process group, PR_SET_PDEATHSIG);
        // this bench keeps it.
        let mut one = Sleepers(Vec::new());
        let pid = one.spawn()?;
        self.0.extend(one.0.pop().map(Some));
        Ok(pid)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.0.len() {
            end(self, i);
        }
    }
}

/// Kill a task's process group and reap it (the row is the caller's
/// business).
fn end(procs: &mut Procs, i: usize) {
    if let Some(mut c) = procs.0[i].take() {
        // SAFETY: signalling our own unreaped child's process group (it
        // leads one).
        unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
        let _ = c.wait();
    }
}

fn daemon_exited(pid: i32) -> Option<String> {
    let mut status = 0;
    // SAFETY: waiting on our own child without blocking.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then(|| format!("wait status {status}"))
}

fn cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("parsing /proc/PID/stat")?;
    // After the command: state is field 3; utime and stime are 14 and 15.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

fn status_kib(pid: i32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// The samples on `/metrics` (lines that are neither comments nor blank).
fn series(addr: SocketAddr) -> Result<usize> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count())
}
