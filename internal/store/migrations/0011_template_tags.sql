-- Template tags and versions (E2B's name:tag). A tag names one ready build of a template;
-- the bare name means tag 'default'. Each API build is its own version on the agents:
-- agent_template is the name the agents keep it under ('' for builds made before versions,
-- kept under the template ID), artifact the digest of its manifest in the agents' artifacts
-- store, tags the tags it asked for (JSON list), deleted_at when garbage collection claimed
-- it (0: present). Sandboxes and snapshots record the build they run, so a rebuild or a tag
-- moving never changes what they boot, and collection spares what they use.
CREATE TABLE template_tags (
    template_id TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    build_id    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (template_id, tag)
);
CREATE INDEX template_tags_build_idx ON template_tags (build_id);

ALTER TABLE template_builds ADD COLUMN agent_template TEXT NOT NULL DEFAULT '';
ALTER TABLE template_builds ADD COLUMN artifact TEXT NOT NULL DEFAULT '';
ALTER TABLE template_builds ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE template_builds ADD COLUMN deleted_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN build_id TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_build_idx ON sandboxes (build_id);
ALTER TABLE snapshots ADD COLUMN build_id TEXT NOT NULL DEFAULT '';

-- A template built through the API before tags existed: its current build is its default.
INSERT INTO template_tags (template_id, tag, build_id, created_at)
SELECT t.id, 'default', t.build_id, t.updated_at FROM templates t
WHERE EXISTS (SELECT 1 FROM template_builds b WHERE b.id = t.build_id AND b.status = 'ready');
