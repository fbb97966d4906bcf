//! `foreman review --live`: read-only checks of the real deployment.
//!
//! In two steps: `facts::gather` does all the I/O and keeps what it saw in
//! `Facts` (an error is a fact too, see `facts.rs`); `judge` here turns
//! facts into checks without any I/O, so every boundary is tested with
//! facts written by hand.

use super::facts::{
    gather, Access, DirState, Entry, ExecutorTarget, Facts, LogOpen, ProcFacts, SinkProbe,
    SnapshotFacts,
};
use super::CheckResult;
use crate::config::{Config, ExecutorKind};
use crate::model::{Mode, OnHung};
use crate::probe::blindness;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The live checks, in the order they are reported. Stable: scripts and
/// `--only` use these names.
pub const CHECKS: &[&str] = &[
    "config-coherent",
    "executor-reachable",
    "activity-log",
    "daemon-sweeping",
    "sinks-reachable",
    "clock-sane",
    "permissions",
    "proc-visible",
];

/// CLOCK_REALTIME − CLOCK_BOOTTIME is the wall-clock time of boot; the
/// kernel's `btime` is the same instant truncated to whole seconds. More
/// apart than this, one of the clocks (or the boot time read) is wrong.
const BOOT_TOLERANCE: Duration = Duration::from_secs(2);

/// Failures listed one by one in evidence; the rest are counted.
const EVIDENCE_LIMIT: usize = 20;

const CAP_KILL: u32 = 5;
const CAP_SYS_PTRACE: u32 = 19;

/// Run the live checks against the deployment `config` describes.
pub fn run(config: &Config) -> Vec<CheckResult> {
    let facts = gather(config);
    let mut checks = judge(&facts, Utc::now());
    for c in &mut checks {
        if let Some(d) = facts.spent.get(c.name.as_str()) {
            c.duration_ms = d.as_millis() as u64;
        }
    }
    checks
}

// ------------------------------------------------------------------ judge

/// The checks, in `CHECKS` order, from facts alone.
pub fn judge(f: &Facts, now: DateTime<Utc>) -> Vec<CheckResult> {
    vec![
        config_coherent(f),
        executor_reachable(f),
        activity_log(f),
        daemon_sweeping(f, now),
        sinks_reachable(f),
        clock_sane(f, now),
        permissions(f),
        proc_visible(f),
    ]
}

fn human(d: Duration) -> String {
    // Whole milliseconds: nanoseconds are noise here.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

fn on_hung_str(h: OnHung) -> &'static str {
    match h {
        OnHung::Terminate => "terminate",
        OnHung::MarkOnly => "mark_only",
    }
}

fn dir_problem(what: &str, dir: &Path, state: &DirState) -> Option<String> {
    let d = dir.display();
    match state {
        DirState::Writable => None,
        DirState::Missing {
            creatable: Ok(()), ..
        } => None,
        DirState::Missing {
            ancestor,
            creatable: Err(e),
        } => Some(format!(
            "{what} {d} does not exist and cannot be created by this user in {} ({e})",
            ancestor.display()
        )),
        DirState::NotWritable(e) => Some(format!("{what} {d} is not writable by this user ({e})")),
        DirState::NotADirectory => Some(format!("{what} {d} is not a directory")),
        DirState::Unreadable(e) => Some(format!("{what} {d} cannot be inspected ({e})")),
    }
}

