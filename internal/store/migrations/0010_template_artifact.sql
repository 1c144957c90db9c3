-- Templates that can move between hosts: artifact is the digest of the manifest of the
-- template's current build in the agents' artifacts store (empty: only hosts that built or
-- copied it have it).
ALTER TABLE templates ADD COLUMN artifact TEXT NOT NULL DEFAULT '';
