//! Files and logs (issue 15): the lock file beside the activity log is
//! never followed through a symlink nor truncated unless it is ours; no
//! field of any log format forges a line or reaches the terminal as an
//! escape sequence; a task id that is not UTF-8 text is a malformed row,
//! reported once, not a mark retried forever.

use crate::cli::{run, World as CliWorld};
use crate::common::{before_boot, finding, reason, World};
use foreman::model::{Action, Kind, Outcome, SweepKind};

const SCHEDULED: SweepKind = SweepKind::Scheduled;

// ------------------------------------------------------------- the lock file

#[test]
fn a_symlink_at_the_lock_path_is_refused_and_its_target_left_alone() {
    let w = CliWorld::new();
    w.config("");
    drop(w.executor());
    let precious = w.write("precious.txt", "someone else's data\n");
    let lock = foreman::lock::lock_path(&w.activity_path());
    std::os::unix::fs::symlink(&precious, &lock).expect("symlink");

    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(out.stderr.contains(&lock.display().to_string()), "{out:#?}");
    assert!(out.stderr.contains("symbolic link"), "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(&precious).expect("read"),
        "someone else's data\n"
    );
    assert!(
        std::fs::symlink_metadata(&lock)
            .expect("still there")
            .file_type()
            .is_symlink(),
        "the symlink was replaced"
    );
}

#[test]
fn a_directory_at_the_lock_path_is_refused_with_its_name() {
    let w = CliWorld::new();
    w.config("");
    drop(w.executor());
    let lock = foreman::lock::lock_path(&w.activity_path());
    std::fs::create_dir(&lock).expect("mkdir");

    let out = run(&mut w.foreman(&["sweep"]));
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(out.stderr.contains(&lock.display().to_string()), "{out:#?}");
    assert!(out.stderr.contains("not a regular file"), "{out:#?}");
}

// ------------------------------------------------------------------ the logs

/// A task id that would start a forged ERROR line, and escape sequences
/// (ESC, C1 CSI, DEL) that would reach the terminal.
const FORGED_ID: &str = "t1\n2026-12-02T00:00:00Z ERROR forged\r\x1b[31mred\u{9b}2J\x7f";

#[test]
fn no_log_format_lets_a_task_id_forge_a_line_or_reach_the_terminal() {
    for format in ["text", "journal", "json"] {
        let w = CliWorld::new();
        w.config("");
        let db = w.executor();
        // A malformed row (unknown state) is logged as a WARN `finding`
        // with its task id, whatever the host's processes.
        db.execute(
            "INSERT INTO tasks (id, droid_type, state) VALUES (?1, 'quiet', 'WEIRD')",
            [FORGED_ID],
        )
        .expect("insert");
        drop(db);

        let out = run(&mut w.foreman(&["--log-format", format, "sweep"]));
        assert_eq!(out.code, Some(0), "{format}: {out:#?}");
        assert!(
            out.stderr.contains("forged"),
            "{format}: the id was not logged: {out:#?}"
        );
        for line in out.stderr.lines() {
            assert!(
                !line.starts_with("2026-12-02T00:00:00Z") && !line.contains("\rERROR"),
                "{format}: a forged line: {line:?}\n{out:#?}"
            );
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("{format}: not one JSON object ({e}): {line:?}"));
            }
        }
        let raw = out.stderr.chars().find(|c| c.is_control() && *c != '\n');
        assert_eq!(
            raw, None,
            "{format}: a raw control character: {:?}",
            out.stderr
        );
    }
}

// ------------------------------------------------------- ids that are not text

/// A RUNNING task whose process is gone, with an id of these SQL bytes.
fn insert_dead_task(w: &mut World, id_sql: &str) {
    let gone = w.spawn_exited(&["true"]);
    w.exec(
        &format!(
            "INSERT INTO tasks (id, droid_type, state, pid, attempt, started_at)
             VALUES ({id_sql}, 'quiet', 'RUNNING', ?1, 1, ?2)"
        ),
        rusqlite::params![gone, crate::common::rfc(before_boot())],
    );
}

#[test]
fn a_task_id_that_is_not_utf8_is_malformed_once_not_marked_forever() {
    let mut w = World::new();
    // 'task-' then 0xFF: TEXT with bytes that are not UTF-8.
    insert_dead_task(&mut w, "CAST(X'7461736b2dff' AS TEXT)");
    // The same as a BLOB.
    insert_dead_task(&mut w, "X'626c6f622dfe'");
    let text_id = "task-\\xff";
    let blob_id = "(blob) blob-\\xfe";

    let first = w.sweep(SCHEDULED);
    for (id, why) in [(text_id, "not valid UTF-8"), (blob_id, "BLOB")] {
        let f = finding(&first, id);
        assert_eq!(f.kind, Kind::Unverifiable, "{f:#?}");
        assert_eq!(
            (f.action, f.outcome),
            (Action::None, Outcome::Reported),
            "{f:#?}"
        );
        assert!(reason(f).contains(why), "{f:#?}");
        assert!(f.first_seen, "{f:#?}");
    }
    assert_eq!(first.action_errors(), 0, "{first:#?}");

    // Seen again, not reported again, and never marked.
    let second = w.sweep(SCHEDULED);
    for id in [text_id, blob_id] {
        let f = finding(&second, id);
        assert_eq!(f.kind, Kind::Unverifiable, "{f:#?}");
        assert!(!f.first_seen, "reported again: {f:#?}");
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM findings WHERE kind = 'unverifiable'"),
        2
    );
    assert_eq!(
        w.count(
            "SELECT COUNT(*) FROM findings WHERE outcome IN ('already_finished', 'marked_failed')"
        ),
        0
    );
    let running: i64 = w
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM tasks WHERE state = 'RUNNING'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(running, 2, "the executor's rows were left as they are");
}
