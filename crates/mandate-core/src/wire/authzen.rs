//! OpenID AuthZEN Authorization API 1.0: the Access Evaluation(s) API and
//! the PDP metadata, as Mandate serves them (docs/authzen.md, ADR 0029).
//!
//! Unlike Mandate's own requests, these ignore members they do not know:
//! the specification says receivers MUST (its "JSON Serialization"). A
//! required member that is missing, or a member of the wrong type, is
//! still refused (`400`).

use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The most evaluations one `POST /access/v1/evaluations` may carry.
pub const MAX_EVALUATIONS: usize = 64;

/// An AuthZEN Subject. Mandate decides for agents acting under a mission:
/// `type` is `mandate_mission` (`id` the mission's id) or `mandate_agent`
/// (`id` the agent's name), and `properties.credential` carries the
/// mission credential that proves it.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthzenSubject {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub properties: Option<SubjectProperties>,
}

impl std::fmt::Debug for AuthzenSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzenSubject")
            .field("type_", &self.type_)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What Mandate reads of a Subject's properties; any other property is
/// ignored (Mandate knows who the agent acts for from its credential, not
/// from what the enforcement point says).
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectProperties {
    /// The agent's mission credential (the enforcement point has checked
    /// the agent's request signature by the mission key, as for
    /// `/v1/decide`). Without it the decision is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The agent's stated reason for the call, shown to the approver if
    /// the call escalates (its claim, not a fact; at most 1,000
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

impl std::fmt::Debug for SubjectProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectProperties")
            .field("justification", &self.justification)
            .finish_non_exhaustive()
    }
}

/// An AuthZEN Resource. Mandate decides it as `Resource::"{type}/{id}"`
/// with its properties as tags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthzenResource {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    /// Become the resource's tags: strings as they are, numbers and
    /// booleans as their JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An AuthZEN Action: a declared Cedar action, with its parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthzenAction {
    pub name: String,
    /// The action's parameters: part of the Cedar `context`, beside the
    /// request's `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /access/v1/evaluation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationRequest {
    #[serde(deserialize_with = "object")]
    pub subject: AuthzenSubject,
    #[serde(deserialize_with = "object")]
    pub action: AuthzenAction,
    #[serde(deserialize_with = "object")]
    pub resource: AuthzenResource,
    /// Request attributes for policy (Cedar `context.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One evaluation of a batch: what it leaves out comes from the request's
/// top-level defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationItem {
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<AuthzenSubject>,
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<AuthzenAction>,
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource: Option<AuthzenResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /access/v1/evaluations`: the top-level `subject`, `action`,
/// `resource` and `context` are defaults each evaluation may override.
/// Without `evaluations` (or with none) it is one evaluation of the
/// top-level members.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationsRequest {
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<AuthzenSubject>,
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<AuthzenAction>,
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource: Option<AuthzenResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// At most 64 (a longer list is refused with `400`).
    #[serde(
        default,
        deserialize_with = "objects_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub evaluations: Option<Vec<EvaluationItem>>,
    #[serde(
        default,
        deserialize_with = "object_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub options: Option<EvaluationsOptions>,
}

/// How a batch is run; other options are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationsOptions {
    /// `execute_all` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations_semantic: Option<EvaluationsSemantic>,
}

/// AuthZEN's evaluation semantics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EvaluationsSemantic {
    /// Every evaluation, every answer.
    #[default]
    ExecuteAll,
    /// Stop after the first `false` (which is answered).
    DenyOnFirstDeny,
    /// Stop after the first `true` (which is answered).
    PermitOnFirstPermit,
}

/// An AuthZEN Decision. `true` only for Mandate's `allow`; `false` for
/// `deny` and for `escalate`, whose `context.task` names the approval
/// request that was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationResponse {
    pub decision: bool,
    /// Why, on `false` (absent on `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DecisionContext>,
}

/// `POST /access/v1/evaluations`: `evaluations` in the order asked (cut
/// short by `deny_on_first_deny` / `permit_on_first_permit`), or, for a
/// request without evaluations, one `decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationsResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DecisionContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<Vec<EvaluationResponse>>,
}

