-- Keyset paging walks (created_at DESC, id ASC): an index in that order
-- answers "the next page after (created_at, id)" without a sort.
CREATE INDEX sandboxes_page ON sandboxes (created_at DESC, id);
-- The reaper purges destroyed records older than the retention.
CREATE INDEX sandboxes_state_updated ON sandboxes (state, updated_at);

-- Settings of this database, such as the server instance id that labels
-- every runtime this server starts.
CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