fn config_coherent(f: &Facts) -> CheckResult {
    const NAME: &str = "config-coherent";
    let c = &f.config;
    let mut problems = Vec::new();
    let executor = match &c.executor {
        ExecutorTarget::Sqlite { path, entry } => {
            let p = path.display();
            match entry {
                Entry::File => {}
                Entry::Missing => problems.push(format!(
                    "executor.path {p} does not exist (Foreman never creates the executor's database)"
                )),
                Entry::Dir => problems.push(format!(
                    "executor.path {p} is a directory, not the executor's SQLite file"
                )),
                Entry::Other => problems.push(format!("executor.path {p} is not a regular file")),
                Entry::Unreadable(e) => {
                    problems.push(format!("executor.path {p} cannot be inspected ({e})"))
                }
            }
            format!("sqlite {p}")
        }
        ExecutorTarget::Command { programs } => {
            for (key, program, resolved) in programs {
                if let Err(e) = resolved {
                    problems.push(format!("executor.{key} {program:?}: {e}"));
                }
            }
            let names: Vec<&str> = programs.iter().map(|(_, p, _)| p.as_str()).collect();
            format!("command {}", names.join(" / "))
        }
        ExecutorTarget::Postgres { source } => format!("postgres ({source})"),
    };
    let dir = c
        .activity_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    problems.extend(dir_problem(
        "the activity log's directory",
        dir,
        &c.activity_dir,
    ));
    if !problems.is_empty() {
        return CheckResult::fail(
            NAME,
            format!(
                "{} loaded, but: {}",
                c.source.display(),
                problems.join("; ")
            ),
            json!({
                "expected": "the executor's database or commands present, the activity log's directory present (or creatable) and writable by this user",
                "found": problems,
            }),
        );
    }
    let policies: Vec<String> = c
        .policies
        .iter()
        .map(|p| {
            let signals: Vec<&str> = p.progress.iter().map(|s| s.as_str()).collect();
            format!(
                "{} ({}, timeout {}, progress {}, on_hung {})",
                p.name,
                mode_str(p.mode),
                human(p.timeout),
                signals.join("+"),
                on_hung_str(p.on_hung)
            )
        })
        .collect();
    let dir_note = match &c.activity_dir {
        DirState::Missing { .. } => format!(
            "; the activity log's directory {} does not exist yet, and the daemon's first write can create it",
            dir.display()
        ),
        _ => String::new(),
    };
    CheckResult::pass(
        NAME,
        format!(
            "{} loaded: host {:?}, interval {}, executor {executor}; {}{dir_note}",
            c.source.display(),
            c.host,
            human(c.interval),
            policies.join(", ")
        ),
    )
}

fn executor_reachable(f: &Facts) -> CheckResult {
    const NAME: &str = "executor-reachable";
    let e = &f.executor;
    let mut problems = Vec::new();
    let mut evidence = serde_json::Map::new();
    let mut missing_columns = Vec::new();
    if let Some(cols) = &e.columns {
        match &cols.found {
            Err(why) => problems.push(format!("the tasks table's columns are unreadable: {why}")),
            Ok(found) if found.is_empty() => {
                problems.push("the executor's database has no tasks table".to_string());
                missing_columns = cols.needed.clone();
            }
            Ok(found) => {
                missing_columns = cols
                    .needed
                    .iter()
                    .copied()
                    .filter(|n| !found.iter().any(|f| f.eq_ignore_ascii_case(n)))
                    .collect();
                if !missing_columns.is_empty() {
                    problems.push(format!(
                        "tasks lacks column(s) the default queries need: {}",
                        missing_columns.join(", ")
                    ));
                }
            }
        }
        if !missing_columns.is_empty() {
            evidence.insert("columns_needed".into(), json!(cols.needed));
            evidence.insert("columns_missing".into(), json!(missing_columns));
            evidence.insert(
                "columns_found".into(),
                json!(cols.found.as_ref().ok().cloned().unwrap_or_default()),
            );
        }
    }
    let took = human(e.elapsed);
    let timeout = human(e.timeout);
    let mut summary = String::new();
    match &e.snapshot {
        SnapshotFacts::Failed(why) => {
            problems.push(format!("the snapshot failed after {took}: {why}"));
            evidence.insert("snapshot_error".into(), json!(why));
        }
        SnapshotFacts::TimedOut => {
            problems.push(format!(
                "no snapshot within {} (executor.timeout {timeout})",
                human(e.elapsed)
            ));
        }
        SnapshotFacts::Taken { rows, running, bad } => {
            if e.elapsed > e.timeout {
                problems.push(format!(
                    "the snapshot took {took}, longer than executor.timeout ({timeout})"
                ));
            }
            if !bad.is_empty() {
                let listed: Vec<String> = bad
                    .iter()
                    .take(EVIDENCE_LIMIT)
                    .map(|(id, why)| format!("{id}: {why}"))
                    .collect();
                problems.push(format!(
                    "{} of {rows} row(s) malformed, each judged unverifiable and never supervised: {}{}",
                    bad.len(),
                    listed.join("; "),
                    if bad.len() > EVIDENCE_LIMIT { "; …" } else { "" }
                ));
                evidence.insert("malformed_rows".into(), json!(bad.len()));
                evidence.insert(
                    "malformed".into(),
                    Value::Array(
                        bad.iter()
                            .take(EVIDENCE_LIMIT)
                            .map(|(id, why)| json!({"id": id, "reason": why}))
                            .collect(),
                    ),
                );
            }
            summary = format!("snapshot of {rows} row(s), {running} RUNNING, in {took} (executor.timeout {timeout})");
        }
    }
    if !problems.is_empty() {
        evidence.insert(
            "expected".into(),
            json!(format!(
                "a snapshot within executor.timeout ({timeout}) whose every row parses{}",
                if e.columns.is_some() {
                    ", from a tasks table with every column the default queries need"
                } else {
                    ""
                }
            )),
        );
        evidence.insert("found".into(), json!(problems));
        evidence.insert("elapsed_ms".into(), json!(e.elapsed.as_millis() as u64));
        return CheckResult::fail(NAME, problems.join("; "), Value::Object(evidence));
    }
    let columns = match &e.columns {
        Some(c) => format!(
            "; tasks has the {} columns the default queries need",
            c.needed.len()
        ),
        None if e.kind == ExecutorKind::Sqlite => {
            "; custom queries: their columns are not checked beyond the snapshot parsing".into()
        }
        None => String::new(),
    };
    CheckResult::pass(NAME, format!("{summary}; every row parses{columns}"))
}

