"""Submitting tickets: validate the graph, write the ticket and every task in one transaction,
publish the ready ones after commit."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from omoi.domain.enums import Priority, TicketStatus
from omoi.domain.events import EventType
from omoi.domain.ids import new_id
from omoi.persistence import Database
from omoi.persistence.statements import event_row, record, tickets
from omoi.persistence.types import utcnow
from omoi.services.errors import Conflict, Invalid
from omoi.services.phases import (
    Defaults,
    NewTask,
    Origin,
    check_graph,
    instantiate,
    judge,
    phase_tasks,
    plan_of,
)
from omoi.services.unit_of_work import Transaction, UnitOfWork


@dataclass
class NewTicket:
    title: str
    description: str = ""
    priority: str = Priority.MEDIUM
    workflow: str = "dag"
    tasks: list[NewTask] = field(default_factory=list)


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submission; ``tasks`` (id, key, status) only when it was created here."""

    ticket_id: uuid.UUID
    created: bool
    tasks: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)


def fingerprint(body: Any) -> str:
    """Stable hash of a request, to tell an idempotent replay from a reused key."""
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _existing(
    db: Database, token_id: uuid.UUID | None, key: str, fp: str | None
) -> Submitted | None:
    """The ticket an earlier request of this token created with this Idempotency-Key, if
    any. Keys are the token's own: another token's key, even the same string, is not found
    (it would hand over that token's ticket and tell it whether a key was used)."""
    scope = (
        tickets.c.submitter_token_id.is_(None)
        if token_id is None
        else tickets.c.submitter_token_id == token_id
    )
    with db.connect() as conn:
        row = conn.execute(
            select(tickets.c.id, tickets.c.request_fingerprint).where(
                tickets.c.idempotency_key == key, scope
            )
        ).one_or_none()
    if row is None:
        return None
    if fp is not None and row.request_fingerprint not in (None, fp):
        raise Conflict(
            "Idempotency-Key was already used with a different request",
            {"idempotency_key": key, "ticket_id": str(row.id)},
        )
    return Submitted(row.id, created=False)


def check_size(count: int, max_tasks: int) -> None:
    """A ticket's task limit: the API checks it before validating a single task (refusing
    100,000 tasks must not cost their validation), submission again for every other caller."""
    if count > max_tasks:
        raise Invalid(f"a ticket holds at most {max_tasks} tasks", {"tasks": count})


def create_ticket(
    uow: UnitOfWork,
    spec: NewTicket,
    *,
    submitter_token_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
    max_tasks: int = 20_000,
    default_max_retries: int = 3,
    context_budget: int = 4000,
) -> Submitted:
    workflow = uow.workflows.get(spec.workflow)
    check_size(len(spec.tasks), max_tasks)
    by_phase: dict[str, list[NewTask]] = {}
    for t in spec.tasks:
        phase = t.phase or workflow.initial
        if phase not in workflow.working:
            raise Invalid(
                f"task {t.key!r}: {phase} is not a working phase of {workflow.name}",
                {"task": t.key, "phases": [str(p) for p in workflow.working]},
            )
        by_phase.setdefault(phase, []).append(t)
    for phase in workflow.working:
        check_graph(phase_tasks(workflow, phase, spec.title, by_phase.get(phase, [])), phase)
    if idempotency_key is not None:
        replay = _existing(uow.db, submitter_token_id, idempotency_key, request_fingerprint)
        if replay is not None:
            return replay

    now = utcnow()
    ticket_id = new_id()
    first = workflow.initial
    context: dict[str, Any] = {
        "defaults": {"max_retries": default_max_retries},
        "budget": context_budget,
    }
    initial = phase_tasks(workflow, first, spec.title, by_phase.get(first, []))

    def work(tx: Transaction) -> list[dict[str, Any]]:
        conn = tx.conn
        conn.execute(
            insert(tickets),
            [
                {
                    "id": ticket_id,
                    "title": spec.title,
                    "description": spec.description,
                    "priority": spec.priority,
                    "workflow": spec.workflow,
                    "phase": first,
                    "status": TicketStatus.ACTIVE,
                    "context": context,
                    "plan": {p: plan_of(ts) for p, ts in by_phase.items()} or None,
                    "open_tasks": 0,
                    "idempotency_key": idempotency_key,
                    "submitter_token_id": submitter_token_id,
                    "request_fingerprint": request_fingerprint,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        defaults = Defaults(spec.priority, default_max_retries)
        rows, ready = instantiate(
            conn, ticket_id, first, initial, defaults, now, Origin(spec.title)
        )
        payload = {"tasks": len(rows), "ready": len(ready), "workflow": spec.workflow}
        record(
            conn,
            [event_row(EventType.TICKET_CREATED, "ticket", ticket_id, ticket_id, payload, now)],
        )
        tx.ready += ready
        if not rows:
            judge(tx, ticket_id)  # a phase without tasks is judged at once
        return rows

    try:
        rows = uow.run(work)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # lost a concurrent race to the same token's same key
        replay = _existing(uow.db, submitter_token_id, idempotency_key, request_fingerprint)
        assert replay is not None
        return replay
    return Submitted(
        ticket_id, created=True, tasks=[(r["id"], r["key"], r["status"]) for r in rows]
    )
