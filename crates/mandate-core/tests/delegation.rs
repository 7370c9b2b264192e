//! Delegation chains through the public API: a child only narrows its
//! parent (bodies), every hop's policy applies to a child's call
//! (decisions), and a presented chain verifies offline only whole and in
//! order (links).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use mandate_core::{
    Ancestor, AuthorityKey, ChainHop, ChildSpec, Decision, DecisionRequest, DelegationChainError,
    DelegationError, ExactGrant, GrantSet, LinkClaims, LinkParty, Mission, MissionBody, MissionId,
    MissionKey, MissionLimits, MissionPolicies, MissionPolicySet, MissionSpec, MissionStatus,
    OrgPolicies, OsRandom, OutOfScope, PolicySource, ResourceKind, ResourceRef, Trust, UnixTime,
    decide, decide_chain, issue_chained_credential, link_digest, mission_s256, request_digest,
    verify_delegation_chain,
};
use proptest::prelude::*;
use serde_json::Map;

const T0: UnixTime = UnixTime(1_700_000_000);
const ISS: &str = "http://issuer.test";

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

/// One boundary that reads who acts (so it is re-evaluated for every
/// hop), one that does not.
fn org() -> OrgPolicies {
    OrgPolicies::load(
        &[],
        &[
            src(
                "interns.cedar",
                "@id(\"interns-never-delete\")\n\
                 forbid(principal == Agent::\"intern\", action == Action::\"delete\", resource);",
            ),
            src(
                "hr.cedar",
                "@id(\"no-hr\")\nforbid(principal, action, resource) when { resource.hasTag(\"hr\") };",
            ),
        ],
    )
    .unwrap()
}

fn policies(scope: &str, boundaries: &str, escalations: &str) -> MissionPolicies {
    MissionPolicies {
        scope: scope.into(),
        boundaries: boundaries.into(),
        escalations: escalations.into(),
    }
}

fn spec(agent: &str, p: MissionPolicies, ttl: u64, budget: u64, oos: OutOfScope) -> MissionSpec {
    MissionSpec {
        agent: agent.parse().unwrap(),
        goal: format!("work of {agent}"),
        policies: p,
        ttl_secs: ttl,
        budget,
        out_of_scope: oos,
    }
}

fn started(body: MissionBody, key: &MissionKey) -> Mission {
    let s256 = mission_s256(&body).unwrap();
    Mission {
        body,
        s256,
        status: MissionStatus::Active {
            jkt: key.thumbprint().clone(),
            started_at: T0,
        },
        attestation: None,
        taint: None,
    }
}

fn root(org: &OrgPolicies, agent: &str, p: MissionPolicies, oos: OutOfScope) -> Mission {
    let key = MissionKey::generate(&OsRandom).unwrap();
    let body = MissionBody::new(
        spec(agent, p, 3_600, 100, oos),
        MissionId::generate(&OsRandom).unwrap(),
        ISS,
        "alice".parse().unwrap(),
        T0,
        MissionLimits::default(),
        Some(org.schema()),
    )
    .unwrap();
    started(body, &key)
}

fn child_of(
    org: &OrgPolicies,
    parent: &Mission,
    agent: &str,
    p: MissionPolicies,
    oos: OutOfScope,
) -> Mission {
    let key = MissionKey::generate(&OsRandom).unwrap();
    let body = MissionBody::delegated(
        ChildSpec {
            spec: spec(agent, p, 600, 10, oos),
            ephemeral: false,
        },
        MissionId::generate(&OsRandom).unwrap(),
        parent,
        &[],
        50,
        T0,
        MissionLimits::default(),
        Some(org.schema()),
    )
    .unwrap();
    started(body, &key)
}

