-- Mission memory (docs/memory.md): what an agent keeps while its mission
-- runs. Every transaction that ends a mission deletes its rows; a sweep
-- deletes those of missions past their expiry.
CREATE TABLE memory_entries (
    mission_id  TEXT NOT NULL REFERENCES missions(id),
    -- The key's UTF-8 bytes, exactly as sent (any character, NUL too,
    -- which a TEXT column cannot hold).
    key         BYTEA NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 256),
    -- The value's JSON text, exactly as sent (TEXT, not JSONB, which would
    -- reorder it and refuses `\u0000`); bytes is its length.
    value       TEXT NOT NULL,
    bytes       BIGINT NOT NULL CHECK (bytes BETWEEN 1 AND 65536),
    value_s256  TEXT NOT NULL,
    shared      BIGINT NOT NULL CHECK (shared IN (0, 1)),
    -- The agent's stated source (its claim).
    source      TEXT NOT NULL,
    -- The mission's taint (JSON) when the entry was last written.
    taint       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (mission_id, key)
);

-- An agent's notes: entries a person promoted from one of its missions,
-- with their provenance, for its later missions.
CREATE TABLE agent_notes (
    agent          TEXT NOT NULL REFERENCES agents(name),
    key            BYTEA NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 256),
    value          TEXT NOT NULL,
    bytes          BIGINT NOT NULL CHECK (bytes BETWEEN 1 AND 65536),
    value_s256     TEXT NOT NULL,
    source         TEXT NOT NULL,
    taint          TEXT,
    -- When the entry was last written in its mission.
    written_at     BIGINT NOT NULL,
    promoted_from  TEXT NOT NULL REFERENCES missions(id),
    promoted_by    TEXT NOT NULL,
    promoted_at    BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    PRIMARY KEY (agent, key)
);
