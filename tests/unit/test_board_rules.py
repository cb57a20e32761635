"""What the board says about a ticket (omoi/domain/progress.py) and its gate
(omoi/domain/gates.py ``describe``): a state you can tell apart, progress through the
workflow's phases that only a finished workflow fills, requirements as sentences."""

from __future__ import annotations

import pytest

from omoi.domain.gates import WAITING_FOR_APPROVAL, describe
from omoi.domain.progress import Progress, TicketState, board_columns, progress_of, state_of
from omoi.domain.workflow import ArtifactRule, Gate
from omoi.services import workflows

GATED = ["PHASE_REQUIREMENTS", "PHASE_DESIGN", "PHASE_IMPLEMENTATION", "PHASE_DONE"]


@pytest.mark.parametrize(
    ("status", "reasons", "failed", "state"),
    [
        ("active", [], 0, TicketState.ACTIVE),
        ("done", [], 0, TicketState.DONE),
        ("cancelled", ["tasks not succeeded: a"], 1, TicketState.CANCELLED),
        ("blocked", [WAITING_FOR_APPROVAL], 0, TicketState.AWAITING_APPROVAL),
        ("blocked", ["missing artifact: spec", WAITING_FOR_APPROVAL], 0, TicketState.BLOCKED),
        ("blocked", ["tasks not succeeded: build"], 1, TicketState.FAILED),
        ("blocked", ["tasks not succeeded: build"], 0, TicketState.BLOCKED),  # cancelled only
        ("blocked", ["paused by ops"], 0, TicketState.BLOCKED),
    ],
)
def test_a_blocked_ticket_is_told_apart_by_why(
    status: str, reasons: list[str], failed: int, state: TicketState
) -> None:
    assert state_of(status, reasons, failed) == state


def test_progress_counts_the_workflows_phases_and_the_gate_as_the_phases_last_step() -> None:
    start = progress_of(GATED, "PHASE_REQUIREMENTS", "active", {"queued": 1})
    assert (start.phases, start.done, start.value) == (3, 0, 0.0)
    waiting = progress_of(GATED, "PHASE_DESIGN", "blocked", {"succeeded": 1})
    assert waiting.value == pytest.approx((1 + 1 / 2) / 3)
    last = progress_of(GATED, "PHASE_IMPLEMENTATION", "blocked", {"succeeded": 9})
    assert last.value < 1 and last.percent == 96  # every task done, its gate not passed
    assert progress_of(GATED, "PHASE_DONE", "done", {}).percent == 100


def test_a_failed_phase_is_never_a_full_bar() -> None:
    failed = progress_of(
        ["PHASE_RUN", "PHASE_DONE"],
        "PHASE_RUN",
        "blocked",
        {"succeeded": 5, "failed": 1, "cancelled": 1},
    )
    assert failed.value == pytest.approx(5 / 8)


def test_a_ticket_sent_back_has_only_the_phases_before_it_behind_it() -> None:
    again = progress_of(GATED, "PHASE_REQUIREMENTS", "active", {"running": 1})
    assert again.done == 0
    assert progress_of(GATED, "PHASE_DESIGN", "active", {}).value == pytest.approx(1 / 3)


def test_a_workflow_no_longer_known_counts_its_phase_alone() -> None:
    assert progress_of(["PHASE_RUN"], "PHASE_RUN", "active", {"succeeded": 1}) == Progress(
        1, 0, 0.5
    )


def test_gate_requirements_read_as_sentences() -> None:
    gate = Gate(
        artifacts=(
            ArtifactRule("spec", min_length=1500, sections=("scope", "acceptance_criteria")),
            ArtifactRule("test_report", min_coverage=80, all_tests_passed=True),
            ArtifactRule("integration_report"),
        ),
        approval=True,
        validation_task="verify",
    )
    assert describe(gate) == [
        "every task of the phase succeeded",
        "the validation task verify succeeded",
        "a spec artifact at least 1,500 characters long, "
        "with the sections “scope” and “acceptance criteria”",
        "a test_report artifact covering at least 80 % of the code, reporting every test passed",
        "an integration_report artifact",
        "a person approved it",
    ]
    assert describe(Gate()) == ["every task of the phase succeeded"]


DEV = workflows.load()["software-dev"].names


def test_board_columns_merge_the_workflows_in_use_in_their_order() -> None:
    """Each phase once, after the phases any workflow puts before it; DONE last."""
    assert board_columns([["PHASE_RUN", "PHASE_DONE"], GATED, DEV]) == [
        *DEV[:-1],
        "PHASE_RUN",
        "PHASE_DONE",
    ]
    review = ["SECURITY_AUDIT", "PHASE_REVIEW", "PHASE_DONE"]
    assert board_columns([review]) == review
    # a review step between two phases another workflow has back to back
    between = ["PHASE_DESIGN", "PHASE_REVIEW", "PHASE_IMPLEMENTATION", "PHASE_DONE"]
    assert board_columns([GATED, between]) == [
        "PHASE_REQUIREMENTS",
        "PHASE_DESIGN",
        "PHASE_REVIEW",
        "PHASE_IMPLEMENTATION",
        "PHASE_DONE",
    ]


def test_board_columns_survive_disagreeing_workflows_and_orphan_cards() -> None:
    """Two workflows in opposite orders: the longer one's order wins, every phase still
    shows; a card's phase no workflow has any more gets a column before DONE."""
    columns = board_columns(
        [["B_STEP", "A_STEP", "PHASE_DONE"], ["A_STEP", "B_STEP", "C_STEP", "PHASE_DONE"]],
        extra=["OLD_STEP", "A_STEP", "PHASE_DONE"],
    )
    assert columns == ["A_STEP", "B_STEP", "C_STEP", "OLD_STEP", "PHASE_DONE"]
    assert board_columns([]) == ["PHASE_DONE"]
