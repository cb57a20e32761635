"""Running one attempt of a task: claim under a fresh lease, run the handler outside any
transaction, then commit the outcome only if the lease still holds. The same transaction
advances the DAG (dependents' counters) and settles the ticket; ready dependents are published
after commit."""

from __future__ import annotations

import json
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from omoi.domain.enums import ErrorCategory, TaskStatus
from omoi.domain.errors import PermanentError, TaskError, classify
from omoi.domain.events import EventType
from omoi.models import Database, Task, Ticket
from omoi.models.types import utcnow
from omoi.services.dispatcher import Dispatch, Dispatcher
from omoi.services.outbox import publish
from omoi.services.records import record, settle_ticket, task_event
from omoi.services.sql import depends_on_any, dialect_of

log = structlog.get_logger(__name__)


@dataclass
class TaskContext:
    """What a handler sees of its task. Handlers return a JSON-serializable result."""

    task_id: uuid.UUID
    ticket_id: uuid.UUID
    key: str
    task_type: str
    attempt: int
    payload: dict[str, Any]
    timeout_seconds: float | None
    dependency_results: dict[str, Any] = field(default_factory=dict)
    ticket_context: dict[str, Any] = field(default_factory=dict)
    _db: Database | None = field(default=None, repr=False)
    _lease: uuid.UUID | None = field(default=None, repr=False)

    def should_cancel(self) -> bool:
        """True once this attempt no longer owns the task (cancelled, or superseded)."""
        if self._db is None:
            return False
        with self._db.session() as session:
            lease = session.execute(
                select(Task.lease_token).where(
                    Task.id == self.task_id, Task.status == TaskStatus.RUNNING
                )
            ).scalar_one_or_none()
        return lease != self._lease


Handler = Callable[[TaskContext], Any]


@dataclass(frozen=True)
class Claim:
    task_id: uuid.UUID
    ticket_id: uuid.UUID
    attempt: int
    lease: uuid.UUID


def claim(
    db: Database, task_id: uuid.UUID, attempt: int, message_id: str | None = None
) -> tuple[Claim, TaskContext] | None:
    """queued → running under a new lease. ``None`` when the message is a duplicate or stale."""
    lease = uuid.uuid4()
    now = utcnow()
    with db.session() as session:
        row = session.execute(
            update(Task)
            .where(
                Task.id == task_id,
                Task.status == TaskStatus.QUEUED,
                Task.attempt == attempt,
            )
            .values(
                status=TaskStatus.RUNNING,
                lease_token=lease,
                started_at=now,
                celery_id=message_id,
            )
            .returning(
                Task.ticket_id,
                Task.key,
                Task.task_type,
                Task.payload,
                Task.timeout_seconds,
                Task.dependencies,
            )
        ).one_or_none()
        if row is None:
            return None
        deps = row.dependencies.get("depends_on", [])
        results: dict[str, Any] = {}
        if deps:
            results = {
                r.key: r.result
                for r in session.execute(
                    select(Task.key, Task.result).where(Task.id.in_([uuid.UUID(d) for d in deps]))
                )
            }
        ticket_context = session.execute(
            select(Ticket.context).where(Ticket.id == row.ticket_id)
        ).scalar_one()
        record(
            session,
            [task_event(EventType.TASK_STARTED, task_id, row.ticket_id, {"attempt": attempt}, now)],
        )
    context = TaskContext(
        task_id=task_id,
        ticket_id=row.ticket_id,
        key=row.key,
        task_type=row.task_type,
        attempt=attempt,
        payload=row.payload,
        timeout_seconds=row.timeout_seconds,
        dependency_results=results,
        ticket_context=ticket_context,
        _db=db,
        _lease=lease,
    )
    return Claim(task_id, row.ticket_id, attempt, lease), context


def _lock_ticket(session: Session, ticket_id: uuid.UUID) -> None:
    """Serialize one ticket's DAG bookkeeping: no deadlocks between sibling completions, and
    the last one to finish sees every other's commit when it settles the ticket."""
    session.execute(select(Ticket.id).where(Ticket.id == ticket_id).with_for_update()).scalar_one()


def _finish(session: Session, c: Claim, values: dict[str, Any]) -> bool:
    """The lease guard: the outcome lands only if this attempt still owns the row."""
    hit = session.execute(
        update(Task)
        .where(
            Task.id == c.task_id,
            Task.status == TaskStatus.RUNNING,
            Task.lease_token == c.lease,
        )
        .values(finished_at=utcnow(), **values)
        .returning(Task.id)
    ).one_or_none()
    if hit is None:
        record(
            session,
            [task_event(EventType.TASK_SUPERSEDED, c.task_id, c.ticket_id, {"attempt": c.attempt})],
        )
    return hit is not None


