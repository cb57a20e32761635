"""External agents' pull protocol: claim the next task under a fresh lease, then report it
done or failed under that lease. A report whose lease no longer holds (the task was
cancelled, timed out or handed to another agent) is refused and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from omoi.domain.enums import AgentStatus
from omoi.domain.errors import TaskError
from omoi.domain.storable import unstorable
from omoi.persistence import Database, claims
from omoi.persistence.statements import tasks
from omoi.persistence.types import utcnow
from omoi.services import locks
from omoi.services.attempts import Claim, succeed
from omoi.services.context import TaskContext
from omoi.services.errors import Conflict, Invalid, NotFound
from omoi.services.failures import RetryPolicy, fail_attempt
from omoi.services.unit_of_work import UnitOfWork


def claim_next(uow: UnitOfWork, agent_id: uuid.UUID) -> TaskContext | None:
    """The next queued task for this agent, by priority then age, under a fresh lease; locked
    with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never get the same task."""
    lease = uuid.uuid4()
    db = uow.db
    row = claims.claim_next(db, {"agent": agent_id, "lease": lease, "now": utcnow()})
    _check_agent(agent_id, row.agent_status)
    if row.id is None:
        return None
    ctx = TaskContext.of_claim(row, row.id, row.attempt, agent_id, uow, lease)
    if getattr(row, "ticket_context", None) is not None:  # read in the claim's statement
        ctx.__dict__["ticket_context"] = dict(row.ticket_context)
    if ctx.resources:
        tokens = locks.acquire_or_wait(db, ctx.task_id, ctx.ticket_id, lease, ctx.resources)
        if tokens is None:
            return None  # parked until the lock is free; the agent may claim something else
        ctx.locks = tokens
    return ctx


def _check_agent(agent_id: uuid.UUID, status: str | None) -> None:
    if status is None:
        raise NotFound(f"agent {agent_id} not found", {"agent_id": str(agent_id)})
    if status == AgentStatus.OFFLINE:
        raise Conflict(f"agent {agent_id} is offline; register again", {"agent_id": str(agent_id)})


def _attempt_of(db: Database, task_id: uuid.UUID) -> Any:
    with db.connect() as conn:
        row = conn.execute(
            select(tasks.c.ticket_id, tasks.c.attempt).where(tasks.c.id == task_id)
        ).one_or_none()
    if row is None:
        raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
    return row


def _superseded(task_id: uuid.UUID) -> Conflict:
    return Conflict(
        f"the lease no longer holds task {task_id}: it was cancelled, timed out or given to "
        "another agent, and this result was discarded",
        {"task_id": str(task_id)},
    )


def complete(uow: UnitOfWork, task_id: uuid.UUID, lease: uuid.UUID, result: Any) -> None:
    """An external agent reports success under its lease; a result PostgreSQL cannot store is
    refused, and the agent may report again."""
    reason = unstorable(result)
    if reason is not None:
        raise Invalid(f"the result cannot be stored: {reason}", {"task_id": str(task_id)})
    row = _attempt_of(uow.db, task_id)
    if not succeed(uow, Claim(task_id, row.ticket_id, row.attempt, lease), result):
        raise _superseded(task_id)
    locks.release(uow, task_id)


def fail(
    uow: UnitOfWork,
    policy: RetryPolicy,
    task_id: uuid.UUID,
    lease: uuid.UUID,
    error: TaskError,
) -> None:
    """An external agent reports failure under its lease; retried like any other."""
    row = _attempt_of(uow.db, task_id)
    if not fail_attempt(uow, policy, task_id, row.attempt, error, lease=lease):
        raise _superseded(task_id)
    locks.release(uow, task_id)
