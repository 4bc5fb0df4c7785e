-- When a replica last recorded activity in a sandbox (Store.TouchSandboxes),
-- so that the idle sweep of any replica sharing the database sees the
-- activity every replica serves. NULL: none recorded.
ALTER TABLE sandboxes ADD COLUMN last_activity timestamptz;
