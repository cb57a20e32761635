"""External agents that wait instead of polling: a claim with ``wait`` is held until a task
the agent may take is ready, woken by the commit that made it ready (over Redis pub/sub, from
another API process's commit), and a batch claim takes several tasks, each under its own
lease, in one round trip."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import redis

from omoi.broker.signals import RedisSignal
from omoi.config import Settings
from omoi.persistence import Database
from omoi.services.external_agents import Doorbell
from tests.support.api import make_app, submit
from tests.support.procs import wait_for


def cap() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def register(client: Any, skill: str) -> str:
    resp = client.post("/api/v1/agents/register", json={"name": "poller", "capabilities": [skill]})
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def external(skill: str, *keys: str) -> list[dict[str, Any]]:
    return [
        {"key": k, "task_type": "scan", "capabilities": [skill], "external": True} for k in keys
    ]


def test_a_waiting_claim_is_answered_by_the_commit_that_made_its_task_ready(
    settings: Settings, db: Database, redis_client: redis.Redis
) -> None:
    """The waiting API polls only every 300 s here, so the claim can only come back within the
    test's deadline if the other API's commit woke it through the work signal."""
    waiting = make_app(settings, db=db)
    runtime = waiting.extensions["omoi"]
    signal = RedisSignal(settings.broker_url, settings.work_channel)  # as its root's
    runtime.doorbell = Doorbell(listen=signal.listen, poll=300)
    submitter = make_app(settings, db=db).test_client()
    skill = cap()
    agent = register(submitter, skill)
    answer: dict[str, Any] = {}

    def claim() -> None:
        resp = waiting.test_client().post(f"/api/v1/agents/{agent}/claim?wait=60")
        answer.update(status=resp.status_code, body=resp.get_json())

    claimer = threading.Thread(target=claim, daemon=True)
    claimer.start()
    wait_for(lambda: runtime.doorbell.waiting == 1, what="the claim to wait")
    channel = settings.work_channel
    wait_for(lambda: redis_client.pubsub_numsub(channel)[0][1] >= 1, what="the API to subscribe")
    ticket = submit(submitter, external(skill, "late"))
    claimer.join(timeout=30)
    assert not claimer.is_alive(), "the claim was not woken by the commit"
    assert answer["status"] == 200
    assert (answer["body"]["key"], answer["body"]["ticket_id"]) == ("late", ticket["id"])
    done = submitter.post(
        f"/api/v1/tasks/{answer['body']['task_id']}/complete",
        json={"lease_token": answer["body"]["lease_token"], "result": {"ok": True}},
    )
    assert done.status_code == 200


def test_a_wait_that_finds_nothing_answers_204(api_client: Any) -> None:
    agent = register(api_client, cap())
    assert api_client.post(f"/api/v1/agents/{agent}/claim?wait=0.3").status_code == 204
    empty = api_client.post(f"/api/v1/agents/{agent}/claims?wait=0.3")
    assert (empty.status_code, empty.get_json()) == (200, {"items": []})


def test_a_batch_claim_takes_up_to_max_each_under_its_own_lease(api_client: Any) -> None:
    skill = cap()
    agent = register(api_client, skill)
    submit(api_client, external(skill, *(f"t{i}" for i in range(5))))
    first = api_client.post(f"/api/v1/agents/{agent}/claims?max=3").get_json()["items"]
    rest = api_client.post(f"/api/v1/agents/{agent}/claims?max=10").get_json()["items"]
    assert (len(first), len(rest)) == (3, 2)
    claimed = first + rest
    assert sorted(c["key"] for c in claimed) == [f"t{i}" for i in range(5)]
    assert len({c["lease_token"] for c in claimed}) == 5
    for c in claimed:
        done = api_client.post(
            f"/api/v1/tasks/{c['task_id']}/complete",
            json={"lease_token": c["lease_token"], "result": {"key": c["key"]}},
        )
        assert done.status_code == 200, done.get_json()
    assert api_client.post(f"/api/v1/agents/{agent}/claims").get_json() == {"items": []}


def test_claim_parameters_out_of_range_are_refused_with_json(api_client: Any) -> None:
    agent = register(api_client, cap())
    for query in (
        "claim?wait=61",
        "claim?wait=-1",
        "claims?max=0",
        "claims?max=101",
        "claim?wait=x",
    ):
        resp = api_client.post(f"/api/v1/agents/{agent}/{query}")
        assert resp.status_code == 422, query
        assert resp.get_json()["error"]["code"], query
    missing = api_client.post(f"/api/v1/agents/{uuid.uuid4()}/claims?wait=5")
    assert missing.status_code == 404  # at once, not after the wait
