//! Security review of attestation (ADR 0020), verifier side: attacks on the
//! JWT-SVID and launch-statement verifiers, on requirements, on what policy
//! sees, and on the offline acting-principal proof.
//!
//! Each test is an attack that must fail: it asserts the refusal, and
//! stays as a regression test.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use mandate_core::{
    Ancestor, Attestation, AttestationError, AttestationMethod, AttestationRequirement, Decision,
    DecisionRequest, DsseEnvelope, DsseSignature, Ed25519Jwk, Evidence, GrantSet,
    IN_TOTO_PAYLOAD_TYPE, LaunchStatement, Mission, MissionBody, MissionId, MissionKey,
    MissionLimits, MissionPolicies, MissionPolicySet, MissionSpec, MissionStatus, OrgPolicies,
    OsRandom, OutOfScope, PolicySource, ResourceKind, ResourceRef, SecureRandom as _, Trust,
    TrustAnchors, UnixTime, decide, decide_chain, key_audience, mission_s256, recheck_evidence,
    verify_evidence,
};
use serde_json::{Map, Value, json};

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

// ---------------------------------------------------------------------------
// Fixtures: a SPIFFE JWT authority, launchers, a mission key.
// ---------------------------------------------------------------------------

/// A JWT authority of a trust domain: a P-256 key and its `kid`.
struct Authority {
    kid: String,
    der: Vec<u8>,
    jwk: Value,
}

impl Authority {
    fn new(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap().as_ref().to_vec();
        let point = pair.public_key().as_ref().to_vec();
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

    fn svid_with(&self, header: jsonwebtoken::Header, claims: &Value) -> String {
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.der),
        )
        .unwrap()
    }

    fn svid(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        self.svid_with(header, claims)
    }
}

/// A launcher key that signs any payload (not only a well-formed
/// statement), as a launcher gone wrong or an attacker with a launcher's
/// key would.
struct RawLauncher(ed25519_dalek::SigningKey);

impl RawLauncher {
    fn new() -> Self {
        let mut seed = [0u8; 32];
        OsRandom.fill(&mut seed).unwrap();
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    fn jwk(&self) -> Ed25519Jwk {
        Ed25519Jwk::from_public_bytes(&self.0.verifying_key().to_bytes())
    }

    /// The raw signature over the DSSE PAE of `payload`, base64.
    fn sig(&self, payload: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        let pae = [
            format!(
                "DSSEv1 {} {} {} ",
                IN_TOTO_PAYLOAD_TYPE.len(),
                IN_TOTO_PAYLOAD_TYPE,
                payload.len()
            )
            .into_bytes(),
            payload.to_vec(),
        ]
        .concat();
        STANDARD.encode(self.0.sign(&pae).to_bytes())
    }

    fn envelope(&self, keyid: &str, payload: &[u8]) -> DsseEnvelope {
        DsseEnvelope {
            payload: STANDARD.encode(payload),
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            signatures: vec![DsseSignature {
                keyid: Some(keyid.into()),
                sig: self.sig(payload),
            }],
        }
    }
}

struct World {
    authority: Authority,
    /// Registered as `ci`.
    ci: RawLauncher,
    /// Registered as `deploy`.
    deploy: RawLauncher,
    anchors: TrustAnchors,
    key: MissionKey,
}

fn world() -> World {
    let authority = Authority::new("td-key-1");
    let ci = RawLauncher::new();
    let deploy = RawLauncher::new();
    let mut anchors = TrustAnchors::none(AUD);
    anchors.add_bundle(TD, &authority.bundle()).unwrap();
    anchors.launchers.insert("ci".into(), ci.jwk());
    anchors.launchers.insert("deploy".into(), deploy.jwk());
    World {
        authority,
        ci,
        deploy,
        anchors,
        key: MissionKey::generate(&OsRandom).unwrap(),
    }
}

fn svid_claims(sub: &str, aud: &[String], exp: u64) -> Value {
    json!({ "sub": sub, "aud": aud, "exp": exp, "iat": now().0 })
}

fn bound(key: &MissionKey) -> Vec<String> {
    vec![AUD.to_owned(), key_audience(key.thumbprint())]
}

fn code_hex() -> String {
    "ab".repeat(32)
}

fn statement(launcher: &str, key: &MissionKey) -> LaunchStatement {
    LaunchStatement::new(
        launcher,
        AUD,
        "/opt/agents/billing",
        &code_hex(),
        key.thumbprint(),
        [("host".to_owned(), "build-7".to_owned())].into(),
        now(),
        300,
    )
}

fn json_of(s: &LaunchStatement) -> Value {
    serde_json::to_value(s).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn launch(envelope: DsseEnvelope) -> Evidence {
    Evidence::LaunchStatement { envelope }
}

fn code(e: &Result<Attestation, AttestationError>) -> &'static str {
    match e {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

fn check(w: &World, ev: &Evidence) -> Result<Attestation, AttestationError> {
    verify_evidence(ev, &w.anchors, w.key.thumbprint(), now())
}

fn svid_ev(token: String) -> Evidence {
    Evidence::JwtSvid { token }
}

fn b64url_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

// ---------------------------------------------------------------------------
// JWT-SVID confusion
// ---------------------------------------------------------------------------

/// `alg: none` (with and without a `kid` the bundle holds) is refused.
#[test]
fn svid_alg_none_is_refused() {
    let w = world();
    let claims = svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300);
    for header in [
        json!({ "alg": "none", "kid": "td-key-1", "typ": "JWT" }),
        json!({ "alg": "none" }),
        json!({ "alg": "NONE", "kid": "td-key-1" }),
    ] {
        for sig in ["", "AAAA"] {
            let token = format!("{}.{}.{sig}", b64url_json(&header), b64url_json(&claims));
            let r = check(&w, &svid_ev(token));
            assert!(r.is_err(), "{header} accepted");
        }
    }
}

/// HS256 keyed with the bundle's public JWK (the classic alg-confusion
/// attack) is refused.
#[test]
fn svid_hs256_keyed_with_the_bundle_key_is_refused() {
    let w = world();
    let claims = svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300);
    let jwk_bytes = serde_json::to_vec(&w.authority.jwk).unwrap();
    let x = URL_SAFE_NO_PAD
        .decode(w.authority.jwk["x"].as_str().unwrap())
        .unwrap();
    for secret in [jwk_bytes, w.authority.bundle(), x] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("td-key-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        let r = check(&w, &svid_ev(token));
        assert!(r.is_err(), "HS256 accepted");
    }
}

/// `typ` other than `JWT`/`JOSE` is refused; `crit` headers are not
/// silently ignored into acceptance either.
#[test]
fn svid_typ_and_crit_tricks_are_refused() {
    let w = world();
    let claims = svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300);
    for typ in ["at+jwt", "dpop+jwt", "mandate-credential+jwt", "jwt "] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("td-key-1".into());
        header.typ = Some(typ.into());
        let r = check(&w, &svid_ev(w.authority.svid_with(header, &claims)));
        assert!(r.is_err(), "typ {typ} accepted");
    }
}

