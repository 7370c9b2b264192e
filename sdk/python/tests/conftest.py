"""A real `mandate serve` (the binary in MANDATE_BIN) on a temp data dir and a
port of its own, configured as examples/mandate.toml in front of a real
`mandate demo upstreams` (billing, HR, a CRM and an MCP server) on another.
People and missions are made with the real CLI."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
SCOPE = 'permit(principal, action == Action::"read", resource);\n'
BOUNDARIES = 'forbid(principal, action, resource) when { resource.hasTag("hr") };\n'


def _bin() -> str:
    b = os.environ.get("MANDATE_BIN")
    if not b:
        pytest.fail("set MANDATE_BIN to the `mandate` binary (the cargo test does)")
    return b


class Process:
    """A process of ours that prints where it listens on its first line."""

    def __init__(self, args: list[str], prefix: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            self.stop()
            pytest.fail(f"`{' '.join(args)}` printed nothing")
        assert first.startswith(prefix), first
        self.url = first[len(prefix) :].split()[0].rstrip("/")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    env["MANDATE_LOG"] = "warn"
    env.update(extra)
    return env


@dataclass
class Lab:
    bin: str
    url: str
    upstreams: str
    data: Path
    admin: str
    alice: str
    scratch: Path

    def cli(
        self, *args: str, token: str | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = _env(MANDATE_SERVER=self.url)
        if token is not None:
            env["MANDATE_TOKEN"] = token
        out = subprocess.run(
            [self.bin, *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.scratch,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"mandate {' '.join(args)} failed: {out.stderr}")
        return out

    def cli_json(self, *args: str, token: str | None = None) -> Any:
        return json.loads(self.cli("--json", *args, token=token).stdout)

    def mission(
        self,
        *,
        scope: str = SCOPE,
        boundaries: str = BOUNDARIES,
        budget: int = 100,
        agent: str = "billing-bot",
    ) -> str:
        """A new mission of alice's agent; returns its start token."""
        n = time.monotonic_ns()
        s, b = self.scratch / f"scope-{n}.cedar", self.scratch / f"bounds-{n}.cedar"
        s.write_text(scope)
        b.write_text(boundaries)
        created = self.cli_json(
            "mission",
            "create",
            "--agent",
            agent,
            "--goal",
            "Reconcile November invoices",
            "--scope",
            str(s),
            "--boundaries",
            str(b),
            "--ttl",
            "1h",
            "--budget",
            str(budget),
            token=self.alice,
        )
        token: str = created["start_token"]
        return token

    def approve_when_pending(
        self, path_part: str, *, via_cli: bool = True, deny: str | None = None
    ) -> threading.Thread:
        """A person (alice) who approves (or, with `deny`, denies for that
        reason), from her own terminal, the first pending request whose call
        names `path_part`, once it appears."""

        def run() -> None:
            for _ in range(600):
                pending = httpx.get(
                    f"{self.url}/v1/approvals",
                    params={"status": "pending"},
                    headers={"Authorization": f"Bearer {self.alice}"},
                ).json()
                items = pending if isinstance(pending, list) else pending.get("approvals", [])
                for a in items:
                    if path_part in json.dumps(a):
                        if deny is not None:
                            self.cli(
                                "approvals", "deny", a["id"], "--reason", deny, token=self.alice
                            )
                        elif via_cli:
                            self.cli("approvals", "approve", a["id"], token=self.alice)
                        else:
                            r = httpx.post(
                                f"{self.url}/v1/approvals/{a['id']}/approve",
                                json={},
                                headers={"Authorization": f"Bearer {self.alice}"},
                            )
                            r.raise_for_status()
                        return
                time.sleep(0.1)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    binary = _bin()
    root = tmp_path_factory.mktemp("mandate")
    upstreams = Process(
        [binary, "demo", "upstreams", "--listen", "127.0.0.1:0"],
        "demo upstreams listening on ",
        _env(),
    )
    try:
        config = (REPO / "examples" / "mandate.toml").read_text()
        config = config.replace("http://127.0.0.1:7879", upstreams.url).replace(
            'policies_dir = "examples/policies"',
            f'policies_dir = "{REPO / "examples" / "policies"}"',
        )
        data = root / "data"
        data.mkdir(mode=0o700)
        (root / "mandate.toml").write_text(config)
        server = Process(
            [
                binary,
                "serve",
                "--config",
                str(root / "mandate.toml"),
                "--data",
                str(data),
                "--listen",
                "127.0.0.1:0",
            ],
            "mandate listening on ",
            _env(),
        )
        try:
            init = subprocess.run(
                [binary, "init", "--json", "--data", str(data)],
                env=_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            admin = json.loads(init.stdout)["token"]
            scratch = root / "scratch"
            scratch.mkdir()
            lab = Lab(binary, server.url, upstreams.url, data, admin, "", scratch)
            lab.alice = lab.cli_json("principal", "add", "alice", token=admin)["token"]["token"]
            lab.cli("agent", "register", "billing-bot", token=lab.alice)
            yield lab
        finally:
            server.stop()
    finally:
        upstreams.stop()
