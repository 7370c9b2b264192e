//! Attestation evidence through the public API, with real evidence: JWT-SVIDs
//! signed by a P-256 key of a test trust domain (aws-lc-rs, through
//! `jsonwebtoken`), and DSSE launch statements signed by a launcher key.
//! Every bad-input case the verifier must refuse, each with its code; what
//! a requirement accepts; what policy sees; and the acting-principal proof.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_core::{
    Attestation, AttestationError, AttestationMethod, AttestationRequirement, AuthorityKey,
    Decision, DecisionRequest, DsseEnvelope, Evidence, GrantSet, LaunchStatement, LauncherKey,
    Mission, MissionBody, MissionId, MissionKey, MissionLimits, MissionPolicies, MissionPolicySet,
    MissionSpec, MissionStatus, OrgPolicies, OsRandom, OutOfScope, PolicySource, ResourceKind,
    ResourceRef, Trust, TrustAnchors, UnixTime, decide, issue_credential, key_audience,
    mission_s256, recheck_evidence, verify_acting_principal, verify_evidence,
};
use serde_json::{Map, json};

const AUD: &str = "https://mandate.test";
const TD: &str = "example.org";
const WORKLOAD: &str = "spiffe://example.org/agents/billing";

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

/// A JWT authority of a trust domain: a P-256 key and its `kid`.
struct Authority {
    kid: String,
    der: Vec<u8>,
    jwk: serde_json::Value,
}

impl Authority {
    fn new(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap().as_ref().to_vec();
        // Uncompressed point: 0x04 || X || Y.
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "jwt-svid",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Self {
            kid: kid.into(),
            der,
            jwk,
        }
    }

    fn bundle(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": [self.jwk] })).unwrap()
    }

    fn svid(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.der),
        )
        .unwrap()
    }
}

struct World {
    authority: Authority,
    launcher: LauncherKey,
    anchors: TrustAnchors,
    key: MissionKey,
}

fn world() -> World {
    let authority = Authority::new("td-key-1");
    let launcher = LauncherKey::generate(&OsRandom).unwrap();
    let mut anchors = TrustAnchors::none(AUD);
    anchors.add_bundle(TD, &authority.bundle()).unwrap();
    anchors
        .launchers
        .insert("ci".into(), launcher.public_jwk().clone());
    World {
        authority,
        launcher,
        anchors,
        key: MissionKey::generate(&OsRandom).unwrap(),
    }
}

fn svid_claims(sub: &str, aud: &[String], exp: u64) -> serde_json::Value {
    json!({ "sub": sub, "aud": aud, "exp": exp, "iat": now().0 })
}

fn bound(key: &MissionKey) -> Vec<String> {
    vec![AUD.to_owned(), key_audience(key.thumbprint())]
}

fn code_hex() -> String {
    "ab".repeat(32)
}

fn statement(
    _: &World,
    launcher: &str,
    audience: &str,
    jkt_of: &MissionKey,
    ttl: u64,
) -> LaunchStatement {
    LaunchStatement::new(
        launcher,
        audience,
        "/opt/agents/billing",
        &code_hex(),
        jkt_of.thumbprint(),
        [("host".to_owned(), "build-7".to_owned())].into(),
        now(),
        ttl,
    )
}

fn launch(w: &World, s: &LaunchStatement) -> Evidence {
    Evidence::LaunchStatement {
        envelope: w.launcher.sign_launch_statement("ci", s).unwrap(),
    }
}

fn code(e: Result<Attestation, AttestationError>) -> &'static str {
    match e {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

#[test]
fn a_jwt_svid_bound_to_the_key_is_accepted_for_that_key_only() {
    let w = world();
    let token = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300));
    let ev = Evidence::JwtSvid {
        token: token.clone(),
    };
    let a = verify_evidence(&ev, &w.anchors, w.key.thumbprint(), now()).unwrap();
    assert_eq!(a.method, AttestationMethod::JwtSvid);
    assert_eq!(a.subject, WORKLOAD);
    assert_eq!(a.workload(), Some(WORKLOAD));
    assert_eq!(a.code_digest, None);
    // The digest covers what was signed, not the signature's encoding.
    let input = token.rsplit_once('.').unwrap().0;
    assert_eq!(a.evidence_s256, mandate_core::s256(input.as_bytes()));
    // Another mission key: the same SVID does not bind it.
    let other = MissionKey::generate(&OsRandom).unwrap();
    assert_eq!(
        code(verify_evidence(&ev, &w.anchors, other.thumbprint(), now())),
        "attestation_unbound"
    );
}

