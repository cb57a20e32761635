"""Read models for the API and CLI: tickets with progress, tasks with their edges."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from omoi.domain.enums import TERMINAL_TASK_STATUSES, AgentKind, AgentStatus, TaskStatus
from omoi.domain.events import EventType
from omoi.domain.routing import DEFAULT_CAPABILITY, route_of
from omoi.persistence import Agent, Database, Event, Task, Ticket
from omoi.persistence.statements import (
    depends_on_one,
    depends_on_params,
    dialect_of,
    tasks,
)
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.services.errors import NotFound
from omoi.services.workflows import Workflows


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


def _ticket(session: Session, ticket_id: uuid.UUID) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found", {"ticket_id": str(ticket_id)})
    return ticket


def task_counts(session: Session, ticket_id: uuid.UUID) -> dict[str, int]:
    return counts_by_ticket(session, [ticket_id])[ticket_id]


def counts_by_ticket(
    session: Session, ticket_ids: list[uuid.UUID]
) -> defaultdict[uuid.UUID, dict[str, int]]:
    """Task counts per status of each ticket, in one query whatever the number of tickets."""
    counts: defaultdict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for ticket_id, status, n in session.execute(
        select(Task.ticket_id, Task.status, func.count())
        .where(Task.ticket_id.in_(ticket_ids))
        .group_by(Task.ticket_id, Task.status)
    ):
        counts[ticket_id][status] = n
    return counts


def progress(counts: dict[str, int]) -> float:
    """Share of a ticket's tasks in a terminal state (1.0 for a ticket with none)."""
    total = sum(counts.values())
    return (
        sum(n for s, n in counts.items() if s in TERMINAL_TASK_STATUSES) / total if total else 1.0
    )


