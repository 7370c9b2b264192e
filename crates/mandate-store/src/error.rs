/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A stored row does not parse or no longer matches its hash: refuse to
    /// use it rather than guess.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Backend(format!("migration failed: {e}"))
    }
}

/// Why a mission could not be started with a start token.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the start token is not valid")]
    Unknown,
    #[error("the start token was already used")]
    Used,
    #[error("the start token expired")]
    Expired,
    #[error("the mission has ended")]
    MissionEnded,
    #[error("the mission's agent must present attestation evidence to start it")]
    AttestationRequired,
    #[error("this evidence already started another mission")]
    AttestationReplayed,
    /// The evidence does not meet what the mission's body and its agent's
    /// registration require, as the starting transaction reads them.
    #[error("{0}")]
    AttestationMismatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for StartError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Why an approval could not be decided. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval request `{0}`")]
    NotFound(String),
    #[error("the approval request was already {0}")]
    AlreadyDecided(&'static str),
    #[error("the approval request expired")]
    Expired,
    #[error("the mission is no longer active")]
    MissionNotActive,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ApprovalError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Why a child mission could not be delegated. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("the parent mission is not active")]
    ParentNotActive,
    #[error("the parent mission is bound to another key")]
    KeyMismatch,
    #[error("the parent has {left} requests left to delegate; {asked} were asked")]
    BudgetWidens { left: u64, asked: u64 },
    #[error("no live agent `{0}` of the mission's principal")]
    NoSuchAgent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DelegateError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}