#[test]
fn every_bad_jwt_svid_is_refused_with_its_code() {
    let w = world();
    let t = now().0;
    let svid = |claims: serde_json::Value| Evidence::JwtSvid {
        token: w.authority.svid(&claims),
    };
    let check = |ev: &Evidence| code(verify_evidence(ev, &w.anchors, w.key.thumbprint(), now()));
    // Expired.
    assert_eq!(
        check(&svid(svid_claims(WORKLOAD, &bound(&w.key), t - 1))),
        "attestation_expired"
    );
    // For another audience (the binding alone).
    assert_eq!(
        check(&svid(svid_claims(
            WORKLOAD,
            &[key_audience(w.key.thumbprint())],
            t + 300
        ))),
        "attestation_audience"
    );
    // Unbound: the authority's audience alone.
    assert_eq!(
        check(&svid(svid_claims(WORKLOAD, &[AUD.to_owned()], t + 300))),
        "attestation_unbound"
    );
    // Another trust domain, which has no bundle here.
    assert_eq!(
        check(&svid(svid_claims(
            "spiffe://evil.example/agents/billing",
            &bound(&w.key),
            t + 300
        ))),
        "attestation_untrusted"
    );
    // Self-signed: a key the bundle does not hold, under an unknown kid…
    let stranger = Authority::new("stranger");
    let forged = Evidence::JwtSvid {
        token: stranger.svid(&svid_claims(WORKLOAD, &bound(&w.key), t + 300)),
    };
    assert_eq!(check(&forged), "attestation_untrusted");
    // …and under the bundle's own kid.
    let impostor = Authority::new("td-key-1");
    let forged = Evidence::JwtSvid {
        token: impostor.svid(&svid_claims(WORKLOAD, &bound(&w.key), t + 300)),
    };
    assert_eq!(check(&forged), "attestation_invalid");
    // Tampered: the payload changed after signing.
    let good = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), t + 300));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&svid_claims(
            "spiffe://example.org/agents/admin",
            &bound(&w.key),
            t + 300,
        ))
        .unwrap(),
    );
    let tampered = Evidence::JwtSvid {
        token: parts.join("."),
    };
    assert_eq!(check(&tampered), "attestation_invalid");
    // Not a SPIFFE ID at all.
    assert_eq!(
        check(&svid(svid_claims("alice", &bound(&w.key), t + 300))),
        "attestation_invalid"
    );
    // Garbage.
    assert_eq!(
        check(&Evidence::JwtSvid {
            token: "a.b.c".into()
        }),
        "attestation_invalid"
    );
}

#[test]
fn a_launch_statement_binds_code_environment_and_key() {
    let w = world();
    let s = statement(&w, "ci", AUD, &w.key, 300);
    let ev = launch(&w, &s);
    let a = verify_evidence(&ev, &w.anchors, w.key.thumbprint(), now()).unwrap();
    assert_eq!(a.method, AttestationMethod::LaunchStatement);
    assert_eq!(a.subject, "/opt/agents/billing");
    assert_eq!(a.code_digest, Some(format!("sha256:{}", code_hex())));
    assert_eq!(a.launcher.as_deref(), Some("ci"));
    assert_eq!(
        a.environment.get("host").map(String::as_str),
        Some("build-7")
    );
    assert_eq!(a.workload(), None);
    // Extra signatures outside the signed bytes change neither the verdict
    // nor the digest (replay detection keys on what was signed).
    let Evidence::LaunchStatement { mut envelope } = ev.clone() else {
        panic!()
    };
    envelope.signatures.push(mandate_core::DsseSignature {
        keyid: Some("nobody".into()),
        sig: "AAAA".into(),
    });
    let again = verify_evidence(
        &Evidence::LaunchStatement { envelope },
        &w.anchors,
        w.key.thumbprint(),
        now(),
    )
    .unwrap();
    assert_eq!(again.evidence_s256, a.evidence_s256);
}

