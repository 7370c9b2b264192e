"""The state file is the CLI's: each reads what the other wrote. Files others
may read, or holding a key the credential does not bind, are refused."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import mandate
from conftest import Lab


def test_the_sdk_resumes_a_mission_the_cli_started(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "cli.json"
    lab.cli("mission", "start", lab.mission(), "--state", str(state))
    with mandate.Mission.load(state) as m, m.client() as http:
        assert m.state_path == state
        r = http.get(m.gateway_url("billing", "/invoices/42"))
        assert r.status_code == 200
        # The SDK's refresh rewrites the file (mode 0600) for the CLI.
        before = m.credential
        m.refresh()
        assert m.credential != before
        saved = json.loads(state.read_text())
        assert saved["credential"] == m.credential
        assert saved["expires_at"] == m.expires_at
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
    out = lab.cli(
        "mission",
        "call",
        "--state",
        str(state),
        "GET",
        f"{lab.url}/gw/billing/invoices/9",
    )
    assert '"invoice":"9"' in out.stdout.replace(" ", "")


def test_the_cli_uses_a_mission_the_sdk_started(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "sdk.json"
    m = mandate.Mission.start(lab.url, lab.mission(), state=state)
    m.close()
    saved = json.loads(state.read_text())
    assert set(saved) == {"server", "mission_id", "key_pem", "credential", "expires_at"}
    assert saved["key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    out = lab.cli(
        "mission", "call", "--state", str(state), "GET", f"{lab.url}/gw/billing/invoices/11"
    )
    assert '"invoice":"11"' in out.stdout.replace(" ", "")
    shown = lab.cli_json("mission", "credential", "--state", str(state))
    assert shown["credential"]
    # The CLI ends it and deletes the key.
    lab.cli("mission", "end", "--state", str(state))
    assert not state.exists()


def test_a_state_file_others_may_read_is_refused(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "m.json"
    mandate.Mission.start(lab.url, lab.mission(), state=state).close()
    os.chmod(state, 0o644)
    with pytest.raises(mandate.StateFileError) as e:
        mandate.Mission.load(state)
    assert e.value.code == "state_file"
    assert "chmod 600" in str(e.value)
    assert "0644" in str(e.value)
    os.chmod(state, 0o620)  # group-writable is as bad
    with pytest.raises(mandate.StateFileError):
        mandate.AsyncMission.load(state)
    os.chmod(state, 0o600)
    mandate.Mission.load(state).close()


def test_a_state_file_with_a_foreign_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "m.json"
    mandate.Mission.start(lab.url, lab.mission(), state=state).close()
    saved = json.loads(state.read_text())
    saved["key_pem"] = mandate.MissionKey.generate().to_pem()
    os.chmod(state, 0o600)
    state.write_text(json.dumps(saved))
    with pytest.raises(mandate.StateFileError) as e:
        mandate.Mission.load(state)
    assert "not the key the credential binds" in str(e.value)
    # And one whose credential is another mission's.
    other = tmp_path / "other.json"
    mandate.Mission.start(lab.url, lab.mission(), state=other).close()
    mixed = json.loads(other.read_text())
    mixed["mission_id"] = "msn_" + "0" * 26
    other.write_text(json.dumps(mixed))
    with pytest.raises(mandate.StateFileError):
        mandate.Mission.load(other)


def test_a_malformed_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "m.json"
    fd = os.open(state, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"server": "http://127.0.0.1:1", "mission_id": 5}')
    os.close(fd)
    with pytest.raises(mandate.StateFileError) as e:
        mandate.Mission.load(state)
    assert "not a mission state file" in str(e.value)
    with pytest.raises(mandate.StateFileError):
        mandate.Mission.load(tmp_path / "missing.json")


def test_start_refuses_to_overwrite_a_state_file(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "m.json"
    state.write_text("{}")
    token = lab.mission()
    with pytest.raises(mandate.StateFileError):
        mandate.Mission.start(lab.url, token, state=state)
    with pytest.raises(mandate.StateFileError) as e:
        mandate.Mission.start(lab.url, token, state=tmp_path / "no-such-dir" / "m.json")
    assert "not a writable directory" in str(e.value)
    # The start token was not spent.
    mandate.Mission.start(lab.url, token).close()


def test_ending_the_mission_deletes_its_key_and_stops_its_calls(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "m.json"
    m = mandate.Mission.start(lab.url, lab.mission(), state=state)
    http = m.client()
    url = m.gateway_url("billing", "/invoices/42")
    assert http.get(url).status_code == 200
    view = m.end("reconciled")
    assert view["state"] == "ended"
    assert view["end_reason"] == "completed"
    assert not state.exists()
    with pytest.raises(mandate.AuthenticationFailed) as e:
        http.get(url)
    assert e.value.code == "mission_ended"
    with pytest.raises(mandate.MandateError) as again:
        m.end()
    assert again.value.code == "mission_ended"
    http.close()
    m.close()


def test_a_revoked_mission_refuses_its_refresh(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m:
        lab.cli("revoke", "mission", m.mission_id, token=lab.alice)
        with pytest.raises(mandate.AuthenticationFailed) as e:
            m.refresh()
        assert e.value.code == "revoked"
        assert e.value.status == 401


def test_a_credential_about_to_expire_is_refreshed_before_the_call(
    lab: Lab, tmp_path: Path
) -> None:
    state = tmp_path / "m.json"
    lab.cli("mission", "start", lab.mission(), "--state", str(state))
    saved = json.loads(state.read_text())
    old = saved["credential"]
    saved["expires_at"] = 0  # as if it had run out
    state.write_text(json.dumps(saved))
    with mandate.Mission.load(state) as m, m.client() as http:
        assert http.get(m.gateway_url("billing", "/invoices/42")).status_code == 200
        assert m.credential != old
        assert m.expires_at > 0
    assert json.loads(state.read_text())["credential"] == m.credential
