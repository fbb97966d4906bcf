-- What is bound with an identity besides its start ticks: whether the
-- process was a pooled worker, or bound without any proof (no started_at,
-- no pid_start_ticks). Both only ever forbid signals, so they stick for the
-- (task, attempt, pid); a later clock step or a rewritten row cannot lift
-- them. And the heartbeat as last seen, with when it last changed: a
-- heartbeat ahead of this clock counts only by moving.
ALTER TABLE observations ADD COLUMN pooled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE observations ADD COLUMN unproven INTEGER NOT NULL DEFAULT 0;
ALTER TABLE observations ADD COLUMN heartbeat TEXT;
ALTER TABLE observations ADD COLUMN heartbeat_moved_at TEXT;
