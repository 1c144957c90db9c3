-- Initial schema. Written in the SQL that SQLite and PostgreSQL both accept: IDs and JSON
-- documents are TEXT, times are BIGINT unix milliseconds (0 for an unset time), flags are
-- BOOLEAN (SQLite stores them as 0/1).

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    mask         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE templates (
    id           TEXT PRIMARY KEY,
    cpus         INTEGER NOT NULL,
    memory_mib   INTEGER NOT NULL,
    disk_mib     INTEGER NOT NULL,
    envd_version TEXT NOT NULL,
    build_id     TEXT NOT NULL,
    build_status TEXT NOT NULL,
    public       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- The primary key makes an alias unique across templates.
CREATE TABLE template_aliases (
    alias       TEXT PRIMARY KEY,
    template_id TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE
);
CREATE INDEX template_aliases_template_idx ON template_aliases (template_id);

-- template_id and host_id carry no foreign key: a sandbox record outlives the deletion of
-- its template or the removal of its host, and the control plane cleans it up.
CREATE TABLE sandboxes (
    id                   TEXT PRIMARY KEY,
    template_id          TEXT NOT NULL,
    alias                TEXT NOT NULL,
    host_id              TEXT NOT NULL,
    state                TEXT NOT NULL,
    cpus                 INTEGER NOT NULL,
    memory_mib           INTEGER NOT NULL,
    disk_mib             INTEGER NOT NULL,
    started_at           BIGINT NOT NULL,
    end_at               BIGINT NOT NULL,
    metadata             TEXT NOT NULL,
    env_vars             TEXT NOT NULL,
    envd_version         TEXT NOT NULL,
    envd_access_token    TEXT NOT NULL,
    traffic_access_token TEXT NOT NULL,
    secure               BOOLEAN NOT NULL,
    allow_internet       BOOLEAN NOT NULL,
    auto_pause           BOOLEAN NOT NULL,
    auto_resume          BOOLEAN NOT NULL,
    version              BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX sandboxes_state_idx ON sandboxes (state);
CREATE INDEX sandboxes_host_idx ON sandboxes (host_id);
CREATE INDEX sandboxes_template_idx ON sandboxes (template_id);
-- Paging orders by (started_at, id).
CREATE INDEX sandboxes_started_idx ON sandboxes (started_at, id);
CREATE INDEX sandboxes_end_idx ON sandboxes (end_at);

CREATE TABLE hosts (
    id                   TEXT PRIMARY KEY,
    rpc_addr             TEXT NOT NULL,
    proxy_addr           TEXT NOT NULL,
    runtime              TEXT NOT NULL,
    state                TEXT NOT NULL,
    cpus                 INTEGER NOT NULL,
    memory_total_mib     BIGINT NOT NULL,
    memory_available_mib BIGINT NOT NULL,
    memory_committed_mib BIGINT NOT NULL,
    sandboxes_running    INTEGER NOT NULL,
    sandboxes_paused     INTEGER NOT NULL,
    registered_at        BIGINT NOT NULL,
    last_heartbeat       BIGINT NOT NULL
);
