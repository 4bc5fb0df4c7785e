-- The PostgreSQL schema of StacyVM: the same records as the SQLite store.
-- Times are timestamptz (microseconds; NULL stands for the zero time). Maps
-- and lists are jsonb; NULL stands for a nil map or slice, '{}' / '[]' for an
-- empty one. Keys and names sort bytewise (COLLATE "C"), as in SQLite,
-- whatever the database's locale.

CREATE TABLE sandboxes (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    provider   text    NOT NULL,
    image      text    NOT NULL,
    state      text    NOT NULL,
    owner_id   text    NOT NULL DEFAULT '',
    template   text    NOT NULL DEFAULT '',
    memory_mb  bigint  NOT NULL DEFAULT 0,
    vcpus      bigint  NOT NULL DEFAULT 0,
    disk_mb    bigint  NOT NULL DEFAULT 0,
    metadata   jsonb,
    env        jsonb,
    handle     text    NOT NULL DEFAULT '',
    last_error text    NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz
);

-- Keyset paging walks (created_at DESC, id ASC).
CREATE INDEX sandboxes_page ON sandboxes (created_at DESC, id);
CREATE INDEX sandboxes_owner ON sandboxes (owner_id, created_at);
CREATE INDEX sandboxes_state_updated ON sandboxes (state, updated_at);
-- The reaper asks for expired sandboxes every few seconds.
CREATE INDEX sandboxes_expires ON sandboxes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE sandbox_history (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sandbox_id text COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    state      text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL
);

CREATE INDEX sandbox_history_sandbox ON sandbox_history (sandbox_id, seq);

CREATE TABLE templates (
    name        text COLLATE "C" NOT NULL PRIMARY KEY,
    version     bigint  NOT NULL CHECK (version >= 1),
    image       text    NOT NULL,
    description text    NOT NULL DEFAULT '',
    setup       jsonb,
    env         jsonb,
    memory_mb   bigint  NOT NULL DEFAULT 0,
    cpu_cores   bigint  NOT NULL DEFAULT 0,
    ttl_seconds bigint  NOT NULL DEFAULT 0,
    pool_size   bigint  NOT NULL DEFAULT 0,
    provider    text    NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Settings of this database, such as the server instance id that labels
-- every runtime the deployment starts (shared by all its replicas).
CREATE TABLE meta (
    key   text NOT NULL PRIMARY KEY,
    value text NOT NULL
);
