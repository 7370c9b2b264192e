//! The HTTP enforcement gateway: `/gw/{route}/…`.
//!
//! Every request, in this order, and any failure refuses it:
//! 1. the path is checked (ambiguous paths are refused, not normalised);
//! 2. the body is read, up to the route's limit;
//! 3. the RFC 9421 signature: one signature, its `Signature-Key` member
//!    (scheme `jwt`) carrying the mission credential; the credential and the
//!    mission (active, same key); the covered components Mandate requires;
//!    `created` within 60 s; `Content-Digest` against the body; the
//!    signature by the mission key bound into the credential; never seen
//!    before (replay cache);
//! 4. the request is mapped to a Cedar action, resource and context by the
//!    route's rules, and decided (state, budget, policy, grants);
//! 5. the decision is recorded in the audit log and is durable;
//! 6. only then: Allow forwards the request that was decided, which comes
//!    back from the enforcement pipeline inside its [`Permit`]; Deny answers
//!    403, Escalate answers 403 `approval_required` with the approval
//!    request to wait on.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_core::httpsig::{self, RequestParts};
use mandate_core::wire::DecideResponse;
use mandate_core::{Decision, FRESHNESS_WINDOW_SECS, Mission, MissionClaims, Trust, UnixTime};
use mandate_store::MissionSnapshot;
use serde::Serialize;

use mandate_enforce::{Call, Claim, Permit, Who};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::decide::{enforce, record_refusal};
use super::extract::{Presented, check_signed, single_header, verify_request_proof};
use super::free_text;
use crate::header_policy::{self, Withheld};
use crate::mcp_servers::{McpServer, ProofMode};
use crate::metrics::{Door, Stage, UpstreamError};
use crate::problem::Problem;
use crate::replay::Replay;
use crate::routes::{MapError, Route, UpstreamAuth, UpstreamErrors};
use crate::state::AppState;

/// The one signature label Mandate's agents use; any single label is
/// accepted.
const JUSTIFICATION_HEADER: &str = "mandate-justification";

/// The methods the gateway forwards.
const ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Lifetime of a token minted for an upstream (capped by the mission).
const EXCHANGE_TTL_SECS: u64 = 300;

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(status, code, detail)
}

fn unauthorized(code: &'static str, detail: impl Into<String>) -> Problem {
    problem(StatusCode::UNAUTHORIZED, code, detail)
}

/// `ANY /gw/{route}/…`.
pub(super) async fn handle(State(s): State<AppState>, req: Request) -> Response {
    // The request's span: the stages' spans go under it. Its route is
    // named once it is known to be configured.
    let span = tracing::debug_span!("gateway_request", route = Empty, status = Empty);
    // Boxed: the request's future (verification, decision, audit commit,
    // forwarding) is many kilobytes, and the router moves the handler's
    // future several times before it first runs; now it moves a pointer.
    let r = match Box::pin(handle_inner(&s, req))
        .instrument(span.clone())
        .await
    {
        Ok(r) => r,
        Err(p) => signature_challenge(p.into_response()),
    };
    span.record("status", r.status().as_u16());
    r
}

/// A 401 of the HTTP gateway says what would work there: an
/// RFC 9421 signature by the mission key, with the credential in
/// `Signature-Key` (scheme `jwt`). `Accept-Signature` (RFC 9421 §5.1) names
/// the components every signature covers (`@query` is covered too when the
/// request has a query, `content-digest` and `content-type` when it has a
/// body; `/.well-known/mandate-configuration` lists them).
fn signature_challenge(mut resp: Response) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED {
        let h = resp.headers_mut();
        h.insert(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Signature realm=\"mandate\", alg=\"ed25519\", key=\"jwt\""),
        );
        h.insert(
            "accept-signature",
            HeaderValue::from_static(
                "sig=(\"@method\" \"@authority\" \"@path\" \"signature-key\");created;alg=\"ed25519\"",
            ),
        );
    }
    resp
}

