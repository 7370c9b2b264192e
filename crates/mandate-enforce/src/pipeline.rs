//! The pipeline every governed call takes once its credential (and, at a
//! gateway, its request signature) checked out: names → state → policy and
//! grants → escalate or count → durable record → [`Permit`].
//!
//! The three front doors (`/v1/decide`, `/gw/…`, `/mcp/…`) parse their
//! protocol into a [`Call`], hand it here with the request they would
//! forward, and map the [`Decided`] back to their protocol.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mandate_core::wire::DecideResponse;
use mandate_core::{
    Ancestor, Clock, Decision, DecisionRequest, ExactGrant, GrantScope, GrantSet, Mission,
    MissionClaims, MissionId, MissionPolicySet, Outcome, PolicyDiagnostic, ReasonCode,
    ResourceKind, ResourceRef, SecureRandom, Trust, UnixTime, decide_chain, names, state_check,
};
use mandate_store::{Allowance, ApprovalRecord, GrantRecord, MissionSnapshot, Store};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::error::EnforceError;
use crate::escalate::{Ask, MAX_PENDING_APPROVALS, open_approval};
use crate::permit::Permit;
use crate::policies::{LoadedPolicies, Missing, load_dir};
use crate::record::{AuditLog, Claim, Settle};

/// Compiled mission policy sets kept in memory. Past this, the cache is
/// cleared and refilled on demand (compiling a mission's policies is cheap
/// next to the requests it serves; the bound keeps memory flat however many
/// missions run).
const MISSION_CACHE_MAX: usize = 100_000;

/// How old a mission's snapshot may be and still be decided on: older,
/// its count, grants and taint are read again. A front door that goes
/// straight from the credential's check to the decision is well within it.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(100);

/// A JSON object: a call's context, a record's extra fields.
type Map = serde_json::Map<String, serde_json::Value>;

/// The pipeline and what it holds: the store, the audit log, the
/// organisation's policies and the missions' compiled policies.
#[derive(Debug)]
pub struct Enforcer {
    store: Arc<dyn Store>,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    approval_ttl_secs: u64,
    /// The organisation's policies; swapped whole on reload.
    org: RwLock<Arc<OrgState>>,
    /// Serializes reloads so versions stay in order.
    reload_lock: Mutex<()>,
    missions: Mutex<HashMap<String, Arc<MissionPolicySet>>>,
    /// Ancestor missions of delegated missions, by body hash: their bodies
    /// are immutable, so what was read once holds (their state is not
    /// kept: an ancestor ends with its descendants, in the store).
    ancestors: Mutex<HashMap<String, Arc<Mission>>>,
    /// Where each approval request the pipeline opens goes once its
    /// `approval.requested` record is durable, for the front door to
    /// announce (wake waiters, queue the webhook).
    opened: Opened,
}

/// The sending half of the channel of opened approval requests. Unbounded:
/// a mission has at most [`MAX_PENDING_APPROVALS`] waiting, and each is
/// sent once.
pub type Opened = tokio::sync::mpsc::UnboundedSender<ApprovalRecord>;

/// One loaded generation of the organisation's policies.
#[derive(Debug)]
pub struct OrgState {
    pub version: u64,
    pub loaded: LoadedPolicies,
}

/// One call to decide, after its credential checked out.
#[derive(Debug)]
pub struct Call<'a> {
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    pub context: &'a Map,
    /// The agent's stated reason (already checked as free text).
    pub justification: String,
    pub required: Trust,
    /// Which attested code or workloads may make the call at all (a
    /// route's or MCP server's `attestation`): the mission's own
    /// attestation must satisfy it.
    pub attestation: Option<&'a mandate_core::AttestationRequirement>,
    /// The call's arguments, shown to approvers (never in notifications)
    /// when policy sees only some of them (an MCP tool call).
    pub arguments: Option<&'a Map>,
    /// The signed request's single use, claimed with its decision's record
    /// (`None` where nothing signed it once: a preview, an internal call).
    pub claim: Option<Claim>,
}

