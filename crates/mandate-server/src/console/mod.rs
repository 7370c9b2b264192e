//! The console (ADR 0032, docs/console.md): pages for people, served by
//! `mandate serve` under `/console`. Server-rendered HTML (askama
//! templates, checked when the server is built), one small script for
//! WebAuthn, passkey sign-in, and an approvals inbox where approving is a
//! passkey signature over the approval's terms ([`commitment`]).
//!
//! Security model, in one place:
//! - A session is a random id in an `HttpOnly; SameSite=Strict;
//!   Path=/console` cookie (`Secure` and the `__Host-` prefix over
//!   https), stored as its SHA-256, ending 12 h after sign-in or 30 min
//!   after its last use, whichever first.
//! - Every state-changing request must come from the console's own
//!   origin (`Origin`) and, once signed in, carry the session's CSRF token
//!   (`x-mandate-csrf` header or `csrf` form field): else 403
//!   `console_origin_refused` / `console_csrf_refused`.
//! - Every response carries a strict Content-Security-Policy: no inline
//!   script or style, nothing from elsewhere, no framing.
//! - API tokens are never accepted here, and sessions never on `/v1`.

mod agents;
mod audit;
pub(crate) mod commitment;
mod missions;
mod pages;
mod passkeys;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use mandate_core::UnixTime;
use mandate_store::Principal;
use sha2::{Digest as _, Sha256};
use webauthn_rs::prelude::{PasskeyAuthentication, PasskeyRegistration, Url};

use crate::state::AppState;

pub(crate) use passkeys::verify_stored_assertion;

/// How long after sign-in a session ends, whatever its use.
pub(crate) const SESSION_ABSOLUTE_SECS: u64 = 12 * 3_600;
/// How long an unused session lasts.
pub(crate) const SESSION_IDLE_SECS: u64 = 30 * 60;
/// How long an enrollment link is valid.
pub(crate) const ENROLLMENT_TTL_SECS: u64 = 15 * 60;
/// How long a passkey ceremony (its challenge) may take.
const CEREMONY_TTL_SECS: u64 = 120;
/// Most ceremonies under way at once of each kind: those anyone may start
/// (sign-in, enrollment) and approvals, which only a signed-in person
/// starts, so that a flood of the first cannot stop approvals (each is a
/// few hundred bytes).
const MAX_CEREMONIES: usize = 10_000;
/// Most approval ceremonies under way at once for one principal.
const MAX_APPROVALS_PER_PRINCIPAL: usize = 64;

/// The policy on every console response.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `[console]` in `mandate.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The WebAuthn relying party id: the console's host name (never an
    /// IP address).
    pub rp_id: Option<String>,
    /// The console's origin as browsers reach it (`https://host[:port]`).
    pub origin: Option<String>,
}

/// A passkey ceremony under way: its state, whose it is, until when.
pub(crate) enum Ceremony {
    Register {
        principal: Principal,
        state: Box<PasskeyRegistration>,
        expires: UnixTime,
    },
    SignIn {
        principal: Principal,
        state: Box<PasskeyAuthentication>,
        expires: UnixTime,
    },
    Approve {
        principal: String,
        approval: String,
        commitment: commitment::Commitment,
        state: Box<webauthn_rs::prelude::AuthenticationState>,
        expires: UnixTime,
    },
}

