//! Tests of `foreman.toml`: the shipped reference, the defaults of
//! DESIGN.md, inheritance, path resolution, the effective-config round trip,
//! and one fixture per invalid configuration (tests/fixtures/config), each
//! reported with its file, line, column and key.

use super::*;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference_path() -> PathBuf {
    manifest_dir().join("foreman.toml")
}

fn reference_text() -> String {
    std::fs::read_to_string(reference_path()).expect("the shipped foreman.toml is readable")
}

fn fixture(name: &str) -> PathBuf {
    manifest_dir()
        .join("tests/fixtures/config")
        .join(format!("{name}.toml"))
}

const ETC: &str = "/etc/foreman/foreman.toml";

const MINIMAL: &str = "[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n";

fn parse(text: &str) -> Config {
    parse_at(text, Path::new(ETC))
}

fn parse_at(text: &str, path: &Path) -> Config {
    Config::parse(text, path).unwrap_or_else(|e| panic!("{e}\n--- in ---\n{text}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn default_host() -> String {
    sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into())
}

/// Every policy key at the default of DESIGN.md.
fn assert_default_policy(p: &Policy, mode: Mode) {
    assert_eq!(p.timeout, secs(30 * 60), "timeout");
    assert_eq!(p.startup_grace, secs(2 * 60), "startup_grace");
    assert_eq!(
        p.progress,
        vec![Signal::Heartbeat, Signal::Cpu, Signal::Io],
        "progress"
    );
    assert_eq!(p.pid_start_tolerance, secs(10), "pid_start_tolerance");
    assert!(p.process_match.is_none(), "process_match");
    assert_eq!(p.exit_grace, secs(30), "exit_grace");
    assert_eq!(p.max_actions_per_sweep, None, "max_actions_per_sweep");
    assert_eq!(p.mode, mode, "mode");
    assert_eq!(p.on_hung, OnHung::Terminate, "on_hung");
    assert_eq!(p.on_stray, crate::model::OnStray::Report, "on_stray");
    assert_eq!(p.kill_grace, secs(10), "kill_grace");
    assert!(p.enabled, "enabled");
    assert_eq!(p.max_deferral, None, "max_deferral");
    assert_eq!(p.max_deferral(), 3 * p.timeout, "max_deferral()");
    assert_eq!(p.max_runtime, None, "max_runtime");
    assert_eq!(p.max_actions_per_window, None, "max_actions_per_window");
}

fn assert_same_policy(a: &Policy, b: &Policy, what: &str) {
    assert_eq!(a.timeout, b.timeout, "{what}.timeout");
    assert_eq!(a.startup_grace, b.startup_grace, "{what}.startup_grace");
    assert_eq!(a.progress, b.progress, "{what}.progress");
    assert_eq!(
        a.pid_start_tolerance, b.pid_start_tolerance,
        "{what}.pid_start_tolerance"
    );
    assert_eq!(
        a.process_match.as_ref().map(Regex::as_str),
        b.process_match.as_ref().map(Regex::as_str),
        "{what}.process_match"
    );
    assert_eq!(a.exit_grace, b.exit_grace, "{what}.exit_grace");
    assert_eq!(
        a.max_actions_per_sweep, b.max_actions_per_sweep,
        "{what}.max_actions_per_sweep"
    );
    assert_eq!(a.mode, b.mode, "{what}.mode");
    assert_eq!(a.on_hung, b.on_hung, "{what}.on_hung");
    assert_eq!(a.on_stray, b.on_stray, "{what}.on_stray");
    assert_eq!(a.kill_grace, b.kill_grace, "{what}.kill_grace");
    assert_eq!(a.enabled, b.enabled, "{what}.enabled");
    assert_eq!(a.max_deferral, b.max_deferral, "{what}.max_deferral");
    assert_eq!(a.max_runtime, b.max_runtime, "{what}.max_runtime");
    assert_eq!(
        a.max_actions_per_window, b.max_actions_per_window,
        "{what}.max_actions_per_window"
    );
}

/// Every field of two `[wellbeing]` sections (a schedule by its text and
/// zone: the parsed form has no equality).
fn assert_same_wellbeing(a: &WellbeingConfig, b: &WellbeingConfig) {
    assert_eq!(a.schedule.text(), b.schedule.text(), "wellbeing.schedule");
    assert_eq!(a.schedule.zone(), b.schedule.zone(), "wellbeing.timezone");
    assert_eq!(a.limits, b.limits, "wellbeing limits");
    assert_eq!(a.droid_types, b.droid_types, "wellbeing.droid_types");
    assert_eq!(
        a.plan_stall_timeout, b.plan_stall_timeout,
        "wellbeing.plan_stall_timeout"
    );
    assert_eq!(
        a.max_sweep_errors, b.max_sweep_errors,
        "wellbeing.max_sweep_errors"
    );
    assert_eq!(
        a.max_outbox_age, b.max_outbox_age,
        "wellbeing.max_outbox_age"
    );
    assert_eq!(a.sinks, b.sinks, "wellbeing.sinks");
}

/// `[wellbeing]`'s limits when the file sets none.
fn default_limits() -> WellbeingLimits {
    WellbeingLimits {
        active_within: secs(86400),
        max_failure_rate: 0.25,
        min_finished: 5,
        max_findings: 3,
        max_median_runtime: None,
        dispatch_timeout: secs(3600),
    }
}

/// Every field of two configurations, `source` aside.
fn assert_same_config(a: &Config, b: &Config) {
    assert_eq!(a.interval, b.interval, "interval");
    assert_eq!(a.future_tolerance, b.future_tolerance, "future_tolerance");
    assert_eq!(a.host, b.host, "host");
    assert_eq!(a.mode, b.mode, "mode");
    assert_eq!(a.max_cpu_pressure, b.max_cpu_pressure, "max_cpu_pressure");
    let (x, y) = (&a.executor, &b.executor);
    assert_eq!(x.kind, y.kind, "executor.kind");
    assert_eq!(x.path, y.path, "executor.path");
    assert_eq!(
        x.snapshot_query, y.snapshot_query,
        "executor.snapshot_query"
    );
    assert_eq!(
        x.mark_failed_query, y.mark_failed_query,
        "executor.mark_failed_query"
    );
    assert_eq!(
        x.snapshot_command, y.snapshot_command,
        "executor.snapshot_command"
    );
    assert_eq!(
        x.mark_failed_command, y.mark_failed_command,
        "executor.mark_failed_command"
    );
    assert_eq!(x.timeout, y.timeout, "executor.timeout");
    assert_eq!(
        x.history_window, y.history_window,
        "executor.history_window"
    );
    assert_eq!(x.timezone, y.timezone, "executor.timezone");
    assert_eq!(x.timezone_text, y.timezone_text, "executor.timezone text");
    assert_eq!(a.activity.path, b.activity.path, "activity.path");
    assert_eq!(
        a.activity.retention, b.activity.retention,
        "activity.retention"
    );
    assert_same_policy(&a.defaults, &b.defaults, "defaults");
    assert_eq!(
        a.droid_types.keys().collect::<Vec<_>>(),
        b.droid_types.keys().collect::<Vec<_>>(),
        "droid type names"
    );
    for (name, p) in &a.droid_types {
        assert_same_policy(p, &b.droid_types[name], &format!("droid_types.{name}"));
    }
    assert_eq!(a.alerts, b.alerts, "alerts");
    assert_eq!(a.twin, b.twin, "twin");
    assert_same_wellbeing(&a.wellbeing, &b.wellbeing);
}

/// The reference with the commented-out assignments of `keys` uncommented
/// (a multi-line `"""` value with it), to check that its examples are valid.
fn uncomment(text: &str, keys: &[&str]) -> String {
    let mut out = String::new();
    let mut in_multiline = false;
    for line in text.lines() {
        let body = line.strip_prefix("# ");
        if in_multiline {
            let body = body.or_else(|| line.strip_prefix('#')).unwrap_or(line);
            in_multiline = body.trim() != "\"\"\"";
            out.push_str(body);
        } else if let Some(body) =
            body.filter(|b| keys.iter().any(|k| b.starts_with(&format!("{k} = "))))
        {
            let value = body.split_once(" = ").map_or("", |(_, v)| v).trim();
            in_multiline = value == "\"\"\"";
            out.push_str(body);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(!in_multiline, "unterminated multi-line example");
    out
}

// ---------------------------------------------------------------------------
// The shipped reference

#[test]
fn shipped_reference_parses_and_matches_the_documented_defaults() {
    let path = reference_path();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let dir = manifest_dir();
    assert_eq!(c.source, path);

    // Top level: the defaults of DESIGN.md; `host` is left to default.
    assert_eq!(c.interval, secs(120));
    assert_eq!(c.future_tolerance, secs(300));
    assert_eq!(c.host, default_host());
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.max_cpu_pressure, 90.0);

    // [executor]: a development path next to the file, defaults otherwise.
    assert_eq!(c.executor.kind, ExecutorKind::Sqlite);
    assert_eq!(c.executor.path, Some(dir.join("executor.db")));
    assert_eq!(c.executor.snapshot_query, None);
    assert_eq!(c.executor.mark_failed_query, None);
    assert!(c.executor.snapshot_command.is_empty());
    assert!(c.executor.mark_failed_command.is_empty());
    assert_eq!(c.executor.timeout, secs(30));
    assert_eq!(c.executor.history_window, secs(3600));
    assert_eq!(c.executor.timezone, ExecutorTz::Utc);

    // [activity]
    assert_eq!(c.activity.path, dir.join("foreman.db"));
    assert_eq!(c.activity.retention, secs(90 * 86400));

    // [defaults] sets every key to its default (or leaves it commented out).
    assert_default_policy(&c.defaults, Mode::Enforce);

    // And it agrees with a configuration that leaves everything out.
    let minimal = parse_at(MINIMAL, &path);
    assert_same_policy(&c.defaults, &minimal.defaults, "defaults");
    assert_eq!(c.interval, minimal.interval);
    assert_eq!(c.mode, minimal.mode);
    assert_eq!(c.max_cpu_pressure, minimal.max_cpu_pressure);
    assert_eq!(c.executor.timeout, minimal.executor.timeout);
    assert_eq!(c.executor.history_window, minimal.executor.history_window);
    assert_eq!(c.executor.timezone_text, minimal.executor.timezone_text);
    assert_eq!(c.activity.retention, minimal.activity.retention);

    // The example droid type overrides a few keys and inherits the rest.
    assert_eq!(c.droid_types.keys().collect::<Vec<_>>(), ["builder"]);
    let b = c.policy("builder");
    assert_eq!(b.timeout, secs(2 * 3600));
    assert_eq!(b.startup_grace, secs(5 * 60));
    assert_eq!(b.progress, vec![Signal::Cpu, Signal::Io]);
    let re = b
        .process_match
        .as_ref()
        .expect("builder has a process_match");
    assert!(re.is_match("/usr/local/bin/builder --target x86_64"));
    assert!(!re.is_match("/usr/local/bin/builder-old"));
    assert_eq!(b.mode, Mode::Shadow);
    assert_eq!(b.pid_start_tolerance, c.defaults.pid_start_tolerance);
    assert_eq!(b.exit_grace, c.defaults.exit_grace);
    assert_eq!(b.max_actions_per_sweep, c.defaults.max_actions_per_sweep);
    assert_eq!(b.on_hung, c.defaults.on_hung);
    assert_eq!(b.kill_grace, c.defaults.kill_grace);
    assert!(b.enabled);
    // Its own timeout sets its deferral limit; the window brake is [defaults]'.
    assert_eq!(b.max_deferral, None);
    assert_eq!(b.max_deferral(), secs(6 * 3600));
    assert_eq!(b.max_actions_per_window, None);

    // [wellbeing] sets every key to its default (or leaves it commented out),
    // as a configuration without the section has them.
    let (w, m) = (&c.wellbeing, &minimal.wellbeing);
    assert_eq!(w.schedule.text(), "0 0 6 * * *");
    assert_eq!(w.schedule.zone(), Zone::Local);
    assert_eq!(w.limits, default_limits());
    assert_eq!(w.plan_stall_timeout, secs(3600));
    assert_eq!(w.max_sweep_errors, 5);
    assert_eq!(w.max_outbox_age, secs(3600));
    assert!(w.sinks.is_empty());
    let without_types = WellbeingConfig {
        droid_types: BTreeMap::new(),
        ..w.clone()
    };
    assert_same_wellbeing(&without_types, m);

    // The example droid type sets its window and run time, and inherits the
    // rest from [wellbeing].
    assert_eq!(w.droid_types.keys().collect::<Vec<_>>(), ["builder"]);
    assert_eq!(
        *w.limits("builder"),
        WellbeingLimits {
            active_within: secs(7 * 86400),
            max_median_runtime: Some(secs(90 * 60)),
            ..default_limits()
        }
    );
}

/// Every key the parser accepts appears in the reference, in its section,
/// with a comment above it that states its default.
#[test]
fn shipped_reference_documents_every_key() {
    let expected: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "interval",
                "future_tolerance",
                "host",
                "mode",
                "max_cpu_pressure",
            ],
        ),
        (
            "executor",
            &[
                "kind",
                "path",
                "snapshot_query",
                "mark_failed_query",
                "snapshot_command",
                "mark_failed_command",
                "timeout",
                "history_window",
                "timezone",
            ],
        ),
        ("activity", &["path", "retention"]),
        ("twin", &["window", "warn_failures"]),
        (
            "alerts",
            &[
                "name",
                "kind",
                "url",
                "headers",
                "bearer_token_env",
                "argv",
                "timeout",
                "kinds",
                "droid_types",
                "retry_base",
                "retry_cap",
                "max_age",
                "realert_after",
            ],
        ),
        (
            "defaults",
            &[
                "timeout",
                "startup_grace",
                "progress",
                "pid_start_tolerance",
                "process_match",
                "exit_grace",
                "max_actions_per_sweep",
                "max_actions_per_window",
                "mode",
                "on_hung",
                "on_stray",
                "kill_grace",
                "enabled",
                "max_deferral",
                "max_runtime",
            ],
        ),
        (
            "wellbeing",
            &[
                "schedule",
                "timezone",
                "active_within",
                "max_failure_rate",
                "min_finished",
                "max_findings",
                "max_median_runtime",
                "dispatch_timeout",
                "plan_stall_timeout",
                "max_sweep_errors",
                "max_outbox_age",
            ],
        ),
        (
            "wellbeing.sinks",
            &[
                "name",
                "kind",
                "url",
                "headers",
                "bearer_token_env",
                "argv",
                "path",
                "timeout",
                "retry_base",
                "retry_cap",
                "max_age",
            ],
        ),
    ];
    let text = reference_text();
    let lines: Vec<&str> = text.lines().collect();
    let mut section = String::new();
    // (section, key, commented out, comment block above)
    let mut found: Vec<(String, String, bool, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        // The alert sinks are shown commented out, header included.
        let header = t
            .strip_prefix("# ")
            .filter(|h| h.starts_with("[["))
            .unwrap_or(t);
        if header.starts_with('[') {
            section = header.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let (commented, body) = match t.strip_prefix("# ") {
            Some(b) => (true, b),
            None => (false, t),
        };
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let mut start = i;
        while start > 0 && lines[start - 1].trim_start().starts_with('#') {
            start -= 1;
        }
        let comment = lines[start..i].join("\n");
        found.push((section.clone(), key.to_string(), commented, comment));
    }
    for (sect, keys) in expected {
        for key in *keys {
            let Some((_, _, _, comment)) = found.iter().find(|(s, k, _, _)| s == sect && k == key)
            else {
                panic!("foreman.toml does not show `{key}` in [{sect}]");
            };
            assert!(
                comment.to_lowercase().contains("default"),
                "the comment above `{key}` in [{sect}] does not state its default:\n{comment}"
            );
        }
    }
    // Keys whose default must apply as shipped are commented out.
    for (sect, key) in [
        ("", "host"),
        ("executor", "snapshot_query"),
        ("executor", "mark_failed_query"),
        ("executor", "snapshot_command"),
        ("executor", "mark_failed_command"),
        ("defaults", "process_match"),
        ("defaults", "mode"),
        ("defaults", "max_actions_per_sweep"),
        ("defaults", "max_actions_per_window"),
        ("defaults", "max_deferral"),
        ("defaults", "max_runtime"),
        ("wellbeing", "max_median_runtime"),
    ] {
        assert!(
            found.iter().any(|(s, k, c, _)| s == sect && k == key && *c),
            "`{key}` in [{sect}] should be shown commented out"
        );
    }
    assert!(
        found
            .iter()
            .any(|(s, _, c, _)| s.starts_with("droid_types.") && !c),
        "foreman.toml has no example [droid_types.NAME] section"
    );
    assert!(
        found
            .iter()
            .any(|(s, _, c, _)| s.starts_with("wellbeing.droid_types.") && !c),
        "foreman.toml has no example [wellbeing.droid_types.NAME] section"
    );
}

