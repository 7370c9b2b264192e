//! Security review of attestation (ADR 0020), end to end: attacks on
//! `POST /v1/missions/start` with evidence, on who requires what, on the
//! store's own guard (SQLite and PostgreSQL), on enforcement points that
//! demand attestation, on the credential's `att`, on trust-bundle loading,
//! on `mandate launch`, and on what refusals write to logs.
//!
//! Each test is an attack that must fail: it asserts the refusal, and
//! stays as a regression test.
//!
//! JWT-SVIDs are minted by an independent implementation (PyJWT with
//! `cryptography`, `MANDATE_TEST_PYTHON`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use mandate_client::{Client, MissionAgent};
use mandate_core::wire::{
    CreateMissionRequest, DecideRequest, DelegateRequest, RegisterAgentRequest,
};
use mandate_core::{
    Attestation, AttestationMethod, AttestationRequirement, Clock as _, Decision, DsseSignature,
    Evidence, LaunchStatement, LauncherKey, MissionBody, MissionId, MissionKey, MissionLimits,
    MissionPolicies, MissionSpec, OsRandom, OutOfScope, ResourceRef, SecretToken, SystemClock,
    TokenKind, TrustAnchors, UnixTime, key_audience, mission_s256, verify_evidence,
};
use mandate_store::{Agent, NewMission, Principal, StartError, Store};
use mandate_testkit::TestServer;
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn now() -> UnixTime {
    SystemClock.now()
}

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON")
        .expect("MANDATE_TEST_PYTHON must name a Python with PyJWT and cryptography")
}

const WORKLOAD: &str = "spiffe://example.org/agents/billing";
const EVERYTHING: &str = "permit(principal, action, resource);";

fn hex(byte: &str) -> String {
    byte.repeat(32)
}

/// An EC P-256 public JWK (RFC 7515 A.3): a bundle for a trust domain
/// whose private key nobody here holds.
const FIXED_BUNDLE: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"jwt-svid",
 "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

// ---------------------------------------------------------------------------
// A SPIFFE trust domain's JWT authority, in Python.
// ---------------------------------------------------------------------------

