"""The official MCP Python SDK through the MCP gateway (`/mcp/billing`, the
demo's MCP server), each HTTP request signed by the SDK."""

from __future__ import annotations

import pytest

import mandate
import mandate.mcp
from conftest import Lab


def _text(result: object) -> str:
    content = getattr(result, "content", [])
    return "".join(getattr(c, "text", "") for c in content)


async def test_mcp_tools_through_the_signed_transport(lab: Lab) -> None:
    async with await mandate.AsyncMission.start(lab.url, lab.mission()) as m:
        async with mandate.mcp.connect(m, "billing") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert {"get_invoice", "refund"} <= set(tools)
            result = await mandate.mcp.call_tool(client, m, "get_invoice", {"id": "42"})
            assert not result.is_error
            assert "ACME" in _text(result)

            with pytest.raises(mandate.ApprovalRequired) as e:
                await mandate.mcp.call_tool(client, m, "refund", {"id": "42", "amount": 75000})
            assert e.value.approval_id.startswith("apr_")

            alice = lab.person()
            done = await mandate.mcp.call_tool(
                client, m, "refund", {"id": "42", "amount": 75000}, wait=60, on_wait=alice
            )
            alice.join()
            assert alice.seen == [e.value.approval_id]
            assert not done.is_error
            assert mandate.mcp.decision(done) is None


async def test_mcp_without_the_signature_is_refused(lab: Lab) -> None:
    import httpx

    r = httpx.post(
        f"{lab.url}/mcp/billing",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert r.status_code == 401


async def test_mcp_2026_07_28_asks_for_the_approval_in_the_protocol(lab: Lab) -> None:
    import mcp.client.session

    # Through the gateway `server/discover` is answered at once; a loaded
    # test machine must not make the SDK fall back to the session era.
    mcp.client.session.DISCOVER_TIMEOUT_SECONDS = 60.0
    async with await mandate.AsyncMission.start(lab.url, lab.mission()) as m:
        alice = lab.person()
        async with mandate.mcp.connect(m, "billing", mode="auto", wait=60, on_wait=alice) as c:
            assert c.protocol_version == "2026-07-28"
            # The plain SDK call: the gateway asks (URL elicitation), the SDK
            # waits for alice, accepts, and its retry goes through.
            done = await c.call_tool("refund", {"id": "43", "amount": 75000})
            alice.join()
            assert len(alice.seen) == 1
            assert not done.is_error
            assert "issued" in _text(done)
        # Without a wait the elicitation is declined: Mandate's escalated answer.
        async with mandate.mcp.connect(m, "billing", mode="auto") as c:
            with pytest.raises(mandate.ApprovalRequired):
                await mandate.mcp.call_tool(c, m, "refund", {"id": "44", "amount": 75000})
