"""Sync points: ready once N of their M dependencies succeeded, failed when their deadline
passes (beat's sweep), cancelled as soon as N can no longer be reached."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import submit, tasks_by_key, wait_finished
from tests.support.procs import start_beat, wait_for

pytestmark = pytest.mark.usefixtures("worker")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def ready_at_second_success(tasks: dict[str, Any], sync: str, deps: list[str]) -> bool:
    """The sync point was queued by the statement that stored its second dependency's result
    (same timestamp), not the third: whichever order the worker ran them in."""
    finished = sorted(at(tasks[d]["finished_at"]) for d in deps)
    return at(tasks[sync]["queued_at"]) == finished[1] < finished[2]


def test_two_of_three_starts_before_the_slowest(client: Any) -> None:
    ticket = submit(
        client,
        [
            {"key": "a", "task_type": "effect"},
            {"key": "b", "task_type": "effect", "payload": {"seconds": 0.2}},
            {"key": "slow", "task_type": "effect", "payload": {"seconds": 4}},
            {
                "key": "sync",
                "task_type": "effect",
                "depends_on": ["a", "b", "slow"],
                "sync": {"need": 2},
            },
        ],
    )
    assert wait_finished(client, ticket["id"])["status"] == "done"
    tasks = tasks_by_key(client, ticket["id"])
    assert ready_at_second_success(tasks, "sync", ["a", "b", "slow"])
    assert set(tasks["sync"]["result"]["inputs"]) == {"a", "b", "slow"}
    assert tasks["sync"]["sync_need"] == 2


def test_a_sync_point_times_out(client: Any, env: dict[str, str], tmp_path: Path) -> None:
    ticket = submit(
        client,
        [
            {"key": "ok", "task_type": "effect"},
            {"key": "late", "task_type": "effect", "payload": {"seconds": 8}},
            {
                "key": "sync",
                "task_type": "effect",
                "depends_on": ["ok", "late"],
                "sync": {"need": 2, "timeout_seconds": 2},
            },
            {"key": "after", "task_type": "effect", "depends_on": ["sync"]},
        ],
    )
    beat = start_beat(env, tmp_path)
    try:
        sync_id = ticket["tasks"][2]["id"]
        wait_for(
            lambda: client.get(f"/api/v1/tasks/{sync_id}").get_json()["status"] == "failed",
            timeout=30,
            what="the sync point's deadline",
        )
    finally:
        beat.stop()
    tasks = tasks_by_key(client, ticket["id"])
    assert tasks["sync"]["error"]["type"] == "SyncTimeout"
    assert "1 of 2" in tasks["sync"]["error"]["message"]
    assert tasks["after"]["status"] == "cancelled"
    started = at(tasks["sync"]["created_at"])
    assert tasks["late"]["status"] == "running"  # the deadline fired while it still ran
    assert (at(tasks["sync"]["finished_at"]) - started).total_seconds() >= 2


def test_a_sync_point_that_cannot_be_met_is_cancelled_at_once(client: Any) -> None:
    ticket = submit(
        client,
        [
            {"key": "x", "task_type": "explode"},
            {"key": "y", "task_type": "explode"},
            {"key": "z", "task_type": "effect", "payload": {"seconds": 3}},
            {
                "key": "sync",
                "task_type": "effect",
                "depends_on": ["x", "y", "z"],
                "sync": {"need": 2},
            },
        ],
    )
    sync_id = ticket["tasks"][3]["id"]
    wait_for(
        lambda: client.get(f"/api/v1/tasks/{sync_id}").get_json()["status"] == "cancelled",
        timeout=30,
        what="the doomed sync point",
    )
    z = client.get(f"/api/v1/tasks/{ticket['tasks'][2]['id']}").get_json()
    assert z["status"] in ("queued", "running")  # cancelled before z even finished
    assert wait_finished(client, ticket["id"])["status"] == "blocked"


def test_sync_need_is_validated(api_client: Any) -> None:
    resp = api_client.post(
        "/api/v1/tickets",
        json={
            "title": "t",
            "tasks": [
                {"key": "a", "task_type": "noop"},
                {"key": "s", "task_type": "noop", "depends_on": ["a"], "sync": {"need": 2}},
            ],
        },
    )
    assert resp.status_code == 422
    assert "between 1 and 1" in resp.get_json()["error"]["message"]


def test_sync_points_and_merges_declared_in_a_workflow(client: Any) -> None:
    created = client.post("/api/v1/tickets", json={"title": "f", "workflow": "fanin"})
    assert created.status_code == 201
    ticket = created.get_json()
    assert wait_finished(client, ticket["id"])["status"] == "done"
    tasks = tasks_by_key(client, ticket["id"])
    assert ready_at_second_success(tasks, "two-of-three", ["a", "b", "c"])
    assert tasks["tally"]["result"] == {"value": "yes", "votes": 2, "of": 2}
