use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_core::wire::{
    CreatePrincipalRequest, CreateTokenRequest, CreatedPrincipal, CreatedToken, EnrollmentLink,
    PrincipalView, TokenView,
};
use mandate_core::{ApiTokenId, PrincipalName, Role, SecretToken, TokenKind};
use mandate_store::{ApiToken, Principal};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::openapi::{Always, Conflict, Forbidden, JsonBody, NotFound, Unauthorized};
use super::{free_text, principal_view, token_view};
use crate::problem::Problem;
use crate::state::AppState;

const MAX_LABEL_CHARS: usize = 200;

/// The caller.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    operation_id = "whoami",
    tag = "principals",
    security(("api_token" = [])),
    responses((status = 200, description = "The caller.", body = PrincipalView), Always, Unauthorized),
)]
pub(super) async fn whoami(caller: Caller) -> Json<PrincipalView> {
    Json(principal_view(&caller.principal))
}

/// Issues a new API token for `principal` and returns it, once.
async fn issue_token(
    state: &AppState,
    principal: &PrincipalName,
    label: Option<String>,
) -> Result<CreatedToken, Problem> {
    let label = free_text("label", label, MAX_LABEL_CHARS)?;
    let rng = state.0.rng.as_ref();
    let secret = SecretToken::generate(TokenKind::Api, rng).map_err(|_| Problem::internal())?;
    let record = ApiToken {
        id: ApiTokenId::generate(rng).map_err(|_| Problem::internal())?,
        principal: principal.clone(),
        label,
        created_at: state.0.clock.now(),
        revoked_at: None,
    };
    state
        .0
        .store
        .create_api_token(&record, &secret.hash())
        .await?;
    tracing::info!(principal = %principal, token = %record.id, "api token created");
    state
        .audit(
            "token.created",
            serde_json::json!({ "principal": principal.as_str(), "token": record.id.as_str(), "label": &record.label }),
        )
        .await?;
    Ok(CreatedToken {
        id: record.id.to_string(),
        principal: principal.to_string(),
        label: record.label,
        token: secret.expose().to_owned(),
    })
}

/// Creates a principal (`member` by default); the answer carries their
/// first API token, shown once.
#[utoipa::path(
    post,
    path = "/v1/principals",
    operation_id = "create_principal",
    tag = "principals",
    security(("api_token" = [])),
    request_body = CreatePrincipalRequest,
    responses(
        (status = 201, description = "Created, with the first API token.", body = CreatedPrincipal),
        Always, Unauthorized, Forbidden, Conflict, JsonBody,
    ),
)]
pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreatePrincipalRequest>,
) -> Result<(StatusCode, Json<CreatedPrincipal>), Problem> {
    caller.require_admin()?;
    let CreatePrincipalRequest { name, role } = req;
    let name: PrincipalName = name.try_into()?;
    let role: Role = role.as_deref().unwrap_or("member").parse()?;
    let principal = Principal {
        name: name.clone(),
        role,
        created_at: s.0.clock.now(),
        revoked_at: None,
    };
    s.0.store.create_principal(&principal).await?;
    tracing::info!(principal = %name, role = %role, by = %caller.principal.name, "principal created");
    s.audit(
        "principal.created",
        serde_json::json!({ "principal": name.as_str(), "role": role.as_str(), "by": caller.principal.name.as_str() }),
    )
    .await?;
    // If issuing the first token fails, the principal exists without one;
    // an admin can issue one with `mandate token create --principal`.
    let token = issue_token(&s, &name, Some("initial".into())).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedPrincipal {
            principal: principal_view(&principal),
            token,
        }),
    ))
}

/// All principals (admin).
#[utoipa::path(
    get,
    path = "/v1/principals",
    operation_id = "list_principals",
    tag = "principals",
    security(("api_token" = [])),
    responses((status = 200, description = "All principals.", body = Vec<PrincipalView>), Always, Unauthorized, Forbidden),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<PrincipalView>>, Problem> {
    Ok(Json(
        principals_for(&s, &caller.principal)
            .await?
            .iter()
            .map(principal_view)
            .collect(),
    ))
}

/// Every principal, for an admin; `forbidden` for anyone else: what
/// `GET /v1/principals` answers.
pub(crate) async fn principals_for(
    s: &AppState,
    principal: &Principal,
) -> Result<Vec<Principal>, Problem> {
    super::extract::require_admin(principal)?;
    Ok(s.0.store.principals().await?)
}

/// Whose tokens: the caller's own, or (admins only) someone else's.
fn subject(caller: &Caller, named: Option<String>) -> Result<PrincipalName, Problem> {
    match named {
        None => Ok(caller.principal.name.clone()),
        Some(n) => {
            let n: PrincipalName = n.try_into()?;
            if n != caller.principal.name {
                caller.require_admin()?;
            }
            Ok(n)
        }
    }
}

/// A new API token for the caller (admins: for anyone), shown once.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "create_token",
    tag = "principals",
    security(("api_token" = [])),
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The new token, shown this once.", body = CreatedToken),
        Always, Unauthorized, Forbidden, NotFound, JsonBody,
    ),
)]
pub(super) async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    let CreateTokenRequest { principal, label } = req;
    let who = subject(&caller, principal)?;
    let token = issue_token(&s, &who, label.or_else(|| Some("cli".into()))).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TokensQuery {
    /// Whose tokens; the caller's own if absent (admins name others).
    #[param(value_type = Option<PrincipalName>)]
    principal: Option<String>,
}

/// Token records (never the secrets).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "list_tokens",
    tag = "principals",
    security(("api_token" = [])),
    params(TokensQuery),
    responses((status = 200, description = "The tokens.", body = Vec<TokenView>), Always, Unauthorized, Forbidden),
)]
pub(super) async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TokensQuery>,
) -> Result<Json<Vec<TokenView>>, Problem> {
    let who = subject(&caller, q.principal)?;
    Ok(Json(
        s.0.store
            .api_tokens(&who)
            .await?
            .iter()
            .map(token_view)
            .collect(),
    ))
}

/// A one-time link that registers a console passkey for `name` and signs
/// in (docs/console.md): single use, valid 15 minutes, stored hashed.
/// Admins only.
#[utoipa::path(
    post,
    path = "/v1/principals/{name}/enroll",
    operation_id = "enroll_principal",
    tag = "principals",
    security(("api_token" = [])),
    params(("name" = String, Path, description = "The principal to enroll.")),
    responses(
        (status = 201, description = "The link, shown this once.", body = EnrollmentLink),
        Always, Unauthorized, Forbidden, NotFound,
    ),
)]
pub(super) async fn enroll(
    State(s): State<AppState>,
    caller: Caller,
    super::extract::ApiPath(name): super::extract::ApiPath<String>,
) -> Result<(StatusCode, Json<EnrollmentLink>), Problem> {
    caller.require_admin()?;
    let name = PrincipalName::try_from(name)?;
    let console = s.0.console.as_ref().map_err(|e| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "console_unavailable",
            format!("the console is not available: {e}"),
        )
    })?;
    let token = crate::console::random_token(&s).map_err(|_| Problem::internal())?;
    let expires_at = s.0.clock.now().plus(crate::console::ENROLLMENT_TTL_SECS);
    s.0.store
        .add_enrollment(&crate::console::hashed(&token), &name, expires_at)
        .await?;
    s.audit(
        "console.enrollment_issued",
        serde_json::json!({
            "principal": name.as_str(),
            "by": caller.principal.name.as_str(),
            "expires_at": expires_at.0,
        }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentLink {
            url: format!("{}/console/enroll/{token}", console.origin),
            expires_at: expires_at.0,
        }),
    ))
}
