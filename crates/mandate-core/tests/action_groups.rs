//! Action groups and request shapes: what a policy can say about actions,
//! and which requests are refused before any policy runs. A decision's
//! entity store holds every declared action with its groups, so a condition
//! on another action's groups means what it says; a request is checked
//! against the schema (at load for a context that is only Mandate's own).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]
use std::collections::BTreeMap;

use mandate_core::{
    Decision, DecisionRequest, GrantSet, MissionBody, MissionId, MissionKey, MissionLimits,
    MissionPolicies, MissionPolicySet, MissionSpec, MissionStatus, OrgPolicies, OsRandom,
    OutOfScope, PolicySource, ResourceKind, ResourceRef, Trust, UnixTime, decide, mission_s256,
};
use serde_json::{Map, Value, json};

const T0: UnixTime = UnixTime(1_700_000_000);

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

fn mission_under(org: &OrgPolicies, scope: &str) -> mandate_core::Mission {
    let body = MissionBody::new(
        MissionSpec {
            agent: "billing-bot".parse().unwrap(),
            goal: "g".into(),
            policies: MissionPolicies {
                scope: scope.into(),
                ..Default::default()
            },
            ttl_secs: 3_600,
            budget: 10,
            out_of_scope: OutOfScope::Deny,
        },
        MissionId::generate(&OsRandom).unwrap(),
        "http://issuer.test",
        "alice".parse().unwrap(),
        T0,
        MissionLimits::default(),
        Some(org.schema()),
    )
    .unwrap();
    let s256 = mission_s256(&body).unwrap();
    let jkt = MissionKey::generate(&OsRandom)
        .unwrap()
        .thumbprint()
        .clone();
    mandate_core::Mission {
        body,
        s256,
        status: MissionStatus::Active {
            jkt,
            started_at: T0,
        },
    }
}

fn res() -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Resource { id: "x".into() },
        tags: BTreeMap::new(),
    }
}

fn run(
    org: &OrgPolicies,
    m: &mandate_core::Mission,
    action: &str,
    r: &ResourceRef,
    ctx: Value,
) -> mandate_core::Outcome {
    let compiled = MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap();
    let grants = GrantSet::compile(std::iter::empty::<(&str, &str)>()).unwrap();
    let ctx: Map<String, Value> = ctx.as_object().unwrap().clone();
    decide(
        org,
        &compiled,
        &grants,
        &DecisionRequest {
            mission: m,
            budget_used: 0,
            action,
            resource: r,
            context: &ctx,
            trust: Trust::Signed,
            required: Trust::Signed,
            now: T0.plus(10),
        },
    )
}

const SCHEMA: &str = "action dangerous; action destructive in [dangerous]; \
    action delete_repo in [dangerous] appliesTo { principal: Agent, \
    resource: [Resource, Route, Tool], context: { trust: String, time: Long } }; \
    action wipe_disk in [destructive] appliesTo { principal: Agent, \
    resource: [Resource], context: { trust: String, time: Long } };";

/// A boundary whose condition reads the group membership of an action
/// other than the request's own.
#[test]
fn boundary_reading_another_actions_groups() {
    let org = OrgPolicies::load(
        &[src("a.cedarschema", SCHEMA)],
        &[src(
            "b.cedar",
            "@id(\"kill-switch\") forbid(principal, action, resource) \
             when { Action::\"wipe_disk\" in Action::\"dangerous\" };",
        )],
    )
    .unwrap();
    let m = mission_under(&org, "permit(principal, action, resource);");
    let out = run(&org, &m, "read", &res(), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary"),
        "{out:?}"
    );
}

/// Same, but the other action is referenced in a set.
#[test]
fn boundary_reading_another_action_in_set() {
    let org = OrgPolicies::load(
        &[src("a.cedarschema", SCHEMA)],
        &[src("b.cedar",
            "@id(\"k\") forbid(principal, action, resource) \
             when { action == Action::\"read\" && Action::\"wipe_disk\" in [Action::\"destructive\"] };")],
    )
    .unwrap();
    let m = mission_under(&org, "permit(principal, action, resource);");
    let out = run(&org, &m, "read", &res(), json!({}));
    assert_eq!(out.decision, Decision::Deny, "{out:?}");
}

