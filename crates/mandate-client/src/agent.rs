use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use mandate_core::wire::{
    ApprovalView, ChainView, CommitDelegation, Configuration, CreatedMission, CredentialResponse,
    DelegateRequest, DelegationProposal, EndMissionRequest, GatewayLimits, MissionView,
    StartMissionRequest,
};
use mandate_core::{Clock, MissionId, MissionKey, OsRandom, SecureRandom, SystemClock};
use reqwest::{Method, RequestBuilder};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::{Client, ClientError};

/// Refresh the credential when less than this many seconds remain.
const REFRESH_MARGIN_SECS: u64 = 60;

/// The agent's side of one mission: its key, its credential, its authority.
///
/// The key is created fresh for the mission and never leaves this value
/// (except through [`MissionAgent::save`], for a launcher that hands the
/// mission to another process).
#[derive(Debug)]
pub struct MissionAgent {
    client: Client,
    config: Configuration,
    key: MissionKey,
    mission_id: MissionId,
    credential: String,
    expires_at: u64,
    mission: Option<MissionView>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
}

/// `Ok` if the request was approved; otherwise the error that says how it
/// ended (denied, expired, or still pending when the wait ran out).
fn approved(approval: String, view: ApprovalView) -> Result<(), ClientError> {
    match view.status.as_str() {
        "approved" => Ok(()),
        "denied" => Err(ClientError::ApprovalDenied {
            approval,
            reason: view.decision_reason,
        }),
        "expired" => Err(ClientError::ApprovalExpired { approval }),
        _ => Err(ClientError::ApprovalPending { approval }),
    }
}

/// What one try of a call came to (see [`MissionAgent::call_with_approval`]).
#[derive(Debug)]
pub enum Attempt<T> {
    /// It went through (allowed, or refused for good: that is `T`'s to say).
    Done(T),
    /// It escalated: approval request `approval_id` waits for a person.
    Escalated { approval_id: String },
}

/// A mission as saved to disk by [`MissionAgent::save`]. Holds the private
/// mission key: write it with mode 0600.
#[derive(Serialize, Deserialize)]
pub struct SavedMission {
    pub server: String,
    pub mission_id: String,
    pub key_pem: Zeroizing<String>,
    pub credential: String,
    pub expires_at: u64,
}

impl std::fmt::Debug for SavedMission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedMission")
            .field("mission_id", &self.mission_id)
            .finish_non_exhaustive()
    }
}

impl MissionAgent {
    /// Creates a fresh mission key and starts the mission with `start_token`.
    pub async fn start(server: &str, start_token: &str) -> Result<Self, ClientError> {
        let rng: Arc<dyn SecureRandom> = Arc::new(OsRandom);
        let key =
            MissionKey::generate(rng.as_ref()).map_err(|e| ClientError::Local(e.to_string()))?;
        Self::start_with(server, start_token, key, Arc::new(SystemClock), rng).await
    }

