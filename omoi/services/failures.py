"""When an attempt does not succeed: retry it with backoff, or fail the task and cancel what
depends on it. Also the sweeps that wake retries held in PostgreSQL and fail attempts whose
deadline passed with nobody reporting."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, func, select, update

from omoi.domain.backoff import retry_delay
from omoi.domain.enums import ErrorCategory, TaskStatus
from omoi.domain.errors import TaskError
from omoi.domain.events import EventType
from omoi.persistence.statements import (
    DISPATCH_COLUMNS,
    dependents,
    lease_held,
    move_tasks,
    record,
    sweep_lock,
    task_event,
    tasks,
)
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.persistence.types import utcnow
from omoi.services.dispatcher import Dispatch
from omoi.services.phases import close_tasks
from omoi.services.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)

FAILURE_COLUMNS = (
    *DISPATCH_COLUMNS,
    tasks.c.ticket_id,
    tasks.c.retry_count,
    tasks.c.max_retries,
    tasks.c.retry_backoff,
    tasks.c.retry_backoff_max,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults for tasks that set no backoff of their own."""

    backoff: float = 1.0
    backoff_max: float = 60.0
    eta_max: float = 60.0  # longer waits are held in PostgreSQL and woken by the sweep


def _doomed_sync_points(conn: Connection, candidates: Sequence[Any]) -> list[uuid.UUID]:
    """Sync points that can no longer gather ``sync_need`` successes. The caller holds their
    row locks, so this count, a statement begun after the lock was granted, sees every failure
    committed by a transaction that held the lock before: of two dependencies failing at once,
    the second to lock sees both."""
    doomed = []
    for row in candidates:
        deps = [uuid.UUID(d) for d in row.dependencies["depends_on"]]
        lost = conn.execute(
            select(func.count()).where(
                tasks.c.id.in_(deps),
                tasks.c.status.in_([TaskStatus.FAILED, TaskStatus.CANCELLED]),
            )
        ).scalar_one()
        if len(deps) - lost < row.sync_need:
            doomed.append(row.id)
    return doomed


def cancel_downstream(
    conn: Connection, ticket_id: uuid.UUID, roots: Sequence[uuid.UUID], reason: str
) -> int:
    """Cancel every pending task downstream of ``roots`` (``upstream_failed``), level by level;
    a sync point only once too few of its dependencies can still succeed. Returns how many
    this transaction cancelled: a dependent another transaction cancelled first is not counted
    again (the ticket's open-task counter drops once per task)."""
    now = utcnow()
    frontier, total = list(roots), 0
    error = TaskError(ErrorCategory.UPSTREAM_FAILED, "UpstreamFailed", reason).as_dict()
    while frontier:
        pending = dependents(
            conn,
            ticket_id,
            frontier,
            TaskStatus.PENDING,
            tasks.c.id,
            tasks.c.sync_need,
            tasks.c.dependencies,
            lock=True,
        )
        doomed = [r.id for r in pending if r.sync_need is None]
        doomed += _doomed_sync_points(conn, [r for r in pending if r.sync_need is not None])
        frontier = move_tasks(
            conn,
            doomed,
            TaskStatus.PENDING,
            status=TaskStatus.CANCELLED,
            error=error,
            finished_at=now,
        )
        record(
            conn, (task_event(EventType.TASK_CANCELLED, t, ticket_id, error, now) for t in frontier)
        )
        total += len(frontier)
    return total


def _requeue(conn: Connection, row: Any, error: TaskError, detail: dict[str, Any]) -> Dispatch:
    """An attempt its worker handed back when told to stop: queued again at once under the
    next attempt number, without spending a retry (stopping a worker is not the task's fault).
    The old attempt's message, if redelivered, no longer matches the claim."""
    now = utcnow()
    conn.execute(
        update(tasks)
        .where(tasks.c.id == row.id)
        .values(
            status=TaskStatus.QUEUED,
            attempt=row.attempt + 1,
            queued_at=now,
            error=error.as_dict(),
            lease_token=None,
            published_at=None,
            next_attempt_at=None,
        )
    )
    queued = {"attempt": row.attempt + 1, "interrupted": row.attempt}
    record(
        conn,
        [
            task_event(EventType.TASK_INTERRUPTED, row.id, row.ticket_id, detail, now),
            task_event(EventType.TASK_QUEUED, row.id, row.ticket_id, queued, now),
        ],
    )
    return Dispatch.of_row(row, attempt=row.attempt + 1)


