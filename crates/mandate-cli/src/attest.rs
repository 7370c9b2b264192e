//! Attestation from the command line (ADR 0020): launcher keys, `mandate
//! launch`, and the evidence and anchors `credential verify` checks.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use mandate_client::MissionAgent;
use mandate_core::{
    AttestationRequirement, Clock as _, Ed25519Jwk, Evidence, LaunchStatement, LauncherKey,
    MissionKey, OsRandom, SystemClock, TrustAnchors,
};
use serde_json::json;

use crate::args::{LaunchArgs, RequireArgs};
use crate::commands::{arg_or_stdin, write_state};
use crate::output;

/// The requirement the flags name, if any.
pub(crate) fn requirement(r: RequireArgs) -> Option<AttestationRequirement> {
    let RequireArgs {
        spiffe_ids,
        launchers,
        code_digests,
    } = r;
    (!spiffe_ids.is_empty() || !launchers.is_empty() || !code_digests.is_empty()).then_some(
        AttestationRequirement {
            spiffe_ids,
            launchers,
            code_digests,
        },
    )
}

/// Writes a private key to a file that must not exist yet, mode 0600.
fn write_new_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        bail!(
            "`{}` already exists; refusing to overwrite a key",
            path.display()
        );
    }
    write_state(path, text, true)
}

/// `mandate launcher keygen`.
pub(crate) fn launcher_keygen(out: &Path, json: bool) -> anyhow::Result<()> {
    let key = LauncherKey::generate(&OsRandom)?;
    write_new_secret(out, &key.to_pkcs8_pem()?)?;
    let public = serde_json::to_string_pretty(key.public_jwk())?;
    if json {
        output::json(&json!({ "private_key_file": out, "public_jwk": key.public_jwk() }))?;
    } else {
        // The public key alone on standard output, so it can be redirected
        // into the file the authority reads.
        eprintln!(
            "launcher private key written to {} (mode 0600); keep it where only the launcher runs",
            out.display()
        );
        eprintln!(
            "its public key (a JWK) follows on standard output: save it (e.g. `> NAME.pub.jwk`) and name it in mandate.toml as `[attestation.launchers.NAME] public_key = \"/absolute/path/NAME.pub.jwk\"`"
        );
        println!("{public}");
    }
    Ok(())
}

/// `mandate mission keygen`.
pub(crate) async fn mission_keygen(server: &str, out: &Path, json: bool) -> anyhow::Result<()> {
    let config = mandate_client::Client::new(server)?.configuration().await?;
    let key = MissionKey::generate(&OsRandom)?;
    write_new_secret(out, &key.to_pkcs8_pem()?)?;
    let audience = config.attestation.as_ref().map(|a| a.audience.clone());
    let binding = mandate_core::key_audience(key.thumbprint());
    if json {
        output::json(&json!({
            "key_file": out, "jkt": key.thumbprint(),
            "svid_audiences": [audience, Some(binding)],
        }))?;
    } else {
        println!(
            "mission key written to {} (mode 0600), thumbprint {}",
            out.display(),
            key.thumbprint()
        );
        println!("a JWT-SVID for it must carry both audiences, e.g.:");
        println!(
            "  spire-agent api fetch jwt -audience {} -audience {binding}",
            audience.as_deref().unwrap_or("<issuer>")
        );
        println!(
            "then: mandate mission start TOKEN --state STATE --key {} --evidence SVID_FILE",
            out.display()
        );
    }
    Ok(())
}

/// Reads evidence from a file (or `-`).
pub(crate) fn read_evidence(path: &Path) -> anyhow::Result<Evidence> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?
    };
    Evidence::from_text(&text).map_err(|e| anyhow!("`{}`: {e}", path.display()))
}