const SPIRE_PY: &str = r#"
import sys, json, base64, jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives import serialization
mode, d = sys.argv[1], sys.argv[2]
def b64(i, n): return base64.urlsafe_b64encode(i.to_bytes(n, 'big')).rstrip(b'=').decode()
if mode == 'keygen':
    kind = sys.argv[3]
    if kind == 'ec':
        k = ec.generate_private_key(ec.SECP256R1()); n = k.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "jwt-svid", "x": b64(n.x, 32), "y": b64(n.y, 32)}
        alg = 'ES256'
    else:
        k = rsa.generate_private_key(65537, int(kind[3:])); n = k.public_key().public_numbers()
        jwk = {"kty": "RSA", "kid": "k1", "use": "jwt-svid", "n": b64(n.n, (n.n.bit_length() + 7) // 8), "e": b64(n.e, 3)}
        alg = 'RS256'
    open(d + '/key.pem', 'wb').write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    open(d + '/bundle.json', 'w').write(json.dumps({"keys": [jwk]}))
    open(d + '/alg', 'w').write(alg)
else:
    k = serialization.load_pem_private_key(open(d + '/key.pem', 'rb').read(), None)
    alg = open(d + '/alg').read()
    claims = json.load(sys.stdin)
    print(json.dumps([jwt.encode(c, k, algorithm=alg, headers={"kid": "k1"}) for c in claims]))
"#;

struct Spire {
    dir: PathBuf,
}

impl Spire {
    fn new(dir: &Path, kind: &str) -> Self {
        let dir = dir.join(format!("spire-{kind}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new(python())
            .args(["-c", SPIRE_PY, "keygen"])
            .arg(&dir)
            .arg(kind)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.json")
    }

    fn sign(&self, claims: &[Value]) -> Vec<String> {
        use std::io::Write as _;
        let mut child = std::process::Command::new(python())
            .args(["-c", SPIRE_PY, "sign"])
            .arg(&self.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(claims).unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

// ---------------------------------------------------------------------------
// A server that trusts trust domain example.org and launchers ci, deploy.
// ---------------------------------------------------------------------------

struct Env {
    server: TestServer,
    dir: tempfile::TempDir,
    admin: Client,
    alice: Client,
    alice_token: String,
    gateway: Client,
    ci: LauncherKey,
    deploy: LauncherKey,
}

fn write_launcher(dir: &Path, name: &str) -> (LauncherKey, PathBuf) {
    let key = LauncherKey::generate(&OsRandom).unwrap();
    let public = dir.join(format!("{name}.pub.jwk"));
    std::fs::write(&public, serde_json::to_vec(key.public_jwk()).unwrap()).unwrap();
    (key, public)
}

/// The `[attestation]` part of a configuration, its files written to `dir`.
fn attestation_config(dir: &Path, bundle: Option<&Path>) -> (String, LauncherKey, LauncherKey) {
    let bundle = bundle.map_or_else(
        || {
            let p = dir.join("example.org.jwks.json");
            std::fs::write(&p, FIXED_BUNDLE).unwrap();
            p
        },
        Path::to_path_buf,
    );
    let (ci, ci_pub) = write_launcher(dir, "ci");
    let (deploy, deploy_pub) = write_launcher(dir, "deploy");
    let config = format!(
        "[attestation.trust_domains.\"example.org\"]\nbundle = {:?}\n\n\
         [attestation.launchers.ci]\npublic_key = {:?}\n\n\
         [attestation.launchers.deploy]\npublic_key = {:?}\n",
        bundle.display().to_string(),
        ci_pub.display().to_string(),
        deploy_pub.display().to_string()
    );
    (config, ci, deploy)
}

async fn env_with(extra: &str, bundle: Option<&Path>, logged: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("attested-writes.cedar"),
        "@id(\"attested-writes\")\n\
         forbid(principal, action == Action::\"write\", resource) unless { principal.mission.attested };\n",
    )
    .unwrap();
    let (att, ci, deploy) = attestation_config(dir.path(), bundle);
    let config = format!(
        "policies_dir = {:?}\n{extra}\n{att}",
        policies.display().to_string()
    );
    let server = if logged {
        TestServer::start_logged(bin(), Some(&config))
    } else {
        TestServer::start(bin(), Some(&config))
    };
    let admin_token = server.init_admin();
    let admin = Client::new(server.url()).unwrap().with_token(&admin_token);
    let alice_token = admin
        .create_principal("alice", None)
        .await
        .unwrap()
        .token
        .token;
    let alice = Client::new(server.url()).unwrap().with_token(&alice_token);
    let gateway_token = admin
        .create_principal("gateway", None)
        .await
        .unwrap()
        .token
        .token;
    let gateway = Client::new(server.url()).unwrap().with_token(gateway_token);
    for (name, req) in [
        ("billing-bot", Some(launchers(&["ci"]))),
        ("plain-bot", None),
        ("worker", None),
    ] {
        alice
            .register_agent(&RegisterAgentRequest {
                name: name.into(),
                owner: None,
                description: None,
                attestation: req,
            })
            .await
            .unwrap();
    }
    Env {
        server,
        dir,
        admin,
        alice,
        alice_token,
        gateway,
        ci,
        deploy,
    }
}

async fn env() -> Env {
    env_with("", None, false).await
}

fn launchers(names: &[&str]) -> AttestationRequirement {
    AttestationRequirement {
        launchers: names.iter().map(|s| (*s).to_owned()).collect(),
        ..AttestationRequirement::default()
    }
}

/// A mission of alice's for `agent`: its id and start token.
async fn create(e: &Env, agent: &str) -> (String, String) {
    let created = e
        .alice
        .create_mission(&CreateMissionRequest {
            agent: agent.into(),
            goal: format!("the work of {agent}"),
            scope: EVERYTHING.into(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: Some(3_600),
            budget: Some(100),
            out_of_scope: Some("deny".into()),
        })
        .await
        .unwrap();
    (created.mission.id, created.start_token)
}

fn statement(e: &Env, launcher: &str, key: &MissionKey, code: &str) -> LaunchStatement {
    LaunchStatement::new(
        launcher,
        e.server.url(),
        "/opt/agents/billing",
        code,
        key.thumbprint(),
        BTreeMap::new(),
        now(),
        300,
    )
}

fn signed(by: &LauncherKey, name: &str, s: &LaunchStatement) -> Evidence {
    Evidence::LaunchStatement {
        envelope: by.sign_launch_statement(name, s).unwrap(),
    }
}

fn new_key() -> MissionKey {
    MissionKey::generate(&OsRandom).unwrap()
}

fn copy(k: &MissionKey) -> MissionKey {
    MissionKey::from_pkcs8_pem(&k.to_pkcs8_pem().unwrap()).unwrap()
}

/// `POST /v1/missions/start` by hand: the status and the JSON body.
async fn start_raw(
    server: &TestServer,
    token: &str,
    key: &MissionKey,
    evidence: Option<Value>,
) -> (u16, Value) {
    let htu = format!("{}/v1/missions/start", server.url());
    let proof = key
        .proof("POST", &htu, Some(token), now(), &OsRandom)
        .unwrap();
    let mut body = json!({ "start_token": token });
    if let Some(ev) = evidence {
        body["evidence"] = ev;
    }
    let resp = reqwest::Client::new()
        .post(&htu)
        .header("DPoP", proof)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ev_json(ev: &Evidence) -> Value {
    serde_json::to_value(ev).unwrap()
}

/// The claims of a compact JWT, unverified.
fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// Starting without evidence
// ---------------------------------------------------------------------------

/// A mission whose agent requires evidence does not start without it, nor
/// with evidence of the wrong launcher, nor bound to another key; a
/// requirement added to the agent after the mission was created stops it;
/// a refused start leaves the token usable.
#[tokio::test]
async fn a_required_attestation_is_not_skipped_at_start() {
    let e = env().await;
    let (id, token) = create(&e, "billing-bot").await;
    let key = new_key();
    let (status, p) = start_raw(&e.server, &token, &key, None).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_required"))
    );
    let wrong = signed(
        &e.deploy,
        "deploy",
        &statement(&e, "deploy", &key, &hex("ab")),
    );
    let (status, p) = start_raw(&e.server, &token, &key, Some(ev_json(&wrong))).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_mismatch"))
    );
    let other = new_key();
    let unbound = signed(&e.ci, "ci", &statement(&e, "ci", &other, &hex("ab")));
    let (status, p) = start_raw(&e.server, &token, &key, Some(ev_json(&unbound))).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (401, Some("attestation_unbound"))
    );
    // `null` evidence is no evidence.
    let (status, p) = start_raw(&e.server, &token, &key, Some(Value::Null)).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_required"))
    );
    assert_eq!(
        e.alice.mission(&id).await.unwrap().state,
        mandate_core::MissionState::Ready
    );
    // The token still starts it, with evidence.
    let good = signed(&e.ci, "ci", &statement(&e, "ci", &key, &hex("ab")));
    let (status, body) = start_raw(&e.server, &token, &key, Some(ev_json(&good))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        claims_of(body["credential"].as_str().unwrap())["att"]["launcher"],
        "ci"
    );

    // A requirement added to an agent after its mission was created.
    let (_, token) = create(&e, "plain-bot").await;
    e.alice
        .set_agent_attestation("plain-bot", Some(&launchers(&["ci"])))
        .await
        .unwrap();
    let (status, p) = start_raw(&e.server, &token, &new_key(), None).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_required"))
    );
    // And one removed from the agent stays on a mission created under it.
    let (_, token) = create(&e, "plain-bot").await;
    e.alice
        .set_agent_attestation("plain-bot", None)
        .await
        .unwrap();
    let (status, p) = start_raw(&e.server, &token, &new_key(), None).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_required"))
    );
}

/// Delegation: a child for a registered agent whose registration requires
/// evidence, and an ephemeral child whose delegating hop requires it, do
/// not start without it; a child never inherits its parent's attestation.
#[tokio::test]
async fn a_delegated_child_proves_its_own_attestation() {
    let e = env().await;
    let (_, token) = create(&e, "plain-bot").await;
    let pkey = new_key();
    let ev = signed(&e.ci, "ci", &statement(&e, "ci", &pkey, &hex("ab")));
    let parent = MissionAgent::start_attested(e.server.url(), &token, pkey, ev)
        .await
        .unwrap();
    assert!(claims_of(parent.credential())["att"].is_object());
    let child = |agent: Option<&str>, ephemeral: Option<&str>, att| DelegateRequest {
        agent: agent.map(Into::into),
        ephemeral: ephemeral.map(Into::into),
        goal: "a part".into(),
        scope: EVERYTHING.into(),
        boundaries: String::new(),
        escalations: String::new(),
        ttl_seconds: None,
        budget: 10,
        out_of_scope: Some("deny".into()),
        attestation: att,
    };
    // A registered agent that requires launcher ci.
    let c = parent
        .delegate(&child(Some("billing-bot"), None, None))
        .await
        .unwrap();
    assert_eq!(c.mission.attestation_required, vec![launchers(&["ci"])]);
    let (status, p) = start_raw(&e.server, &c.start_token, &new_key(), None).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_required"))
    );
    // An ephemeral sub-agent the hop requires evidence of.
    let c = parent
        .delegate(&child(None, Some("helper"), Some(launchers(&["ci"]))))
        .await
        .unwrap();
    let (status, p) = start_raw(&e.server, &c.start_token, &new_key(), None).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_required"))
    );
    // A hop requirement cannot be stripped by the child's registration.
    let c = parent
        .delegate(&child(Some("worker"), None, Some(launchers(&["deploy"]))))
        .await
        .unwrap();
    let k = new_key();
    let by_ci = signed(&e.ci, "ci", &statement(&e, "ci", &k, &hex("ab")));
    let (status, p) = start_raw(&e.server, &c.start_token, &k, Some(ev_json(&by_ci))).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("attestation_mismatch"))
    );
    // An ephemeral child with no requirement starts unattested: it does not
    // carry its attested parent's `att`, and is not `attested` anywhere.
    let c = parent
        .delegate(&child(None, Some("scratch"), None))
        .await
        .unwrap();
    let plain = MissionAgent::start(e.server.url(), &c.start_token)
        .await
        .unwrap();
    assert!(claims_of(plain.credential()).get("att").is_none());
    let decided = |credential: &str, action: &str| DecideRequest {
        credential: credential.to_owned(),
        action: action.into(),
        resource: serde_json::from_value::<ResourceRef>(json!({"type": "Resource", "id": "doc"}))
            .unwrap(),
        context: serde_json::Map::new(),
        justification: None,
        required_trust: Some(mandate_core::Trust::Attested),
    };
    let r = e
        .gateway
        .decide(&decided(plain.credential(), "read"))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "insufficient_trust")
    );
    let r = e
        .gateway
        .decide(&decided(parent.credential(), "read"))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Allow, "{}", r.detail);
}

