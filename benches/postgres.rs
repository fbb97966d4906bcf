//! The PostgreSQL executor benchmark (issue 17): what one Foreman per host
//! costs the executor's database and itself, on a private PostgreSQL
//! cluster the bench starts and stops.
//!
//! `cargo bench --bench postgres [-- OPTIONS]`
//!
//! Options (all optional):
//!
//! - `--ns 1000,10000` (or bare numbers): RUNNING tasks in the fleet, spread
//!   evenly over the hosts; each N also gets N/5 finished rows (half within
//!   `history_window`, half beyond it), so the table holds 1.2 × N rows.
//! - `--hosts 10`: simulated hosts, one `PostgresExecutor` (one connection,
//!   `application_name = foreman@HOST`) each, as one Foreman per host.
//! - `--reps 50`: measured snapshots per host, after `--warmup 10`.
//! - `--marks 100`: `mark_failed` calls, spread over the hosts.
//! - `--rounds 50`: fleet steps (every host beats, then the leader's
//!   `view()`).
//!
//! For each N: a fresh database with the contract's `tasks` table
//! (TIMESTAMPTZ times, index on `(host, state)`), filled and `VACUUM
//! ANALYZE`d; then, all hosts in turn (round robin):
//!
//! 1. snapshots: wall time (median, p95), this process's CPU
//!    (`getrusage(RUSAGE_SELF)`, the sync client polls its connection on
//!    the calling thread), rows returned, round trips (`round_trips()`
//!    delta, which must be exactly 1), and the host's PostgreSQL backend
//!    CPU (`/proc/PID/schedstat`, cross-checked with utime + stime of
//!    `/proc/PID/stat`), the backend found by its `application_name`;
//! 2. marks: `mark_failed` of RUNNING tasks from each host's snapshot (each
//!    must return `Failed` in exactly 1 round trip);
//! 3. the fleet step: each host's `beat` (1 round trip), then the leader's
//!    `view()` (1 round trip), which must see every host.
//!
//! The cluster runs as the `postgres` OS user (initdb and postgres refuse
//! root) from /usr/lib/postgresql/*/bin, on a free loopback port, with
//! `fsync=off` and `autovacuum=off` (the bench analyses its tables itself);
//! connections are plain TCP on 127.0.0.1 (`sslmode=disable`). The server
//! dies with the bench (`PR_SET_PDEATHSIG`) and is shut down (fast) and its
//! directory removed on every other exit path.

use anyhow::{bail, ensure, Context, Result};
use chrono::Utc;
use foreman::config::Config;
use foreman::executor::postgres::PostgresExecutor;
use foreman::executor::{Executor, Marked};
use foreman::fleet::{Beat, Fleet};
use foreman::model::{Row, Task, TaskState};
use postgres::{Client, NoTls};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

/// The contract's `tasks` table, as an executor on PostgreSQL declares it
/// (the same as the integration tests').
const TASKS_SQL: &str = "
CREATE TABLE tasks (
  id TEXT PRIMARY KEY, plan_id TEXT, droid_type TEXT NOT NULL, state TEXT NOT NULL,
  pid INTEGER, host TEXT, attempt INTEGER NOT NULL DEFAULT 1,
  started_at TIMESTAMPTZ, last_progress_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
  error TEXT, pid_start_ticks BIGINT);
CREATE INDEX tasks_host_state ON tasks (host, state);
";

const PATIENCE: Duration = Duration::from_secs(60);