/// The anchors `credential verify --evidence` checks against.
pub(crate) fn anchors(
    audience: &str,
    bundles: &[String],
    launchers: &[String],
) -> anyhow::Result<TrustAnchors> {
    let mut a = TrustAnchors::none(audience);
    for b in bundles {
        let (td, file) = b
            .split_once('=')
            .ok_or_else(|| anyhow!("--bundle `{b}`: expected TRUST_DOMAIN=JWKS_FILE"))?;
        let bytes = fs::read(file).with_context(|| format!("cannot read `{file}`"))?;
        a.add_bundle(td, &bytes)
            .map_err(|e| anyhow!("--bundle: {e}"))?;
    }
    for l in launchers {
        let (name, file) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("--launcher `{l}`: expected NAME=JWK_FILE"))?;
        let text = fs::read_to_string(file).with_context(|| format!("cannot read `{file}`"))?;
        let jwk: Ed25519Jwk = serde_json::from_str(&text)
            .ok()
            .filter(|k: &Ed25519Jwk| k.public_bytes().is_some())
            .ok_or_else(|| anyhow!("`{file}` is not an Ed25519 public JWK"))?;
        a.launchers.insert(name.to_owned(), jwk);
    }
    Ok(a)
}

/// SHA-256 of a file, lowercase hex.
fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let mut f =
        fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The executable a command names: a path as given, or found on `PATH`.
fn resolve_program(program: &str) -> anyhow::Result<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    let path = found.ok_or_else(|| anyhow!("`{program}` is not found on PATH"))?;
    fs::canonicalize(&path).with_context(|| format!("cannot resolve `{}`", path.display()))
}

