-- The audit log: hash-chained records and signed checkpoints (see
-- mandate-core's `audit` module). Append-only by contract: nothing in
-- Mandate updates or deletes these rows; `mandate audit verify` finds any
-- change made behind its back.

CREATE TABLE audit_events (
    -- The record's position in the chain, assigned by the writer (under
    -- its advisory lock), never by a sequence: a sequence leaves gaps.
    seq     BIGINT PRIMARY KEY NOT NULL,
    time    BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    -- The event body, RFC 8785 canonical JSON.
    body    TEXT NOT NULL,
    hash    TEXT NOT NULL
);

CREATE TABLE audit_checkpoints (
    seq     BIGINT PRIMARY KEY NOT NULL,
    -- A JWS (`typ` mandate-checkpoint+jwt) over {iss, seq, head, iat}.
    token   TEXT NOT NULL
);
