-- Template builds made through the API (E2B's Template SDK: POST /v3/templates, then
-- POST /v2/templates/{id}/builds/{buildID}). A build is waiting until it is started,
-- building while an agent runs it, then ready or error. host_id is the agent that built
-- it: the template's files live there. recipe is the start request as received (JSON).
-- team_id is set once templates belong to teams.
CREATE TABLE template_builds (
    id          TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    team_id     TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL,
    host_id     TEXT NOT NULL DEFAULT '',
    recipe      TEXT NOT NULL DEFAULT '',
    reason      TEXT NOT NULL DEFAULT '',
    reason_step TEXT NOT NULL DEFAULT '',
    cpus        INTEGER NOT NULL,
    memory_mib  INTEGER NOT NULL,
    version     TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX template_builds_template_idx ON template_builds (template_id, created_at);

-- A build's log, in the order the agent sent it: the status endpoint pages it by offset
-- (seq).
CREATE TABLE template_build_logs (
    build_id TEXT NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    ts       BIGINT NOT NULL,
    level    TEXT NOT NULL,
    step     TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
);
