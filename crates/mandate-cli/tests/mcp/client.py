"""A scripted MCP client for the gateway's tests: the official MCP Python SDK
over streamable HTTP, each HTTP request RFC 9421-signed with the mission key
by an independent implementation (http-message-signatures).

usage: client.py URL KEY_PEM CREDENTIAL
       client.py --bridge MANDATE STATE_FILE URL   (stdio, through `mandate mcp bridge`)
MCP_CLIENT_MODE: the SDK's connect mode, `legacy` (the default here: the
initialize handshake) or `auto` (probe `server/discover`: 2026-07-28).
A URL-mode elicitation prints {"elicitation": {...}} and waits for one line
{"action": "accept"|"decline"} on stdin.
Reads one JSON command per line on stdin and prints one JSON answer per line:
  {"op": "list"}                      tools (with Mandate's access marks)
  {"op": "call", "tool": T, "args": {...}}
  {"op": "progress", "tool": T, "args": {...}}   a call with a progress callback
  {"op": "cancel", "tool": T, "args": {...}, "after": S}  cancel after S seconds
  {"op": "resources"} / {"op": "read", "uri": U} / {"op": "prompt", "name": N, "args": {...}}
  {"op": "raw", "body": "...", "session": true|false, "session_id": S, "headers": {...}}  a raw signed POST
  {"op": "session"}                   the session id
  {"op": "challenge", "method": M, "body": "...", "session_id": S}
                                      an unsigned request, then the same signed
                                      with exactly what its 401 asks for
  {"op": "exit"}
"""
import base64
import hashlib
import json
import os
import secrets
import sys

import anyio
import http_sf
import httpx2
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from http_sf.compat import Dictionary
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
import mcp.client.session

# The SDK gives `server/discover` 10 s before it falls back to the session
# era. Through the gateway the first discover starts the mission's server
# process; on a loaded test machine that alone can take longer, and the
# tests would then measure the machine's load instead of the gateway.
mcp.client.session.DISCOVER_TIMEOUT_SECONDS = 60.0

bridge = sys.argv[1] == "--bridge"
if bridge:
    mandate, state, url = sys.argv[2], sys.argv[3], sys.argv[4]
    pem = json.load(open(state))["key_pem"]
    credential = json.load(open(state))["credential"]
else:
    url, pem, credential = sys.argv[1], sys.argv[2], sys.argv[3]
# The seed sits at the same place in PKCS#8 v1 (what Mandate writes) and v2
# (what it wrote before).
der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
key = Ed25519PrivateKey.from_private_bytes(der[16:48])


class Keys(HTTPSignatureKeyResolver):
    def resolve_private_key(self, key_id):
        return key

    def resolve_public_key(self, key_id):
        return key.public_key()


signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=Keys())
seen_session = {"id": None}


def sign_headers(method, target, body, content_type, session=None, covered=None, label="sig"):
    """The signature headers of one request, computed on a mirror of it;
    covering `covered` if given, else what the gateway documents."""
    headers = {"Content-Type": content_type} if body else {}
    if session:
        headers["Mcp-Session-Id"] = session
    req = requests.Request(method, target, data=body or None, headers=headers).prepare()
    if body:
        req.headers["Content-Digest"] = str(Dictionary({"sha-256": hashlib.sha256(body).digest()}))
    if covered is None:
        covered = ["@method", "@authority", "@path", "signature-key"]
        if session:
            covered.append("mcp-session-id")
        if body:
            covered += ["content-type", "content-digest"]
    req.headers["Signature-Key"] = '%s=jwt;jwt="%s"' % (label, credential)
    signer.sign(req, key_id="mission", label=label, nonce=secrets.token_urlsafe(16),
                covered_component_ids=tuple(covered))
    return {k: req.headers[k] for k in ("Signature", "Signature-Input", "Signature-Key", "Content-Digest")
            if k in req.headers}


class MandateAuth(httpx2.Auth):
    requires_request_body = True

    async def async_auth_flow(self, request):
        await request.aread()
        body = request.content
        for k, v in sign_headers(request.method, str(request.url), body,
                                 request.headers.get("content-type", "application/json"),
                                 request.headers.get("mcp-session-id")).items():
            request.headers[k] = v
        response = yield request
        sid = response.headers.get("mcp-session-id")
        if sid:
            seen_session["id"] = sid


def dump(obj):
    if hasattr(obj, "model_dump"):
        return obj.model_dump(by_alias=True, mode="json", exclude_none=True)
    return obj


def out(v):
    print(json.dumps(v), flush=True)


stdin = None


async def elicit(context, params):
    from mcp.types import ElicitResult
    if getattr(params, "mode", None) == "url":
        # A person is shown the URL; the test plays them, and answers.
        out({"elicitation": {"mode": "url", "url": params.url, "message": params.message}})
        answer = json.loads(await stdin.readline())
        return ElicitResult(action=answer["action"])
    return ElicitResult(action="accept", content={"name": "alice"})


