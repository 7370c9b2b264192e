//! The Python SDK (`sdk/python`, issue 20): its pytest suite against this
//! very binary (each test module starts a real `mandate serve` and `mandate
//! demo upstreams` of its own), and `mypy --strict` and `ruff` over it, so
//! `scripts/test.sh` covers the SDK as it covers the crates.
//!
//! The SDK is imported from the work tree (`PYTHONPATH=sdk/python/src`), not
//! installed into the test venv, so this always tests the code beside it.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test: failing loudly is its job"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mandate");

fn python() -> String {
    std::env::var("MANDATE_TEST_PYTHON").expect(
        "MANDATE_TEST_PYTHON must name a Python with pytest, mypy, ruff and the SDK's dependencies; run scripts/test.sh",
    )
}

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python")
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

#[test]
fn the_sdk_is_mypy_strict_clean() {
    run(&["mypy", "--strict", "src", "tests"]);
}

#[test]
fn the_sdk_is_ruff_clean() {
    run(&["ruff", "check", "--no-cache", "."]);
    run(&["ruff", "format", "--check", "--no-cache", "."]);
}