/// The console's relying party and the ceremonies under way.
pub(crate) struct Console {
    pub rp_id: String,
    pub origin: String,
    /// Served over https: cookies get `Secure` and the `__Host-` prefix.
    pub secure: bool,
    pub webauthn: webauthn_rs::Webauthn,
    ceremonies: Mutex<HashMap<String, Ceremony>>,
    /// The audit chain's last verification, shown on the audit page; the
    /// lock also makes a second verification wait for the first.
    pub(crate) chain: tokio::sync::Mutex<Option<audit::ChainStatus>>,
    /// Held while a passkey's signature counter is checked and stored.
    pub counters: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("rp_id", &self.rp_id)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The relying party id and origin: as configured, else from the public
/// URL, else `localhost` on the listening port (WebAuthn refuses IP
/// addresses as relying party ids, and `http://localhost` is a secure
/// context).
///
/// `public_url` is the issuer URL: the configured public URL, else
/// `http://{the address the server listens on}`.
pub(crate) fn relying_party(c: &ConsoleConfig, public_url: &str) -> Result<(String, Url), String> {
    let origin = match &c.origin {
        Some(o) => o.trim_end_matches('/').to_owned(),
        None => {
            let u = Url::parse(public_url).map_err(|e| format!("public URL: {e}"))?;
            u.origin().ascii_serialization()
        }
    };
    let origin = Url::parse(&origin).map_err(|e| format!("console origin `{origin}`: {e}"))?;
    let host = origin
        .host_str()
        .ok_or_else(|| "the console origin has no host".to_owned())?
        .to_owned();
    let rp_id = match &c.rp_id {
        Some(r) => r.clone(),
        None if host.parse::<std::net::IpAddr>().is_ok()
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok() =>
        {
            if c.origin.is_some() {
                return Err(format!(
                    "the console origin's host `{host}` is an IP address, which WebAuthn refuses: set `[console] origin` to a host name"
                ));
            }
            // The public URL names an IP address: the console is reached
            // as localhost on its port.
            let o = format!(
                "http://localhost:{}",
                origin.port_or_known_default().unwrap_or(80)
            );
            return Ok((
                "localhost".into(),
                Url::parse(&o).map_err(|e| e.to_string())?,
            ));
        }
        None => host.clone(),
    };
    if rp_id.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "`[console] rp_id` `{rp_id}` is an IP address, which WebAuthn refuses"
        ));
    }
    if origin.scheme() != "https" && host != "localhost" {
        return Err(format!(
            "the console origin `{origin}` must be https (only http://localhost is a secure context)"
        ));
    }
    Ok((rp_id, origin))
}

impl Console {
    pub(crate) fn new(c: &ConsoleConfig, public_url: &str) -> Result<Self, String> {
        let (rp_id, origin) = relying_party(c, public_url)?;
        let webauthn = webauthn_rs::WebauthnBuilder::new(&rp_id, &origin)
            .map_err(|e| format!("console relying party: {e}"))?
            .rp_name("Mandate")
            .build()
            .map_err(|e| format!("console relying party: {e}"))?;
        Ok(Self {
            secure: origin.scheme() == "https",
            origin: origin.origin().ascii_serialization(),
            rp_id,
            webauthn,
            ceremonies: Mutex::new(HashMap::new()),
            chain: tokio::sync::Mutex::new(None),
            counters: tokio::sync::Mutex::new(()),
        })
    }

    /// The session cookie's name.
    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-mandate_console"
        } else {
            "mandate_console"
        }
    }

    /// Keeps a ceremony under `key` (dropping expired ones first).
    pub(crate) fn put(&self, key: String, c: Ceremony, now: UnixTime) -> Result<(), ConsoleError> {
        let mut m = self.ceremonies.lock().map_err(|_| ConsoleError::Internal)?;
        m.retain(|_, c| c.expires() > now);
        let approver = c.approver();
        let same_kind = m
            .values()
            .filter(|x| x.approver().is_some() == approver.is_some());
        if same_kind.count() >= MAX_CEREMONIES {
            return Err(ConsoleError::Busy);
        }
        if approver.is_some()
            && m.values().filter(|x| x.approver() == approver).count()
                >= MAX_APPROVALS_PER_PRINCIPAL
        {
            return Err(ConsoleError::Busy);
        }
        m.insert(key, c);
        Ok(())
    }

    /// Takes a ceremony (once: it is gone afterwards).
    pub(crate) fn take(&self, key: &str) -> Result<Option<Ceremony>, ConsoleError> {
        Ok(self
            .ceremonies
            .lock()
            .map_err(|_| ConsoleError::Internal)?
            .remove(key))
    }
}

impl Ceremony {
    /// Whose approval ceremony this is (`None`: sign-in or enrollment,
    /// which anyone may start).
    fn approver(&self) -> Option<&str> {
        match self {
            Self::Approve { principal, .. } => Some(principal),
            Self::Register { .. } | Self::SignIn { .. } => None,
        }
    }

    fn expires(&self) -> UnixTime {
        match self {
            Self::Register { expires, .. }
            | Self::SignIn { expires, .. }
            | Self::Approve { expires, .. } => *expires,
        }
    }
}

pub(crate) fn ceremony_expiry(now: UnixTime) -> UnixTime {
    now.plus(CEREMONY_TTL_SECS)
}

