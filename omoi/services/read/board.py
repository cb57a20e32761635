"""Read models for the web board: the cards (each ticket's state, first reason and progress
through its workflow), one ticket's task graph, and the panel of one task (its attempts with
their agents, its error and traceback, its result and payload)."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from omoi.domain.enums import PHASE_BLOCKED, TaskStatus, TicketStatus
from omoi.domain.progress import Progress, TicketState, progress_of, state_of
from omoi.domain.workflow import current_phase
from omoi.persistence import Agent, Database, GateResult, PhaseHistory, Task, Ticket
from omoi.services.read.queries import attempts_of, counts_by_ticket, get_task, worker_wait

OPEN = (TicketStatus.ACTIVE, TicketStatus.BLOCKED)
FINISHED = (TicketStatus.DONE, TicketStatus.CANCELLED)
# the SQL filter each board state narrows to (the blocked ones are told apart afterwards)
STATUS_OF_STATE = {
    TicketState.ACTIVE: TicketStatus.ACTIVE,
    TicketState.AWAITING_APPROVAL: TicketStatus.BLOCKED,
    TicketState.FAILED: TicketStatus.BLOCKED,
    TicketState.BLOCKED: TicketStatus.BLOCKED,
    TicketState.DONE: TicketStatus.DONE,
    TicketState.CANCELLED: TicketStatus.CANCELLED,
}
TEXT_MAX = 64 * 1024  # of a payload or result shown in the panel


@dataclass
class Standing:
    """Where a ticket stands: its board state, why it is blocked (first reason first) and its
    progress through its workflow."""

    state: TicketState
    reasons: list[str]
    progress: Progress


@dataclass
class Board:
    """The cards to show, newest first: every open ticket (up to the limit) and the newest
    finished ones of each kind, with how many finished tickets there are in all."""

    cards: list[dict[str, Any]]
    finished: dict[str, int] = field(default_factory=dict)  # done, cancelled: how many in all


def _visit_counts(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Task counts by status of each ticket's current phase, its latest visit only (the tasks
    created since the ticket last entered it: a phase entered again has new tasks)."""
    phase = case((Ticket.phase == PHASE_BLOCKED, Ticket.previous_phase), else_=Ticket.phase)
    entries = (
        select(
            PhaseHistory.ticket_id,
            PhaseHistory.to_phase,
            func.max(PhaseHistory.created_at).label("at"),
        )
        .where(PhaseHistory.ticket_id.in_(ids))
        .group_by(PhaseHistory.ticket_id, PhaseHistory.to_phase)
        .subquery()
    )
    visits = (
        select(
            Ticket.id.label("ticket_id"),
            phase.label("phase"),
            # a ticket's first phase was entered when it was created (no history row)
            func.coalesce(entries.c.at, Ticket.created_at).label("since"),
        )
        .outerjoin(entries, and_(entries.c.ticket_id == Ticket.id, entries.c.to_phase == phase))
        .where(Ticket.id.in_(ids))
        .subquery()
    )
    rows = session.execute(
        select(Task.ticket_id, Task.status, func.count())
        .join(
            visits,
            and_(
                Task.ticket_id == visits.c.ticket_id,
                Task.phase == visits.c.phase,
                Task.created_at >= visits.c.since,
            ),
        )
        .group_by(Task.ticket_id, Task.status)
    )
    counts: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for ticket_id, status, n in rows:
        counts[ticket_id][status] = n
    return counts


