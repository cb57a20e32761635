"""What a handler sees of its attempt: the claim's fields, its dependencies' results and the
ticket's context read on first use, and writes (artifacts, splits, messages) that count only
while the attempt still holds its lease."""

from __future__ import annotations

import uuid
from typing import Any

from omoi.domain.enums import AgentKind
from omoi.services import agents, attempts, cancellation
from omoi.services.context import TaskContext
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import change, finish, submit, task_of, tasks_of
from tests.support.units import Recorded


def claimed(uow: UnitOfWork, task_id: uuid.UUID, agent_id: uuid.UUID | None = None) -> TaskContext:
    got = attempts.claim(uow, task_id, task_of(uow.db, task_id).attempt, agent_id=agent_id)
    assert got is not None
    return got[1]


def after_two(uow: UnitOfWork) -> dict[str, Any]:
    """a and b finished; c, depending on both, queued."""
    made = submit(
        uow,
        NewTask("a", "ok"),
        NewTask("b", "ok"),
        NewTask("c", "ok", depends_on=["a", "b"], payload={"go": True}, resources=["r"]),
    )
    rows = tasks_of(uow.db, made.ticket_id)
    finish(uow, rows["a"].id, {"from": "a"})
    finish(uow, rows["b"].id, ["b"])
    return rows


def test_a_claimed_context_carries_the_claim_and_reads_dependencies_once(
    uow: UnitOfWork,
) -> None:
    rows = after_two(uow)
    ctx = claimed(uow, rows["c"].id)
    assert (ctx.key, ctx.task_type, ctx.attempt, ctx.payload, ctx.resources) == (
        "c",
        "ok",
        1,
        {"go": True},
        ["r"],
    )
    assert ctx.idempotency_key == f"omoi-task-{rows['c'].id}"
    assert ctx.dependency_results == {"a": {"from": "a"}, "b": ["b"]}
    assert ctx.dependency_finished["a"] == task_of(uow.db, rows["a"].id).finished_at
    change(uow.db, rows["a"].id, result={"changed": True})
    assert ctx.dependency_results["a"] == {"from": "a"}  # read on first use, then kept
    assert ctx.ticket_context["budget"] == 4000


def test_a_handler_learns_when_its_attempt_no_longer_holds_the_task(uow: UnitOfWork) -> None:
    rows = after_two(uow)
    ctx = claimed(uow, rows["c"].id)
    assert not ctx.should_cancel()
    assert ctx.emit_artifact("report", {"ok": True})
    cancellation.cancel_task(uow, ctx.task_id, "stop")
    assert ctx.should_cancel()
    assert not ctx.emit_artifact("report", {"ok": True})


def test_a_split_from_the_context_publishes_its_ready_subtasks(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    rows = after_two(uow)
    ctx = claimed(uow, rows["c"].id)
    ids = ctx.split([{"key": "x", "task_type": "ok"}, {"key": "y", "task_type": "ok"}])
    added = tasks_of(uow.db, ctx.ticket_id)
    assert ids == [str(added["c/x"].id), str(added["c/y"].id)]
    assert [str(d.task_id) for d in dispatcher.published[-2:]] == ids


def test_messages_go_as_the_attempts_agent_about_its_task(uow: UnitOfWork) -> None:
    me = agents.register(uow.db, name="me", kind=AgentKind.EXTERNAL, capabilities=[])
    you = agents.register(uow.db, name="you", kind=AgentKind.EXTERNAL, capabilities=[])
    rows = after_two(uow)
    ctx = claimed(uow, rows["c"].id, agent_id=me)
    ctx.send_message({"hi": 1}, to_agent=you)
    theirs = claimed(uow, tasks_of(uow.db, submit(uow, NewTask("d", "ok")).ticket_id)["d"].id, you)
    (message,) = theirs.inbox()
    assert (message.from_agent, message.task_id, message.content) == (me, ctx.task_id, {"hi": 1})
    assert ctx.inbox() == []


def test_a_context_made_by_hand_reads_and_writes_nothing() -> None:
    ctx = TaskContext(uuid.uuid4(), uuid.uuid4(), "k", "ok", 1, {}, None, depends_on=["x"])
    assert (ctx.dependency_results, ctx.ticket_context, ctx.inbox()) == ({}, {}, [])
    assert not ctx.emit_artifact("report", {}) and not ctx.should_cancel()