/// Who a decision was about, once the credential's signature checked out.
#[derive(Debug, Clone)]
pub struct Who {
    principal: String,
    agent: String,
    mission: String,
    mission_s256: String,
    jti: String,
    jkt: String,
    /// For a delegated mission: its ancestors, root first, as the
    /// credential names them (mission, agent, key).
    chain: Vec<serde_json::Value>,
}

impl Who {
    #[must_use]
    pub fn of(c: &MissionClaims) -> Self {
        Self {
            principal: c.sub.to_string(),
            agent: c.act.sub.to_string(),
            mission: c.mission_id.to_string(),
            mission_s256: c.mission_s256.clone(),
            jti: c.jti.clone(),
            jkt: c.cnf.jkt.to_string(),
            chain: c
                .chain
                .iter()
                .zip(&c.links)
                .map(|(h, link)| {
                    serde_json::json!({
                        "mission": h.mission_id.as_str(), "agent": h.agent.as_str(),
                        "jkt": h.jkt.as_str(), "link": link,
                    })
                })
                .collect(),
        }
    }
}

/// A recorded decision and what it allows.
#[derive(Debug)]
pub struct Decided<T> {
    /// The decision as recorded (an escalation's `approval_url` is the
    /// front door's to fill in).
    pub response: DecideResponse,
    /// The right to forward the request: only for an Allow that was counted
    /// and recorded.
    pub permit: Option<Permit<T>>,
    /// How long the call spent in each stage.
    pub timings: Timings,
}

/// How long a decided call spent in the pipeline's stages (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Names, mission state, policy and grants, and an escalation's
    /// approval request.
    pub decide: Duration,
    /// Waiting until the decision's record (with its count) was durable:
    /// the audit log's group commit.
    pub record: Duration,
}

/// A decision before it is recorded, or once it is.
enum Step {
    /// Counted and recorded (an Allow, or what counting turned it into),
    /// with the record's sequence number if the call may go ahead.
    Recorded(DecideResponse, Option<u64>),
    /// Still to be recorded; no effect on the budget.
    Unrecorded(DecideResponse),
}

fn response(o: Outcome, mission: Option<&MissionId>) -> DecideResponse {
    DecideResponse {
        decision: o.decision,
        code: o.code,
        policies: o.policies,
        grant: o.grant,
        approval_id: None,
        approval_url: None,
        mission_id: mission.map(ToString::to_string),
        budget_used: None,
        detail: o.detail,
        hop: o.hop,
    }
}

/// An ancestor as [`Enforcer::ancestors`] loads it.
type Loaded = (Arc<Mission>, Arc<MissionPolicySet>, u64);

fn as_ancestors(loaded: &[Loaded]) -> Vec<Ancestor<'_>> {
    loaded
        .iter()
        .map(|(m, p, used)| Ancestor {
            mission: m,
            policies: p,
            budget_used: *used,
        })
        .collect()
}

/// A denial before any policy ran (a credential refused, say).
#[must_use]
pub fn denial(
    code: &str,
    detail: impl Into<String>,
    mission: Option<&MissionId>,
) -> DecideResponse {
    response(Outcome::deny(code, detail), mission)
}

/// A decision's audit record.
fn decision_body(
    action: &str,
    resource: &ResourceRef,
    context: &Map,
    resp: &DecideResponse,
    who: Option<&Who>,
    extra: Map,
) -> Result<Map, EnforceError> {
    let context_digest = mandate_core::s256(
        &serde_jcs::to_vec(context).map_err(|_| EnforceError::Internal("context digest"))?,
    );
    let mut body = serde_json::Map::new();
    body.insert("action".into(), action.into());
    body.insert(
        "resource".into(),
        serde_json::to_value(resource).map_err(|_| EnforceError::Internal("resource"))?,
    );
    body.insert("context_digest".into(), context_digest.into());
    set_outcome(&mut body, resp);
    body.extend(extra);
    if let Some(w) = who {
        body.insert("principal".into(), w.principal.clone().into());
        body.insert("agent".into(), w.agent.clone().into());
        body.insert("mission".into(), w.mission.clone().into());
        body.insert("mission_s256".into(), w.mission_s256.clone().into());
        body.insert("credential".into(), w.jti.clone().into());
        body.insert("jkt".into(), w.jkt.clone().into());
        if !w.chain.is_empty() {
            // Who delegated to whom, root first; each entry's `link` is
            // the digest of the link that hop signed to delegate the next.
            body.insert("chain".into(), w.chain.clone().into());
        }
    }
    Ok(body)
}

