"""Retries, time limits and cancellation on real prefork workers over Redis and PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update

from omoi.domain.enums import ErrorCategory, TaskStatus
from omoi.domain.errors import TaskError
from omoi.persistence import Database, Task
from omoi.persistence.types import utcnow
from omoi.services import attempts, failures
from omoi.services.failures import RetryPolicy
from tests.support.api import submit, tasks_by_key, wait_finished
from tests.support.handlers import CLEANUP_KEY, EFFECT_KEY
from tests.support.procs import Proc, start_beat, start_worker, wait_for
from tests.support.units import Recorded, unit_of_work

pytestmark = pytest.mark.usefixtures("worker")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def detail(client: Any, task_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/tasks/{task_id}").get_json()  # type: ignore[no-any-return]


def events_of(task: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in task["timeline"] if e["type"] == kind]


def test_transient_failures_retry_with_backoff_then_succeed(client: Any) -> None:
    ticket = submit(
        client,
        [{"key": "f", "task_type": "flaky", "retry_backoff": 0.4, "payload": {"fail_times": 2}}],
    )
    assert wait_finished(client, ticket["id"])["status"] == "done"
    task = detail(client, ticket["tasks"][0]["id"])
    assert (task["status"], task["retry_count"], task["attempt"]) == ("succeeded", 2, 3)
    assert [a["outcome"] for a in task["attempts"]] == [
        "retry_scheduled",
        "retry_scheduled",
        "succeeded",
    ]
    assert task["attempts"][0]["error"]["category"] == "transient"
    scheduled = events_of(task, "task.retry_scheduled")
    for n, event in enumerate(scheduled):
        assert event["payload"]["delay"] >= 0.4 * 2**n  # exponential, jitter only adds
        next_start = at(task["attempts"][n + 1]["started_at"])
        assert next_start >= at(event["payload"]["next_attempt_at"])
        assert next_start - at(task["attempts"][n]["ended_at"]) >= timedelta(seconds=0.4 * 2**n)


def test_permanent_error_fails_after_one_attempt(client: Any) -> None:
    ticket = submit(client, [{"key": "p", "task_type": "explode", "max_retries": 3}])
    wait_finished(client, ticket["id"])
    task = detail(client, ticket["tasks"][0]["id"])
    assert (task["status"], task["retry_count"], len(task["attempts"])) == ("failed", 0, 1)
    assert task["error"]["category"] == "permanent"
    assert events_of(task, "task.failed")[0]["payload"]["traceback"]


def test_exhausted_retries_fail_and_cancel_dependents(client: Any) -> None:
    ticket = submit(
        client,
        [
            {
                "key": "f",
                "task_type": "flaky",
                "max_retries": 1,
                "retry_backoff": 0.2,
                "payload": {"fail_times": 5},
            },
            {"key": "after", "task_type": "effect", "depends_on": ["f"]},
        ],
    )
    final = wait_finished(client, ticket["id"])
    assert final["status"] == "blocked"
    tasks = tasks_by_key(client, ticket["id"])
    assert (tasks["f"]["status"], tasks["f"]["retry_count"]) == ("failed", 1)
    assert tasks["f"]["error"]["category"] == "transient"
    assert [a["outcome"] for a in detail(client, tasks["f"]["id"])["attempts"]] == [
        "retry_scheduled",
        "failed",
    ]
    assert tasks["after"]["status"] == "cancelled"
    assert tasks["after"]["error"]["category"] == "upstream_failed"


def test_soft_time_limit_is_seen_by_the_handler(client: Any, redis_client: redis.Redis) -> None:
    ticket = submit(
        client,
        [
            {
                "key": "s",
                "task_type": "soft-aware",
                "timeout_seconds": 1,
                "max_retries": 0,
                "payload": {"seconds": 30},
            }
        ],
    )
    wait_finished(client, ticket["id"], timeout=30)
    task = detail(client, ticket["tasks"][0]["id"])
    assert task["status"] == "failed"
    assert task["error"]["category"] == "timeout"
    assert task["error"]["type"] == "SoftTimeLimitExceeded"
    assert redis_client.get(CLEANUP_KEY.format(task["id"])) == b"done"
    assert events_of(task, "task.timed_out")


def test_hard_time_limit_kills_a_task_that_ignores_the_soft_one(
    client: Any, redis_client: redis.Redis
) -> None:
    ticket = submit(
        client,
        [
            {
                "key": "h",
                "task_type": "stubborn",
                "timeout_seconds": 1,
                "max_retries": 0,
                "payload": {"seconds": 60},
            }
        ],
    )
    final = wait_finished(client, ticket["id"], timeout=30)
    task = detail(client, ticket["tasks"][0]["id"])
    assert (final["status"], task["status"]) == ("blocked", "failed")
    assert (task["error"]["category"], task["error"]["type"]) == ("timeout", "TimeLimitExceeded")
    assert redis_client.get(CLEANUP_KEY.format(task["id"])) == b"ignored"  # soft limit came first
    after = submit(client, [{"key": "next", "task_type": "effect"}])  # the worker still works
    assert wait_finished(client, after["id"])["status"] == "done"


@pytest.fixture(scope="module")
def solo_worker(env: dict[str, str], tmp_root: Path) -> Iterator[Proc]:
    """A one-process worker that alone serves ``cap.solo``: a task there can only start once
    the previous one has really stopped."""
    proc, _ = start_worker(env, tmp_root, concurrency=1, capabilities="solo")
    yield proc
    proc.stop()


def test_cancelling_a_running_task_terminates_it(client: Any, solo_worker: Proc) -> None:
    # effect sleeps without polling should_cancel: only the revoke can stop it
    ticket = submit(
        client,
        [
            {
                "key": "long",
                "task_type": "effect",
                "capabilities": ["solo"],
                "payload": {"seconds": 60},
            }
        ],
    )
    task_id = ticket["tasks"][0]["id"]
    wait_for(lambda: detail(client, task_id)["status"] == "running", what="the task to start")
    resp = client.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "changed my mind"})
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "cancelled"
    assert resp.get_json()["error"] == {
        "category": "cancelled",
        "type": "Cancelled",
        "message": "changed my mind",
    }
    cancelled_at = time.monotonic()
    nxt = submit(client, [{"key": "next", "task_type": "effect", "capabilities": ["solo"]}])
    assert wait_finished(client, nxt["id"], timeout=30)["status"] == "done"
    assert time.monotonic() - cancelled_at < 10  # the solo process was freed, not 60 s later
    assert detail(client, task_id)["status"] == "cancelled"
    assert wait_finished(client, ticket["id"])["status"] == "blocked"


def test_a_cancelled_attempt_sees_should_cancel_and_its_result_is_refused(
    api_client: Any, db: Database
) -> None:
    ticket = api_client.post(
        "/api/v1/tickets", json={"title": "coop", "tasks": [{"key": "x", "task_type": "sleep"}]}
    ).get_json()
    task_id = uuid.UUID(ticket["tasks"][0]["id"])
    claimed = attempts.claim(unit_of_work(db), task_id, 1)
    assert claimed is not None
    attempt, ctx = claimed
    assert not ctx.should_cancel()
    resp = api_client.post(f"/api/v1/tickets/{ticket['id']}/cancel", json={"reason": "stop"})
    assert resp.status_code == 200
    assert (resp.get_json()["status"], resp.get_json()["task_counts"]) == (
        "cancelled",
        {"cancelled": 1},
    )
    assert ctx.should_cancel()
    assert not attempts.succeed(unit_of_work(db), attempt, {"late": True})
    task = api_client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert task["status"] == "cancelled"
    assert [e["type"] for e in task["timeline"]][-1] == "task.superseded"


def test_a_hundred_cancels_at_random_moments(client: Any, redis_client: redis.Redis) -> None:
    rng = random.Random(11)
    ticket = submit(
        client,
        [
            {"key": f"t{i}", "task_type": "effect", "payload": {"seconds": rng.uniform(0, 0.2)}}
            for i in range(100)
        ],
    )
    ids = [t["id"] for t in ticket["tasks"]]
    responses: dict[str, tuple[int, datetime]] = {}

    def cancel(task_id: str, delay: float) -> None:
        time.sleep(delay)  # the random moment itself, not synchronisation
        resp = client.application.test_client().post(f"/api/v1/tasks/{task_id}/cancel")
        responses[task_id] = (resp.status_code, utcnow())

    threads = [threading.Thread(target=cancel, args=(t, rng.uniform(0, 3))) for t in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_finished(client, ticket["id"], timeout=60)
    outcomes = {"cancelled": 0, "succeeded": 0}
    for task_id in ids:
        task = detail(client, task_id)
        code, answered = responses[task_id]
        types = [e["type"] for e in task["timeline"]]
        assert not ("task.succeeded" in types and "task.cancelled" in types)
        runs = int(redis_client.get(EFFECT_KEY.format(task_id)) or 0)
        assert runs <= 1
        if code == 200:
            assert task["status"] == "cancelled"
            started = [at(e["created_at"]) for e in events_of(task, "task.started")]
            assert all(s <= answered for s in started)
        else:
            assert (code, task["status"]) == (409, "succeeded")
        outcomes[task["status"]] += 1
    assert outcomes["cancelled"] + outcomes["succeeded"] == 100
    assert min(outcomes.values()) > 0, outcomes  # both races were exercised


def test_retry_reruns_a_failed_task_and_its_cancelled_dependents(client: Any) -> None:
    ticket = submit(
        client,
        [
            {"key": "f", "task_type": "flaky", "max_retries": 0, "payload": {"fail_times": 1}},
            {"key": "g", "task_type": "effect", "depends_on": ["f"]},
            {"key": "h", "task_type": "effect", "depends_on": ["g"]},
        ],
    )
    assert wait_finished(client, ticket["id"])["status"] == "blocked"
    tasks = tasks_by_key(client, ticket["id"])
    assert client.post(f"/api/v1/tasks/{tasks['g']['id']}/retry").status_code == 409
    resp = client.post(f"/api/v1/tasks/{tasks['f']['id']}/retry")
    assert resp.status_code == 200
    assert (resp.get_json()["status"], resp.get_json()["attempt"]) in {
        ("queued", 2),
        ("running", 2),
        ("succeeded", 2),
    }
    final = wait_finished(client, ticket["id"])
    assert (final["status"], final["phase"]) == ("done", "PHASE_DONE")
    assert final["task_counts"] == {"succeeded": 3}


def test_cancel_and_retry_errors(client: Any) -> None:
    ticket = submit(client, [{"key": "a", "task_type": "effect"}])
    wait_finished(client, ticket["id"])
    task_id = ticket["tasks"][0]["id"]
    resp = client.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "late"})
    assert resp.status_code == 409
    assert "already ended (succeeded)" in resp.get_json()["error"]["message"]
    assert client.post(f"/api/v1/tickets/{ticket['id']}/cancel").status_code == 409
    assert client.post(f"/api/v1/tasks/{uuid.uuid4()}/cancel").status_code == 404
    assert client.post(f"/api/v1/tickets/{uuid.uuid4()}/cancel").status_code == 404
    assert client.post(f"/api/v1/tasks/{uuid.uuid4()}/retry").status_code == 404
    assert client.post(f"/api/v1/tasks/{task_id}/retry").status_code == 409
    bad = client.post(f"/api/v1/tasks/{task_id}/cancel", json={"why": "x"})
    assert bad.status_code == 422


def test_long_backoff_is_held_in_postgres_and_woken_by_beat(
    client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """The test workers leave waits over 2 s (OMOI_RETRY_ETA_MAX) to the retry sweep."""
    ticket = submit(
        client,
        [{"key": "f", "task_type": "flaky", "retry_backoff": 3, "payload": {"fail_times": 1}}],
    )
    task_id = ticket["tasks"][0]["id"]
    wait_for(lambda: detail(client, task_id)["status"] == "retrying", what="the retry")
    beat = start_beat(env, tmp_path)
    try:
        assert wait_finished(client, ticket["id"], timeout=60)["status"] == "done"
    finally:
        beat.stop()
    task = detail(client, task_id)
    assert events_of(task, "task.retry_scheduled")[0]["payload"]["delay"] >= 3
    woken = [e for e in events_of(task, "task.queued") if e["payload"].get("woken")]
    assert len(woken) == 1


def test_deadline_sweep_fails_an_attempt_whose_worker_vanished(
    api_client: Any, db: Database
) -> None:
    ticket = api_client.post(
        "/api/v1/tickets",
        json={
            "title": "gone",
            "tasks": [{"key": "x", "task_type": "noop", "timeout_seconds": 5, "max_retries": 0}],
        },
    ).get_json()
    task_id = uuid.UUID(ticket["tasks"][0]["id"])
    uow = unit_of_work(db)
    claimed = attempts.claim(uow, task_id, 1)  # a worker takes it, then vanishes
    assert claimed is not None
    with db.session() as session:
        session.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(started_at=utcnow() - timedelta(seconds=60))
        )
    assert failures.expire_deadlines(uow, RetryPolicy(), slack=5) == 1
    task = api_client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert (task["status"], task["error"]["type"]) == (TaskStatus.FAILED, "DeadlineExceeded")
    assert not attempts.succeed(uow, claimed[0], {"late": True})  # the vanished worker returns
    assert api_client.get(f"/api/v1/tasks/{task_id}").get_json()["status"] == "failed"


def test_an_interrupted_attempt_is_requeued_at_once_without_spending_a_retry(
    store: tuple[Database, Any],
) -> None:
    """Even with no retries left: queued again under the next attempt, ready to publish now;
    the old attempt's redelivered message and its late result both find nothing to change."""
    db, client = store
    ticket = submit(client, [{"key": "t", "task_type": "noop", "max_retries": 0}])
    task_id = uuid.UUID(ticket["tasks"][0]["id"])
    uow = unit_of_work(db, requeue := Recorded())
    claimed = attempts.claim(uow, task_id, 1)
    assert claimed is not None
    error = TaskError(ErrorCategory.INTERRUPTED, "WorkerShutdown", "its worker stopped")
    assert failures.fail_attempt(uow, RetryPolicy(), task_id, 1, error)
    assert [(d.task_id, d.attempt, d.countdown) for d in requeue.published] == [(task_id, 2, None)]
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert (task["status"], task["attempt"], task["retry_count"]) == ("queued", 2, 0)
    assert [a["outcome"] for a in task["attempts"]] == ["interrupted"]
    assert attempts.claim(uow, task_id, 1) is None  # the stale redelivery is a no-op
    assert attempts.succeed(uow, claimed[0], {"late": True}) is False  # lease guard
    assert attempts.claim(uow, task_id, 2) is not None
    assert len(requeue.published) == 1  # and neither published anything
