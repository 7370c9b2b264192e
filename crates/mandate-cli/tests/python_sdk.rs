//! The Python SDK (`sdk/python`, issue 20): its pytest suite against this
//! very binary (each test module starts a real `mandate serve` and `mandate
//! demo upstreams` of its own), and `mypy --strict` and `ruff` over it, so
//! `scripts/test.sh` covers the SDK as it covers the crates.
//!
//! The SDK is imported from the work tree (`PYTHONPATH=sdk/python/src`), not
//! installed into the test venv, so this always tests the code beside it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: failing loudly is its job"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mandate");

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON").expect(
        "MANDATE_TEST_PYTHON must name a Python with pytest, mypy, ruff and the SDK's dependencies; run scripts/test.sh",
    )
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sdk() -> PathBuf {
    repo().join("sdk/python")
}

/// Runs `python -m ARGS` in `sdk/python`, with caches out of the work tree;
/// panics with its output unless it succeeds.
fn run(args: &[&str]) -> String {
    let caches = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .args(["-m"])
        .args(args)
        .current_dir(sdk())
        .env("PYTHONPATH", sdk().join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MYPY_CACHE_DIR", caches.path().join("mypy"))
        .env("MYPYPATH", sdk().join("src"))
        .env("MANDATE_BIN", BIN)
        .env_remove("MANDATE_SERVER")
        .env_remove("MANDATE_TOKEN")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`python -m {}` failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn the_sdk_passes_its_tests_against_a_live_server() {
    let text = run(&["pytest", "-q", "-p", "no:cacheprovider", "tests"]);
    // Every test ran: none was skipped or deselected on this machine.
    assert!(
        text.contains(" passed") && !text.contains("skipped") && !text.contains("error"),
        "{text}"
    );
}

/// The SDK, its tests and the example agent.
const CHECKED: [&str; 3] = ["src", "tests", "../../examples/python"];

#[test]
fn the_sdk_is_mypy_strict_clean() {
    run(&[&["mypy", "--strict"][..], &CHECKED].concat());
}

#[test]
fn the_sdk_is_ruff_clean() {
    // The SDK's settings (pyproject.toml) for the example agent too.
    let with = ["--no-cache", "--config", "pyproject.toml"];
    run(&[&["ruff", "check"][..], &with, &CHECKED, &["README.md"]].concat());
    run(&[
        &["ruff", "format", "--check"][..],
        &with,
        &CHECKED,
        &["README.md"],
    ]
    .concat());
}

/// A process of ours, stopped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mandate ARGS`, and the URL its first line says it listens on.
fn start(args: &[&str], prefix: &str) -> (Running, String) {
    let mut child = Command::new(BIN)
        .args(args)
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
        .strip_prefix(prefix)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .trim_end_matches('/')
        .to_owned();
    (Running(child), url)
}

/// The README's Python example (`examples/python/run.sh`) against `serve
/// --config examples/mandate.toml` and `demo upstreams`, as the README runs
/// them (on ports of their own): the SDK from the work tree instead of a
/// venv it installs, and a data dir of the test's.
#[test]
fn the_python_example_agent_runs_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstreams, up) = start(
        &["demo", "upstreams", "--listen", "127.0.0.1:0"],
        "demo upstreams listening on ",
    );
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
    let cfg = dir.path().join("mandate.toml");
    std::fs::write(&cfg, config).unwrap();
    let data = dir.path().join("data");
    let (_server, url) = start(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "mandate listening on ",
    );
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("examples/python/run.sh"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MANDATE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("MANDATE", BIN)
        .env("PYTHON", python())
        .env("PYTHONPATH", sdk().join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MANDATE_SERVER", &url)
        .env("MANDATE_DATA", &data)
        .env("MANDATE_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run.sh failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "1. invoice 42: 200",
        "2. HR records: denied (boundary) by hr-off-limits.cedar/hr-records",
        "waiting for a person: approval request apr_",
        "(alice approved apr_",
        "refund: 200 {'refund': 'issued'",
        "4. over MCP: tools ['get_invoice', 'refund']; get_invoice → {\"invoice\":\"42\"",
        "5. ended mission msn_",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }

    // On a fresh data dir it printed the tokens it created: with them the
    // data dir stays usable (a second `mandate init` is refused).
    let token = |label: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
        let at = line.find("mdt_").expect("an API token on that line");
        line[at..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .next()
            .unwrap()
            .to_owned()
    };
    let cli = |token: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("MANDATE_SERVER", &url)
            .env("MANDATE_TOKEN", token)
            .env("MANDATE_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`mandate {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let alice = token("alice's API token");
    let missions = cli(&alice, &["mission", "list"]);
    assert!(missions.contains("Reconcile invoice 42"), "{missions}");
    let admin = token("the admin's API token");
    assert_ne!(admin, alice);
    assert!(cli(&admin, &["principal", "add", "bob"]).contains("mdt_"));
}