def apply_failure(
    tx: Transaction, policy: RetryPolicy, row: Any, error: TaskError, trace: str | None
) -> None:
    """Retry the task if its error allows and retries remain, else fail it for good; an
    interrupted attempt is re-queued at once. The retry's (possibly delayed) message joins
    ``tx.ready`` when the wait is short enough to leave with the broker."""
    conn = tx.conn
    now = utcnow()
    detail = {"attempt": row.attempt, **error.as_dict(), "traceback": trace}
    if error.category == ErrorCategory.INTERRUPTED:
        tx.ready.append(_requeue(conn, row, error, detail))
        return
    if error.category == ErrorCategory.TIMEOUT:
        record(conn, [task_event(EventType.TASK_TIMED_OUT, row.id, row.ticket_id, detail, now)])
    if error.retryable and row.retry_count < row.max_retries:
        delay = retry_delay(
            row.retry_count,
            row.retry_backoff or policy.backoff,
            row.retry_backoff_max or policy.backoff_max,
        )
        next_at = now + timedelta(seconds=delay)
        conn.execute(
            update(tasks)
            .where(tasks.c.id == row.id)
            .values(
                status=TaskStatus.RETRYING,
                attempt=row.attempt + 1,
                retry_count=row.retry_count + 1,
                next_attempt_at=next_at,
                error=error.as_dict(),
                lease_token=None,
                published_at=None,
            )
        )
        scheduled = {
            **detail,
            "retry": row.retry_count + 1,
            "delay": round(delay, 3),
            "next_attempt_at": next_at.isoformat(),
        }
        record(
            conn,
            [task_event(EventType.TASK_RETRY_SCHEDULED, row.id, row.ticket_id, scheduled, now)],
        )
        if delay <= policy.eta_max:  # longer: woken by the retry sweep, not held in Redis
            tx.ready.append(Dispatch.of_row(row, attempt=row.attempt + 1, countdown=delay))
        return
    conn.execute(
        update(tasks)
        .where(tasks.c.id == row.id)
        .values(
            status=TaskStatus.FAILED,
            error=error.as_dict(),
            lease_token=None,
            finished_at=now,
            next_attempt_at=None,
        )
    )
    record(conn, [task_event(EventType.TASK_FAILED, row.id, row.ticket_id, detail, now)])
    cancelled = cancel_downstream(conn, row.ticket_id, [row.id], f"dependency {row.id} failed")
    close_tasks(tx, row.ticket_id, 1 + cancelled)  # the next phase's tasks, if any


def fail_attempt(
    uow: UnitOfWork,
    policy: RetryPolicy,
    task_id: uuid.UUID,
    attempt: int,
    error: TaskError,
    *,
    lease: uuid.UUID | None = None,
    trace: str | None = None,
) -> bool:
    """Record that attempt ``attempt`` failed, and publish its retry, if any. Guarded like a
    success: only the attempt that still owns the row (same attempt number, and same lease
    when the caller knows it) counts; anything else is logged as superseded. Returns whether
    it counted."""

    def work(tx: Transaction) -> bool:
        conn = tx.conn
        guard = [
            tasks.c.id == task_id,
            tasks.c.attempt == attempt,
            tasks.c.status == TaskStatus.RUNNING if lease is None else lease_held(lease),
        ]
        row = conn.execute(select(*FAILURE_COLUMNS).where(*guard).with_for_update()).one_or_none()
        if row is None:
            ticket_id = conn.execute(
                select(tasks.c.ticket_id).where(tasks.c.id == task_id)
            ).scalar_one_or_none()
            record(
                conn,
                [
                    task_event(
                        EventType.TASK_SUPERSEDED,
                        task_id,
                        ticket_id,
                        {"attempt": attempt, **error.as_dict()},
                    )
                ],
            )
            return False
        apply_failure(tx, policy, row, error, trace)
        return True

    return uow.run(work)


