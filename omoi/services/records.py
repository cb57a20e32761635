"""The records every state change leaves: the event log, phase history, cancelled tasks."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from omoi.domain.enums import ErrorCategory, Phase, TaskStatus, TicketStatus
from omoi.domain.errors import TaskError
from omoi.domain.events import EventType
from omoi.persistence import PhaseHistory
from omoi.persistence.types import utcnow
from omoi.services import actors
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
        **actors.columns(),
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
    """Append events in one round trip (each names the actor bound when it was made)."""
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
    note: str | None = None,
) -> None:
    """Change a ticket's phase, writing its history row and event in the caller's transaction.
    ``by`` is who moves it (a token's name, or the gate); ``note`` what a client says about it."""
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
                "note": note,
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


def cancel_rows(conn: Connection, ticket_id: uuid.UUID, where: Any, reason: str) -> list[Any]:
    """Mark open tasks cancelled; returns ``(id, status, celery_id)`` as they were."""
    now = utcnow()
    error = TaskError(ErrorCategory.CANCELLED, "Cancelled", reason).as_dict()
    before = conn.execute(
        select(tasks.c.id, tasks.c.status, tasks.c.celery_id).where(where).with_for_update()
    ).all()
    if before:
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_([r.id for r in before]))
            .values(
                status=TaskStatus.CANCELLED,
                error=error,
                lease_token=None,
                finished_at=now,
                next_attempt_at=None,
            )
        )
        record(
            conn,
            (
                task_event(
                    EventType.TASK_CANCELLED, r.id, ticket_id, {**error, "was": r.status}, now
                )
                for r in before
            ),
        )
    return before
