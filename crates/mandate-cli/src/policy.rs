//! `mandate policy …` and `mandate decide`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use mandate_client::Client;
use mandate_core::wire::{ConfigReloadView, DecideRequest, ReloadChanges};
use mandate_core::{
    Decision, DecisionRequest, GrantSet, Mission, MissionBody, MissionId, MissionLimits,
    MissionPolicies, MissionPolicySet, MissionSpec, MissionStatus, OsRandom, OutOfScope,
    ResourceRef, Thumbprint, Trust, UnixTime, decide as engine_decide, mission_s256,
};
use serde::Deserialize;

use crate::args::{DecideArgs, PolicyCmd};
use crate::output;

pub async fn run(
    cmd: PolicyCmd,
    client: impl Fn() -> anyhow::Result<Client>,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Validate { path, data } => {
            let policy_dir = default_dir(&data.data);
            match path {
                Some(file) if !file.is_dir() => validate_file(&file, &policy_dir, json),
                Some(dir) => validate(&dir, json),
                None => validate(&policy_dir, json),
            }
        }
        PolicyCmd::Test { file } => test(&file, json),
        PolicyCmd::Reload => {
            let v = client()?.reload_policies().await?;
            if json {
                output::json(&v)?;
            } else {
                println!(
                    "reloaded policies from {} (version {}): {} policies",
                    v.dir,
                    v.version,
                    v.policies.len()
                );
                if let Some(c) = &v.config {
                    print_config_reload(c);
                }
                warn(&v.warnings);
            }
            Ok(())
        }
        PolicyCmd::List => {
            let v = client()?.policies().await?;
            if json {
                output::json(&v)?;
            } else {
                println!("policies from {} (version {})", v.dir, v.version);
                for (id, kind) in &v.policies {
                    println!("  {kind:<9} {id}");
                }
                warn(&v.warnings);
            }
            Ok(())
        }
    }
}

/// What a reload made of `mandate.toml`, in a few lines.
fn print_config_reload(c: &ConfigReloadView) {
    let Some(file) = &c.file else {
        println!("no mandate.toml: no routes, no MCP servers");
        return;
    };
    let changes = |what: &str, ch: &ReloadChanges| {
        let parts: Vec<String> = [
            ("added", &ch.added),
            ("changed", &ch.changed),
            ("removed", &ch.removed),
        ]
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(how, names)| format!("{how} {}", names.join(", ")))
        .collect();
        (!parts.is_empty()).then(|| format!("{what} {}", parts.join("; ")))
    };
    let said: Vec<String> = [
        changes("routes", &c.routes),
        changes("MCP servers", &c.mcp_servers),
    ]
    .into_iter()
    .flatten()
    .collect();
    if said.is_empty() {
        println!("reloaded {file}: routes and MCP servers unchanged");
    } else {
        println!("reloaded {file}: {}", said.join("; "));
    }
    if !c.needs_restart.is_empty() {
        println!(
            "changed but taking effect only at the next start (the running values stay): {}",
            c.needs_restart.join(", ")
        );
    }
}

/// Warnings, one a line, on standard error.
fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn default_dir(data: &Path) -> PathBuf {
    std::env::var_os("MANDATE_POLICIES").map_or_else(|| data.join("policies"), PathBuf::from)
}

fn validate(dir: &Path, json: bool) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("`{}` is not a directory", dir.display());
    }
    let loaded = mandate_server::load_dir(dir, mandate_server::Missing::Error);
    report(loaded, dir, dir, json)
}

/// One `.cedar` file, with the schema of its directory or, where that has
/// no `*.cedarschema` file, of the policy directory.
fn validate_file(file: &Path, policy_dir: &Path, json: bool) -> anyhow::Result<()> {
    if file.extension().and_then(|e| e.to_str()) != Some("cedar") {
        bail!(
            "`{}` is neither a directory nor a `.cedar` policy file",
            file.display()
        );
    }
    if !file.is_file() {
        bail!("`{}` does not exist", file.display());
    }
    let own = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let has_schema = std::fs::read_dir(own)
        .with_context(|| format!("cannot read `{}`", own.display()))?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().and_then(|x| x.to_str()) == Some("cedarschema"));
    let schema_dir = if has_schema { own } else { policy_dir };
    if !has_schema && !policy_dir.is_dir() {
        bail!(
            "no schema (`*.cedarschema`) beside `{}` in `{}`, and the policy directory \
             `{}` to take one from does not exist: name yours with MANDATE_POLICIES=DIR \
             (or `--data DATA` for DATA/policies)",
            file.display(),
            own.display(),
            policy_dir.display()
        );
    }
    let loaded = mandate_server::load_file(file, schema_dir);
    // Diagnostics name the file by its name, and schema fragments theirs.
    let problems_in = |source: &str| {
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == source)
        {
            file.to_path_buf()
        } else {
            located(schema_dir, source)
        }
    };
    match loaded {
        Err(diags) => {
            for d in &diags {
                eprintln!(
                    "{}:{}:{}: {}",
                    problems_in(&d.source).display(),
                    d.line,
                    d.col,
                    d.message
                );
            }
            bail!(
                "{} problem(s) in `{}` (schema from `{}`)",
                diags.len(),
                file.display(),
                schema_dir.display()
            )
        }
        ok => report(ok, schema_dir, file, json),
    }
}

