//! Processes Foreman starts (`foreman::child::run`): the command executor's
//! snapshot and mark commands, alert and wellbeing command sinks. Each runs
//! in its own process group, killed whole once it exits or times out; its
//! output is read within the same deadline and bounded; no thread outlives
//! it. Real processes throughout.

use crate::common::{cmdline, proc_state, wait_for, Cfg, World, PATIENCE};
use foreman::alert::Message;
use foreman::config::{Sink, SinkTarget};
use foreman::executor::{Executor, Marked};
use foreman::model::Row;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A world whose executor is `kind = "command"` with these argv and timeout.
fn command_executor(snapshot: &[&str], mark: &[&str], timeout: &str) -> (World, Box<dyn Executor>) {
    let w = World::with(Cfg {
        executor: Some(format!(
            "kind = \"command\"\nsnapshot_command = {}\nmark_failed_command = {}\ntimeout = \"{timeout}\"",
            serde_json::to_string(snapshot).unwrap(),
            serde_json::to_string(mark).unwrap(),
        )),
        ..Cfg::default()
    });
    let executor = foreman::executor::open(&w.config).unwrap();
    (w, executor)
}

fn sink(argv: &[&str], timeout: Duration) -> Sink {
    Sink {
        name: "test".into(),
        target: SinkTarget::Command {
            argv: argv.iter().map(|a| a.to_string()).collect(),
        },
        timeout,
        kinds: Vec::new(),
        droid_types: Vec::new(),
        retry_base: Duration::from_secs(1),
        retry_cap: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
        realert_after: Duration::from_secs(3600),
    }
}

fn message() -> Message {
    Message {
        json: b"{}".to_vec(),
        idempotency_key: "k".into(),
        outbox_id: 1,
        env: Vec::new(),
        text: None,
        fill: Vec::new(),
        file_name: "m.json".into(),
    }
}

/// The pid a script wrote to `path` (`echo $! > "$0"`), once it is whole.
fn pid_in(path: &Path) -> i32 {
    let mut pid = None;
    wait_for("the grandchild's pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse::<i32>().ok());
        pid.is_some()
    });
    pid.unwrap()
}

/// Gone, a zombie left to init, or the pid already reused by another program.
fn gone(pid: i32, program: &str) -> bool {
    !cmdline(pid).starts_with(program) || matches!(proc_state(pid), None | Some('Z' | 'X' | 'x'))
}

/// A snapshot command that prints its JSON and exits, leaving a background
/// `sleep` holding stdout: the snapshot is the command's, at once, and the
/// sleep dies with its group (it used to take the sleep's 30 s).
#[test]
fn commands_snapshot_does_not_wait_for_a_grandchild_holding_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let script = r#"sleep 30 & echo $! > "$0"; echo '{"tasks": []}'"#;
    let (_w, executor) = command_executor(
        &["sh", "-c", script, pidfile.to_str().unwrap()],
        &["true"],
        "5s",
    );
    let started = Instant::now();
    let snapshot = executor.snapshot().unwrap();
    let elapsed = started.elapsed();
    assert!(snapshot.rows.is_empty());
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let pid = pid_in(&pidfile);
    wait_for("the backgrounded sleep to be gone", || gone(pid, "sleep"));
}

/// On timeout the whole group goes, not only the shell: the grandchild
/// holding stdout is killed, and the call returns at the deadline.
#[test]
fn commands_snapshot_timeout_kills_the_whole_group_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let script = r#"echo waiting for the executor >&2; sleep 30 & echo $! > "$0"; wait"#;
    let (_w, executor) = command_executor(
        &["sh", "-c", script, pidfile.to_str().unwrap()],
        &["true"],
        "2s",
    );
    let started = Instant::now();
    let err = format!("{:#}", executor.snapshot().unwrap_err());
    let elapsed = started.elapsed();
    assert!(err.contains("did not finish within 2s"), "{err}");
    assert!(
        elapsed < Duration::from_secs(2) + PATIENCE,
        "took {elapsed:?}"
    );
    let pid = pid_in(&pidfile);
    wait_for("the timed-out sleep to be gone", || gone(pid, "sleep"));
    // What it said first is in the error.
    assert!(err.contains("waiting for the executor"), "{err}");
}

/// The mark command: same runner, same group kill after it exits.
#[test]
fn commands_mark_failed_does_not_wait_for_a_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let task = r#"echo '{"tasks": [{"id": "t1", "plan_id": "p", "droid_type": "d", "state": "RUNNING", "pid": 4242, "attempt": 1, "started_at": "2020-01-01T00:00:00Z"}]}'"#;
    let mark = format!(r#"sleep 30 & echo $! > '{}'; exit 0"#, pidfile.display());
    let (_w, executor) = command_executor(&["sh", "-c", task], &["sh", "-c", &mark, "{id}"], "5s");
    let snapshot = executor.snapshot().unwrap();
    let task = match snapshot.rows.first() {
        Some(Row::Task(t)) => t.clone(),
        other => panic!("{other:?}"),
    };
    let started = Instant::now();
    let marked = executor
        .mark_failed(&task, "test", chrono::Utc::now())
        .unwrap();
    let elapsed = started.elapsed();
    assert!(matches!(marked, Marked::Failed));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let pid = pid_in(&pidfile);
    wait_for("the backgrounded sleep to be gone", || gone(pid, "sleep"));
}

