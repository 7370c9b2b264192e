//! The README's walkthrough, run as written.
//!
//! Every fenced block of README.md whose info string is `sh walkthrough`
//! runs, in order, in one `bash` (`set -euo pipefail`), in a scratch
//! directory holding a copy of `examples/`, with `mandate` on `PATH` — as a
//! newcomer runs them at the repository root. The server and the upstreams
//! are started with the arguments the README gives them. Only the ports
//! differ: the server listens on a free port instead of 7878 (the blocks'
//! `127.0.0.1:7878` and `MANDATE_SERVER` say so), and the upstreams on
//! another instead of 7879 (the copy of `examples/mandate.toml` says so).
//!
//! So a README command that stops working fails this test, and so does one
//! whose answer is no longer what the README says it is (the checks at the
//! end).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test: failing loudly is its job"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mandate");
/// Where the README's server listens, and the example's upstreams.
const README_SERVER: &str = "127.0.0.1:7878";
const EXAMPLE_UPSTREAMS: &str = "127.0.0.1:7879";
/// Alice's password on the example's legacy CRM (`mandate demo upstreams`).
const CRM_PASSWORD: &str = "alice-crm-password";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fenced block and the README line its first command is on.
#[derive(Debug)]
struct Block {
    line: usize,
    text: String,
}

