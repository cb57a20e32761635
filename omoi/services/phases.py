"""A ticket's walk through its workflow's phases.

Entering a phase instantiates its task templates and the tasks the submitter attached to it.
The transaction that ends a phase's last task (the ticket's open-task counter reaching zero)
judges the phase's gate: passed, the phase's results are aggregated into the ticket's context
and the next phase begins; failed, a ``gate_results`` row keeps every reason and the ticket is
blocked until new artifacts, an approval, a retried task or a forced transition move it on.
Every judgement locks the ticket row and re-reads its state, so concurrent callers (two beats,
an artifact arriving as the last task ends) transition a ticket at most once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from omoi.domain import dag, gates
from omoi.domain.context import aggregate, summarize
from omoi.domain.enums import (
    OPEN_TASK_STATUSES,
    PHASE_BLOCKED,
    PHASE_DONE,
    TaskStatus,
    TicketStatus,
)
from omoi.domain.events import EventType
from omoi.domain.ids import new_id
from omoi.domain.jobs import job_id
from omoi.domain.routing import normalize_capabilities, queue_for, route_of
from omoi.domain.workflow import Workflow, current_phase
from omoi.persistence import Approval, Artifact, GateResult, PhaseHistory
from omoi.persistence.statements import (
    bulk_insert,
    cancel_rows,
    event_row,
    lease_held,
    move_ticket,
    record,
    sweep_lock,
    task_event,
    tasks,
    tickets,
)
from omoi.persistence.tables import TICKET_COLUMNS
from omoi.persistence.types import utcnow
from omoi.services.dispatcher import Dispatch
from omoi.services.errors import Conflict, Forbidden, Invalid, NotFound
from omoi.services.unit_of_work import Transaction, UnitOfWork

artifacts = Artifact.__table__
gate_results = GateResult.__table__
approvals = Approval.__table__
history = PhaseHistory.__table__
VISIT = "#"  # separates a task key from the visit number when a phase is entered again
VISIT_NUMBER = re.compile(rf"{VISIT}(\d+)")


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
    phase: str | None = None
    sync: dict[str, Any] | None = None  # {"need": N, "timeout_seconds": T}: N of depends_on


@dataclass(frozen=True)
class Defaults:
    priority: str
    max_retries: int


@dataclass(frozen=True)
class Origin:
    """What new tasks' jobs show of where they come from: their ticket's title, its first job
    (``None`` before it has one: the first of these published to Celery becomes it) and the
    job they come from (a split's subtasks: the attempt that split)."""

    title: str
    root_job: str | None = None
    parent_job: str | None = None


def phase_tasks(
    workflow: Workflow, phase: str, title: str, planned: Sequence[NewTask]
) -> list[NewTask]:
    """The phase's templates (descriptions filled in from the ticket) and the planned tasks."""
    generated = [
        NewTask(
            key=t.key,
            task_type=t.task_type,
            depends_on=list(t.depends_on),
            description=t.description.format(title=title),
            capabilities=list(t.capabilities),
            payload=dict(t.payload),
            priority=t.priority,
            max_retries=t.max_retries,
            timeout_seconds=t.timeout_seconds,
            sync=dict(t.sync) if t.sync else None,
        )
        for t in workflow.spec(phase).tasks
    ]
    return [*generated, *planned]


def check_graph(specs: Sequence[NewTask], phase: str) -> None:
    problems = dag.validate([(t.key, t.depends_on) for t in specs])
    if problems:
        raise Invalid(problems.message(), {"phase": phase, **problems.as_dict()})
    for t in specs:
        if t.sync is not None and not 1 <= t.sync["need"] <= len(set(t.depends_on)):
            raise Invalid(
                f"sync point {t.key!r} needs between 1 and {len(set(t.depends_on))} "
                "of its dependencies",
                {"task": t.key},
            )


def visit_of(key: str) -> int:
    """Which visit of its phase a task key was created in (a split subtask's, its parent's):
    ``build`` 1, ``build#3`` 3, ``build#3/part-1`` 3. Submitted keys hold no ``#``."""
    found = VISIT_NUMBER.search(key)
    return int(found.group(1)) if found else 1


def _keys(conn: Connection, ticket_id: uuid.UUID, phase: str) -> list[str]:
    return list(
        conn.execute(
            select(tasks.c.key).where(tasks.c.ticket_id == ticket_id, tasks.c.phase == phase)
        ).scalars()
    )


def plan_of(specs: Sequence[NewTask]) -> list[dict[str, Any]]:
    """Specs as stored in a ticket's plan (a shallow copy: ``asdict`` deep-copies every
    payload, a tenth of a 10,000-task ticket's acceptance)."""
    return [dict(vars(t)) for t in specs]


def instantiate(
    conn: Connection,
    ticket_id: uuid.UUID,
    phase: str,
    specs: Sequence[NewTask],
    defaults: Defaults,
    now: datetime,
    origin: Origin,
    split_of: str | None = None,
) -> tuple[list[dict[str, Any]], list[Dispatch]]:
    """Insert a phase's tasks (ready ones queued) and set the ticket's open-task counter (and
    its first job, if it had none); or, for a split (``split_of`` = the parent's key), add
    them to the running phase."""
    if split_of is None:  # a phase entered again, the first included: the next visit's keys
        visits = max(map(visit_of, _keys(conn, ticket_id, phase)), default=0)
        suffix = f"{VISIT}{visits + 1}" if visits else ""
    prefix = f"{split_of}/" if split_of is not None else ""
    ids = {t.key: new_id() for t in specs}
    first = next((t for t in specs if not t.depends_on and not t.external), None)
    root = origin.root_job or (job_id(ids[first.key], 1) if first else None)
    rows: list[dict[str, Any]] = []
    ready: list[Dispatch] = []
    for t in specs:
        deps = list(dict.fromkeys(t.depends_on))
        caps = normalize_capabilities(t.capabilities)
        priority = t.priority or defaults.priority
        is_ready = not deps
        need = t.sync["need"] if t.sync else len(deps)
        timeout = (t.sync or {}).get("timeout_seconds")
        rows.append(
            {
                "id": ids[t.key],
                "ticket_id": ticket_id,
                "phase": phase,
                "key": prefix + t.key if split_of is not None else t.key + suffix,
                "task_type": t.task_type,
                "description": t.description,
                "capabilities": caps,
                "route": route_of(caps),
                "payload": t.payload,
                "priority": priority,
                "dependencies": {"depends_on": [str(ids[d]) for d in deps]},
                "unmet_dependencies": need,
                "sync_need": t.sync["need"] if t.sync else None,
                "sync_deadline": now + timedelta(seconds=timeout) if timeout else None,
                "status": TaskStatus.QUEUED if is_ready else TaskStatus.PENDING,
                "attempt": 1 if is_ready else 0,
                "retry_count": 0,
                "max_retries": defaults.max_retries if t.max_retries is None else t.max_retries,
                "retry_backoff": t.retry_backoff,
                "retry_backoff_max": t.retry_backoff_max,
                "timeout_seconds": t.timeout_seconds,
                "resources": t.resources,
                "external": t.external,
                "parent_job": origin.parent_job,
                "created_at": now,
                "queued_at": now if is_ready else None,
            }
        )
        if is_ready:
            ready.append(
                Dispatch(
                    ids[t.key],
                    1,
                    queue_for(caps),
                    priority,
                    t.timeout_seconds,
                    external=t.external,
                    task_type=t.task_type,
                    key=rows[-1]["key"],
                    title=origin.title,
                    root_job=root,
                    parent_job=origin.parent_job,
                )
            )
    bulk_insert(conn, tasks, rows)
    count = tickets.c.open_tasks + len(rows) if split_of is not None else len(rows)
    found = {"root_job": root} if root != origin.root_job else {}
    conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(open_tasks=count, **found))
    return rows, ready


