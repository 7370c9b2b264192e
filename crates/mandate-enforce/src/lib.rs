//! Mandate's enforcement pipeline: what happens to every governed call
//! between "its credential checked out" and "it may be forwarded".
//!
//! ```text
//! front door (HTTP gateway, MCP gateway, /v1/decide) parses → Call
//!   Enforcer::decide:  names → state → policy + grants → escalate | count
//!                      → durable record → Permit<request>
//! front door forwards only with the Permit, or maps the refusal
//! ```
//!
//! Nothing here knows HTTP or MCP: the front doors are adapters (ADR 0011).
//! The only way to obtain a [`Permit`] is [`Enforcer::decide`], and it
//! hands one out only for an Allow that was counted against the mission's
//! budget in the same transaction that made its decision durable in the
//! audit log ([`AuditLog`], group commit).

mod checkpoints;
mod error;
mod escalate;
mod permit;
mod pipeline;
mod policies;
mod record;

pub use checkpoints::{CheckpointFileError, KeptCheckpoint, read_checkpoint_file};
pub use error::EnforceError;
pub use permit::Permit;
pub use pipeline::{Call, Decided, Enforcer, Opened, OrgState, Timings, Who, denial};
pub use policies::{LoadedPolicies, Missing, load_dir, load_file};
pub use record::{
    AuditLog, AuditOpenError, AuditWriter, CheckpointPolicy, Claim, CommitObserver, verify_stored,
};
