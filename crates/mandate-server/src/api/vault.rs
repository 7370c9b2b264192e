//! `/v1/vault…`: admins store, rotate and delete principals' secrets for
//! legacy systems. The secret goes in once and never comes back out: no
//! response, log line or audit record carries it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_core::wire::VaultView;
use mandate_core::{PrincipalName, VaultSecret};
use mandate_store::VaultRecord;

use super::extract::{ApiJson, ApiPath, Caller};
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use crate::problem::Problem;
use crate::routes::UpstreamAuth;
use crate::state::AppState;

fn view(r: &VaultRecord) -> VaultView {
    VaultView {
        route: r.route.clone(),
        principal: r.principal.to_string(),
        kind: r.kind.clone(),
        version: r.version,
        updated_at: r.updated_at.0,
        updated_by: r.updated_by.clone(),
    }
}

/// `PUT /v1/vault/{route}/{principal}`: stores or rotates a secret.
#[utoipa::path(
    put,
    path = "/v1/vault/{route}/{principal}",
    operation_id = "put_vault_secret",
    tag = "vault",
    security(("api_token" = [])),
    params(
        ("route" = String, Path, description = "A gateway route with `auth = \"vault\"`."),
        ("principal" = PrincipalName, Path, description = "Whose secret."),
    ),
    request_body = VaultSecret,
    responses(
        (status = 200, description = "Stored; its metadata (never the secret).", body = VaultView),
        Always, Unauthorized, Forbidden, NotFound, Conflict, JsonBody,
    ),
)]
pub(super) async fn put(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((route, principal)): ApiPath<(String, String)>,
    ApiJson(secret): ApiJson<VaultSecret>,
) -> Result<Json<VaultView>, Problem> {
    caller.require_admin()?;
    let r = s
        .gateways()
        .routes
        .get(&route)
        .cloned()
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "unknown_route", "no such route"))?;
    if r.config.auth != UpstreamAuth::Vault {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("route `{route}` does not use `auth = \"vault\"`"),
        ));
    }
    let principal = PrincipalName::try_from(principal)?;
    if s.0.store.principal(&principal).await?.is_none() {
        return Err(Problem::not_found(format!(
            "principal `{principal}` not found"
        )));
    }
    secret
        .validate()
        .map_err(|m| Problem::bad_request("invalid_request", m))?;
    let current = s.0.store.vault_secret(&principal, &route).await?;
    let expected = current.as_ref().map(|c| c.version);
    let version = expected.map_or(1, |v| v + 1);
    let sealed =
        s.0.vault
            .seal(
                &secret,
                principal.as_str(),
                &route,
                version,
                s.0.rng.as_ref(),
            )
            .map_err(|e| {
                tracing::error!(error = %e, "cannot seal a vault secret");
                Problem::internal()
            })?;
    let rec = VaultRecord {
        principal: principal.clone(),
        route: route.clone(),
        kind: secret.kind().to_owned(),
        version,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        updated_at: s.0.clock.now(),
        updated_by: caller.principal.name.to_string(),
    };
    s.0.store.put_vault_secret(&rec, expected).await?;
    s.audit(
        if expected.is_some() {
            "vault.rotated"
        } else {
            "vault.stored"
        },
        serde_json::json!({
            "route": &route,
            "principal": principal.as_str(),
            "kind": secret.kind(),
            "version": version,
            "by": caller.principal.name.as_str(),
        }),
    )
    .await?;
    tracing::info!(route = %route, principal = %principal, version, "vault secret stored");
    Ok(Json(view(&rec)))
}

/// `GET /v1/vault`: what is stored (metadata only).
#[utoipa::path(
    get,
    path = "/v1/vault",
    operation_id = "list_vault_secrets",
    tag = "vault",
    security(("api_token" = [])),
    responses((status = 200, description = "The secrets' metadata.", body = Vec<VaultView>), Always, Unauthorized, Forbidden),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<VaultView>>, Problem> {
    caller.require_admin()?;
    Ok(Json(
        s.0.store.vault_secrets().await?.iter().map(view).collect(),
    ))
}

/// `DELETE /v1/vault/{route}/{principal}`.
#[utoipa::path(
    delete,
    path = "/v1/vault/{route}/{principal}",
    operation_id = "delete_vault_secret",
    tag = "vault",
    security(("api_token" = [])),
    params(
        ("route" = String, Path, description = "The gateway route."),
        ("principal" = PrincipalName, Path, description = "Whose secret."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        Always, Unauthorized, Forbidden, NotFound,
    ),
)]
pub(super) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((route, principal)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let principal = PrincipalName::try_from(principal)?;
    if !s.0.store.delete_vault_secret(&principal, &route).await? {
        return Err(Problem::not_found("no such vaulted secret"));
    }
    s.audit(
        "vault.deleted",
        serde_json::json!({
            "route": &route,
            "principal": principal.as_str(),
            "by": caller.principal.name.as_str(),
        }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
