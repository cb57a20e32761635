"""The transactional outbox: what is published is stamped, what never left (or left and was
lost) is published again by the sweep, and what waits elsewhere (an external agent's task, a
task parked on a lock) is never sent.

PostgreSQL's share of the rule (rows published before the server's last start count as lost;
the sweep's advisory lock and SKIP LOCKED between two beats) is the integration suite's."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from omoi.persistence.statements import DISPATCH_COLUMNS, events, tasks
from omoi.services import outbox
from omoi.services.dispatcher import Dispatch
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import change, kinds, submit, task_of, tasks_of
from tests.support.procs import wait_for
from tests.support.units import BrokerDown, Recorded


def dispatch_of(uow: UnitOfWork, task_id: Any, attempt: int | None = None) -> Dispatch:
    """The task's dispatch, from its row as the statements that queue tasks return it."""
    with uow.db.connect() as conn:
        row = conn.execute(select(*DISPATCH_COLUMNS).where(tasks.c.id == task_id)).one()
    return Dispatch.of_row(row, attempt=attempt)


def unpublished(uow: UnitOfWork, dispatcher: Recorded, *specs: NewTask) -> dict[str, Any]:
    """A ticket whose ready tasks' publish failed: queued and never stamped."""
    dispatcher.down = True
    ticket = submit(uow, *specs)
    dispatcher.down = False
    return tasks_of(uow.db, ticket.ticket_id)


def test_external_tasks_are_never_published(uow: UnitOfWork, dispatcher: Recorded) -> None:
    ticket = submit(uow, NewTask("mine", "scan", external=True), NewTask("theirs", "ok"))
    rows = tasks_of(uow.db, ticket.ticket_id)
    assert [d.task_id for d in dispatcher.published] == [rows["theirs"].id]
    assert rows["mine"].published_at is None
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=0) == 1  # theirs only
    assert [d.task_id for d in dispatcher.published] == [rows["theirs"].id] * 2


def test_a_failed_publish_reports_it_and_stamps_nothing(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = unpublished(uow, dispatcher, NewTask("a", "ok"))
    dispatcher.down = True
    assert not outbox.publish(uow.db, dispatcher, [dispatch_of(uow, rows["a"].id)])
    assert task_of(uow.db, rows["a"].id).published_at is None


def test_a_stamp_marks_only_the_attempt_that_was_published(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = unpublished(uow, dispatcher, NewTask("a", "ok"))
    stale = dispatch_of(uow, rows["a"].id, rows["a"].attempt - 1)  # an earlier attempt's
    outbox.stamp(uow.db, [stale])
    assert task_of(uow.db, rows["a"].id).published_at is None
    outbox.stamp(uow.db, [dispatch_of(uow, rows["a"].id)])
    assert task_of(uow.db, rows["a"].id).published_at is not None


def test_the_sweep_publishes_what_never_left_once_it_is_old_enough(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = unpublished(uow, dispatcher, NewTask("a", "ok"), NewTask("b", "ok"))
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=60, lost_age=60) == 0
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=60) == 2
    assert {d.task_id for d in dispatcher.published} == {rows["a"].id, rows["b"].id}
    assert all(task_of(uow.db, r.id).published_at is not None for r in rows.values())
    assert kinds(uow.db, rows["a"].id)[-1] == "task.republished"
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=60) == 0  # stamped


def test_the_sweep_publishes_again_what_was_published_and_never_claimed(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    ticket = submit(uow, NewTask("a", "ok"))
    a = tasks_of(uow.db, ticket.ticket_id)["a"]
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=60) == 0
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=0) == 1
    assert [d.task_id for d in dispatcher.published] == [a.id, a.id]


def test_after_a_broker_reset_everything_published_and_unclaimed_goes_again(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    ticket = submit(uow, NewTask("a", "ok"))
    assert outbox.sweep(uow.db, dispatcher, 60, 60, broker_reset=True) == 1
    assert len(dispatcher.published) == 2
    assert tasks_of(uow.db, ticket.ticket_id)["a"].status == "queued"


def test_the_sweep_leaves_a_task_parked_on_a_lock_to_its_release(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = unpublished(uow, dispatcher, NewTask("a", "ok"))
    change(uow.db, rows["a"].id, waiting_for="repo")
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=0) == 0


def test_the_sweep_goes_through_every_batch(uow: UnitOfWork, dispatcher: Recorded) -> None:
    rows = unpublished(uow, dispatcher, *(NewTask(f"t{n}", "ok") for n in range(5)))
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=60, limit=2) == 5
    assert sorted(d.task_id for d in dispatcher.published) == sorted(r.id for r in rows.values())


def test_a_sweep_the_broker_refuses_stamps_nothing_and_records_nothing(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = unpublished(uow, dispatcher, NewTask("a", "ok"))
    dispatcher.down = True
    with pytest.raises(BrokerDown):
        outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=0)
    assert task_of(uow.db, rows["a"].id).published_at is None
    with uow.db.connect() as conn:
        republished = select(events.c.id).where(events.c.type == "task.republished")
        assert conn.execute(republished).first() is None


class Held(Recorded):
    """Publishes the first batch at once and each later one only once ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.later = 0  # later batches it was asked to publish, sent or refused

    def publish(self, batch: Sequence[Dispatch]) -> None:
        if self.calls or self.later:
            assert self.gate.wait(10), "the test never opened the gate"
            self.later += 1
        super().publish(batch)


def stamped(uow: UnitOfWork, ticket_id: Any) -> set[Any]:
    return {r.id for r in tasks_of(uow.db, ticket_id).values() if r.published_at is not None}


def wide(uow: UnitOfWork, held: Held, batch: int, width: int) -> Any:
    """A ticket of ``width`` independent tasks submitted through a backlog of ``batch``."""
    backlog = outbox.Backlog(uow.db, held, batch=batch)
    specs = (NewTask(f"t{i}", "ok") for i in range(width))
    return submit(replace(uow, dispatcher=held, backlog=backlog), *specs).ticket_id


def test_a_wide_commit_returns_after_its_first_batch_and_the_backlog_sends_the_rest_once(
    uow: UnitOfWork,
) -> None:
    held = Held()
    ticket_id = wide(uow, held, batch=3, width=8)
    assert [d.key for d in held.published] == ["t0", "t1", "t2"]  # before submit returned
    assert stamped(uow, ticket_id) == {d.task_id for d in held.published}
    held.gate.set()
    wait_for(lambda: len(stamped(uow, ticket_id)) == 8, what="the backlog to publish the rest")
    assert sorted(d.key for d in held.published) == sorted(f"t{i}" for i in range(8))
    assert [len(batch) for _, batch in held.calls] == [3, 3, 2]


def test_what_a_backlog_could_not_send_the_sweep_sends(uow: UnitOfWork) -> None:
    held = Held()
    ticket_id = wide(uow, held, batch=2, width=5)
    held.down = True  # the broker is gone before the backlog's turn
    held.gate.set()
    wait_for(lambda: held.later == 2, what="the backlog to try both later batches")
    assert len(stamped(uow, ticket_id)) == 2
    held.down = False
    assert outbox.sweep(uow.db, held, unpublished_age=0, lost_age=60) == 3
    assert len(stamped(uow, ticket_id)) == 5
    assert sorted(d.key for d in held.published) == [f"t{i}" for i in range(5)]