fn activity_log(f: &Facts) -> CheckResult {
    const NAME: &str = "activity-log";
    let a = &f.activity;
    let p = a.path.display();
    let denied: Vec<(&PathBuf, &String)> = a
        .writable
        .iter()
        .filter_map(|(path, r)| r.as_ref().err().map(|e| (path, e)))
        .collect();
    let denied_text = denied
        .iter()
        .map(|(path, e)| format!("{} ({e})", path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let denied_json: Vec<Value> = denied
        .iter()
        .map(|(path, e)| json!({"path": path, "error": e}))
        .collect();
    let version = match &a.open {
        LogOpen::Missing => {
            return CheckResult::fail(
                NAME,
                format!("no activity log at {p}: the daemon has not run yet, or activity.path points elsewhere"),
                json!({"expected": "the daemon's activity log", "found": "no file", "path": a.path}),
            )
        }
        LogOpen::NoSchema => {
            return CheckResult::fail(
                NAME,
                format!("{p} holds no schema yet: run a command that writes (e.g. `foreman sweep`) to migrate it"),
                json!({"expected": "a migrated activity log", "found": "schema version 0", "path": a.path}),
            )
        }
        LogOpen::Failed(why) => {
            // A WAL database cannot even be read by a user who may not
            // create its -shm file: say so when that is the likely cause.
            let also = if denied.is_empty() {
                String::new()
            } else {
                format!("; this user cannot write {denied_text}, which a WAL log needs even to be read")
            };
            return CheckResult::fail(
                NAME,
                format!("cannot use {p}: {why}{also}"),
                json!({"expected": "an activity log at this Foreman's schema version, readable and writable by this user", "found": why, "path": a.path, "not_writable": denied_json}),
            );
        }
        LogOpen::Opened { version } => *version,
    };
    if !denied.is_empty() {
        return CheckResult::fail(
            NAME,
            format!(
                "{p} is at schema version {version}, but this user cannot write {denied_text}: the daemon and `foreman sweep` could not record"
            ),
            json!({"expected": "the log, its directory, and its -wal/-shm files writable by this user (access W_OK)", "found": denied_json}),
        );
    }
    CheckResult::pass(
        NAME,
        format!("{p} opens read-only at schema version {version}; it and its directory are writable by this user (access W_OK, nothing written)"),
    )
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn daemon_sweeping(f: &Facts, now: DateTime<Utc>) -> CheckResult {
    const NAME: &str = "daemon-sweeping";
    let limit = f.config.interval * 2;
    let a = &f.activity;
    let p = a.path.display();
    let expected = format!("a sweep finished within 2 × interval ({})", human(limit));
    let row = match &a.last_finished {
        Err(why) => {
            return CheckResult::fail(
                NAME,
                format!("cannot read the sweeps of {p}: {why}"),
                json!({"expected": expected, "found": why}),
            )
        }
        Ok(None) => {
            let why = match a.open {
                LogOpen::Missing => format!("no activity log at {p}: is the daemon running?"),
                _ => format!("no finished sweep recorded in {p}: is the daemon running?"),
            };
            return CheckResult::fail(
                NAME,
                why,
                json!({"expected": expected, "found": "no sweep"}),
            );
        }
        Ok(Some(r)) => r,
    };
    let finished = row.finished_at.as_deref().unwrap_or_default();
    let Some(at) = parse_time(finished) else {
        return CheckResult::fail(
            NAME,
            format!(
                "sweep #{} has an unreadable finished_at {finished:?}",
                row.id
            ),
            json!({"expected": expected, "found": {"sweep_id": row.id, "finished_at": finished}}),
        );
    };
    let what = format!("sweep #{} ({}, host {:?})", row.id, row.kind, row.host);
    let age = now - at;
    let Ok(age) = age.to_std() else {
        return CheckResult::pass(
            NAME,
            format!(
                "the last {what} finished at {finished}, which is in the future (see clock-sane)"
            ),
        );
    };
    if age <= limit {
        CheckResult::pass(
            NAME,
            format!(
                "the last {what} finished at {finished}, {} ago (within 2 × interval = {})",
                human(age),
                human(limit)
            ),
        )
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "the last {what} finished at {finished}, {} ago, more than 2 × interval ({}): is the daemon running?",
                human(age),
                human(limit)
            ),
            json!({
                "expected": expected,
                "found": {"sweep_id": row.id, "kind": row.kind, "finished_at": finished, "age_ms": age.as_millis() as u64},
                "limit_ms": limit.as_millis() as u64,
            }),
        )
    }
}

fn sinks_reachable(f: &Facts) -> CheckResult {
    const NAME: &str = "sinks-reachable";
    if f.sinks.is_empty() {
        return CheckResult::skip(NAME, "no [[alerts]] or [[wellbeing.sinks]] sink configured");
    }
    let mut ok = Vec::new();
    let mut notes = Vec::new();
    let mut bad = Vec::new();
    for s in &f.sinks {
        let who = format!("{}: {:?}", s.list, s.name);
        match &s.probe {
            SinkProbe::Webhook {
                target,
                connect,
                proxy_env,
                token_env,
            } => {
                let hp = target.as_deref().unwrap_or("?");
                match connect {
                    Ok(addr) => ok.push(format!(
                        "{who} webhook {hp} accepted a TCP connection ({addr})"
                    )),
                    Err(e) => bad.push((
                        who.clone(),
                        "webhook",
                        format!(
                            "no TCP connection to {hp} within its timeout ({}): {e}",
                            human(s.timeout)
                        ),
                    )),
                }
                if let Some(v) = proxy_env {
                    notes.push(format!("{who}: {v} is set here, so deliveries may go through that proxy; this check connected directly"));
                }
                if let Some((var, false)) = token_env {
                    notes.push(format!("{who}: bearer_token_env {var} is not set in this environment (the daemon's may differ)"));
                }
            }
            SinkProbe::Command { resolved, .. } => match resolved {
                Ok(p) => ok.push(format!("{who} command {} is executable", p.display())),
                Err(e) => bad.push((who.clone(), "command", e.clone())),
            },
            SinkProbe::File { dir, state } => match dir_problem("the directory", dir, state) {
                None => {
                    let note = if matches!(state, DirState::Missing { .. }) {
                        " (missing: the first delivery creates it)"
                    } else {
                        ""
                    };
                    ok.push(format!(
                        "{who} file sink {} is writable{note}",
                        dir.display()
                    ))
                }
                Some(e) => bad.push((who.clone(), "file", e)),
            },
        }
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; note: {}", notes.join("; "))
    };
    let how = "webhooks tried by TCP connect only, no request sent (a request would be a delivery)";
    if bad.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{} sink(s) reachable; {how}: {}{notes}",
                ok.len(),
                ok.join("; ")
            ),
        )
    } else {
        let list: Vec<String> = bad.iter().map(|(w, _, e)| format!("{w}: {e}")).collect();
        CheckResult::fail(
            NAME,
            format!(
                "{} of {} sink(s) unreachable; {how}: {}{notes}",
                bad.len(),
                f.sinks.len(),
                list.join("; ")
            ),
            json!({
                "expected": "webhooks accept a TCP connection within their timeout, commands resolve to an executable file, file sinks' directories are writable",
                "found": bad.iter().map(|(w, k, e)| json!({"sink": w, "kind": k, "error": e})).collect::<Vec<_>>(),
            }),
        )
    }
}