/// Racing starts of one mission that requires evidence — one with good
/// evidence, others with none or the wrong launcher's — start it at most
/// once, and only ever attested.
#[tokio::test]
async fn racing_starts_never_start_an_unattested_mission() {
    let e = env().await;
    for _ in 0..6 {
        let (id, token) = create(&e, "billing-bot").await;
        let key = new_key();
        let good = ev_json(&signed(&e.ci, "ci", &statement(&e, "ci", &key, &hex("ab"))));
        let k2 = new_key();
        let wrong = ev_json(&signed(
            &e.deploy,
            "deploy",
            &statement(&e, "deploy", &k2, &hex("ab")),
        ));
        let (k3, k4) = (new_key(), new_key());
        let (a, b, c, d) = tokio::join!(
            start_raw(&e.server, &token, &key, Some(good)),
            start_raw(&e.server, &token, &k2, Some(wrong)),
            start_raw(&e.server, &token, &k3, None),
            start_raw(&e.server, &token, &k4, None),
        );
        let started: Vec<_> = [&a, &b, &c, &d]
            .into_iter()
            .filter(|r| r.0 == 201)
            .collect();
        assert!(started.len() <= 1, "{started:?}");
        let m = e.alice.mission(&id).await.unwrap();
        if m.state != mandate_core::MissionState::Ready {
            assert!(m.attestation.is_some(), "started unattested: {m:?}");
            assert_eq!(m.jkt.as_deref(), Some(key.thumbprint().as_str()));
        }
    }
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

/// One piece of evidence starts one mission: the same statement for the
/// same key, its payload re-encoded, or with junk signatures added, does
/// not start a second.
#[tokio::test]
async fn one_piece_of_evidence_starts_one_mission() {
    let e = env().await;
    let key = new_key();
    let ev = signed(&e.ci, "ci", &statement(&e, "ci", &key, &hex("ab")));
    let (_, t1) = create(&e, "billing-bot").await;
    let (status, _) = start_raw(&e.server, &t1, &key, Some(ev_json(&ev))).await;
    assert_eq!(status, 201);
    let Evidence::LaunchStatement { envelope } = ev.clone() else {
        panic!()
    };
    let raw = STANDARD.decode(&envelope.payload).unwrap();
    let mut url_safe = envelope.clone();
    url_safe.payload = URL_SAFE.encode(&raw);
    let mut junk = envelope.clone();
    junk.signatures.push(DsseSignature {
        keyid: Some("deploy".into()),
        sig: STANDARD.encode([0u8; 64]),
    });
    let mut reordered = envelope.clone();
    reordered.signatures.insert(
        0,
        DsseSignature {
            keyid: None,
            sig: STANDARD.encode([9u8; 64]),
        },
    );
    for again in [envelope, url_safe, junk, reordered] {
        let (_, t) = create(&e, "billing-bot").await;
        let (status, p) = start_raw(
            &e.server,
            &t,
            &copy(&key),
            Some(ev_json(&Evidence::LaunchStatement { envelope: again })),
        )
        .await;
        assert_eq!(
            (status, p["code"].as_str()),
            (409, Some("attestation_replayed"))
        );
    }
}

// ---------------------------------------------------------------------------
// The store's own guard, on both backends
// ---------------------------------------------------------------------------

const T0: UnixTime = UnixTime(1_700_000_000);

async fn seed(s: &dyn Store, requirement: Option<AttestationRequirement>) {
    s.create_principal(&Principal {
        name: "alice".parse().unwrap(),
        role: mandate_core::Role::Member,
        created_at: T0,
        revoked_at: None,
    })
    .await
    .unwrap();
    s.create_agent(&Agent {
        name: "bot".parse().unwrap(),
        owner: "alice".parse().unwrap(),
        description: String::new(),
        created_at: T0,
        revoked_at: None,
        attestation: requirement,
    })
    .await
    .unwrap();
}

/// A mission for `bot`, its body carrying `required`, as the server makes
/// it.
async fn store_mission(s: &dyn Store, required: &[AttestationRequirement]) -> SecretToken {
    let mut body = MissionBody::new(
        MissionSpec {
            agent: "bot".parse().unwrap(),
            goal: "g".into(),
            policies: MissionPolicies::default(),
            ttl_secs: 3_600,
            budget: 10,
            out_of_scope: OutOfScope::Deny,
        },
        MissionId::generate(&OsRandom).unwrap(),
        "http://issuer.test",
        "alice".parse().unwrap(),
        T0,
        MissionLimits::default(),
        None,
    )
    .unwrap();
    for r in required {
        body.require_attestation(r.clone()).unwrap();
    }
    let token = SecretToken::generate(TokenKind::Start, &OsRandom).unwrap();
    s.create_mission(&NewMission {
        s256: mission_s256(&body).unwrap(),
        body,
        start_token: token.hash(),
        start_token_expires_at: T0.plus(600),
    })
    .await
    .unwrap();
    token
}

fn attestation_by(launcher: &str, digest: &str) -> Attestation {
    Attestation {
        method: AttestationMethod::LaunchStatement,
        subject: "/opt/agents/billing".into(),
        code_digest: Some(format!("sha256:{}", hex("ab"))),
        launcher: Some(launcher.into()),
        environment: BTreeMap::new(),
        evidence_s256: digest.into(),
        verified_at: T0.0 + 1,
    }
}

async fn on_sqlite<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(
        mandate_store::SqliteStore::open(&dir.path().join("m.db"))
            .await
            .unwrap(),
    );
    f(sqlite).await;
}

