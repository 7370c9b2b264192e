"""What the SDK says to the authority and how it reads the answers, without
any I/O: requests are described as `Call`s and answers read from
`httpx.Response`s, so the sync `Mission` and the async `AsyncMission` send
the same bytes and read them the same way (and can only differ in how they
wait)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import rfc8785

from ._errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequired,
    ApprovalTimeout,
    AuthenticationFailed,
    Denied,
    MandateError,
    UnexpectedResponse,
)
from ._keys import MissionKey, s256

#: Refresh the credential when less than this many seconds remain.
REFRESH_MARGIN_SECS = 60
#: The authority holds one approval poll for at most a minute.
MAX_POLL_SECS = 50
#: Approved, yet escalated again this many times: give up.
MAX_APPROVAL_ROUNDS = 5

CONFIGURATION_PATH = "/.well-known/mandate-configuration"
PROBLEM_TYPE_PREFIX = "urn:mandate:problem:"
# `\Z`, not `$`: `$` also matches before a final newline, and a hostile
# answer's `"apr_x\n"` would pass as an approval id.
APPROVAL_ID = re.compile(r"^[A-Za-z0-9_]{1,128}\Z")


def normalize_server(server: str) -> str:
    url = httpx.URL(server)
    if url.scheme not in ("http", "https") or not url.host:
        raise MandateError("invalid_server", f"`{server}` is not an http(s) URL")
    if url.query or url.fragment:
        raise MandateError("invalid_server", f"`{server}` has a query or fragment")
    return str(url).rstrip("/")


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    u = httpx.URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return (u.scheme, u.host, port)


def _is_problem(resp: httpx.Response) -> bool:
    ctype: str = resp.headers.get("content-type", "")
    return ctype.split(";")[0].strip() == "application/problem+json"


def is_problem(resp: httpx.Response) -> bool:
    """A refusal as a problem document: what `gateway_problem` reads (its
    body is read only then)."""
    return resp.status_code >= 400 and _is_problem(resp)


def _json(resp: httpx.Response) -> Any:
    try:
        return json.loads(resp.content)
    except (ValueError, UnicodeDecodeError) as e:
        raise UnexpectedResponse(
            f"the server's answer ({resp.status_code}) is not JSON: {e}", status=resp.status_code
        ) from e


def problem_error(status: int, problem: dict[str, Any]) -> MandateError:
    """The exception a Mandate problem document stands for."""
    code = problem.get("code")
    detail = problem.get("detail")
    if not isinstance(code, str) or not code:
        return UnexpectedResponse(f"a problem ({status}) without a `code`", status=status)
    if not isinstance(detail, str):
        detail = code
    if code == "approval_required":
        aid = problem.get("approval_id")
        url = problem.get("approval_url")
        if not isinstance(aid, str) or not APPROVAL_ID.match(aid):
            return UnexpectedResponse(
                "an `approval_required` answer without a usable `approval_id`", status=status
            )
        return ApprovalRequired(
            detail,
            approval_id=aid,
            approval_url=url if isinstance(url, str) else None,
            status=status,
            problem=problem,
        )
    if status == 401:
        return AuthenticationFailed(code, detail, status=status, problem=problem)
    if status == 403:
        return Denied(code, detail, status=status, problem=problem)
    return MandateError(code, detail, status=status, problem=problem)


def read_json(resp: httpx.Response) -> dict[str, Any]:
    """A success's JSON object, or the error the answer stands for. Anything
    else (no JSON, a refusal without a problem document) is an
    `UnexpectedResponse`: never a success."""
    if 200 <= resp.status_code < 300:
        body = _json(resp)
        if not isinstance(body, dict):
            raise UnexpectedResponse("the server's answer is not a JSON object", status=200)
        return body
    if _is_problem(resp):
        body = _json(resp)
        if isinstance(body, dict):
            raise problem_error(resp.status_code, body)
    raise UnexpectedResponse(
        f"the server answered {resp.status_code} without a problem document",
        status=resp.status_code,
    )


def gateway_problem(resp: httpx.Response) -> MandateError | None:
    """For an answer through a gateway (its body read): the error if it is
    Mandate's own refusal (a problem document of type
    `urn:mandate:problem:…`), `None` if it is the upstream's answer."""
    if resp.status_code < 400 or not _is_problem(resp):
        return None
    try:
        body = json.loads(resp.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    kind = body.get("type")
    if not isinstance(kind, str) or not kind.startswith(PROBLEM_TYPE_PREFIX):
        return None
    return problem_error(resp.status_code, body)


def field(doc: dict[str, Any], name: str, kind: type, what: str) -> Any:
    v = doc.get(name)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise UnexpectedResponse(f"{what} has no usable `{name}`")
    return v


def check_approval_id(approval_id: str) -> None:
    if not APPROVAL_ID.match(approval_id):
        raise MandateError("invalid_request", f"`{approval_id}` is not an approval id")


def approved(approval_id: str, view: dict[str, Any], waited: float) -> None:
    """Returns if the approval request was approved; raises for how it ended
    otherwise."""
    status = view.get("status")
    if status == "approved":
        return
    if status == "denied":
        reason = view.get("decision_reason")
        raise ApprovalDenied(approval_id, reason if isinstance(reason, str) else None)
    if status == "expired":
        raise ApprovalExpired(approval_id)
    if status == "pending":
        raise ApprovalTimeout(approval_id, waited)
    raise UnexpectedResponse(f"approval request `{approval_id}` has status {status!r}")


@dataclass
class Call:
    """One request to the authority, for a sender to build on its client
    (which adds its timeouts)."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any = None
    params: dict[str, str] | None = None


class Configuration:
    """What `/.well-known/mandate-configuration` says, as far as agents need."""

    def __init__(self, doc: dict[str, Any]) -> None:
        what = "the authority's configuration"
        self.issuer: str = field(doc, "issuer", str, what).rstrip("/")
        self.mission_start_endpoint: str = field(doc, "mission_start_endpoint", str, what)
        gw = doc.get("gateway_base")
        mcp = doc.get("mcp_base")
        self.gateway_base: str = gw if isinstance(gw, str) and gw else f"{self.issuer}/gw/"
        self.mcp_base: str = mcp if isinstance(mcp, str) and mcp else f"{self.issuer}/mcp/"
        self.raw = doc


def configuration_request(server: str) -> Call:
    return Call("GET", f"{server}{CONFIGURATION_PATH}", {})


def start_request(config: Configuration, server: str, key: MissionKey, start_token: str) -> Call:
    proof = key.dpop_proof("POST", config.mission_start_endpoint, start_token)
    return Call(
        "POST", f"{server}/v1/missions/start", {"DPoP": proof}, {"start_token": start_token}
    )


class Issued:
    """A credential as the authority issued it (start or refresh)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        what = "the credential response"
        self.credential: str = field(doc, "credential", str, what)
        self.expires_at: int = field(doc, "expires_at", int, what)
        self.mission: dict[str, Any] = field(doc, "mission", dict, what)
        self.mission_id: str = field(self.mission, "id", str, "the mission")


def refresh_request(config: Configuration, server: str, key: MissionKey, mission_id: str) -> Call:
    path = f"/v1/missions/{quote(mission_id, safe='')}/credential"
    return Call("POST", f"{server}{path}", {"DPoP": key.dpop_proof("POST", config.issuer + path)})


def authorized_request(
    config: Configuration,
    server: str,
    key: MissionKey,
    credential: str,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
) -> Call:
    """A request to the authority under the mission: the credential and a
    DPoP proof for it (whose `htu` leaves the query out)."""
    headers = {
        "Authorization": f"DPoP {credential}",
        "DPoP": key.dpop_proof(method, config.issuer + path, credential),
    }
    return Call(method, f"{server}{path}", headers, body, query)


def approval_path(approval_id: str) -> str:
    check_approval_id(approval_id)
    return f"/v1/approvals/{approval_id}"


def delegate_body(
    *,
    goal: str,
    budget: int,
    agent: str | None,
    ephemeral: str | None,
    scope: str,
    boundaries: str,
    escalations: str,
    ttl_seconds: int | None,
    out_of_scope: str | None,
) -> dict[str, Any]:
    if (agent is None) == (ephemeral is None):
        raise MandateError("invalid_request", "name exactly one of `agent` and `ephemeral`")
    body: dict[str, Any] = {
        "goal": goal,
        "scope": scope,
        "boundaries": boundaries,
        "escalations": escalations,
        "budget": budget,
    }
    if agent is not None:
        body["agent"] = agent
    if ephemeral is not None:
        body["ephemeral"] = ephemeral
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if out_of_scope is not None:
        body["out_of_scope"] = out_of_scope
    return body


def check_proposal(
    proposal: dict[str, Any], asked: dict[str, Any], mission_id: str, key: MissionKey
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Checks that a delegation proposal binds this mission to exactly the
    child asked for before its link is signed (the link is this mission's
    consent to that child). Returns the child's body, the link claims and
    the proposal token."""
    what = "the delegation proposal"
    body: dict[str, Any] = field(proposal, "mission", dict, what)
    body_s256: str = field(proposal, "mission_s256", str, what)
    link: dict[str, Any] = field(proposal, "link", dict, what)
    token: str = field(proposal, "proposal", str, what)
    computed = s256(rfc8785.dumps(body))
    parent = link.get("parent") if isinstance(link.get("parent"), dict) else {}
    child = link.get("child") if isinstance(link.get("child"), dict) else {}
    ancestors = body.get("ancestors")
    last = ancestors[-1] if isinstance(ancestors, list) and ancestors else {}
    binds = (
        computed == body_s256
        and isinstance(parent, dict)
        and isinstance(child, dict)
        and isinstance(last, dict)
        and parent.get("mission_id") == mission_id
        and link.get("parent_jkt") == key.thumbprint
        and child.get("mission_id") == body.get("id")
        and child.get("mission_s256") == computed
        and child.get("agent") == body.get("agent")
        and link.get("exp") == body.get("expires_at")
        and last.get("id") == mission_id
    )
    if not binds:
        raise UnexpectedResponse(
            "the proposal does not bind this mission to the child it describes; nothing was signed"
        )
    policies = body.get("policies") if isinstance(body.get("policies"), dict) else {}
    budget = body.get("budget") if isinstance(body.get("budget"), dict) else {}
    if asked.get("agent") is not None:
        agent_ok = body.get("agent") == asked["agent"]
    else:
        agent_ok = body.get("agent") == f"{str(asked['ephemeral']).strip()}@{body.get('id')}"
    ttl = asked.get("ttl_seconds")
    created, expires = body.get("created_at"), body.get("expires_at")
    ttl_ok = ttl is None or (
        isinstance(created, int) and isinstance(expires, int) and expires - created == ttl
    )
    same = (
        agent_ok
        and isinstance(policies, dict)
        and isinstance(budget, dict)
        and body.get("goal") == str(asked["goal"]).strip()
        and policies.get("scope") == asked["scope"]
        and policies.get("boundaries") == asked["boundaries"]
        and policies.get("escalations") == asked["escalations"]
        and budget.get("requests") == asked["budget"]
        and body.get("out_of_scope") == (asked.get("out_of_scope") or "escalate")
        and ttl_ok
    )
    if not same:
        raise UnexpectedResponse("the proposed child is not the one asked for; nothing was signed")
    return body, link, token
