"""Resource locks: a task that declares ``resources`` runs only while it holds them.

An attempt takes all its locks at once, in name order, after its claim; if one is taken it
gives the claim back and waits, ``queued`` with ``waiting_for`` set, using no retry and no
worker. Acquire and release both lock the resource's row, so a release always sees the tasks
parked before it and publishes them again. A lock is valid only while its holder runs:
release happens when an attempt ends, and a sweep frees locks whose holder stopped running
(a dead worker's task recovered as lost), which is how a killed holder's lock expires.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, delete, not_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from omoi.domain import locks as rules
from omoi.domain.enums import TaskStatus
from omoi.domain.events import EventType
from omoi.persistence import Database, Resource, ResourceLock
from omoi.persistence.statements import (
    DISPATCH_COLUMNS,
    dialect_of,
    lease_held,
    record,
    sweep_lock,
    task_event,
    tasks,
)
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.persistence.types import utcnow
from omoi.services.dispatcher import Dispatch
from omoi.services.unit_of_work import Transaction, UnitOfWork

resources = Resource.__table__
held = ResourceLock.__table__


def _head(conn: Connection, name: str) -> int:
    """Lock the resource's row (creating it on first use); returns its fencing counter."""
    insert = pg_insert if dialect_of(conn) == "postgresql" else sqlite_insert
    conn.execute(insert(resources).values(name=name, fencing=0).on_conflict_do_nothing())
    return int(
        conn.execute(
            select(resources.c.fencing).where(resources.c.name == name).with_for_update()
        ).scalar_one()
    )


def acquire_or_wait(
    db: Database, task_id: uuid.UUID, ticket_id: uuid.UUID, lease: uuid.UUID, declared: list[str]
) -> dict[str, int] | None:
    """Take every lock the running attempt needs: ``{name: fencing token}``; or park the task
    on the first one that is taken and return None."""

    def tx() -> dict[str, int] | None:
        now = utcnow()
        with db.connect() as conn:
            tokens: dict[str, int] = {}
            for name, mode in rules.requests(declared):
                fencing = _head(conn, name)
                modes = conn.execute(select(held.c.mode).where(held.c.name == name)).scalars()
                if rules.conflicts(mode, list(modes)):
                    parked = conn.execute(
                        update(tasks)
                        .where(tasks.c.id == task_id, lease_held(lease))
                        .values(
                            status=TaskStatus.QUEUED,
                            waiting_for=name,
                            lease_token=None,
                            started_at=None,
                            celery_id=None,
                            agent_id=None,
                            published_at=None,
                        )
                    ).rowcount
                    if parked:
                        record(
                            conn,
                            [
                                task_event(
                                    EventType.TASK_WAITING_FOR_LOCK,
                                    task_id,
                                    ticket_id,
                                    {"resource": name},
                                    now,
                                )
                            ],
                        )
                    conn.execute(delete(held).where(held.c.holder_task == task_id))
                    return None
                if mode == rules.EXCLUSIVE:
                    fencing += 1
                    conn.execute(
                        update(resources).where(resources.c.name == name).values(fencing=fencing)
                    )
                conn.execute(
                    held.insert().values(
                        name=name, mode=mode, holder_task=task_id, fencing=fencing, acquired_at=now
                    )
                )
                tokens[name] = fencing
            # the task really starts now that it holds its locks; the clock is read after
            # waiting for the resource rows, so it follows the previous holder's finish
            started = utcnow()
            conn.execute(update(tasks).where(tasks.c.id == task_id).values(started_at=started))
            record(
                conn,
                [
                    task_event(
                        EventType.LOCK_ACQUIRED, task_id, ticket_id, {"locks": tokens}, started
                    )
                ],
            )
            return tokens

    return db.retry(tx)


def _wake(conn: Connection, names: list[str]) -> list[Dispatch]:
    """Publish again the tasks parked on ``names`` (each takes its chance at the lock).

    The parked tasks are found and locked through their own index, then woken by id: one
    statement saying ``status = 'queued'`` too let the planner, on statistics from a moment
    with nothing queued, walk every queued task through the claim index instead."""
    for name in sorted(set(names)):
        _head(conn, name)
    parked = conn.execute(
        select(tasks.c.id, tasks.c.status)
        .where(tasks.c.waiting_for.in_(names))
        .order_by(tasks.c.id)
        .with_for_update()
    ).all()
    queued = [r.id for r in parked if r.status == TaskStatus.QUEUED]
    if not queued:
        return []
    rows = conn.execute(
        update(tasks)
        .where(tasks.c.id.in_(queued))
        .values(waiting_for=None, published_at=None, queued_at=utcnow())
        .returning(*DISPATCH_COLUMNS)
    ).all()
    return [Dispatch.of_row(r) for r in rows]


def release(uow: UnitOfWork, task_id: uuid.UUID) -> None:
    """Free the task's locks (its attempt ended) and wake the tasks waiting for them."""

    def work(tx: Transaction) -> None:
        names = list(
            tx.conn.execute(
                delete(held).where(held.c.holder_task == task_id).returning(held.c.name)
            ).scalars()
        )
        if names:
            record(
                tx.conn,
                [task_event(EventType.LOCK_RELEASED, task_id, None, {"resources": sorted(names)})],
            )
            tx.ready += _wake(tx.conn, names)

    uow.run(work)


def sweep(uow: UnitOfWork) -> int:
    """Free locks whose holder is no longer running (finished, or lost with its worker)."""

    def work(tx: Transaction) -> int:
        with sweep_lock(tx.conn, "locks") as got:
            if not got:
                return 0
            running = select(tasks.c.id).where(RUNNING_ATTEMPTS)
            names = list(
                tx.conn.execute(
                    delete(held).where(not_(held.c.holder_task.in_(running))).returning(held.c.name)
                ).scalars()
            )
            if names:
                tx.ready += _wake(tx.conn, names)
            return len(names)

    return uow.run(work)


def held_locks(db: Database, name: str | None = None) -> list[Any]:
    query = select(held).order_by(held.c.name, held.c.id)
    if name is not None:
        query = query.where(held.c.name == name)
    with db.connect() as conn:
        return list(conn.execute(query))


def waiting(db: Database, name: str | None = None) -> list[Any]:
    query = select(tasks.c.id, tasks.c.key, tasks.c.ticket_id, tasks.c.waiting_for).where(
        tasks.c.waiting_for.is_not(None)
    )
    if name is not None:
        query = query.where(tasks.c.waiting_for == name)
    with db.connect() as conn:
        return list(conn.execute(query))
