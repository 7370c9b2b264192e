//! Decision cost, measured beside bare `cedar-policy` in the same run.
//!
//! `cargo bench -p mandate-core --bench decision`
//!
//! - `mandate_decide` vs `bare_cedar`: ~50 organisation policies and ~10
//!   mission policies; entities and request built per decision on both
//!   sides. Goal: Mandate ≤ 1.2 × bare Cedar.
//! - `missions/10` vs `missions/100000`: the same decision for a random
//!   mission among 10 or 100,000 active missions, each with its own
//!   compiled policies. Goal: no difference beyond noise.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::collections::HashSet;
use std::hint::black_box;
use std::str::FromStr as _;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression,
};
use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::{
    DecisionRequest, GrantSet, Mission, MissionBody, MissionId, MissionLimits, MissionPolicies,
    MissionPolicySet, MissionSpec, MissionStatus, OrgPolicies, OsRandom, OutOfScope, PolicySource,
    ResourceKind, ResourceRef, Thumbprint, Trust, UnixTime, decide, mission_s256,
};

const NOW: UnixTime = UnixTime(1_800_000_000);

fn org_sources() -> (Vec<PolicySource>, Vec<PolicySource>) {
    let schema = PolicySource {
        name: "actions.cedarschema".into(),
        text: "action refund appliesTo { principal: Agent, resource: [Resource, Route, Tool], \
               context: { trust: String, time: Long, amount: Long } };"
            .into(),
    };
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "forbid(principal, action, resource) when {{ resource.hasTag(\"restricted-{i}\") }};\n"
        ));
    }
    for i in 0..15 {
        text.push_str(&format!(
            "@kind(\"escalate\") permit(principal, action == Action::\"read\", resource) \
             when {{ resource.hasTag(\"region-{i}\") && context.trust == \"signed\" }};\n"
        ));
    }
    for i in 0..15 {
        text.push_str(&format!("permit(principal, action == Action::\"read\", resource) when {{ resource.hasTag(\"public-{i}\") }};\n"));
    }
    (
        vec![schema],
        vec![PolicySource {
            name: "org.cedar".into(),
            text,
        }],
    )
}

fn mission_policies(n_scope: usize) -> MissionPolicies {
    let mut scope = String::new();
    for i in 0..n_scope {
        scope.push_str(&format!(
            "permit(principal, action == Action::\"read\", resource) when {{ resource.hasTag(\"billing-{i}\") }};\n"
        ));
    }
    MissionPolicies {
        scope,
        boundaries: "forbid(principal, action == Action::\"delete\", resource);\n\
                     forbid(principal, action, resource) when { resource.hasTag(\"secret\") };"
            .into(),
        escalations: String::new(),
    }
}

fn mission(policies: MissionPolicies) -> Mission {
    let body = MissionBody::new(
        MissionSpec {
            agent: "bench-bot".parse().unwrap(),
            goal: "benchmark".into(),
            policies,
            ttl_secs: 3_600,
            budget: 1_000_000,
            out_of_scope: OutOfScope::Escalate,
        },
        MissionId::generate(&OsRandom).unwrap(),
        "urn:bench",
        "alice".parse().unwrap(),
        NOW,
        MissionLimits::default(),
        None,
    )
    .unwrap();
    let s256 = mission_s256(&body).unwrap();
    let jkt = Thumbprint::from_stored("A".repeat(43)).unwrap();
    Mission {
        body,
        s256,
        status: MissionStatus::Active {
            jkt,
            started_at: NOW,
        },
        attestation: None,
        taint: None,
    }
}

fn resource() -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Resource {
            id: "invoice-42".into(),
        },
        tags: [
            ("billing-7".to_owned(), "nov".to_owned()),
            ("customer".to_owned(), "acme".to_owned()),
        ]
        .into(),
    }
}

