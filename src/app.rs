//! The commands, each returning its exit code (`exit.rs`: 0 ok, 1 an action
//! ended in `error`, 2 usage or configuration error, 3 runtime error).

use crate::activity::ActivityLog;
use crate::cli::{ActArgs, ExplainArgs, LogArgs, ReviewArgs, TwinArgs, WellbeingArgs};
use crate::config::{Config, DEFAULT_PATH};
use crate::daemon;
use crate::executor;
use crate::exit::{Failure, ACTION_ERROR, OK};
use crate::explain;
use crate::lock;
use crate::model::SweepKind;
use crate::outbox;
use crate::query;
use crate::report;
use crate::sweep::{sweep, LogAccess, SweepOptions};
use crate::twin;
use crate::wellbeing::{self, RunId, RunKind};
use std::path::{Path, PathBuf};

pub fn config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

pub fn load(path: &Path) -> Result<Config, Failure> {
    Ok(Config::load(path)?)
}

/// `check-config`: the file is valid, and this host lets Foreman do its
/// job. A /proc that cannot show the executor's processes (probe.rs,
/// "/proc blindness") makes every task look dead; the file may be fine,
/// but a deployment that cannot supervise must not pass its check, so it
/// fails as a runtime error (exit 3) naming the reason, with nothing on
/// stdout, like any other failure.
pub fn check_config(path: &Path) -> Result<u8, Failure> {
    let config = load(path)?;
    if let Some(reason) = config.proc_blindness() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "/proc cannot show the executor's processes, so Foreman cannot tell a dead task from a hidden one: {reason}"
        )));
    }
    let notes = executor_fit(&config)?;
    print!("{}", config.effective_toml());
    for note in notes {
        eprintln!("foreman: note: {note}");
    }
    Ok(OK)
}

/// `check-config`'s look at the executor itself: for kind = "sqlite" with
/// a default query, the `tasks` table must have the columns that query
/// reads or writes, or every sweep would fail (or, worse, the mark-failed
/// update would) long after the check passed. Read-only: the database is
/// never created or changed. A table that does not fit is an executor
/// problem, not a syntax error of the file, so it fails like /proc
/// blindness (exit 3). What cannot be checked here is said on stderr
/// (stdout stays the effective configuration) and is no failure: an
/// executor that has not created its database yet is a normal first
/// install (the shipped configuration's placeholder is one).
fn executor_fit(config: &Config) -> Result<Vec<String>, Failure> {
    use crate::config::ExecutorKind;
    use crate::review::facts::{needed_task_columns, task_columns, MARK_COLUMNS, SNAPSHOT_COLUMNS};
    let e = &config.executor;
    match (e.kind, &e.path) {
        (ExecutorKind::Postgres, _) => Ok(vec![
            "kind = \"postgres\": the tasks table is not read by check-config; the first sweep reads it, and a missing column is that sweep's snapshot_error (see also `foreman review --live`)".into(),
        ]),
        (ExecutorKind::Sqlite, Some(path)) => {
            let needed = needed_task_columns(e);
            if needed.is_empty() {
                return Ok(Vec::new());
            }
            if !path.exists() {
                return Ok(vec![format!(
                    "the executor's database {} does not exist (yet): its tasks table was not checked; until it exists every sweep records a snapshot_error",
                    path.display()
                )]);
            }
            let found = task_columns(path, e.timeout).map_err(|why| {
                Failure::Runtime(anyhow::anyhow!("the executor's database: {why}"))
            })?;
            if found.is_empty() {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "the executor's database {} has no tasks table, which the default queries read; create it (README, \"The executor contract\") or set [executor] snapshot_query and mark_failed_query for its schema",
                    path.display()
                )));
            }
            let missing: Vec<&str> = needed
                .into_iter()
                .filter(|c| !found.iter().any(|f| f.eq_ignore_ascii_case(c)))
                .collect();
            if missing.is_empty() {
                return Ok(Vec::new());
            }
            let alter: Vec<String> = missing
                .iter()
                .map(|c| format!("ALTER TABLE tasks ADD COLUMN {c} {};", column_type(c)))
                .collect();
            let mut instead = Vec::new();
            let snapshot: Vec<String> = missing
                .iter()
                .filter(|c| e.snapshot_query.is_none() && SNAPSHOT_COLUMNS.contains(c))
                .map(|c| format!("NULL AS {c}"))
                .collect();
            if !snapshot.is_empty() {
                instead.push(format!(
                    "set [executor] snapshot_query to a query that selects {}",
                    snapshot.join(", ")
                ));
            }
            if missing
                .iter()
                .any(|c| e.mark_failed_query.is_none() && MARK_COLUMNS.contains(c))
            {
                instead.push("set [executor] mark_failed_query to an update of its schema".into());
            }
            Err(Failure::Runtime(anyhow::anyhow!(
                "the executor's database {}: its tasks table has no column {}, which the default queries need; add {} ({}) or {}",
                path.display(),
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                alter.join(" "),
                instead.join(" and ")
            )))
        }
        _ => Ok(Vec::new()),
    }
}

