"""Split and merge: a running task adds subtasks to its phase and a merge that waits for all
of them; what depended on the task waits for the merge instead; only a task of an exec type
may split into exec-type tasks."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from omoi.services import attempts, splits
from omoi.services.attempts import Claim
from omoi.services.errors import Conflict, Invalid
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import finish, kinds, start, submit, task_of, tasks_of, ticket_of
from tests.support.units import Recorded

PARTS = [{"key": "p1", "task_type": "ok"}, {"key": "p2", "task_type": "ok", "depends_on": ["p1"]}]


def running(uow: UnitOfWork, task_type: str = "ok") -> tuple[Claim, dict[str, Any]]:
    """``job`` (running), and ``after`` waiting for it."""
    made = submit(uow, NewTask("job", task_type), NewTask("after", "ok", depends_on=["job"]))
    rows = tasks_of(uow.db, made.ticket_id)
    return start(uow, rows["job"].id), rows


def test_a_split_adds_its_subtasks_and_a_merge_that_waits_for_them(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    job, _ = running(uow)
    ready = splits.split(uow, job.task_id, job.lease, PARTS, "majority")
    added = tasks_of(uow.db, job.ticket_id)
    assert list(added) == ["job", "after", "job/p1", "job/p2", "job/merge"]
    merge = added["job/merge"]
    assert (merge.task_type, merge.status, merge.unmet_dependencies) == ("omoi.merge", "pending", 2)
    assert merge.payload == {"strategy": "majority", "order": ["job/p1", "job/p2"]}
    assert [d.task_id for d in ready] == [added["job/p1"].id]
    assert dispatcher.published[-1].task_id == added["job/p1"].id
    assert ticket_of(uow.db, job.ticket_id).open_tasks == 5
    assert kinds(uow.db, job.task_id)[-1] == "task.split"


def test_what_depended_on_the_split_task_waits_for_its_merge(uow: UnitOfWork) -> None:
    job, rows = running(uow)
    splits.split(uow, job.task_id, job.lease, PARTS, "all")
    added = tasks_of(uow.db, job.ticket_id)
    merge_id = str(added["job/merge"].id)
    assert added["after"].dependencies == {"depends_on": [merge_id]}
    assert attempts.succeed(uow, job, "split")
    assert task_of(uow.db, rows["after"].id).status == "pending"  # not released by the job
    for key in ("job/p1", "job/p2", "job/merge"):
        finish(uow, added[key].id)
    assert task_of(uow.db, rows["after"].id).status == "queued"


@pytest.mark.parametrize(
    ("subtasks", "merge", "refusal"),
    [
        ([], "all", "at least one subtask"),
        ([{"key": "p", "task_type": "ok", "phase": "PHASE_RUN"}], "all", "subtasks\\[0\\]"),
        ([{"key": "p"}], "all", "subtasks\\[0\\]"),
        (PARTS, "most", "unknown merge strategy 'most'"),
        ([{"key": "p", "task_type": "ok", "depends_on": ["q"]}], "all", "unknown keys: q"),
    ],
)
def test_a_bad_split_is_refused_and_adds_nothing(
    uow: UnitOfWork, subtasks: list[dict[str, Any]], merge: str, refusal: str
) -> None:
    job, _ = running(uow)
    with pytest.raises(Invalid, match=refusal):
        splits.split(uow, job.task_id, job.lease, subtasks, merge)
    assert list(tasks_of(uow.db, job.ticket_id)) == ["job", "after"]


def test_a_split_under_a_lease_that_no_longer_holds_is_refused(uow: UnitOfWork) -> None:
    job, _ = running(uow)
    with pytest.raises(Conflict, match="no longer held"):
        splits.split(uow, job.task_id, uuid.uuid4(), PARTS, "all")


def test_only_a_task_of_an_exec_type_may_split_into_exec_type_tasks(uow: UnitOfWork) -> None:
    shell = [{"key": "run", "task_type": "shell", "payload": {"command": "true"}}]
    job, _ = running(uow)
    with pytest.raises(Invalid, match="a 'ok' task may not split into 'shell' tasks"):
        splits.split(uow, job.task_id, job.lease, shell, "all")
    ran, _ = running(uow, "shell")
    assert splits.split(uow, ran.task_id, ran.lease, shell, "all")
    custom, _ = running(uow)
    with pytest.raises(Invalid, match="'ok' task may not split into 'deploy'"):
        splits.split(
            uow,
            custom.task_id,
            custom.lease,
            [{"key": "d", "task_type": "deploy"}],
            "all",
            exec_types={"shell", "deploy"},
        )


def test_a_merge_of_ones_own_type_gets_the_options_given(uow: UnitOfWork) -> None:
    job, _ = running(uow)
    splits.split(uow, job.task_id, job.lease, PARTS, {"task_type": "vote-count", "quorum": 2})
    merge = tasks_of(uow.db, job.ticket_id)["job/merge"]
    assert (merge.task_type, merge.payload) == (
        "vote-count",
        {"quorum": 2, "order": ["job/p1", "job/p2"]},
    )