/// What the launcher records of where it runs.
fn environment(extra: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        env.insert("host".to_owned(), h.trim().to_owned());
    }
    env.insert("os".to_owned(), std::env::consts::OS.to_owned());
    env.insert("arch".to_owned(), std::env::consts::ARCH.to_owned());
    env.insert(
        "uid".to_owned(),
        rustix::process::getuid().as_raw().to_string(),
    );
    env.insert(
        "launcher_version".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    // What the launcher observed is not the caller's to restate.
    let observed: Vec<String> = env.keys().cloned().collect();
    for e in extra {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| anyhow!("--env `{e}`: expected KEY=VALUE"))?;
        if observed.iter().any(|o| o == k) || env.contains_key(k) {
            bail!(
                "--env `{k}`: {} (the launcher records {} itself; each key once)",
                if observed.iter().any(|o| o == k) {
                    "is what the launcher observes"
                } else {
                    "is given twice"
                },
                observed.join(", ")
            );
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

/// `mandate launch`: returns the program's exit code.
pub(crate) async fn launch(server: &str, a: LaunchArgs, json: bool) -> anyhow::Result<i32> {
    let LaunchArgs {
        launcher,
        key,
        token,
        state,
        measure,
        env,
        statement_ttl,
        evidence_out,
        keep,
        command,
    } = a;
    if !(1..=mandate_core::MAX_LAUNCH_STATEMENT_SECS).contains(&statement_ttl) {
        bail!(
            "--statement-ttl must be 1 to {} seconds",
            mandate_core::MAX_LAUNCH_STATEMENT_SECS
        );
    }
    if let Some(p) = &evidence_out
        && p.exists()
    {
        bail!("`{}` already exists; refusing to overwrite it", p.display());
    }
    // Everything that can fail is checked before the mission starts: a
    // start cannot be undone (the token and the evidence are spent).
    if let Some(p) = &state
        && p.exists()
    {
        bail!(
            "`{}` already exists; refusing to overwrite a mission key",
            p.display()
        );
    }
    let pem = zeroize::Zeroizing::new(
        fs::read_to_string(&key).with_context(|| format!("cannot read `{}`", key.display()))?,
    );
    let launcher_key =
        LauncherKey::from_pkcs8_pem(&pem).map_err(|e| anyhow!("`{}`: {e}", key.display()))?;
    let start_token = arg_or_stdin(&token)?;
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("give the program to launch after `--`"))?;
    let exe = resolve_program(program)?;
    let measured = match measure {
        Some(m) => {
            fs::canonicalize(&m).with_context(|| format!("cannot resolve `{}`", m.display()))?
        }
        None => exe.clone(),
    };
    let digest = sha256_file(&measured)?;
    let config = mandate_client::Client::new(server)?.configuration().await?;
    let audience = config
        .attestation
        .as_ref()
        .map_or_else(|| config.issuer.clone(), |a| a.audience.clone());
    // The mission key is made here and handed to the program: the
    // statement binds exactly this key to exactly this code.
    let mission_key = MissionKey::generate(&OsRandom)?;
    let statement = LaunchStatement::new(
        &launcher,
        &audience,
        &measured.display().to_string(),
        &digest,
        mission_key.thumbprint(),
        environment(&env)?,
        SystemClock.now(),
        statement_ttl,
    );
    let envelope = launcher_key.sign_launch_statement(&launcher, &statement)?;
    let agent = MissionAgent::start_attested(
        server,
        &start_token,
        mission_key,
        Evidence::LaunchStatement {
            envelope: envelope.clone(),
        },
    )
    .await?;
    // The statement holds no secret: kept, anyone can re-check offline
    // what the mission's credential says of its code.
    if let Some(p) = &evidence_out {
        fs::write(p, serde_json::to_string_pretty(&envelope)?)
            .with_context(|| format!("cannot write `{}`", p.display()))?;
    }
    // The state lives in a directory only this user can read; a
    // temporary one goes when the program ends.
    let temp = match &state {
        Some(_) => None,
        None => Some(
            tempfile_dir().context("cannot create a private directory for the mission state")?,
        ),
    };
    let state_path = match (&state, &temp) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.join("mission.json"),
        (None, None) => bail!("no place for the mission state"),
    };
    write_state(&state_path, &agent.save()?, true)?;
    let line = format!(
        "launched `{}` (code sha256:{digest}) on mission {} as attested by launcher `{launcher}`; mission state in {}",
        measured.display(),
        agent.mission_id(),
        state_path.display()
    );
    if json {
        output::json(&json!({
            "mission": agent.mission_id().as_str(), "code_digest": format!("sha256:{digest}"),
            "subject": measured, "state": state_path,
        }))?;
    } else {
        eprintln!("{line}");
    }
    // The program gets its mission, and none of the launcher's own
    // authority: not its API token (with which it could lift its agent's
    // requirement or approve its own escalations), not the start token.
    let status = tokio::process::Command::new(&exe)
        .args(args)
        .env("MANDATE_STATE", &state_path)
        .env("MANDATE_SERVER", server)
        .env_remove("MANDATE_TOKEN")
        .env_remove("MANDATE_START_TOKEN")
        .status()
        .await
        .with_context(|| format!("cannot run `{}`", exe.display()));
    let code = match &status {
        Ok(s) => s.code().unwrap_or(1),
        Err(_) => 1,
    };
    if !keep {
        // The mission ends with the program; a program that ended it
        // itself leaves nothing to do.
        let why = match &status {
            Ok(s) => match s.code() {
                Some(0) => "the launched program exited".to_owned(),
                Some(c) => format!("the launched program exited with status {c}"),
                None => "the launched program was killed by a signal".to_owned(),
            },
            Err(_) => "the program could not be run".to_owned(),
        };
        let ended = agent.end(Some(&why)).await;
        if let Err(e) = ended
            && !e.to_string().contains("mission_ended")
        {
            eprintln!("warning: could not end mission {}: {e}", agent.mission_id());
        }
    }
    if let Some(d) = temp {
        let _ = fs::remove_dir_all(d);
    }
    status?;
    Ok(code)
}

/// A new directory only this user can enter.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let mut b = [0u8; 8];
    mandate_core::SecureRandom::fill(&OsRandom, &mut b)?;
    let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("mandate-launch-{name}"));
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}
