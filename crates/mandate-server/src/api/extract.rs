//! Request extractors: JSON bodies, query strings, path parameters,
//! principals (API tokens), and missions (credential + proof of
//! possession). Every failure is a refusal, as problem+json; a refusal
//! names the field that is wrong, never what was sent (which may be a
//! secret) nor the parser's own words.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use mandate_core::{
    ApiTokenId, CredentialError, Mission, MissionClaims, ProofError, ProofExpectations,
    SecretToken, TokenKind, UnixTime, VerifiedProof, verify_proof,
};
use mandate_store::{MissionSnapshot, Principal};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

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
        let bytes = read_body(req, state).await?;
        json_object(&bytes).map(ApiJson)
    }
}

/// A request body that must be a JSON object, decoded into `T`. (serde
/// would also read a struct from an array of its fields, `[null, null]`.)
pub(crate) fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Problem::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_problem(e.inner(), Some(e.path())))?;
    de.end().map_err(|e| json_problem(&e, None))?;
    Ok(value)
}

/// How long a request body may take to arrive, once its head is in, when
/// the edge does not say ([`crate::edge::ConnectionFacts`] carries the
/// configured header-read timeout). Past it the request is refused (`408
/// body_timeout`): a client that sends a head and then trickles, or stops,
/// must not hold its connection (the edge's own timeouts stop while a
/// request is being served, ADR 0013).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the body is too large",
    )
}

/// The request's body, within the API's size limit (a declared length over
/// it is refused before anything is read) and [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limit = req
        .extensions()
        .get::<crate::edge::ConnectionFacts>()
        .map_or(BODY_READ_TIMEOUT, |f| f.body_read_timeout);
    match tokio::time::timeout(limit, Bytes::from_request(req, state)).await {
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body did not arrive within {} s", limit.as_secs()),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
        Ok(Err(_)) => Err(Problem::bad_request(
            "invalid_body",
            "the body could not be read",
        )),
    }
}

pub(crate) fn json_problem(
    e: &serde_json::Error,
    path: Option<&serde_path_to_error::Path>,
) -> Problem {
    use serde_json::error::Category;
    let detail = match e.classify() {
        Category::Data => what_is_wrong(Document::Body, path, &e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    };
    Problem::bad_request("invalid_json", detail)
}

/// The last word on the API's own errors: an answer one of axum's own
/// extractors made (plain text, which may repeat the value sent) becomes a
/// problem that repeats nothing. The routes use [`ApiJson`], [`ApiQuery`]
/// and [`ApiPath`], which say which field is wrong; this catches a route
/// that does not. (Not applied to the gateways, whose answers may be an
/// upstream's.)
pub(crate) async fn plain_rejections_as_problems(resp: Response) -> Response {
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !status.is_client_error() {
        return resp;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(status, "payload_too_large", "the body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "unsupported_media_type",
            "the body must be `application/json`",
        ),
        _ => Problem::new(
            status,
            "invalid_request",
            "the request is not valid for this endpoint",
        ),
    }
    .into_response()
}

/// A query string, decoded into `T` (unknown parameters are refused where
/// `T` says so).
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                Problem::bad_request(
                    "invalid_query",
                    what_is_wrong(Document::Query, Some(e.path()), &e.inner().to_string()),
                )
            })
    }
}

/// Path parameters, decoded into `T`.
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        use axum::extract::path::{ErrorKind, Path};
        use axum::extract::rejection::PathRejection;
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let detail = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => {
                        format!("the path parameter `{}` is not valid", safe_name(key))
                    }
                    _ => "a path parameter is not valid".to_owned(),
                };
                Err(Problem::bad_request("invalid_path", detail))
            }
            Err(e) => {
                tracing::error!(error = %e, "path parameters missing for a route");
                Err(Problem::internal())
            }
        }
    }
}

/// A document a caller sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    Body,
    Query,
}