/// Where a diagnostic of `dir` is: a file of it, by name, or (for a
/// problem with the directory itself) the directory, named once.
fn located(dir: &Path, source: &str) -> PathBuf {
    if Path::new(source) == dir {
        dir.to_path_buf()
    } else {
        dir.join(source)
    }
}

/// Prints what was loaded, or every problem as file:line:col.
fn report(
    loaded: Result<mandate_server::LoadedPolicies, Vec<mandate_core::PolicyDiagnostic>>,
    dir: &Path,
    what: &Path,
    json: bool,
) -> anyhow::Result<()> {
    match loaded {
        Ok(loaded) => {
            let ids = loaded.policies.policies().ids();
            if json {
                output::json(&serde_json::json!({
                    "valid": true,
                    "files": loaded.files,
                    "schema_dir": dir,
                    "schema_fragments": loaded.schema_fragments,
                    "policies": ids.iter().map(|(id, k)| (id.clone(), k.as_str())).collect::<Vec<_>>(),
                }))?;
            } else {
                let mut counts = BTreeMap::new();
                for (_, k) in &ids {
                    *counts.entry(k.as_str()).or_insert(0) += 1;
                }
                let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
                println!(
                    "valid: {} policies ({}) in {} files; schema fragments: {}",
                    ids.len(),
                    summary.join(", "),
                    loaded.files.len(),
                    loaded.schema_fragments.len()
                );
            }
            Ok(())
        }
        Err(diags) => {
            for d in &diags {
                let file = located(dir, &d.source);
                eprintln!("{}:{}:{}: {}", file.display(), d.line, d.col, d.message);
            }
            bail!("{} problem(s) in `{}`", diags.len(), what.display())
        }
    }
}

/// The attestation a test mission is taken to have been started with.
fn test_attestation(a: &TestAttested) -> mandate_core::Attestation {
    let method = if a.workload.is_some() {
        mandate_core::AttestationMethod::JwtSvid
    } else {
        mandate_core::AttestationMethod::LaunchStatement
    };
    mandate_core::Attestation {
        method,
        subject: a
            .workload
            .clone()
            .unwrap_or_else(|| "policy-test-code".into()),
        code_digest: a.code_digest.clone(),
        launcher: a.code_digest.as_ref().map(|_| "policy-test".into()),
        environment: std::collections::BTreeMap::new(),
        evidence_s256: String::new(),
        verified_at: 0,
    }
}