async fn handle_inner(s: &AppState, req: Request) -> Result<Response, Problem> {
    let (parts, body) = req.into_parts();
    let full_path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let rest = full_path
        .strip_prefix("/gw/")
        .ok_or_else(|| Problem::not_found("no such route"))?;
    let (name, sub_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let unknown = || {
        problem(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("no route `{name}`"),
        )
    };
    let arrived = s.gateways().routes.get(name).cloned().ok_or_else(unknown)?;
    tracing::Span::current().record("route", arrived.name());
    // 0–2. Method, path, headers and body.
    let headers = request_checks(&parts, sub_path, query.as_deref())?;
    let body = read_body(body, arrived.max_body_bytes(), arrived.timeout()).await?;
    // The route as configured once the body is in, read once: a reload
    // meanwhile changes later requests, not this one. The body may take up
    // to the route's timeout; a reload while it arrives applies to it too,
    // and a route removed meanwhile forwards nothing (ADR 0028).
    let route = s.gateways().routes.get(name).cloned().ok_or_else(unknown)?;
    if body.len() > route.max_body_bytes() {
        return Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {} bytes", route.max_body_bytes()),
        ));
    }
    // 3. The signature, the credential and the key.
    let authority = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| problem(StatusCode::BAD_REQUEST, "invalid_request", "no Host header"))?
        .to_owned();
    let request = RequestParts {
        method: parts.method.as_str(),
        scheme: s.0.issuer.split("://").next().unwrap_or("http"),
        authority: &authority,
        path: &full_path,
        query: query.as_deref(),
        headers: &headers,
    };
    let at = Instant::now();
    let verified = verify(s, &request, &parts.headers, &body, &[])
        .instrument(tracing::debug_span!("verify"))
        .await;
    s.0.metrics
        .stage(Door::Gateway, Stage::Verify, at.elapsed());
    let (claims, mission, claim) = match verified? {
        Verified::Ok {
            claims,
            mission,
            claim,
        } => (claims, *mission, claim),
        Verified::Refused { problem, claims } => {
            // A refusal of an authentic credential is an accountable event.
            if let Some(c) = claims {
                refusal_audit(s, &route, &request, &c, &problem).await?;
            }
            return Err(problem);
        }
    };
    // 4. Map and decide.
    let who = Who::of(&claims);
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let mapped = match route.map_request(&crate::routes::HttpCall {
        method: parts.method.as_str(),
        path: sub_path,
        query: query.as_deref(),
        content_type,
        body: &body,
    }) {
        Ok(m) => m,
        Err(e) => {
            let p = match e {
                MapError::AmbiguousPath(_) => ambiguous(e),
                MapError::NoRule => problem(StatusCode::FORBIDDEN, "no_route_rule", e.to_string()),
                MapError::Body(m) => problem(StatusCode::BAD_REQUEST, "invalid_request", m),
            };
            refusal_audit(s, &route, &request, &claims, &p).await?;
            return Err(p);
        }
    };
    let justification = parts
        .headers
        .get(JUSTIFICATION_HEADER)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the justification is not text",
            )
        })?;
    let call = Call {
        action: &mapped.action,
        resource: &mapped.resource,
        context: &mapped.context,
        justification: free_text("justification", justification, 1_000)?,
        required: route.config.required_trust.unwrap_or(Trust::Signed),
        attestation: route.config.attestation.as_ref(),
        arguments: None,
        claim: Some(claim),
    };
    // 5. INVARIANT: the decision is durable before anything is forwarded
    //    or answered. The request goes into the pipeline and comes back
    //    only inside the permit of an Allow.
    let extra = gateway_fields(&route, &request, &body);
    let via = format!("route {} {} {sub_path}", route.name(), parts.method);
    let outbound = Outbound {
        parts,
        sub_path: sub_path.to_owned(),
        query,
        body,
    };
    let (resp, permit) = enforce(
        s,
        Door::Gateway,
        "gateway",
        &mission,
        &call,
        &who,
        extra,
        outbound,
    )
    .await?;
    // 6. The effect.
    match permit {
        Some(permit) => {
            let at = Instant::now();
            let answer = forward(s, &route, permit, &claims, mission.mission())
                .instrument(tracing::debug_span!("forward"))
                .await;
            s.0.metrics
                .stage(Door::Gateway, Stage::Forward, at.elapsed());
            let failed = match &answer {
                Ok(r) if r.status().is_server_error() => Some(UpstreamError::ServerError),
                Ok(_) => None,
                Err(p) => match p.code {
                    "upstream_timeout" => Some(UpstreamError::Timeout),
                    "upstream_unavailable" => Some(UpstreamError::Unreachable),
                    "upstream_error" => Some(UpstreamError::ServerError),
                    _ => None,
                },
            };
            if let Some(kind) = failed {
                s.0.metrics
                    .upstream_error(Door::Gateway, route.name(), kind);
            }
            let answer = answer?;
            // The agent reads what the upstream said: a route of untrusted
            // content taints the mission before the answer reaches it.
            super::taint::mark(s, mission.mission(), &route.config.taint, &via).await?;
            Ok(answer)
        }
        None => Ok(refusal(&resp)),
    }
}

/// A request as the gateway decided it: what a [`Permit`] lets it send.
#[derive(Debug)]
struct Outbound {
    parts: axum::http::request::Parts,
    sub_path: String,
    query: Option<String>,
    body: Bytes,
}

/// The checks before anything reads a request: its method, its path and
/// query, its headers as text, one Host and one Content-Type. Returns the
/// headers as text.
fn request_checks(
    parts: &axum::http::request::Parts,
    sub_path: &str,
    query: Option<&str>,
) -> Result<Vec<(String, String)>, Problem> {
    // 0. Only the methods of RFC 9110 a client of an API sends, spelled
    //    exactly: no TRACE (it would echo injected credentials back), no
    //    CONNECT, no lower-case spellings an upstream might read otherwise.
    if !ALLOWED_METHODS.contains(&parts.method.as_str()) {
        return Err(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("the gateway does not forward `{}`", parts.method),
        ));
    }
    // 1. Path hygiene, before anything else looks at the request.
    crate::routes::check_path(sub_path).map_err(ambiguous)?;
    if let Some(q) = query {
        crate::routes::check_query(q).map_err(ambiguous)?;
    }
    let headers = header_list(&parts.headers)?;
    // One Host and one Content-Type: the signature covers the field's
    // joined values, the policy reads one; they must be the same thing.
    for name in ["host", "content-type"] {
        if parts.headers.get_all(name).iter().count() > 1 {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("more than one `{name}` header"),
            ));
        }
    }
    Ok(headers)
}

fn ambiguous(e: MapError) -> Problem {
    problem(StatusCode::BAD_REQUEST, "ambiguous_path", e.to_string())
}

/// The body, within the route's limit. A client that trickles its body
/// holds a connection; it gets as long as the route gives its upstream.
async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Problem> {
    tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            problem(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            )
        })?
        .map_err(|_| {
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            )
        })
}

