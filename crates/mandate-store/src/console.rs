//! The console's records (ADR 0032): principals' passkeys, one-time
//! enrollment links and signed-in sessions, the same on both backends.
//! Secrets (an enrollment token, a session id) are stored as their
//! SHA-256 only; a passkey is stored as webauthn-rs serialises it (its
//! public key and signature counter), which the store does not read.

use mandate_core::{PrincipalName, UnixTime};

use crate::StoreError;
use crate::rows::{Columns, time, typed};

/// A passkey registered for a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id (base64url, unpadded), unique across principals.
    pub cred_id: String,
    pub principal: PrincipalName,
    /// The passkey as webauthn-rs serialises it (JSON).
    pub passkey: String,
    pub created_at: UnixTime,
}

/// A signed-in console session, found by the SHA-256 of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub principal: PrincipalName,
    /// The token every state-changing request of this session carries.
    pub csrf: String,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
}

/// The SQL both backends run, written with `?N` placeholders (PostgreSQL's
/// `$N` by [`pg`]).
pub(crate) mod sql {
    pub const ADD_PASSKEY: &str = "INSERT INTO passkeys (cred_id, principal, passkey, created_at) \
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS \
         (SELECT 1 FROM principals WHERE name = ?2 AND revoked_at IS NULL)";
    pub const PASSKEYS: &str = "SELECT k.* FROM passkeys k JOIN principals p ON p.name = k.principal \
         WHERE k.principal = ?1 AND p.revoked_at IS NULL ORDER BY k.created_at, k.cred_id";
    pub const PASSKEY: &str = "SELECT k.* FROM passkeys k JOIN principals p ON p.name = k.principal \
         WHERE k.cred_id = ?1 AND p.revoked_at IS NULL";
    pub const UPDATE_PASSKEY: &str = "UPDATE passkeys SET passkey = ?2 WHERE cred_id = ?1";
    pub const ADD_ENROLLMENT: &str = "INSERT INTO console_enrollments (hash, principal, expires_at) \
         SELECT ?1, ?2, ?3 WHERE EXISTS \
         (SELECT 1 FROM principals WHERE name = ?2 AND revoked_at IS NULL)";
    /// Single use: the row goes whether or not it is still valid.
    pub const TAKE_ENROLLMENT: &str =
        "DELETE FROM console_enrollments WHERE hash = ?1 RETURNING principal, expires_at";
    pub const SWEEP_ENROLLMENTS: &str = "DELETE FROM console_enrollments WHERE expires_at <= ?1";
    pub const ADD_SESSION: &str = "INSERT INTO console_sessions (hash, principal, csrf, created_at, last_seen) \
         VALUES (?1, ?2, ?3, ?4, ?4)";
    pub const SESSION: &str = "SELECT s.* FROM console_sessions s JOIN principals p ON p.name = s.principal \
         WHERE s.hash = ?1 AND p.revoked_at IS NULL";
    pub const TOUCH_SESSION: &str = "UPDATE console_sessions SET last_seen = ?2 WHERE hash = ?1";
    pub const DELETE_SESSION: &str = "DELETE FROM console_sessions WHERE hash = ?1";
    pub const SWEEP_SESSIONS: &str =
        "DELETE FROM console_sessions WHERE created_at <= ?1 OR last_seen <= ?2";

    /// The statement with PostgreSQL's placeholders (the statements are
    /// the constants above: no input reaches the SQL text).
    pub fn pg(sql: &str) -> String {
        sql.replace('?', "$")
    }
}

pub(crate) fn passkey_from_row(row: &impl Columns) -> Result<StoredPasskey, StoreError> {
    Ok(StoredPasskey {
        cred_id: row.text("cred_id")?,
        principal: typed(row, "principal", "passkey principal")?,
        passkey: row.text("passkey")?,
        created_at: time(row.int("created_at")?),
    })
}

pub(crate) fn session_from_row(row: &impl Columns) -> Result<ConsoleSession, StoreError> {
    Ok(ConsoleSession {
        principal: typed(row, "principal", "session principal")?,
        csrf: row.text("csrf")?,
        created_at: time(row.int("created_at")?),
        last_seen: time(row.int("last_seen")?),
    })
}
