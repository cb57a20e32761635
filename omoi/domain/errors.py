"""Errors a handler raises to say how its failure should be treated, and their classification."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from omoi.domain.enums import ErrorCategory
from omoi.domain.storable import storable_text


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad input, missing resource)."""


class TransientError(Exception):
    """Raised by a handler when a later attempt may succeed (a flaky dependency)."""


class UnstorableResult(PermanentError):
    """A handler returned what PostgreSQL cannot store: the same value would come back from
    every retry, so the attempt fails for good, naming why."""


@dataclass(frozen=True)
class TaskError:
    category: ErrorCategory
    type: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"category": str(self.category), "type": self.type, "message": self.message}

    @property
    def retryable(self) -> bool:
        return self.category in RETRYABLE


RETRYABLE = frozenset({ErrorCategory.TRANSIENT, ErrorCategory.TIMEOUT, ErrorCategory.LOST})

# Matched by class name anywhere in the exception's MRO, so the domain needs no Celery,
# requests or marshmallow import to recognise their exceptions.
TIMEOUT_NAMES = {
    "SoftTimeLimitExceeded",
    "TimeLimitExceeded",
    "TimeoutError",
    "Timeout",
    "ReadTimeout",
    "ConnectTimeout",
    "TimeoutExpired",
}
PERMANENT_NAMES = {
    "ValidationError",
    "ValueError",
    "TypeError",
    "UnicodeError",
    "NotImplementedError",
    "PermissionError",
    "FileNotFoundError",
}
TRANSIENT_NAMES = {
    "ConnectionError",
    "OperationalError",
    "InterfaceError",
    "BrokenPipeError",
    "TooManyRequests",
    "RateLimitError",
    "RateLimited",
    "ServiceUnavailable",
}


CATEGORY_ATTRIBUTE = "omoi_category"


def mark_category(exc: BaseException, category: ErrorCategory) -> None:
    """Give ``exc`` the category it is recorded under, keeping its type and message (a
    Celery task's exception, which Celery's rules classify rather than omoi's)."""
    setattr(exc, CATEGORY_ATTRIBUTE, category)


def _category(exc: BaseException) -> ErrorCategory:
    marked = getattr(exc, CATEGORY_ATTRIBUTE, None)
    if isinstance(marked, ErrorCategory):
        return marked
    if isinstance(exc, PermanentError):
        return ErrorCategory.PERMANENT
    if isinstance(exc, TransientError):
        return ErrorCategory.TRANSIENT
    if isinstance(exc, subprocess.TimeoutExpired):
        return ErrorCategory.TIMEOUT
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & TIMEOUT_NAMES:
        return ErrorCategory.TIMEOUT
    if names & TRANSIENT_NAMES or "rate limit" in str(exc).lower():
        return ErrorCategory.TRANSIENT
    if names & PERMANENT_NAMES:
        return ErrorCategory.PERMANENT
    return ErrorCategory.TRANSIENT  # unknown: worth another attempt


def classify(exc: BaseException) -> TaskError:
    """The handler's explicit type first, then known types by name; unknown is transient."""
    return TaskError(_category(exc), type(exc).__name__, storable_text(str(exc)[:2000]))