/// The commented-out examples are valid when uncommented.
#[test]
fn shipped_reference_examples_are_valid() {
    let path = reference_path();
    let text = reference_text();

    let sqlite = uncomment(
        &text,
        &[
            "host",
            "snapshot_query",
            "mark_failed_query",
            "process_match",
            "max_actions_per_sweep",
            "max_actions_per_window",
            "max_deferral",
            "max_runtime",
        ],
    );
    let c = parse_at(&sqlite, &path);
    assert_eq!(c.host, "worker-01");
    assert_eq!(c.defaults.max_actions_per_sweep, Some(10));
    assert_eq!(c.defaults.max_actions_per_window, Some(20));
    assert_eq!(c.defaults.max_deferral, Some(secs(90 * 60)));
    // An explicit [defaults] max_deferral is every droid type's, whatever
    // its own timeout.
    assert_eq!(c.policy("builder").max_deferral(), secs(90 * 60));
    assert_eq!(c.defaults.max_runtime, Some(secs(12 * 3600)));
    assert_eq!(c.policy("builder").max_runtime, Some(secs(12 * 3600)));
    assert_eq!(c.policy("builder").max_actions_per_window, None);
    let re = c.defaults.process_match.as_ref().expect("process_match");
    assert!(re.is_match("/usr/bin/python3 -m worker --queue high"));
    // The builder keeps its own pattern; everything else inherits.
    assert_ne!(
        c.policy("builder")
            .process_match
            .as_ref()
            .map(Regex::as_str),
        Some(re.as_str())
    );
    assert_eq!(c.policy("builder").max_actions_per_sweep, Some(10));

    // The example queries are valid SQL over the schema they describe: the
    // snapshot returns the contract's columns by name, the mark statement
    // takes exactly the documented parameters.
    let snapshot = c
        .executor
        .snapshot_query
        .as_deref()
        .expect("snapshot_query");
    let mark = c.executor.mark_failed_query.as_deref().expect("mark_query");
    let db = rusqlite::Connection::open_in_memory().expect("sqlite");
    db.execute_batch(
        "CREATE TABLE jobs (job_id TEXT, batch TEXT, worker_kind TEXT, status TEXT,
         os_pid INTEGER, try INTEGER, begun TEXT, beat TEXT, ended TEXT, failure TEXT)",
    )
    .expect("schema");
    let stmt = db.prepare(snapshot).expect("the snapshot example prepares");
    let columns: Vec<&str> = stmt.column_names();
    for col in [
        "id",
        "plan_id",
        "droid_type",
        "state",
        "pid",
        "host",
        "attempt",
        "started_at",
        "last_progress_at",
        "finished_at",
        "error",
    ] {
        assert!(columns.contains(&col), "the snapshot example lacks {col}");
    }
    assert!(stmt.parameter_index(":history_days").unwrap().is_some());
    let stmt = db.prepare(mark).expect("the mark example prepares");
    let mut params: Vec<String> = (1..=stmt.parameter_count())
        .filter_map(|i| stmt.parameter_name(i).map(str::to_string))
        .collect();
    params.sort();
    assert_eq!(
        params,
        [":attempt", ":finished_at", ":id", ":pid", ":reason"]
    );

    // Switching the top-level mode switches [defaults] and every droid type
    // that does not set its own.
    let shadow = text.replacen("\nmode = \"enforce\"\n", "\nmode = \"shadow\"\n", 1);
    let c = parse_at(&shadow, &path);
    assert_eq!(c.mode, Mode::Shadow);
    assert_eq!(c.defaults.mode, Mode::Shadow);
    assert_eq!(c.policy("unconfigured").mode, Mode::Shadow);

    let command = uncomment(&text, &["snapshot_command", "mark_failed_command"])
        .replace("\nkind = \"sqlite\"\n", "\nkind = \"command\"\n");
    let c = parse_at(&command, &path);
    assert_eq!(c.executor.kind, ExecutorKind::Command);
    assert_eq!(c.executor.snapshot_command[0], "/usr/bin/executorctl");
    // Each placeholder is its own argv item, so substitution cannot split
    // or join arguments.
    for placeholder in ["{id}", "{attempt}", "{pid}", "{reason}"] {
        assert!(
            c.executor
                .mark_failed_command
                .iter()
                .any(|a| a == placeholder),
            "{placeholder} is not a separate argv item"
        );
    }
}

// ---------------------------------------------------------------------------
// Defaults, inheritance, paths

#[test]
fn minimal_config_gets_every_default_of_the_design() {
    let c = parse(MINIMAL);
    assert_eq!(c.source, Path::new(ETC));
    assert_eq!(c.interval, secs(120));
    assert_eq!(c.future_tolerance, secs(300));
    assert_eq!(c.host, default_host());
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.max_cpu_pressure, 90.0);
    assert_eq!(c.executor.kind, ExecutorKind::Sqlite);
    assert_eq!(
        c.executor.path.as_deref(),
        Some(Path::new("/etc/foreman/executor.db"))
    );
    assert_eq!(c.executor.snapshot_query, None);
    assert_eq!(c.executor.mark_failed_query, None);
    assert!(c.executor.snapshot_command.is_empty());
    assert!(c.executor.mark_failed_command.is_empty());
    assert_eq!(c.executor.timeout, secs(30));
    assert_eq!(c.executor.history_window, secs(3600));
    assert_eq!(c.executor.timezone, ExecutorTz::Utc);
    assert_eq!(c.activity.path, Path::new("/var/lib/foreman/foreman.db"));
    assert_eq!(c.activity.retention, secs(90 * 86400));
    assert_default_policy(&c.defaults, Mode::Enforce);
    assert!(c.droid_types.is_empty());
    // An unconfigured droid type is judged with [defaults].
    assert!(std::ptr::eq(c.policy("anything"), &c.defaults));
}

#[test]
fn top_level_mode_is_the_default_of_every_policy() {
    let c = parse(&format!(
        "mode = \"shadow\"\n{MINIMAL}[droid_types.a]\ntimeout = \"1h\"\n[droid_types.b]\nmode = \"enforce\"\n"
    ));
    assert_eq!(c.mode, Mode::Shadow);
    assert_eq!(c.defaults.mode, Mode::Shadow);
    assert_eq!(c.policy("a").mode, Mode::Shadow);
    assert_eq!(c.policy("b").mode, Mode::Enforce);
    assert_eq!(c.policy("unconfigured").mode, Mode::Shadow);
}

#[test]
fn per_type_keys_inherit_from_defaults() {
    let c = parse(&format!(
        r#"{MINIMAL}
[defaults]
timeout = "1h"
startup_grace = "5m"
progress = ["heartbeat"]
pid_start_tolerance = "3s"
process_match = "^worker "
exit_grace = "45s"
max_actions_per_sweep = 4
mode = "shadow"
on_hung = "mark_only"
on_stray = "terminate"
kill_grace = "20s"

[droid_types.scribe]
timeout = "3h"
progress = ["cpu", "io"]

[droid_types.empty]
"#
    ));
    let d = &c.defaults;
    assert_eq!(d.timeout, secs(3600));
    assert_eq!(d.startup_grace, secs(300));
    assert_eq!(d.progress, vec![Signal::Heartbeat]);
    assert_eq!(d.pid_start_tolerance, secs(3));
    assert_eq!(
        d.process_match.as_ref().map(Regex::as_str),
        Some("^worker ")
    );
    assert_eq!(d.exit_grace, secs(45));
    assert_eq!(d.max_actions_per_sweep, Some(4));
    assert_eq!(d.mode, Mode::Shadow);
    assert_eq!(d.on_hung, OnHung::MarkOnly);
    assert_eq!(d.on_stray, crate::model::OnStray::Terminate);
    assert_eq!(d.kill_grace, secs(20));
    assert!(d.counts(Signal::Heartbeat) && !d.counts(Signal::Cpu));

    // Its own keys win, every other key comes from [defaults].
    let s = c.policy("scribe");
    assert_eq!(s.timeout, secs(3 * 3600));
    assert_eq!(s.progress, vec![Signal::Cpu, Signal::Io]);
    assert!(!s.counts(Signal::Heartbeat) && s.counts(Signal::Io));
    let inherited = Policy {
        timeout: d.timeout,
        progress: d.progress.clone(),
        ..s.clone()
    };
    assert_same_policy(&inherited, d, "droid_types.scribe");

    // An empty section is [defaults] exactly.
    assert_same_policy(c.policy("empty"), d, "droid_types.empty");
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let text = "[executor]\nkind = \"sqlite\"\npath = \"../executor/tasks.db\"\n\
                [activity]\npath = \"state/foreman.db\"\n";
    let c = parse_at(text, Path::new("/srv/foreman/conf/foreman.toml"));
    assert_eq!(
        c.executor.path.as_deref(),
        Some(Path::new("/srv/foreman/conf/../executor/tasks.db"))
    );
    assert_eq!(
        c.activity.path,
        Path::new("/srv/foreman/conf/state/foreman.db")
    );

    // Absolute paths are kept as written.
    let text = "[executor]\nkind = \"sqlite\"\npath = \"/var/lib/executor/executor.db\"\n\
                [activity]\npath = \"/var/lib/foreman/foreman.db\"\n";
    let c = parse_at(text, Path::new("/srv/foreman/conf/foreman.toml"));
    assert_eq!(
        c.executor.path.as_deref(),
        Some(Path::new("/var/lib/executor/executor.db"))
    );
    assert_eq!(c.activity.path, Path::new("/var/lib/foreman/foreman.db"));

    // Not against the current directory: loading from a directory elsewhere.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("foreman.toml");
    std::fs::write(&file, MINIMAL).expect("write");
    let c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.executor.path, Some(dir.path().join("executor.db")));
}

