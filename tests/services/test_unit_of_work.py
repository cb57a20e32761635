"""The unit of work: the broker hears of a transaction only once it committed, exactly once,
and a transaction that lost a race runs again from scratch.

A lost PostgreSQL deadlock is raised here by the work itself (SQLite serialises writers and
never deadlocks); the integration and fault suites make real ones and real outages."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from omoi.domain.ids import new_id
from omoi.persistence import Database
from omoi.persistence.statements import tasks, tickets
from omoi.persistence.types import utcnow
from omoi.services import outbox
from omoi.services.dispatcher import Dispatch
from omoi.services.phases import Defaults, NewTask, Origin, instantiate
from omoi.services.unit_of_work import Transaction, UnitOfWork
from tests.services.steps import task_of
from tests.support.units import Recorded, session_workflows, unit_of_work


def queue_one(tx: Transaction, revoke: str | None = None) -> uuid.UUID:
    """A use case in miniature: a ticket with one ready task, whose dispatch joins
    ``tx.ready`` (and ``revoke``, if given, ``tx.revoke``). Returns the task's id."""
    ticket_id = new_id()
    tx.conn.execute(
        insert(tickets).values(id=ticket_id, title="t", workflow="dag", phase="PHASE_RUN")
    )
    rows, ready = instantiate(
        tx.conn,
        ticket_id,
        "PHASE_RUN",
        [NewTask("a", "ok")],
        Defaults("MEDIUM", 3),
        utcnow(),
        Origin("t"),
    )
    tx.ready += ready
    tx.revoke += [revoke] if revoke else []
    return rows[0]["id"]  # type: ignore[no-any-return]


def committed(db: Database, task_id: uuid.UUID) -> Any:
    """The task's row as another connection sees it (what has committed), without waiting
    for a writer's lock as a transaction of omoi's would."""
    path = db.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT status, published_at FROM tasks WHERE id = ?", (task_id.hex,)
        ).fetchone()


class Observing(Recorded):
    """Records, at each publish, the published tasks' rows as another connection sees them."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.seen: list[Any] = []

    def publish(self, batch: Sequence[Dispatch]) -> None:
        self.seen += [committed(self.db, d.task_id) for d in batch]
        super().publish(batch)


def deadlock() -> OperationalError:
    """What a transaction that lost a PostgreSQL deadlock raises."""
    return OperationalError("UPDATE tasks", None, psycopg.errors.DeadlockDetected("deadlock"))


def test_the_ready_tasks_are_published_after_the_commit_and_revocations_come_first(
    db: Database,
) -> None:
    observing = Observing(db)
    uow = unit_of_work(db, observing, session_workflows())
    during: list[Any] = []

    def work(tx: Transaction) -> uuid.UUID:
        task_id = queue_one(tx, revoke="old:1")
        during.extend(observing.calls)
        return task_id

    task_id = uow.run(work)
    assert during == []  # nothing left while the transaction was open
    assert [d.task_id for d in observing.published] == [task_id]
    assert observing.seen == [("queued", None)]  # committed, and not yet stamped
    assert [c[0] for c in observing.calls] == ["revoke", "publish"]
    assert observing.revoked == ["old:1"]


def test_nothing_is_published_or_revoked_when_the_work_raises(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    made: list[uuid.UUID] = []

    def work(tx: Transaction) -> None:
        made.append(queue_one(tx, revoke="old:1"))
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        uow.run(work)
    assert dispatcher.calls == []
    assert committed(uow.db, made[0]) is None  # rolled back


def test_a_lost_deadlock_runs_the_work_again_from_scratch(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    runs: list[tuple[Transaction, uuid.UUID]] = []

    def work(tx: Transaction) -> uuid.UUID:
        fresh = (tx.ready, tx.revoke) == ([], [])
        assert fresh, "a run began with what an earlier run collected"
        task_id = queue_one(tx, revoke=f"old:{len(runs)}")
        runs.append((tx, task_id))
        if len(runs) == 1:
            raise deadlock()
        return task_id

    survivor = uow.run(work)
    (first_tx, lost), (second_tx, _) = runs
    assert first_tx is not second_tx
    assert [d.task_id for d in dispatcher.published] == [survivor]  # the lost run's: never
    assert dispatcher.revoked == ["old:1"]
    assert committed(uow.db, lost) is None
    with uow.db.connect() as conn:
        assert conn.execute(select(tasks.c.id)).scalars().all() == [survivor]


def test_a_refusal_that_is_no_lost_race_is_not_run_again(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    runs: list[Transaction] = []

    def work(tx: Transaction) -> None:
        runs.append(tx)
        queue_one(tx)
        tx.conn.execute(
            insert(tickets).values(id=new_id(), title="t", workflow="dag", phase="nope")
        )

    with pytest.raises(Exception, match="CHECK constraint failed"):
        uow.run(work)
    assert (len(runs), dispatcher.calls) == (1, [])


def test_a_published_task_is_stamped_once_the_broker_took_it(uow: UnitOfWork) -> None:
    task_id = uow.run(queue_one)
    assert task_of(uow.db, task_id).published_at is not None


def test_a_broker_failure_leaves_the_rows_for_the_outbox_sweep(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    dispatcher.down = True
    task_id = uow.run(queue_one)  # the commit stands: the caller is not told the broker failed
    assert dispatcher.published == []
    assert (task_of(uow.db, task_id).status, task_of(uow.db, task_id).published_at) == (
        "queued",
        None,
    )
    dispatcher.down = False
    assert outbox.sweep(uow.db, dispatcher, unpublished_age=0, lost_age=60) == 1
    assert [d.task_id for d in dispatcher.published] == [task_id]
    assert task_of(uow.db, task_id).published_at is not None
