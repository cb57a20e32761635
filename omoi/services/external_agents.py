"""External agents' pull protocol: claim the next task under a fresh lease, then report it
done or failed under that lease. A report whose lease no longer holds (the task was
cancelled, timed out or handed to another agent) is refused and changes nothing."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
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


def claim_batch(uow: UnitOfWork, agent_id: uuid.UUID, most: int) -> list[TaskContext]:
    """Up to ``most`` tasks for this agent, each claimed as ``claim_next`` claims one (its own
    lease, its own short transaction), so one round trip of the agent's takes several."""
    claimed: list[TaskContext] = []
    while len(claimed) < most and (ctx := claim_next(uow, agent_id)) is not None:
        claimed.append(ctx)
    return claimed


class Doorbell:
    """Where this process's long-polling claims wait: each waits for a ring (a commit made an
    external agent's task ready, heard from ``listen``, the work signal) or ``poll`` seconds,
    whichever comes first, then tries to claim again. A wait costs a blocked thread, which in
    the API is a greenlet (gevent), not an OS thread; rings are hints, the poll is the rule,
    so a lost ring delays a claim by ``poll`` at most."""

    def __init__(
        self, listen: Callable[[Callable[[uuid.UUID], None]], None], poll: float = 1.0
    ) -> None:
        self.poll = poll
        self._listen = listen
        self._rang = threading.Condition()
        self._rings = 0
        self._listening: int | None = None  # the pid whose listener runs
        self.waiting = 0  # claims waiting now

    def ring(self, _task_id: uuid.UUID | None = None) -> None:
        with self._rang:
            self._rings += 1
            self._rang.notify_all()

    def claim(self, claim: Callable[[], list[TaskContext]], wait: float) -> list[TaskContext]:
        """``claim()``'s tasks as soon as it finds any, trying again on each ring, for up to
        ``wait`` seconds; empty if none came."""
        self._listen_once()
        deadline = time.monotonic() + wait
        while True:
            with self._rang:
                seen = self._rings  # read first: a ring during the claim is not missed
            found = claim()
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            with self._rang:
                self.waiting += 1
                try:
                    self._rang.wait_for(lambda s=seen: self._rings != s, min(left, self.poll))
                finally:
                    self.waiting -= 1

    def _listen_once(self) -> None:
        with self._rang:
            if self._listening == os.getpid():
                return
            self._listening = os.getpid()
        self._listen(self.ring)


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
