"""A ticket's walk through its workflow, on the test workflow ``gated``
(tests/support/workflows/gated.yaml): REQUIREMENTS (task ``draft``; gate: a ``spec`` artifact
of 20 characters or more with a ``scope`` section) → DESIGN (``look``; gate: an approval) →
IMPLEMENTATION (``build``) → TESTING (``check``; gate: an approval) → DONE, and TESTING may go
back to IMPLEMENTATION.

Two judges racing for one ticket (its row lock deciding) need concurrent writers: the
integration suite runs that on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from omoi.domain.enums import AgentKind
from omoi.persistence.statements import tickets
from omoi.services import agents, phases
from omoi.services.errors import Conflict, Forbidden, Invalid
from omoi.services.phases import approvals, artifacts, gate_results, history
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import change, finish, kinds, start, submit, tasks_of, ticket_of
from tests.support.units import Recorded

SPEC = "## Scope\nEverything the ticket asks for."


def gated(uow: UnitOfWork) -> uuid.UUID:
    return submit(uow, workflow="gated").ticket_id


def finish_key(uow: UnitOfWork, ticket_id: uuid.UUID, key: str, result: Any = None) -> None:
    finish(uow, tasks_of(uow.db, ticket_id)[key].id, result)


def spec(uow: UnitOfWork, ticket_id: uuid.UUID, text: str = SPEC) -> int:
    return phases.add(uow, ticket_id, "spec", text, None, None)


def approve(uow: UnitOfWork, ticket_id: uuid.UUID) -> None:
    phases.give_approval(uow, ticket_id, "alice", "fine", None, None)


def move(
    uow: UnitOfWork, ticket_id: uuid.UUID, to: str, force: bool = False, note: str | None = None
) -> None:
    """Bob moves the ticket by hand."""
    phases.move(uow, ticket_id, to, "by hand", "bob", force, note)


def where(uow: UnitOfWork, ticket_id: uuid.UUID) -> tuple[str, str, str | None]:
    ticket = ticket_of(uow.db, ticket_id)
    return ticket.phase, ticket.status, ticket.previous_phase


def latest_gate(uow: UnitOfWork, ticket_id: uuid.UUID) -> Any:
    with uow.db.connect() as conn:
        return conn.execute(
            select(gate_results)
            .where(gate_results.c.ticket_id == ticket_id)
            .order_by(gate_results.c.id.desc())
        ).first()


def in_design(uow: UnitOfWork) -> uuid.UUID:
    ticket_id = gated(uow)
    spec(uow, ticket_id)
    finish_key(uow, ticket_id, "draft")
    return ticket_id


def test_a_passed_gate_enters_the_next_phase_with_the_last_one_in_the_context(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    ticket_id = gated(uow)
    spec(uow, ticket_id)  # the phase's work has not ended: nothing is judged yet
    assert latest_gate(uow, ticket_id) is None
    result = {"summary": "drafted", "decisions": ["use postgres"], "risks": ["scope creep"]}
    finish_key(uow, ticket_id, "draft", result)
    assert where(uow, ticket_id) == ("PHASE_DESIGN", "active", "PHASE_REQUIREMENTS")
    assert latest_gate(uow, ticket_id).passed
    context = ticket_of(uow.db, ticket_id).context
    assert context["phases"]["PHASE_REQUIREMENTS"] == {
        "tasks": {"draft": "drafted"},
        "artifacts": ["spec"],
        "decisions": ["use postgres"],
        "risks": ["scope creep"],
        "notes": [],
    }
    assert "- decision: use postgres" in context["summary"]
    look = tasks_of(uow.db, ticket_id)["look"]
    assert (look.phase, look.status) == ("PHASE_DESIGN", "queued")
    assert dispatcher.published[-1].task_id == look.id
    assert ticket_of(uow.db, ticket_id).open_tasks == 1


def test_a_failed_gate_blocks_the_ticket_with_every_reason(uow: UnitOfWork) -> None:
    ticket_id = gated(uow)
    spec(uow, ticket_id, "scant")
    finish_key(uow, ticket_id, "draft")
    assert where(uow, ticket_id) == ("PHASE_BLOCKED", "blocked", "PHASE_REQUIREMENTS")
    verdict = latest_gate(uow, ticket_id)
    assert (verdict.passed, verdict.missing) == (False, [])
    assert verdict.reasons == [
        "spec is 5 characters; at least 20 needed",
        "spec lacks a 'scope' section",
    ]
    assert list(tasks_of(uow.db, ticket_id)) == ["draft"]  # no next phase begun


def test_a_blocked_gate_is_judged_again_when_the_missing_artifact_arrives(
    uow: UnitOfWork,
) -> None:
    ticket_id = gated(uow)
    finish_key(uow, ticket_id, "draft")
    verdict = latest_gate(uow, ticket_id)
    assert (verdict.missing, verdict.reasons) == (["spec"], ["missing artifact: spec"])
    spec(uow, ticket_id)  # stored for the phase the ticket is blocked in
    assert where(uow, ticket_id) == ("PHASE_DESIGN", "active", "PHASE_BLOCKED")
    with uow.db.connect() as conn:
        stored = conn.execute(select(artifacts.c.phase, artifacts.c.type)).all()
    assert stored == [("PHASE_REQUIREMENTS", "spec")]


def test_the_newest_artifact_of_a_type_is_the_one_judged(uow: UnitOfWork) -> None:
    ticket_id = gated(uow)
    spec(uow, ticket_id)
    spec(uow, ticket_id, "scant")
    finish_key(uow, ticket_id, "draft")
    assert where(uow, ticket_id)[1] == "blocked"


def test_an_approval_gate_waits_for_its_approval(uow: UnitOfWork) -> None:
    ticket_id = in_design(uow)
    finish_key(uow, ticket_id, "look")
    assert where(uow, ticket_id) == ("PHASE_BLOCKED", "blocked", "PHASE_DESIGN")
    assert latest_gate(uow, ticket_id).reasons == ["waiting for approval"]
    approve(uow, ticket_id)
    assert where(uow, ticket_id)[:2] == ("PHASE_IMPLEMENTATION", "active")
    with uow.db.connect() as conn:
        given = conn.execute(select(approvals.c.phase, approvals.c.by)).all()
    assert given == [("PHASE_DESIGN", "alice")]
    assert "gate.approved" in kinds(uow.db, ticket_id)


def test_an_approval_given_early_lets_the_gate_pass_when_the_work_ends(uow: UnitOfWork) -> None:
    ticket_id = in_design(uow)
    approve(uow, ticket_id)
    assert where(uow, ticket_id)[0] == "PHASE_DESIGN"  # the phase's task is still open
    finish_key(uow, ticket_id, "look")
    assert where(uow, ticket_id)[:2] == ("PHASE_IMPLEMENTATION", "active")


def test_an_agent_adds_artifacts_only_to_a_ticket_whose_task_it_runs(uow: UnitOfWork) -> None:
    ticket_id = gated(uow)
    agent = agents.register(uow.db, name="a", kind=AgentKind.EXTERNAL, capabilities=[])
    with pytest.raises(Forbidden) as refused:
        phases.add(uow, ticket_id, "spec", SPEC, None, None, holder=agent)
    assert refused.value.code == "not_ticket_holder"
    draft = tasks_of(uow.db, ticket_id)["draft"]
    start(uow, draft.id, agent_id=agent)
    artifact = phases.add(uow, ticket_id, "spec", SPEC, None, None, holder=agent)
    with uow.db.connect() as conn:
        named = conn.execute(select(artifacts.c.task_id).where(artifacts.c.id == artifact))
        assert named.scalar_one() == draft.id


def test_a_handlers_artifact_is_stored_only_while_its_attempt_holds_the_task(
    uow: UnitOfWork,
) -> None:
    ticket_id = gated(uow)
    draft = tasks_of(uow.db, ticket_id)["draft"]
    held = start(uow, draft.id)
    with uow.db.connect() as conn:
        assert phases.emit_artifact(conn, draft.id, held.lease, "spec", SPEC, "spec.md")
        assert not phases.emit_artifact(conn, draft.id, uuid.uuid4(), "spec", SPEC, None)
    with uow.db.connect() as conn:
        stored = conn.execute(select(artifacts.c.task_id, artifacts.c.path)).all()
    assert stored == [(draft.id, "spec.md")]


def test_moves_follow_the_transition_table(uow: UnitOfWork) -> None:
    ticket_id = gated(uow)
    with pytest.raises(Conflict) as refused:
        move(uow, ticket_id, "PHASE_IMPLEMENTATION")
    assert refused.value.details["allowed"] == ["PHASE_DESIGN", "PHASE_BLOCKED"]
    assert where(uow, ticket_id)[0] == "PHASE_REQUIREMENTS"
    with pytest.raises(Invalid, match="PHASE_DEPLOYMENT is not a phase of workflow gated"):
        move(uow, ticket_id, "PHASE_DEPLOYMENT", force=True)


def test_a_forced_move_cancels_the_phases_open_tasks_and_enters_the_target(
    uow: UnitOfWork,
) -> None:
    ticket_id = gated(uow)
    move(uow, ticket_id, "PHASE_IMPLEMENTATION", force=True, note="hurry")
    rows = tasks_of(uow.db, ticket_id)
    assert (rows["draft"].status, rows["build"].status) == ("cancelled", "queued")
    assert where(uow, ticket_id)[:2] == ("PHASE_IMPLEMENTATION", "active")
    with uow.db.connect() as conn:
        moved = conn.execute(select(history).order_by(history.c.id.desc())).first()
    assert (moved.from_phase, moved.to_phase, moved.by, moved.note) == (
        "PHASE_REQUIREMENTS",
        "PHASE_IMPLEMENTATION",
        "bob",
        "hurry",
    )


def test_a_ticket_blocked_by_hand_resumes_its_phase_where_it_was(uow: UnitOfWork) -> None:
    ticket_id = gated(uow)
    move(uow, ticket_id, "PHASE_BLOCKED")
    assert where(uow, ticket_id) == ("PHASE_BLOCKED", "blocked", "PHASE_REQUIREMENTS")
    move(uow, ticket_id, "PHASE_REQUIREMENTS")
    assert where(uow, ticket_id)[:2] == ("PHASE_REQUIREMENTS", "active")
    assert tasks_of(uow.db, ticket_id)["draft"].status == "queued"  # untouched


def test_a_finished_ticket_moves_nowhere(uow: UnitOfWork) -> None:
    ticket_id = submit(uow).ticket_id  # no tasks: done at once
    with pytest.raises(Conflict, match="allowed: none"):
        move(uow, ticket_id, "PHASE_RUN")


def test_a_phase_entered_again_numbers_its_visit_and_judges_only_the_newest(
    uow: UnitOfWork,
) -> None:
    ticket_id = gated(uow)
    move(uow, ticket_id, "PHASE_IMPLEMENTATION", force=True)
    finish_key(uow, ticket_id, "build")  # no gate: on to TESTING
    assert where(uow, ticket_id)[0] == "PHASE_TESTING"
    move(uow, ticket_id, "PHASE_IMPLEMENTATION")
    rows = tasks_of(uow.db, ticket_id)
    assert (rows["check"].status, rows["build#2"].status) == ("cancelled", "queued")
    finish_key(uow, ticket_id, "build#2")
    assert "check#2" in tasks_of(uow.db, ticket_id)
    approve(uow, ticket_id)
    finish_key(uow, ticket_id, "check#2")  # the first visit's cancelled check is not judged
    assert where(uow, ticket_id)[:2] == ("PHASE_DONE", "done")
    assert phases.visit_of("build#2/part-1") == 2


def test_the_gate_sweep_judges_a_phase_whose_last_task_ended_unjudged(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    ticket_id = gated(uow)
    spec(uow, ticket_id)
    draft = tasks_of(uow.db, ticket_id)["draft"]
    # what PostgreSQL's one-statement result commits before its worker judges the gate
    change(uow.db, draft.id, status="succeeded")
    with uow.db.connect() as conn:
        conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(open_tasks=0))
    assert phases.sweep_gates(uow) == 1
    assert where(uow, ticket_id)[0] == "PHASE_DESIGN"
    assert dispatcher.published[-1].task_id == tasks_of(uow.db, ticket_id)["look"].id
    assert phases.sweep_gates(uow) == 0