#[test]
fn every_bad_launch_statement_is_refused_with_its_code() {
    let w = world();
    let check = |ev: &Evidence| code(verify_evidence(ev, &w.anchors, w.key.thumbprint(), now()));
    // Signed by a key nobody registered, under a registered name.
    let rogue = LauncherKey::generate(&OsRandom).unwrap();
    let s = statement(&w, "ci", AUD, &w.key, 300);
    let forged = Evidence::LaunchStatement {
        envelope: rogue.sign_launch_statement("ci", &s).unwrap(),
    };
    assert_eq!(check(&forged), "attestation_invalid");
    // …or under an unregistered name.
    let forged = Evidence::LaunchStatement {
        envelope: rogue.sign_launch_statement("laptop", &s).unwrap(),
    };
    assert_eq!(check(&forged), "attestation_untrusted");
    // Tampered: the code digest changed after signing.
    let Evidence::LaunchStatement { envelope } = launch(&w, &s) else {
        panic!()
    };
    let mut changed = s.clone();
    changed.subject[0]
        .digest
        .insert("sha256".into(), "cd".repeat(32));
    let tampered = DsseEnvelope {
        payload: base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&changed).unwrap()),
        ..envelope
    };
    assert_eq!(
        check(&Evidence::LaunchStatement { envelope: tampered }),
        "attestation_invalid"
    );
    // Expired: issued 10 minutes ago for 5.
    let mut old = s.clone();
    old.predicate.issued_at -= 600;
    old.predicate.expires_at -= 600;
    assert_eq!(check(&launch(&w, &old)), "attestation_expired");
    // Valid for longer than an hour.
    assert_eq!(
        check(&launch(&w, &statement(&w, "ci", AUD, &w.key, 7_200))),
        "attestation_invalid"
    );
    // For another authority.
    assert_eq!(
        check(&launch(
            &w,
            &statement(&w, "ci", "https://elsewhere.test", &w.key, 300)
        )),
        "attestation_audience"
    );
    // For another mission key.
    let other = MissionKey::generate(&OsRandom).unwrap();
    assert_eq!(
        check(&launch(&w, &statement(&w, "ci", AUD, &other, 300))),
        "attestation_unbound"
    );
    // Naming a launcher other than the one that signed.
    assert_eq!(
        check(&launch(&w, &statement(&w, "deploy", AUD, &w.key, 300))),
        "attestation_invalid"
    );
    // Not a launch statement.
    let mut wrong = s.clone();
    wrong.predicate_type = "https://slsa.dev/provenance/v1".into();
    assert_eq!(check(&launch(&w, &wrong)), "attestation_invalid");
    let mut two = s.clone();
    two.subject.push(two.subject[0].clone());
    assert_eq!(check(&launch(&w, &two)), "attestation_invalid");
    let mut no_sha = s;
    no_sha.subject[0].digest = [("sha512".to_owned(), "00".repeat(64))].into();
    assert_eq!(check(&launch(&w, &no_sha)), "attestation_invalid");
}

#[test]
fn requirements_accept_what_they_name() {
    let w = world();
    let svid = verify_evidence(
        &Evidence::JwtSvid {
            token: w
                .authority
                .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300)),
        },
        &w.anchors,
        w.key.thumbprint(),
        now(),
    )
    .unwrap();
    let launched = verify_evidence(
        &launch(&w, &statement(&w, "ci", AUD, &w.key, 300)),
        &w.anchors,
        w.key.thumbprint(),
        now(),
    )
    .unwrap();
    let req = |ids: &[&str], launchers: &[&str], digests: &[&str]| AttestationRequirement {
        spiffe_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        launchers: launchers.iter().map(|s| (*s).to_owned()).collect(),
        code_digests: digests.iter().map(|s| (*s).to_owned()).collect(),
    };
    let ok = |r: &AttestationRequirement, a: &Attestation| r.check(a).is_ok();
    assert!(ok(
        &req(&["spiffe://example.org/agents/*"], &[], &[]),
        &svid
    ));
    assert!(ok(&req(&[WORKLOAD], &[], &[]), &svid));
    assert!(!ok(
        &req(&["spiffe://example.org/other/*"], &[], &[]),
        &svid
    ));
    // A workload requirement is not met by a launcher, nor the reverse.
    assert!(!ok(&req(&[WORKLOAD], &[], &[]), &launched));
    assert!(!ok(&req(&[], &["ci"], &[]), &svid));
    assert!(ok(&req(&[], &["ci"], &[]), &launched));
    let digest = format!("sha256:{}", code_hex());
    assert!(ok(&req(&[], &["ci"], &[&digest]), &launched));
    assert!(!ok(
        &req(&[], &["ci"], &[&format!("sha256:{}", "00".repeat(32))]),
        &launched
    ));
    // A code digest alone: only evidence that names code meets it.
    assert!(ok(&req(&[], &[], &[&digest]), &launched));
    assert_eq!(
        req(&[], &[], &[&digest]).check(&svid).unwrap_err().code(),
        "attestation_mismatch"
    );
}

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

