"""The mission state file, exactly as `mandate mission start --state FILE`
writes it (crates/mandate-client `SavedMission`): a JSON object with
`server`, `mission_id`, `key_pem` (PKCS#8 PEM), `credential` and
`expires_at`, mode 0600. It holds the private mission key."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from ._errors import StateFileError
from ._keys import MissionKey


@dataclass(frozen=True)
class SavedMission:
    server: str
    mission_id: str
    key_pem: str
    credential: str
    expires_at: int

    def __repr__(self) -> str:  # never the key or the credential
        return f"SavedMission(server={self.server!r}, mission_id={self.mission_id!r})"

    def to_json(self) -> str:
        # The CLI's layout (serde_json's pretty printer), field for field.
        return json.dumps(
            {
                "server": self.server,
                "mission_id": self.mission_id,
                "key_pem": self.key_pem,
                "credential": self.credential,
                "expires_at": self.expires_at,
            },
            indent=2,
        )


def read_state(path: str | os.PathLike[str]) -> SavedMission:
    """Reads a state file, refusing one that others may read or write."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise StateFileError(f"cannot read `{p}`: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateFileError(f"`{p}` is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise StateFileError(
                f"`{p}` holds a private mission key but others may read or change it "
                f"(mode {mode:04o}); make it private with `chmod 600 {p}`"
            )
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read(1 << 20)
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateFileError(f"`{p}` is not a mission state file: {e}") from e
    if not isinstance(doc, dict):
        raise StateFileError(f"`{p}` is not a mission state file: not a JSON object")
    want: dict[str, type] = {
        "server": str,
        "mission_id": str,
        "key_pem": str,
        "credential": str,
        "expires_at": int,
    }
    for name, kind in want.items():
        v = doc.get(name)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise StateFileError(f"`{p}` is not a mission state file: `{name}` is missing or wrong")
    return SavedMission(
        server=doc["server"],
        mission_id=doc["mission_id"],
        key_pem=doc["key_pem"],
        credential=doc["credential"],
        expires_at=doc["expires_at"],
    )


def write_state(path: str | os.PathLike[str], saved: SavedMission, *, create_new: bool) -> None:
    """Writes the state with mode 0600 through a temporary file and a rename,
    so a crash never leaves half a key. `create_new` refuses to replace an
    existing file (a mission key)."""
    p = Path(path)
    if create_new and p.exists():
        raise StateFileError(f"`{p}` already exists; refusing to overwrite a mission key")
    tmp = p.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise StateFileError(f"cannot write `{tmp}`: {e.strerror}") from e
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(saved.to_json())
        f.flush()
        os.fsync(f.fileno())
    try:
        os.replace(tmp, p)
    except OSError as e:
        raise StateFileError(f"cannot write `{p}`: {e.strerror}") from e


def credential_claims(credential: str) -> dict[str, Any]:
    """The credential's claims, read without verifying its signature: the
    authority verifies it on every use; here they only tell what the
    credential says it binds."""
    try:
        claims: Any = jwt.decode(credential, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise StateFileError(f"the credential is not a JWT: {e}") from e
    if not isinstance(claims, dict):
        raise StateFileError("the credential's claims are not a JSON object")
    return claims


def check_binding(key: MissionKey, mission_id: str, credential: str) -> None:
    """Refuses a key its credential does not bind (a foreign key), or a
    credential of another mission."""
    claims = credential_claims(credential)
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if jkt != key.thumbprint:
        raise StateFileError(
            f"the mission key (jkt {key.thumbprint}) is not the key the credential binds "
            f"(cnf.jkt {jkt}); this state file mixes two missions"
        )
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if isinstance(jwk, dict) and jwk.get("x") != key.public_jwk["x"]:
        raise StateFileError("the credential's `cnf.jwk` is not the mission key")
    if claims.get("mission_id") != mission_id:
        raise StateFileError(
            f"the credential is for mission `{claims.get('mission_id')}`, not `{mission_id}`"
        )