    /// As [`Self::start`], with a given key, clock and randomness.
    pub async fn start_with(
        server: &str,
        start_token: &str,
        key: MissionKey,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Result<Self, ClientError> {
        Self::start_full(server, start_token, key, None, clock, rng).await
    }

    /// Starts the mission with `key`, presenting `evidence` bound to it
    /// (a JWT-SVID whose `aud` holds `urn:mandate:jkt:<key's thumbprint>`,
    /// or a launch statement naming the key; see ADR 0020).
    pub async fn start_attested(
        server: &str,
        start_token: &str,
        key: MissionKey,
        evidence: mandate_core::Evidence,
    ) -> Result<Self, ClientError> {
        Self::start_full(
            server,
            start_token,
            key,
            Some(evidence),
            Arc::new(SystemClock),
            Arc::new(OsRandom),
        )
        .await
    }

    async fn start_full(
        server: &str,
        start_token: &str,
        key: MissionKey,
        evidence: Option<mandate_core::Evidence>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Result<Self, ClientError> {
        let client = Client::new(server)?;
        let config = client.configuration().await?;
        let htu = config.mission_start_endpoint.clone();
        let proof = key
            .proof("POST", &htu, Some(start_token), clock.now(), rng.as_ref())
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let rb = client
            .request(Method::POST, "/v1/missions/start")
            .header("DPoP", proof)
            .json(&StartMissionRequest {
                start_token: start_token.to_owned(),
                evidence,
            });
        let resp: CredentialResponse = client.send(rb).await?;
        let mission_id: MissionId = resp
            .mission
            .id
            .parse()
            .map_err(|e: mandate_core::InputError| ClientError::Decode(e.to_string()))?;
        Ok(Self {
            client,
            config,
            key,
            mission_id,
            credential: resp.credential,
            expires_at: resp.expires_at,
            mission: Some(resp.mission),
            clock,
            rng,
        })
    }

    /// Restores a saved mission.
    pub async fn load(saved: &SavedMission) -> Result<Self, ClientError> {
        Self::load_with(saved, Client::new(&saved.server)?).await
    }

    /// Restores a saved mission, speaking to its authority through `client`
    /// (e.g. [`Client::direct`]), which must be for the saved authority.
    pub async fn load_with(saved: &SavedMission, client: Client) -> Result<Self, ClientError> {
        if client.base() != saved.server.trim_end_matches('/') {
            return Err(ClientError::Local(format!(
                "the client is for `{}`, the mission's authority is `{}`",
                client.base(),
                saved.server
            )));
        }
        let config = client.configuration().await?;
        let key = MissionKey::from_pkcs8_pem(&saved.key_pem)
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let mission_id: MissionId = saved
            .mission_id
            .parse()
            .map_err(|e: mandate_core::InputError| ClientError::Local(e.to_string()))?;
        Ok(Self {
            client,
            config,
            key,
            mission_id,
            credential: saved.credential.clone(),
            expires_at: saved.expires_at,
            mission: None,
            clock: Arc::new(SystemClock),
            rng: Arc::new(OsRandom),
        })
    }

    /// What to write to disk to resume this mission elsewhere.
    pub fn save(&self) -> Result<Zeroizing<String>, ClientError> {
        let key_pem = self
            .key
            .to_pkcs8_pem()
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let saved = SavedMission {
            server: self.client.base().to_owned(),
            mission_id: self.mission_id.to_string(),
            key_pem,
            credential: self.credential.clone(),
            expires_at: self.expires_at,
        };
        serde_json::to_string_pretty(&saved)
            .map(Zeroizing::new)
            .map_err(|e| ClientError::Local(e.to_string()))
    }

    /// Another handle on this mission: the same key, credential, authority
    /// and configuration, to sign or wait on its own (e.g. a call that
    /// waits for a person's approval while others go on).
    pub fn fork(&self) -> Result<Self, ClientError> {
        let pem = self
            .key
            .to_pkcs8_pem()
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let key =
            MissionKey::from_pkcs8_pem(&pem).map_err(|e| ClientError::Local(e.to_string()))?;
        Ok(Self {
            client: self.client.clone(),
            config: self.config.clone(),
            key,
            mission_id: self.mission_id.clone(),
            credential: self.credential.clone(),
            expires_at: self.expires_at,
            mission: self.mission.clone(),
            clock: Arc::clone(&self.clock),
            rng: Arc::clone(&self.rng),
        })
    }

    /// The gateway's routes and MCP servers with their request limits
    /// (`GET /v1/mission/limits`), asked with the credential.
    pub async fn limits(&self) -> Result<GatewayLimits, ClientError> {
        let rb = self.authorize(Method::GET, "/v1/mission/limits")?;
        self.client.send(rb).await
    }

    #[must_use]
    pub fn mission_id(&self) -> &MissionId {
        &self.mission_id
    }

    /// The mission as of the last start or refresh in this process.
    #[must_use]
    pub fn last_mission_view(&self) -> Option<&MissionView> {
        self.mission.as_ref()
    }

    #[must_use]
    pub fn key(&self) -> &MissionKey {
        &self.key
    }

    /// The client of the authority the mission was started with.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The current credential, as last issued (it may have expired).
    #[must_use]
    pub fn credential(&self) -> &str {
        &self.credential
    }

    #[must_use]
    pub fn credential_expires_at(&self) -> u64 {
        self.expires_at
    }

    /// A credential with at least a minute left, refreshing it if needed.
    pub async fn fresh_credential(&mut self) -> Result<&str, ClientError> {
        if self.clock.now().0.saturating_add(REFRESH_MARGIN_SECS) >= self.expires_at {
            self.refresh().await?;
        }
        Ok(&self.credential)
    }

    /// Gets a new credential by proving possession of the mission key.
    pub async fn refresh(&mut self) -> Result<(), ClientError> {
        let path = format!("/v1/missions/{}/credential", self.mission_id);
        let proof = self.proof("POST", &path, None)?;
        let rb = self
            .client
            .request(Method::POST, &path)
            .header("DPoP", proof);
        let resp: CredentialResponse = self.client.send(rb).await?;
        self.credential = resp.credential;
        self.expires_at = resp.expires_at;
        self.mission = Some(resp.mission);
        Ok(())
    }

    /// The mission as the authority sees it now, asked with the credential.
    pub async fn mission(&self) -> Result<MissionView, ClientError> {
        let rb = self.authorize(Method::GET, "/v1/mission")?;
        self.client.send(rb).await
    }

    /// Delegates part of this mission to a sub-agent, as a child mission:
    /// asks the authority for the child's body (checked to only narrow this
    /// mission), checks the link claims bind this mission and that body,
    /// signs them with this mission's key, and commits. Returns the child,
    /// with the one-time start token its agent starts it with.
    pub async fn delegate(&self, req: &DelegateRequest) -> Result<CreatedMission, ClientError> {
        let proposal: DelegationProposal = {
            let rb = self
                .authorize(Method::POST, "/v1/mission/delegations/proposal")?
                .json(req);
            self.client.send(rb).await?
        };
        let DelegationProposal {
            mission,
            mission_s256,
            link,
            proposal,
        } = proposal;
        // Sign only what binds this mission to the body we commit.
        let s256 =
            mandate_core::mission_s256(&mission).map_err(|e| ClientError::Decode(e.to_string()))?;
        if s256 != mission_s256
            || link.parent.mission_id != self.mission_id
            || link.parent_jkt != *self.key.thumbprint()
            || link.child.mission_id != mission.id
            || link.child.mission_s256 != s256
            || link.child.agent != mission.agent
            || link.exp != mission.expires_at
            || mission.parent().map(|p| &p.id) != Some(&self.mission_id)
        {
            return Err(ClientError::Decode(
                "the proposal does not bind this mission to the child it describes".into(),
            ));
        }
        // And it is the child asked for: the link is this mission's consent
        // to exactly that.
        let agent_ok = match (&req.agent, &req.ephemeral) {
            (Some(a), None) => mission.agent.as_str() == a,
            (None, Some(label)) => {
                mission.agent.as_str() == format!("{}@{}", label.trim(), mission.id)
            }
            _ => false,
        };
        let out_of_scope_ok = match req.out_of_scope.as_deref() {
            None => mission.out_of_scope == mandate_core::OutOfScope::default(),
            Some(m) => m.parse::<mandate_core::OutOfScope>().ok() == Some(mission.out_of_scope),
        };
        if !agent_ok
            || mission.goal != req.goal.trim()
            || mission.policies.scope != req.scope
            || mission.policies.boundaries != req.boundaries
            || mission.policies.escalations != req.escalations
            || mission.budget.requests != req.budget
            || req
                .ttl_seconds
                .is_some_and(|t| mission.expires_at.saturating_sub(mission.created_at) != t)
            || !out_of_scope_ok
        {
            return Err(ClientError::Decode(
                "the proposed child is not the one asked for; nothing was signed".into(),
            ));
        }
        let signed = self
            .key
            .sign_link(link, self.clock.now(), self.rng.as_ref())
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let rb = self
            .authorize(Method::POST, "/v1/mission/delegations")?
            .json(&CommitDelegation {
                mission,
                link: signed,
                proposal,
            });
        self.client.send(rb).await
    }

    /// This mission's delegation links, root first (empty for a mission a
    /// principal delegated directly): with the credential, what an offline
    /// verifier needs.
    pub async fn chain(&self) -> Result<ChainView, ClientError> {
        let rb = self.authorize(Method::GET, "/v1/mission/chain")?;
        self.client.send(rb).await
    }

    /// Ends the mission: the task is done. Every credential dies with it.
    pub async fn end(&self, reason: Option<&str>) -> Result<MissionView, ClientError> {
        let path = format!("/v1/missions/{}/end", self.mission_id);
        let rb = self
            .authorize(Method::POST, &path)?
            .json(&EndMissionRequest {
                reason: reason.map(Into::into),
            });
        self.client.send(rb).await
    }

    /// Waits (long-polling) until approval request `id` of this mission is
    /// decided or expires, or `max_wait` passes; returns it as it then is.
    pub async fn wait_for_approval(
        &mut self,
        id: &str,
        max_wait: Duration,
    ) -> Result<ApprovalView, ClientError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ClientError::Local(format!("`{id}` is not an approval id")));
        }
        let deadline = Instant::now() + max_wait;
        loop {
            self.fresh_credential().await?;
            let left = deadline.saturating_duration_since(Instant::now());
            // The authority holds a poll for at most a minute.
            let wait = left.min(Duration::from_secs(50)).as_secs().max(1);
            let path = format!("/v1/approvals/{id}");
            let rb = self
                .authorize_query(Method::GET, &path, &format!("?wait={wait}"))?
                .timeout(Duration::from_secs(wait + 15));
            let view: ApprovalView = self.client.send(rb).await?;
            if view.status != "pending" || Instant::now() >= deadline {
                return Ok(view);
            }
        }
    }

    /// Sends a call that may need approval, and if it escalates, waits for
    /// the decision and sends it again: "send, and if escalated wait, then
    /// retry". `call` gets a fresh credential each time and says whether
    /// the call went through ([`Attempt::Done`]) or escalated. A denial,
    /// an expiry, or no decision within `max_wait` is an error naming the
    /// approval request.
    pub async fn call_with_approval<T, F, Fut>(
        &mut self,
        max_wait: Duration,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, ClientError>>,
    {
        /// Approved, yet escalated again this many times (another caller
        /// used a single-use grant first, say): give up.
        const MAX_ROUNDS: usize = 5;
        let deadline = Instant::now() + max_wait;
        for _ in 0..MAX_ROUNDS {
            let credential = self.fresh_credential().await?.to_owned();
            let approval = match call(credential).await? {
                Attempt::Done(t) => return Ok(t),
                Attempt::Escalated { approval_id } => approval_id,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let view = self.wait_for_approval(&approval, left).await?;
            approved(approval, view)?;
        }
        Err(ClientError::Local(format!(
            "the call escalated again after {MAX_ROUNDS} approvals"
        )))
    }

    /// Sends a request through a Mandate gateway (`url` under
    /// `/gw/{route}/…`), signed with the mission key (RFC 9421): the
    /// credential rides in `Signature-Key` (scheme `jwt`), and the
    /// signature covers the method, authority, path, query, the
    /// `Signature-Key`, the body's `Content-Digest` and type, and the
    /// justification if one is given. The credential is refreshed first if
    /// it is about to expire.
    pub async fn send_signed(
        &mut self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        justification: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_signed_with(method, url, body, justification, &[])
            .await
    }

    /// [`Self::send_signed`] with more headers, each covered by the
    /// signature (e.g. `Mcp-Session-Id` on the MCP gateway).
    pub async fn send_signed_with(
        &mut self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        justification: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response, ClientError> {
        self.signed_request(method, url, body, justification, extra)
            .await?
            .send()
            .await
            .map_err(|e| ClientError::Http {
                url: url.to_owned(),
                source: e,
            })
    }

    /// The request [`Self::send_signed_with`] sends, signed (the credential
    /// refreshed first if needed) but not sent: the caller sends it, and
    /// need not hold the agent meanwhile.
    pub async fn signed_request(
        &mut self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        justification: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let http = self.client.http().clone();
        self.signed_request_on(&http, method, url, body, justification, extra)
            .await
    }

    /// [`Self::signed_request`], built on `http` rather than the agent's
    /// own HTTP client (for its own timeouts or proxy settings; a client
    /// that follows redirects would resend the signed credential).
    pub async fn signed_request_on(
        &mut self,
        http: &reqwest::Client,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        justification: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        use mandate_core::httpsig::{RequestParts, SignSpec, content_digest, signature_key_header};
        let local = |m: String| ClientError::Local(m);
        self.fresh_credential().await?;
        let parsed = reqwest::Url::parse(url).map_err(|e| local(format!("`{url}`: {e}")))?;
        // The request goes out exactly as given, or not at all: a URL the
        // parser would rewrite (`..` or `.` segments, their encodings, a
        // backslash, a default port, upper-case scheme or host) would be
        // signed and sent as another request than the one asked for, which
        // the gateway itself refuses as ambiguous.
        let sent = parsed.as_str();
        let only_a_root_slash = parsed.path() == "/" && sent.strip_suffix('/') == Some(url);
        if sent != url && !only_a_root_slash {
            return Err(local(format!(
                "`{url}` would be sent as `{sent}`; give the URL exactly as it is to be sent (no `.` or `..` segments, no default port, lower-case scheme and host)"
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| local(format!("`{url}` has no host")))?;
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let sig_key =
            signature_key_header("sig", &self.credential).map_err(|e| local(e.to_string()))?;
        let mut headers: Vec<(String, String)> = vec![("signature-key".into(), sig_key)];
        let mut components = vec!["@method", "@authority", "@path"];
        if parsed.query().is_some() {
            components.push("@query");
        }
        components.push("signature-key");
        if let Some((ctype, bytes)) = &body {
            headers.push(("content-type".into(), (*ctype).to_owned()));
            headers.push(("content-digest".into(), content_digest(bytes)));
            components.extend(["content-type", "content-digest"]);
        }
        if let Some(j) = justification {
            headers.push(("mandate-justification".into(), j.to_owned()));
            components.push("mandate-justification");
        }
        for (k, v) in extra {
            headers.push(((*k).to_ascii_lowercase(), (*v).to_owned()));
        }
        let extra_names: Vec<String> = extra.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        components.extend(extra_names.iter().map(String::as_str));
        let created = i64::try_from(self.clock.now().0).unwrap_or(i64::MAX);
        // Ed25519 is deterministic: without a nonce, the same call sent twice
        // in one second would carry the same signature, and the gateway
        // would refuse the second as a replay.
        let mut nonce = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .map_err(|e| local(e.to_string()))?;
        let nonce = mandate_core::s256(&nonce);
        let (input, signature) = self
            .key
            .sign_request(
                &RequestParts {
                    method,
                    scheme: parsed.scheme(),
                    authority: &authority,
                    path: parsed.path(),
                    query: parsed.query(),
                    headers: &headers,
                },
                &SignSpec {
                    label: "sig",
                    components: &components,
                    created,
                    expires: None,
                    keyid: None,
                    nonce: Some(&nonce),
                },
            )
            .map_err(|e| local(e.to_string()))?;
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| local(e.to_string()))?;
        let mut rb = http.request(method, parsed.clone());
        for (k, v) in &headers {
            rb = rb.header(k, v);
        }
        rb = rb
            .header("signature-input", input)
            .header("signature", signature);
        if let Some((_, bytes)) = body {
            rb = rb.body(bytes);
        }
        Ok(rb)
    }

    /// [`Self::send_signed`], and if the gateway answers that the call needs
    /// approval (`403 approval_required`), waits for the decision (at most
    /// `max_wait`) and sends it again. A denial, an expiry or no decision in
    /// time is an error naming the approval request. Any other answer is
    /// returned as it is.
    pub async fn send_with_approval(
        &mut self,
        max_wait: Duration,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        justification: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_with_approval_watched(max_wait, method, url, body, justification, &mut |_, _| {})
            .await
    }

    /// [`Self::send_with_approval`], telling `escalated` the approval
    /// request's id and URL (if the gateway gave one) each time the call
    /// waits for a person.
    pub async fn send_with_approval_watched(
        &mut self,
        max_wait: Duration,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        justification: Option<&str>,
        escalated: &mut (dyn FnMut(&str, Option<&str>) + Send),
    ) -> Result<reqwest::Response, ClientError> {
        const MAX_ROUNDS: usize = 5;
        let deadline = Instant::now() + max_wait;
        for _ in 0..MAX_ROUNDS {
            let resp = self
                .send_signed(method, url, body.clone(), justification)
                .await?;
            if resp.status() != reqwest::StatusCode::FORBIDDEN {
                return Ok(resp);
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ClientError::Decode(e.to_string()))?;
            let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let (Some("approval_required"), Some(approval)) = (
                problem.get("code").and_then(|c| c.as_str()),
                problem.get("approval_id").and_then(|c| c.as_str()),
            ) else {
                return Err(ClientError::Problem {
                    status: 403,
                    code: problem
                        .get("code")
                        .and_then(|c| c.as_str())
                        .unwrap_or("forbidden")
                        .to_owned(),
                    detail: problem
                        .get("detail")
                        .and_then(|c| c.as_str())
                        .unwrap_or("refused")
                        .to_owned(),
                });
            };
            let approval = approval.to_owned();
            escalated(
                &approval,
                problem.get("approval_url").and_then(|u| u.as_str()),
            );
            let left = deadline.saturating_duration_since(Instant::now());
            let view = self.wait_for_approval(&approval, left).await?;
            approved(approval, view)?;
        }
        Err(ClientError::Local(format!(
            "the call escalated again after {MAX_ROUNDS} approvals"
        )))
    }

    /// A request to the authority carrying the credential and a fresh proof
    /// of possession. (Requests through the gateway will be signed with
    /// RFC 9421 instead; this is the seam where that slots in.)
    pub(crate) fn authorize(
        &self,
        method: Method,
        path: &str,
    ) -> Result<RequestBuilder, ClientError> {
        self.authorize_query(method, path, "")
    }

    /// As [`Self::authorize`], with a query string (which a DPoP proof's
    /// `htu` leaves out).
    fn authorize_query(
        &self,
        method: Method,
        path: &str,
        query: &str,
    ) -> Result<RequestBuilder, ClientError> {
        let proof = self.proof(method.as_str(), path, Some(&self.credential))?;
        Ok(self
            .client
            .request(method, &format!("{path}{query}"))
            .header("Authorization", format!("DPoP {}", self.credential))
            .header("DPoP", proof))
    }

    fn proof(&self, method: &str, path: &str, token: Option<&str>) -> Result<String, ClientError> {
        let htu = format!("{}{path}", self.config.issuer);
        self.key
            .proof(method, &htu, token, self.clock.now(), self.rng.as_ref())
            .map_err(|e| ClientError::Local(e.to_string()))
    }
}
