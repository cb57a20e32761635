"""Stopping is not failing: a worker told to stop waits a bounded grace for its running
attempts, then hands them back as ``interrupted`` (re-queued at once, no retry spent); and no
attempt stays ``running`` on a live worker that no longer runs it."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import update

from omoi.persistence import Database, Task
from omoi.persistence.types import utcnow
from tests.faults.test_lost_workers import HEARTBEAT_TIMEOUT, SWEEP, running_on
from tests.faults.test_worker_signals import pool_children
from tests.support.api import submit, wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import Proc, report_recovery, start_worker, wait_for

GRACE = 2.0
SLACK = 5.0  # Celery's own teardown after the hand-back


def long_task(client: Any, capability: str) -> tuple[dict[str, Any], str]:
    ticket = submit(
        client,
        [
            {
                "key": "long",
                "task_type": "effect",
                "capabilities": [capability],
                "payload": {"seconds": 8},
            }
        ],
    )
    return ticket, ticket["tasks"][0]["id"]


def stop(proc: Proc, *signals: signal.Signals, patience: float) -> float:
    """Send ``signals`` (a moment apart) and return how long the worker took to exit."""
    sent = time.monotonic()
    for n, sig in enumerate(signals):
        if n:
            wait_for(lambda: "Ctrl-C again" in proc.output(), what="the worker to be waiting")
        proc.popen.send_signal(sig)
    proc.popen.wait(patience)
    return time.monotonic() - sent


@contextmanager
def patiently_running(
    client: Any, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Proc, str]]:
    """A one-process worker with a 60 s grace, running the long task it alone serves."""
    capability = f"stop{uuid.uuid4().hex[:8]}"
    _, task_id = long_task(client, capability)
    patient = {**env, "OMOI_SHUTDOWN_GRACE": "60"}
    proc, _ = start_worker(patient, tmp_path, concurrency=1, capabilities=capability)
    try:
        running_on(client, task_id, [proc])
        yield proc, task_id
    finally:
        proc.stop()


def test_a_stopped_worker_hands_its_attempt_back_without_spending_a_retry(
    client: Any, env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    """SIGTERM twice mid-task, on two workers in turn: each exits within the grace, the
    attempt is queued again at once (no beat runs here), and a third worker finishes it with
    ``retry_count`` still 0."""
    capability = f"stop{uuid.uuid4().hex[:8]}"
    graceful = {**env, "OMOI_SHUTDOWN_GRACE": str(GRACE)}
    ticket, task_id = long_task(client, capability)
    stops = []
    for attempt in (1, 2):
        proc, _ = start_worker(graceful, tmp_path, concurrency=2, capabilities=capability)
        try:
            running_on(client, task_id, [proc])
            took = stop(proc, signal.SIGTERM, patience=GRACE + SLACK + 10)
        finally:
            proc.stop()
        assert took < GRACE + SLACK, took
        stops.append(took)
        task = client.get(f"/api/v1/tasks/{task_id}").get_json()
        assert (task["status"], task["attempt"], task["retry_count"]) == (
            "queued",
            attempt + 1,
            0,
        )
        assert task["error"]["category"] == "interrupted"
        assert "waiting up to 2 s for 1 running task; Ctrl-C again to stop now" in proc.output()
        assert "handing back 1 running task as interrupted" in proc.output()
        agent = client.get("/api/v1/agents?kind=celery").get_json()["items"]
        assert next(a for a in agent if a["pid"] == proc.pid)["status"] == "offline"
    finisher, _ = start_worker(graceful, tmp_path, concurrency=1, capabilities=capability)
    try:
        assert wait_finished(client, ticket["id"], timeout=60)["status"] == "done"
    finally:
        finisher.stop()
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert task["retry_count"] == 0
    assert [a["outcome"] for a in task["attempts"]] == ["interrupted", "interrupted", "succeeded"]
    assert int(redis_client.get(EFFECT_KEY.format(task_id))) == 1  # the handler's body ran once
    report_recovery(max(stops))  # signal to handed back, for python -m tests.faults.chaos


def test_a_second_ctrl_c_stops_at_once_and_still_hands_back(
    client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    with patiently_running(client, env, tmp_path) as (proc, task_id):
        took = stop(proc, signal.SIGINT, signal.SIGINT, patience=30)
    assert took < SLACK + 2, took  # not the 60 s grace, nor the task's 8 s
    assert "stopping now" in proc.output()
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert (task["status"], task["attempt"], task["retry_count"]) == ("queued", 2, 0)
    assert task["error"]["category"] == "interrupted"


def test_a_running_attempt_its_live_worker_does_not_report_is_recovered_as_lost(
    client: Any, beat: Proc, worker: Proc, db: Database
) -> None:
    """A task recorded as running on the live worker's agent that the worker's heartbeats do
    not name (as when a pool child lost it) is lost within a heartbeat timeout and a sweep,
    while the worker itself stays alive."""
    nobody = f"nobody{uuid.uuid4().hex[:8]}"  # no worker serves it: only the row says running
    ticket = submit(
        client,
        [{"key": "ghost", "task_type": "effect", "capabilities": [nobody], "max_retries": 0}],
    )
    task_id = ticket["tasks"][0]["id"]
    agent_id = wait_for(
        lambda: next(
            (
                a["id"]
                for a in client.get("/api/v1/agents?kind=celery").get_json()["items"]
                if a["pid"] == worker.pid and a["status"] in ("idle", "busy")
            ),
            None,
        ),
        what="the live worker's agent",
    )
    with db.session() as session:
        session.execute(
            update(Task)
            .where(Task.id == uuid.UUID(task_id))
            .values(
                status="running",
                agent_id=uuid.UUID(agent_id),
                lease_token=uuid.uuid4(),
                started_at=utcnow(),
            )
        )
    planted = time.monotonic()
    assert wait_finished(client, ticket["id"], timeout=30)["status"] == "blocked"
    recovery = time.monotonic() - planted
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert (task["status"], task["error"]["category"]) == ("failed", "lost")
    assert "no longer reports running it" in task["error"]["message"]
    assert recovery < HEARTBEAT_TIMEOUT + 2 * SWEEP + 3, recovery
    assert client.get(f"/api/v1/agents/{agent_id}").get_json()["status"] in ("idle", "busy")


def test_a_child_that_dies_while_its_worker_stops_is_handed_back_too(
    client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """The pool's report of a child dying during the grace (here ``kill -9``) hands the
    attempt back as interrupted rather than spending a retry as ``lost``."""
    with patiently_running(client, env, tmp_path) as (proc, task_id):
        (child,) = pool_children(proc)
        proc.popen.send_signal(signal.SIGTERM)
        wait_for(lambda: "Ctrl-C again" in proc.output(), what="the worker to be waiting")
        os.kill(child, signal.SIGKILL)
        proc.popen.wait(SLACK + 10)
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert (task["status"], task["attempt"], task["retry_count"]) == ("queued", 2, 0)
    assert task["error"]["category"] == "interrupted"
