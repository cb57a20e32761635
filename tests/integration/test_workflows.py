"""Workflows on real workers: phases, gates, approvals, regression, context, the beat safety
net. The ``gated`` workflow lives in tests/support/workflows (OMOI_WORKFLOWS_DIR)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from omoi.persistence import Database, PhaseHistory, Task, Ticket
from tests.support.api import wait_finished
from tests.support.procs import Proc, start_beat, start_worker, wait_for

pytestmark = pytest.mark.usefixtures("worker")


def create(client: Any, workflow: str, **extra: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/tickets", json={"title": "t", "workflow": workflow, **extra})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def ticket(client: Any, ticket_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/tickets/{ticket_id}").get_json()  # type: ignore[no-any-return]


def wait_state(client: Any, ticket_id: str, status: str, phase: str) -> dict[str, Any]:
    return wait_for(
        lambda: (t := ticket(client, ticket_id))["status"] == status and t["phase"] == phase and t,
        timeout=30,
        what=f"ticket {ticket_id} to be {status} in {phase}",
    )


def history(client: Any, ticket_id: str) -> list[tuple[str | None, str]]:
    items = client.get(f"/api/v1/tickets/{ticket_id}/phase-history").get_json()["items"]
    return [(h["from_phase"], h["to_phase"]) for h in items]


@pytest.fixture(scope="module")
def demo_worker(env: dict[str, str], tmp_root: Path) -> Iterator[Proc]:
    """Serves the capabilities of the software-dev templates."""
    proc, _ = start_worker(
        env, tmp_root, concurrency=2, capabilities="analysis,design,python,testing,ops"
    )
    yield proc
    proc.stop()


def test_software_dev_lifecycle(client: Any, demo_worker: Proc) -> None:
    created = create(client, "software-dev")
    final = wait_finished(client, created["id"], timeout=90)
    assert (final["status"], final["phase"]) == ("done", "PHASE_DONE")
    assert [to for _, to in history(client, created["id"])] == [
        "PHASE_REQUIREMENTS",
        "PHASE_DESIGN",
        "PHASE_IMPLEMENTATION",
        "PHASE_TESTING",
        "PHASE_DEPLOYMENT",
        "PHASE_DONE",
    ]
    context = client.get(f"/api/v1/tickets/{created['id']}/context").get_json()
    assert set(context["phases"]) >= {"PHASE_REQUIREMENTS", "PHASE_DEPLOYMENT"}
    assert context["phases"]["PHASE_REQUIREMENTS"]["artifacts"] == ["requirements"]
    assert "the public API stays backward compatible" in context["summary"]
    gate = client.get(f"/api/v1/tickets/{created['id']}/gate-status").get_json()
    assert gate["latest"]["passed"] is True


def test_gate_fails_with_reasons_then_artifact_and_approval_unblock(client: Any) -> None:
    created = create(client, "gated")
    blocked = wait_state(client, created["id"], "blocked", "PHASE_BLOCKED")
    gate = client.get(f"/api/v1/tickets/{created['id']}/gate-status").get_json()
    assert gate["phase"] == "PHASE_REQUIREMENTS"
    assert gate["latest"]["passed"] is False
    assert gate["latest"]["missing"] == ["spec"]
    assert "missing artifact: spec" in gate["latest"]["reasons"]
    assert blocked["previous_phase"] == "PHASE_REQUIREMENTS"

    short = client.post(
        f"/api/v1/tickets/{created['id']}/artifacts",
        json={"type": "spec", "content": {"text": "too short"}},
    )
    assert short.status_code == 201
    reasons = client.get(f"/api/v1/tickets/{created['id']}/gate-status").get_json()["latest"]
    assert any("at least 20" in r for r in reasons["reasons"])
    assert any("'scope'" in r for r in reasons["reasons"])
    client.post(
        f"/api/v1/tickets/{created['id']}/artifacts",
        json={
            "type": "spec",
            "content": {"text": "# Spec\n\n## Scope\n\nEverything that matters."},
        },
    )
    waiting = wait_state(client, created["id"], "blocked", "PHASE_BLOCKED")
    assert waiting["previous_phase"] == "PHASE_DESIGN"  # now the approval gate holds it
    latest = client.get(f"/api/v1/tickets/{created['id']}/gate-status").get_json()["latest"]
    assert latest["missing"] == ["approval"]

    design = client.get(f"/api/v1/tasks?ticket_id={created['id']}").get_json()["items"]
    look = next(t for t in design if t["key"] == "look")
    assert "PHASE_REQUIREMENTS" in look["result"]["seen"]  # context reached the next phase
    assert "use postgres" in look["result"]["seen"]

    approved = client.post(
        f"/api/v1/tickets/{created['id']}/approve", json={"by": "alice", "comment": "ship it"}
    )
    assert approved.status_code == 201
    wait_state(client, created["id"], "blocked", "PHASE_BLOCKED")  # testing needs approval too
    assert ticket(client, created["id"])["previous_phase"] == "PHASE_TESTING"


def test_regression_path_and_transition_rules(client: Any) -> None:
    created = create(client, "gated")
    tid = created["id"]
    client.post(
        f"/api/v1/tickets/{tid}/artifacts",
        json={
            "type": "spec",
            "content": {"text": "## Scope\n\nThe whole thing, really."},
            "phase": "PHASE_REQUIREMENTS",
        },
    )
    wait_for(
        lambda: ticket(client, tid)["previous_phase"] == "PHASE_DESIGN",
        timeout=30,
        what="the design approval wait",
    )
    client.post(f"/api/v1/tickets/{tid}/approve", json={"by": "bob"})
    wait_for(
        lambda: (
            ticket(client, tid)["previous_phase"] == "PHASE_TESTING"
            and ticket(client, tid)["status"] == "blocked"
        ),
        timeout=30,
        what="testing's gate",
    )

    valid = client.get(f"/api/v1/tickets/{tid}/valid-transitions").get_json()
    assert valid["allowed"] == [
        "PHASE_REQUIREMENTS",
        "PHASE_DESIGN",
        "PHASE_IMPLEMENTATION",
        "PHASE_TESTING",
    ]
    wrong = client.post(f"/api/v1/tickets/{tid}/transition", json={"to_phase": "PHASE_DONE"})
    assert wrong.status_code == 409
    assert "allowed: PHASE_REQUIREMENTS" in wrong.get_json()["error"]["message"]

    back = client.post(
        f"/api/v1/tickets/{tid}/transition",
        json={"to_phase": "PHASE_IMPLEMENTATION", "reason": "tests found a bug"},
    )
    assert back.status_code == 200
    wait_for(
        lambda: (
            ticket(client, tid)["previous_phase"] == "PHASE_TESTING"
            and ticket(client, tid)["status"] == "blocked"
            and ticket(client, tid)["task_counts"].get("succeeded") == 6
        ),
        timeout=30,
        what="the second pass through testing",
    )
    keys = [t["key"] for t in client.get(f"/api/v1/tasks?ticket_id={tid}").get_json()["items"]]
    assert keys == ["draft", "look", "build", "check", "build#2", "check#2"]
    client.post(f"/api/v1/tickets/{tid}/approve", json={"by": "carol"})
    final = wait_finished(client, tid)
    assert (final["status"], final["phase"]) == ("done", "PHASE_DONE")
    path = [to for _, to in history(client, tid)]
    assert path[-4:] == ["PHASE_IMPLEMENTATION", "PHASE_TESTING", "PHASE_BLOCKED", "PHASE_DONE"]
    assert path.count("PHASE_IMPLEMENTATION") == 2
    forced = client.post(
        f"/api/v1/tickets/{tid}/transition", json={"to_phase": "PHASE_DESIGN", "force": True}
    )
    assert forced.status_code == 200 and forced.get_json()["phase"] == "PHASE_DESIGN"


def test_two_beats_judge_each_waiting_ticket_once(
    api_client: Any, db: Database, env: dict[str, str], tmp_path: Path
) -> None:
    """Tickets whose last task's worker died before judging the gate: both beats' sweeps
    see them, each ticket moves to DONE exactly once."""
    ids = [
        uuid.UUID(
            api_client.post(
                "/api/v1/tickets",
                json={"title": "w", "tasks": [{"key": "only", "task_type": "noop"}]},
            ).get_json()["id"]
        )
        for _ in range(20)
    ]
    with db.session() as session:  # the tasks ended; nobody judged the phase
        session.execute(update(Task).where(Task.ticket_id.in_(ids)).values(status="succeeded"))
        session.execute(update(Ticket).where(Ticket.id.in_(ids)).values(open_tasks=0))
    beats = []
    for n in range(2):
        (tmp_path / f"b{n}").mkdir()
        beats.append(start_beat(env, tmp_path / f"b{n}"))
    try:

        def all_done() -> bool:
            with db.session() as session:
                return (
                    session.execute(
                        select(func.count()).where(Ticket.id.in_(ids), Ticket.status == "done")
                    ).scalar_one()
                    == 20
                )

        wait_for(all_done, timeout=60, what="the beats' gate sweeps")
    finally:
        for beat in beats:
            beat.stop()
    with db.session() as session:
        moves = session.execute(
            select(PhaseHistory.ticket_id, func.count())
            .where(PhaseHistory.ticket_id.in_(ids), PhaseHistory.to_phase == "PHASE_DONE")
            .group_by(PhaseHistory.ticket_id)
        ).all()
    assert sorted(n for _, n in moves) == [1] * 20


def test_tasks_attached_to_a_later_phase_run_there(client: Any) -> None:
    created = create(
        client, "gated", tasks=[{"key": "extra", "task_type": "effect", "phase": "PHASE_DESIGN"}]
    )
    assert [t["key"] for t in created["tasks"]] == ["draft"]
    client.post(
        f"/api/v1/tickets/{created['id']}/artifacts",
        json={"type": "spec", "content": {"text": "## Scope\n\nA plan for everything."}},
    )
    wait_for(
        lambda: ticket(client, created["id"])["previous_phase"] == "PHASE_DESIGN",
        timeout=30,
        what="design to run",
    )
    tasks = client.get(f"/api/v1/tasks?ticket_id={created['id']}").get_json()["items"]
    extra = next(t for t in tasks if t["key"] == "extra")
    assert (extra["phase"], extra["status"]) == ("PHASE_DESIGN", "succeeded")
    bad = client.post(
        "/api/v1/tickets",
        json={
            "title": "t",
            "workflow": "gated",
            "tasks": [{"key": "x", "task_type": "noop", "phase": "PHASE_DEPLOYMENT"}],
        },
    )
    assert bad.status_code == 422
    unknown = client.post("/api/v1/tickets", json={"title": "t", "workflow": "nope"})
    assert unknown.status_code == 422


def test_the_first_phase_entered_again_gets_fresh_tasks(client: Any) -> None:
    """Moving a ticket back into its workflow's first phase answered 500 (a unique violation
    on ``draft``: the visit count missed the phase the ticket was created in)."""
    tid = create(client, "gated", tasks=[{"key": "extra", "task_type": "context-echo"}])["id"]
    client.post(
        f"/api/v1/tickets/{tid}/artifacts",
        json={"type": "spec", "content": {"text": "## Scope\n\nA plan for everything."}},
    )
    for visit in (1, 2, 3):
        if visit > 1:
            back = client.post(
                f"/api/v1/tickets/{tid}/transition",
                json={"to_phase": "PHASE_REQUIREMENTS", "reason": "again"},
            )
            assert back.status_code == 200, back.get_json()
        wait_for(  # requirements' tasks and design's, then design waits for its approval
            lambda visit=visit: (
                (t := ticket(client, tid))["previous_phase"] == "PHASE_DESIGN"
                and t["status"] == "blocked"
                and t["task_counts"].get("succeeded") == 3 * visit
            ),
            timeout=30,
            what=f"visit {visit} of the first phase",
        )
    keys = [t["key"] for t in client.get(f"/api/v1/tasks?ticket_id={tid}").get_json()["items"]]
    assert keys == [f"{k}{s}" for s in ("", "#2", "#3") for k in ("draft", "extra", "look")]


def test_a_forced_move_into_the_current_phase_runs_its_tasks_again(client: Any) -> None:
    """``{"to_phase": "PHASE_RUN", "force": true}`` cancelled the tasks and created none: the
    submitted tasks of a ticket's first phase were not kept for a later entry."""
    created = client.post(
        "/api/v1/tickets",
        json={
            "title": "rerun",
            "tasks": [
                {"key": "slow", "task_type": "sleep", "payload": {"seconds": 30}},
                {"key": "after", "task_type": "noop", "depends_on": ["slow"]},
            ],
        },
    ).get_json()
    tid = created["id"]
    moved = client.post(
        f"/api/v1/tickets/{tid}/transition", json={"to_phase": "PHASE_RUN", "force": True}
    )
    assert moved.status_code == 200, moved.get_json()
    items = client.get(f"/api/v1/tasks?ticket_id={tid}").get_json()["items"]
    assert [(t["key"], t["status"]) for t in items][:2] == [
        ("slow", "cancelled"),
        ("after", "cancelled"),
    ]
    assert [t["key"] for t in items[2:]] == ["slow#2", "after#2"]
    assert ticket(client, tid)["status"] == "active"
    client.post(f"/api/v1/tickets/{tid}/cancel")


