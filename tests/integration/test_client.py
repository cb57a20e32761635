"""``omoi.client`` against a real API server (gunicorn) and prefork worker on PostgreSQL and
Redis: a gated ticket walked to done through the client alone (its events streamed, its
artifacts, approvals and context, an external agent doing one of its tasks), messages, the
server's health, the errors the client raises, and examples/python_agent.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omoi.client import ApiError, ApiUnreachable, Client
from tests.support.api import ADMIN_TOKEN
from tests.support.procs import ROOT, Proc, free_port, start_api, wait_for

SPEC = {"text": "## Scope\n\nEverything the orders API accepts."}


@pytest.fixture(scope="module")
def api_env(env: dict[str, str], tmp_root: Path) -> Iterator[dict[str, str]]:
    """A real API server's environment: ``OMOI_API_PORT`` names where it listens."""
    proc, server_env = start_api(env, tmp_root)
    yield {**server_env, "OMOI_API_URL": f"http://127.0.0.1:{server_env['OMOI_API_PORT']}"}
    proc.stop()


@pytest.fixture()
def api(api_env: dict[str, str]) -> Client:
    return Client(api_env["OMOI_API_URL"], ADMIN_TOKEN)


def cap() -> str:
    """A capability no other test uses."""
    return f"c{uuid.uuid4().hex[:10]}"


def waiting_in(api: Client, ticket_id: str, phase: str) -> dict[str, Any]:
    """The ticket once its walk has stopped, blocked after ``phase``."""
    return wait_for(
        lambda: (
            (t := api.ticket(ticket_id))["status"] == "blocked"
            and t["previous_phase"] == phase
            and t
        ),
        timeout=60,
        what=f"the ticket to stop after {phase}",
    )


def test_a_gated_ticket_walks_to_done_through_the_client(api: Client, worker: Proc) -> None:
    """Submitted, streamed until its first gate holds it, given the artifact that gate wants,
    one of its design tasks done by an external agent (register, heartbeat, claim, log,
    complete), approved twice, done: every step through ``Client``."""
    skill = cap()
    translate = {
        "key": "translate",
        "task_type": "translate",
        "phase": "PHASE_DESIGN",
        "external": True,
        "capabilities": [skill],
        "payload": {"text": "hi"},
    }
    ticket = api.submit({"title": "client", "workflow": "gated", "tasks": [translate]})
    tid = ticket["id"]
    assert [t["key"] for t in ticket["tasks"]] == ["draft"]

    walk = list(api.ticket_events(tid, timeout=60))  # ends where the spec gate holds it
    kinds = [e["type"] for e in walk]
    assert kinds[0] == "ticket.created" and "task.succeeded" in kinds
    assert (kinds[-1], walk[-1]["payload"]["to"]) == ("ticket.phase_changed", "PHASE_BLOCKED")
    gate = api.gate_status(tid)
    assert (gate["phase"], gate["latest"]["missing"]) == ("PHASE_REQUIREMENTS", ["spec"])
    assert api.valid_transitions(tid)["allowed"] == ["PHASE_REQUIREMENTS"]  # back, once let

    artifact = api.add_artifact(tid, "spec", SPEC, path="docs/spec.md")
    [stored] = api.artifacts(tid)
    assert (stored["id"], stored["type"], stored["phase"]) == (
        artifact,
        "spec",
        "PHASE_REQUIREMENTS",
    )
    assert (stored["content"], stored["path"]) == (SPEC, "docs/spec.md")
    assert api.artifacts(tid, phase="PHASE_DESIGN") == []

    agent = api.register("client-agent", [skill], capacity=2)
    assert api.heartbeat(agent["id"]) == {"agent_id": agent["id"], "status": "idle"}
    assert api.best_fit([skill])["id"] == agent["id"]
    claim = wait_for(lambda: api.claim(agent["id"]), timeout=30, what="the design task")
    assert (claim["ticket_id"], claim["key"], claim["payload"]) == (
        tid,
        "translate",
        {"text": "hi"},
    )
    assert claim["ticket_context"]["phases"]["PHASE_REQUIREMENTS"]  # what requirements handed on
    posted = api.post_logs(claim["task_id"], claim["lease_token"], ["translating", "done"])
    assert (posted["attempt"], posted["stored"], posted["truncated"]) == (1, 2, False)
    assert api.heartbeat(agent["id"], running=[claim["task_id"]])["status"] == "busy"
    health = api.agent_health(agent["id"])
    assert (health["healthy"], health["running_tasks"], health["free_capacity"]) == (True, 1, 1)
    done = api.complete(claim["task_id"], claim["lease_token"], {"text": "HI"})
    assert (done["status"], done["result"], done["agent_id"]) == (
        "succeeded",
        {"text": "HI"},
        agent["id"],
    )
    log = api.logs(claim["task_id"])
    assert [(line["stream"], line["line"]) for line in log["lines"]] == [
        ("agent", "translating"),
        ("agent", "done"),
    ]

    waiting_in(api, tid, "PHASE_DESIGN")
    assert api.gate_status(tid)["latest"]["missing"] == ["approval"]
    assert api.approve(tid, "the design holds")["status"] == "active"
    waiting_in(api, tid, "PHASE_TESTING")
    api.approve(tid, "tested", phase="PHASE_TESTING")
    final = wait_for(
        lambda: (t := api.ticket(tid))["status"] == "done" and t, timeout=60, what="done"
    )
    assert final["phase"] == "PHASE_DONE"

    replay = list(api.ticket_events(tid, timeout=60))  # from the beginning, to the end
    assert replay[: len(walk)] == walk and replay[-1]["type"] == "ticket.completed"
    assert [e["type"] for e in api.events(ticket_id=tid, type="gate.")].count("gate.approved") == 2
    moves = [(h["from_phase"], h["to_phase"]) for h in api.phase_history(tid)]
    assert moves[0] == ("PHASE_REQUIREMENTS", "PHASE_BLOCKED") and moves[-1][1] == "PHASE_DONE"
    context = api.context(tid)
    assert {"PHASE_REQUIREMENTS", "PHASE_DESIGN"} <= set(context["phases"])
    assert api.valid_transitions(tid)["allowed"] == []


