"""Workflow files, gates and context: pure rules, and start-up refusing bad files."""

from pathlib import Path

import pytest
import yaml

from omoi.domain.context import aggregate, summarize
from omoi.domain.gates import evaluate
from omoi.domain.workflow import ArtifactRule, Gate, WorkflowError, parse
from omoi.services import workflows

MINIMAL = {
    "name": "w",
    "phases": [{"name": "PHASE_RUN"}, {"name": "PHASE_DONE"}],
    "transitions": {"PHASE_RUN": ["PHASE_DONE"]},
}


def test_shipped_workflows_load() -> None:
    loaded = workflows.load()
    assert {"dag", "software-dev"} <= set(loaded)
    dev = loaded["software-dev"]
    assert dev.initial == "PHASE_BACKLOG"
    assert dev.allowed("PHASE_TESTING") == [
        "PHASE_DEPLOYMENT",
        "PHASE_IMPLEMENTATION",
        "PHASE_BLOCKED",
    ]
    assert dev.allowed("PHASE_BLOCKED", "PHASE_DESIGN") == [
        "PHASE_BACKLOG",
        "PHASE_REQUIREMENTS",
        "PHASE_DESIGN",
    ]
    assert dev.allowed("PHASE_DONE") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "needs a name"),
        ({"phases": []}, "list of phases"),
        ({"phases": [{"name": "review"}, {"name": "PHASE_DONE"}]}, "'review' is not a phase name"),
        ({"phases": [{"name": "PHASE-X"}, {"name": "PHASE_DONE"}]}, "'PHASE-X' is not a phase"),
        ({"phases": [{"name": "_X"}, {"name": "PHASE_DONE"}]}, "'_X' is not a phase name"),
        ({"phases": [{"name": "A" * 33}, {"name": "PHASE_DONE"}]}, "is not a phase name"),
        ({"phases": [{"name": 7}, {"name": "PHASE_DONE"}]}, r"phases\[0\]: 7 is not a phase"),
        ({"phases": [{"name": "PHASE_BLOCKED"}, {"name": "PHASE_DONE"}]}, "implicit"),
        (
            {"phases": [{"name": "PHASE_RUN"}, {"name": "PHASE_RUN"}, {"name": "PHASE_DONE"}]},
            "phases listed twice: PHASE_RUN",
        ),
        (
            {"phases": [{"name": f"P{n}"} for n in range(32)] + [{"name": "PHASE_DONE"}]},
            "at most 32",
        ),
        ({"transitions": {"PHASE_RUN": ["PHASE_BLOCKED"]}}, "transitions.PHASE_RUN: PHASE_BLOCKED"),
        (
            {"transitions": {"PHASE_RUN": ["PHASE_DONE"], "PHASE_DONE": ["PHASE_RUN"]}},
            "transitions from PHASE_DONE, which is terminal",
        ),
        ({"transitions": {"PHASE_RUN": "PHASE_DONE"}}, "must be a list of phases"),
        ({"transitions": ["PHASE_RUN"]}, "transitions must map a phase"),
        ({"transitions": {"PHASE_NOPE": ["PHASE_DONE"]}}, "from PHASE_NOPE which is not a phase"),
        ({"phases": [{"name": "PHASE_RUN"}]}, "last phase must be PHASE_DONE"),
        ({"transitions": {}}, "no way out of PHASE_RUN"),
        ({"transitions": {"PHASE_RUN": ["PHASE_TESTING"]}}, "phases not listed"),
        (
            {
                "phases": [
                    {
                        "name": "PHASE_RUN",
                        "tasks": [
                            {"key": "a", "task_type": "x", "depends_on": ["b"]},
                            {"key": "b", "task_type": "x", "depends_on": ["a"]},
                        ],
                    },
                    {"name": "PHASE_DONE"},
                ]
            },
            "dependency cycle",
        ),
        (
            {
                "phases": [
                    {"name": "PHASE_RUN", "tasks": [{"key": "a", "task_type": "x", "colour": 1}]},
                    {"name": "PHASE_DONE"},
                ]
            },
            r"unknown fields \['colour'\]",
        ),
        (
            {
                "phases": [
                    {
                        "name": "PHASE_RUN",
                        "tasks": [{"key": "a", "task_type": "x", "max_retries": "three"}],
                    },
                    {"name": "PHASE_DONE"},
                ]
            },
            "max_retries must be an integer from 0 to 100",
        ),
        (
            {
                "phases": [
                    {
                        "name": "PHASE_RUN",
                        "tasks": [
                            {"key": "a", "task_type": "x"},
                            {
                                "key": "b",
                                "task_type": "x",
                                "depends_on": ["a"],
                                "sync": {"need": 0},
                            },
                        ],
                    },
                    {"name": "PHASE_DONE"},
                ]
            },
            "sync must be",
        ),
        (
            {
                "phases": [
                    {
                        "name": "PHASE_RUN",
                        "tasks": [{"key": "a", "task_type": "x", "capabilities": "gpu"}],
                    },
                    {"name": "PHASE_DONE"},
                ]
            },
            "capabilities must be a list",
        ),
        (
            {
                "phases": [
                    {"name": "PHASE_RUN", "gate": {"artifacts": [{"min_length": 3}]}},
                    {"name": "PHASE_DONE"},
                ]
            },
            "needs a type",
        ),
    ],
)
def test_invalid_workflows_are_refused_with_a_clear_message(change: dict, message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        parse({**MINIMAL, **change}, "bad.yaml")


def test_a_workflow_names_its_own_phases() -> None:
    """Any name matching the pattern is a phase; DONE and BLOCKED are every workflow's."""
    review = parse(
        {
            "name": "review",
            "phases": [
                {"name": "SECURITY_AUDIT", "gate": {"approval": True}},
                {"name": "PHASE_REVIEW"},
                {"name": "PHASE_DONE"},
            ],
            "transitions": {
                "SECURITY_AUDIT": ["PHASE_REVIEW"],
                "PHASE_REVIEW": ["PHASE_DONE", "SECURITY_AUDIT"],
            },
        },
        "review.yaml",
    )
    assert review.names == ["SECURITY_AUDIT", "PHASE_REVIEW", "PHASE_DONE"]
    assert review.initial == "SECURITY_AUDIT"
    assert review.allowed("PHASE_REVIEW") == ["PHASE_DONE", "SECURITY_AUDIT", "PHASE_BLOCKED"]
    assert review.allowed("PHASE_BLOCKED", "PHASE_REVIEW") == ["SECURITY_AUDIT", "PHASE_REVIEW"]
    assert [review.has(p) for p in ("PHASE_BLOCKED", "PHASE_DONE", "PHASE_RUN")] == [
        True,
        True,
        False,
    ]
    assert review.spec("SECURITY_AUDIT").gate.approval


def test_a_bad_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(WorkflowError, match=r"broken\.yaml: not valid YAML"):
        workflows.load(tmp_path)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({**MINIMAL, "transitions": {}}))
    with pytest.raises(WorkflowError, match=r"broken\.yaml: no way out"):
        workflows.load(tmp_path)
    (tmp_path / "broken.yaml").write_text(
        yaml.safe_dump({**MINIMAL, "phases": [{"name": "Review"}, {"name": "PHASE_DONE"}]})
    )
    with pytest.raises(WorkflowError, match=r"broken\.yaml: phases\[0\]: 'Review' is not a"):
        workflows.load(tmp_path)
    with pytest.raises(WorkflowError, match="not a directory"):
        workflows.load(tmp_path / "missing")