/// Two trust domains whose bundles both use `kid` `k1` (different keys):
/// a token signed by domain A's key with `sub` in domain B is refused.
#[test]
fn svid_signed_by_one_domain_for_a_subject_in_another_is_refused() {
    let a = Authority::new("k1");
    let b = Authority::new("k1");
    let key = MissionKey::generate(&OsRandom).unwrap();
    let mut anchors = TrustAnchors::none(AUD);
    anchors.add_bundle("a.example", &a.bundle()).unwrap();
    anchors.add_bundle("b.example", &b.bundle()).unwrap();
    let t = now().0 + 300;
    // Sanity: each domain's own SVIDs verify.
    let own = a.svid(&svid_claims("spiffe://a.example/x", &bound(&key), t));
    assert!(verify_evidence(&svid_ev(own), &anchors, key.thumbprint(), now()).is_ok());
    // A's key, B's subject.
    let cross = a.svid(&svid_claims("spiffe://b.example/admin", &bound(&key), t));
    let r = verify_evidence(&svid_ev(cross), &anchors, key.thumbprint(), now());
    assert_eq!(code(&r), "attestation_invalid");
}

/// SPIFFE IDs that try to escape a `spiffe://td/agents/*` pattern: dot
/// segments, empty segments, an uppercase trust domain, a trailing slash,
/// percent-encoding, port, userinfo, query, fragment. Each is refused
/// outright or, if it is a valid ID, does not meet the pattern.
#[test]
fn svid_subject_path_tricks_never_meet_a_pattern() {
    let w = world();
    let pattern = AttestationRequirement {
        spiffe_ids: vec!["spiffe://example.org/agents/*".into()],
        ..AttestationRequirement::default()
    };
    let t = now().0 + 300;
    let (mut met, mut escaped) = (Vec::new(), Vec::new());
    for sub in [
        "spiffe://example.org/agents/../admin",
        "spiffe://example.org/agents/./x",
        "spiffe://example.org/agents/.",
        "spiffe://example.org/agents/..",
        "spiffe://example.org/agents//x",
        "spiffe://example.org/agents/x/",
        "spiffe://example.org/agents/",
        "spiffe://example.org/agents/%2e%2e/admin",
        "spiffe://example.org/agents/x%2fy",
        "spiffe://example.org:443/agents/x",
        "spiffe://user@example.org/agents/x",
        "spiffe://example.org/agents/x?y=z",
        "spiffe://example.org/agents/x#y",
        "spiffe://example.org/agents/x\u{0}",
        "spiffe://example.org/agents/x\n",
        "spiffe://example.org/agents/\u{0430}dmin",
        " spiffe://example.org/agents/x",
    ] {
        let r = check(
            &w,
            &svid_ev(w.authority.svid(&svid_claims(sub, &bound(&w.key), t))),
        );
        if let Ok(a) = &r {
            met.push(format!("{sub:?} as {}", a.subject));
            if pattern.check(a).is_ok() {
                escaped.push(format!("{sub:?} as {}", a.subject));
            }
        }
    }
    assert!(
        escaped.is_empty(),
        "meet the pattern: {escaped:?} (accepted: {met:?})"
    );
    // Scheme and trust domain are case-insensitive (SPIFFE ID §2.1): an
    // uppercase spelling is the same workload, signed by the same domain,
    // and is read as its canonical lowercase ID.
    for sub in [
        "spiffe://EXAMPLE.org/agents/x",
        "SPIFFE://example.org/agents/x",
    ] {
        let a = check(
            &w,
            &svid_ev(w.authority.svid(&svid_claims(sub, &bound(&w.key), t))),
        )
        .unwrap();
        assert_eq!(a.subject, "spiffe://example.org/agents/x");
    }
    // The parent path itself is a valid ID but is not *below* the pattern.
    let parent = check(
        &w,
        &svid_ev(w.authority.svid(&svid_claims(
            "spiffe://example.org/agents",
            &bound(&w.key),
            t,
        ))),
    )
    .unwrap();
    assert!(pattern.check(&parent).is_err());
    let sibling = check(
        &w,
        &svid_ev(w.authority.svid(&svid_claims(
            "spiffe://example.org/agentsX/y",
            &bound(&w.key),
            t,
        ))),
    )
    .unwrap();
    assert!(pattern.check(&sibling).is_err());
}

