use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_core::wire::PoliciesView;

use super::extract::Caller;
use super::openapi::{Always, Forbidden, Unauthorized, Unprocessable};
use crate::problem::Problem;
use crate::reload::{Refused, Trigger, approver_warnings};
use crate::state::AppState;

/// The policies running, with what they name that does not exist
/// (`warnings`, found now unless given).
async fn view(s: &AppState, warnings: Option<Vec<String>>) -> Result<PoliciesView, Problem> {
    let org = s.org()?;
    let warnings = match warnings {
        Some(w) => w,
        None => approver_warnings(s, &org.loaded.policies).await,
    };
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
        warnings,
        config: None,
    })
}

/// The organisation policies the server runs (admin), with warnings for
/// approvers they name who are not principals.
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
    Ok(Json(view(&s, None).await?))
}

/// Reloads the policy directory and `mandate.toml`'s routes and MCP
/// servers, together and atomically: a policy set or a file that fails
/// validation is rejected (with every error, `file:line:col`) and
/// everything running stays. The answer says what changed, what needs a
/// restart, and which named approvers are not principals.
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
    match crate::reload::reload(&s, Trigger::Api(caller.principal.name.as_str())).await {
        Ok(done) => {
            if let Some(p) = done.unrecorded {
                return Err(p);
            }
            let mut v = view(&s, Some(done.warnings)).await?;
            v.config = Some(done.config);
            Ok(Json(v))
        }
        Err(Refused::Config(e)) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                "mandate.toml was rejected; the running configuration and policies stay",
            );
            p.errors = vec![e];
            Err(p)
        }
        Err(Refused::Policies(diags)) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                format!(
                    "the policy set was rejected ({} problems); the running policies and configuration stay",
                    diags.len()
                ),
            );
            p.errors = diags.iter().map(ToString::to_string).collect();
            Err(p)
        }
        Err(Refused::Internal) => Err(Problem::internal()),
    }
}
