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

from omoi.domain import dag
from omoi.domain.enums import Phase, Priority, TaskStatus, TicketStatus
from omoi.domain.events import EventType
from omoi.domain.ids import new_id
from omoi.domain.routing import normalize_capabilities, queue_for
from omoi.models import Database
from omoi.models.types import utcnow
from omoi.services.dispatcher import Dispatch, Dispatcher
from omoi.services.errors import Conflict, Invalid
from omoi.services.outbox import publish
from omoi.services.records import event_row, record, settle_ticket
from omoi.services.sql import bulk_insert, tasks, tickets

WORKFLOW_FIRST_PHASE = {"dag": Phase.RUN}


@dataclass
class NewTask:
    key: str
    task_type: str
    depends_on: list[str] = field(default_factory=list)
    description: str = ""
    capabilities: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    priority: str | None = None
    max_retries: int | None = None
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    timeout_seconds: float | None = None
    resources: list[str] = field(default_factory=list)
    external: bool = False


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


def _existing(db: Database, key: str, fp: str | None) -> Submitted | None:
    """The ticket an earlier request created with this Idempotency-Key, if any."""
    with db.connect() as conn:
        row = conn.execute(
            select(tickets.c.id, tickets.c.request_fingerprint).where(
                tickets.c.idempotency_key == key
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


def create_ticket(
    db: Database,
    dispatcher: Dispatcher,
    spec: NewTicket,
    *,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
    max_tasks: int = 20_000,
    default_max_retries: int = 3,
) -> Submitted:
    if spec.workflow not in WORKFLOW_FIRST_PHASE:
        raise Invalid(
            f"unknown workflow {spec.workflow!r}",
            {"workflow": spec.workflow, "known": sorted(WORKFLOW_FIRST_PHASE)},
        )
    if len(spec.tasks) > max_tasks:
        raise Invalid(f"a ticket holds at most {max_tasks} tasks", {"tasks": len(spec.tasks)})
    problems = dag.validate([(t.key, t.depends_on) for t in spec.tasks])
    if problems:
        raise Invalid(problems.message(), problems.as_dict())
    if idempotency_key is not None:
        replay = _existing(db, idempotency_key, request_fingerprint)
        if replay is not None:
            return replay

    now = utcnow()
    phase = WORKFLOW_FIRST_PHASE[spec.workflow]
    ticket_id = new_id()
    ids = {t.key: new_id() for t in spec.tasks}
    rows: list[dict[str, Any]] = []
    ready: list[Dispatch] = []
    for t in spec.tasks:
        deps = list(dict.fromkeys(t.depends_on))
        caps = normalize_capabilities(t.capabilities)
        priority = t.priority or spec.priority
        is_ready = not deps
        rows.append(
            {
                "id": ids[t.key],
                "ticket_id": ticket_id,
                "phase": phase,
                "key": t.key,
                "task_type": t.task_type,
                "description": t.description,
                "capabilities": caps,
                "payload": t.payload,
                "priority": priority,
                "dependencies": {"depends_on": [str(ids[d]) for d in deps]},
                "unmet_dependencies": len(deps),
                "status": TaskStatus.QUEUED if is_ready else TaskStatus.PENDING,
                "attempt": 1 if is_ready else 0,
                "retry_count": 0,
                "max_retries": default_max_retries if t.max_retries is None else t.max_retries,
                "retry_backoff": t.retry_backoff,
                "retry_backoff_max": t.retry_backoff_max,
                "timeout_seconds": t.timeout_seconds,
                "resources": t.resources,
                "external": t.external,
                "created_at": now,
                "queued_at": now if is_ready else None,
            }
        )
        if is_ready:
            ready.append(
                Dispatch(
                    ids[t.key], 1, queue_for(caps), priority, t.timeout_seconds, external=t.external
                )
            )
    try:
        with db.connect() as conn:
            conn.execute(
                insert(tickets),
                [
                    {
                        "id": ticket_id,
                        "title": spec.title,
                        "description": spec.description,
                        "priority": spec.priority,
                        "workflow": spec.workflow,
                        "phase": phase,
                        "status": TicketStatus.ACTIVE,
                        "context": {},
                        "open_tasks": len(rows),
                        "idempotency_key": idempotency_key,
                        "request_fingerprint": request_fingerprint,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            if rows:
                bulk_insert(conn, tasks, rows)
            payload = {"tasks": len(rows), "ready": len(ready), "workflow": spec.workflow}
            record(
                conn,
                [event_row(EventType.TICKET_CREATED, "ticket", ticket_id, ticket_id, payload, now)],
            )
            if not rows:
                settle_ticket(conn, ticket_id)
    except IntegrityError:
        if idempotency_key is None:
            raise
        replay = _existing(db, idempotency_key, request_fingerprint)  # lost a concurrent race
        assert replay is not None
        return replay
    publish(db, dispatcher, ready)
    return Submitted(
        ticket_id, created=True, tasks=[(r["id"], r["key"], r["status"]) for r in rows]
    )