/// `nbf` in the future is refused at start.
#[test]
fn svid_nbf_in_the_future_is_refused() {
    let w = world();
    let mut claims = svid_claims(WORKLOAD, &bound(&w.key), now().0 + 600);
    claims["nbf"] = json!(now().0 + 300);
    assert_eq!(
        code(&check(&w, &svid_ev(w.authority.svid(&claims)))),
        "attestation_invalid"
    );
}

/// Duplicated audiences: the binding twice without the authority's
/// audience, or the authority's twice without the binding, are refused; a
/// huge `aud` array is refused before any work.
#[test]
fn svid_duplicated_or_huge_audiences_are_refused() {
    let w = world();
    let t = now().0 + 300;
    let binding = key_audience(w.key.thumbprint());
    let twice_binding = svid_claims(WORKLOAD, &[binding.clone(), binding.clone()], t);
    assert_eq!(
        code(&check(&w, &svid_ev(w.authority.svid(&twice_binding)))),
        "attestation_audience"
    );
    let twice_aud = svid_claims(WORKLOAD, &[AUD.to_owned(), AUD.to_owned()], t);
    assert_eq!(
        code(&check(&w, &svid_ev(w.authority.svid(&twice_aud)))),
        "attestation_unbound"
    );
    // The authority's audience with a near-miss of the binding.
    let near = svid_claims(
        WORKLOAD,
        &[
            AUD.to_owned(),
            format!("{binding} "),
            binding.to_uppercase(),
        ],
        t,
    );
    assert_eq!(
        code(&check(&w, &svid_ev(w.authority.svid(&near)))),
        "attestation_unbound"
    );
    let mut many: Vec<String> = (0..200).map(|i| format!("urn:x:{i}")).collect();
    many.extend(bound(&w.key));
    let r = check(
        &w,
        &svid_ev(w.authority.svid(&svid_claims(WORKLOAD, &many, t))),
    );
    assert_eq!(code(&r), "attestation_invalid");
}

/// ECDSA malleability: the same SVID with `(r, n − s)` is, if the
/// verifier accepts it at all, the same evidence (same digest), so it
/// cannot start a second mission.
#[test]
fn svid_ecdsa_malleated_signature_is_the_same_evidence() {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let w = world();
    let token = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300));
    let original = check(&w, &svid_ev(token.clone())).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    // s' = n - s, big-endian.
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(sig[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        sig[32 + i] = u8::try_from(d.rem_euclid(256)).unwrap();
    }
    let malleated = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_ne!(malleated, token);
    let again = check(&w, &svid_ev(malleated));
    eprintln!("(r, n - s): {}", code(&again));
    if let Ok(again) = again {
        assert_eq!(again.evidence_s256, original.evidence_s256);
    }
    // A padded or standard-alphabet signature encoding is the same
    // evidence too, if accepted.
    let (_, sig) = token.rsplit_once('.').unwrap();
    let raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    for re in [URL_SAFE.encode(&raw), STANDARD.encode(&raw)] {
        if let Ok(again) = check(&w, &svid_ev(format!("{input}.{re}"))) {
            assert_eq!(again.evidence_s256, original.evidence_s256);
        }
    }
}

// ---------------------------------------------------------------------------
// Launch statements
// ---------------------------------------------------------------------------

