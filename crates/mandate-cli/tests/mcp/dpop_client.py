"""A scripted MCP client for the gateway's DPoP tests: the official MCP Python
SDK over streamable HTTP, each HTTP request (POST, the GET stream, the closing
DELETE) carrying the mission credential as `Authorization: DPoP` and a fresh
RFC 9449 proof by the mission key, made with PyJWT. Nothing of Mandate's own.

usage: dpop_client.py URL KEY_PEM CREDENTIAL
Reads one JSON command per line on stdin and prints one JSON answer per line:
  {"op": "list"}                      tools (with Mandate's access marks)
  {"op": "call", "tool": T, "args": {...}}
  {"op": "session"}                   the session id
  {"op": "exit"}                      ends the session, then prints every
                                      request made: [[method, status], ...]
"""
import base64
import hashlib
import json
import os
import secrets
import sys
import time

import anyio
import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

url, pem, credential = sys.argv[1], sys.argv[2], sys.argv[3]
# PKCS#8 v2 (with the public key) is not read by every library; the seed
# sits at the same place in v1 and v2.
der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
key = Ed25519PrivateKey.from_private_bytes(der[16:48])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


jwk = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
}
ath = b64url(hashlib.sha256(credential.encode()).digest())
requests_made = []
seen_session = {"id": None}


def proof(method, target):
    """An RFC 9449 proof for one request: htu is the URL without query and
    fragment, ath binds the credential it travels with."""
    claims = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": target,
        "iat": int(time.time()),
        "ath": ath,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "dpop+jwt", "jwk": jwk})


class DPoPAuth(httpx2.Auth):
    async def async_auth_flow(self, request):
        target = str(request.url.copy_with(query=None, fragment=None))
        request.headers["Authorization"] = "DPoP " + credential
        request.headers["DPoP"] = proof(request.method, target)
        response = yield request
        requests_made.append([request.method, response.status_code])
        sid = response.headers.get("mcp-session-id")
        if sid:
            seen_session["id"] = sid


def dump(obj):
    if hasattr(obj, "model_dump"):
        return obj.model_dump(by_alias=True, mode="json", exclude_none=True)
    return obj


def out(v):
    print(json.dumps(v), flush=True)


async def run():
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(auth=DPoPAuth(), timeout=timeout) as http:
        # The session era by default (its GET stream and DELETE are proven
        # too); MCP_CLIENT_MODE=auto speaks 2026-07-28.
        mode = os.environ.get("MCP_CLIENT_MODE", "legacy")
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            out({"ready": True, "protocol_version": client.protocol_version})
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
                    elif op == "session":
                        out({"session": seen_session["id"]})
                    else:
                        out({"unknown": op})
                except MCPError as e:
                    out({"error": dump(e.error)})
    out({"requests": requests_made})


anyio.run(run)
