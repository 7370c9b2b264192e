"""The async flavour: the same mission, every network call awaited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import mandate
from conftest import Lab


async def test_async_start_get_boundary_and_end(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "a.json"
    async with await mandate.AsyncMission.start(lab.url, lab.mission(), state=state) as m:
        async with m.client() as http:
            r = await http.get(await m.gateway_url("billing", "/invoices/42"))
            assert r.status_code == 200
            assert r.json()["invoice"] == "42"
            # Several calls at once, each signed on its own (no replays).
            base = await m.gateway_url("billing", "/invoices/")
            many = await asyncio.gather(*(http.get(f"{base}{i}") for i in range(5)))
            assert [x.json()["invoice"] for x in many] == [str(i) for i in range(5)]
            with pytest.raises(mandate.Denied) as e:
                await http.get(await m.gateway_url("hr", "/people/7"))
            assert e.value.code == "boundary"
        assert (await m.info())["state"] == "active"
        await m.end()
        assert not state.exists()


async def test_async_escalation_waits_for_the_person(lab: Lab) -> None:
    async with await mandate.AsyncMission.start(lab.url, lab.mission()) as m:
        url = await m.gateway_url("billing", "/refunds/77")
        async with m.client() as http:
            with pytest.raises(mandate.ApprovalRequired) as e:
                await http.post(url, json={"amount": 80000})
        approval = e.value.approval_id
        alice = lab.person()
        async with m.client(wait=60, on_wait=alice) as http:
            r = await http.post(url, json={"amount": 80000})
        alice.join()
        assert alice.seen == [approval]
        assert r.status_code == 200
        assert r.json()["refund"] == "issued"
        view = await m.wait_for_approval(approval, max_wait=1)
        assert view["status"] == "approved"


async def test_async_wait_that_nobody_answers_times_out(lab: Lab) -> None:
    async with await mandate.AsyncMission.start(lab.url, lab.mission()) as m:
        url = await m.gateway_url("billing", "/refunds/78")
        async with m.client(wait=2) as http:
            with pytest.raises(mandate.ApprovalTimeout) as e:
                await http.post(url, json={"amount": 80000})
        assert e.value.code == "approval_timeout"


async def test_a_sync_auth_is_not_used_by_an_async_client(lab: Lab) -> None:
    with mandate.Mission.start(lab.url, lab.mission()) as m:
        import httpx

        async with httpx.AsyncClient(auth=m.auth()) as http:
            with pytest.raises(TypeError):
                await http.get(m.gateway_url("billing", "/invoices/1"))