#[test]
fn executor_timezones() {
    let tz = |v: &str| {
        parse(&format!("{MINIMAL}timezone = {v:?}\n"))
            .executor
            .timezone
    };
    assert_eq!(tz("UTC"), ExecutorTz::Utc);
    assert_eq!(tz("local"), ExecutorTz::Local);
    assert_eq!(
        tz("+02:00"),
        ExecutorTz::Fixed(FixedOffset::east_opt(2 * 3600).unwrap())
    );
    assert_eq!(
        tz("-05:30"),
        ExecutorTz::Fixed(FixedOffset::west_opt(5 * 3600 + 1800).unwrap())
    );
}

// ---------------------------------------------------------------------------
// effective_toml round trip

#[test]
fn effective_toml_round_trips() {
    let reference = reference_text();
    let cases: Vec<(String, PathBuf)> = vec![
        (reference.clone(), reference_path()),
        (
            uncomment(
                &reference,
                &[
                    "host",
                    "snapshot_query",
                    "mark_failed_query",
                    "process_match",
                    "max_actions_per_sweep",
                    "max_actions_per_window",
                    "max_deferral",
                    "max_runtime",
                    "max_median_runtime",
                ],
            ),
            reference_path(),
        ),
        (
            format!("{reference}{}", wellbeing_sink_examples(&reference)),
            reference_path(),
        ),
        (MINIMAL.to_string(), PathBuf::from(ETC)),
        (
            r#"
interval = "90s"
future_tolerance = "30s"
host = "worker-07"
mode = "shadow"
max_cpu_pressure = 100.0

[executor]
kind = "command"
snapshot_command = ["/usr/bin/executorctl", "tasks", "--json"]
mark_failed_command = ["/usr/bin/executorctl", "fail", "{id}", "--reason", "{reason}"]
timeout = "45s"
history_window = "6h"
timezone = "+02:00"

[activity]
path = "/var/lib/foreman/foreman.db"
retention = "14days"

[defaults]
timeout = "1h 30m"
max_actions_per_sweep = 3
max_actions_per_window = 5
on_hung = "mark_only"

[droid_types."video.encode"]
timeout = "4h"
process_match = 'ffmpeg .*"\d+p"'
progress = ["cpu"]
max_deferral = "0s"
max_runtime = "36h"

[droid_types.scribe]
mode = "enforce"
"#
            .to_string(),
            PathBuf::from("/srv/foreman/foreman.toml"),
        ),
        (
            format!("{MINIMAL}timezone = \"local\"\n"),
            PathBuf::from(ETC),
        ),
        (format!("{MINIMAL}{WELLBEING}"), PathBuf::from(ETC)),
        (
            format!("{MINIMAL}[wellbeing]\ntimezone = \"utc\"\nmax_failure_rate = 1\n"),
            PathBuf::from(ETC),
        ),
    ];
    for (text, path) in cases {
        let first = parse_at(&text, &path);
        let effective = first.effective_toml();
        let second = Config::parse(&effective, &path).unwrap_or_else(|e| {
            panic!("effective_toml does not parse back: {e}\n--- effective ---\n{effective}")
        });
        assert_same_config(&first, &second);
        assert_eq!(effective, second.effective_toml());
    }
}

// ---------------------------------------------------------------------------
// Invalid configurations: each names file, line, column and key.

/// Every fixture, with where and what its error must say.
const INVALID: &[(&str, usize, usize, &str, &str)] = &[
    (
        "unknown_top_level_key",
        4,
        1,
        "intervall",
        "unknown field `intervall`, expected one of `interval`",
    ),
    (
        "unknown_top_level_key",
        4,
        1,
        "intervall",
        "; did you mean `interval`?",
    ),
    (
        "unknown_droid_type_key",
        8,
        1,
        "droid_types.builder.timout",
        "unknown field `timout`, expected one of `timeout`",
    ),
    (
        "unknown_droid_type_key",
        8,
        1,
        "droid_types.builder.timout",
        "; did you mean `timeout`?",
    ),
    (
        "unknown_executor_key",
        6,
        1,
        "executor.tiemout",
        "unknown field `tiemout`, expected one of `kind`, `path`",
    ),
    (
        "unknown_executor_key",
        6,
        1,
        "executor.tiemout",
        "; did you mean `timeout`?",
    ),
    (
        "malformed_duration",
        8,
        11,
        "defaults.timeout",
        "\"2 fortnights\", expected a duration",
    ),
    (
        "negative_duration",
        7,
        17,
        "defaults.startup_grace",
        "\"-5s\", expected a duration",
    ),
    (
        "wrong_type",
        2,
        12,
        "interval",
        "invalid type: integer `5`, expected a duration: write it as a quoted string such as \"5s\" or \"2m\"",
    ),
    (
        "integer_duration",
        8,
        10,
        "twin.window",
        "invalid type: integer `3600`, expected a duration: write it as a quoted string such as \"3600s\" or \"60m\"",
    ),
    (
        "empty",
        1,
        1,
        "executor",
        "missing field `executor`: the smallest configuration is the executor to watch, two lines under a header: `[executor]`, `kind = \"sqlite\"`, `path = \"/path/to/executor.db\"`",
    ),
    (
        "retention_too_short",
        8,
        1,
        "activity.retention",
        "0s is too short: give at least 1h (e.g. \"90d\"); findings must outlive a few sweeps",
    ),
    (
        "timeout_not_above_interval",
        10,
        1,
        "droid_types.scribe.timeout",
        "(1m 30s) must be greater than `interval` (2m)",
    ),
    (
        "empty_progress",
        7,
        1,
        "defaults.progress",
        "list at least one of \"heartbeat\", \"cpu\", \"io\"",
    ),
    (
        "unknown_progress_signal",
        7,
        26,
        "droid_types.trainer.progress",
        "unknown variant `gpu`, expected one of `heartbeat`, `cpu`, `io`",
    ),
    (
        "invalid_process_match",
        8,
        1,
        "droid_types.builder.process_match",
        "invalid regular expression",
    ),
    (
        "sqlite_without_path",
        3,
        1,
        "executor.kind",
        "kind = \"sqlite\" needs `path`",
    ),
    (
        "command_without_commands",
        2,
        2,
        "executor.snapshot_command",
        "kind = \"command\" needs `snapshot_command`",
    ),
    (
        "postgres_without_url",
        4,
        1,
        "executor.kind",
        "kind = \"postgres\" needs `url_env`",
    ),
    (
        "postgres_url_env_unset",
        5,
        1,
        "executor.url_env",
        "the environment variable FOREMAN_TEST_URL_NEVER_SET is not set",
    ),
    (
        "postgres_verify_ca",
        5,
        1,
        "executor.url_file",
        "sslmode=verify-ca is not supported: use verify-full",
    ),
    (
        "fleet_without_postgres",
        7,
        2,
        "fleet",
        "[fleet] needs [executor] kind = \"postgres\"",
    ),
    (
        "fleet_lost_too_soon",
        8,
        1,
        "fleet.host_lost_after",
        "give at least 3 × interval (6m)",
    ),
    (
        "fleet_bad_schema",
        8,
        1,
        "fleet.schema",
        "is not a plain PostgreSQL name",
    ),
    (
        "bad_timezone",
        6,
        1,
        "executor.timezone",
        "\"Europe/Paris\" is not a timezone Foreman understands; give \"UTC\", \"local\" or an offset like \"+02:00\"",
    ),
    (
        "syntax_error",
        7,
        11,
        "defaults.timeout",
        "string values must be quoted",
    ),
];

fn invalid(path: &Path) -> (String, usize, usize, String, String) {
    match Config::load(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        }) => (file, line, column, key, message),
        Err(e) => panic!("{}: not an Invalid error: {e}", path.display()),
    }
}

#[test]
fn invalid_configs_name_file_line_column_and_key() {
    for &(name, line, column, key, fragment) in INVALID {
        let path = fixture(name);
        let got = invalid(&path);
        assert_eq!(
            (got.0.as_str(), got.1, got.2, got.3.as_str()),
            (path.display().to_string().as_str(), line, column, key),
            "{name}: {}",
            got.4
        );
        assert!(
            got.4.contains(fragment),
            "{name}: message {:?} lacks {fragment:?}",
            got.4
        );
    }
}

#[test]
fn every_fixture_is_an_invalid_case_above() {
    let dir = manifest_dir().join("tests/fixtures/config");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = INVALID.iter().map(|c| c.0.to_string()).collect();
    listed.sort();
    // A fixture may have more than one row, one per fragment.
    listed.dedup();
    assert_eq!(on_disk, listed);
}

/// The URL may hold a password: no message repeats it, and the
/// effective configuration names where it came from, not what it is.
#[test]
fn a_postgres_url_is_never_printed() {
    let (_, _, _, _, message) = invalid(&fixture("postgres_verify_ca"));
    assert!(!message.contains("hunter2"), "{message}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("url"),
        "postgres://foreman:hunter2@db.internal/executor\n",
    )
    .expect("url file");
    let text = "host = \"h1\"\n[executor]\nkind = \"postgres\"\nurl_file = \"url\"\n";
    let c = parse_at(text, &dir.path().join("foreman.toml"));
    let fleet = c.fleet.as_ref().expect("a postgres executor is a fleet");
    assert_eq!(fleet.schema, "foreman");
    assert_eq!(fleet.host_lost_after, secs(600));
    let effective = c.effective_toml();
    assert!(!effective.contains("hunter2"), "{effective}");
    assert!(effective.contains("url_file = "), "{effective}");
    assert!(!format!("{c:?}").contains("hunter2"));
    // The effective configuration loads back to the same.
    let again = parse_at(&effective, &dir.path().join("foreman.toml"));
    assert_eq!(again.effective_toml(), effective);
}

#[test]
fn error_message_tells_the_fix() {
    let (_, _, _, _, message) = invalid(&fixture("timeout_not_above_interval"));
    assert!(message.contains("raise the timeout or lower the interval"));
    let (_, _, _, _, message) = invalid(&fixture("invalid_process_match"));
    assert!(message.contains("unclosed group"), "{message}");
    let (_, _, _, _, message) = invalid(&fixture("command_without_commands"));
    assert!(message.contains("an argv list"), "{message}");
}

#[test]
fn error_display_is_file_line_column_key() {
    let path = fixture("wrong_type");
    let e = Config::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:12: key `interval`: invalid type: integer `5`, expected a duration: write it as a quoted string such as \"5s\" or \"2m\"",
            path.display()
        )
    );
}

