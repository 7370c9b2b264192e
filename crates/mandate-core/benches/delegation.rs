//! Delegation chains: what depth costs a decision, and what a link costs
//! an offline verifier, each beside its baseline in the same run.
//!
//! `cargo bench -p mandate-core --bench delegation`
//!
//! - `chain_depth/1` vs `chain_depth/4`: the same call decided for a
//!   mission a principal delegated directly, and for one three delegations
//!   below it (each hop with its own 10 policies), under the same 52
//!   organisation policies (two of which read who acts, so they are
//!   re-evaluated per hop). Goal: depth 4 ≤ 2 × depth 1.
//! - `chain_verify/ed25519` vs the per-link cost: one Ed25519 signature
//!   verification (ed25519-dalek; `ed25519_aws_lc` is the implementation
//!   the JOSE crate verifies with), and `(chain_verify/links_3 −
//!   chain_verify/credential_only) / 3`, the cost of each link a verifier
//!   checks beyond the same credential itself (`chain_verify/link`:
//!   verifying one link alone; `links_0`: a root credential, which has no
//!   chain to carry). Goal: per link ≤ 1.2 × one Ed25519 verification.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use mandate_core::{
    Ancestor, AuthorityKey, ChainHop, ChildSpec, DecisionRequest, GrantSet, LinkClaims, LinkParty,
    Mission, MissionBody, MissionId, MissionKey, MissionLimits, MissionPolicies, MissionPolicySet,
    MissionSpec, MissionStatus, OrgPolicies, OsRandom, OutOfScope, PolicySource, ResourceKind,
    ResourceRef, Trust, UnixTime, decide_chain, issue_chained_credential, link_digest,
    mission_s256, verify_delegation_chain,
};

const NOW: UnixTime = UnixTime(1_800_000_000);
const ISS: &str = "urn:bench";

fn org() -> OrgPolicies {
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "forbid(principal, action, resource) when {{ resource.hasTag(\"restricted-{i}\") }};\n"
        ));
    }
    for i in 0..15 {
        text.push_str(&format!(
            "@kind(\"escalate\") permit(principal, action == Action::\"write\", resource) \
             when {{ resource.hasTag(\"region-{i}\") }};\n"
        ));
    }
    for i in 0..15 {
        text.push_str(&format!(
            "permit(principal, action == Action::\"write\", resource) when {{ resource.hasTag(\"public-{i}\") }};\n"
        ));
    }
    // Two that read who acts: evaluated again for every hop.
    text.push_str(
        "forbid(principal == Agent::\"intern\", action == Action::\"delete\", resource);\n",
    );
    text.push_str(
        "forbid(principal, action, resource) when { principal.mission.budget_used > 900000 };\n",
    );
    OrgPolicies::load(
        &[],
        &[PolicySource {
            name: "org.cedar".into(),
            text,
        }],
    )
    .unwrap()
}

