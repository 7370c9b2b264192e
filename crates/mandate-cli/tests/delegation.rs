//! End to end: delegation chains on a real server. A person delegates to
//! an orchestrator, which delegates to a researcher, which delegates to a
//! fetcher (person → A → B → C); every hop's policy decides C's calls, a
//! revocation of A ends B and C at once, budgets are carved exactly under
//! racing delegations, and the chain verifies offline — with the CLI and
//! with an independent JOSE library (PyJWT).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use mandate_client::{Client, ClientError, MissionAgent};
use mandate_core::wire::{
    CreateMissionRequest, DecideRequest, DecideResponse, DelegateRequest, RegisterAgentRequest,
};
use mandate_core::{Decision, ResourceRef};
use mandate_testkit::TestServer;
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

/// Organisation policy: one boundary about an agent by name, which must
/// hold for whatever that agent delegates to.
fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("interns.cedar"),
        "@id(\"interns-never-delete\")\n\
         forbid(principal == Agent::\"intern\", action == Action::\"delete\", resource);\n",
    )
    .unwrap();
    let config = format!("policies_dir = {:?}\n", dir.path().display().to_string());
    (TestServer::start(bin(), Some(&config)), dir)
}

const READ_WRITE: &str =
    "permit(principal, action in [Action::\"read\", Action::\"write\"], resource);";
const EVERYTHING: &str = "permit(principal, action, resource);";
const NO_PROD_WRITES: &str =
    "forbid(principal, action == Action::\"write\", resource) when { resource.hasTag(\"prod\") };";

struct People {
    alice: Client,
    gateway: Client,
    admin: Client,
    alice_token: String,
}

async fn people(server: &TestServer) -> People {
    let admin_token = server.init_admin();
    let admin = Client::new(server.url()).unwrap().with_token(&admin_token);
    let alice_token = admin
        .create_principal("alice", None)
        .await
        .unwrap()
        .token
        .token;
    let alice = Client::new(server.url()).unwrap().with_token(&alice_token);
    for a in ["orchestrator", "researcher", "fetcher", "intern", "helper"] {
        alice
            .register_agent(&RegisterAgentRequest {
                name: a.into(),
                owner: None,
                description: None,
                attestation: None,
            })
            .await
            .unwrap();
    }
    let bob = admin
        .create_principal("bob", None)
        .await
        .unwrap()
        .token
        .token;
    Client::new(server.url())
        .unwrap()
        .with_token(&bob)
        .register_agent(&RegisterAgentRequest {
            name: "bob-bot".into(),
            owner: None,
            description: None,
            attestation: None,
        })
        .await
        .unwrap();
    let gw = admin
        .create_principal("gateway", None)
        .await
        .unwrap()
        .token
        .token;
    People {
        alice,
        gateway: Client::new(server.url()).unwrap().with_token(&gw),
        admin,
        alice_token,
    }
}

/// Alice's own mission for `agent`, started.
async fn root(
    server: &TestServer,
    p: &People,
    agent: &str,
    scope: &str,
    boundaries: &str,
    out_of_scope: &str,
) -> MissionAgent {
    let created = p
        .alice
        .create_mission(&CreateMissionRequest {
            agent: agent.into(),
            goal: format!("the work of {agent}"),
            scope: scope.into(),
            boundaries: boundaries.into(),
            escalations: String::new(),
            ttl_seconds: Some(3_600),
            budget: Some(100),
            out_of_scope: Some(out_of_scope.into()),
        })
        .await
        .unwrap();
    MissionAgent::start(server.url(), &created.start_token)
        .await
        .unwrap()
}

fn delegation(agent: &str, scope: &str, budget: u64) -> DelegateRequest {
    DelegateRequest {
        agent: Some(agent.into()),
        ephemeral: None,
        goal: format!("part of the work, for {agent}"),
        scope: scope.into(),
        boundaries: String::new(),
        escalations: String::new(),
        // What is left of the parent's life (at most an hour): a fixed
        // TTL equal to the parent's would outlive it a second later.
        ttl_seconds: None,
        budget,
        out_of_scope: Some("deny".into()),
        attestation: None,
    }
}