async fn on_postgres<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let schema = mandate_testkit::postgres::Schema::new("attack_att");
    let pg: Arc<dyn Store> = Arc::new(
        mandate_store::PostgresStore::connect_in_schema(
            &mandate_testkit::postgres::database_url(),
            schema.name(),
        )
        .await
        .unwrap(),
    );
    f(pg).await;
}

/// Each named store test, once per backend: `name::sqlite` and
/// `name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::on_sqlite(super::$name).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::on_postgres(super::$name).await;
            }
        }
    )*};
}

both!(
    the_store_never_starts_an_unattested_mission_that_requires_evidence,
    the_store_honours_a_requirement_changed_after_the_evidence_was_checked,
);

/// The store refuses to start, without evidence, a mission whose body or
/// whose agent requires evidence (whatever the handler did), refuses the
/// same evidence twice, and a refused start consumes nothing.
async fn the_store_never_starts_an_unattested_mission_that_requires_evidence(s: Arc<dyn Store>) {
    {
        seed(s.as_ref(), None).await;
        let key = new_key();
        let at = T0.plus(1);
        // The body requires it.
        let t = store_mission(s.as_ref(), &[launchers(&["ci"])]).await;
        assert!(matches!(
            s.start_attested(&t.hash(), key.thumbprint(), at, None)
                .await,
            Err(StartError::AttestationRequired)
        ));
        assert!(s.startable(&t.hash(), at).await.is_ok());
        let a = attestation_by("ci", "digest-1");
        s.start_attested(&t.hash(), key.thumbprint(), at, Some(&a))
            .await
            .unwrap();
        // The agent requires it (the body does not).
        let t = store_mission(s.as_ref(), &[]).await;
        s.set_agent_attestation(&"bot".parse().unwrap(), Some(&launchers(&["ci"])))
            .await
            .unwrap();
        assert!(matches!(
            s.start_mission(&t.hash(), key.thumbprint(), at).await,
            Err(StartError::AttestationRequired)
        ));
        // The same evidence again.
        assert!(matches!(
            s.start_attested(&t.hash(), key.thumbprint(), at, Some(&a))
                .await,
            Err(StartError::AttestationReplayed)
        ));
        assert!(s.startable(&t.hash(), at).await.is_ok());
        s.set_agent_attestation(&"bot".parse().unwrap(), None)
            .await
            .unwrap();
    }
}