def test_a_workflow_of_its_own_phases_walks_to_done(client: Any) -> None:
    """The ``review`` workflow names its own phases: its audit's task emits the report its
    gate wants, its review waits for a person, a regression goes back to the audit, and the
    ticket ends in PHASE_DONE; every phase it passed is in its history and its progress."""
    tid = create(client, "review")["id"]
    waiting = wait_state(client, tid, "blocked", "PHASE_BLOCKED")
    assert waiting["previous_phase"] == "PHASE_REVIEW"  # the audit's gate passed on its own
    gate = client.get(f"/api/v1/tickets/{tid}/gate-status").get_json()
    assert (gate["phase"], gate["latest"]["missing"]) == ("PHASE_REVIEW", ["approval"])
    moves = client.get(f"/api/v1/tickets/{tid}/valid-transitions").get_json()["allowed"]
    assert moves == ["SECURITY_AUDIT", "PHASE_REVIEW"]
    back = client.post(
        f"/api/v1/tickets/{tid}/transition",
        json={"to_phase": "SECURITY_AUDIT", "reason": "audit again"},
    )
    assert back.status_code == 200, back.get_json()
    wait_for(
        lambda: (
            (t := ticket(client, tid))["previous_phase"] == "PHASE_REVIEW"
            and t["status"] == "blocked"
            and len(history(client, tid)) == 5
        ),
        timeout=30,
        what="the second audit to pass and the review to wait again",
    )
    approved = client.post(f"/api/v1/tickets/{tid}/approve", json={"comment": "fine"})
    assert approved.status_code == 201, approved.get_json()
    final = wait_state(client, tid, "done", "PHASE_DONE")
    assert final["previous_phase"] == "PHASE_BLOCKED"
    assert history(client, tid) == [
        ("SECURITY_AUDIT", "PHASE_REVIEW"),
        ("PHASE_REVIEW", "PHASE_BLOCKED"),
        ("PHASE_BLOCKED", "SECURITY_AUDIT"),
        ("SECURITY_AUDIT", "PHASE_REVIEW"),
        ("PHASE_REVIEW", "PHASE_BLOCKED"),
        ("PHASE_BLOCKED", "PHASE_DONE"),  # the approval passed the gate it was blocked by
    ]
    progress = client.get(f"/api/v1/tickets/{tid}/phase-progress").get_json()["items"]
    assert [(p["phase"], p["task_counts"]) for p in progress] == [
        ("SECURITY_AUDIT", {"succeeded": 2}),
        ("PHASE_REVIEW", {"succeeded": 2}),
    ]
    context = client.get(f"/api/v1/tickets/{tid}/context").get_json()
    assert context["phases"]["SECURITY_AUDIT"]["artifacts"] == ["audit"]
    assert "audit clean" in context["summary"]
