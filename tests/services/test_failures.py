"""When an attempt fails: a retry with exponential backoff, travelling as a delayed message
when the wait is short (``eta_max``) and held in the database otherwise; a permanent failure
cancels what depends on it; an interrupted attempt goes back to the queue without spending a
retry; sync points fail only once too few of their dependencies can succeed; the sweeps wake
retries, expire deadlines and time out sync points.

Two dependencies of one sync point failing at once (the row lock ordering them) need
concurrent writers: the integration suite runs that on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from omoi.domain.enums import ErrorCategory
from omoi.persistence.types import utcnow
from omoi.services import failures
from omoi.services.failures import RetryPolicy
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import (
    change,
    error,
    events_of,
    fail,
    finish,
    kinds,
    start,
    submit,
    task_of,
    tasks_of,
    ticket_of,
)
from tests.support.units import Recorded


def one(uow: UnitOfWork, **options: Any) -> Any:
    made = submit(uow, NewTask("a", "ok", **options))
    return tasks_of(uow.db, made.ticket_id)["a"]


def test_a_transient_failure_is_retried_after_its_backoff(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    a = one(uow, retry_backoff=10)
    before = utcnow()
    fail(uow, a.id, ErrorCategory.TRANSIENT, RetryPolicy(eta_max=60))
    row = task_of(uow.db, a.id)
    assert (row.status, row.attempt, row.retry_count) == ("retrying", 2, 1)
    assert row.error["category"] == "transient"
    assert row.next_attempt_at >= before + timedelta(seconds=10)
    retry = dispatcher.published[-1]
    assert (retry.task_id, retry.attempt) == (a.id, 2)
    # the backoff, plus at most a quarter of it in jitter
    assert retry.countdown is not None and 10 <= retry.countdown <= 12.5
    assert events_of(uow.db, a.id)[-1].payload["delay"] == round(retry.countdown, 3)


def test_the_backoff_doubles_with_each_retry_up_to_its_cap(uow: UnitOfWork) -> None:
    a = one(uow, retry_backoff=1, retry_backoff_max=3, max_retries=5)
    for _ in range(3):
        fail(uow, a.id, ErrorCategory.TRANSIENT)
        change(uow.db, a.id, next_attempt_at=utcnow())  # its wait is over
    delays = [e.payload["delay"] for e in events_of(uow.db, a.id) if "delay" in e.payload]
    assert 1 <= delays[0] <= 1.25 and 2 <= delays[1] <= 2.5 and delays[2] == 3


@pytest.mark.parametrize(("eta_max", "sent"), [(10, True), (9.99, False)])
def test_a_wait_longer_than_eta_max_is_held_in_the_database(
    uow: UnitOfWork, dispatcher: Recorded, eta_max: float, sent: bool
) -> None:
    a = one(uow, retry_backoff=10, retry_backoff_max=10)  # the cap makes it exactly 10 s
    published = len(dispatcher.published)
    fail(uow, a.id, ErrorCategory.TRANSIENT, RetryPolicy(eta_max=eta_max))
    assert len(dispatcher.published) == published + sent
    assert task_of(uow.db, a.id).status == "retrying"


def test_the_retry_sweep_queues_a_retry_whose_wait_is_over(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    a = one(uow, retry_backoff=100)
    fail(uow, a.id, ErrorCategory.TRANSIENT, RetryPolicy(eta_max=1))
    assert failures.wake_retries(uow, grace=0) == 0  # still waiting
    change(uow.db, a.id, next_attempt_at=utcnow() - timedelta(seconds=5))
    assert failures.wake_retries(uow, grace=10) == 0  # a delayed message may yet claim it
    assert failures.wake_retries(uow, grace=1) == 1
    row = task_of(uow.db, a.id)
    assert (row.status, row.attempt) == ("queued", 2)
    assert (dispatcher.published[-1].task_id, dispatcher.published[-1].attempt) == (a.id, 2)
    assert events_of(uow.db, a.id)[-1].payload == {"attempt": 2, "woken": True}


def test_exhausted_retries_fail_the_task(uow: UnitOfWork) -> None:
    a = one(uow, max_retries=0)
    fail(uow, a.id, ErrorCategory.TRANSIENT)
    assert task_of(uow.db, a.id).status == "failed"


def test_a_timeout_is_recorded_and_retried(uow: UnitOfWork) -> None:
    a = one(uow)
    fail(uow, a.id, ErrorCategory.TIMEOUT)
    assert task_of(uow.db, a.id).status == "retrying"
    assert "task.timed_out" in kinds(uow.db, a.id)


def test_a_permanent_failure_cancels_everything_downstream_and_blocks_the_ticket(
    uow: UnitOfWork,
) -> None:
    made = submit(
        uow,
        NewTask("a", "ok", max_retries=3),
        NewTask("b", "ok", depends_on=["a"]),
        NewTask("c", "ok", depends_on=["b"]),
        NewTask("d", "ok"),
    )
    rows = tasks_of(uow.db, made.ticket_id)
    fail(uow, rows["a"].id, ErrorCategory.PERMANENT)
    after = tasks_of(uow.db, made.ticket_id)
    assert [after[k].status for k in "abcd"] == ["failed", "cancelled", "cancelled", "queued"]
    assert after["c"].error["category"] == "upstream_failed"
    assert ticket_of(uow.db, made.ticket_id).open_tasks == 1
    finish(uow, rows["d"].id)
    assert ticket_of(uow.db, made.ticket_id).status == "blocked"


def test_a_failure_reported_for_an_attempt_that_no_longer_holds_the_task_changes_nothing(
    uow: UnitOfWork,
) -> None:
    a = one(uow)
    c = start(uow, a.id)
    policy = RetryPolicy()
    assert not failures.fail_attempt(uow, policy, a.id, c.attempt, error(), lease=uuid.uuid4())
    assert not failures.fail_attempt(uow, policy, a.id, c.attempt + 1, error())
    row = task_of(uow.db, a.id)
    assert (row.status, row.lease_token) == ("running", c.lease)
    assert kinds(uow.db, a.id)[-2:] == ["task.superseded", "task.superseded"]


def test_an_interrupted_attempt_is_queued_again_at_once_without_spending_a_retry(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    a = one(uow, max_retries=0)
    fail(uow, a.id, ErrorCategory.INTERRUPTED)
    row = task_of(uow.db, a.id)
    assert (row.status, row.attempt, row.retry_count, row.lease_token) == ("queued", 2, 0, None)
    retry = dispatcher.published[-1]
    assert (retry.task_id, retry.attempt, retry.countdown) == (a.id, 2, None)
    assert kinds(uow.db, a.id)[-2:] == ["task.interrupted", "task.queued"]


def fan_in(uow: UnitOfWork, **sync: Any) -> dict[str, Any]:
    """a, b, c, and s waiting for two of them, and t after s."""
    made = submit(
        uow,
        *(NewTask(k, "ok") for k in "abc"),
        NewTask("s", "ok", depends_on=["a", "b", "c"], sync={"need": 2, **sync}),
        NewTask("t", "ok", depends_on=["s"]),
    )
    return tasks_of(uow.db, made.ticket_id)


def test_a_sync_point_fails_only_once_too_few_dependencies_can_succeed(uow: UnitOfWork) -> None:
    rows = fan_in(uow)
    fail(uow, rows["a"].id)
    assert task_of(uow.db, rows["s"].id).status == "pending"  # b and c may still succeed
    fail(uow, rows["b"].id)
    assert [task_of(uow.db, rows[k].id).status for k in "st"] == ["cancelled", "cancelled"]


def test_a_sync_point_runs_once_enough_dependencies_succeeded(uow: UnitOfWork) -> None:
    rows = fan_in(uow)
    finish(uow, rows["a"].id)
    fail(uow, rows["b"].id)
    finish(uow, rows["c"].id)
    assert task_of(uow.db, rows["s"].id).status == "queued"


def test_a_sync_point_still_waiting_at_its_deadline_times_out(uow: UnitOfWork) -> None:
    rows = fan_in(uow, timeout_seconds=60)
    finish(uow, rows["a"].id)
    assert failures.expire_sync_points(uow) == 0
    change(uow.db, rows["s"].id, sync_deadline=utcnow() - timedelta(seconds=1))
    assert failures.expire_sync_points(uow) == 1
    s = task_of(uow.db, rows["s"].id)
    assert (s.status, s.error["type"]) == ("failed", "SyncTimeout")
    assert "1 of 2 dependencies succeeded" in s.error["message"]
    assert task_of(uow.db, rows["t"].id).status == "cancelled"


def test_an_attempt_past_its_deadline_is_failed_as_timed_out(uow: UnitOfWork) -> None:
    made = submit(uow, NewTask("late", "ok", timeout_seconds=5), NewTask("fresh", "ok"))
    rows = tasks_of(uow.db, made.ticket_id)
    for row in rows.values():
        start(uow, row.id)
    policy = RetryPolicy()
    assert failures.expire_deadlines(uow, policy, slack=2) == 0
    change(uow.db, rows["late"].id, started_at=utcnow() - timedelta(seconds=8))
    assert failures.expire_deadlines(uow, policy, slack=2) == 1
    late = task_of(uow.db, rows["late"].id)
    assert (late.status, late.error["type"]) == ("retrying", "DeadlineExceeded")
    assert task_of(uow.db, rows["fresh"].id).status == "running"
