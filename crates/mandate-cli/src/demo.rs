//! `mandate demo`: the consultant story, end to end, on loopback.
//!
//! Starts three demo upstreams (a billing API, an HR API and a legacy CRM
//! that only knows alice's password), an authority with a gateway in front
//! of them, and runs a scripted agent through one mission: an allowed read,
//! a boundary denial, a large refund escalated and approved by a person,
//! an impersonated CRM login, and a revocation mid-mission. Then it prints
//! the audit log's explanation of each step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use mandate_client::{Client, MissionAgent};
use mandate_core::VaultSecret;
use mandate_core::wire::{ApproveRequest, CreateMissionRequest, RegisterAgentRequest};
use serde_json::{Value, json};

use crate::demo_upstreams::CRM_USER;

/// Generated per run; only the vault and the CRM ever hold it.
fn crm_password() -> anyhow::Result<String> {
    let mut b = [0u8; 12];
    mandate_core::SecureRandom::fill(&mandate_core::OsRandom, &mut b)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("crm-{}", mandate_core::s256(&b)))
}

const SCOPE: &str = r#"// The consultant's badge: billing and the CRM, read and refund.
@id("billing")
permit(principal, action in [Action::"read", Action::"refund"], resource is Route)
when { resource.route == "billing" };

@id("crm")
permit(principal, action == Action::"read", resource is Route)
when { resource.route == "crm" };
"#;

async fn serve_on(app: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// The three demo upstreams. Returns their base URLs.
async fn upstreams(password: String) -> anyhow::Result<(String, String, String)> {
    let b = serve_on(crate::demo_upstreams::billing()).await?;
    let h = serve_on(crate::demo_upstreams::hr()).await?;
    let c = serve_on(crate::demo_upstreams::crm(&password)).await?;
    Ok((
        format!("http://{b}"),
        format!("http://{h}"),
        format!("http://{c}"),
    ))
}

fn write_setup(data: &Path, billing: &str, hr: &str, crm: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let policies = data.join("policies");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&policies)?;
    for (name, text) in [
        (
            "actions.cedarschema",
            include_str!("../../../examples/policies/actions.cedarschema"),
        ),
        (
            "hr-off-limits.cedar",
            include_str!("../../../examples/policies/hr-off-limits.cedar"),
        ),
        (
            "refunds-escalate.cedar",
            include_str!("../../../examples/policies/refunds-escalate.cedar"),
        ),
    ] {
        std::fs::write(policies.join(name), text)?;
    }
    let config = format!(
        r#"# Written by `mandate demo`.
[[routes]]
name = "billing"
upstream = "{billing}"
auth = "token_exchange"

[[routes.rules]]
method = "GET"
path = "/invoices/{{id}}"
action = "read"

[[routes.rules]]
method = "POST"
path = "/refunds/{{id}}"
action = "refund"
context_from_body = ["amount"]

[[routes]]
name = "hr"
upstream = "{hr}"
labels = ["hr"]

[[routes.rules]]
method = "*"
path = "/{{*rest}}"
action = "read"

[[routes]]
name = "crm"
upstream = "{crm}"
auth = "vault"

[[routes.rules]]
method = "*"
path = "/{{*rest}}"
action = "read"
"#
    );
    std::fs::write(data.join("mandate.toml"), config)?;
    Ok(())
}

/// What the demo tells: as text while it runs, or with `--json` as one
/// JSON document at the end (the steps, each call's answer, the ids, the
/// audit log's explanations and its verification), nothing else on
/// standard output.
struct Narration {
    json: bool,
    /// The document `--json` prints: the run's facts, by name.
    doc: serde_json::Map<String, Value>,
    steps: Vec<Value>,
}

impl Narration {
    fn new(json: bool) -> Self {
        Self {
            json,
            doc: serde_json::Map::new(),
            steps: Vec::new(),
        }
    }

    /// A line of the text story (not part of the JSON document).
    fn say(&self, line: impl AsRef<str>) {
        if !self.json {
            println!("{}", line.as_ref());
        }
    }

    /// A fact of the run, for the JSON document.
    fn set(&mut self, key: &str, value: Value) {
        self.doc.insert(key.to_owned(), value);
    }

    fn step(&mut self, n: usize, title: &str) {
        self.say(format!("\n── {n}. {title}"));
        self.steps
            .push(json!({ "step": n, "title": title, "calls": [] }));
    }

    /// A fact of the current step, for the JSON document.
    fn note(&mut self, key: &str, value: Value) {
        if let Some(step) = self.steps.last_mut().and_then(Value::as_object_mut) {
            step.insert(key.to_owned(), value);
        }
    }