/// The request's headers as text; a header that is not text is refused.
pub(super) fn header_list(h: &HeaderMap) -> Result<Vec<(String, String)>, Problem> {
    h.iter()
        .map(|(k, v)| {
            v.to_str()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
                .map_err(|_| {
                    problem(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        format!("header `{k}` is not text"),
                    )
                })
        })
        .collect()
}

pub(super) enum Verified {
    Ok {
        claims: MissionClaims,
        /// The mission with its count and live grants, as read for the
        /// credential's check.
        mission: Box<MissionSnapshot>,
        /// The signature's single use, claimed with the decision's record.
        claim: Claim,
    },
    Refused {
        problem: Problem,
        claims: Option<MissionClaims>,
    },
}

fn single<'h>(h: &'h HeaderMap, name: &'static str) -> Result<&'h str, Problem> {
    let mut all = h.get_all(name).iter();
    let first = all.next().ok_or_else(|| {
        unauthorized(
            "signature_required",
            format!("an RFC 9421 signature is required (`{name}` is missing)"),
        )
    })?;
    if all.next().is_some() {
        return Err(unauthorized(
            "bad_signature_input",
            format!("more than one `{name}` header"),
        ));
    }
    first
        .to_str()
        .map_err(|_| unauthorized("bad_signature_input", format!("`{name}` is not text")))
}

pub(super) async fn verify(
    s: &AppState,
    req: &RequestParts<'_>,
    h: &HeaderMap,
    body: &Bytes,
    also_required: &[&'static str],
) -> Result<Verified, Problem> {
    let sig_err = |e: httpsig::HttpSigError| unauthorized("bad_signature_input", e.to_string());
    let input = single(h, "signature-input")?;
    let signature = single(h, "signature")?;
    let key_header = single(h, "signature-key")?;
    let Some(parsed) = httpsig::parse_only_signature(input, signature).map_err(sig_err)? else {
        return Err(unauthorized(
            "bad_signature_input",
            "exactly one signature is expected",
        ));
    };
    let credential = httpsig::signature_key_jwt(key_header, &parsed.label).map_err(sig_err)?;
    // The credential's own signature first: its claims are then authentic.
    let crate::state::Verified { signed, key } =
        s.verified_credential(&credential).map_err(Problem::from)?;
    let claims = signed.claims.clone();
    // Until the request's signature verifies, the caller may not hold the
    // mission key: refusals are answered, not recorded (a stolen credential
    // must not be able to write to the audit log).
    let unrecorded = |problem: Problem| {
        Ok(Verified::Refused {
            problem,
            claims: None,
        })
    };
    // What must be covered (exactly: a component with parameters is another
    // component).
    let covered = parsed.components();
    let mut required = vec!["@method", "@authority", "@path", "signature-key"];
    if req.query.is_some() {
        required.push("@query");
    }
    if !body.is_empty() {
        required.extend(["content-digest", "content-type"]);
    }
    if h.contains_key(JUSTIFICATION_HEADER) {
        required.push(JUSTIFICATION_HEADER);
    }
    required.extend(also_required.iter().filter(|c| h.contains_key(**c)));
    if let Some(missing) = required.iter().find(|c| !covered.iter().any(|x| x == *c)) {
        return unrecorded(unauthorized(
            "signature_incomplete",
            format!("the signature must cover `{missing}`"),
        ));
    }
    // Fresh: `created` within the window; not past `expires`.
    let now = s.0.clock.now();
    let Some(created) = parsed
        .int_param("created")
        .and_then(|c| u64::try_from(c).ok())
    else {
        return unrecorded(unauthorized(
            "signature_incomplete",
            "the signature has no `created`",
        ));
    };
    if created.abs_diff(now.0) > FRESHNESS_WINDOW_SECS {
        return unrecorded(unauthorized(
            "signature_stale",
            format!("`created` must be within {FRESHNESS_WINDOW_SECS} s of now"),
        ));
    }
    if let Some(exp) = parsed.int_param("expires")
        && u64::try_from(exp).unwrap_or(0) <= now.0
    {
        return unrecorded(unauthorized("signature_stale", "the signature expired"));
    }
    if !body.is_empty() {
        let digest = single(h, "content-digest")
            .map_err(|_| unauthorized("signature_incomplete", "a body needs `Content-Digest`"))?;
        if let Err(e) = httpsig::check_content_digest(digest, body) {
            return unrecorded(unauthorized("bad_digest", e.to_string()));
        }
    }
    // The key: the one bound into the credential (checked against the
    // mission's below).
    if claims.cnf.jwk.is_none() {
        return unrecorded(unauthorized(
            "bad_credential",
            "the credential carries no mission key (`cnf.jwk`)",
        ));
    }
    let Some(key) = key else {
        return unrecorded(unauthorized(
            "bad_signature",
            httpsig::HttpSigError::BadSignature.to_string(),
        ));
    };
    if let Err(e) = httpsig::verify_ed25519(req, &parsed, &key) {
        return unrecorded(unauthorized("bad_signature", e.to_string()));
    }
    // Once only: here, and (claimed with the decision's record) on every
    // node sharing the database.
    let jti = mandate_core::s256(parsed.signature());
    let claim = Claim {
        key: mandate_core::s256(format!("{}:{jti}", claims.cnf.jkt.as_str()).as_bytes()),
        expires: UnixTime(created.saturating_add(mandate_core::FRESHNESS_WINDOW_SECS)),
    };
    match s
        .0
        .replay
        .check(&claims.cnf.jkt, &jti, UnixTime(created), now)
    {
        Replay::Fresh => {}
        Replay::Seen { first } => {
            let problem = unauthorized("signature_replayed", "this signature was used before");
            // The signature verified: whoever replays it is accountable, once
            // per signature (each later try is only answered).
            return Ok(Verified::Refused {
                problem,
                claims: first.then_some(claims),
            });
        }
        Replay::Full => {
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay_cache_full",
                "too many signatures in flight; retry shortly",
            ));
        }
    }
    // The holder of the mission key: now the mission's state (ended,
    // revoked, another key bound) is an accountable refusal.
    let (claims, mission) = match check_signed(s, signed).await? {
        Presented::Valid { claims, mission } => (claims, mission),
        Presented::Refused { error, claims } => {
            return Ok(Verified::Refused {
                problem: error.into(),
                claims,
            });
        }
    };
    Ok(Verified::Ok {
        claims,
        mission,
        claim,
    })
}

