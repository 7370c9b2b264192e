//! `GET /metrics`: the server's metrics in the Prometheus text format
//! (see [`crate::metrics`]). On the API's listener it takes an admin's API
//! token; `metrics_listen` serves it without one on an address of its own,
//! for a scraper on a trusted network (ADR 0025).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse as _, Response};

use super::extract::Caller;
use super::openapi::{Always, Forbidden, Unauthorized};
use crate::metrics::{CONTENT_TYPE, Scraped};
use crate::problem::Problem;
use crate::state::AppState;

/// The server's metrics, for Prometheus (admin).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "meta",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The metrics, in the Prometheus text format 0.0.4.",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        Always, Unauthorized, Forbidden,
    ),
)]
pub(super) async fn metrics(
    State(s): State<AppState>,
    caller: Result<Caller, Problem>,
) -> Response {
    let answer = match caller.and_then(|c| c.require_admin()) {
        Ok(()) => exposition(&s).await,
        Err(p) => Err(p),
    };
    answer.unwrap_or_else(|p| {
        let mut r = p.into_response();
        // Only an API token works here (not DPoP, as elsewhere on the API).
        if r.status() == axum::http::StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    })
}

/// The exposition, its gauges of state read now.
pub(crate) async fn exposition(s: &AppState) -> Result<Response, Problem> {
    let gateways = s.gateways();
    let scraped = Scraped {
        approvals_pending: s.0.store.pending_approvals().await?,
        audit_up: s.0.enforcer.audit_log().healthy(),
        mcp: s
            .0
            .mcp
            .by_server(gateways.mcp_servers.keys().map(String::as_str)),
    };
    let mut r = s.0.metrics.render(&scraped).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(r)
}

/// The router of the `metrics_listen` address: `GET /metrics` without
/// credentials, nothing else.
pub(crate) fn unauthenticated_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(s): State<AppState>| async move {
                exposition(&s)
                    .await
                    .unwrap_or_else(axum::response::IntoResponse::into_response)
            }),
        )
        .fallback(|| async { Problem::no_such_endpoint() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(axum::middleware::from_fn(
            crate::edge::framing::strict_framing,
        ))
        .with_state(state)
}