/// A signature whose `keyid` names registered launcher `ci` but made by
/// registered launcher `deploy`: refused whether the statement names `ci`
/// or `deploy`, unless an entry names `deploy` (and then it is attributed
/// to `deploy`, which did sign).
#[test]
fn launch_keyid_of_one_launcher_signature_of_another() {
    let w = world();
    // deploy signs a statement naming ci, labelled ci.
    let names_ci = bytes(&json_of(&statement("ci", &w.key)));
    let env = w.deploy.envelope("ci", &names_ci);
    assert!(check(&w, &launch(env)).is_err());
    // deploy signs a statement naming deploy, labelled ci.
    let names_deploy = bytes(&json_of(&statement("deploy", &w.key)));
    let env = w.deploy.envelope("ci", &names_deploy);
    assert!(check(&w, &launch(env)).is_err());
    // …plus a junk entry naming deploy: deploy is tried, and the statement
    // naming ci is still refused (ci did not sign).
    let mut env = w.deploy.envelope("ci", &names_ci);
    env.signatures.push(DsseSignature {
        keyid: Some("deploy".into()),
        sig: STANDARD.encode([0u8; 64]),
    });
    assert_eq!(code(&check(&w, &launch(env))), "attestation_invalid");
    // The statement naming deploy, signed by deploy: deploy's.
    let mut env = w.deploy.envelope("ci", &names_deploy);
    env.signatures.push(DsseSignature {
        keyid: Some("deploy".into()),
        sig: STANDARD.encode([0u8; 64]),
    });
    let a = check(&w, &launch(env)).unwrap();
    assert_eq!(a.launcher.as_deref(), Some("deploy"));
}

/// A statement naming registered launcher `deploy`, signed only by `ci`.
#[test]
fn launch_statement_naming_another_registered_launcher_is_refused() {
    let w = world();
    let env =
        w.ci.envelope("ci", &bytes(&json_of(&statement("deploy", &w.key))));
    assert_eq!(code(&check(&w, &launch(env))), "attestation_invalid");
    // Signed by both: it names deploy, and deploy signed, so deploy's.
    let payload = bytes(&json_of(&statement("deploy", &w.key)));
    let mut env = w.ci.envelope("ci", &payload);
    env.signatures.push(DsseSignature {
        keyid: Some("deploy".into()),
        sig: w.deploy.sig(&payload),
    });
    assert_eq!(
        check(&w, &launch(env)).unwrap().launcher.as_deref(),
        Some("deploy")
    );
}

/// More than eight signatures, a signature without `keyid`, an empty
/// signature list: refused.
#[test]
fn launch_signature_count_and_keyless_signatures() {
    let w = world();
    let payload = bytes(&json_of(&statement("ci", &w.key)));
    let mut env = w.ci.envelope("ci", &payload);
    for _ in 0..8 {
        env.signatures.push(DsseSignature {
            keyid: Some("nobody".into()),
            sig: STANDARD.encode([0u8; 64]),
        });
    }
    assert_eq!(code(&check(&w, &launch(env))), "attestation_invalid");
    let mut env = w.ci.envelope("ci", &payload);
    env.signatures[0].keyid = None;
    assert_eq!(code(&check(&w, &launch(env))), "attestation_untrusted");
    let mut env = w.ci.envelope("ci", &payload);
    env.signatures.clear();
    assert!(check(&w, &launch(env)).is_err());
}

/// Unknown predicate fields, a wrong `_type`, a second subject, a subject
/// digest in uppercase hex: refused.
#[test]
fn launch_statement_shape_tricks_are_refused() {
    let w = world();
    let base = json_of(&statement("ci", &w.key));
    let mut cases = Vec::new();
    let mut v = base.clone();
    v["predicate"]["admin"] = json!(true);
    cases.push(("unknown predicate field", v));
    let mut v = base.clone();
    v["predicate"]["mission_key"]["kid"] = json!("x");
    cases.push(("unknown mission_key field", v));
    let mut v = base.clone();
    v["_type"] = json!("https://in-toto.io/Statement/v0.1");
    cases.push(("old statement type", v));
    let mut v = base.clone();
    v["subject"][0]["digest"]["sha256"] = json!(code_hex().to_uppercase());
    cases.push(("uppercase digest", v));
    let mut v = base.clone();
    v["subject"][0]["digest"]["sha256"] = json!(format!("{}0", code_hex()));
    cases.push(("long digest", v));
    let mut v = base.clone();
    v["subject"] = json!([]);
    cases.push(("no subject", v));
    let mut v = base.clone();
    v["subject"][0]["name"] = json!("");
    cases.push(("empty subject name", v));
    let mut v = base.clone();
    v["subject"][0]["name"] = json!("x".repeat(257));
    cases.push(("long subject name", v));
    let mut v = base.clone();
    v["predicate"]["issued_at"] = json!(-1);
    cases.push(("negative issued_at", v));
    let mut v = base;
    v["predicate"]["expires_at"] = json!(1e300);
    cases.push(("float expires_at", v));
    for (what, v) in cases {
        let env = w.ci.envelope("ci", &bytes(&v));
        assert!(check(&w, &launch(env)).is_err(), "{what} accepted");
    }
}

