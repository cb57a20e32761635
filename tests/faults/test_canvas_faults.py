"""What raw Celery's chords cannot survive, and omoi's can: the same chord of slow header tasks
through raw Celery (Celery's default settings, Redis as broker and result backend) and through
omoi (``submit_canvas``, ``omoi worker --celery-app``), with one fault each: the worker killed
with ``kill -9`` mid-chord, a header member revoked / cancelled, Redis losing its data
mid-chord. Raw Celery's side is measured with a bounded wait, and each test asserts what it
saw; omoi's side finishes (or, for the cancel, settles), every header result recorded once.
The README's side-by-side table states these figures."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chord
from celery.exceptions import TaskRevokedError

from omoi.client import CanvasFailed, CanvasResult, Client
from tests.support import celery_app as user
from tests.support.api import ADMIN_TOKEN
from tests.support.procs import (
    Proc,
    report_recovery,
    start_api,
    start_beat,
    start_celery_worker,
    start_worker,
    wait_for,
)
from tests.support.services import RedisServer

APP = "tests.support.celery_app:app"
SLOW = "tests.support.celery_app.slow"
TSUM = "tests.support.celery_app.tsum"
HEADER = 4
RAW_PATIENCE = 8.0  # seconds raw Celery is given after the fault: twice the chord's whole run


def slow_chord(app: Celery, label: str, seconds: float) -> Any:
    """``chord([slow(1), …, slow(4)], tsum())`` of the user's tasks, sent through ``app``."""
    header = [app.signature(SLOW, args=(i, seconds, label)) for i in range(1, HEADER + 1)]
    return chord(header, app.signature(TSUM))


def active_ids(app: Celery) -> set[str]:
    """The ids of the tasks raw Celery's workers run now (``inspect active``)."""
    active = app.control.inspect(timeout=1.0).active() or {}
    return {task["id"] for tasks in active.values() for task in tasks}


