"""A user's own Celery app, as a Celery user has one: the tests run its canvases through raw
Celery (a prefork worker of its own on Redis db ``OMOI_TEST_CELERY_REDIS_URL``, its broker and
result backend) and through omoi (``omoi worker --celery-app tests.support.celery_app:app``)."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery
from celery.exceptions import Reject

REDIS_URL = os.environ.get("OMOI_TEST_CELERY_REDIS_URL", "redis://127.0.0.1:6379/14")
RUNS_KEY = "canvas-runs:{}"  # per label: how many times ``slow`` ran to its end

app = Celery("userapp", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
app.conf.update(
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def echo(*args: object, **kwargs: object) -> dict[str, object]:
    """What it was called with, to compare argument passing."""
    return {"args": list(args), "kwargs": kwargs}


@app.task(time_limit=30, soft_time_limit=20, max_retries=2)
def slow(x: int, seconds: float, label: str = "") -> int:
    """Sleeps, then returns ``x``; counts its finished runs under ``label`` (in the effect
    database named by ``OMOI_TEST_EFFECTS_URL``, else its own broker's)."""
    time.sleep(seconds)
    if label:
        url = os.environ.get("OMOI_TEST_EFFECTS_URL", REDIS_URL)
        redis.Redis.from_url(url).incr(RUNS_KEY.format(label))
    return x


@app.task(bind=True, max_retries=3, retry_backoff=True, retry_backoff_max=2)
def flaky(self, x: int, fail_times: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Asks to be retried until it has been retried ``fail_times`` times; returns what its
    request said (the id it ran under, its retries)."""
    if self.request.retries < fail_times:
        raise self.retry(countdown=0)
    return {"x": x, "retries": self.request.retries, "has_id": bool(self.request.id)}


class Flaky(ConnectionError):
    pass


@app.task(autoretry_for=(Flaky,), max_retries=1, retry_backoff=3, retry_backoff_max=5)
def auto(x: int) -> int:
    raise Flaky("the service is away")


@app.task(throws=(KeyError,))
def lookup(name: str) -> str:
    return {"a": "alpha"}[name]


@app.task
def reject(x: int) -> int:
    raise Reject("not for us", requeue=False)


@app.task
def boom(x: int) -> int:
    raise RuntimeError(f"boom {x}")
