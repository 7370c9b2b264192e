-- Approval outcomes, the grants they create, and webhook deliveries.

ALTER TABLE approvals ADD COLUMN justification TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN summary TEXT NOT NULL DEFAULT '';
-- Who may approve (JSON list of principal names).
ALTER TABLE approvals ADD COLUMN approvers TEXT NOT NULL DEFAULT '[]';
-- Only a single-use approval of this very call will do.
ALTER TABLE approvals ADD COLUMN step_up INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN decided_by TEXT;
ALTER TABLE approvals ADD COLUMN decided_at INTEGER;
ALTER TABLE approvals ADD COLUMN decision_reason TEXT;
ALTER TABLE approvals ADD COLUMN grant_id TEXT;
ALTER TABLE approvals ADD COLUMN ended_mission INTEGER NOT NULL DEFAULT 0;
CREATE INDEX approvals_pending ON approvals(status, expires_at);

-- What the approver chose: `once` and `mission` cover exactly the approved
-- call (by request digest); `pattern` is the Cedar `permit` in `policy`.
ALTER TABLE grants ADD COLUMN scope TEXT NOT NULL DEFAULT 'pattern'
    CHECK (scope IN ('once', 'mission', 'pattern'));
ALTER TABLE grants ADD COLUMN request_digest TEXT;
ALTER TABLE grants ADD COLUMN approval_id TEXT REFERENCES approvals(id);
ALTER TABLE grants ADD COLUMN created_by TEXT NOT NULL DEFAULT '';

-- Webhook notifications waiting to be delivered. Kept after delivery (or
-- after giving up) for inspection; times in milliseconds.
CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed'))
) STRICT;
CREATE INDEX webhook_outbox_due ON webhook_outbox(state, next_attempt_ms);
