//! What the server tells Prometheus about itself: `GET /metrics`, in the
//! Prometheus text format (ADR 0025; docs/observability.md lists every
//! metric).
//!
//! Labels are bounded and say nothing of who: the front door, the
//! decision and its reason code, the pipeline stage, a configured route or
//! MCP server. Never a mission, agent, principal, path or argument.
//!
//! Recording happens on the request path, so it costs an atomic add or
//! two: every handle is made before it is needed (a decision counter on
//! its first use, kept in a `OnceLock`), and nothing is allocated or
//! locked per request. Gauges of state (pending approvals, MCP sessions)
//! are read when scraped.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mandate_core::Decision;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Where a call came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// `POST /v1/decide`, for an external enforcement point.
    Decide,
    /// The HTTP gateway, `/gw/…`.
    Gateway,
    /// The MCP gateway, `/mcp/…`.
    Mcp,
    /// OpenID AuthZEN, `POST /access/v1/evaluation(s)`, for an external
    /// enforcement point.
    Authzen,
}

impl Door {
    const ALL: [Self; 4] = [Self::Decide, Self::Gateway, Self::Mcp, Self::Authzen];

    const fn as_str(self) -> &'static str {
        match self {
            Self::Decide => "decide",
            Self::Gateway => "gateway",
            Self::Mcp => "mcp",
            Self::Authzen => "authzen",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A stage of the enforcement pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The credential (and a gateway request's signature) checked.
    Verify,
    /// Names, mission state, policy and grants.
    Decide,
    /// The decision made durable in the audit log.
    Record,
    /// The allowed call sent upstream, until its answer (its head, on the
    /// HTTP gateway) came back.
    Forward,
}

impl Stage {
    const ALL: [Self; 4] = [Self::Verify, Self::Decide, Self::Record, Self::Forward];

    const fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Decide => "decide",
            Self::Record => "record",
            Self::Forward => "forward",
        }
    }
}

/// Why an upstream failed a forwarded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// Could not be reached (connection refused, reset, a server process
    /// gone).
    Unreachable,
    /// Did not answer in time.
    Timeout,
    /// Answered with a server error (HTTP 5xx), or refused what the
    /// gateway asked it itself (an MCP server's tool list).
    ServerError,
}

impl UpstreamError {
    const ALL: [Self; 3] = [Self::Unreachable, Self::Timeout, Self::ServerError];

    const fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::ServerError => "server_error",
        }
    }
}

const DECISIONS: [Decision; 3] = [Decision::Allow, Decision::Deny, Decision::Escalate];

/// Every reason code a decision (or a recorded refusal) may carry, sorted:
/// each has its own label value; anything else is counted as `other`
/// (a code the list has not caught up with must not add series without
/// bound).
const CODES: &[&str] = &[
    "ambiguous_path",
    "approval_queue_full",
    "approval_required",
    "audit_unavailable",
    "bad_credential",
    "bad_digest",
    "bad_proof",
    "bad_signature",
    "bad_signature_input",
    "body_timeout",
    "boundary",
    "budget_exhausted",
    "credential_expired",
    "credential_not_yet_valid",
    "escalation",
    "grant",
    "header_mismatch",
    "initialize",
    "insufficient_trust",
    "internal",
    "invalid_json",
    "invalid_params",
    "invalid_request",
    "key_mismatch",
    "method_not_allowed",
    "method_not_found",
    "mission_ended",
    "mission_mismatch",
    "mission_not_started",
    "no_approver",
    "no_route_rule",
    "out_of_scope",
    "payload_too_large",
    "policy_error",
    "proof_replayed",
    "replay_cache_full",
    "revoked",
    "scope",
    "session_limit",
    "signature_incomplete",
    "signature_replayed",
    "signature_required",
    "signature_stale",
    "step_up",
    "unknown_mission",
    "unknown_session",
    "unknown_tool",
    "unsupported_protocol_version",
    "upstream_error",
    "upstream_timeout",
    "upstream_unavailable",
    "vault_secret_missing",
];

/// The label value for codes [`CODES`] does not list.
const OTHER: &str = "other";

/// Seconds, from a tenth of a millisecond (a cached decision) to ten
/// seconds (an upstream's timeout).
const SECONDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Events in one group commit, up to the audit writer's largest group.
const EVENTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The server's metrics. Cheap to share (`Arc`).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    /// `decisions`' children, by front door, decision and code (the last
    /// code slot is [`OTHER`]), each made on first use.
    decision_slots: Box<[OnceLock<IntCounter>]>,
    /// By front door, then stage.
    stages: Box<[Histogram]>,
    commit_events: Histogram,
    commit_seconds: Histogram,
    /// Groups sent whole on the writer's predictions: held, missed.
    predicted: [IntCounter; 2],
    upstream_errors: IntCounterVec,
    approvals_pending: IntGauge,
    mcp_sessions: IntGaugeVec,
    mcp_channels: IntGaugeVec,
    audit_up: IntGauge,
}