/// The same entities and request Mandate builds, with the bare Cedar API.
fn bare_inputs(m: &Mission) -> (Request, Entities) {
    let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
    let l = |v: u64| RestrictedExpression::new_long(i64::try_from(v).unwrap());
    let user = EntityUid::from_str("User::\"alice\"").unwrap();
    let mission = EntityUid::from_str(&format!("Mission::\"{}\"", m.body.id)).unwrap();
    let agent = EntityUid::from_str("Agent::\"bench-bot\"").unwrap();
    let res = EntityUid::from_str("Resource::\"invoice-42\"").unwrap();
    let mission_e = Entity::new(
        mission.clone(),
        [
            (
                "principal".to_owned(),
                RestrictedExpression::new_entity_uid(user.clone()),
            ),
            ("goal".to_owned(), s(&m.body.goal)),
            ("tags".to_owned(), RestrictedExpression::new_set([])),
            ("attested".to_owned(), RestrictedExpression::new_bool(false)),
            ("tainted".to_owned(), RestrictedExpression::new_bool(false)),
            ("taint".to_owned(), RestrictedExpression::new_set([])),
            ("budget".to_owned(), l(m.body.budget.requests)),
            ("budget_used".to_owned(), l(0)),
            ("started_at".to_owned(), l(NOW.0)),
            ("expires_at".to_owned(), l(m.body.expires_at)),
        ]
        .into_iter()
        .collect(),
        HashSet::new(),
    )
    .unwrap();
    let agent_e = Entity::new(
        agent.clone(),
        [(
            "mission".to_owned(),
            RestrictedExpression::new_entity_uid(mission),
        )]
        .into_iter()
        .collect(),
        HashSet::new(),
    )
    .unwrap();
    let res_e = Entity::new_with_tags(
        res.clone(),
        [],
        [],
        [
            ("billing-7".to_owned(), s("nov")),
            ("customer".to_owned(), s("acme")),
        ],
    )
    .unwrap();
    let entities = Entities::from_entities(
        [
            Entity::new_no_attrs(user, HashSet::new()),
            mission_e,
            agent_e,
            res_e,
        ],
        None,
    )
    .unwrap();
    let ctx = Context::from_json_value(
        serde_json::json!({ "trust": "signed", "time": NOW.0 }),
        None,
    )
    .unwrap();
    let req = Request::new(
        agent,
        EntityUid::from_str("Action::\"read\"").unwrap(),
        res,
        ctx,
        None,
    )
    .unwrap();
    (req, entities)
}

fn decision(c: &mut Criterion) {
    let (schemas, sources) = org_sources();
    let org = OrgPolicies::load(&schemas, &sources).unwrap();
    let m = mission(mission_policies(8));
    let compiled = MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap();
    let grants = GrantSet::default();
    let res = resource();
    let ctx = serde_json::Map::new();
    let req = DecisionRequest {
        mission: &m,
        budget_used: 0,
        action: "read",
        resource: &res,
        context: &ctx,
        trust: Trust::Signed,
        required: Trust::Signed,
        now: NOW.plus(1),
    };
    assert_eq!(decide(&org, &compiled, &grants, &req).code, "scope");

    // Bare Cedar on the union of the same policies.
    let mut union = PolicySet::new();
    for p in org
        .policies()
        .cedar_policies()
        .chain(compiled.policies().cedar_policies())
    {
        union.add(p.clone()).unwrap();
    }
    assert_eq!(union.policies().count(), 60);
    let authorizer = Authorizer::new();

    let mut g = c.benchmark_group("decision");
    g.bench_function("bare_cedar", |b| {
        b.iter(|| {
            let (r, e) = bare_inputs(&m);
            black_box(authorizer.is_authorized(&r, &union, &e))
        });
    });
    g.bench_function("mandate_decide", |b| {
        b.iter(|| black_box(decide(&org, &compiled, &grants, &req)))
    });
    // The same call from a mission that read untrusted content of two
    // kinds: its taint is on the Mission entity policy reads.
    let mut tainted = m.clone();
    let t =
        mandate_core::Taint::merged(None, &["calendar".into()], "route calendar GET /e/1", NOW.0);
    tainted.taint = Some(mandate_core::Taint::merged(
        Some(&t),
        &["web".into()],
        "mcp web tools/call fetch",
        NOW.0,
    ));
    let tainted_req = DecisionRequest {
        mission: &tainted,
        ..req.clone()
    };
    assert_eq!(decide(&org, &compiled, &grants, &tainted_req).code, "scope");
    g.bench_function("mandate_decide_tainted", |b| {
        b.iter(|| black_box(decide(&org, &compiled, &grants, &tainted_req)))
    });
    g.finish();

    let mut g = c.benchmark_group("missions");
    for n in [10usize, 1_000, 100_000] {
        let missions: Vec<(Mission, Arc<MissionPolicySet>)> = (0..n)
            .map(|_| {
                let m = mission(mission_policies(2));
                let set = Arc::new(
                    MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap(),
                );
                (m, set)
            })
            .collect();
        let mut i = 0usize;
        g.bench_function(n.to_string(), |b| {
            b.iter(|| {
                // A different mission each time, spread over all of them.
                i = (i + 7_919) % n;
                let (m, set) = &missions[i];
                let req = DecisionRequest {
                    mission: m,
                    ..req.clone()
                };
                black_box(decide(&org, set, &grants, &req))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
