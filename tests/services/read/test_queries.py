"""The API's read models: task counts and progress, pages by cursor, a task's attempts read
from its events, the tasks it blocks, and why a queued exec task waits."""

from __future__ import annotations

import uuid

import pytest

from omoi.domain.enums import AgentKind, ErrorCategory
from omoi.persistence.types import utcnow
from omoi.services import agents, phases
from omoi.services.errors import NotFound
from omoi.services.phases import NewTask
from omoi.services.read import queries
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import change, fail, finish, start, submit, tasks_of


def test_a_tickets_counts_and_progress_count_its_ended_tasks(uow: UnitOfWork) -> None:
    made = submit(uow, NewTask("a", "ok"), NewTask("b", "ok", depends_on=["a"]), NewTask("c", "ok"))
    rows = tasks_of(uow.db, made.ticket_id)
    finish(uow, rows["a"].id)
    fail(uow, rows["c"].id)
    _, counts = queries.get_ticket(uow.db, made.ticket_id)
    assert counts == {"succeeded": 1, "queued": 1, "failed": 1}
    assert queries.progress(counts) == pytest.approx(2 / 3)
    assert queries.progress({}) == 1.0
    with pytest.raises(NotFound):
        queries.get_ticket(uow.db, uuid.uuid4())


def test_phase_progress_follows_the_phases_order(uow: UnitOfWork) -> None:
    made = submit(uow, workflow="gated")
    phases.move(uow, made.ticket_id, "PHASE_TESTING", "skip", "bob", True, None)
    assert [
        (p["phase"], p["task_counts"], p["progress"])
        for p in queries.phase_progress(uow.db, uow.workflows, made.ticket_id)
    ] == [
        ("PHASE_REQUIREMENTS", {"cancelled": 1}, 1.0),
        ("PHASE_TESTING", {"queued": 1}, 0.0),
    ]


def test_tickets_page_newest_first_and_filter(uow: UnitOfWork) -> None:
    made = [submit(uow, NewTask("a", "ok")).ticket_id for _ in range(3)]
    done = submit(uow).ticket_id  # no tasks: done at once
    first = queries.list_tickets(uow.db, limit=2)
    assert [t.id for t in first.items] == [done, made[2]]
    assert first.next_cursor == str(made[2])
    rest = queries.list_tickets(uow.db, limit=2, cursor=uuid.UUID(first.next_cursor))
    assert ([t.id for t in rest.items], rest.next_cursor) == ([made[1], made[0]], None)
    assert [t.id for t in queries.list_tickets(uow.db, status="done").items] == [done]


def test_tasks_page_oldest_first_and_filter_by_status(uow: UnitOfWork) -> None:
    made = submit(uow, *(NewTask(k, "ok") for k in "abc"))
    rows = tasks_of(uow.db, made.ticket_id)
    start(uow, rows["b"].id)
    page = queries.list_tasks(uow.db, ticket_id=made.ticket_id, limit=2)
    assert [t.key for t in page.items] == ["a", "b"] and page.next_cursor == str(rows["b"].id)
    running = queries.list_tasks(uow.db, status="running")
    assert [t.key for t in running.items] == ["b"]
    assert queries.task_briefs(uow.db, made.ticket_id) == [
        (rows["a"].id, "a", "queued"),
        (rows["b"].id, "b", "running"),
        (rows["c"].id, "c", "queued"),
    ]


def test_a_tasks_attempts_are_read_from_its_events(uow: UnitOfWork) -> None:
    made = submit(uow, NewTask("a", "ok"), NewTask("b", "ok", depends_on=["a"]))
    rows = tasks_of(uow.db, made.ticket_id)
    fail(uow, rows["a"].id, ErrorCategory.TRANSIENT)
    change(uow.db, rows["a"].id, next_attempt_at=utcnow())  # its wait is over
    fail(uow, rows["a"].id, ErrorCategory.INTERRUPTED)
    finish(uow, rows["a"].id, "done")
    task, blocks, timeline = queries.get_task(uow.db, rows["a"].id)
    assert (task.attempt, blocks) == (3, [rows["b"].id])
    got = [
        (a.attempt, a.outcome, (a.error or {}).get("category"))
        for a in queries.attempts_of(timeline)
    ]
    assert got == [
        (1, "retry_scheduled", "transient"),
        (2, "interrupted", "interrupted"),
        (3, "succeeded", None),
    ]
    assert all(a.started_at and a.ended_at for a in queries.attempts_of(timeline))


def test_a_queued_exec_task_says_which_worker_it_waits_for(uow: UnitOfWork) -> None:
    exec_types = {"shell"}
    made = submit(uow, NewTask("run", "shell", capabilities=["gpu"]), NewTask("other", "ok"))
    rows = tasks_of(uow.db, made.ticket_id)
    run, _, _ = queries.get_task(uow.db, rows["run"].id)
    other, _, _ = queries.get_task(uow.db, rows["other"].id)
    assert queries.worker_wait(uow.db, run, exec_types) == (
        "no live worker with capability 'gpu' has enabled task type 'shell'"
    )
    assert queries.worker_wait(uow.db, other, exec_types) is None
    agents.register(
        uow.db, name="w", kind=AgentKind.CELERY, capabilities=["gpu"], enabled_task_types=["shell"]
    )
    assert queries.worker_wait(uow.db, run, exec_types) is None


def test_a_tasks_holder_is_the_agent_that_claimed_it(uow: UnitOfWork) -> None:
    agent_id = agents.register(uow.db, name="x", kind=AgentKind.EXTERNAL, capabilities=[])
    rows = tasks_of(uow.db, submit(uow, NewTask("a", "ok")).ticket_id)
    assert queries.task_holder(uow.db, rows["a"].id) is None
    start(uow, rows["a"].id, agent_id=agent_id)
    assert queries.task_holder(uow.db, rows["a"].id) == agent_id
    with pytest.raises(NotFound):
        queries.task_holder(uow.db, uuid.uuid4())
