//! The activity log itself: schema versions, and readers beside a writer.

use foreman::activity::ActivityLog;

#[test]
fn a_dry_run_beside_a_daemon_still_migrating_sees_no_priors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activity.db");
    // What a starting daemon leaves for a moment: the file, in WAL mode,
    // its first migration not yet committed.
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.pragma_update(None, "journal_mode", "WAL").unwrap();
    assert!(ActivityLog::open_read_only(&path).unwrap().is_none());

    // A log from a newer Foreman is refused, never misread.
    writer.pragma_update(None, "user_version", 99).unwrap();
    let err = ActivityLog::open_read_only(&path).err().unwrap();
    assert!(format!("{err:#}").contains("schema version 99"), "{err:#}");
}

#[test]
fn a_log_from_a_newer_foreman_is_refused_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activity.db");
    let newer = rusqlite::Connection::open(&path).unwrap();
    newer.pragma_update(None, "user_version", 99).unwrap();
    let err = ActivityLog::open(&path).err().unwrap();
    assert!(
        format!("{err:#}").contains("newer than this Foreman"),
        "{err:#}"
    );
}

/// A log at schema 4 whose queued alert lost its finding to a hand-run
/// `sqlite3` (foreign keys off there) still migrates: the orphaned alert
/// had nothing to deliver, the others are kept.
#[test]
fn migration_5_keeps_queued_alerts_and_drops_those_of_deleted_findings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreman.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../../migrations/0001_init.sql"),
            include_str!("../../migrations/0002_alerts.sql"),
            include_str!("../../migrations/0003_finding_inputs.sql"),
            include_str!("../../migrations/0004_strays.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        let t = "2026-11-23T06:00:00.000Z";
        conn.execute_batch(&format!(
            "INSERT INTO sweeps (id, kind, host, mode, started_at) VALUES (1, 'manual', 'h', 'enforce', '{t}');
             INSERT INTO findings (id, task_id, attempt, kind, evidence, action, outcome, first_sweep_id, last_sweep_id, first_seen_at, last_seen_at)
               VALUES (1, 'a', 1, 'dead', '{{}}', 'mark_failed', 'marked_failed', 1, 1, '{t}', '{t}'),
                      (2, 'b', 1, 'dead', '{{}}', 'mark_failed', 'marked_failed', 1, 1, '{t}', '{t}');
             INSERT INTO alerts (finding_id, sink, state, queued_at, next_attempt_at) VALUES
               (1, 'recovery', 'queued', '{t}', '{t}'), (2, 'recovery', 'queued', '{t}', '{t}');
             DELETE FROM findings WHERE id = 2;"
        ))
        .unwrap();
    }
    let log = ActivityLog::open(&path).expect("migrates despite the orphaned alert");
    let rows: Vec<(i64, String)> = log
        .conn()
        .prepare("SELECT finding_id, state FROM alerts ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec![(1, "queued".to_string())]);
    assert!(
        log.next_alert_due().unwrap().is_some(),
        "still due for delivery"
    );
}
