//! Passkeys: enrollment through a one-time link, sign-in, and approving
//! with an assertion whose challenge commits to the approval
//! ([`super::commitment`]). Every check of a WebAuthn response is
//! webauthn-rs's; nothing here checks a signature by hand.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mandate_core::wire::ApproveRequest;
use mandate_core::{GrantScope, PrincipalName};
use mandate_store::StoredPasskey;
use serde::Deserialize;
use webauthn_rs::prelude::{
    Credential, Passkey, PublicKeyCredential, RegisterPublicKeyCredential, Uuid,
};
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{AuthenticationState, UserVerificationPolicy};

use super::commitment::{Commitment, GrantTerms, challenge_of};
use super::{
    Ceremony, ConsoleError, JsonError, Session, ceremony_expiry, check_origin, console, hashed,
    random_token, signed_in_post, start_session,
};
use crate::state::AppState;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConsoleError> {
    serde_json::from_slice(bytes).map_err(|_| ConsoleError::BadRequest("malformed body".into()))
}

fn stored(p: &StoredPasskey) -> Result<Passkey, ConsoleError> {
    serde_json::from_str(&p.passkey).map_err(|e| {
        tracing::error!(error = %e, "console: a stored passkey is unreadable");
        ConsoleError::Internal
    })
}