def _block_reasons(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Why each blocked ticket is blocked: its latest gate judgement's reasons when a gate
    blocked it, else the reason its move to PHASE_BLOCKED gave."""
    if not ids:
        return {}
    latest_block = (
        select(func.max(PhaseHistory.id))
        .where(PhaseHistory.ticket_id.in_(ids), PhaseHistory.to_phase == PHASE_BLOCKED)
        .group_by(PhaseHistory.ticket_id)
    )
    latest_gate = (
        select(func.max(GateResult.id))
        .where(GateResult.ticket_id.in_(ids), GateResult.passed.is_(False))
        .group_by(GateResult.ticket_id)
    )
    gates = {
        r.ticket_id: list(r.reasons)
        for r in session.execute(
            select(GateResult.ticket_id, GateResult.reasons).where(GateResult.id.in_(latest_gate))
        )
    }
    reasons = {}
    for r in session.execute(
        select(PhaseHistory.ticket_id, PhaseHistory.by, PhaseHistory.reason).where(
            PhaseHistory.id.in_(latest_block)
        )
    ):
        by_gate = r.by == "gate" and gates.get(r.ticket_id)
        reasons[r.ticket_id] = by_gate or ([r.reason] if r.reason else [])
    return reasons


def standings(
    session: Session, tickets: Sequence[Any], phases_of: Mapping[str, Sequence[str]]
) -> dict[uuid.UUID, Standing]:
    """Each ticket's standing, in three queries whatever their number. ``phases_of``: each
    workflow's phases (a ticket of a workflow no longer known counts its own phase alone)."""
    ids = [t.id for t in tickets]
    counts = _visit_counts(session, ids)
    reasons = _block_reasons(session, [t.id for t in tickets if t.status == TicketStatus.BLOCKED])
    found = {}
    for t in tickets:
        phase, visit = current_phase(t), counts.get(t.id, {})
        why = reasons.get(t.id, [])
        found[t.id] = Standing(
            state_of(t.status, why, visit.get(TaskStatus.FAILED, 0)),
            why,
            progress_of(phases_of.get(t.workflow, [phase]), phase, t.status, visit),
        )
    return found


def standing(db: Database, ticket: Any, phases_of: Mapping[str, Sequence[str]]) -> Standing:
    with db.session() as session:
        return standings(session, [ticket], phases_of)[ticket.id]


def board(
    db: Database,
    phases_of: Mapping[str, Sequence[str]],
    *,
    text: str | None = None,
    state: TicketState | None = None,
    workflow: str | None = None,
    finished_shown: int | None = 6,
    limit: int = 300,
) -> Board:
    """The cards matching the filters: ``text`` in the title (any case), the board ``state``,
    the ``workflow``. Open tickets up to ``limit``; of the done and the cancelled ones, the
    newest ``finished_shown`` of each (all up to ``limit`` when None, or when ``state`` asks
    for them)."""
    where = []
    if text:
        where.append(func.lower(Ticket.title).contains(text.lower(), autoescape=True))
    if workflow:
        where.append(Ticket.workflow == workflow)
    statuses = [STATUS_OF_STATE[state]] if state else [*OPEN, *FINISHED]
    with db.session() as session:
        rows: list[Any] = []
        finished: dict[str, int] = {}
        for status in statuses:
            matching = and_(Ticket.status == status, *where)
            cap = limit if status in OPEN or state or finished_shown is None else finished_shown
            rows += session.scalars(
                select(Ticket).where(matching).order_by(Ticket.id.desc()).limit(cap)
            )
            if status in FINISHED:
                count = select(func.count()).select_from(Ticket).where(matching)
                finished[status] = session.scalar(count) or 0
        rows.sort(key=lambda t: t.id, reverse=True)
        counts = counts_by_ticket(session, [t.id for t in rows])
        standing = standings(session, rows, phases_of)
    cards = [
        {
            "id": t.id,
            "title": t.title,
            "phase": t.phase,
            "column": current_phase(t),
            "status": t.status,
            "workflow": t.workflow,
            "priority": t.priority,
            "counts": counts[t.id],
            "standing": standing[t.id],
        }
        for t in rows
        if state is None or standing[t.id].state == state
    ]
    return Board(cards, finished)


def graph(db: Database, ticket_id: uuid.UUID) -> list[dict[str, Any]]:
    """The ticket's tasks in creation order, with their dependencies."""
    with db.session() as session:
        rows = list(
            session.execute(
                select(
                    Task.id, Task.key, Task.status, Task.phase, Task.task_type, Task.dependencies
                )
                .where(Task.ticket_id == ticket_id)
                .order_by(Task.id)
            )
        )
    return [
        {
            "id": str(r.id),
            "key": r.key,
            "status": r.status,
            "phase": r.phase,
            "task_type": r.task_type,
            "depends_on": [str(d) for d in r.dependencies.get("depends_on", [])],
        }
        for r in rows
    ]


def as_text(value: Any, where: str) -> str | None:
    """JSON as a person reads it, cut at ``TEXT_MAX`` characters (saying where the rest is)."""
    if value is None:
        return None
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) <= TEXT_MAX:
        return text
    return f"{text[:TEXT_MAX]}\n… {len(text) - TEXT_MAX:,} more characters: {where} has it all"


def task_panel(db: Database, task_id: uuid.UUID, exec_types: Collection[str]) -> dict[str, Any]:
    """One task as the board's panel shows it (NotFound for no such task)."""
    task, blocks, timeline = get_task(db, task_id)
    attempts = attempts_of(timeline)
    latest = next((a for a in attempts if a.attempt == task.attempt), None)
    if latest is not None and latest.agent_id is None and task.agent_id is not None:
        latest.agent_id = str(task.agent_id)  # attempts started before claims named their agent
    error = dict(task.error) if task.error else None
    if error is not None:
        error["traceback"] = next(
            (
                e.payload["traceback"]
                for e in reversed(timeline)
                if e.payload.get("traceback") and e.payload.get("message") == error.get("message")
            ),
            None,
        )
    agent_ids = {uuid.UUID(a.agent_id) for a in attempts if a.agent_id}
    neighbours = [uuid.UUID(d) for d in task.depends_on] + list(blocks)
    with db.session() as session:
        names = {
            r.id: r.name
            for r in session.execute(select(Agent.id, Agent.name).where(Agent.id.in_(agent_ids)))
        }
        keys = {
            r.id: r
            for r in session.execute(
                select(Task.id, Task.key, Task.status).where(
                    and_(Task.ticket_id == task.ticket_id, Task.id.in_(neighbours))
                )
            )
        }
    where = f"GET /api/v1/tasks/{task_id}"
    return {
        **{c.key: getattr(task, c.key) for c in task.__table__.columns},
        "waiting_for": task.waiting_for or worker_wait(db, task, exec_types),
        "depends_on": [keys[d]._asdict() for d in map(uuid.UUID, task.depends_on) if d in keys],
        "blocks": [keys[b]._asdict() for b in blocks if b in keys],
        "attempts": [
            {
                **a.__dict__,
                "agent_name": names.get(uuid.UUID(a.agent_id)) if a.agent_id else None,
            }
            for a in attempts
        ],
        "error": error,
        "result": as_text(task.result, where),
        "payload": as_text(task.payload, where),
    }