def test_an_external_agent_fails_a_task_and_moves_it_by_hand(api: Client) -> None:
    """``fail`` with a permanent error ends the task failed; a move the workflow forbids is
    an ``ApiError`` naming what it allows, and ``force`` moves the blocked ticket on."""
    skill = cap()
    task = {"key": "scan", "task_type": "scan", "external": True, "capabilities": [skill]}
    tid = api.submit({"title": "fails", "tasks": [task]})["id"]
    agent = api.register("failing-agent", [skill])
    claim = api.claim(agent["id"])
    assert claim is not None and api.claim(agent["id"]) is None  # nothing more to do
    assert api.claims(agent["id"], most=5, wait=0.2) == []  # nor after waiting
    failed = api.fail(
        claim["task_id"], claim["lease_token"], "scanner crashed", category="permanent"
    )
    assert (failed["status"], failed["error"]["message"]) == ("failed", "scanner crashed")
    with pytest.raises(ApiError) as late:
        api.complete(claim["task_id"], claim["lease_token"])
    assert late.value.status == 409
    blocked = wait_for(lambda: (t := api.ticket(tid))["status"] == "blocked" and t, what="blocked")
    assert blocked["phase"] == "PHASE_BLOCKED"
    with pytest.raises(ApiError) as refused:
        api.transition(tid, "PHASE_DONE")
    assert (refused.value.status, refused.value.details["allowed"]) == (409, ["PHASE_RUN"])
    assert refused.value.message.endswith("allowed: PHASE_RUN")
    with pytest.raises(ApiError) as foreign:
        api.transition(tid, "PHASE_DESIGN")
    assert (foreign.value.status, foreign.value.code) == (422, "invalid")
    assert foreign.value.message == "PHASE_DESIGN is not a phase of workflow dag"
    moved = api.transition(tid, "PHASE_DONE", "accepted as is", force=True)
    assert moved["phase"] == "PHASE_DONE"


def test_agents_message_each_other_through_the_client(api: Client) -> None:
    skill = cap()
    alice = api.register("alice", [skill])["id"]
    bob = api.register("bob", [skill])["id"]
    sent = api.send({"q": "which schema?"}, to_agent=bob, from_agent=alice, type="question")
    [message] = api.inbox(bob, unread_only=True)
    assert (message["id"], message["content"], message["from_agent"]) == (
        sent["message_ids"][0],
        {"q": "which schema?"},
        alice,
    )
    assert message["thread_id"] == sent["thread_id"]
    assert api.mark_read(bob, [message["id"]]) == 1
    assert api.inbox(bob, unread_only=True) == [] and len(api.inbox(bob)) == 1
    by_skill = api.send("the cache is stale", capability=skill, from_agent=bob)
    assert [m["id"] for m in api.inbox(alice)] == by_skill["message_ids"]
    assert [a["id"] for a in api.agents(skill, kind="external")] == [bob, alice]


