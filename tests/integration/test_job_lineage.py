"""Every job a ticket publishes carries its lineage, on PostgreSQL (one-statement units of
work) and on SQLite (their portable forms): the ticket's first job as its root, the upstream
job (the dependency whose success released it, the attempt that split it) as its parent, the
root for a job with nothing upstream; its name and labels say which task it runs, and no
payload travels. The messages are read off the real broker, where no worker consumes them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select

from omoi.broker.app import make_celery
from omoi.broker.dispatcher import CeleryDispatcher
from omoi.config import Settings
from omoi.domain.errors import TransientError
from omoi.domain.jobs import job_id
from omoi.persistence import Database, Ticket
from omoi.services import attempts, outbox
from omoi.services.context import TaskContext
from omoi.services.failures import RetryPolicy
from tests.support.procs import wait_for
from tests.support.units import unit_of_work

SECRET = "payload-only-" + uuid.uuid4().hex


def handlers(task_type: str) -> Any:
    def ok(ctx: TaskContext) -> Any:
        return {"key": ctx.key}

    def flaky(ctx: TaskContext) -> Any:
        if ctx.attempt == 1:
            raise TransientError("not yet")
        return {"attempt": ctx.attempt}

    def fan(ctx: TaskContext) -> Any:
        part = {"task_type": "ok", "capabilities": ctx.payload["route"]}
        ctx.split([{**part, "key": f"part{n}"} for n in (1, 2)])

    return {"ok": ok, "flaky": flaky, "fan": fan}.get(task_type)


@pytest.fixture()
def queue(redis_client: redis.Redis) -> Iterator[str]:
    """A capability no worker serves: its queue keeps every message published to it."""
    capability = f"lineage{uuid.uuid4().hex[:8]}"
    yield capability
    redis_client.delete(f"cap.{capability}")


def test_jobs_carry_the_dags_lineage(
    store: tuple[Database, Any], settings: Settings, redis_client: redis.Redis, queue: str
) -> None:
    db, client = store  # its API publishes nothing: every message below comes from here
    dispatcher = CeleryDispatcher(make_celery(settings, "omoi-test"), 2)
    spec = {"capabilities": [queue], "payload": {"note": SECRET, "route": [queue]}}
    ticket = client.post(
        "/api/v1/tickets",
        json={
            "title": "Trace the lineage",
            "tasks": [
                {"key": "first", "task_type": "ok", **spec},
                {"key": "a", "task_type": "ok", **spec},
                {"key": "b", "task_type": "flaky", "depends_on": ["a"], **spec},
                {"key": "c", "task_type": "ok", "depends_on": ["a", "b"], **spec},
                {"key": "side", "task_type": "fan", **spec},
            ],
        },
    ).get_json()
    ids = {t["key"]: t["id"] for t in ticket["tasks"]}
    root = job_id(ids["first"], 1)  # the first task published to Celery: the ticket's first job
    with db.connect() as conn:
        stored = conn.execute(
            select(Ticket.root_job).where(Ticket.id == uuid.UUID(ticket["id"]))
        ).scalar_one()
    assert stored == root

    def run(key: str, attempt: int) -> str:
        task_id = uuid.UUID(ids[key])
        policy = RetryPolicy(backoff=0.01)
        message = job_id(task_id, attempt)
        uow = unit_of_work(db, dispatcher)
        return attempts.run_attempt(uow, policy, handlers, task_id, attempt, message).word

    def published() -> dict[str, dict[str, Any]]:
        raw = redis_client.lrange(f"cap.{queue}", 0, -1)
        assert not any(SECRET.encode() in m for m in raw)  # the payload stays in the database
        return {h["id"]: h for h in (json.loads(m)["headers"] for m in raw)}

    outbox.sweep(db, dispatcher, 0, 0)  # what the quiet API queued (first, a, side): as if lost
    assert run("a", 1) == "succeeded"  # releases b
    assert run("b", 1) == "failed"  # retried shortly as attempt 2
    wait_for(lambda: run("b", 2) == "succeeded", timeout=10, what="b's retry to be due")
    assert run("side", 1) == "succeeded"  # splits into two parts and their merge

    jobs = published()
    lineage = {j: (h["root_id"], h["parent_id"]) for j, h in jobs.items()}
    parts = [j for j, h in jobs.items() if "'side/part" in h["kwargsrepr"]]
    assert lineage == {
        root: (root, None),
        job_id(ids["a"], 1): (root, root),  # nothing upstream: under the first job
        job_id(ids["side"], 1): (root, root),
        job_id(ids["b"], 1): (root, job_id(ids["a"], 1)),  # released by a's first attempt
        job_id(ids["b"], 2): (root, job_id(ids["a"], 1)),  # a retry keeps its upstream
        job_id(ids["c"], 1): (root, job_id(ids["b"], 2)),  # released by b's second attempt
        **{p: (root, job_id(ids["side"], 1)) for p in parts},  # split off by side
    }
    assert len(parts) == 2
    b = jobs[job_id(ids["b"], 2)]
    assert (b["task"], b["shadow"]) == ("omoi.run_task", "flaky")
    assert b["argsrepr"] == f"(task={ids['b']}, attempt=2)"
    assert b["kwargsrepr"] == repr({"key": "b", "ticket": "Trace the lineage"})
