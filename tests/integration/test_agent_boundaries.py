"""Agents act only on their own work: a task changes hands only when its holder offered it to
the agent that takes it, and an agent token adds artifacts only to tickets whose tasks it runs.
Every refusal is checked to have written nothing (no message, no lease change, no event)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from omoi.persistence import AgentMessage, Artifact, Database, Event, Task
from omoi.services import tokens
from tests.integration.test_agents import cap
from tests.support.api import bearer, submit, wait_finished
from tests.support.procs import Proc, wait_for


@dataclass(frozen=True)
class Agent:
    """A registered external agent and the agent-scoped token bound to it."""

    id: str
    headers: dict[str, str]


def agent(client: Any, db: Database, caps: list[str], name: str = "agent") -> Agent:
    _, secret = tokens.create(db, f"{name}-{uuid.uuid4().hex[:6]}", ["agent"])
    resp = client.post(
        "/api/v1/agents/register",
        json={"name": name, "capabilities": caps},
        headers=bearer(secret),
    )
    assert resp.status_code == 201, resp.get_json()
    return Agent(str(resp.get_json()["id"]), bearer(secret))


def held_task(client: Any, holder: Agent, skill: str) -> dict[str, Any]:
    """A new external task needing ``skill``, claimed by ``holder``."""
    submit(client, [{"key": "job", "task_type": "x", "capabilities": [skill], "external": True}])
    claimed = client.post(f"/api/v1/agents/{holder.id}/claim", headers=holder.headers)
    assert claimed.status_code == 200, claimed.get_json()
    return claimed.get_json()  # type: ignore[no-any-return]


def footprint(db: Database, task_id: str) -> tuple[Any, ...]:
    """What a handoff changes: the task's holder and lease, its messages, its handoff events."""
    tid = uuid.UUID(task_id)
    with db.session() as s:
        task = s.execute(select(Task.agent_id, Task.lease_token).where(Task.id == tid)).one()
        sent = s.scalar(select(func.count()).where(AgentMessage.task_id == tid))
        handed = s.scalar(
            select(func.count()).where(Event.entity_id == tid, Event.type == "task.handed_off")
        )
    return (*task, sent, handed)


def message(
    client: Any, sender: Agent, to: str, kind: str, task_id: str, thread: str | None = None
) -> Any:
    body = {"type": kind, "from_agent": sender.id, "task_id": task_id, "content": kind}
    if thread is not None:
        body["thread_id"] = thread
    return client.post(f"/api/v1/agents/{to}/messages", json=body, headers=sender.headers)


def offer(client: Any, holder: Agent, task_id: str, **address: Any) -> str:
    """The holder asks another agent (or a capability) to take the task; the thread."""
    body = {"type": "handoff_request", "from_agent": holder.id, "task_id": task_id}
    resp = client.post(
        "/api/v1/messages", json={**body, "content": "take it", **address}, headers=holder.headers
    )
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["thread_id"])


def refused(resp: Any, status: int, code: str) -> None:
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code), resp.get_json()


def test_unsolicited_handoff_accepted_cannot_take_over_a_task(
    api_client: Any, db: Database
) -> None:
    skill = cap()
    holder, thief = (
        agent(api_client, db, [skill], "holder"),
        agent(api_client, db, [skill], "thief"),
    )
    claimed = held_task(api_client, holder, skill)
    task_id = claimed["task_id"]
    before = footprint(db, task_id)
    refused(message(api_client, thief, holder.id, "handoff_accepted", task_id), 422, "invalid")
    refused(
        message(api_client, thief, holder.id, "handoff_accepted", task_id, str(uuid.uuid4())),
        409,
        "no_pending_handoff",
    )
    assert footprint(db, task_id) == before
    made_up = api_client.post(
        f"/api/v1/tasks/{task_id}/complete",
        json={"lease_token": str(uuid.uuid4()), "result": "forged"},
        headers=thief.headers,
    )
    assert made_up.status_code == 403
    done = api_client.post(
        f"/api/v1/tasks/{task_id}/complete",
        json={"lease_token": claimed["lease_token"], "result": "real"},
        headers=holder.headers,
    )
    assert (done.status_code, done.get_json()["result"]) == (200, "real")


