//! The decision semantics of docs/adr/0003-decision-engine.md, row by row, through the public API.

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
    state_check,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const T0: UnixTime = UnixTime(1_700_000_000);

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

fn org() -> OrgPolicies {
    OrgPolicies::load(
        &[src(
            "actions.cedarschema",
            "action refund appliesTo { principal: Agent, resource: [Resource, Route, Tool], \
             context: { trust: String, time: Long, amount: Long } };",
        )],
        &[
            src("hr.cedar", "@id(\"no-hr\")\nforbid(principal, action, resource) when { resource.hasTag(\"hr\") };"),
            src(
                "refunds.cedar",
                "@id(\"big-refunds\") @kind(\"escalate\")\n\
                 permit(principal, action == Action::\"refund\", resource) when { context.amount > 50000 };",
            ),
        ],
    )
    .unwrap()
}

fn mission(policies: MissionPolicies, out_of_scope: OutOfScope) -> mandate_core::Mission {
    mission_under(&org(), policies, out_of_scope)
}

/// A started mission whose policies are validated against `org`'s schema.
fn mission_under(
    org: &OrgPolicies,
    policies: MissionPolicies,
    out_of_scope: OutOfScope,
) -> mandate_core::Mission {
    let body = body_under(org, policies, out_of_scope).unwrap();
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
        attestation: None,
        taint: None,
    }
}

fn body_under(
    org: &OrgPolicies,
    policies: MissionPolicies,
    out_of_scope: OutOfScope,
) -> Result<MissionBody, mandate_core::InputError> {
    MissionBody::new(
        MissionSpec {
            agent: "billing-bot".parse().unwrap(),
            goal: "Reconcile invoices".into(),
            policies,
            ttl_secs: 3_600,
            budget: 10,
            out_of_scope,
        },
        MissionId::generate(&OsRandom).unwrap(),
        "http://issuer.test",
        "alice".parse().unwrap(),
        T0,
        MissionLimits::default(),
        Some(org.schema()),
    )
}

fn billing_scope() -> MissionPolicies {
    MissionPolicies {
        scope: "permit(principal, action in [Action::\"read\", Action::\"refund\"], resource) \
                when { resource.hasTag(\"billing\") };"
            .into(),
        ..MissionPolicies::default()
    }
}

fn resource(tags: &[&str]) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Resource {
            id: "invoice-42".into(),
        },
        tags: tags
            .iter()
            .map(|t| ((*t).to_owned(), "yes".to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

struct Case<'a> {
    org: &'a OrgPolicies,
    mission: &'a mandate_core::Mission,
    grants: &'a [(&'a str, &'a str)],
}

impl Case<'_> {
    fn decide(&self, action: &str, res: &ResourceRef, context: Value) -> mandate_core::Outcome {
        let compiled = MissionPolicySet::compile(
            self.mission.body.id.as_str(),
            &self.mission.body.policies,
            None,
        )
        .unwrap();
        let grants = GrantSet::compile(self.grants.iter().copied()).unwrap();
        let ctx: Map<String, Value> = context.as_object().unwrap().clone();
        decide(
            self.org,
            &compiled,
            &grants,
            &DecisionRequest {
                mission: self.mission,
                budget_used: 0,
                action,
                resource: res,
                context: &ctx,
                trust: Trust::Signed,
                required: Trust::Signed,
                now: T0.plus(10),
            },
        )
    }
}

#[test]
fn scope_allows_and_names_the_policy() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Escalate));
    let out = Case {
        org: &org,
        mission: &m,
        grants: &[],
    }
    .decide("read", &resource(&["billing"]), json!({}));
    assert_eq!(out.decision, Decision::Allow);
    assert_eq!(out.code, "scope");
    assert_eq!(out.policies, vec![format!("{}/scope/0", m.body.id)]);
    assert_eq!(out.grant, None);
}