def test_the_server_and_the_fleet_as_the_client_sees_them(api: Client, worker: Proc) -> None:
    assert api.healthz()["status"] == "ok"
    assert api.readyz() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    stats = api.agent_stats()
    assert stats["by_kind"]["celery"] >= 1 and stats["live_capacity"] >= 2
    assert all(a["status"] in ("stale", "idle", "busy") for a in api.stale())
    assert api.locks(name=f"none-{uuid.uuid4().hex}") == {"held": [], "waiting": []}
    assert api.best_fit([cap()]) is None  # nobody has it: a 404 the client answers with None


def test_errors_carry_the_apis_code_and_message(api: Client) -> None:
    with pytest.raises(ApiError) as invalid:
        api.submit({"title": "x", "colour": "blue"})
    assert (invalid.value.status, invalid.value.code) == (422, "unprocessable_entity")
    assert invalid.value.message == "request validation failed"
    assert "colour" in invalid.value.details["json"]
    unknown = str(uuid.uuid4())
    with pytest.raises(ApiError) as missing:
        api.ticket(unknown)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert unknown in missing.value.message
    with pytest.raises(ApiError) as anonymous:
        Client(api.url).tickets()
    assert anonymous.value.status == 401


def test_a_closed_port_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiUnreachable) as gone:
        Client(url, timeout=2).healthz()
    assert (gone.value.url, gone.value.reason) == (url, "Connection refused")


def test_the_python_example_agent_drains_its_queue(api: Client, api_env: dict[str, str]) -> None:
    """examples/python_agent.py on ``omoi.client``: one task done, one whose payload it
    cannot use failed for good, then (``--once``) it exits."""
    skill = cap()
    tasks = [
        {
            "key": k,
            "task_type": "translate",
            "external": True,
            "capabilities": [skill],
            "payload": p,
        }
        for k, p in (("good", {"text": "hi"}), ("bad", {"text": 3}))
    ]
    tid = api.submit({"title": "example", "tasks": tasks})["id"]
    run = subprocess.run(
        [sys.executable, "-m", "examples.python_agent", "--once", "--capabilities", skill],
        cwd=ROOT,
        env=api_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "completed good" in run.stdout and "failed bad" in run.stdout
    ended = {t["key"]: t for t in api.tasks(ticket_id=tid)}
    assert (ended["good"]["status"], ended["good"]["result"]) == (
        "succeeded",
        {"text": "HI", "inputs": []},
    )
    assert (ended["bad"]["status"], ended["bad"]["error"]["category"]) == ("failed", "permanent")
    assert api.logs(ended["good"]["id"])["lines"][0]["line"] == "python-agent took good"


def test_an_agent_claims_a_batch_and_waits_for_more(api: Client) -> None:
    """``claims`` takes several tasks in one round trip; ``claim(wait=)`` is held until the
    next one is submitted (the long poll's answer outlives the client's own timeout)."""
    skill = cap()
    spec = {"task_type": "scan", "external": True, "capabilities": [skill]}
    api.submit({"title": "batch", "tasks": [{"key": f"b{i}", **spec} for i in range(3)]})
    agent = api.register("batch-agent", [skill])["id"]
    batch = api.claims(agent, most=10)
    assert sorted(c["key"] for c in batch) == ["b0", "b1", "b2"]
    for c in batch:
        api.complete(c["task_id"], c["lease_token"], {"ok": True})
    patient = Client(api.url, api.token, timeout=1.0)
    assert patient.claim(agent, wait=1.5) is None  # held past the client's own timeout
    found: list[Any] = []
    waiter = threading.Thread(target=lambda: found.append(patient.claim(agent, wait=20)))
    waiter.daemon = True
    waiter.start()
    api.submit({"title": "later", "tasks": [{"key": "late", **spec}]})
    waiter.join(30)
    assert found and found[0] is not None and found[0]["key"] == "late"
    api.complete(found[0]["task_id"], found[0]["lease_token"])
