-- Environment specs: an owner's recipe (base image, apt and pip packages).
-- A name is unique per owner.
CREATE TABLE env_specs (
    id              TEXT    NOT NULL PRIMARY KEY,
    owner_id        TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    base_image      TEXT    NOT NULL,
    python_packages TEXT CHECK (python_packages IS NULL OR json_valid(python_packages)),
    apt_packages    TEXT CHECK (apt_packages IS NULL OR json_valid(apt_packages)),
    python_version  TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    UNIQUE (owner_id, name)
) STRICT;
CREATE INDEX env_specs_page ON env_specs (created_at DESC, id);

-- Environment builds. The table is the build queue: workers claim the
-- oldest queued build, so queued builds survive a restart.
CREATE TABLE env_builds (
    id          TEXT    NOT NULL PRIMARY KEY,
    spec_id     TEXT    NOT NULL,
    owner_id    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    targets     TEXT CHECK (targets IS NULL OR json_valid(targets)),
    image       TEXT    NOT NULL DEFAULT '',
    log         TEXT    NOT NULL DEFAULT '',
    reason      TEXT    NOT NULL DEFAULT '',
    attempts    INTEGER NOT NULL DEFAULT 0,
    artifacts   TEXT CHECK (artifacts IS NULL OR json_valid(artifacts)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER
) STRICT;
CREATE INDEX env_builds_page ON env_builds (created_at DESC, id);
CREATE INDEX env_builds_queue ON env_builds (status, created_at, id);

-- A template may name an environment (spec or build ID) instead of an image.
ALTER TABLE templates ADD COLUMN environment TEXT NOT NULL DEFAULT '';