def test_gate_criteria() -> None:
    gate = Gate(
        artifacts=(
            ArtifactRule("req", min_length=30, sections=("scope", "acceptance_criteria")),
            ArtifactRule("tests", min_coverage=80, all_tests_passed=True),
        ),
        approval=True,
    )
    good_doc = {"text": "# Req\n## Scope\nall of it\n## Acceptance criteria\n1. works"}
    verdict = evaluate(
        gate,
        {"a": "succeeded"},
        [("req", good_doc), ("tests", {"coverage": 91, "passed": 3, "failed": 0})],
        approved=True,
    )
    assert verdict.passed and verdict.reasons == []
    verdict = evaluate(
        gate,
        {"a": "failed"},
        [("tests", {"coverage": 50, "passed": 3, "failed": 1})],
        approved=False,
    )
    assert not verdict.passed
    assert verdict.missing == ["req", "approval"]
    assert "tasks not succeeded: a" in verdict.reasons
    assert any("coverage 50" in r for r in verdict.reasons)
    assert any("1 failed" in r for r in verdict.reasons)
    newest_wins = evaluate(
        Gate((ArtifactRule("req", sections=("scope",)),)),
        {},
        [("req", {"text": "nothing"}), ("req", {"scope": "now it has"})],
        approved=False,
    )
    assert newest_wins.passed


def test_context_is_aggregated_and_kept_within_budget() -> None:
    phase = aggregate(
        [("a", {"summary": "did a", "decisions": ["use X"], "risks": ["Y"]}), ("b", {"value": 1})],
        ["design", "design"],
    )
    assert phase["tasks"] == {"a": "did a", "b": '{"value": 1}'}
    assert (phase["decisions"], phase["risks"], phase["artifacts"]) == (
        ["use X"],
        ["Y"],
        ["design"],
    )
    phases = {f"PHASE_{n}": aggregate([("t", {"summary": "x" * 200})], []) for n in range(10)}
    text = summarize(phases, budget=500)
    assert len(text) <= 500
    assert "PHASE_9" in text  # the newest phase keeps its detail
    assert "(summarized)" in text
