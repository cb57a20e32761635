"""Steps the use-case tests share: submit a ticket, read back its rows and events, and play a
worker's part (claim an attempt, store its result, report its failure)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update

from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import TaskError
from omoi.persistence import Database
from omoi.persistence.statements import agents, events, tasks, tickets
from omoi.services import attempts
from omoi.services.attempts import Claim
from omoi.services.failures import RetryPolicy, fail_attempt
from omoi.services.phases import NewTask
from omoi.services.submission import NewTicket, Submitted, create_ticket
from omoi.services.unit_of_work import UnitOfWork


def submit(uow: UnitOfWork, *specs: NewTask, workflow: str = "dag", **options: Any) -> Submitted:
    """A ticket titled ``t`` with ``specs``; ``options`` go to ``create_ticket``."""
    return create_ticket(uow, NewTicket("t", workflow=workflow, tasks=list(specs)), **options)


def ticket_of(db: Database, ticket_id: uuid.UUID) -> Any:
    with db.connect() as conn:
        return conn.execute(select(tickets).where(tickets.c.id == ticket_id)).one()


def agent_of(db: Database, agent_id: uuid.UUID) -> Any:
    with db.connect() as conn:
        return conn.execute(select(agents).where(agents.c.id == agent_id)).one()


def task_of(db: Database, task_id: uuid.UUID) -> Any:
    with db.connect() as conn:
        return conn.execute(select(tasks).where(tasks.c.id == task_id)).one()


def tasks_of(db: Database, ticket_id: uuid.UUID) -> dict[str, Any]:
    """The ticket's task rows by key, in creation order."""
    with db.connect() as conn:
        rows = conn.execute(
            select(tasks).where(tasks.c.ticket_id == ticket_id).order_by(tasks.c.id)
        )
        return {r.key: r for r in rows}


def events_of(db: Database, entity_id: uuid.UUID) -> list[Any]:
    with db.connect() as conn:
        return list(
            conn.execute(
                select(events).where(events.c.entity_id == entity_id).order_by(events.c.id)
            )
        )


def kinds(db: Database, entity_id: uuid.UUID) -> list[str]:
    """The types of the entity's events, oldest first."""
    return [e.type for e in events_of(db, entity_id)]


def change(db: Database, task_id: uuid.UUID, **values: Any) -> None:
    """Set a task's columns directly: time passing (a deadline, a heartbeat) that a test
    cannot wait for."""
    with db.connect() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))


def start(uow: UnitOfWork, task_id: uuid.UUID, **claim: Any) -> Claim:
    """Claim the task at its current attempt, as the worker its message reached does."""
    claimed = attempts.claim(uow, task_id, task_of(uow.db, task_id).attempt, **claim)
    assert claimed is not None, f"task {task_id} is not claimable"
    return claimed[0]


def finish(uow: UnitOfWork, task_id: uuid.UUID, result: Any = None) -> Claim:
    """Claim the task and store ``result`` under the claim's lease."""
    c = start(uow, task_id)
    assert attempts.succeed(uow, c, result)
    return c


def error(category: ErrorCategory = ErrorCategory.TRANSIENT, message: str = "no") -> TaskError:
    return TaskError(category, "Failure", message)


def fail(
    uow: UnitOfWork,
    task_id: uuid.UUID,
    category: ErrorCategory = ErrorCategory.PERMANENT,
    policy: RetryPolicy | None = None,
) -> Claim:
    """Claim the task and report its attempt failed with an error of ``category``."""
    c = start(uow, task_id)
    assert fail_attempt(
        uow, policy or RetryPolicy(), task_id, c.attempt, error(category), lease=c.lease
    )
    return c