fn clock_sane(f: &Facts, now: DateTime<Utc>) -> CheckResult {
    const NAME: &str = "clock-sane";
    let c = &f.clock;
    let boot = match &c.boot {
        Ok(b) => b,
        Err(e) => {
            return CheckResult::fail(
                NAME,
                format!("the boot time is unreadable: {e}"),
                json!({"expected": "the boot id and boot time", "found": e}),
            )
        }
    };
    let mut problems = Vec::new();
    let mut evidence = serde_json::Map::new();
    if now <= boot.boot_time {
        problems.push(format!(
            "the wall clock ({}) is not after the boot time ({})",
            crate::activity::ts(now),
            crate::activity::ts(boot.boot_time)
        ));
        evidence.insert("now".into(), json!(crate::activity::ts(now)));
        evidence.insert(
            "boot_time".into(),
            json!(crate::activity::ts(boot.boot_time)),
        );
    }
    let k = c.clocks;
    // REALTIME − BOOTTIME: the wall-clock instant of boot as the clocks say.
    let clocks_boot_ns = k.realtime_ns as i128 - k.boottime_ns as i128;
    // The kernel's boot instant is where tick 0 falls: `boot_time` itself
    // on a real host, earlier under the tests' boot override
    // (`ticks_at_boot`), which the clocks know nothing of.
    let kernel_boot = boot.started_at(0);
    let btime_ns = kernel_boot.timestamp() as i128 * 1_000_000_000
        + kernel_boot.timestamp_subsec_nanos() as i128;
    let apart_ns = (clocks_boot_ns - btime_ns).unsigned_abs();
    let apart = Duration::from_nanos(apart_ns.min(u64::MAX as u128) as u64);
    if apart > BOOT_TOLERANCE {
        problems.push(format!(
            "CLOCK_REALTIME − CLOCK_BOOTTIME puts boot {} away from the kernel's boot time (more than {})",
            human(apart),
            human(BOOT_TOLERANCE)
        ));
        evidence.insert("clock_realtime_ns".into(), json!(k.realtime_ns));
        evidence.insert("clock_boottime_ns".into(), json!(k.boottime_ns));
        evidence.insert(
            "boot_time".into(),
            json!(crate::activity::ts(boot.boot_time)),
        );
        evidence.insert("apart_ms".into(), json!(apart.as_millis() as u64));
    }
    if k.monotonic_ns > k.boottime_ns {
        problems.push(format!(
            "CLOCK_MONOTONIC ({} ns) is ahead of CLOCK_BOOTTIME ({} ns), which counts suspends too",
            k.monotonic_ns, k.boottime_ns
        ));
        evidence.insert("clock_monotonic_ns".into(), json!(k.monotonic_ns));
        evidence.insert("clock_boottime_ns".into(), json!(k.boottime_ns));
    }
    let sweep_note = match &f.activity.latest {
        Ok(Some(r)) => {
            let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
            let mut future = Vec::new();
            for (what, text) in [
                ("started_at", Some(r.started_at.as_str())),
                ("finished_at", r.finished_at.as_deref()),
            ] {
                if let Some(t) = text.and_then(parse_time) {
                    if t > now {
                        future.push(format!("{what} {}", text.unwrap_or_default()));
                    }
                }
            }
            if let Some(ns) = r.realtime_ns.filter(|ns| *ns > now_ns) {
                future.push(format!("clock_realtime_ns {ns}"));
            }
            if future.is_empty() {
                format!(
                    "; the last sweep (#{}, {}) is not in the future",
                    r.id, r.started_at
                )
            } else {
                problems.push(format!(
                    "the last sweep (#{}) was recorded in the future: {} (now {}); the wall clock stepped back since",
                    r.id,
                    future.join(", "),
                    crate::activity::ts(now)
                ));
                evidence.insert("last_sweep".into(), json!({"id": r.id, "started_at": r.started_at, "finished_at": r.finished_at, "clock_realtime_ns": r.realtime_ns}));
                String::new()
            }
        }
        Ok(None) => "; no sweep recorded to compare with".into(),
        Err(_) => "; the sweeps are unreadable (see activity-log), not compared".into(),
    };
    if !problems.is_empty() {
        evidence.insert(
            "expected".into(),
            json!("wall clock after boot; REALTIME − BOOTTIME = boot time; MONOTONIC ≤ BOOTTIME; no sweep recorded in the future"),
        );
        evidence.insert("found".into(), json!(problems));
        return CheckResult::fail(NAME, problems.join("; "), Value::Object(evidence));
    }
    let up = (now - boot.boot_time).to_std().unwrap_or_default();
    CheckResult::pass(
        NAME,
        format!(
            "booted {} ({} ago, boot id {}); CLOCK_REALTIME − CLOCK_BOOTTIME agrees within {}{sweep_note}",
            crate::activity::ts(boot.boot_time),
            humantime::format_duration(Duration::from_secs(up.as_secs())),
            boot.boot_id,
            human(apart)
        ),
    )
}

