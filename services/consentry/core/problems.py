"""RFC 9457 problem details: the one error shape of every HTTP answer."""

from __future__ import annotations

from typing import Any

from consentry.core.errors import Reason


class Problem(Exception):
    """An HTTP error answered as `application/problem+json`; its detail never holds personal data.

    `reason`, when given, is the documented reason code (docs/reason-codes.md) the body carries.
    """

    def __init__(
        self, status: int, kind: str, detail: str, *, reason: Reason | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.extra = extra if reason is None else extra | {"reason": reason.value}

    def body(self, instance: str) -> dict[str, Any]:
        return {
            "type": f"https://consentry.example.com/problems/{self.kind}",
            "title": self.kind.replace("-", " "),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extra,
        }


def invalid_request(where: str, reason: Reason = Reason.INVALID_VALUE) -> Problem:
    """The 422 of a request whose named parts (`path.subject_id`, `query.purpose`...) are invalid."""
    return Problem(422, "invalid-request", f"invalid: {where}", reason=reason)