/// A requirement tightened after the handler checked the evidence — e.g.
/// an operator replacing launcher `ci` with `deploy` on learning `ci`'s
/// key leaked — stops a start already past that check: the store checks
/// the evidence again, in the transaction that starts the mission, against
/// what the mission and its agent require then (both backends).
async fn the_store_honours_a_requirement_changed_after_the_evidence_was_checked(s: Arc<dyn Store>) {
    {
        seed(s.as_ref(), Some(launchers(&["ci"]))).await;
        let key = new_key();
        let at = T0.plus(1);
        // The server copies the agent's requirement into the body, too.
        let t = store_mission(s.as_ref(), &[launchers(&["ci"])]).await;
        // The handler: the mission is startable and `ci`'s statement meets
        // what the agent requires now…
        assert!(s.startable(&t.hash(), at).await.is_ok());
        let checked = attestation_by("ci", "digest-race");
        assert!(launchers(&["ci"]).check(&checked).is_ok());
        // …meanwhile the owner replaces `ci` with `deploy`…
        s.set_agent_attestation(&"bot".parse().unwrap(), Some(&launchers(&["deploy"])))
            .await
            .unwrap();
        // …and the start lands.
        let r = s
            .start_attested(&t.hash(), key.thumbprint(), at, Some(&checked))
            .await;
        assert!(
            r.is_err(),
            "started attested by `ci` while its agent requires `deploy`"
        );
    }
}

// ---------------------------------------------------------------------------
// Enforcement points
// ---------------------------------------------------------------------------

/// An upstream that answers 200 to everything.
async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A mission of plain-bot started with a statement by `ci` for code
/// `sha256:<code × 32>`.
async fn attested(e: &Env, code: &str) -> MissionAgent {
    let (_, t) = create(e, "plain-bot").await;
    let k = new_key();
    let ev = signed(&e.ci, "ci", &statement(e, "ci", &k, &hex(code)));
    MissionAgent::start_attested(e.server.url(), &t, k, ev)
        .await
        .unwrap()
}

async fn get(agent: &mut MissionAgent, url: String) -> (u16, Value) {
    let r = agent.send_signed("GET", &url, None, None).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json::<Value>().await.unwrap_or(Value::Null))
}

/// Routes that require `attested`, or particular code, refuse unattested
/// missions and missions of other code; `/v1/decide` with
/// `required_trust: attested` refuses an unattested mission; a policy on
/// `principal.mission.attested` cannot be met through the context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattested_or_other_code_is_refused_where_attestation_is_required() {
    let up = upstream().await;
    let routes = format!(
        "[[routes]]\nname = \"attested-only\"\nupstream = \"{up}\"\nrequired_trust = \"attested\"\n\
         [[routes.rules]]\nmethod = \"GET\"\npath = \"/{{*rest}}\"\naction = \"read\"\n\n\
         [[routes]]\nname = \"reviewed\"\nupstream = \"{up}\"\n\
         attestation = {{ code_digests = [\"sha256:{}\"] }}\n\
         [[routes.rules]]\nmethod = \"GET\"\npath = \"/{{*rest}}\"\naction = \"read\"\n",
        hex("ab")
    );
    let e = env_with(&routes, None, false).await;
    let (_, t) = create(&e, "plain-bot").await;
    let mut plain = MissionAgent::start(e.server.url(), &t).await.unwrap();
    let mut ab = attested(&e, "ab").await;
    let mut cd = attested(&e, "cd").await;
    let gw = format!("{}/gw", e.server.url());
    let (s, p) = get(&mut plain, format!("{gw}/attested-only/x")).await;
    assert_eq!((s, p["code"].as_str()), (403, Some("insufficient_trust")));
    let (s, p) = get(&mut plain, format!("{gw}/reviewed/x")).await;
    assert_eq!((s, p["code"].as_str()), (403, Some("insufficient_trust")));
    let (s, p) = get(&mut cd, format!("{gw}/reviewed/x")).await;
    assert_eq!((s, p["code"].as_str()), (403, Some("insufficient_trust")));
    let (s, _) = get(&mut cd, format!("{gw}/attested-only/x")).await;
    assert_eq!(s, 200);
    let (s, _) = get(&mut ab, format!("{gw}/reviewed/x")).await;
    assert_eq!(s, 200);
    // `/v1/decide`, and the org policy `attested-writes`.
    let req = |credential: &str, action: &str, ctx: Value, trust| DecideRequest {
        credential: credential.to_owned(),
        action: action.into(),
        resource: serde_json::from_value::<ResourceRef>(
            json!({"type": "Resource", "id": "doc", "tags": {"attested": "true"}}),
        )
        .unwrap(),
        context: serde_json::from_value(ctx).unwrap(),
        justification: None,
        required_trust: trust,
    };
    let r = e
        .gateway
        .decide(&req(
            plain.credential(),
            "read",
            json!({}),
            Some(mandate_core::Trust::Attested),
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "insufficient_trust")
    );
    for ctx in [
        json!({}),
        json!({"attested": true}),
        json!({"mission": {"attested": true}, "workload": WORKLOAD}),
        json!({"trust": "attested"}),
    ] {
        let r = e
            .gateway
            .decide(&req(plain.credential(), "write", ctx.clone(), None))
            .await;
        if let Ok(r) = r {
            assert_eq!(r.decision, Decision::Deny, "{ctx}: {r:?}");
        }
    }
    let r = e
        .gateway
        .decide(&req(ab.credential(), "write", json!({}), None))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Allow, "{}", r.detail);
}