async def roots(context):
    """This client would hand the server the whole filesystem."""
    from mcp.types import ListRootsResult, Root
    return ListRootsResult(roots=[Root(uri="file:///", name="everything")])


async def run():
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(auth=MandateAuth(), timeout=timeout) as http:
        if bridge:
            from mcp import StdioServerParameters
            transport = StdioServerParameters(command=mandate, args=["mcp", "bridge", "--state", state, url])
        else:
            transport = streamable_http_client(url, http_client=http)
        global stdin
        mode = os.environ.get("MCP_CLIENT_MODE", "legacy")
        async with Client(transport, elicitation_callback=elicit, list_roots_callback=roots,
                          mode=mode) as client:
            out({"ready": True, "protocol_version": client.protocol_version,
                 "capabilities": dump(client.session.server_capabilities)})
            stdin = anyio.wrap_file(sys.stdin)
            async for line in stdin:
                cmd = json.loads(line)
                op = cmd["op"]
                try:
                    if op == "exit":
                        break
                    elif op == "list":
                        tools = (await client.list_tools()).tools
                        out({"tools": [dump(t) for t in tools]})
                    elif op == "call":
                        r = await client.call_tool(cmd["tool"], cmd.get("args") or {})
                        out({"result": dump(r)})
                    elif op == "progress":
                        seen = []

                        async def progress(p, total, message):
                            seen.append([p, total, message])

                        r = await client.call_tool(cmd["tool"], cmd.get("args") or {},
                                                   progress_callback=progress)
                        out({"result": dump(r), "progress": seen})
                    elif op == "cancel":
                        with anyio.move_on_after(cmd["after"]) as scope:
                            await client.call_tool(cmd["tool"], cmd.get("args") or {})
                        out({"cancelled": scope.cancelled_caught})
                    elif op == "resources":
                        r = await client.list_resources()
                        out({"resources": [dump(x) for x in r.resources]})
                    elif op == "read":
                        r = await client.read_resource(cmd["uri"])
                        out({"result": dump(r)})
                    elif op == "prompt":
                        r = await client.get_prompt(cmd["name"], cmd.get("args") or {})
                        out({"result": dump(r)})
                    elif op == "session":
                        out({"session": seen_session["id"]})
                    elif op == "raw":
                        body = cmd["body"].encode()
                        headers = {"Content-Type": "application/json",
                                   "Accept": "application/json, text/event-stream"}
                        if cmd.get("session_id"):
                            headers["Mcp-Session-Id"] = cmd["session_id"]
                            headers["Mcp-Protocol-Version"] = client.protocol_version
                        elif cmd.get("session"):
                            headers["Mcp-Session-Id"] = seen_session["id"]
                            headers["Mcp-Protocol-Version"] = client.protocol_version
                        headers.update(cmd.get("headers") or {})
                        headers.update(sign_headers("POST", url, body, "application/json",
                                                    headers.get("Mcp-Session-Id")))
                        async with httpx2.AsyncClient(timeout=timeout) as raw:
                            r = await raw.post(url, content=body, headers=headers)
                        text = r.text
                        if r.headers.get("content-type", "").startswith("text/event-stream"):
                            data = [l[5:].strip() for l in text.splitlines() if l.startswith("data:")]
                            text = data[-1] if data else ""
                        out({"status": r.status_code, "body": json.loads(text) if text else None})
                    elif op == "challenge":
                        method = cmd["method"]
                        body = cmd.get("body", "").encode()
                        headers = {"Accept": "application/json, text/event-stream"}
                        if body:
                            headers["Content-Type"] = "application/json"
                        if cmd.get("session_id"):
                            headers["Mcp-Session-Id"] = cmd["session_id"]
                            headers["Mcp-Protocol-Version"] = client.protocol_version
                        async with httpx2.AsyncClient(timeout=timeout) as raw:
                            r = await raw.request(method, url, content=body or None, headers=headers)
                            asked = {"status": r.status_code,
                                     "code": r.json().get("code"),
                                     "www_authenticate": r.headers.get("www-authenticate"),
                                     "accept_signature": r.headers.get("accept-signature")}
                            challenge = http_sf.parse(asked["accept_signature"].encode(), tltype="dictionary")
                            label, (components, params) = next(iter(challenge.items()))
                            covered = [c for c, _ in components]
                            headers.update(sign_headers(method, url, body, "application/json",
                                                        headers.get("Mcp-Session-Id"), covered=covered,
                                                        label=label))
                            # Only the answer's head: a GET stream stays open.
                            async with raw.stream(method, url, content=body or None, headers=headers) as r:
                                signed = {"status": r.status_code, "session": r.headers.get("mcp-session-id")}
                        out({"unsigned": asked, "covered": covered, "params": sorted(params),
                             "signed": signed})
                    else:
                        out({"unknown": op})
                except MCPError as e:
                    out({"error": dump(e.error)})


try:
    anyio.run(run)
except Exception as e:  # noqa: BLE001 - the test reads why the client could not go on
    out({"ready": False, "error": repr(e)})
    sys.exit(1)