struct Opts {
    ns: Vec<usize>,
    hosts: usize,
    reps: usize,
    warmup: usize,
    marks: usize,
    rounds: usize,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        ns: Vec::new(),
        hosts: 10,
        reps: 50,
        warmup: 10,
        marks: 100,
        rounds: 50,
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
        let mut number = |name: &str| -> Result<usize> {
            value()?
                .trim()
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match key.as_str() {
            "--bench" => {}
            "--ns" => o.ns.extend(list(&value()?)?),
            "--hosts" => o.hosts = number("--hosts")?,
            "--reps" => o.reps = number("--reps")?,
            "--warmup" => o.warmup = number("--warmup")?,
            "--marks" => o.marks = number("--marks")?,
            "--rounds" => o.rounds = number("--rounds")?,
            s if !s.starts_with('-') => o.ns.extend(list(s)?),
            s => bail!("unknown option {s}"),
        }
    }
    if o.ns.is_empty() {
        o.ns = vec![1000, 10_000];
    }
    ensure!(
        o.hosts >= 1 && o.hosts <= 100,
        "--hosts must be 1..=100 (two-digit host names)"
    );
    ensure!(
        o.reps >= 1 && o.rounds >= 1,
        "--reps and --rounds must be at least 1"
    );
    for &n in &o.ns {
        ensure!(
            n / o.hosts >= o.marks.div_ceil(o.hosts),
            "N = {n} leaves too few RUNNING tasks per host for {} marks",
            o.marks
        );
    }
    Ok(o)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("postgres bench failed: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let o = opts()?;
    println!(
        "postgres bench: N = {:?}, {} hosts, {} snapshots per host after {} warm-up, {} marks, {} fleet rounds",
        o.ns, o.hosts, o.reps, o.warmup, o.marks, o.rounds
    );
    println!("started {} UTC", Utc::now().format("%Y-%m-%d %H:%M:%S"));
    println!("load average at start: {}", loadavg());
    println!("machine: {}", machine());
    let pg = Pg::start()?;
    let mut admin = pg.client("postgres")?;
    let version: String = admin.query_one("SELECT version()", &[])?.get(0);
    println!(
        "server: {version}; port {}; fsync=off, autovacuum=off",
        pg.port
    );

    let mut snaps = Vec::new();
    let mut ops = Vec::new();
    for &n in &o.ns {
        println!("\n## N = {n}");
        let (s, p) = one_n(&pg, &mut admin, &o, n).with_context(|| format!("N = {n}"))?;
        snaps.extend(s);
        ops.extend(p);
    }
    println!("\nload average at end: {}", loadavg());

    println!("\n### Snapshots, per host\n");
    println!("| N | host | rows returned | RUNNING | wall median ms | wall p95 ms | client CPU µs/snapshot (median) | backend CPU µs/snapshot | backend stat ticks (10 ms) | round trips/snapshot |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &snaps {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.0} | {:.0} | {} | 1 |",
            s.n,
            s.host,
            s.rows,
            s.running,
            s.wall_median_ms,
            s.wall_p95_ms,
            s.cpu_median_us,
            s.backend_us,
            s.backend_ticks
        );
    }
    println!("\n### Snapshots, over the hosts (each host's median; min–max over hosts)\n");
    println!("| N (fleet RUNNING) | table rows | hosts | rows/host returned | wall median ms | wall p95 ms (worst host) | client CPU µs/snapshot | client CPU µs/row | backend CPU µs/snapshot | backend CPU µs/row | round trips/snapshot |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &o.ns {
        let of: Vec<&Snap> = snaps.iter().filter(|s| s.n == n).collect();
        let med = |f: fn(&Snap) -> f64| -> (f64, f64, f64) {
            let v: Vec<f64> = of.iter().map(|s| f(s)).collect();
            (median(&v), min(&v), max(&v))
        };
        let rows: Vec<f64> = of.iter().map(|s| s.rows as f64).collect();
        let (w, w0, w1) = med(|s| s.wall_median_ms);
        let p95 = max(&of.iter().map(|s| s.wall_p95_ms).collect::<Vec<_>>());
        let (c, c0, c1) = med(|s| s.cpu_median_us);
        let (b, b0, b1) = med(|s| s.backend_us);
        let r = median(&rows);
        println!(
            "| {n} | {} | {} | {} | {w:.3} ({w0:.3}–{w1:.3}) | {p95:.3} | {c:.0} ({c0:.0}–{c1:.0}) | {:.2} | {b:.0} ({b0:.0}–{b1:.0}) | {:.2} | 1 |",
            n + n / 5,
            of.len(),
            range_text(&rows),
            c / r,
            b / r,
        );
    }
    println!("\n### Marks and the fleet step\n");
    println!("| N | operation | calls | wall median ms | wall p95 ms | client CPU µs/call (median) | backends' CPU µs/call | round trips/call |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for p in &ops {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.0} | {:.0} | 1 |",
            p.n, p.what, p.calls, p.wall_median_ms, p.wall_p95_ms, p.cpu_median_us, p.backend_us
        );
    }
    Ok(())
}

struct Snap {
    n: usize,
    host: String,
    rows: usize,
    running: usize,
    wall_median_ms: f64,
    wall_p95_ms: f64,
    cpu_median_us: f64,
    backend_us: f64,
    backend_ticks: u64,
}

