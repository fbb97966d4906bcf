-- The wellbeing sweep. Every run is recorded with its checks; a run's id is
-- its schedule slot (`2026-11-23T06:00`) or, run on demand, an id of its
-- own, so recording a run is the compare-and-set that files its initiative
-- at most once.
CREATE TABLE wellbeing_runs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,                 -- scheduled | catch_up | manual
    host          TEXT NOT NULL,
    slot_at       TEXT,                          -- RFC 3339 UTC; NULL for manual runs
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    outcome       TEXT NOT NULL,                 -- healthy | issues
    issues        INTEGER NOT NULL,
    checks        TEXT NOT NULL                  -- JSON [{subject, check, status, severity, summary, evidence, action}]
);
CREATE INDEX wellbeing_runs_started ON wellbeing_runs(started_at);

-- At most one per run, written in the same transaction as the run.
CREATE TABLE initiatives (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL UNIQUE REFERENCES wellbeing_runs(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    title       TEXT NOT NULL,
    severity    TEXT NOT NULL,                   -- warning | critical
    body        TEXT NOT NULL,                   -- Markdown
    payload     TEXT NOT NULL                    -- JSON, as delivered
);

-- The outbox now carries initiatives as well as findings' alerts: each row
-- names exactly one of them.
CREATE TABLE alerts_v5 (
    id              INTEGER PRIMARY KEY,
    finding_id      INTEGER REFERENCES findings(id) ON DELETE CASCADE,
    initiative_id   INTEGER REFERENCES initiatives(id) ON DELETE CASCADE,
    sink            TEXT NOT NULL,               -- an [[alerts]] or [[wellbeing.sinks]] name
    state           TEXT NOT NULL,               -- queued | delivered | expired | cancelled
    queued_at       TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    last_error      TEXT,
    closed_at       TEXT,
    close_reason    TEXT,
    CHECK ((finding_id IS NULL) <> (initiative_id IS NULL))
);
INSERT INTO alerts_v5 (id, finding_id, sink, state, queued_at, next_attempt_at, attempts,
                       last_attempt_at, last_error, closed_at, close_reason)
    SELECT id, finding_id, sink, state, queued_at, next_attempt_at, attempts,
           last_attempt_at, last_error, closed_at, close_reason FROM alerts
    -- A finding deleted by hand (sqlite3 runs without foreign keys) leaves
    -- its alerts behind: they had nothing to deliver.
    WHERE finding_id IN (SELECT id FROM findings);
DROP TABLE alerts;
ALTER TABLE alerts_v5 RENAME TO alerts;
CREATE INDEX alerts_due ON alerts(state, next_attempt_at);
CREATE INDEX alerts_finding ON alerts(finding_id, sink);
CREATE INDEX alerts_initiative ON alerts(initiative_id);