/// How an `/mcp` request proves possession of the mission key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum McpProof {
    /// RFC 9421: `Signature-Input`, `Signature`, `Signature-Key`.
    Signature,
    /// RFC 9449: `Authorization: DPoP <credential>` and a `DPoP` proof.
    Dpop,
}

/// Whether `value` (of `Authorization`) is of the `DPoP` scheme (auth
/// schemes are case-insensitive, RFC 9110 §11.1).
fn is_dpop_scheme(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split(' ').next())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("dpop"))
}

/// Which proof an `/mcp` request presents, from its headers alone (before
/// its body is read), and whether the server takes it (`proof` of its
/// configuration). Both kinds on one request are refused: there is one
/// answer to "which key proved this", never two.
pub(super) fn mcp_proof(h: &HeaderMap, mode: ProofMode) -> Result<McpProof, Problem> {
    let signature = ["signature-input", "signature", "signature-key"]
        .iter()
        .any(|n| h.contains_key(*n));
    let authorization = h.get_all(axum::http::header::AUTHORIZATION);
    let dpop = h.contains_key("dpop") || authorization.iter().any(is_dpop_scheme);
    let found = match (signature, dpop) {
        (true, true) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a request carries an RFC 9421 signature or a DPoP proof, not both",
            ));
        }
        (true, false) => McpProof::Signature,
        (false, true) => McpProof::Dpop,
        (false, false) => {
            // A credential alone (`Bearer`) is the one thing a leak gives
            // away: it is refused as if nothing were sent.
            let bearer = if authorization.iter().next().is_some() {
                "; a credential alone (`Authorization: Bearer` or another scheme) is not accepted"
            } else {
                ""
            };
            return Err(match mode {
                ProofMode::Signature => unauthorized(
                    "signature_required",
                    format!("an RFC 9421 signature is required{bearer}"),
                ),
                ProofMode::Dpop => unauthorized(
                    "unauthenticated",
                    format!(
                        "the mission credential (`Authorization: DPoP`) and a `DPoP` proof are required{bearer}"
                    ),
                ),
                ProofMode::Either => unauthorized(
                    "signature_required",
                    format!(
                        "an RFC 9421 signature, or the mission credential (`Authorization: DPoP`) with a `DPoP` proof, is required{bearer}"
                    ),
                ),
            });
        }
    };
    match found {
        McpProof::Signature if !mode.takes_signature() => Err(unauthorized(
            "unauthenticated",
            "this MCP server takes DPoP proofs only (`proof = \"dpop\"`): present the mission credential with `Authorization: DPoP` and a `DPoP` proof",
        )),
        McpProof::Dpop if !mode.takes_dpop() => Err(unauthorized(
            "signature_required",
            "this MCP server takes RFC 9421 signatures only (`proof = \"signature\"`)",
        )),
        // Nothing is read before the request could be authentic at all.
        McpProof::Signature => {
            for name in ["signature-input", "signature", "signature-key"] {
                if !h.contains_key(name) {
                    return Err(unauthorized(
                        "signature_required",
                        format!("an RFC 9421 signature is required (`{name}` is missing)"),
                    ));
                }
            }
            Ok(found)
        }
        McpProof::Dpop => {
            if !authorization.iter().any(is_dpop_scheme) {
                return Err(unauthorized(
                    "unauthenticated",
                    "present the mission credential with `Authorization: DPoP`",
                ));
            }
            if !h.contains_key("dpop") {
                return Err(unauthorized(
                    "unauthenticated",
                    "a `DPoP` proof of possession of the mission key is required",
                ));
            }
            Ok(found)
        }
    }
}

/// An `/mcp/{server}` request's proof of possession: an RFC 9421 signature
/// ([`verify`], which must also cover `Mcp-Session-Id`) or a DPoP proof
/// ([`verify_dpop`]), as [`mcp_proof`] finds and the server takes. Either
/// way the same [`Verified`] comes out.
pub(super) async fn verify_mcp(
    s: &AppState,
    server: &McpServer,
    req: &RequestParts<'_>,
    h: &HeaderMap,
    body: &Bytes,
) -> Result<Verified, Problem> {
    match mcp_proof(h, server.proof())? {
        McpProof::Signature => verify(s, req, h, body, &["mcp-session-id"]).await,
        McpProof::Dpop => verify_dpop(s, req, h).await,
    }
}

