//! End to end: attestation (ADR 0020) on a real server. A mission whose
//! agent must prove what code holds its key starts only with evidence
//! bound to that key: a SPIFFE JWT-SVID minted by an issuer independent of
//! Mandate (Python, PyJWT, a P-256 key of trust domain `example.org`), or a
//! launch statement signed by a registered launcher (`mandate launch`, or
//! made by hand for the forgeries). Every refusal leaves the start token
//! usable; evidence starts one mission only; gateway routes, policy, audit
//! and offline verification see the attestation; a delegated child proves
//! its own; a trust bundle read from a URL follows the issuer's rotation;
//! an independent DSSE verifier (Python) accepts what the launcher signs.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use mandate_client::{ClientError, MissionAgent};
use mandate_core::{
    Clock as _, DsseEnvelope, Evidence, LaunchStatement, LauncherKey, MissionKey, OsRandom,
    SystemClock, Thumbprint, UnixTime,
};
use mandate_testkit::{CliOutput, TestServer};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("MANDATE_TEST_PYTHON must name a Python with PyJWT[crypto]; run scripts/test.sh")
    })
}

/// Runs a Python program with `args`; returns its stdout.
#[track_caller]
fn py(program: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The CLI before any server runs: what an operator prepares first.
fn offline(dir: &Path, args: &[&str]) -> CliOutput {
    CliOutput(
        Command::new(bin())
            .args(args)
            .current_dir(dir)
            .env("MANDATE_LOG", "warn")
            .env_remove("MANDATE_SERVER")
            .env_remove("MANDATE_TOKEN")
            .output()
            .unwrap(),
    )
}

/// The command failed and its error names `code`.
#[track_caller]
fn refused(out: &CliOutput, code: &str) {
    assert!(
        !out.ok(),
        "expected `{code}`, but it succeeded:\n{}",
        out.stdout()
    );
    let said = format!("{}{}", out.stdout(), out.stderr());
    assert!(said.contains(code), "expected `{code}` in:\n{said}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> UnixTime {
    SystemClock.now()
}

/// An admin and a member `alice`; returns their tokens.
fn people(server: &TestServer) -> (String, String) {
    let admin = server.init_admin();
    let added = server
        .cli(Some(&admin), &["principal", "add", "alice", "--json"])
        .json();
    let alice = added["token"]["token"].as_str().unwrap().to_owned();
    (admin, alice)
}

/// A mission of alice's for `agent`, which may read: its id and start
/// token.
fn mission_for(server: &TestServer, alice: &str, agent: &str) -> (String, String) {
    let scope = server.scratch().join("scope.cedar");
    if !scope.exists() {
        std::fs::write(
            &scope,
            "permit(principal, action == Action::\"read\", resource);\n",
        )
        .unwrap();
    }
    let created = server
        .cli(
            Some(alice),
            &[
                "mission",
                "create",
                "--agent",
                agent,
                "--goal",
                "Summarise the quarter's reports",
                "--scope",
                scope.to_str().unwrap(),
                "--json",
            ],
        )
        .json();
    (
        created["mission"]["id"].as_str().unwrap().to_owned(),
        created["start_token"].as_str().unwrap().to_owned(),
    )
}

fn show(server: &TestServer, alice: &str, id: &str) -> Value {
    server
        .cli(Some(alice), &["mission", "show", id, "--json"])
        .json()
}

/// The mission has not started: no key bound, no attestation stored.
#[track_caller]
fn still_ready(server: &TestServer, alice: &str, id: &str) {
    let m = show(server, alice, id);
    assert_eq!(m["state"], "ready", "{m}");
    assert!(m["jkt"].is_null(), "{m}");
    assert!(m.get("attestation").is_none(), "{m}");
}

// ---------------------------------------------------------------------------
// SPIFFE JWT-SVIDs from an independent issuer.

/// A SPIFFE trust domain's JWT authority, in Python: `init DIR` makes the
/// authority's P-256 key, a rogue key nobody trusts, and the bundle (a JWKS
/// naming the authority's key `authority-1`), and the key it rotates to
/// (`authority-2`, in `example.org.rotated.jwks.json`); `mint DIR SPECS`
/// signs one JWT-SVID per spec and prints them as a JSON list.
const ISSUER: &str = r#"
import base64, json, sys, time, uuid
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

def b64u(n):
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

def load(d, name):
    with open(f"{d}/{name}.pem", "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)

cmd, d = sys.argv[1], sys.argv[2]
if cmd == "init":
    for name in ("authority", "authority2", "rogue"):
        key = ec.generate_private_key(ec.SECP256R1())
        with open(f"{d}/{name}.pem", "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    for name, kid, file in (("authority", "authority-1", "example.org.jwks.json"),
                            ("authority2", "authority-2", "example.org.rotated.jwks.json")):
        pub = load(d, name).public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64u(pub.x), "y": b64u(pub.y),
               "kid": kid, "use": "jwt-svid"}
        with open(f"{d}/{file}", "w") as f:
            json.dump({"keys": [jwk]}, f)
elif cmd == "mint":
    now = int(time.time())
    tokens = []
    for s in json.loads(sys.argv[3]):
        exp = now + s.get("exp_in", 300)
        claims = {"sub": s["sub"], "aud": s["aud"], "iat": min(now, exp - 300), "exp": exp,
                  "jti": uuid.uuid4().hex}
        tokens.append(jwt.encode(claims, load(d, s.get("key", "authority")), algorithm="ES256",
                                 headers={"kid": s.get("kid", "authority-1")}))
    print(json.dumps(tokens))
"#;

/// A server trusting trust domain `example.org` (its bundle from the
/// independent issuer), alice, and her agent `svc`, whose missions start
/// only with a JWT-SVID of a workload under `spiffe://example.org/agents/`.
struct SvidWorld {
    server: TestServer,
    issuer: tempfile::TempDir,
    admin: String,
    alice: String,
}

impl SvidWorld {
    /// With the bundle from a file, and `policy` as the organisation's
    /// policy, if given.
    fn new(policy: Option<&str>) -> Self {
        Self::with(policy, |issuer| {
            format!(
                "[attestation.trust_domains.\"example.org\"]\nbundle = {:?}\n",
                issuer.join("example.org.jwks.json").display().to_string()
            )
        })
    }

    /// With `[attestation]` as `attestation` writes it, given the issuer's
    /// directory.
    fn with(policy: Option<&str>, attestation: impl FnOnce(&Path) -> String) -> Self {
        let issuer = tempfile::tempdir().unwrap();
        let dir = issuer.path().to_str().unwrap();
        py(ISSUER, &["init", dir]);
        let mut config = attestation(issuer.path());
        if let Some(p) = policy {
            let policies = issuer.path().join("policies");
            std::fs::create_dir(&policies).unwrap();
            std::fs::write(policies.join("org.cedar"), p).unwrap();
            config.insert_str(
                0,
                &format!("policies_dir = {:?}\n", policies.display().to_string()),
            );
        }
        let server = TestServer::start(bin(), Some(&config));
        let (admin, alice) = people(&server);
        let registered = server
            .cli(
                Some(&alice),
                &[
                    "agent",
                    "register",
                    "svc",
                    "--require-spiffe-id",
                    "spiffe://example.org/agents/*",
                ],
            )
            .success();
        assert!(
            registered.contains("a JWT-SVID of spiffe://example.org/agents/*"),
            "{registered}"
        );
        Self {
            server,
            issuer,
            admin,
            alice,
        }
    }

    /// One JWT-SVID per spec (`sub`, `aud`, and optionally `exp_in`,
    /// `key`, `kid`).
    fn mint(&self, specs: &[Value]) -> Vec<String> {
        let out = py(
            ISSUER,
            &[
                "mint",
                self.issuer.path().to_str().unwrap(),
                &Value::from(specs.to_vec()).to_string(),
            ],
        );
        serde_json::from_str(&out).unwrap()
    }

    /// `mandate mission keygen`: a key file, its thumbprint and the
    /// audiences a JWT-SVID for it must carry, as the CLI says them.
    fn keygen(&self, name: &str) -> (String, Vec<String>) {
        let out = self
            .server
            .cli(None, &["mission", "keygen", "--out", name, "--json"])
            .json();
        let mode = std::fs::metadata(self.server.scratch().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a mission key file is private");
        let audiences = out["svid_audiences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        (out["jkt"].as_str().unwrap().to_owned(), audiences)
    }

    /// Writes `text` as an evidence file; returns its name.
    fn evidence(&self, name: &str, text: &str) -> String {
        std::fs::write(self.server.scratch().join(name), text).unwrap();
        name.to_owned()
    }

    fn start(&self, token: &str, state: &str, key: &str, evidence: &str) -> CliOutput {
        self.server.cli(
            None,
            &[
                "mission",
                "start",
                token,
                "--state",
                state,
                "--key",
                key,
                "--evidence",
                evidence,
            ],
        )
    }
}

fn svid(sub: &str, aud: &[&str]) -> Value {
    json!({ "sub": sub, "aud": aud })
}

/// Swaps a JWT's claims for `claims`, keeping its header and signature.
fn with_claims(token: &str, claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let body = b64.encode(serde_json::to_vec(claims).unwrap());
    format!("{}.{body}.{}", parts[0], parts[2])
}

fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    serde_json::from_slice(&b64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[test]
fn a_workload_starts_its_mission_only_with_its_own_svid_and_refusals_leave_the_token_usable() {
    let w = SvidWorld::new(None);
    let server = &w.server;
    let issuer = server.url();
    let (id, token) = mission_for(server, &w.alice, "svc");
    let (jkt, audiences) = w.keygen("k1.pem");
    let (other_jkt, _) = w.keygen("k2.pem");
    let bind = format!("urn:mandate:jkt:{jkt}");
    let bind_other = format!("urn:mandate:jkt:{other_jkt}");
    // What the CLI tells the workload to ask its SPIFFE agent for: this
    // authority and the key's own audience.
    assert_eq!(audiences, vec![issuer.to_owned(), bind.clone()]);

    // No evidence at all: the agent's registration requires some, and the
    // CLI writes no state.
    let bare = server.cli(None, &["mission", "start", &token, "--state", "s.json"]);
    refused(&bare, "attestation_required");
    assert!(!server.scratch().join("s.json").exists());

    let billing = "spiffe://example.org/agents/billing";
    let minted = w.mint(&[
        // 0: expired
        json!({ "sub": billing, "aud": [issuer, &bind], "exp_in": -60 }),
        // 1: for another authority, bound to this key
        svid(billing, &["https://other-authority.example", bind.as_str()]),
        // 2: for this authority, bound to no key
        svid(billing, &[issuer]),
        // 3: bound to another key
        svid(billing, &[issuer, bind_other.as_str()]),
        // 4: of a trust domain this authority has no bundle for
        svid(
            "spiffe://elsewhere.org/agents/billing",
            &[issuer, bind.as_str()],
        ),
        // 5: self-signed, under the bundle's key id
        json!({ "sub": billing, "aud": [issuer, &bind], "key": "rogue" }),
        // 6: self-signed, under its own key id
        json!({ "sub": billing, "aud": [issuer, &bind], "key": "rogue", "kid": "rogue-1" }),
        // 7: a genuine workload the agent's registration does not name
        svid("spiffe://example.org/other/x", &[issuer, bind.as_str()]),
        // 8: the path the pattern is below, not a workload under it
        svid("spiffe://example.org/agents", &[issuer, bind.as_str()]),
        // 9: good, for the other key (to be tampered with below)
        svid(billing, &[issuer, bind_other.as_str()]),
        // 10: bound to this key, for no authority at all
        svid(billing, &[bind.as_str()]),
    ]);
    // Someone else's SVID, re-bound to this key by editing its `aud`.
    let mut stolen = claims_of(&minted[9]);
    stolen["aud"] = json!([issuer, &bind]);
    let tampered = with_claims(&minted[9], &stolen);

    let cases = [
        (&minted[0], "attestation_expired"),
        (&minted[1], "attestation_audience"),
        (&minted[10], "attestation_audience"),
        (&minted[2], "attestation_unbound"),
        (&minted[3], "attestation_unbound"),
        (&minted[4], "attestation_untrusted"),
        (&minted[5], "attestation_invalid"),
        (&minted[6], "attestation_untrusted"),
        (&tampered, "attestation_invalid"),
        (&minted[7], "attestation_mismatch"),
        (&minted[8], "attestation_mismatch"),
    ];
    for (i, (svid, code)) in cases.iter().enumerate() {
        let file = w.evidence(&format!("bad-{i}.jwt"), svid);
        // The same token every time: had a refusal consumed it, the next
        // start would say `start_token_used` instead of its own code.
        refused(&w.start(&token, "s.json", "k1.pem", &file), code);
        assert!(!server.scratch().join("s.json").exists());
    }
    still_ready(server, &w.alice, &id);
    // Presented with the other key, the SVID bound to that key is refused
    // too: the binding names the key, not just any key.
    let file = w.evidence("k2-svid.jwt", &minted[9]);
    refused(
        &w.start(&token, "s.json", "k1.pem", &file),
        "attestation_unbound",
    );

    // The same token, with the workload's own SVID (short-lived, as SVIDs
    // are): the mission starts, bound to the key, attested as that
    // workload.
    let good = w.mint(&[json!({ "sub": billing, "aud": audiences, "exp_in": 4 })]);
    let exp = claims_of(&good[0])["exp"].as_u64().unwrap();
    let good = w.evidence("good.jwt", &good[0]);
    w.start(&token, "s.json", "k1.pem", &good).success();
    let m = show(server, &w.alice, &id);
    assert_eq!(m["state"], "active");
    assert_eq!(m["jkt"], jkt.as_str());
    assert_eq!(m["attestation"]["method"], "jwt_svid");
    assert_eq!(m["attestation"]["subject"], billing);

    // Its credential says so, offline; with the bundle the SVID itself is
    // checked again, and it is the one the credential names.
    let cred = server
        .cli(None, &["mission", "credential", "--state", "s.json"])
        .success();
    let cred = cred.trim();
    let verified = server.cli(None, &["credential", "verify", cred]).success();
    assert!(
        verified.contains(&format!(
            "statement: workload {billing} holding key {jkt} acts for alice as svc on mission {id}"
        )),
        "{verified}"
    );
    let bundle = format!(
        "example.org={}",
        w.issuer.path().join("example.org.jwks.json").display()
    );
    // Checked after the SVID has expired: it was valid when the authority
    // verified it, which is what the credential claims.
    while now().0 <= exp {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let rechecked = server
        .cli(
            None,
            &[
                "credential",
                "verify",
                cred,
                "--evidence",
                &good,
                "--bundle",
                &bundle,
                "--json",
            ],
        )
        .json();
    assert_eq!(rechecked["evidence_rechecked"], true);
    assert_eq!(rechecked["claims"]["att"]["subject"], billing);
    // Another genuine SVID of the same workload for the same key is not
    // the evidence this mission started with.
    let other = w.mint(&[svid(billing, &[issuer, bind.as_str()])]);
    let other = w.evidence("other-good.jwt", &other[0]);
    refused(
        &server.cli(
            None,
            &[
                "credential",
                "verify",
                cred,
                "--evidence",
                &other,
                "--bundle",
                &bundle,
            ],
        ),
        "attestation_mismatch",
    );
}

#[test]
fn evidence_starts_one_mission_only_even_for_the_same_key() {
    let w = SvidWorld::new(None);
    let server = &w.server;
    let issuer = server.url();
    let (a, token_a) = mission_for(server, &w.alice, "svc");
    let (b, token_b) = mission_for(server, &w.alice, "svc");
    let (jkt, _) = w.keygen("k.pem");
    let bind = format!("urn:mandate:jkt:{jkt}");
    let billing = "spiffe://example.org/agents/billing";
    let minted = w.mint(&[
        svid(billing, &[issuer, bind.as_str()]),
        svid(billing, &[issuer, bind.as_str()]),
    ]);
    let first = w.evidence("first.jwt", &minted[0]);
    let second = w.evidence("second.jwt", &minted[1]);

    w.start(&token_a, "a.json", "k.pem", &first).success();
    // The SVID that started A, with the key it is bound to, for B.
    let replay = w.start(&token_b, "b.json", "k.pem", &first);
    refused(&replay, "attestation_replayed");
    assert!(!server.scratch().join("b.json").exists());
    still_ready(server, &w.alice, &b);
    // Still refused once A has ended: one piece of evidence, one mission,
    // ever.
    server
        .cli(None, &["mission", "end", "--state", "a.json"])
        .success();
    refused(
        &w.start(&token_b, "b.json", "k.pem", &first),
        "attestation_replayed",
    );
    // B's token was not consumed: a fresh SVID starts it.
    w.start(&token_b, "b.json", "k.pem", &second).success();
    let (ma, mb) = (show(server, &w.alice, &a), show(server, &w.alice, &b));
    assert_eq!(mb["state"], "active");
    assert_ne!(
        ma["attestation"]["evidence_s256"], mb["attestation"]["evidence_s256"],
        "each mission names the evidence that started it"
    );
}

// ---------------------------------------------------------------------------
// Launch statements: `mandate launch`, and statements made by hand.

/// The agent a launcher runs: two calls through the gateway with the
/// mission it was handed, then it says where that mission's state was and
/// exits with a code of its own (3), which `mandate launch` passes on.
fn agent_script() -> String {
    format!(
        "#!/bin/sh\n\
         echo \"state: $MANDATE_STATE\"\n\
         {bin:?} mission call GET \"$MANDATE_SERVER/gw/reports/q3\" || exit 11\n\
         {bin:?} mission call GET \"$MANDATE_SERVER/gw/pinned/q3\" || exit 12\n\
         exit 3\n",
        bin = bin().display().to_string()
    )
}

/// Org policy: the `ledger` route serves only attested code, decided by
/// Cedar from the mission's attributes and the call's trust.
const LEDGER_POLICY: &str = r#"
@id("ledger-only-for-attested-code")
forbid(principal, action, resource is Route)
when { resource.route == "ledger" }
unless {
  principal.mission.attested && context.trust == "attested" &&
  principal.mission has code_digest && principal.mission.code_digest like "sha256:*"
};
"#;

/// A server with launcher `ci` registered, in front of a recording
/// upstream: route `reports` requires `attested`, route `pinned` admits
/// only the agent script's code, route `ledger` is guarded by policy.
/// Alice has agents `reporter` (launcher `ci` and the agent script's
/// digest required), `ci-bot` (launcher `ci` required), `plain-bot` and
/// `helper` (nothing required).
struct LaunchWorld {
    server: TestServer,
    trust: tempfile::TempDir,
    admin: String,
    alice: String,
    /// Paths the upstream was asked for.
    seen: Arc<Mutex<Vec<String>>>,
    /// The agent script and its SHA-256 (hex).
    script: PathBuf,
    digest: String,
    /// Launcher `ci`'s private key file, and the public JWK file the
    /// authority trusts.
    ci_key: PathBuf,
    ci_pub: PathBuf,
}

async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push(uri.path().to_owned());
            axum::Json(json!({ "upstream": "ok", "path": uri.path() }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

impl LaunchWorld {
    async fn new() -> Self {
        let trust = tempfile::tempdir().unwrap();
        let t = trust.path();
        // The operator makes the launcher's key and registers its public
        // half, as `mandate launcher keygen` prints it.
        // Its standard output is the public JWK alone, ready to redirect
        // into the file the authority reads.
        let made = offline(t, &["launcher", "keygen", "--out", "ci.key"]).success();
        let jwk: Value = serde_json::from_str(&made).unwrap();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        assert!(jwk.get("d").is_none(), "the printed key is the public half");
        let mode = std::fs::metadata(t.join("ci.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the launcher's private key is private");
        let ci_pub = t.join("ci.pub.jwk");
        std::fs::write(&ci_pub, jwk.to_string()).unwrap();
        let script = t.join("agent.sh");
        std::fs::write(&script, agent_script()).unwrap();
        let digest = sha256_hex(&std::fs::read(&script).unwrap());
        let policies = t.join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("ledger.cedar"), LEDGER_POLICY).unwrap();
        let (up, seen) = upstream().await;
        let route = |name: &str, extra: &str| {
            format!(
                "[[routes]]\nname = \"{name}\"\nupstream = \"{up}\"\n{extra}\n\n\
                 [[routes.rules]]\nmethod = \"GET\"\npath = \"/{{*rest}}\"\naction = \"read\"\n\n"
            )
        };
        let config = format!(
            "policies_dir = {:?}\n\n[attestation.launchers.ci]\npublic_key = {:?}\n\n{}{}{}",
            policies.display().to_string(),
            ci_pub.display().to_string(),
            route("reports", "required_trust = \"attested\""),
            route(
                "pinned",
                &format!("attestation = {{ code_digests = [\"sha256:{digest}\"] }}")
            ),
            route("ledger", ""),
        );
        let server = TestServer::start(bin(), Some(&config));
        let (admin, alice) = people(&server);
        let digest_req = format!("sha256:{digest}");
        for (agent, require) in [
            (
                "reporter",
                vec![
                    "--require-launcher",
                    "ci",
                    "--require-code-digest",
                    &digest_req,
                ],
            ),
            ("ci-bot", vec!["--require-launcher", "ci"]),
            ("plain-bot", vec![]),
            ("helper", vec![]),
        ] {
            let mut args = vec!["agent", "register", agent];
            args.extend(require);
            server.cli(Some(&alice), &args).success();
        }
        Self {
            server,
            ci_key: t.join("ci.key"),
            trust,
            admin,
            alice,
            seen,
            script,
            digest,
            ci_pub,
        }
    }

    fn ci(&self) -> LauncherKey {
        LauncherKey::from_pkcs8_pem(&std::fs::read_to_string(&self.ci_key).unwrap()).unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.trust.path().join(name).display().to_string()
    }

    /// `mandate launch` of `script` (measured) with `token`.
    fn launch(&self, token: &str, script: &Path, extra: &[&str]) -> CliOutput {
        let key = self.ci_key.display().to_string();
        let script = script.display().to_string();
        let mut args = vec![
            "launch",
            "--launcher",
            "ci",
            "--key",
            &key,
            "--token",
            token,
            "--measure",
            &script,
        ];
        args.extend_from_slice(extra);
        args.extend(["--", "sh", &script]);
        self.server.cli(None, &args)
    }

    /// A launch statement signed by `key` as `name`.
    #[expect(clippy::too_many_arguments, reason = "each part is a test's knob")]
    fn statement(
        &self,
        key: &LauncherKey,
        name: &str,
        audience: &str,
        digest: &str,
        jkt: &Thumbprint,
        issued: UnixTime,
        ttl: u64,
    ) -> DsseEnvelope {
        let s = LaunchStatement::new(
            name,
            audience,
            "/opt/agents/summariser",
            digest,
            jkt,
            BTreeMap::from([("stage".to_owned(), "e2e".to_owned())]),
            issued,
            ttl,
        );
        key.sign_launch_statement(name, &s).unwrap()
    }

    /// A good statement by `ci` for `jkt` and `digest`.
    fn good_statement(&self, jkt: &Thumbprint, digest: &str) -> DsseEnvelope {
        self.statement(&self.ci(), "ci", self.server.url(), digest, jkt, now(), 300)
    }

    /// `mandate mission keygen` into `name`; the key as the test holds it.
    fn keygen(&self, name: &str) -> MissionKey {
        let out = self
            .server
            .cli(None, &["mission", "keygen", "--out", name, "--json"])
            .json();
        let pem = std::fs::read_to_string(self.server.scratch().join(name)).unwrap();
        let key = MissionKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(out["jkt"], key.thumbprint().as_str());
        key
    }

    fn write_envelope(&self, name: &str, env: &DsseEnvelope) -> String {
        let path = self.server.scratch().join(name);
        std::fs::write(&path, serde_json::to_string_pretty(env).unwrap()).unwrap();
        name.to_owned()
    }

    /// Starts `token`'s mission from the CLI with a statement by `ci` for
    /// code `digest`; returns the state file's name and the envelope file.
    fn start_attested(&self, token: &str, tag: &str, digest: &str) -> (String, String) {
        let key_file = format!("{tag}.pem");
        let key = self.keygen(&key_file);
        let env = self.write_envelope(
            &format!("{tag}.dsse.json"),
            &self.good_statement(key.thumbprint(), digest),
        );
        let state = format!("{tag}.json");
        self.server
            .cli(
                None,
                &[
                    "mission",
                    "start",
                    token,
                    "--state",
                    &state,
                    "--key",
                    &key_file,
                    "--evidence",
                    &env,
                ],
            )
            .success();
        (state, env)
    }

    fn call(&self, state: &str, route: &str) -> CliOutput {
        let url = format!("{}/gw/{route}/q3", self.server.url());
        self.server
            .cli(None, &["mission", "call", "--state", state, "GET", &url])
    }

    /// The decisions about `mission`, oldest first.
    fn decisions(&self, mission: &str) -> Vec<Value> {
        let log = self
            .server
            .cli(
                Some(&self.admin),
                &[
                    "--json",
                    "audit",
                    "list",
                    "--kind",
                    "decision",
                    "--mission",
                    mission,
                    "--limit",
                    "100",
                ],
            )
            .json();
        log["records"].as_array().unwrap().clone()
    }

    fn explain(&self, record: &Value) -> String {
        self.server
            .cli(
                Some(&self.admin),
                &["audit", "explain", &record["seq"].to_string()],
            )
            .success()
    }
}

/// The one decision about `route` in `records`.
fn on_route<'a>(records: &'a [Value], route: &str) -> &'a Value {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["body"]["resource"]["route"] == route)
        .collect();
    assert_eq!(found.len(), 1, "one decision on `{route}` in {records:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandate_launch_runs_measured_code_on_an_attested_mission_that_ends_with_it() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "reporter");

    let out = w.launch(&token, &w.script, &["--env", "stage=e2e"]);
    // The program ran, its calls through `reports` (attested trust) and
    // `pinned` (its own digest) reached the upstream, and `mandate launch`
    // exits with the program's code.
    assert_eq!(
        out.code(),
        Some(3),
        "stdout: {}\nstderr: {}",
        out.stdout(),
        out.stderr()
    );
    let said = out.stdout();
    assert_eq!(said.matches("200 OK").count(), 2, "{said}");
    assert_eq!(*w.seen.lock().unwrap(), vec!["/q3", "/q3"]);
    assert!(
        out.stderr()
            .contains(&format!("(code sha256:{}) on mission {id}", w.digest)),
        "{}",
        out.stderr()
    );
    // The mission key lived in a private temporary file, gone with the
    // program.
    let state = said
        .lines()
        .find_map(|l| l.strip_prefix("state: "))
        .unwrap();
    assert!(!Path::new(state).exists(), "{state} outlived the program");

    // The mission ended when the program exited; it was attested by `ci`
    // as that code, in the environment the launcher recorded.
    let m = show(server, &w.alice, &id);
    assert_eq!(m["state"], "ended", "{m}");
    let a = &m["attestation"];
    assert_eq!(a["method"], "launch_statement");
    assert_eq!(a["launcher"], "ci");
    assert_eq!(a["code_digest"], format!("sha256:{}", w.digest));
    assert_eq!(
        Path::new(a["subject"].as_str().unwrap()),
        w.script.canonicalize().unwrap()
    );
    assert_eq!(a["environment"]["stage"], "e2e");
    assert_eq!(a["environment"]["os"], std::env::consts::OS);

    // The audit tells, for the allowed call, which code held the key.
    let decisions = w.decisions(&id);
    let allowed = on_route(&decisions, "reports");
    assert_eq!(allowed["body"]["decision"], "allow", "{allowed}");
    let story = w.explain(allowed);
    for want in [
        "attested by a launch statement by launcher `ci`",
        &format!("with digest sha256:{}", w.digest),
        "stage=e2e",
    ] {
        assert!(story.contains(want), "missing {want:?} in:\n{story}");
    }

    // Other code, for another mission of the same agent: refused at start,
    // and it never runs.
    let marker = w.trust.path().join("other-ran");
    let other = w.trust.path().join("other.sh");
    std::fs::write(
        &other,
        format!("#!/bin/sh\ntouch {:?}\n", marker.display().to_string()),
    )
    .unwrap();
    let (other_id, other_token) = mission_for(server, &w.alice, "reporter");
    let refusal = w.launch(&other_token, &other, &[]);
    refused(&refusal, "attestation_mismatch");
    assert!(!marker.exists(), "the refused program ran");
    still_ready(server, &w.alice, &other_id);
    assert_eq!(w.seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_routes_and_policy_refuse_unattested_missions_and_audit_tells_which_was_which() {
    let w = LaunchWorld::new().await;
    let server = &w.server;

    // An unattested mission: started with a bare key.
    let (plain, plain_token) = mission_for(server, &w.alice, "plain-bot");
    server
        .cli(
            None,
            &["mission", "start", &plain_token, "--state", "plain.json"],
        )
        .success();
    refused(&w.call("plain.json", "reports"), "insufficient_trust");
    refused(&w.call("plain.json", "pinned"), "insufficient_trust");
    refused(
        &w.call("plain.json", "ledger"),
        "ledger-only-for-attested-code",
    );
    assert!(
        w.seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );

    // An attested mission, of code other than the agent script.
    let other_code = sha256_hex(b"another agent, same launcher");
    let (attested, token) = mission_for(server, &w.alice, "ci-bot");
    let (state, _) = w.start_attested(&token, "att", &other_code);
    let ok = w.call(&state, "reports").success();
    assert!(ok.contains("\"upstream\":\"ok\""), "{ok}");
    w.call(&state, "ledger").success();
    // `pinned` admits only the agent script's code.
    let pinned = w.call(&state, "pinned");
    refused(&pinned, "insufficient_trust");
    refused(&pinned, &format!("sha256:{other_code}"));
    assert_eq!(*w.seen.lock().unwrap(), vec!["/q3", "/q3"]);

    // The audit explains both: what vouched for the code, or that nothing
    // did.
    let refusal = w.explain(on_route(&w.decisions(&plain), "reports"));
    assert!(
        refusal.contains("without attestation evidence"),
        "{refusal}"
    );
    let records = w.decisions(&attested);
    let allowed = on_route(&records, "reports");
    assert_eq!(allowed["body"]["decision"], "allow");
    let story = w.explain(allowed);
    assert!(
        story.contains(&format!(
            "launch statement by launcher `ci`: code `/opt/agents/summariser` with digest sha256:{other_code}"
        )),
        "{story}"
    );
    assert!(!story.contains("without attestation evidence"), "{story}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_or_misdirected_launch_statements_are_refused_and_leave_the_token_usable() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "ci-bot");
    let key = MissionKey::generate(&OsRandom).unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let jkt = key.thumbprint().clone();
    let other_key = MissionKey::generate(&OsRandom).unwrap();
    let rogue = LauncherKey::generate(&OsRandom).unwrap();
    let issuer = server.url();
    let code = sha256_hex(b"the summariser, build 41");

    let mut tampered = w.good_statement(&jkt, &code);
    {
        // Another code digest, after the launcher signed.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = String::from_utf8(b64.decode(&tampered.payload).unwrap()).unwrap();
        assert!(payload.contains(&code));
        tampered.payload =
            b64.encode(payload.replace(&code, &sha256_hex(b"something else entirely")));
    }
    let mut wrong_payload_type = w.good_statement(&jkt, &code);
    wrong_payload_type.payload_type = "application/json".into();
    let wrong_predicate = {
        let mut s = LaunchStatement::new(
            "ci",
            issuer,
            "/opt/agents/summariser",
            &code,
            &jkt,
            BTreeMap::new(),
            now(),
            300,
        );
        s.predicate_type = "https://slsa.dev/provenance/v1".into();
        w.ci().sign_launch_statement("ci", &s).unwrap()
    };
    let names_another_launcher = {
        let s = LaunchStatement::new(
            "release-bot",
            issuer,
            "/opt/agents/summariser",
            &code,
            &jkt,
            BTreeMap::new(),
            now(),
            300,
        );
        w.ci().sign_launch_statement("ci", &s).unwrap()
    };
    let cases = [
        (
            "signed by a key no launcher registered",
            w.statement(&rogue, "rogue", issuer, &code, &jkt, now(), 300),
            401,
            "attestation_untrusted",
        ),
        (
            "signed by another key in the name of `ci`",
            w.statement(&rogue, "ci", issuer, &code, &jkt, now(), 300),
            401,
            "attestation_invalid",
        ),
        (
            "payload changed after signing",
            tampered,
            401,
            "attestation_invalid",
        ),
        (
            "naming a launcher other than the one that signed",
            names_another_launcher,
            401,
            "attestation_invalid",
        ),
        (
            "not an in-toto payload",
            wrong_payload_type,
            401,
            "attestation_invalid",
        ),
        (
            "another predicate type",
            wrong_predicate,
            401,
            "attestation_invalid",
        ),
        (
            "expired",
            w.statement(
                &w.ci(),
                "ci",
                issuer,
                &code,
                &jkt,
                UnixTime(now().0 - 600),
                300,
            ),
            401,
            "attestation_expired",
        ),
        (
            "for another authority",
            w.statement(
                &w.ci(),
                "ci",
                "https://other-authority.example",
                &code,
                &jkt,
                now(),
                300,
            ),
            401,
            "attestation_audience",
        ),
        (
            "for another mission key",
            w.good_statement(other_key.thumbprint(), &code),
            401,
            "attestation_unbound",
        ),
    ];
    for (what, envelope, status, code) in cases {
        let key = MissionKey::from_pkcs8_pem(&pem).unwrap();
        let err = MissionAgent::start_attested(
            issuer,
            &token,
            key,
            Evidence::LaunchStatement { envelope },
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("a statement {what} started the mission"));
        match err {
            ClientError::Problem {
                status: s, code: c, ..
            } => assert_eq!((s, c.as_str()), (status, code), "a statement {what}"),
            other => panic!("a statement {what}: {other}"),
        }
    }
    // Nor does the mission start with a bare key.
    let bare = MissionAgent::start_with(
        issuer,
        &token,
        MissionKey::from_pkcs8_pem(&pem).unwrap(),
        Arc::new(SystemClock),
        Arc::new(OsRandom),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(bare.code(), Some("attestation_required"));
    still_ready(server, &w.alice, &id);

    // The same token, with a good statement: started, attested.
    let agent = MissionAgent::start_attested(
        issuer,
        &token,
        MissionKey::from_pkcs8_pem(&pem).unwrap(),
        Evidence::LaunchStatement {
            envelope: w.good_statement(&jkt, &code),
        },
    )
    .await
    .unwrap();
    let m = agent.mission().await.unwrap();
    let a = m.attestation.unwrap();
    assert_eq!(a.code_digest, Some(format!("sha256:{code}")));
    assert_eq!(a.launcher.as_deref(), Some("ci"));
    assert_eq!(m.jkt.as_deref(), Some(jkt.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_verify_states_who_acts_and_rechecks_the_evidence_offline() {
    let mut w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "ci-bot");
    let (state, evidence) = w.start_attested(&token, "m", &w.digest);
    // A refreshed credential, as an agent holds it an hour in: it still
    // names the attestation verified at start.
    let cred = server
        .cli(
            None,
            &["mission", "credential", "--state", &state, "--refresh"],
        )
        .success()
        .trim()
        .to_owned();
    let jkt = show(server, &w.alice, &id)["jkt"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, plain_token) = mission_for(server, &w.alice, "plain-bot");
    server
        .cli(
            None,
            &["mission", "start", &plain_token, "--state", "plain.json"],
        )
        .success();
    let plain_cred = server
        .cli(None, &["mission", "credential", "--state", "plain.json"])
        .success()
        .trim()
        .to_owned();
    // What a verifier keeps of the authority: its JWKS and its name. The
    // authority is gone from here on.
    let issuer = server.url().to_owned();
    let jwks = reqwest::get(format!("{issuer}/.well-known/jwks.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let jwks_file = w.path("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    w.server.stop();
    let server = &w.server;
    let verify = |cred: &str, extra: &[&str]| {
        let mut args = vec![
            "credential",
            "verify",
            cred,
            "--jwks",
            &jwks_file,
            "--issuer",
            &issuer,
        ];
        args.extend_from_slice(extra);
        server.cli(None, &args)
    };

    // On the authority's word (the credential's signature): who acts, as
    // which code, for whom.
    let said = verify(&cred, &[]).success();
    let statement = format!(
        "statement: code sha256:{} (/opt/agents/summariser, launched by ci) holding key {jkt} acts for alice as ci-bot on mission {id}",
        w.digest
    );
    assert!(said.contains(&statement), "{said}");
    assert!(
        said.contains("the evidence itself not re-checked"),
        "{said}"
    );

    // With the evidence and the launcher's public key, checked again here.
    let launcher = format!("ci={}", w.ci_pub.display());
    let recheck = |evidence: &str, launcher: &str| {
        verify(
            &cred,
            &["--evidence", evidence, "--launcher", launcher, "--json"],
        )
    };
    let rechecked = recheck(&evidence, &launcher).json();
    assert_eq!(rechecked["evidence_rechecked"], true);
    assert_eq!(
        rechecked["claims"]["att"]["code_digest"],
        format!("sha256:{}", w.digest)
    );
    assert!(
        rechecked["statement"]
            .as_str()
            .unwrap()
            .starts_with(&statement["statement: ".len()..]),
        "{rechecked}"
    );

    // Other evidence is not this mission's: another code for the same
    // key, a statement for another key, or a key `ci` does not hold.
    let key = MissionKey::from_pkcs8_pem(
        &std::fs::read_to_string(server.scratch().join("m.pem")).unwrap(),
    )
    .unwrap();
    let other_code = w.write_envelope(
        "other-code.json",
        &w.good_statement(key.thumbprint(), &sha256_hex(b"not the agent")),
    );
    refused(&recheck(&other_code, &launcher), "attestation_mismatch");
    let stranger = MissionKey::generate(&OsRandom).unwrap();
    let other_key = w.write_envelope(
        "other-key.json",
        &w.good_statement(stranger.thumbprint(), &w.digest),
    );
    refused(&recheck(&other_key, &launcher), "attestation_unbound");
    let impostor = LauncherKey::generate(&OsRandom).unwrap();
    let impostor_pub = w.path("impostor.pub.jwk");
    std::fs::write(
        &impostor_pub,
        serde_json::to_string(impostor.public_jwk()).unwrap(),
    )
    .unwrap();
    refused(
        &recheck(&evidence, &format!("ci={impostor_pub}")),
        "attestation_invalid",
    );

    // An unattested mission's credential says so, and has no evidence to
    // check.
    let plain = verify(&plain_cred, &[]).success();
    assert!(
        plain.contains("statement: unattested code holding key"),
        "{plain}"
    );
    refused(
        &verify(
            &plain_cred,
            &["--evidence", &evidence, "--launcher", &launcher],
        ),
        "not_attested",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_child_is_not_attested_unless_it_brings_its_own_evidence() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (parent, token) = mission_for(server, &w.alice, "ci-bot");
    let (parent_state, _) = w.start_attested(&token, "parent", &w.digest);
    assert!(show(server, &w.alice, &parent).get("attestation").is_some());
    // The parent reaches the attested route itself.
    w.call(&parent_state, "reports").success();

    let scope = server.scratch().join("scope.cedar").display().to_string();
    let delegate = |require: &[&str]| {
        let mut args = vec![
            "mission",
            "delegate",
            "--state",
            &parent_state,
            "--agent",
            "helper",
            "--goal",
            "fetch one report",
            "--scope",
            &scope,
            "--budget",
            "5",
            "--out-of-scope",
            "deny",
            "--json",
        ];
        args.extend_from_slice(require);
        let created = server.cli(None, &args).json();
        (
            created["mission"]["id"].as_str().unwrap().to_owned(),
            created["start_token"].as_str().unwrap().to_owned(),
        )
    };

    // A child started with a bare key: not attested, whatever its parent
    // was, and the attested route refuses it.
    let (child, child_token) = delegate(&[]);
    server
        .cli(
            None,
            &["mission", "start", &child_token, "--state", "child.json"],
        )
        .success();
    let m = show(server, &w.alice, &child);
    assert_eq!(
        (m["state"].as_str(), m["parent"].as_str()),
        (Some("active"), Some(parent.as_str()))
    );
    assert!(m.get("attestation").is_none(), "{m}");
    refused(&w.call("child.json", "reports"), "insufficient_trust");
    assert_eq!(w.seen.lock().unwrap().len(), 1);

    // A child the parent requires to be launched by `ci` as the agent
    // script: no start without evidence; launched, it is attested itself
    // and its calls go through.
    let digest = format!("sha256:{}", w.digest);
    let (launched, launched_token) =
        delegate(&["--require-launcher", "ci", "--require-code-digest", &digest]);
    refused(
        &server.cli(
            None,
            &["mission", "start", &launched_token, "--state", "c2.json"],
        ),
        "attestation_required",
    );
    let out = w.launch(&launched_token, &w.script, &[]);
    assert_eq!(out.code(), Some(3), "{}\n{}", out.stdout(), out.stderr());
    let m = show(server, &w.alice, &launched);
    assert_eq!(m["parent"], parent.as_str());
    assert_eq!(m["attestation"]["code_digest"], digest.as_str());
    assert_eq!(w.seen.lock().unwrap().len(), 3);
}

/// An independent DSSE verifier: the PAE computed here from the DSSE v1
/// spec, the Ed25519 signature checked with `cryptography` against the
/// launcher's public JWK, and the in-toto statement read field by field.
/// Prints one JSON line per envelope file.
const DSSE_VERIFIER: &str = r#"
import base64, hashlib, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def b64d(s):
    s = s.replace("-", "+").replace("_", "/")
    return base64.b64decode(s + "=" * (-len(s) % 4))

jwk = json.load(open(sys.argv[1]))
public = Ed25519PublicKey.from_public_bytes(b64d(jwk["x"]))
code = open(sys.argv[2], "rb").read()
for path in sys.argv[3:]:
    env = json.load(open(path))
    t = env["payloadType"].encode()
    payload = b64d(env["payload"])
    pae = b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)
    ok = False
    for s in env["signatures"]:
        if s.get("keyid") != "ci":
            continue
        try:
            public.verify(b64d(s["sig"]), pae)
            ok = True
        except InvalidSignature:
            pass
    st = json.loads(payload)
    print(json.dumps({
        "verified": ok,
        "payload_type": env["payloadType"],
        "type": st["_type"],
        "predicate_type": st["predicateType"],
        "digest_matches": st["subject"][0]["digest"]["sha256"] == hashlib.sha256(code).hexdigest(),
        "launcher": st["predicate"]["launcher"],
        "audience": st["predicate"]["audience"],
        "jkt": st["predicate"]["mission_key"]["jkt"],
    }))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_dsse_verifier_accepts_the_statement_the_authority_accepted() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "reporter");
    // The statement that started the mission: launcher `ci`, the agent
    // script's digest, the key `mission keygen` made.
    let (_, evidence) = w.start_attested(&token, "m", &w.digest);
    let jkt = show(server, &w.alice, &id)["jkt"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same statement with its code digest changed after signing.
    let mut forged: Value =
        serde_json::from_str(&std::fs::read_to_string(server.scratch().join(&evidence)).unwrap())
            .unwrap();
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut st: Value =
            serde_json::from_slice(&b64.decode(forged["payload"].as_str().unwrap()).unwrap())
                .unwrap();
        st["predicate"]["environment"]["stage"] = json!("production");
        forged["payload"] = json!(b64.encode(serde_json::to_vec(&st).unwrap()));
    }
    let forged_file = server.scratch().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();

    let out = py(
        DSSE_VERIFIER,
        &[
            w.ci_pub.to_str().unwrap(),
            w.script.to_str().unwrap(),
            server.scratch().join(&evidence).to_str().unwrap(),
            forged_file.to_str().unwrap(),
        ],
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({
            "verified": true,
            "payload_type": "application/vnd.in-toto+json",
            "type": "https://in-toto.io/Statement/v1",
            "predicate_type": "urn:mandate:launch:v1",
            "digest_matches": true,
            "launcher": "ci",
            "audience": server.url(),
            "jkt": jkt,
        })
    );
    assert_eq!(
        lines[1]["verified"], false,
        "the verifier accepts a forgery"
    );
}

/// Org policy: invoices are for the billing workload alone, as its SVID
/// names it, on an attested call.
const INVOICES_POLICY: &str = r#"
@id("invoices-for-the-billing-workload")
forbid(principal, action, resource is Resource)
when { resource.id == "invoices" }
unless {
  context.trust == "attested" &&
  principal.mission has workload &&
  principal.mission.workload == "spiffe://example.org/agents/billing"
};
"#;

#[tokio::test]
async fn policy_and_audit_see_the_workload_an_svid_names() {
    let w = SvidWorld::new(Some(INVOICES_POLICY));
    let server = &w.server;
    let issuer = server.url();
    server
        .cli(Some(&w.alice), &["agent", "register", "plain"])
        .success();
    // Two workloads of the agent `svc`, each with its SVID, and a mission
    // of an agent that needs none, started with a bare key.
    let mut started = Vec::new();
    for workload in [
        "spiffe://example.org/agents/billing",
        "spiffe://example.org/agents/intern",
    ] {
        let (_, token) = mission_for(server, &w.alice, "svc");
        let key = MissionKey::generate(&OsRandom).unwrap();
        let bind = mandate_core::key_audience(key.thumbprint());
        let minted = w.mint(&[svid(workload, &[issuer, bind.as_str()])]);
        let evidence = Evidence::JwtSvid {
            token: minted[0].clone(),
        };
        started.push(
            MissionAgent::start_attested(issuer, &token, key, evidence)
                .await
                .unwrap(),
        );
    }
    let (_, token) = mission_for(server, &w.alice, "plain");
    started.push(MissionAgent::start(issuer, &token).await.unwrap());
    let [billing, intern, plain] = started.try_into().unwrap();

    // An enforcement point asks about them.
    let gw_token = server
        .cli(Some(&w.admin), &["principal", "add", "gateway", "--json"])
        .json()["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let gw = mandate_client::Client::new(issuer)
        .unwrap()
        .with_token(&gw_token);
    let decide = |agent: &MissionAgent, id: &str, required: Option<&str>| {
        let req: mandate_core::wire::DecideRequest = serde_json::from_value(json!({
            "credential": agent.credential(),
            "action": "read",
            "resource": { "type": "Resource", "id": id },
            "required_trust": required,
        }))
        .unwrap();
        let gw = gw.clone();
        async move { gw.decide(&req).await.unwrap() }
    };
    // Policy ids are qualified by their file.
    let policy = "org.cedar/invoices-for-the-billing-workload".to_owned();
    let allowed = decide(&billing, "invoices", None).await;
    assert_eq!(allowed.decision.as_str(), "allow", "{allowed:?}");
    for other in [&intern, &plain] {
        let denied = decide(other, "invoices", None).await;
        assert_eq!(denied.decision.as_str(), "deny", "{denied:?}");
        assert!(denied.policies.contains(&policy), "{denied:?}");
    }
    // An enforcement point that requires attested trust: any workload with
    // verified evidence, no bare key.
    let notes = decide(&intern, "notes", Some("attested")).await;
    assert_eq!(notes.decision.as_str(), "allow", "{notes:?}");
    let notes = decide(&plain, "notes", Some("attested")).await;
    assert_eq!(
        (notes.decision.as_str(), notes.code.as_str()),
        ("deny", "insufficient_trust")
    );

    // The audit names the workload behind the allowed decision.
    let log = server
        .cli(
            Some(&w.admin),
            &[
                "--json",
                "audit",
                "list",
                "--kind",
                "decision",
                "--mission",
                billing.mission_id().as_str(),
            ],
        )
        .json();
    let seq = log["records"][0]["seq"].to_string();
    let story = server
        .cli(Some(&w.admin), &["audit", "explain", &seq])
        .success();
    assert!(
        story.contains(
            "attested by a SPIFFE JWT-SVID of workload `spiffe://example.org/agents/billing`"
        ),
        "{story}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_requirement_can_change_and_names_only_what_this_authority_trusts() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    // A requirement no evidence could meet here is refused when it is set.
    for (require, why) in [
        (
            ["--require-launcher", "nobody"],
            "no launcher `nobody` is configured",
        ),
        (
            ["--require-spiffe-id", "spiffe://example.org/agents/*"],
            "no trust bundle is configured for trust domain `example.org`",
        ),
        (
            ["--require-code-digest", "sha256:ABC"],
            "is not `sha256:` and 64 lowercase hex digits",
        ),
    ] {
        let mut args = vec!["agent", "register", "ghost"];
        args.extend(require);
        refused(&server.cli(Some(&w.alice), &args), why);
    }

    // A mission created while `plain-bot` needed nothing.
    let (before, before_token) = mission_for(server, &w.alice, "plain-bot");
    let set = server
        .cli(
            Some(&w.alice),
            &[
                "agent",
                "attestation",
                "plain-bot",
                "--require-launcher",
                "ci",
            ],
        )
        .success();
    assert!(
        set.contains(
            "now start only with evidence bound to their key: a launch statement of launcher ci"
        ),
        "{set}"
    );
    // From now on no mission of the agent starts without it, whenever it
    // was created.
    refused(
        &server.cli(
            None,
            &["mission", "start", &before_token, "--state", "before.json"],
        ),
        "attestation_required",
    );
    let (during, during_token) = mission_for(server, &w.alice, "plain-bot");
    assert_eq!(
        show(server, &w.alice, &during)["attestation_required"],
        json!([{ "launchers": ["ci"] }])
    );
    // Only its owner (or an admin) changes it.
    let bob = server
        .cli(Some(&w.admin), &["principal", "add", "bob", "--json"])
        .json()["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(
        &server.cli(Some(&bob), &["agent", "attestation", "plain-bot", "--none"]),
        "no such agent",
    );
    let unset = server
        .cli(
            Some(&w.alice),
            &["agent", "attestation", "plain-bot", "--none"],
        )
        .success();
    assert!(unset.contains("need no attestation evidence"), "{unset}");
    // The mission created before the requirement starts bare again; the
    // one created under it keeps what it required.
    server
        .cli(
            None,
            &["mission", "start", &before_token, "--state", "before.json"],
        )
        .success();
    assert_eq!(show(server, &w.alice, &before)["state"], "active");
    refused(
        &server.cli(
            None,
            &["mission", "start", &during_token, "--state", "during.json"],
        ),
        "attestation_required",
    );
    w.start_attested(&during_token, "during", &w.digest);
    assert_eq!(
        show(server, &w.alice, &during)["attestation"]["launcher"],
        "ci"
    );
}

/// A SPIFFE bundle endpoint over HTTPS: serves `bundle` from a directory
/// (404 while there is none), with a certificate of a CA made for the test.
fn bundle_endpoint() -> (mandate_testkit::HttpsFiles, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = mandate_testkit::HttpsFiles::start(Path::new(&python()), dir.path());
    (server, dir)
}

/// Tries `start` until it succeeds, for as long as it is refused with
/// `code`: the authority re-reads its bundle once a second.
async fn start_once_trusted(
    issuer: &str,
    token: &str,
    key_pem: &str,
    svid: &str,
    code: &str,
) -> MissionAgent {
    for _ in 0..50 {
        let key = MissionKey::from_pkcs8_pem(key_pem).unwrap();
        let evidence = Evidence::JwtSvid {
            token: svid.to_owned(),
        };
        match MissionAgent::start_attested(issuer, token, key, evidence).await {
            Ok(agent) => return agent,
            Err(e) if e.code() == Some(code) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("refused with another reason than `{code}`: {e}"),
        }
    }
    panic!("still refused with `{code}` after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_read_from_a_url_follows_the_issuers_rotation_and_survives_an_outage() {
    let (endpoint, served) = bundle_endpoint();
    let (url, ca) = (
        format!("{}/bundle", endpoint.url),
        endpoint.ca.display().to_string(),
    );
    let serve = |bytes: Option<Vec<u8>>| match bytes {
        Some(b) => std::fs::write(served.path().join("bundle"), b).unwrap(),
        None => std::fs::remove_file(served.path().join("bundle")).unwrap(),
    };
    // The authority's audience is configured, not its URL.
    let w = SvidWorld::with(None, |_| {
        format!(
            "[attestation]\naudience = \"https://mandate.example\"\n\n\
             [attestation.trust_domains.\"example.org\"]\nbundle_url = \"{url}\"\nbundle_ca = {ca:?}\nrefresh_secs = 1\n"
        )
    });
    let server = &w.server;
    let issuer = server.url();
    let (_, audiences) = w.keygen("k.pem");
    assert_eq!(audiences[0], "https://mandate.example");

    let keys: Vec<MissionKey> = (0..4)
        .map(|_| MissionKey::generate(&OsRandom).unwrap())
        .collect();
    let pems: Vec<String> = keys
        .iter()
        .map(|k| k.to_pkcs8_pem().unwrap().to_string())
        .collect();
    let aud = |k: &MissionKey| {
        json!([
            "https://mandate.example",
            mandate_core::key_audience(k.thumbprint())
        ])
    };
    let billing = "spiffe://example.org/agents/billing";
    let minted = w.mint(&[
        json!({ "sub": billing, "aud": aud(&keys[0]) }),
        json!({ "sub": billing, "aud": aud(&keys[1]), "key": "authority2", "kid": "authority-2" }),
        json!({ "sub": billing, "aud": aud(&keys[2]) }),
        json!({ "sub": billing, "aud": aud(&keys[3]), "key": "authority2", "kid": "authority-2" }),
        json!({ "sub": billing, "aud": [issuer, mandate_core::key_audience(keys[0].thumbprint())] }),
    ]);
    let missions: Vec<(String, String)> = (0..4)
        .map(|_| mission_for(server, &w.alice, "svc"))
        .collect();

    // Until the bundle has been read once, the trust domain trusts nothing.
    while endpoint.reads() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let err = MissionAgent::start_attested(
        issuer,
        &missions[0].1,
        MissionKey::from_pkcs8_pem(&pems[0]).unwrap(),
        Evidence::JwtSvid {
            token: minted[0].clone(),
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), Some("attestation_untrusted"), "{err}");

    // The issuer publishes its bundle: SVIDs of its key start missions.
    let read = |file: &str| std::fs::read(w.issuer.path().join(file)).unwrap();
    serve(Some(read("example.org.jwks.json")));
    start_once_trusted(
        issuer,
        &missions[0].1,
        &pems[0],
        &minted[0],
        "attestation_untrusted",
    )
    .await;
    // An SVID for the authority's URL is not for its configured audience.
    let err = MissionAgent::start_attested(
        issuer,
        &missions[2].1,
        MissionKey::from_pkcs8_pem(&pems[0]).unwrap(),
        Evidence::JwtSvid {
            token: minted[4].clone(),
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), Some("attestation_audience"), "{err}");

    // It rotates to a new key and drops the old one: the new key's SVIDs
    // are accepted once the bundle is read again, the old key's no more.
    serve(Some(read("example.org.rotated.jwks.json")));
    start_once_trusted(
        issuer,
        &missions[1].1,
        &pems[1],
        &minted[1],
        "attestation_untrusted",
    )
    .await;
    let err = MissionAgent::start_attested(
        issuer,
        &missions[2].1,
        MissionKey::from_pkcs8_pem(&pems[2]).unwrap(),
        Evidence::JwtSvid {
            token: minted[2].clone(),
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), Some("attestation_untrusted"), "{err}");

    // The endpoint fails for a while: the bundle last read stays in force.
    serve(None);
    let seen = endpoint.reads();
    while endpoint.reads() < seen + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    MissionAgent::start_attested(
        issuer,
        &missions[3].1,
        MissionKey::from_pkcs8_pem(&pems[3]).unwrap(),
        Evidence::JwtSvid {
            token: minted[3].clone(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launched_program_gets_its_mission_and_none_of_the_launchers_credentials() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "ci-bot");
    // An agent that tries to lift its own attestation requirement, with
    // whatever API token its environment holds.
    let script = w.trust.path().join("escape.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"start token: ${{MANDATE_START_TOKEN:-none}}\"\n\
             echo \"state: ${{MANDATE_STATE:-none}}\"\n\
             {:?} agent attestation ci-bot --none\n\
             exit 0\n",
            bin().display().to_string()
        ),
    )
    .unwrap();
    // Launched as a CI job does it: the person's API token (which created
    // the mission) and the start token in the launcher's environment.
    let out = CliOutput(
        Command::new(bin())
            .args([
                "launch",
                "--launcher",
                "ci",
                "--key",
                w.ci_key.to_str().unwrap(),
                "--measure",
                script.to_str().unwrap(),
                "--",
                "sh",
                script.to_str().unwrap(),
            ])
            .env("MANDATE_SERVER", server.url())
            .env("MANDATE_TOKEN", &w.alice)
            .env("MANDATE_START_TOKEN", &token)
            .env("MANDATE_LOG", "warn")
            .output()
            .unwrap(),
    );
    let said = out.success();
    assert_eq!(show(server, &w.alice, &id)["attestation"]["launcher"], "ci");
    assert!(!said.contains("state: none"), "{said}");
    assert!(said.contains("start token: none"), "{said}");
    // The program holds its mission and nothing that acts for the person
    // beyond it: her API token would let it create missions, approve its
    // own escalations, or lift the requirement that vouches for its code.
    let agent = server
        .cli(Some(&w.alice), &["agent", "show", "ci-bot", "--json"])
        .json();
    assert_eq!(
        agent["attestation"],
        json!({ "launchers": ["ci"] }),
        "the launched program used the launcher's API token:\n{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_cannot_require_evidence_this_authority_could_never_accept() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (_, token) = mission_for(server, &w.alice, "ci-bot");
    let (parent_state, _) = w.start_attested(&token, "parent", &w.digest);
    let scope = server.scratch().join("scope.cedar").display().to_string();
    // As an agent's registration is refused for them (see
    // `an_agents_requirement_can_change_…`): a child that had to bring such
    // evidence could never start, and the budget carved out for it would be
    // lost to the parent until the child expired.
    for (require, why) in [
        (
            ["--require-launcher", "nobody"],
            "no launcher `nobody` is configured",
        ),
        (
            ["--require-spiffe-id", "spiffe://example.org/agents/x"],
            "no trust bundle is configured for trust domain `example.org`",
        ),
    ] {
        let mut args = vec![
            "mission",
            "delegate",
            "--state",
            &parent_state,
            "--agent",
            "helper",
            "--goal",
            "fetch one report",
            "--scope",
            &scope,
            "--budget",
            "5",
        ];
        args.extend(require);
        refused(&server.cli(None, &args), why);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_refused_for_its_state_file_leaves_the_mission_to_start() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "reporter");
    // A state file from an earlier run, which `mandate launch` must not
    // overwrite (it may hold another mission's key).
    let taken = server.scratch().join("taken.json");
    std::fs::write(&taken, "an earlier mission's key").unwrap();
    let taken_arg = taken.display().to_string();
    let refusal = w.launch(&token, &w.script, &["--state", &taken_arg]);
    refused(&refusal, "already exists");
    assert_eq!(
        std::fs::read_to_string(&taken).unwrap(),
        "an earlier mission's key"
    );
    // As `mandate mission start` does, it refuses before starting: the
    // mission is not left running under a key nobody holds, and the same
    // token launches it with a free state path.
    still_ready(server, &w.alice, &id);
    let out = w.launch(&token, &w.script, &[]);
    assert_eq!(out.code(), Some(3), "{}\n{}", out.stdout(), out.stderr());
}

/// What `mandate launch` signed can be kept (`--evidence-out`: no secret in
/// it) and re-checked offline against the credential; a refused start is
/// in the audit log, once per mission and reason, without the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_keeps_its_statement_and_refused_starts_are_audited_once() {
    let w = LaunchWorld::new().await;
    let server = &w.server;
    let (id, token) = mission_for(server, &w.alice, "reporter");
    let (statement, state) = (w.path("statement.json"), w.path("kept.json"));
    let script = w.script.display().to_string();
    let out = server.cli(
        None,
        &[
            "launch",
            "--launcher",
            "ci",
            "--key",
            &w.path("ci.key"),
            "--token",
            &token,
            "--measure",
            &script,
            "--evidence-out",
            &statement,
            "--state",
            &state,
            "--keep",
            "--",
            "/bin/true",
        ],
    );
    out.success();
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&statement).unwrap()).unwrap();
    assert_eq!(kept["payloadType"], "application/vnd.in-toto+json");
    let credential = serde_json::from_str::<Value>(&std::fs::read_to_string(&state).unwrap())
        .unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let jwks = format!("{}/.well-known/jwks.json", server.url());
    let checked = server
        .cli(
            None,
            &[
                "credential",
                "verify",
                &credential,
                "--jwks",
                &jwks,
                "--evidence",
                &statement,
                "--launcher",
                &format!("ci={}", w.ci_pub.display()),
                "--json",
            ],
        )
        .json();
    assert_eq!(checked["evidence_rechecked"], true, "{checked}");
    assert!(
        checked["statement"]
            .as_str()
            .unwrap()
            .contains(&format!("code sha256:{}", w.digest)),
        "{checked}"
    );
    assert_eq!(show(server, &w.alice, &id)["state"], "active");

    // Another script for a mission of `reporter`: refused, twice.
    let (other_id, other_token) = mission_for(server, &w.alice, "reporter");
    let other = w.trust.path().join("other.sh");
    std::fs::write(&other, "#!/bin/sh\nexit 0\n").unwrap();
    for _ in 0..2 {
        let out = w.launch(&other_token, &other, &[]);
        assert!(!out.ok());
        assert!(
            out.stderr().contains("attestation_mismatch"),
            "{}",
            out.stderr()
        );
        assert!(
            out.stderr().contains("other.sh"),
            "the refusal names the code: {}",
            out.stderr()
        );
    }
    still_ready(server, &w.alice, &other_id);
    let records = server
        .cli(
            Some(&w.admin),
            &[
                "audit",
                "list",
                "--kind",
                "attestation.refused",
                "--mission",
                &other_id,
                "--json",
            ],
        )
        .json();
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let body = &records[0]["body"];
    assert_eq!(body["code"], "attestation_mismatch");
    assert_eq!(body["agent"], "reporter");
    assert_eq!(body["evidence"], "launch_statement");
    assert!(
        !records[0]
            .to_string()
            .contains(&kept["payload"].as_str().unwrap()[..40])
    );
}
