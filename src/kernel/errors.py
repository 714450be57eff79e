"""Domain errors: a stable machine `code` and an HTTP status, rendered by one handler (`kernel.http`)."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code is not None:
            self.code = code  # type: ignore[misc]  # a per-instance code refines the class default


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(DomainError):
    status = 403
    code = "forbidden"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class InvalidState(Conflict):
    code = "invalid_state"


class Unprocessable(DomainError):
    status = 422
    code = "validation_error"


class TooManyRequests(DomainError):
    status = 429
    code = "too_many_requests"
