//! The console in a real browser (issue 21): headless Debian Chromium,
//! driven by `tests/console/flow.mjs` through playwright-core, with a CDP
//! virtual authenticator per person, against a real `mandate serve` in
//! front of `mandate demo upstreams` with the example configuration (refunds
//! over 50,000 escalate to a person).
//!
//! Here: the server, the upstreams, the principals alice and bob with their
//! one-time enrollment links (`mandate principal enroll`), alice's agent and
//! its running mission. In the browser (see flow.mjs for each step): enroll,
//! sign out, sign in with the passkey, a live inbox, approve with the passkey
//! (the agent's `mission call --wait` completes), deny with a reason, bob
//! sees nothing of alice's, a cross-origin form post is refused, alice
//! revokes her mission from its page (after a confirmation) and the
//! agent's next call is refused, axe-core finds no serious violation. Back here: `mandate audit explain` of the
//! approval says alice's passkey signed it and that the signature verifies,
//! and the audit chain is intact.
//!
//! Needs what `scripts/test.sh` installs: Debian's `chromium` (at
//! `/usr/bin/chromium`, or `MANDATE_TEST_CHROMIUM`) and the npm packages of
//! `tests/console/package-lock.json` (in `MANDATE_TEST_CONSOLE_DIR`). Without
//! them it fails, saying so: it is not skipped.
//!
//! With `MANDATE_UPDATE_SCREENSHOTS=1` the screenshots of the enroll,
//! sign-in, inbox, missions, audit and agents pages are written to
//! `docs/console/` (else to a scratch directory, so that a test run leaves
//! the work tree alone).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: failing loudly is its job"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use mandate_testkit::TestServer;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mandate");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Debian's Chromium (`apt-get install chromium`).
fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("MANDATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.is_file(),
        "no Chromium at {}: install Debian's package `chromium` (apt-get install -y chromium; \
         scripts/test.sh does when it runs as root), or set MANDATE_TEST_CHROMIUM",
        path.display()
    );
    path
}

/// Where `scripts/test.sh` installed playwright-core and @axe-core/playwright
/// (`npm ci` of `tests/console/package-lock.json`).
fn node_modules() -> PathBuf {
    let dir = std::env::var("MANDATE_TEST_CONSOLE_DIR").expect(
        "MANDATE_TEST_CONSOLE_DIR must name the npm install of tests/console (playwright-core, \
         @axe-core/playwright); run scripts/test.sh",
    );
    let modules = Path::new(&dir).join("node_modules");
    for package in ["playwright-core", "@axe-core/playwright"] {
        assert!(
            modules.join(package).is_dir(),
            "{} has no {package}; run scripts/test.sh",
            modules.display()
        );
    }
    modules
}

