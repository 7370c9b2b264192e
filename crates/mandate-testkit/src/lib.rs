//! Test support: runs the real `mandate` binary on loopback with a
//! temporary data dir, and drives its CLI.
//!
//! The server listens on `127.0.0.1:0` the first time (the kernel picks a
//! free port, read back from the server's first line of output) and on the
//! same port after a restart, so its issuer URL stays the same.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test helper: failing loudly is its job"
)]

mod https;
pub mod postgres;
mod scenario;
mod signing;

pub use https::HttpsFiles;
pub use scenario::{MissionPlan, Scenario};
pub use signing::signed_headers;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A loopback port free now (the kernel's pick), for a server to listen on.
///
/// # Panics
/// If no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `mandate serve` process on a temp data dir.
#[derive(Debug)]
pub struct TestServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where the server's log goes, when captured (at `debug` level).
    log: Option<PathBuf>,
    listen: String,
    url: String,
}

/// How long to wait for the server to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl TestServer {
    /// Starts `bin serve` on a fresh temp data dir, with `config` (TOML) as
    /// its `mandate.toml` if given.
    pub fn start(bin: &Path, config: Option<&str>) -> Self {
        let mut s = Self::start_stopped(bin, config);
        s.spawn();
        s
    }

    /// As [`Self::start`], with the server's log (at `debug`) captured for
    /// [`Self::log`].
    pub fn start_logged(bin: &Path, config: Option<&str>) -> Self {
        let mut s = Self::start_stopped(bin, config);
        s.log = Some(s.dir.path().join("server.log"));
        s.spawn();
        s
    }

    /// Starts a node of a deployment of several on one database: `bin
    /// serve` on `listen`, on a fresh data dir with `config` (which names
    /// the shared database), its log captured. A node after the first gets
    /// a copy of `first`'s authority and vault keys, as an operator
    /// provisions one (docs/scale-out.md).
    pub fn start_node(bin: &Path, config: &str, listen: &str, first: Option<&Self>) -> Self {
        let mut s = Self::start_stopped(bin, Some(config));
        if let Some(first) = first {
            for key in ["authority.key", "vault.key"] {
                let to = s.data_dir().join(key);
                std::fs::copy(first.data_dir().join(key), &to).expect("copy a key");
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .expect("key mode");
            }
        }
        s.listen = listen.to_owned();
        s.log = Some(s.dir.path().join("server.log"));
        s.spawn();
        s
    }

    /// Kills the server with SIGKILL and leaves it stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn start_stopped(bin: &Path, config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if let Some(c) = config {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&data)
                .expect("data dir");
            std::fs::write(data.join("mandate.toml"), c).expect("mandate.toml");
        }
        Self {
            bin: bin.to_path_buf(),
            dir,
            child: None,
            log: None,
            listen: "127.0.0.1:0".into(),
            url: String::new(),
        }
    }

    /// The captured log so far (empty unless started with
    /// [`Self::start_logged`]).
    #[must_use]
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    fn spawn(&mut self) {
        let (level, stderr) = match &self.log {
            Some(p) => (
                "debug",
                Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .expect("log file"),
                ),
            ),
            None => ("warn", Stdio::inherit()),
        };
        let mut child = Command::new(&self.bin)
            .args(["serve", "--listen", &self.listen, "--data"])
            .arg(self.data_dir())
            .env("MANDATE_LOG", level)
            .env_remove("MANDATE_LISTEN")
            .env_remove("MANDATE_PUBLIC_URL")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn mandate serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .expect("mandate serve printed nothing");
        let url = line
            .strip_prefix("mandate listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        self.listen = url.trim_start_matches("http://").to_owned();
        self.url = url;
        self.child = Some(child);
    }

    /// The server's base URL (also its issuer).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory next to the data dir.
    #[must_use]
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with SIGTERM and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Sends a signal (e.g. `HUP`) to the server.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
        }
    }

    /// Kills the server with SIGKILL (no chance to clean up) and starts it
    /// again on the same port and data dir.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Stops and starts again on the same port and data dir.
    pub fn restart(&mut self) -> bool {
        let clean = self.stop();
        self.spawn();
        clean
    }

    /// Runs `mandate init` on the data dir and returns the admin token.
    pub fn init_admin(&self) -> String {
        let out = Command::new(&self.bin)
            .args(["init", "--json", "--data"])
            .arg(self.data_dir())
            .env("MANDATE_LOG", "warn")
            .output()
            .expect("mandate init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("init json");
        v["token"].as_str().expect("token").to_owned()
    }

    /// Runs the CLI against this server, as the holder of `token`.
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> CliOutput {
        self.cli_with_input(token, args, "")
    }

    /// Runs the CLI with `input` on its standard input.
    pub fn cli_with_input(&self, token: Option<&str>, args: &[&str], input: &str) -> CliOutput {
        use std::io::Write as _;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("MANDATE_SERVER", &self.url)
            .env("MANDATE_LOG", "warn")
            .env_remove("MANDATE_TOKEN");
        if let Some(t) = token {
            cmd.env("MANDATE_TOKEN", t);
        }
        let mut child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mandate");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("stdin");
        }
        CliOutput(child.wait_with_output().expect("run mandate"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A finished CLI run.
#[derive(Debug)]
pub struct CliOutput(pub Output);

impl CliOutput {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.0.status.success()
    }

    #[must_use]
    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }

    #[must_use]
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    #[must_use]
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn success(&self) -> String {
        assert!(
            self.ok(),
            "command failed ({:?}):\nstdout: {}\nstderr: {}",
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.success()).expect("json output")
    }
}
