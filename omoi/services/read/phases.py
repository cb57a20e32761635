"""What a ticket's walk through its phases looks like: where it may go next, where it has
been, what its phases produced (artifacts), and what its phase's gate requires and last
said."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, select

from omoi.domain.enums import TicketStatus
from omoi.domain.workflow import current_phase
from omoi.persistence import Artifact, Database, GateResult, PhaseHistory
from omoi.persistence.statements import tickets
from omoi.persistence.tables import TICKET_COLUMNS
from omoi.services.errors import NotFound
from omoi.services.workflows import Workflows

artifacts = Artifact.__table__
gate_results = GateResult.__table__
history = PhaseHistory.__table__


def _ticket(conn: Connection, ticket_id: uuid.UUID) -> Any:
    ticket = conn.execute(select(*TICKET_COLUMNS).where(tickets.c.id == ticket_id)).one_or_none()
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found", {"ticket_id": str(ticket_id)})
    return ticket


def valid_transitions(db: Database, workflows: Workflows, ticket_id: uuid.UUID) -> dict[str, Any]:
    with db.connect() as conn:
        ticket = _ticket(conn, ticket_id)
    workflow = workflows.get(ticket.workflow)
    closed = ticket.status in (TicketStatus.DONE, TicketStatus.CANCELLED)
    allowed = [] if closed else workflow.allowed(ticket.phase, ticket.previous_phase)
    return {
        "ticket_id": ticket_id,
        "workflow": workflow.name,
        "phase": ticket.phase,
        "status": ticket.status,
        "allowed": [str(a) for a in allowed],
    }


def history_of(db: Database, ticket_id: uuid.UUID) -> list[Any]:
    with db.connect() as conn:
        return list(
            conn.execute(
                select(history).where(history.c.ticket_id == ticket_id).order_by(history.c.id)
            )
        )


def artifacts_of(
    db: Database,
    ticket_id: uuid.UUID,
    *,
    phase: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> tuple[list[Any], int | None]:
    """The ticket's artifacts (of ``phase``, else all), oldest first after the artifact
    ``after``; the page and the cursor for the next one."""
    query = select(artifacts).where(artifacts.c.ticket_id == ticket_id)
    if phase is not None:
        query = query.where(artifacts.c.phase == phase)
    if after is not None:
        query = query.where(artifacts.c.id > after)
    with db.connect() as conn:
        _ticket(conn, ticket_id)
        rows = list(conn.execute(query.order_by(artifacts.c.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


def gate_status(db: Database, workflows: Workflows, ticket_id: uuid.UUID) -> dict[str, Any]:
    """The latest gate judgement and what the ticket's phase requires."""
    with db.connect() as conn:
        ticket = _ticket(conn, ticket_id)
        latest = conn.execute(
            select(gate_results)
            .where(gate_results.c.ticket_id == ticket_id)
            .order_by(gate_results.c.id.desc())
            .limit(1)
        ).one_or_none()
    phase = current_phase(ticket)
    workflow = workflows.get(ticket.workflow)
    gate = workflow.spec(phase).gate if phase in workflow.working else None
    return {
        "ticket_id": ticket_id,
        "phase": phase,
        "status": ticket.status,
        "requires": asdict(gate) if gate else None,
        "latest": latest._asdict() if latest else None,
    }