struct Op {
    n: usize,
    what: String,
    calls: usize,
    wall_median_ms: f64,
    wall_p95_ms: f64,
    cpu_median_us: f64,
    backend_us: f64,
}

fn host_name(h: usize) -> String {
    format!("host-{h:02}")
}

/// Fill a fresh database for N: N RUNNING tasks (task i on host i % H) and
/// N/5 finished ones (row j on host j % H; those with (j / H) even
/// finished 1–50 min ago, within the 1 h window, the others 2–12 h ago,
/// beyond it; one in ten FAILED).
fn fill(client: &mut Client, n: usize, hosts: usize) -> Result<()> {
    client.batch_execute(TASKS_SQL)?;
    let (n, h, f) = (n as i64, hosts as i64, (n / 5) as i64);
    client.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, host, attempt, started_at, last_progress_at, pid_start_ticks)
         SELECT 'run-' || i, 'plan-' || (i / 10), (ARRAY['builder','tester','linter','packager'])[(1 + i % 4)::int], 'RUNNING',
                100000 + i, 'host-' || lpad((i % $2::int8)::text, 2, '0'), 1 + (i % 3 = 0)::int,
                now() - interval '10 minutes' - (i % 600) * interval '1 second', now() - interval '5 seconds', 1000000 + i
         FROM generate_series(0::int8, $1::int8 - 1) AS i",
        &[&n, &h],
    )?;
    client.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, host, attempt, started_at, last_progress_at, finished_at, error, pid_start_ticks)
         SELECT 'done-' || j, 'plan-old-' || (j / 10), (ARRAY['builder','tester','linter','packager'])[(1 + j % 4)::int],
                CASE WHEN j % 10 = 9 THEN 'FAILED' ELSE 'SUCCESS' END,
                200000 + j, 'host-' || lpad((j % $2::int8)::text, 2, '0'), 1,
                t - interval '10 minutes', t - interval '1 second', t,
                CASE WHEN j % 10 = 9 THEN 'exit status 1: the build failed' END, 2000000 + j
         FROM generate_series(0::int8, $1::int8 - 1) AS j,
              LATERAL (SELECT CASE WHEN (j / $2::int8) % 2 = 0 THEN now() - (1 + j % 50) * interval '1 minute'
                                   ELSE now() - interval '2 hours' - (j % 600) * interval '1 minute' END AS t) AS x",
        &[&f, &h],
    )?;
    client.batch_execute("VACUUM ANALYZE tasks")?;
    Ok(())
}

/// Rows host `h` should see: its RUNNING tasks and its finished rows
/// within the window ((j / H) even).
fn expected(n: usize, hosts: usize, h: usize) -> (usize, usize) {
    let running = (0..n).filter(|i| i % hosts == h).count();
    let within = (0..n / 5)
        .filter(|j| j % hosts == h && (j / hosts).is_multiple_of(2))
        .count();
    (running, running + within)
}

fn config(dir: &Path, url: &str) -> Result<Config> {
    let url_file = dir.join("pg.url");
    fs::write(&url_file, format!("{url}\n"))?;
    let text = format!(
        r#"interval = "30s"
host = "host-00"
mode = "shadow"
[executor]
kind = "postgres"
url_file = {url_file:?}
timeout = "10s"
history_window = "1h"
[activity]
path = "foreman.db"
[droid_types.builder]
timeout = "1h"
progress = ["heartbeat"]
[fleet]
host_lost_after = "5m"
[http]
listen = ""
"#,
        url_file = url_file.display().to_string()
    );
    let path = dir.join("foreman.toml");
    fs::write(&path, &text)?;
    Config::parse(&text, &path).map_err(|e| anyhow::anyhow!("{e}\n{text}"))
}