#[test]
fn a_boundary_beats_scope_escalation_and_grants() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Escalate));
    let grant = [("g1", "permit(principal, action, resource);")];
    let case = Case {
        org: &org,
        mission: &m,
        grants: &grant,
    };
    for (action, context) in [("read", json!({})), ("refund", json!({ "amount": 90_000 }))] {
        let out = case.decide(action, &resource(&["billing", "hr"]), context);
        assert_eq!(out.decision, Decision::Deny, "{action}");
        assert_eq!(out.code, "boundary");
        assert_eq!(out.policies, vec!["hr.cedar/no-hr".to_owned()]);
    }
    // A mission's own boundary also wins over its scope.
    let mut p = billing_scope();
    p.boundaries =
        "@id(\"no-deletes\") forbid(principal, action == Action::\"delete\", resource);".into();
    p.scope = "permit(principal, action, resource);".into();
    let m2 = mission(p, OutOfScope::Escalate);
    let out = Case {
        org: &org,
        mission: &m2,
        grants: &grant,
    }
    .decide("delete", &resource(&[]), json!({}));
    assert_eq!(
        (out.decision, out.policies),
        (
            Decision::Deny,
            vec![format!("{}/boundaries/no-deletes", m2.body.id)]
        )
    );
}

#[test]
fn escalation_beats_scope_unless_a_grant_covers_it() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Deny));
    let small = Case {
        org: &org,
        mission: &m,
        grants: &[],
    }
    .decide("refund", &resource(&["billing"]), json!({ "amount": 100 }));
    assert_eq!(
        (small.decision, small.code.as_str()),
        (Decision::Allow, "scope")
    );

    let big = Case {
        org: &org,
        mission: &m,
        grants: &[],
    }
    .decide(
        "refund",
        &resource(&["billing"]),
        json!({ "amount": 60_000 }),
    );
    assert_eq!(
        (big.decision, big.code.as_str()),
        (Decision::Escalate, "escalation")
    );
    assert_eq!(big.policies, vec!["refunds.cedar/big-refunds".to_owned()]);

    let grant = [(
        "g-refund-42",
        "permit(principal, action == Action::\"refund\", resource == Resource::\"invoice-42\");",
    )];
    let granted = Case {
        org: &org,
        mission: &m,
        grants: &grant,
    }
    .decide(
        "refund",
        &resource(&["billing"]),
        json!({ "amount": 60_000 }),
    );
    assert_eq!(
        (granted.decision, granted.grant.as_deref()),
        (Decision::Allow, Some("grant/g-refund-42"))
    );

    // A grant for another resource does not cover it.
    let other = [(
        "g-other",
        "permit(principal, action == Action::\"refund\", resource == Resource::\"invoice-7\");",
    )];
    let not = Case {
        org: &org,
        mission: &m,
        grants: &other,
    }
    .decide(
        "refund",
        &resource(&["billing"]),
        json!({ "amount": 60_000 }),
    );
    assert_eq!(not.decision, Decision::Escalate);
}

#[test]
fn out_of_scope_follows_the_mission_mode() {
    let org = org();
    let esc = mission(billing_scope(), OutOfScope::Escalate);
    let deny = mission(billing_scope(), OutOfScope::Deny);
    let out = Case {
        org: &org,
        mission: &esc,
        grants: &[],
    }
    .decide("write", &resource(&["billing"]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Escalate, "out_of_scope")
    );
    let out = Case {
        org: &org,
        mission: &deny,
        grants: &[],
    }
    .decide("write", &resource(&["billing"]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "out_of_scope")
    );
    assert!(out.policies.is_empty());
    // A grant makes an out-of-scope request negotiable only where the mission allows it.
    let grant = [(
        "g-write",
        "permit(principal, action == Action::\"write\", resource);",
    )];
    let out = Case {
        org: &org,
        mission: &esc,
        grants: &grant,
    }
    .decide("write", &resource(&["billing"]), json!({}));
    assert_eq!(
        (out.decision, out.grant.as_deref()),
        (Decision::Allow, Some("grant/g-write"))
    );
    let out = Case {
        org: &org,
        mission: &deny,
        grants: &grant,
    }
    .decide("write", &resource(&["billing"]), json!({}));
    assert_eq!(out.decision, Decision::Deny);
    // Nor can a grant pass itself off as scope (or anything else) to get around that.
    assert!(
        GrantSet::compile([("g", "@kind(\"scope\") permit(principal, action, resource);")])
            .is_err()
    );
    assert!(GrantSet::compile([("g", "forbid(principal, action, resource);")]).is_err());
}

