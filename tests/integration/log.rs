//! `foreman log` through the real binary: every filter, JSON lines,
//! sweeps, and `--follow` printing what a later sweep commits.

use crate::cli::{before_boot, insert_task, reaped_pid, run, wait_for, Running, World, PATIENCE};
use serde_json::Value;

/// Three dead findings over two sweeps: a-1 (builder), b-1 (scribe), then
/// c-1 (builder).
fn world() -> World {
    let w = World::new();
    w.config("");
    let db = w.executor();
    insert_task(
        &db,
        "a-1",
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    insert_task(
        &db,
        "b-1",
        "scribe",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    insert_task(
        &db,
        "c-1",
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    w
}

/// The task ids `log --json ARGS` prints, in order.
fn tasks(w: &World, args: &[&str]) -> Vec<String> {
    let mut all = vec!["log", "--json"];
    all.extend_from_slice(args);
    let out = run(&mut w.foreman(&all));
    assert_eq!(out.code, Some(0), "{out:#?}");
    out.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON object per line");
            v["task_id"].as_str().expect("task_id").to_string()
        })
        .collect()
}

#[test]
fn log_filters_combine_and_print_oldest_first() {
    let _g = crate::spawning();
    let w = world();
    assert_eq!(tasks(&w, &[]), ["a-1", "b-1", "c-1"]);
    assert_eq!(tasks(&w, &["--kind", "dead"]), ["a-1", "b-1", "c-1"]);
    assert!(tasks(&w, &["--kind", "hung"]).is_empty());
    assert_eq!(tasks(&w, &["--kind", "hung", "--kind", "dead"]).len(), 3);
    assert_eq!(tasks(&w, &["--task", "b-1"]), ["b-1"]);
    assert_eq!(tasks(&w, &["--type", "builder"]), ["a-1", "c-1"]);
    assert_eq!(tasks(&w, &["--type", "builder", "--task", "c-1"]), ["c-1"]);
    assert!(tasks(&w, &["--type", "scribe", "--task", "c-1"]).is_empty());
    assert_eq!(tasks(&w, &["--since", "1h"]).len(), 3);
    assert!(tasks(&w, &["--since", "2999-01-01T00:00:00Z"]).is_empty());

    let out = run(&mut w.foreman(&["log", "--json", "--task", "a-1"]));
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("json");
    for key in [
        "id",
        "last_seen_at",
        "first_seen_at",
        "task_id",
        "attempt",
        "kind",
        "droid_type",
        "plan_id",
        "pid",
        "action",
        "outcome",
        "detail",
        "reason",
        "times_seen",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v:#}");
    }
    assert_eq!(v["outcome"], "marked_failed");
    assert!(v["reason"]
        .as_str()
        .is_some_and(|r| r.contains("before this boot")));

    let out = run(&mut w.foreman(&["log"]));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[2].contains("c-1/1") && lines[2].contains("dead"),
        "{}",
        lines[2]
    );

    let out = run(&mut w.foreman(&["log", "--sweeps", "--json"]));
    let sweeps: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(sweeps.len(), 2, "{}", out.stdout);
    assert!(sweeps.iter().all(|s| s["kind"] == "manual"));
    assert_eq!(
        sweeps
            .iter()
            .map(|s| s["findings"].as_i64().unwrap_or(0))
            .sum::<i64>(),
        3
    );
}

#[test]
fn log_rejects_bad_filters_with_exit_2() {
    let _g = crate::spawning();
    let w = world();
    for (args, says) in [
        (&["log", "--kind", "deadd"][..], "not a kind of finding"),
        (
            &["log", "--since", "yesterday-ish"][..],
            "neither a duration",
        ),
        (
            &["log", "--sweeps", "--task", "a-1"][..],
            "cannot be used with",
        ),
    ] {
        let out = run(&mut w.foreman(args));
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn log_without_an_activity_log_says_so() {
    let w = World::new();
    w.config("");
    let out = run(&mut w.foreman(&["log"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("no activity log"), "{}", out.stderr);
}

#[test]
fn log_follow_prints_what_a_later_sweep_commits_once() {
    let _g = crate::spawning();
    let w = world();
    let mut follow = Running::start(&mut w.foreman(&["log", "--follow", "--json"]));
    let count = |f: &Running, task: &str| {
        f.stdout()
            .lines()
            .filter(|l| l.contains(&format!("\"task_id\":\"{task}\"")))
            .count()
    };
    wait_for("the existing findings", PATIENCE, || {
        (count(&follow, "c-1") == 1).then_some(())
    });
    insert_task(
        &w.executor(),
        "d-1",
        "scribe",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    wait_for("the new finding", PATIENCE, || {
        (count(&follow, "d-1") == 1).then_some(())
    });
    follow.signal(libc::SIGTERM);
    let out = follow.finish(PATIENCE);
    for task in ["a-1", "b-1", "c-1", "d-1"] {
        assert_eq!(
            out.stdout
                .matches(&format!("\"task_id\":\"{task}\""))
                .count(),
            1,
            "{task} printed once: {}",
            out.stdout
        );
    }
}

/// Lines are in the order findings were first seen, and say that time; a
/// finding seen again later says when, at the end (times never jump back).
#[test]
fn log_lines_show_when_first_seen_in_that_order_and_when_last_seen() {
    let _g = crate::spawning();
    let w = World::new();
    w.config("");
    let db = w.executor();
    // Malformed (an unknown state): reported again by every sweep.
    db.execute(
        "INSERT INTO tasks (id, droid_type, state, attempt) VALUES ('odd-1', 'builder', 'WEIRD', 1)",
        [],
    )
    .expect("insert");
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    insert_task(
        &db,
        "late-1",
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    // The second sweep at a later millisecond, so its time differs.
    crate::common::wait_past(chrono::Utc::now() + chrono::Duration::milliseconds(20));
    assert_eq!(run(&mut w.foreman(&["sweep"])).code, Some(0));
    let out = run(&mut w.foreman(&["log"]));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].contains("odd-1") && lines[1].contains("late-1"),
        "{}",
        out.stdout
    );
    let first = |l: &str| l.split_whitespace().next().unwrap_or_default().to_string();
    assert!(
        first(lines[0]) < first(lines[1]),
        "times in order: {}",
        out.stdout
    );
    assert!(lines[0].contains("[last seen "), "{}", lines[0]);
    assert!(!lines[1].contains("[last seen "), "{}", lines[1]);
}