/// A policy test file (TOML). See `examples/policies/consultant.test.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// Directory of organisation policies, relative to the test file.
    policies: Option<PathBuf>,
    #[serde(default)]
    mission: TestMission,
    #[serde(default)]
    grants: Vec<TestGrant>,
    #[serde(rename = "case")]
    cases: Vec<TestCase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestMission {
    scope: Option<PathBuf>,
    boundaries: Option<PathBuf>,
    escalations: Option<PathBuf>,
    out_of_scope: Option<String>,
    /// The mission as if started with verified attestation evidence
    /// (`Mission.attested`, `workload`, `code_digest`; `context.trust` =
    /// `"attested"`).
    attested: Option<TestAttested>,
    /// The mission as if it had read content with these labels
    /// (`Mission.tainted`, `taint`, `tainted_at`).
    taint: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestAttested {
    /// A SPIFFE ID: as if started with a JWT-SVID of that workload.
    workload: Option<String>,
    /// `sha256:<hex>`: as if started by a launcher with that code.
    code_digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGrant {
    id: String,
    policy: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    action: String,
    resource: ResourceRef,
    #[serde(default)]
    context: serde_json::Map<String, serde_json::Value>,
    /// Ids of grants (from [[grants]]) live for this case.
    #[serde(default)]
    grants: Vec<String>,
    expect: Decision,
    code: Option<String>,
    policies: Option<Vec<String>>,
}

fn test(file: &Path, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read `{}`", file.display()))?;
    let spec: TestFile =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", file.display(), e.message()))?;
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let org = match &spec.policies {
        Some(dir) => {
            mandate_server::load_dir(&base.join(dir), mandate_server::Missing::Error)
                .map_err(|d| {
                    anyhow!(
                        "the policies do not load:\n{}",
                        d.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                })?
                .policies
        }
        None => mandate_core::OrgPolicies::empty().map_err(|d| anyhow!("{d}"))?,
    };
    let read = |p: &Option<PathBuf>| -> anyhow::Result<String> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(base.join(p))
                    .with_context(|| format!("cannot read `{}`", p.display()))
            })
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let policies = MissionPolicies {
        scope: read(&spec.mission.scope)?,
        boundaries: read(&spec.mission.boundaries)?,
        escalations: read(&spec.mission.escalations)?,
    };
    let compiled = MissionPolicySet::compile("mission", &policies, Some(org.schema()))?;
    let out_of_scope: OutOfScope = spec
        .mission
        .out_of_scope
        .as_deref()
        .unwrap_or("escalate")
        .parse()?;
    let now = UnixTime(1_800_000_000);
    let body = MissionBody::new(
        MissionSpec {
            agent: "test-agent".parse()?,
            goal: "policy test".into(),
            policies,
            ttl_secs: 3_600,
            budget: 1_000,
            out_of_scope,
        },
        MissionId::generate(&OsRandom)?,
        "urn:mandate:policy-test",
        "tester".parse()?,
        now,
        MissionLimits::default(),
        None,
    )?;
    let s256 = mission_s256(&body)?;
    let jkt =
        Thumbprint::from_stored("A".repeat(43)).ok_or_else(|| anyhow!("internal: thumbprint"))?;
    let mission = Mission {
        body,
        s256,
        status: MissionStatus::Active {
            jkt,
            started_at: now,
        },
        attestation: spec.mission.attested.as_ref().map(test_attestation),
        taint: spec
            .mission
            .taint
            .as_deref()
            .filter(|l| !l.is_empty())
            .map(|l| mandate_core::Taint::merged(None, l, "policy test", now.0)),
    };

    let (mut passed, mut failed) = (0, 0);
    let mut results = Vec::new();
    for case in &spec.cases {
        let live: Vec<&TestGrant> = spec
            .grants
            .iter()
            .filter(|g| case.grants.contains(&g.id))
            .collect();
        if live.len() != case.grants.len() {
            bail!(
                "case `{}` names a grant that [[grants]] does not define",
                case.name
            );
        }
        let grants = GrantSet::compile(live.iter().map(|g| (g.id.as_str(), g.policy.as_str())))
            .map_err(|d| anyhow!("grant: {d}"))?;
        let got = engine_decide(
            &org,
            &compiled,
            &grants,
            &DecisionRequest {
                mission: &mission,
                budget_used: 0,
                action: &case.action,
                resource: &case.resource,
                context: &case.context,
                trust: Trust::of(&mission),
                required: Trust::Signed,
                now: now.plus(1),
            },
        );
        let mut problems = Vec::new();
        if got.decision != case.expect {
            problems.push(format!(
                "expected {}, got {}",
                case.expect.as_str(),
                got.decision.as_str()
            ));
        }
        if let Some(code) = &case.code
            && *code != got.code
        {
            problems.push(format!("expected code {code}, got {}", got.code));
        }
        if let Some(p) = &case.policies
            && *p != got.policies
        {
            problems.push(format!("expected policies {p:?}, got {:?}", got.policies));
        }
        if problems.is_empty() {
            passed += 1;
        } else {
            failed += 1;
        }
        results.push(serde_json::json!({
            "name": case.name, "ok": problems.is_empty(), "decision": got.decision, "code": got.code,
            "policies": got.policies, "problems": problems,
        }));
        if !json {
            if problems.is_empty() {
                println!(
                    "ok    {} ({} {})",
                    case.name,
                    got.decision.as_str(),
                    got.code
                );
            } else {
                println!("FAIL  {}: {}", case.name, problems.join("; "));
                if !got.detail.is_empty() {
                    println!("      detail: {}", got.detail);
                }
            }
        }
    }
    if json {
        output::json(&serde_json::json!({ "passed": passed, "failed": failed, "cases": results }))?;
    } else {
        println!("policy cases: {passed} ok, {failed} failing");
    }
    if failed > 0 {
        bail!("{failed} policy case(s) failed");
    }
    Ok(())
}

pub async fn decide(c: Client, a: DecideArgs, json: bool) -> anyhow::Result<()> {
    let resource: ResourceRef =
        serde_json::from_str(&a.resource).context("--resource is not a resource JSON object")?;
    let context = match serde_json::from_str::<serde_json::Value>(&a.context)
        .context("--context is not JSON")?
    {
        serde_json::Value::Object(m) => m,
        _ => bail!("--context must be a JSON object"),
    };
    let credential = crate::commands::arg_or_stdin(&a.credential)?;
    let r = c
        .decide(&DecideRequest {
            credential,
            action: a.action,
            resource,
            context,
            justification: a.justification,
            required_trust: a.required_trust,
        })
        .await?;
    if json {
        output::json(&r)?;
    } else {
        print!("{} ({})", r.decision.as_str(), r.code);
        if !r.policies.is_empty() {
            print!(" by {}", r.policies.join(", "));
        }
        if let Some(g) = r.grant.as_ref().filter(|g| !r.policies.contains(g)) {
            print!(" under grant {g}");
        }
        if let Some(id) = &r.approval_id {
            print!("; approval {id} is pending (`mandate approvals show {id}`)");
        }
        if r.decision != mandate_core::Decision::Allow && !r.detail.is_empty() {
            print!(": {}", r.detail);
        }
        println!();
    }
    // The answer is also the exit status, so a script can act on it: 0
    // allow, 2 deny, 3 escalate (1 is any error).
    match r.decision {
        mandate_core::Decision::Allow => Ok(()),
        mandate_core::Decision::Deny => {
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::process::exit(2)
        }
        mandate_core::Decision::Escalate => {
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::process::exit(3)
        }
    }
}
