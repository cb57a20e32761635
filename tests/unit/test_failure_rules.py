"""Error classification and backoff: pure rules."""

import random
import subprocess

import pytest

from omoi.domain.backoff import retry_delay
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import PermanentError, TransientError, classify
from omoi.services.errors import Invalid


class SoftTimeLimitExceeded(Exception):  # stands for Celery's, matched by name
    pass


class ValidationError(Exception):  # marshmallow's or pydantic's
    pass


class RateLimitError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (PermanentError("no"), ErrorCategory.PERMANENT),
        (TransientError("later"), ErrorCategory.TRANSIENT),
        (SoftTimeLimitExceeded(), ErrorCategory.TIMEOUT),
        (TimeoutError(), ErrorCategory.TIMEOUT),
        (subprocess.TimeoutExpired("cmd", 1), ErrorCategory.TIMEOUT),
        (ConnectionRefusedError(), ErrorCategory.TRANSIENT),
        (RateLimitError(), ErrorCategory.TRANSIENT),
        (RuntimeError("429: rate limit exceeded"), ErrorCategory.TRANSIENT),
        (ValidationError("bad"), ErrorCategory.PERMANENT),
        (ValueError("bad"), ErrorCategory.PERMANENT),
        (KeyError("unknown"), ErrorCategory.TRANSIENT),
        (Invalid("a bad split"), ErrorCategory.PERMANENT),
    ],
)
def test_classification(exc: BaseException, category: ErrorCategory) -> None:
    error = classify(exc)
    assert error.category == category
    assert error.type == type(exc).__name__
    assert error.retryable == (category in {ErrorCategory.TRANSIENT, ErrorCategory.TIMEOUT})


def test_explicit_types_win_over_names() -> None:
    class Wrapped(PermanentError, TimeoutError):
        pass

    assert classify(Wrapped()).category == ErrorCategory.PERMANENT


def test_backoff_doubles_with_bounded_jitter_and_a_cap() -> None:
    rng = random.Random(3)
    for n in range(6):
        exact = 1.0 * 2**n
        delays = [retry_delay(n, 1.0, 60.0, rng) for _ in range(200)]
        assert min(delays) >= min(exact, 60.0)
        assert max(delays) <= min(exact * 1.25, 60.0)
        assert len(set(delays)) > 1 or exact >= 60.0  # jittered unless capped
    assert retry_delay(20, 1.0, 60.0, rng) == 60.0
