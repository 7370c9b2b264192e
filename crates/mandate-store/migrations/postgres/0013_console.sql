-- The console (ADR 0032): principals' passkeys, one-time enrollment links
-- and signed-in sessions. Secrets (enrollment tokens, session ids) are
-- stored as their SHA-256 only.
CREATE TABLE passkeys (
    -- base64url of the credential id the authenticator chose.
    cred_id    TEXT PRIMARY KEY NOT NULL,
    principal  TEXT NOT NULL REFERENCES principals(name),
    -- The passkey as webauthn-rs serialises it (public key, counter).
    passkey    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX passkeys_principal ON passkeys(principal);

CREATE TABLE console_enrollments (
    hash       TEXT PRIMARY KEY NOT NULL,
    principal  TEXT NOT NULL REFERENCES principals(name),
    expires_at BIGINT NOT NULL
);

CREATE TABLE console_sessions (
    hash       TEXT PRIMARY KEY NOT NULL,
    principal  TEXT NOT NULL REFERENCES principals(name),
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
