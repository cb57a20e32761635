"""A ticket's DAG runs on real prefork workers over Redis, recorded in PostgreSQL."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from omoi.broker.app import make_celery
from omoi.broker.dispatcher import CeleryDispatcher
from omoi.config import Settings
from omoi.domain.events import EventType
from omoi.persistence import Database, Event, Task
from omoi.services.dispatcher import Dispatch
from tests.support.api import submit, tasks_by_key, wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import Proc, wait_for

pytestmark = pytest.mark.usefixtures("worker")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def effect_runs(redis_client: redis.Redis, task_id: str) -> int:
    return int(redis_client.get(EFFECT_KEY.format(task_id)) or 0)


def test_diamond_runs_in_dependency_order(client: Any, redis_client: redis.Redis) -> None:
    ticket = submit(
        client,
        [
            {"key": "a", "task_type": "effect"},
            {"key": "b", "task_type": "effect", "depends_on": ["a"]},
            {"key": "c", "task_type": "effect", "depends_on": ["a"]},
            {"key": "d", "task_type": "effect", "depends_on": ["b", "c"]},
        ],
    )
    final = wait_finished(client, ticket["id"])
    assert (final["status"], final["phase"]) == ("done", "PHASE_DONE")
    assert final["task_counts"] == {"succeeded": 4}
    tasks = tasks_by_key(client, ticket["id"])
    for key, deps in {"b": ["a"], "c": ["a"], "d": ["b", "c"]}.items():
        for dep in deps:
            assert at(tasks[key]["started_at"]) >= at(tasks[dep]["finished_at"])
    assert tasks["d"]["result"]["inputs"] == ["b", "c"]  # dependency results reach the handler
    assert all(effect_runs(redis_client, t["id"]) == 1 for t in tasks.values())


def test_greedy_dispatch_does_not_wait_for_slow_sibling(client: Any) -> None:
    """A→C with B a slow sibling of A: C starts as soon as A ends, before B does."""
    ticket = submit(
        client,
        [
            {"key": "a", "task_type": "effect"},
            {"key": "b", "task_type": "effect", "payload": {"seconds": 3}},
            {"key": "c", "task_type": "effect", "depends_on": ["a"]},
        ],
    )
    wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    assert at(tasks["c"]["started_at"]) < at(tasks["b"]["finished_at"])


def test_thousand_task_dag_runs_every_task_exactly_once(
    client: Any, db: Database, redis_client: redis.Redis
) -> None:
    rng = random.Random(7)
    specs = []
    for i in range(1000):
        deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}) if i else []
        specs.append({"key": f"t{i}", "task_type": "effect", "depends_on": deps})
    ticket = submit(client, specs)
    final = wait_finished(client, ticket["id"], timeout=180)
    assert final["task_counts"] == {"succeeded": 1000}
    with db.session() as session:
        rows = session.execute(
            select(
                Task.id,
                Task.key,
                Task.attempt,
                Task.started_at,
                Task.finished_at,
                Task.dependencies,
            ).where(Task.ticket_id == uuid.UUID(ticket["id"]))
        ).all()
        started = session.execute(
            select(func.count())
            .select_from(Event)
            .where(
                Event.ticket_id == uuid.UUID(ticket["id"]),
                Event.type == EventType.TASK_STARTED,
            )
        ).scalar_one()
    assert started == 1000
    finished_at = {str(r.id): r.finished_at for r in rows}
    for r in rows:
        assert r.attempt == 1
        assert all(r.started_at >= finished_at[d] for d in r.dependencies["depends_on"])
    pipe = redis_client.pipeline()
    for r in rows:
        pipe.get(EFFECT_KEY.format(r.id))
    assert [int(v) for v in pipe.execute()] == [1] * 1000


def test_duplicate_delivery_runs_the_effect_once(
    client: Any, settings: Settings, redis_client: redis.Redis, worker: Proc
) -> None:
    ticket = submit(client, [{"key": "x", "task_type": "effect", "payload": {"seconds": 1}}])
    task_id = ticket["tasks"][0]["id"]
    # The same message again, same Celery id, while the first delivery is running.
    CeleryDispatcher(make_celery(settings), 1).publish(
        [Dispatch(uuid.UUID(task_id), 1, "cap.default")]
    )
    wait_finished(client, ticket["id"])
    wait_for(
        lambda: "duplicate_delivery_ignored" in worker.output() and task_id in worker.output(),
        what="the duplicate to be consumed",
    )
    assert effect_runs(redis_client, task_id) == 1
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert task["status"] == "succeeded"
    assert [e["type"] for e in task["timeline"]].count("task.started") == 1


def test_failure_cancels_dependents_and_blocks_ticket(client: Any) -> None:
    ticket = submit(
        client,
        [
            {"key": "a", "task_type": "explode", "payload": {"message": "boom"}},
            {"key": "b", "task_type": "effect", "depends_on": ["a"]},
            {"key": "c", "task_type": "effect", "depends_on": ["b"]},
            {"key": "d", "task_type": "effect"},
        ],
    )
    final = wait_finished(client, ticket["id"])
    assert (final["status"], final["phase"]) == ("blocked", "PHASE_BLOCKED")
    tasks = tasks_by_key(client, ticket["id"])
    assert tasks["a"]["status"] == "failed"
    assert tasks["a"]["error"] == {
        "category": "permanent",
        "type": "PermanentError",
        "message": "boom",
    }
    for key in "bc":
        assert tasks[key]["status"] == "cancelled"
        assert tasks[key]["error"]["category"] == "upstream_failed"
        assert tasks[key]["started_at"] is None
    assert tasks["d"]["status"] == "succeeded"
    history = client.get(f"/api/v1/tasks/{tasks['a']['id']}").get_json()["timeline"]
    failed = [e for e in history if e["type"] == "task.failed"]
    assert "boom" in failed[0]["payload"]["traceback"]


@pytest.mark.parametrize("kind", ["nan", "inf", "nul", "object"])
def test_a_result_postgresql_cannot_store_fails_the_task_naming_why(client: Any, kind: str) -> None:
    """Such a result left the task running, with no error and no deadline to end it."""
    ticket = submit(client, [{"key": "bad", "task_type": "unstorable", "payload": {"kind": kind}}])
    assert wait_finished(client, ticket["id"])["status"] == "blocked"
    task = tasks_by_key(client, ticket["id"])["bad"]
    assert task["status"] == "failed"
    assert task["retry_count"] == 0
    assert task["error"]["category"] == "permanent"
    assert task["error"]["type"] == "UnstorableResult"
    assert task["error"]["message"].startswith("the result cannot be stored: ")


def test_shell_captures_output_and_exit_code(client: Any) -> None:
    ticket = submit(
        client,
        [
            {
                "key": "ok",
                "task_type": "shell",
                "payload": {"command": "echo out; echo err >&2"},
                "timeout_seconds": 20,
            },
            {"key": "bad", "task_type": "shell", "payload": {"command": ["sh", "-c", "exit 3"]}},
            {"key": "unknown", "task_type": "no-such-handler"},
        ],
    )
    wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    assert tasks["ok"]["result"] == {"exit_code": 0, "stdout": "out\n", "stderr": "err\n"}
    assert tasks["bad"]["status"] == "failed"
    assert "exited with 3" in tasks["bad"]["error"]["message"]
    assert tasks["unknown"]["error"]["category"] == "permanent"
    assert "no-such-handler" in tasks["unknown"]["error"]["message"]
