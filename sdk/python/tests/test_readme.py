"""The README's first example, run as written (only the server's address is
this test's), with a person approving the refund it waits on."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import Lab

README = Path(__file__).resolve().parents[1] / "README.md"


def _pending(lab: Lab) -> list[dict[str, object]]:
    r = httpx.get(
        f"{lab.url}/v1/approvals",
        params={"status": "pending"},
        headers={"Authorization": f"Bearer {lab.alice}"},
    )
    r.raise_for_status()
    items: list[dict[str, object]] = r.json()
    return items


def test_the_readme_example_runs(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert example is not None
    code = example.group(1).replace("http://127.0.0.1:7878", lab.url)
    assert len(code.splitlines()) < 20
    monkeypatch.chdir(tmp_path)
    before = {a["id"] for a in _pending(lab)}
    approved: list[object] = []

    def person() -> None:  # approves the refund the example waits on
        for _ in range(600):
            for a in _pending(lab):
                if a["id"] not in before and "refunds/42" in str(a):
                    lab.cli("approvals", "approve", str(a["id"]), token=lab.alice)
                    approved.append(a["id"])
                    return
            time.sleep(0.2)

    alice = threading.Thread(target=person, daemon=True)
    alice.start()
    scope: dict[str, object] = {"START_TOKEN": lab.mission()}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own example
    alice.join(5)
    assert approved
    assert scope["invoice"] == {
        "invoice": "42",
        "customer": "ACME",
        "total": 180000,
        "status": "double-billed",
    }
    refund = scope["refund"]
    assert isinstance(refund, httpx.Response)
    assert refund.status_code == 200
    assert refund.json()["refund"] == "issued"
    assert not (tmp_path / "mission.json").exists()  # ended: the key is deleted