fn policies() -> MissionPolicies {
    let mut scope = String::new();
    for i in 0..8 {
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

fn spec(agent: &str) -> MissionSpec {
    MissionSpec {
        agent: agent.parse().unwrap(),
        goal: "benchmark".into(),
        policies: policies(),
        ttl_secs: 3_600 - 1,
        budget: 1_000,
        out_of_scope: OutOfScope::Escalate,
    }
}

fn started(body: MissionBody, key: &MissionKey) -> Mission {
    let s256 = mission_s256(&body).unwrap();
    Mission {
        body,
        s256,
        status: MissionStatus::Active {
            jkt: key.thumbprint().clone(),
            started_at: NOW,
        },
        attestation: None,
        taint: None,
    }
}

/// A root and three delegations below it, with their keys.
fn chain() -> (Vec<Mission>, Vec<MissionKey>) {
    let keys: Vec<MissionKey> = (0..4)
        .map(|_| MissionKey::generate(&OsRandom).unwrap())
        .collect();
    let mut missions = Vec::new();
    let root = MissionBody::new(
        MissionSpec {
            ttl_secs: 3_600,
            budget: 1_000_000,
            ..spec("agent-0")
        },
        MissionId::generate(&OsRandom).unwrap(),
        ISS,
        "alice".parse().unwrap(),
        NOW,
        MissionLimits::default(),
        None,
    )
    .unwrap();
    missions.push(started(root, &keys[0]));
    for (i, key) in keys.iter().enumerate().skip(1) {
        let body = MissionBody::delegated(
            ChildSpec {
                spec: MissionSpec {
                    ttl_secs: 3_600 - u64::try_from(i).unwrap(),
                    ..spec(&format!("agent-{i}"))
                },
                ephemeral: false,
            },
            MissionId::generate(&OsRandom).unwrap(),
            &missions[i - 1],
            &[],
            1_000_000,
            NOW,
            MissionLimits::default(),
            None,
        )
        .unwrap();
        missions.push(started(body, key));
    }
    (missions, keys)
}

fn bench(c: &mut Criterion) {
    let org = org();
    let (missions, keys) = chain();
    let compiled: Vec<MissionPolicySet> = missions
        .iter()
        .map(|m| MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, None).unwrap())
        .collect();
    let grants = GrantSet::default();
    let res = ResourceRef {
        kind: ResourceKind::Resource {
            id: "invoice-42".into(),
        },
        tags: [("billing-7".to_owned(), "nov".to_owned())].into(),
    };
    let ctx = serde_json::Map::new();
    let ancestors: Vec<Ancestor<'_>> = missions[..3]
        .iter()
        .zip(&compiled)
        .map(|(m, p)| Ancestor {
            mission: m,
            policies: p,
            budget_used: 0,
        })
        .collect();
    let r1 = DecisionRequest {
        mission: &missions[0],
        budget_used: 0,
        action: "read",
        resource: &res,
        context: &ctx,
        trust: Trust::Signed,
        required: Trust::Signed,
        now: NOW.plus(1),
    };
    let r4 = DecisionRequest {
        mission: &missions[3],
        ..r1.clone()
    };
    // Both allowed by scope: every hop is evaluated.
    assert_eq!(
        decide_chain(&org, &[], &compiled[0], &grants, &r1).code,
        "scope"
    );
    assert_eq!(
        decide_chain(&org, &ancestors, &compiled[3], &grants, &r4).code,
        "scope"
    );
    let mut g = c.benchmark_group("chain_depth");
    g.bench_function("1", |b| {
        b.iter(|| black_box(decide_chain(&org, &[], &compiled[0], &grants, &r1)))
    });
    g.bench_function("4", |b| {
        b.iter(|| black_box(decide_chain(&org, &ancestors, &compiled[3], &grants, &r4)))
    });
    g.finish();

    // Offline verification: the credential of the depth-4 mission with its
    // three links, and a root credential with none.
    let authority = AuthorityKey::generate(&OsRandom).unwrap();
    let links: Vec<String> = (0..3)
        .map(|i| {
            let (p, ch) = (&missions[i], &missions[i + 1]);
            let party = LinkParty {
                mission_id: p.body.id.clone(),
                mission_s256: p.s256.clone(),
                agent: p.body.agent.clone(),
            };
            let claims = LinkClaims::for_child(&party, keys[i].thumbprint(), &ch.body, &ch.s256);
            keys[i].sign_link(claims, NOW, &OsRandom).unwrap()
        })
        .collect();
    let hops: Vec<ChainHop> = (0..3)
        .map(|i| ChainHop {
            mission_id: missions[i].body.id.clone(),
            mission_s256: missions[i].s256.clone(),
            agent: missions[i].body.agent.clone(),
            jkt: keys[i].thumbprint().clone(),
        })
        .collect();
    let deep = issue_chained_credential(
        &authority,
        &missions[3],
        keys[3].public_jwk(),
        NOW,
        300,
        &OsRandom,
        hops,
        links.iter().map(|l| link_digest(l)).collect(),
        None,
    )
    .unwrap()
    .token;
    let root = issue_chained_credential(
        &authority,
        &missions[0],
        keys[0].public_jwk(),
        NOW,
        300,
        &OsRandom,
        Vec::new(),
        Vec::new(),
        None,
    )
    .unwrap()
    .token;
    let jwks = authority.jwks();
    verify_delegation_chain(&deep, &links, &jwks, ISS, NOW.plus(1)).unwrap();
    let signing = SigningKey::from_bytes(&[7u8; 32]);
    let message = vec![0x5a_u8; 400];
    let signature = signing.sign(&message);
    let verifying = signing.verifying_key();
    let mut g = c.benchmark_group("chain_verify");
    g.bench_function("ed25519", |b| {
        b.iter(|| black_box(verifying.verify(black_box(&message), &signature)).unwrap())
    });
    let aws_key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ED25519,
        verifying.to_bytes().to_vec(),
    );
    let sig_bytes = signature.to_bytes();
    g.bench_function("ed25519_aws_lc", |b| {
        b.iter(|| black_box(aws_key.verify(black_box(&message), &sig_bytes)).unwrap())
    });
    g.bench_function("link", |b| {
        b.iter(|| black_box(mandate_core::verify_link(&links[1])).unwrap())
    });
    g.bench_function("credential_only", |b| {
        b.iter(|| {
            black_box(
                mandate_core::UnverifiedCredential::parse(&deep)
                    .and_then(|u| u.verify(&jwks, ISS, NOW.plus(1))),
            )
            .unwrap()
        })
    });
    g.bench_function("links_0", |b| {
        b.iter(|| black_box(verify_delegation_chain(&root, &[], &jwks, ISS, NOW.plus(1))).unwrap())
    });
    g.bench_function("links_3", |b| {
        b.iter(|| {
            black_box(verify_delegation_chain(
                &deep,
                &links,
                &jwks,
                ISS,
                NOW.plus(1),
            ))
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
