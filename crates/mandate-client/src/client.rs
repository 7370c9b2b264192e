use std::time::Duration;

use mandate_core::Jwks;
use mandate_core::wire::{
    AgentView, ApprovalView, ApproveRequest, Configuration, CreateMissionRequest,
    CreatePrincipalRequest, CreateTokenRequest, CreatedMission, CreatedPrincipal, CreatedToken,
    DecideRequest, DecideResponse, DenyRequest, EndMissionRequest, EnrollmentLink,
    IntrospectRequest, IntrospectResponse, MissionView, PoliciesView, PrincipalView,
    ProblemDocument, RegisterAgentRequest, RevocationRequest, RevocationResponse, TokenView,
    VaultView,
};
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The authority refused, with a problem document (RFC 9457).
    #[error("{detail} ({code})")]
    Problem {
        status: u16,
        code: String,
        detail: String,
    },
    #[error("cannot reach the authority at `{url}`")]
    Http { url: String, source: reqwest::Error },
    #[error("unexpected response from the authority: {0}")]
    Decode(String),
    #[error("{0}")]
    Local(String),
    /// The call needed approval and a person refused it.
    #[error("approval {approval} was denied{}", reason.as_deref().filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default())]
    ApprovalDenied {
        approval: String,
        reason: Option<String>,
    },
    /// The call needed approval and nobody decided in time.
    #[error("approval {approval} expired without a decision")]
    ApprovalExpired { approval: String },
    /// Waiting for approval took longer than the caller allowed; the
    /// request is still pending.
    #[error("approval {approval} is still pending")]
    ApprovalPending { approval: String },
}

