-- A host's own credential: the SHA-256 (hex) of the per-host token the control plane issued
-- at its first registration. Later heartbeats for the host ID must present that token, so
-- holders of the shared agent token cannot take the host over. Hosts registered before this
-- change have none and are claimed by their next heartbeat.
ALTER TABLE hosts ADD COLUMN token_hash TEXT NOT NULL DEFAULT '';
