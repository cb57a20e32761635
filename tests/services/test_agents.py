"""Agents' liveness: registration, heartbeats (busy while running attempts, alive again after
going stale), and the sweep that marks silent agents stale and recovers their attempts as
lost, or the attempts a live agent stopped reporting.

The sweep's patience after a PostgreSQL restart (nobody judged until a whole timeout has
passed since the server started) reads the server's start time: the integration and fault
suites cover it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from omoi.domain.enums import AgentKind
from omoi.persistence.types import utcnow
from omoi.services import agents
from omoi.services.errors import NotFound
from omoi.services.failures import RetryPolicy
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import agent_of, change, kinds, start, submit, task_of, tasks_of
from tests.support.units import Recorded

POLICY = RetryPolicy()


def worker(uow: UnitOfWork, name: str = "w") -> uuid.UUID:
    return agents.register(
        uow.db, name=name, kind=AgentKind.CELERY, capabilities=["GPU", "gpu"], capacity=2
    )


def silent_for(uow: UnitOfWork, agent_id: uuid.UUID, seconds: float) -> None:
    """The agent's last heartbeat was ``seconds`` ago."""
    with uow.db.connect() as conn:
        conn.execute(
            update(agents.agents)
            .where(agents.agents.c.id == agent_id)
            .values(last_heartbeat=utcnow() - timedelta(seconds=seconds))
        )


def status_of(uow: UnitOfWork, agent_id: uuid.UUID) -> str:
    return str(agent_of(uow.db, agent_id).status)


def running_on(uow: UnitOfWork, agent_id: uuid.UUID, *keys: str) -> dict[str, uuid.UUID]:
    made = submit(uow, *(NewTask(k, "ok") for k in keys))
    rows = tasks_of(uow.db, made.ticket_id)
    for row in rows.values():
        start(uow, row.id, agent_id=agent_id)
    return {k: r.id for k, r in rows.items()}


def test_a_registered_agent_is_idle_with_its_capabilities_normalised(uow: UnitOfWork) -> None:
    agent_id = worker(uow)
    row = agent_of(uow.db, agent_id)
    assert (row.status, row.capabilities, row.capacity) == ("idle", ["gpu"], 2)
    assert kinds(uow.db, agent_id) == ["agent.registered"]


def test_a_heartbeat_says_busy_while_the_agent_runs_attempts(uow: UnitOfWork) -> None:
    agent_id = worker(uow)
    assert agents.heartbeat(uow.db, agent_id) == "idle"
    running_on(uow, agent_id, "a")
    assert agents.heartbeat(uow.db, agent_id) == "busy"
    with pytest.raises(NotFound):
        agents.heartbeat(uow.db, uuid.uuid4())


def test_a_stale_or_offline_agent_that_beats_again_is_alive_again(uow: UnitOfWork) -> None:
    agent_id = worker(uow)
    agents.go_offline(uow.db, agent_id)
    assert status_of(uow, agent_id) == "offline"
    assert agents.heartbeat(uow.db, agent_id) == "idle"
    assert kinds(uow.db, agent_id)[-2:] == ["agent.offline", "agent.revived"]


def test_a_silent_agent_goes_stale_and_its_attempts_are_recovered_as_lost(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    quiet, chatty = worker(uow, "quiet"), worker(uow, "chatty")
    mine = running_on(uow, quiet, "a")["a"]
    theirs = running_on(uow, chatty, "b")["b"]
    silent_for(uow, quiet, 10)
    assert agents.sweep_stale(uow, POLICY, timeout=4) == 1
    assert (status_of(uow, quiet), status_of(uow, chatty)) == ("stale", "idle")
    lost = task_of(uow.db, mine)
    assert (lost.status, lost.attempt, lost.error["category"]) == ("retrying", 2, "lost")
    assert "stopped heartbeating" in lost.error["message"]
    assert dispatcher.published[-1].task_id == mine
    assert task_of(uow.db, theirs).status == "running"
    assert agents.sweep_stale(uow, POLICY, timeout=4) == 0


def test_an_attempt_a_live_agent_stops_reporting_is_lost(uow: UnitOfWork) -> None:
    agent_id = worker(uow)
    tasks = running_on(uow, agent_id, "kept", "dropped")
    agents.heartbeat(uow.db, agent_id, running=list(tasks.values()))
    assert agents.sweep_stale(uow, POLICY, timeout=4) == 0
    long_ago = utcnow() - timedelta(seconds=10)
    for task_id in tasks.values():
        change(uow.db, task_id, started_at=long_ago, reported_at=long_ago)
    agents.heartbeat(uow.db, agent_id, running=[tasks["kept"]])
    assert agents.sweep_stale(uow, POLICY, timeout=4) == 1
    dropped = task_of(uow.db, tasks["dropped"])
    assert (dropped.status, dropped.error["category"]) == ("retrying", "lost")
    assert "no longer reports running it" in dropped.error["message"]
    assert task_of(uow.db, tasks["kept"]).status == "running"
    assert status_of(uow, agent_id) == "busy"


def test_an_agent_that_never_reports_what_it_runs_keeps_its_attempts(uow: UnitOfWork) -> None:
    agent_id = worker(uow)
    task_id = running_on(uow, agent_id, "a")["a"]
    change(uow.db, task_id, started_at=utcnow() - timedelta(seconds=10))
    agents.heartbeat(uow.db, agent_id)
    assert agents.sweep_stale(uow, POLICY, timeout=4) == 0
    assert task_of(uow.db, task_id).status == "running"
