"""Split and merge on real workers: subtasks fan out, the merge receives their results, and
what depended on the splitting task waits for the merge."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import submit, tasks_by_key, wait_finished

pytestmark = pytest.mark.usefixtures("worker")


def test_split_into_five_with_a_majority_merge(client: Any) -> None:
    ticket = submit(
        client,
        [
            {
                "key": "ask",
                "task_type": "fan-out",
                "payload": {"values": ["yes", "yes", "no", "yes", "maybe"], "merge": "majority"},
            },
            {"key": "after", "task_type": "effect", "depends_on": ["ask"]},
        ],
    )
    final = wait_finished(client, ticket["id"])
    assert (final["status"], final["task_counts"]) == ("done", {"succeeded": 8})
    tasks = tasks_by_key(client, ticket["id"])
    assert tasks["ask/merge"]["result"] == {"value": "yes", "votes": 3, "of": 5}
    assert tasks["after"]["result"]["inputs"] == ["ask/merge"]  # waited for the merge
    assert tasks["after"]["started_at"] >= tasks["ask/merge"]["finished_at"]
    merge = client.get(f"/api/v1/tasks/{tasks['ask/merge']['id']}").get_json()
    assert len(merge["depends_on"]) == 5


@pytest.mark.parametrize(
    ("merge", "expected"),
    [
        ("all", [1, 2, 3]),
        ({"strategy": "majority"}, None),
    ],
)
def test_other_merges(client: Any, merge: Any, expected: Any) -> None:
    ticket = submit(
        client,
        [{"key": "s", "task_type": "fan-out", "payload": {"values": [1, 2, 3], "merge": merge}}],
    )
    final = wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    if expected is None:  # no value has a majority: the merge fails, the ticket is blocked
        assert final["status"] == "blocked"
        assert "no majority" in tasks["s/merge"]["error"]["message"]
    else:
        assert tasks["s/merge"]["result"] == expected


def test_first_merge_takes_the_earliest_result(client: Any) -> None:
    ticket = submit(
        client,
        [{"key": "s", "task_type": "fan-out", "payload": {"values": ["a", "b"], "merge": "first"}}],
    )
    wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    earliest = min(("s/v0", "s/v1"), key=lambda k: tasks[k]["finished_at"])
    assert tasks["s/merge"]["result"] == tasks[earliest]["result"]


def test_a_custom_merge_handler_gets_the_results(client: Any) -> None:
    ticket = submit(
        client,
        [
            {
                "key": "s",
                "task_type": "fan-out",
                "payload": {"values": [1, 2], "merge": {"task_type": "effect"}},
            }
        ],
    )
    wait_finished(client, ticket["id"])
    merged = tasks_by_key(client, ticket["id"])["s/merge"]
    assert merged["task_type"] == "effect"
    assert merged["result"]["inputs"] == ["s/v0", "s/v1"]


def test_a_split_with_a_bad_subtask_fails_the_task_and_adds_nothing(client: Any) -> None:
    """A handler's subtask specs pass through no API schema: the split checks them by the
    same rules, refuses them whole, and the task fails at once (retrying cannot fix them)."""
    ticket = submit(
        client,
        [
            {
                "key": "ask",
                "task_type": "fan-out",
                "payload": {"values": [1, 2], "extra": {"max_retries": "three"}},
                "max_retries": 2,
            }
        ],
    )
    final = wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    assert list(tasks) == ["ask"]  # no subtask, no merge
    error = tasks["ask"]["error"]
    assert (tasks["ask"]["status"], tasks["ask"]["retry_count"]) == ("failed", 0)
    assert error["category"] == "permanent"
    assert "subtasks[0]: max_retries must be an integer from 0 to 100" in error["message"]
    assert final["status"] == "blocked"