/// What is wrong with a decoded document, from serde's message: the kind
/// of mistake and where, without the submitted value (serde's
/// `invalid type: integer 987654321123, expected a string`) or the list of
/// accepted values (`unknown variant …, expected one of …`).
fn what_is_wrong(doc: Document, path: Option<&serde_path_to_error::Path>, message: &str) -> String {
    let (whole, member) = match doc {
        Document::Body => ("the body", "field"),
        Document::Query => ("the query string", "parameter"),
    };
    let segments: Vec<&Segment> = path.map(|p| p.iter().collect()).unwrap_or_default();
    let unknown = message.starts_with("unknown field");
    // The path of an unknown field ends in the caller's own made-up name,
    // which is not repeated: name the object that has it.
    let at = match segments.split_last() {
        Some((Segment::Map { .. }, parent)) if unknown => path_text(parent),
        _ => path_text(&segments),
    };
    let nested = at.as_ref().filter(|_| doc == Document::Body);
    // serde's own field names are `&'static str`s of the request type.
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(safe_name)
    };
    if let Some(name) = named("missing field `") {
        return match nested {
            Some(p) => format!("`{p}` lacks the field `{name}`"),
            None => format!("{whole} lacks the {member} `{name}`"),
        };
    }
    if let Some(name) = named("duplicate field `") {
        return format!("the {member} `{name}` appears more than once");
    }
    if unknown {
        return match nested {
            Some(p) => format!("`{p}` has a field this endpoint does not take"),
            None => format!("{whole} has a {member} this endpoint does not take"),
        };
    }
    let what = if message.starts_with("invalid type") {
        "has the wrong type"
    } else if message.starts_with("unknown variant") {
        "is not one of the accepted values"
    } else if message.starts_with("invalid length") {
        "has the wrong number of items"
    } else {
        "is not valid"
    };
    match at {
        Some(p) => format!("`{p}` {what}"),
        // Inside an internally tagged enum serde keeps no path.
        None => format!("a value in {whole} {what}"),
    }
}

