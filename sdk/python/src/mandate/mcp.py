"""The official MCP Python SDK (`mcp`, over `httpx2`) through Mandate's MCP
gateway (`/mcp/{server}`), each HTTP request signed with the mission key.
Needs the `mcp` extra.

    async with mandate.mcp.connect(mission, "billing") as client:
        result = await mandate.mcp.call_tool(client, mission, "refund",
                                             {"id": "42", "amount": 75000}, wait=300)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

try:
    import httpx2
    from mcp import Client
    from mcp.client.session import ClientRequestContext
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, ErrorData
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        f"{e}: mandate.mcp needs the mcp extra: pip install 'mandate-sdk[mcp]'"
    ) from e

from ._auth import check_origin
from ._errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequired,
    ApprovalTimeout,
    Denied,
    UnexpectedResponse,
)
from ._mission import AsyncMission
from ._protocol import APPROVAL_ID, MAX_APPROVAL_ROUNDS, origin, problem_error
from ._signing import sign_request, strip_signature

__all__ = [
    "McpAuth",
    "approval_elicitation",
    "call_tool",
    "connect",
    "decision",
    "raise_for_decision",
    "signed_http_client",
]

#: Where the gateway puts its decision on a refused tool call.
DECISION_META = "io.mandate/decision"


class McpAuth(httpx2.Auth):
    """Signs each request of the MCP client (POST, the GET stream, the
    closing DELETE) with the mission key; `Mcp-Session-Id` is covered once
    there is a session."""

    requires_request_body = True

    def __init__(self, mission: AsyncMission, *, also_to: Iterable[str] = ()) -> None:
        self._mission = mission
        self._allowed = mission.allowed_origins(also_to)

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        issuer = (await self._mission.configuration()).issuer
        check_origin(self._allowed, str(request.url), self._mission.server, issuer)
        await request.aread()
        for name in strip_signature(list(request.headers.keys())):
            del request.headers[name]
        credential = await self._mission.fresh_credential()
        signed = sign_request(
            self._mission.key,
            credential,
            request.method,
            str(request.url),
            dict(request.headers.items()),
            request.content or None,
        )
        for k, v in signed.items():
            request.headers[k] = v
        yield request


def signed_http_client(
    mission: AsyncMission, *, also_to: Iterable[str] = (), **kwargs: Any
) -> httpx2.AsyncClient:
    """An `httpx2.AsyncClient` for `streamable_http_client(url, http_client=…)`."""
    kwargs.setdefault("timeout", httpx2.Timeout(30.0, read=300.0))
    return httpx2.AsyncClient(auth=McpAuth(mission, also_to=also_to), **kwargs)


async def _approval_of(mission: AsyncMission, url: str) -> str | None:
    """The approval id in `url`, if it names an approval request of the
    mission's own authority (`{issuer}/v1/approvals/{id}`); else `None`."""
    issuer = (await mission.configuration()).issuer
    prefix = f"{issuer}/v1/approvals/"
    if not url.startswith(prefix) or origin(url) != origin(issuer):
        return None
    aid = url[len(prefix) :]
    return aid if APPROVAL_ID.match(aid) else None


def approval_elicitation(
    mission: AsyncMission,
    *,
    wait: float | None,
    on_wait: Callable[[ApprovalRequired], None] | None = None,
) -> Callable[[ClientRequestContext, ElicitRequestParams], Awaitable[ElicitResult | ErrorData]]:
    """An `elicitation_callback` for the MCP revision 2026-07-28, where the
    gateway asks for an escalated call's approval as a URL-mode elicitation.
    With `wait`, it long-polls that approval request (by id, at the mission's
    authority; the URL is not opened) and accepts once approved, so the SDK's
    retry goes through; without `wait`, or if the person denies, it declines,
    and the call comes back as Mandate's escalated tool result. Any other
    elicitation is declined."""

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        url = getattr(params, "url", None)
        aid = await _approval_of(mission, url) if isinstance(url, str) else None
        if aid is None or wait is None:
            return ElicitResult(action="decline")
        if on_wait is not None:
            on_wait(ApprovalRequired(params.message, approval_id=aid, approval_url=url))
        try:
            await mission.await_approval(aid, max_wait=wait)
        except (ApprovalDenied, ApprovalExpired, ApprovalTimeout):
            return ElicitResult(action="decline")
        return ElicitResult(action="accept")

    return elicit


@asynccontextmanager
async def connect(
    mission: AsyncMission,
    server: str,
    *,
    mode: str = "legacy",
    wait: float | None = None,
    on_wait: Callable[[ApprovalRequired], None] | None = None,
    **client_kwargs: Any,
) -> AsyncIterator[Client]:
    """An MCP `Client` connected to MCP server `server` behind the mission's
    gateway (a name, or the full `/mcp/{server}` URL). `mode` is the SDK's
    connect mode: `legacy` (the initialize handshake) by default, where an
    escalated tool call comes back as a tool result `call_tool` can wait on;
    `auto` speaks 2026-07-28 where the gateway offers it, and there the
    approval is asked for through the protocol: `wait` and `on_wait` then
    apply to every call (see `approval_elicitation`)."""
    url = server if "://" in server else await mission.mcp_url(server)
    if mode != "legacy":
        client_kwargs.setdefault(
            "elicitation_callback", approval_elicitation(mission, wait=wait, on_wait=on_wait)
        )
    async with signed_http_client(mission) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, **client_kwargs) as client:
            yield client


def decision(result: CallToolResult) -> dict[str, Any] | None:
    """Mandate's decision on a refused tool call (`_meta["io.mandate/decision"]`),
    or `None` if the call was not refused by Mandate."""
    meta = result.meta or {}
    d = meta.get(DECISION_META)
    return d if isinstance(d, dict) else None


def raise_for_decision(result: CallToolResult) -> None:
    """Raises `ApprovalRequired` or `Denied` if Mandate refused the call."""
    d = decision(result)
    if d is None:
        return
    if not result.is_error:
        raise UnexpectedResponse("a tool result with a Mandate decision that is not an error")
    problem = {
        "code": d.get("code"),
        "detail": f"the MCP gateway refused the call ({d.get('reason', d.get('code'))})",
        "policies": d.get("policies"),
        "approval_id": d.get("approval_id"),
        "approval_url": d.get("approval_url"),
    }
    error = problem_error(403, problem)
    if isinstance(error, ApprovalRequired | Denied | UnexpectedResponse):
        raise error
    raise Denied(error.code, error.detail, status=403, problem=problem)


async def call_tool(
    client: Client,
    mission: AsyncMission,
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    wait: float | None = None,
    on_wait: Callable[[ApprovalRequired], None] | None = None,
) -> CallToolResult:
    """`client.call_tool`, with Mandate's refusals as exceptions. With `wait`
    (seconds), an escalated call waits for the person's decision and is
    sent again; without, it raises `ApprovalRequired`."""
    for _ in range(MAX_APPROVAL_ROUNDS):
        result = await client.call_tool(name, arguments or {})
        try:
            raise_for_decision(result)
        except ApprovalRequired as e:
            if wait is None:
                raise
            if on_wait is not None:
                on_wait(e)
            await mission.await_approval(e.approval_id, max_wait=wait)
            continue
        return result
    raise Denied(
        "approval_required", f"`{name}` escalated again after {MAX_APPROVAL_ROUNDS} approvals"
    )
