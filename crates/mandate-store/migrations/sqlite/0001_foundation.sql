-- Principals, agents, missions, mission credentials, revocations.
-- Times are Unix seconds. Names are identities and are never deleted or reused.

CREATE TABLE principals (
    name        TEXT PRIMARY KEY NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    -- 'local' today; federated identities later carry their provider here.
    source      TEXT NOT NULL DEFAULT 'local',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    principal   TEXT NOT NULL REFERENCES principals(name),
    hash        TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX api_tokens_principal ON api_tokens(principal);

CREATE TABLE agents (
    name        TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL REFERENCES principals(name),
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX agents_owner ON agents(owner);

CREATE TABLE missions (
    id                      TEXT PRIMARY KEY NOT NULL,
    principal               TEXT NOT NULL REFERENCES principals(name),
    agent                   TEXT NOT NULL REFERENCES agents(name),
    -- The immutable body in its RFC 8785 canonical form; s256 is its hash.
    body                    TEXT NOT NULL,
    s256                    TEXT NOT NULL UNIQUE,
    created_at              INTEGER NOT NULL,
    expires_at              INTEGER NOT NULL,
    state                   TEXT NOT NULL CHECK (state IN ('ready', 'active', 'ended')),
    start_token_hash        TEXT NOT NULL UNIQUE,
    start_token_expires_at  INTEGER NOT NULL,
    start_token_used_at     INTEGER,
    jkt                     TEXT,
    started_at              INTEGER,
    ended_at                INTEGER,
    end_reason              TEXT CHECK (end_reason IN ('completed', 'expired', 'revoked')),
    ended_by                TEXT,
    CHECK ((state = 'ready') = (jkt IS NULL AND started_at IS NULL) OR state = 'ended'),
    CHECK ((state = 'ended') = (ended_at IS NOT NULL AND end_reason IS NOT NULL))
) STRICT;
CREATE INDEX missions_principal ON missions(principal);
CREATE INDEX missions_agent ON missions(agent);

-- Every credential issued, for accountability and later introspection.
CREATE TABLE credentials (
    jti         TEXT PRIMARY KEY NOT NULL,
    mission_id  TEXT NOT NULL REFERENCES missions(id),
    jkt         TEXT NOT NULL,
    iat         INTEGER NOT NULL,
    exp         INTEGER NOT NULL
) STRICT;
CREATE INDEX credentials_mission ON credentials(mission_id);

CREATE TABLE revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('mission', 'agent', 'principal', 'token')),
    target      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_by  TEXT NOT NULL,
    at          INTEGER NOT NULL
) STRICT;