// ---------------------------------------------------------------------------
// The credential's `att`
// ---------------------------------------------------------------------------

/// `att` is absent for an unattested mission, equal to what the mission
/// stored for an attested one, and kept by a refreshed credential.
#[tokio::test]
async fn the_credential_carries_exactly_the_stored_attestation() {
    let e = env().await;
    let (_, t) = create(&e, "plain-bot").await;
    let plain = MissionAgent::start(e.server.url(), &t).await.unwrap();
    assert!(claims_of(plain.credential()).get("att").is_none());
    let (id, t) = create(&e, "billing-bot").await;
    let k = new_key();
    let ev = signed(&e.ci, "ci", &statement(&e, "ci", &k, &hex("ab")));
    let mut agent = MissionAgent::start_attested(e.server.url(), &t, k, ev)
        .await
        .unwrap();
    let stored = serde_json::to_value(e.alice.mission(&id).await.unwrap().attestation).unwrap();
    assert_eq!(claims_of(agent.credential())["att"], stored);
    let first = agent.credential().to_owned();
    agent.refresh().await.unwrap();
    assert_ne!(agent.credential(), first);
    assert_eq!(claims_of(agent.credential())["att"], stored);
    // `policy_s256` is there too.
    assert!(claims_of(agent.credential())["policy_s256"].is_string());
}

// ---------------------------------------------------------------------------
// Requirements naming what is not configured
// ---------------------------------------------------------------------------

