//! Errors over HTTP: `application/problem+json` (RFC 9457) with a stable
//! `code`. The one place that maps errors to status and code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::{CredentialError, InputError, ProofError};
use mandate_enforce::EnforceError;
use mandate_store::{ApprovalError, StartError, StoreError};
use serde::Serialize;

use crate::edge::EdgeRefusal;

/// An API error, rendered as a problem document (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:mandate:problem:{code}`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What is wrong, for a person; never a submitted value.
    pub detail: String,
    /// Stable: what a program matches on (see `docs/api.md`).
    pub code: &'static str,
    /// Every problem found, where there are several (e.g. policy errors
    /// as `file:line:col: message`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Problem {
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("urn:mandate:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub(crate) fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// No route for this path (the router's fallback).
    pub(crate) fn no_such_endpoint() -> Self {
        Self::not_found("no such endpoint")
    }

    /// The path exists, the method does not (the routes' fallback).
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take this method (see `Allow`)",
        )
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, DPoP algs=\"EdDSA\""),
            );
        }
        resp
    }
}

impl From<EdgeRefusal> for Problem {
    fn from(e: EdgeRefusal) -> Self {
        let (status, code) = match e {
            EdgeRefusal::AmbiguousFraming => (StatusCode::BAD_REQUEST, "ambiguous_framing"),
            EdgeRefusal::UnsupportedTransferEncoding => {
                (StatusCode::BAD_REQUEST, "unsupported_transfer_encoding")
            }
            EdgeRefusal::ForeignAuthority => (StatusCode::BAD_REQUEST, "foreign_authority"),
            EdgeRefusal::InvalidRequestTarget => {
                (StatusCode::BAD_REQUEST, "invalid_request_target")
            }
            EdgeRefusal::InvalidHost => (StatusCode::BAD_REQUEST, "invalid_host"),
            EdgeRefusal::Malformed => (StatusCode::BAD_REQUEST, "malformed_request"),
            EdgeRefusal::HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
            ),
            EdgeRefusal::UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            EdgeRefusal::TooManyFromAddress | EdgeRefusal::TooManyConnections => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<InputError> for Problem {
    fn from(e: InputError) -> Self {
        // Never the submitted value (see `InputError::detail`).
        Self::bad_request(e.code(), e.detail())
    }
}

impl From<CredentialError> for Problem {
    fn from(e: CredentialError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<ProofError> for Problem {
    fn from(e: ProofError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(msg) => Self::new(StatusCode::CONFLICT, "conflict", msg),
            StoreError::Corrupt(_) | StoreError::Backend(_) => {
                tracing::error!(error = %e, "store failure");
                Self::internal()
            }
        }
    }
}

impl From<EnforceError> for Problem {
    fn from(e: EnforceError) -> Self {
        match e {
            EnforceError::AuditUnavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                e.to_string(),
            ),
            EnforceError::Replayed => Self::new(
                StatusCode::UNAUTHORIZED,
                "signature_replayed",
                e.to_string(),
            ),
            EnforceError::Store(s) => s.into(),
            EnforceError::Internal(what) => {
                tracing::error!(what, "enforcement pipeline failure");
                Self::internal()
            }
        }
    }
}

impl From<mandate_core::DelegationError> for Problem {
    fn from(e: mandate_core::DelegationError) -> Self {
        use mandate_core::DelegationError as D;
        let status = match e {
            D::TtlWidens { .. } | D::BudgetWidens { .. } | D::TooDeep { .. } => {
                StatusCode::FORBIDDEN
            }
            D::AgentInChain(_) => StatusCode::CONFLICT,
            D::EphemeralTarget(_) | D::BadLink(_) | D::BadProposal(_) => StatusCode::BAD_REQUEST,
            D::Input(e) => return e.into(),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<mandate_store::DelegateError> for Problem {
    fn from(e: mandate_store::DelegateError) -> Self {
        use mandate_store::DelegateError as D;
        match e {
            D::ParentNotActive => Self::new(StatusCode::CONFLICT, "mission_ended", e.to_string()),
            D::KeyMismatch => Self::new(StatusCode::UNAUTHORIZED, "key_mismatch", e.to_string()),
            D::BudgetWidens { .. } => {
                Self::new(StatusCode::FORBIDDEN, "delegation_widens", e.to_string())
            }
            D::NoSuchAgent(_) => Self::not_found(e.to_string()),
            D::Store(s) => s.into(),
        }
    }
}

impl From<StartError> for Problem {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Unknown => Self::new(
                StatusCode::UNAUTHORIZED,
                "start_token_invalid",
                e.to_string(),
            ),
            StartError::Used => Self::new(StatusCode::CONFLICT, "start_token_used", e.to_string()),
            StartError::Expired => Self::new(
                StatusCode::UNAUTHORIZED,
                "start_token_expired",
                e.to_string(),
            ),
            StartError::MissionEnded => {
                Self::new(StatusCode::CONFLICT, "mission_ended", e.to_string())
            }
            StartError::AttestationRequired => {
                Self::new(StatusCode::FORBIDDEN, "attestation_required", e.to_string())
            }
            StartError::AttestationReplayed => {
                Self::new(StatusCode::CONFLICT, "attestation_replayed", e.to_string())
            }
            StartError::AttestationMismatch(_) => {
                Self::new(StatusCode::FORBIDDEN, "attestation_mismatch", e.to_string())
            }
            StartError::Store(s) => s.into(),
        }
    }
}

impl From<mandate_core::AttestationError> for Problem {
    fn from(e: mandate_core::AttestationError) -> Self {
        use mandate_core::AttestationError as A;
        let status = match &e {
            A::Required(_) | A::Mismatch(_) => StatusCode::FORBIDDEN,
            A::Replayed => StatusCode::CONFLICT,
            A::Invalid(_)
            | A::Untrusted(_)
            | A::Expired(_)
            | A::WrongAudience(_)
            | A::Unbound(_) => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<ApprovalError> for Problem {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::NotFound(_) => Self::not_found(e.to_string()),
            ApprovalError::AlreadyDecided(_) => {
                Self::new(StatusCode::CONFLICT, "approval_decided", e.to_string())
            }
            ApprovalError::Expired => {
                Self::new(StatusCode::CONFLICT, "approval_expired", e.to_string())
            }
            ApprovalError::MissionNotActive => {
                Self::new(StatusCode::CONFLICT, "mission_not_active", e.to_string())
            }
            ApprovalError::Store(s) => s.into(),
        }
    }
}

impl From<mandate_core::MemoryError> for Problem {
    fn from(e: mandate_core::MemoryError) -> Self {
        use mandate_core::MemoryError as M;
        let status = match e {
            M::BadKey => StatusCode::BAD_REQUEST,
            M::ValueTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<mandate_store::MemoryWriteError> for Problem {
    fn from(e: mandate_store::MemoryWriteError) -> Self {
        use mandate_store::MemoryWriteError as M;
        match e {
            M::MissionNotActive => Self::new(StatusCode::CONFLICT, "mission_ended", e.to_string()),
            M::Limit(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "memory_limit", e.to_string()),
            M::NoSuchEntry(_) => Self::not_found(e.to_string()),
            M::EphemeralAgent => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            M::Store(s) => s.into(),
        }
    }
}
