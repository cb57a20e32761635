"""What people do to running work: cancel a task (and what depends on it) or a whole ticket,
with the running attempts' messages revoked after the commit; re-run a failed task, which
reopens what its failure cancelled."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from omoi.domain.enums import ErrorCategory
from omoi.services import cancellation, locks
from omoi.services.errors import Conflict, NotFound
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import fail, finish, kinds, start, submit, task_of, tasks_of, ticket_of
from tests.support.units import Recorded


def graph(uow: UnitOfWork) -> dict[str, Any]:
    """a; b after a; c after b; d alone."""
    made = submit(
        uow,
        NewTask("a", "ok"),
        NewTask("b", "ok", depends_on=["a"]),
        NewTask("c", "ok", depends_on=["b"]),
        NewTask("d", "ok"),
    )
    return tasks_of(uow.db, made.ticket_id)


def statuses(uow: UnitOfWork, ticket_id: uuid.UUID) -> dict[str, str]:
    return {k: r.status for k, r in tasks_of(uow.db, ticket_id).items()}


def test_cancelling_a_running_task_cancels_what_depends_on_it_and_revokes_its_message(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = graph(uow)
    start(uow, rows["a"].id, message_id=f"{rows['a'].id}:1")
    cancellation.cancel_task(uow, rows["a"].id, "not needed")
    ticket_id = rows["a"].ticket_id
    assert statuses(uow, ticket_id) == {
        "a": "cancelled",
        "b": "cancelled",
        "c": "cancelled",
        "d": "queued",
    }
    assert task_of(uow.db, rows["a"].id).error["message"] == "not needed"
    assert task_of(uow.db, rows["c"].id).error["category"] == "upstream_failed"
    assert dispatcher.revoked == [f"{rows['a'].id}:1"]
    assert ticket_of(uow.db, ticket_id).open_tasks == 1


def test_a_queued_task_has_no_message_to_revoke(uow: UnitOfWork, dispatcher: Recorded) -> None:
    rows = graph(uow)
    cancellation.cancel_task(uow, rows["d"].id, "no")
    assert dispatcher.revoked == []


def test_cancelling_the_phases_last_open_task_judges_its_gate(uow: UnitOfWork) -> None:
    rows = graph(uow)
    for key in "abc":
        finish(uow, rows[key].id)
    cancellation.cancel_task(uow, rows["d"].id, "no")
    ticket = ticket_of(uow.db, rows["a"].ticket_id)
    assert (ticket.status, ticket.previous_phase) == ("blocked", "PHASE_RUN")


def test_an_ended_or_unknown_task_cannot_be_cancelled(uow: UnitOfWork) -> None:
    rows = graph(uow)
    finish(uow, rows["d"].id)
    with pytest.raises(Conflict, match="already ended"):
        cancellation.cancel_task(uow, rows["d"].id, "no")
    with pytest.raises(NotFound):
        cancellation.cancel_task(uow, uuid.uuid4(), "no")


def test_cancelling_a_task_frees_its_locks_for_the_tasks_waiting(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    made = submit(uow, *(NewTask(k, "ok", resources=["repo"]) for k in "ab"))
    rows = tasks_of(uow.db, made.ticket_id)
    for key in "ab":
        c = start(uow, rows[key].id)
        locks.acquire_or_wait(uow.db, c.task_id, c.ticket_id, c.lease, ["repo"])
    assert task_of(uow.db, rows["b"].id).waiting_for == "repo"
    cancellation.cancel_task(uow, rows["a"].id, "no")
    assert locks.held_locks(uow.db) == []
    assert task_of(uow.db, rows["b"].id).waiting_for is None
    assert dispatcher.published[-1].task_id == rows["b"].id


def test_cancelling_a_ticket_cancels_its_open_tasks_and_revokes_the_running_ones(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = graph(uow)
    finish(uow, rows["a"].id)
    start(uow, rows["b"].id, message_id="b:1")
    start(uow, rows["d"].id)  # running, but with no Celery message (an external agent's)
    ticket_id = rows["a"].ticket_id
    cancellation.cancel_ticket(uow, ticket_id, "abandoned")
    assert statuses(uow, ticket_id) == {
        "a": "succeeded",
        "b": "cancelled",
        "c": "cancelled",
        "d": "cancelled",
    }
    ticket = ticket_of(uow.db, ticket_id)
    assert (ticket.status, ticket.open_tasks) == ("cancelled", 0)
    assert dispatcher.revoked == ["b:1"]
    assert kinds(uow.db, ticket_id)[-1] == "ticket.cancelled"
    with pytest.raises(Conflict, match="already cancelled"):
        cancellation.cancel_ticket(uow, ticket_id, "again")


def test_a_retried_task_runs_again_and_reopens_what_its_failure_cancelled(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = graph(uow)
    finish(uow, rows["d"].id)
    fail(uow, rows["a"].id, ErrorCategory.PERMANENT)
    ticket_id = rows["a"].ticket_id
    assert ticket_of(uow.db, ticket_id).status == "blocked"
    cancellation.retry_task(uow, rows["a"].id)
    a = task_of(uow.db, rows["a"].id)
    assert (a.status, a.attempt, a.retry_count, a.error) == ("queued", 2, 0, None)
    assert (dispatcher.published[-1].task_id, dispatcher.published[-1].attempt) == (a.id, 2)
    reopened = tasks_of(uow.db, ticket_id)
    assert [(reopened[k].status, reopened[k].unmet_dependencies) for k in "bc"] == [
        ("pending", 1),
        ("pending", 1),
    ]
    ticket = ticket_of(uow.db, ticket_id)
    assert (ticket.status, ticket.phase, ticket.open_tasks) == ("active", "PHASE_RUN", 3)
    for key in "abc":
        finish(uow, rows[key].id)
    assert ticket_of(uow.db, ticket_id).status == "done"


def test_a_retry_leaves_cancelled_what_another_cause_cancelled(uow: UnitOfWork) -> None:
    made = submit(
        uow,
        NewTask("a", "ok"),
        NewTask("x", "ok"),
        NewTask("both", "ok", depends_on=["a", "x"]),
        NewTask("mine", "ok", depends_on=["a"]),
    )
    rows = tasks_of(uow.db, made.ticket_id)
    fail(uow, rows["x"].id)
    cancellation.cancel_task(uow, rows["mine"].id, "not wanted")
    fail(uow, rows["a"].id)
    cancellation.retry_task(uow, rows["a"].id)
    after = statuses(uow, made.ticket_id)
    assert (after["both"], after["mine"]) == ("cancelled", "cancelled")  # x still dooms both


def test_only_a_failed_task_of_a_live_ticket_is_retried(uow: UnitOfWork) -> None:
    rows = graph(uow)
    with pytest.raises(Conflict, match="only a failed task can be retried"):
        cancellation.retry_task(uow, rows["a"].id)
    fail(uow, rows["a"].id)
    cancellation.cancel_ticket(uow, rows["a"].ticket_id, "abandoned")
    with pytest.raises(Conflict, match="is cancelled"):
        cancellation.retry_task(uow, rows["a"].id)
