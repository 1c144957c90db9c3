-- A drained host takes no new sandboxes. The flag is the operator's: heartbeats, which
-- rewrite the rest of the row, never change it.
ALTER TABLE hosts ADD COLUMN draining BOOLEAN NOT NULL DEFAULT FALSE;
-- What placement weighs besides memory, as the agent reports it: the vCPUs of its running
-- sandboxes, and its cap on running sandboxes (0: none).
ALTER TABLE hosts ADD COLUMN cpus_committed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN max_sandboxes INTEGER NOT NULL DEFAULT 0;
