"""Mandate for Python agents: start a mission, sign every request with its
key (RFC 9421), wait for a person's approval, reach MCP servers through the
gateway. See README.md."""

from ._auth import MandateAuth
from ._errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequired,
    ApprovalTimeout,
    AuthenticationFailed,
    Denied,
    MandateError,
    StateFileError,
    TransportError,
    UnexpectedResponse,
)
from ._keys import MissionKey
from ._mission import AsyncMission, Mission
from ._protocol import Configuration
from ._state import SavedMission, read_state, write_state

__version__ = "0.1.0"

__all__ = [
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalRequired",
    "ApprovalTimeout",
    "AsyncMission",
    "AuthenticationFailed",
    "Configuration",
    "Denied",
    "MandateAuth",
    "MandateError",
    "Mission",
    "MissionKey",
    "SavedMission",
    "StateFileError",
    "TransportError",
    "UnexpectedResponse",
    "read_state",
    "write_state",
]
