-- Idle timeouts (docs/lifecycle.md): how long a sandbox may go without
-- activity, and what then happens to it ("pause" or "destroy"); the same
-- for the sandboxes a template spawns.
ALTER TABLE sandboxes ADD COLUMN idle_timeout_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN on_idle text NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN idle_timeout_seconds bigint NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN on_idle text NOT NULL DEFAULT '';