impl ClientError {
    /// The stable problem code, if the authority sent one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Problem { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The typed API client. Cheap to clone. Its `Debug` hides the token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the authority at `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::build(base, false)
    }

    /// As [`Self::new`], but never through a proxy the environment names
    /// (`HTTP_PROXY`, `ALL_PROXY`, …): for a process that is itself the
    /// agent's proxy, which would otherwise send its own calls to itself.
    pub fn direct(base: &str) -> Result<Self, ClientError> {
        Self::build(base, true)
    }

    fn build(base: &str, direct: bool) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // A redirect would resend the credential and signature (and, for
            // 307/308, the body) to wherever an upstream points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mandate-client/", env!("CARGO_PKG_VERSION")));
        if direct {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Local(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    /// Authenticates calls with a principal's API token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The underlying HTTP client (for signed gateway calls).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends and decodes: a 2xx body as `T`, anything else as a problem.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
    ) -> Result<T, ClientError> {
        decode(self.respond(rb).await?).await
    }

    /// Sends; the answer, whatever its status.
    async fn respond(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        rb.send().await.map_err(|e| ClientError::Http {
            url: self.base.clone(),
            source: e,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    /// A `GET` whose answer is text, not JSON (a problem if it failed).
    async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.respond(self.request(Method::GET, path)).await?;
        if !resp.status().is_success() {
            return decode::<String>(resp).await;
        }
        resp.text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/healthz").await
    }

    /// `GET /metrics`: the server's metrics in Prometheus' text format
    /// (an admin's token; docs/observability.md).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.get_text("/metrics").await
    }

    pub async fn configuration(&self) -> Result<Configuration, ClientError> {
        self.get("/.well-known/mandate-configuration").await
    }

    pub async fn jwks(&self) -> Result<Jwks, ClientError> {
        let text: serde_json::Value = self.get("/.well-known/jwks.json").await?;
        Jwks::from_json(&text.to_string()).map_err(ClientError::Decode)
    }

    pub async fn whoami(&self) -> Result<PrincipalView, ClientError> {
        self.get("/v1/whoami").await
    }

    pub async fn create_principal(
        &self,
        name: &str,
        role: Option<&str>,
    ) -> Result<CreatedPrincipal, ClientError> {
        let req = CreatePrincipalRequest {
            name: name.into(),
            role: role.map(Into::into),
        };
        self.post("/v1/principals", &req).await
    }

    pub async fn principals(&self) -> Result<Vec<PrincipalView>, ClientError> {
        self.get("/v1/principals").await
    }

    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreatedToken, ClientError> {
        self.post("/v1/tokens", req).await
    }

    /// A one-time console enrollment link for `name` (admins).
    pub async fn enroll(&self, name: &str) -> Result<EnrollmentLink, ClientError> {
        self.post(
            &format!("/v1/principals/{}/enroll", segment(name)?),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn tokens(&self, principal: Option<&str>) -> Result<Vec<TokenView>, ClientError> {
        match principal {
            Some(p) => {
                self.get(&format!("/v1/tokens?principal={}", segment(p)?))
                    .await
            }
            None => self.get("/v1/tokens").await,
        }
    }

    pub async fn register_agent(
        &self,
        req: &RegisterAgentRequest,
    ) -> Result<AgentView, ClientError> {
        self.post("/v1/agents", req).await
    }

    pub async fn agents(&self) -> Result<Vec<AgentView>, ClientError> {
        self.get("/v1/agents").await
    }

    pub async fn agent(&self, name: &str) -> Result<AgentView, ClientError> {
        self.get(&format!("/v1/agents/{}", segment(name)?)).await
    }

    /// Replaces what evidence the agent's missions must present to start
    /// (`None`: none).
    pub async fn set_agent_attestation(
        &self,
        name: &str,
        requirement: Option<&mandate_core::AttestationRequirement>,
    ) -> Result<AgentView, ClientError> {
        let path = format!("/v1/agents/{}/attestation", segment(name)?);
        let body = mandate_core::wire::SetAttestationRequest {
            attestation: requirement.cloned(),
        };
        self.send(self.request(Method::PUT, &path).json(&body))
            .await
    }

    pub async fn create_mission(
        &self,
        req: &CreateMissionRequest,
    ) -> Result<CreatedMission, ClientError> {
        self.post("/v1/missions", req).await
    }

    pub async fn missions(&self) -> Result<Vec<MissionView>, ClientError> {
        self.get("/v1/missions").await
    }

    pub async fn mission(&self, id: &str) -> Result<MissionView, ClientError> {
        self.get(&format!("/v1/missions/{}", segment(id)?)).await
    }

    /// Clears a mission's taint: you reviewed what it read (`reason`).
    pub async fn clear_taint(&self, id: &str, reason: &str) -> Result<MissionView, ClientError> {
        self.post(
            &format!("/v1/missions/{}/taint/clear", segment(id)?),
            &mandate_core::wire::ClearTaintRequest {
                reason: reason.to_owned(),
            },
        )
        .await
    }

    /// A mission and every mission delegated below it, parents first.
    pub async fn mission_tree(&self, id: &str) -> Result<Vec<MissionView>, ClientError> {
        self.get(&format!("/v1/missions/{}/tree", segment(id)?))
            .await
    }

    /// A mission's open MCP sessions, as the node that answers holds them.
    pub async fn mcp_sessions(
        &self,
        mission: &str,
    ) -> Result<mandate_core::wire::McpSessionsView, ClientError> {
        self.get(&format!("/v1/missions/{}/mcp/sessions", segment(mission)?))
            .await
    }

    /// Ends one of a mission's MCP sessions: its server stops.
    pub async fn end_mcp_session(&self, mission: &str, session: &str) -> Result<(), ClientError> {
        let path = format!(
            "/v1/missions/{}/mcp/sessions/{}",
            segment(mission)?,
            segment(session)?
        );
        let resp = self.respond(self.request(Method::DELETE, &path)).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            decode::<serde_json::Value>(resp).await.map(|_| ())
        }
    }

    /// Ends a mission as a principal who may manage it.
    pub async fn end_mission(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<MissionView, ClientError> {
        let req = EndMissionRequest {
            reason: reason.map(Into::into),
        };
        self.post(&format!("/v1/missions/{}/end", segment(id)?), &req)
            .await
    }

    pub async fn revoke(
        &self,
        kind: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<RevocationResponse, ClientError> {
        let req = RevocationRequest {
            kind: kind.into(),
            id: id.into(),
            reason: reason.map(Into::into),
        };
        self.post("/v1/revocations", &req).await
    }

    /// A decision, as an enforcement point asks for it.
    pub async fn decide(&self, req: &DecideRequest) -> Result<DecideResponse, ClientError> {
        self.post("/v1/decide", req).await
    }

    /// The organisation policies the server runs (admin).
    /// Approval requests: `query` like `status=pending&mine=true`.
    pub async fn approvals(&self, query: &str) -> Result<Vec<ApprovalView>, ClientError> {
        self.get(&format!("/v1/approvals?{query}")).await
    }

    pub async fn approval(&self, id: &str) -> Result<ApprovalView, ClientError> {
        self.get(&format!("/v1/approvals/{}", segment(id)?)).await
    }

    /// One approval request, waiting up to `wait_secs` (≤ 60) for a
    /// pending one to be decided.
    pub async fn approval_wait(
        &self,
        id: &str,
        wait_secs: u64,
    ) -> Result<ApprovalView, ClientError> {
        let wait = wait_secs.min(60);
        let rb = self
            .request(
                Method::GET,
                &format!("/v1/approvals/{}?wait={wait}", segment(id)?),
            )
            .timeout(Duration::from_secs(wait + 15));
        self.send(rb).await
    }

    pub async fn approve(
        &self,
        id: &str,
        req: &ApproveRequest,
    ) -> Result<ApprovalView, ClientError> {
        self.post(&format!("/v1/approvals/{}/approve", segment(id)?), req)
            .await
    }

    pub async fn deny(&self, id: &str, req: &DenyRequest) -> Result<ApprovalView, ClientError> {
        self.post(&format!("/v1/approvals/{}/deny", segment(id)?), req)
            .await
    }

    /// Stores or rotates a principal's secret for a vault route (admin).
    pub async fn vault_put(
        &self,
        route: &str,
        principal: &str,
        secret: &mandate_core::VaultSecret,
    ) -> Result<VaultView, ClientError> {
        let path = format!("/v1/vault/{}/{}", segment(route)?, segment(principal)?);
        self.send(self.request(Method::PUT, &path).json(secret))
            .await
    }

    pub async fn vault_list(&self) -> Result<Vec<VaultView>, ClientError> {
        self.get("/v1/vault").await
    }

    pub async fn vault_delete(&self, route: &str, principal: &str) -> Result<(), ClientError> {
        let path = format!("/v1/vault/{}/{}", segment(route)?, segment(principal)?);
        let resp = self.respond(self.request(Method::DELETE, &path)).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            decode::<serde_json::Value>(resp).await.map(|_| ())
        }
    }

    pub async fn policies(&self) -> Result<PoliciesView, ClientError> {
        self.get("/v1/policies").await
    }

    /// Makes the server reload its policy directory and its `mandate.toml`
    /// routes and MCP servers (admin), together. A policy set or a file
    /// that fails validation is rejected with every error
    /// (`file:line:col`); everything running stays.
    pub async fn reload_policies(&self) -> Result<PoliciesView, ClientError> {
        self.send(self.request(Method::POST, "/v1/policies/reload"))
            .await
    }

    /// A page of audit records (admin). `query` is e.g.
    /// `after=0&limit=100&mission=msn_…&kind=decision`.
    pub async fn audit(&self, query: &str) -> Result<serde_json::Value, ClientError> {
        if !query
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=&_-.".contains(c))
        {
            return Err(ClientError::Local(format!(
                "`{query}` is not a valid audit query"
            )));
        }
        self.get(&format!("/v1/audit?{query}")).await
    }

    /// The provenance of one audit record, in plain language (admin).
    pub async fn audit_explain(&self, seq: u64) -> Result<serde_json::Value, ClientError> {
        self.get(&format!("/v1/audit/{seq}/explain")).await
    }

    /// Deletes audit records through a signed checkpoint, after export (admin).
    pub async fn audit_prune(&self, through: u64) -> Result<serde_json::Value, ClientError> {
        self.post(
            "/v1/audit/prune",
            &serde_json::json!({ "through": through }),
        )
        .await
    }

    /// Verifies the audit chain on the server (admin).
    pub async fn audit_verify(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/v1/audit/verify").await
    }

    /// Signed audit checkpoints (any principal): from the first (the
    /// genesis one), or after `after`; a page of `{checkpoints: [{seq,
    /// checkpoint}], next_after?}`.
    pub async fn audit_checkpoints(
        &self,
        after: Option<u64>,
    ) -> Result<serde_json::Value, ClientError> {
        match after {
            Some(after) => {
                self.get(&format!("/v1/audit/checkpoints?after={after}"))
                    .await
            }
            None => self.get("/v1/audit/checkpoints").await,
        }
    }

    /// Audit records after `after`, as JSON Lines (admin).
    pub async fn audit_export(&self, after: u64, limit: u32) -> Result<String, ClientError> {
        self.get_text(&format!("/v1/audit/export?after={after}&limit={limit}"))
            .await
    }

    /// Asks the authority whether a mission credential is usable now.
    pub async fn introspect(&self, credential: &str) -> Result<IntrospectResponse, ClientError> {
        self.post(
            "/v1/credentials/introspect",
            &IntrospectRequest {
                credential: credential.into(),
            },
        )
        .await
    }
}

/// A path segment: ids and names never need escaping, so refuse anything
/// that would.
fn segment(s: &str) -> Result<&str, ClientError> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Ok(s)
    } else {
        Err(ClientError::Local(format!(
            "`{s}` is not a valid id or name"
        )))
    }
}

pub(crate) async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()));
    }
    match serde_json::from_slice::<ProblemDocument>(&bytes) {
        Ok(p) if !p.code.is_empty() => Err(ClientError::Problem {
            status: status.as_u16(),
            code: p.code,
            // Where the server lists each problem (a policy set that does
            // not load), the list is what tells the user where to look.
            detail: if p.errors.is_empty() {
                p.detail
            } else {
                format!("{}:\n  {}\n", p.detail, p.errors.join("\n  "))
            },
        }),
        _ => Err(ClientError::Problem {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        }),
    }
}

/// Fetches a JWKS document from `url` (for offline verification later).
pub async fn fetch_jwks(url: &str) -> Result<Jwks, ClientError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ClientError::Local(format!("cannot build an HTTP client: {e}")))?;
    let resp = http.get(url).send().await.map_err(|e| ClientError::Http {
        url: url.to_owned(),
        source: e,
    })?;
    if !resp.status().is_success() {
        return Err(ClientError::Decode(format!(
            "`{url}` answered {}",
            resp.status()
        )));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    Jwks::from_json(&text).map_err(ClientError::Decode)
}
