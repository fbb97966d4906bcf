-- Heartbeats an executor pushes (POST /heartbeat) when it cannot write its
-- own task table: the latest per (task, attempt), with when Foreman received
-- it (its own clock) and an optional progress note. A sweep counts it as the
-- task's heartbeat when it is newer than the row's `last_progress_at`.
CREATE TABLE pushed_heartbeats (
  task_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  at TEXT NOT NULL,
  note TEXT,
  PRIMARY KEY (task_id, attempt)
);
