"""`httpx.Auth` that signs every request with the mission key (RFC 9421)
and turns Mandate's refusals into exceptions."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from typing import TYPE_CHECKING

import httpx

from . import _protocol as p
from ._errors import ApprovalRequired, AuthenticationFailed, MandateError
from ._keys import MissionKey
from ._signing import sign_request, strip_signature

if TYPE_CHECKING:
    from ._mission import AsyncMission, Mission


def check_origin(
    allowed: set[tuple[str, str, int]], url: str | httpx.URL, server: str, issuer: str
) -> None:
    """The signed credential goes to the mission's authority (the server it
    was started with, or the issuer that server names), or to an origin
    named on purpose; nowhere by accident."""
    if p.origin(url) not in allowed and p.origin(url) != p.origin(issuer):
        u = httpx.URL(url)
        raise MandateError(
            "not_allowed_origin",
            f"refusing to send the mission's credential to "
            f"`{u.scheme}://{u.netloc.decode()}`: the mission's authority is `{server}` "
            f"(name the origin in `also_to` to send it there)",
        )


def sign_httpx(request: httpx.Request, key: MissionKey, credential: str) -> None:
    """Signs an httpx request in place; its body must have been read."""
    for name in strip_signature(list(request.headers.keys())):
        del request.headers[name]
    body = request.content or None
    for k, v in sign_request(
        key, credential, request.method, str(request.url), request.headers, body
    ).items():
        request.headers[k] = v


#: Told each time a call waits for a person: the approval request to decide.
OnWait = Callable[[ApprovalRequired], None]


class _Rounds:
    """What to do after one answer: the bookkeeping both flows share."""

    def __init__(self, wait: float | None, on_wait: OnWait | None = None) -> None:
        self.wait = wait
        self.on_wait = on_wait
        self.deadline = time.monotonic() + (wait or 0.0)
        self.approvals = 0
        self.refreshed = False

    def next_step(self, error: MandateError) -> str:
        """`refresh`, `wait` or `raise`."""
        if (
            isinstance(error, AuthenticationFailed)
            and error.code == "credential_expired"
            and not self.refreshed
        ):
            self.refreshed = True
            return "refresh"
        if (
            isinstance(error, ApprovalRequired)
            and self.wait is not None
            and self.approvals < p.MAX_APPROVAL_ROUNDS
        ):
            self.approvals += 1
            if self.on_wait is not None:
                self.on_wait(error)
            return "wait"
        return "raise"

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class MandateAuth(httpx.Auth):
    """Signs each request with the mission key: `Signature-Key` carrying the
    credential (refreshed when it is about to expire), `Content-Digest` for
    a body, `Signature-Input` and `Signature`. Headers the gateway wants
    covered when sent (`Mandate-Justification`, `Mcp-Session-Id`) are.

    An answer that is Mandate's own refusal (a problem document of type
    `urn:mandate:problem:…`) raises: `ApprovalRequired` (or, with `wait`,
    waits for the person and sends the request again), `Denied`,
    `AuthenticationFailed` or `MandateError`, each with the problem's
    `code`. The upstream's answers, errors included, are returned as they are.
    `on_wait` is told each time a call starts waiting (to show a person which
    request to approve).

    Use it with a client that does not follow redirects (httpx's default):
    a followed redirect would carry the signature headers to the new URL.
    """

    requires_request_body = True

    def __init__(
        self,
        mission: Mission | AsyncMission,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
    ) -> None:
        self._mission = mission
        self._wait = wait
        self._on_wait = on_wait
        self._allowed = mission.allowed_origins(also_to)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        from ._mission import Mission

        m = self._mission
        if not isinstance(m, Mission):
            raise TypeError("this auth belongs to an AsyncMission: use it with httpx.AsyncClient")
        check_origin(self._allowed, request.url, m.server, m.configuration().issuer)
        request.read()
        rounds = _Rounds(self._wait, self._on_wait)
        while True:
            sign_httpx(request, m.key, m.fresh_credential())
            response = yield request
            if not p.is_problem(response):
                return
            response.read()
            error = p.gateway_problem(response)
            if error is None:
                return
            step = rounds.next_step(error)
            if step == "refresh":
                m.refresh()
            elif step == "wait" and isinstance(error, ApprovalRequired):
                m.await_approval(error.approval_id, max_wait=rounds.left())
            else:
                raise error

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        from ._mission import AsyncMission

        m = self._mission
        if not isinstance(m, AsyncMission):
            raise TypeError("this auth belongs to a Mission: use it with httpx.Client")
        issuer = (await m.configuration()).issuer
        check_origin(self._allowed, request.url, m.server, issuer)
        await request.aread()
        rounds = _Rounds(self._wait, self._on_wait)
        while True:
            sign_httpx(request, m.key, await m.fresh_credential())
            response = yield request
            if not p.is_problem(response):
                return
            await response.aread()
            error = p.gateway_problem(response)
            if error is None:
                return
            step = rounds.next_step(error)
            if step == "refresh":
                await m.refresh()
            elif step == "wait" and isinstance(error, ApprovalRequired):
                await m.await_approval(error.approval_id, max_wait=rounds.left())
            else:
                raise error
