"""A signing forwarder for the MCP conformance run (scripts/mcp-conformance.sh).

The conformance suite's client cannot sign its requests, and Mandate's MCP
gateway takes only requests RFC 9421-signed by the mission key. This
forwarder listens on loopback, signs every request it receives with the key
and credential of a mission state file (`mandate mission start --state`),
by an independent implementation (http-message-signatures), and sends it
on to Mandate. The answer comes back as Mandate gave it: status, headers
(`Mcp-Session-Id`, `Content-Type`, ...) and the body, streamed chunk by
chunk as it arrives (SSE).

Covered, as docs/mcp.md asks: `@method`, `@authority`, `@path`,
`signature-key`; `content-type` and `content-digest` with a body;
`mcp-session-id` when sent. `@query` too when there is a query, and the
`Mcp-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers when sent, so
nothing the gateway may route on travels unsigned.

The forwarder is the network between the suite and Mandate: a `Host` or
`Origin` naming the forwarder itself is rewritten to name Mandate; any
other value (a DNS-rebinding probe's) reaches Mandate as the suite sent it.

usage: forwarder.py STATE_FILE UPSTREAM_ORIGIN MANDATE_BIN
  UPSTREAM_ORIGIN: Mandate's `http://HOST:PORT`. MANDATE_BIN refreshes the
  credential (`mandate mission credential --state`) when it has less than
  two minutes left. Prints the forwarder's own origin on its first line of
  stdout, then serves until killed.
"""
import asyncio
import base64
import hashlib
import json
import secrets
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import requests
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from http_sf.compat import Dictionary

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the forwarder sets itself.
HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
       "upgrade", "proxy-authorization", "proxy-authenticate"}
SET_HERE = {"host", "content-length", "signature", "signature-input", "signature-key",
            "content-digest"}
ALSO_COVERED = ("mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name")


def load_key(state):
    # PKCS#8 v2 (with the public key) is not read by every library; the seed
    # sits at the same place in v1 and v2.
    pem = state["key_pem"]
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    return Ed25519PrivateKey.from_private_bytes(der[16:48])


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, key):
        self.key = key

    def resolve_private_key(self, key_id):
        return self.key

    def resolve_public_key(self, key_id):
        return self.key.public_key()


class Forwarder:
    def __init__(self, state_file, state, upstream, mandate):
        self.state_file, self.mandate = state_file, mandate
        self.credential, self.expires_at = state["credential"], state["expires_at"]
        self.refreshing = asyncio.Lock()
        self.signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                                        key_resolver=Keys(load_key(state)))
        up = urlsplit(upstream)
        self.upstream_scheme = up.scheme
        self.upstream_origin = f"{up.scheme}://{up.netloc}"
        self.upstream_host = up.netloc
        self.own_host = None  # set once listening
        self.session = None

    def signature_headers(self, method, host, path_qs, headers, body):
        """The signature headers of one request, computed on a mirror of it."""
        mirror = requests.Request(method, f"{self.upstream_scheme}://{host}{path_qs}",
                                  data=body or None,
                                  headers=headers).prepare()
        # requests adds Content-Length; nothing it adds is covered.
        covered = ["@method", "@authority", "@path", "signature-key"]
        if urlsplit(path_qs).query:
            covered.append("@query")
        covered += [h for h in ALSO_COVERED if h in headers]
        if body:
            mirror.headers["Content-Digest"] = str(
                Dictionary({"sha-256": hashlib.sha256(body).digest()}))
            covered.append("content-digest")
            if "content-type" in headers:
                covered.append("content-type")
        mirror.headers["Signature-Key"] = 'sig=jwt;jwt="%s"' % self.credential
        self.signer.sign(mirror, key_id="mission", label="sig",
                         nonce=secrets.token_urlsafe(16), covered_component_ids=tuple(covered))
        return {k: mirror.headers[k]
                for k in ("Signature", "Signature-Input", "Signature-Key", "Content-Digest")
                if k in mirror.headers}

    async def fresh_credential(self):
        async with self.refreshing:
            if self.expires_at - time.time() > 120:
                return
            command = [self.mandate, "--json", "mission", "credential", "--refresh",
                       "--state", self.state_file]
            out = await asyncio.to_thread(subprocess.run, command, check=True,
                                          capture_output=True)
            fresh = json.loads(out.stdout)
            self.credential, self.expires_at = fresh["credential"], fresh["expires_at"]

    def rewrite(self, name, value):
        """A Host or Origin that names the forwarder names Mandate instead."""
        if name == "host" and value == self.own_host:
            return self.upstream_host
        if name == "origin" and value == f"http://{self.own_host}":
            return self.upstream_origin
        return value

    async def handle(self, request):
        body = await request.read()
        await self.fresh_credential()
        host = self.rewrite("host", request.host)
        # Repeated headers travel repeated; the signature covers them joined
        # (RFC 9421 section 2.1).
        out = []
        joined = {}
        for name, value in request.headers.items():
            low = name.lower()
            if low in HOP or low in SET_HERE:
                continue
            value = self.rewrite(low, value)
            out.append((name, value))
            joined[low] = f"{joined[low]}, {value}" if low in joined else value
        path_qs = request.raw_path
        for k, v in self.signature_headers(request.method, host, path_qs, joined, body).items():
            out.append((k, v))
        out.append(("Host", host))
        upstream = await self.session.request(
            request.method, self.upstream_origin + path_qs, data=body or None,
            headers=out, allow_redirects=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"))
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.release()


async def main():
    state_file, upstream, mandate = sys.argv[1:4]
    with open(state_file) as f:
        state = json.load(f)
    fwd = Forwarder(state_file, state, upstream, mandate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    fwd.own_host = "127.0.0.1:%d" % sock.getsockname()[1]
    # No pooled connection outlives its request's stream; no timeout on a
    # stream that stays open (the suite has its own).
    fwd.session = aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", fwd.handle)
    # A client that goes away cancels its handler, closing the stream upstream.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"http://{fwd.own_host}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fwd.session.close()
        await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
