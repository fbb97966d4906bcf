-- `foreman silence`: while one is in force, findings of what it covers are
-- still recorded, but actions and alerts are held (outcome `silenced`).
-- scope is 'type', 'task' or 'host'; value the droid type, task id or host.
CREATE TABLE silences (
  id INTEGER PRIMARY KEY,
  scope TEXT NOT NULL,
  value TEXT NOT NULL,
  reason TEXT,
  created_at TEXT NOT NULL,
  until TEXT NOT NULL,
  cleared_at TEXT
);