/// The outcome's fields of a decision's audit record.
fn set_outcome(body: &mut Map, resp: &DecideResponse) {
    body.insert("decision".into(), resp.decision.as_str().into());
    body.insert("code".into(), resp.code.clone().into());
    body.insert("policies".into(), resp.policies.clone().into());
    body.insert("grant".into(), resp.grant.clone().into());
    body.insert("approval_id".into(), resp.approval_id.clone().into());
    body.insert("budget_used".into(), resp.budget_used.into());
    match &resp.hop {
        Some(hop) => {
            body.insert(
                "hop".into(),
                serde_json::to_value(hop).unwrap_or(serde_json::Value::Null),
            );
        }
        None => {
            body.remove("hop");
        }
    }
}

/// What an allowed call's record says once counting found `a`; `None`
/// when the grant it relied on is gone (nothing is recorded, the call is
/// decided again).
fn settled(allowed: &DecideResponse, a: Allowance) -> Option<DecideResponse> {
    let deny = |o: Outcome| DecideResponse {
        mission_id: allowed.mission_id.clone(),
        ..response(o, None)
    };
    match a {
        Allowance::Counted(n) => Some(DecideResponse {
            budget_used: Some(n),
            ..allowed.clone()
        }),
        Allowance::BudgetExhausted => Some(deny(Outcome::deny(
            ReasonCode::BUDGET_EXHAUSTED,
            "the mission's request budget is used up",
        ))),
        Allowance::MissionEnded => Some(deny(Outcome::deny(
            ReasonCode::MISSION_ENDED,
            "the mission ended",
        ))),
        Allowance::GrantUnavailable => None,
    }
}

/// Why a resource's name cannot be decided on: it has more than one
/// reading, so a policy or a grant's prefix on it would not mean what it
/// says.
fn unclear_name(resource: &ResourceRef) -> Option<String> {
    match &resource.kind {
        ResourceKind::Route { path, .. } => names::check_path(path)
            .err()
            .map(|e| format!("ambiguous path: {}", e.0)),
        ResourceKind::McpResource { uri, .. } => (!names::valid_uri(uri)).then(unclear_mcp),
        ResourceKind::Tool { tool, .. } => (!names::valid_name(tool)).then(unclear_mcp),
        ResourceKind::Prompt { prompt, .. } => (!names::valid_name(prompt)).then(unclear_mcp),
        ResourceKind::McpServer { server } => (!names::valid_name(server)).then(unclear_mcp),
        ResourceKind::Resource { .. } => None,
    }
}

fn unclear_mcp() -> String {
    "the MCP resource, tool or prompt name has more than one reading".into()
}

