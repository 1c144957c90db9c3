-- Snapshots (E2B's POST /sandboxes/{id}/snapshots): a copy of a running sandbox kept on the
-- host that took it, which new sandboxes start from. source_sandbox_id and host_id carry no
-- foreign key: a snapshot outlives its sandbox, and its host's removal is the control
-- plane's to clean up. A name is unique within a team; unnamed snapshots have name ''.
CREATE TABLE snapshots (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    team_id           TEXT NOT NULL DEFAULT '',
    source_sandbox_id TEXT NOT NULL,
    host_id           TEXT NOT NULL,
    template_id       TEXT NOT NULL,
    alias             TEXT NOT NULL,
    cpus              INTEGER NOT NULL,
    memory_mib        INTEGER NOT NULL,
    disk_mib          INTEGER NOT NULL,
    envd_version      TEXT NOT NULL,
    size_bytes        BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX snapshots_name_idx ON snapshots (team_id, name) WHERE name <> '';
CREATE INDEX snapshots_source_idx ON snapshots (source_sandbox_id);
-- Paging orders by (created_at, id).
CREATE INDEX snapshots_created_idx ON snapshots (created_at, id);
