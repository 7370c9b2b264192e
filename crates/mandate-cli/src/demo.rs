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

fn step(n: usize, title: &str) {
    println!("\n── {n}. {title}");
}

async fn show(resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    println!("   → {status}: {body}");
    Ok(body)
}

/// Runs the demo in `dir` (a fresh directory; kept afterwards for
/// inspection).
pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
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
    let password = crm_password()?;
    let (billing, hr, crm) = upstreams(password.clone()).await?;
    write_setup(&data, &billing, &hr, &crm)?;
    println!("Mandate demo — data in {}", data.display());
    println!("upstreams on loopback: billing {billing}, hr {hr}, legacy CRM {crm}");

    // The authority, with its gateway.
    let admin_name: mandate_core::PrincipalName = "admin".parse()?;
    let (admin_token, _) = mandate_server::init_admin(&data, &admin_name, None).await?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config = mandate_server::Config::load(&data, None, Some(listen))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mandate_server::serve(config, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{listen}");
    let admin = Client::new(&base)?.with_token(admin_token.expose());
    for _ in 0..100 {
        if admin.health().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = story(&base, &admin, &password).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result?;
    println!(
        "\nDone. Inspect the log: mandate audit verify --data {}",
        data.display()
    );
    Ok(())
}

async fn story(base: &str, admin: &Client, password: &str) -> anyhow::Result<()> {
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
    println!(
        "\nalice delegated mission {} to consultant-bot: \"{}\"",
        created.mission.id, created.mission.goal
    );
    let mut agent = MissionAgent::start(base, &created.start_token).await?;
    println!(
        "the agent made a fresh mission key ({}) and holds a 10-minute credential",
        agent.key().thumbprint()
    );
    let mission_id = agent.mission_id().to_string();

    step(1, "an allowed read: the invoice");
    show(
        agent
            .send_signed("GET", &format!("{gw}/billing/invoices/INV-42"), None, None)
            .await?,
    )
    .await?;

    step(
        2,
        "a boundary: HR records are off limits, whatever the mission says",
    );
    show(
        agent
            .send_signed("GET", &format!("{gw}/hr/people/7"), None, None)
            .await?,
    )
    .await?;

    step(3, "a refund of 75,000 needs a person's approval");
    let url = format!("{gw}/billing/refunds/INV-42");
    let body = br#"{"amount": 75000}"#.to_vec();
    let why = "ACME was billed twice for November";
    let first = show(
        agent
            .send_signed(
                "POST",
                &url,
                Some(("application/json", body.clone())),
                Some(why),
            )
            .await?,
    )
    .await?;
    let approval = first["approval_id"]
        .as_str()
        .context("the refund did not escalate")?
        .to_owned();
    println!("   alice sees it (`mandate approvals list`) and approves it once:");
    println!("   $ mandate approvals approve {approval} --reason \"confirmed with ACME\"");
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
    println!(
        "   the agent sends it with `send_with_approval`: its first try joins the pending\n   request (no second request for alice), it waits, and sends it again once approved:"
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
    approver.await??;
    show(resp).await?;

    step(
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
    println!("   an admin vaulted it: $ mandate vault put crm alice --basic alice < password");
    let crm = show(
        agent
            .send_signed("GET", &format!("{gw}/crm/accounts/ACME"), None, None)
            .await?,
    )
    .await?;
    if crm.to_string().contains(password) {
        bail!("the CRM password reached the agent");
    }
    println!("   (the agent never saw the password; the gateway injected it after the Allow)");

    step(5, "alice revokes the mission, mid-task");
    alice
        .revoke("mission", &mission_id, Some("demo: task reassigned"))
        .await?;
    println!("   $ mandate revoke mission {mission_id}");
    show(
        agent
            .send_signed("GET", &format!("{gw}/billing/invoices/INV-43"), None, None)
            .await?,
    )
    .await?;

    // The audit log, step by step.
    println!("\n── The audit log explains every step");
    let page = admin
        .audit(&format!("mission={mission_id}&limit=200"))
        .await?;
    let mut first = true;
    for r in page["records"].as_array().into_iter().flatten() {
        let kind = r["kind"].as_str().unwrap_or("");
        if !matches!(kind, "decision" | "vault.used") {
            continue;
        }
        let seq = r["seq"].as_u64().unwrap_or(0);
        let e = admin.audit_explain(seq).await?;
        println!();
        for line in e["story"].as_array().into_iter().flatten() {
            let line = line.as_str().unwrap_or("");
            // Who delegated, which mission and key: said once.
            let provenance = line.starts_with("The agent acted for")
                || line.starts_with("The mission body hash")
                || line.starts_with("It presented credential");
            if first || !provenance {
                println!("   {line}");
            }
        }
        first = false;
    }
    let v = admin.audit_verify().await?;
    println!(
        "\naudit chain: {}",
        if v["ok"] == true { "intact" } else { "BROKEN" }
    );
    Ok(())
}