/// Validity tricks: `expires_at` at `u64::MAX`, `issued_at` far in the
/// past with a short life, `issued_at` in the future.
#[test]
fn launch_validity_tricks_are_refused() {
    let w = world();
    let t = now().0;
    let base = json_of(&statement("ci", &w.key));
    for (issued, expires, want) in [
        (t, u64::MAX, "attestation_invalid"),
        (u64::MAX - 10, u64::MAX, "attestation_invalid"),
        (0, 3_600, "attestation_expired"),
        (t - 86_400, t - 86_400 + 60, "attestation_expired"),
        (t + 600, t + 900, "attestation_invalid"),
        (t, t, "attestation_invalid"),
        (t + 10, t, "attestation_invalid"),
    ] {
        let mut v = base.clone();
        v["predicate"]["issued_at"] = json!(issued);
        v["predicate"]["expires_at"] = json!(expires);
        let env = w.ci.envelope("ci", &bytes(&v));
        assert_eq!(
            code(&check(&w, &launch(env))),
            want,
            "issued {issued} expires {expires}"
        );
    }
}

/// An environment with control characters (newline, escape, NUL, DEL),
/// too many entries or an empty key is refused.
#[test]
fn launch_environment_tricks_are_refused() {
    let w = world();
    let base = json_of(&statement("ci", &w.key));
    for env in [
        json!({ "host": "a\nfake-audit-line" }),
        json!({ "host": "\u{1b}[2Jcleared" }),
        json!({ "host\u{0}": "x" }),
        json!({ "host": "x\u{7f}" }),
        json!({ "": "x" }),
        Value::Object(
            (0..33)
                .map(|i| (format!("k{i}"), json!("v")))
                .collect::<Map<_, _>>(),
        ),
    ] {
        let mut v = base.clone();
        v["predicate"]["environment"] = env.clone();
        let e = w.ci.envelope("ci", &bytes(&v));
        assert_eq!(code(&check(&w, &launch(e))), "attestation_invalid", "{env}");
    }
}

/// The subject's name — the launched code's name, shown in `audit
/// explain`, `credential verify` and the acting-principal statement — may
/// not hold control characters (newline, ANSI escapes), as the environment
/// beside it may not.
#[test]
fn launch_subject_name_with_control_characters_is_refused() {
    let w = world();
    let base = json_of(&statement("ci", &w.key));
    for name in [
        "/opt/agents/billing\nattested by launcher `prod`: code sha256:00",
        "/opt/agents/\u{1b}[2K\u{1b}[1Greviewed-billing",
        "/opt/agents/billing\u{0}",
    ] {
        let mut v = base.clone();
        v["subject"][0]["name"] = json!(name);
        let e = w.ci.envelope("ci", &bytes(&v));
        assert_eq!(
            code(&check(&w, &launch(e))),
            "attestation_invalid",
            "subject {name:?} accepted"
        );
    }
}

/// Re-encoding the payload (standard or URL-safe alphabet, with or without
/// padding), re-signing the same statement, or adding junk signatures does
/// not make new evidence: the digest is the same.
#[test]
fn launch_re_encodings_are_the_same_evidence() {
    let w = world();
    let payload = bytes(&json_of(&statement("ci", &w.key)));
    let env = w.ci.envelope("ci", &payload);
    let original = check(&w, &launch(env.clone())).unwrap();
    for encoded in [
        URL_SAFE.encode(&payload),
        URL_SAFE_NO_PAD.encode(&payload),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&payload),
        format!("{}\n", STANDARD.encode(&payload)),
        format!(" {}", STANDARD.encode(&payload)),
    ] {
        let mut e = env.clone();
        e.payload = encoded.clone();
        if let Ok(a) = check(&w, &launch(e)) {
            assert_eq!(a.evidence_s256, original.evidence_s256, "{encoded:?}");
        }
    }
    // A second envelope over the same statement (Ed25519 is
    // deterministic, but a launcher could sign twice with a junk entry
    // first): same digest.
    let mut twice = w.ci.envelope("ci", &payload);
    twice.signatures.insert(
        0,
        DsseSignature {
            keyid: Some("ci".into()),
            sig: STANDARD.encode([1u8; 64]),
        },
    );
    assert_eq!(
        check(&w, &launch(twice)).unwrap().evidence_s256,
        original.evidence_s256
    );
    // The same statement re-serialized (keys reordered, whitespace) is new
    // bytes, so it needs a new signature: without one it is refused.
    let v: Value = serde_json::from_slice(&payload).unwrap();
    let pretty = serde_json::to_vec_pretty(&v).unwrap();
    let mut forged = env;
    forged.payload = STANDARD.encode(&pretty);
    assert_eq!(code(&check(&w, &launch(forged))), "attestation_invalid");
}

