"""A `requests` auth that signs every request with the mission key, as
`MandateAuth` does for httpx. Needs the `requests` extra."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx
import requests
from requests.auth import AuthBase

from . import _protocol as p
from ._auth import OnWait, _Rounds, check_origin
from ._errors import ApprovalRequired, MandateError
from ._signing import sign_request, strip_signature

if TYPE_CHECKING:
    from ._mission import Mission


def _body(r: requests.PreparedRequest) -> bytes | None:
    body = r.body
    if body is None or body in (b"", ""):
        return None
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes):
        return body
    raise MandateError(
        "cannot_sign", "a streamed or file body cannot be signed: pass the body as bytes"
    )


def _problem(resp: requests.Response) -> MandateError | None:
    """Mandate's refusal, if the answer is one. Only a problem document's body
    is read: a streamed answer stays unread for the caller."""
    head = httpx.Response(resp.status_code, headers=dict(resp.headers.items()))
    if not p.is_problem(head):
        return None
    answer = httpx.Response(
        resp.status_code, headers=dict(resp.headers.items()), content=resp.content
    )
    return p.gateway_problem(answer)


class MandateRequestsAuth(AuthBase):
    """See `MandateAuth`. Redirects are never followed with the signature:
    on a redirect the signature headers are taken off before `requests`
    follows it (the next request goes unsigned and is refused by a gateway)."""

    def __init__(
        self,
        mission: Mission,
        *,
        wait: float | None = None,
        also_to: Iterable[str] = (),
        on_wait: OnWait | None = None,
    ) -> None:
        self._mission = mission
        self._wait = wait
        self._on_wait = on_wait
        self._allowed = mission.allowed_origins(also_to)

    def _sign(self, r: requests.PreparedRequest) -> None:
        if r.url is None or r.method is None:
            raise MandateError("cannot_sign", "a request without a method or URL")
        check_origin(
            self._allowed, r.url, self._mission.server, self._mission.configuration().issuer
        )
        for name in strip_signature(list(r.headers.keys())):
            del r.headers[name]
        headers = {
            k: v if isinstance(v, str) else v.decode("latin-1") for k, v in r.headers.items()
        }
        signed = sign_request(
            self._mission.key,
            self._mission.fresh_credential(),
            r.method,
            r.url,
            headers,
            _body(r),
        )
        r.headers.update(signed)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        self._sign(r)
        rounds = _Rounds(self._wait, self._on_wait)

        def on_response(resp: requests.Response, **kwargs: Any) -> requests.Response:
            while True:
                if resp.is_redirect:
                    for name in strip_signature(list(resp.request.headers.keys())):
                        del resp.request.headers[name]
                    return resp
                error = _problem(resp)
                if error is None:
                    return resp
                step = rounds.next_step(error)
                if step == "refresh":
                    self._mission.refresh()
                elif step == "wait" and isinstance(error, ApprovalRequired):
                    self._mission.await_approval(error.approval_id, max_wait=rounds.left())
                else:
                    raise error
                prep = resp.request.copy()
                assert isinstance(prep, requests.PreparedRequest)
                self._sign(prep)
                resp.close()
                retry: requests.Response = resp.connection.send(prep, **kwargs)
                retry.history.append(resp)
                retry.request = prep
                resp = retry

        r.register_hook("response", on_response)  # type: ignore[no-untyped-call]
        return r
