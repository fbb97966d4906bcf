-- The durable alert outbox. A row is written in the same transaction as its
-- finding, before anything acts; it is delivered after the action's outcome
-- is recorded, and retried until delivered or too old.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    finding_id      INTEGER NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
    sink            TEXT NOT NULL,               -- the [[alerts]] name
    state           TEXT NOT NULL,               -- queued | delivered | expired | cancelled
    queued_at       TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    last_error      TEXT,
    closed_at       TEXT,                        -- delivered, expired or cancelled at
    close_reason    TEXT
);
CREATE INDEX alerts_due ON alerts(state, next_attempt_at);
CREATE INDEX alerts_finding ON alerts(finding_id, sink);
