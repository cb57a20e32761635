"""The portable (SQLite) forms of the per-task units of work, which PostgreSQL runs as single
statements: claim, success with released dependents, failure, retry, external claims."""

from __future__ import annotations

import uuid
from typing import Any

from omoi.domain.errors import PermanentError
from omoi.persistence import Database
from omoi.services import attempts
from omoi.services.context import TaskContext
from omoi.services.failures import RetryPolicy
from tests.support.units import unit_of_work


def handlers(task_type: str) -> Any:
    def ok(ctx: TaskContext) -> Any:
        return {"key": ctx.key, "inputs": sorted(ctx.dependency_results)}

    def boom(ctx: TaskContext) -> Any:
        raise PermanentError("boom")

    return {"ok": ok, "boom": boom}.get(task_type)


def run_queued(db: Database, client: Any, ticket_id: str) -> None:
    """Act as a worker: run every queued task until none is left."""
    while True:
        queued = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&status=queued").get_json()
        if not queued["items"]:
            return
        for task in queued["items"]:
            attempts.run_attempt(
                unit_of_work(db),
                RetryPolicy(),
                handlers,
                uuid.UUID(task["id"]),
                task["attempt"],
            )


def test_dag_runs_and_settles_on_sqlite(sqlite: tuple[Database, Any]) -> None:
    db, client = sqlite
    ticket = client.post(
        "/api/v1/tickets",
        json={
            "title": "t",
            "tasks": [
                {"key": "a", "task_type": "ok"},
                {"key": "b", "task_type": "ok", "depends_on": ["a"]},
                {"key": "c", "task_type": "ok", "depends_on": ["a", "b"]},
            ],
        },
    ).get_json()
    run_queued(db, client, ticket["id"])
    final = client.get(f"/api/v1/tickets/{ticket['id']}").get_json()
    assert (final["status"], final["task_counts"]) == ("done", {"succeeded": 3})
    c = client.get(f"/api/v1/tasks?ticket_id={ticket['id']}").get_json()["items"][2]
    assert c["result"] == {"key": "c", "inputs": ["a", "b"]}
    duplicate = attempts.run_attempt(
        unit_of_work(db), RetryPolicy(), handlers, uuid.UUID(c["id"]), 1
    )
    assert duplicate == attempts.Outcome("duplicate")


def test_an_attempt_names_the_agent_that_ran_it_on_sqlite(sqlite: tuple[Database, Any]) -> None:
    db, client = sqlite
    body = {"title": "t", "tasks": [{"key": "a", "task_type": "ok"}]}
    task_id = client.post("/api/v1/tickets", json=body).get_json()["tasks"][0]["id"]
    agent = uuid.uuid4()
    attempts.run_attempt(
        unit_of_work(db), RetryPolicy(), handlers, uuid.UUID(task_id), 1, agent_id=agent
    )
    ran = client.get(f"/api/v1/tasks/{task_id}").get_json()["attempts"]
    assert [(a["attempt"], a["outcome"], a["agent_id"]) for a in ran] == [
        (1, "succeeded", str(agent))
    ]


def test_failure_cancels_downstream_and_retry_reopens_on_sqlite(
    sqlite: tuple[Database, Any],
) -> None:
    db, client = sqlite
    ticket = client.post(
        "/api/v1/tickets",
        json={
            "title": "t",
            "tasks": [
                {"key": "a", "task_type": "boom"},
                {"key": "b", "task_type": "ok", "depends_on": ["a"]},
            ],
        },
    ).get_json()
    run_queued(db, client, ticket["id"])
    assert client.get(f"/api/v1/tickets/{ticket['id']}").get_json()["status"] == "blocked"
    tasks = client.get(f"/api/v1/tasks?ticket_id={ticket['id']}").get_json()["items"]
    assert [t["status"] for t in tasks] == ["failed", "cancelled"]
    assert client.post(f"/api/v1/tasks/{tasks[0]['id']}/retry").status_code == 200
    reopened = client.get(f"/api/v1/tasks/{tasks[1]['id']}").get_json()
    assert (reopened["status"], reopened["unmet_dependencies"]) == ("pending", 1)
    assert client.get(f"/api/v1/tickets/{ticket['id']}").get_json()["status"] == "active"


def test_external_claims_on_sqlite(sqlite: tuple[Database, Any]) -> None:
    _, client = sqlite
    agent = client.post(
        "/api/v1/agents/register", json={"name": "x", "capabilities": ["scan"]}
    ).get_json()["id"]
    client.post(
        "/api/v1/tickets",
        json={
            "title": "t",
            "tasks": [
                {"key": "later", "task_type": "scan", "capabilities": ["scan"], "priority": "LOW"},
                {"key": "first", "task_type": "scan", "capabilities": ["scan"], "priority": "HIGH"},
                {"key": "other", "task_type": "scan", "capabilities": ["gpu"]},
            ],
        },
    )
    first = client.post(f"/api/v1/agents/{agent}/claim").get_json()
    assert first["key"] == "first"  # no Celery worker serves cap.scan: external agents may
    done = client.post(
        f"/api/v1/tasks/{first['task_id']}/complete",
        json={"lease_token": first["lease_token"], "result": 1},
    )
    assert done.get_json()["status"] == "succeeded"
    assert client.post(f"/api/v1/agents/{agent}/claim").get_json()["key"] == "later"
    assert client.post(f"/api/v1/agents/{agent}/claim").status_code == 204
