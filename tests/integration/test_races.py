"""Races in the DAG's counters, run often enough per test that they show: hundreds of pairs of
dependencies failing at the same moment on a four-process worker. Afterwards the suite's
consistency check (tests/support/invariants.py) holds every counter to the rows it counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import submit, tasks_by_key, wait_finished
from tests.support.procs import start_worker

PAIRS = 200


@pytest.fixture(scope="module")
def racer(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A four-process worker that alone serves a capability of its own."""
    capability = f"race{uuid.uuid4().hex[:8]}"
    proc, _ = start_worker(
        env, tmp_path_factory.mktemp("racer"), concurrency=4, capabilities=capability
    )
    yield capability
    proc.stop()


def _all(client: Any, ticket_id: str) -> dict[str, dict[str, Any]]:
    tasks = tasks_by_key(client, ticket_id)
    assert len(tasks) < 1000, "tasks_by_key reads one page"
    return tasks


def test_two_failing_dependencies_cancel_their_dependent_once(client: Any, racer: str) -> None:
    """Each ``d_i`` depends on ``fa_i`` and ``fb_i``, which fail together; both failures cancel
    downstream. The ticket must settle only after ``slow``, which runs alongside, has ended:
    counting ``d_i`` twice settled it ``blocked`` while ``slow`` still ran."""
    caps = [racer]
    specs: list[dict[str, Any]] = [
        {"key": "slow", "task_type": "sleep", "payload": {"seconds": 3}, "capabilities": caps}
    ]
    for i in range(PAIRS):
        specs += [
            {"key": f"fa{i}", "task_type": "explode", "capabilities": caps, "max_retries": 0},
            {"key": f"fb{i}", "task_type": "explode", "capabilities": caps, "max_retries": 0},
            {
                "key": f"d{i}",
                "task_type": "noop",
                "depends_on": [f"fa{i}", f"fb{i}"],
                "capabilities": caps,
            },
        ]
    ticket = submit(client, specs)
    finished = wait_finished(client, ticket["id"], timeout=120)
    tasks = _all(client, ticket["id"])
    assert finished["status"] == "blocked"
    assert tasks["slow"]["status"] == "succeeded"
    settled = client.get(f"/api/v1/tickets/{ticket['id']}/phase-history").get_json()["items"][-1]
    assert settled["to_phase"] == "PHASE_BLOCKED"
    assert datetime.fromisoformat(settled["created_at"]) >= datetime.fromisoformat(
        tasks["slow"]["finished_at"]
    ), "the ticket settled while a task still ran"
    assert {tasks[f"d{i}"]["status"] for i in range(PAIRS)} == {"cancelled"}
    events = client.get(
        f"/api/v1/events?ticket_id={ticket['id']}&type=task.cancelled&limit=1000"
    ).get_json()["items"]
    assert len(events) == PAIRS, "each dependent is cancelled once"


def test_a_sync_point_whose_two_dependencies_fail_together_is_cancelled(
    client: Any, racer: str
) -> None:
    """``need: 2`` of three; two fail a few milliseconds apart, so only one can succeed. Each
    failing transaction counted the failures without seeing the other's, and the sync point
    stayed pending for ever."""
    caps = [racer]
    specs: list[dict[str, Any]] = []
    for i in range(PAIRS):
        specs += [
            {"key": f"sa{i}", "task_type": "explode", "capabilities": caps, "max_retries": 0},
            {"key": f"sb{i}", "task_type": "explode", "capabilities": caps, "max_retries": 0},
            {"key": f"ok{i}", "task_type": "noop", "capabilities": caps},
            {
                "key": f"sync{i}",
                "task_type": "noop",
                "depends_on": [f"sa{i}", f"sb{i}", f"ok{i}"],
                "sync": {"need": 2},
                "capabilities": caps,
            },
        ]
    ticket = submit(client, specs)
    assert wait_finished(client, ticket["id"], timeout=120)["status"] == "blocked"
    tasks = _all(client, ticket["id"])
    stuck = [k for k, t in tasks.items() if t["status"] not in ("succeeded", "failed", "cancelled")]
    assert stuck == []
    for i in range(PAIRS):
        assert tasks[f"sync{i}"]["status"] == "cancelled"
        assert tasks[f"sync{i}"]["error"]["category"] == "upstream_failed"


def test_the_consistency_check_sees_a_broken_counter(tmp_path: Path) -> None:
    """The check that runs after every test can fail: a ticket whose counter is off by one."""
    from omoi.persistence import Database
    from omoi.persistence.migrate import upgrade
    from omoi.persistence.statements import tickets
    from tests.support.invariants import violations

    url = f"sqlite:///{tmp_path / 'omoi.sqlite'}"
    upgrade(url)
    db = Database(url)
    ticket_id = uuid.uuid4()
    with db.connect() as conn:
        conn.execute(
            tickets.insert().values(
                id=ticket_id,
                title="t",
                workflow="dag",
                phase="PHASE_RUN",
                status="active",
                context={},
                open_tasks=1,
            )
        )
    assert violations(db) == [
        f"ticket {ticket_id} (active): open_tasks 1, but 0 of its tasks are not finished"
    ]
    db.dispose()