/// Deeply nested JSON in a signed payload, and a payload just over the
/// size limit: refused without a crash.
#[test]
fn launch_payload_bombs_are_refused() {
    let w = world();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = w.ci.envelope("ci", &deep.as_bytes()[..16_000]);
    assert!(check(&w, &launch(e)).is_err());
    let mut v = json_of(&statement("ci", &w.key));
    v["pad"] = json!("x".repeat(17 * 1024));
    let e = w.ci.envelope("ci", &bytes(&v));
    assert_eq!(code(&check(&w, &launch(e))), "attestation_invalid");
    // Signature entries of 200 KB each are refused cheaply.
    let payload = bytes(&json_of(&statement("ci", &w.key)));
    let mut e = w.ci.envelope("ci", &payload);
    e.signatures[0].sig = STANDARD.encode(vec![7u8; 150_000]);
    assert!(check(&w, &launch(e)).is_err());
}

// ---------------------------------------------------------------------------
// Requirements
// ---------------------------------------------------------------------------

/// Requirements are checked for shape: uppercase hex, a digest of another
/// algorithm, unknown JSON fields, bad launcher names, patterns with `*`
/// elsewhere — refused.
#[test]
fn requirement_shape_tricks_are_refused() {
    let bad = [
        json!({ "code_digests": [format!("sha256:{}", code_hex().to_uppercase())] }),
        json!({ "code_digests": [format!("sha512:{}", "ab".repeat(64))] }),
        json!({ "code_digests": [code_hex()] }),
        json!({ "spiffe_ids": ["spiffe://example.org/*/x"] }),
        json!({ "spiffe_ids": ["spiffe://example.org/agents*"] }),
        json!({ "spiffe_ids": ["spiffe://example.org/agents/**"] }),
        json!({ "spiffe_ids": ["spiffe://*"] }),
        json!({ "launchers": ["../ci"] }),
        json!({ "launchers": [""] }),
        json!({}),
    ];
    for b in bad {
        let r: AttestationRequirement = serde_json::from_value(b.clone()).unwrap();
        assert!(r.validate().is_err(), "{b} validated");
    }
    // Unknown fields are refused when read.
    for b in [
        json!({ "launchers": ["ci"], "any": true }),
        json!({ "launchers": ["ci"], "spiffe_id": ["spiffe://example.org/x"] }),
    ] {
        assert!(serde_json::from_value::<AttestationRequirement>(b.clone()).is_err());
    }
}

/// A requirement naming only code digests is not met by an SVID, and a
/// requirement naming launchers is not met by an SVID of any workload (nor
/// the reverse).
#[test]
fn requirement_kinds_do_not_cross() {
    let w = world();
    let svid = check(
        &w,
        &svid_ev(
            w.authority
                .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300)),
        ),
    )
    .unwrap();
    let stmt = check(
        &w,
        &launch(w.ci.envelope("ci", &bytes(&json_of(&statement("ci", &w.key))))),
    )
    .unwrap();
    let digest = AttestationRequirement {
        code_digests: vec![format!("sha256:{}", code_hex())],
        ..AttestationRequirement::default()
    };
    assert_eq!(
        digest.check(&svid).unwrap_err().code(),
        "attestation_mismatch"
    );
    assert!(digest.check(&stmt).is_ok());
    let launchers = AttestationRequirement {
        launchers: vec!["ci".into()],
        ..AttestationRequirement::default()
    };
    assert!(launchers.check(&svid).is_err());
    let ids = AttestationRequirement {
        spiffe_ids: vec!["spiffe://example.org/*".into()],
        ..AttestationRequirement::default()
    };
    assert!(ids.check(&stmt).is_err());
    // A launch statement whose subject name looks like a SPIFFE ID is
    // still not a workload.
    let mut v = json_of(&statement("ci", &w.key));
    v["subject"][0]["name"] = json!(WORKLOAD);
    let named = check(&w, &launch(w.ci.envelope("ci", &bytes(&v)))).unwrap();
    assert!(
        AttestationRequirement {
            spiffe_ids: vec![WORKLOAD.into()],
            ..AttestationRequirement::default()
        }
        .check(&named)
        .is_err()
    );
}

/// A requirement spelled with an uppercase trust domain
/// (`spiffe://Example.org/agents/*`) would never match the canonical
/// lowercase IDs SVIDs carry: it is refused when registered.
#[test]
fn requirement_with_an_uppercase_trust_domain_is_normalized_or_refused() {
    let w = world();
    let svid = check(
        &w,
        &svid_ev(
            w.authority
                .svid(&svid_claims(WORKLOAD, &bound(&w.key), now().0 + 300)),
        ),
    )
    .unwrap();
    let r = AttestationRequirement {
        spiffe_ids: vec!["spiffe://Example.org/agents/*".into()],
        ..AttestationRequirement::default()
    };
    assert!(
        r.validate().is_err() || r.check(&svid).is_ok(),
        "validates, names trust domain {:?}, and is never met by {}",
        r.trust_domains(),
        svid.subject
    );
}

