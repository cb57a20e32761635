"""Errors a use case raises; the API maps each to one HTTP status."""

from __future__ import annotations

from typing import Any

from omoi.domain.errors import PermanentError


class ServiceError(Exception):
    code = "error"

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, code: str | None = None
    ) -> None:
        """``code`` names this refusal more precisely than its class does."""
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code is not None:
            self.code = code


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    code = "conflict"


class Forbidden(ServiceError):
    """The caller may not do this to this object (its token's scope alone allowed the route)."""

    code = "forbidden"


class Invalid(ServiceError, PermanentError):
    """Refused as it stands; asked again the same way (a handler's bad split), refused again,
    so a task that raises it fails at once."""

    code = "invalid"
