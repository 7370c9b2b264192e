-- Taint (ADR 0021): the untrusted content a mission has read (JSON: labels,
-- since, sources), NULL while it has read none; and, on an approval
-- request, what the mission had read when the call escalated.
ALTER TABLE missions ADD COLUMN taint TEXT;
ALTER TABLE approvals ADD COLUMN taint TEXT;