def test_unsolicited_handoff_cannot_take_over_a_celery_run_task(
    client: Any, db: Database, worker: Proc
) -> None:
    thief = agent(client, db, [cap()], "thief")  # a task without capabilities: any agent covers
    ticket = submit(client, [{"key": "nap", "task_type": "sleep", "payload": {"seconds": 4}}])
    task_id = ticket["tasks"][0]["id"]

    def started() -> dict[str, Any] | None:
        task = client.get(f"/api/v1/tasks/{task_id}").get_json()
        return task if task["status"] == "running" else None

    running = wait_for(started, what="the worker to start the sleep task")
    celery_agent = running["agent_id"]
    assert client.get(f"/api/v1/agents/{celery_agent}").get_json()["kind"] == "celery"
    before = footprint(db, task_id)
    refused(
        message(client, thief, celery_agent, "handoff_accepted", task_id, str(uuid.uuid4())),
        409,
        "no_pending_handoff",
    )
    # nor may it offer itself the task: only the holder asks, and it cannot speak as the holder
    refused(offer_as(client, thief, thief.id, task_id, to_agent=thief.id), 403, "not_task_holder")
    refused(offer_as(client, thief, celery_agent, task_id, to_agent=thief.id), 403, "forbidden")
    refused(
        client.post(
            f"/api/v1/tickets/{ticket['id']}/artifacts",
            json={"type": "report", "content": "forged"},
            headers=thief.headers,
        ),
        403,
        "not_ticket_holder",
    )
    assert footprint(db, task_id) == before
    assert footprint(db, task_id)[1] is not None  # still running under the worker's lease
    wait_finished(client, ticket["id"])
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert (task["status"], task["result"], task["agent_id"]) == (
        "succeeded",
        {"slept": 4.0},
        celery_agent,
    )


def offer_as(client: Any, token_of: Agent, sender: str, task_id: str, **address: Any) -> Any:
    body = {"type": "handoff_request", "from_agent": sender, "task_id": task_id, "content": "?"}
    return client.post("/api/v1/messages", json={**body, **address}, headers=token_of.headers)


def test_handoff_accepted_for_another_task_is_refused(api_client: Any, db: Database) -> None:
    skill = cap()
    holder, taker = (
        agent(api_client, db, [skill], "holder"),
        agent(api_client, db, [skill], "taker"),
    )
    offered = held_task(api_client, holder, skill)["task_id"]
    kept = held_task(api_client, holder, skill)["task_id"]
    thread = offer(api_client, holder, offered, to_agent=taker.id)
    before = footprint(db, kept)
    refused(
        message(api_client, taker, holder.id, "handoff_accepted", kept, thread),
        409,
        "no_pending_handoff",
    )
    assert footprint(db, kept) == before
    took = message(api_client, taker, holder.id, "handoff_accepted", offered, thread)
    assert took.status_code == 201 and took.get_json()["lease_token"]
    assert footprint(db, offered)[0] == uuid.UUID(taker.id)


def test_handoff_offered_to_another_agent_cannot_be_accepted(api_client: Any, db: Database) -> None:
    skill = cap()
    holder = agent(api_client, db, [skill], "holder")
    chosen, bystander = agent(api_client, db, [skill], "chosen"), agent(api_client, db, [skill])
    task_id = held_task(api_client, holder, skill)["task_id"]
    thread = offer(api_client, holder, task_id, to_agent=chosen.id)
    before = footprint(db, task_id)
    refused(
        message(api_client, bystander, holder.id, "handoff_accepted", task_id, thread),
        409,
        "no_pending_handoff",
    )
    # an acceptance must go back to the holder who asked, not anywhere else
    refused(
        message(api_client, chosen, bystander.id, "handoff_accepted", task_id, thread),
        409,
        "no_pending_handoff",
    )
    assert footprint(db, task_id) == before


