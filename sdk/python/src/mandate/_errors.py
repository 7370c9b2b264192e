"""Every error the SDK raises is a `MandateError`: it carries the server's
stable problem `code` (docs/api.md), the HTTP `status` when there was an
answer, and a `detail` for a person."""

from __future__ import annotations

from typing import Any


class MandateError(Exception):
    """A refusal, an answer the SDK does not understand, or a local error.

    `code` is the problem code the server gave (e.g. `boundary`,
    `credential_expired`), or one of the SDK's own: `unexpected_response`,
    `state_file`, `transport`, `approval_timeout`, `not_allowed_origin`.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{detail} ({code})")
        self.code = code
        self.detail = detail
        self.status = status
        self.problem: dict[str, Any] = dict(problem or {})

    @property
    def policies(self) -> list[str]:
        """The policies that decided, when the server named them."""
        p = self.problem.get("policies")
        return [x for x in p if isinstance(x, str)] if isinstance(p, list) else []


class Denied(MandateError):
    """The gateway refused the call for good (`403`: a boundary, out of
    scope, no budget, ...): asking again will not help."""


class AuthenticationFailed(MandateError):
    """The server did not accept the mission's proof (`401`): the
    credential expired or was revoked, the mission ended, the signature or
    proof was refused."""


class ApprovalRequired(MandateError):
    """The call needs a person's approval first (`403 approval_required`).

    `approval_id` names the approval request; `approval_url` is where the
    authority serves it. Wait with `Mission.wait_for_approval(id)` (or
    pass `wait=` to the auth) and send the call again once approved.
    """

    def __init__(
        self,
        detail: str,
        *,
        approval_id: str,
        approval_url: str | None,
        status: int | None = 403,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__("approval_required", detail, status=status, problem=problem)
        self.approval_id = approval_id
        self.approval_url = approval_url

    def __str__(self) -> str:
        # What a person is told to approve: the request's id, and where.
        where = f" at {self.approval_url}" if self.approval_url else ""
        return f"{self.detail} (approval_required: `{self.approval_id}`{where})"


class ApprovalDenied(MandateError):
    """A person denied the approval request the call waited on."""

    def __init__(self, approval_id: str, reason: str | None) -> None:
        why = f": {reason}" if reason else ""
        super().__init__("approval_denied", f"approval request `{approval_id}` was denied{why}")
        self.approval_id = approval_id
        self.reason = reason


class ApprovalExpired(MandateError):
    """The approval request expired before anyone decided it."""

    def __init__(self, approval_id: str) -> None:
        super().__init__("approval_expired", f"approval request `{approval_id}` expired")
        self.approval_id = approval_id


class ApprovalTimeout(MandateError):
    """Nobody decided the approval request within the wait given."""

    def __init__(self, approval_id: str, waited: float) -> None:
        super().__init__(
            "approval_timeout",
            f"approval request `{approval_id}` was still pending after {waited:.0f} s",
        )
        self.approval_id = approval_id


class UnexpectedResponse(MandateError):
    """An answer the SDK does not understand. Never taken as a success."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__("unexpected_response", detail, status=status)


class StateFileError(MandateError):
    """A mission state file that cannot be used: unreadable, malformed,
    readable by others, or holding a key its credential does not bind."""

    def __init__(self, detail: str) -> None:
        super().__init__("state_file", detail)


class TransportError(MandateError):
    """The server could not be reached, or did not answer in time."""

    def __init__(self, detail: str) -> None:
        super().__init__("transport", detail)
