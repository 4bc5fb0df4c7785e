-- Times are INTEGER unix nanoseconds (UTC by definition), so they compare and
-- sort numerically; NULL stands for the zero time.time.Time. Maps and lists are
-- JSON text; NULL stands for a nil map or slice, '{}' / '[]' for an empty one.

CREATE TABLE sandboxes (
    id         TEXT    NOT NULL PRIMARY KEY,
    provider   TEXT    NOT NULL,
    image      TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    owner_id   TEXT    NOT NULL DEFAULT '',
    template   TEXT    NOT NULL DEFAULT '',
    memory_mb  INTEGER NOT NULL DEFAULT 0,
    vcpus      INTEGER NOT NULL DEFAULT 0,
    disk_mb    INTEGER NOT NULL DEFAULT 0,
    metadata   TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    env        TEXT CHECK (env IS NULL OR json_valid(env)),
    handle     TEXT    NOT NULL DEFAULT '',
    last_error TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;

-- ListSandboxes orders by (created_at DESC, id); the owner and state indexes
-- carry created_at so a filtered listing needs no separate sort.
CREATE INDEX sandboxes_created ON sandboxes (created_at, id);
CREATE INDEX sandboxes_owner ON sandboxes (owner_id, created_at);
CREATE INDEX sandboxes_state ON sandboxes (state, created_at);
-- The reaper asks for expired sandboxes every few seconds.
CREATE INDEX sandboxes_expires ON sandboxes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE sandbox_history (
    seq        INTEGER NOT NULL PRIMARY KEY,
    sandbox_id TEXT    NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    state      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    at         INTEGER NOT NULL
) STRICT;

CREATE INDEX sandbox_history_sandbox ON sandbox_history (sandbox_id, seq);

CREATE TABLE templates (
    name        TEXT    NOT NULL PRIMARY KEY,
    version     INTEGER NOT NULL CHECK (version >= 1),
    image       TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    setup       TEXT CHECK (setup IS NULL OR json_valid(setup)),
    env         TEXT CHECK (env IS NULL OR json_valid(env)),
    memory_mb   INTEGER NOT NULL DEFAULT 0,
    cpu_cores   INTEGER NOT NULL DEFAULT 0,
    ttl_seconds INTEGER NOT NULL DEFAULT 0,
    pool_size   INTEGER NOT NULL DEFAULT 0,
    provider    TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
