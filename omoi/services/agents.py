"""Agents: who is alive, what they can do, and how their work is recovered when they die.

Celery workers register themselves when they start and heartbeat from their main process;
external agents do the same over HTTP and pull tasks (``omoi/services/external_agents.py``).
An agent that misses heartbeats for ``timeout`` seconds is stale, and its running attempts
are recovered as ``lost``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, not_, or_, select, text, update

from omoi.domain.enums import AgentKind, AgentStatus, ErrorCategory, TaskStatus
from omoi.domain.errors import TaskError
from omoi.domain.events import EventType
from omoi.domain.ids import new_id
from omoi.domain.routing import normalize_capabilities
from omoi.persistence import Agent, Database
from omoi.persistence.statements import (
    LIVE_AGENTS,
    event_row,
    overdue,
    record,
    running_count,
    sweep_lock,
    tasks,
)
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.persistence.types import utcnow
from omoi.services.errors import NotFound
from omoi.services.failures import RetryPolicy, fail_attempt
from omoi.services.unit_of_work import UnitOfWork

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
        count = conn.execute(select(running_count(agent_id))).scalar_one()
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


def sweep_stale(uow: UnitOfWork, policy: RetryPolicy, timeout: float) -> int:
    """Mark agents stale after ``timeout`` seconds without a heartbeat (one that never beat
    counts from its registration) and recover the running attempts of every agent that is not
    alive, and those a live agent stopped reporting for ``timeout``: each is failed as
    ``lost`` and retried under a new lease. Heartbeats cannot land while PostgreSQL is down,
    so neither is judged until a whole timeout has passed since it started."""
    now = utcnow()
    with uow.db.connect() as conn, sweep_lock(conn, "agents") as got:
        if not got:
            return 0
        judged = _database_up_for(conn) >= timeout
        marked = (
            list(
                conn.execute(
                    update(agents)
                    .where(agents.c.status.in_(LIVE_AGENTS), overdue(timeout, now))
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
        fail_attempt(uow, policy, task.id, task.attempt, error)
    return len(orphans)


def _database_up_for(conn: Connection) -> float:
    """Seconds since PostgreSQL started. Heartbeats could not land while it was down, so
    nobody is judged stale until a whole timeout has passed since the restart."""
    if conn.dialect.name != "postgresql":
        return float("inf")
    uptime = text("SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())")
    return float(conn.execute(uptime).scalar_one())