/// The contract's type of a column (executor::sqlite::SCHEMA), for the
/// ALTER TABLE a missing one needs. `attempt` is NOT NULL there, which
/// ALTER TABLE allows only with a default.
fn column_type(column: &str) -> &'static str {
    match column {
        "pid" => "INTEGER",
        "attempt" => "INTEGER NOT NULL DEFAULT 1",
        _ => "TEXT",
    }
}

/// `sweep` and `scan-orphans`.
pub fn one_sweep(path: &Path, args: &ActArgs, kind: SweepKind) -> Result<u8, Failure> {
    let config = load(path)?;
    let executor = executor::open(&config)?;
    let report = if args.dry_run {
        let log = ActivityLog::open_read_only(&config.activity.path)?;
        let report = sweep(
            &config,
            executor.as_ref(),
            LogAccess::ReadOnly(log.as_ref()),
            kind,
            &SweepOptions::default(),
        )?;
        print_report(&report, args.json);
        report
    } else {
        let name = if kind == SweepKind::Startup {
            "scan-orphans"
        } else {
            "sweep"
        };
        let _lock = lock::acquire(&config.activity.path, name)?;
        let mut log = ActivityLog::open(&config.activity.path)?;
        let report = sweep(
            &config,
            executor.as_ref(),
            LogAccess::Write(&mut log),
            kind,
            &SweepOptions::default(),
        )?;
        print_report(&report, args.json);
        // A one-shot sweep (from cron, say) delivers its alerts too; what
        // fails stays queued for the next command or the daemon, and never
        // changes the exit code.
        if !config.alerts.is_empty() || !config.wellbeing.sinks.is_empty() {
            match outbox::deliver_due(&config, &log, outbox::budget(&config)) {
                Ok(round) if round.failed + round.left > 0 => eprintln!(
                    "foreman: {} alert(s) not delivered yet; they stay queued and are retried",
                    round.failed + round.left
                ),
                Ok(_) => {}
                Err(e) => eprintln!("foreman: delivering alerts: {e:#}; they stay queued"),
            }
        }
        report
    };
    if let Some(e) = &report.snapshot_error {
        return Err(Failure::Runtime(anyhow::anyhow!("snapshot_error: {e}")));
    }
    Ok(if report.action_errors() > 0 {
        ACTION_ERROR
    } else {
        OK
    })
}

fn print_report(report: &crate::sweep::SweepReport, json: bool) {
    if json {
        println!("{}", report::json(report));
    } else {
        print!("{}", report::table(report));
    }
}

pub fn run(path: &Path) -> Result<u8, Failure> {
    let config = load(path)?;
    match daemon::run(config, None)? {
        daemon::Exit::Clean => Ok(OK),
        daemon::Exit::Immediate => Ok(130),
    }
}

/// `explain`: 0 when the verdict is judged the same again, 1 when it is not.
pub fn explain(path: &Path, args: &ExplainArgs) -> Result<u8, Failure> {
    let config = load(path)?;
    let missing = || {
        Failure::Usage(format!(
            "no finding {} in the activity log {}",
            args.finding_id,
            config.activity.path.display()
        ))
    };
    let log = ActivityLog::open_read_only(&config.activity.path)?.ok_or_else(missing)?;
    let e = explain::load(&log, args.finding_id, &config.fingerprint)?.ok_or_else(missing)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&e).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", explain::text(&e));
    }
    Ok(if e.replay.as_ref().is_some_and(|r| !r.same) {
        ACTION_ERROR
    } else {
        OK
    })
}