/// A process of ours, stopped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mandate demo upstreams` on a free port, and its URL.
fn upstreams() -> (Running, String) {
    let mut child = Command::new(BIN)
        .args(["demo", "upstreams", "--listen", "127.0.0.1:0"])
        .env("MANDATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // Keep reading: a closed pipe would stop it at its next line.
    std::thread::spawn(move || for _ in out.lines() {});
    let url = first
        .strip_prefix("demo upstreams listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .trim_end_matches('/')
        .to_owned();
    (Running(child), url)
}

/// `mandate principal enroll NAME`: the one-time link, alone on a line.
fn enroll_link(server: &TestServer, admin: &str, name: &str) -> String {
    let out = server
        .cli(Some(admin), &["principal", "enroll", name])
        .success();
    let link = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http") && l.contains("/console/enroll/"))
        .unwrap_or_else(|| panic!("`mandate principal enroll {name}` printed no link:\n{out}"))
        .to_owned();
    let json = server
        .cli(Some(admin), &["principal", "enroll", name, "--json"])
        .json();
    assert!(
        json["url"]
            .as_str()
            .is_some_and(|u| u.contains("/console/enroll/"))
            && (json["expires_at"].is_number() || json["expires_at"].is_string()),
        "`principal enroll --json` gave {json}"
    );
    link
}

#[test]
fn a_person_enrolls_signs_in_and_decides_in_the_console() {
    let started = Instant::now();
    let chromium = chromium();
    let modules = node_modules();

    let (_upstreams, up) = upstreams();
    let config = std::fs::read_to_string(repo().join("examples/mandate.toml"))
        .unwrap()
        .replace("http://127.0.0.1:7879", &up)
        .replace(
            "policies_dir = \"examples/policies\"",
            &format!(
                "policies_dir = \"{}\"",
                repo().join("examples/policies").display()
            ),
        );
    let server = TestServer::start_logged(Path::new(BIN), Some(&config));
    let admin = server.init_admin();
    let token = |name: &str| {
        server
            .cli(Some(&admin), &["principal", "add", name, "--json"])
            .json()["token"]["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let alice = token("alice");
    let bob = token("bob");

    // alice's agent, on a mission whose refunds over 50,000 escalate.
    let work = server.scratch().join("console");
    std::fs::create_dir_all(&work).unwrap();
    let scope = work.join("scope.cedar");
    std::fs::write(
        &scope,
        "permit(principal, action in [Action::\"read\", Action::\"refund\"], resource);\n",
    )
    .unwrap();
    server
        .cli(Some(&alice), &["agent", "register", "billing-bot"])
        .success();
    let goal = "Refund ACME's double billing";
    let created = server
        .cli(
            Some(&alice),
            &[
                "mission",
                "create",
                "--agent",
                "billing-bot",
                "--goal",
                goal,
                "--scope",
                scope.to_str().unwrap(),
                "--ttl",
                "1h",
                "--json",
            ],
        )
        .json();
    let state = work.join("mission.json");
    server
        .cli(
            None,
            &[
                "mission",
                "start",
                created["start_token"].as_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ],
        )
        .success();

    let alice_link = enroll_link(&server, &admin, "alice");
    let bob_link = enroll_link(&server, &admin, "bob");
    let admin_link = enroll_link(&server, &admin, "admin");
    let origin = alice_link
        .split("/console/")
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    assert_eq!(
        origin,
        format!("http://localhost:{port}"),
        "a loopback server's console origin is http://localhost:PORT (WebAuthn refuses IP addresses)"
    );

    let screenshots = if std::env::var_os("MANDATE_UPDATE_SCREENSHOTS").is_some() {
        repo().join("docs/console")
    } else {
        work.join("screenshots")
    };
    let results = work.join("results.json");
    let cfg = json!({
        "bin": BIN,
        "chromium": chromium,
        "api": server.url(),
        "origin": origin,
        "goal": goal,
        "work": work,
        "screenshots": screenshots,
        "results": results,
        "alice": {"token": alice, "enroll": alice_link, "state": state},
        "bob": {"token": bob, "enroll": bob_link},
        "admin": {"enroll": admin_link},
    });
    let cfg_file = work.join("config.json");
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();

    // The script beside a link to the installed packages, so that Node
    // resolves its imports there.
    let script_dir = work.join("flow");
    std::fs::create_dir_all(&script_dir).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/flow.mjs"),
        script_dir.join("flow.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&modules, script_dir.join("node_modules")).unwrap();
    let browser_started = Instant::now();
    let out = Command::new("node")
        .arg(script_dir.join("flow.mjs"))
        .arg(&cfg_file)
        .stdin(Stdio::null())
        .output()
        .expect("node (20 or later) must be on PATH");
    let browser_time = browser_started.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser flow failed:\n{said}\n--- server log (tail) ---\n{}",
        tail(&server.log(), 60)
    );
    let results: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    eprintln!(
        "console browser test: {} ms in the browser, {} ms since the test began; steps: {}; \
         axe (all impacts): {}; cross-origin posts: {}; bob's attempts: {}",
        browser_time.as_millis(),
        started.elapsed().as_millis(),
        results["steps"],
        results["axe"],
        results["cross_origin"],
        results["bob_tried"]
    );

    // The approval's audit record: signed by alice's passkey, and the
    // signature verifies (checked again at explain time).
    let approved = results["approved"].as_str().unwrap();
    let records = server
        .cli(
            Some(&admin),
            &[
                "--json",
                "audit",
                "list",
                "--kind",
                "approval.approved",
                "--limit",
                "1000",
            ],
        )
        .json();
    let list = records
        .as_array()
        .or_else(|| records["records"].as_array())
        .unwrap_or_else(|| panic!("audit list --json gave {records}"));
    let record = list
        .iter()
        .find(|r| r.to_string().contains(approved))
        .unwrap_or_else(|| panic!("no approval.approved record for {approved} in {records}"));
    let seq = record["seq"].as_u64().unwrap().to_string();
    let explained = server
        .cli(Some(&admin), &["audit", "explain", &seq])
        .success();
    let lower = explained.to_lowercase();
    assert!(
        lower.contains("passkey")
            && explained.contains("alice")
            && lower.contains("verifies")
            && !lower.contains("does not verify")
            && !lower.contains("not verif"),
        "`mandate audit explain {seq}` does not say alice's passkey signed the approval and that it verifies:\n{explained}"
    );
    let credential = results["alice_credential"].as_str().unwrap();
    assert!(
        explained.contains(credential),
        "`mandate audit explain {seq}` does not name alice's passkey {credential}:\n{explained}"
    );
    let verified = server.cli(Some(&admin), &["audit", "verify"]).success();
    assert!(verified.contains("audit chain intact"), "{verified}");
}

/// The last `lines` lines of the server's log, without its SQL statements.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.contains("sqlx::")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
