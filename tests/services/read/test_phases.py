"""A ticket's walk as read back: where it may go next (nowhere once it has ended), where it
has been, what its phases produced, and what its phase's gate requires and last said."""

from __future__ import annotations

import uuid

import pytest

from omoi.services import cancellation, phases
from omoi.services.errors import NotFound
from omoi.services.read.phases import artifacts_of, gate_status, history_of, valid_transitions
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import finish, submit, tasks_of


def test_the_allowed_moves_come_from_the_workflow_and_end_with_the_ticket(
    uow: UnitOfWork,
) -> None:
    ticket_id = submit(uow, workflow="gated").ticket_id
    allowed = valid_transitions(uow.db, uow.workflows, ticket_id)
    assert (allowed["phase"], allowed["allowed"]) == (
        "PHASE_REQUIREMENTS",
        ["PHASE_DESIGN", "PHASE_BLOCKED"],
    )
    cancellation.cancel_ticket(uow, ticket_id, "abandoned")
    assert valid_transitions(uow.db, uow.workflows, ticket_id)["allowed"] == []


def test_the_gate_status_names_what_the_blocked_phase_requires_and_its_last_verdict(
    uow: UnitOfWork,
) -> None:
    ticket_id = submit(uow, workflow="gated").ticket_id
    assert gate_status(uow.db, uow.workflows, ticket_id)["latest"] is None
    finish(uow, tasks_of(uow.db, ticket_id)["draft"].id)
    status = gate_status(uow.db, uow.workflows, ticket_id)
    assert (status["phase"], status["status"]) == ("PHASE_REQUIREMENTS", "blocked")
    assert [a["type"] for a in status["requires"]["artifacts"]] == ["spec"]
    assert (status["latest"]["passed"], status["latest"]["missing"]) == (False, ["spec"])


def test_the_history_lists_every_move_in_order(uow: UnitOfWork) -> None:
    ticket_id = submit(uow, workflow="gated").ticket_id
    phases.move(uow, ticket_id, "PHASE_BLOCKED", "wait", "bob", False, None)
    phases.move(uow, ticket_id, "PHASE_REQUIREMENTS", "go", "bob", False, "resumed")
    assert [(h.from_phase, h.to_phase, h.note) for h in history_of(uow.db, ticket_id)] == [
        ("PHASE_REQUIREMENTS", "PHASE_BLOCKED", None),
        ("PHASE_BLOCKED", "PHASE_REQUIREMENTS", "resumed"),
    ]


def test_artifacts_page_oldest_first_and_filter_by_phase(uow: UnitOfWork) -> None:
    ticket_id = submit(uow, workflow="gated").ticket_id
    ids = [
        phases.add(uow, ticket_id, kind, {"n": n}, None, phase)
        for n, (kind, phase) in enumerate(
            [("spec", None), ("note", "PHASE_REQUIREMENTS"), ("plan", "PHASE_DESIGN")]
        )
    ]
    first, cursor = artifacts_of(uow.db, ticket_id, limit=2)
    assert [(a.id, a.type, a.content) for a in first] == [
        (ids[0], "spec", {"n": 0}),
        (ids[1], "note", {"n": 1}),
    ]
    rest, end = artifacts_of(uow.db, ticket_id, after=cursor, limit=2)
    assert ([(a.id, a.phase) for a in rest], end) == ([(ids[2], "PHASE_DESIGN")], None)
    design, _ = artifacts_of(uow.db, ticket_id, phase="PHASE_DESIGN")
    assert [a.id for a in design] == [ids[2]]
    with pytest.raises(NotFound):
        artifacts_of(uow.db, uuid.uuid4())
