-- Mission memory (docs/memory.md): what an agent keeps while its mission
-- runs. Every transaction that ends a mission deletes its rows; a sweep
-- deletes those of missions past their expiry.
CREATE TABLE memory_entries (
    mission_id  TEXT NOT NULL REFERENCES missions(id),
    -- The key's UTF-8 bytes, exactly as sent (any character, NUL too).
    key         BLOB NOT NULL CHECK (typeof(key) = 'blob' AND length(key) BETWEEN 1 AND 256),
    -- The value's JSON text, exactly as sent; bytes is its length.
    value       TEXT NOT NULL,
    bytes       INTEGER NOT NULL CHECK (bytes BETWEEN 1 AND 65536),
    value_s256  TEXT NOT NULL,
    shared      INTEGER NOT NULL CHECK (shared IN (0, 1)),
    -- The agent's stated source (its claim).
    source      TEXT NOT NULL,
    -- The mission's taint (JSON) when the entry was last written.
    taint       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (mission_id, key)
);

-- An agent's notes: entries a person promoted from one of its missions,
-- with their provenance, for its later missions.
CREATE TABLE agent_notes (
    agent          TEXT NOT NULL REFERENCES agents(name),
    key            BLOB NOT NULL CHECK (typeof(key) = 'blob' AND length(key) BETWEEN 1 AND 256),
    value          TEXT NOT NULL,
    bytes          INTEGER NOT NULL CHECK (bytes BETWEEN 1 AND 65536),
    value_s256     TEXT NOT NULL,
    source         TEXT NOT NULL,
    taint          TEXT,
    -- When the entry was last written in its mission.
    written_at     INTEGER NOT NULL,
    promoted_from  TEXT NOT NULL REFERENCES missions(id),
    promoted_by    TEXT NOT NULL,
    promoted_at    INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    PRIMARY KEY (agent, key)
);
