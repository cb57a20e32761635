"""The records every state change leaves: the event log, phase history, and settling a ticket
whose last task ended."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from omoi.domain.enums import Phase, TaskStatus, TicketStatus
from omoi.domain.events import EventType
from omoi.models import PhaseHistory
from omoi.models.types import utcnow
from omoi.services.sql import Executor, events, tasks, tickets

INSERT_EVENT = insert(events)


def event_row(
    type_: EventType,
    entity_type: str,
    entity_id: uuid.UUID | None,
    ticket_id: uuid.UUID | None,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "type": str(type_),
        "entity_type": entity_type,
        "entity_id": entity_id,
        "ticket_id": ticket_id,
        "payload": payload or {},
        "created_at": at or utcnow(),
    }


def task_event(
    type_: EventType,
    task_id: uuid.UUID,
    ticket_id: uuid.UUID,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return event_row(type_, "task", task_id, ticket_id, payload, at)


def record(conn: Executor, rows: Iterable[dict[str, Any]]) -> None:
    """Append events in one round trip."""
    batch = list(rows)
    if batch:
        conn.execute(INSERT_EVENT, batch)


def move_ticket(
    conn: Executor,
    ticket_id: uuid.UUID,
    from_phase: str,
    to_phase: Phase,
    status: TicketStatus,
    reason: str,
    by: str = "system",
) -> None:
    """Change a ticket's phase, writing its history row and event in the caller's transaction."""
    now = utcnow()
    conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket_id)
        .values(phase=to_phase, previous_phase=from_phase, status=status, updated_at=now)
    )
    conn.execute(
        insert(PhaseHistory.__table__),
        [
            {
                "ticket_id": ticket_id,
                "from_phase": from_phase,
                "to_phase": to_phase,
                "reason": reason,
                "by": by,
                "artifacts": [],
                "created_at": now,
            }
        ],
    )
    payload = {"from": from_phase, "to": str(to_phase), "status": str(status), "reason": reason}
    record(
        conn,
        [event_row(EventType.TICKET_PHASE_CHANGED, "ticket", ticket_id, ticket_id, payload, now)],
    )


def close_tasks(conn: Executor, ticket_id: uuid.UUID, count: int) -> bool:
    """Count ``count`` tasks of the ticket as ended; the call that reaches zero settles the
    ticket in the same transaction (the counter's row lock orders concurrent callers).
    Call it last in the transaction: the lock is then held only until commit."""
    row = conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket_id)
        .values(open_tasks=tickets.c.open_tasks - count, updated_at=utcnow())
        .returning(tickets.c.open_tasks)
    ).one()
    return row.open_tasks <= 0 and settle_ticket(conn, ticket_id)


def settle_ticket(conn: Executor, ticket_id: uuid.UUID) -> bool:
    """Move a ticket whose tasks have all ended on: all succeeded → done, else blocked.
    Does nothing to a ticket that is no longer active."""
    ticket = conn.execute(
        select(tickets.c.phase, tickets.c.status).where(tickets.c.id == ticket_id)
    ).one()
    if ticket.status != TicketStatus.ACTIVE:
        return False
    unsuccessful = dict(
        conn.execute(
            select(tasks.c.status, func.count())
            .where(tasks.c.ticket_id == ticket_id, tasks.c.status != TaskStatus.SUCCEEDED)
            .group_by(tasks.c.status)
        ).all()
    )
    if not unsuccessful:
        move_ticket(
            conn, ticket_id, ticket.phase, Phase.DONE, TicketStatus.DONE, "all tasks succeeded"
        )
        record(conn, [event_row(EventType.TICKET_COMPLETED, "ticket", ticket_id, ticket_id)])
        return True
    counts = ", ".join(f"{n} {s}" for s, n in sorted(unsuccessful.items()))
    move_ticket(
        conn,
        ticket_id,
        ticket.phase,
        Phase.BLOCKED,
        TicketStatus.BLOCKED,
        f"not every task succeeded: {counts}",
    )
    return True
