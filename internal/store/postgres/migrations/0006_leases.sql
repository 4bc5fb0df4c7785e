-- Leases: named, expiring claims of one holder (a replica), for work that
-- must run once among the replicas sharing this database. Expiry is by the
-- database's clock, so replicas' clocks need not agree. Tokens come from
-- one sequence, so that they grow across every lease, released ones
-- included.
CREATE SEQUENCE lease_tokens;

CREATE TABLE leases (
    name       text COLLATE "C" NOT NULL PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