/// The DPoP alternative to [`verify`] (RFC 9449, as the authority API
/// takes it): `Authorization: DPoP <mission credential>` and one `DPoP`
/// proof, signed by the key the credential binds (`cnf.jkt` is the proof
/// key's thumbprint), for this method and this URL (the issuer and the
/// path, no query), with `iat` within the freshness window and `ath` the
/// hash of the credential (required); never used before, here or on any
/// node sharing the database (claimed when verified, and with the
/// decision's record as a signature is). The proof covers neither the body
/// nor the other headers (ADR 0023).
pub(super) async fn verify_dpop(
    s: &AppState,
    req: &RequestParts<'_>,
    h: &HeaderMap,
) -> Result<Verified, Problem> {
    let credential = single_header(h, "authorization")?
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("dpop"))
        .map(|(_, c)| c.trim())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "unauthenticated",
                "present the mission credential with `Authorization: DPoP`",
            )
        })?;
    // The credential's own signature first: its claims are then authentic.
    let crate::state::Verified { signed, .. } =
        s.verified_credential(credential).map_err(Problem::from)?;
    let claims = signed.claims.clone();
    // Until the proof verifies, the caller may not hold the mission key:
    // refusals are answered, not recorded (a stolen credential must not be
    // able to write to the audit log).
    let unrecorded = |problem: Problem| {
        Ok(Verified::Refused {
            problem,
            claims: None,
        })
    };
    let method = axum::http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| Problem::bad_request("invalid_request", "no such method"))?;
    // htm, htu (the issuer and the path), iat, `ath` of this credential,
    // the signature by the proof's own key.
    let proof = match verify_request_proof(s, h, &method, req.path, Some(credential)) {
        Ok(p) => p,
        Err(p) => return unrecorded(p),
    };
    // The proof's key is the one the credential binds.
    if proof.jkt != claims.cnf.jkt {
        return unrecorded(mandate_core::ProofError::KeyMismatch.into());
    }
    // Once only: here (the replay cache), and on every node sharing the
    // database. In a namespace of its own: a proof is never taken for a
    // signature, nor for a proof to the authority API.
    let now = s.0.clock.now();
    let jti = format!("dpop-mcp:{}", proof.jti);
    let expires = UnixTime(proof.iat.0.saturating_add(FRESHNESS_WINDOW_SECS));
    let replayed = |first: bool| {
        // The proof verified with the mission key: whoever replays it is
        // accountable, once per proof and node (each later try is only
        // answered).
        Ok(Verified::Refused {
            problem: mandate_core::ProofError::Replayed.into(),
            claims: first.then(|| claims.clone()),
        })
    };
    match s.0.replay.check(&proof.jkt, &jti, proof.iat, now) {
        Replay::Fresh => {}
        Replay::Seen { first } => return replayed(first),
        Replay::Full => {
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay_cache_full",
                "too many proofs in flight; retry shortly",
            ));
        }
    }
    // Unlike a signature, a proof covers neither the message nor the
    // session: the proof of a listing here could be a call to a session
    // of the same mission on another node. So its use is claimed now,
    // whatever the request turns out to be (ADR 0023) …
    let used =
        mandate_core::s256(format!("dpop-mcp-use:{}:{}", proof.jkt.as_str(), proof.jti).as_bytes());
    if !s.0.store.claim(&used, expires, now).await? {
        // Used on another node (or before a restart): remembered here as
        // replayed too, so later tries are only answered.
        let _ = s.0.replay.check(&proof.jkt, &jti, proof.iat, now);
        return replayed(true);
    }
    // … and, as a signature's, with the record of the decision it gets.
    let claim = Claim {
        key: mandate_core::s256(
            format!("dpop-mcp:{}:{}", proof.jkt.as_str(), proof.jti).as_bytes(),
        ),
        expires,
    };
    // The holder of the mission key: now the mission's state (ended,
    // revoked, another key bound) is an accountable refusal.
    let (claims, mission) = match check_signed(s, signed).await? {
        Presented::Valid { claims, mission } => (claims, mission),
        Presented::Refused { error, claims } => {
            return Ok(Verified::Refused {
                problem: error.into(),
                claims,
            });
        }
    };
    Ok(Verified::Ok {
        claims,
        mission,
        claim,
    })
}

/// A 401 of the MCP gateway names what the server takes: the HTTP
/// gateway's RFC 9421 challenge ([`signature_challenge`]) and `DPoP
/// algs="EdDSA"` (RFC 9449 §7.1), or one of them where `proof` says so.
/// Never `Bearer`: a credential alone is refused.
pub(super) fn mcp_challenge(resp: Response, mode: ProofMode) -> Response {
    if resp.status() != StatusCode::UNAUTHORIZED {
        return resp;
    }
    let mut resp = if mode.takes_signature() {
        signature_challenge(resp)
    } else {
        let mut resp = resp;
        resp.headers_mut()
            .remove(axum::http::header::WWW_AUTHENTICATE);
        resp
    };
    if mode.takes_dpop() {
        resp.headers_mut().append(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("DPoP algs=\"EdDSA\""),
        );
    }
    resp
}

/// The `proof` of the MCP server at `path` (`/mcp/{server}`); `either`
/// for no server (whose answer is a 404 anyway).
pub(super) fn mcp_proof_mode(s: &AppState, path: &str) -> ProofMode {
    path.strip_prefix("/mcp/")
        .and_then(|name| s.gateways().mcp_servers.get(name).map(|m| m.proof()))
        .unwrap_or(ProofMode::Either)
}