def _ticket(conn: Connection, ticket_id: uuid.UUID, *, lock: bool = True) -> Any:
    """The ticket (but its plan), row-locked unless ``lock`` is False; NotFound if none."""
    query = select(*TICKET_COLUMNS).where(tickets.c.id == ticket_id)
    ticket = conn.execute(query.with_for_update() if lock else query).one_or_none()
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found", {"ticket_id": str(ticket_id)})
    return ticket


def _working_phase(tx: Transaction, ticket: Any, phase: str | None) -> str:
    """The working phase an artifact or approval is for: ``phase`` if the ticket's workflow
    has it (Invalid if not), else the one the ticket is in or blocked in."""
    if phase is None:
        return current_phase(ticket)
    workflow = tx.workflows.get(ticket.workflow)
    if phase not in workflow.working:
        raise Invalid(
            f"{phase} is not a working phase of workflow {workflow.name}",
            {"phase": phase, "phases": workflow.working},
        )
    return phase


def _planned(conn: Connection, ticket_id: uuid.UUID, phase: str) -> list[NewTask]:
    plan = conn.execute(select(tickets.c.plan).where(tickets.c.id == ticket_id)).scalar_one()
    return [NewTask(**t) for t in (plan or {}).get(phase, [])]


def _enter(
    tx: Transaction, ticket: Any, workflow: Workflow, phase: str, context: dict[str, Any]
) -> None:
    """Start ``phase``: create its tasks; a phase without tasks is judged at once."""
    conn = tx.conn
    if phase == PHASE_DONE:
        conn.execute(update(tickets).where(tickets.c.id == ticket.id).values(open_tasks=0))
        record(conn, [event_row(EventType.TICKET_COMPLETED, "ticket", ticket.id, ticket.id)])
        return
    specs = phase_tasks(workflow, phase, ticket.title, _planned(conn, ticket.id, phase))
    defaults = Defaults(ticket.priority, context.get("defaults", {}).get("max_retries", 3))
    origin = Origin(ticket.title, ticket.root_job)
    _, ready = instantiate(conn, ticket.id, phase, specs, defaults, utcnow(), origin)
    tx.ready += ready
    if not specs:
        judge(tx, ticket.id)


