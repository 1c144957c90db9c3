-- Paused sandboxes that can move between hosts: snapshot_manifest is the digest of the
-- manifest of the sandbox's paused state in the agents' artifacts store (empty: the snapshot
-- is on its host only, so it resumes there).
ALTER TABLE sandboxes ADD COLUMN snapshot_manifest TEXT NOT NULL DEFAULT '';
