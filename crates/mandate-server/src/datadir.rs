//! The data dir: the SQLite database and the authority key, created on
//! first start. With a PostgreSQL database (`--database postgres://…`,
//! ADR 0017) the data dir keeps the keys, the configuration, the policies
//! and this node's checkpoint file; the records are in PostgreSQL.
//!
//! ```text
//! {data}/            mode 0700
//!   mandate.db       the embedded database (WAL), without PostgreSQL
//!   authority.key    Ed25519 private key, PKCS#8 PEM, mode 0600
//!   mandate.toml     optional configuration
//! ```

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mandate_core::{
    ApiTokenId, AuthorityKey, Clock, OsRandom, PrincipalName, Role, SecretToken, SystemClock,
    TokenKind,
};
use mandate_store::{ApiToken, PostgresStore, Principal, SqliteStore, Store, StoreError};
use zeroize::Zeroizing;

const KEY_FILE: &str = "authority.key";
const DB_FILE: &str = "mandate.db";

/// An opened data dir.
#[derive(Debug)]
pub struct DataDir {
    pub store: Arc<dyn Store>,
    pub key: AuthorityKey,
}

/// The data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot use data dir `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("`{0}` is readable by other users (mode {1:o}); run `chmod 600` on it")]
    KeyPermissions(PathBuf, u32),
    #[error("`{0}` is not a valid authority key: {1}")]
    BadKey(PathBuf, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this data dir is already initialized: it has principals. Ask an admin for a token (`mandate token create`)"
    )]
    AlreadyInitialized,
    #[error("{0}")]
    Other(String),
}

impl DataDir {
    /// Opens `path`, creating the directory, database and key if missing,
    /// on the database its configuration names (`MANDATE_DATABASE_URL` or
    /// `database_url` in its `mandate.toml`), else on its SQLite file.
    pub async fn open(path: &Path) -> Result<Self, DataDirError> {
        let database = data_dir_config(path)?.database_url;
        Self::open_with(path, true, database.as_deref()).await
    }

    /// As [`Self::open`], on `database` (a PostgreSQL URL), or on the data
    /// dir's SQLite file if `None`; `durable = false` is the
    /// benchmark-only mode without `fsync` (SQLite only).
    pub async fn open_with(
        path: &Path,
        durable: bool,
        database: Option<&str>,
    ) -> Result<Self, DataDirError> {
        let io = |e| DataDirError::Io(path.to_path_buf(), e);
        if path.exists() {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "data dir `{}` is accessible to other users (mode {mode:o}); consider `chmod 700`",
                    path.display()
                );
            }
        } else {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io)?;
        }
        let key = load_or_create_key(&path.join(KEY_FILE))?;
        let store: Arc<dyn Store> = match database {
            Some(url) => {
                crate::config::check_database_url(url)
                    .map_err(|e| DataDirError::Other(e.to_string()))?;
                let store = PostgresStore::connect(url).await.map_err(|e| {
                    DataDirError::Other(format!(
                        "cannot use the database {}: {e}",
                        crate::config::redact_url(url)
                    ))
                })?;
                Arc::new(store)
            }
            None => {
                let db = path.join(DB_FILE);
                private_db_files(&db)?;
                Arc::new(SqliteStore::open_with(&db, durable).await?)
            }
        };
        check_same_key(store.as_ref(), &key).await?;
        Ok(Self { store, key })
    }
}

/// The configuration of a data dir (its `mandate.toml` and the
/// environment): its database, where its checkpoint file is, the cadence.
fn data_dir_config(data_dir: &Path) -> Result<crate::Config, DataDirError> {
    crate::Config::load(data_dir, None, None)
        .map_err(|e| DataDirError::Other(format!("cannot read the configuration: {e}")))
}

/// Every node on one database signs with one authority key (ADR 0017): a
/// data dir with another key would sign checkpoints nobody else verifies,
/// so it is refused before anything is written, with what to do.
async fn check_same_key(store: &dyn Store, key: &AuthorityKey) -> Result<(), DataDirError> {
    let seal = match store.head_seal().await? {
        Some(seal) => seal,
        // An empty log has no seal yet, but a node that started on it
        // stored a checkpoint of it, signed with the database's key.
        None => match store.checkpoints().await?.pop() {
            Some(checkpoint) => checkpoint,
            None => return Ok(()),
        },
    };
    let kid = mandate_core::checkpoint_kid(&seal).unwrap_or_default();
    if kid == key.kid() {
        return Ok(());
    }
    Err(DataDirError::Other(format!(
        "this data dir's authority key ({}) is not the key that signs this database's audit log ({kid}): every node on one database needs the same `authority.key` (and `vault.key`); copy them from the data dir of the node that created the database (docs/scale-out.md)",
        key.kid()
    )))
}