impl Enforcer {
    /// Wires the pipeline. Time and randomness are injected so tests can
    /// fix them.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        approval_ttl_secs: u64,
        policies: LoadedPolicies,
        opened: Opened,
    ) -> Self {
        Self {
            store,
            audit,
            clock,
            rng,
            approval_ttl_secs,
            org: RwLock::new(Arc::new(OrgState {
                version: 1,
                loaded: policies,
            })),
            reload_lock: Mutex::new(()),
            missions: Mutex::new(HashMap::new()),
            ancestors: Mutex::new(HashMap::new()),
            opened,
        }
    }

    /// The audit log the pipeline records in.
    #[must_use]
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Records an event (not a decision) and waits until it is durable.
    pub async fn record(
        &self,
        kind: &'static str,
        body: serde_json::Value,
    ) -> Result<u64, EnforceError> {
        self.audit.record(kind, self.clock.now().0, body).await
    }

    /// As [`Self::record`], taking a signed request's single use in the
    /// same transaction: [`EnforceError::Replayed`], with nothing recorded,
    /// if it was taken before (on any node sharing the database, or before
    /// a restart).
    pub async fn record_claimed(
        &self,
        kind: &'static str,
        body: serde_json::Value,
        claim: Claim,
    ) -> Result<u64, EnforceError> {
        self.audit
            .record_claimed(kind, self.clock.now().0, body, Some(claim))
            .await
    }

    /// The current organisation policies.
    /// Forgets what is remembered of a mission as an ancestor (its taint
    /// changed): the next call below it reads it again.
    pub fn forget_ancestor(&self, s256: &str) {
        if let Ok(mut cache) = self.ancestors.lock() {
            cache.remove(s256);
        }
    }

    pub fn org(&self) -> Result<Arc<OrgState>, EnforceError> {
        self.org
            .read()
            .map(|g| Arc::clone(&g))
            .map_err(|_| EnforceError::Internal("policy lock poisoned"))
    }

    /// Reloads the organisation's policies from `dir`. A set that fails to
    /// load or validate is rejected whole and the running one stays.
    pub fn reload(&self, dir: &Path) -> Result<u64, Vec<PolicyDiagnostic>> {
        self.reload_checked(dir, |_| Ok(()))
    }

    /// As [`Self::reload`], also rejecting a set that `check` refuses
    /// (e.g. one whose schema no longer declares an action a gateway route
    /// maps to).
    pub fn reload_checked(
        &self,
        dir: &Path,
        check: impl Fn(&mandate_core::OrgPolicies) -> Result<(), PolicyDiagnostic>,
    ) -> Result<u64, Vec<PolicyDiagnostic>> {
        let internal = |m: &str| {
            vec![PolicyDiagnostic {
                source: "server".into(),
                line: 1,
                col: 1,
                message: m.into(),
            }]
        };
        let _serial = self
            .reload_lock
            .lock()
            .map_err(|_| internal("reload lock poisoned"))?;
        let loaded = load_dir(dir, Missing::Error)?;
        check(&loaded.policies).map_err(|d| vec![d])?;
        let mut org = self
            .org
            .write()
            .map_err(|_| internal("policy lock poisoned"))?;
        let version = org.version + 1;
        *org = Arc::new(OrgState { version, loaded });
        Ok(version)
    }

    /// A mission's compiled policies, compiled once and cached; `Err` with
    /// why they do not compile (the caller denies).
    fn mission_policies(&self, m: &Mission) -> Result<Arc<MissionPolicySet>, String> {
        let poisoned = || "the mission policy cache is poisoned".to_owned();
        if let Some(hit) = self.missions.lock().map_err(|_| poisoned())?.get(&m.s256) {
            return Ok(Arc::clone(hit));
        }
        let compiled = Arc::new(
            MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None)
                .map_err(|e| e.to_string())?,
        );
        let mut cache = self.missions.lock().map_err(|_| poisoned())?;
        if cache.len() >= MISSION_CACHE_MAX {
            cache.clear();
        }
        cache.insert(m.s256.clone(), Arc::clone(&compiled));
        Ok(compiled)
    }

    /// A delegated mission's ancestors, root first, each with its compiled
    /// policies and budget count; `Ok(Err(why))` when one cannot be read or
    /// no longer matches the hash the mission's body names (the caller
    /// denies).
    async fn ancestors(
        &self,
        mission: &Mission,
    ) -> Result<Result<Vec<Loaded>, String>, EnforceError> {
        let mut out = Vec::with_capacity(mission.body.ancestors.len());
        for r in &mission.body.ancestors {
            let cached = self
                .ancestors
                .lock()
                .map_err(|_| EnforceError::Internal("ancestor cache poisoned"))?
                .get(&r.s256)
                .cloned();
            let m = match cached {
                Some(m) => m,
                None => {
                    let Some(m) = self.store.mission(&r.id).await? else {
                        return Ok(Err(format!("ancestor mission `{}` is unknown", r.id)));
                    };
                    if m.s256 != r.s256 {
                        return Ok(Err(format!(
                            "ancestor mission `{}` does not match its hash",
                            r.id
                        )));
                    }
                    let m = Arc::new(m);
                    let mut cache = self
                        .ancestors
                        .lock()
                        .map_err(|_| EnforceError::Internal("ancestor cache poisoned"))?;
                    if cache.len() >= MISSION_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(r.s256.clone(), Arc::clone(&m));
                    m
                }
            };
            let compiled = match self.mission_policies(&m) {
                Ok(c) => c,
                Err(e) => return Ok(Err(format!("ancestor mission `{}`: {e}", r.id))),
            };
            let used = self.store.budget_used(&r.id).await?;
            out.push((m, compiled, used));
        }
        Ok(Ok(out))
    }

    /// Records a decision in the audit log and waits until it is durable.
    pub async fn record_decision(
        &self,
        action: &str,
        resource: &ResourceRef,
        context: &Map,
        resp: &DecideResponse,
        who: Option<&Who>,
        extra: Map,
    ) -> Result<u64, EnforceError> {
        let body = decision_body(action, resource, context, resp, who, extra)?;
        self.record("decision", serde_json::Value::Object(body))
            .await
    }

    /// Records a refusal that came before any decision (a signature, a
    /// mapping, a malformed message) of a caller whose credential is
    /// authentic: a denial with `code` on `resource`, no action, no
    /// policies.
    pub async fn record_refusal(
        &self,
        resource: &ResourceRef,
        claims: &MissionClaims,
        code: &str,
        detail: &str,
        extra: Map,
    ) -> Result<(), EnforceError> {
        let resp = denial(
            code,
            detail.chars().take(500).collect::<String>(),
            Some(&claims.mission_id),
        );
        self.record_decision(
            "-",
            resource,
            &serde_json::Map::new(),
            &resp,
            Some(&Who::of(claims)),
            extra,
        )
        .await?;
        Ok(())
    }

    /// Decides a call of an agent whose credential (and, at the gateway,
    /// request signature) checked out — names, mission state and budget,
    /// then policy and grants — and records the decision, durably, before
    /// returning it. An allowed call is counted (budget, grant use) in the
    /// same transaction as its record; an escalated one opens (or joins)
    /// its approval request. `request` is what the front door would
    /// forward: it comes back inside a [`Permit`] only for an Allow that
    /// was counted and recorded, and is dropped otherwise. `state` is the
    /// mission as the front door read it to check the credential
    /// ([`Store::mission_snapshot`]): its budget count, grants and taint are
    /// taken from there rather than read again, unless it was read more
    /// than [`SNAPSHOT_MAX_AGE`] ago (the front door waited: for an
    /// approval, an upstream's listing), when they are read again.
    pub async fn decide<T>(
        &self,
        by: &str,
        state: &MissionSnapshot,
        call: &Call<'_>,
        who: &Who,
        extra: Map,
        request: T,
    ) -> Result<Decided<T>, EnforceError> {
        let again;
        let state = if state.age() > SNAPSHOT_MAX_AGE {
            let id = &state.mission().body.id;
            again = match self.store.mission_snapshot(id, self.clock.now()).await? {
                // The body is immutable; a different one is not the mission
                // the credential was checked against.
                Some(s) if s.mission().s256 == state.mission().s256 => s,
                _ => {
                    return Err(EnforceError::Internal(
                        "the mission changed under its credential",
                    ));
                }
            };
            &again
        } else {
            state
        };
        let mission = state.mission();
        // A replay's refusal is recorded with what the call was about.
        let about = call.claim.as_ref().map(|_| extra.clone());
        match self.decide_once(state, call, who, extra, request).await {
            Err(EnforceError::Replayed) => {
                let resp = denial(
                    "signature_replayed",
                    "this signature was used before",
                    Some(&mission.body.id),
                );
                tracing::info!(mission = %mission.body.id, by = %by, action = %call.action, "replayed signature refused");
                self.record_decision(
                    call.action,
                    call.resource,
                    call.context,
                    &resp,
                    Some(who),
                    about.unwrap_or_default(),
                )
                .await?;
                Err(EnforceError::Replayed)
            }
            Err(e) => Err(e),
            Ok(decided) => {
                tracing::info!(
                    mission = %mission.body.id,
                    by = %by,
                    action = %call.action,
                    decision = decided.response.decision.as_str(),
                    code = %decided.response.code,
                    "decided"
                );
                Ok(decided)
            }
        }
    }

    async fn decide_once<T>(
        &self,
        state: &MissionSnapshot,
        call: &Call<'_>,
        who: &Who,
        mut extra: Map,
        request: T,
    ) -> Result<Decided<T>, EnforceError> {
        let mission = state.mission();
        // What untrusted content the mission had read when it decided:
        // `audit explain` tells it.
        if let Some(t) = &mission.taint {
            extra.insert(
                "taint".into(),
                serde_json::json!({ "labels": t.labels, "since": t.since, "sources": t.sources }),
            );
        }
        // Taken by the first record this call makes.
        let mut claim = call.claim.clone();
        // One span per stage, beside each other under the caller's (the
        // front door's request): `decide`, then `record`. Both are
        // `debug`: nothing is made of them unless traces are exported.
        let started = Instant::now();
        let mut recording = Duration::ZERO;
        let request_span = tracing::Span::current();
        let decide_span = tracing::debug_span!(
            "decide",
            action = call.action,
            decision = Empty,
            code = Empty
        );
        let step = self
            .decide_call(
                state,
                call,
                who,
                &extra,
                &mut claim,
                &request_span,
                &mut recording,
            )
            .instrument(decide_span.clone())
            .await?;
        let (Step::Recorded(resp, _) | Step::Unrecorded(resp)) = &step;
        decide_span.record("decision", resp.decision.as_str());
        decide_span.record("code", resp.code.as_str());
        let (response, permit) = match step {
            Step::Recorded(resp, seq) => {
                let permit = seq.map(|seq| Permit::mint(request, seq, mission.body.id.clone()));
                (resp, permit)
            }
            Step::Unrecorded(resp) => {
                let body = decision_body(
                    call.action,
                    call.resource,
                    call.context,
                    &resp,
                    Some(who),
                    extra,
                )?;
                let span = tracing::debug_span!(parent: &request_span, "record", audit_seq = Empty);
                let at = Instant::now();
                let seq = self
                    .audit
                    .record_claimed(
                        "decision",
                        self.clock.now().0,
                        serde_json::Value::Object(body),
                        claim,
                    )
                    .instrument(span.clone())
                    .await?;
                recording += at.elapsed();
                span.record("audit_seq", seq);
                (resp, None)
            }
        };
        let timings = Timings {
            decide: started.elapsed().saturating_sub(recording),
            record: recording,
        };
        Ok(Decided {
            response,
            permit,
            timings,
        })
    }

    /// Decides `call`; an allowed one is counted and recorded here, in a
    /// `record` span under `request_span`, its wait added to `recording`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the call, who made it, and where its record's time and span go"
    )]
    async fn decide_call(
        &self,
        state: &MissionSnapshot,
        call: &Call<'_>,
        who: &Who,
        extra: &Map,
        claim: &mut Option<Claim>,
        request_span: &tracing::Span,
        recording: &mut Duration,
    ) -> Result<Step, EnforceError> {
        let Call {
            action,
            resource,
            context,
            ref justification,
            required,
            attestation,
            arguments,
            claim: _,
        } = *call;
        let mission = state.mission();
        let now = self.clock.now();
        let id = &mission.body.id;
        let deny = |code: &str, detail: String| {
            Ok(Step::Unrecorded(response(
                Outcome::deny(code, detail),
                Some(id),
            )))
        };
        // 1. A name parsers could read differently is refused here too, so
        //    a grant's path prefix means what it says.
        if let Some(detail) = unclear_name(resource) {
            return deny(ReasonCode::INVALID_REQUEST, detail);
        }
        // 2. Mission state and budget (checked again, authoritatively, when
        //    an allowed call is counted).
        let used = state.budget_used();
        if let Err(o) = state_check(mission, now, used) {
            return Ok(Step::Unrecorded(response(*o, Some(id))));
        }
        // 2b. The enforcement point's own demand on what code calls: no
        //     approval stands in for it.
        if let Some(r) = attestation {
            let refusal = match &mission.attestation {
                None => Some(format!(
                    "this needs a mission started with attestation evidence ({}); this one was started without",
                    r.describe()
                )),
                Some(a) => r.check(a).err().map(|e| match e {
                    mandate_core::AttestationError::Mismatch(d) => format!(
                        "this is served only to missions attested by {}: {d}",
                        r.describe()
                    ),
                    other => other.to_string(),
                }),
            };
            if let Some(detail) = refusal {
                return deny(ReasonCode::INSUFFICIENT_TRUST, detail);
            }
        }
        // 3. Policy: the organisation's, this mission's, its live grants. A
        //    grant used up by a concurrent call between deciding and
        //    counting means deciding again without it.
        let org = self.org()?;
        let compiled = match self.mission_policies(mission) {
            Ok(c) => c,
            Err(detail) => return deny(ReasonCode::POLICY_ERROR, detail),
        };
        // A delegated mission: every ancestor's policy applies as well.
        let loaded = match self.ancestors(mission).await? {
            Ok(a) => a,
            Err(detail) => return deny(ReasonCode::POLICY_ERROR, detail),
        };
        let ancestors = as_ancestors(&loaded);
        for attempt in 0..3 {
            // The grants read with the mission first; read again after a
            // grant was found used up.
            let read = if attempt == 0 {
                compile_grants(state.grants())
            } else {
                self.live_grants(id, now).await?
            };
            let grants = match read {
                Ok(g) => g,
                Err(detail) => return deny(ReasonCode::POLICY_ERROR, detail),
            };
            let outcome = decide_chain(
                &org.loaded.policies,
                &ancestors,
                &compiled,
                &grants,
                &DecisionRequest {
                    mission,
                    budget_used: used,
                    action,
                    resource,
                    context,
                    trust: Trust::of(mission),
                    required,
                    now,
                },
            );
            let mut resp = response(outcome.clone(), Some(id));
            match outcome.decision {
                Decision::Allow => {}
                Decision::Escalate => {
                    // Only people who exist can decide: the approvers the
                    // policies name who are not principals (or were
                    // revoked) are left out, and a call none of whose
                    // approvers exists is denied rather than left waiting
                    // for nobody.
                    let (present, absent) = self.present_approvers(&outcome.approvers).await?;
                    if present.is_empty() {
                        return deny(
                            ReasonCode::NO_APPROVER,
                            format!(
                                "nobody can approve this call: the approvers the policies name ({}) are not principals of this authority, or were revoked",
                                absent
                                    .iter()
                                    .map(|a| format!("`{a}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                    if !absent.is_empty() {
                        tracing::warn!(mission = %id, absent = ?absent, "named approvers who are not principals are left out of an approval request");
                    }
                    let outcome = Outcome {
                        approvers: present,
                        ..outcome
                    };
                    let ask = Ask {
                        mission,
                        action,
                        resource,
                        context,
                        outcome: &outcome,
                        justification: justification.clone(),
                        arguments,
                        now,
                    };
                    let opened = open_approval(
                        self.store.as_ref(),
                        &self.audit,
                        self.rng.as_ref(),
                        self.approval_ttl_secs,
                        &self.opened,
                        &ask,
                    )
                    .await?;
                    return Ok(match opened {
                        Some(approval) => {
                            resp.approval_id = Some(approval);
                            Step::Unrecorded(resp)
                        }
                        None => Step::Unrecorded(response(
                            Outcome::deny(
                                ReasonCode::APPROVAL_QUEUE_FULL,
                                format!(
                                    "the mission already has {MAX_PENDING_APPROVALS} requests waiting for approval"
                                ),
                            ),
                            Some(id),
                        )),
                    });
                }
                Decision::Deny => return Ok(Step::Unrecorded(resp)),
            }
            // 4. An allowed call's budget (and grant use) is counted in the
            //    transaction that records its decision: both durable, or
            //    neither, before anything is forwarded.
            let body = decision_body(action, resource, context, &resp, Some(who), extra.clone())?;
            let allowed = resp.clone();
            let settle: Settle = Box::new(move |a, body| {
                let Some(r) = settled(&allowed, a) else {
                    return false;
                };
                set_outcome(body, &r);
                true
            });
            let count = mandate_store::CountAsk {
                mission: id.clone(),
                budget: mission.body.budget.requests,
                grant: outcome
                    .grant
                    .as_deref()
                    .and_then(|g| g.strip_prefix("grant/"))
                    .map(str::to_owned),
                now,
            };
            let span = tracing::debug_span!(parent: request_span, "record", audit_seq = Empty);
            let at = Instant::now();
            let (a, seq) = self
                .audit
                .record_counted("decision", now.0, count, body, settle, claim.take())
                .instrument(span.clone())
                .await?;
            *recording += at.elapsed();
            if let Some(seq) = seq {
                span.record("audit_seq", seq);
            }
            if let Some(r) = settled(&resp, a) {
                // 5. Only a counted call whose record is durable goes ahead.
                let go = seq.filter(|_| matches!(a, Allowance::Counted(_)));
                return Ok(Step::Recorded(r, go));
            }
        }
        deny(
            ReasonCode::POLICY_ERROR,
            "the grants of this mission keep changing; retry".into(),
        )
    }

    /// What each of `items` would get now, with no context, and with no
    /// effect: nothing counted, no approval opened, nothing recorded. For
    /// listings (the MCP gateway's `tools/list`), never for enforcement:
    /// every call is decided on its own. `Err` denies the whole listing.
    pub async fn preview(
        &self,
        mission: &Mission,
        required: Trust,
        items: &[(String, ResourceRef)],
    ) -> Result<Vec<Outcome>, EnforceError> {
        let now = self.clock.now();
        let id = &mission.body.id;
        let used = self.store.budget_used(id).await?;
        if let Err(o) = state_check(mission, now, used) {
            return Ok(vec![*o; items.len()]);
        }
        let org = self.org()?;
        let denied = |detail: String| Outcome::deny(ReasonCode::POLICY_ERROR, detail);
        let compiled = match self.mission_policies(mission) {
            Ok(c) => c,
            Err(detail) => return Ok(vec![denied(detail); items.len()]),
        };
        let grants = match self.live_grants(id, now).await? {
            Ok(g) => g,
            Err(detail) => return Ok(vec![denied(detail); items.len()]),
        };
        let loaded = match self.ancestors(mission).await? {
            Ok(a) => a,
            Err(detail) => return Ok(vec![denied(detail); items.len()]),
        };
        let ancestors = as_ancestors(&loaded);
        let context = serde_json::Map::new();
        Ok(items
            .iter()
            .map(|(action, resource)| {
                decide_chain(
                    &org.loaded.policies,
                    &ancestors,
                    &compiled,
                    &grants,
                    &DecisionRequest {
                        mission,
                        budget_used: used,
                        action,
                        resource,
                        context: &context,
                        trust: Trust::of(mission),
                        required,
                        now,
                    },
                )
            })
            .collect())
    }

    /// `approvers` split into the principals who exist and are not
    /// revoked, and the others.
    async fn present_approvers(
        &self,
        approvers: &[String],
    ) -> Result<(Vec<String>, Vec<String>), EnforceError> {
        let mut present = Vec::new();
        let mut absent = Vec::new();
        for a in approvers {
            let found = match a.parse::<mandate_core::PrincipalName>() {
                Ok(name) => self.store.principal(&name).await?,
                Err(_) => None,
            };
            if found.is_some_and(|p| p.revoked_at.is_none()) {
                present.push(a.clone());
            } else {
                absent.push(a.clone());
            }
        }
        Ok((present, absent))
    }

    /// The mission's live grants, compiled; `Err` with a reason if one does
    /// not compile (the caller denies).
    async fn live_grants(
        &self,
        id: &MissionId,
        now: UnixTime,
    ) -> Result<Result<GrantSet, String>, EnforceError> {
        Ok(compile_grants(&self.store.live_grants(id, now).await?))
    }
}

/// Live grants, compiled; `Err` with a reason if one does not compile (the
/// caller denies).
fn compile_grants(records: &[GrantRecord]) -> Result<GrantSet, String> {
    let deciders: Vec<(String, String)> = records
        .iter()
        .map(|g| (g.id.clone(), g.created_by.clone()))
        .collect();
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    for g in records {
        match (g.scope, &g.request_digest) {
            (GrantScope::Pattern, _) => patterns.push((g.id.as_str(), g.policy.as_str())),
            (scope, Some(d)) => exact.push(ExactGrant {
                id: g.id.clone(),
                request_digest: d.clone(),
                once: scope == GrantScope::Once,
            }),
            (_, None) => return Err(format!("grant `{}` names no call", g.id)),
        }
    }
    GrantSet::compile(patterns)
        .map(|set| set.with_exact(exact).with_deciders(deciders))
        .map_err(|d| d.to_string())
}
