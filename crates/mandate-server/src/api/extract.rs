//! Request extractors: JSON bodies, principals (API tokens), and missions
//! (credential + proof of possession). Every failure is a refusal.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use mandate_core::{
    ApiTokenId, CredentialError, Mission, MissionClaims, ProofError, ProofExpectations,
    SecretToken, TokenKind, VerifiedProof, verify_proof,
};
use mandate_store::Principal;
use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::replay::Replay;
use crate::state::AppState;

/// Whether the request says its body is `application/json`.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON body: `application/json`, within the size limit, and matching
/// the request type exactly (unknown fields are refused). No `Debug`: the
/// body may hold secrets.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(req.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be `application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is too large",
                )
            } else {
                Problem::bad_request("invalid_body", e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| Problem::bad_request("invalid_json", format!("invalid request body: {e}")))
    }
}

/// Exactly one value of header `name`, as text.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Problem> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("more than one `{name}` header"),
        ));
    }
    first
        .map(|v| {
            v.to_str().map_err(|_| {
                Problem::bad_request("invalid_request", format!("`{name}` is not text"))
            })
        })
        .transpose()
}

fn unauthenticated(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
}

/// A principal authenticated by an API token (`Authorization: Bearer mdt_…`).
#[derive(Debug)]
pub(crate) struct Caller {
    pub principal: Principal,
    #[expect(
        dead_code,
        reason = "kept for the audit log, which records which token acted"
    )]
    pub token: ApiTokenId,
}

impl Caller {
    /// Refuses callers without the admin role.
    pub(crate) fn require_admin(&self) -> Result<(), Problem> {
        if self.principal.role == mandate_core::Role::Admin {
            Ok(())
        } else {
            Err(Problem::forbidden("this needs the admin role"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let auth = single_header(&parts.headers, "authorization")?.ok_or_else(|| {
            unauthenticated("an API token is required (`Authorization: Bearer mdt_…`)")
        })?;
        let presented = auth
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthenticated("use `Authorization: Bearer` with an API token"))?;
        let invalid = || {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the API token is not valid",
            )
        };
        let token = SecretToken::parse(TokenKind::Api, presented.trim()).ok_or_else(invalid)?;
        let (principal, token) = state
            .0
            .store
            .principal_by_token(&token.hash())
            .await?
            .ok_or_else(invalid)?;
        Ok(Self { principal, token })
    }
}

/// Verifies the request's `DPoP` proof: signed by the key it carries, for
/// this method and URL, fresh, and bound to `token`. The caller must then
/// check the key is the one it expects, and call [`remember_proof`] once the
/// request is authorized.
pub(crate) fn verify_request_proof(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> Result<VerifiedProof, Problem> {
    let proof = single_header(headers, "dpop")?.ok_or_else(|| {
        unauthenticated("a `DPoP` proof of possession of the mission key is required")
    })?;
    let htu = format!("{}{path}", state.0.issuer);
    let now = state.0.clock.now();
    Ok(verify_proof(
        proof,
        &ProofExpectations {
            htm: method.as_str(),
            htu: &htu,
            now,
            token,
        },
    )?)
}

/// Records an authorized request's proof as used; refuses a proof that was
/// used before. Only proofs by keys bound to a mission get here, so an
/// outsider cannot fill the cache.
pub(crate) fn remember_proof(state: &AppState, proof: &VerifiedProof) -> Result<(), Problem> {
    match state
        .0
        .replay
        .check(&proof.jkt, &proof.jti, proof.iat, state.0.clock.now())
    {
        Replay::Fresh => Ok(()),
        Replay::Seen { .. } => Err(ProofError::Replayed.into()),
        Replay::Full => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replay_cache_full",
            "too many proofs in flight; retry shortly",
        )),
    }
}

/// A presented mission credential after the checks every caller needs, in
/// this order: signature and issuer, then the mission's state and key
/// binding, then time (so a credential of an ended mission is refused as
/// such, not as merely expired).
pub(crate) enum Presented {
    Valid {
        claims: MissionClaims,
        mission: Box<Mission>,
    },
    /// Refused. `claims` are set once the signature checked out: they are
    /// authentic and may go into the audit log.
    Refused {
        error: CredentialError,
        claims: Option<MissionClaims>,
    },
}

/// Checks a presented mission credential. Store failures are errors (the
/// caller denies); every other failure is a `Refused` with its reason.
pub(crate) async fn check_presented(state: &AppState, token: &str) -> Result<Presented, Problem> {
    // The signature and issuer, verified once per credential and then
    // remembered (a pure function of the token and the JWKS); state, key
    // binding and time are checked below on every use.
    let signed = match state.verified_credential(token) {
        Ok(v) => v.signed,
        Err(error) => {
            return Ok(Presented::Refused {
                error,
                claims: None,
            });
        }
    };
    check_signed(state, signed).await
}

/// The second half of [`check_presented`], for a credential whose
/// signature and issuer already checked out: the mission's state and key
/// binding, then time.
pub(crate) async fn check_signed(
    state: &AppState,
    signed: mandate_core::SignedCredential,
) -> Result<Presented, Problem> {
    let now = state.0.clock.now();
    let refused = |error, claims: &MissionClaims| {
        Ok(Presented::Refused {
            error,
            claims: Some(claims.clone()),
        })
    };
    let Some(mission) = state.0.store.mission(&signed.claims.mission_id).await? else {
        return refused(CredentialError::UnknownMission, &signed.claims);
    };
    if let Err(e) = mission.check_credential(&signed.claims, now) {
        return refused(e, &signed.claims);
    }
    let claims = signed.claims.clone();
    match signed.check_validity(now) {
        Ok(v) => Ok(Presented::Valid {
            claims: v.claims,
            mission: Box::new(mission),
        }),
        Err(e) => refused(e, &claims),
    }
}

/// An agent acting under a mission: `Authorization: DPoP <credential>` and
/// a `DPoP` proof by the mission key bound into that credential.
///
/// INVARIANT: constructed only after the credential verified, the mission
/// passed every state check (active, not revoked, same body, same key), and
/// the proof verified with the bound key.
#[derive(Debug)]
pub(crate) struct MissionCaller {
    pub claims: MissionClaims,
    pub mission: Mission,
}

impl FromRequestParts<AppState> for MissionCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let auth = single_header(&parts.headers, "authorization")?.ok_or_else(|| {
            unauthenticated("a mission credential is required (`Authorization: DPoP …`)")
        })?;
        let credential = auth
            .strip_prefix("DPoP ")
            .ok_or_else(|| {
                unauthenticated("present the mission credential with `Authorization: DPoP`")
            })?
            .trim();
        let (claims, mission) = match check_presented(state, credential).await? {
            Presented::Valid { claims, mission } => (claims, *mission),
            Presented::Refused { error, .. } => return Err(error.into()),
        };
        // The API is not nested under a prefix, so the URI is the original one.
        let proof = verify_request_proof(
            state,
            &parts.headers,
            &parts.method,
            parts.uri.path(),
            Some(credential),
        )?;
        if proof.jkt != claims.cnf.jkt {
            return Err(ProofError::KeyMismatch.into());
        }
        remember_proof(state, &proof)?;
        Ok(Self { claims, mission })
    }
}