fn one_n(pg: &Pg, admin: &mut Client, o: &Opts, n: usize) -> Result<(Vec<Snap>, Vec<Op>)> {
    let db = format!("bench_{n}");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))?;
    admin.batch_execute(&format!("CREATE DATABASE {db}"))?;
    let mut client = pg.client(&db)?;
    let t = Instant::now();
    fill(&mut client, n, o.hosts)?;
    let total: i64 = client.query_one("SELECT count(*) FROM tasks", &[])?.get(0);
    let size: String = client
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('tasks'))",
            &[],
        )?
        .get(0);
    println!(
        "filled {total} rows ({size} with indexes) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The default snapshot query's plan (TIMESTAMPTZ finished_at), with
    // host-00's values in place of the parameters.
    let plan: Vec<String> = client
        .query(
            "EXPLAIN (COSTS OFF) SELECT * FROM tasks WHERE host = 'host-00' AND \
             (state IN ('RUNNING', 'PENDING') OR finished_at IS NULL OR finished_at >= now() - make_interval(secs => 3600))",
            &[],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0).trim().to_string())
        .collect();
    println!("snapshot plan (custom, host-00): {}", plan.join(" / "));

    let dir = tempfile::tempdir()?;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
        pg.port
    );
    let cfg = config(dir.path(), &url)?;
    let fleet_cfg = cfg.fleet.as_ref().context("[fleet] in the config")?;
    let names: Vec<String> = (0..o.hosts).map(host_name).collect();
    let execs: Vec<PostgresExecutor> = names
        .iter()
        .map(|h| PostgresExecutor::new(&cfg.executor, h, Some(fleet_cfg), cfg.interval))
        .collect::<Result<_>>()?;

    // The first snapshot opens the connection (connect, the fleet table,
    // the time column's type, two prepares): reported, not measured.
    for (h, e) in execs.iter().enumerate() {
        let before = e.round_trips();
        let t = Instant::now();
        e.snapshot()
            .with_context(|| format!("{}'s first snapshot", names[h]))?;
        if h == 0 {
            println!(
                "connect + first snapshot ({}): {:.1} ms, {} round trips",
                names[h],
                t.elapsed().as_secs_f64() * 1e3,
                e.round_trips() - before
            );
        }
    }
    let backends: Vec<i32> = names
        .iter()
        .map(|h| backend_pid(&mut client, h))
        .collect::<Result<_>>()?;

    // 1. Snapshots, round robin over the hosts.
    let mut walls = vec![Vec::with_capacity(o.reps); o.hosts];
    let mut cpus = vec![Vec::with_capacity(o.reps); o.hosts];
    let mut rows = vec![None; o.hosts];
    let mut running_of = vec![0; o.hosts];
    let mut last: Vec<Vec<Task>> = vec![Vec::new(); o.hosts];
    for _ in 0..o.warmup {
        for e in &execs {
            e.snapshot()?;
        }
    }
    let server0: Vec<BackendCpu> = backends
        .iter()
        .map(|&p| BackendCpu::read(p))
        .collect::<Result<_>>()?;
    for rep in 0..o.reps {
        for (h, e) in execs.iter().enumerate() {
            let trips = e.round_trips();
            let c0 = process_cpu();
            let t0 = Instant::now();
            let snap = e.snapshot()?;
            let wall = t0.elapsed();
            let cpu = process_cpu() - c0;
            let trips = e.round_trips() - trips;
            ensure!(
                trips == 1,
                "{}'s snapshot took {trips} round trips, not 1",
                names[h]
            );
            walls[h].push(wall.as_secs_f64() * 1e3);
            cpus[h].push(cpu * 1e6);
            let got = snap.rows.len();
            ensure!(
                rows[h].is_none_or(|r| r == got),
                "{}'s snapshot returned {got} rows, earlier {:?}",
                names[h],
                rows[h]
            );
            rows[h] = Some(got);
            if rep + 1 == o.reps {
                let tasks: Vec<Task> = snap
                    .rows
                    .into_iter()
                    .filter_map(|r| match r {
                        Row::Task(t) => Some(t),
                        Row::Bad(b) => {
                            eprintln!("malformed row: {b:?}");
                            None
                        }
                    })
                    .collect();
                ensure!(tasks.len() == got, "{}: malformed rows", names[h]);
                running_of[h] = tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Running)
                    .count();
                last[h] = tasks;
            }
        }
    }
    let server1: Vec<BackendCpu> = backends
        .iter()
        .map(|&p| BackendCpu::read(p))
        .collect::<Result<_>>()?;
    let mut snaps = Vec::new();
    for h in 0..o.hosts {
        let (running, want) = expected(n, o.hosts, h);
        let got = rows[h].unwrap_or(0);
        ensure!(
            got == want && running_of[h] == running,
            "{}: {got} rows ({} RUNNING), expected {want} ({running} RUNNING)",
            names[h],
            running_of[h]
        );
        let ns = server1[h].ns.saturating_sub(server0[h].ns);
        let ticks = server1[h].ticks.saturating_sub(server0[h].ticks);
        snaps.push(Snap {
            n,
            host: names[h].clone(),
            rows: got,
            running,
            wall_median_ms: median(&walls[h]),
            wall_p95_ms: p95(&walls[h]),
            cpu_median_us: median(&cpus[h]),
            backend_us: ns as f64 / 1e3 / o.reps as f64,
            backend_ticks: ticks,
        });
        println!(
            "{}: {got} rows; wall median {:.3} ms, p95 {:.3}; client CPU {:.0} µs; backend (pid {}) {:.0} µs/snapshot by schedstat, {ticks} stat ticks over {} snapshots ({:.0} µs each)",
            names[h],
            median(&walls[h]),
            p95(&walls[h]),
            median(&cpus[h]),
            backends[h],
            ns as f64 / 1e3 / o.reps as f64,
            o.reps,
            ticks as f64 * 1e6 / clock_ticks() as f64 / o.reps as f64
        );
    }

    let mut ops = Vec::new();
    let all_server =
        || -> Result<u64> { backends.iter().map(|&p| Ok(BackendCpu::read(p)?.ns)).sum() };

    // 2. Marks: RUNNING tasks of each host in turn.
    let mut queue: Vec<(usize, Task)> = Vec::new();
    let mut per_host: Vec<std::vec::IntoIter<Task>> = last
        .into_iter()
        .map(|v| {
            v.into_iter()
                .filter(|t| t.state == TaskState::Running)
                .collect::<Vec<_>>()
                .into_iter()
        })
        .collect();
    'fill: loop {
        for (h, it) in per_host.iter_mut().enumerate() {
            if queue.len() == o.marks {
                break 'fill;
            }
            queue.push((h, it.next().context("out of RUNNING tasks to mark")?));
        }
    }
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let s0 = all_server()?;
    for (h, task) in &queue {
        let e = &execs[*h];
        let trips = e.round_trips();
        let c0 = process_cpu();
        let t0 = Instant::now();
        let marked = e.mark_failed(task, "bench: marked failed", Utc::now())?;
        let wall = t0.elapsed();
        let cpu = process_cpu() - c0;
        let trips = e.round_trips() - trips;
        ensure!(
            marked == Marked::Failed,
            "marking {} returned {marked:?}",
            task.id
        );
        ensure!(
            trips == 1,
            "marking {} took {trips} round trips, not 1",
            task.id
        );
        walls.push(wall.as_secs_f64() * 1e3);
        cpus.push(cpu * 1e6);
    }
    let s1 = all_server()?;
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM tasks WHERE error = 'bench: marked failed' AND state = 'FAILED'",
            &[],
        )?
        .get(0);
    ensure!(
        failed as usize == queue.len(),
        "{failed} rows marked, {} asked",
        queue.len()
    );
    ops.push(op(n, "`mark_failed`", &walls, &cpus, s1 - s0));

    // 3. The fleet step: every host beats, the leader reads the fleet.
    let beat = |h: usize| Beat {
        boot_id: format!("boot-{h}"),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: 40000 + h as u32,
        started_at: Utc::now(),
        last_sweep_at: Some(Utc::now()),
        running: (n / o.hosts) as i64,
        findings: 0,
        actions: 0,
        snapshot_error: None,
    };
    let fleets: Vec<&dyn Fleet> = execs
        .iter()
        .map(|e| e.fleet().context("a fleet"))
        .collect::<Result<_>>()?;
    // Warm-up: the first beat takes the lock (host-00 first, so it leads).
    for (h, f) in fleets.iter().enumerate() {
        let leads = f.beat(&beat(h))?;
        ensure!(leads == (h == 0), "{} leads: {leads}", names[h]);
    }
    fleets[0].view()?;
    let (mut bw, mut bc, mut vw, mut vc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut beat_server, mut view_server) = (0, 0);
    for _ in 0..o.rounds {
        let s0 = all_server()?;
        for (h, f) in fleets.iter().enumerate() {
            let b = beat(h);
            let trips = execs[h].round_trips();
            let c0 = process_cpu();
            let t0 = Instant::now();
            let leads = f.beat(&b)?;
            let wall = t0.elapsed();
            let cpu = process_cpu() - c0;
            let trips = execs[h].round_trips() - trips;
            ensure!(trips == 1, "{}'s beat took {trips} round trips", names[h]);
            ensure!(leads == (h == 0), "{} leads: {leads}", names[h]);
            bw.push(wall.as_secs_f64() * 1e3);
            bc.push(cpu * 1e6);
        }
        let s1 = all_server()?;
        let trips = execs[0].round_trips();
        let c0 = process_cpu();
        let t0 = Instant::now();
        let view = fleets[0].view()?;
        let wall = t0.elapsed();
        let cpu = process_cpu() - c0;
        let trips = execs[0].round_trips() - trips;
        let s2 = all_server()?;
        ensure!(trips == 1, "the leader's view took {trips} round trips");
        ensure!(
            view.hosts.len() == o.hosts
                && view.leader.as_deref() == Some(names[0].as_str())
                && view.hosts.iter().all(|r| r.foreman.is_some()),
            "the view: {} hosts, leader {:?}",
            view.hosts.len(),
            view.leader
        );
        let running: usize = view.hosts.iter().map(|r| r.running).sum();
        ensure!(
            running == n - queue.len(),
            "the view counts {running} RUNNING"
        );
        vw.push(wall.as_secs_f64() * 1e3);
        vc.push(cpu * 1e6);
        beat_server += s1 - s0;
        view_server += s2 - s1;
    }
    ops.push(op(n, "`beat` (each host)", &bw, &bc, beat_server));
    ops.push(op(n, "`view()` (the leader)", &vw, &vc, view_server));
    for p in &ops {
        println!(
            "{}: {} calls, wall median {:.3} ms, p95 {:.3}; client CPU {:.0} µs; backends {:.0} µs/call",
            p.what, p.calls, p.wall_median_ms, p.wall_p95_ms, p.cpu_median_us, p.backend_us
        );
    }
    Ok((snaps, ops))
}

