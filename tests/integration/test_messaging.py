"""Agent messaging: durable inboxes, addressing, threads, live delivery, handoffs."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from omoi.persistence import Agent, Database
from omoi.persistence.types import utcnow
from omoi.services import agents
from omoi.services.failures import RetryPolicy
from tests.integration.test_agents import cap, register
from tests.integration.test_events import read_stream
from tests.support.api import wait_finished
from tests.support.units import unit_of_work


def test_a_message_sent_while_away_is_in_the_inbox(api_client: Any, db: Database) -> None:
    bob = register(api_client, [cap()], "bob")
    with db.session() as session:  # bob stopped heartbeating a minute ago: he is away
        session.execute(
            update(Agent)
            .where(Agent.id == uuid.UUID(bob))
            .values(last_heartbeat=utcnow() - timedelta(seconds=60))
        )
    agents.sweep_stale(unit_of_work(db), RetryPolicy(), timeout=4)
    assert api_client.get(f"/api/v1/agents/{bob}").get_json()["status"] == "stale"
    sent = api_client.post(
        f"/api/v1/agents/{bob}/messages",
        json={"type": "question", "content": {"q": "which schema?"}},
    )
    assert sent.status_code == 201
    thread = sent.get_json()["thread_id"]
    assert api_client.post(f"/api/v1/agents/{bob}/heartbeat").get_json()["status"] == "idle"
    inbox = api_client.get(f"/api/v1/agents/{bob}/messages?unread_only=true").get_json()
    assert [(m["type"], m["content"], m["thread_id"]) for m in inbox["items"]] == [
        ("question", {"q": "which schema?"}, thread)
    ]
    marked = api_client.post(
        f"/api/v1/agents/{bob}/messages/read", json={"message_ids": [inbox["items"][0]["id"]]}
    )
    assert marked.get_json()["marked"] == 1
    assert (
        api_client.get(f"/api/v1/agents/{bob}/messages?unread_only=true").get_json()["items"] == []
    )
    assert len(api_client.get(f"/api/v1/agents/{bob}/messages").get_json()["items"]) == 1


def test_capability_and_broadcast_sends_and_live_delivery(api_client: Any) -> None:
    skill = cap()
    alice = register(api_client, [skill], "alice")
    carol = register(api_client, [skill], "carol")
    dave = register(api_client, [cap()], "dave")
    by_cap = api_client.post(
        "/api/v1/messages",
        json={
            "capability": skill,
            "from_agent": alice,
            "type": "discovery",
            "content": "the cache is stale",
        },
    ).get_json()
    assert len(by_cap["message_ids"]) == 1  # carol only: the sender is not its own audience
    assert (
        api_client.get(f"/api/v1/agents/{carol}/messages").get_json()["items"][0]["audience"]
        == f"capability:{skill}"
    )
    everyone = api_client.post(
        "/api/v1/messages",
        json={"broadcast": True, "from_agent": dave, "type": "warning", "content": "deploy freeze"},
    )
    assert {carol, alice} <= {
        m["to_agent"]
        for m in [
            *api_client.get(f"/api/v1/agents/{carol}/messages").get_json()["items"],
            *api_client.get(f"/api/v1/agents/{alice}/messages").get_json()["items"],
        ]
    }
    assert everyone.status_code == 201
    live = read_stream(api_client, f"/api/v1/events/stream?entity_id={carol}&timeout=1")
    assert [t for _, t in live] == ["agent.registered", "message.sent", "message.sent"]
    both = api_client.post(
        "/api/v1/messages", json={"to_agent": carol, "broadcast": True, "content": "?"}
    )
    assert both.status_code == 422
    missing = api_client.post(f"/api/v1/agents/{uuid.uuid4()}/messages", json={"content": 1})
    assert missing.status_code == 404


def test_accepting_a_handoff_moves_the_task(api_client: Any) -> None:
    skill = cap()
    first = register(api_client, [skill], "first")
    second = register(api_client, [skill], "second")
    api_client.post(
        "/api/v1/tickets",
        json={
            "title": "h",
            "tasks": [{"key": "job", "task_type": "x", "capabilities": [skill], "external": True}],
        },
    )
    claimed = api_client.post(f"/api/v1/agents/{first}/claim").get_json()
    request = api_client.post(
        f"/api/v1/agents/{second}/messages",
        json={
            "type": "handoff_request",
            "from_agent": first,
            "task_id": claimed["task_id"],
            "content": "I am overloaded",
        },
    ).get_json()
    accepted = api_client.post(
        f"/api/v1/agents/{first}/messages",
        json={
            "type": "handoff_accepted",
            "from_agent": second,
            "task_id": claimed["task_id"],
            "thread_id": request["thread_id"],
            "content": "on it",
        },
    ).get_json()
    assert accepted["lease_token"] is not None
    task = api_client.get(f"/api/v1/tasks/{claimed['task_id']}").get_json()
    assert task["agent_id"] == second
    stale = api_client.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        json={"lease_token": claimed["lease_token"], "result": 1},
    )
    assert stale.status_code == 409  # the first agent no longer holds it
    done = api_client.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        json={"lease_token": accepted["lease_token"], "result": 2},
    )
    assert done.get_json()["result"] == 2
    thread = api_client.get(
        f"/api/v1/agents/{first}/messages?thread_id={request['thread_id']}"
    ).get_json()["items"]
    assert [m["type"] for m in thread] == ["handoff_accepted"]
    again = api_client.post(
        f"/api/v1/agents/{first}/messages",
        json={
            "type": "handoff_accepted",
            "from_agent": second,
            "task_id": claimed["task_id"],
            "thread_id": request["thread_id"],
            "content": "twice",
        },
    )
    assert again.status_code == 409  # the task has ended: there is nothing to take over


def test_a_handler_messages_as_its_worker_agent(client: Any, worker: Any) -> None:
    listener = register(client, [cap()], "listener")
    ticket = client.post(
        "/api/v1/tickets",
        json={
            "title": "m",
            "tasks": [
                {
                    "key": "talk",
                    "task_type": "messenger",
                    "payload": {"to": listener, "text": "found a bug in parse()"},
                }
            ],
        },
    ).get_json()
    wait_finished(client, ticket["id"])
    result = client.get(f"/api/v1/tasks/{ticket['tasks'][0]['id']}").get_json()["result"]
    inbox = client.get(f"/api/v1/agents/{listener}/messages").get_json()["items"]
    assert [(m["from_agent"], m["content"]) for m in inbox] == [
        (result["from"], {"text": "found a bug in parse()"})
    ]
    assert client.get(f"/api/v1/agents/{result['from']}").get_json()["kind"] == "celery"
