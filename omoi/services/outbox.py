"""Transactional outbox: rows are queued in Postgres first, published after commit, and
re-published by a sweep when the publish never happened or its message was lost."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy import and_, or_, select, text, update

from omoi.domain.enums import TaskStatus
from omoi.domain.events import EventType
from omoi.persistence import Database, Task
from omoi.persistence.statements import (
    DISPATCH_COLUMNS,
    record,
    stamp_published,
    sweep_lock,
    task_event,
    tasks,
)
from omoi.persistence.types import utcnow
from omoi.services.dispatcher import Dispatch, Dispatcher

log = structlog.get_logger(__name__)


def publish(db: Database, dispatcher: Dispatcher, batch: Sequence[Dispatch]) -> bool:
    """Publish a committed batch and stamp ``published_at``; on broker failure leave it for the
    sweep and return False (the rows are safe in Postgres). External agents' tasks are left
    for them to claim over HTTP."""
    batch = [d for d in batch if not d.external]
    if not batch:
        return True
    try:
        dispatcher.publish(batch)
    except Exception as exc:  # broker down: the outbox sweep publishes later
        log.warning("publish_failed", count=len(batch), error=repr(exc))
        return False
    stamp(db, batch)
    return True


class Backlog:
    """Publishes, from one daemon thread (a greenlet under gevent), what a commit made ready
    beyond the first ``batch`` tasks, ``batch`` at a time: a request that queued 20,000 tasks
    answers once the first ``batch`` are on the broker instead of after all of them. It adds
    no risk: the rows are committed as ``queued``, and whatever a backlog never published
    (its process died, the broker refused) the outbox sweep publishes after
    ``OMOI_OUTBOX_REPUBLISH_AGE``, as any publish that did not happen."""

    def __init__(self, db: Database, dispatcher: Dispatcher, batch: int = 1000) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.batch = batch
        self._queue: queue.SimpleQueue[Sequence[Dispatch]] = queue.SimpleQueue()
        self._started: int | None = None  # the pid that started the thread (a fork has none)
        self._lock = threading.Lock()

    def publish(self, ready: Sequence[Dispatch]) -> None:
        """The first ``batch`` now, the rest from the thread."""
        publish(self.db, self.dispatcher, ready[: self.batch])
        if len(ready) > self.batch:
            self._start()
            self._queue.put(ready[self.batch :])

    def _start(self) -> None:
        with self._lock:
            if self._started != os.getpid():
                self._started = os.getpid()
                threading.Thread(target=self._run, name="omoi-backlog", daemon=True).start()

    def _run(self) -> None:
        while True:
            ready = self._queue.get()
            for start in range(0, len(ready), self.batch):
                chunk = ready[start : start + self.batch]
                try:
                    publish(self.db, self.dispatcher, chunk)
                except Exception as exc:  # the stamp's database went away: the sweep sends it
                    log.warning("backlog_publish_failed", count=len(chunk), error=repr(exc))


def stamp(db: Database, batch: Sequence[Dispatch]) -> None:
    """Mark the batch published. The next attempt's claim may be waiting for these row locks,
    so on PostgreSQL each attempt's rows are one statement that does not wait for the WAL
    flush: a stamp lost in a crash only makes the sweep publish a harmless duplicate."""
    by_attempt = {
        a: [d.task_id for d in batch if d.attempt == a] for a in {d.attempt for d in batch}
    }
    stamp_published(db, by_attempt, utcnow())


def sweep(
    db: Database,
    dispatcher: Dispatcher,
    unpublished_age: float,
    lost_age: float,
    *,
    broker_reset: bool = False,
    limit: int = 1000,
) -> int:
    """Re-publish queued rows never published for ``unpublished_age`` seconds, or published
    ``lost_age`` seconds ago and still unclaimed — or published at all, when the broker lost
    its data (``broker_reset``): those messages are gone. Batches of ``limit`` until none is
    left. A duplicate message is harmless: the claim matches on ``(id, status='queued',
    attempt)`` and only one delivery wins. On PostgreSQL, rows published before the server
    last started count as lost too: a crash may have lost their claims (committed without
    waiting for the flush), and those messages were acknowledged. Re-published rows are
    stamped after the start, so this happens once per restart."""
    now = utcnow()
    lost_before = now if broker_reset else now - timedelta(seconds=lost_age)
    if db.dialect == "postgresql":
        with db.connect() as conn:
            started = conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
        lost_before = max(lost_before, started)
    total = 0
    while count := _sweep_batch(
        db, dispatcher, now - timedelta(seconds=unpublished_age), lost_before, limit
    ):
        total += count
        if count < limit:
            break
    if total:
        log.info("outbox_republished", count=total, broker_reset=broker_reset)
    return total


def _sweep_batch(
    db: Database,
    dispatcher: Dispatcher,
    unpublished_before: datetime,
    lost_before: datetime,
    limit: int,
) -> int:
    """One batch; rows it publishes are stamped now, after both cut-offs, so the next batch
    moves on."""
    now = utcnow()
    with db.session() as session, sweep_lock(session, "outbox") as got:
        if not got:
            return 0
        rows = session.execute(
            select(*DISPATCH_COLUMNS, tasks.c.ticket_id)
            .where(
                Task.status == TaskStatus.QUEUED,
                Task.external.is_(False),
                Task.waiting_for.is_(None),  # parked on a lock: its release publishes it
                or_(
                    and_(Task.published_at.is_(None), Task.queued_at < unpublished_before),
                    Task.published_at < lost_before,
                ),
            )
            .order_by(Task.queued_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        batch = [Dispatch.of_row(r) for r in rows]
        dispatcher.publish(batch)
        session.execute(
            update(Task)
            .where(Task.id.in_([r.id for r in rows]))
            .values(published_at=now)
            .execution_options(synchronize_session=False)
        )
        record(
            session,
            (
                task_event(
                    EventType.TASK_REPUBLISHED, r.id, r.ticket_id, {"attempt": r.attempt}, now
                )
                for r in rows
            ),
        )
    return len(rows)