/// The README's `sh walkthrough` blocks, in order.
fn walkthrough(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, l) in readme.lines().enumerate() {
        match open.as_mut() {
            None if l.trim_end() == "```sh walkthrough" => {
                open = Some(Block {
                    line: i + 2,
                    text: String::new(),
                });
            }
            None => {}
            Some(_) if l.trim_end() == "```" => blocks.extend(open.take()),
            Some(b) => {
                b.text.push_str(l);
                b.text.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a walkthrough block is not closed");
    blocks
}

/// The arguments after `cargo run … --` on the README line that has
/// `needle`, up to its comment.
fn readme_args(readme: &str, needle: &str) -> Vec<String> {
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run") && l.contains(needle))
        .unwrap_or_else(|| panic!("README.md has no `cargo run … {needle}` line"));
    let command = line.split(" #").next().unwrap();
    let (_, args) = command
        .split_once(" -- ")
        .unwrap_or_else(|| panic!("no ` -- ` in `{line}`"));
    args.split_whitespace().map(str::to_owned).collect()
}

/// A process of ours, stopped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mandate ARGS` in `dir` with no `MANDATE_*` from our environment; returns
/// the process and the address its first line says it listens on
/// (`… listening on http://ADDR`).
fn start(dir: &Path, args: &[String]) -> (Running, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, _) in std::env::vars() {
        if k.starts_with("MANDATE_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.env("MANDATE_LOG", "warn").spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("`mandate {}` printed nothing", args.join(" ")));
    let addr = first
        .split_once("listening on http://")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| {
            panic!(
                "unexpected first line of `mandate {}`: {first}",
                args.join(" ")
            )
        });
    (running, addr)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Asserts that `transcript` has each of `expected`, in this order.
fn in_order(transcript: &str, expected: &[&str]) {
    let mut rest = transcript;
    for e in expected {
        match rest.find(e) {
            Some(at) => rest = &rest[at + e.len()..],
            None => panic!(
                "the walkthrough's output lacks `{e}` (after what came before it):\n{transcript}"
            ),
        }
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = walkthrough(&readme);
    assert!(
        blocks.len() >= 5,
        "README.md lost its `sh walkthrough` blocks"
    );
    assert!(
        blocks.iter().any(|b| b.text.contains(README_SERVER)),
        "the walkthrough no longer names the server at {README_SERVER}"
    );

    // The repository root, as far as the walkthrough uses it.
    let root = tempfile::tempdir().unwrap();
    let cwd = root.path();
    copy_dir(&repo().join("examples"), &cwd.join("examples"));

    // The upstreams, as the README starts them, on a free port; the
    // example configuration pointed at it.
    let mut up_args = readme_args(&readme, " demo upstreams");
    up_args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let (_upstreams, up_addr) = start(cwd, &up_args);
    let config = cwd.join("examples/mandate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.matches(EXAMPLE_UPSTREAMS).count() >= 4,
        "examples/mandate.toml no longer routes to `mandate demo upstreams` at {EXAMPLE_UPSTREAMS}"
    );
    std::fs::write(&config, text.replace(EXAMPLE_UPSTREAMS, &up_addr)).unwrap();

    // The server, as the README starts it, on a free port.
    let mut serve_args = readme_args(&readme, " serve");
    serve_args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let (_server, addr) = start(cwd, &serve_args);

    // The blocks, in order, in one shell.
    // On a failure, bash names the command and its README line (`$LINENO`
    // is the script's; `SHIFT` maps it to the README's).
    let mut script = String::from(
        "set -euo pipefail\nexec 2>&1\n\
         trap 'rc=$?; echo \"README walkthrough: \\`$BASH_COMMAND\\` failed (exit $rc) at README.md:$((LINENO + SHIFT))\"' ERR\n",
    );
    for b in &blocks {
        let header = format!("echo '### README.md:{}'\n", b.line);
        // The block's first line will be the script's line `at`.
        let at = script.lines().count() + 2 + 1;
        let shift = i64::try_from(b.line).unwrap() - i64::try_from(at).unwrap();
        script.push_str(&format!("SHIFT={shift}\n{header}"));
        script.push_str(&b.text.replace(README_SERVER, &addr));
    }
    let scripts = tempfile::tempdir().unwrap();
    let script_file = scripts.path().join("walkthrough.sh");
    std::fs::write(&script_file, &script).unwrap();
    let transcript_file = scripts.path().join("transcript");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc"])
        .arg(&script_file)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&transcript_file).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("MANDATE_") {
            cmd.env_remove(k);
        }
    }
    let mut bash = cmd
        .env("PATH", path)
        .env("MANDATE_SERVER", format!("http://{addr}"))
        .env("MANDATE_LOG", "warn")
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = bash.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = bash.kill();
            let _ = bash.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let transcript = std::fs::read_to_string(&transcript_file).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the README walkthrough failed ({status:?}):\n{transcript}"
    );

    // What the README says each step answers.
    in_order(
        &transcript,
        &[
            // 1-2: alice's agent
            "registered agent `billing-bot`",
            // 4-5: a started mission, its credential checked offline and live
            "started mission msn_",
            "valid mission credential",
            "\nactive\n",
            // 6: ended, its credential is refused
            "inactive: the mission has ended (mission_ended)",
            "exit 2",
            // 7: revocation cascades
            "revoked agent billing-bot\n  ended mission msn_",
            "had already ended",
            // policies, and a decision as an enforcement point asks for one
            "policy cases: 8 ok, 0 failing",
            "reloaded policies from examples/policies",
            "registered agent `billing-bot-2`",
            "escalate (escalation) by refunds-escalate.cedar/big-refunds; approval apr_",
            "exit 3",
            // the gateway: a read, the HR boundary, a refund a person approves
            "200 OK\n{\"invoice\":\"42\"",
            "403 Forbidden\n",
            "\"policies\":[\"hr-off-limits.cedar/hr-records\"]",
            "\"code\":\"approval_required\"",
            "\"approval_id\":\"apr_",
            "approved apr_",
            "(once)",
            "200 OK\n{\"refund\":\"issued\"",
            // the vault
            "stored basic secret of alice for route legacy-crm",
            "200 OK\n{\"crm\":\"logged in as alice\"",
            // MCP (its answers checked below: they come in any order)
            "\"serverInfo\":{\"name\":\"mandate-demo-billing\"",
            // approvals: the request `decide` opened, shown and denied
            "wants to `refund` `invoice-42`",
            "why asked      escalation refunds-escalate.cedar/big-refunds",
            "denied apr_",
            // audit: the log, one record's provenance, the chain
            "deny     alice      billing-bot-2",
            "→ grant grant/grt_",
            "approved",
            "audit chain intact",
            "audit chain intact",
        ],
    );
    mcp_answers(&transcript);
    assert!(
        !transcript.contains(CRM_PASSWORD),
        "the CRM password reached the agent's output"
    );

    // Whatever the walkthrough left at the repository root is git-ignored.
    let ignore = std::fs::read_to_string(repo().join(".gitignore")).unwrap();
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    for entry in std::fs::read_dir(cwd).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "examples" {
            continue;
        }
        assert!(
            ignored.contains(&format!("/{name}").as_str()),
            "the walkthrough leaves `{name}` in the repository root, and .gitignore does not name it"
        );
    }
}

/// The MCP block's answers, by id: the listing shows `get_invoice` as
/// allowed and `refund` as decided per call; the call returns the invoice.
fn mcp_answers(transcript: &str) {
    let answers: Vec<serde_json::Value> = transcript
        .lines()
        .filter(|l| l.starts_with("{\"jsonrpc\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let answer = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no MCP answer with id {id}:\n{transcript}"))
    };
    let tools = answer(2)["result"]["tools"].as_array().unwrap();
    let access = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["_meta"]["io.mandate/access"]["access"].clone())
    };
    assert_eq!(
        access("get_invoice"),
        Some("allowed".into()),
        "{transcript}"
    );
    assert_eq!(
        access("refund"),
        Some("decided_per_call".into()),
        "{transcript}"
    );
    let call = &answer(3)["result"];
    assert_eq!(call["isError"], false, "{transcript}");
    let text: serde_json::Value =
        serde_json::from_str(call["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["invoice"], "42", "{transcript}");
}
