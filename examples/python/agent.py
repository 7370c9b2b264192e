"""A Python agent on a Mandate mission, with the Python SDK (sdk/python).

It starts its mission from a start token with a fresh key, then, each
request signed with that key through the gateway of `mandate serve --config
examples/mandate.toml` in front of `mandate demo upstreams`:

  1. reads invoice 42 (in scope: allowed),
  2. tries HR records (a boundary: denied, whatever the mission says),
  3. asks for a 75,000 refund (escalated: it waits for a person's approval,
     then the same call goes through),
  4. reads the invoice again over MCP (the official MCP SDK, `/mcp/billing`),
  5. ends its mission (the key file is deleted).

usage: agent.py START_TOKEN [--server URL] [--state FILE] [--wait SECONDS]
(run.sh beside it creates the mission, runs this, and plays the approver.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import mandate
import mandate.mcp


def said_to_wait(e: mandate.ApprovalRequired) -> None:
    print(f"   waiting for a person: approval request {e.approval_id} ({e.approval_url})")
    print(f"   (its principal runs `mandate approvals approve {e.approval_id}`)", flush=True)


async def run(args: argparse.Namespace) -> None:
    mission = await mandate.AsyncMission.start(args.server, args.start_token, state=args.state)
    async with mission:
        print(
            f"started mission {mission.mission_id} with a fresh key (jkt {mission.key.thumbprint})"
        )
        async with mission.client(wait=args.wait, on_wait=said_to_wait) as http:
            r = await http.get(await mission.gateway_url("billing", "/invoices/42"))
            print(f"1. invoice 42: {r.status_code} {r.json()}")

            try:
                await http.get(await mission.gateway_url("hr", "/people/7"))
                print("2. HR records: allowed?! (this should not happen)")
                sys.exit(1)
            except mandate.Denied as e:
                print(f"2. HR records: denied ({e.code}) by {', '.join(e.policies)}")

            print("3. refund of 75,000 on invoice 42: over 50,000, a person decides")
            r = await http.post(
                await mission.gateway_url("billing", "/refunds/42"),
                json={"amount": 75000},
                headers={"Mandate-Justification": "ACME was billed twice"},
            )
            print(f"   refund: {r.status_code} {r.json()}")

        async with mandate.mcp.connect(mission, "billing") as mcp:
            tools = [t.name for t in (await mcp.list_tools()).tools]
            result = await mandate.mcp.call_tool(mcp, mission, "get_invoice", {"id": "42"})
            text = "".join(getattr(c, "text", "") for c in result.content)
            print(f"4. over MCP: tools {tools}; get_invoice → {text}")

        await mission.end("invoice 42 reconciled")
        print(f"5. ended mission {mission.mission_id}; its key ({args.state}) is deleted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("start_token", help="the mission's one-time start token (mst_…)")
    ap.add_argument("--server", default=os.environ.get("MANDATE_SERVER", "http://127.0.0.1:7878"))
    ap.add_argument("--state", default="python-mission.json", help="the mission state file")
    ap.add_argument("--wait", type=float, default=300, help="seconds to wait for an approval")
    args = ap.parse_args()
    try:
        asyncio.run(run(args))
    except mandate.MandateError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
