-- Filesystem-only pauses (E2B's autoPauseMemory false and pause {"memory": false}):
-- auto_pause_fs_only is the sandbox's policy for its timeout, paused_fs_only says that the
-- pause it is in kept only the disk, so traffic cannot resume it.
ALTER TABLE sandboxes ADD COLUMN auto_pause_fs_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sandboxes ADD COLUMN paused_fs_only BOOLEAN NOT NULL DEFAULT FALSE;
