"""Phases a ticket's workflow does not have, over HTTP: a malformed name is a 422 from the
schema, a well-formed one its workflow lacks a 422 from the workflow registry naming the
workflow's phases, and neither writes anything. The ``review`` workflow
(tests/support/workflows/review.yaml) names its own phases."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from omoi.persistence import Approval, Artifact, Database, Event, PhaseHistory, Task, Ticket
from tests.support.api import submit


def written(db: Database) -> tuple[int, ...]:
    """How many rows every table a phase change or a submission writes to holds."""
    with db.session() as session:
        return tuple(
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Ticket, Task, Event, PhaseHistory, Artifact, Approval)
        )


def refused(resp: Any, *mentions: str) -> dict[str, Any]:
    """The response is a 422 in the error shape, its JSON naming every one of ``mentions``."""
    assert resp.status_code == 422, resp.get_json()
    error = resp.get_json()["error"]
    assert set(error) == {"code", "message", "details"}
    for mention in mentions:
        assert mention in json.dumps(error)
    return error  # type: ignore[no-any-return]


@pytest.fixture
def review(api_client: Any) -> dict[str, Any]:
    """A ticket of the ``review`` workflow, in SECURITY_AUDIT (the API publishes nothing)."""
    return submit(api_client, [], workflow="review")


def test_a_ticket_starts_in_its_workflows_own_first_phase(
    api_client: Any, review: dict[str, Any]
) -> None:
    assert (review["phase"], review["status"]) == ("SECURITY_AUDIT", "active")
    listed = api_client.get("/api/v1/workflows").get_json()["items"]
    assert next(w for w in listed if w["name"] == "review")["phases"] == [
        "SECURITY_AUDIT",
        "PHASE_REVIEW",
        "PHASE_DONE",
    ]
    attached = submit(
        api_client, [{"key": "x", "task_type": "noop", "phase": "PHASE_REVIEW"}], workflow="review"
    )
    assert attached["phase"] == "SECURITY_AUDIT"  # the task waits for its phase


@pytest.mark.parametrize(
    ("phase", "mentions"),
    [
        ("PHASE_RUN", ("PHASE_RUN is not a working phase of review", "SECURITY_AUDIT")),
        ("PHASE_DONE", ("PHASE_DONE is not a working phase of review",)),
        ("security_audit", ("is not a phase name", "^[A-Z][A-Z0-9_]{0,31}$")),
    ],
)
def test_a_task_for_a_phase_its_workflow_lacks_is_refused(
    api_client: Any, db: Database, phase: str, mentions: tuple[str, ...]
) -> None:
    before = written(db)
    body = {"title": "t", "workflow": "review", "tasks": [{"key": "x", "task_type": "noop"}]}
    body["tasks"][0]["phase"] = phase  # type: ignore[index]
    refused(api_client.post("/api/v1/tickets", json=body), *mentions)
    assert written(db) == before


@pytest.mark.parametrize(
    ("to_phase", "mentions"),
    [
        ("PHASE_RUN", ("PHASE_RUN is not a phase of workflow review", "PHASE_REVIEW")),
        ("PHASE_IMPLEMENTATION", ("not a phase of workflow review",)),
        ("phase-review", ("is not a phase name",)),
        ("P" * 33, ("is not a phase name",)),
    ],
)
def test_a_transition_to_a_phase_its_workflow_lacks_is_refused(
    api_client: Any, db: Database, review: dict[str, Any], to_phase: str, mentions: tuple[str]
) -> None:
    before = written(db)
    for force in (False, True):  # force skips the transition table, never the phase's check
        resp = api_client.post(
            f"/api/v1/tickets/{review['id']}/transition",
            json={"to_phase": to_phase, "force": force},
        )
        refused(resp, *mentions)
    assert written(db) == before
    assert api_client.get(f"/api/v1/tickets/{review['id']}").get_json()["phase"] == (
        "SECURITY_AUDIT"
    )


def test_a_transition_between_its_own_phases_is_made(
    api_client: Any, review: dict[str, Any]
) -> None:
    path = f"/api/v1/tickets/{review['id']}"
    not_allowed = api_client.post(f"{path}/transition", json={"to_phase": "PHASE_DONE"})
    assert not_allowed.status_code == 409  # a phase it has, but not a move from here
    assert not_allowed.get_json()["error"]["details"]["allowed"] == [
        "PHASE_REVIEW",
        "PHASE_BLOCKED",
    ]
    moved = api_client.post(f"{path}/transition", json={"to_phase": "PHASE_REVIEW"})
    assert moved.status_code == 200, moved.get_json()
    assert moved.get_json()["phase"] == "PHASE_REVIEW"


@pytest.mark.parametrize("field", ["artifacts", "approve"])
@pytest.mark.parametrize("phase", ["PHASE_REQUIREMENTS", "PHASE_DONE", "PHASE_BLOCKED"])
def test_an_artifact_or_approval_for_a_phase_its_workflow_lacks_is_refused(
    api_client: Any, db: Database, review: dict[str, Any], field: str, phase: str
) -> None:
    before = written(db)
    body: dict[str, Any] = {"phase": phase}
    if field == "artifacts":
        body.update(type="audit", content={"text": "x"})
    resp = api_client.post(f"/api/v1/tickets/{review['id']}/{field}", json=body)
    refused(resp, f"{phase} is not a working phase of workflow review", "SECURITY_AUDIT")
    assert written(db) == before


def test_listing_by_a_phase_no_workflow_has_is_refused(
    api_client: Any, review: dict[str, Any]
) -> None:
    """A phase filter names a phase of ``workflow`` (of any known workflow without one, or
    when ``workflow`` names none this deployment knows); else the list is a 422."""

    def listed(**query: str) -> Any:
        return api_client.get("/api/v1/tickets", query_string={"limit": "500", **query})

    ids = [t["id"] for t in listed(phase="SECURITY_AUDIT").get_json()["items"]]
    assert review["id"] in ids
    assert review["id"] in [
        t["id"] for t in listed(phase="SECURITY_AUDIT", workflow="review").get_json()["items"]
    ]
    assert listed(phase="SECURITY_AUDIT", workflow="gone").get_json()["items"] == []
    assert listed(phase="PHASE_BLOCKED", workflow="review").status_code == 200
    refused(listed(phase="NO_SUCH_PHASE"), "NO_SUCH_PHASE is not a phase of any workflow")
    error = refused(
        listed(phase="SECURITY_AUDIT", workflow="dag"),
        "SECURITY_AUDIT is not a phase of workflow dag",
    )
    assert error["details"]["phases"] == ["PHASE_BLOCKED", "PHASE_DONE", "PHASE_RUN"]
    refused(listed(phase="security audit"), "is not a phase name")