/// The path to the wrong field (`a.b[2]`), or `None` at the top.
fn path_text(segments: &[&Segment]) -> Option<String> {
    let mut out = String::new();
    for seg in segments {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&safe_name(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A field name as the request type spells it; anything else (a key of a
/// submitted map, say) is not repeated.
fn safe_name(name: &str) -> String {
    let ours = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ours {
        name.to_owned()
    } else {
        "…".to_owned()
    }
}

/// Exactly one value of header `name`, as text.
pub(super) fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, Problem> {
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
        require_admin(&self.principal)
    }
}

/// Refuses principals without the admin role (`403 forbidden`), whoever
/// asks for them (the API, the console).
pub(crate) fn require_admin(p: &Principal) -> Result<(), Problem> {
    if p.role == mandate_core::Role::Admin {
        Ok(())
    } else {
        Err(Problem::forbidden("this needs the admin role"))
    }
}

/// An API token as presented (`Authorization: Bearer mdt_…`), its form
/// checked but not yet looked up. A handler with a read of its own to make
/// makes it with the token's ([`check_presented_with`]) and acts on
/// nothing before the token resolves to a principal ([`Self::resolve`]
/// alone otherwise).
pub(crate) struct PresentedToken(SecretToken);

impl FromRequestParts<AppState> for PresentedToken {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Problem> {
        let auth = single_header(&parts.headers, "authorization")?.ok_or_else(|| {
            unauthenticated("an API token is required (`Authorization: Bearer mdt_…`)")
        })?;
        let presented = auth
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthenticated("use `Authorization: Bearer` with an API token"))?;
        SecretToken::parse(TokenKind::Api, presented.trim())
            .map(Self)
            .ok_or_else(invalid_token)
    }
}

impl PresentedToken {
    /// The principal the token belongs to, if it is live.
    pub(crate) async fn resolve(&self, state: &AppState) -> Result<Caller, Problem> {
        let (principal, token) = state
            .0
            .store
            .principal_by_token(&self.0.hash())
            .await?
            .ok_or_else(invalid_token)?;
        Ok(Caller { principal, token })
    }
}

fn invalid_token() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the API token is not valid",
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        PresentedToken::from_request_parts(parts, state)
            .await?
            .resolve(state)
            .await
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
/// used before, here or on any node sharing the database (a claim in the
/// store), before a restart too. Only proofs by keys bound to `mission`
/// get here, so an outsider cannot fill the cache. A replayed proof
/// verified with the mission key, so the replay is on the record
/// (`proof.replayed`), once per proof and node: later tries are only
/// answered.
pub(crate) async fn remember_proof(
    state: &AppState,
    proof: &VerifiedProof,
    mission: &mandate_core::Mission,
    method: &Method,
    path: &str,
) -> Result<(), Problem> {
    let now = state.0.clock.now();
    let first = match state.0.replay.check(&proof.jkt, &proof.jti, proof.iat, now) {
        Replay::Fresh => {
            // New here; once only on every node sharing the database, and
            // across a restart, too.
            let key =
                mandate_core::s256(format!("dpop:{}:{}", proof.jkt.as_str(), proof.jti).as_bytes());
            let expires = mandate_core::UnixTime(
                proof
                    .iat
                    .0
                    .saturating_add(mandate_core::FRESHNESS_WINDOW_SECS),
            );
            if state.0.store.claim(&key, expires, now).await? {
                return Ok(());
            }
            // Used on another node (or before a restart): remembered here
            // as replayed too, so later tries are only answered.
            let _ = state.0.replay.check(&proof.jkt, &proof.jti, proof.iat, now);
            true
        }
        Replay::Seen { first } => first,
        Replay::Full => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay_cache_full",
                "too many proofs in flight; retry shortly",
            ));
        }
    };
    if first {
        state
            .audit(
                "proof.replayed",
                serde_json::json!({
                    "mission": mission.body.id.as_str(),
                    "mission_s256": mission.s256,
                    "principal": mission.body.principal.as_str(),
                    "agent": mission.body.agent.as_str(),
                    "jkt": proof.jkt.as_str(),
                    "proof": proof.jti,
                    "method": method.as_str(),
                    "path": path,
                }),
            )
            .await?;
    }
    Err(ProofError::Replayed.into())
}

