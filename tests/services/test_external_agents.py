"""External agents' pull protocol: the next task an agent may take (its capabilities cover
the task's; marked external, or on a route no live Celery worker serves), by priority then
age, under a fresh lease; then its result or failure, accepted only under that lease.

Concurrent claimers never taking one task (``FOR UPDATE SKIP LOCKED``, the one-statement
claim) is PostgreSQL's: the integration suite runs it there."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import pytest

from omoi.domain.enums import AgentKind, ErrorCategory, Priority
from omoi.services import agents, external_agents, locks
from omoi.services.errors import Conflict, Invalid, NotFound
from omoi.services.failures import RetryPolicy
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import agent_of, error, submit, task_of, tasks_of
from tests.support.procs import wait_for

POLICY = RetryPolicy()


def agent(
    uow: UnitOfWork, capabilities: Sequence[str], kind: AgentKind = AgentKind.EXTERNAL
) -> uuid.UUID:
    return agents.register(uow.db, name="x", kind=kind, capabilities=capabilities)


def claimed_keys(uow: UnitOfWork, agent_id: uuid.UUID) -> list[str]:
    """Every key the agent claims, in order, until nothing is left for it."""
    keys = []
    while (ctx := external_agents.claim_next(uow, agent_id)) is not None:
        keys.append(ctx.key)
    return keys


def test_an_agent_takes_what_its_capabilities_cover_by_priority_then_age(
    uow: UnitOfWork,
) -> None:
    submit(
        uow,
        NewTask("old-low", "scan", capabilities=["scan"], priority=Priority.LOW),
        NewTask("high", "scan", capabilities=["scan"], priority=Priority.HIGH),
        NewTask("new-low", "scan", capabilities=["scan"], priority=Priority.LOW),
        NewTask("gpu", "scan", capabilities=["scan", "gpu"]),
        NewTask("anything", "scan"),
    )
    assert claimed_keys(uow, agent(uow, ["scan"])) == ["high", "anything", "old-low", "new-low"]


def test_what_a_celery_worker_serves_is_left_to_it_unless_marked_external(
    uow: UnitOfWork,
) -> None:
    agent(uow, ["gpu"], kind=AgentKind.CELERY)
    submit(
        uow,
        NewTask("celerys", "render", capabilities=["gpu"]),
        NewTask("default", "render"),  # every Celery worker serves the default queue
        NewTask("ours", "render", capabilities=["gpu"], external=True),
    )
    assert claimed_keys(uow, agent(uow, ["gpu"])) == ["ours"]


def test_a_claim_runs_the_task_under_a_fresh_lease_and_makes_the_agent_busy(
    uow: UnitOfWork,
) -> None:
    made = submit(uow, NewTask("a", "scan", payload={"n": 1}))
    agent_id = agent(uow, [])
    ctx = external_agents.claim_next(uow, agent_id)
    assert ctx is not None
    row = task_of(uow.db, ctx.task_id)
    assert (row.status, row.agent_id, row.lease_token) == ("running", agent_id, ctx.lease)
    assert (ctx.ticket_id, ctx.payload, ctx.ticket_context["budget"]) == (
        made.ticket_id,
        {"n": 1},
        4000,
    )
    assert agent_of(uow.db, agent_id).status == "busy"


def test_an_unknown_or_offline_agent_claims_nothing(uow: UnitOfWork) -> None:
    made = submit(uow, NewTask("a", "scan"))
    with pytest.raises(NotFound):
        external_agents.claim_next(uow, uuid.uuid4())
    gone = agent(uow, [])
    agents.go_offline(uow.db, gone)
    with pytest.raises(Conflict, match="offline"):
        external_agents.claim_next(uow, gone)
    assert tasks_of(uow.db, made.ticket_id)["a"].status == "queued"


def test_a_result_lands_only_under_the_claims_lease(uow: UnitOfWork) -> None:
    submit(uow, NewTask("a", "scan"))
    ctx = external_agents.claim_next(uow, agent(uow, []))
    assert ctx is not None and ctx.lease is not None
    with pytest.raises(Conflict, match="lease no longer holds"):
        external_agents.complete(uow, ctx.task_id, uuid.uuid4(), "forged")
    with pytest.raises(Invalid, match="cannot be stored"):
        external_agents.complete(uow, ctx.task_id, ctx.lease, {"bad": "\x00"})
    assert task_of(uow.db, ctx.task_id).status == "running"  # it may report again
    external_agents.complete(uow, ctx.task_id, ctx.lease, {"found": 3})
    row = task_of(uow.db, ctx.task_id)
    assert (row.status, row.result) == ("succeeded", {"found": 3})
    with pytest.raises(Conflict):
        external_agents.complete(uow, ctx.task_id, ctx.lease, "twice")


def test_a_failure_under_the_lease_is_retried_like_any_other(uow: UnitOfWork) -> None:
    submit(uow, NewTask("a", "scan"))
    ctx = external_agents.claim_next(uow, agent(uow, []))
    assert ctx is not None and ctx.lease is not None
    with pytest.raises(Conflict):
        external_agents.fail(uow, POLICY, ctx.task_id, uuid.uuid4(), error())
    external_agents.fail(uow, POLICY, ctx.task_id, ctx.lease, error(ErrorCategory.TRANSIENT))
    row = task_of(uow.db, ctx.task_id)
    assert (row.status, row.attempt, row.retry_count) == ("retrying", 2, 1)
    with pytest.raises(NotFound):
        external_agents.fail(uow, POLICY, uuid.uuid4(), ctx.lease, error())


def test_a_claim_of_a_task_whose_lock_is_taken_parks_it(uow: UnitOfWork) -> None:
    submit(uow, *(NewTask(k, "scan", resources=["repo"]) for k in "ab"))
    agent_id = agent(uow, [])
    holder = external_agents.claim_next(uow, agent_id)
    assert holder is not None and holder.locks == {"repo": 1}
    assert external_agents.claim_next(uow, agent_id) is None  # b parked: nothing else to take
    assert [w.key for w in locks.waiting(uow.db)] == ["b"]
    assert holder.lease is not None
    external_agents.complete(uow, holder.task_id, holder.lease, None)  # releases and wakes b
    woken = external_agents.claim_next(uow, agent_id)
    assert woken is not None and (woken.key, woken.locks) == ("b", {"repo": 2})


def test_a_ring_sends_a_waiting_claim_to_look_again() -> None:
    """With a 300 s poll, only the ring can bring the claim back before the test's deadline."""
    bell = external_agents.Doorbell(listen=lambda wake: None, poll=300)
    ready: list[str] = []
    tries: list[int] = []
    found: list[object] = []

    def claim() -> list[object]:
        tries.append(1)
        return list(ready)

    waiter = threading.Thread(target=lambda: found.extend(bell.claim(claim, 60)), daemon=True)
    waiter.start()
    wait_for(lambda: bell.waiting == 1, what="the claim to wait")
    ready.append("task")
    bell.ring()
    waiter.join(10)
    assert not waiter.is_alive() and found == ["task"] and len(tries) == 2


def test_a_claim_with_nothing_to_take_returns_empty_once_its_wait_is_over() -> None:
    bell = external_agents.Doorbell(listen=lambda wake: None, poll=0.01)
    tries: list[int] = []
    assert bell.claim(lambda: tries.append(1) or [], 0.1) == []
    assert len(tries) >= 2  # looked again at each poll, not only at the start
    assert bell.waiting == 0


def test_a_batch_claim_takes_up_to_its_most(uow: UnitOfWork) -> None:
    agent_id = agent(uow, ["ext"])
    submit(uow, *(NewTask(f"t{i}", "scan", capabilities=["ext"], external=True) for i in range(3)))
    first = external_agents.claim_batch(uow, agent_id, 2)
    rest = external_agents.claim_batch(uow, agent_id, 5)
    assert ([c.key for c in first], [c.key for c in rest]) == (["t0", "t1"], ["t2"])
    assert len({c.lease for c in first + rest}) == 3
