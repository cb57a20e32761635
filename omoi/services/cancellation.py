"""What people do to running work: cancel a task or a ticket, re-run a failed task.

Each change commits first; revoking the Celery message comes after, as a hint. A cancelled task
never starts (claims require queued or retrying), and a result that arrives after the cancel is
discarded by the lease guard.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, func, select, update

from omoi.domain.enums import (
    OPEN_TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    ErrorCategory,
    TaskStatus,
    TicketStatus,
)
from omoi.domain.events import EventType
from omoi.persistence.statements import (
    DISPATCH_COLUMNS,
    cancel_rows,
    dependents,
    event_row,
    move_tasks,
    move_ticket,
    record,
    task_event,
    tasks,
    tickets,
)
from omoi.persistence.types import utcnow
from omoi.services import locks
from omoi.services.dispatcher import Dispatch
from omoi.services.errors import Conflict, NotFound
from omoi.services.failures import cancel_downstream
from omoi.services.phases import close_tasks
from omoi.services.unit_of_work import Transaction, UnitOfWork


def _lock_ticket(conn: Connection, ticket_id: uuid.UUID) -> Any:
    ticket = conn.execute(
        select(tickets.c.id, tickets.c.status, tickets.c.phase, tickets.c.previous_phase)
        .where(tickets.c.id == ticket_id)
        .with_for_update()
    ).one_or_none()
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found", {"ticket_id": str(ticket_id)})
    return ticket


def _lock_task(conn: Connection, task_id: uuid.UUID) -> tuple[Any, Any]:
    """The task and its ticket, both locked (ticket first, as the ticket-wide actions do)."""
    ticket_id = conn.execute(
        select(tasks.c.ticket_id).where(tasks.c.id == task_id)
    ).scalar_one_or_none()
    if ticket_id is None:
        raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
    ticket = _lock_ticket(conn, ticket_id)
    task = conn.execute(select(tasks).where(tasks.c.id == task_id).with_for_update()).one()
    return task, ticket


def _revoke(tx: Transaction, rows: list[Any]) -> None:
    """Revoke (after the commit) the Celery jobs of the cancelled attempts that were running."""
    tx.revoke += [r.celery_id for r in rows if r.status == TaskStatus.RUNNING and r.celery_id]


def cancel_task(uow: UnitOfWork, task_id: uuid.UUID, reason: str) -> None:
    """Cancel one task and everything downstream of it."""

    def work(tx: Transaction) -> None:
        task, _ = _lock_task(tx.conn, task_id)
        if task.status in TERMINAL_TASK_STATUSES:
            raise Conflict(
                f"task {task_id} already ended ({task.status}); nothing to cancel",
                {"task_id": str(task_id), "status": task.status},
            )
        _revoke(tx, cancel_rows(tx.conn, task.ticket_id, tasks.c.id == task_id, reason))
        downstream = cancel_downstream(
            tx.conn, task.ticket_id, [task_id], f"dependency {task_id} was cancelled"
        )
        close_tasks(tx, task.ticket_id, 1 + downstream)

    uow.run(work)
    locks.release(uow, task_id)


def cancel_ticket(uow: UnitOfWork, ticket_id: uuid.UUID, reason: str) -> None:
    """Cancel a ticket and all its open tasks."""
    uow.run(lambda tx: _cancel_ticket(tx, ticket_id, reason))
    locks.sweep(uow)  # frees the cancelled tasks' locks for other tickets


def _cancel_ticket(tx: Transaction, ticket_id: uuid.UUID, reason: str) -> None:
    conn = tx.conn
    ticket = _lock_ticket(conn, ticket_id)
    if ticket.status in (TicketStatus.DONE, TicketStatus.CANCELLED):
        raise Conflict(
            f"ticket {ticket_id} is already {ticket.status}",
            {"ticket_id": str(ticket_id), "status": ticket.status},
        )
    rows = cancel_rows(
        conn,
        ticket_id,
        (tasks.c.ticket_id == ticket_id) & tasks.c.status.in_(list(OPEN_TASK_STATUSES)),
        reason,
    )
    _revoke(tx, rows)
    conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket_id)
        .values(status=TicketStatus.CANCELLED, open_tasks=0, updated_at=utcnow())
    )
    record(
        conn,
        [
            event_row(
                EventType.TICKET_CANCELLED,
                "ticket",
                ticket_id,
                ticket_id,
                {"reason": reason, "tasks_cancelled": len(rows)},
            )
        ],
    )


def _reopen_downstream(conn: Connection, ticket_id: uuid.UUID, root: uuid.UUID) -> int:
    """Put tasks cancelled because ``root`` failed back to pending, with their counters, level
    by level; one that another failed dependency still dooms stays cancelled."""
    frontier, reopened = [root], 0
    while frontier:
        rows = dependents(
            conn,
            ticket_id,
            frontier,
            TaskStatus.CANCELLED,
            tasks.c.id,
            tasks.c.dependencies,
            tasks.c.error,
            tasks.c.sync_need,
            lock=True,
        )
        frontier = []
        for r in rows:
            if (r.error or {}).get("category") != ErrorCategory.UPSTREAM_FAILED:
                continue
            deps = [uuid.UUID(d) for d in r.dependencies.get("depends_on", [])]
            counts = dict(
                conn.execute(
                    select(tasks.c.status, func.count())
                    .where(tasks.c.id.in_(deps))
                    .group_by(tasks.c.status)
                ).all()
            )
            need = len(deps) if r.sync_need is None else r.sync_need
            lost = counts.get(TaskStatus.FAILED, 0) + counts.get(TaskStatus.CANCELLED, 0)
            if len(deps) - lost < need:
                continue
            unmet = need - counts.get(TaskStatus.SUCCEEDED, 0)
            frontier += move_tasks(
                conn,
                [r.id],
                TaskStatus.CANCELLED,
                status=TaskStatus.PENDING,
                error=None,
                finished_at=None,
                unmet_dependencies=unmet,
            )
        reopened += len(frontier)
    return reopened


def retry_task(uow: UnitOfWork, task_id: uuid.UUID) -> None:
    """Re-run a failed task with a fresh retry budget; its cancelled dependents wait again."""
    uow.run(lambda tx: _retry(tx, task_id))


def _retry(tx: Transaction, task_id: uuid.UUID) -> None:
    now, conn = utcnow(), tx.conn
    task, ticket = _lock_task(conn, task_id)
    if task.status != TaskStatus.FAILED:
        raise Conflict(
            f"only a failed task can be retried; task {task_id} is {task.status}",
            {"task_id": str(task_id), "status": task.status},
        )
    if ticket.status == TicketStatus.CANCELLED:
        raise Conflict(f"ticket {task.ticket_id} is cancelled", {"ticket_id": str(task.ticket_id)})
    attempt = task.attempt + 1
    queued = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id)
        .values(
            status=TaskStatus.QUEUED,
            attempt=attempt,
            retry_count=0,
            error=None,
            result=None,
            next_attempt_at=None,
            started_at=None,
            finished_at=None,
            queued_at=now,
            published_at=None,
            lease_token=None,
        )
        .returning(*DISPATCH_COLUMNS)
    ).one()
    reopened = _reopen_downstream(conn, task.ticket_id, task_id)
    conn.execute(
        update(tickets)
        .where(tickets.c.id == task.ticket_id)
        .values(open_tasks=tickets.c.open_tasks + 1 + reopened)
    )
    record(
        conn,
        [
            task_event(
                EventType.TASK_RETRIED,
                task_id,
                task.ticket_id,
                {"attempt": attempt, "reopened": reopened},
                now,
            )
        ],
    )
    if ticket.status == TicketStatus.BLOCKED:
        move_ticket(
            conn,
            task.ticket_id,
            ticket.phase,
            ticket.previous_phase or task.phase,  # the phase it is blocked in
            TicketStatus.ACTIVE,
            f"task {task.key} retried",
        )
    tx.ready.append(Dispatch.of_row(queued))