/// What the audit record of a gateway request adds: where and what, by
/// digest (never the body itself).
fn gateway_fields(
    route: &Route,
    req: &RequestParts<'_>,
    body: &Bytes,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("enforcement_point".into(), "gateway".into());
    m.insert("route".into(), route.name().into());
    m.insert("method".into(), req.method.into());
    m.insert("path".into(), req.path.into());
    if let Some(q) = req.query {
        m.insert(
            "query_digest".into(),
            mandate_core::s256(q.as_bytes()).into(),
        );
    }
    if !body.is_empty() {
        m.insert("body_digest".into(), mandate_core::s256(body).into());
    }
    m
}

/// Records a refusal that happened before a decision (signature, mapping).
async fn refusal_audit(
    s: &AppState,
    route: &Route,
    req: &RequestParts<'_>,
    claims: &MissionClaims,
    p: &Problem,
) -> Result<(), Problem> {
    let resource = mandate_core::ResourceRef {
        kind: mandate_core::ResourceKind::Route {
            route: route.name().to_owned(),
            path: req.path.to_owned(),
        },
        tags: std::collections::BTreeMap::new(),
    };
    let extra = gateway_fields(route, req, &Bytes::new());
    record_refusal(
        s,
        Door::Gateway,
        &resource,
        claims,
        p.code,
        &p.detail,
        extra,
    )
    .await
}

#[derive(Serialize)]
struct Refusal<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'static str,
    status: u16,
    code: &'a str,
    detail: String,
    decision: &'static str,
    policies: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_url: Option<&'a str>,
    /// For a delegated mission: the ancestor that stopped or escalated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    hop: Option<&'a mandate_core::Hop>,
}

/// 403 for a denial, or 403 `approval_required` for an escalation (with
/// the approval request to wait on, AAuth style).
fn refusal(resp: &DecideResponse) -> Response {
    let escalated = resp.decision == Decision::Escalate && resp.approval_id.is_some();
    let code: &str = if escalated {
        "approval_required"
    } else {
        &resp.code
    };
    let detail = if escalated {
        format!(
            "this call needs approval ({}); wait on the approval request, then retry",
            resp.code
        )
    } else if resp.detail.is_empty() {
        format!("denied: {}", resp.code)
    } else {
        resp.detail.clone()
    };
    let body = Refusal {
        type_: format!("urn:mandate:problem:{code}"),
        title: "Forbidden",
        status: 403,
        code,
        detail,
        decision: resp.decision.as_str(),
        policies: &resp.policies,
        approval_id: resp.approval_id.as_deref(),
        approval_url: resp.approval_url.as_deref(),
        hop: resp.hop.as_ref(),
    };
    let mut r = (StatusCode::FORBIDDEN, axum::Json(&body)).into_response();
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    if let (true, Some(url)) = (escalated, resp.approval_url.as_deref()) {
        if let Ok(v) = HeaderValue::from_str(&format!("requirement=approval; url=\"{url}\"")) {
            h.insert("aauth-requirement", v);
        }
        h.insert("retry-after", HeaderValue::from_static("5"));
    }
    r
}

#[derive(Serialize)]
struct ExchangeClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    act: &'a mandate_core::Actor,
    /// RFC 9068 §2.2: the client the token was issued to, here the acting
    /// agent.
    client_id: &'a str,
    mission_id: &'a str,
    mission_s256: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

/// A token for this upstream alone: `sub` the principal, `act` the agent
/// (nesting the agents that delegated to it, for a delegated mission),
/// `aud` the route's (or MCP server's) audience, at most five minutes and never past the
/// mission.
pub(super) fn exchange_token(
    s: &AppState,
    audience: &str,
    claims: &MissionClaims,
    mission: &Mission,
) -> Result<String, Problem> {
    let now = s.0.clock.now();
    let exp = now.plus(EXCHANGE_TTL_SECS).min(mission.expires_at());
    let mut jti = [0u8; 16];
    s.0.rng.fill(&mut jti).map_err(|_| Problem::internal())?;
    let c = ExchangeClaims {
        iss: &s.0.issuer,
        sub: claims.sub.as_str(),
        aud: audience,
        // The whole chain of actors, the current one outermost (RFC 8693
        // §4.1), as the credential carries it.
        act: &claims.act,
        client_id: claims.act.sub.as_str(),
        mission_id: claims.mission_id.as_str(),
        mission_s256: &claims.mission_s256,
        iat: now.0,
        exp: exp.0,
        jti: mandate_core::s256(&jti),
    };
    s.0.key.sign_jwt("at+jwt", &c).map_err(|e| {
        tracing::error!(error = %e, "cannot mint an upstream token");
        Problem::internal()
    })
}

