//! The pipeline's one error type. Every variant refuses the request: the
//! front doors map it to their protocol in one place each, and none of them
//! answers past it.

use mandate_store::StoreError;

/// Why the pipeline could not reach (or record) a decision. Exhaustive on
/// purpose: a new failure mode must be handled where errors become answers.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The audit log refused the record (queue full, commit failed, log
    /// stopped): nothing was decided, counted or forwarded.
    #[error("the audit log could not record this; nothing was done")]
    AuditUnavailable,
    /// The request's signature was used before, on this node or another
    /// sharing the database: nothing of it was done, and the replay is on
    /// the record.
    #[error("this signature was used before")]
    Replayed,
    /// The store failed on the way to a decision.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value the pipeline builds itself could not be built (a lock
    /// poisoned, a record that does not serialise).
    #[error("internal error: {0}")]
    Internal(&'static str),
}
