"""Running one attempt of a task: claim it under a fresh lease, run the handler outside any
transaction, then commit the outcome only if the lease still holds. The same transaction
advances the DAG (dependents' counters) and the ticket's open-task counter, settling the ticket
when its last task ends; ready dependents are published after commit."""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from omoi.domain.auth import BUILTIN_EXEC_TYPES
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import PermanentError, TaskError, UnstorableResult, classify
from omoi.domain.storable import storable_text, unstorable
from omoi.persistence import claims, results
from omoi.persistence.db import refused_data
from omoi.persistence.types import utcnow
from omoi.services import locks
from omoi.services.context import Handler, TaskContext
from omoi.services.dispatcher import Dispatch
from omoi.services.failures import RetryPolicy, fail_attempt
from omoi.services.phases import close_tasks, judge
from omoi.services.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one delivery did: ``word`` (succeeded, failed, superseded, waiting for a lock,
    duplicate) for logs and the job's result, and the error of an attempt that failed, which
    is already recorded (and its retry, if any, published)."""

    word: str
    error: TaskError | None = None


@dataclass(frozen=True)
class Claim:
    task_id: uuid.UUID
    ticket_id: uuid.UUID
    attempt: int
    lease: uuid.UUID


def claim(
    uow: UnitOfWork,
    task_id: uuid.UUID,
    attempt: int,
    message_id: str | None = None,
    agent_id: uuid.UUID | None = None,
) -> tuple[Claim, TaskContext] | None:
    """queued (or retrying, once its wait is over) → running under a new lease. ``None`` when
    the message is a duplicate, stale, early or for a cancelled task."""
    lease = uuid.uuid4()
    params = {
        "id": task_id,
        "attempt": attempt,
        "lease": lease,
        "now": utcnow(),
        "message": message_id,
        "agent": agent_id,
    }
    row = claims.claim(uow.db, params)
    if row is None:
        return None
    context = TaskContext.of_claim(row, task_id, attempt, agent_id, uow, lease)
    return Claim(task_id, row.ticket_id, attempt, lease), context


def succeed(uow: UnitOfWork, c: Claim, result: Any) -> bool:
    """Store the result under the lease guard, release dependents, count the task as ended,
    and publish the dependents that became ready. Returns whether the result landed."""
    params = {
        "id": c.task_id,
        "lease": c.lease,
        "ticket": c.ticket_id,
        "attempt": c.attempt,
        "result": result,
    }
    if uow.db.dialect == "postgresql":  # its single statement commits and retries by itself
        landed, rows, open_tasks = results.succeed_postgres(uow.db, params)
        if landed:
            uow.after_commit([Dispatch.of_row(r) for r in rows])
            if open_tasks == 0:  # the phase's last task: judge its gate (beat re-checks
                uow.run(lambda tx: judge(tx, c.ticket_id))  # if we die right here)
        return landed

    def portable(tx: Transaction) -> bool:
        landed, rows = results.succeed_portable(tx.conn, params)
        if landed:
            tx.ready += [Dispatch.of_row(r) for r in rows]
            close_tasks(tx, c.ticket_id, 1)
        return landed

    return uow.run(portable)


def run_attempt(
    uow: UnitOfWork,
    policy: RetryPolicy,
    resolve: Callable[[str], Handler | None],
    task_id: uuid.UUID,
    attempt: int,
    message_id: str | None = None,
    agent_id: uuid.UUID | None = None,
    exec_types: frozenset[str] = BUILTIN_EXEC_TYPES,
) -> Outcome:
    """One delivery of ``run_task``; returns what happened. Every log line written meanwhile
    carries the task, attempt, agent and ticket."""
    with structlog.contextvars.bound_contextvars(
        task_id=str(task_id), attempt=attempt, agent_id=str(agent_id) if agent_id else None
    ):
        claimed = claim(uow, task_id, attempt, message_id, agent_id)
        if claimed is None:
            log.info("duplicate_delivery_ignored")
            return Outcome("duplicate")
        claimed[1].exec_types = exec_types
        with structlog.contextvars.bound_contextvars(ticket_id=str(claimed[0].ticket_id)):
            return Attempt(uow, policy, resolve, *claimed).run()


@dataclass
class Attempt:
    """One claimed attempt as this worker runs it: under its resources' locks, the handler
    outside any transaction, then its outcome committed under the lease guard."""

    uow: UnitOfWork
    policy: RetryPolicy
    resolve: Callable[[str], Handler | None]
    claim: Claim
    ctx: TaskContext

    def run(self) -> Outcome:
        """What happened: waiting (for a lock), failed, superseded or succeeded."""
        c, ctx = self.claim, self.ctx
        if ctx.resources:
            tokens = locks.acquire_or_wait(
                self.uow.db, c.task_id, c.ticket_id, c.lease, ctx.resources
            )
            if tokens is None:
                log.info("waiting_for_lock")
                return Outcome("waiting")
            ctx.locks = tokens
        try:
            return self._run_handler()
        finally:
            if ctx.resources:
                locks.release(self.uow, c.task_id)

    def _run_handler(self) -> Outcome:
        ctx = self.ctx
        handler = self.resolve(ctx.task_type)
        try:
            if handler is None:
                raise PermanentError(f"no handler registered for task_type {ctx.task_type!r}")
            result = handler(ctx)
            reason = unstorable(result)  # fail here, naming why, rather than in the commit
            if reason is not None:
                raise UnstorableResult(f"the result cannot be stored: {reason}")
        except Exception as exc:
            return self._record_failure(classify(exc))
        try:
            landed = succeed(self.uow, self.claim, result)
        except Exception as exc:
            if not refused_data(exc):
                raise
            # the database refused the result itself: record that, or the attempt stays running
            error = classify(exc)
            return self._record_failure(
                TaskError(ErrorCategory.PERMANENT, "ResultNotStored", error.message)
            )
        if not landed:
            log.info("attempt_superseded")
            return Outcome("superseded")
        return Outcome("succeeded")

    def _record_failure(self, error: TaskError) -> Outcome:
        """Record the attempt's failure (its traceback is the exception being handled); its
        retry, if any, is published. An attempt that no longer owned its task (cancelled, or
        recovered as lost meanwhile) failed nothing: superseded."""
        c = self.claim
        log.warning("attempt_failed", **error.as_dict())
        trace = storable_text(traceback.format_exc())
        counted = fail_attempt(
            self.uow, self.policy, c.task_id, c.attempt, error, lease=c.lease, trace=trace
        )
        return Outcome("failed", error) if counted else Outcome("superseded")