fn permissions(f: &Facts) -> CheckResult {
    const NAME: &str = "permissions";
    let p = &f.processes;
    let has = |cap: u32| p.cap_eff.map(|c| c & (1 << cap) != 0);
    let who = match (p.euid, has(CAP_KILL), has(CAP_SYS_PTRACE)) {
        (0, _, _) => "root".to_string(),
        (uid, kill, ptrace) => {
            let cap = |name: &str, v: Option<bool>| match v {
                Some(true) => format!("with {name}"),
                Some(false) => format!("without {name}"),
                None => format!("{name} unknown"),
            };
            format!(
                "uid {uid} ({}, {})",
                cap("CAP_KILL", kill),
                cap("CAP_SYS_PTRACE", ptrace)
            )
        }
    };
    let Some(tasks) = &p.tasks else {
        return CheckResult::skip(
            NAME,
            format!("no snapshot to take the droids' pids from (see executor-reachable); Foreman runs as {who}"),
        );
    };
    let live: Vec<&ProcFacts> = tasks
        .iter()
        .filter(|t| t.signal != Access::Gone && t.io != Access::Gone)
        .collect();
    if live.is_empty() {
        return CheckResult::pass(
            NAME,
            format!(
                "no RUNNING task of this host has a live process to try; Foreman runs as {who}"
            ),
        );
    }
    let describe = |t: &ProcFacts, e: &str| json!({"task_id": t.task_id, "droid_type": t.droid_type, "pid": t.pid, "uid": t.uid, "error": e});
    let denied = |a: &Access| matches!(a, Access::Denied(_));
    let err = |a: &Access| match a {
        Access::Denied(e) => e.clone(),
        _ => String::new(),
    };
    let unsignalled: Vec<&ProcFacts> = live.iter().copied().filter(|t| denied(&t.signal)).collect();
    let (fatal, harmless): (Vec<&ProcFacts>, Vec<&ProcFacts>) =
        unsignalled.iter().partition(|t| t.terminates);
    let no_io: Vec<&ProcFacts> = live.iter().copied().filter(|t| denied(&t.io)).collect();
    let pids = |ts: &[&ProcFacts]| {
        let mut s: Vec<String> = ts
            .iter()
            .take(EVIDENCE_LIMIT)
            .map(|t| format!("{} (task {}, {})", t.pid, t.task_id, t.droid_type))
            .collect();
        if ts.len() > EVIDENCE_LIMIT {
            s.push(format!("and {} more", ts.len() - EVIDENCE_LIMIT));
        }
        s.join(", ")
    };
    let mut notes = Vec::new();
    if !harmless.is_empty() {
        notes.push(format!(
            "signals are unavailable for {}: their policy does not terminate (shadow or on_hung = mark_only), so nothing is lost now; CAP_KILL (or running as the droids' user) is needed before it does",
            pids(&harmless)
        ));
    }
    if !no_io.is_empty() {
        let counted = no_io.iter().any(|t| t.counts_io);
        notes.push(format!(
            "/proc/PID/io is unreadable for {}: the io progress signal is unavailable{}; CPU and heartbeat still work; CAP_SYS_PTRACE (or running as the droids' user) makes it readable",
            pids(&no_io),
            if counted { " for droid types that count it" } else { " (their droid types do not count it)" }
        ));
    }
    if !fatal.is_empty() {
        let mut reason = format!(
            "Foreman runs as {who} and cannot signal {} of {} droid process(es): {}; it could not terminate them when hung; run it as the droids' user or grant CAP_KILL",
            fatal.len(),
            live.len(),
            pids(&fatal)
        );
        if !notes.is_empty() {
            reason.push_str(&format!("; also: {}", notes.join("; ")));
        }
        return CheckResult::fail(
            NAME,
            reason,
            json!({
                "expected": "kill(pid, 0) succeeds for every RUNNING droid process whose policy terminates hung tasks (same user, or CAP_KILL)",
                "found": fatal.iter().take(EVIDENCE_LIMIT).map(|t| describe(t, &err(&t.signal))).collect::<Vec<_>>(),
                "io_unreadable": no_io.iter().take(EVIDENCE_LIMIT).map(|t| describe(t, &err(&t.io))).collect::<Vec<_>>(),
            }),
        );
    }
    let head = format!(
        "Foreman runs as {who}; {} RUNNING droid process(es) tried",
        live.len()
    );
    if notes.is_empty() {
        CheckResult::pass(
            NAME,
            format!("{head}: every /proc/PID/io readable and every process signalable (signal 0)"),
        )
    } else {
        CheckResult::pass(NAME, format!("{head}; note: {}", notes.join("; ")))
    }
}