def _release_dependents(session: Session, c: Claim) -> list[Dispatch]:
    now = utcnow()
    becomes_ready = Task.unmet_dependencies == 1
    rows = session.execute(
        update(Task)
        .where(
            Task.ticket_id == c.ticket_id,
            Task.status == TaskStatus.PENDING,
            depends_on_any(dialect_of(session), [c.task_id]),
        )
        .values(
            unmet_dependencies=Task.unmet_dependencies - 1,
            status=case((becomes_ready, TaskStatus.QUEUED.value), else_=Task.status),
            attempt=case((becomes_ready, Task.attempt + 1), else_=Task.attempt),
            queued_at=case((becomes_ready, now), else_=Task.queued_at),
        )
        .returning(
            Task.id,
            Task.status,
            Task.attempt,
            Task.capabilities,
            Task.priority,
            Task.timeout_seconds,
        )
        .execution_options(synchronize_session=False)
    ).all()
    ready = [r for r in rows if r.status == TaskStatus.QUEUED]
    record(
        session,
        (
            task_event(EventType.TASK_QUEUED, r.id, c.ticket_id, {"attempt": r.attempt}, now)
            for r in ready
        ),
    )
    return [
        Dispatch.of(r.id, r.attempt, r.capabilities, r.priority, r.timeout_seconds) for r in ready
    ]


def _cancel_downstream(
    session: Session, ticket_id: uuid.UUID, roots: Sequence[uuid.UUID], reason: str
) -> int:
    """Cancel every pending task downstream of ``roots``, level by level."""
    now = utcnow()
    dialect = dialect_of(session)
    frontier, total = list(roots), 0
    error = TaskError(ErrorCategory.UPSTREAM_FAILED, "UpstreamFailed", reason).as_dict()
    while frontier:
        cancelled = (
            session.execute(
                update(Task)
                .where(
                    Task.ticket_id == ticket_id,
                    Task.status == TaskStatus.PENDING,
                    depends_on_any(dialect, frontier),
                )
                .values(status=TaskStatus.CANCELLED, error=error, finished_at=now)
                .returning(Task.id)
                .execution_options(synchronize_session=False)
            )
            .scalars()
            .all()
        )
        record(
            session,
            (task_event(EventType.TASK_CANCELLED, t, ticket_id, error, now) for t in cancelled),
        )
        total += len(cancelled)
        frontier = list(cancelled)
    return total


def succeed(db: Database, c: Claim, result: Any) -> list[Dispatch]:
    with db.session() as session:
        _lock_ticket(session, c.ticket_id)
        if not _finish(
            session,
            c,
            {"status": TaskStatus.SUCCEEDED, "result": result, "error": None, "lease_token": None},
        ):
            return []
        record(
            session,
            [task_event(EventType.TASK_SUCCEEDED, c.task_id, c.ticket_id, {"attempt": c.attempt})],
        )
        ready = _release_dependents(session, c)
        if not ready:
            settle_ticket(session, c.ticket_id)
    return ready


def fail(db: Database, c: Claim, error: TaskError, trace: str | None = None) -> None:
    with db.session() as session:
        _lock_ticket(session, c.ticket_id)
        if not _finish(
            session, c, {"status": TaskStatus.FAILED, "error": error.as_dict(), "lease_token": None}
        ):
            return
        record(
            session,
            [
                task_event(
                    EventType.TASK_FAILED,
                    c.task_id,
                    c.ticket_id,
                    {"attempt": c.attempt, **error.as_dict(), "traceback": trace},
                )
            ],
        )
        _cancel_downstream(session, c.ticket_id, [c.task_id], f"dependency {c.task_id} failed")
        settle_ticket(session, c.ticket_id)


def run_attempt(
    db: Database,
    dispatcher: Dispatcher,
    resolve: Callable[[str], Handler | None],
    task_id: uuid.UUID,
    attempt: int,
    message_id: str | None = None,
) -> str:
    """One delivery of ``run_task``; returns what happened (for logs and the job's result)."""
    claimed = claim(db, task_id, attempt, message_id)
    if claimed is None:
        log.info("duplicate_delivery_ignored", task_id=str(task_id), attempt=attempt)
        return "duplicate"
    c, ctx = claimed
    handler = resolve(ctx.task_type)
    started = time.monotonic()
    try:
        if handler is None:
            raise PermanentError(f"no handler registered for task_type {ctx.task_type!r}")
        result = handler(ctx)
        json.dumps(result)  # a result must be storable; fail here, not in the commit
    except Exception as exc:
        error = classify(exc)
        log.warning("task_failed", task_id=str(task_id), attempt=attempt, **error.as_dict())
        fail(db, c, error, traceback.format_exc())
        return "failed"
    ready = succeed(db, c, result)
    publish(db, dispatcher, ready)
    log.debug(
        "task_succeeded",
        task_id=str(task_id),
        attempt=attempt,
        seconds=round(time.monotonic() - started, 4),
    )
    return "succeeded"
