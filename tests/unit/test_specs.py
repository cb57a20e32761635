"""The task-spec rules workflow files and splits are held to agree with the API's schema on
every typed value a spec can carry."""

from typing import Any

import pytest
from marshmallow import ValidationError

from omoi.api.schemas.tickets import TaskIn
from omoi.domain.specs import problems
from omoi.services.errors import Invalid
from omoi.services.splits import merge_spec

CASES: list[dict[str, Any]] = [
    {},
    {"key": "a#2"},
    {"key": "k" * 200},
    {"key": "k" * 201},
    {"task_type": ""},
    {"depends_on": ["x", "y"]},
    {"depends_on": ["x#1"]},
    {"description": "d" * 20_000},
    {"description": "d" * 20_001},
    {"capabilities": ["gpu", "Py.3"]},
    {"capabilities": ["gpu", "GPU"]},
    {"capabilities": ["two words"]},
    {"capabilities": [f"c{i}" for i in range(33)]},
    {"payload": {"n": [1, None]}},
    {"priority": "HIGH"},
    {"priority": "URGENT"},
    {"priority": None},
    {"max_retries": 0},
    {"max_retries": 100},
    {"max_retries": 101},
    {"max_retries": -1},
    {"retry_backoff": 0.5},
    {"retry_backoff": 0},
    {"retry_backoff": 86_401},
    {"retry_backoff_max": 604_800},
    {"retry_backoff_max": 604_801},
    {"timeout_seconds": 1},
    {"timeout_seconds": -1},
    {"resources": ["db"]},
    {"resources": [""]},
    {"sync": {"need": 1, "timeout_seconds": 60}, "depends_on": ["x"]},
    {"sync": {"need": 0}, "depends_on": ["x"]},
    {"sync": {"need": 1, "timeout_seconds": 0}, "depends_on": ["x"]},
    {"external": True},
]


@pytest.mark.parametrize("case", CASES, ids=[repr(c)[:50] for c in CASES])
def test_the_rules_agree_with_the_api(case: dict[str, Any]) -> None:
    spec = {"key": "k", "task_type": "t", **case}
    try:
        TaskIn().load(spec)
        api_accepts = True
    except ValidationError:
        api_accepts = False
    assert (problems(spec, TaskIn().fields) == []) == api_accepts


def test_what_only_these_rules_see() -> None:
    """Values the API's JSON never carries, and the sync point's count, which the API checks
    with the whole graph."""
    assert problems(
        {"key": "a", "task_type": "t", "priority": ["HIGH"]}, {"key", "task_type", "priority"}
    )
    assert problems(
        {"key": "a", "task_type": "t", "payload": {1: "x"}}, {"key", "task_type", "payload"}
    )
    assert problems({"key": "a", "task_type": "t", 1: "x", "b": 2}, {"key", "task_type"}) == [
        "unknown fields ['1', 'b']"
    ]
    too_few = {"key": "a", "task_type": "t", "depends_on": ["x"], "sync": {"need": 2}}
    assert problems(too_few, too_few) == ["sync.need must be at most the 1 tasks it depends on"]
    assert problems("a", {"key"}) == ["a task spec must be a mapping (got 'a')"]


def test_a_custom_merge_needs_a_task_type_by_the_same_rule() -> None:
    with pytest.raises(Invalid, match="merge: task_type must be a string of 1 to 100"):
        merge_spec({"task_type": ""}, ["a"])
    assert merge_spec({"task_type": "tally"}, ["a"]).task_type == "tally"