#[test]
fn any_evaluation_error_denies() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Escalate));
    let case = Case {
        org: &org,
        mission: &m,
        grants: &[],
    };
    // A request that does not fit its action's declared context is refused.
    let out = case.decide("refund", &resource(&["billing"]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
    let out = case.decide(
        "refund",
        &resource(&["billing"]),
        json!({ "amount": "lots" }),
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
    let out = case.decide("read", &resource(&["billing"]), json!({ "surprise": 1 }));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
    // An action the schema does not declare is refused.
    let out = case.decide("nonexistent", &resource(&["billing"]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
    // A policy that fails at evaluation (an overflow) denies, even though
    // another policy of the mission allows the request.
    let mut p = billing_scope();
    p.scope.push_str(
        "\n@id(\"scaled\") permit(principal, action == Action::\"refund\", resource) \
         when { context.amount * 1000000 > 0 };",
    );
    let m2 = mission(p, OutOfScope::Escalate);
    let out = Case {
        org: &org,
        mission: &m2,
        grants: &[],
    }
    .decide(
        "refund",
        &resource(&["billing"]),
        json!({ "amount": 9_000_000_000_000_000i64 }),
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "policy_error")
    );
    assert!(
        out.policies
            .contains(&format!("{}/scope/scaled", m2.body.id)),
        "{:?}",
        out.policies
    );
    // Mandate's own context keys cannot be forged.
    let out = case.decide(
        "read",
        &resource(&["billing"]),
        json!({ "trust": "approved" }),
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
}

#[test]
fn boundaries_over_action_groups_hold() {
    let org = OrgPolicies::load(
        &[src(
            "actions.cedarschema",
            "action dangerous; action destructive in [dangerous]; \
             action delete_repo in [dangerous] appliesTo { principal: Agent, \
             resource: [Resource, Route, Tool], context: { trust: String, time: Long } }; \
             action wipe_disk in [destructive] appliesTo { principal: Agent, \
             resource: [Resource], context: { trust: String, time: Long } }; \
             action pay appliesTo { principal: Agent, resource: [Resource], \
             context: { trust: String, time: Long, amount: Long } };",
        )],
        &[src(
            "danger.cedar",
            "@id(\"no-danger\") forbid(principal, action in Action::\"dangerous\", resource);",
        )],
    )
    .unwrap();
    let m = mission_under(&org, scope_all(), OutOfScope::Escalate);
    let case = Case {
        org: &org,
        mission: &m,
        grants: &[],
    };
    let out = case.decide("delete_repo", &resource(&[]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary")
    );
    assert_eq!(out.policies, vec!["danger.cedar/no-danger".to_owned()]);
    // A group of a group: the boundary reaches it too.
    let out = case.decide("wipe_disk", &resource(&[]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary")
    );
    assert_eq!(
        case.decide("read", &resource(&[]), json!({})).decision,
        Decision::Allow
    );
    // An action that needs more context than Mandate's own is refused
    // without it, and decided with it.
    let out = case.decide("pay", &resource(&[]), json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
    assert_eq!(
        case.decide("pay", &resource(&[]), json!({ "amount": 5 }))
            .decision,
        Decision::Allow
    );
    // A resource type the action does not apply to is refused.
    let tool = ResourceRef {
        kind: ResourceKind::Tool {
            server: "git".into(),
            tool: "wipe".into(),
        },
        tags: BTreeMap::new(),
    };
    let out = case.decide("wipe_disk", &tool, json!({}));
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "invalid_request")
    );
}

/// A mission scope that permits everything (boundaries still apply).
fn scope_all() -> MissionPolicies {
    MissionPolicies {
        scope: "permit(principal, action, resource);".into(),
        ..Default::default()
    }
}

/// The schema of the action-group tests: a group of a group, and actions
/// that belong to them.
const GROUPS: &str = "action dangerous; action destructive in [dangerous]; \
    action delete_repo in [dangerous] appliesTo { principal: Agent, \
    resource: [Resource, Route, Tool], context: { trust: String, time: Long } }; \
    action wipe_disk in [destructive] appliesTo { principal: Agent, \
    resource: [Resource], context: { trust: String, time: Long } };";

/// `read` on a plain resource under `org_policy` and a mission `scope`,
/// with out of scope denied.
fn decide_read_under(org_policy: Option<&str>, scope: &str) -> mandate_core::Outcome {
    let policies: Vec<PolicySource> = org_policy
        .map(|p| src("org.cedar", p))
        .into_iter()
        .collect();
    let org = OrgPolicies::load(&[src("groups.cedarschema", GROUPS)], &policies).unwrap();
    let m = mission_under(
        &org,
        MissionPolicies {
            scope: scope.into(),
            ..Default::default()
        },
        OutOfScope::Deny,
    );
    Case {
        org: &org,
        mission: &m,
        grants: &[],
    }
    .decide("read", &resource(&[]), json!({}))
}

/// A condition may read the groups of an action other than the request's
/// own: every declared action is in the store, with its groups.
#[test]
fn a_condition_on_another_actions_groups_holds() {
    let all = "permit(principal, action, resource);";
    let out = decide_read_under(
        Some(
            "@id(\"kill-switch\") forbid(principal, action, resource) when { Action::\"wipe_disk\" in Action::\"dangerous\" };",
        ),
        all,
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary"),
        "{out:?}"
    );
    let out = decide_read_under(
        Some(
            "@id(\"k\") forbid(principal, action, resource) when { action == Action::\"read\" && Action::\"wipe_disk\" in [Action::\"destructive\"] };",
        ),
        all,
    );
    assert_eq!(out.decision, Decision::Deny, "{out:?}");
    let out = decide_read_under(
        Some(
            "@id(\"ask\") @kind(\"escalate\") permit(principal, action == Action::\"read\", resource) when { Action::\"wipe_disk\" in Action::\"dangerous\" };",
        ),
        all,
    );
    assert_eq!(out.decision, Decision::Escalate, "{out:?}");
    let out = decide_read_under(
        None,
        "permit(principal, action, resource) unless { Action::\"wipe_disk\" in Action::\"dangerous\" };",
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "out_of_scope"),
        "{out:?}"
    );
}

/// Group actions (no `appliesTo`) and resource types an action does not
/// apply to are refused before any policy.
#[test]
fn requests_that_do_not_fit_the_schema_are_refused() {
    let org = OrgPolicies::load(&[src("groups.cedarschema", GROUPS)], &[]).unwrap();
    let m = mission_under(&org, scope_all(), OutOfScope::Deny);
    let case = Case {
        org: &org,
        mission: &m,
        grants: &[],
    };
    let mcp = ResourceRef {
        kind: ResourceKind::McpResource {
            server: "s".into(),
            uri: "u".into(),
        },
        tags: BTreeMap::new(),
    };
    for (action, res) in [
        ("dangerous", resource(&[])),
        ("destructive", resource(&[])),
        ("read", mcp),
    ] {
        let out = case.decide(action, &res, json!({}));
        assert_eq!(
            (out.decision, out.code.as_str()),
            (Decision::Deny, "invalid_request"),
            "{action}: {out:?}"
        );
    }
}

/// An action in two groups, and optional context attributes: typed by the
/// schema per call, whatever Mandate checked at load.
#[test]
fn several_groups_and_optional_context() {
    let org = OrgPolicies::load(
        &[src(
            "a.cedarschema",
            "action g1; action g2; action top; action mid in [top]; \
             action x in [g1, g2, mid] appliesTo { principal: Agent, resource: [Resource], \
             context: { trust: String, time: Long, note?: String } };",
        )],
        &[src(
            "b.cedar",
            "@id(\"k2\") forbid(principal, action in Action::\"g2\", resource) when { !(context has note) };\n\
             @id(\"k3\") forbid(principal, action in Action::\"top\", resource) when { context has note && context.note == \"x\" };",
        )],
    )
    .unwrap();
    let m = mission_under(&org, scope_all(), OutOfScope::Deny);
    let case = Case {
        org: &org,
        mission: &m,
        grants: &[],
    };
    let code = |ctx: Value| {
        let out = case.decide("x", &resource(&[]), ctx);
        (out.decision, out.code)
    };
    assert_eq!(code(json!({})), (Decision::Deny, "boundary".into()));
    assert_eq!(
        code(json!({ "note": "x" })),
        (Decision::Deny, "boundary".into())
    );
    assert_eq!(
        code(json!({ "note": "y" })),
        (Decision::Allow, "scope".into())
    );
    for bad in [
        json!({ "note": 5 }),
        json!({ "trust": "approved" }),
        json!({ "extra": 1 }),
    ] {
        assert_eq!(code(bad), (Decision::Deny, "invalid_request".into()));
    }
}

#[test]
fn state_checks_come_first() {
    let mut m = mission(billing_scope(), OutOfScope::Escalate);
    assert!(state_check(&m, T0.plus(1), 9).is_ok());
    assert_eq!(
        state_check(&m, T0.plus(1), 10).unwrap_err().code,
        "budget_exhausted"
    );
    assert_eq!(
        state_check(&m, T0.plus(3_600), 0).unwrap_err().code,
        "mission_ended"
    );
    m.status = MissionStatus::Ended {
        reason: mandate_core::EndReason::Revoked,
        at: T0.plus(5),
        jkt: None,
        started_at: Some(T0),
    };
    assert_eq!(state_check(&m, T0.plus(6), 0).unwrap_err().code, "revoked");
    m.status = MissionStatus::Ready;
    assert_eq!(
        state_check(&m, T0.plus(6), 0).unwrap_err().code,
        "mission_not_started"
    );
}

#[test]
fn policies_are_validated_against_the_schema_with_positions() {
    let err = OrgPolicies::load(
        &[],
        &[src(
            "typo.cedar",
            "\n\npermit(principal, action == Action::\"raed\", resource);",
        )],
    )
    .unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!((err[0].source.as_str(), err[0].line), ("typo.cedar", 3));
    assert!(
        err[0].to_string().starts_with("typo.cedar:3:"),
        "{}",
        err[0]
    );

    let err = OrgPolicies::load(
        &[],
        &[src(
            "bad.cedar",
            "permit(principal, action, resource) when { resource.owner == \"x\" };",
        )],
    )
    .unwrap_err();
    assert_eq!(err[0].source, "bad.cedar");

    let err = OrgPolicies::load(
        &[],
        &[src(
            "kind.cedar",
            "@kind(\"escalate\") forbid(principal, action, resource);",
        )],
    )
    .unwrap_err();
    assert!(err[0].message.contains("must be a `permit`"), "{}", err[0]);

    // A mission's policies are validated at creation too.
    let body = body_under(
        &org(),
        MissionPolicies {
            scope: "permit(principal, action == Action::\"reed\", resource);".into(),
            ..Default::default()
        },
        OutOfScope::Deny,
    );
    assert_eq!(body.unwrap_err().code(), "invalid_policy");
}

// --- properties over random policy sets ---

const ACTIONS: [&str; 3] = ["read", "write", "delete"];
const TAGS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
struct Rule {
    action: usize,
    tag: usize,
}

impl Rule {
    fn text(&self, effect: &str) -> String {
        format!(
            "{effect}(principal, action == Action::\"{}\", resource) when {{ resource.hasTag(\"{}\") }};",
            ACTIONS[self.action], TAGS[self.tag]
        )
    }

    fn matches(&self, action: usize, tags: &[bool; 3]) -> bool {
        self.action == action && tags[self.tag]
    }
}

fn rule() -> impl Strategy<Value = Rule> {
    (0..3usize, 0..3usize).prop_map(|(action, tag)| Rule { action, tag })
}

fn join(rules: &[Rule], effect: &str) -> String {
    rules
        .iter()
        .map(|r| r.text(effect))
        .collect::<Vec<_>>()
        .join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn boundaries_never_allow_and_grants_never_turn_deny_into_allow(
        boundaries in prop::collection::vec(rule(), 0..4),
        escalations in prop::collection::vec(rule(), 0..4),
        scope in prop::collection::vec(rule(), 0..4),
        grants in prop::collection::vec(rule(), 0..4),
        action in 0..3usize,
        tags in prop::array::uniform3(any::<bool>()),
        deny_mode in any::<bool>(),
    ) {
        let org = OrgPolicies::empty().unwrap();
        let policies = MissionPolicies {
            scope: join(&scope, "permit"),
            boundaries: join(&boundaries, "forbid"),
            escalations: join(&escalations, "permit"),
        };
        let m = mission(policies.clone(), if deny_mode { OutOfScope::Deny } else { OutOfScope::Escalate });
        let res = ResourceRef {
            kind: ResourceKind::Resource { id: "r".into() },
            tags: TAGS.iter().zip(tags).filter(|(_, on)| *on).map(|(t, _)| ((*t).to_owned(), "1".to_owned())).collect(),
        };
        let grant_texts: Vec<(String, String)> =
            grants.iter().enumerate().map(|(i, r)| (format!("g{i}"), r.text("permit"))).collect();
        let grant_refs: Vec<(&str, &str)> = grant_texts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();

        let with = Case { org: &org, mission: &m, grants: &grant_refs }.decide(ACTIONS[action], &res, json!({}));
        let without = Case { org: &org, mission: &m, grants: &[] }.decide(ACTIONS[action], &res, json!({}));

        // A request matching any boundary is never allowed.
        if boundaries.iter().any(|b| b.matches(action, &tags)) {
            prop_assert_eq!(with.decision, Decision::Deny);
            prop_assert_eq!(with.code.as_str(), "boundary");
        }
        // Adding grants never turns a Deny into an Allow.
        if without.decision == Decision::Deny {
            prop_assert_eq!(with.decision, Decision::Deny);
        }
        // Removing all permits never yields Allow.
        let bare = mission(
            MissionPolicies { boundaries: policies.boundaries.clone(), ..MissionPolicies::default() },
            OutOfScope::Escalate,
        );
        let none = Case { org: &org, mission: &bare, grants: &[] }.decide(ACTIONS[action], &res, json!({}));
        prop_assert_ne!(none.decision, Decision::Allow);
        // The model agrees with the engine on what matched.
        let esc = escalations.iter().any(|r| r.matches(action, &tags));
        let sc = scope.iter().any(|r| r.matches(action, &tags));
        let gr = grants.iter().any(|r| r.matches(action, &tags));
        let bd = boundaries.iter().any(|r| r.matches(action, &tags));
        let expected = if bd {
            Decision::Deny
        } else if esc {
            if gr { Decision::Allow } else { Decision::Escalate }
        } else if sc {
            Decision::Allow
        } else if deny_mode {
            Decision::Deny
        } else if gr {
            Decision::Allow
        } else {
            Decision::Escalate
        };
        prop_assert_eq!(with.decision, expected);
    }
}

/// Decides with exact grants (by request digest) beside Cedar grants.
#[expect(
    clippy::too_many_arguments,
    reason = "test helper: one request, spelled out"
)]
fn decide_with(
    org: &OrgPolicies,
    m: &mandate_core::Mission,
    patterns: &[(&str, &str)],
    exact: Vec<mandate_core::ExactGrant>,
    required: Trust,
    action: &str,
    res: &ResourceRef,
    context: &Value,
) -> mandate_core::Outcome {
    let compiled = MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap();
    let grants = GrantSet::compile(patterns.iter().copied())
        .unwrap()
        .with_exact(exact);
    decide(
        org,
        &compiled,
        &grants,
        &DecisionRequest {
            mission: m,
            budget_used: 0,
            action,
            resource: res,
            context: context.as_object().unwrap(),
            trust: Trust::Signed,
            required,
            now: T0.plus(10),
        },
    )
}

fn exact(
    id: &str,
    action: &str,
    res: &ResourceRef,
    ctx: &Value,
    once: bool,
) -> mandate_core::ExactGrant {
    mandate_core::ExactGrant {
        id: id.into(),
        request_digest: mandate_core::request_digest(action, res, ctx.as_object().unwrap())
            .unwrap(),
        once,
    }
}

#[test]
fn an_exact_grant_covers_that_call_and_no_other() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Escalate));
    let res = resource(&["billing"]);
    let big = json!({"amount": 60_000});
    let g = vec![exact("g1", "refund", &res, &big, false)];
    let out = decide_with(
        &org,
        &m,
        &[],
        g.clone(),
        Trust::Signed,
        "refund",
        &res,
        &big,
    );
    assert_eq!(
        (out.decision, out.grant.as_deref()),
        (Decision::Allow, Some("grant/g1"))
    );
    assert!(
        out.policies
            .contains(&"refunds.cedar/big-refunds".to_owned())
    );
    // One unit more is another call: it escalates again.
    let other = json!({"amount": 60_001});
    let out = decide_with(
        &org,
        &m,
        &[],
        g.clone(),
        Trust::Signed,
        "refund",
        &res,
        &other,
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Escalate, "escalation")
    );
    // Never over a boundary.
    let hr = resource(&["billing", "hr"]);
    let g = vec![exact("g2", "refund", &hr, &big, true)];
    let out = decide_with(&org, &m, &[], g, Trust::Signed, "refund", &hr, &big);
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "boundary")
    );
}

