"""The fleet's read models: agents with what they run, filtered; their health; the stale
ones; the best fit for a set of capabilities; the fleet's statistics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import update

from omoi.domain.enums import AgentKind
from omoi.persistence.statements import agents
from omoi.persistence.types import utcnow
from omoi.services import agents as fleet
from omoi.services.errors import NotFound
from omoi.services.phases import NewTask
from omoi.services.read import agents as views
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import start, submit, tasks_of


def agent(
    uow: UnitOfWork,
    name: str,
    capabilities: Sequence[str],
    capacity: int = 1,
    kind: AgentKind = AgentKind.CELERY,
) -> uuid.UUID:
    return fleet.register(
        uow.db, name=name, kind=kind, capabilities=capabilities, capacity=capacity
    )


def busy(uow: UnitOfWork, agent_id: uuid.UUID) -> None:
    """The agent runs one attempt."""
    made = submit(uow, NewTask("a", "ok"))
    start(uow, tasks_of(uow.db, made.ticket_id)["a"].id, agent_id=agent_id)
    fleet.heartbeat(uow.db, agent_id)


def silent(uow: UnitOfWork, agent_id: uuid.UUID, seconds: float) -> None:
    with uow.db.connect() as conn:
        conn.execute(
            update(agents)
            .where(agents.c.id == agent_id)
            .values(last_heartbeat=utcnow() - timedelta(seconds=seconds))
        )


def test_agents_list_newest_first_with_what_they_run_and_filter(uow: UnitOfWork) -> None:
    first = agent(uow, "first", ["GPU"], capacity=3)
    second = agent(uow, "second", ["cpu"], kind=AgentKind.EXTERNAL)
    busy(uow, first)
    assert [v.agent.id for v in views.list_agents(uow.db)] == [second, first]
    (gpu,) = views.list_agents(uow.db, capability="Gpu")
    assert (gpu.agent.id, gpu.running, gpu.free_capacity) == (first, 1, 2)
    assert [v.agent.id for v in views.list_agents(uow.db, kind="external")] == [second]
    assert [v.agent.id for v in views.list_agents(uow.db, status="busy")] == [first]
    with pytest.raises(NotFound):
        views.get_agent(uow.db, uuid.uuid4())


def test_health_and_staleness_follow_the_heartbeat(uow: UnitOfWork) -> None:
    fresh, quiet = agent(uow, "fresh", []), agent(uow, "quiet", [])
    silent(uow, quiet, 30)
    assert views.health(uow.db, fresh, timeout=10)["healthy"]
    report = views.health(uow.db, quiet, timeout=10)
    assert not report["healthy"] and report["seconds_since_heartbeat"] >= 30
    assert [v.agent.id for v in views.stale(uow.db, timeout=10)] == [quiet]  # overdue already


def test_the_best_fit_covers_most_then_is_idle_then_has_room(uow: UnitOfWork) -> None:
    narrow = agent(uow, "narrow", ["py"], capacity=8)
    wide_busy = agent(uow, "wide-busy", ["py", "db"], capacity=8)
    wide_idle = agent(uow, "wide-idle", ["py", "db"], capacity=1)
    gone = agent(uow, "gone", ["py", "db", "ui"])
    fleet.go_offline(uow.db, gone)
    busy(uow, wide_busy)
    best = views.best_fit(uow.db, ["PY", "db", "ui"])
    assert best is not None and best.agent.id == wide_idle
    fit = views.best_fit(uow.db, ["py"])
    assert fit is not None and fit.agent.id == narrow  # as idle as wide-idle, with more room
    assert views.best_fit(uow.db, ["rust"]) is None


def test_statistics_count_the_fleet_and_its_utilisation(uow: UnitOfWork) -> None:
    worker = agent(uow, "w", [], capacity=3)
    agent(uow, "x", [], capacity=2, kind=AgentKind.EXTERNAL)
    fleet.go_offline(uow.db, agent(uow, "off", [], capacity=10))
    busy(uow, worker)
    stats = views.statistics(uow.db)
    assert (stats["agents"], stats["live_capacity"], stats["running_tasks"]) == (3, 5, 1)
    assert stats["by_status"] == {"busy": 1, "idle": 1, "offline": 1}
    assert stats["by_kind"] == {"celery": 2, "external": 1}
    assert stats["utilisation"] == 0.2
