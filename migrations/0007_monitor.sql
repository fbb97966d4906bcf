-- The execution monitor: each task as last known (the snapshot the next
-- sweep diffs against, moved on by pushed events too), each plan's
-- completion, every event once (pulled or pushed), and the inbox of pulled
-- events the monitor's queue has not taken yet.
CREATE TABLE monitor_tasks (
    task_id      TEXT PRIMARY KEY,
    plan_id      TEXT,
    droid_type   TEXT,
    state        TEXT NOT NULL,                  -- PENDING | RUNNING | SUCCESS | FAILED | SKIPPED
    attempt      INTEGER NOT NULL,
    stalled      INTEGER NOT NULL DEFAULT 0,     -- hung at the last sweep
    current      INTEGER NOT NULL DEFAULT 1,     -- 0: finished and out of the snapshot, kept with its plan
    pushed_at    TEXT,                           -- when a push last moved it; NULL once a snapshot agrees
    updated_at   TEXT NOT NULL                   -- when its state or attempt last changed
);
CREATE INDEX monitor_tasks_plan ON monitor_tasks(plan_id);
CREATE INDEX monitor_tasks_current ON monitor_tasks(current) WHERE current = 1;

CREATE TABLE monitor_plans (
    plan_id      TEXT PRIMARY KEY,
    completed_at TEXT,                           -- NULL while a task is not finished
    generation   INTEGER NOT NULL DEFAULT 0,     -- the attempt key of its last PLAN_COMPLETED
    updated_at   TEXT NOT NULL
);
CREATE INDEX monitor_plans_completed ON monitor_plans(completed_at);

CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    type         TEXT NOT NULL,                  -- TASK_STARTED ... PLAN_COMPLETED
    task_id      TEXT,                           -- NULL for PLAN_COMPLETED
    plan_id      TEXT,
    droid_type   TEXT,
    attempt      INTEGER NOT NULL,
    at           TEXT NOT NULL,                  -- when it happened, as reported or seen
    source       TEXT NOT NULL,                  -- pull | push | monitor (derived)
    received_at  TEXT NOT NULL,
    dedupe_key   TEXT NOT NULL UNIQUE            -- pull and push of one transition count once
);
CREATE INDEX events_received ON events(received_at);

CREATE TABLE event_inbox (
    -- AUTOINCREMENT: ids never come back after the consumer deletes rows,
    -- so the feeder's cursor (the highest id fed) never skips a new one.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event        TEXT NOT NULL                   -- JSON, as on POST /events
);

-- One row once the first snapshot was taken as the silent baseline.
CREATE TABLE monitor_baseline (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    taken_at     TEXT NOT NULL
);

-- /metrics reads the latest finished sweep at every scrape.
CREATE INDEX sweeps_finished ON sweeps(finished_at);
