"""Agents: who is alive, what they can do, and how their work is recovered when they die.

Celery workers register themselves when they start and heartbeat from their main process;
external agents do the same over HTTP and pull tasks with ``claim_next``. An agent that misses
heartbeats for ``timeout`` seconds is stale, and its running attempts are recovered as ``lost``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, func, not_, or_, select, text, update

from omoi.domain.enums import AgentKind, AgentStatus, ErrorCategory, TaskStatus
from omoi.domain.errors import TaskError
from omoi.domain.events import EventType
from omoi.domain.ids import new_id
from omoi.domain.routing import normalize_capabilities
from omoi.domain.storable import unstorable
from omoi.persistence import Agent, Database, claims
from omoi.persistence.statements import LIVE_AGENTS, event_row, record, sweep_lock, tasks
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.persistence.types import utcnow
from omoi.services import locks
from omoi.services.attempts import Claim, succeed
from omoi.services.context import TaskContext
from omoi.services.dispatcher import Dispatcher
from omoi.services.errors import Conflict, Invalid, NotFound
from omoi.services.failures import RetryPolicy, fail_attempt
from omoi.services.outbox import publish

log = structlog.get_logger(__name__)
agents = Agent.__table__


def register(
    db: Database,
    *,
    name: str,
    kind: AgentKind,
    capabilities: Sequence[str],
    capacity: int = 1,
    version: str | None = None,
    hostname: str | None = None,
    pid: int | None = None,
    agent_id: uuid.UUID | None = None,
    enabled_task_types: Sequence[str] = (),
) -> uuid.UUID:
    """A new agent row (one per process lifetime: a restarted worker is a new agent, so the
    old incarnation's attempts are recovered rather than inherited)."""
    now = utcnow()
    agent_id = agent_id or new_id()
    with db.connect() as conn:
        conn.execute(
            agents.insert().values(
                id=agent_id,
                name=name,
                kind=kind,
                capabilities=normalize_capabilities(capabilities),
                capacity=capacity,
                status=AgentStatus.IDLE,
                last_heartbeat=now,
                version=version,
                hostname=hostname,
                pid=pid,
                registered_at=now,
                enabled_task_types=list(enabled_task_types),
            )
        )
        record(
            conn,
            [
                event_row(
                    EventType.AGENT_REGISTERED,
                    "agent",
                    agent_id,
                    None,
                    {"name": name, "kind": str(kind)},
                    now,
                )
            ],
        )
    return agent_id


def _running_count(agent_id: Any) -> Any:
    return (
        select(func.count()).where(tasks.c.agent_id == agent_id, RUNNING_ATTEMPTS).scalar_subquery()
    )


def heartbeat(
    db: Database, agent_id: uuid.UUID, running: Collection[uuid.UUID] | None = None
) -> str:
    """Record liveness; a stale or offline agent that beats again is alive again. ``running``,
    when given, names the tasks the agent runs right now: their attempts are stamped as
    reported, and from then on the sweep recovers an attempt of this agent that it stops
    naming (the agent lives, but no longer runs it). Returns the new status (busy while it
    runs attempts)."""
    now = utcnow()
    with db.connect() as conn:
        row = conn.execute(
            select(agents.c.status).where(agents.c.id == agent_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound(f"agent {agent_id} not found", {"agent_id": str(agent_id)})
        if running:
            conn.execute(
                update(tasks)
                .where(
                    tasks.c.id.in_(list(running)),
                    tasks.c.agent_id == agent_id,
                    tasks.c.status == TaskStatus.RUNNING,
                )
                .values(reported_at=now)
            )
        count = conn.execute(select(_running_count(agent_id))).scalar_one()
        status = AgentStatus.BUSY if count else AgentStatus.IDLE
        reports = {} if running is None else {"reports_running": True}
        conn.execute(
            update(agents)
            .where(agents.c.id == agent_id)
            .values(last_heartbeat=now, status=status, **reports)
        )
        if row.status not in LIVE_AGENTS:
            record(
                conn,
                [
                    event_row(
                        EventType.AGENT_REVIVED, "agent", agent_id, None, {"was": row.status}, now
                    )
                ],
            )
    return status


def go_offline(db: Database, agent_id: uuid.UUID) -> None:
    with db.connect() as conn:
        conn.execute(
            update(agents).where(agents.c.id == agent_id).values(status=AgentStatus.OFFLINE)
        )
        record(conn, [event_row(EventType.AGENT_OFFLINE, "agent", agent_id, None)])


@dataclass
class AgentView:
    agent: Any
    running: int

    @property
    def free_capacity(self) -> int:
        return max(0, self.agent.capacity - self.running)


def _views(conn: Connection, query: Any) -> list[AgentView]:
    query = query.add_columns(_running_count(agents.c.id).label("running"))
    return [AgentView(row, row.running) for row in conn.execute(query)]


def list_agents(
    db: Database, capability: str | None = None, status: str | None = None, kind: str | None = None
) -> list[AgentView]:
    query = select(agents).order_by(agents.c.registered_at.desc())
    if status is not None:
        query = query.where(agents.c.status == status)
    if kind is not None:
        query = query.where(agents.c.kind == kind)
    with db.connect() as conn:
        views = _views(conn, query)
    if capability is not None:
        views = [v for v in views if capability.lower() in v.agent.capabilities]
    return views


def get_agent(db: Database, agent_id: uuid.UUID) -> AgentView:
    with db.connect() as conn:
        views = _views(conn, select(agents).where(agents.c.id == agent_id))
    if not views:
        raise NotFound(f"agent {agent_id} not found", {"agent_id": str(agent_id)})
    return views[0]


def liveness(agent: Any, timeout: float) -> tuple[bool, float | None]:
    """Whether the agent is healthy (live and heartbeating) and its heartbeat's age."""
    last = agent.last_heartbeat
    age = (utcnow() - last).total_seconds() if last else None
    return agent.status in LIVE_AGENTS and age is not None and age <= timeout, age


def health(db: Database, agent_id: uuid.UUID, timeout: float) -> dict[str, Any]:
    view = get_agent(db, agent_id)
    healthy, age = liveness(view.agent, timeout)
    return {
        "agent_id": agent_id,
        "status": view.agent.status,
        "healthy": healthy,
        "last_heartbeat": view.agent.last_heartbeat,
        "seconds_since_heartbeat": age,
        "heartbeat_timeout": timeout,
        "running_tasks": view.running,
        "capacity": view.agent.capacity,
        "free_capacity": view.free_capacity,
    }


def _overdue(timeout: float, now: datetime) -> Any:
    cutoff = now - timedelta(seconds=timeout)
    return func.coalesce(agents.c.last_heartbeat, agents.c.registered_at) < cutoff


def stale(db: Database, timeout: float) -> list[AgentView]:
    """Agents marked stale, and live ones already overdue that the next sweep will mark."""
    query = select(agents).where(
        or_(
            agents.c.status == AgentStatus.STALE,
            and_(agents.c.status.in_(LIVE_AGENTS), _overdue(timeout, utcnow())),
        )
    )
    with db.connect() as conn:
        return _views(conn, query.order_by(agents.c.last_heartbeat))


def best_fit(db: Database, capabilities: Sequence[str]) -> AgentView | None:
    """Capability coverage first, then idle before busy, healthy before stale, then free
    capacity. Offline agents and agents covering none of the capabilities never win."""
    wanted = set(normalize_capabilities(capabilities))
    candidates = [
        v
        for v in list_agents(db)
        if v.agent.status != AgentStatus.OFFLINE and wanted & set(v.agent.capabilities)
    ]
    if not candidates:
        return None

    def rank(v: AgentView) -> tuple[int, int, int, int]:
        return (
            len(wanted & set(v.agent.capabilities)),
            v.agent.status == AgentStatus.IDLE,
            v.agent.status in LIVE_AGENTS,
            v.free_capacity,
        )

    return max(candidates, key=rank)


def statistics(db: Database) -> dict[str, Any]:
    with db.connect() as conn:
        by = conn.execute(
            select(
                agents.c.kind, agents.c.status, func.count(), func.sum(agents.c.capacity)
            ).group_by(agents.c.kind, agents.c.status)
        ).all()
        running = conn.execute(
            select(func.count()).where(RUNNING_ATTEMPTS, tasks.c.agent_id.is_not(None))
        ).scalar_one()
    live_capacity = sum(cap or 0 for _, status, _, cap in by if status in LIVE_AGENTS)
    return {
        "agents": sum(n for _, _, n, _ in by),
        "by_status": _sum_by(by, 1),
        "by_kind": _sum_by(by, 0),
        "live_capacity": live_capacity,
        "running_tasks": running,
        "utilisation": round(running / live_capacity, 4) if live_capacity else 0.0,
    }


def _sum_by(rows: Sequence[Any], index: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row[index]] = out.get(row[index], 0) + row[2]
    return out


def _unreported(timeout: float, now: datetime) -> Any:
    """Running attempts of a live agent that reports what it runs, started and last reported
    more than ``timeout`` ago: the agent no longer runs them (a pool child lost one)."""
    cutoff = now - timedelta(seconds=timeout)
    return and_(
        agents.c.status.in_(LIVE_AGENTS),
        agents.c.reports_running,
        tasks.c.started_at < cutoff,
        or_(tasks.c.reported_at.is_(None), tasks.c.reported_at < cutoff),
    )


def sweep_stale(db: Database, dispatcher: Dispatcher, policy: RetryPolicy, timeout: float) -> int:
    """Mark agents stale after ``timeout`` seconds without a heartbeat (one that never beat
    counts from its registration) and recover the running attempts of every agent that is not
    alive, and those a live agent stopped reporting for ``timeout``: each is failed as
    ``lost`` and retried under a new lease. Heartbeats cannot land while PostgreSQL is down,
    so neither is judged until a whole timeout has passed since it started."""
    now = utcnow()
    with db.connect() as conn, sweep_lock(conn, "agents") as got:
        if not got:
            return 0
        judged = _database_up_for(conn) >= timeout
        marked = (
            list(
                conn.execute(
                    update(agents)
                    .where(agents.c.status.in_(LIVE_AGENTS), _overdue(timeout, now))
                    .values(status=AgentStatus.STALE)
                    .returning(agents.c.id)
                ).scalars()
            )
            if judged
            else []
        )
        record(conn, (event_row(EventType.AGENT_STALE, "agent", a, None, {}, now) for a in marked))
        gone = not_(agents.c.status.in_(LIVE_AGENTS))
        orphans = conn.execute(
            select(tasks.c.id, tasks.c.attempt, tasks.c.agent_id, agents.c.status)
            .join(agents, agents.c.id == tasks.c.agent_id)
            .where(RUNNING_ATTEMPTS, or_(gone, _unreported(timeout, now)) if judged else gone)
        ).all()
    for task in orphans:
        why = (
            "no longer reports running it" if task.status in LIVE_AGENTS else "stopped heartbeating"
        )
        error = TaskError(ErrorCategory.LOST, "AgentLost", f"agent {task.agent_id} {why}")
        log.warning(
            "attempt_lost", task_id=str(task.id), attempt=task.attempt, agent_id=str(task.agent_id)
        )
        publish(db, dispatcher, fail_attempt(db, policy, task.id, task.attempt, error)[1])
    return len(orphans)


def _database_up_for(conn: Connection) -> float:
    """Seconds since PostgreSQL started. Heartbeats could not land while it was down, so
    nobody is judged stale until a whole timeout has passed since the restart."""
    if conn.dialect.name != "postgresql":
        return float("inf")
    uptime = text("SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())")
    return float(conn.execute(uptime).scalar_one())


# -- external agents: pull protocol ---------------------------------------------------------


def claim_next(db: Database, agent_id: uuid.UUID) -> TaskContext | None:
    """The next queued task for this agent, by priority then age, under a fresh lease; locked
    with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never get the same task."""
    lease = uuid.uuid4()
    row = claims.claim_next(db, {"agent": agent_id, "lease": lease, "now": utcnow()})
    _check_agent(agent_id, row.agent_status)
    if row.id is None:
        return None
    ctx = TaskContext(
        task_id=row.id,
        ticket_id=row.ticket_id,
        key=row.key,
        task_type=row.task_type,
        attempt=row.attempt,
        payload=row.payload,
        timeout_seconds=row.timeout_seconds,
        depends_on=row.dependencies.get("depends_on", []),
        agent_id=agent_id,
        resources=list(row.resources or []),
        _db=db,
        _lease=lease,
    )
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


def complete(
    db: Database, dispatcher: Dispatcher, task_id: uuid.UUID, lease: uuid.UUID, result: Any
) -> None:
    """An external agent reports success under its lease; a result PostgreSQL cannot store is
    refused, and the agent may report again."""
    reason = unstorable(result)
    if reason is not None:
        raise Invalid(f"the result cannot be stored: {reason}", {"task_id": str(task_id)})
    row = _attempt_of(db, task_id)
    landed, ready = succeed(db, Claim(task_id, row.ticket_id, row.attempt, lease), result)
    if not landed:
        raise _superseded(task_id)
    publish(db, dispatcher, ready)
    locks.release(db, dispatcher, task_id)


def fail(
    db: Database,
    dispatcher: Dispatcher,
    policy: RetryPolicy,
    task_id: uuid.UUID,
    lease: uuid.UUID,
    error: TaskError,
) -> None:
    """An external agent reports failure under its lease; retried like any other."""
    row = _attempt_of(db, task_id)
    counted, retry = fail_attempt(db, policy, task_id, row.attempt, error, lease=lease)
    if not counted:
        raise _superseded(task_id)
    publish(db, dispatcher, retry)
    locks.release(db, dispatcher, task_id)