    /// The answer to a call the agent made: printed, or kept in the
    /// current step. Returns its body.
    async fn show(
        &mut self,
        method: &str,
        url: &str,
        resp: reqwest::Response,
    ) -> anyhow::Result<Value> {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        self.say(format!("   → {status}: {}", readable_times(&body)));
        if let Some(calls) = self
            .steps
            .last_mut()
            .and_then(|s| s.get_mut("calls"))
            .and_then(Value::as_array_mut)
        {
            // The gateway says what it decided; an answer without a
            // decision is an allow if it passed, else a refusal before any
            // policy (a revoked mission, say).
            let decision = body["decision"].as_str().unwrap_or(if status.is_success() {
                "allow"
            } else {
                "deny"
            });
            calls.push(json!({
                "method": method,
                "url": url,
                "status": status.as_u16(),
                "decision": decision,
                "code": body["code"],
                "body": body,
            }));
        }
        Ok(body)
    }

    /// Prints the JSON document (with `--json`).
    fn finish(mut self) -> anyhow::Result<()> {
        if self.json {
            self.doc.insert("steps".into(), Value::Array(self.steps));
            crate::output::json(&self.doc)?;
        }
        Ok(())
    }
}

/// `value` with the Unix times people read in the demo's answers
/// (`expires_at`, `exp`, …) as RFC 3339, for the text story; `--json`
/// keeps the numbers.
fn readable_times(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let is_time = k.ends_with("_at") || matches!(k.as_str(), "exp" | "iat");
                    let v = match v.as_u64() {
                        Some(t) if is_time => Value::String(crate::output::when(t)),
                        _ => readable_times(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(readable_times).collect()),
        other => other.clone(),
    }
}

