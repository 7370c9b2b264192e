-- Budget counting, grants (created by approvals), approval requests (created by escalations).

ALTER TABLE missions ADD COLUMN requests_used BIGINT NOT NULL DEFAULT 0;

-- A grant: a mission-scoped `permit` created by an approval. Dies with its mission.
CREATE TABLE grants (
    id          TEXT PRIMARY KEY NOT NULL,
    mission_id  TEXT NOT NULL REFERENCES missions(id),
    policy      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    max_uses    BIGINT,
    uses        BIGINT NOT NULL DEFAULT 0,
    revoked_at  BIGINT
);
CREATE INDEX grants_mission ON grants(mission_id);

-- An escalated request waiting for a human. Identical requests of one
-- mission join the pending one (same request digest).
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY NOT NULL,
    mission_id      TEXT NOT NULL REFERENCES missions(id),
    request_digest  TEXT NOT NULL,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    -- The request's attributes (canonical JSON), so the approver sees what
    -- they approve; and its digest.
    context         TEXT NOT NULL,
    context_digest  TEXT NOT NULL,
    reason_code     TEXT NOT NULL,
    policies        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    hits            BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX approvals_mission ON approvals(mission_id);
CREATE UNIQUE INDEX approvals_one_pending ON approvals(mission_id, request_digest) WHERE status = 'pending';
