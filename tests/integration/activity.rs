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
