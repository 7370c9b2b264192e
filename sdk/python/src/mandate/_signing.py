"""RFC 9421 request signatures by the mission key, as the gateways require
(docs/gateway.md, "Signing requests"): the credential in `Signature-Key`
(draft-hardt-httpbis-signature-key, scheme `jwt`), an RFC 9530
`Content-Digest` for a body, and a signature covering `@method`,
`@authority`, `@path`, `signature-key`, `@query` when there is a query,
`content-type` and `content-digest` when there is a body, and the headers
the gateway wants covered when they are sent (`mandate-justification`,
`mcp-session-id`).

The signature base and the signature come from `http-message-signatures`;
the structured fields from `http_sf`. Nothing here is hand-made crypto."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from http_sf.types import DictionaryType, ParamsType

from ._errors import MandateError
from ._keys import MissionKey

#: The signature's label, as the Rust client and the CLI use it.
LABEL = "sig"

#: Headers covered whenever a request carries them.
COVERED_WHEN_SENT = ("mandate-justification", "mcp-session-id")

#: The headers a signature sets; dropped from a request before it is signed
#: again (a retry) and never to be set by the caller.
SIGNATURE_HEADERS = ("signature", "signature-input", "signature-key", "content-digest")


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        return self._key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        return self._key.public_key()


@dataclass
class _Message:
    """The parts of a request a signature covers, as the signer reads them."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def content_digest(body: bytes) -> str:
    """RFC 9530 `Content-Digest` with SHA-256."""
    value: DictionaryType = {"sha-256": (hashlib.sha256(body).digest(), {})}
    return http_sf.ser(value)


def signature_key(credential: str) -> str:
    """`Signature-Key: sig=jwt;jwt="…"`."""
    params: ParamsType = {"jwt": credential}
    value: DictionaryType = {LABEL: (http_sf.Token("jwt"), params)}
    return http_sf.ser(value)


def sign_request(
    key: MissionKey,
    credential: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
) -> dict[str, str]:
    """The headers to add to a request (`Signature-Key`, `Signature-Input`,
    `Signature`, and `Content-Digest` when there is a body), given the
    request exactly as it will be sent. `headers` is read for
    `content-type` and the headers covered when sent."""
    lower = {k.lower(): v for k, v in headers.items()}
    message = _Message(method=method.upper(), url=url)
    message.headers["signature-key"] = signature_key(credential)
    covered = ["@method", "@authority", "@path"]
    if urlsplit(url).query:
        covered.append("@query")
    covered.append("signature-key")
    if body:
        ctype = lower.get("content-type")
        if not ctype:
            raise MandateError(
                "missing_content_type",
                "a request with a body needs a `Content-Type` (the signature covers it)",
            )
        message.headers["content-type"] = ctype
        message.headers["content-digest"] = content_digest(body)
        covered += ["content-type", "content-digest"]
    for name in COVERED_WHEN_SENT:
        if name in lower:
            message.headers[name] = lower[name]
            covered.append(name)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519, key_resolver=_Keys(key.private_key)
    )
    try:
        # Ed25519 is deterministic: a random nonce keeps two identical calls
        # in one second from carrying the same signature (a replay to the
        # gateway).
        signer.sign(
            message,
            key_id=key.thumbprint,
            label=LABEL,
            nonce=secrets.token_urlsafe(16),
            covered_component_ids=tuple(covered),
        )
    except HTTPMessageSignaturesException as e:
        raise MandateError("cannot_sign", f"the request cannot be signed: {e}") from e
    out = {
        "Signature-Key": message.headers["signature-key"],
        "Signature-Input": message.headers["Signature-Input"],
        "Signature": message.headers["Signature"],
    }
    if body:
        out["Content-Digest"] = message.headers["content-digest"]
    return out


def strip_signature(headers: Iterable[str]) -> list[str]:
    """The names among `headers` a new signature replaces."""
    return [h for h in headers if h.lower() in SIGNATURE_HEADERS]
