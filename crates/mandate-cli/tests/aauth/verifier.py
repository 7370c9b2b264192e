"""A relying party that verifies requests with aauth-signing (PyPI), as an
AAuth resource would: RFC 9421 over the Signature-Key header's `jwt`
scheme, the JWT's keys found from its `iss` and `dwk` claims
(`{iss}/.well-known/{dwk}` names `jwks_uri`).

Prints `listening PORT` once ready. Answers every request with JSON:
200 `{"verified": true, "claims": …, "fetched": […]}` or 401
`{"verified": false, "error": …}`.

With `--reencode-signature`, the Signature header's byte sequence is handed
to aauth-signing as unpadded base64url, the only form its parser reads
(`signature.parse_signature`), where RFC 9421 §4.2 and RFC 8941 §3.3.5 send
padded standard base64 (`+`, `/`, `=`), as Mandate does. The bytes are the
same; the field is parsed by http_sfv (RFC 8941), aauth-signing's own
dependency.
"""

import base64
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aauth_signing import verify_signature
from aauth_signing.tokens.common import parse_jwt

FETCHED = []
REENCODE = "--reencode-signature" in sys.argv[1:]


def as_aauth_reads_it(signature_header):
    import http_sfv

    fields = http_sfv.Dictionary()
    fields.parse(signature_header.encode("ascii"))
    return ", ".join(
        f"{label}=:{base64.urlsafe_b64encode(item.value).decode().rstrip('=')}:"
        for label, item in fields.items()
    )


def fetch_json(url):
    FETCHED.append(url)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def jwks_fetcher(iss, dwk, kid):
    """Two-step discovery, as aauth-signing's verifier documents it."""
    metadata = fetch_json(f"{iss}/.well-known/{dwk}")
    if metadata.get("issuer") != iss:
        raise ValueError("the metadata names another issuer")
    return fetch_json(metadata["jwks_uri"])


class Handler(BaseHTTPRequestHandler):
    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = dict(self.headers.items())
        target = f"http://{self.headers['host']}{self.path}"
        FETCHED.clear()
        try:
            signature = self.headers.get("signature", "")
            if REENCODE:
                signature = as_aauth_reads_it(signature)
            ok = verify_signature(
                self.command,
                target,
                headers,
                body,
                self.headers.get("signature-input", ""),
                signature,
                self.headers.get("signature-key", ""),
                jwks_fetcher=jwks_fetcher,
            )
            error = None if ok else "the signature does not verify"
        except Exception as e:  # the verifier's refusal, whatever its kind
            ok, error = False, f"{type(e).__name__}: {e}"
        if ok:
            key = self.headers["signature-key"]
            token = key.split('jwt="', 1)[1].rsplit('"', 1)[0]
            _, claims = parse_jwt(token)
            answer = {"verified": True, "claims": claims, "fetched": list(FETCHED)}
        else:
            answer = {"verified": False, "error": error}
        data = json.dumps(answer).encode()
        self.send_response(200 if ok else 401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
