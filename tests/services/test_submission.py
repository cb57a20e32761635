"""Submitting a ticket: its graph is checked phase by phase before anything is written, the
initial phase's tasks are created (the ready ones published after the commit), later phases'
tasks wait in the plan, and an Idempotency-Key replays the ticket it made for its token.

Two requests racing for one key (the unique index deciding) need concurrent writers: the
integration suite runs that on PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from omoi.persistence.statements import tickets
from omoi.services.errors import Conflict, Invalid
from omoi.services.phases import NewTask
from omoi.services.submission import fingerprint
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import kinds, submit, tasks_of, ticket_of
from tests.support.units import Recorded


def ticket_count(uow: UnitOfWork) -> int:
    with uow.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tickets)).scalar_one())


def test_roots_are_queued_and_published_dependents_wait(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    made = submit(
        uow,
        NewTask("a", "ok"),
        NewTask("b", "ok", depends_on=["a"]),
        NewTask("c", "ok", depends_on=["a", "b", "a"]),
        default_max_retries=5,
    )
    rows = tasks_of(uow.db, made.ticket_id)
    assert made.created and [(k, s) for _, k, s in made.tasks] == [
        ("a", "queued"),
        ("b", "pending"),
        ("c", "pending"),
    ]
    assert [(r.status, r.attempt, r.unmet_dependencies) for r in rows.values()] == [
        ("queued", 1, 0),
        ("pending", 0, 1),
        ("pending", 0, 2),  # a dependency named twice counts once
    ]
    assert {r.max_retries for r in rows.values()} == {5}
    assert [(d.task_id, d.attempt) for d in dispatcher.published] == [(rows["a"].id, 1)]
    ticket = ticket_of(uow.db, made.ticket_id)
    assert (ticket.phase, ticket.status, ticket.open_tasks) == ("PHASE_RUN", "active", 3)
    assert kinds(uow.db, made.ticket_id) == ["ticket.created"]


def test_tasks_go_to_the_phase_they_name_and_wait_in_the_plan_until_it_begins(
    uow: UnitOfWork,
) -> None:
    made = submit(
        uow,
        NewTask("extra", "ok"),
        NewTask("later", "ok", phase="PHASE_IMPLEMENTATION"),
        workflow="gated",
    )
    ticket = ticket_of(uow.db, made.ticket_id)
    assert ticket.phase == "PHASE_REQUIREMENTS"  # the workflow's first phase
    assert {r.key: r.phase for r in tasks_of(uow.db, made.ticket_id).values()} == {
        "draft": "PHASE_REQUIREMENTS",  # the phase's template
        "extra": "PHASE_REQUIREMENTS",
    }
    assert [t["key"] for t in ticket.plan["PHASE_IMPLEMENTATION"]] == ["later"]


@pytest.mark.parametrize("phase", ["PHASE_DONE", "PHASE_DEPLOYMENT"])
def test_a_task_for_a_phase_that_does_no_work_in_the_workflow_is_refused(
    uow: UnitOfWork, phase: str
) -> None:
    with pytest.raises(Invalid, match=f"{phase} is not a working phase of gated"):
        submit(uow, NewTask("x", "ok", phase=phase), workflow="gated")
    assert ticket_count(uow) == 0


def test_a_cycle_is_refused_naming_it_and_nothing_is_written(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    with pytest.raises(Invalid) as refused:
        submit(
            uow,
            NewTask("a", "ok", depends_on=["c"]),
            NewTask("b", "ok", depends_on=["a"]),
            NewTask("c", "ok", depends_on=["b"]),
        )
    assert "dependency cycle: a -> c -> b -> a" in refused.value.message
    assert refused.value.details["cycle"] == ["a", "c", "b", "a"]
    assert (ticket_count(uow), dispatcher.calls) == (0, [])


def test_a_later_phases_graph_is_checked_at_submission_too(uow: UnitOfWork) -> None:
    with pytest.raises(Invalid) as refused:
        submit(
            uow,
            NewTask("x", "ok", depends_on=["ghost"], phase="PHASE_TESTING"),
            workflow="gated",
        )
    assert refused.value.details["phase"] == "PHASE_TESTING"
    assert refused.value.details["missing"] == {"x": ["ghost"]}
    assert ticket_count(uow) == 0


def test_a_sync_point_needs_between_one_and_all_of_its_dependencies(uow: UnitOfWork) -> None:
    with pytest.raises(Invalid, match="sync point 's' needs between 1 and 2"):
        submit(
            uow,
            NewTask("a", "ok"),
            NewTask("b", "ok"),
            NewTask("s", "ok", depends_on=["a", "b"], sync={"need": 3}),
        )


def test_the_task_limit_refuses_before_anything_is_written(uow: UnitOfWork) -> None:
    with pytest.raises(Invalid, match="at most 2 tasks") as refused:
        submit(uow, *(NewTask(f"t{n}", "ok") for n in range(3)), max_tasks=2)
    assert refused.value.details == {"tasks": 3}
    assert ticket_count(uow) == 0
    assert submit(uow, NewTask("a", "ok"), NewTask("b", "ok"), max_tasks=2).created


def test_an_idempotency_key_replays_its_tokens_ticket(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    token = uuid.uuid4()
    body = {"title": "t"}
    first = submit(
        uow,
        NewTask("a", "ok"),
        submitter_token_id=token,
        idempotency_key="k",
        request_fingerprint=fingerprint(body),
    )
    again = submit(
        uow,
        NewTask("a", "ok"),
        submitter_token_id=token,
        idempotency_key="k",
        request_fingerprint=fingerprint(dict(body)),
    )
    assert (again.ticket_id, again.created, again.tasks) == (first.ticket_id, False, [])
    assert ticket_count(uow) == 1
    assert len(dispatcher.published) == 1  # the replay published nothing


def test_the_same_key_from_another_token_or_no_token_is_another_ticket(uow: UnitOfWork) -> None:
    made = {
        submit(uow, NewTask("a", "ok"), submitter_token_id=owner, idempotency_key="k").ticket_id
        for owner in (uuid.uuid4(), uuid.uuid4(), None)
    }
    assert len(made) == ticket_count(uow) == 3


def test_a_key_reused_for_another_request_is_a_conflict_naming_its_ticket(
    uow: UnitOfWork,
) -> None:
    token = uuid.uuid4()
    first = submit(
        uow,
        NewTask("a", "ok"),
        submitter_token_id=token,
        idempotency_key="k",
        request_fingerprint=fingerprint({"title": "one"}),
    )
    with pytest.raises(Conflict, match="already used with a different request") as refused:
        submit(
            uow,
            NewTask("a", "ok"),
            submitter_token_id=token,
            idempotency_key="k",
            request_fingerprint=fingerprint({"title": "two"}),
        )
    assert refused.value.details == {"idempotency_key": "k", "ticket_id": str(first.ticket_id)}
    assert ticket_count(uow) == 1


def test_a_ticket_without_tasks_is_judged_at_once(uow: UnitOfWork, dispatcher: Recorded) -> None:
    made = submit(uow)
    ticket = ticket_of(uow.db, made.ticket_id)
    assert (ticket.phase, ticket.status, ticket.open_tasks) == ("PHASE_DONE", "done", 0)
    assert kinds(uow.db, made.ticket_id) == [
        "ticket.created",
        "gate.passed",
        "ticket.phase_changed",
        "ticket.completed",
    ]
    assert dispatcher.published == []
