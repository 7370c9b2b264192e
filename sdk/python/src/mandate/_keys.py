"""The mission key: a fresh Ed25519 key for one mission (`cryptography`),
its JWK and RFC 7638 thumbprint, and what it signs as JWS (PyJWT): DPoP
proofs (RFC 9449) and delegation links."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import jwt
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._errors import StateFileError

#: The JWS `typ` of a DPoP proof (RFC 9449 §4.2).
DPOP_TYP = "dpop+jwt"
#: The JWS `typ` of a delegation link (docs/delegation.md).
LINK_TYP = "mandate-link+jwt"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(data: bytes) -> str:
    """base64url(SHA-256(data)), as `ath` and thumbprints are written."""
    return b64url(hashlib.sha256(data).digest())


class MissionKey:
    """An Ed25519 mission key. The private half never leaves this object
    except through `to_pem()`, for the state file."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        # RFC 7638: SHA-256 of the required members in canonical JSON
        # (RFC 8785 orders them and leaves out whitespace).
        self._thumbprint = s256(rfc8785.dumps(self._jwk))

    @classmethod
    def generate(cls) -> MissionKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: str) -> MissionKey:
        """Reads a PKCS#8 PEM Ed25519 private key (what `mandate mission
        start` and `mandate mission keygen` write)."""
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError) as e:
            raise StateFileError(f"the mission key is not a PKCS#8 PEM private key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise StateFileError("the mission key is not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> str:
        """PKCS#8 v1 PEM (the seed only), as the CLI writes it."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    @property
    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint: the `cnf.jkt` a credential for this key carries."""
        return self._thumbprint

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._key

    def _jws(self, typ: str, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            self._key,
            algorithm="EdDSA",
            headers={"typ": typ, "jwk": self.public_jwk},
        )

    def dpop_proof(self, htm: str, htu: str, token: str | None = None) -> str:
        """An RFC 9449 proof for one request: `htu` is the URL without query;
        `token` (a start token or credential the request presents) becomes
        `ath`."""
        claims: dict[str, Any] = {
            "jti": b64url(secrets.token_bytes(16)),
            "htm": htm,
            "htu": htu,
            "iat": int(time.time()),
        }
        if token is not None:
            claims["ath"] = s256(token.encode("ascii"))
        return self._jws(DPOP_TYP, claims)

    def sign_link(self, claims: dict[str, Any]) -> str:
        """Signs delegation link claims with a fresh `jti` and `iat`."""
        signed = dict(claims)
        signed["jti"] = b64url(secrets.token_bytes(16))
        signed["iat"] = int(time.time())
        return self._jws(LINK_TYP, signed)
