"""Transactional outbox: a ticket committed by an API that died before publishing still runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select

from omoi.broker.app import make_celery
from omoi.broker.dispatcher import CeleryDispatcher
from omoi.config import Settings
from omoi.domain.jobs import TITLE_CHARS
from omoi.persistence import Database, Task, Ticket
from omoi.services import outbox
from omoi.services.dispatcher import Dispatch
from tests.support.api import wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import ROOT, Proc, start_beat


def test_api_killed_between_commit_and_publish_loses_nothing(
    client: Any,
    db: Database,
    env: dict[str, str],
    tmp_path: Path,
    worker: Proc,
    redis_client: redis.Redis,
) -> None:
    key = f"crash-{uuid.uuid4()}"
    body = {
        "title": "crash",
        "tasks": [
            {"key": "a", "task_type": "effect"},
            {"key": "b", "task_type": "effect"},
            {"key": "c", "task_type": "effect", "depends_on": ["a", "b"]},
        ],
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.crash_after_commit", key],
        input=json.dumps(body).encode(),
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr.decode()

    with db.session() as session:
        ticket_id = session.execute(
            select(Ticket.id).where(Ticket.idempotency_key == key)
        ).scalar_one()
        rows = session.execute(
            select(Task.key, Task.status, Task.published_at).where(Task.ticket_id == ticket_id)
        ).all()
    assert {(r.key, r.status, r.published_at) for r in rows} == {
        ("a", "queued", None),
        ("b", "queued", None),
        ("c", "pending", None),
    }

    beat = start_beat(env, tmp_path)
    try:
        final = wait_finished(client, str(ticket_id), timeout=60)
    finally:
        beat.stop()
    assert final["task_counts"] == {"succeeded": 3}
    tasks = client.get(f"/api/v1/tasks?ticket_id={ticket_id}").get_json()["items"]
    assert [int(redis_client.get(EFFECT_KEY.format(t["id"]))) for t in tasks] == [1, 1, 1]
    timeline = client.get(f"/api/v1/tasks/{tasks[0]['id']}").get_json()["timeline"]
    assert "task.republished" in [e["type"] for e in timeline]


def test_a_published_message_names_only_the_task_and_attempt(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """What Flower and the broker see: ids with readable labels (the task's type as the job's
    name, its key and ticket's title, its lineage), never a payload."""
    queue = f"inspect-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    title = ("Add input validation to the orders API; " * 3)[:TITLE_CHARS]
    dispatch = Dispatch(
        uuid.uuid4(),
        3,
        queue,
        timeout_seconds=5,
        task_type="review",
        key="api/orders",
        title=title + "!",  # one character over what a job shows: clipped
        root_job="first:1",
        parent_job="upstream:2",
    )
    CeleryDispatcher(make_celery(settings, "omoi-test"), 2).publish([dispatch])
    try:
        (raw,) = redis_client.lrange(queue, 0, -1)
    finally:
        redis_client.delete(queue)
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["id"] == f"{dispatch.task_id}:3"
    assert (headers["task"], headers["shadow"]) == ("omoi.run_task", "review")
    assert headers["argsrepr"] == f"(task={dispatch.task_id}, attempt=3)"
    assert headers["kwargsrepr"] == repr({"key": "api/orders", "ticket": title[:-1] + "…"})
    assert (headers["root_id"], headers["parent_id"]) == ("first:1", "upstream:2")
    assert headers["timelimit"] == [7, 5]
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([str(dispatch.task_id), 3], {})


def test_a_published_task_is_stamped_and_the_sweep_leaves_it_alone(
    client: Any, db: Database, settings: Settings, redis_client: redis.Redis
) -> None:
    """``published_at`` is what tells the sweep a message exists: without it, every task
    would be published twice."""
    capability = f"stamp{uuid.uuid4().hex[:6]}"  # a queue no worker consumes
    queue = f"cap.{capability}"
    resp = client.post(
        "/api/v1/tickets",
        json={
            "title": "stamp",
            "tasks": [{"key": "a", "task_type": "noop", "capabilities": [capability]}],
        },
    )
    assert resp.status_code == 201, resp.get_json()
    ticket_id = resp.get_json()["id"]
    try:
        with db.session() as session:
            published_at = session.execute(
                select(Task.published_at).where(Task.ticket_id == uuid.UUID(ticket_id))
            ).scalar_one()
        assert published_at is not None
        dispatcher = CeleryDispatcher(make_celery(settings, "omoi-test"), 2)
        outbox.sweep(db, dispatcher, unpublished_age=0, lost_age=600)
        assert redis_client.llen(queue) == 1
    finally:
        redis_client.delete(queue)
        cancelled = client.post(f"/api/v1/tickets/{ticket_id}/cancel", json={"reason": "done"})
        assert cancelled.status_code == 200, cancelled.get_json()