/// The user handle WebAuthn stores: derived from the principal's name.
fn user_handle(name: &PrincipalName) -> Uuid {
    let d = super::hashed(name.as_str());
    let mut b = [0u8; 16];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(d.get(i * 2..i * 2 + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    Uuid::from_bytes(b)
}

fn signed_in(cookie: axum::http::HeaderValue) -> Response {
    let mut resp = Json(serde_json::json!({ "redirect": "/console/inbox" })).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollStart {
    token: String,
}

/// `POST /console/enroll/start`: spends the enrollment link (once) and
/// answers the passkey creation options.
pub(crate) async fn enroll_start(
    State(s): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, JsonError> {
    check_origin(&s, &headers)?;
    let c = console(&s)?;
    let req: EnrollStart = body(&bytes)?;
    let now = s.0.clock.now();
    let name =
        s.0.store
            .take_enrollment(&hashed(&req.token), now)
            .await
            .map_err(ConsoleError::from)?
            .ok_or(ConsoleError::EnrollmentInvalid)?;
    let principal =
        s.0.store
            .principal(&name)
            .await
            .map_err(ConsoleError::from)?
            .filter(|p| p.revoked_at.is_none())
            .ok_or(ConsoleError::EnrollmentInvalid)?;
    let existing =
        s.0.store
            .passkeys(&name)
            .await
            .map_err(ConsoleError::from)?
            .iter()
            .map(|p| stored(p).map(|k| k.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
    let (options, state) = c
        .webauthn
        .start_passkey_registration(
            user_handle(&name),
            name.as_str(),
            name.as_str(),
            Some(existing),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "console: cannot start a registration");
            ConsoleError::Internal
        })?;
    let id = random_token(&s)?;
    c.put(
        id.clone(),
        Ceremony::Register {
            principal,
            state: Box::new(state),
            expires: ceremony_expiry(now),
        },
        now,
    )?;
    Ok(Json(serde_json::json!({ "ceremony": id, "options": options })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Finish<C> {
    ceremony: String,
    credential: C,
}

/// `POST /console/enroll/finish`: registers the passkey and signs in.
pub(crate) async fn enroll_finish(
    State(s): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, JsonError> {
    check_origin(&s, &headers)?;
    let c = console(&s)?;
    let req: Finish<RegisterPublicKeyCredential> = body(&bytes)?;
    let now = s.0.clock.now();
    let Some(Ceremony::Register {
        principal,
        state,
        expires,
    }) = c.take(&req.ceremony)?
    else {
        return Err(ConsoleError::ChallengeInvalid.into());
    };
    if expires <= now {
        return Err(ConsoleError::ChallengeInvalid.into());
    }
    let passkey = c
        .webauthn
        .finish_passkey_registration(&req.credential, &state)
        .map_err(|e| {
            tracing::warn!(error = %e, principal = %principal.name, "console: passkey registration refused");
            ConsoleError::PasskeyRefused
        })?;
    let cred_id = b64(passkey.cred_id().as_slice());
    let json = serde_json::to_string(&passkey).map_err(|_| ConsoleError::Internal)?;
    match s
        .0
        .store
        .add_passkey(&StoredPasskey {
            cred_id: cred_id.clone(),
            principal: principal.name.clone(),
            passkey: json,
            created_at: now,
        })
        .await
    {
        Ok(()) => {}
        Err(mandate_store::StoreError::Conflict(_)) => {
            return Err(ConsoleError::PasskeyTaken.into());
        }
        Err(e) => return Err(ConsoleError::from(e).into()),
    }
    s.audit(
        "console.passkey_enrolled",
        serde_json::json!({ "principal": principal.name.as_str(), "passkey": cred_id }),
    )
    .await
    .map_err(ConsoleError::from)?;
    let cookie = start_session(&s, &principal).await?;
    Ok(signed_in(cookie))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInStart {
    principal: String,
}

/// `POST /console/signin/start`: the assertion options for a principal's
/// passkeys.
pub(crate) async fn signin_start(
    State(s): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, JsonError> {
    check_origin(&s, &headers)?;
    let c = console(&s)?;
    let req: SignInStart = body(&bytes)?;
    let unknown = || ConsoleError::UnknownPrincipal(req.principal.clone());
    let name = PrincipalName::try_from(req.principal.trim().to_owned()).map_err(|_| unknown())?;
    let principal =
        s.0.store
            .principal(&name)
            .await
            .map_err(ConsoleError::from)?
            .filter(|p| p.revoked_at.is_none())
            .ok_or_else(unknown)?;
    let keys =
        s.0.store
            .passkeys(&name)
            .await
            .map_err(ConsoleError::from)?
            .iter()
            .map(stored)
            .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(unknown().into());
    }
    let (options, state) = c
        .webauthn
        .start_passkey_authentication(&keys)
        .map_err(|e| {
            tracing::error!(error = %e, "console: cannot start an authentication");
            ConsoleError::Internal
        })?;
    let now = s.0.clock.now();
    let id = random_token(&s)?;
    c.put(
        id.clone(),
        Ceremony::SignIn {
            principal,
            state: Box::new(state),
            expires: ceremony_expiry(now),
        },
        now,
    )?;
    Ok(Json(serde_json::json!({ "ceremony": id, "options": options })).into_response())
}

/// `POST /console/signin/finish`: checks the assertion and signs in.
pub(crate) async fn signin_finish(
    State(s): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, JsonError> {
    check_origin(&s, &headers)?;
    let c = console(&s)?;
    let req: Finish<PublicKeyCredential> = body(&bytes)?;
    let now = s.0.clock.now();
    let Some(Ceremony::SignIn {
        principal,
        state,
        expires,
    }) = c.take(&req.ceremony)?
    else {
        return Err(ConsoleError::ChallengeInvalid.into());
    };
    if expires <= now {
        return Err(ConsoleError::ChallengeInvalid.into());
    }
    let result = c
        .webauthn
        .finish_passkey_authentication(&req.credential, &state)
        .map_err(|e| {
            tracing::warn!(error = %e, principal = %principal.name, "console: sign-in refused");
            ConsoleError::PasskeyRefused
        })?;
    bump_counter(&s, &result).await?;
    let cookie = start_session(&s, &principal).await?;
    Ok(signed_in(cookie))
}

/// Checks an assertion's signature counter against the passkey's stored
/// counter as it is now, then stores the moved counter. The ceremony's
/// own check (webauthn-rs's) is against the counter when the ceremony
/// began, which the genuine authenticator may have moved past since: a
/// cloned one answering an older ceremony shows only here, as a counter
/// at or behind the stored one. A passkey no longer registered (its
/// principal revoked meanwhile) is refused.
async fn bump_counter(
    s: &AppState,
    result: &webauthn_rs::prelude::AuthenticationResult,
) -> Result<(), ConsoleError> {
    let c = console(s)?;
    // One check-and-store at a time, so two finishes cannot both pass
    // against the same stored counter.
    let _one_at_a_time = c.counters.lock().await;
    let id = b64(result.cred_id().as_slice());
    let Some(p) = s.0.store.passkey(&id).await? else {
        return Err(ConsoleError::PasskeyRefused);
    };
    let mut key = stored(&p)?;
    let stored_counter = Credential::from(key.clone()).counter;
    if (result.counter() > 0 || stored_counter > 0) && result.counter() <= stored_counter {
        // A valid signature: whoever made it holds the key. Recorded, so
        // an admin learns of the copy.
        tracing::warn!(
            passkey = %id,
            principal = %p.principal,
            counter = result.counter(),
            stored = stored_counter,
            "console: a passkey's signature counter went back (a cloned authenticator?)"
        );
        s.audit(
            "console.passkey_counter_regressed",
            serde_json::json!({
                "principal": p.principal.as_str(),
                "passkey": id,
                "counter": result.counter(),
                "stored_counter": stored_counter,
            }),
        )
        .await?;
        return Err(ConsoleError::PasskeyRefused);
    }
    if key.update_credential(result) == Some(true) {
        let json = serde_json::to_string(&key).map_err(|_| ConsoleError::Internal)?;
        s.0.store.update_passkey(&id, &json).await?;
    }
    Ok(())
}

/// A WebAuthn core for the committed-challenge assertions, configured as
/// the console's relying party. webauthn-rs's safe wrapper draws its own
/// random challenges; an approval's challenge is derived from its terms,
/// so it is set in the authentication state the core then verifies
/// against (the state is the crate's own serialisable type).
fn core_for(rp_id: &str, origin: &str) -> Result<WebauthnCore, ConsoleError> {
    let origin = webauthn_rs::prelude::Url::parse(origin).map_err(|_| ConsoleError::Internal)?;
    Ok(WebauthnCore::new_unsafe_experts_only(
        "Mandate",
        rp_id,
        vec![origin],
        std::time::Duration::from_secs(super::CEREMONY_TTL_SECS),
        None,
        None,
    ))
}

/// The options and state of an assertion with the given challenge, by
/// `creds`.
fn committed_assertion(
    core: &WebauthnCore,
    creds: Vec<Credential>,
    challenge: &[u8; 32],
) -> Result<(serde_json::Value, AuthenticationState), ConsoleError> {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "console: cannot build an approval assertion");
        ConsoleError::Internal
    };
    let builder = core
        .new_challenge_authenticate_builder(creds, Some(UserVerificationPolicy::Required))
        .map_err(|e| internal(&e))?;
    let (options, state) = core
        .generate_challenge_authenticate(builder)
        .map_err(|e| internal(&e))?;
    let challenge = b64(challenge);
    let mut state = serde_json::to_value(&state).map_err(|e| internal(&e))?;
    let mut options = serde_json::to_value(&options).map_err(|e| internal(&e))?;
    *state
        .get_mut("challenge")
        .ok_or_else(|| internal(&"no challenge in the state"))? = challenge.clone().into();
    *options
        .get_mut("publicKey")
        .and_then(|p| p.get_mut("challenge"))
        .ok_or_else(|| internal(&"no challenge in the options"))? = challenge.into();
    let state: AuthenticationState = serde_json::from_value(state).map_err(|e| internal(&e))?;
    Ok((options, state))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChallengeReq {
    scope: String,
    /// For a `pattern` grant: what it covers.
    #[serde(default)]
    resource_prefix: Option<String>,
}

fn scope_of(s: &str) -> Result<GrantScope, ConsoleError> {
    match s {
        "once" => Ok(GrantScope::Once),
        "mission" => Ok(GrantScope::Mission),
        "pattern" => Ok(GrantScope::Pattern),
        _ => Err(ConsoleError::BadRequest(
            "scope must be `once`, `mission` or `pattern`".into(),
        )),
    }
}

/// Records a refused console attempt to decide approval request `id`
/// (who, which request, why), like the API's refusals
/// (`approval.refused`), then answers the refusal.
pub(crate) async fn refused(
    s: &AppState,
    attempt: &'static str,
    id: &str,
    session: Option<&Session>,
    e: ConsoleError,
) -> ConsoleError {
    let request = match id.parse::<mandate_core::ApprovalId>() {
        Ok(_) => s.0.store.approval(id).await.ok().flatten(),
        Err(_) => None,
    };
    // Attempts on requests that do not exist are not recorded (they
    // cannot be a way to fill the log).
    let Some(r) = &request else {
        return e;
    };
    let by = match session {
        Some(x) => serde_json::Value::from(x.principal.name.as_str()),
        // Unidentified: recorded once for this request and attempt.
        None if s.first_anonymous_refusal(&r.id, attempt) => serde_json::Value::Null,
        None => return e,
    };
    let mut body = crate::api::approval_subject(r);
    if let Some(o) = body.as_object_mut() {
        o.insert("attempt".into(), attempt.into());
        o.insert("via".into(), "console".into());
        o.insert("code".into(), e.code().into());
        o.insert("detail".into(), e.to_string().into());
        o.insert("by".into(), by);
    }
    tracing::warn!(approval = %id, attempt, code = e.code(), "console approval attempt refused");
    if let Err(p) = s.audit("approval.refused", body).await {
        return p.into();
    }
    e
}

/// `POST /console/approvals/{id}/challenge` (`{"scope": "once"|"mission"}`):
/// the assertion options whose challenge commits to this approval, this
/// request digest, this grant and a fresh nonce, for the principal's own
/// passkeys.
pub(crate) async fn approve_challenge(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, JsonError> {
    let session = match signed_in_post(&s, &headers, None).await {
        Ok(x) => x,
        Err((who, e)) => return Err(refused(&s, "approve", &id, who.as_ref(), e).await.into()),
    };
    let out = async {
        let c = console(&s)?;
        let req: ChallengeReq = body(&bytes)?;
        let scope = scope_of(&req.scope)?;
        let resource_prefix = match scope {
            GrantScope::Pattern => req.resource_prefix.clone(),
            _ => None,
        };
        // The same checks as the API's: visible, decidable by this
        // principal, pending; and the grant valid for the request.
        let r = crate::api::decidable_by(&s, &session.principal, &id).await?;
        crate::api::check_grant(
            &s,
            &r,
            &ApproveRequest {
                scope: Some(scope),
                resource_prefix: resource_prefix.clone(),
                ..Default::default()
            },
        )?;
        let creds =
            s.0.store
                .passkeys(&session.principal.name)
                .await?
                .iter()
                .map(|p| stored(p).map(Credential::from))
                .collect::<Result<Vec<_>, _>>()?;
        if creds.is_empty() {
            return Err(ConsoleError::PasskeyRefused);
        }
        let commitment = Commitment {
            approval: r.id.clone(),
            request_digest: r.request_digest.clone(),
            grant: GrantTerms {
                scope: req.scope.clone(),
                resource_prefix,
            },
            nonce: random_token(&s)?,
            rp_id: c.rp_id.clone(),
        };
        let challenge = commitment.challenge().map_err(|_| ConsoleError::Internal)?;
        let (options, state) =
            committed_assertion(&core_for(&c.rp_id, &c.origin)?, creds, &challenge)?;
        let now = s.0.clock.now();
        c.put(
            commitment.nonce.clone(),
            Ceremony::Approve {
                principal: session.principal.name.to_string(),
                approval: r.id.clone(),
                commitment: commitment.clone(),
                state: Box::new(state),
                expires: ceremony_expiry(now),
            },
            now,
        )?;
        Ok(Json(serde_json::json!({
            "ceremony": commitment.nonce,
            "commitment": commitment,
            "options": options,
        }))
        .into_response())
    }
    .await;
    match out {
        Ok(r) => Ok(r),
        Err(e) => Err(refused(&s, "approve", &id, Some(&session), e).await.into()),
    }
}

/// `POST /console/approvals/{id}/approve` (`{"ceremony": …, "credential": …}`):
/// verifies the assertion against the challenge derived from the
/// committed terms, with this principal's passkey, then approves through
/// the API's own path, the assertion in the audit record. Refused and
/// recorded: an unknown, used or expired challenge (a replay), one made
/// for another approval or principal, another principal's passkey.
pub(crate) async fn approve(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, JsonError> {
    let session = match signed_in_post(&s, &headers, None).await {
        Ok(x) => x,
        Err((who, e)) => return Err(refused(&s, "approve", &id, who.as_ref(), e).await.into()),
    };
    let out = async {
        let c = console(&s)?;
        let raw: serde_json::Value = body(&bytes)?;
        let req: Finish<PublicKeyCredential> = body(&bytes)?;
        let now = s.0.clock.now();
        let Some(Ceremony::Approve {
            principal,
            approval,
            commitment,
            state,
            expires,
        }) = c.take(&req.ceremony)?
        else {
            return Err(ConsoleError::ChallengeInvalid);
        };
        if expires <= now {
            return Err(ConsoleError::ChallengeInvalid);
        }
        if approval != id {
            return Err(ConsoleError::WrongApproval);
        }
        if principal != session.principal.name.as_str() {
            return Err(ConsoleError::WrongPrincipal);
        }
        let core = core_for(&c.rp_id, &c.origin)?;
        let result = core.authenticate_credential(&req.credential, &state).map_err(|e| {
            tracing::warn!(error = %e, principal = %principal, "console: approval assertion refused");
            ConsoleError::PasskeyRefused
        })?;
        bump_counter(&s, &result).await?;
        let cred_id = b64(result.cred_id().as_slice());
        let response = raw
            .get("credential")
            .and_then(|c| c.get("response"))
            .cloned()
            .unwrap_or_default();
        let canonical = commitment.canonical().map_err(|_| ConsoleError::Internal)?;
        let mut extra = serde_json::Map::new();
        extra.insert("via".into(), "console".into());
        extra.insert(
            "passkey".into(),
            serde_json::json!({
                "credential_id": cred_id,
                "authenticator_data": response.get("authenticatorData"),
                "client_data_json": response.get("clientDataJSON"),
                "signature": response.get("signature"),
                "user_handle": response.get("userHandle"),
                "committed": canonical,
                "rp_id": c.rp_id,
                "origin": c.origin,
            }),
        );
        let req = ApproveRequest {
            scope: Some(scope_of(&commitment.grant.scope)?),
            resource_prefix: commitment.grant.resource_prefix.clone(),
            ..Default::default()
        };
        let v = crate::api::approve_by(&s, &session.principal, &id, req, extra).await?;
        Ok(Json(serde_json::json!({ "id": v.id, "status": v.status, "passkey": cred_id })).into_response())
    }
    .await;
    match out {
        Ok(r) => Ok(r),
        Err(e) => Err(refused(&s, "approve", &id, Some(&session), e).await.into()),
    }
}

/// Re-verifies a console approval's stored assertion (for `mandate audit
/// explain`): the committed JSON names this approval and request digest,
/// its hash is the challenge the authenticator signed, and the signature
/// verifies with the passkey registered under the credential id.
/// Returns the credential id, or why it does not verify.
pub(crate) async fn verify_stored_assertion(
    s: &AppState,
    body: &serde_json::Value,
) -> Result<String, String> {
    let p = body.get("passkey").ok_or("no passkey assertion")?;
    let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let cred_id = text("credential_id").ok_or("no credential id")?;
    let committed = text("committed").ok_or("no committed terms")?;
    let c: Commitment =
        serde_json::from_str(&committed).map_err(|_| "the committed terms are unreadable")?;
    if Some(c.approval.as_str()) != body.get("approval").and_then(|v| v.as_str()) {
        return Err("the committed terms name another approval request".into());
    }
    if Some(c.request_digest.as_str()) != body.get("request_digest").and_then(|v| v.as_str()) {
        return Err("the committed terms name another request digest".into());
    }
    if Some(c.grant.scope.as_str()) != body.get("scope").and_then(|v| v.as_str())
        || c.grant.resource_prefix.as_deref()
            != body.get("resource_prefix").and_then(|v| v.as_str())
    {
        return Err("the committed grant is not the one made".into());
    }
    if c.canonical().ok().as_deref() != Some(committed.as_str()) {
        return Err("the committed terms are not in canonical form".into());
    }
    let stored_key =
        s.0.store
            .passkey(&cred_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the passkey is no longer registered")?;
    if Some(stored_key.principal.as_str()) != body.get("by").and_then(|v| v.as_str()) {
        return Err("the passkey belongs to another principal".into());
    }
    let mut cred: Credential = stored(&stored_key)
        .map_err(|_| "the registered passkey is unreadable")?
        .into();
    // The counter has moved on since; the signature is what is checked.
    cred.counter = 0;
    let origin = text("origin").ok_or("no origin")?;
    let core = core_for(&c.rp_id, &origin).map_err(|_| "bad origin")?;
    let challenge = challenge_of(committed.as_bytes());
    let (_, state) = committed_assertion(&core, vec![cred], &challenge)
        .map_err(|_| "cannot rebuild the assertion")?;
    let credential: PublicKeyCredential = serde_json::from_value(serde_json::json!({
        "id": cred_id,
        "rawId": cred_id,
        "type": "public-key",
        "extensions": {},
        "response": {
            "authenticatorData": p.get("authenticator_data"),
            "clientDataJSON": p.get("client_data_json"),
            "signature": p.get("signature"),
            "userHandle": p.get("user_handle"),
        },
    }))
    .map_err(|_| "the stored assertion is unreadable")?;
    core.authenticate_credential(&credential, &state)
        .map_err(|e| format!("the signature does not verify: {e}"))?;
    Ok(cred_id)
}
