-- Foreman's activity log. Never edit a migration that has shipped; add a new one.

CREATE TABLE sweeps (
    id                 INTEGER PRIMARY KEY,
    kind               TEXT NOT NULL,            -- scheduled | startup | manual
    host               TEXT NOT NULL,
    mode               TEXT NOT NULL,            -- enforce | shadow
    started_at         TEXT NOT NULL,            -- RFC 3339 UTC
    finished_at        TEXT,
    tasks_seen         INTEGER NOT NULL DEFAULT 0,
    tasks_checked      INTEGER NOT NULL DEFAULT 0,
    findings           INTEGER NOT NULL DEFAULT 0,
    actions            INTEGER NOT NULL DEFAULT 0,
    action_errors      INTEGER NOT NULL DEFAULT 0,
    error              TEXT,                     -- snapshot_error: why nothing was judged
    deferral           TEXT,                     -- why hung verdicts were deferred
    boot_id            TEXT,
    clock_realtime_ns  INTEGER,
    clock_monotonic_ns INTEGER,
    clock_boottime_ns  INTEGER,
    hang_floor         TEXT                      -- after a suspend or clock step, hang clocks restart here
);
CREATE INDEX sweeps_started ON sweeps(started_at);

-- One row per (task, attempt, kind): a finding seen again is updated, not repeated.
CREATE TABLE findings (
    id              INTEGER PRIMARY KEY,
    task_id         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    droid_type      TEXT,
    plan_id         TEXT,
    pid             INTEGER,
    host            TEXT,
    evidence        TEXT NOT NULL,               -- JSON
    action          TEXT NOT NULL,               -- mark_failed | terminate_and_mark | none | deferred
    outcome         TEXT NOT NULL,               -- pending | marked_failed | already_finished | ...
    outcome_detail  TEXT,
    first_sweep_id  INTEGER NOT NULL REFERENCES sweeps(id),
    last_sweep_id   INTEGER NOT NULL REFERENCES sweeps(id),
    first_seen_at   TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    acted_at        TEXT,
    times_seen      INTEGER NOT NULL DEFAULT 1,
    UNIQUE (task_id, attempt, kind)
);
CREATE INDEX findings_outcome ON findings(outcome);
CREATE INDEX findings_last_seen ON findings(last_seen_at);

-- Every signal Foreman sent, or refused to send, on behalf of a finding.
CREATE TABLE finding_signals (
    id           INTEGER PRIMARY KEY,
    finding_id   INTEGER NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
    at           TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    start_ticks  INTEGER,
    signal       TEXT NOT NULL,
    result       TEXT NOT NULL
);
CREATE INDEX finding_signals_finding ON finding_signals(finding_id);

-- What Foreman remembers of each (task, attempt, pid): bound identity and counters.
CREATE TABLE observations (
    task_id       TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    pid           INTEGER NOT NULL,
    boot_id       TEXT NOT NULL,
    start_ticks   INTEGER,
    binding       TEXT,
    first_seen_at TEXT NOT NULL,
    seen_at       TEXT NOT NULL,
    cpu_moved_at  TEXT,
    io_moved_at   TEXT,
    gone_since    TEXT,
    members       TEXT NOT NULL,                 -- JSON [{pid, start_ticks, cpu_ticks, io_bytes}]
    PRIMARY KEY (task_id, attempt, pid)
);
CREATE INDEX observations_seen ON observations(seen_at);