/// A snapshot command that never stops printing is killed at the cap
/// (`MAX_STDOUT`), long before its timeout, instead of growing Foreman.
#[test]
fn commands_snapshot_output_is_capped() {
    let (_w, executor) = command_executor(&["yes", "{}"], &["true"], "30s");
    let started = Instant::now();
    let err = format!("{:#}", executor.snapshot().unwrap_err());
    let elapsed = started.elapsed();
    let cap = foreman::executor::command::MAX_STDOUT;
    assert!(err.contains(&format!("more than {cap} bytes")), "{err}");
    assert!(elapsed < PATIENCE, "took {elapsed:?}");
}

/// Every command runs in a process group of its own (its pid is the group's
/// id): the executor's and a sink's.
#[test]
fn commands_run_in_their_own_process_group() {
    let snapshot = r#"echo "{\"tasks\": [], \"droid_types\": [{\"name\": \"$$ $(cut -d' ' -f5 /proc/$$/stat)\", \"enabled\": true}]}""#;
    let (_w, executor) = command_executor(&["sh", "-c", snapshot], &["true"], "5s");
    let history = executor.history(Duration::from_secs(60)).unwrap();
    let types = history.droid_types.unwrap();
    let name = types.keys().next().unwrap();
    let (pid, pgid) = name.split_once(' ').unwrap();
    assert_eq!(pid, pgid, "{name}");
    assert_ne!(pgid, own_group().to_string());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("group");
    let script = r#"echo "$$ $(cut -d' ' -f5 /proc/$$/stat)" > "$0""#;
    let s = sink(&["sh", "-c", script, out.to_str().unwrap()], PATIENCE);
    assert_eq!(foreman::alert::deliver(&s, &message()), Ok(()));
    let text = std::fs::read_to_string(&out).unwrap();
    let (pid, pgid) = text.trim().split_once(' ').unwrap();
    assert_eq!(pid, pgid, "{text}");
}

/// This process's group id (/proc/self/stat: state, ppid, pgrp after the name).
fn own_group() -> i32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = stat.rsplit(')').next().unwrap();
    after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// A sink that times out says what it said first ("connecting to …").
#[test]
fn commands_sink_timeout_keeps_the_first_stderr_line() {
    let _g = crate::spawning();
    let s = sink(
        &[
            "sh",
            "-c",
            "echo connecting to smtp.example >&2; echo retrying >&2; sleep 30",
        ],
        Duration::from_secs(2),
    );
    let started = Instant::now();
    let err = foreman::alert::deliver(&s, &message()).unwrap_err();
    assert_eq!(err, "timed out after 2s: connecting to smtp.example");
    assert!(started.elapsed() < Duration::from_secs(2) + PATIENCE);
}

const HELPER: &str = "FOREMAN_TEST_COMMANDS_HELPER";

/// No thread outlives a command: this test binary, run alone as a helper,
/// counts its own threads (/proc/self/task) before and after commands that
/// time out and exit with grandchildren holding their pipes.
#[test]
fn commands_leave_no_thread_behind() {
    let _g = crate::spawning();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "commands::commands_thread_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("threads before=") && text.contains("1 passed"),
        "{text}"
    );
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Run by `commands_leave_no_thread_behind` only.
#[test]
fn commands_thread_helper() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    let hold = r#"sleep 30 & wait"#;
    let (_w, executor) = command_executor(&["sh", "-c", hold], &["sh", "-c", hold], "1s");
    let exits = r#"sleep 30 & echo '{"tasks": []}'"#;
    let (_w2, exiting) = command_executor(&["sh", "-c", exits], &["true"], "5s");
    let before = threads();
    // The command exits; its grandchild holds stdout.
    assert!(exiting.snapshot().is_ok());
    // It times out, its grandchild holding stdout and stderr: counted right
    // after, a reader left waiting on the pipes would still be there.
    for _ in 0..2 {
        assert!(executor.snapshot().is_err());
        let hung = sink(&["sh", "-c", hold], Duration::from_secs(1));
        assert!(foreman::alert::deliver(&hung, &message()).is_err());
        let leaves = "sleep 30 & echo bye >&2; exit 2";
        let exits = sink(&["sh", "-c", leaves], PATIENCE);
        assert!(foreman::alert::deliver(&exits, &message()).is_err());
    }
    let after = threads();
    println!("threads before={before} after={after}");
    assert_eq!(before, after);
}

/// A grandchild that left the group (setsid) cannot be killed with it, and
/// may hold stdout for as long as it likes: once the command has exited,
/// its output is read for a moment more, not until the pipe closes.
#[test]
fn commands_snapshot_is_not_held_by_a_process_that_left_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let script = r#"setsid sleep 30 & echo $! > "$0"; echo '{"tasks": []}'"#;
    let (_w, executor) = command_executor(
        &["sh", "-c", script, pidfile.to_str().unwrap()],
        &["true"],
        "5s",
    );
    let started = Instant::now();
    let snapshot = executor.snapshot();
    let elapsed = started.elapsed();
    let pid = pid_in(&pidfile);
    if !gone(pid, "sleep") {
        // SAFETY: kill(2) on the sleep this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(snapshot.unwrap().rows.is_empty());
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