/// Governed impersonation: opens the principal's vaulted secret for this
/// route and records its use (durably) before it is used. The secret goes
/// only into the upstream request.
async fn impersonation(
    s: &AppState,
    route: &Route,
    claims: &MissionClaims,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), Problem> {
    let Some(rec) = s.0.store.vault_secret(&claims.sub, route.name()).await? else {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "vault_secret_missing",
            format!(
                "no secret of `{}` is vaulted for route `{}`; an admin stores one with `mandate vault put`",
                claims.sub,
                route.name()
            ),
        ));
    };
    let secret = s
        .0
        .vault
        .open(
            &mandate_core::Sealed {
                nonce: rec.nonce.clone(),
                ciphertext: rec.ciphertext.clone(),
            },
            claims.sub.as_str(),
            route.name(),
            rec.version,
        )
        .map_err(|e| {
            tracing::error!(route = route.name(), principal = %claims.sub, error = %e, "a vaulted secret does not open");
            Problem::internal()
        })?;
    // INVARIANT: the impersonation is durable in the audit log before the
    // secret leaves the vault.
    s.audit(
        "vault.used",
        serde_json::json!({
            "principal": claims.sub.as_str(),
            "agent": claims.act.sub.as_str(),
            "mission": claims.mission_id.as_str(),
            "mission_s256": &claims.mission_s256,
            "credential": &claims.jti,
            "route": route.name(),
            "kind": secret.kind(),
            "version": rec.version,
        }),
    )
    .await?;
    let (name, value) = secret.header();
    let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Problem::internal())?;
    let value =
        reqwest::header::HeaderValue::from_str(value.as_str()).map_err(|_| Problem::internal())?;
    Ok((name, value))
}

/// Sends the request `permit` was given for, with the route's upstream
/// auth. The only caller of [`proxy`] in `mandate serve`.
async fn forward(
    s: &AppState,
    route: &Arc<Route>,
    permit: Permit<Outbound>,
    claims: &MissionClaims,
    mission: &Mission,
) -> Result<Response, Problem> {
    // Checked first: a vaulted secret is opened (and its use recorded)
    // only for a request that will be sent.
    let Some(client) = s.0.upstream.as_ref() else {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            "the gateway cannot forward right now",
        ));
    };
    let credential = match route.config.auth {
        UpstreamAuth::Pass => None,
        UpstreamAuth::TokenExchange => {
            let token = exchange_token(s, route.audience(), claims, mission)?;
            let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Problem::internal())?;
            Some((reqwest::header::AUTHORIZATION, v))
        }
        UpstreamAuth::Vault => {
            let (name, mut value) = impersonation(s, route, claims).await?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    let target = Upstream {
        client,
        route: route.name(),
        base: route.base_url(),
        timeout: route.timeout(),
        forward_headers: route.forward_headers(),
        errors: route.config.upstream_errors,
        seq: Some(permit.seq()),
    };
    let Outbound {
        parts,
        sub_path,
        query,
        body,
    } = permit.into_request();
    proxy(
        &target,
        &parts,
        &sub_path,
        query.as_deref(),
        body,
        credential,
    )
    .await
}

/// The upstream URL of a request: the base's path, then the request's path
/// and query. They go through the same parser as the whole URL would (only
/// the host is not parsed again); `sub_path` and `query` passed the
/// gateway's ambiguity checks.
fn upstream_url(base: &reqwest::Url, sub_path: &str, query: Option<&str>) -> reqwest::Url {
    let mut url = base.clone();
    let base_path = base.path().trim_end_matches('/');
    url.set_path(&format!("{base_path}{sub_path}"));
    url.set_query(query);
    url
}

/// Where a request is forwarded and how: the upstream client, the route's
/// name (for logs and the masked error), its base URL, its timeout, the
/// client-address headers it forwards, what its 5xx answers become, and
/// the audit record of the decision (for the log).
struct Upstream<'a> {
    client: &'a reqwest::Client,
    route: &'a str,
    base: &'a reqwest::Url,
    timeout: std::time::Duration,
    forward_headers: &'a [axum::http::HeaderName],
    errors: UpstreamErrors,
    seq: Option<u64>,
}