fn started(key: &MissionKey, attestation: Option<Attestation>) -> Mission {
    let body = MissionBody::new(
        MissionSpec {
            agent: "billing-bot".parse().unwrap(),
            goal: "pay the invoices".into(),
            policies: MissionPolicies {
                scope: "permit(principal, action, resource);".into(),
                boundaries: String::new(),
                escalations: String::new(),
            },
            ttl_secs: 3_600,
            budget: 100,
            out_of_scope: OutOfScope::Deny,
        },
        MissionId::generate(&OsRandom).unwrap(),
        AUD,
        "alice".parse().unwrap(),
        now(),
        MissionLimits::default(),
        None,
    )
    .unwrap();
    Mission {
        s256: mission_s256(&body).unwrap(),
        body,
        status: MissionStatus::Active {
            jkt: key.thumbprint().clone(),
            started_at: now(),
        },
        attestation,
        taint: None,
    }
}

#[test]
fn policy_sees_attested_missions_their_code_and_workload() {
    let w = world();
    let launched = verify_evidence(
        &launch(&w, &statement(&w, "ci", AUD, &w.key, 300)),
        &w.anchors,
        w.key.thumbprint(),
        now(),
    )
    .unwrap();
    let org = OrgPolicies::load(
        &[],
        &[src(
            "pay.cedar",
            &format!(
                "@id(\"only-reviewed-code-writes\")\n\
                 forbid(principal, action == Action::\"write\", resource) unless {{\n\
                   principal.mission.attested && context.trust == \"attested\" &&\n\
                   principal.mission has code_digest && principal.mission.code_digest == \"sha256:{}\"\n\
                 }};",
                code_hex()
            ),
        )],
    )
    .unwrap();
    let resource = ResourceRef {
        kind: ResourceKind::Resource {
            id: "ledger".into(),
        },
        tags: BTreeMap::new(),
    };
    let decide_for = |m: &Mission| {
        let compiled =
            MissionPolicySet::compile(m.body.id.as_str(), &m.body.policies, Some(org.schema()))
                .unwrap();
        decide(
            &org,
            &compiled,
            &GrantSet::default(),
            &DecisionRequest {
                mission: m,
                budget_used: 0,
                action: "write",
                resource: &resource,
                context: &Map::new(),
                trust: Trust::of(m),
                required: Trust::Signed,
                now: now(),
            },
        )
    };
    let attested = started(&w.key, Some(launched.clone()));
    assert_eq!(decide_for(&attested).decision, Decision::Allow);
    let plain = started(&w.key, None);
    let refused = decide_for(&plain);
    assert_eq!(refused.decision, Decision::Deny);
    assert_eq!(
        refused.policies,
        vec!["pay.cedar/only-reviewed-code-writes"]
    );
    // Other code, attested all the same: refused.
    let mut other = launched;
    other.code_digest = Some(format!("sha256:{}", "00".repeat(32)));
    assert_eq!(
        decide_for(&started(&w.key, Some(other))).decision,
        Decision::Deny
    );
    // A route that requires `attested`: the plain mission is refused
    // before any policy, the attested one is not.
    let compiled =
        MissionPolicySet::compile(plain.body.id.as_str(), &plain.body.policies, None).unwrap();
    let needs = |m: &Mission| {
        decide(
            &OrgPolicies::empty().unwrap(),
            &compiled,
            &GrantSet::default(),
            &DecisionRequest {
                mission: m,
                budget_used: 0,
                action: "read",
                resource: &resource,
                context: &Map::new(),
                trust: Trust::of(m),
                required: Trust::Attested,
                now: now(),
            },
        )
    };
    assert_eq!(needs(&plain).code, "insufficient_trust");
    assert_eq!(needs(&attested).decision, Decision::Allow);
}

