"""One attempt of a task: the claim takes it under a fresh lease (a duplicate, stale or early
message takes nothing), the result lands only under that lease, and the same transaction
releases the dependents and settles the ticket.

These run the portable forms (``claims.claim_portable``, ``results.succeed_portable``); the
PostgreSQL single-statement forms of the same rules are the integration suite's."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from omoi.domain.errors import TransientError
from omoi.persistence.types import utcnow
from omoi.services import attempts, cancellation, locks
from omoi.services.context import Handler, TaskContext
from omoi.services.failures import RetryPolicy
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import (
    change,
    events_of,
    kinds,
    start,
    submit,
    task_of,
    tasks_of,
    ticket_of,
)
from tests.support.units import Recorded


def chain(uow: UnitOfWork) -> dict[str, Any]:
    """a; b after a; c after a and b."""
    made = submit(
        uow,
        NewTask("a", "ok", payload={"n": 1}),
        NewTask("b", "ok", depends_on=["a"]),
        NewTask("c", "ok", depends_on=["a", "b"]),
    )
    return tasks_of(uow.db, made.ticket_id)


def run(uow: UnitOfWork, task_id: uuid.UUID, handlers: dict[str, Handler]) -> str:
    """One delivery of the task's current attempt to a worker with ``handlers``."""
    attempt = task_of(uow.db, task_id).attempt
    return attempts.run_attempt(uow, RetryPolicy(), handlers.get, task_id, attempt).word


def test_a_claim_takes_the_task_under_a_fresh_lease(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]
    claimed = attempts.claim(uow, a.id, 1, message_id=f"{a.id}:1")
    assert claimed is not None
    c, ctx = claimed
    row = task_of(uow.db, a.id)
    assert (row.status, row.lease_token, row.celery_id) == ("running", c.lease, f"{a.id}:1")
    assert (ctx.key, ctx.attempt, ctx.payload, ctx.lease) == ("a", 1, {"n": 1}, c.lease)
    assert events_of(uow.db, a.id)[-1].payload == {"attempt": 1, "agent_id": None}
    assert kinds(uow.db, a.id)[-1] == "task.started"


@pytest.mark.parametrize("attempt", [0, 2])
def test_a_message_for_another_attempt_takes_nothing(uow: UnitOfWork, attempt: int) -> None:
    a = chain(uow)["a"]
    assert attempts.claim(uow, a.id, attempt) is None
    assert task_of(uow.db, a.id).status == "queued"


def test_a_duplicate_delivery_takes_nothing(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]
    first = start(uow, a.id)
    assert attempts.claim(uow, a.id, 1) is None
    assert task_of(uow.db, a.id).lease_token == first.lease


def test_a_pending_or_cancelled_task_is_not_claimed(uow: UnitOfWork) -> None:
    rows = chain(uow)
    assert attempts.claim(uow, rows["b"].id, 0) is None  # waits for a
    cancellation.cancel_task(uow, rows["a"].id, "no")
    assert attempts.claim(uow, rows["a"].id, 1) is None


def test_a_retry_is_claimed_only_once_its_wait_is_over(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]
    change(uow.db, a.id, status="retrying", next_attempt_at=utcnow() + timedelta(seconds=60))
    assert attempts.claim(uow, a.id, 1) is None  # an early delayed message
    change(uow.db, a.id, next_attempt_at=utcnow() - timedelta(seconds=1))
    assert attempts.claim(uow, a.id, 1) is not None


