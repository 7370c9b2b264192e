"""Signed calls through the HTTP gateway to the demo's upstreams: allowed,
stopped by a boundary, escalated to a person, refused elsewhere."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
import requests

import mandate
from conftest import Lab


def test_start_then_a_signed_get_reaches_the_upstream(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "m.json"
    with mandate.Mission.start(lab.url, lab.mission(), state=state) as m:
        assert m.mission_id.startswith("msn_")
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        with m.client() as http:
            r = http.get(m.gateway_url("billing", "/invoices/42"))
        assert r.status_code == 200
        assert r.json()["invoice"] == "42"
        assert r.json()["customer"] == "ACME"


def test_a_boundary_denies_with_its_code_and_policy(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m, m.client() as http:
        with pytest.raises(mandate.Denied) as e:
            http.get(m.gateway_url("hr", "/people/7"))
    assert e.value.code == "boundary"
    assert e.value.status == 403
    assert "hr-off-limits.cedar/hr-records" in e.value.policies


def test_an_unknown_route_is_mandates_refusal_not_an_upstream_answer(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m, m.client() as http:
        with pytest.raises(mandate.MandateError) as e:
            http.get(m.gateway_url("nowhere", "/x"))
    assert e.value.code == "unknown_route"
    assert e.value.status == 404


def test_an_upstream_refusal_is_returned_as_the_upstreams_answer(lab: Lab) -> None:
    # The CRM gets a wrong password for alice from the vault and refuses:
    # that is the upstream's answer (no Mandate problem), returned as is.
    lab.cli(
        "vault",
        "put",
        "legacy-crm",
        "alice",
        "--basic",
        "alice",
        stdin="not-hers\n",
        token=lab.admin,
    )
    try:
        with mandate.Mission.start(lab.url, lab.mission()) as m, m.client() as http:
            r = http.get(m.gateway_url("legacy-crm", "/accounts/ACME"))
        assert r.status_code == 401
        assert "urn:mandate:problem" not in r.text
    finally:
        lab.cli("vault", "delete", "legacy-crm", "alice", token=lab.admin)


def test_an_escalation_raises_then_the_waiting_call_completes(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m:
        url = m.gateway_url("billing", "/refunds/42")
        body = b'{"amount": 75000}'
        headers = {"Content-Type": "application/json", "Mandate-Justification": "double-billed"}
        with m.client() as http, pytest.raises(mandate.ApprovalRequired) as e:
            http.post(url, content=body, headers=headers)
        assert e.value.approval_id.startswith("apr_")
        assert e.value.approval_url == f"{lab.url}/v1/approvals/{e.value.approval_id}"
        assert e.value.code == "approval_required"
        # Printed, it tells a person which request to approve, and where.
        assert e.value.approval_id in str(e.value)
        assert e.value.approval_url in str(e.value)

        alice = lab.person()
        with m.client(wait=60, on_wait=alice) as http:
            r = http.post(url, content=body, headers=headers)
        alice.join()
        # The same call joined the pending request; the agent was told which.
        assert alice.seen == [e.value.approval_id]
        assert r.status_code == 200
        assert r.json()["refund"] == "issued"
        # The person saw the agent's reason (the header was signed and sent).
        asked = m.wait_for_approval(e.value.approval_id, max_wait=1)
        assert asked["justification"] == "double-billed"
        assert asked["status"] == "approved"
        # The grant was for that call, once: the same call again asks again.
        with m.client() as http, pytest.raises(mandate.ApprovalRequired):
            http.post(url, content=body, headers=headers)


def test_a_denied_approval_ends_the_wait_with_its_reason(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m, m.client() as http:
        url = m.gateway_url("billing", "/refunds/43")
        with pytest.raises(mandate.ApprovalRequired) as e:
            http.post(url, json={"amount": 99000})
        # alice denies the request the call waits on.
        alice = lab.person(deny="no ticket")
        with (
            m.client(wait=60, on_wait=alice) as waiting,
            pytest.raises(mandate.ApprovalDenied) as d,
        ):
            waiting.post(url, json={"amount": 99000})
        alice.join()
        assert d.value.approval_id == e.value.approval_id
        assert d.value.reason == "no ticket"
        assert d.value.code == "approval_denied"


def test_the_credential_goes_only_to_the_missions_authority(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m, m.client() as http:
        # The upstream itself, not through the gateway.
        with pytest.raises(mandate.MandateError) as e:
            http.get(f"{lab.upstreams}/billing/invoices/42")
        assert e.value.code == "not_allowed_origin"
        # Named on purpose, it goes (and the upstream, which checks nothing, answers).
        with m.client(also_to=[lab.upstreams]) as there:
            assert there.get(f"{lab.upstreams}/billing/invoices/42").status_code == 200


def test_the_requests_auth_signs_and_raises_the_same(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m:
        auth = m.requests_auth()
        r = requests.get(m.gateway_url("billing", "/invoices/7"), auth=auth, timeout=30)
        assert r.status_code == 200
        assert r.json()["invoice"] == "7"
        with pytest.raises(mandate.Denied) as e:
            requests.get(m.gateway_url("hr", "/people/7"), auth=auth, timeout=30)
        assert e.value.code == "boundary"
        url = m.gateway_url("billing", "/refunds/44")
        with pytest.raises(mandate.ApprovalRequired):
            requests.post(url, json={"amount": 60000}, auth=auth, timeout=30)
        alice = lab.person(via_cli=False)
        waiting = m.requests_auth(wait=60, on_wait=alice)
        r = requests.post(url, json={"amount": 60000}, auth=waiting, timeout=90)
        alice.join()
        assert len(alice.seen) == 1
        assert r.status_code == 200
        assert r.json()["refund"] == "issued"


def test_a_signature_is_what_the_gateway_checks(lab: Lab) -> None:
    """The same request unsigned, or with its body changed after signing,
    is refused by the gateway: the SDK's signature is what gets it through."""
    with mandate.Mission.start(lab.url, lab.mission()) as m:
        url = m.gateway_url("billing", "/invoices/42")
        r = httpx.get(url)
        assert r.status_code == 401
        req = httpx.Request(
            "POST",
            m.gateway_url("billing", "/refunds/1"),
            content=b'{"amount": 1}',
            headers={"Content-Type": "application/json"},
        )
        signed = next(m.auth().sync_auth_flow(req))
        tampered = httpx.Request(
            "POST", signed.url, headers=signed.headers, content=b'{"amount": 2}'
        )
        r = httpx.Client().send(tampered)
        assert r.status_code == 401
        assert r.json()["code"] == "bad_digest"


def test_a_query_is_signed_and_passes(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m, m.client() as http:
        r = http.get(m.gateway_url("billing", "/invoices/42"), params={"expand": "lines"})
        assert r.status_code == 200
        assert r.json()["invoice"] == "42"


def test_a_spent_budget_is_a_denial_with_its_code(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission(budget=1)) as m, m.client() as http:
        assert http.get(m.gateway_url("billing", "/invoices/1")).status_code == 200
        with pytest.raises(mandate.Denied) as e:
            http.get(m.gateway_url("billing", "/invoices/2"))
        assert e.value.code == "budget_exhausted"