fn op(n: usize, what: &str, walls: &[f64], cpus: &[f64], server_ns: u64) -> Op {
    Op {
        n,
        what: what.into(),
        calls: walls.len(),
        wall_median_ms: median(walls),
        wall_p95_ms: p95(walls),
        cpu_median_us: median(cpus),
        backend_us: server_ns as f64 / 1e3 / walls.len() as f64,
    }
}

/// The PostgreSQL backend serving `host`'s Foreman.
fn backend_pid(client: &mut Client, host: &str) -> Result<i32> {
    let rows = client.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        &[&format!("foreman@{host}")],
    )?;
    ensure!(
        rows.len() == 1,
        "{} backends named foreman@{host}",
        rows.len()
    );
    Ok(rows[0].get(0))
}

/// A backend's CPU: nanoseconds on a CPU (`schedstat`) and utime + stime
/// in clock ticks (`stat`).
struct BackendCpu {
    ns: u64,
    ticks: u64,
}

impl BackendCpu {
    fn read(pid: i32) -> Result<BackendCpu> {
        let sched = fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .with_context(|| format!("/proc/{pid}/schedstat"))?;
        let ns = sched
            .split_ascii_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .context("parsing schedstat")?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis: state is field 3,
        // utime 14 and stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("parsing stat")?;
        let f: Vec<u64> = rest
            .split_ascii_whitespace()
            .skip(11)
            .take(2)
            .map(|s| s.parse().unwrap_or(0))
            .collect();
        ensure!(f.len() == 2, "parsing /proc/{pid}/stat");
        Ok(BackendCpu {
            ns,
            ticks: f[0] + f[1],
        })
    }
}