def test_a_result_releases_the_dependents_whose_last_dependency_it_was(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = chain(uow)
    c = start(uow, rows["a"].id)
    assert attempts.succeed(uow, c, {"out": 1})
    a = task_of(uow.db, rows["a"].id)
    assert (a.status, a.result, a.lease_token) == ("succeeded", {"out": 1}, None)
    after = tasks_of(uow.db, c.ticket_id)
    assert (after["b"].status, after["b"].attempt) == ("queued", 1)
    assert (after["c"].status, after["c"].unmet_dependencies) == ("pending", 1)
    assert [(d.task_id, d.attempt) for d in dispatcher.published[-1:]] == [(rows["b"].id, 1)]
    assert ticket_of(uow.db, c.ticket_id).open_tasks == 2


def test_a_result_under_a_lease_that_no_longer_holds_is_refused(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = chain(uow)
    old = start(uow, rows["a"].id)
    cancellation.cancel_task(uow, rows["a"].id, "changed my mind")
    published = len(dispatcher.published)
    assert not attempts.succeed(uow, old, {"late": True})
    a = task_of(uow.db, rows["a"].id)
    assert (a.status, a.result) == ("cancelled", None)
    assert kinds(uow.db, a.id)[-1] == "task.superseded"
    assert len(dispatcher.published) == published


def test_the_last_result_of_the_phase_settles_the_ticket(uow: UnitOfWork) -> None:
    rows = chain(uow)
    for key in "abc":
        assert attempts.succeed(uow, start(uow, rows[key].id), key)
    ticket = ticket_of(uow.db, rows["a"].ticket_id)
    assert (ticket.status, ticket.open_tasks) == ("done", 0)


def test_a_run_hands_each_handler_its_dependencies_results(uow: UnitOfWork) -> None:
    rows = chain(uow)

    def ok(ctx: TaskContext) -> Any:
        return {"me": ctx.key, "inputs": ctx.dependency_results}

    for key in "abc":
        assert run(uow, rows[key].id, {"ok": ok}) == "succeeded"
    a = {"me": "a", "inputs": {}}
    b = {"me": "b", "inputs": {"a": a}}
    assert task_of(uow.db, rows["c"].id).result == {"me": "c", "inputs": {"a": a, "b": b}}
    assert run(uow, rows["c"].id, {"ok": ok}) == "duplicate"


def test_a_task_type_without_a_handler_fails_for_good(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]
    assert run(uow, a.id, {}) == "failed"
    row = task_of(uow.db, a.id)
    assert (row.status, row.error["category"]) == ("failed", "permanent")
    assert "no handler registered for task_type 'ok'" in row.error["message"]


def test_a_result_that_cannot_be_stored_fails_for_good_naming_why(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]
    assert run(uow, a.id, {"ok": lambda ctx: {"x": float("nan")}}) == "failed"
    row = task_of(uow.db, a.id)
    assert (row.status, row.error["type"]) == ("failed", "UnstorableResult")
    assert "Out of range float values" in row.error["message"]


def test_a_transient_failure_schedules_a_retry_with_its_traceback(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]

    def flaky(ctx: TaskContext) -> Any:
        raise TransientError("try later")

    assert run(uow, a.id, {"ok": flaky}) == "failed"
    row = task_of(uow.db, a.id)
    assert (row.status, row.attempt, row.retry_count) == ("retrying", 2, 1)
    scheduled = events_of(uow.db, a.id)[-1]
    assert scheduled.type == "task.retry_scheduled"
    assert "TransientError: try later" in scheduled.payload["traceback"]


def test_a_result_of_an_attempt_cancelled_meanwhile_is_superseded(uow: UnitOfWork) -> None:
    a = chain(uow)["a"]

    def cancelled_meanwhile(ctx: TaskContext) -> Any:
        cancellation.cancel_task(uow, ctx.task_id, "stop")
        return "too late"

    assert run(uow, a.id, {"ok": cancelled_meanwhile}) == "superseded"
    assert task_of(uow.db, a.id).result is None


def test_an_attempt_runs_while_holding_its_locks_and_frees_them_after(uow: UnitOfWork) -> None:
    made = submit(
        uow, NewTask("a", "ok", resources=["repo"]), NewTask("b", "ok", resources=["repo"])
    )
    rows = tasks_of(uow.db, made.ticket_id)
    seen: list[Any] = []

    def ok(ctx: TaskContext) -> Any:
        seen.append((ctx.locks, [h.name for h in locks.held_locks(uow.db)]))
        assert run(uow, rows["b"].id, {"ok": ok}) == "waiting"
        return None

    assert run(uow, rows["a"].id, {"ok": ok}) == "succeeded"
    assert seen == [({"repo": 1}, ["repo"])]
    assert locks.held_locks(uow.db) == []
    b = task_of(uow.db, rows["b"].id)
    assert (b.status, b.waiting_for) == ("queued", None)  # woken by a's release