/// A group of a group; group actions and resource types that do not apply.
#[test]
fn nested_groups_and_group_actions() {
    let org = OrgPolicies::load(
        &[src("a.cedarschema", SCHEMA)],
        &[src(
            "b.cedar",
            "@id(\"k\") forbid(principal, action in [Action::\"dangerous\"], resource);",
        )],
    )
    .unwrap();
    let m = mission_under(&org, "permit(principal, action, resource);");
    assert_eq!(
        run(&org, &m, "wipe_disk", &res(), json!({})).decision,
        Decision::Deny
    );
    assert_eq!(
        run(&org, &m, "delete_repo", &res(), json!({})).decision,
        Decision::Deny
    );
    // group actions with no appliesTo
    let out = run(&org, &m, "dangerous", &res(), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
    let out = run(&org, &m, "destructive", &res(), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
    // wipe_disk on a Tool: not applicable
    let tool = ResourceRef {
        kind: ResourceKind::Tool {
            server: "s".into(),
            tool: "t".into(),
        },
        tags: BTreeMap::new(),
    };
    let out = run(&org, &m, "wipe_disk", &tool, json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
    let mcp = ResourceRef {
        kind: ResourceKind::McpResource {
            server: "s".into(),
            uri: "u".into(),
        },
        tags: BTreeMap::new(),
    };
    let out = run(&org, &m, "read", &mcp, json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
}

/// An action in two groups, optional context attributes.
#[test]
fn multi_group_and_optional_context() {
    let org = OrgPolicies::load(
        &[src("a.cedarschema",
            "action g1; action g2; action top; action mid in [top]; \
             action x in [g1, g2, mid] appliesTo { principal: Agent, resource: [Resource], \
             context: { trust: String, time: Long, note?: String } };")],
        &[src("b.cedar",
            "@id(\"k2\") forbid(principal, action in Action::\"g2\", resource) when { !(context has note) };\n\
             @id(\"k3\") forbid(principal, action in Action::\"top\", resource) when { context has note && context.note == \"x\" };")],
    )
    .unwrap();
    let m = mission_under(&org, "permit(principal, action, resource);");
    let out = run(&org, &m, "x", &res(), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary"),
        "{out:?}"
    );
    let out = run(&org, &m, "x", &res(), json!({"note": "x"}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary"),
        "{out:?}"
    );
    let out = run(&org, &m, "x", &res(), json!({"note": "y"}));
    assert_eq!(out.decision, Decision::Allow, "{out:?}");
    let out = run(&org, &m, "x", &res(), json!({"note": 5}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
    let out = run(&org, &m, "x", &res(), json!({"trust": "approved"}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
    let out = run(&org, &m, "x", &res(), json!({"extra": 1}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request"),
        "{out:?}"
    );
}

/// An escalate policy that reads another action's groups asks.
#[test]
fn escalate_reading_another_actions_groups() {
    let org = OrgPolicies::load(
        &[src("a.cedarschema", SCHEMA)],
        &[src("e.cedar",
            "@id(\"ask\") @kind(\"escalate\") permit(principal, action == Action::\"read\", resource) \
             when { Action::\"wipe_disk\" in Action::\"dangerous\" };")],
    )
    .unwrap();
    let m = mission_under(&org, "permit(principal, action, resource);");
    let out = run(&org, &m, "read", &res(), json!({}));
    assert_eq!(out.decision, Decision::Escalate, "{out:?}");
}

/// A scope with `unless` over another action's groups does not cover.
#[test]
fn scope_unless_reading_another_actions_groups() {
    let org = OrgPolicies::load(&[src("a.cedarschema", SCHEMA)], &[]).unwrap();
    let m = mission_under(
        &org,
        "permit(principal, action, resource) unless { Action::\"wipe_disk\" in Action::\"dangerous\" };",
    );
    let out = run(&org, &m, "read", &res(), json!({}));
    assert_eq!(out.decision, Decision::Deny, "{out:?}");
}
