-- The audit log's filters answered by indexes (ADR 0018). The fields that
-- operators filter by are kept beside each record as columns, derived from
-- its body (the body's string field of that name, else NULL) by the audit
-- sink on append. The body stays the chained, canonical text: these
-- columns are not hashed, and verification never reads them.
ALTER TABLE audit_events
    ADD COLUMN mission TEXT,
    ADD COLUMN principal TEXT,
    ADD COLUMN agent TEXT,
    ADD COLUMN action TEXT,
    ADD COLUMN decision TEXT;

-- Records written before this migration. A body that is not JSON (only a
-- tampered one) keeps NULLs; verification reports it.
CREATE FUNCTION mandate_0008_json(t TEXT) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

CREATE FUNCTION mandate_0008_text(j JSONB, k TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(j) = 'object' AND jsonb_typeof(j -> k) = 'string' THEN j ->> k END
$$;

UPDATE audit_events e SET
    mission   = mandate_0008_text(b.j, 'mission'),
    principal = mandate_0008_text(b.j, 'principal'),
    agent     = mandate_0008_text(b.j, 'agent'),
    action    = mandate_0008_text(b.j, 'action'),
    decision  = mandate_0008_text(b.j, 'decision')
FROM (SELECT seq, mandate_0008_json(body) AS j FROM audit_events) b
WHERE e.seq = b.seq AND b.j IS NOT NULL;

DROP FUNCTION mandate_0008_text(JSONB, TEXT);
DROP FUNCTION mandate_0008_json(TEXT);

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