/// Whether `/proc` shows Foreman every process it must judge: when it
/// cannot, every task looks dead (probe.rs, "/proc blindness").
fn proc_visible(f: &Facts) -> CheckResult {
    const NAME: &str = "proc-visible";
    let p = &f.processes;
    let v = &p.proc_view;
    let Some(reason) = blindness(v, p.proc_options) else {
        let ns = match v.pid_ns {
            Ok(Some(crate::probe::INIT_PID_NS_INODE)) | Ok(None) => "the host's PID namespace",
            Ok(Some(_)) => "a PID namespace shared with the executor (on the operator's word)",
            // blindness() reports an unknown namespace: not reached.
            Err(_) => "an unknown PID namespace",
        };
        return CheckResult::pass(
            NAME,
            format!(
                "{} hides no process from Foreman (mounted {}), pid 1 is visible, and Foreman is pid {} in {ns}",
                v.mount_point,
                v.mount()
                    .map(|(_, options)| options)
                    .unwrap_or_default(),
                v.pid
            ),
        );
    };
    CheckResult::fail(
        NAME,
        format!("Foreman cannot tell a dead task from a hidden one: {reason}"),
        json!({
            "expected": "a /proc that shows every process (no hidepid, or CAP_SYS_PTRACE / its gid= group), pid 1 visible, Foreman's own pid, the host's PID namespace",
            "found": reason,
            "mount_point": v.mount_point,
            "mount": v.mount().map(|(fstype, options)| json!({"fstype": fstype, "options": options})),
            "pid1": v.pid1.as_ref().err(),
            "self": v.self_link,
            "pid": v.pid,
            "pid_ns": v.pid_ns,
        }),
    )
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