/// A presented mission credential after the checks every caller needs, in
/// this order: signature and issuer, then the mission's state and key
/// binding, then time (so a credential of an ended mission is refused as
/// such, not as merely expired).
pub(crate) enum Presented {
    Valid {
        claims: MissionClaims,
        /// The mission, with its budget count and live grants read in the
        /// same statement (what a decision needs next).
        mission: Box<MissionSnapshot>,
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
    let mission = state
        .0
        .store
        .mission_snapshot(&signed.claims.mission_id, now)
        .await?;
    Ok(check_against(signed, mission, now))
}

/// [`check_presented`] for a call authenticated by an API token, with the
/// token's read and the mission's made together
/// ([`mandate_store::Store::token_and_snapshot`]: one round trip on
/// PostgreSQL, ADR 0033). The token is resolved first: a token that is not
/// live is refused (`401`) whatever the credential.
pub(crate) async fn check_presented_with(
    state: &AppState,
    token: &PresentedToken,
    credential: &str,
) -> Result<(Caller, Presented), Problem> {
    let signed = match state.verified_credential(credential) {
        Ok(v) => v.signed,
        Err(error) => {
            let caller = token.resolve(state).await?;
            return Ok((
                caller,
                Presented::Refused {
                    error,
                    claims: None,
                },
            ));
        }
    };
    let now = state.0.clock.now();
    let (caller, mission) = state
        .0
        .store
        .token_and_snapshot(&token.0.hash(), &signed.claims.mission_id, now)
        .await?;
    let (principal, token) = caller.ok_or_else(invalid_token)?;
    Ok((
        Caller { principal, token },
        check_against(signed, mission, now),
    ))
}

/// The mission's state and key binding, then time, for a credential whose
/// signature and issuer checked out, against the mission as read at `now`.
fn check_against(
    signed: mandate_core::SignedCredential,
    mission: Option<MissionSnapshot>,
    now: UnixTime,
) -> Presented {
    let refused = |error, claims: &MissionClaims| Presented::Refused {
        error,
        claims: Some(claims.clone()),
    };
    let Some(mission) = mission else {
        return refused(CredentialError::UnknownMission, &signed.claims);
    };
    if let Err(e) = mission.mission().check_credential(&signed.claims, now) {
        return refused(e, &signed.claims);
    }
    let claims = signed.claims.clone();
    match signed.check_validity(now) {
        Ok(v) => Presented::Valid {
            claims: v.claims,
            mission: Box::new(mission),
        },
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
            Presented::Valid { claims, mission } => (claims, mission.into_mission()),
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
        remember_proof(state, &proof, &mission, &parts.method, parts.uri.path()).await?;
        Ok(Self { claims, mission })
    }
}

#[cfg(test)]
mod tests {
    use super::{ApiJson, ApiQuery};
    use axum::body::Body;
    use axum::extract::{FromRequest as _, FromRequestParts as _, Request};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only decoded")]
    struct Wire {
        name: String,
        limit: Option<u32>,
        mode: Option<Mode>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only decoded")]
    struct Inner {
        secret: String,
    }

    async fn body(json: &str) -> String {
        let req = Request::builder()
            .header("content-type", "application/json")
            .body(Body::from(json.to_owned()))
            .unwrap();
        match ApiJson::<Wire>::from_request(req, &()).await {
            Ok(_) => String::new(),
            Err(p) => p.detail,
        }
    }

    async fn query(q: &str) -> String {
        let (mut parts, ()) = Request::builder()
            .uri(format!("/x?{q}"))
            .body(())
            .unwrap()
            .into_parts();
        match ApiQuery::<Wire>::from_request_parts(&mut parts, &()).await {
            Ok(_) => String::new(),
            Err(p) => p.detail,
        }
    }

    #[tokio::test]
    async fn details_name_the_field_and_never_the_value() {
        for (json, want) in [
            (r#"{"name": 987654321123}"#, "`name` has the wrong type"),
            (
                r#"{"name": "a", "mode": "slow987"}"#,
                "`mode` is not one of the accepted values",
            ),
            (
                r#"{"name": "a", "inner": {"secret": 987}}"#,
                "`inner.secret` has the wrong type",
            ),
            (
                r#"{"name": "a", "inner": {"secret": "s", "x987": 1}}"#,
                "`inner` has a field this endpoint does not take",
            ),
            (
                r#"{"name": "a", "other987": 1}"#,
                "the body has a field this endpoint does not take",
            ),
            (r#"{"limit": 1}"#, "the body lacks the field `name`"),
            (
                r#"{"name": "a", "limit": 98765432109}"#,
                "`limit` is not valid",
            ),
            (
                r#"{"name": "a"987"#,
                "the body is not valid JSON (line 1, column 13)",
            ),
            // serde would read a struct from an array of its fields.
            (r#"["a", 1, null, null]"#, "the body must be a JSON object"),
        ] {
            assert_eq!(body(json).await, want, "{json}");
        }
        for (q, want) in [
            ("name=a&limit=x987", "`limit` is not valid"),
            (
                "name=a&mode=slow987",
                "`mode` is not one of the accepted values",
            ),
            (
                "name=a&other987=1",
                "the query string has a parameter this endpoint does not take",
            ),
            ("limit=1", "the query string lacks the parameter `name`"),
        ] {
            assert_eq!(query(q).await, want, "{q}");
        }
    }
}