/// Why a decision is `false`: what `/v1/decide` says, in AuthZEN's
/// decision context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionContext {
    /// Mandate's stable reason code (`boundary`, `out_of_scope`,
    /// `escalation`, `step_up`, `revoked`, `mission_ended`, …; see
    /// docs/api.md).
    pub reason: String,
    /// For a person, never a submitted value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Ids of the policies that determined the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission_id: Option<String>,
    /// For a delegated mission: the ancestor whose policy stopped or
    /// escalated the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<crate::Hop>,
    /// On an escalation: the approval request opened (or joined) for this
    /// call. Once it is approved, the same evaluation is `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<ApprovalTask>,
    /// An evaluation of a batch that failed: `false`, with what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EvaluationError>,
}

/// An approval request as a task handle, in the member names of the
/// AuthZEN Access Request and Approval profile (draft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalTask {
    /// The approval request's id (`apr_…`).
    pub id: String,
    /// `pending`.
    pub status: String,
    /// Where the agent (or an entitled principal) reads or long-polls it:
    /// `GET /v1/approvals/{id}?wait=N`.
    pub status_endpoint: String,
    /// When it expires unanswered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Why an evaluation of a batch could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationError {
    /// The HTTP status a single evaluation would have got.
    pub status: u16,
    /// Its problem code.
    pub code: String,
    pub message: String,
}

/// `GET /.well-known/authzen-configuration`: the PDP metadata, with the
/// endpoints Mandate serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthzenConfiguration {
    /// The PDP identifier: the authority's issuer URL.
    pub policy_decision_point: String,
    pub access_evaluation_endpoint: String,
    pub access_evaluations_endpoint: String,
}

/// A `T` read only from a JSON object: serde would also read a struct from
/// an array of its fields (`["read", null]` as an action).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(Object)
    }
}

fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|o| o.0)
}

fn object_opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(d).map(|o| o.map(|o| o.0))
}

fn objects_opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Object<T>>>::deserialize(d)
        .map(|o| o.map(|v| v.into_iter().map(|o| o.0).collect()))
}

#[cfg(test)]
mod tests {
    use super::{EvaluationRequest, EvaluationsRequest};

    #[test]
    fn members_are_objects_not_arrays_of_their_fields() {
        let ok = r#"{"subject": {"type": "mandate_mission", "id": "m", "properties": {"credential": "c", "x": 1}},
                     "action": {"name": "read"}, "resource": {"type": "doc", "id": "1"}, "more": true}"#;
        let r: EvaluationRequest = serde_json::from_str(ok).unwrap();
        assert_eq!(
            r.subject.properties.unwrap().credential.as_deref(),
            Some("c")
        );
        for bad in [
            r#"{"subject": ["mandate_mission", "m", null], "action": {"name": "read"}, "resource": {"type": "doc", "id": "1"}}"#,
            r#"{"subject": {"type": "t", "id": "m", "properties": [null, null]}, "action": {"name": "read"}, "resource": {"type": "doc", "id": "1"}}"#,
            r#"{"subject": {"type": "t", "id": "m"}, "action": ["read"], "resource": {"type": "doc", "id": "1"}}"#,
            r#"{"subject": {"type": "t", "id": "m"}, "action": {"name": "read"}, "resource": ["doc", "1"]}"#,
        ] {
            assert!(
                serde_json::from_str::<EvaluationRequest>(bad).is_err(),
                "{bad}"
            );
        }
        for bad in [
            r#"{"evaluations": [["s", null, null, null]]}"#,
            r#"{"evaluations": [{"action": ["read"]}]}"#,
            r#"{"options": ["execute_all"]}"#,
            r#"{"subject": ["t", "m"]}"#,
        ] {
            assert!(
                serde_json::from_str::<EvaluationsRequest>(bad).is_err(),
                "{bad}"
            );
        }
        let r: EvaluationsRequest = serde_json::from_str(
            r#"{"evaluations": [{}, {"action": {"name": "x"}}], "options": null}"#,
        )
        .unwrap();
        assert_eq!(r.evaluations.map(|v| v.len()), Some(2));
    }
}