// ---------------------------------------------------------------------------
// Policy: what a request can and cannot claim
// ---------------------------------------------------------------------------

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

fn mission(agent: &str, key: &MissionKey, attestation: Option<Attestation>) -> Mission {
    let body = MissionBody::new(
        MissionSpec {
            agent: agent.parse().unwrap(),
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

const REVIEWED_ONLY: &str = "@id(\"reviewed-code-only\")\n\
     forbid(principal, action == Action::\"write\", resource) unless {\n\
       principal.mission.attested &&\n\
       principal.mission has code_digest &&\n\
       principal.mission.code_digest == \"sha256:abababababababababababababababababababababababababababababababab\"\n\
     };\n\
     @id(\"workload-only\")\n\
     forbid(principal, action == Action::\"delete\", resource) unless {\n\
       principal.mission has workload &&\n\
       principal.mission.workload == \"spiffe://example.org/agents/billing\"\n\
     };";

/// An unattested mission cannot make itself look attested through the
/// request's context (`attested`, `workload`, `code_digest`, `trust`) or
/// the resource's tags.
#[test]
fn a_request_cannot_inject_attestation_into_policy() {
    let key = MissionKey::generate(&OsRandom).unwrap();
    let plain = mission("billing-bot", &key, None);
    assert_eq!(Trust::of(&plain), Trust::Signed);
    let org = OrgPolicies::load(&[], &[src("reviewed.cedar", REVIEWED_ONLY)]).unwrap();
    let compiled =
        MissionPolicySet::compile(plain.body.id.as_str(), &plain.body.policies, None).unwrap();
    let injected: Map<String, Value> = serde_json::from_value(json!({
        "attested": true,
        "workload": WORKLOAD,
        "code_digest": format!("sha256:{}", code_hex()),
        "mission": { "attested": true },
    }))
    .unwrap();
    let tags: BTreeMap<String, String> = [
        ("attested".to_owned(), "true".to_owned()),
        ("workload".to_owned(), WORKLOAD.to_owned()),
        ("code_digest".to_owned(), format!("sha256:{}", code_hex())),
    ]
    .into();
    let resource = ResourceRef {
        kind: ResourceKind::Resource {
            id: "ledger".into(),
        },
        tags,
    };
    for action in ["write", "delete"] {
        for context in [Map::new(), injected.clone()] {
            let out = decide(
                &org,
                &compiled,
                &GrantSet::default(),
                &DecisionRequest {
                    mission: &plain,
                    budget_used: 0,
                    action,
                    resource: &resource,
                    context: &context,
                    trust: Trust::of(&plain),
                    required: Trust::Signed,
                    now: now(),
                },
            );
            assert_eq!(out.decision, Decision::Deny, "{action} with {context:?}");
        }
    }
    // `trust` itself cannot be set by the request.
    let mut forged = Map::new();
    forged.insert("trust".into(), json!("attested"));
    let out = decide(
        &OrgPolicies::empty().unwrap(),
        &compiled,
        &GrantSet::default(),
        &DecisionRequest {
            mission: &plain,
            budget_used: 0,
            action: "read",
            resource: &resource,
            context: &forged,
            trust: Trust::of(&plain),
            required: Trust::Attested,
            now: now(),
        },
    );
    assert_eq!(out.decision, Decision::Deny);
}

/// A child mission does not see its parent's attestation: an unattested
/// child of an attested parent is refused by a policy that requires
/// attested code, and its trust is `signed`.
#[test]
fn a_child_does_not_inherit_its_parents_attestation() {
    let w = world();
    let att = check(
        &w,
        &launch(w.ci.envelope("ci", &bytes(&json_of(&statement("ci", &w.key))))),
    )
    .unwrap();
    let parent = mission("orchestrator", &w.key, Some(att));
    let child_key = MissionKey::generate(&OsRandom).unwrap();
    let child = mission("worker", &child_key, None);
    assert_eq!(Trust::of(&parent), Trust::Attested);
    assert_eq!(Trust::of(&child), Trust::Signed);
    let org = OrgPolicies::load(&[], &[src("reviewed.cedar", REVIEWED_ONLY)]).unwrap();
    let pc =
        MissionPolicySet::compile(parent.body.id.as_str(), &parent.body.policies, None).unwrap();
    let cc = MissionPolicySet::compile(child.body.id.as_str(), &child.body.policies, None).unwrap();
    let resource = ResourceRef {
        kind: ResourceKind::Resource {
            id: "ledger".into(),
        },
        tags: BTreeMap::new(),
    };
    let ancestors = [Ancestor {
        mission: &parent,
        policies: &pc,
        budget_used: 0,
    }];
    let out = decide_chain(
        &org,
        &ancestors,
        &cc,
        &GrantSet::default(),
        &DecisionRequest {
            mission: &child,
            budget_used: 0,
            action: "write",
            resource: &resource,
            context: &Map::new(),
            trust: Trust::of(&child),
            required: Trust::Signed,
            now: now(),
        },
    );
    assert_eq!(out.decision, Decision::Deny);
    // And a route demanding `attested` refuses the child.
    let out = decide_chain(
        &OrgPolicies::empty().unwrap(),
        &ancestors,
        &cc,
        &GrantSet::default(),
        &DecisionRequest {
            mission: &child,
            budget_used: 0,
            action: "read",
            resource: &resource,
            context: &Map::new(),
            trust: Trust::of(&child),
            required: Trust::Attested,
            now: now(),
        },
    );
    assert_eq!(out.code, "insufficient_trust");
}

// ---------------------------------------------------------------------------
// The offline acting-principal proof
// ---------------------------------------------------------------------------

fn claimed_svid(token: &str, verified_at: u64) -> Attestation {
    Attestation {
        method: AttestationMethod::JwtSvid,
        subject: WORKLOAD.into(),
        code_digest: None,
        launcher: None,
        environment: BTreeMap::new(),
        evidence_s256: mandate_core::s256(token.rsplit_once('.').unwrap().0.as_bytes()),
        verified_at,
    }
}

/// Evidence bound to another key, evidence the credential does not name,
/// and an expired SVID whose signature was tampered with are all refused
/// by the re-check.
#[test]
fn recheck_refuses_other_keys_other_evidence_and_bad_signatures() {
    let w = world();
    let t = now().0;
    let token = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), t + 300));
    let claimed = claimed_svid(&token, t);
    let ev = svid_ev(token.clone());
    assert!(recheck_evidence(&ev, &w.anchors, w.key.thumbprint(), &claimed).is_ok());
    // Bound to another key.
    let other = MissionKey::generate(&OsRandom).unwrap();
    assert!(recheck_evidence(&ev, &w.anchors, other.thumbprint(), &claimed).is_err());
    // Another SVID of the same workload for the same key.
    let second = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), t + 301));
    assert_eq!(
        recheck_evidence(&svid_ev(second), &w.anchors, w.key.thumbprint(), &claimed)
            .unwrap_err()
            .code(),
        "attestation_mismatch"
    );
    // Expired, with its signature bytes corrupted (same signing input, so
    // the same digest as `att` names).
    let old = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), t - 100));
    let (input, sig) = old.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 0x01;
    let corrupted = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
    let claimed_old = claimed_svid(&old, t - 200);
    assert!(
        recheck_evidence(
            &svid_ev(corrupted),
            &w.anchors,
            w.key.thumbprint(),
            &claimed_old
        )
        .is_err()
    );
    // Expired, bound to another key.
    assert!(recheck_evidence(&svid_ev(old), &w.anchors, other.thumbprint(), &claimed_old).is_err());
}

