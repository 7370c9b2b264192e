-- Vaulted secrets for governed impersonation. Sealed with a key kept
-- outside the database; the row holds only nonce and ciphertext. The
-- ciphertext is bound to (principal, route, version).
CREATE TABLE vault_secrets (
    principal   TEXT NOT NULL REFERENCES principals(name),
    route       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('basic', 'bearer', 'header')),
    version     BIGINT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (principal, route)
);
