-- Processes that matched a droid type's `process_match` and belonged to no
-- task, by identity. A stray is reported once it is seen on two consecutive
-- sweeps, and only once; a row not seen by a sweep is deleted.
CREATE TABLE stray_candidates (
    boot_id        TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    start_ticks    INTEGER NOT NULL,
    droid_type     TEXT,                         -- NULL: matched [defaults]
    first_seen_at  TEXT NOT NULL,
    last_sweep_id  INTEGER NOT NULL,
    reported       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (boot_id, pid, start_ticks)
);