/// The offline re-check of a JWT-SVID is as of when the authority verified
/// it: an SVID that had expired a day *before* the `verified_at` its `att`
/// claims (so no authority could have verified it then) is refused, as a
/// launch statement in the same position is.
#[test]
fn recheck_refuses_an_svid_that_had_expired_before_it_was_verified() {
    let w = world();
    let t = now().0;
    let token = w
        .authority
        .svid(&svid_claims(WORKLOAD, &bound(&w.key), t - 86_400));
    let claimed = claimed_svid(&token, t - 60);
    let r = recheck_evidence(&svid_ev(token), &w.anchors, w.key.thumbprint(), &claimed);
    assert_eq!(
        r.map(|a| a.subject).map_err(|e| e.code()),
        Err("attestation_expired"),
        "an SVID expired a day before `verified_at` re-checks"
    );
    // The launch statement counterpart, for comparison: refused.
    let mut v = json_of(&statement("ci", &w.key));
    v["predicate"]["issued_at"] = json!(t - 86_400);
    v["predicate"]["expires_at"] = json!(t - 86_400 + 300);
    let ev = launch(w.ci.envelope("ci", &bytes(&v)));
    let mut claimed = verify_evidence(
        &ev,
        &w.anchors,
        w.key.thumbprint(),
        UnixTime(t - 86_400 + 10),
    )
    .unwrap();
    claimed.verified_at = t - 60;
    assert_eq!(
        recheck_evidence(&ev, &w.anchors, w.key.thumbprint(), &claimed)
            .unwrap_err()
            .code(),
        "attestation_expired"
    );
}

/// Unattested missions are `signed`, never `attested`.
#[test]
fn trust_of_an_unattested_mission_is_signed() {
    let key = MissionKey::generate(&OsRandom).unwrap();
    assert_eq!(Trust::of(&mission("a", &key, None)), Trust::Signed);
}