/// Why the console refused: each a stable code, rendered as a page with
/// `[data-code]` (or JSON for the page's script).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error("sign in first")]
    SignInRequired,
    /// Carries the console's origin, so the refusal says where to go.
    #[error(
        "this request did not come from the console's own origin; open the console at {0}/console"
    )]
    OriginRefused(String),
    #[error("this request does not carry the session's CSRF token")]
    CsrfRefused,
    #[error("this enrollment link is unknown, used or expired; ask an admin for a new one")]
    EnrollmentInvalid,
    #[error("no principal `{0}` with a passkey")]
    UnknownPrincipal(String),
    #[error("the passkey could not be verified")]
    PasskeyRefused,
    #[error("this passkey is registered already")]
    PasskeyTaken,
    #[error("this challenge is unknown, used or expired: start again")]
    ChallengeInvalid,
    #[error("this assertion was made for another approval request")]
    WrongApproval,
    #[error("this assertion was made for another principal")]
    WrongPrincipal,
    #[error("no such approval request")]
    NotFound,
    #[error("the request is not valid: {0}")]
    BadRequest(String),
    #[error("{2}")]
    Api(u16, &'static str, String),
    #[error("too many passkey ceremonies under way; try again shortly")]
    Busy,
    #[error("the console is not available: {0}")]
    Unavailable(String),
    #[error("internal error; see the server log")]
    Internal,
}

