"""The agent's side of one mission, sync (`Mission`) and async
(`AsyncMission`): its key, its credential, its authority."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from . import _protocol as p
from ._errors import MandateError, StateFileError, TransportError, UnexpectedResponse
from ._keys import MissionKey
from ._state import SavedMission, check_binding, read_state, write_state

if TYPE_CHECKING:
    from ._auth import MandateAuth, OnWait
    from ._requests_auth import MandateRequestsAuth

StrPath = str | os.PathLike[str]


class _MissionCore:
    """What both flavours hold, and every step that does no I/O."""

    def __init__(
        self,
        *,
        server: str,
        key: MissionKey,
        mission_id: str,
        credential: str,
        expires_at: int,
        state_path: Path | None,
        view: dict[str, Any] | None,
    ) -> None:
        self._server = p.normalize_server(server)
        self._key = key
        self._mission_id = mission_id
        self._credential = credential
        self._expires_at = expires_at
        self._state_path = state_path
        self._view = view
        self._config: p.Configuration | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mission_id={self._mission_id!r}, server={self._server!r})"

    @property
    def mission_id(self) -> str:
        return self._mission_id

    @property
    def server(self) -> str:
        """The authority the mission was started with."""
        return self._server

    @property
    def key(self) -> MissionKey:
        return self._key

    @property
    def credential(self) -> str:
        """The current credential, as last issued (it may have expired)."""
        return self._credential

    @property
    def expires_at(self) -> int:
        return self._expires_at

    @property
    def state_path(self) -> Path | None:
        """The state file kept up to date with the credential, if any."""
        return self._state_path

    @property
    def last_view(self) -> dict[str, Any] | None:
        """The mission as of the last start or refresh in this process."""
        return self._view

    def saved(self) -> SavedMission:
        return SavedMission(
            server=self._server,
            mission_id=self._mission_id,
            key_pem=self._key.to_pem(),
            credential=self._credential,
            expires_at=self._expires_at,
        )

    def _needs_refresh(self) -> bool:
        return time.time() + p.REFRESH_MARGIN_SECS >= self._expires_at

    def _issued(self, issued: p.Issued) -> None:
        if issued.mission_id != self._mission_id:
            raise UnexpectedResponse(
                f"the authority issued a credential for mission `{issued.mission_id}`"
            )
        check_binding(self._key, self._mission_id, issued.credential)
        self._credential = issued.credential
        self._expires_at = issued.expires_at
        self._view = issued.mission
        if self._state_path is not None:
            write_state(self._state_path, self.saved(), create_new=False)

    def _ended(self) -> None:
        """The mission is over: its key is worthless; do not leave it lying around."""
        if self._state_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._state_path.unlink()
            self._state_path = None

    def allowed_origins(self, also_to: Iterable[str] = ()) -> set[tuple[str, str, int]]:
        return {p.origin(self._server), *(p.origin(o) for o in also_to)}


def _load(path: StrPath) -> tuple[SavedMission, MissionKey]:
    saved = read_state(path)
    key = MissionKey.from_pem(saved.key_pem)
    check_binding(key, saved.mission_id, saved.credential)
    return saved, key


def _check_new_state(state: StrPath | None) -> Path | None:
    """Checked before the start: a start token is spent once, and a key that
    cannot be saved would be lost with it."""
    if state is None:
        return None
    path = Path(state)
    if path.exists():
        raise StateFileError(f"`{path}` already exists; refusing to overwrite a mission key")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise StateFileError(f"cannot write `{path}`: `{parent}` is not a writable directory")
    return path


def _started(key: MissionKey, issued: p.Issued, state: Path | None) -> dict[str, Any]:
    check_binding(key, issued.mission_id, issued.credential)
    return {
        "key": key,
        "mission_id": issued.mission_id,
        "credential": issued.credential,
        "expires_at": issued.expires_at,
        "state_path": state,
        "view": issued.mission,
    }


class Mission(_MissionCore):
    """A mission, with blocking I/O (`httpx.Client`).

    Start one from a start token (`Mission.start`) or resume one from the
    state file the CLI or this SDK wrote (`Mission.load`). Sign requests
    with `mission.auth()` (httpx) or `mission.requests_auth()` (requests),
    or take a ready client: `mission.client()`.
    """

    def __init__(self, *, server: str, http: httpx.Client | None = None, **kw: Any) -> None:
        super().__init__(server=server, **kw)
        self._http = http or httpx.Client(timeout=30.0, follow_redirects=False)
        self._owns_http = http is None
        self._lock = threading.RLock()

    # -- starting and resuming --------------------------------------------

    @classmethod
    def start(
        cls,
        server: str,
        start_token: str,
        *,
        state: StrPath | None = None,
        http: httpx.Client | None = None,
    ) -> Mission:
        """Starts the mission with a fresh Ed25519 key. With `state`, writes
        the state file (mode 0600) the CLI reads, and keeps it up to date."""
        path = _check_new_state(state)
        server = p.normalize_server(server)
        client = http or httpx.Client(timeout=30.0, follow_redirects=False)
        try:
            config = p.Configuration(_send(client, p.configuration_request(server)))
            key = MissionKey.generate()
            issued = p.Issued(
                _send(client, p.start_request(config, server, key, start_token.strip()))
            )
        except BaseException:
            if http is None:
                client.close()
            raise
        m = cls(server=server, http=client, **_started(key, issued, path))
        m._owns_http = http is None
        m._config = config
        if path is not None:
            write_state(path, m.saved(), create_new=True)
        return m

    @classmethod
    def load(cls, path: StrPath, *, http: httpx.Client | None = None) -> Mission:
        """Resumes the mission in a state file (`mandate mission start
        --state`), refusing one others may read or whose key its credential
        does not bind. The file is kept up to date as the credential is
        refreshed, and deleted when the mission ends."""
        saved, key = _load(path)
        return cls(
            server=saved.server,
            http=http,
            key=key,
            mission_id=saved.mission_id,
            credential=saved.credential,
            expires_at=saved.expires_at,
            state_path=Path(path),
            view=None,
        )

    def save(self, path: StrPath, *, overwrite: bool = False) -> None:
        """Writes the state file (mode 0600) and keeps it up to date from now on."""
        write_state(path, self.saved(), create_new=not overwrite)
        self._state_path = Path(path)

    # -- the authority ----------------------------------------------------

    def configuration(self) -> p.Configuration:
        if self._config is None:
            self._config = p.Configuration(_send(self._http, p.configuration_request(self._server)))
        return self._config

    def refresh(self) -> None:
        """Gets a new credential by proving possession of the mission key."""
        with self._lock:
            req = p.refresh_request(self.configuration(), self._server, self._key, self._mission_id)
            self._issued(p.Issued(_send(self._http, req)))

    def fresh_credential(self) -> str:
        """A credential with at least a minute left, refreshing it if needed."""
        with self._lock:
            if self._needs_refresh():
                self.refresh()
            return self._credential

    def _authorized(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        http_timeout: float | None = None,
    ) -> dict[str, Any]:
        credential = self.fresh_credential()
        req = p.authorized_request(
            self.configuration(),
            self._server,
            self._key,
            credential,
            method,
            path,
            query=query,
            body=body,
        )
        return _send(self._http, req, http_timeout=http_timeout)

    def info(self) -> dict[str, Any]:
        """The mission as the authority sees it now."""
        return self._authorized("GET", "/v1/mission")

    def chain(self) -> list[str]:
        """This mission's delegation links, root first (empty for a mission a
        principal delegated directly)."""
        links = self._authorized("GET", "/v1/mission/chain").get("links")
        if not isinstance(links, list) or not all(isinstance(x, str) for x in links):
            raise UnexpectedResponse("the chain has no usable `links`")
        return links

    def end(self, reason: str | None = None) -> dict[str, Any]:
        """Ends the mission (the task is done): every credential dies with it,
        and the state file, if any, is deleted. A mission that had already
        ended (completed, expired, revoked) also has its state file deleted,
        and raises."""
        body = {"reason": reason} if reason is not None else {}
        try:
            view = self._authorized("POST", f"/v1/missions/{self._mission_id}/end", body=body)
        except MandateError as e:
            if e.code in ("mission_ended", "revoked"):
                self._ended()
            raise
        self._ended()
        return view

    def wait_for_approval(self, approval_id: str, max_wait: float = 300.0) -> dict[str, Any]:
        """Long-polls approval request `approval_id` of this mission until it
        is decided or expires, or `max_wait` seconds pass; returns it as it
        then is (`status`: `approved`, `denied`, `expired` or `pending`)."""
        path = p.approval_path(approval_id)
        deadline = time.monotonic() + max_wait
        while True:
            left = deadline - time.monotonic()
            wait = max(1, min(int(left), p.MAX_POLL_SECS))
            view = self._authorized(
                "GET", path, query={"wait": str(wait)}, http_timeout=wait + 15.0
            )
            if view.get("status") != "pending" or time.monotonic() >= deadline:
                return view

    def await_approval(self, approval_id: str, max_wait: float = 300.0) -> None:
        """Waits for approval request `approval_id`; returns once approved,
        raises `ApprovalDenied`, `ApprovalExpired` or `ApprovalTimeout`."""
        started = time.monotonic()
        view = self.wait_for_approval(approval_id, max_wait)
        p.approved(approval_id, view, time.monotonic() - started)

    def delegate(
        self,
        *,
        goal: str,
        budget: int,
        agent: str | None = None,
        ephemeral: str | None = None,
        scope: str = "",
        boundaries: str = "",
        escalations: str = "",
        ttl_seconds: int | None = None,
        out_of_scope: str | None = None,
    ) -> dict[str, Any]:
        """Delegates part of this mission to a sub-agent as a child mission
        (docs/delegation.md), as `mandate mission delegate` does: asks the
        authority for the child's body, checks that it binds this mission to
        exactly the child asked for, signs the link with this mission's key,
        and commits. Returns `{mission, start_token, start_token_expires_at}`:
        hand the start token to the sub-agent."""
        asked = p.delegate_body(
            goal=goal,
            budget=budget,
            agent=agent,
            ephemeral=ephemeral,
            scope=scope,
            boundaries=boundaries,
            escalations=escalations,
            ttl_seconds=ttl_seconds,
            out_of_scope=out_of_scope,
        )
        proposal = self._authorized("POST", "/v1/mission/delegations/proposal", body=asked)
        body, link, token = p.check_proposal(proposal, asked, self._mission_id, self._key)
        signed = self._key.sign_link(link)
        return self._authorized(
            "POST",
            "/v1/mission/delegations",
            body={"mission": body, "link": signed, "proposal": token},
        )

    # -- signing ----------------------------------------------------------

    def gateway_url(self, route: str, path: str = "/") -> str:
        """`{gateway_base}{route}{path}`: where a route's requests go."""
        return f"{self.configuration().gateway_base}{route}{path}"

    def mcp_url(self, server: str) -> str:
        return f"{self.configuration().mcp_base}{server}"

    def auth(
        self,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
    ) -> MandateAuth:
        """An `httpx.Auth` that signs every request with the mission key.
        With `wait` (seconds), a call that needs approval waits for the
        person's decision and is sent again; without, it raises
        `ApprovalRequired`. Requests go only to the mission's authority, or
        to the origins named in `also_to`."""
        from ._auth import MandateAuth

        return MandateAuth(self, wait=wait, also_to=also_to, on_wait=on_wait)

    def requests_auth(
        self,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
    ) -> MandateRequestsAuth:
        """As `auth()`, for `requests` (the `requests` extra)."""
        try:
            from ._requests_auth import MandateRequestsAuth
        except ImportError as e:
            raise ImportError(
                f"{e}: install the SDK with its requests extra: pip install 'mandate-sdk[requests]'"
            ) from e

        return MandateRequestsAuth(self, wait=wait, also_to=also_to, on_wait=on_wait)

    def client(
        self,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
        **kwargs: Any,
    ) -> httpx.Client:
        """An `httpx.Client` whose requests are signed (see `auth()`); it
        never follows redirects (a redirect would carry the signature away)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(
            auth=self.auth(wait=wait, also_to=also_to, on_wait=on_wait),
            follow_redirects=False,
            **kwargs,
        )

    # -- lifetime ---------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Mission:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncMission(_MissionCore):
    """A mission, with asyncio I/O (`httpx.AsyncClient`). The same as
    `Mission`, every network call awaited."""

    def __init__(self, *, server: str, http: httpx.AsyncClient | None = None, **kw: Any) -> None:
        super().__init__(server=server, **kw)
        self._http = http or httpx.AsyncClient(timeout=30.0, follow_redirects=False)
        self._owns_http = http is None
        self._lock = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        server: str,
        start_token: str,
        *,
        state: StrPath | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> AsyncMission:
        """See `Mission.start`."""
        path = _check_new_state(state)
        server = p.normalize_server(server)
        client = http or httpx.AsyncClient(timeout=30.0, follow_redirects=False)
        try:
            config = p.Configuration(await _asend(client, p.configuration_request(server)))
            key = MissionKey.generate()
            issued = p.Issued(
                await _asend(client, p.start_request(config, server, key, start_token.strip()))
            )
        except BaseException:
            if http is None:
                await client.aclose()
            raise
        m = cls(server=server, http=client, **_started(key, issued, path))
        m._owns_http = http is None
        m._config = config
        if path is not None:
            write_state(path, m.saved(), create_new=True)
        return m

    @classmethod
    def load(cls, path: StrPath, *, http: httpx.AsyncClient | None = None) -> AsyncMission:
        """See `Mission.load` (reading a local file does not wait on the network)."""
        saved, key = _load(path)
        return cls(
            server=saved.server,
            http=http,
            key=key,
            mission_id=saved.mission_id,
            credential=saved.credential,
            expires_at=saved.expires_at,
            state_path=Path(path),
            view=None,
        )

    def save(self, path: StrPath, *, overwrite: bool = False) -> None:
        write_state(path, self.saved(), create_new=not overwrite)
        self._state_path = Path(path)

    async def configuration(self) -> p.Configuration:
        if self._config is None:
            self._config = p.Configuration(
                await _asend(self._http, p.configuration_request(self._server))
            )
        return self._config

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        config = await self.configuration()
        req = p.refresh_request(config, self._server, self._key, self._mission_id)
        self._issued(p.Issued(await _asend(self._http, req)))

    async def fresh_credential(self) -> str:
        async with self._lock:
            if self._needs_refresh():
                await self._refresh_locked()
            return self._credential

    async def _authorized(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        http_timeout: float | None = None,
    ) -> dict[str, Any]:
        credential = await self.fresh_credential()
        req = p.authorized_request(
            await self.configuration(),
            self._server,
            self._key,
            credential,
            method,
            path,
            query=query,
            body=body,
        )
        return await _asend(self._http, req, http_timeout=http_timeout)

    async def info(self) -> dict[str, Any]:
        return await self._authorized("GET", "/v1/mission")

    async def chain(self) -> list[str]:
        links = (await self._authorized("GET", "/v1/mission/chain")).get("links")
        if not isinstance(links, list) or not all(isinstance(x, str) for x in links):
            raise UnexpectedResponse("the chain has no usable `links`")
        return links

    async def end(self, reason: str | None = None) -> dict[str, Any]:
        """See `Mission.end`."""
        body = {"reason": reason} if reason is not None else {}
        try:
            view = await self._authorized("POST", f"/v1/missions/{self._mission_id}/end", body=body)
        except MandateError as e:
            if e.code in ("mission_ended", "revoked"):
                self._ended()
            raise
        self._ended()
        return view

    async def wait_for_approval(self, approval_id: str, max_wait: float = 300.0) -> dict[str, Any]:
        """See `Mission.wait_for_approval`."""
        path = p.approval_path(approval_id)
        deadline = time.monotonic() + max_wait
        while True:
            left = deadline - time.monotonic()
            wait = max(1, min(int(left), p.MAX_POLL_SECS))
            view = await self._authorized(
                "GET", path, query={"wait": str(wait)}, http_timeout=wait + 15.0
            )
            if view.get("status") != "pending" or time.monotonic() >= deadline:
                return view

    async def await_approval(self, approval_id: str, max_wait: float = 300.0) -> None:
        started = time.monotonic()
        view = await self.wait_for_approval(approval_id, max_wait)
        p.approved(approval_id, view, time.monotonic() - started)

    async def delegate(
        self,
        *,
        goal: str,
        budget: int,
        agent: str | None = None,
        ephemeral: str | None = None,
        scope: str = "",
        boundaries: str = "",
        escalations: str = "",
        ttl_seconds: int | None = None,
        out_of_scope: str | None = None,
    ) -> dict[str, Any]:
        """See `Mission.delegate`."""
        asked = p.delegate_body(
            goal=goal,
            budget=budget,
            agent=agent,
            ephemeral=ephemeral,
            scope=scope,
            boundaries=boundaries,
            escalations=escalations,
            ttl_seconds=ttl_seconds,
            out_of_scope=out_of_scope,
        )
        proposal = await self._authorized("POST", "/v1/mission/delegations/proposal", body=asked)
        body, link, token = p.check_proposal(proposal, asked, self._mission_id, self._key)
        signed = self._key.sign_link(link)
        return await self._authorized(
            "POST",
            "/v1/mission/delegations",
            body={"mission": body, "link": signed, "proposal": token},
        )

    async def gateway_url(self, route: str, path: str = "/") -> str:
        return f"{(await self.configuration()).gateway_base}{route}{path}"

    async def mcp_url(self, server: str) -> str:
        return f"{(await self.configuration()).mcp_base}{server}"

    def auth(
        self,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
    ) -> MandateAuth:
        """See `Mission.auth`; for `httpx.AsyncClient`."""
        from ._auth import MandateAuth

        return MandateAuth(self, wait=wait, also_to=also_to, on_wait=on_wait)

    def client(
        self,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(
            auth=self.auth(wait=wait, also_to=also_to, on_wait=on_wait),
            follow_redirects=False,
            **kwargs,
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncMission:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _build(
    client: httpx.Client | httpx.AsyncClient, call: p.Call, http_timeout: float | None
) -> httpx.Request:
    return client.build_request(
        call.method,
        call.url,
        headers=call.headers,
        json=call.json,
        params=call.params,
        timeout=httpx.USE_CLIENT_DEFAULT if http_timeout is None else http_timeout,
    )


def _send(
    client: httpx.Client, call: p.Call, *, http_timeout: float | None = None
) -> dict[str, Any]:
    req = _build(client, call, http_timeout)
    try:
        resp = client.send(req)
    except httpx.HTTPError as e:
        raise TransportError(f"{req.method} {req.url}: {e}") from e
    return p.read_json(resp)


async def _asend(
    client: httpx.AsyncClient, call: p.Call, *, http_timeout: float | None = None
) -> dict[str, Any]:
    req = _build(client, call, http_timeout)
    try:
        resp = await client.send(req)
    except httpx.HTTPError as e:
        raise TransportError(f"{req.method} {req.url}: {e}") from e
    return p.read_json(resp)