fn doc(tags: &[&str]) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Resource { id: "doc-7".into() },
        tags: tags
            .iter()
            .map(|t| ((*t).to_owned(), "yes".to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Decides `action` on `resource` for the last mission of `chain` (root
/// first), with `grants` of that mission.
fn decide_at(
    org: &OrgPolicies,
    chain: &[&Mission],
    grants: &GrantSet,
    action: &str,
    resource: &ResourceRef,
) -> mandate_core::Outcome {
    let compiled: Vec<MissionPolicySet> = chain
        .iter()
        .map(|m| MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap())
        .collect();
    let (leaf, ancestors) = chain.split_last().unwrap();
    let ancestors: Vec<Ancestor<'_>> = ancestors
        .iter()
        .zip(&compiled)
        .map(|(m, p)| Ancestor {
            mission: m,
            policies: p,
            budget_used: 0,
        })
        .collect();
    let context = Map::new();
    decide_chain(
        org,
        &ancestors,
        compiled.last().unwrap(),
        grants,
        &DecisionRequest {
            mission: leaf,
            budget_used: 0,
            action,
            resource,
            context: &context,
            trust: Trust::Signed,
            required: Trust::Signed,
            now: T0.plus(1),
        },
    )
}

const READ_WRITE: &str =
    "permit(principal, action in [Action::\"read\", Action::\"write\"], resource);";
const EVERYTHING: &str = "permit(principal, action, resource);";

#[test]
fn a_child_is_allowed_only_what_every_hop_allows() {
    let org = org();
    for (oos, want) in [
        (OutOfScope::Escalate, Decision::Escalate),
        (OutOfScope::Deny, Decision::Deny),
    ] {
        let a = root(&org, "orchestrator", policies(READ_WRITE, "", ""), oos);
        let b = child_of(
            &org,
            &a,
            "researcher",
            policies(EVERYTHING, "", ""),
            OutOfScope::Deny,
        );
        let c = child_of(
            &org,
            &b,
            "fetcher",
            policies(EVERYTHING, "", ""),
            OutOfScope::Deny,
        );
        let none = GrantSet::default();
        // Within every hop's scope.
        let ok = decide_at(&org, &[&a, &b, &c], &none, "write", &doc(&[]));
        assert_eq!(ok.decision, Decision::Allow, "{ok:?}");
        assert_eq!(ok.hop, None);
        // C's and B's scope allow `delete`, A's does not: A decides, as A's
        // `out_of_scope` says, and is named.
        let o = decide_at(&org, &[&a, &b, &c], &none, "delete", &doc(&[]));
        assert_eq!(o.decision, want, "{o:?}");
        assert_eq!(o.code, "out_of_scope");
        let hop = o.hop.unwrap();
        assert_eq!((hop.depth, hop.mission.as_str()), (1, a.body.id.as_str()));
        assert_eq!(hop.agent, "orchestrator");
        // The same call is fine for A alone.
        let alone = decide_at(&org, &[&a], &none, "write", &doc(&[]));
        assert_eq!(alone.decision, Decision::Allow);
    }
}

#[test]
fn a_boundary_at_any_hop_denies_at_every_depth_and_no_grant_passes_it() {
    let org = org();
    let a = root(
        &org,
        "orchestrator",
        policies(
            EVERYTHING,
            "forbid(principal, action == Action::\"write\", resource) when { resource.hasTag(\"prod\") };",
            "",
        ),
        OutOfScope::Escalate,
    );
    let b = child_of(
        &org,
        &a,
        "researcher",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let c = child_of(
        &org,
        &b,
        "fetcher",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    // A grant for C covering everything it could ask for.
    let grants = GrantSet::compile([("g1", "permit(principal, action, resource);")])
        .unwrap()
        .with_deciders([("g1".to_owned(), "alice".to_owned())]);
    for chain in [vec![&a], vec![&a, &b], vec![&a, &b, &c]] {
        let o = decide_at(&org, &chain, &grants, "write", &doc(&["prod"]));
        assert_eq!(o.decision, Decision::Deny, "depth {}: {o:?}", chain.len());
        assert_eq!(o.code, "boundary");
        assert_eq!(o.policies.len(), 1, "{o:?}");
        if chain.len() > 1 {
            assert_eq!(o.hop.unwrap().depth, 1);
        }
    }
    // The organisation's boundary holds at every depth too.
    let o = decide_at(&org, &[&a, &b, &c], &grants, "read", &doc(&["hr"]));
    assert_eq!(
        (o.decision, o.policies),
        (Decision::Deny, vec!["hr.cedar/no-hr".into()])
    );
}

#[test]
fn an_ancestors_escalation_asks_and_only_a_grant_for_the_child_answers_it() {
    let org = org();
    let a = root(
        &org,
        "orchestrator",
        policies(
            EVERYTHING,
            "",
            "@id(\"ask-before-delete\")\npermit(principal, action == Action::\"delete\", resource);",
        ),
        OutOfScope::Escalate,
    );
    let b = child_of(
        &org,
        &a,
        "cleaner",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let none = GrantSet::default();
    let o = decide_at(&org, &[&a, &b], &none, "delete", &doc(&[]));
    assert_eq!(o.decision, Decision::Escalate, "{o:?}");
    assert_eq!(o.code, "escalation");
    assert_eq!(o.approvers, vec!["alice".to_owned()]);
    assert_eq!(o.hop.as_ref().unwrap().depth, 1);
    // A person approves this very call for B.
    let ctx = Map::new();
    let digest = request_digest("delete", &doc(&[]), &ctx).unwrap();
    let grants = GrantSet::default()
        .with_exact(vec![ExactGrant {
            id: "g-b".into(),
            request_digest: digest,
            once: true,
        }])
        .with_deciders([("g-b".to_owned(), "alice".to_owned())]);
    let o = decide_at(&org, &[&a, &b], &grants, "delete", &doc(&[]));
    assert_eq!(o.decision, Decision::Allow, "{o:?}");
    assert_eq!(o.grant.as_deref(), Some("grant/g-b"));
}

#[test]
fn organisation_policy_about_an_agent_holds_for_whatever_it_delegates_to() {
    let org = org();
    let a = root(
        &org,
        "intern",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let b = child_of(
        &org,
        &a,
        "helper",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    // The intern may not delete; its helper may not do it for it.
    let o = decide_at(&org, &[&a, &b], &GrantSet::default(), "delete", &doc(&[]));
    assert_eq!(o.decision, Decision::Deny, "{o:?}");
    assert_eq!(
        o.policies,
        vec!["interns.cedar/interns-never-delete".to_owned()]
    );
    assert_eq!(o.hop.unwrap().agent, "intern");
    // The helper on a mission of its own is not bound by it.
    let own = root(
        &org,
        "helper",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let o = decide_at(&org, &[&own], &GrantSet::default(), "delete", &doc(&[]));
    assert_eq!(o.decision, Decision::Allow);
}

#[test]
fn an_error_in_an_ancestors_policy_denies_the_childs_call() {
    let org = org();
    // Overflows for a tagged resource: an evaluation error at run time
    // (the schema cannot rule it out).
    let a = root(
        &org,
        "orchestrator",
        policies(
            "permit(principal, action, resource) when { !resource.hasTag(\"owner\") || context.time * 9223372036854775807 > 0 };",
            "",
            "",
        ),
        OutOfScope::Escalate,
    );
    let b = child_of(
        &org,
        &a,
        "researcher",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let o = decide_at(
        &org,
        &[&a, &b],
        &GrantSet::default(),
        "read",
        &doc(&["owner"]),
    );
    assert_eq!(
        (o.decision, o.code.as_str()),
        (Decision::Deny, "policy_error"),
        "{o:?}"
    );
    assert_eq!(o.hop.unwrap().depth, 1);
    // Without the tag it evaluates, and allows.
    let o = decide_at(&org, &[&a, &b], &GrantSet::default(), "read", &doc(&[]));
    assert_eq!(o.decision, Decision::Allow, "{o:?}");
}

#[test]
fn a_child_only_narrows_its_parent() {
    let org = org();
    let a = root(
        &org,
        "orchestrator",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let try_child =
        |agent: &str, ttl: u64, budget: u64, parent: &Mission, limits: MissionLimits| {
            MissionBody::delegated(
                ChildSpec {
                    spec: spec(agent, policies("", "", ""), ttl, budget, OutOfScope::Deny),
                    ephemeral: false,
                },
                MissionId::generate(&OsRandom).unwrap(),
                parent,
                &[],
                40,
                T0.plus(600),
                limits,
                None,
            )
        };
    let limits = MissionLimits::default();
    // A has 3000 s and 40 requests left.
    assert_eq!(
        try_child("b", 3_001, 10, &a, limits).unwrap_err(),
        DelegationError::TtlWidens {
            max: 3_000,
            got: 3_001
        }
    );
    assert_eq!(
        try_child("b", 600, 41, &a, limits).unwrap_err(),
        DelegationError::BudgetWidens { max: 40, got: 41 }
    );
    assert_eq!(
        try_child("orchestrator", 600, 1, &a, limits)
            .unwrap_err()
            .code(),
        "delegation_cycle"
    );
    let b = try_child("b", 3_000, 40, &a, limits).unwrap();
    assert_eq!(b.depth(), 2);
    assert_eq!(b.principal.as_str(), "alice");
    assert_eq!(b.parent().unwrap().id, a.body.id);
    // Depth is bounded.
    let key = MissionKey::generate(&OsRandom).unwrap();
    let b = started(b, &key);
    let shallow = MissionLimits {
        max_depth: 2,
        ..limits
    };
    assert_eq!(
        try_child("c", 600, 1, &b, shallow).unwrap_err(),
        DelegationError::TooDeep { max: 2, got: 3 }
    );
    // An ephemeral sub-agent is named after its own mission, and a
    // registered-agent delegation cannot name one.
    let id = MissionId::generate(&OsRandom).unwrap();
    let eph = mandate_core::AgentName::ephemeral("summarizer", &id).unwrap();
    assert!(eph.is_ephemeral());
    let err = MissionBody::delegated(
        ChildSpec {
            spec: MissionSpec {
                agent: eph,
                ..spec("x", policies("", "", ""), 600, 1, OutOfScope::Deny)
            },
            ephemeral: false,
        },
        id,
        &a,
        &[],
        40,
        T0,
        limits,
        None,
    )
    .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
}

#[test]
fn an_agent_cannot_pick_who_approves_its_childs_calls() {
    let org = org();
    let a = root(
        &org,
        "orchestrator",
        policies(EVERYTHING, "", ""),
        OutOfScope::Escalate,
    );
    let err = MissionBody::delegated(
        ChildSpec {
            spec: spec(
                "researcher",
                policies(
                    "",
                    "",
                    "@approvers(\"secops\")\npermit(principal, action == Action::\"delete\", resource);",
                ),
                600,
                1,
                OutOfScope::Escalate,
            ),
            ephemeral: false,
        },
        MissionId::generate(&OsRandom).unwrap(),
        &a,
        &[],
        10,
        T0,
        MissionLimits::default(),
        None,
    )
    .unwrap_err();
    assert_eq!(err.code(), "invalid_policy", "{err}");
    assert!(err.to_string().contains("cannot name approvers"), "{err}");
}

#[test]
fn a_proposal_token_is_the_authoritys_own_and_short_lived() {
    let authority = AuthorityKey::generate(&OsRandom).unwrap();
    let parent = MissionId::generate(&OsRandom).unwrap();
    let token = mandate_core::sign_proposal(&authority, ISS, &parent, "abc", T0).unwrap();
    let ok = mandate_core::verify_proposal(&token, &authority.jwks(), ISS, T0.plus(299)).unwrap();
    assert_eq!(
        (ok.parent, ok.mission_s256.as_str()),
        (parent.clone(), "abc")
    );
    let code = |r: Result<_, DelegationError>| r.unwrap_err().code();
    assert_eq!(
        code(mandate_core::verify_proposal(
            &token,
            &authority.jwks(),
            ISS,
            T0.plus(300)
        )),
        "bad_proposal"
    );
    let stranger = AuthorityKey::generate(&OsRandom).unwrap();
    assert_eq!(
        code(mandate_core::verify_proposal(
            &token,
            &stranger.jwks(),
            ISS,
            T0.plus(1)
        )),
        "bad_proposal"
    );
    assert_eq!(
        code(mandate_core::verify_proposal(
            &token,
            &authority.jwks(),
            "https://other",
            T0.plus(1)
        )),
        "bad_proposal"
    );
    // Another kind of token the authority signs is not a proposal.
    let c = chain();
    let cred = credential(&c, &c.links);
    assert_eq!(
        code(mandate_core::verify_proposal(
            &cred,
            &c.authority.jwks(),
            ISS,
            T0.plus(1)
        )),
        "bad_proposal"
    );
}

/// A three-hop chain with real keys: A → B → C, and C's credential.
struct Chain {
    authority: AuthorityKey,
    missions: Vec<Mission>,
    keys: Vec<MissionKey>,
    links: Vec<String>,
}

fn party(m: &Mission) -> LinkParty {
    LinkParty {
        mission_id: m.body.id.clone(),
        mission_s256: m.s256.clone(),
        agent: m.body.agent.clone(),
    }
}

fn chain() -> Chain {
    let org = org();
    let authority = AuthorityKey::generate(&OsRandom).unwrap();
    let keys: Vec<MissionKey> = (0..3)
        .map(|_| MissionKey::generate(&OsRandom).unwrap())
        .collect();
    let a = started(
        root(
            &org,
            "orchestrator",
            policies(EVERYTHING, "", ""),
            OutOfScope::Deny,
        )
        .body,
        &keys[0],
    );
    let b = started(
        child_of(
            &org,
            &a,
            "researcher",
            policies(EVERYTHING, "", ""),
            OutOfScope::Deny,
        )
        .body,
        &keys[1],
    );
    let c = started(
        child_of(
            &org,
            &b,
            "fetcher",
            policies(EVERYTHING, "", ""),
            OutOfScope::Deny,
        )
        .body,
        &keys[2],
    );
    let missions = vec![a, b, c];
    let links = (0..2)
        .map(|i| {
            let (p, ch) = (&missions[i], &missions[i + 1]);
            let claims = LinkClaims::for_child(&party(p), keys[i].thumbprint(), &ch.body, &ch.s256);
            keys[i].sign_link(claims, T0, &OsRandom).unwrap()
        })
        .collect();
    Chain {
        authority,
        missions,
        keys,
        links,
    }
}

fn hops(c: &Chain, upto: usize) -> Vec<ChainHop> {
    (0..upto)
        .map(|i| ChainHop {
            mission_id: c.missions[i].body.id.clone(),
            mission_s256: c.missions[i].s256.clone(),
            agent: c.missions[i].body.agent.clone(),
            jkt: c.keys[i].thumbprint().clone(),
        })
        .collect()
}

fn credential(c: &Chain, links: &[String]) -> String {
    issue_chained_credential(
        &c.authority,
        &c.missions[2],
        c.keys[2].public_jwk(),
        T0,
        300,
        &OsRandom,
        hops(c, 2),
        links.iter().map(|l| link_digest(l)).collect(),
        None,
    )
    .unwrap()
    .token
}

#[test]
fn a_whole_chain_verifies_offline_and_names_every_hop() {
    let c = chain();
    let cred = credential(&c, &c.links);
    let v = verify_delegation_chain(&cred, &c.links, &c.authority.jwks(), ISS, T0.plus(1)).unwrap();
    let agents: Vec<&str> = v.hops.iter().map(|h| h.agent.as_str()).collect();
    assert_eq!(agents, ["orchestrator", "researcher", "fetcher"]);
    assert_eq!(v.hops[2].depth, 3);
    assert_eq!(
        v.hops[2].link.as_ref().unwrap().parent.agent.as_str(),
        "researcher"
    );
    // Nested `act`: the current actor outermost, prior actors nested.
    let act = serde_json::to_value(&v.claims.act).unwrap();
    assert_eq!(
        act,
        serde_json::json!({"sub": "fetcher", "act": {"sub": "researcher", "act": {"sub": "orchestrator"}}})
    );
}

#[test]
fn a_chain_that_is_not_whole_and_in_order_is_refused() {
    let c = chain();
    let cred = credential(&c, &c.links);
    let jwks = c.authority.jwks();
    let verify = |links: &[String]| {
        verify_delegation_chain(&cred, links, &jwks, ISS, T0.plus(1)).unwrap_err()
    };
    // Missing.
    assert!(matches!(
        verify(&c.links[..1]),
        DelegationChainError::LinkCount {
            expected: 2,
            got: 1
        }
    ));
    assert!(matches!(
        verify(&[]),
        DelegationChainError::LinkCount { .. }
    ));
    // Reordered.
    let reordered = vec![c.links[1].clone(), c.links[0].clone()];
    assert_eq!(
        verify(&reordered),
        DelegationChainError::LinkMismatch { hop: 1 }
    );
    // Re-signed: the same claims, signed by another key.
    let mallory = MissionKey::generate(&OsRandom).unwrap();
    let (claims, _) = mandate_core::verify_link(&c.links[1]).unwrap();
    let resigned = vec![
        c.links[0].clone(),
        mallory.sign_link(claims.clone(), T0, &OsRandom).unwrap(),
    ];
    assert_eq!(
        verify(&resigned),
        DelegationChainError::LinkMismatch { hop: 2 }
    );
    // Spliced from another chain.
    let other = chain();
    let spliced = vec![c.links[0].clone(), other.links[1].clone()];
    assert_eq!(
        verify(&spliced),
        DelegationChainError::LinkMismatch { hop: 2 }
    );
    // Tampered payload.
    let mut parts: Vec<String> = c.links[0].split('.').map(str::to_owned).collect();
    parts[1].insert(0, 'e');
    let tampered = vec![parts.join("."), c.links[1].clone()];
    assert_eq!(
        verify(&tampered),
        DelegationChainError::LinkMismatch { hop: 1 }
    );
    // Even a credential that names a re-signed link is refused: the link
    // is not signed by the key the chain binds for its parent.
    let forged = credential(&c, &resigned);
    let err = verify_delegation_chain(&forged, &resigned, &jwks, ISS, T0.plus(1)).unwrap_err();
    assert_eq!(err, DelegationChainError::WrongSigner { hop: 2 });
    // A link that outlives the one above it.
    let mut long = claims;
    long.exp = c.missions[0].body.expires_at + 1;
    let widened = vec![
        c.links[0].clone(),
        c.keys[1].sign_link(long, T0, &OsRandom).unwrap(),
    ];
    let forged = credential(&c, &widened);
    let err = verify_delegation_chain(&forged, &widened, &jwks, ISS, T0.plus(1)).unwrap_err();
    assert!(
        matches!(err, DelegationChainError::Widens { hop: 2, .. }),
        "{err:?}"
    );
    // Another authority's keys.
    let stranger = AuthorityKey::generate(&OsRandom).unwrap();
    let err =
        verify_delegation_chain(&cred, &c.links, &stranger.jwks(), ISS, T0.plus(1)).unwrap_err();
    assert_eq!(err.code(), "bad_credential");
}

/// The actions and resources the property test draws from.
const ACTIONS: [&str; 3] = ["read", "write", "delete"];

fn policy_strategy() -> impl Strategy<Value = (MissionPolicies, OutOfScope)> {
    let scope = proptest::sample::subsequence(ACTIONS.to_vec(), 0..=3).prop_map(|acts| {
        acts.iter()
            .map(|a| format!("permit(principal, action == Action::\"{a}\", resource);"))
            .collect::<String>()
    });
    let boundary = proptest::option::of(proptest::sample::select(ACTIONS.to_vec())).prop_map(
        |a| {
            a.map(|a| {
                format!(
                    "forbid(principal, action == Action::\"{a}\", resource) when {{ resource.hasTag(\"prod\") }};"
                )
            })
            .unwrap_or_default()
        },
    );
    let escalation =
        proptest::option::of(proptest::sample::select(ACTIONS.to_vec())).prop_map(|a| {
            a.map(|a| format!("permit(principal, action == Action::\"{a}\", resource);"))
                .unwrap_or_default()
        });
    let oos = prop_oneof![Just(OutOfScope::Escalate), Just(OutOfScope::Deny)];
    (scope, boundary, escalation, oos).prop_map(|(s, b, e, o)| (policies(&s, &b, &e), o))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A delegation never widens: whatever the policies along a chain, a
    /// call its last mission is allowed (without grants) is one every
    /// ancestor alone would be allowed too.
    #[test]
    fn a_child_is_never_allowed_what_an_ancestor_alone_would_not_be(
        hops in proptest::collection::vec(policy_strategy(), 1..=4),
        action in proptest::sample::select(ACTIONS.to_vec()),
        prod in any::<bool>(),
    ) {
        let org = org();
        let mut chain: Vec<Mission> = Vec::new();
        for (i, (p, oos)) in hops.into_iter().enumerate() {
            let agent = format!("agent-{i}");
            let m = match chain.last() {
                None => root(&org, &agent, p, oos),
                Some(parent) => child_of(&org, parent, &agent, p, oos),
            };
            chain.push(m);
        }
        let resource = doc(if prod { &["prod"] } else { &[] });
        let refs: Vec<&Mission> = chain.iter().collect();
        let chained = decide_at(&org, &refs, &GrantSet::default(), action, &resource);
        for (i, m) in chain.iter().enumerate() {
            let alone = decide(
                &org,
                &MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap(),
                &GrantSet::default(),
                &DecisionRequest {
                    mission: m,
                    budget_used: 0,
                    action,
                    resource: &resource,
                    context: &Map::new(),
                    trust: Trust::Signed,
                    required: Trust::Signed,
                    now: T0.plus(1),
                },
            );
            if chained.decision == Decision::Allow {
                prop_assert_eq!(alone.decision, Decision::Allow, "hop {} alone: {:?}", i + 1, alone);
            }
            if alone.decision == Decision::Deny {
                prop_assert_eq!(chained.decision, Decision::Deny, "hop {} denies alone: {:?}", i + 1, chained);
            }
        }
    }
}