def wake_retries(uow: UnitOfWork, grace: float = 1.0, limit: int = 1000) -> int:
    """Queue retrying tasks whose wait is over and that no delayed message claimed (waits
    longer than ``eta_max``, or a message that was lost)."""
    return uow.run(lambda tx: _wake_retries(tx, grace, limit))


def _wake_retries(tx: Transaction, grace: float, limit: int) -> int:
    now, conn = utcnow(), tx.conn
    with sweep_lock(conn, "retries") as got:
        if not got:
            return 0
        due = (
            select(tasks.c.id)
            .where(
                tasks.c.status == TaskStatus.RETRYING,
                tasks.c.next_attempt_at <= now - timedelta(seconds=grace),
            )
            .order_by(tasks.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(due.scalar_subquery()))
            .values(status=TaskStatus.QUEUED, queued_at=now, published_at=None)
            .returning(*FAILURE_COLUMNS)
        ).all()
        record(
            conn,
            (
                task_event(
                    EventType.TASK_QUEUED,
                    r.id,
                    r.ticket_id,
                    {"attempt": r.attempt, "woken": True},
                    now,
                )
                for r in rows
            ),
        )
    tx.ready += [Dispatch.of_row(r) for r in rows]
    return len(rows)


def expire_deadlines(uow: UnitOfWork, policy: RetryPolicy, slack: float) -> int:
    """Fail (or retry) running attempts past ``started_at + timeout + slack``: the hard time
    limit would have killed them, so their worker is gone or wedged."""
    now = utcnow()
    with uow.db.connect() as conn, sweep_lock(conn, "deadlines") as got:
        if not got:
            return 0
        running = conn.execute(
            select(tasks.c.id, tasks.c.attempt, tasks.c.started_at, tasks.c.timeout_seconds).where(
                RUNNING_ATTEMPTS, tasks.c.timeout_seconds.is_not(None)
            )
        ).all()
    overdue = [
        r for r in running if r.started_at + timedelta(seconds=r.timeout_seconds + slack) < now
    ]
    for r in overdue:
        error = TaskError(
            ErrorCategory.TIMEOUT,
            "DeadlineExceeded",
            f"still running {r.timeout_seconds + slack:.0f} s after it started; "
            "its worker vanished",
        )
        log.warning("deadline_expired", task_id=str(r.id), attempt=r.attempt)
        fail_attempt(uow, policy, r.id, r.attempt, error)
    return len(overdue)


def expire_sync_points(uow: UnitOfWork) -> int:
    """Fail sync points still waiting at their deadline (their dependents are cancelled)."""
    return uow.run(_expire_sync_points)


def _expire_sync_points(tx: Transaction) -> int:
    now, conn = utcnow(), tx.conn
    with sweep_lock(conn, "sync") as got:
        if not got:
            return 0
        late = conn.execute(
            select(tasks.c.id, tasks.c.ticket_id, tasks.c.sync_need, tasks.c.unmet_dependencies)
            .where(tasks.c.status == TaskStatus.PENDING, tasks.c.sync_deadline < now)
            .with_for_update(skip_locked=True)
        ).all()
        for row in late:
            got_n = row.sync_need - row.unmet_dependencies
            error = TaskError(
                ErrorCategory.TIMEOUT,
                "SyncTimeout",
                f"sync point timed out with {got_n} of {row.sync_need} dependencies succeeded",
            )
            conn.execute(
                update(tasks)
                .where(tasks.c.id == row.id)
                .values(status=TaskStatus.FAILED, error=error.as_dict(), finished_at=now)
            )
            record(
                conn,
                [task_event(EventType.TASK_TIMED_OUT, row.id, row.ticket_id, error.as_dict(), now)],
            )
            cancelled = cancel_downstream(
                conn, row.ticket_id, [row.id], f"sync point {row.id} timed out"
            )
            close_tasks(tx, row.ticket_id, 1 + cancelled)
    return len(late)