/// Why the metrics could not be set up (a name registered twice: a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric. `routes` and `mcp_servers` (the configured
    /// names) start with their upstream error counters at zero, so a rate
    /// over them is defined before the first error.
    pub(crate) fn new<'a>(
        routes: impl IntoIterator<Item = &'a str>,
        mcp_servers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "mandate_decisions_total",
                "Decisions recorded, by front door, decision and reason code (refusals of an authentic credential's request included).",
            ),
            &["front_door", "decision", "code"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        let stage_vec = HistogramVec::new(
            HistogramOpts::new(
                "mandate_stage_duration_seconds",
                "Time a governed call spent in each stage of the pipeline: verify, decide, record, forward.",
            )
            .buckets(SECONDS.to_vec()),
            &["front_door", "stage"],
        )?;
        registry.register(Box::new(stage_vec.clone()))?;
        let mut stages = Vec::with_capacity(Door::ALL.len() * Stage::ALL.len());
        for door in Door::ALL {
            for stage in Stage::ALL {
                stages.push(
                    stage_vec.get_metric_with_label_values(&[door.as_str(), stage.as_str()])?,
                );
            }
        }
        let commit_events = Histogram::with_opts(
            HistogramOpts::new(
                "mandate_audit_commit_events",
                "Events committed together in one audit group commit (one transaction, one sync).",
            )
            .buckets(EVENTS.to_vec()),
        )?;
        registry.register(Box::new(commit_events.clone()))?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "mandate_audit_commit_duration_seconds",
                "Time one audit group commit took, its sync included.",
            )
            .buckets(SECONDS.to_vec()),
        )?;
        registry.register(Box::new(commit_seconds.clone()))?;
        let predicted_vec = IntCounterVec::new(
            Opts::new(
                "mandate_audit_predicted_groups_total",
                "Audit groups sent whole with their commit on the writer's predictions (PostgreSQL), by outcome: held (committed so), missed (run again as usual).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(predicted_vec.clone()))?;
        let predicted = [
            predicted_vec.get_metric_with_label_values(&["held"])?,
            predicted_vec.get_metric_with_label_values(&["missed"])?,
        ];
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "mandate_upstream_errors_total",
                "Forwarded calls an upstream failed, by front door, route or MCP server, and kind (unreachable, timeout, server_error).",
            ),
            &["front_door", "upstream", "kind"],
        )?;
        registry.register(Box::new(upstream_errors.clone()))?;
        for (door, names) in [
            (Door::Gateway, routes.into_iter().collect::<Vec<_>>()),
            (Door::Mcp, mcp_servers.into_iter().collect()),
        ] {
            for name in names {
                for kind in UpstreamError::ALL {
                    upstream_errors.get_metric_with_label_values(&[
                        door.as_str(),
                        name,
                        kind.as_str(),
                    ])?;
                }
            }
        }
        let approvals_pending = IntGauge::new(
            "mandate_approvals_pending",
            "Approval requests waiting for a person, of all missions (read from the database when scraped).",
        )?;
        registry.register(Box::new(approvals_pending.clone()))?;
        let mcp_sessions = IntGaugeVec::new(
            Opts::new(
                "mandate_mcp_sessions",
                "Open MCP sessions held by this node, by MCP server (stateless channels included).",
            ),
            &["server"],
        )?;
        registry.register(Box::new(mcp_sessions.clone()))?;
        let mcp_channels = IntGaugeVec::new(
            Opts::new(
                "mandate_mcp_channels",
                "Of the open MCP sessions, those serving a mission's stateless (2026-07-28) requests, by MCP server.",
            ),
            &["server"],
        )?;
        registry.register(Box::new(mcp_channels.clone()))?;
        let audit_up = IntGauge::new(
            "mandate_audit_up",
            "1 while the audit log takes events; 0 once a commit failed (every decision is then refused until a restart).",
        )?;
        registry.register(Box::new(audit_up.clone()))?;
        let build = IntGaugeVec::new(
            Opts::new("mandate_build_info", "The running version of Mandate."),
            &["version"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build
            .get_metric_with_label_values(&[env!("CARGO_PKG_VERSION")])?
            .set(1);
        let slots = Door::ALL.len() * DECISIONS.len() * (CODES.len() + 1);
        Ok(Self {
            registry,
            decisions,
            decision_slots: (0..slots).map(|_| OnceLock::new()).collect(),
            stages: stages.into_boxed_slice(),
            commit_events,
            commit_seconds,
            predicted,
            upstream_errors,
            approvals_pending,
            mcp_sessions,
            mcp_channels,
            audit_up,
        })
    }

    /// Counts a decision.
    pub(crate) fn decision(&self, door: Door, decision: Decision, code: &str) {
        let (code_at, label) = match CODES.binary_search(&code) {
            Ok(i) => (i, CODES.get(i).copied().unwrap_or(OTHER)),
            Err(_) => (CODES.len(), OTHER),
        };
        let d = match decision {
            Decision::Allow => 0,
            Decision::Deny => 1,
            Decision::Escalate => 2,
        };
        let at = (door.index() * DECISIONS.len() + d) * (CODES.len() + 1) + code_at;
        let Some(slot) = self.decision_slots.get(at) else {
            return;
        };
        let counter = slot.get_or_init(|| {
            self.decisions
                .with_label_values(&[door.as_str(), decision.as_str(), label])
        });
        counter.inc();
    }

    /// Observes how long a call spent in a stage.
    pub(crate) fn stage(&self, door: Door, stage: Stage, took: Duration) {
        let at = door.index() * Stage::ALL.len() + stage as usize;
        if let Some(h) = self.stages.get(at) {
            h.observe(took.as_secs_f64());
        }
    }

    /// Counts an upstream's failure (not the request path's fast case: the
    /// label lookup here is a map's).
    pub(crate) fn upstream_error(&self, door: Door, upstream: &str, kind: UpstreamError) {
        self.upstream_errors
            .with_label_values(&[door.as_str(), upstream, kind.as_str()])
            .inc();
    }

    /// The text exposition, with the gauges of state set from `state`.
    pub(crate) fn render(&self, state: &Scraped) -> String {
        self.approvals_pending
            .set(i64::try_from(state.approvals_pending).unwrap_or(i64::MAX));
        self.audit_up.set(i64::from(state.audit_up));
        // Servers no longer open are dropped, so a gauge does not stay
        // at its last value.
        self.mcp_sessions.reset();
        self.mcp_channels.reset();
        for (server, sessions, channels) in &state.mcp {
            let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            self.mcp_sessions
                .with_label_values(&[server])
                .set(n(*sessions));
            self.mcp_channels
                .with_label_values(&[server])
                .set(n(*channels));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What is read when the metrics are scraped.
#[derive(Debug, Default)]
pub(crate) struct Scraped {
    pub approvals_pending: u64,
    pub audit_up: bool,
    /// By configured MCP server: open sessions, of which stateless
    /// channels.
    pub mcp: Vec<(String, usize, usize)>,
}

/// The audit writer's group commits, observed.
#[derive(Debug)]
pub(crate) struct Commits(pub Arc<Metrics>);

impl mandate_enforce::CommitObserver for Commits {
    fn committed(&self, events: usize, took: Duration) {
        // At most 1,024 events: exact as a float.
        #[expect(
            clippy::cast_precision_loss,
            reason = "a group holds at most 1,024 events"
        )]
        self.0.commit_events.observe(events as f64);
        self.0.commit_seconds.observe(took.as_secs_f64());
    }

    fn predicted(&self, held: bool) {
        self.0.predicted[usize::from(!held)].inc();
    }
}

/// The media type of the text exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_and_unique() {
        assert!(CODES.windows(2).all(|w| w[0] < w[1]));
    }

    /// Every decision reason code and every problem code a gateway
    /// refusal records, as the API reference lists them, is its own label
    /// value (not `other`).
    #[test]
    fn every_documented_decision_code_has_its_own_label() {
        let api = include_str!("../../../docs/api.md");
        let reasons = api
            .split("- `code`: a stable reason.")
            .nth(1)
            .and_then(|t| t.split("- `hop`").next())
            .unwrap();
        let recorded = [
            "signature_incomplete",
            "signature_stale",
            "signature_replayed",
            "bad_digest",
            "no_route_rule",
            "ambiguous_path",
            "vault_secret_missing",
            "upstream_unavailable",
            "upstream_timeout",
        ];
        let documented: Vec<&str> = reasons
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
            // The decisions themselves, named before their codes.
            .filter(|c| !["allow", "deny", "escalate"].contains(c))
            .chain(recorded)
            .collect();
        assert!(documented.len() > 20, "{documented:?}");
        for code in documented {
            assert!(
                CODES.binary_search(&code).is_ok(),
                "`{code}` is not in CODES"
            );
        }
    }

    /// What is counted is what the exposition shows, with its labels; an
    /// unknown code is `other`.
    #[test]
    fn decisions_are_counted_under_their_labels() {
        let m = Metrics::new(["billing"], ["files"]).unwrap();
        m.decision(Door::Gateway, Decision::Allow, "scope");
        m.decision(Door::Gateway, Decision::Allow, "scope");
        m.decision(Door::Mcp, Decision::Deny, "a_code_nobody_knows");
        m.stage(Door::Decide, Stage::Record, Duration::from_millis(3));
        let text = m.render(&Scraped::default());
        assert!(text.contains(
            "mandate_decisions_total{code=\"scope\",decision=\"allow\",front_door=\"gateway\"} 2"
        ));
        assert!(text.contains(
            "mandate_decisions_total{code=\"other\",decision=\"deny\",front_door=\"mcp\"} 1"
        ));
        assert!(text.contains(
            "mandate_stage_duration_seconds_count{front_door=\"decide\",stage=\"record\"} 1"
        ));
        assert!(text.contains(
            "mandate_upstream_errors_total{front_door=\"gateway\",kind=\"timeout\",upstream=\"billing\"} 0"
        ));
    }
}