impl ConsoleError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::SignInRequired => "console_signin_required",
            Self::OriginRefused(_) => "console_origin_refused",
            Self::CsrfRefused => "console_csrf_refused",
            Self::EnrollmentInvalid => "console_enrollment_invalid",
            Self::UnknownPrincipal(_) => "console_unknown_principal",
            Self::PasskeyRefused => "console_passkey_refused",
            Self::PasskeyTaken => "console_passkey_taken",
            Self::ChallengeInvalid => "console_challenge_invalid",
            Self::WrongApproval => "console_assertion_wrong_approval",
            Self::WrongPrincipal => "console_assertion_wrong_principal",
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "invalid_request",
            Self::Api(_, code, _) => code,
            Self::Busy => "console_busy",
            Self::Unavailable(_) => "console_unavailable",
            Self::Internal => "internal",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::SignInRequired => StatusCode::UNAUTHORIZED,
            Self::OriginRefused(_)
            | Self::CsrfRefused
            | Self::EnrollmentInvalid
            | Self::PasskeyRefused
            | Self::ChallengeInvalid
            | Self::WrongApproval
            | Self::WrongPrincipal => StatusCode::FORBIDDEN,
            Self::UnknownPrincipal(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PasskeyTaken => StatusCode::CONFLICT,
            Self::Api(s, ..) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Busy | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<mandate_store::StoreError> for ConsoleError {
    fn from(e: mandate_store::StoreError) -> Self {
        tracing::error!(error = %e, "console: store error");
        Self::Internal
    }
}

impl From<crate::problem::Problem> for ConsoleError {
    fn from(p: crate::problem::Problem) -> Self {
        Self::Api(p.status, p.code, p.detail)
    }
}

/// A refusal answered as JSON, for the page's script (which shows it in
/// its `[data-code]` element).
pub(crate) struct JsonError(pub ConsoleError);

impl From<ConsoleError> for JsonError {
    fn from(e: ConsoleError) -> Self {
        Self(e)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        (
            self.0.status(),
            axum::Json(serde_json::json!({
                "code": self.0.code(),
                "detail": self.0.to_string(),
            })),
        )
            .into_response()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        pages::error_page(&self)
    }
}

/// A signed-in person.
#[derive(Debug)]
pub(crate) struct Session {
    pub principal: Principal,
    pub hash: String,
    pub csrf: String,
}

impl Session {
    /// Whether the signed-in principal has the admin role (pages show
    /// admins the links only they may follow).
    pub(crate) fn is_admin(&self) -> bool {
        self.principal.role == mandate_core::Role::Admin
    }
}

pub(crate) fn console(s: &AppState) -> Result<&Console, ConsoleError> {
    match &s.0.console {
        Ok(c) => Ok(c),
        Err(e) => Err(ConsoleError::Unavailable(e.clone())),
    }
}

/// Hex SHA-256: how secrets are stored.
pub(crate) fn hashed(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 32 random bytes, base64url.
pub(crate) fn random_token(s: &AppState) -> Result<String, ConsoleError> {
    let mut b = [0u8; 32];
    s.0.rng.fill(&mut b).map_err(|_| ConsoleError::Internal)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signed-in session the request's cookie names, if it is live (not
/// past its absolute or idle limit; its principal not revoked). A live
/// session is marked used.
pub(crate) async fn session(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, ConsoleError> {
    let c = console(s)?;
    let Some(id) = cookie(headers, c.cookie_name()) else {
        return Ok(None);
    };
    let hash = hashed(id);
    let Some(row) = s.0.store.console_session(&hash).await? else {
        return Ok(None);
    };
    let now = s.0.clock.now();
    if row.created_at.plus(SESSION_ABSOLUTE_SECS) <= now
        || row.last_seen.plus(SESSION_IDLE_SECS) <= now
    {
        s.0.store.delete_console_session(&hash).await?;
        return Ok(None);
    }
    let Some(principal) = s.0.store.principal(&row.principal).await? else {
        return Ok(None);
    };
    if principal.revoked_at.is_some() {
        return Ok(None);
    }
    s.0.store.touch_console_session(&hash, now).await?;
    Ok(Some(Session {
        principal,
        hash,
        csrf: row.csrf,
    }))
}

/// The signed-in principal's session; without one, the page sends the
/// browser to sign in.
pub(crate) async fn signed_in(s: &AppState, headers: &HeaderMap) -> Result<Session, ConsoleError> {
    session(s, headers)
        .await?
        .ok_or(ConsoleError::SignInRequired)
}

/// The signed-in admin's session; anyone else gets what the API gives
/// them: 403.
pub(crate) async fn signed_in_admin(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Session, ConsoleError> {
    let session = signed_in(s, headers).await?;
    crate::api::require_admin(&session.principal)?;
    Ok(session)
}

/// A state-changing request must come from the console's own origin.
pub(crate) fn check_origin(s: &AppState, headers: &HeaderMap) -> Result<(), ConsoleError> {
    let c = console(s)?;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin == Some(c.origin.as_str()) {
        Ok(())
    } else {
        Err(ConsoleError::OriginRefused(c.origin.clone()))
    }
}

/// A state-changing request of a session: from the console's origin and
/// carrying the session's CSRF token (header, else `form_token`).
pub(crate) async fn signed_in_post(
    s: &AppState,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> Result<Session, (Option<Session>, ConsoleError)> {
    let session = match session(s, headers).await {
        Ok(Some(x)) => x,
        Ok(None) => return Err((None, ConsoleError::SignInRequired)),
        Err(e) => return Err((None, e)),
    };
    if let Err(e) = check_origin(s, headers) {
        return Err((Some(session), e));
    }
    let presented = headers
        .get("x-mandate-csrf")
        .and_then(|v| v.to_str().ok())
        .or(form_token);
    // Compared as hashes, so the comparison's time says nothing of the
    // token.
    match presented {
        Some(p) if hashed(p) == hashed(&session.csrf) => Ok(session),
        _ => Err((Some(session), ConsoleError::CsrfRefused)),
    }
}

/// Starts a session for `principal`: its cookie, on the response.
pub(crate) async fn start_session(
    s: &AppState,
    principal: &Principal,
) -> Result<HeaderValue, ConsoleError> {
    let c = console(s)?;
    let id = random_token(s)?;
    let csrf = random_token(s)?;
    let now = s.0.clock.now();
    s.0.store
        .add_console_session(
            &hashed(&id),
            &mandate_store::ConsoleSession {
                principal: principal.name.clone(),
                csrf,
                created_at: now,
                last_seen: now,
            },
        )
        .await?;
    // Recorded before the cookie is handed out: no record, no session.
    s.audit(
        "console.signed_in",
        serde_json::json!({ "principal": principal.name.as_str() }),
    )
    .await?;
    let secure = if c.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={SESSION_ABSOLUTE_SECS}{secure}",
        c.cookie_name()
    ))
    .map_err(|_| ConsoleError::Internal)
}

/// Deletes ended sessions and expired enrollment links every few minutes
/// (a session past its limits is refused when presented regardless).
pub(crate) fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            every.tick().await;
            let now = state.0.clock.now();
            let before = |secs: u64| UnixTime(now.0.saturating_sub(secs));
            if let Err(e) = state
                .0
                .store
                .sweep_console(
                    before(SESSION_ABSOLUTE_SECS),
                    before(SESSION_IDLE_SECS),
                    now,
                )
                .await
            {
                tracing::warn!(error = %e, "cannot sweep ended console sessions");
            }
        }
    });
}