def _aggregate(conn: Connection, ticket: Any, phase: str) -> dict[str, Any]:
    """The ticket's context with ``phase``'s results folded in and everything re-summarized."""
    results = conn.execute(
        select(tasks.c.key, tasks.c.result)
        .where(
            tasks.c.ticket_id == ticket.id,
            tasks.c.phase == phase,
            tasks.c.status == TaskStatus.SUCCEEDED,
        )
        .order_by(tasks.c.id)
    ).all()
    kinds = (
        conn.execute(
            select(artifacts.c.type).where(
                artifacts.c.ticket_id == ticket.id, artifacts.c.phase == phase
            )
        )
        .scalars()
        .all()
    )
    context = dict(ticket.context)
    done = dict(context.get("phases") or {})
    done[phase] = aggregate([(r.key, r.result) for r in results], list(kinds))
    context["phases"] = done
    context["summary"] = summarize(done, context.get("budget", 4000))
    return context


def _move(
    tx: Transaction,
    ticket: Any,
    workflow: Workflow,
    to: str,
    reason: str,
    by: str,
    leaving: str,
    note: str | None = None,
) -> None:
    """Leave ``leaving`` (aggregating its context), enter ``to``."""
    conn = tx.conn
    context = _aggregate(conn, ticket, leaving) if leaving in workflow.working else ticket.context
    conn.execute(update(tickets).where(tickets.c.id == ticket.id).values(context=context))
    status = TicketStatus.DONE if to == PHASE_DONE else TicketStatus.ACTIVE
    move_ticket(conn, ticket.id, ticket.phase, to, status, reason, by, note)
    refreshed = conn.execute(select(*TICKET_COLUMNS).where(tickets.c.id == ticket.id)).one()
    _enter(tx, refreshed, workflow, to, context)


def judge(tx: Transaction, ticket_id: uuid.UUID) -> None:
    """Judge the gate of the phase whose work has ended (or that a blocked ticket waits in);
    passed, the next phase's ready tasks join ``tx.ready``."""
    conn = tx.conn
    ticket = _ticket(conn, ticket_id)
    if ticket.status == TicketStatus.ACTIVE:
        phase = ticket.phase
        if ticket.open_tasks > 0:
            return
    elif ticket.status == TicketStatus.BLOCKED and ticket.previous_phase:
        phase = ticket.previous_phase
        still_open = conn.execute(
            select(tasks.c.id)
            .where(
                tasks.c.ticket_id == ticket_id,
                tasks.c.phase == phase,
                tasks.c.status.in_(list(OPEN_TASK_STATUSES)),
            )
            .limit(1)
        ).first()
        if still_open is not None:
            return
    else:
        return
    workflow = tx.workflows.get(ticket.workflow)
    verdict = gates.evaluate(
        workflow.spec(phase).gate,
        _statuses(conn, ticket_id, phase),
        [
            (a.type, a.content)
            for a in conn.execute(
                select(artifacts.c.type, artifacts.c.content)
                .where(artifacts.c.ticket_id == ticket_id, artifacts.c.phase == phase)
                .order_by(artifacts.c.id)
            )
        ],
        conn.execute(
            select(approvals.c.id).where(
                approvals.c.ticket_id == ticket_id, approvals.c.phase == phase
            )
        ).first()
        is not None,
    )
    now = utcnow()
    conn.execute(
        insert(gate_results).values(
            ticket_id=ticket_id,
            phase=phase,
            passed=verdict.passed,
            missing=verdict.missing,
            reasons=verdict.reasons,
            created_at=now,
        )
    )
    kind = EventType.GATE_PASSED if verdict.passed else EventType.GATE_FAILED
    record(
        conn,
        [event_row(kind, "ticket", ticket_id, ticket_id, {"phase": phase, **asdict(verdict)}, now)],
    )
    if verdict.passed:
        target = workflow.next_phase(phase)
        assert target is not None  # a parsed workflow has a way out of every working phase
        _move(tx, ticket, workflow, target, f"gate of {phase} passed", "gate", phase)
    elif ticket.status == TicketStatus.ACTIVE:
        move_ticket(
            conn,
            ticket_id,
            phase,
            PHASE_BLOCKED,
            TicketStatus.BLOCKED,
            "; ".join(verdict.reasons),
            "gate",
        )