#[test]
fn a_step_up_needs_a_single_use_approval_of_the_very_call() {
    let org = OrgPolicies::load(
        &[src(
            "actions.cedarschema",
            "action wire appliesTo { principal: Agent, resource: [Resource, Route, Tool], \
             context: { trust: String, time: Long, amount: Long } };",
        )],
        &[src(
            "wires.cedar",
            "@id(\"wires\") @kind(\"escalate\") @trust(\"approved\") @approvers(\"carol, bob\")\n\
             permit(principal, action == Action::\"wire\", resource);",
        )],
    )
    .unwrap();
    let m = mission_under(&org, MissionPolicies::default(), OutOfScope::Escalate);
    let res = resource(&[]);
    let ctx = json!({"amount": 10});
    let out = decide_with(&org, &m, &[], vec![], Trust::Signed, "wire", &res, &ctx);
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Escalate, "step_up")
    );
    assert!(out.step_up);
    assert_eq!(out.approvers, vec!["bob".to_owned(), "carol".to_owned()]);
    // A grant for the rest of the mission, or a pattern, does not satisfy it.
    let mission_long = vec![exact("g-m", "wire", &res, &ctx, false)];
    let out = decide_with(
        &org,
        &m,
        &[],
        mission_long,
        Trust::Signed,
        "wire",
        &res,
        &ctx,
    );
    assert_eq!(out.decision, Decision::Escalate);
    let pattern = [(
        "g-p",
        "permit(principal, action == Action::\"wire\", resource);",
    )];
    let out = decide_with(
        &org,
        &m,
        &pattern,
        vec![],
        Trust::Signed,
        "wire",
        &res,
        &ctx,
    );
    assert_eq!(out.decision, Decision::Escalate);
    // A single-use approval of this very call does.
    let once = vec![exact("g-1", "wire", &res, &ctx, true)];
    let out = decide_with(&org, &m, &[], once, Trust::Signed, "wire", &res, &ctx);
    assert_eq!(
        (out.decision, out.grant.as_deref()),
        (Decision::Allow, Some("grant/g-1"))
    );
}