/// Runs the demo in `dir` (a fresh directory; kept afterwards for
/// inspection); with `json`, prints one JSON document instead of the story.
pub async fn run(dir: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let data = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("mandate-demo-{}", std::process::id())),
    };
    if data.exists() {
        bail!(
            "`{}` exists; the demo starts from an empty directory",
            data.display()
        );
    }
    let mut out = Narration::new(json);
    let password = crm_password()?;
    let (billing, hr, crm) = upstreams(password.clone()).await?;
    write_setup(&data, &billing, &hr, &crm)?;
    out.say(format!("Mandate demo — data in {}", data.display()));
    out.say(format!(
        "upstreams on loopback: billing {billing}, hr {hr}, legacy CRM {crm}"
    ));
    out.set("data_dir", json!(data.display().to_string()));
    out.set(
        "upstreams",
        json!({ "billing": billing, "hr": hr, "crm": crm }),
    );

    // The authority, with its gateway.
    let admin_name: mandate_core::PrincipalName = "admin".parse()?;
    let (admin_token, _) = mandate_server::init_admin(&data, &admin_name, None).await?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut config = mandate_server::Config::load(&data, None, Some(listen))?;
    // With `--json`, standard output carries the document alone.
    config.quiet = json;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mandate_server::serve(config, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{listen}");
    out.set("authority", json!(base));
    let admin = Client::new(&base)?.with_token(admin_token.expose());
    for _ in 0..100 {
        if admin.health().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = story(&mut out, &base, &admin, &password).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result?;
    out.say(format!(
        "\nDone. Inspect the log: mandate audit verify --data {}",
        data.display()
    ));
    out.finish()
}

async fn story(
    out: &mut Narration,
    base: &str,
    admin: &Client,
    password: &str,
) -> anyhow::Result<()> {
    let gw = format!("{base}/gw");
    // People and the mission.
    let alice_token = admin.create_principal("alice", None).await?.token.token;
    let alice = Client::new(base)?.with_token(&alice_token);
    alice
        .register_agent(&RegisterAgentRequest {
            name: "consultant-bot".into(),
            owner: None,
            description: Some("reconciles invoices".into()),
            attestation: None,
        })
        .await?;
    let created = alice
        .create_mission(&CreateMissionRequest {
            agent: "consultant-bot".into(),
            goal: "Reconcile ACME's November invoices and refund the double billing".into(),
            scope: SCOPE.into(),
            boundaries: String::new(),
            escalations: String::new(),
            ttl_seconds: Some(900),
            budget: Some(50),
            out_of_scope: None,
        })
        .await?;
    out.say(format!(
        "\nalice delegated mission {} to consultant-bot: \"{}\"",
        created.mission.id, created.mission.goal
    ));
    let mut agent = MissionAgent::start(base, &created.start_token).await?;
    out.say(format!(
        "the agent made a fresh mission key ({}) and holds a 10-minute credential",
        agent.key().thumbprint()
    ));
    let mission_id = agent.mission_id().to_string();
    out.set(
        "mission",
        json!({
            "id": mission_id,
            "principal": created.mission.principal,
            "agent": created.mission.agent,
            "goal": created.mission.goal,
            "mission_s256": created.mission.mission_s256,
            "expires_at": created.mission.expires_at,
            "jkt": agent.key().thumbprint().as_str(),
            "credential_expires_at": agent.credential_expires_at(),
        }),
    );

    out.step(1, "an allowed read: the invoice");
    let url = format!("{gw}/billing/invoices/INV-42");
    let resp = agent.send_signed("GET", &url, None, None).await?;
    out.show("GET", &url, resp).await?;

    out.step(
        2,
        "a boundary: HR records are off limits, whatever the mission says",
    );
    let url = format!("{gw}/hr/people/7");
    let resp = agent.send_signed("GET", &url, None, None).await?;
    out.show("GET", &url, resp).await?;

    out.step(3, "a refund of 75,000 needs a person's approval");
    let url = format!("{gw}/billing/refunds/INV-42");
    let body = br#"{"amount": 75000}"#.to_vec();
    let why = "ACME was billed twice for November";
    let resp = agent
        .send_signed(
            "POST",
            &url,
            Some(("application/json", body.clone())),
            Some(why),
        )
        .await?;
    let first = out.show("POST", &url, resp).await?;
    let approval = first["approval_id"]
        .as_str()
        .context("the refund did not escalate")?
        .to_owned();
    out.note("approval_id", json!(approval));
    out.note("approved_by", json!("alice"));
    out.say("   alice sees it (`mandate approvals list`) and approves it once:");
    out.say(format!(
        "   $ mandate approvals approve {approval} --reason \"confirmed with ACME\""
    ));
    let alice_c = alice.clone();
    let a = approval.clone();
    let approver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice_c
            .approve(
                &a,
                &ApproveRequest {
                    reason: Some("confirmed with ACME".into()),
                    ..ApproveRequest::default()
                },
            )
            .await
    });
    out.say(
        "   the agent sends it with `send_with_approval`: its first try joins the pending\n   request (no second request for alice), it waits, and sends it again once approved:",
    );
    let resp = agent
        .send_with_approval(
            Duration::from_secs(30),
            "POST",
            &url,
            Some(("application/json", body)),
            Some(why),
        )
        .await?;
    let grant = approver.await??;
    out.note("grant", json!(grant.grant));
    out.note("approval_status", json!(grant.status));
    out.show("POST", &url, resp).await?;

    out.step(
        4,
        "governed impersonation: the legacy CRM only knows alice's password",
    );
    admin
        .vault_put(
            "crm",
            "alice",
            &VaultSecret::Basic {
                username: CRM_USER.into(),
                password: password.to_owned(),
            },
        )
        .await?;
    out.say("   an admin vaulted it: $ mandate vault put crm alice --basic alice < password");
    let url = format!("{gw}/crm/accounts/ACME");
    let resp = agent.send_signed("GET", &url, None, None).await?;
    let crm = out.show("GET", &url, resp).await?;
    if crm.to_string().contains(password) {
        bail!("the CRM password reached the agent");
    }
    out.say("   (the agent never saw the password; the gateway injected it after the Allow)");

    out.step(5, "alice revokes the mission, mid-task");
    alice
        .revoke("mission", &mission_id, Some("demo: task reassigned"))
        .await?;
    out.say(format!("   $ mandate revoke mission {mission_id}"));
    let url = format!("{gw}/billing/invoices/INV-43");
    let resp = agent.send_signed("GET", &url, None, None).await?;
    out.show("GET", &url, resp).await?;

    // The audit log, step by step.
    out.say("\n── The audit log explains every step");
    let page = admin
        .audit(&format!("mission={mission_id}&limit=200"))
        .await?;
    let mut first = true;
    let mut explained = Vec::new();
    for r in page["records"].as_array().into_iter().flatten() {
        let kind = r["kind"].as_str().unwrap_or("");
        if !matches!(kind, "decision" | "vault.used") {
            continue;
        }
        let seq = r["seq"].as_u64().unwrap_or(0);
        let e = admin.audit_explain(seq).await?;
        out.say("");
        for line in e["story"].as_array().into_iter().flatten() {
            let line = line.as_str().unwrap_or("");
            // Who delegated, which mission and key: said once.
            let provenance = line.starts_with("The agent acted for")
                || line.starts_with("The mission body hash")
                || line.starts_with("It presented credential");
            if first || !provenance {
                out.say(format!("   {line}"));
            }
        }
        first = false;
        explained.push(json!({
            "seq": seq,
            "kind": kind,
            "time": r["time"],
            "decision": r["body"]["decision"],
            "code": r["body"]["code"],
            "story": e["story"],
        }));
    }
    let v = admin.audit_verify().await?;
    let intact = v["ok"] == true;
    out.say(format!(
        "\naudit chain: {}",
        if intact { "intact" } else { "BROKEN" }
    ));
    out.set(
        "audit",
        json!({ "records": explained, "verified": intact, "first": v["first"], "last": v["last"] }),
    );
    Ok(())
}
