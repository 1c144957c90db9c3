-- A drained host takes no new sandboxes. The flag is the operator's: heartbeats, which
-- rewrite the rest of the row, never change it.
ALTER TABLE hosts ADD COLUMN draining BOOLEAN NOT NULL DEFAULT FALSE;
