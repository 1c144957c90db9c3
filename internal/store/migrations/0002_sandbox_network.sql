-- A sandbox's network settings (E2B's `network` option): its own outbound allow and deny
-- lists as JSON arrays of IPv4 addresses and CIDR ranges, and whether its ports are public
-- or need the traffic access token.
ALTER TABLE sandboxes ADD COLUMN allow_out TEXT NOT NULL DEFAULT '[]';
ALTER TABLE sandboxes ADD COLUMN deny_out TEXT NOT NULL DEFAULT '[]';
ALTER TABLE sandboxes ADD COLUMN allow_public_traffic BOOLEAN NOT NULL DEFAULT TRUE;
-- Until this change every secure sandbox's ports required the traffic token; sandboxes
-- created before it keep that.
UPDATE sandboxes SET allow_public_traffic = FALSE WHERE secure;