#[test]
fn a_route_requiring_approved_turns_scope_into_a_step_up() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Deny));
    let res = resource(&["billing"]);
    let out = decide_with(
        &org,
        &m,
        &[],
        vec![],
        Trust::Approved,
        "read",
        &res,
        &json!({}),
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Escalate, "step_up")
    );
    // Out of scope where the mission says deny stays a denial.
    let out = decide_with(
        &org,
        &m,
        &[],
        vec![],
        Trust::Approved,
        "write",
        &res,
        &json!({}),
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "out_of_scope")
    );
    // A level the request cannot reach denies outright.
    let out = decide_with(
        &org,
        &m,
        &[],
        vec![],
        Trust::Attested,
        "read",
        &res,
        &json!({}),
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "insufficient_trust")
    );
}

#[test]
fn a_pattern_grant_covers_its_prefix_only() {
    let (org, m) = (org(), mission(billing_scope(), OutOfScope::Escalate));
    let res = |id: &str| ResourceRef {
        kind: ResourceKind::Resource { id: id.into() },
        tags: BTreeMap::new(),
    };
    let text = mandate_core::pattern_policy("refund", &res("cust-42/inv-1"), "cust-42/").unwrap();
    let g = [("gp", text.as_str())];
    let big = json!({"amount": 70_000});
    let out = decide_with(
        &org,
        &m,
        &g,
        vec![],
        Trust::Signed,
        "refund",
        &res("cust-42/inv-9"),
        &big,
    );
    assert_eq!(
        (out.decision, out.grant.as_deref()),
        (Decision::Allow, Some("grant/gp"))
    );
    let out = decide_with(
        &org,
        &m,
        &g,
        vec![],
        Trust::Signed,
        "refund",
        &res("cust-43/inv-1"),
        &big,
    );
    assert_eq!(out.decision, Decision::Escalate);
}