fn clock_ticks() -> i64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

/// CPU seconds of this process (user + system).
fn process_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        l if l % 2 == 1 => s[l / 2],
        l => (s[l / 2 - 1] + s[l / 2]) / 2.0,
    }
}

/// Nearest rank.
fn p95(v: &[f64]) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = (0.95 * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn range_text(v: &[f64]) -> String {
    let (a, b) = (min(v), max(v));
    if a == b {
        format!("{a:.0}")
    } else {
        format!("{a:.0}–{b:.0}")
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let mut out = String::new();
    if let Ok(o) = Command::new("lscpu").output() {
        let text = String::from_utf8_lossy(&o.stdout);
        for key in ["Model name:", "CPU(s):", "Hypervisor vendor:"] {
            if let Some(l) = text.lines().find(|l| l.starts_with(key)) {
                let _ = write!(
                    out,
                    "{} {}; ",
                    key.trim_end_matches(':'),
                    l[key.len()..].trim()
                );
            }
        }
    }
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = write!(out, "kernel {}", kernel.trim());
    out
}

// ---- the private cluster (after tests/integration/pg.rs, simplified: the
// server is this bench's child, with a parent-death signal) ----

struct Pg {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl Pg {
    fn start() -> Result<Pg> {
        let bin = server_bin()
            .context("no PostgreSQL server in /usr/lib/postgresql/*/bin (Debian's `postgresql`)")?;
        // SAFETY: getuid has no preconditions.
        let user = if unsafe { libc::getuid() } == 0 {
            Some(os_user("postgres").context(
                "running as root and there is no `postgres` OS user to run the server as",
            )?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("foreman-pgbench-")
            .tempdir_in("/tmp")?;
        let give = |p: &Path| -> Result<()> {
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
            Ok(())
        };
        give(dir.path())?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        fs::create_dir(&sock)?;
        give(&sock)?;
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path)?;
        give(&log_path)?;

        let mut initdb = as_server_user(Command::new(bin.join("initdb")), user, dir.path());
        let status = initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .context("running initdb")?;
        ensure!(
            status.success(),
            "initdb failed ({status}):\n{}",
            read(&log_path)
        );

        let mut pg = Pg {
            dir,
            port: 0,
            server: None,
        };
        for _ in 0..5 {
            pg.port = free_port()?;
            let from = fs::metadata(&log_path)?.len();
            let mut cmd = as_server_user(Command::new(bin.join("postgres")), user, pg.dir.path());
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &pg.port.to_string(), "-k"])
                .arg(&sock);
            for s in [
                "listen_addresses=127.0.0.1",
                "fsync=off",
                "autovacuum=off",
                "logging_collector=off",
                "max_connections=200",
            ] {
                cmd.args(["-c", s]);
            }
            let child = cmd
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .spawn()
                .context("starting postgres")?;
            pg.server = Some(child);
            let deadline = Instant::now() + PATIENCE;
            loop {
                let server = pg.server.as_mut().context("the server")?;
                if let Some(status) = server.try_wait()? {
                    pg.server = None;
                    let said = read(&log_path);
                    if said[from as usize..].contains("Address already in use") {
                        break;
                    }
                    bail!("postgres exited ({status}) before accepting connections:\n{said}");
                }
                if pg.answers(&data) {
                    return Ok(pg);
                }
                ensure!(
                    Instant::now() < deadline,
                    "postgres did not accept connections within {PATIENCE:?}:\n{}",
                    read(&log_path)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bail!("every port picked for PostgreSQL was taken")
    }

    /// Whether our server accepts connections (not another one that took
    /// the port while ours is about to exit for want of it).
    fn answers(&self, data: &Path) -> bool {
        let Ok(mut c) = self.client("postgres") else {
            return false;
        };
        let Ok(row) = c.query_one("SELECT current_setting('data_directory')", &[]) else {
            return false;
        };
        let theirs: String = row.get(0);
        fs::canonicalize(theirs).ok() == fs::canonicalize(data).ok()
    }

    fn client(&self, db: &str) -> Result<Client> {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        c.connect(NoTls)
            .with_context(|| format!("connecting to {db} on port {}", self.port))
    }
}

impl Drop for Pg {
    /// Fast shutdown (SIGINT), killed after a minute; then the temp dir
    /// (a field) goes.
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGINT) };
            if !matches!(server.wait_timeout(PATIENCE), Ok(Some(_))) {
                let _ = server.kill();
                let _ = server.wait();
            }
        }
    }
}

/// A command run as the server's user (when we are root), with a clean
/// environment, dying with the bench.
fn as_server_user(mut cmd: Command, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir(cwd)
        .stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and nothing here
    // allocates. std runs this after the uid switch, which would otherwise
    // clear the death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    cmd
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The newest major's bin directory.
fn server_bin() -> Option<PathBuf> {
    let major =
        |name: &str| -> Option<Vec<u32>> { name.split('.').map(|p| p.parse().ok()).collect() };
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((major(e.file_name().to_str()?)?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").is_file() && bin.join("initdb").is_file())
        .max()
        .map(|(_, bin)| bin)
}

fn os_user(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r fills it
    // with pointers into `buf`, which outlives every read of them here.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
    }
}