/// One row per line: JSON, or text for people.
fn print_lines<T: serde::Serialize>(
    out: &mut impl std::io::Write,
    rows: &[T],
    json: bool,
    text: fn(&T) -> String,
) -> anyhow::Result<()> {
    for r in rows {
        let line = if json {
            serde_json::to_string(r)?
        } else {
            text(r)
        };
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `log`: findings or sweeps, oldest first; with `--follow`, then whatever
/// is committed, checked once a second, until interrupted.
pub fn log(path: &Path, args: &LogArgs) -> Result<u8, Failure> {
    use std::io::Write;
    let config = load(path)?;
    let now = chrono::Utc::now();
    let filter = query::Filter {
        since: args
            .since
            .as_deref()
            .map(|s| query::parse_since(s, now))
            .transpose()
            .map_err(Failure::Usage)?,
        kinds: args
            .kind
            .iter()
            .map(|k| query::parse_kind(k))
            .collect::<Result<_, _>>()
            .map_err(Failure::Usage)?,
        task: args.task.clone(),
        droid_type: args.droid_type.clone(),
    };
    let mut out = std::io::stdout().lock();
    let mut after = 0;
    let mut warned = false;
    loop {
        match ActivityLog::open_read_only(&config.activity.path)? {
            None if !args.follow => {
                eprintln!(
                    "foreman: no activity log at {} yet: nothing has been recorded",
                    config.activity.path.display()
                );
                return Ok(OK);
            }
            None => {
                if !warned {
                    eprintln!(
                        "foreman: waiting for the activity log at {}",
                        config.activity.path.display()
                    );
                    warned = true;
                }
            }
            Some(log) => {
                let printed = if args.reviews {
                    let rows = query::reviews(&log, filter.since, after)?;
                    print_lines(&mut out, &rows, args.json, query::review_text)?;
                    rows.last().map(|r| r.rowid)
                } else if args.sweeps {
                    let rows = query::sweeps(&log, filter.since, after)?;
                    print_lines(&mut out, &rows, args.json, query::sweep_text)?;
                    rows.last().map(|r| r.id)
                } else {
                    let rows = query::findings(&log, &filter, after)?;
                    print_lines(&mut out, &rows, args.json, query::finding_text)?;
                    rows.last().map(|r| r.finding.id)
                };
                after = printed.unwrap_or(after);
                out.flush().map_err(anyhow::Error::from)?;
            }
        }
        if !args.follow {
            return Ok(OK);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `twin`: every outcome is a Nagios state, errors included (UNKNOWN, 3), so
/// that a monitoring system never reads a usage error as WARNING.
pub fn twin(path: &Path, args: &TwinArgs) -> u8 {
    let unknown = |why: String| {
        println!("FOREMAN UNKNOWN - {why}");
        twin::State::Unknown.exit_code()
    };
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return unknown(e.to_string()),
    };
    let window = match args.since.as_deref().map(humantime::parse_duration) {
        None => config.twin.window,
        Some(Ok(d)) => d,
        Some(Err(e)) => return unknown(format!("--since: {e} (give a duration like \"1h\")")),
    };
    let every = match args.watch.as_deref().map(watch_interval) {
        None => None,
        Some(Some(d)) => Some(d),
        Some(None) => {
            return unknown("--watch: give an interval like \"2s\" or seconds like \"0.5\"".into())
        }
    };
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    // Cut to the terminal so that no row wraps; full rows into a pipe or a
    // file (nothing wraps there, and a reader may want every column).
    let columns = if args.wide || !terminal {
        None
    } else {
        Some(twin::terminal_width())
    };
    // Escapes redraw a terminal in place; in a pipe or a file they are noise,
    // and `--json` is read by a program: one compact document per line.
    let redraw = terminal && !args.json;
    let mut first = true;
    loop {
        let (text, state) = if args.fleet {
            match crate::fleet_twin::take(&config) {
                Ok(t) if args.json => match json(&t, every.is_some()) {
                    Ok(j) => (j, t.state),
                    Err(e) => return unknown(format!("encoding the fleet: {e}")),
                },
                Ok(t) => (
                    crate::fleet_twin::text(&t, columns.unwrap_or(usize::MAX)),
                    t.state,
                ),
                Err(e) => return unknown(format!("{e:#}")),
            }
        } else {
            let t = match twin::take_with(&config, window, args.all_failures) {
                Ok(t) => t,
                Err(e) => return unknown(format!("{e:#}")),
            };
            let text = if args.json {
                match json(&t, every.is_some()) {
                    Ok(j) => j,
                    Err(e) => return unknown(format!("encoding the snapshot: {e}")),
                }
            } else {
                twin::text(&t, columns, color)
            };
            (text, t.state)
        };
        let frame = match every {
            None => text,
            // Redraw in place: home, each line cleared to its end, the rest
            // of the screen cleared; no blank frame in between.
            Some(_) if redraw => {
                let mut frame = String::from(if first { "\x1b[H\x1b[2J" } else { "\x1b[H" });
                for line in text.lines() {
                    frame.push_str(line);
                    frame.push_str("\x1b[K\n");
                }
                frame.push_str("\x1b[J");
                frame
            }
            Some(_) if first || args.json => text,
            // Plain frames, one after another, a blank line between.
            Some(_) => format!("\n{text}"),
        };
        let mut out = std::io::stdout().lock();
        // A reader that went away (`| head`) ends the watch, not a panic.
        if out
            .write_all(frame.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return state.exit_code();
        }
        let Some(every) = every else {
            return state.exit_code();
        };
        first = false;
        std::thread::sleep(every);
    }
}

/// `--json`: pretty once; one compact line per snapshot under `--watch`,
/// so that a stream of them can be read line by line.
fn json<T: serde::Serialize>(value: &T, watching: bool) -> serde_json::Result<String> {
    let text = if watching {
        serde_json::to_string(value)?
    } else {
        serde_json::to_string_pretty(value)?
    };
    Ok(text + "\n")
}

/// `--watch`'s interval: bare seconds (`1`, `0.5`) or a humantime duration
/// (`2s`, `1m`); `None` for zero or anything else.
fn watch_interval(text: &str) -> Option<std::time::Duration> {
    let d = match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() => std::time::Duration::try_from_secs_f64(secs).ok()?,
        Ok(_) => return None,
        Err(_) => humantime::parse_duration(text).ok()?,
    };
    (!d.is_zero()).then_some(d)
}

/// `wellbeing`: 0 all well, 1 issues found (an initiative filed, or one
/// that would be), 0 also for a slot already recorded.
pub fn wellbeing(path: &Path, args: &WellbeingArgs) -> Result<u8, Failure> {
    let config = load(path)?;
    let now = chrono::Utc::now();
    let run = match &args.slot {
        Some(slot) => {
            let at = config
                .wellbeing
                .schedule
                .parse_slot(slot)
                .map_err(|e| Failure::Usage(format!("--slot: {e}")))?;
            // Run now, a slot to come would be filed before its time and
            // then skipped by the daemon when it comes.
            if at > now {
                return Err(Failure::Usage(format!(
                    "--slot: {slot} is still to come; the daemon runs it then (give a past slot, or no --slot for a run now)"
                )));
            }
            RunId::slot(&config, at, RunKind::Scheduled)
        }
        None => RunId::manual(now),
    };
    let executor = executor::open(&config)?;
    let (report, delivery) = if args.dry_run {
        let log = ActivityLog::open_read_only(&config.activity.path)?;
        let report = wellbeing::assess_now(&config, executor.as_ref(), log.as_ref(), &run)?;
        (report, None)
    } else {
        // No actor lock: this acts on no task, so it runs beside the daemon;
        // the run id is the compare-and-set that keeps a slot filed once.
        let log = ActivityLog::open(&config.activity.path)?;
        let spinner = crate::progress::Progress::start(
            "wellbeing: reading the history and assessing",
            args.json,
        );
        let report = wellbeing::run(&config, executor.as_ref(), &log, &run);
        drop(spinner);
        let report = report?;
        let initiative = match &report.filed {
            wellbeing::Filed::Recorded { initiative_id } => *initiative_id,
            wellbeing::Filed::AlreadyRecorded { initiative_id, .. } => *initiative_id,
            wellbeing::Filed::DryRun => None,
        };
        let delivery = initiative
            .map(|id| wellbeing::deliver(&config, &log, id))
            .transpose()?;
        // Then whatever else is due (an earlier initiative a sink refused),
        // so that without a daemon a retry still happens when this runs.
        if let Err(e) = outbox::deliver_due(&config, &log, outbox::budget(&config)) {
            eprintln!("foreman: delivering the outbox: {e:#}; it stays queued");
        }
        (report, delivery)
    };
    if args.json {
        let mut doc = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        doc["dry_run"] = args.dry_run.into();
        doc["delivery"] = serde_json::to_value(&delivery).map_err(anyhow::Error::from)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", wellbeing::show::text(&report, delivery.as_ref()));
    }
    Ok(if report.issues > 0 { ACTION_ERROR } else { OK })
}

/// `review`: 0 nothing failed, 1 a check failed, 2 usage or configuration
/// error, 3 the sandbox could not be built, 130 interrupted (every process
/// it started is stopped first).
///
/// The sandbox needs no configuration: without one (none given, none at the
/// default path) the results are printed and recorded nowhere, which is how
/// CI runs it. With one, they are recorded in its activity log unless
/// `--sandbox-only`.
pub fn review(path: &Path, explicit: bool, args: &ReviewArgs) -> Result<u8, Failure> {
    use crate::review;
    // A sandbox review recording nowhere needs no configuration: a broken
    // one at the default path must not stop it.
    let config = if explicit || args.live || (path.exists() && !args.sandbox_only) {
        Some(load(path)?)
    } else {
        None
    };
    let started = chrono::Utc::now();
    let (kind, checks) = if args.live {
        let config = config.as_ref().ok_or_else(|| {
            Failure::Usage("--live needs the deployment's configuration (--config)".into())
        })?;
        if let Some(only) = &args.only {
            if !review::live::CHECKS.contains(&only.as_str()) {
                return Err(Failure::Usage(format!(
                    "no live check named {only:?}; the checks are: {}",
                    review::live::CHECKS.join(", ")
                )));
            }
        }
        let mut checks = review::live::run(config);
        if let Some(only) = &args.only {
            checks.retain(|c| &c.name == only);
        }
        ("live", checks)
    } else {
        let opts = review::sandbox::Options {
            only: args.only.clone(),
            keep: args.keep,
            judge: crate::judge::judge,
            force_pid_reuse: true,
        };
        if let Some(only) = &opts.only {
            if !review::sandbox::CHECKS.contains(&only.as_str()) {
                return Err(Failure::Usage(format!(
                    "no review check named {only:?}; the checks are: {}",
                    review::sandbox::CHECKS.join(", ")
                )));
            }
        }
        crate::sandbox::catch_interrupts();
        let spinner = crate::progress::Progress::start(
            "review: running the sandbox's droids and checks",
            args.json,
        );
        let result = review::sandbox::run(&opts);
        drop(spinner);
        match result {
            // Interrupted during the setup or the checks: the droids are
            // gone (dropped), the result is not a verdict.
            Ok(_) | Err(_) if crate::sandbox::interrupted() => {
                eprintln!("foreman: review interrupted; every process it started was stopped");
                return Ok(130);
            }
            Ok(checks) => ("sandbox", checks),
            Err(e) => return Err(Failure::Runtime(e.context("building the review's sandbox"))),
        }
    };
    let report = review::Report::new(kind, started, checks);
    match (&config, args.sandbox_only) {
        // A live review is read-only: it records into a log that is there
        // and current, and never creates or migrates one.
        (Some(config), false)
            if args.live
                && !matches!(
                    ActivityLog::open_read_only(&config.activity.path),
                    Ok(Some(_))
                ) =>
        {
            eprintln!(
                "foreman: the activity log {} is missing or not current: this live review is not recorded",
                config.activity.path.display()
            );
        }
        (Some(config), false) => {
            let log = ActivityLog::open(&config.activity.path)?;
            review::record(&log, &config.host, &report)?;
        }
        (None, false) => eprintln!(
            "foreman: no configuration at {}: this review is not recorded in an activity log",
            path.display()
        ),
        (_, true) => {}
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", review::text(&report));
    }
    Ok(if report.passed { OK } else { ACTION_ERROR })
}

/// `foreman completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "foreman", &mut std::io::stdout());
    OK
}

/// `foreman man`: foreman(1) in roff on stdout.
/// `man`: foreman(1) on stdout; with a subcommand its foreman-<sub>(1);
/// with --dir every page written there (the Makefile's assets).
pub fn man(args: &crate::cli::ManArgs) -> Result<u8, Failure> {
    use crate::manpages;
    use anyhow::Context;
    use std::io::Write;
    if let Some(dir) = &args.dir {
        for path in manpages::write_all(dir)? {
            println!("{}", path.display());
        }
        return Ok(OK);
    }
    let page = match &args.subcommand {
        None => manpages::main()?,
        Some(name) => manpages::for_subcommand(name)?.ok_or_else(|| {
            Failure::Usage(format!(
                "no subcommand {name:?}: `foreman --help` lists them"
            ))
        })?,
    };
    std::io::stdout()
        .write_all(&page.roff)
        .context("writing the man page")?;
    Ok(OK)
}

/// `silence`: make one (a type, a task or a host, for a while), list what
/// is in force (silences and maintenance windows), or end them. Written to
/// the activity log, where the daemon reads them at each sweep: no lock
/// needed, nothing acts.
pub fn silence(path: &Path, args: &crate::cli::SilenceArgs) -> Result<u8, Failure> {
    use crate::silence::{self, Scope};
    let config = load(path)?;
    let log = ActivityLog::open(&config.activity.path)?;
    let now = chrono::Utc::now();
    let made = match (&args.droid_type, &args.task, &args.host) {
        (Some(t), None, None) => Some((Scope::Type, t.clone())),
        (None, Some(t), None) => Some((Scope::Task, t.clone())),
        (None, None, Some(h)) => Some((Scope::Host, h.clone())),
        (None, None, None) => None,
        _ => {
            return Err(Failure::Usage(
                "give one of --type, --task or --host".into(),
            ))
        }
    };
    if let Some((scope, value)) = made {
        let Some(length) = args.length.as_deref() else {
            return Err(Failure::Usage("give how long: --for 2h".into()));
        };
        let length = watch_interval(length)
            .filter(|d| *d <= std::time::Duration::from_secs(366 * 86_400))
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "--for {length:?}: give a duration like \"2h\" or \"30m\" (at most a year)"
                ))
            })?;
        let id = silence::add(
            log.conn(),
            scope,
            &value,
            length,
            args.reason.as_deref(),
            now,
        )
        .map_err(Failure::Runtime)?;
        println!(
            "silence #{id}: {} {value:?} until {} ({})",
            match scope {
                Scope::Type => "droid type",
                Scope::Task => "task",
                _ => "host",
            },
            (now + chrono::Duration::from_std(length).unwrap_or_default())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            args.reason.as_deref().unwrap_or("no reason given")
        );
        return Ok(0);
    }
    if let Some(id) = args.clear {
        return if silence::clear(log.conn(), id, now).map_err(Failure::Runtime)? {
            println!("silence #{id} ended");
            Ok(0)
        } else {
            Err(Failure::Usage(format!(
                "no silence #{id} in force (see foreman silence --list)"
            )))
        };
    }
    if args.clear_all {
        let n = silence::clear_all(log.conn(), now).map_err(Failure::Runtime)?;
        println!("{n} silence(s) ended");
        return Ok(0);
    }
    let holds = silence::active(Some(log.conn()), &config, now).map_err(Failure::Runtime)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&holds).unwrap_or_default()
        );
    } else if holds.is_empty() {
        println!("no silence or maintenance window in force");
    } else {
        for h in &holds {
            println!("{}", h.line());
        }
    }
    Ok(0)
}