#[test]
fn approval_annotations_belong_on_escalations_and_name_principals() {
    let load = |text: &str| OrgPolicies::load(&[], &[src("p.cedar", text)]);
    assert!(load("@approvers(\"bob\") permit(principal, action, resource);").is_err());
    assert!(
        load("@kind(\"escalate\") @trust(\"signed\") permit(principal, action, resource);")
            .is_err()
    );
    assert!(
        load("@kind(\"escalate\") @approvers(\" , \") permit(principal, action, resource);")
            .is_err()
    );
    assert!(load("@kind(\"escalate\") @approvers(\"bob, Not A Name\") permit(principal, action, resource);").is_err());
    assert!(
        load("@kind(\"escalate\") @approvers(\"bob\") permit(principal, action, resource);")
            .is_ok()
    );
}

#[test]
fn a_mission_cannot_name_its_own_approvers_over_the_organisations() {
    let org = OrgPolicies::load(
        &[src(
            "actions.cedarschema",
            "action wire appliesTo { principal: Agent, resource: [Resource, Route, Tool], \
             context: { trust: String, time: Long, amount: Long } };",
        )],
        &[src(
            "wires.cedar",
            "@id(\"wires\") @kind(\"escalate\") @approvers(\"treasurer\")\n\
             permit(principal, action == Action::\"wire\", resource);",
        )],
    )
    .unwrap();
    // The mission's own escalation names its principal: a mission can only
    // narrow the organisation's approvers, so nobody is left.
    let m = mission_under(
        &org,
        MissionPolicies {
            escalations:
                "@approvers(\"alice\") permit(principal, action == Action::\"wire\", resource);"
                    .into(),
            ..MissionPolicies::default()
        },
        OutOfScope::Escalate,
    );
    let ctx = json!({"amount": 10});
    let out = decide_with(
        &org,
        &m,
        &[],
        vec![],
        Trust::Signed,
        "wire",
        &resource(&[]),
        &ctx,
    );
    assert_eq!(
        (out.decision, out.code.as_str()),
        (Decision::Deny, "no_approver")
    );
    // Without the mission's own rule, the treasurer decides.
    let m = mission_under(&org, MissionPolicies::default(), OutOfScope::Escalate);
    let out = decide_with(
        &org,
        &m,
        &[],
        vec![],
        Trust::Signed,
        "wire",
        &resource(&[]),
        &ctx,
    );
    assert_eq!(out.approvers, vec!["treasurer".to_owned()]);
}

