-- Environment specs and builds (as SQLite's migration 0005).
CREATE TABLE env_specs (
    id              text COLLATE "C" NOT NULL PRIMARY KEY,
    owner_id        text COLLATE "C" NOT NULL,
    name            text COLLATE "C" NOT NULL,
    base_image      text NOT NULL,
    python_packages jsonb,
    apt_packages    jsonb,
    python_version  text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE INDEX env_specs_page ON env_specs (created_at DESC, id);

-- The build table is the queue: workers claim the oldest queued build.
CREATE TABLE env_builds (
    id          text COLLATE "C" NOT NULL PRIMARY KEY,
    spec_id     text COLLATE "C" NOT NULL,
    owner_id    text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    targets     jsonb,
    image       text NOT NULL DEFAULT '',
    log         text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    attempts    bigint NOT NULL DEFAULT 0,
    artifacts   jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX env_builds_page ON env_builds (created_at DESC, id);
CREATE INDEX env_builds_queue ON env_builds (status, created_at, id);

ALTER TABLE templates ADD COLUMN environment text NOT NULL DEFAULT '';
