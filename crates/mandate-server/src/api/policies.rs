use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_core::wire::PoliciesView;

use super::extract::Caller;
use super::openapi::{Always, Forbidden, Unauthorized, Unprocessable};
use crate::problem::Problem;
use crate::state::AppState;

fn view(s: &AppState) -> Result<PoliciesView, Problem> {
    let org = s.org()?;
    Ok(PoliciesView {
        version: org.version,
        dir: s.0.policies_dir.display().to_string(),
        schema_fragments: org.loaded.schema_fragments.clone(),
        policies: org
            .loaded
            .policies
            .policies()
            .ids()
            .into_iter()
            .map(|(id, kind)| (id, kind.as_str().to_owned()))
            .collect(),
    })
}

/// The organisation policies the server runs (admin).
#[utoipa::path(
    get,
    path = "/v1/policies",
    operation_id = "list_policies",
    tag = "policies",
    security(("api_token" = [])),
    responses((status = 200, description = "The loaded policies.", body = PoliciesView), Always, Unauthorized, Forbidden),
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<PoliciesView>, Problem> {
    caller.require_admin()?;
    Ok(Json(view(&s)?))
}

/// Reloads the policy directory atomically: a set that fails validation is
/// rejected (with every error, `file:line:col`) and the running one stays.
#[utoipa::path(
    post,
    path = "/v1/policies/reload",
    operation_id = "reload_policies",
    tag = "policies",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "Reloaded.", body = PoliciesView),
        Always, Unauthorized, Forbidden, Unprocessable,
    ),
)]
pub(super) async fn reload(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<PoliciesView>, Problem> {
    caller.require_admin()?;
    let state = s.clone();
    let result = super::on_large_stack(move || state.reload_policies()).await?;
    match result {
        Ok(version) => {
            tracing::info!(version, by = %caller.principal.name, "policies reloaded");
            crate::changes::announce_reload(&s).await;
            s.audit(
                "policy.reloaded",
                serde_json::json!({ "version": version, "by": caller.principal.name.as_str() }),
            )
            .await?;
            Ok(Json(view(&s)?))
        }
        Err(diags) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                format!(
                    "the policy set was rejected ({} problems); the running set stays",
                    diags.len()
                ),
            );
            p.errors = diags.iter().map(ToString::to_string).collect();
            Err(p)
        }
    }
}
