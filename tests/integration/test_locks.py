"""Resource locks on real prefork workers: exclusive holders never overlap, shared ones do,
and waiting costs neither retries nor a worker."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.support.api import submit, wait_finished

pytestmark = pytest.mark.usefixtures("worker")


def intervals(client: Any, ticket_id: str) -> list[tuple[datetime, datetime]]:
    items = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&limit=1000").get_json()["items"]
    return sorted(
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
        for t in items
    )


def test_exclusive_holders_never_overlap(client: Any) -> None:
    name = f"repo:{uuid.uuid4().hex[:6]}"
    ticket = submit(
        client,
        [
            {
                "key": f"t{i}",
                "task_type": "effect",
                "resources": [name],
                "payload": {"seconds": 0.1},
            }
            for i in range(20)
        ],
    )
    final = wait_finished(client, ticket["id"], timeout=120)
    assert final["task_counts"] == {"succeeded": 20}
    spans = intervals(client, ticket["id"])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # each started after the previous holder finished
    tasks = client.get(f"/api/v1/tasks?ticket_id={ticket['id']}&limit=100").get_json()["items"]
    assert all(t["retry_count"] == 0 and t["attempt"] == 1 for t in tasks)  # no retries used
    waited = [
        t
        for t in tasks
        if "task.waiting_for_lock"
        in [e["type"] for e in client.get(f"/api/v1/tasks/{t['id']}").get_json()["timeline"]]
    ]
    assert waited  # with two worker processes some had to wait
    fencing = []
    for t in tasks:
        acquired = [
            e
            for e in client.get(f"/api/v1/tasks/{t['id']}").get_json()["timeline"]
            if e["type"] == "lock.acquired"
        ]
        fencing.append(acquired[-1]["payload"]["locks"][name])
    assert sorted(fencing) == list(range(min(fencing), min(fencing) + 20))  # one token each
    locks = client.get(f"/api/v1/locks?name={name}").get_json()
    assert locks == {"held": [], "waiting": []}


def test_shared_holders_overlap_and_exclude_an_exclusive_one(client: Any) -> None:
    name = f"db:{uuid.uuid4().hex[:6]}"
    ticket = submit(
        client,
        [
            *(
                {
                    "key": f"r{i}",
                    "task_type": "effect",
                    "resources": [f"{name}:shared"],
                    "payload": {"seconds": 1},
                }
                for i in range(2)
            ),
            {
                "key": "w",
                "task_type": "effect",
                "resources": [name],
                "depends_on": [],
                "payload": {"seconds": 0.2},
            },
        ],
    )
    wait_finished(client, ticket["id"], timeout=60)
    items = client.get(f"/api/v1/tasks?ticket_id={ticket['id']}").get_json()["items"]
    span = {
        t["key"]: (
            datetime.fromisoformat(t["started_at"]),
            datetime.fromisoformat(t["finished_at"]),
        )
        for t in items
    }
    (a0, a1), (b0, b1), (w0, w1) = span["r0"], span["r1"], span["w"]
    assert a0 < b1 and b0 < a1  # the two readers held the shared lock together
    assert w0 >= max(a1, b1) or w1 <= min(a0, b0)  # the writer never alongside a reader