/// The forwarding itself, with the gateway's header policy
/// ([`header_policy`]): hop-by-hop, gateway-owned, rewrite, identity and
/// client-address headers withheld from the upstream (the route's
/// `forward_headers` excepted), `credential` (the upstream auth, if any)
/// set over whatever the agent sent under that name; the answer streamed
/// back without hop-by-hop, session, proxy-instructing and
/// implementation-revealing headers; a timeout; upstream failures
/// answered without their details, and 5xx answers masked unless the
/// route passes them. Whether to forward at all is the caller's:
/// [`forward`], which holds a [`Permit`], and the forwarding-layer
/// benchmark (feature `unsafe-bench-forwarding-only`) are its only
/// callers.
async fn proxy(
    target: &Upstream<'_>,
    parts: &axum::http::request::Parts,
    sub_path: &str,
    query: Option<&str>,
    body: Bytes,
    credential: Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
) -> Result<Response, Problem> {
    let url = upstream_url(target.base, sub_path, query);
    let mut out = reqwest::header::HeaderMap::new();
    // Headers the agent's `Connection` header names are hop-by-hop too.
    let connection_named: Vec<String> = parts
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for (k, v) in &parts.headers {
        let name = k.as_str();
        let forwarded = match header_policy::withheld(name) {
            None => true,
            Some(Withheld::ClientAddress) => target.forward_headers.contains(k),
            Some(_) => false,
        };
        if !forwarded || connection_named.iter().any(|c| c == name) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    if let Some((name, value)) = credential {
        // Replaces whatever the agent sent under that name.
        out.insert(name, value);
    }
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|_| Problem::internal())?;
    let sent = target
        .client
        .request(method, url)
        .headers(out)
        .body(body)
        .timeout(target.timeout)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(route = target.route, error = %e, "upstream request failed");
            return Err(if e.is_timeout() {
                problem(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                )
            } else {
                problem(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream could not be reached",
                )
            });
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_server_error() && target.errors == UpstreamErrors::Mask {
        return Err(masked(target, &resp));
    }
    let mut headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if !header_policy::strip_downstream(k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok(r)
}

/// A 5xx answer of the upstream, masked (`upstream_errors = "mask"`): the
/// agent learns the route and the status; the server log gets a summary
/// with nothing of the body or of header values (a stack trace or a
/// configuration dump may hold secrets); the answer is dropped unread.
fn masked(target: &Upstream<'_>, resp: &reqwest::Response) -> Problem {
    let status = resp.status().as_u16();
    let h = resp.headers();
    // The media type only, short and printable.
    let content_type: String = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .chars()
        .filter(char::is_ascii_graphic)
        .take(64)
        .collect();
    let mut names = String::new();
    for k in h.keys() {
        if names.len() + k.as_str().len() > 256 {
            names.push_str(" …");
            break;
        }
        if !names.is_empty() {
            names.push(' ');
        }
        names.push_str(k.as_str());
    }
    tracing::warn!(
        route = target.route,
        audit_seq = target.seq,
        status,
        content_type,
        content_length = resp.content_length(),
        headers = names,
        "the upstream answered with a server error; masked for the agent"
    );
    problem(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!(
            "the upstream of route `{}` answered {status}; its answer is withheld",
            target.route
        ),
    )
}

/// The forwarding layer alone, for the gateway benchmark's pass-through
/// row: the gateway's method, path and body checks and [`proxy`], with no
/// signature, decision or audit, so the cost of forwarding can be set beside
/// nginx's. Built only with the `unsafe-bench-forwarding-only` feature
/// (the benchmarks' own dependency); `mandate serve` has no such route.
#[cfg(feature = "unsafe-bench-forwarding-only")]
pub async fn serve_forwarding_only(
    listener: tokio::net::TcpListener,
    upstream: String,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let client = crate::state::upstream_client().map_err(std::io::Error::other)?;
    let upstream = reqwest::Url::parse(&upstream).map_err(std::io::Error::other)?;
    let app = axum::Router::new().fallback(move |req: Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            let result = async {
                let path = parts.uri.path();
                request_checks(&parts, path, parts.uri.query())?;
                let body = read_body(body, 1 << 20, std::time::Duration::from_secs(30)).await?;
                let target = Upstream {
                    client: &client,
                    route: "forwarding-only",
                    base: &upstream,
                    timeout: std::time::Duration::from_secs(30),
                    forward_headers: &[],
                    errors: UpstreamErrors::Mask,
                    seq: None,
                };
                proxy(&target, &parts, path, parts.uri.query(), body, None).await
            }
            .await;
            result.unwrap_or_else(IntoResponse::into_response)
        }
    });
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::upstream_url;

    /// The parsed base with the request's path and query set gives the URL
    /// that parsing the whole string did before (the base is stored
    /// without a trailing `/`).
    #[test]
    fn the_upstream_url_is_the_base_then_the_request() {
        let cases = [
            ("http://127.0.0.1:8080", "/", None),
            (
                "http://127.0.0.1:8080",
                "/invoices/42",
                Some("limit=5&q=a%20b"),
            ),
            ("http://api.example:9/v1", "/", None),
            ("http://api.example:9/v1", "/x/%41/y", Some("a='b'")),
            (
                "https://api.example/v1/sub%20dir",
                "/it%C3%A9m",
                Some("q=%E2%9C%93"),
            ),
            ("https://api.example/a/b/c", "/", Some("")),
        ];
        for (base, path, query) in cases {
            let mut whole = format!("{base}{path}");
            if let Some(q) = query {
                whole.push('?');
                whole.push_str(q);
            }
            let expected = reqwest::Url::parse(&whole).unwrap();
            let got = upstream_url(&reqwest::Url::parse(base).unwrap(), path, query);
            assert_eq!(
                got.as_str(),
                expected.as_str(),
                "{base} + {path} + {query:?}"
            );
        }
    }

    proptest::proptest! {
        /// The same, for any path and query the gateway's checks let
        /// through.
        #[test]
        fn any_checked_request_gets_the_url_a_whole_parse_gives(
            // Mostly what the checks accept (raw spaces, backslashes, `;` and
            // non-ASCII in a path, or a space or `#` in a query, would be
            // refused nearly every time and starve the run), with the
            // percent-encodings a path may carry.
            path in "(/([a-zA-Z0-9._~!$&'()*+,=:@-]|%20|%C3%A9|%3F|%23|%5B){1,6}){1,4}",
            query in proptest::option::of("[a-zA-Z0-9._~%!$&'()*+,;=:@/?\"<>é-]{0,12}"),
            base in proptest::sample::select(vec![
                "http://127.0.0.1:8080",
                "http://api.example/v1",
                "https://api.example/v1/sub%20dir",
                "http://[::1]:9/a/b",
            ]),
        ) {
            proptest::prop_assume!(crate::routes::check_path(&path).is_ok());
            proptest::prop_assume!(
                query.as_deref().is_none_or(|q| crate::routes::check_query(q).is_ok())
            );
            let mut whole = format!("{base}{path}");
            if let Some(q) = &query {
                whole.push('?');
                whole.push_str(q);
            }
            let expected = reqwest::Url::parse(&whole).unwrap();
            let got = upstream_url(&reqwest::Url::parse(base).unwrap(), &path, query.as_deref());
            proptest::prop_assert_eq!(got.as_str(), expected.as_str());
        }
    }
}
