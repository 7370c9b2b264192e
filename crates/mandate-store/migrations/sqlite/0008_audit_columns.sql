-- The audit log's filters answered by indexes (ADR 0018). The fields that
-- operators filter by are kept beside each record as columns, derived from
-- its body (the body's string field of that name, else NULL) by the audit
-- sink on append. The body stays the chained, canonical text: these
-- columns are not hashed, and verification never reads them.
ALTER TABLE audit_events ADD COLUMN mission TEXT;
ALTER TABLE audit_events ADD COLUMN principal TEXT;
ALTER TABLE audit_events ADD COLUMN agent TEXT;
ALTER TABLE audit_events ADD COLUMN action TEXT;
ALTER TABLE audit_events ADD COLUMN decision TEXT;

-- Records written before this migration. A body that is not JSON (only a
-- tampered one) keeps NULLs; verification reports it.
UPDATE audit_events SET
    mission   = CASE WHEN json_type(body, '$.mission')   = 'text' THEN json_extract(body, '$.mission')   END,
    principal = CASE WHEN json_type(body, '$.principal') = 'text' THEN json_extract(body, '$.principal') END,
    agent     = CASE WHEN json_type(body, '$.agent')     = 'text' THEN json_extract(body, '$.agent')     END,
    action    = CASE WHEN json_type(body, '$.action')    = 'text' THEN json_extract(body, '$.action')    END,
    decision  = CASE WHEN json_type(body, '$.decision')  = 'text' THEN json_extract(body, '$.decision')  END
WHERE json_valid(body);

-- One index per filter, each ending in `seq`: the rows of one value come
-- in log order, so `after`/`limit` paging stops after one page.
CREATE INDEX audit_events_kind      ON audit_events(kind, seq);
CREATE INDEX audit_events_mission   ON audit_events(mission, seq)   WHERE mission IS NOT NULL;
CREATE INDEX audit_events_principal ON audit_events(principal, seq) WHERE principal IS NOT NULL;
CREATE INDEX audit_events_agent     ON audit_events(agent, seq)     WHERE agent IS NOT NULL;
CREATE INDEX audit_events_action    ON audit_events(action, seq)    WHERE action IS NOT NULL;
CREATE INDEX audit_events_agent_action ON audit_events(agent, action, seq) WHERE agent IS NOT NULL;
CREATE INDEX audit_events_decision  ON audit_events(decision, seq)  WHERE decision IS NOT NULL;
-- What explain looks up: a mission's records other than its decisions
-- (its creation, credentials, approvals), a small fraction of the log.
CREATE INDEX audit_events_related   ON audit_events(mission, kind, seq) WHERE kind <> 'decision';
