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

    def person(self, *, deny: str | None = None, via_cli: bool = True) -> Person:
        """alice, at her own terminal: told (as `on_wait`) that a call waits
        on an approval request, she approves it (or, with `deny`, denies it
        for that reason) half a second later, while the call waits."""
        return Person(self, deny, via_cli)


class Person:
    def __init__(self, lab: Lab, deny: str | None, via_cli: bool) -> None:
        self.lab = lab
        self.deny = deny
        self.via_cli = via_cli
        self.seen: list[str] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, asked: Any) -> None:
        approval_id: str = asked.approval_id
        self.seen.append(approval_id)
        t = threading.Thread(target=self._decide, args=(approval_id,), daemon=True)
        t.start()
        self.threads.append(t)

    def _decide(self, approval_id: str) -> None:
        time.sleep(0.5)
        lab = self.lab
        if self.deny is not None:
            lab.cli("approvals", "deny", approval_id, "--reason", self.deny, token=lab.alice)
        elif self.via_cli:
            lab.cli("approvals", "approve", approval_id, token=lab.alice)
        else:
            r = httpx.post(
                f"{lab.url}/v1/approvals/{approval_id}/approve",
                json={},
                headers={"Authorization": f"Bearer {lab.alice}"},
            )
            r.raise_for_status()

    def join(self) -> None:
        for t in self.threads:
            t.join(30)


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
