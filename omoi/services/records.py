"""Writing the event log and phase transitions: the two records every state change leaves."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from omoi.domain.enums import OPEN_TASK_STATUSES, Phase, TaskStatus, TicketStatus
from omoi.domain.events import EventType
from omoi.models import Event, PhaseHistory, Task, Ticket
from omoi.models.types import utcnow


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


def record(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Append events in one round trip."""
    batch = list(rows)
    if batch:
        session.execute(insert(Event), batch)


def task_event(
    type_: EventType,
    task_id: uuid.UUID,
    ticket_id: uuid.UUID,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return event_row(type_, "task", task_id, ticket_id, payload, at)


def move_ticket(
    session: Session,
    ticket_id: uuid.UUID,
    from_phase: str,
    to_phase: Phase,
    status: TicketStatus,
    reason: str,
    by: str = "system",
) -> None:
    """Change a ticket's phase, writing its history row and event in the caller's transaction."""
    now = utcnow()
    session.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id)
        .values(phase=to_phase, previous_phase=from_phase, status=status, updated_at=now)
    )
    session.execute(
        insert(PhaseHistory),
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
        session,
        [event_row(EventType.TICKET_PHASE_CHANGED, "ticket", ticket_id, ticket_id, payload, now)],
    )


def settle_ticket(session: Session, ticket_id: uuid.UUID) -> None:
    """When a ticket's last task ends, move it on: all succeeded → done, else blocked."""
    still_open = session.execute(
        select(Task.id)
        .where(Task.ticket_id == ticket_id, Task.status.in_(list(OPEN_TASK_STATUSES)))
        .limit(1)
    ).first()
    if still_open is not None:
        return
    ticket = session.execute(
        select(Ticket.phase, Ticket.status).where(Ticket.id == ticket_id)
    ).one()
    if ticket.status != TicketStatus.ACTIVE:
        return
    unsuccessful = dict(
        session.execute(
            select(Task.status, func.count())
            .where(Task.ticket_id == ticket_id, Task.status != TaskStatus.SUCCEEDED)
            .group_by(Task.status)
        ).all()
    )
    if not unsuccessful:
        move_ticket(
            session, ticket_id, ticket.phase, Phase.DONE, TicketStatus.DONE, "all tasks succeeded"
        )
        record(session, [event_row(EventType.TICKET_COMPLETED, "ticket", ticket_id, ticket_id)])
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(unsuccessful.items()))
    move_ticket(
        session,
        ticket_id,
        ticket.phase,
        Phase.BLOCKED,
        TicketStatus.BLOCKED,
        f"not every task succeeded: {counts}",
    )