/// Registration and `PUT …/attestation` refuse a launcher or trust domain
/// the authority does not have, and malformed requirements.
#[tokio::test]
async fn requirements_naming_unknown_anchors_are_refused() {
    let e = env().await;
    let bad = [
        json!({ "launchers": ["nope"] }),
        json!({ "spiffe_ids": ["spiffe://other.org/x"] }),
        json!({ "code_digests": [format!("sha256:{}", hex("AB"))] }),
        json!({}),
        json!({ "launchers": ["ci"], "any": true }),
    ];
    let http = reqwest::Client::new();
    for (i, b) in bad.iter().enumerate() {
        let r = http
            .post(format!("{}/v1/agents", e.server.url()))
            .bearer_auth(&e.alice_token)
            .json(&json!({ "name": format!("bad-{i}"), "attestation": b }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "register {b}");
        let r = http
            .put(format!(
                "{}/v1/agents/plain-bot/attestation",
                e.server.url()
            ))
            .bearer_auth(&e.alice_token)
            .json(&json!({ "attestation": b }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "put {b}");
    }
    // Another principal cannot change alice's agent's requirement.
    let bob = e
        .admin
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    let r = Client::new(e.server.url())
        .unwrap()
        .with_token(bob)
        .set_agent_attestation("billing-bot", None)
        .await;
    assert!(r.is_err());
    assert_eq!(
        e.alice.agent("billing-bot").await.unwrap().attestation,
        Some(launchers(&["ci"]))
    );
}

// ---------------------------------------------------------------------------
// Malformed and oversized evidence
// ---------------------------------------------------------------------------

/// Evidence near the API's 256 KiB body cap, deeply nested, with unknown
/// fields, or of an unknown type is refused, and the start token survives.
#[tokio::test]
async fn malformed_or_huge_evidence_is_refused_and_changes_nothing() {
    let e = env().await;
    let (id, t) = create(&e, "billing-bot").await;
    let key = new_key();
    let env_of = |sigs: usize, sig_len: usize| {
        json!({ "type": "launch_statement", "envelope": {
            "payload": STANDARD.encode(b"{}"), "payloadType": "application/vnd.in-toto+json",
            "signatures": (0..sigs).map(|_| json!({ "keyid": "ci", "sig": "A".repeat(sig_len) })).collect::<Vec<_>>(),
        }})
    };
    let nested = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    for ev in [
        env_of(1, 240 * 1024),
        env_of(2_000, 100),
        json!({ "type": "launch_statement", "envelope": {
            "payload": STANDARD.encode(nested.as_bytes()), "payloadType": "application/vnd.in-toto+json",
            "signatures": [{ "keyid": "ci", "sig": STANDARD.encode([0u8; 64]) }] }}),
        json!({ "type": "jwt_svid", "token": "a".repeat(200 * 1024) }),
        json!({ "type": "jwt_svid", "token": "a.b.c", "extra": 1 }),
        json!({ "type": "x509_svid", "chain": [] }),
        json!({ "type": "jwt_svid" }),
        json!("eyJ.eyJ.sig"),
    ] {
        let (status, p) = start_raw(&e.server, &t, &key, Some(ev)).await;
        assert!((400..500).contains(&status), "{status} {p}");
    }
    // A body over the cap.
    let (status, _) = start_raw(&e.server, &t, &key, Some(env_of(1, 300 * 1024))).await;
    assert!((400..500).contains(&status));
    assert_eq!(
        e.alice.mission(&id).await.unwrap().state,
        mandate_core::MissionState::Ready
    );
    let good = signed(&e.ci, "ci", &statement(&e, "ci", &key, &hex("ab")));
    assert_eq!(
        start_raw(&e.server, &t, &key, Some(ev_json(&good))).await.0,
        201
    );
}

// ---------------------------------------------------------------------------
// JWT-SVIDs end to end, and what refusals write
// ---------------------------------------------------------------------------

/// JWT-SVID starts: a valid SVID of the wrong workload, an expired one, one
/// bound to another key and one for another authority are refused; none
/// of them, nor an accepted one, appears in a problem detail or in the
/// server's log (at `debug`). A refused SVID's `kid` cannot write lines of
/// its own into the log.
#[tokio::test]
async fn svid_refusals_do_not_leak_the_token_or_forge_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let spire = Spire::new(tmp.path(), "ec");
    let e = env_with("", Some(&spire.bundle()), true).await;
    e.alice
        .register_agent(&RegisterAgentRequest {
            name: "svid-bot".into(),
            owner: None,
            description: None,
            attestation: Some(AttestationRequirement {
                spiffe_ids: vec![WORKLOAD.into()],
                ..AttestationRequirement::default()
            }),
        })
        .await
        .unwrap();
    let key = new_key();
    let other = new_key();
    let t = now().0;
    let aud = |k: &MissionKey| json!([e.server.url(), key_audience(k.thumbprint())]);
    let tokens = spire.sign(&[
        json!({ "sub": "spiffe://example.org/agents/other", "aud": aud(&key), "exp": t + 300 }),
        json!({ "sub": WORKLOAD, "aud": aud(&key), "exp": t - 10 }),
        json!({ "sub": WORKLOAD, "aud": aud(&other), "exp": t + 300 }),
        json!({ "sub": WORKLOAD, "aud": [key_audience(key.thumbprint())], "exp": t + 300 }),
        json!({ "sub": WORKLOAD, "aud": aud(&key), "exp": t + 300 }),
    ]);
    let (_, st) = create(&e, "svid-bot").await;
    let mut details = String::new();
    for (token, want) in tokens.iter().zip([
        "attestation_mismatch",
        "attestation_expired",
        "attestation_unbound",
        "attestation_audience",
    ]) {
        let (status, p) = start_raw(
            &e.server,
            &st,
            &key,
            Some(json!({ "type": "jwt_svid", "token": token })),
        )
        .await;
        assert_eq!(p["code"].as_str(), Some(want), "{status} {p}");
        details.push_str(&p.to_string());
    }
    let (status, body) = start_raw(
        &e.server,
        &st,
        &key,
        Some(json!({ "type": "jwt_svid", "token": tokens[4] })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        claims_of(body["credential"].as_str().unwrap())["att"]["subject"],
        WORKLOAD
    );
    // A forged SVID whose `kid` tries to write a log line of its own.
    let (_, st2) = create(&e, "svid-bot").await;
    let header = json!({ "alg": "ES256", "typ": "JWT",
        "kid": "k9\n2099-01-01T00:00:00.000000Z  INFO mandate_server: FORGED mission started attested=true" });
    let forged = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD
            .encode(json!({ "sub": WORKLOAD, "aud": aud(&key), "exp": t + 300 }).to_string()),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    let (_, p) = start_raw(
        &e.server,
        &st2,
        &copy(&key),
        Some(json!({ "type": "jwt_svid", "token": forged })),
    )
    .await;
    assert_eq!(p["code"], "attestation_untrusted");
    std::thread::sleep(Duration::from_millis(300));
    let log = e.server.log();
    for token in &tokens {
        let parts: Vec<&str> = token.split('.').collect();
        for (what, part) in [
            ("token", token.as_str()),
            ("signature", parts[2]),
            ("claims", parts[1]),
        ] {
            assert!(!log.contains(part), "the SVID's {what} is in the log");
            assert!(
                !details.contains(part),
                "the SVID's {what} is in a problem detail"
            );
        }
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("FORGED") && !l.contains("attestation refused")),
        "a `kid` wrote a line of its own into the log:\n{}",
        log.lines()
            .filter(|l| l.contains("FORGED") || l.contains("k9"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A trust bundle's RSA key of 1,024 bits: its SVIDs are refused (the
/// verifier takes RSA keys of 2,048 bits and more only).
#[test]
fn an_svid_of_a_small_rsa_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = new_key();
    let aud = json!(["https://mandate.test", key_audience(key.thumbprint())]);
    let claims = json!({ "sub": WORKLOAD, "aud": aud, "exp": now().0 + 300 });
    for (kind, ok) in [("rsa1024", false), ("rsa2048", true)] {
        let spire = Spire::new(tmp.path(), kind);
        let mut anchors = TrustAnchors::none("https://mandate.test");
        let added = anchors.add_bundle("example.org", &std::fs::read(spire.bundle()).unwrap());
        if added.is_err() {
            assert!(!ok, "{kind}: the bundle was refused: {added:?}");
            continue;
        }
        let token = spire.sign(std::slice::from_ref(&claims)).remove(0);
        let r = verify_evidence(
            &Evidence::JwtSvid { token },
            &anchors,
            key.thumbprint(),
            now(),
        );
        assert_eq!(r.is_ok(), ok, "{kind}: {r:?}");
    }
}

// ---------------------------------------------------------------------------
// Trust bundles from URLs
// ---------------------------------------------------------------------------

/// Runs `mandate serve` on `config` until it prints where it listens (it
/// started: `Ok`) or exits (`Err` with its output), within 20 s.
fn try_serve(config: &str) -> Result<(), String> {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&data)
        .unwrap();
    std::fs::write(data.join("mandate.toml"), config).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("MANDATE_LOG", "warn")
        .env_remove("MANDATE_LISTEN")
        .env_remove("MANDATE_PUBLIC_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf).unwrap_or(0);
        let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let started = first.starts_with("mandate listening on");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    if started {
        Ok(())
    } else {
        Err(format!("{first}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A bundle endpoint: serves `body` once, as fast as it can, then (if
/// `stall`) keeps the connection open without finishing.
async fn bundle_endpoint(body: Vec<u8>, stall: bool) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 4096];
                let _ = sock.read(&mut req).await;
                let head = if stall {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                };
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    format!("http://{addr}/bundle")
}

/// `bundle_url` may not be plain `http://`. A trust bundle
/// is the root of every JWT-SVID's trust: whoever can answer for that URL
/// on the network (DNS, ARP, a proxy) substitutes their own key and mints
/// SVIDs of any workload in the domain, meeting every `spiffe_ids`
/// requirement and route. The SPIFFE bundle endpoint profiles are HTTPS
/// only; the configuration should refuse `http://` (at least off
/// loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_bundle_is_never_read_over_plain_http() {
    let url = bundle_endpoint(FIXED_BUNDLE.as_bytes().to_vec(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, _, _) = attestation_config(dir.path(), None);
    for u in [url.clone(), url.replace("127.0.0.1", "spire.example.org")] {
        let config = format!(
            "[attestation.trust_domains.\"example.org\"]\nbundle_url = {u:?}\nrefresh_secs = 60\n"
        );
        let started = tokio::task::spawn_blocking(move || try_serve(&config))
            .await
            .unwrap();
        assert!(
            started.is_err(),
            "the server started with trust bundle URL {u}"
        );
    }
}

/// A bundle URL's answer is read only up to its size cap: an endpoint
/// that sends more, with no length, and never finishes, is refused as the
/// cap passes, not when the client's 10 s deadline ends the read. Here the
/// endpoint (HTTPS) sends 2 MiB and stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_read_stops_at_its_size_cap() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = mandate_testkit::HttpsFiles::start(Path::new(&python()), root.path());
    let (url, ca) = (
        format!("{}/stall", endpoint.url),
        endpoint.ca.display().to_string(),
    );
    let config = format!(
        "[attestation.trust_domains.\"example.org\"]\nbundle_url = {url:?}\nbundle_ca = {ca:?}\nrefresh_secs = 3600\n"
    );
    let server = TestServer::start_logged(bin(), Some(&config));
    let mut refused = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if server.log().contains("larger than 1 MiB") {
            refused = true;
            break;
        }
    }
    if !refused {
        // What happens instead: the whole body is awaited until the
        // client's 10 s timeout.
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let log = server.log();
    assert!(
        refused,
        "no size refusal within 8 s; the bundle lines of the log after 12 s:\n{}",
        log.lines()
            .filter(|l| l.contains("bundle"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------
// `mandate launch`
// ---------------------------------------------------------------------------

/// `mandate launch --env KEY=VALUE` cannot restate what the launcher
/// records itself (`host`, `uid`, `os`, `arch`, `launcher_version`):
/// whoever invokes the launcher cannot make the signed statement say it
/// ran on another host as another user.
#[tokio::test]
async fn the_launcher_records_what_it_observed_not_what_it_is_told() {
    let e = env().await;
    let key_file = e.dir.path().join("ci.key");
    std::fs::write(&key_file, e.ci.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let (id, token) = create(&e, "billing-bot").await;
    let state = e.dir.path().join("launched.json");
    let launch = |extra: &[&str]| {
        let mut args = vec![
            "launch",
            "--launcher",
            "ci",
            "--key",
            key_file.to_str().unwrap(),
            "--token",
            &token,
            "--keep",
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "/bin/true"]);
        e.server.cli(None, &args)
    };
    // Restating what the launcher observes is refused, before any start.
    for forged in [
        "host=trusted-build-host",
        "uid=4242",
        "launcher_version=9.9.9",
    ] {
        let out = launch(&[
            "--env",
            forged,
            "--env",
            "image=registry.example/billing:1.4",
        ]);
        assert!(!out.ok(), "launched with --env {forged}");
        assert!(
            out.stderr().contains("is what the launcher observes"),
            "{}",
            out.stderr()
        );
        assert!(e.alice.mission(&id).await.unwrap().attestation.is_none());
    }
    let out = launch(&["--env", "image=registry.example/billing:1.4"]);
    assert!(out.ok(), "{}", out.stderr());
    let att = e.alice.mission(&id).await.unwrap().attestation.unwrap();
    assert_eq!(
        att.environment.get("image").map(String::as_str),
        Some("registry.example/billing:1.4")
    );
    let uid = rustix::process::getuid().as_raw().to_string();
    assert_eq!(att.environment.get("uid"), Some(&uid));
    assert_eq!(
        att.environment.get("launcher_version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

/// `mandate launch` hands the launched program its mission state, and
/// nothing of the principal's: an invoker with `MANDATE_TOKEN` exported
/// (as the README's walkthrough does) does not give the agent the API token
/// with which it could approve its own escalations or drop its own agent's
/// attestation requirement.
#[tokio::test]
async fn the_launched_program_gets_no_api_token() {
    let e = env().await;
    let key_file = e.dir.path().join("ci.key");
    std::fs::write(&key_file, e.ci.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let out_file = e.dir.path().join("seen-by-agent");
    let (_, token) = create(&e, "billing-bot").await;
    let script = format!(
        "printf %s \"${{MANDATE_TOKEN:-}}\" > {:?}",
        out_file.display().to_string()
    );
    let out = e.server.cli(
        Some(&e.alice_token),
        &[
            "launch",
            "--launcher",
            "ci",
            "--key",
            key_file.to_str().unwrap(),
            "--token",
            &token,
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
    );
    assert!(out.ok(), "{}", out.stderr());
    let seen = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        seen.is_empty(),
        "the launched agent received the principal's API token ({}…)",
        seen.get(..8).unwrap_or_default()
    );
    // What it could do with it: drop its own agent's requirement.
    let agent_as_alice = Client::new(e.server.url()).unwrap().with_token(seen);
    assert!(
        agent_as_alice
            .set_agent_attestation("billing-bot", None)
            .await
            .is_err()
    );
}