def _statuses(conn: Connection, ticket_id: uuid.UUID, phase: str) -> dict[str, str]:
    """The statuses of the phase's newest visit, by key without its visit number (split
    subtasks of earlier visits, ``build/part-1`` beside ``build#2/part-1``, are not judged)."""
    rows = conn.execute(
        select(tasks.c.key, tasks.c.status)
        .where(tasks.c.ticket_id == ticket_id, tasks.c.phase == phase)
        .order_by(tasks.c.id)
    ).all()
    newest = max((visit_of(r.key) for r in rows), default=1)
    return {VISIT_NUMBER.sub("", r.key): r.status for r in rows if visit_of(r.key) == newest}


def close_tasks(tx: Transaction, ticket_id: uuid.UUID, count: int) -> None:
    """Count ``count`` tasks of the ticket's phase as ended; the call that brings the counter to
    zero judges the gate in the same transaction (the counter's row lock orders concurrent
    callers). Call it last: the lock is then held only until commit."""
    row = tx.conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket_id)
        .values(open_tasks=tickets.c.open_tasks - count, updated_at=utcnow())
        .returning(tickets.c.open_tasks)
    ).one()
    if row.open_tasks <= 0:
        judge(tx, ticket_id)


def transition(
    tx: Transaction,
    ticket_id: uuid.UUID,
    to_phase: str,
    reason: str,
    by: str,
    force: bool,
    note: str | None,
) -> None:
    """Move a ticket by hand (``by``: the API passes its token's name; ``note``: a name the
    client gave). Allowed moves come from the workflow's transition table; ``force`` skips
    that check (not the phase's existence). Leaving a working phase cancels its open tasks;
    returning from BLOCKED to the phase it came from resumes it."""
    conn = tx.conn
    ticket = _ticket(conn, ticket_id)
    workflow = tx.workflows.get(ticket.workflow)
    to = to_phase
    if not workflow.has(to):
        raise Invalid(
            f"{to} is not a phase of workflow {workflow.name}",
            {"phase": to, "phases": [*workflow.names, PHASE_BLOCKED]},
        )
    allowed = workflow.allowed(ticket.phase, ticket.previous_phase)
    if not force and (
        to not in allowed or ticket.status in (TicketStatus.DONE, TicketStatus.CANCELLED)
    ):
        raise Conflict(
            f"cannot move from {ticket.phase} to {to}; allowed: "
            + (", ".join(allowed) if ticket.status not in ("done", "cancelled") else "none"),
            {"from": ticket.phase, "to": str(to), "allowed": [str(a) for a in allowed]},
        )
    if to == PHASE_BLOCKED:
        move_ticket(conn, ticket_id, ticket.phase, to, TicketStatus.BLOCKED, reason, by, note)
    elif ticket.phase == PHASE_BLOCKED and to == ticket.previous_phase:
        move_ticket(conn, ticket_id, ticket.phase, to, TicketStatus.ACTIVE, reason, by, note)
        judge(tx, ticket_id)
    else:
        leaving = current_phase(ticket)
        _cancel_open(conn, ticket_id, f"ticket moved to {to}")
        _move(tx, ticket, workflow, to, reason, by, leaving, note)


def _cancel_open(conn: Connection, ticket_id: uuid.UUID, reason: str) -> None:
    cancel_rows(
        conn,
        ticket_id,
        (tasks.c.ticket_id == ticket_id) & tasks.c.status.in_(list(OPEN_TASK_STATUSES)),
        reason,
    )


def add_artifact(
    tx: Transaction,
    ticket_id: uuid.UUID,
    kind: str,
    content: Any,
    path: str | None,
    phase: str | None,
    task_id: uuid.UUID | None = None,
) -> int:
    """Store an artifact for the ticket's current phase (or the one it is blocked in) and judge
    a gate that was waiting for it."""
    conn = tx.conn
    ticket = _ticket(conn, ticket_id)
    phase = _working_phase(tx, ticket, phase)
    artifact_id = conn.execute(
        insert(artifacts)
        .values(
            ticket_id=ticket_id,
            phase=phase,
            type=kind,
            path=path,
            content=content,
            task_id=task_id,
            created_at=utcnow(),
        )
        .returning(artifacts.c.id)
    ).scalar_one()
    record(
        conn,
        [
            event_row(
                EventType.ARTIFACT_ADDED,
                "ticket",
                ticket_id,
                ticket_id,
                {"phase": phase, "type": kind, "artifact_id": artifact_id},
            )
        ],
    )
    judge(tx, ticket_id)
    return int(artifact_id)


