"""Errors a handler raises to say how its failure should be treated, and their classification."""

from __future__ import annotations

from dataclasses import dataclass

from omoi.domain.enums import ErrorCategory


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad input, missing resource)."""


class TransientError(Exception):
    """Raised by a handler when a later attempt may succeed (a flaky dependency)."""


@dataclass(frozen=True)
class TaskError:
    category: ErrorCategory
    type: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"category": str(self.category), "type": self.type, "message": self.message}


def classify(exc: BaseException) -> TaskError:
    """Category by the handler's explicit exception type first, unknown errors are transient."""
    if isinstance(exc, PermanentError):
        category = ErrorCategory.PERMANENT
    else:
        category = ErrorCategory.TRANSIENT
    return TaskError(category, type(exc).__name__, str(exc)[:2000])