def runs(label: str) -> int:
    """How many ``slow`` runs of ``label`` finished (counted on the effects Redis)."""
    url = os.environ.get("OMOI_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    return int(redis.Redis.from_url(url).get(user.RUNS_KEY.format(label)) or 0)


@dataclass
class Omoi:
    client: Client
    capabilities: list[str]
    procs: list[Proc]

    def submit(self, label: str, seconds: float) -> CanvasResult:
        canvas = slow_chord(user.app, label, seconds)
        return self.client.submit_canvas(canvas, label, capabilities=self.capabilities)

    def tasks(self, handle: CanvasResult) -> dict[str, dict[str, Any]]:
        """The ticket's tasks by key, each with its attempts."""
        return {
            t["key"]: self.client.task(t["id"])
            for t in self.client.tasks(ticket_id=handle.ticket_id)
        }


def omoi_stack(env: dict[str, str], tmp: Path, workers: int, concurrency: int) -> Omoi:
    """An API, beat and ``workers`` workers with the user's app, alone on a capability."""
    capability = f"chord{uuid.uuid4().hex[:8]}"
    api, api_env = start_api(env, tmp)
    procs = [api, start_beat(env, tmp)]
    for _ in range(workers):
        procs.append(
            start_worker(
                env, tmp, concurrency=concurrency, capabilities=capability, celery_app=APP
            )[0]
        )
    client = Client(f"http://127.0.0.1:{api_env['OMOI_API_PORT']}", ADMIN_TOKEN)
    return Omoi(client, [capability], procs)


@pytest.fixture()
def stack_procs() -> Iterator[list[Proc]]:
    """Every process a test starts, stopped at its end."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.stop()


def kill9(proc: Proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait(10)


def running(omoi: Omoi, handle: CanvasResult) -> list[dict[str, Any]]:
    return [t for t in omoi.client.tasks(ticket_id=handle.ticket_id) if t["status"] == "running"]


def assert_recorded_once(tasks: dict[str, dict[str, Any]]) -> None:
    """Every header task succeeded, with exactly one attempt whose result was recorded."""
    header = [t for k, t in tasks.items() if k.endswith(".slow")]
    assert len(header) == HEADER
    for task in header:
        assert task["status"] == "succeeded"
        outcomes = [a["outcome"] for a in task["attempts"]]
        assert outcomes.count("succeeded") == 1, (task["key"], outcomes)
    assert sorted(t["result"] for t in header) == [1, 2, 3, 4]


def test_kill_9_of_the_worker_mid_chord(
    env: dict[str, str], tmp_path: Path, stack_procs: list[Proc]
) -> None:
    # raw Celery: its worker killed while header tasks run; a fresh worker started at once
    redis.Redis.from_url(user.REDIS_URL).flushdb()
    raw = start_celery_worker(env, tmp_path, user.REDIS_URL)
    stack_procs.append(raw)
    label = f"raw-kill-{uuid.uuid4().hex[:6]}"
    result = slow_chord(user.app, label, 2.0).apply_async()
    wait_for(lambda: runs(label) >= 2, timeout=30, what="the first header tasks")
    kill9(raw)  # header tasks 3 and 4 are mid-run
    stack_procs.append(start_celery_worker(env, tmp_path, user.REDIS_URL))
    time.sleep(RAW_PATIENCE)  # the bounded wait: raw Celery has this long to finish
    assert not result.ready()  # the killed tasks' messages were acknowledged: gone
    assert runs(label) == 2

    # omoi: one of two workers killed while it runs a header task
    omoi = omoi_stack(env, tmp_path, workers=2, concurrency=1)
    stack_procs.extend(omoi.procs)
    label = f"omoi-kill-{uuid.uuid4().hex[:6]}"
    handle = omoi.submit(label, 2.0)
    wait_for(lambda: len(running(omoi, handle)) == 2, timeout=30, what="both workers busy")
    kill9(omoi.procs[2])
    killed = time.monotonic()
    assert handle.get(timeout=90) == 10
    report_recovery(time.monotonic() - killed)
    tasks = omoi.tasks(handle)
    assert_recorded_once(tasks)
    lost = [
        (t["key"], a["attempt"])
        for t in tasks.values()
        for a in t["attempts"]
        if (a["error"] or {}).get("category") == "lost"
    ]
    assert len(lost) == 1  # the attempt the kill ended, recovered and run again
    assert tasks["4.tsum"]["status"] == "succeeded"


def test_a_header_member_revoked_or_cancelled(
    env: dict[str, str], tmp_path: Path, stack_procs: list[Proc]
) -> None:
    # raw Celery: a running header member revoked with terminate=True
    redis.Redis.from_url(user.REDIS_URL).flushdb()
    stack_procs.append(start_celery_worker(env, tmp_path, user.REDIS_URL))
    label = f"raw-revoke-{uuid.uuid4().hex[:6]}"
    result = slow_chord(user.app, label, 3.0).apply_async()
    member = result.parent.results[0]
    wait_for(lambda: member.id in active_ids(user.app), timeout=30, what="member 1 running")
    member.revoke(terminate=True)
    revoked = time.monotonic()
    with pytest.raises(TaskRevokedError):  # the caller's get() raises the member's revoke
        result.get(timeout=RAW_PATIENCE)
    body = user.app.AsyncResult(result.id)
    wait_for(lambda: body.state != "PENDING", timeout=RAW_PATIENCE, what="the raw chord's body")
    print(
        f"RAW revoke: body {body.state} ({type(body.result).__name__}) in "
        f"{time.monotonic() - revoked:.1f} s"
    )
    # Celery 5.7 settles this one: the terminated member counts, the body fails
    assert (body.state, type(body.result).__name__) == ("FAILURE", "ChordError")

    # omoi: a running header member cancelled through the API
    omoi = omoi_stack(env, tmp_path, workers=1, concurrency=2)
    stack_procs.extend(omoi.procs)
    handle = omoi.submit(f"omoi-cancel-{uuid.uuid4().hex[:6]}", 3.0)
    first = wait_for(lambda: running(omoi, handle), timeout=30, what="a header task running")[0]
    omoi.client.cancel_task(first["id"], reason="not needed")
    cancelled = time.monotonic()
    (body_row,) = [t for t in omoi.client.tasks(ticket_id=handle.ticket_id) if t["key"] == "4.tsum"]
    assert omoi.client.task(body_row["id"])["status"] == "cancelled"  # in the cancel's commit
    with pytest.raises(CanvasFailed) as caught:
        handle.get(timeout=60)  # once the other header members have ended
    settled = time.monotonic() - cancelled
    print(f"OMOI cancel: body cancelled at once; ticket {caught.value.status} in {settled:.1f} s")
    body = omoi.tasks(handle)["4.tsum"]
    assert (body["status"], body["error"]["category"]) == ("cancelled", "upstream_failed")
    assert caught.value.status == "blocked"
    assert caught.value.failures[0]["key"] == first["key"]


def test_redis_losing_its_data_mid_chord(
    env: dict[str, str], fresh_database_url: str, tmp_path: Path, stack_procs: list[Proc]
) -> None:
    # raw Celery: its Redis (broker and result backend) restarted empty mid-chord
    raw_redis = RedisServer(tmp_path / "raw-redis", persist=False)
    raw_redis.start()
    try:
        stack_procs.append(start_celery_worker(env, tmp_path, raw_redis.url()))
        private = Celery("raw", broker=raw_redis.url(), backend=raw_redis.url())
        label = f"raw-redis-{uuid.uuid4().hex[:6]}"
        result = slow_chord(private, label, 2.0).apply_async()
        wait_for(lambda: runs(label) >= 2, timeout=30, what="the first header tasks")
        raw_redis.kill()
        raw_redis.start()
        time.sleep(RAW_PATIENCE)
        assert not result.ready()  # the chord's counter and its queued members are gone
        assert runs(label) <= HEADER
    finally:
        raw_redis.kill()

    # omoi: its broker restarted empty mid-chord; beat's outbox sweep re-publishes
    broker = RedisServer(tmp_path / "omoi-redis", persist=False)
    broker.start()
    try:
        stack_env = {
            **env,
            "OMOI_DATABASE_URL": fresh_database_url,
            "OMOI_BROKER_URL": broker.url(),
            "OMOI_OUTBOX_LOST_AGE": "10",  # bounds the wait for a prefetched, lost message
        }
        omoi = omoi_stack(stack_env, tmp_path, workers=1, concurrency=2)
        stack_procs.extend(omoi.procs)
        label = f"omoi-redis-{uuid.uuid4().hex[:6]}"
        handle = omoi.submit(label, 2.0)
        wait_for(lambda: runs(label) >= 2, timeout=30, what="the first header tasks")
        broker.kill()
        broker.start()
        restarted = time.monotonic()
        assert handle.get(timeout=90) == 10
        report_recovery(time.monotonic() - restarted)
        assert_recorded_once(omoi.tasks(handle))
    finally:
        broker.kill()