#[test]
fn the_acting_principal_proof_checks_credential_and_evidence_offline() {
    let w = world();
    let ev = launch(&w, &statement(&w, "ci", AUD, &w.key, 300));
    let att = verify_evidence(&ev, &w.anchors, w.key.thumbprint(), now()).unwrap();
    let authority = AuthorityKey::generate(&OsRandom).unwrap();
    let mission = started(&w.key, Some(att.clone()));
    let credential = issue_credential(
        &authority,
        &mission,
        w.key.public_jwk(),
        now(),
        300,
        &OsRandom,
    )
    .unwrap();
    assert_eq!(credential.claims.att.as_ref(), Some(&att));
    let jwks = authority.jwks();
    let proof = verify_acting_principal(
        &credential.token,
        &[],
        &jwks,
        AUD,
        now(),
        Some((&ev, &w.anchors)),
    )
    .unwrap();
    assert!(proof.evidence_rechecked);
    let line = proof.statement();
    assert!(
        line.contains(&format!("code sha256:{}", code_hex())),
        "{line}"
    );
    assert!(line.contains("acts for alice as billing-bot"), "{line}");
    assert!(line.contains(mission.body.id.as_str()), "{line}");
    // Other evidence (another statement for the same key) is not the one
    // the credential names.
    let other = launch(&w, &statement(&w, "ci", AUD, &w.key, 200));
    let refused = verify_acting_principal(
        &credential.token,
        &[],
        &jwks,
        AUD,
        now(),
        Some((&other, &w.anchors)),
    )
    .unwrap_err();
    assert_eq!(refused.code(), "attestation_mismatch");
    // Without anchors for it, the evidence does not check out.
    let none = TrustAnchors::none(AUD);
    let refused = verify_acting_principal(
        &credential.token,
        &[],
        &jwks,
        AUD,
        now(),
        Some((&ev, &none)),
    )
    .unwrap_err();
    assert_eq!(refused.code(), "attestation_untrusted");
    // A statement checked later, past its expiry, still re-checks as of
    // when the authority verified it.
    let later = recheck_evidence(&ev, &w.anchors, w.key.thumbprint(), &att);
    assert!(later.is_ok());
    // An unattested mission's credential says so.
    let plain = issue_credential(
        &authority,
        &started(&w.key, None),
        w.key.public_jwk(),
        now(),
        300,
        &OsRandom,
    )
    .unwrap();
    let proof = verify_acting_principal(&plain.token, &[], &jwks, AUD, now(), None).unwrap();
    assert!(proof.attestation.is_none());
    assert!(proof.statement().starts_with("unattested code"));
    assert_eq!(
        verify_acting_principal(
            &plain.token,
            &[],
            &jwks,
            AUD,
            now(),
            Some((&ev, &w.anchors))
        )
        .unwrap_err()
        .code(),
        "not_attested"
    );
}

#[test]
fn an_expired_svid_rechecks_offline_but_not_a_forged_one() {
    let w = world();
    // Expired an hour ago: verified (in this test's story) when it was
    // fresh; its signature and audience still check.
    let token = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 - 3_600));
    let claimed = Attestation {
        method: AttestationMethod::JwtSvid,
        subject: WORKLOAD.into(),
        code_digest: None,
        launcher: None,
        environment: BTreeMap::new(),
        evidence_s256: mandate_core::s256(token.rsplit_once('.').unwrap().0.as_bytes()),
        verified_at: now().0 - 3_700,
    };
    let ev = Evidence::JwtSvid { token };
    assert!(recheck_evidence(&ev, &w.anchors, w.key.thumbprint(), &claimed).is_ok());
    let impostor = Authority::new("td-key-1");
    let forged = Evidence::JwtSvid {
        token: impostor.svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 - 3_600)),
    };
    assert_eq!(
        recheck_evidence(&forged, &w.anchors, w.key.thumbprint(), &claimed)
            .unwrap_err()
            .code(),
        "attestation_invalid"
    );
}

#[test]
fn evidence_reads_from_files_in_either_form() {
    let w = world();
    let token = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300));
    assert!(matches!(
        Evidence::from_text(&format!("{token}\n")).unwrap(),
        Evidence::JwtSvid { .. }
    ));
    let Evidence::LaunchStatement { envelope } = launch(&w, &statement(&w, "ci", AUD, &w.key, 300))
    else {
        panic!()
    };
    let text = serde_json::to_string(&envelope).unwrap();
    assert_eq!(
        Evidence::from_text(&text).unwrap(),
        Evidence::LaunchStatement { envelope }
    );
    assert!(Evidence::from_text("hello").is_err());
    // A JWT-SVID is a bearer token elsewhere: never in debug output.
    assert!(
        !format!(
            "{:?}",
            Evidence::JwtSvid {
                token: token.clone()
            }
        )
        .contains(&token[..20])
    );
}
