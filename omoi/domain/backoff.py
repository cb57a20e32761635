"""Exponential backoff with jitter, as Celery's ``retry_backoff`` and Airflow do it."""

from __future__ import annotations

import random


def retry_delay(
    retry_count: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``retry_count + 1``: ``base · 2^retry_count`` plus up
    to 25 % jitter (never less, so attempts are spaced at least by the backoff), at most ``cap``."""
    exact = base * (2 ** min(retry_count, 32))
    jitter = (rng or random).uniform(0, exact * 0.25)
    return min(cap, exact + jitter)