def test_a_non_holder_cannot_offer_a_task(api_client: Any, db: Database) -> None:
    """An agent offering another's task to an accomplice, which would then accept it."""
    skill = cap()
    holder, thief = (
        agent(api_client, db, [skill], "holder"),
        agent(api_client, db, [skill], "thief"),
    )
    accomplice = agent(api_client, db, [skill], "accomplice")
    task_id = held_task(api_client, holder, skill)["task_id"]
    before = footprint(db, task_id)
    refused(
        offer_as(api_client, thief, thief.id, task_id, capability=skill), 403, "not_task_holder"
    )
    refused(offer_as(api_client, thief, holder.id, task_id, capability=skill), 403, "forbidden")
    anonymous = api_client.post(  # an admin naming no sender: nobody holds the task as "no one"
        "/api/v1/messages",
        json={
            "type": "handoff_request",
            "task_id": task_id,
            "to_agent": accomplice.id,
            "content": 1,
        },
    )
    assert anonymous.status_code == 422
    assert footprint(db, task_id) == before


def test_an_agent_lacking_the_task_capabilities_cannot_accept(
    api_client: Any, db: Database
) -> None:
    skill, other = cap(), cap()
    holder = agent(api_client, db, [skill, other], "holder")
    partial = agent(api_client, db, [skill], "partial")
    submit(
        api_client,
        [{"key": "both", "task_type": "x", "capabilities": [skill, other], "external": True}],
    )
    task_id = api_client.post(
        f"/api/v1/agents/{holder.id}/claim", headers=holder.headers
    ).get_json()["task_id"]
    thread = offer(api_client, holder, task_id, capability=skill)
    before = footprint(db, task_id)
    refused(
        message(api_client, partial, holder.id, "handoff_accepted", task_id, thread),
        403,
        "capabilities_do_not_cover_task",
    )
    assert footprint(db, task_id) == before


def test_an_answered_request_cannot_be_accepted(api_client: Any, db: Database) -> None:
    skill = cap()
    holder, taker = (
        agent(api_client, db, [skill], "holder"),
        agent(api_client, db, [skill], "taker"),
    )
    task_id = held_task(api_client, holder, skill)["task_id"]
    thread = offer(api_client, holder, task_id, to_agent=taker.id)
    declined = message(api_client, taker, holder.id, "handoff_declined", task_id, thread)
    assert declined.status_code == 201
    before = footprint(db, task_id)
    for kind in ("handoff_accepted", "handoff_declined"):
        refused(
            message(api_client, taker, holder.id, kind, task_id, thread), 409, "no_pending_handoff"
        )
    assert footprint(db, task_id) == before


def test_a_request_made_before_the_task_changed_hands_cannot_be_accepted(
    store: tuple[Database, Any],
) -> None:
    """Offered to a capability, taken by one agent and handed back: the holder is the asker
    again, but the other agent's old copy was asked under a holding that has ended. On
    PostgreSQL and on SQLite."""
    db, api_client = store
    skill = cap()
    holder = agent(api_client, db, [skill], "holder")
    first, late = agent(api_client, db, [skill], "first"), agent(api_client, db, [skill], "late")
    task_id = held_task(api_client, holder, skill)["task_id"]
    old = offer(api_client, holder, task_id, capability=skill)
    assert (
        message(api_client, first, holder.id, "handoff_accepted", task_id, old).status_code == 201
    )
    back = offer(api_client, first, task_id, to_agent=holder.id)
    assert (
        message(api_client, holder, first.id, "handoff_accepted", task_id, back).status_code == 201
    )
    before = footprint(db, task_id)
    assert before[0] == uuid.UUID(holder.id)
    refused(
        message(api_client, late, holder.id, "handoff_accepted", task_id, old),
        409,
        "no_pending_handoff",
    )
    assert footprint(db, task_id) == before


def test_a_request_made_in_an_ended_attempt_cannot_be_accepted(
    api_client: Any, db: Database
) -> None:
    skill = cap()
    holder, taker = (
        agent(api_client, db, [skill], "holder"),
        agent(api_client, db, [skill], "taker"),
    )
    claimed = held_task(api_client, holder, skill)
    task_id = claimed["task_id"]
    thread = offer(api_client, holder, task_id, to_agent=taker.id)
    failed = api_client.post(
        f"/api/v1/tasks/{task_id}/fail",
        json={
            "lease_token": claimed["lease_token"],
            "error": {"message": "no", "category": "permanent"},
        },
        headers=holder.headers,
    )
    assert failed.get_json()["status"] == "failed"
    refused(
        message(api_client, taker, holder.id, "handoff_accepted", task_id, thread),
        409,
        "task_not_running",
    )
    assert api_client.post(f"/api/v1/tasks/{task_id}/retry").status_code == 200
    again = api_client.post(f"/api/v1/agents/{holder.id}/claim", headers=holder.headers)
    assert again.get_json()["task_id"] == task_id  # the same holder, a new attempt
    before = footprint(db, task_id)
    refused(
        message(api_client, taker, holder.id, "handoff_accepted", task_id, thread),
        409,
        "no_pending_handoff",
    )
    assert footprint(db, task_id) == before


