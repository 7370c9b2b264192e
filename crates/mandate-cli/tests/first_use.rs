//! What a new user meets first, through the real binary: help and usage
//! errors, `mandate demo --json`, `policy validate` on one file, readable
//! times, a scope typo's error, and an AAuth verifier (`aauth-signing`,
//! from PyPI) checking a request Mandate's client signed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::{Command, Output};

use mandate_testkit::TestServer;
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

/// The binary with `args`, the environment a walkthrough user has (a
/// server and a token set), and no server needed.
fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("MANDATE_SERVER", "http://127.0.0.1:9")
        .env("MANDATE_TOKEN", "mdt_not-a-real-token")
        .env("MANDATE_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A standalone Unix time (ten digits), as a person would not read it.
fn raw_unix_time(s: &str) -> Option<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .find(|w| w.len() == 10 && w.starts_with('1') && w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
}

#[test]
fn global_options_are_listed_apart_and_never_as_a_commands_arguments() {
    // `serve` takes none of them: its help does not offer them.
    let serve = run(&["serve", "--help"]);
    assert!(serve.status.success());
    let help = text(&serve.stdout);
    for flag in ["--server", "--token", "--json"] {
        assert!(!help.contains(flag), "`serve --help` shows {flag}:\n{help}");
    }
    assert!(help.contains("--listen"), "{help}");

    // Elsewhere they come once, under their own heading, after the
    // command's own options.
    let show = text(&run(&["mission", "show", "--help"]).stdout);
    let (own, global) = show.split_once("Global options:").unwrap();
    assert!(!own.contains("--server"), "{show}");
    assert!(global.contains("--server <URL>") && global.contains("--token <TOKEN>"));
    assert!(global.contains("[env: MANDATE_SERVER]"), "{show}");

    // A missing argument's usage line names the command's arguments only,
    // even with MANDATE_SERVER and MANDATE_TOKEN set.
    for (args, missing) in [
        (&["mission", "show"][..], "<ID>"),
        (&["mission", "create", "--goal", "g"][..], "--agent <AGENT>"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(err.contains(missing), "{err}");
        let usage = err.lines().find(|l| l.starts_with("Usage:")).unwrap();
        assert!(
            !usage.contains("--server") && !usage.contains("--token"),
            "{usage}"
        );
    }
}

#[test]
fn the_server_flag_wins_over_the_environment() {
    let server = TestServer::start(bin(), None);
    let admin = server.init_admin();
    // MANDATE_SERVER names the running server; the flag names nothing
    // listening, and is the one used.
    let out = server.cli(Some(&admin), &["whoami", "--server", "http://127.0.0.1:9"]);
    assert!(!out.ok());
    assert!(out.stderr().contains("127.0.0.1:9"), "{}", out.stderr());
    assert!(
        server
            .cli(Some(&admin), &["whoami"])
            .success()
            .contains("admin")
    );
}

#[test]
fn the_demo_prints_one_json_document_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(bin())
        .args(["demo", "--json", "--data"])
        .arg(&data)
        .env_remove("MANDATE_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Standard output is the document and nothing else.
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(&out.stdout)));
    assert!(doc["mission"]["id"].as_str().unwrap().starts_with("msn_"));
    assert!(
        doc["mission"]["expires_at"].is_u64(),
        "--json keeps numbers"
    );
    let steps = doc["steps"].as_array().unwrap();
    let decisions: Vec<Vec<(&str, u64)>> = steps
        .iter()
        .map(|s| {
            s["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["decision"].as_str().unwrap(),
                        c["status"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            vec![("allow", 200)],
            vec![("deny", 403)],
            vec![("escalate", 403), ("allow", 200)],
            vec![("allow", 200)],
            vec![("deny", 401)],
        ]
    );
    assert_eq!(steps[1]["calls"][0]["code"], "boundary");
    assert_eq!(steps[4]["calls"][0]["code"], "revoked");
    let approval = steps[2]["approval_id"].as_str().unwrap();
    assert!(approval.starts_with("apr_"), "{approval}");
    assert_eq!(steps[2]["approval_status"], "approved");
    assert!(steps[2]["grant"].as_str().unwrap().starts_with("grt_"));
    assert_eq!(doc["audit"]["verified"], true);
    let records = doc["audit"]["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["decision"] == "escalate"));
    assert!(records.iter().all(|r| r["time"].is_u64()));
    assert!(data.join("mandate.db").exists());
}

#[test]
fn the_demo_story_shows_no_raw_unix_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["demo", "--data"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let story = text(&out.stdout);
    assert!(story.contains("── 5. alice revokes the mission"), "{story}");
    assert_eq!(raw_unix_time(&story), None, "{story}");
}

#[test]
fn audit_explain_shows_times_people_read_and_json_keeps_numbers() {
    let server = TestServer::start(bin(), None);
    let admin = server.init_admin();
    server
        .cli(Some(&admin), &["agent", "register", "bot"])
        .success();
    server
        .cli(
            Some(&admin),
            &["mission", "create", "--agent", "bot", "--goal", "g"],
        )
        .success();
    let list = server
        .cli(
            Some(&admin),
            &["audit", "list", "--kind", "mission.created", "--json"],
        )
        .json();
    let seq = list["records"][0]["seq"].as_u64().unwrap().to_string();
    let story = server
        .cli(Some(&admin), &["audit", "explain", &seq])
        .success();
    assert!(story.contains("mission.created"), "{story}");
    assert_eq!(raw_unix_time(&story), None, "{story}");
    assert!(story.contains(r#""expires_at":"20"#), "{story}");
    let json = server
        .cli(Some(&admin), &["audit", "explain", &seq, "--json"])
        .json();
    assert!(json["record"]["body"]["expires_at"].is_u64(), "{json}");
}

#[test]
fn policy_validate_takes_one_file_with_its_directorys_schema_or_the_policy_directorys() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let policies = repo.join("examples/policies");
    let validate = |path: &Path| {
        Command::new(bin())
            .args(["policy", "validate"])
            .arg(path)
            .env("MANDATE_POLICIES", &policies)
            .output()
            .unwrap()
    };
    // A file beside its schema.
    let out = validate(&policies.join("refunds-escalate.cedar"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valid: "),
        "{}",
        text(&out.stdout)
    );

    // A mission's scope file, in a directory without a schema: checked
    // against the policy directory's (MANDATE_POLICIES), which declares
    // `refund`.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("scope.cedar");
    std::fs::copy(policies.join("missions/billing-scope.cedar"), &good).unwrap();
    let out = validate(&good);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let typo = dir.path().join("typo.cedar");
    std::fs::write(
        &typo,
        "permit(principal, action == Action::\"refnud\", resource);\n",
    )
    .unwrap();
    let out = validate(&typo);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:1:", typo.display())) && err.contains("refnud"),
        "{err}"
    );
    // Neither a directory nor a policy file.
    let out = validate(&policies.join("consultant.test.toml"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("neither a directory nor a `.cedar` policy file"));

    // No schema beside the file and no policy directory to take one from
    // (a repository root whose server runs `examples/mandate.toml`, so that
    // DATA/policies was never made): the error says which directory is
    // missing, once, and how to name the right one.
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["policy", "validate"])
        .arg(&good)
        .current_dir(data.path())
        .env_remove("MANDATE_POLICIES")
        .env_remove("MANDATE_DATA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the policy directory `./mandate-data/policies`")
            && err.contains("does not exist")
            && err.contains("MANDATE_POLICIES=DIR")
            && !err.contains("policies/./mandate-data"),
        "{err}"
    );
}

#[test]
fn a_scope_typo_names_the_file_and_the_scope_not_a_mission_that_does_not_exist() {
    let server = TestServer::start(bin(), None);
    let admin = server.init_admin();
    server
        .cli(Some(&admin), &["agent", "register", "bot"])
        .success();
    std::fs::write(
        server.scratch().join("scope.cedar"),
        "permit(principal, action == Action::\"raed\", resource);\n",
    )
    .unwrap();
    let out = server.cli(
        Some(&admin),
        &[
            "mission",
            "create",
            "--agent",
            "bot",
            "--goal",
            "g",
            "--scope",
            "scope.cedar",
        ],
    );
    assert!(!out.ok());
    let err = out.stderr();
    assert!(err.contains("scope.cedar:1:"), "{err}");
    assert!(err.contains("`scope/0`") && err.contains("raed"), "{err}");
    assert!(!err.contains("msn_"), "{err}");
    let missions = server
        .cli(Some(&admin), &["mission", "list", "--json"])
        .json();
    assert_eq!(missions.as_array().map(Vec::len), Some(0), "{missions}");
}

/// The AAuth verifier of `tests/aauth/verifier.py`, on a free port; killed
/// when dropped.
struct AauthVerifier {
    child: std::process::Child,
    url: String,
}

impl AauthVerifier {
    /// With `reencode`, the verifier hands aauth-signing the `Signature`
    /// header's bytes as unpadded base64url, the one form it parses.
    fn start(reencode: bool) -> Self {
        use std::io::BufRead as _;
        let python = std::env::var("MANDATE_TEST_PYTHON").expect(
            "MANDATE_TEST_PYTHON must name a Python with aauth-signing; run scripts/test.sh",
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aauth/verifier.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(reencode.then_some("--reencode-signature"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("listening ").unwrap().to_owned();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for AauthVerifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A started mission of alice's agent on `server`, its state in `m.json`.
fn started_mission(server: &TestServer) -> std::path::PathBuf {
    let admin = server.init_admin();
    let alice = server
        .cli(Some(&admin), &["principal", "add", "alice", "--json"])
        .json()["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .cli(Some(&alice), &["agent", "register", "billing-bot"])
        .success();
    let created = server
        .cli(
            Some(&alice),
            &[
                "mission",
                "create",
                "--agent",
                "billing-bot",
                "--goal",
                "g",
                "--json",
            ],
        )
        .json();
    let start = created["start_token"].as_str().unwrap();
    server
        .cli(None, &["mission", "start", start, "--state", "m.json"])
        .success();
    server.scratch().join("m.json")
}

/// An AAuth resource's verifier (aauth-signing 0.2.0, PyPI) accepts a
/// request Mandate's client signed, finding the authority's keys from the
/// credential's `iss` and `dwk`, and refuses it altered. Two things stand
/// in the way, neither of them Mandate's to change (ADR 0026): it requires
/// the RFC 9864 algorithm name, so the authority runs with `jws_alg =
/// "Ed25519"`; and it parses the `Signature` header's byte sequence only as
/// unpadded base64url, where RFC 9421 sends RFC 8941 base64, so the
/// verifier re-encodes that one header's bytes before handing them over.
#[tokio::test]
async fn an_aauth_verifier_accepts_a_request_mandates_client_signed() {
    let server = TestServer::start(bin(), Some("jws_alg = \"Ed25519\"\n"));
    let state = started_mission(&server);

    // As sent, the RFC 8941 byte sequence is not read at all.
    let strict = AauthVerifier::start(false);
    let url = format!("{}/orders/7", strict.url);
    let out = server.cli(
        None,
        &[
            "mission",
            "call",
            "--state",
            "m.json",
            "GET",
            &url,
            "--to",
            &strict.url,
            "--json",
        ],
    );
    let got: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(got["status"], 401, "{got}");
    let error = got["body"]["error"].as_str().unwrap();
    assert!(error.contains("Invalid Signature format: sig=:"), "{error}");

    let verifier = AauthVerifier::start(true);
    let config: Value = reqwest::get(format!(
        "{}/.well-known/mandate-configuration",
        server.url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        config["credential_signing_alg_values_supported"][0],
        "Ed25519"
    );

    // Through the CLI: a GET with a query, and a POST with a body.
    let url = format!("{}/orders/7?expand=lines", verifier.url);
    let got = server
        .cli(
            None,
            &[
                "mission",
                "call",
                "--state",
                "m.json",
                "GET",
                &url,
                "--to",
                &verifier.url,
                "--json",
            ],
        )
        .json();
    assert_eq!(got["status"], 200, "{got}");
    let body = &got["body"];
    assert_eq!(body["verified"], true, "{body}");
    assert_eq!(body["claims"]["iss"], server.url());
    assert_eq!(body["claims"]["dwk"], "mandate-configuration");
    assert_eq!(body["claims"]["act"]["sub"], "billing-bot");
    assert_eq!(
        body["fetched"],
        serde_json::json!([
            format!("{}/.well-known/mandate-configuration", server.url()),
            format!("{}/.well-known/jwks.json", server.url()),
        ])
    );
    std::fs::write(server.scratch().join("refund.json"), r#"{"amount": 75000}"#).unwrap();
    let posted = server
        .cli(
            None,
            &[
                "mission",
                "call",
                "--state",
                "m.json",
                "POST",
                &format!("{}/refunds/7", verifier.url),
                "--data",
                "refund.json",
                "--to",
                &verifier.url,
                "--justification",
                "double billing",
                "--json",
            ],
        )
        .json();
    assert_eq!(posted["body"]["verified"], true, "{posted}");

    // Through the client crate, then altered on the way: another path, or
    // another body under the signed digest. Both refused.
    let saved: mandate_client::SavedMission =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let mut agent = mandate_client::MissionAgent::load(&saved).await.unwrap();
    let http = reqwest::Client::new();
    let signed = |path: &str, body: Option<&str>| {
        let url = format!("{}{path}", verifier.url);
        let body = body.map(|b| ("application/json", b.as_bytes().to_vec()));
        (url, body)
    };
    let (u, b) = signed("/orders/7", None);
    let ok = agent
        .signed_request("GET", &u, b, None, &[])
        .await
        .unwrap()
        .build()
        .unwrap();
    let mut moved = ok.try_clone().unwrap();
    assert_eq!(http.execute(ok).await.unwrap().status(), 200);
    *moved.url_mut() = format!("{}/orders/8", verifier.url).parse().unwrap();
    let refused = http.execute(moved).await.unwrap();
    assert_eq!(refused.status(), 401);
    let (u, b) = signed("/refunds/7", Some(r#"{"amount": 75}"#));
    let mut swapped = agent
        .signed_request("POST", &u, b, None, &[])
        .await
        .unwrap()
        .build()
        .unwrap();
    *swapped.body_mut() = Some(r#"{"amount": 75000}"#.into());
    let refused = http.execute(swapped).await.unwrap();
    assert_eq!(refused.status(), 401);
    let why: Value = refused.json().await.unwrap();
    assert_eq!(why["verified"], false, "{why}");

    // Mandate itself still verifies the credential it issued.
    server
        .cli(None, &["mission", "credential", "--state", "m.json"])
        .success();
    let cred = agent.credential().to_owned();
    let v = server
        .cli(None, &["credential", "verify", &cred, "--json"])
        .json();
    assert_eq!(v["valid"], true, "{v}");
    let live = server
        .cli(None, &["credential", "introspect", &cred])
        .success();
    assert_eq!(live.trim(), "active");
}

#[test]
fn under_the_default_algorithm_name_the_aauth_verifier_refuses_only_the_name() {
    let verifier = AauthVerifier::start(true);
    let server = TestServer::start(bin(), None);
    started_mission(&server);
    let got = server.cli(
        None,
        &[
            "mission",
            "call",
            "--state",
            "m.json",
            "GET",
            &format!("{}/orders/7", verifier.url),
            "--to",
            &verifier.url,
            "--json",
        ],
    );
    assert!(!got.ok());
    let got: Value = serde_json::from_str(&got.stdout()).unwrap();
    assert_eq!(got["status"], 401, "{got}");
    let error = got["body"]["error"].as_str().unwrap();
    assert!(error.contains("Unsupported JWT algorithm"), "{error}");
}

/// Another process has the address `serve` would listen on (another
/// server, the README's default port): the error says how to choose
/// another, and `serve` exits non-zero.
#[test]
fn a_taken_listen_address_says_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &addr.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .env("MANDATE_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("MANDATE_") && k != "MANDATE_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot listen on `{addr}`"))
            && err.contains("choose another address with `--listen`, `MANDATE_LISTEN` or `listen` in mandate.toml"),
        "{err}"
    );
    drop(taken);
}