async fn delegate(
    server: &TestServer,
    parent: &MissionAgent,
    req: &DelegateRequest,
) -> MissionAgent {
    let created = parent.delegate(req).await.unwrap();
    MissionAgent::start(server.url(), &created.start_token)
        .await
        .unwrap()
}

fn doc(tags: &[&str]) -> ResourceRef {
    serde_json::from_value(json!({
        "type": "Resource", "id": "doc-7",
        "tags": tags.iter().map(|t| ((*t).to_owned(), json!("yes"))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

async fn decide(
    gw: &Client,
    agent: &MissionAgent,
    action: &str,
    resource: ResourceRef,
) -> DecideResponse {
    gw.decide(&DecideRequest {
        credential: agent.credential().to_owned(),
        action: action.into(),
        resource,
        context: serde_json::Map::new(),
        justification: None,
        required_trust: None,
    })
    .await
    .unwrap()
}

fn write_state(server: &TestServer, name: &str, agent: &MissionAgent) -> PathBuf {
    let path = server.scratch().join(name);
    std::fs::write(&path, agent.save().unwrap().as_bytes()).unwrap();
    path
}

#[tokio::test]
async fn every_hop_decides_a_childs_call_and_a_revocation_ends_the_subtree() {
    let (server, _dir) = server();
    let p = people(&server).await;
    // A: reads and writes, never to prod, and does not negotiate the rest.
    let a = root(
        &server,
        &p,
        "orchestrator",
        READ_WRITE,
        NO_PROD_WRITES,
        "deny",
    )
    .await;
    // B and C ask for more than A holds.
    let b = delegate(&server, &a, &delegation("researcher", EVERYTHING, 30)).await;
    let c = delegate(&server, &b, &delegation("fetcher", EVERYTHING, 10)).await;
    let view = c.mission().await.unwrap();
    assert_eq!(
        (view.depth, view.parent.as_deref()),
        (3, Some(b.mission_id().as_str()))
    );

    // Within every hop's scope: allowed, counted on C only.
    let ok = decide(&p.gateway, &c, "read", doc(&[])).await;
    assert_eq!(ok.decision, Decision::Allow, "{ok:?}");
    assert_eq!(ok.budget_used, Some(1));
    // C's and B's scope allow `delete`, A's does not: denied, A named.
    let no = decide(&p.gateway, &c, "delete", doc(&[])).await;
    assert_eq!(
        (no.decision, no.code.as_str()),
        (Decision::Deny, "out_of_scope"),
        "{no:?}"
    );
    let hop = no.hop.as_ref().unwrap();
    assert_eq!(
        (hop.depth, hop.mission.as_str(), hop.agent.as_str()),
        (1, a.mission_id().as_str(), "orchestrator")
    );
    // A's boundary holds at every depth.
    for agent in [&a, &b, &c] {
        let r = decide(&p.gateway, agent, "write", doc(&["prod"])).await;
        assert_eq!(
            (r.decision, r.code.as_str()),
            (Decision::Deny, "boundary"),
            "{r:?}"
        );
    }

    // The audit log explains C's denial hop by hop.
    let audit = p
        .admin
        .audit(&format!("mission={}&kind=decision", c.mission_id()))
        .await
        .unwrap();
    let denial = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["body"]["action"] == "delete")
        .unwrap();
    assert_eq!(denial["body"]["hop"]["agent"], "orchestrator");
    assert_eq!(denial["body"]["chain"].as_array().unwrap().len(), 2);
    let story = p
        .admin
        .audit_explain(denial["seq"].as_u64().unwrap())
        .await
        .unwrap()["story"]
        .to_string();
    for want in [
        "agent `researcher` delegated to `fetcher`",
        "was itself delegated by agent `orchestrator` to `researcher`",
        "The chain starts at mission",
        "`alice` delegated to `orchestrator`",
        "decided by the policy of ancestor mission",
    ] {
        assert!(story.contains(want), "{want}: {story}");
    }

    // The tree, as alice sees it.
    let out = server.cli(
        Some(&p.alice_token),
        &["mission", "tree", a.mission_id().as_str()],
    );
    let text = out.success();
    assert!(
        text.contains("orchestrator") && text.contains("  ") && text.contains("fetcher"),
        "{text}"
    );

    // Revoking A ends B and C at once: their next request is refused.
    p.alice
        .revoke(
            "mission",
            a.mission_id().as_str(),
            Some("stop the whole task"),
        )
        .await
        .unwrap();
    for agent in [&b, &c] {
        let r = decide(&p.gateway, agent, "read", doc(&[])).await;
        assert_eq!(
            (r.decision, r.code.as_str()),
            (Decision::Deny, "revoked"),
            "{r:?}"
        );
        let err = agent.mission().await.unwrap_err();
        assert_eq!(err.code(), Some("revoked"));
    }
    let tree = p.alice.mission_tree(a.mission_id().as_str()).await.unwrap();
    assert_eq!(tree.len(), 3);
    assert!(
        tree.iter()
            .all(|m| m.state == mandate_core::MissionState::Ended),
        "{tree:?}"
    );
}

#[tokio::test]
async fn an_agents_organisation_policy_follows_it_down_the_chain() {
    let (server, _dir) = server();
    let p = people(&server).await;
    let intern = root(&server, &p, "intern", EVERYTHING, "", "escalate").await;
    let helper = delegate(&server, &intern, &delegation("helper", EVERYTHING, 5)).await;
    let r = decide(&p.gateway, &helper, "delete", doc(&[])).await;
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Deny, "boundary"),
        "{r:?}"
    );
    assert_eq!(
        r.policies,
        vec!["interns.cedar/interns-never-delete".to_owned()]
    );
    assert_eq!(r.hop.unwrap().agent, "intern");
}

#[tokio::test]
async fn delegations_that_widen_or_are_not_proved_are_refused_and_store_nothing() {
    let (server, _dir) = server();
    let p = people(&server).await;
    let a = root(&server, &p, "orchestrator", EVERYTHING, "", "escalate").await;
    let code = |e: ClientError| e.code().map(str::to_owned);
    // Outlives the parent.
    let mut r = delegation("researcher", "", 5);
    r.ttl_seconds = Some(3_700);
    assert_eq!(
        code(a.delegate(&r).await.unwrap_err()).as_deref(),
        Some("delegation_widens")
    );
    // More budget than the parent has left (100).
    let r = delegation("researcher", "", 101);
    assert_eq!(
        code(a.delegate(&r).await.unwrap_err()).as_deref(),
        Some("delegation_widens")
    );
    // An agent of another principal.
    let r = delegation("bob-bot", "", 5);
    assert_eq!(
        code(a.delegate(&r).await.unwrap_err()).as_deref(),
        Some("forbidden")
    );
    // The agent that is already in the chain.
    let r = delegation("orchestrator", "", 5);
    assert_eq!(
        code(a.delegate(&r).await.unwrap_err()).as_deref(),
        Some("delegation_cycle")
    );
    // Too deep: A (1) → B (2) → C (3) → D (4) is the limit.
    let b = delegate(&server, &a, &delegation("researcher", "", 20)).await;
    let c = delegate(&server, &b, &delegation("fetcher", "", 10)).await;
    let mut eph = delegation("x", "", 2);
    eph.agent = None;
    eph.ephemeral = Some("summarizer".into());
    let d = delegate(&server, &c, &eph).await;
    assert!(
        d.mission()
            .await
            .unwrap()
            .agent
            .starts_with("summarizer@msn_")
    );
    assert_eq!(
        code(d.delegate(&eph).await.unwrap_err()).as_deref(),
        Some("delegation_too_deep")
    );

    // A commit whose link is signed by another key, or whose body was
    // changed after the proposal.
    let base = server.url().to_owned();
    let http = reqwest::Client::new();
    let raw = |agent: &MissionAgent, path: &str, body: Value| {
        let htu = format!("{base}{path}");
        let proof = agent
            .key()
            .proof(
                "POST",
                &htu,
                Some(agent.credential()),
                mandate_core::Clock::now(&mandate_core::SystemClock),
                &mandate_core::OsRandom,
            )
            .unwrap();
        http.post(htu)
            .header("authorization", format!("DPoP {}", agent.credential()))
            .header("dpop", proof)
            .json(&body)
    };
    let proposal: Value = raw(
        &a,
        "/v1/mission/delegations/proposal",
        serde_json::to_value(delegation("researcher", "", 3)).unwrap(),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let claims: mandate_core::LinkClaims =
        serde_json::from_value(proposal["link"].clone()).unwrap();
    let mallory = mandate_core::MissionKey::generate(&mandate_core::OsRandom).unwrap();
    let forged = mallory
        .sign_link(
            claims.clone(),
            mandate_core::Clock::now(&mandate_core::SystemClock),
            &mandate_core::OsRandom,
        )
        .unwrap();
    let resp = raw(
        &a,
        "/v1/mission/delegations",
        json!({"mission": proposal["mission"], "link": forged, "proposal": proposal["proposal"]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "bad_link");
    let good = a
        .key()
        .sign_link(
            claims.clone(),
            mandate_core::Clock::now(&mandate_core::SystemClock),
            &mandate_core::OsRandom,
        )
        .unwrap();
    // A body changed after the proposal, or one the authority never
    // proposed (its own id and time, signed by the parent itself): the
    // proposal token binds the body the authority made.
    let mut changed = proposal["mission"].clone();
    changed["budget"]["requests"] = json!(50);
    let mut vanity = proposal["mission"].clone();
    vanity["id"] = json!("msn_00000000000000000000000000000bad");
    vanity["created_at"] = json!(vanity["created_at"].as_u64().unwrap() - 200);
    vanity["expires_at"] = json!(vanity["expires_at"].as_u64().unwrap() - 200);
    let mut foreign = proposal["mission"].clone();
    foreign["iss"] = json!("https://elsewhere.example");
    for body in [changed, vanity, foreign] {
        let m: mandate_core::MissionBody = serde_json::from_value(body.clone()).unwrap();
        let s256 = mandate_core::mission_s256(&m).unwrap();
        let mut claims = claims.clone();
        claims.child.mission_id = m.id.clone();
        claims.child.mission_s256 = s256;
        claims.exp = m.expires_at;
        let link = a
            .key()
            .sign_link(
                claims,
                mandate_core::Clock::now(&mandate_core::SystemClock),
                &mandate_core::OsRandom,
            )
            .unwrap();
        let resp = raw(
            &a,
            "/v1/mission/delegations",
            json!({"mission": body, "link": link, "proposal": proposal["proposal"]}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "bad_proposal");
    }
    // Without the authority's proposal token: refused.
    let resp = raw(
        &a,
        "/v1/mission/delegations",
        json!({"mission": proposal["mission"], "link": good}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    // Nothing of those was stored, and no budget went: A carved 20 for B only.
    let tree = p.alice.mission_tree(a.mission_id().as_str()).await.unwrap();
    assert_eq!(tree.len(), 4, "A, B, C, D");
    // The proposal itself, committed as made, goes through, once.
    let commit =
        json!({"mission": proposal["mission"], "link": good, "proposal": proposal["proposal"]});
    let resp = raw(&a, "/v1/mission/delegations", commit.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = raw(&a, "/v1/mission/delegations", commit)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "a replayed commit");

    // An ended mission delegates nothing.
    b.end(None).await.unwrap();
    let err = b.delegate(&delegation("helper", "", 1)).await.unwrap_err();
    assert_eq!(err.code(), Some("mission_ended"));
    assert_eq!(c.mission().await.unwrap_err().code(), Some("mission_ended"));
}

#[tokio::test]
async fn the_cap_on_waiting_approvals_holds_for_the_whole_tree() {
    let (server, _dir) = server();
    let p = people(&server).await;
    // Reads only: every write asks alice.
    let a = root(
        &server,
        &p,
        "orchestrator",
        "permit(principal, action == Action::\"read\", resource);",
        "",
        "escalate",
    )
    .await;
    let mut eph = delegation("x", "", 1);
    eph.agent = None;
    eph.ephemeral = Some("worker".into());
    eph.out_of_scope = Some("escalate".into());
    let child = delegate(&server, &a, &eph).await;
    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..60 {
        for agent in [&a, &child] {
            let r = decide(
                &p.gateway,
                agent,
                "write",
                serde_json::from_value(json!({"type": "Resource", "id": format!("doc-{i}")}))
                    .unwrap(),
            )
            .await;
            *codes.entry(r.code).or_default() += 1;
        }
    }
    // 100 wait for alice from the whole tree; the rest are refused.
    assert_eq!(codes.get("out_of_scope"), Some(&100), "{codes:?}");
    assert_eq!(codes.get("approval_queue_full"), Some(&20), "{codes:?}");
}

#[tokio::test]
async fn racing_children_get_exactly_what_the_parent_had_left() {
    let (server, _dir) = server();
    let p = people(&server).await;
    let a = root(&server, &p, "orchestrator", EVERYTHING, "", "escalate").await;
    // 100 left; 12 children asking 9 each at once: 11 fit.
    let tries = (0..12).map(|i| {
        let mut r = delegation("x", "", 9);
        r.agent = None;
        r.ephemeral = Some(format!("worker-{i}"));
        let a = &a;
        async move { a.delegate(&r).await }
    });
    let results = futures_util::future::join_all(tries).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let widened = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == Some("delegation_widens")))
        .count();
    assert_eq!((ok, widened), (11, 1), "{results:?}");
    let tree = p.alice.mission_tree(a.mission_id().as_str()).await.unwrap();
    assert_eq!(tree.len(), 12);
    // The parent has 1 request left of its own.
    let gw = &p.gateway;
    assert_eq!(
        decide(gw, &a, "read", doc(&[])).await.decision,
        Decision::Allow
    );
    let r = decide(gw, &a, "read", doc(&[])).await;
    assert_eq!(r.code, "budget_exhausted", "{r:?}");
}

#[tokio::test]
async fn the_chain_verifies_offline_with_the_cli_and_with_pyjwt() {
    let python = std::env::var("MANDATE_TEST_PYTHON").expect(
        "MANDATE_TEST_PYTHON must name a Python with PyJWT[crypto]; run the tests with scripts/test.sh",
    );
    let (server, _dir) = server();
    let p = people(&server).await;
    let a = root(&server, &p, "orchestrator", EVERYTHING, "", "escalate").await;
    let b = delegate(&server, &a, &delegation("researcher", EVERYTHING, 30)).await;
    // C is delegated and started with the CLI, as an agent's launcher would.
    let b_state = write_state(&server, "b.json", &b);
    let out = server.cli(
        None,
        &[
            "--json",
            "mission",
            "delegate",
            "--state",
            b_state.to_str().unwrap(),
            "--agent",
            "fetcher",
            "--goal",
            "fetch the sources",
            "--budget",
            "5",
            "--ttl",
            "10m",
        ],
    );
    let created = out.json();
    let token = created["start_token"].as_str().unwrap();
    let c_state = server.scratch().join("c.json");
    server
        .cli(
            None,
            &[
                "mission",
                "start",
                token,
                "--state",
                c_state.to_str().unwrap(),
            ],
        )
        .success();
    let chain_out = server.cli(
        None,
        &["mission", "chain", "--state", c_state.to_str().unwrap()],
    );
    let bundle: Value = chain_out.json();
    assert_eq!(bundle["links"].as_array().unwrap().len(), 2);
    let chain_file = server.scratch().join("chain.json");
    std::fs::write(&chain_file, chain_out.stdout()).unwrap();
    let jwks = format!("{}/.well-known/jwks.json", server.url());
    let ok = server.cli(
        None,
        &[
            "credential",
            "verify",
            "--chain",
            chain_file.to_str().unwrap(),
            "--jwks",
            &jwks,
        ],
    );
    let text = ok.success();
    assert!(text.contains("3 hops"), "{text}");
    assert!(
        text.contains("`researcher`") && text.contains("delegated by `orchestrator`"),
        "{text}"
    );
    // Reordered links: refused, non-zero exit, a stable code.
    let mut swapped = bundle.clone();
    swapped["links"].as_array_mut().unwrap().reverse();
    let bad_file = server.scratch().join("swapped.json");
    std::fs::write(&bad_file, swapped.to_string()).unwrap();
    let bad = server.cli(
        None,
        &[
            "credential",
            "verify",
            "--chain",
            bad_file.to_str().unwrap(),
            "--jwks",
            &jwks,
        ],
    );
    assert!(!bad.ok());
    assert!(bad.stderr().contains("bad_chain"), "{}", bad.stderr());

    // An independent JOSE library: the credential by the authority's JWKS,
    // each link by the key in its header, whose RFC 7638 thumbprint must be
    // the one the credential's chain binds for that hop.
    let script = r#"
import base64, hashlib, json, sys, urllib.request, jwt
from jwt.algorithms import OKPAlgorithm
issuer, bundle = sys.argv[1], json.loads(sys.argv[2])
jwks = json.load(urllib.request.urlopen(issuer + "/.well-known/jwks.json"))
cred = bundle["credential"]
kid = jwt.get_unverified_header(cred)["kid"]
key = jwt.PyJWK([k for k in jwks["keys"] if k["kid"] == kid][0])
claims = jwt.decode(cred, key, algorithms=["EdDSA"], options={"verify_aud": False}, issuer=issuer)
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def thumbprint(jwk):
    return b64(hashlib.sha256(json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"), sort_keys=True).encode()).digest())
hops = claims["chain"] + [{"mission_id": claims["mission_id"], "mission_s256": claims["mission_s256"], "agent": claims["act"]["sub"]}]
out = []
for i, link in enumerate(bundle["links"]):
    assert b64(hashlib.sha256(link.encode()).digest()) == claims["links"][i], "digest"
    header = jwt.get_unverified_header(link)
    assert header["typ"] == "mandate-link+jwt", header
    assert thumbprint(header["jwk"]) == claims["chain"][i]["jkt"], "signer"
    lc = jwt.decode(link, OKPAlgorithm.from_jwk(json.dumps(header["jwk"])), algorithms=["EdDSA"])
    assert lc["parent"]["mission_id"] == hops[i]["mission_id"], "parent"
    assert lc["child"]["mission_id"] == hops[i + 1]["mission_id"], "child"
    assert lc["child"]["mission_s256"] == hops[i + 1]["mission_s256"], "child hash"
    assert lc["depth"] == i + 2, "depth"
    out.append(lc["child"]["agent"])
print(json.dumps({"act": claims["act"], "children": out}))
"#;
    let run = |bundle: &Value| {
        std::process::Command::new(&python)
            .args(["-c", script, server.url(), &bundle.to_string()])
            .output()
            .unwrap()
    };
    let out = run(&bundle);
    assert!(
        out.status.success(),
        "PyJWT refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["act"],
        json!({"sub": "fetcher", "act": {"sub": "researcher", "act": {"sub": "orchestrator"}}})
    );
    assert_eq!(seen["children"], json!(["researcher", "fetcher"]));
    // And refuses a link re-signed by another key.
    let mut resigned = bundle.clone();
    let (claims, _) = mandate_core::verify_link(bundle["links"][1].as_str().unwrap()).unwrap();
    let mallory = mandate_core::MissionKey::generate(&mandate_core::OsRandom).unwrap();
    resigned["links"][1] = json!(
        mallory
            .sign_link(
                claims,
                mandate_core::Clock::now(&mandate_core::SystemClock),
                &mandate_core::OsRandom
            )
            .unwrap()
    );
    let out = run(&resigned);
    assert!(!out.status.success(), "PyJWT accepted a re-signed link");
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest"));
}
