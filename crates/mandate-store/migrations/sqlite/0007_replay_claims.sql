-- Replay claims: the key (a hex digest the caller computes) of every
-- signed request used, until it expires (Unix seconds). A second use of a
-- key still recorded is refused, by any node sharing the database.
CREATE TABLE claims (
    key     TEXT PRIMARY KEY NOT NULL,
    expires INTEGER NOT NULL
) STRICT;
CREATE INDEX claims_expires ON claims(expires);