def phase_progress(
    db: Database, workflows: Workflows, ticket_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Task counts per phase, in its workflow's order (tasks created so far: a phase's tasks
    are created when the ticket enters it); phases its workflow no longer has come last."""
    with db.session() as session:
        workflow = workflows.find(_ticket(session, ticket_id).workflow)
        rows = session.execute(
            select(Task.phase, Task.status, func.count())
            .where(Task.ticket_id == ticket_id)
            .group_by(Task.phase, Task.status)
        ).all()
    by_phase: dict[str, dict[str, int]] = {}
    for phase, status, n in rows:
        by_phase.setdefault(phase, {})[status] = n
    order = {p: i for i, p in enumerate(workflow.names if workflow else [])}
    return [
        {"phase": p, "task_counts": by_phase[p], "progress": round(progress(by_phase[p]), 4)}
        for p in sorted(by_phase, key=lambda p: (order.get(p, len(order)), p))
    ]


def get_ticket(db: Database, ticket_id: uuid.UUID) -> tuple[Ticket, dict[str, int]]:
    with db.session() as session:
        return _ticket(session, ticket_id), task_counts(session, ticket_id)


def list_tickets(
    db: Database,
    *,
    status: str | None = None,
    phase: str | None = None,
    workflow: str | None = None,
    cursor: uuid.UUID | None = None,
    limit: int = 50,
) -> Page:
    """Newest first; the cursor is the last id seen (ids are time-ordered UUIDv7)."""
    query = select(Ticket).order_by(Ticket.id.desc()).limit(limit + 1)
    for column, value in (
        (Ticket.status, status),
        (Ticket.phase, phase),
        (Ticket.workflow, workflow),
    ):
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        query = query.where(Ticket.id < cursor)
    with db.session() as session:
        rows = list(session.scalars(query))
    return _page(rows, limit)


def _page(rows: list[Any], limit: int) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, str(rows[-1].id) if more and rows else None)


@dataclass
class Attempt:
    attempt: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    error: dict[str, Any] | None = None
    agent_id: str | None = None  # who ran it (the last holder, after a handoff)


OUTCOMES = {
    EventType.TASK_SUCCEEDED: "succeeded",
    EventType.TASK_FAILED: "failed",
    EventType.TASK_RETRY_SCHEDULED: "retry_scheduled",
    EventType.TASK_INTERRUPTED: "interrupted",
    EventType.TASK_CANCELLED: "cancelled",
    EventType.TASK_SUPERSEDED: "superseded",
}


def attempts_of(timeline: list[Event]) -> list[Attempt]:
    """Each attempt's start, agent and outcome, read from the task's events."""
    attempts: dict[int, Attempt] = {}
    current: Attempt | None = None
    for event in timeline:
        number = event.payload.get("attempt")
        if event.type == EventType.TASK_STARTED and number is not None:
            current = attempts.setdefault(number, Attempt(number))
            current.started_at = event.created_at
            current.agent_id = event.payload.get("agent_id")
        elif event.type == EventType.TASK_HANDED_OFF and current is not None:
            current.agent_id = event.payload.get("to_agent", current.agent_id)
        elif event.type in OUTCOMES and current is not None and current.outcome is None:
            if number is not None and number != current.attempt:
                continue
            current.outcome = OUTCOMES[EventType(event.type)]
            current.ended_at = event.created_at
            if "category" in event.payload and event.type != EventType.TASK_SUCCEEDED:
                current.error = {k: event.payload.get(k) for k in ("category", "type", "message")}
    return sorted(attempts.values(), key=lambda a: a.attempt)


def get_task(db: Database, task_id: uuid.UUID) -> tuple[Task, list[uuid.UUID], list[Event]]:
    """A task, the ids it blocks (derived from the others' ``depends_on``) and its timeline."""
    with db.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
        dialect = dialect_of(session)
        blocks = list(
            session.scalars(
                select(Task.id)
                .where(Task.ticket_id == task.ticket_id, depends_on_one(dialect))
                .order_by(Task.id),
                depends_on_params(dialect, [task_id]),
            )
        )
        timeline = list(
            session.scalars(select(Event).where(Event.entity_id == task_id).order_by(Event.id))
        )
    return task, blocks, timeline


def worker_wait(db: Database, task: Task, exec_types: Collection[str]) -> str | None:
    """Why a queued task of an exec type waits, when it does: no live Celery worker serving
    its route has enabled its type (external tasks wait for external agents instead)."""
    if (
        task.status != TaskStatus.QUEUED
        or task.external
        or task.waiting_for
        or task.task_type not in exec_types
    ):
        return None
    route = route_of(task.capabilities)
    with db.connect() as conn:
        workers = conn.execute(
            select(Agent.capabilities, Agent.enabled_task_types).where(
                Agent.kind == AgentKind.CELERY,
                Agent.status.in_([AgentStatus.IDLE, AgentStatus.BUSY]),
            )
        ).all()
    if any(
        task.task_type in w.enabled_task_types
        and (route == DEFAULT_CAPABILITY or route in w.capabilities)
        for w in workers
    ):
        return None
    serving = "" if route == DEFAULT_CAPABILITY else f" with capability {route!r}"
    return f"no live worker{serving} has enabled task type {task.task_type!r}"


def task_briefs(db: Database, ticket_id: uuid.UUID) -> list[tuple[uuid.UUID, str, str]]:
    """``(id, key, status)`` of every task of a ticket, in creation order."""
    with db.connect() as conn:
        rows = conn.execute(
            select(tasks.c.id, tasks.c.key, tasks.c.status)
            .where(tasks.c.ticket_id == ticket_id)
            .order_by(tasks.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def list_tasks(
    db: Database,
    *,
    ticket_id: uuid.UUID | None = None,
    status: str | None = None,
    cursor: uuid.UUID | None = None,
    limit: int = 100,
    order: str = "oldest",
) -> Page:
    """In creation order, or ``order="newest"`` the newest first (ids are time-ordered
    UUIDv7); the cursor is the last id seen."""
    newest = order == "newest"
    query = select(Task).order_by(Task.id.desc() if newest else Task.id).limit(limit + 1)
    if ticket_id is not None:
        query = query.where(Task.ticket_id == ticket_id)
    if status is not None:
        # the same rows; RUNNING_ATTEMPTS is how a read of running tasks reaches their index
        query = query.where(
            RUNNING_ATTEMPTS if status == TaskStatus.RUNNING else Task.status == status
        )
    if cursor is not None:
        query = query.where(Task.id < cursor if newest else Task.id > cursor)
    with db.session() as session:
        rows = list(session.scalars(query))
    return _page(rows, limit)


def ping(db: Database) -> None:
    with db.session() as session:
        session.execute(select(1))


def task_holder(db: Database, task_id: uuid.UUID) -> uuid.UUID | None:
    """The agent the task is (or was last) assigned to; NotFound for no such task."""
    with db.connect() as conn:
        row = conn.execute(select(tasks.c.agent_id).where(tasks.c.id == task_id)).first()
    if row is None:
        raise NotFound(f"no task {task_id}")
    return row.agent_id  # type: ignore[no-any-return]
