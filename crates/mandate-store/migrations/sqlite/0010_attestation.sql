-- Attestation (ADR 0020): what evidence an agent's missions must present,
-- and the evidence a mission was started with.

-- An agent's attestation requirement (JSON), NULL when it has none.
ALTER TABLE agents ADD COLUMN attestation TEXT;

-- The attestation verified when the mission started (JSON), and the digest
-- of the evidence: one piece of evidence starts one mission, ever.
ALTER TABLE missions ADD COLUMN attestation TEXT;
ALTER TABLE missions ADD COLUMN attestation_s256 TEXT;
CREATE UNIQUE INDEX missions_attestation_s256 ON missions(attestation_s256)
    WHERE attestation_s256 IS NOT NULL;
