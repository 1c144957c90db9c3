-- Teams: every API key, sandbox and template belongs to one, and a key sees only its own
-- team's objects. Rows from before teams existed join the team "default", which hearth dev
-- uses and `hearth server --api-key` keys join; the DEFAULT clauses are for those rows only:
-- the store always writes team_id itself and refuses an empty one.
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
INSERT INTO teams (id, name, created_at) VALUES ('default', 'default', 0);

ALTER TABLE api_keys ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX api_keys_team_idx ON api_keys (team_id);

ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_team_idx ON sandboxes (team_id, started_at, id);

ALTER TABLE templates ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
