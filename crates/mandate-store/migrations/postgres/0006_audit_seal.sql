-- The seal of the audit log's head: a checkpoint (JWS, `typ`
-- mandate-checkpoint+jwt) of the last record, signed with every commit and
-- stored in the same transaction, so no committed record is ever outside a
-- signed checkpoint. One row, replaced by each commit.
CREATE TABLE audit_seal (
    id      BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq     BIGINT NOT NULL,
    token   TEXT NOT NULL
);
