"""Read models of the fleet: each agent with what it runs, its liveness, the stale ones, the
best fit for a set of capabilities, and the fleet's statistics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from omoi.domain.enums import AgentStatus
from omoi.domain.routing import normalize_capabilities
from omoi.persistence import Agent, Database
from omoi.persistence.statements import LIVE_AGENTS, overdue, running_count, tasks
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.persistence.types import utcnow
from omoi.services.errors import NotFound

agents = Agent.__table__


@dataclass
class AgentView:
    agent: Any
    running: int

    @property
    def free_capacity(self) -> int:
        return max(0, self.agent.capacity - self.running)


def _views(conn: Connection, query: Any) -> list[AgentView]:
    query = query.add_columns(running_count(agents.c.id).label("running"))
    return [AgentView(row, row.running) for row in conn.execute(query)]


def quiet(since: datetime) -> Any:
    """An agent that is not alive and has not been heard from (a heartbeat, else its
    registration) since ``since``."""
    heard = func.coalesce(agents.c.last_heartbeat, agents.c.registered_at)
    return and_(agents.c.status.not_in(LIVE_AGENTS), heard < since)


def list_agents(
    db: Database,
    capability: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    heard_since: datetime | None = None,
) -> list[AgentView]:
    """Newest first; with ``heard_since``, without the agents ``quiet`` since then."""
    query = select(agents).order_by(agents.c.registered_at.desc())
    if heard_since is not None:
        query = query.where(~quiet(heard_since))
    if status is not None:
        query = query.where(agents.c.status == status)
    if kind is not None:
        query = query.where(agents.c.kind == kind)
    with db.connect() as conn:
        views = _views(conn, query)
    if capability is not None:
        views = [v for v in views if capability.lower() in v.agent.capabilities]
    return views


def count_quiet(db: Database, since: datetime) -> int:
    with db.connect() as conn:
        return conn.scalar(select(func.count()).select_from(agents).where(quiet(since))) or 0


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


def stale(db: Database, timeout: float) -> list[AgentView]:
    """Agents marked stale, and live ones already overdue that the next sweep will mark."""
    query = select(agents).where(
        or_(
            agents.c.status == AgentStatus.STALE,
            and_(agents.c.status.in_(LIVE_AGENTS), overdue(timeout, utcnow())),
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
