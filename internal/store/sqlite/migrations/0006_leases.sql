-- Leases: named, expiring claims of one holder (a replica or a process),
-- for work that must run once among the servers sharing this database.
-- Tokens come from one counter (meta 'lease_token') so that they grow
-- across every lease, released ones included.
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
