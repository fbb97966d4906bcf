-- `foreman review`: every run of the self-test and each of its checks, so
-- `foreman log`, the wellbeing sweep and `foreman twin` can show the latest.
CREATE TABLE review_runs (
    id           TEXT PRIMARY KEY,               -- review-<time>-<pid>
    kind         TEXT NOT NULL,                  -- sandbox | live
    host         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    passed       INTEGER NOT NULL,               -- 1 when no check failed
    failed       INTEGER NOT NULL,
    skipped      INTEGER NOT NULL
);
CREATE INDEX review_runs_finished ON review_runs(finished_at);

CREATE TABLE review_checks (
    run_id       TEXT NOT NULL REFERENCES review_runs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,                  -- pass | fail | skip
    reason       TEXT NOT NULL,
    evidence     TEXT,                           -- JSON: what was expected, what Foreman said
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