#[test]
fn a_grant_covers_only_what_its_decider_could_approve() {
    let org = OrgPolicies::load(
        &[src(
            "actions.cedarschema",
            "action refund appliesTo { principal: Agent, resource: [Resource, Route, Tool], \
             context: { trust: String, time: Long, amount: Long } };",
        )],
        &[src(
            "refunds.cedar",
            "@id(\"big\") @kind(\"escalate\")\n\
             permit(principal, action == Action::\"refund\", resource) when { context.amount > 50000 };\n\
             @id(\"huge\") @kind(\"escalate\") @approvers(\"cfo\")\n\
             permit(principal, action == Action::\"refund\", resource) when { context.amount > 1000000 };",
        )],
    )
    .unwrap();
    let m = mission_under(&org, MissionPolicies::default(), OutOfScope::Escalate);
    let res = |id: &str| ResourceRef {
        kind: ResourceKind::Resource { id: id.into() },
        tags: BTreeMap::new(),
    };
    let text = mandate_core::pattern_policy("refund", &res("inv-1"), "inv-").unwrap();
    let compiled = MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap();
    let grants = GrantSet::compile([("gp", text.as_str())])
        .unwrap()
        .with_deciders([("gp".to_owned(), "alice".to_owned())]);
    let run = |amount: i64| {
        let ctx = json!({ "amount": amount });
        decide(
            &org,
            &compiled,
            &grants,
            &DecisionRequest {
                mission: &m,
                budget_used: 0,
                action: "refund",
                resource: &res("inv-9"),
                context: ctx.as_object().unwrap(),
                trust: Trust::Signed,
                required: Trust::Signed,
                now: T0.plus(10),
            },
        )
    };
    // Alice's pattern covers what alice may approve…
    assert_eq!(run(60_000).decision, Decision::Allow);
    // …but not a refund only the CFO may approve: that one asks the CFO.
    let huge = run(50_000_000);
    assert_eq!(huge.decision, Decision::Escalate);
    assert_eq!(huge.approvers, vec!["cfo".to_owned()]);
    // Integers JSON cannot carry exactly are refused, so two calls never
    // share a digest.
    assert_eq!(run(1_234_567_890_123_456_789).code, "invalid_request");
}

#[test]
fn a_resource_is_read_by_its_type_name_only() {
    let read = |v: serde_json::Value| serde_json::from_value::<ResourceRef>(v);
    let tool =
        read(json!({"type": "Tool", "server": "git", "tool": "log", "tags": {"a": "b"}})).unwrap();
    assert_eq!(
        serde_json::to_value(&tool).unwrap(),
        json!({"type": "Tool", "server": "git", "tool": "log", "tags": {"a": "b"}})
    );
    assert!(read(json!({"type": "Resource", "id": "x"})).is_ok());
    // serde would take a number as the variant's index.
    assert!(read(json!({"type": 0, "id": "x"})).is_err());
    assert!(read(json!({"type": 2, "server": "git", "tool": "log"})).is_err());
    assert!(read(json!({"id": "x"})).is_err());
    assert!(read(json!({"type": "Resource", "id": "x", "other": 1})).is_err());
}
