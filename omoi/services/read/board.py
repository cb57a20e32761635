"""Read models for the web board: every card, and one ticket's task graph."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from omoi.domain.dag import layers
from omoi.domain.enums import Phase
from omoi.persistence import Database, Task, Ticket
from omoi.services.errors import NotFound
from omoi.services.read.queries import counts_by_ticket, progress


def cards(db: Database, limit: int = 300) -> list[dict[str, Any]]:
    """The newest tickets with their task counts (two queries, whatever the number)."""
    with db.session() as session:
        rows = list(session.scalars(select(Ticket).order_by(Ticket.id.desc()).limit(limit)))
        counts = counts_by_ticket(session, [t.id for t in rows])
    return [
        {
            "id": t.id,
            "title": t.title,
            "phase": t.phase,
            # a blocked ticket stays in the column of the phase it is blocked in
            "column": t.previous_phase if t.phase == Phase.BLOCKED else t.phase,
            "status": t.status,
            "workflow": t.workflow,
            "priority": t.priority,
            "counts": counts[t.id],
            "progress": progress(counts[t.id]),
        }
        for t in rows
    ]


def graph(db: Database, ticket_id: uuid.UUID) -> list[dict[str, Any]]:
    """The ticket's tasks with their dependencies and their column in a drawing."""
    with db.session() as session:
        if session.get(Ticket, ticket_id) is None:
            raise NotFound(f"ticket {ticket_id} not found", {"ticket_id": str(ticket_id)})
        rows = list(
            session.execute(
                select(
                    Task.id, Task.key, Task.status, Task.phase, Task.task_type, Task.dependencies
                )
                .where(Task.ticket_id == ticket_id)
                .order_by(Task.id)
            )
        )
    edges = {str(r.id): [str(d) for d in r.dependencies.get("depends_on", [])] for r in rows}
    depth = layers(edges)
    return [
        {
            "id": str(r.id),
            "key": r.key,
            "status": r.status,
            "phase": r.phase,
            "task_type": r.task_type,
            "depends_on": edges[str(r.id)],
            "layer": depth[str(r.id)],
        }
        for r in rows
    ]