def accept_together(
    rivals: list[tuple[Agent, Any]], holder: Agent, task_id: str, thread: str
) -> dict[str, tuple[int, Any]]:
    """Every rival accepts the same request at once (each on its own client and thread)."""
    start = threading.Barrier(len(rivals))
    answers: dict[str, tuple[int, Any]] = {}

    def accept(rival: Agent, client: Any) -> None:
        start.wait(timeout=10)
        resp = message(client, rival, holder.id, "handoff_accepted", task_id, thread)
        answers[rival.id] = (resp.status_code, resp.get_json())

    threads = [threading.Thread(target=accept, args=pair) for pair in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def test_two_agents_accepting_one_request_exactly_one_wins(api_client: Any, db: Database) -> None:
    skill = cap()
    holder = agent(api_client, db, [skill], "holder")
    rivals = [
        (agent(api_client, db, [skill], f"rival{i}"), api_client.application.test_client())
        for i in range(2)
    ]
    for _ in range(100):
        task_id = held_task(api_client, holder, skill)["task_id"]
        thread = offer(api_client, holder, task_id, capability=skill)
        answers = accept_together(rivals, holder, task_id, thread)
        winners = [a for a, (status, _) in answers.items() if status == 201]
        assert len(winners) == 1, answers
        assert [b["error"]["code"] for s, b in answers.values() if s != 201] == [
            "no_pending_handoff"
        ]
        holder_now, lease, _, handed = footprint(db, task_id)
        assert (str(holder_now), handed) == (winners[0], 1)
        assert str(lease) == answers[winners[0]][1]["lease_token"]
        with db.session() as s:
            accepted = s.scalar(
                select(func.count()).where(
                    AgentMessage.task_id == uuid.UUID(task_id),
                    AgentMessage.type == "handoff_accepted",
                )
            )
        assert accepted == 1


def test_agent_cannot_add_artifacts_to_a_stranger_ticket(api_client: Any, db: Database) -> None:
    skill = cap()
    holder, stranger = agent(api_client, db, [skill], "holder"), agent(api_client, db, [cap()])
    claimed = held_task(api_client, holder, skill)
    ticket_id = api_client.get(f"/api/v1/tasks/{claimed['task_id']}").get_json()["ticket_id"]
    _, unbound = tokens.create(db, f"unbound-{uuid.uuid4().hex[:6]}", ["agent"])
    path = f"/api/v1/tickets/{ticket_id}/artifacts"
    report = {"type": "report", "content": "forged"}

    def artifacts() -> list[tuple[str, Any]]:
        with db.session() as s:
            rows = s.execute(
                select(Artifact.content, Artifact.task_id)
                .where(Artifact.ticket_id == uuid.UUID(ticket_id))
                .order_by(Artifact.id)
            )
            return [(c, str(t) if t else None) for c, t in rows]

    refused(api_client.post(path, json=report, headers=stranger.headers), 403, "not_ticket_holder")
    refused(api_client.post(path, json=report, headers=bearer(unbound)), 403, "not_ticket_holder")
    assert artifacts() == []
    own = api_client.post(path, json={"type": "report", "content": "mine"}, headers=holder.headers)
    assert own.status_code == 201
    assert artifacts() == [("mine", claimed["task_id"])]  # it names the task its agent runs
    done = api_client.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        json={"lease_token": claimed["lease_token"], "result": 1},
        headers=holder.headers,
    )
    assert done.status_code == 200
    refused(api_client.post(path, json=report, headers=holder.headers), 403, "not_ticket_holder")
    _, submitter = tokens.create(db, f"submit-{uuid.uuid4().hex[:6]}", ["submit"])
    by_submitter = {"type": "review", "content": "ok"}
    assert api_client.post(path, json=by_submitter, headers=bearer(submitter)).status_code == 201
    assert [c for c, _ in artifacts()] == ["mine", "ok"]