/// Adds the console's security headers to every response.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with a
    // form's POST (sign-out), which the Origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The console's routes (HTML pages and the endpoints their script
/// calls); outside the OpenAPI document, like `/gw` and `/mcp`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::root))
        .route("/console/", get(pages::root))
        .route("/console/signin", get(pages::signin))
        .route("/console/signin/start", post(passkeys::signin_start))
        .route("/console/signin/finish", post(passkeys::signin_finish))
        .route("/console/enroll/{token}", get(pages::enroll))
        .route("/console/enroll/start", post(passkeys::enroll_start))
        .route("/console/enroll/finish", post(passkeys::enroll_finish))
        .route("/console/inbox", get(pages::inbox))
        .route("/console/events", get(pages::events))
        .route(
            "/console/approvals/{id}/challenge",
            post(passkeys::approve_challenge),
        )
        .route("/console/approvals/{id}/approve", post(passkeys::approve))
        .route("/console/approvals/{id}/deny", post(pages::deny))
        .route("/console/missions", get(missions::list))
        .route("/console/missions/{id}", get(missions::show))
        .route(
            "/console/missions/{id}/revoke",
            get(missions::confirm_revoke).post(missions::revoke),
        )
        .route(
            "/console/missions/{id}/end",
            get(missions::confirm_end).post(missions::end),
        )
        .route("/console/agents", get(agents::list))
        .route(
            "/console/agents/{name}/revoke",
            get(agents::confirm_revoke_agent).post(agents::revoke_agent),
        )
        .route("/console/principals", get(agents::principals))
        .route(
            "/console/principals/{name}/revoke",
            get(agents::confirm_revoke_principal).post(agents::revoke_principal),
        )
        .route("/console/audit", get(audit::list))
        .route("/console/audit/{seq}", get(audit::show))
        .route("/console/signout", post(pages::signout))
        .route("/console/static/console.js", get(pages::script))
        .route("/console/static/console.css", get(pages::stylesheet))
        .route("/console/static/icon.svg", get(pages::icon))
        .route(
            "/console/{*rest}",
            axum::routing::any(|| async { ConsoleError::NotFound }),
        )
        .layer(axum::middleware::map_response(security_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(c: &ConsoleConfig, public: &str) -> Result<(String, String), String> {
        relying_party(c, public).map(|(id, o)| (id, o.origin().ascii_serialization()))
    }

    #[test]
    fn a_loopback_server_is_localhost_on_its_port() {
        let none = ConsoleConfig::default();
        assert_eq!(
            rp(&none, "http://127.0.0.1:7878").unwrap(),
            ("localhost".into(), "http://localhost:7878".into())
        );
        assert_eq!(
            rp(&none, "http://[::1]:7000").unwrap(),
            ("localhost".into(), "http://localhost:7000".into())
        );
    }

    #[test]
    fn a_public_url_names_the_relying_party() {
        let none = ConsoleConfig::default();
        assert_eq!(
            rp(&none, "https://mandate.example.com/base").unwrap(),
            (
                "mandate.example.com".into(),
                "https://mandate.example.com".into()
            )
        );
        // Only http://localhost is a secure context.
        assert!(rp(&none, "http://mandate.example.com").is_err());
    }

    #[test]
    fn the_configured_relying_party_wins_and_is_never_an_ip_address() {
        let c = ConsoleConfig {
            rp_id: Some("example.com".into()),
            origin: Some("https://console.example.com".into()),
        };
        assert_eq!(
            rp(&c, "http://127.0.0.1:7878").unwrap(),
            ("example.com".into(), "https://console.example.com".into())
        );
        let ip = ConsoleConfig {
            rp_id: None,
            origin: Some("https://10.0.0.1".into()),
        };
        assert!(
            rp(&ip, "http://127.0.0.1:7878")
                .unwrap_err()
                .contains("IP address")
        );
        let ip_id = ConsoleConfig {
            rp_id: Some("10.0.0.1".into()),
            origin: Some("https://console.example.com".into()),
        };
        assert!(rp(&ip_id, "http://127.0.0.1:7878").is_err());
    }
}