def approve(
    tx: Transaction,
    ticket_id: uuid.UUID,
    by: str,
    comment: str,
    phase: str | None,
    note: str | None,
) -> None:
    """``by`` is who approves (the API passes its token's name); ``note`` is what a client
    says about it, kept beside but never in its place."""
    conn = tx.conn
    ticket = _ticket(conn, ticket_id)
    phase = _working_phase(tx, ticket, phase)
    conn.execute(
        insert(approvals).values(
            ticket_id=ticket_id, phase=phase, by=by, note=note, comment=comment, created_at=utcnow()
        )
    )
    payload = {"phase": phase, "by": by, "note": note}
    record(conn, [event_row(EventType.GATE_APPROVED, "ticket", ticket_id, ticket_id, payload)])
    judge(tx, ticket_id)


def emit_artifact(
    conn: Connection,
    task_id: uuid.UUID,
    lease: uuid.UUID,
    kind: str,
    content: Any,
    path: str | None,
) -> bool:
    """An artifact from a handler, stored only while its attempt holds the task."""
    row = conn.execute(
        select(tasks.c.ticket_id, tasks.c.phase).where(tasks.c.id == task_id, lease_held(lease))
    ).one_or_none()
    if row is None:
        return False
    conn.execute(
        insert(artifacts).values(
            ticket_id=row.ticket_id,
            phase=row.phase,
            type=kind,
            path=path,
            content=content,
            task_id=task_id,
            created_at=utcnow(),
        )
    )
    record(
        conn,
        [
            task_event(
                EventType.ARTIFACT_ADDED, task_id, row.ticket_id, {"phase": row.phase, "type": kind}
            )
        ],
    )
    return True


def sweep_gates(uow: UnitOfWork, limit: int = 500) -> int:
    """Safety net: judge active tickets whose phase has no open task left (their last task's
    worker died between its commit and the gate check). Idempotent: ``judge`` locks and
    re-reads each ticket. Returns how many tasks it made ready."""

    def work(tx: Transaction) -> int:
        with sweep_lock(tx.conn, "gates") as got:
            if not got:
                return 0
            waiting = (
                tx.conn.execute(
                    select(tickets.c.id)
                    .where(tickets.c.status == TicketStatus.ACTIVE, tickets.c.open_tasks <= 0)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            for ticket_id in waiting:
                judge(tx, ticket_id)
            return len(tx.ready)

    return uow.run(work)


def move(
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    to_phase: str,
    reason: str,
    by: str,
    force: bool,
    note: str | None,
) -> None:
    uow.run(lambda tx: transition(tx, ticket_id, to_phase, reason, by, force, note))


def add(
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    kind: str,
    content: Any,
    path: str | None,
    phase: str | None,
    holder: uuid.UUID | None = None,
) -> int:
    """Add an artifact; with ``holder``, only while that agent runs one of the ticket's tasks
    (the artifact names that task)."""

    def work(tx: Transaction) -> int:
        task_id = None if holder is None else _held_task(tx.conn, ticket_id, holder)
        return add_artifact(tx, ticket_id, kind, content, path, phase, task_id)

    return uow.run(work)


def _held_task(conn: Connection, ticket_id: uuid.UUID, agent_id: uuid.UUID) -> uuid.UUID:
    """The ticket's task this agent runs now (its latest started), or Forbidden."""
    task_id = conn.execute(
        select(tasks.c.id)
        .where(
            tasks.c.ticket_id == ticket_id,
            tasks.c.status == TaskStatus.RUNNING,
            tasks.c.agent_id == agent_id,
        )
        .order_by(tasks.c.started_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if task_id is None:
        raise Forbidden(
            f"agent {agent_id} runs none of ticket {ticket_id}'s tasks; it may add artifacts"
            " only to tickets whose tasks it holds",
            {"ticket_id": str(ticket_id)},
            code="not_ticket_holder",
        )
    return task_id  # type: ignore[no-any-return]


def give_approval(
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    by: str,
    comment: str,
    phase: str | None,
    note: str | None,
) -> None:
    uow.run(lambda tx: approve(tx, ticket_id, by, comment, phase, note))