#[test]
fn unreadable_config_says_how_to_give_another() {
    let path = manifest_dir().join("tests/fixtures/config/does-not-exist.toml");
    match Config::load(&path) {
        Err(ConfigError::Unreadable { file, message }) => {
            assert_eq!(file, path.display().to_string());
            assert!(message.contains("--config"), "{message}");
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

/// Cases beyond the fixtures: (text, line, column, key, fragment).
#[test]
fn more_invalid_configs_name_their_key() {
    let cases: &[(&str, usize, usize, &str, &str)] = &[
        // A missing required section is named, at the top of the file.
        ("interval = \"2m\"\n", 1, 1, "executor", "missing field `executor`"),
        // A missing required key is named, at its table's header.
        (
            "interval = \"2m\"\n[executor]\npath = \"x.db\"\n",
            2,
            1,
            "executor.kind",
            "missing field `kind`",
        ),
        (
            "[executor]\nkind = \"mysql\"\n",
            2,
            8,
            "executor.kind",
            "unknown variant `mysql`",
        ),
        (
            "[executorr]\nkind = \"sqlite\"\n",
            1,
            2,
            "executorr",
            "unknown field `executorr`",
        ),
        (
            "mode = \"dry-run\"\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            1,
            8,
            "mode",
            "expected `enforce` or `shadow`",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[droid_types.\"video.encode\"]\ntimeout = 5\n",
            5,
            11,
            "droid_types.\"video.encode\".timeout",
            "expected a duration",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[droid_types.a]\non_hung = \"kill\"\n",
            5,
            11,
            "droid_types.a.on_hung",
            "expected `terminate` or `mark_only`",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[droid_types]\nbuilder = { timeout = \"1h\", timout = \"2h\" }\n",
            5,
            29,
            "droid_types.builder.timout",
            "unknown field `timout`",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[defaults\ntimeout = \"1h\"\n",
            4,
            10,
            "defaults",
            "unclosed table",
        ),
        (
            "interval = \"2m\"\ninterval = \"3m\"\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            2,
            1,
            "interval",
            "duplicate key",
        ),
        (
            "[executor]\nkind = \"command\"\nsnapshot_command = [\"/bin/x\"]\n",
            1,
            2,
            "executor.mark_failed_command",
            "needs `mark_failed_command`",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\nsnapshot_command = [\"/bin/x\"]\n",
            4,
            1,
            "executor.snapshot_command",
            "commands are for kind = \"command\"",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\ntimeout = \"0s\"\n",
            4,
            1,
            "executor.timeout",
            "must be greater than 0",
        ),
        (
            "interval = \"0s\"\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            1,
            1,
            "interval",
            "must be greater than 0",
        ),
        (
            "host = \" \"\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            1,
            1,
            "host",
            "omit it to use this machine's hostname",
        ),
        (
            "max_cpu_pressure = 150.0\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            1,
            1,
            "max_cpu_pressure",
            "give 0 to 100",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[defaults]\nmax_actions_per_sweep = 0\n",
            5,
            1,
            "defaults.max_actions_per_sweep",
            "give at least 1",
        ),
        // Syntax errors name the key of their line, under its header.
        (
            "interval = 2m\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            1,
            12,
            "interval",
            "string values must be quoted",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[droid_types.\"video.encode\"]\ntimeout = 2h\n",
            5,
            11,
            "droid_types.\"video.encode\".timeout",
            "string values must be quoted",
        ),
        // Operators' commonest slips get the fix appended: the nearest known
        // key of the same table, in any table...
        (
            "[executorr]\nkind = \"sqlite\"\n",
            1,
            2,
            "executorr",
            "unknown field `executorr`, expected one of `interval`, `future_tolerance`, `host`, `mode`, `max_cpu_pressure`, `executor`, `activity`, `defaults`, `droid_types`, `alerts`, `twin`, `wellbeing`, `review`, `http`, `monitor`, `fleet`, `maintenance`; did you mean `executor`?",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[activity]\nretension = \"90d\"\n",
            5,
            1,
            "activity.retension",
            "unknown field `retension`, expected `path` or `retention`; did you mean `retention`?",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[droid_types]\nbuilder = { timeout = \"1h\", startupgrace = \"2h\" }\n",
            5,
            29,
            "droid_types.builder.startupgrace",
            "did you mean `startup_grace`?",
        ),
        // ...a number where a duration goes, whatever the key...
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\n[defaults]\nkill_grace = 1.5\n",
            5,
            14,
            "defaults.kill_grace",
            "invalid type: floating point `1.5`, expected a duration: write it as a quoted string such as \"90s\" or \"2m\"",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\ntimeout = 0\n",
            4,
            11,
            "executor.timeout",
            "invalid type: integer `0`, expected a duration: write it as a quoted string such as \"0s\" or \"2m\"",
        ),
        // ...and a file without [executor], truly empty or not.
        (
            "",
            1,
            1,
            "executor",
            "`path = \"/path/to/executor.db\"` (or kind = \"command\" with snapshot_command, or kind = \"postgres\" with url_env or url_file)",
        ),
        (
            "[defaults]\ntimeout = \"1h\"\n",
            1,
            1,
            "executor",
            "missing field `executor`: the smallest configuration is the executor to watch",
        ),
        // An inherited timeout that the interval outgrew is reported on
        // [defaults], whose value every droid type inherits.
        (
            "interval = \"1h\"\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n[defaults]\nexit_grace = \"1m\"\n",
            5,
            2,
            "defaults.timeout",
            "raise the timeout or lower the interval",
        ),
    ];
    for &(text, line, column, key, fragment) in cases {
        assert_invalid(text, line, column, key, fragment);
    }
}

/// A key nowhere near a known one gets no guess: a wrong suggestion would
/// send the operator after the wrong setting.
#[test]
fn an_unknown_key_far_from_every_known_one_gets_no_suggestion() {
    for (text, key) in [
        (
            "colour = \"red\"\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            "colour",
        ),
        // A short key shares nothing with any name: as many edits as letters.
        (
            "xy = 1\n[executor]\nkind = \"sqlite\"\npath = \"x\"\n",
            "xy",
        ),
        (
            "[executor]\nkind = \"sqlite\"\npath = \"x\"\ndatabase_url = \"y\"\n",
            "executor.database_url",
        ),
    ] {
        match Config::parse(text, Path::new(ETC)) {
            Err(ConfigError::Invalid {
                key: got, message, ..
            }) => {
                assert_eq!(got, key, "{message}");
                assert!(message.starts_with("unknown field `"), "{message}");
                assert!(!message.contains("did you mean"), "{message}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
    use super::{edit_distance, nearest};
    for (a, b, d) in [
        ("", "", 0),
        ("timeout", "timeout", 0),
        ("timout", "timeout", 1),
        ("timeoutt", "timeout", 1),
        ("tinmeout", "timeout", 1),
        ("tiemout", "timeout", 1),
        ("retension", "retention", 1),
        ("", "kind", 4),
        ("kind", "", 4),
        ("abc", "cab", 2),
    ] {
        assert_eq!(edit_distance(a, b), d, "{a:?} → {b:?}");
        assert_eq!(edit_distance(b, a), d, "{b:?} → {a:?}");
    }
    let known = ["timeout", "startup_grace", "exit_grace", "kill_grace"];
    assert_eq!(nearest("exitgrace", known.into_iter()), Some("exit_grace"));
    // The first of two equally near keys, in the order serde lists them.
    assert_eq!(
        nearest("xit_grace", ["exit_grace", "kit_grace"].into_iter()),
        Some("exit_grace")
    );
    // Long names allow a third of their length: 3 edits in 14 letters.
    assert_eq!(
        nearest("started_graces", known.into_iter()),
        Some("startup_grace")
    );
    assert_eq!(nearest("grace", known.into_iter()), None);
    assert_eq!(nearest("timeout", std::iter::empty()), None);
}

/// `text`, parsed as /etc/foreman/foreman.toml, is rejected at this line,
/// column and key with a message holding `fragment`.
fn assert_invalid(text: &str, line: usize, column: usize, key: &str, fragment: &str) {
    match Config::parse(text, Path::new(ETC)) {
        Err(ConfigError::Invalid {
            file,
            line: l,
            column: c,
            key: k,
            message,
        }) => {
            assert_eq!(
                (file.as_str(), l, c, k.as_str()),
                (ETC, line, column, key),
                "{message}\n--- in ---\n{text}"
            );
            assert!(
                message.contains(fragment),
                "{message:?} lacks {fragment:?}\n--- in ---\n{text}"
            );
        }
        other => panic!("expected Invalid, got {other:?}\n--- in ---\n{text}"),
    }
}

// ---------------------------------------------------------------------------
// [[alerts]]

/// The reference's commented-out sink, uncommented: as a webhook with every
/// webhook key, and as a command with `argv`.
#[test]
fn shipped_alert_example_is_valid() {
    let text = reference_text();
    let start = text.find("# [[alerts]]").expect("an [[alerts]] example");
    let example: Vec<&str> = text[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with("[[") || l.contains(" = "))
        .collect();
    let webhook: String = example
        .iter()
        .filter(|l| !l.starts_with("argv = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = parse(&format!("{MINIMAL}{webhook}"));
    assert_eq!(c.alerts.len(), 1);
    let s = &c.alerts[0];
    assert_eq!(s.name, "recovery");
    match &s.target {
        SinkTarget::Webhook {
            url,
            headers,
            bearer_token_env,
        } => {
            assert_eq!(url, "https://recovery.internal/foreman/alerts");
            assert_eq!(headers.get("X-Team").map(String::as_str), Some("platform"));
            assert_eq!(bearer_token_env.as_deref(), Some("FOREMAN_ALERT_TOKEN"));
        }
        other => panic!("not a webhook: {other:?}"),
    }
    assert!(s.wants(Kind::Hung, Some("builder")));
    assert!(!s.wants(Kind::Hung, Some("scribe")));
    assert!(!s.wants(Kind::Unverifiable, Some("builder")));
    assert_eq!(
        (
            s.timeout,
            s.retry_base,
            s.retry_cap,
            s.max_age,
            s.realert_after
        ),
        (secs(10), secs(10), secs(600), secs(86400), secs(3600))
    );

    let command: String = example
        .iter()
        .filter(|l| {
            !["url = ", "headers = ", "bearer_token_env = "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.replace("kind = \"webhook\"", "kind = \"command\"") + "\n")
        .collect();
    let c = parse(&format!("{MINIMAL}{command}"));
    assert_eq!(
        c.alerts[0].target,
        SinkTarget::Command {
            argv: vec![
                "/usr/local/bin/page".into(),
                "--team".into(),
                "platform".into()
            ]
        }
    );
}

#[test]
fn a_minimal_sink_gets_every_default_and_wants_everything() {
    let c = parse(&format!(
        "{MINIMAL}[[alerts]]\nname = \"r\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n"
    ));
    let s = &c.alerts[0];
    assert!(s.kinds.is_empty() && s.droid_types.is_empty());
    assert!(s.wants(Kind::Dead, None));
    assert!(s.wants(Kind::Hung, Some("anything")));
    assert_eq!(s.realert_after, secs(3600));
    assert!(parse(MINIMAL).alerts.is_empty());
}

#[test]
fn invalid_sinks_name_their_key() {
    let sink = |body: &str| format!("{MINIMAL}[[alerts]]\nname = \"a\"\n{body}");
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            sink("kind = \"webhook\"\nurll = \"http://x\"\n"),
            7,
            "alerts[0].urll",
            "unknown field `urll`",
        ),
        (
            sink("kind = \"pager\"\n"),
            6,
            "alerts[0].kind",
            "unknown variant `pager`",
        ),
        (
            sink("kind = \"webhook\"\n"),
            6,
            "alerts[0].kind",
            "needs `url`",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"ftp://x\"\n"),
            7,
            "alerts[0].url",
            "not an http:// or https:// URL",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://x\"\nbearer_token_env = \"TOKEN=abc\"\n"),
            8,
            "alerts[0].bearer_token_env",
            "never the token",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://x\"\nheaders = { \"Idempotency-Key\" = \"1\" }\n"),
            8,
            "alerts[0].headers",
            "set by Foreman itself",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://x\"\nheaders = { \"X Team\" = \"1\" }\n"),
            8,
            "alerts[0].headers",
            "not a valid header name",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://x\"\nheaders = { \"X-Team\" = \"a\\r\\nb\" }\n"),
            8,
            "alerts[0].headers",
            "control character",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\ntimeout = \"5m\"\n"),
            8,
            "alerts[0].timeout",
            "5m is more than the maximum of 1m for one delivery attempt",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\nmax_age = \"5s\"\n"),
            8,
            "alerts[0].max_age",
            "before their first retry",
        ),
        (
            // A missing key is located at its table's header.
            sink("kind = \"command\"\n"),
            4,
            "alerts[0].argv",
            "needs `argv`",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\nurl = \"http://x\"\n"),
            8,
            "alerts[0].url",
            "is for kind = \"webhook\"",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\nkinds = [\"alive\"]\n"),
            8,
            "alerts[0].kinds",
            "never a finding",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\nkinds = [\"deadd\"]\n"),
            8,
            "alerts[0].kinds",
            "unknown variant `deadd`",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\nretry_base = \"1m\"\nretry_cap = \"10s\"\n"),
            9,
            "alerts[0].retry_cap",
            "below `retry_base`",
        ),
        (
            format!(
                "{}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\n",
                sink("kind = \"command\"\nargv = [\"/bin/true\"]\n")
            ),
            9,
            "alerts[1].name",
            "already named \"a\"",
        ),
    ];
    for (text, line, key, fragment) in cases {
        match Config::parse(&text, Path::new("/etc/foreman/foreman.toml")) {
            Err(ConfigError::Invalid {
                line: l,
                key: k,
                message,
                ..
            }) => {
                assert_eq!((l, k.as_str()), (line, key), "{message}\n{text}");
                assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            }
            other => panic!("expected an invalid config, got {other:?}\n{text}"),
        }
    }
}

#[test]
fn sinks_round_trip_through_effective_toml() {
    let text = format!(
        "{MINIMAL}[[alerts]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://x/y\"\nheaders = {{ \"X-A\" = \"1\", b = \"two words\" }}\nbearer_token_env = \"T\"\nkinds = [\"dead\", \"hung\"]\nretry_cap = \"1h\"\n\n[[alerts]]\nname = \"cmd\"\nkind = \"command\"\nargv = [\"/bin/cat\", \"; rm -rf x\"]\ntimeout = \"3s\"\ndroid_types = [\"video.encode\"]\nmax_age = \"2d\"\nrealert_after = \"15m\"\n"
    );
    let first = parse(&text);
    let effective = first.effective_toml();
    let second = parse(&effective);
    assert_eq!(first.alerts, second.alerts, "{effective}");
    assert_eq!(second.alerts.len(), 2);
    assert_eq!(effective, second.effective_toml());
}

// ---------------------------------------------------------------------------
// [wellbeing]

/// Every `[wellbeing]` key away from its default, two droid types, a
/// disabled one, and a sink of each kind.
const WELLBEING: &str = r#"
[defaults]
enabled = false

[droid_types.builder]
enabled = true

[droid_types.scribe]
timeout = "1h"

[wellbeing]
schedule = "0 30 7 * * Mon-Fri"
timezone = "Europe/Paris"
active_within = "2d"
max_failure_rate = 0.5
min_finished = 2
max_findings = 0
max_median_runtime = "45m"
dispatch_timeout = "20m"
plan_stall_timeout = "3h"
max_sweep_errors = 0
max_outbox_age = "6h"

[wellbeing.droid_types.builder]
active_within = "7d"
max_median_runtime = "3h"

[wellbeing.droid_types."video.encode"]
max_failure_rate = 0.0
min_finished = 1
max_findings = 10
dispatch_timeout = "90s"

[[wellbeing.sinks]]
name = "issues"
kind = "command"
argv = ["gh", "issue", "create", "--title", "{title}", "--body-file", "-"]
timeout = "30s"

[[wellbeing.sinks]]
name = "tracker"
kind = "webhook"
url = "https://tracker.internal/initiatives"
headers = { "X-Team" = "platform" }
bearer_token_env = "TRACKER_TOKEN"
retry_base = "1m"
retry_cap = "2h"
max_age = "3d"

[[wellbeing.sinks]]
name = "inbox"
kind = "file"
path = "initiatives"
"#;

/// The reference's commented-out `[[wellbeing.sinks]]` examples,
/// uncommented: each example's header and assignments.
fn wellbeing_sink_examples(text: &str) -> String {
    let start = text
        .find("# [[wellbeing.sinks]]")
        .expect("a [[wellbeing.sinks]] example");
    let end = start
        + text[start..]
            .find("# [[alerts]]")
            .expect("the [[alerts]] example follows");
    text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            *l == "[[wellbeing.sinks]]"
                || l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn wellbeing_defaults() {
    let c = parse(MINIMAL);
    let w = &c.wellbeing;
    assert_eq!(w.schedule.text(), "0 0 6 * * *");
    assert_eq!(w.schedule.zone(), Zone::Local);
    assert_eq!(w.limits, default_limits());
    assert!(w.droid_types.is_empty());
    assert_eq!(w.plan_stall_timeout, secs(3600));
    assert_eq!(w.max_sweep_errors, 5);
    assert_eq!(w.max_outbox_age, secs(3600));
    assert!(w.sinks.is_empty());
    // A droid type without a section is judged with [wellbeing]'s limits.
    assert!(std::ptr::eq(w.limits("anything"), &w.limits));
}

#[test]
fn wellbeing_keys_and_per_type_limits_inherit() {
    let c = parse_at(
        &format!("{MINIMAL}{WELLBEING}"),
        Path::new("/srv/foreman/conf/foreman.toml"),
    );
    let w = &c.wellbeing;
    assert_eq!(w.schedule.text(), "0 30 7 * * Mon-Fri");
    assert_eq!(w.schedule.zone(), Zone::parse("Europe/Paris").unwrap());
    let own = WellbeingLimits {
        active_within: secs(2 * 86400),
        max_failure_rate: 0.5,
        min_finished: 2,
        max_findings: 0,
        max_median_runtime: Some(secs(45 * 60)),
        dispatch_timeout: secs(20 * 60),
    };
    assert_eq!(w.limits, own);
    assert_eq!(w.plan_stall_timeout, secs(3 * 3600));
    assert_eq!(w.max_sweep_errors, 0);
    assert_eq!(w.max_outbox_age, secs(6 * 3600));

    // Each type's own keys win; every other key is [wellbeing]'s, not the
    // built-in default.
    assert_eq!(
        *w.limits("builder"),
        WellbeingLimits {
            active_within: secs(7 * 86400),
            max_median_runtime: Some(secs(3 * 3600)),
            ..own.clone()
        }
    );
    assert_eq!(
        *w.limits("video.encode"),
        WellbeingLimits {
            max_failure_rate: 0.0,
            min_finished: 1,
            max_findings: 10,
            dispatch_timeout: secs(90),
            ..own.clone()
        }
    );
    assert_eq!(*w.limits("scribe"), own);

    // Sinks: the retry keys as given or at [[alerts]]'s defaults; a relative
    // file path against the file's directory.
    let names: Vec<&str> = w.sinks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["issues", "tracker", "inbox"]);
    assert_eq!(
        w.sinks[0].target,
        SinkTarget::Command {
            argv: [
                "gh",
                "issue",
                "create",
                "--title",
                "{title}",
                "--body-file",
                "-"
            ]
            .map(String::from)
            .to_vec()
        }
    );
    assert_eq!(w.sinks[0].timeout, secs(30));
    assert_eq!(
        (
            w.sinks[1].retry_base,
            w.sinks[1].retry_cap,
            w.sinks[1].max_age
        ),
        (secs(60), secs(7200), secs(3 * 86400))
    );
    assert_eq!(
        w.sinks[2].target,
        SinkTarget::File {
            dir: PathBuf::from("/srv/foreman/conf/initiatives")
        }
    );
    let inbox = &w.sinks[2];
    assert_eq!(
        (
            inbox.timeout,
            inbox.retry_base,
            inbox.retry_cap,
            inbox.max_age
        ),
        (secs(10), secs(10), secs(600), secs(86400))
    );
    assert!(w
        .sinks
        .iter()
        .all(|s| s.kinds.is_empty() && s.droid_types.is_empty()));
    assert!(c.alerts.is_empty());
}

#[test]
fn enabled_inherits_from_defaults() {
    assert!(parse(MINIMAL).defaults.enabled);
    let c = parse(&format!("{MINIMAL}{WELLBEING}"));
    assert!(!c.defaults.enabled);
    assert!(c.policy("builder").enabled);
    // A section that leaves it out, and a droid type without a section,
    // take [defaults]'.
    assert!(!c.policy("scribe").enabled);
    assert!(!c.policy("unconfigured").enabled);
    let c = parse(&format!(
        "{MINIMAL}[droid_types.legacy]\nenabled = false\n[droid_types.scribe]\n"
    ));
    assert!(c.defaults.enabled && c.policy("scribe").enabled);
    assert!(!c.policy("legacy").enabled);
}

#[test]
fn wellbeing_timezones() {
    let zone = |tz: &str| {
        parse(&format!("{MINIMAL}[wellbeing]\ntimezone = {tz:?}\n"))
            .wellbeing
            .schedule
            .zone()
    };
    assert_eq!(zone("local"), Zone::Local);
    assert_eq!(zone("UTC").name(), "UTC");
    assert_eq!(zone("utc"), zone("UTC"));
    assert_eq!(zone("America/New_York").name(), "America/New_York");
}

#[test]
fn file_sink_paths_resolve_against_the_config_files_directory() {
    let text = |path: &str| {
        format!(
            "{MINIMAL}[[wellbeing.sinks]]\nname = \"inbox\"\nkind = \"file\"\npath = {path:?}\n"
        )
    };
    let dir = |path: &str| {
        let c = parse_at(&text(path), Path::new("/srv/foreman/conf/foreman.toml"));
        match &c.wellbeing.sinks[0].target {
            SinkTarget::File { dir } => dir.clone(),
            other => panic!("not a file sink: {other:?}"),
        }
    };
    assert_eq!(dir("inbox"), Path::new("/srv/foreman/conf/inbox"));
    assert_eq!(
        dir("../shared/inbox"),
        Path::new("/srv/foreman/conf/../shared/inbox")
    );
    assert_eq!(
        dir("/var/lib/foreman/inbox"),
        Path::new("/var/lib/foreman/inbox")
    );
}

/// The reference's commented-out sinks, uncommented: one of each kind.
#[test]
fn shipped_wellbeing_sink_examples_are_valid() {
    let examples = wellbeing_sink_examples(&reference_text());
    let c = parse_at(&format!("{MINIMAL}{examples}"), &reference_path());
    let sinks = &c.wellbeing.sinks;
    assert_eq!(sinks.len(), 3, "{examples}");
    let by_kind = |want: &str| {
        sinks
            .iter()
            .find(|s| {
                want == match s.target {
                    SinkTarget::Webhook { .. } => "webhook",
                    SinkTarget::Command { .. } => "command",
                    SinkTarget::File { .. } => "file",
                }
            })
            .unwrap_or_else(|| panic!("no {want} example"))
    };
    match &by_kind("command").target {
        SinkTarget::Command { argv } => {
            assert_eq!(
                argv,
                &[
                    "gh",
                    "issue",
                    "create",
                    "--title",
                    "{title}",
                    "--body-file",
                    "-"
                ]
            );
        }
        _ => unreachable!(),
    }
    match &by_kind("webhook").target {
        SinkTarget::Webhook {
            url,
            bearer_token_env,
            ..
        } => {
            assert!(url.starts_with("https://"), "{url}");
            assert!(bearer_token_env.is_some());
        }
        _ => unreachable!(),
    }
    assert_eq!(
        by_kind("file").target,
        SinkTarget::File {
            dir: PathBuf::from("/var/lib/foreman/initiatives")
        }
    );
    // The retry keys are shown at their defaults.
    let defaults = parse(&format!(
        "{MINIMAL}[[wellbeing.sinks]]\nname = \"inbox\"\nkind = \"file\"\npath = \"/var/lib/foreman/initiatives\"\n"
    ));
    assert_eq!(by_kind("file"), &defaults.wellbeing.sinks[0]);
}

#[test]
fn invalid_wellbeing_names_file_line_column_and_key() {
    // [wellbeing]'s first key is on line 5, a droid type's on line 6.
    let w = |body: &str| format!("{MINIMAL}[wellbeing]\n{body}");
    let t = |name: &str, body: &str| {
        format!("{MINIMAL}[wellbeing]\n[wellbeing.droid_types.{name}]\n{body}")
    };
    let cases: Vec<(String, usize, usize, &str, &str)> = vec![
        // Five fields: the message shows the six-field form.
        (
            w("schedule = \"0 6 * * *\"\n"),
            5,
            1,
            "wellbeing.schedule",
            "classic cron's \"0 6 * * *\" is \"0 0 6 * * *\"",
        ),
        (
            w("schedule = \"0 6 * * *\"\n"),
            5,
            1,
            "wellbeing.schedule",
            "Give six fields, seconds first: `sec min hour day-of-month month day-of-week`",
        ),
        (
            w("schedule = \"every day\"\n"),
            5,
            1,
            "wellbeing.schedule",
            "not a schedule Foreman understands",
        ),
        (
            w("schedule = \"0 0 6 30 2 *\"\n"),
            5,
            1,
            "wellbeing.schedule",
            "never fires",
        ),
        (
            w("schedule = \"0 0 6 * * *\"\ntimezone = \"Mars/Olympus\"\n"),
            6,
            1,
            "wellbeing.timezone",
            "\"Mars/Olympus\" is not a timezone Foreman knows; give \"local\", \"UTC\" or an IANA name",
        ),
        (
            w("schedule = 6\n"),
            5,
            12,
            "wellbeing.schedule",
            "invalid type: integer `6`, expected a string",
        ),
        (
            w("active_within = \"0s\"\n"),
            5,
            1,
            "wellbeing.active_within",
            "must be greater than 0",
        ),
        (
            w("max_failure_rate = 1.5\n"),
            5,
            1,
            "wellbeing.max_failure_rate",
            "1.5 is not a fraction; give 0 to 1",
        ),
        (
            w("max_failure_rate = -0.1\n"),
            5,
            1,
            "wellbeing.max_failure_rate",
            "give 0 to 1",
        ),
        (
            w("max_failure_rate = \"25%\"\n"),
            5,
            20,
            "wellbeing.max_failure_rate",
            "expected f64",
        ),
        (
            w("min_finished = 0\n"),
            5,
            1,
            "wellbeing.min_finished",
            "give at least 1",
        ),
        (
            w("max_findings = -1\n"),
            5,
            16,
            "wellbeing.max_findings",
            "expected u32",
        ),
        (
            w("max_median_runtime = \"0s\"\n"),
            5,
            1,
            "wellbeing.max_median_runtime",
            "omit it not to judge run time",
        ),
        (
            w("dispatch_timeout = \"0s\"\n"),
            5,
            1,
            "wellbeing.dispatch_timeout",
            "must be greater than 0",
        ),
        (
            w("plan_stall_timeout = \"0s\"\n"),
            5,
            1,
            "wellbeing.plan_stall_timeout",
            "must be greater than 0",
        ),
        (
            w("max_outbox_age = \"0s\"\n"),
            5,
            1,
            "wellbeing.max_outbox_age",
            "must be greater than 0",
        ),
        (
            w("max_sweep_errors = 2.5\n"),
            5,
            20,
            "wellbeing.max_sweep_errors",
            "expected u32",
        ),
        (
            w("schedul = \"0 0 6 * * *\"\n"),
            5,
            1,
            "wellbeing.schedul",
            "unknown field `schedul`, expected one of `schedule`",
        ),
        // Per droid type: the same rules, named by the type's section.
        (
            t("builder", "max_failure_rate = 2.0\n"),
            6,
            1,
            "wellbeing.droid_types.builder.max_failure_rate",
            "give 0 to 1",
        ),
        (
            t("\"video.encode\"", "min_finished = 0\n"),
            6,
            1,
            "wellbeing.droid_types.\"video.encode\".min_finished",
            "give at least 1",
        ),
        (
            t("builder", "active_within = \"0s\"\n"),
            6,
            1,
            "wellbeing.droid_types.builder.active_within",
            "must be greater than 0",
        ),
        (
            t("builder", "max_median_runtime = \"0s\"\n"),
            6,
            1,
            "wellbeing.droid_types.builder.max_median_runtime",
            "must be greater than 0",
        ),
        (
            t("builder", "dispatch_timeout = 5\n"),
            6,
            20,
            "wellbeing.droid_types.builder.dispatch_timeout",
            "expected a duration",
        ),
        // Only the limits may be set per droid type.
        (
            t("builder", "schedule = \"0 0 7 * * *\"\n"),
            6,
            1,
            "wellbeing.droid_types.builder.schedule",
            "unknown field `schedule`, expected one of `active_within`",
        ),
        (
            t("builder", "active_within = 7d\n"),
            6,
            17,
            "wellbeing.droid_types.builder.active_within",
            "string values must be quoted",
        ),
        // Dotted keys and inline tables are located as well as sections.
        (
            format!("{MINIMAL}[wellbeing]\ndroid_types.builder.max_findings = -2\n"),
            5,
            36,
            "wellbeing.droid_types.builder.max_findings",
            "expected u32",
        ),
        (
            format!("wellbeing.droid_types.a = {{ min_finished = 0 }}\n{MINIMAL}"),
            1,
            29,
            "wellbeing.droid_types.a.min_finished",
            "give at least 1",
        ),
        // `enabled` is a boolean.
        (
            format!("{MINIMAL}[defaults]\nenabled = \"no\"\n"),
            5,
            11,
            "defaults.enabled",
            "expected a boolean",
        ),
        (
            format!("{MINIMAL}[droid_types.builder]\nenabled = 0\n"),
            5,
            11,
            "droid_types.builder.enabled",
            "expected a boolean",
        ),
    ];
    for (text, line, column, key, fragment) in &cases {
        assert_invalid(text, *line, *column, key, fragment);
    }
}

#[test]
fn invalid_wellbeing_sinks_name_file_line_column_and_key() {
    // The sink's header is on line 4, `name` on 5, `kind` on 6.
    let sink = |body: &str| format!("{MINIMAL}[[wellbeing.sinks]]\nname = \"a\"\n{body}");
    let alert = |body: &str| format!("{MINIMAL}[[alerts]]\nname = \"a\"\n{body}");
    let file = "kind = \"file\"\npath = \"/var/lib/foreman/inbox\"\n";
    let cases: Vec<(String, usize, usize, &str, &str)> = vec![
        // A missing key is located at its table's header.
        (
            sink("kind = \"file\"\n"),
            4,
            1,
            "wellbeing.sinks[0].path",
            "kind = \"file\" needs `path`, the directory",
        ),
        (
            sink("kind = \"file\"\npath = \"\"\n"),
            7,
            1,
            "wellbeing.sinks[0].path",
            "needs `path`",
        ),
        (
            format!("{MINIMAL}[[wellbeing.sinks]]\nkind = \"file\"\npath = \"x\"\n"),
            4,
            1,
            "wellbeing.sinks[0].name",
            "missing field `name`",
        ),
        (
            format!("{MINIMAL}[[alerts]]\nkind = \"command\"\nargv = [\"/bin/true\"]\n"),
            4,
            1,
            "alerts[0].name",
            "missing field `name`",
        ),
        (
            sink("kind = \"pager\"\n"),
            6,
            8,
            "wellbeing.sinks[0].kind",
            "unknown variant `pager`, expected one of `webhook`, `command`, `file`",
        ),
        (
            sink(&format!("{file}urll = \"http://x\"\n")),
            8,
            1,
            "wellbeing.sinks[0].urll",
            "unknown field `urll`",
        ),
        // The keys of the other kinds.
        (
            sink(&format!("{file}url = \"http://x\"\n")),
            8,
            1,
            "wellbeing.sinks[0].url",
            "`url` is for kind = \"webhook\"; a file sink takes `path`",
        ),
        (
            sink(&format!("{file}headers = {{ a = \"b\" }}\n")),
            8,
            1,
            "wellbeing.sinks[0].headers",
            "`headers` is for kind = \"webhook\"",
        ),
        (
            sink(&format!("{file}bearer_token_env = \"T\"\n")),
            8,
            1,
            "wellbeing.sinks[0].bearer_token_env",
            "`bearer_token_env` is for kind = \"webhook\"",
        ),
        (
            sink(&format!("{file}argv = [\"/bin/true\"]\n")),
            8,
            1,
            "wellbeing.sinks[0].argv",
            "`argv` is for kind = \"command\"; a file sink takes `path`",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://x\"\npath = \"inbox\"\n"),
            8,
            1,
            "wellbeing.sinks[0].path",
            "`path` is for kind = \"file\"; a webhook takes `url`",
        ),
        (
            sink("kind = \"command\"\nargv = [\"/bin/true\"]\npath = \"inbox\"\n"),
            8,
            1,
            "wellbeing.sinks[0].path",
            "`path` is for kind = \"file\"; a command takes `argv`",
        ),
        // Alert-only keys.
        (
            sink(&format!("{file}kinds = [\"dead\"]\n")),
            8,
            1,
            "wellbeing.sinks[0].kinds",
            "`kinds` is for [[alerts]]",
        ),
        (
            sink(&format!("{file}droid_types = [\"builder\"]\n")),
            8,
            1,
            "wellbeing.sinks[0].droid_types",
            "`droid_types` is for [[alerts]]",
        ),
        (
            sink(&format!("{file}realert_after = \"1h\"\n")),
            8,
            1,
            "wellbeing.sinks[0].realert_after",
            "`realert_after` is for [[alerts]]",
        ),
        // The rules of [[alerts]], under this section's name.
        (
            sink("kind = \"webhook\"\nurl = \"ftp://x\"\n"),
            7,
            1,
            "wellbeing.sinks[0].url",
            "not an http:// or https:// URL",
        ),
        (
            sink("kind = \"command\"\nargv = []\n"),
            7,
            1,
            "wellbeing.sinks[0].argv",
            "needs `argv`",
        ),
        (
            sink(&format!("{file}timeout = \"5m\"\n")),
            8,
            1,
            "wellbeing.sinks[0].timeout",
            "5m is more than the maximum of 1m",
        ),
        (
            sink(&format!("{file}max_age = \"5s\"\n")),
            8,
            1,
            "wellbeing.sinks[0].max_age",
            "initiatives would expire",
        ),
        (
            sink(&format!("{file}retry_base = \"0s\"\n")),
            8,
            1,
            "wellbeing.sinks[0].retry_base",
            "must be greater than 0",
        ),
        (
            format!("{MINIMAL}[wellbeing]\nsinks = [{{ name = \"a\", kind = \"file\", path = \"\" }}]\n"),
            5,
            39,
            "wellbeing.sinks[0].path",
            "needs `path`",
        ),
        // File sinks take initiatives, never alerts.
        (
            alert(file),
            6,
            1,
            "alerts[0].kind",
            "file sinks are for [[wellbeing.sinks]]",
        ),
        (
            alert("kind = \"command\"\nargv = [\"/bin/true\"]\npath = \"inbox\"\n"),
            8,
            1,
            "alerts[0].path",
            "`path` is for kind = \"file\", in [[wellbeing.sinks]] only",
        ),
        // Names are unique across both lists; the later one is reported.
        (
            format!("{}[[wellbeing.sinks]]\nname = \"a\"\n{file}", alert(file).replace("file", "command").replace("path = \"/var/lib/foreman/inbox\"", "argv = [\"/bin/true\"]")),
            9,
            1,
            "wellbeing.sinks[0].name",
            "another sink, alerts[0], is already named \"a\"",
        ),
        (
            format!("{}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\n", sink(file)),
            9,
            1,
            "alerts[0].name",
            "another sink, wellbeing.sinks[0], is already named \"a\"",
        ),
        (
            format!("{}[[wellbeing.sinks]]\nname = \"a\"\n{file}", sink(file)),
            9,
            1,
            "wellbeing.sinks[1].name",
            "already named \"a\"",
        ),
    ];
    for (text, line, column, key, fragment) in &cases {
        assert_invalid(text, *line, *column, key, fragment);
    }
}

#[test]
fn wellbeing_round_trips_through_effective_toml() {
    let first = parse(&format!("{MINIMAL}{WELLBEING}"));
    let effective = first.effective_toml();
    for line in [
        "\n[wellbeing]\nschedule = \"0 30 7 * * Mon-Fri\"\ntimezone = \"Europe/Paris\"\n",
        "\n[wellbeing.droid_types.\"video.encode\"]\n",
        "\n[[wellbeing.sinks]]\nname = \"inbox\"\nkind = \"file\"\npath = \"/etc/foreman/initiatives\"\n",
        "\nenabled = false\n",
    ] {
        assert!(effective.contains(line), "{line:?} not in\n{effective}");
    }
    let second = parse(&effective);
    assert_same_config(&first, &second);
    assert_eq!(effective, second.effective_toml());

    // An unset run time limit is shown as a comment, and stays unset.
    let effective = parse(MINIMAL).effective_toml();
    assert!(
        effective.contains("\n# max_median_runtime: "),
        "{effective}"
    );
    assert_eq!(parse(&effective).wellbeing.limits, default_limits());
}

#[test]
fn review_schedule_and_ping() {
    let r = |body: &str| format!("{MINIMAL}[review]\n{body}");
    let none = Config::parse(&r(""), Path::new(ETC)).expect("valid");
    assert!(none.review.schedule.is_none(), "no schedule by default");
    assert_eq!(none.review.ping_url, None);
    let hourly = Config::parse(
        &r("schedule = \"0 0 * * * *\"\ntimezone = \"UTC\"\nping_url = \"https://hc.example/ping/abc\"\n"),
        Path::new(ETC),
    )
    .expect("valid");
    let s = hourly.review.schedule.as_ref().expect("scheduled");
    assert_eq!(s.text(), "0 0 * * * *");
    assert_eq!(hourly.review.ping_timeout, Duration::from_secs(10));
    // The effective configuration reads back the same.
    let again = Config::parse(&hourly.effective_toml(), Path::new(ETC)).expect("round trip");
    assert_eq!(again.review.ping_url, hourly.review.ping_url);
    assert_eq!(
        again.review.schedule.as_ref().map(|s| s.text().to_string()),
        Some("0 0 * * * *".to_string())
    );
    let cases: [(String, usize, &str, &str); 4] = [
        (
            r("schedule = \"0 * * * *\"\n"),
            5,
            "review.schedule",
            "six fields",
        ),
        (
            r("ping_url = \"https://hc.example/ping\"\n"),
            5,
            "review.ping_url",
            "set `schedule` too",
        ),
        (
            r("schedule = \"0 0 * * * *\"\nping_url = \"hc.example/ping\"\n"),
            6,
            "review.ping_url",
            "not an http:// or https:// URL",
        ),
        (
            r("schedule = \"0 0 * * * *\"\nping_timeout = \"5m\"\n"),
            6,
            "review.ping_timeout",
            "5m is more than the maximum of 1m",
        ),
    ];
    for (text, line, key, fragment) in cases {
        assert_invalid(&text, line, 1, key, fragment);
    }
}

#[test]
fn http_listener_and_monitor_queue() {
    let h = |body: &str| format!("{MINIMAL}[http]\n{body}");
    let default = parse(MINIMAL);
    assert_eq!(
        default.http.listen,
        Some("127.0.0.1:9464".parse().expect("addr")),
        "on loopback by default"
    );
    assert!(!default.http.listen_explicit);
    assert_eq!(default.http.max_body_bytes, 1 << 20);
    assert_eq!(default.http.request_timeout, Duration::from_secs(10));
    assert_eq!(default.http.token_env, "FOREMAN_HTTP_TOKEN");
    assert!(!default.http.protect_reads);
    assert_eq!(default.monitor.queue_capacity, 1024);
    let off = parse(&h("listen = \"\"\n"));
    assert_eq!(
        off.http.listen, None,
        "an empty listen disables the listener"
    );
    let v6 = parse(&h("listen = \"[::1]:9999\"\n"));
    assert!(v6.http.listen_explicit);
    assert_eq!(v6.http.listen, Some("[::1]:9999".parse().expect("addr")));
    // The token comes from the environment: PATH is always set, this name never.
    let open = parse(&h(
        "listen = \"0.0.0.0:9464\"\ntoken_env = \"PATH\"\nprotect_reads = true\n",
    ));
    assert!(open.http.token.is_some());
    assert!(open.http.protect_reads);
    assert!(
        !format!("{:?}", open.http).contains(&std::env::var("PATH").unwrap_or_default()),
        "the token never appears in Debug output"
    );
    let again = Config::parse(&open.effective_toml(), Path::new(ETC)).expect("round trip");
    assert_eq!(again.http.listen, open.http.listen);
    assert_eq!(again.http.token_env, "PATH");
    let unset = "token_env = \"FOREMAN_TEST_NEVER_SET_7F3A\"\n";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            h("listen = \"localhost:9464\"\n"),
            5,
            "http.listen",
            "not an IP address and port",
        ),
        (
            h(&format!("listen = \"0.0.0.0:9464\"\n{unset}")),
            5,
            "http.listen",
            "not a loopback address",
        ),
        (
            h(&format!("{unset}protect_reads = true\n")),
            6,
            "http.protect_reads",
            "needs a token",
        ),
        (
            h("token_env = \"\"\n"),
            5,
            "http.token_env",
            "not an environment variable",
        ),
        (
            h("max_body_bytes = 10\n"),
            5,
            "http.max_body_bytes",
            "out of range",
        ),
        (
            h("request_timeout = \"0s\"\n"),
            5,
            "http.request_timeout",
            "more than 0",
        ),
        (
            h("max_connections = 0\n"),
            5,
            "http.max_connections",
            "out of range",
        ),
        (
            format!("{MINIMAL}[monitor]\nqueue_capacity = 0\n"),
            5,
            "monitor.queue_capacity",
            "out of range",
        ),
    ];
    for (text, line, key, fragment) in cases {
        assert_invalid(&text, line, 1, key, fragment);
    }
}

// ---------------------------------------------------------------------------
// Upper bounds of every duration key

/// One duration key: the Raw struct and field it is read into (for the
/// completeness check), the document with `{min}` (MINIMAL, which ends in
/// `[executor]`) and `{v}` (the value) in it, the dotted key an error
/// names, its documented maximum, and where the resolved value lands.
struct Bounded {
    field: &'static str,
    doc: &'static str,
    key: &'static str,
    max: Duration,
    get: fn(&Config) -> Duration,
}

const DAY: u64 = 86_400;
/// humantime's year, 365.25 days.
const YEAR: u64 = 31_557_600;

fn bounded_keys() -> Vec<Bounded> {
    let b = |field, doc, key, max: u64, get| Bounded {
        field,
        doc,
        key,
        max: secs(max),
        get,
    };
    // Wellbeing sinks are files here (a webhook or command would do as well).
    vec![
        // The interval at its maximum needs a timeout above it.
        b(
            "RawConfig.interval",
            "interval = {v}\n{min}[defaults]\ntimeout = \"2d\"\n",
            "interval",
            DAY,
            |c| c.interval,
        ),
        b(
            "RawFleet.host_lost_after",
            Box::leak(
                format!(
                    "[executor]\nkind = \"postgres\"\nurl_file = {:?}\n[fleet]\nhost_lost_after = {{v}}\n",
                    manifest_dir()
                        .join("tests/fixtures/config/pg-url.txt")
                        .display()
                        .to_string()
                )
                .into_boxed_str(),
            ),
            "fleet.host_lost_after",
            7 * DAY,
            |c| c.fleet.as_ref().map_or(Duration::ZERO, |f| f.host_lost_after),
        ),
        b(
            "RawConfig.future_tolerance",
            "future_tolerance = {v}\n{min}",
            "future_tolerance",
            DAY,
            |c| c.future_tolerance,
        ),
        b(
            "RawExecutor.timeout",
            "{min}timeout = {v}\n",
            "executor.timeout",
            3600,
            |c| c.executor.timeout,
        ),
        b(
            "RawExecutor.history_window",
            "{min}history_window = {v}\n",
            "executor.history_window",
            30 * DAY,
            |c| c.executor.history_window,
        ),
        b(
            "RawActivity.retention",
            "{min}[activity]\nretention = {v}\n",
            "activity.retention",
            10 * YEAR,
            |c| c.activity.retention,
        ),
        b(
            "RawPolicy.timeout",
            "{min}[defaults]\ntimeout = {v}\n",
            "defaults.timeout",
            30 * DAY,
            |c| c.defaults.timeout,
        ),
        b(
            "RawPolicy.timeout",
            "{min}[droid_types.x]\ntimeout = {v}\n",
            "droid_types.x.timeout",
            30 * DAY,
            |c| c.policy("x").timeout,
        ),
        b(
            "RawPolicy.startup_grace",
            "{min}[defaults]\nstartup_grace = {v}\n",
            "defaults.startup_grace",
            7 * DAY,
            |c| c.defaults.startup_grace,
        ),
        b(
            "RawPolicy.startup_grace",
            "{min}[droid_types.x]\nstartup_grace = {v}\n",
            "droid_types.x.startup_grace",
            7 * DAY,
            |c| c.policy("x").startup_grace,
        ),
        b(
            "RawPolicy.pid_start_tolerance",
            "{min}[defaults]\npid_start_tolerance = {v}\n",
            "defaults.pid_start_tolerance",
            DAY,
            |c| c.defaults.pid_start_tolerance,
        ),
        b(
            "RawPolicy.pid_start_tolerance",
            "{min}[droid_types.x]\npid_start_tolerance = {v}\n",
            "droid_types.x.pid_start_tolerance",
            DAY,
            |c| c.policy("x").pid_start_tolerance,
        ),
        b(
            "RawPolicy.exit_grace",
            "{min}[defaults]\nexit_grace = {v}\n",
            "defaults.exit_grace",
            3600,
            |c| c.defaults.exit_grace,
        ),
        b(
            "RawPolicy.exit_grace",
            "{min}[droid_types.x]\nexit_grace = {v}\n",
            "droid_types.x.exit_grace",
            3600,
            |c| c.policy("x").exit_grace,
        ),
        b(
            "RawPolicy.kill_grace",
            "{min}[defaults]\nkill_grace = {v}\n",
            "defaults.kill_grace",
            3600,
            |c| c.defaults.kill_grace,
        ),
        b(
            "RawPolicy.kill_grace",
            "{min}[droid_types.x]\nkill_grace = {v}\n",
            "droid_types.x.kill_grace",
            3600,
            |c| c.policy("x").kill_grace,
        ),
        b(
            "RawPolicy.max_deferral",
            "{min}[defaults]\nmax_deferral = {v}\n",
            "defaults.max_deferral",
            30 * DAY,
            |c| c.defaults.max_deferral(),
        ),
        b(
            "RawPolicy.max_deferral",
            "{min}[droid_types.x]\nmax_deferral = {v}\n",
            "droid_types.x.max_deferral",
            30 * DAY,
            |c| c.policy("x").max_deferral(),
        ),
        b(
            "RawPolicy.max_runtime",
            "{min}[defaults]\nmax_runtime = {v}\n",
            "defaults.max_runtime",
            30 * DAY,
            |c| c.defaults.max_runtime.unwrap_or_default(),
        ),
        b(
            "RawPolicy.max_runtime",
            "{min}[droid_types.x]\nmax_runtime = {v}\n",
            "droid_types.x.max_runtime",
            30 * DAY,
            |c| c.policy("x").max_runtime.unwrap_or_default(),
        ),
        b(
            "RawTwin.window",
            "{min}[twin]\nwindow = {v}\n",
            "twin.window",
            30 * DAY,
            |c| c.twin.window,
        ),
        b(
            "RawSink.timeout",
            "{min}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\ntimeout = {v}\n",
            "alerts[0].timeout",
            60,
            |c| c.alerts[0].timeout,
        ),
        // retry_base at its maximum needs a cap at least as long.
        b(
            "RawSink.retry_base",
            "{min}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\nretry_cap = \"1d\"\nretry_base = {v}\n",
            "alerts[0].retry_base",
            DAY,
            |c| c.alerts[0].retry_base,
        ),
        b(
            "RawSink.retry_cap",
            "{min}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\nretry_cap = {v}\n",
            "alerts[0].retry_cap",
            7 * DAY,
            |c| c.alerts[0].retry_cap,
        ),
        b(
            "RawSink.max_age",
            "{min}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\nmax_age = {v}\n",
            "alerts[0].max_age",
            30 * DAY,
            |c| c.alerts[0].max_age,
        ),
        b(
            "RawSink.realert_after",
            "{min}[[alerts]]\nname = \"a\"\nkind = \"command\"\nargv = [\"/bin/true\"]\nrealert_after = {v}\n",
            "alerts[0].realert_after",
            30 * DAY,
            |c| c.alerts[0].realert_after,
        ),
        b(
            "RawSink.timeout",
            "{min}[[wellbeing.sinks]]\nname = \"w\"\nkind = \"file\"\npath = \"i\"\ntimeout = {v}\n",
            "wellbeing.sinks[0].timeout",
            60,
            |c| c.wellbeing.sinks[0].timeout,
        ),
        b(
            "RawSink.retry_base",
            "{min}[[wellbeing.sinks]]\nname = \"w\"\nkind = \"file\"\npath = \"i\"\nretry_cap = \"1d\"\nretry_base = {v}\n",
            "wellbeing.sinks[0].retry_base",
            DAY,
            |c| c.wellbeing.sinks[0].retry_base,
        ),
        b(
            "RawSink.retry_cap",
            "{min}[[wellbeing.sinks]]\nname = \"w\"\nkind = \"file\"\npath = \"i\"\nretry_cap = {v}\n",
            "wellbeing.sinks[0].retry_cap",
            7 * DAY,
            |c| c.wellbeing.sinks[0].retry_cap,
        ),
        b(
            "RawSink.max_age",
            "{min}[[wellbeing.sinks]]\nname = \"w\"\nkind = \"file\"\npath = \"i\"\nmax_age = {v}\n",
            "wellbeing.sinks[0].max_age",
            30 * DAY,
            |c| c.wellbeing.sinks[0].max_age,
        ),
        b(
            "RawWellbeing.active_within",
            "{min}[wellbeing]\nactive_within = {v}\n",
            "wellbeing.active_within",
            YEAR,
            |c| c.wellbeing.limits.active_within,
        ),
        b(
            "RawWellbeing.max_median_runtime",
            "{min}[wellbeing]\nmax_median_runtime = {v}\n",
            "wellbeing.max_median_runtime",
            30 * DAY,
            |c| c.wellbeing.limits.max_median_runtime.unwrap_or_default(),
        ),
        b(
            "RawWellbeing.dispatch_timeout",
            "{min}[wellbeing]\ndispatch_timeout = {v}\n",
            "wellbeing.dispatch_timeout",
            30 * DAY,
            |c| c.wellbeing.limits.dispatch_timeout,
        ),
        b(
            "RawWellbeing.plan_stall_timeout",
            "{min}[wellbeing]\nplan_stall_timeout = {v}\n",
            "wellbeing.plan_stall_timeout",
            30 * DAY,
            |c| c.wellbeing.plan_stall_timeout,
        ),
        b(
            "RawWellbeing.max_outbox_age",
            "{min}[wellbeing]\nmax_outbox_age = {v}\n",
            "wellbeing.max_outbox_age",
            30 * DAY,
            |c| c.wellbeing.max_outbox_age,
        ),
        b(
            "RawLimits.active_within",
            "{min}[wellbeing.droid_types.x]\nactive_within = {v}\n",
            "wellbeing.droid_types.x.active_within",
            YEAR,
            |c| c.wellbeing.limits("x").active_within,
        ),
        b(
            "RawLimits.max_median_runtime",
            "{min}[wellbeing.droid_types.x]\nmax_median_runtime = {v}\n",
            "wellbeing.droid_types.x.max_median_runtime",
            30 * DAY,
            |c| {
                c.wellbeing
                    .limits("x")
                    .max_median_runtime
                    .unwrap_or_default()
            },
        ),
        b(
            "RawLimits.dispatch_timeout",
            "{min}[wellbeing.droid_types.x]\ndispatch_timeout = {v}\n",
            "wellbeing.droid_types.x.dispatch_timeout",
            30 * DAY,
            |c| c.wellbeing.limits("x").dispatch_timeout,
        ),
        b(
            "RawReview.ping_timeout",
            "{min}[review]\nping_timeout = {v}\n",
            "review.ping_timeout",
            60,
            |c| c.review.ping_timeout,
        ),
        b(
            "RawHttp.request_timeout",
            "{min}[http]\nrequest_timeout = {v}\n",
            "http.request_timeout",
            300,
            |c| c.http.request_timeout,
        ),
    ]
}

/// The document of `case` with `value`, and the 1-based line of the value.
fn bounded_doc(case: &Bounded, value: &str) -> (String, usize) {
    let doc = case.doc.replace("{min}", MINIMAL);
    let at = doc.find("{v}").expect("a {v} in the template");
    let line = doc[..at].matches('\n').count() + 1;
    (doc.replace("{v}", &format!("{value:?}")), line)
}

/// Every duration key: `300000years` and one second over the maximum are
/// refused at the key's file:line:column with a message naming the bound;
/// exactly the maximum is accepted and lands where it belongs.
#[test]
fn every_duration_key_has_an_upper_bound() {
    for case in bounded_keys() {
        let bound = humantime::format_duration(case.max).to_string();
        let over = case.max + secs(1);
        for (value, shown) in [
            ("300000years".to_string(), "300000years".to_string()),
            (
                plain_duration(over),
                humantime::format_duration(over).to_string(),
            ),
        ] {
            let (text, line) = bounded_doc(&case, &value);
            let want = format!("{shown} is more than the maximum of {bound}");
            assert_invalid(&text, line, 1, case.key, &want);
            let shown = Config::parse(&text, Path::new(ETC))
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(
                shown.starts_with(&format!("{ETC}:{line}:1: key `{}`: ", case.key)),
                "{shown}"
            );
        }
        let (text, _) = bounded_doc(&case, &plain_duration(case.max));
        let c = parse(&text);
        assert_eq!((case.get)(&c), case.max, "{} at its maximum", case.key);
        // What check-config prints at the maximum loads again.
        parse(&c.effective_toml());
    }
}

/// The table above names every duration field the parser reads: a new
/// duration key without a bound (and a test of it) fails here.
#[test]
fn every_duration_field_is_in_the_bounds_table() {
    let source = include_str!("config.rs");
    let mut fields = Vec::new();
    let mut structure = "";
    let mut duration_next = false;
    for line in source.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("struct ") {
            structure = rest.split([' ', '{']).next().unwrap_or("");
        } else if t.contains("humantime_serde::option") {
            duration_next = true;
        } else if duration_next {
            let name = t.split(':').next().unwrap_or("").trim();
            fields.push(format!("{structure}.{name}"));
            duration_next = false;
        }
    }
    assert!(fields.len() >= 27, "found only {fields:?}");
    let table: Vec<&str> = bounded_keys().iter().map(|b| b.field).collect();
    for field in &fields {
        assert!(
            table.contains(&field.as_str()),
            "{field} has no row in bounded_keys()"
        );
    }
}

/// `check-config` (and every command, through `app::load`) refuses an
/// out-of-bounds duration with exit code 2 and file:line:column: key.
#[test]
fn check_config_refuses_a_duration_past_its_bound_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("foreman.toml");
    std::fs::write(
        &path,
        format!("{MINIMAL}\n[defaults]\nexit_grace = \"300000years\"\n"),
    )
    .expect("write");
    for result in [
        crate::app::check_config(&path).map(|_| ()),
        crate::app::load(&path).map(|_| ()),
    ] {
        let e = result.expect_err("300000years was accepted");
        assert_eq!(e.exit_code(), crate::exit::CONFIG_ERROR);
        assert_eq!(
            e.to_string(),
            format!(
                "{}:6:1: key `defaults.exit_grace`: 300000years is more than the maximum of 1h",
                path.display()
            )
        );
    }
}

// ---------------------------------------------------------------------------
// future_tolerance, max_deferral, max_actions_per_window, max_cpu_pressure

#[test]
fn future_tolerance_defaults_to_five_minutes_and_must_be_positive() {
    assert_eq!(parse(MINIMAL).future_tolerance, secs(300));
    let c = parse(&format!("future_tolerance = \"30s\"\n{MINIMAL}"));
    assert_eq!(c.future_tolerance, secs(30));
    assert!(c
        .effective_toml()
        .contains("\nfuture_tolerance = \"30s\"\n"));
    assert_invalid(
        &format!("future_tolerance = \"0s\"\n{MINIMAL}"),
        1,
        1,
        "future_tolerance",
        "must be greater than 0",
    );
}

/// The lower bound of `[activity] retention`: one second under an hour is
/// refused at the key with the reason, exactly an hour is accepted, lands
/// in the configuration and loads again from the effective TOML.
#[test]
fn activity_retention_must_be_at_least_an_hour() {
    for (value, shown) in [("0s", "0s"), ("59m 59s", "59m 59s"), ("1s", "1s")] {
        assert_invalid(
            &format!("{MINIMAL}[activity]\nretention = {value:?}\n"),
            5,
            1,
            "activity.retention",
            &format!(
                "{shown} is too short: give at least 1h (e.g. \"90d\"); findings must outlive a few sweeps and the wellbeing look-back that counts them"
            ),
        );
    }
    let c = parse(&format!("{MINIMAL}[activity]\nretention = \"1h\"\n"));
    assert_eq!(c.activity.retention, secs(3600));
    assert_eq!(parse(&c.effective_toml()).activity.retention, secs(3600));
}

#[test]
fn max_deferral_is_three_timeouts_unless_set_and_inherits_like_every_policy_key() {
    let c = parse(&format!(
        "{MINIMAL}[droid_types.long]\ntimeout = \"2h\"\n\
         [droid_types.own]\nmax_deferral = \"10m\"\n"
    ));
    assert_eq!(c.defaults.max_deferral, None);
    assert_eq!(c.defaults.max_deferral(), secs(90 * 60));
    // Its own timeout, tripled.
    assert_eq!(c.policy("long").max_deferral, None);
    assert_eq!(c.policy("long").max_deferral(), secs(6 * 3600));
    assert_eq!(c.policy("own").max_deferral(), secs(600));
    assert_eq!(c.policy("unconfigured").max_deferral(), secs(90 * 60));

    // Set in [defaults]: every droid type's, whatever its timeout.
    let c = parse(&format!(
        "{MINIMAL}[defaults]\nmax_deferral = \"1h\"\n[droid_types.long]\ntimeout = \"2h\"\n"
    ));
    assert_eq!(c.defaults.max_deferral, Some(secs(3600)));
    assert_eq!(c.policy("long").max_deferral(), secs(3600));

    // 0 never defers.
    let c = parse(&format!("{MINIMAL}[defaults]\nmax_deferral = \"0s\"\n"));
    assert_eq!(c.defaults.max_deferral(), Duration::ZERO);

    // Saturating, never overflowing.
    let huge = Policy {
        timeout: Duration::MAX,
        max_deferral: None,
        max_runtime: None,
        ..c.defaults.clone()
    };
    assert_eq!(huge.max_deferral(), Duration::MAX);
}

#[test]
fn max_actions_per_window_is_for_defaults_only() {
    let c = parse(MINIMAL);
    assert_eq!(c.defaults.max_actions_per_window, None);
    let effective = c.effective_toml();
    assert!(
        effective.contains("\n# max_actions_per_window: "),
        "{effective}"
    );
    let c = parse(&format!(
        "{MINIMAL}[defaults]\nmax_actions_per_window = 7\n[droid_types.x]\ntimeout = \"1h\"\n"
    ));
    assert_eq!(c.defaults.max_actions_per_window, Some(7));
    assert_eq!(c.policy("x").max_actions_per_window, None);
    let effective = c.effective_toml();
    assert_eq!(
        effective.matches("max_actions_per_window").count(),
        1,
        "{effective}"
    );
    assert_eq!(parse(&effective).defaults.max_actions_per_window, Some(7));
    assert_invalid(
        &format!("{MINIMAL}[droid_types.x]\nmax_actions_per_window = 3\n"),
        5,
        1,
        "droid_types.x.max_actions_per_window",
        "only in [defaults]",
    );
    assert_invalid(
        &format!("{MINIMAL}[defaults]\nmax_actions_per_window = 0\n"),
        5,
        1,
        "defaults.max_actions_per_window",
        "give at least 1",
    );
}

/// Deprecated and ignored, but old files still load.
#[test]
fn max_cpu_pressure_is_still_accepted() {
    let c = parse(&format!("max_cpu_pressure = 75.0\n{MINIMAL}"));
    assert_eq!(c.max_cpu_pressure, 75.0);
    let effective = c.effective_toml();
    assert!(effective.contains("deprecated"), "{effective}");
    assert_eq!(parse(&effective).max_cpu_pressure, 75.0);
}

#[test]
fn max_runtime_is_none_unless_set_inherits_and_must_be_positive() {
    let c = parse(&format!(
        "{MINIMAL}[defaults]\nmax_runtime = \"12h\"\n[droid_types.short]\nmax_runtime = \"90s\"\n[droid_types.long]\ntimeout = \"2h\"\n"
    ));
    assert_eq!(c.defaults.max_runtime, Some(secs(12 * 3600)));
    assert_eq!(c.policy("short").max_runtime, Some(secs(90)));
    // A type that does not set it inherits [defaults]', as does a type
    // without a section.
    assert_eq!(c.policy("long").max_runtime, Some(secs(12 * 3600)));
    assert_eq!(c.policy("unconfigured").max_runtime, Some(secs(12 * 3600)));
    // What check-config prints loads again to the same.
    let again = parse(&c.effective_toml());
    assert_eq!(again.policy("short").max_runtime, Some(secs(90)));
    assert_eq!(again.policy("long").max_runtime, Some(secs(12 * 3600)));

    // Left out: no limit, anywhere, and check-config says so.
    let c = parse(&format!("{MINIMAL}[droid_types.x]\ntimeout = \"2h\"\n"));
    assert_eq!(c.defaults.max_runtime, None);
    assert_eq!(c.policy("x").max_runtime, None);
    assert!(c.effective_toml().contains("# max_runtime: none"));

    // Zero is refused where it is written, with the way to say "no limit".
    for (doc, line, key) in [
        (
            format!("{MINIMAL}[defaults]\nmax_runtime = \"0s\"\n"),
            5,
            "defaults.max_runtime",
        ),
        (
            format!("{MINIMAL}[droid_types.x]\nmax_runtime = \"0s\"\n"),
            5,
            "droid_types.x.max_runtime",
        ),
    ] {
        assert_invalid(&doc, line, 1, key, "must be greater than 0");
    }
    // One second is the least, 30 days the most (the bounds table checks
    // one second past it).
    let c = parse(&format!("{MINIMAL}[defaults]\nmax_runtime = \"1s\"\n"));
    assert_eq!(c.defaults.max_runtime, Some(secs(1)));
    let c = parse(&format!("{MINIMAL}[defaults]\nmax_runtime = \"30days\"\n"));
    assert_eq!(c.defaults.max_runtime, Some(secs(30 * 86_400)));
}

#[test]
fn maintenance_windows_are_checked_where_they_are_written() {
    let c = parse(&format!(
        "{MINIMAL}[[maintenance]]\nschedule = \"0 0 2 * * 6\"\nduration = \"2h\"\ndroid_types = [\"builder\"]\n"
    ));
    assert_eq!(c.maintenance.len(), 1);
    assert_eq!(c.maintenance[0].duration, secs(7200));
    assert_eq!(c.maintenance[0].reason, "planned maintenance");
    for (text, key, says) in [
        (
            "[[maintenance]]\nschedule = \"0 0 2 * * 6\"\nduration = \"0s\"\n",
            "maintenance[0].duration",
            "greater than 0",
        ),
        (
            "[[maintenance]]\nschedule = \"0 0 2 * * 6\"\nduration = \"8d\"\n",
            "maintenance[0].duration",
            "maximum",
        ),
        (
            "[[maintenance]]\nschedule = \"whenever\"\nduration = \"1h\"\n",
            "maintenance[0].schedule",
            "",
        ),
    ] {
        match Config::parse(&format!("{MINIMAL}{text}"), Path::new(ETC)) {
            Err(ConfigError::Invalid {
                key: k, message, ..
            }) => {
                assert_eq!(k, key, "{message}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}