/// The database holds token hashes and policies: make it (and so the WAL
/// and shared-memory files, which SQLite creates with the database file's
/// mode) readable by this user only.
fn private_db_files(db: &Path) -> Result<(), DataDirError> {
    let io = |e| DataDirError::Io(db.to_path_buf(), e);
    if !db.exists() {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .map_err(io)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", db.display()));
        if f.exists() {
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

/// Reads a private key file: opened without following a symlink, then the
/// open file itself is checked (so what is checked is what is read), and
/// refused if others may read it.
fn read_key_file(path: &Path) -> Result<Zeroizing<String>, DataDirError> {
    let io = |e| DataDirError::Io(path.to_path_buf(), e);
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::KeyPermissions(path.to_path_buf(), mode));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

/// Writes a new private key file, mode 0600; `create_new` never overwrites
/// a key another process just wrote.
fn write_key_file(path: &Path, text: &str) -> Result<(), DataDirError> {
    let io = |e| DataDirError::Io(path.to_path_buf(), e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn load_or_create_key(path: &Path) -> Result<AuthorityKey, DataDirError> {
    if path.exists() {
        return AuthorityKey::from_pkcs8_pem(&read_key_file(path)?)
            .map_err(|e| DataDirError::BadKey(path.to_path_buf(), e.to_string()));
    }
    let key = AuthorityKey::generate(&OsRandom).map_err(|e| DataDirError::Other(e.to_string()))?;
    let pem = key
        .to_pkcs8_pem()
        .map_err(|e| DataDirError::Other(e.to_string()))?;
    write_key_file(path, &pem)?;
    tracing::info!(kid = key.kid(), "created authority key");
    Ok(key)
}

/// Loads the vault key, creating it (mode 0600) if it does not exist. Like
/// the authority key, it is refused if others can read it.
pub fn load_or_create_vault_key(path: &Path) -> Result<mandate_core::VaultKey, DataDirError> {
    use mandate_core::VaultKey;
    if path.exists() {
        return VaultKey::from_text(&read_key_file(path)?)
            .map_err(|e| DataDirError::BadKey(path.to_path_buf(), e.to_string()));
    }
    let key = VaultKey::generate(&OsRandom).map_err(|e| DataDirError::Other(e.to_string()))?;
    write_key_file(path, &key.to_text())?;
    tracing::info!(path = %path.display(), "created vault key");
    Ok(key)
}

/// The vault key must open what the database holds (a node given another
/// key, or a new one made because the file was not copied, would fail
/// every impersonation and seal secrets no other node can open): one
/// stored secret is opened at start, and a key that does not open it is
/// refused with what to do.
pub async fn check_vault_key(
    store: &dyn Store,
    vault: &mandate_core::VaultKey,
    path: &Path,
) -> Result<(), DataDirError> {
    let Some(rec) = store.vault_secrets().await?.into_iter().next() else {
        return Ok(());
    };
    let sealed = mandate_core::Sealed {
        nonce: rec.nonce.clone(),
        ciphertext: rec.ciphertext.clone(),
    };
    if vault
        .open(&sealed, rec.principal.as_str(), &rec.route, rec.version)
        .is_ok()
    {
        return Ok(());
    }
    Err(DataDirError::Other(format!(
        "the vault key `{}` does not open the secrets this database holds: every node on one database needs the same `vault.key` (copy it from the node that stored them, docs/scale-out.md); nothing was changed",
        path.display()
    )))
}

/// First-run bootstrap: creates the admin principal and returns its API
/// token, which exists nowhere else (only its hash is stored). Refuses if
/// the data dir already has principals.
pub async fn init_admin(
    data_dir: &Path,
    admin: &PrincipalName,
    database: Option<&str>,
) -> Result<(SecretToken, String), DataDirError> {
    let config = data_dir_config(data_dir)?;
    let database = database.or(config.database_url.as_deref());
    let data = DataDir::open_with(data_dir, true, database).await?;
    let now = SystemClock.now();
    let token = SecretToken::generate(TokenKind::Api, &OsRandom)
        .map_err(|e| DataDirError::Other(e.to_string()))?;
    let record = ApiToken {
        id: ApiTokenId::generate(&OsRandom).map_err(|e| DataDirError::Other(e.to_string()))?,
        principal: admin.clone(),
        label: "bootstrap".into(),
        created_at: now,
        revoked_at: None,
    };
    let principal = Principal {
        name: admin.clone(),
        role: Role::Admin,
        created_at: now,
        revoked_at: None,
    };
    if !data.store.principals().await?.is_empty() {
        return Err(DataDirError::AlreadyInitialized);
    }
    // The log is opened (and verified) before anything changes: the first
    // admin is a lifecycle event like any other, recorded (and sealed by a
    // checkpoint) before the token is shown.
    let kid = data.key.kid().to_owned();
    let key = std::sync::Arc::new(data.key);
    let (log, writer) = mandate_enforce::AuditLog::spawn(
        std::sync::Arc::clone(&data.store),
        std::sync::Arc::clone(&key),
        "urn:mandate:init".into(),
        std::sync::Arc::new(SystemClock),
        {
            let audit = config.audit;
            mandate_enforce::CheckpointPolicy {
                cadence: audit.cadence,
                file: Some(audit.checkpoint_file),
                witness: None,
            }
        },
    )
    .await
    .map_err(|e| DataDirError::Other(e.to_string()))?;
    let created = data
        .store
        .bootstrap_admin(&principal, &record, &token.hash())
        .await;
    if !matches!(created, Ok(true)) {
        drop(log);
        writer.shutdown().await;
        return Err(created.map_or_else(DataDirError::Store, |_| DataDirError::AlreadyInitialized));
    }
    let body = serde_json::json!({
        "principal": admin.as_str(),
        "role": "admin",
        "by": "mandate init",
    });
    let recorded = log.record("principal.created", now.0, body.clone()).await;
    let token_body = serde_json::json!({
        "principal": admin.as_str(),
        "token": record.id.as_str(),
        "label": "bootstrap",
        "by": "mandate init",
    });
    let recorded_token = log.record("token.created", now.0, token_body).await;
    drop(log);
    writer.shutdown().await;
    if recorded.is_err() || recorded_token.is_err() {
        return Err(DataDirError::Other(
            "the admin was created but the audit log could not record it".into(),
        ));
    }
    Ok((token, kid))
}

/// Verifies the audit log of a data dir offline (the server may be running
/// or not): the chain, the checkpoints' signatures by this data dir's
/// authority key, their cadence, and agreement with the checkpoints kept
/// outside the database — the data dir's checkpoint file and each of
/// `checkpoint_files` (copies kept elsewhere, which must exist). Names the
/// first bad sequence number.
pub async fn verify_audit(
    data_dir: &Path,
    checkpoint_files: &[PathBuf],
) -> Result<mandate_core::ChainReport, DataDirError> {
    let config = data_dir_config(data_dir)?;
    if config.database_url.is_none() && !data_dir.join(DB_FILE).exists() {
        // A node on PostgreSQL whose database was named by the flag or the
        // environment has a key here but no database file.
        let hint = if data_dir.join(KEY_FILE).exists() {
            ": for a node on PostgreSQL, name its database as `mandate serve` got it (`MANDATE_DATABASE_URL`, or `database_url` in DATA/mandate.toml)"
        } else {
            ""
        };
        return Err(DataDirError::Other(format!(
            "`{}` has no Mandate database{hint}",
            data_dir.display()
        )));
    }
    let data = DataDir::open_with(data_dir, true, config.database_url.as_deref()).await?;
    let jwks = data.key.jwks();
    let mut kept = Vec::new();
    // The configured checkpoint file must be there, unless it is the default
    // one (a data dir from before it existed has none).
    let own = config.audit.checkpoint_file;
    let configured = own != data_dir.join(crate::config::CHECKPOINT_FILE);
    for (path, must_exist) in
        std::iter::once((&own, configured)).chain(checkpoint_files.iter().map(|p| (p, true)))
    {
        if must_exist && !path.exists() {
            return Err(DataDirError::Other(format!(
                "the checkpoint file `{}` does not exist",
                path.display()
            )));
        }
        let read = mandate_enforce::read_checkpoint_file(path, &jwks)
            .map_err(|e| DataDirError::Other(e.to_string()))?;
        kept.extend(read.into_iter().map(|c| c.token));
    }
    mandate_enforce::verify_stored(data.store.as_ref(), &jwks, None, &kept)
        .await?
        .map_err(|e| DataDirError::Other(e.to_string()))
}
