//! `foreman demo`: Foreman's main job on an embedded default, from nothing.
//! It builds a scratch executor (SQLite, the contract schema) in a temp
//! directory, starts real processes for six tasks of two droid types, runs
//! the startup scan and a few sweeps one second apart, prints each finding
//! as it happens, and cleans up every process it started (also on Ctrl-C).

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::executor::{self, sqlite::SCHEMA};
use crate::exit::{Failure, OK};
use crate::model::{Outcome, SweepKind};
use crate::sandbox::{self, now_text, Droids};
use crate::sweep::{sweep, LogAccess, SweepOptions, SweepReport};
use anyhow::Result;
use chrono::SecondsFormat;
use rusqlite::{params, Connection};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
interval = "1s"
[executor]
kind = "sqlite"
path = "executor.db"
[activity]
path = "foreman.db"
[http]
listen = ""
[defaults]
timeout = "4s"
startup_grace = "1s"
exit_grace = "1s"
kill_grace = "2s"
[droid_types.builder]
progress = ["heartbeat", "cpu", "io"]
[droid_types.scribe]
progress = ["heartbeat"]
"#;

const SWEEPS: usize = 9;

pub fn run() -> Result<u8, Failure> {
    Ok(demo().map(|_| OK)?)
}

fn demo() -> Result<()> {
    sandbox::catch_interrupts();
    let dir = tempfile::Builder::new().prefix("foreman-demo-").tempdir()?;
    let config_path = dir.path().join("foreman.toml");
    std::fs::write(&config_path, CONFIG)?;
    let config = Config::load(&config_path)?;
    let db_path = dir.path().join("executor.db");
    let db = Connection::open(&db_path)?;
    db.execute_batch(SCHEMA)?;
    db.pragma_update(None, "journal_mode", "WAL")?;

    println!(
        "Foreman demo: a scratch executor in {}",
        dir.path().display()
    );
    println!("droid types: builder (heartbeat, cpu, io) and scribe (heartbeat only); timeout 4s, interval 1s\n");
    let mut droids = Droids::default();
    let boot = crate::probe::boot_facts()?;
    let long_ago =
        (boot.boot_time - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let insert = |id: &str,
                  plan: &str,
                  ty: &str,
                  pid: i32,
                  started: &str,
                  hb: Option<&str>|
     -> Result<()> {
        db.execute(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at, last_progress_at) VALUES (?1, ?2, ?3, 'RUNNING', ?4, ?5, ?6)",
            params![id, plan, ty, pid, started, hb],
        )?;
        Ok(())
    };
    let t = now_text();
    let healthy = droids.spawn("build-1", &["sleep", "300"])?;
    insert("build-1", "plan-a", "builder", healthy, &t, Some(&t))?;
    let busy = droids.spawn("build-2", &["sh", "-c", "while :; do :; done"])?;
    insert("build-2", "plan-a", "builder", busy, &t, None)?;
    let quiet = droids.spawn("scribe-1", &["sleep", "300"])?;
    insert("scribe-1", "plan-b", "scribe", quiet, &t, Some(&t))?;
    let crasher = droids.spawn("build-3", &["sh", "-c", "sleep 1.5; exit 3"])?;
    insert("build-3", "plan-a", "builder", crasher, &t, Some(&t))?;
    let hanger = droids.spawn("scribe-2", &["sleep", "300"])?;
    insert("scribe-2", "plan-b", "scribe", hanger, &t, Some(&t))?;
    // A RUNNING row left over from before the last restart of the host.
    let leftover = droids.spawn("scribe-0", &["true"])?;
    insert(
        "scribe-0",
        "plan-b",
        "scribe",
        leftover,
        &long_ago,
        Some(&long_ago),
    )?;
    for (what, id, pid) in [
        ("healthy, heartbeating", "build-1", healthy),
        ("busy computing, no heartbeat", "build-2", busy),
        ("quiet, heartbeating", "scribe-1", quiet),
        ("crashes after 1.5s", "build-3", crasher),
        ("hangs: stops heartbeating", "scribe-2", hanger),
        ("left over from before a reboot", "scribe-0", leftover),
    ] {
        println!("  {id:<9} pid {pid:<7} {what}");
    }
    println!();

    let executor = executor::open(&config)?;
    let mut log = ActivityLog::open(&config.activity.path)?;
    let mut printed = HashSet::new();
    let started = Instant::now();
    for n in 0..SWEEPS {
        if sandbox::interrupted() {
            println!("interrupted: cleaning up");
            break;
        }
        droids.reap();
        // The executor records heartbeats from its healthy droids.
        db.execute(
            "UPDATE tasks SET last_progress_at = ?1 WHERE id IN ('build-1', 'scribe-1') AND state = 'RUNNING'",
            [now_text()],
        )?;
        let kind = if n == 0 {
            SweepKind::Startup
        } else {
            SweepKind::Scheduled
        };
        let report = sweep(
            &config,
            executor.as_ref(),
            LogAccess::Write(&mut log),
            kind,
            &SweepOptions::default(),
        )?;
        show(&report, started, &mut printed);
        let next = started + Duration::from_secs(n as u64 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    drop(droids);

    println!("\nSummary: the executor's tasks now");
    let mut stmt =
        db.prepare("SELECT id, droid_type, state, COALESCE(error, '') FROM tasks ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (id, ty, state, error) = row?;
        println!("  {id:<9} {ty:<8} {state:<8} {error}");
    }
    let mut stmt = log.conn().prepare(
        "SELECT f.task_id, s.signal, s.pid, s.result FROM finding_signals s JOIN findings f ON f.id = s.finding_id ORDER BY s.id",
    )?;
    let signals = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for s in signals {
        let (task, signal, pid, result) = s?;
        println!("  signal    {signal} to pid {pid} of {task}: {result}");
    }
    // The execution monitor's view of the same sweeps (the first one was
    // its silent baseline; the daemon would record these events and serve
    // the views on /plans and /metrics).
    let pulled: i64 = log
        .conn()
        .query_row("SELECT COUNT(*) FROM event_inbox", [], |r| r.get(0))?;
    println!("\nPlans, as the execution monitor sees them ({pulled} transition events pulled):");
    for v in crate::monitor::store::views(log.conn(), chrono::Utc::now())? {
        let c = &v.counts;
        println!(
            "  {:<7} health {:.2} = {} success / ({} success + {} failed + {} running){}",
            v.plan_id,
            v.health_score,
            c.success,
            c.success,
            c.failed,
            c.running,
            if v.is_complete { ", complete" } else { "" }
        );
    }
    let findings: i64 = log
        .conn()
        .query_row("SELECT COUNT(*) FROM findings", [], |r| r.get(0))?;
    let sweeps: i64 = log
        .conn()
        .query_row("SELECT COUNT(*) FROM sweeps", [], |r| r.get(0))?;
    println!(
        "\n{sweeps} sweeps, {findings} findings in the activity log; every process the demo started is gone.\n\
         Healthy, busy and quiet tasks were left alone; the crashed, hung and left-over ones were marked failed."
    );
    Ok(())
}

fn show(report: &SweepReport, started: Instant, printed: &mut HashSet<(String, String, String)>) {
    let at = started.elapsed().as_secs_f32();
    for f in &report.findings {
        let key = (
            f.task_id.clone(),
            f.kind.as_str().to_string(),
            f.outcome.as_str().to_string(),
        );
        if !printed.insert(key) {
            continue;
        }
        let why = f
            .evidence
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("");
        let what = match f.outcome {
            Outcome::Pending => format!("{} (waiting out exit grace)", f.outcome),
            o => o.to_string(),
        };
        println!(
            "[{at:4.1}s] {} sweep: {:<9} {:<7} {:<14} {why}",
            report.kind.as_str(),
            f.task_id,
            f.kind.as_str(),
            what
        );
    }
}
