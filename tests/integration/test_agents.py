"""Agents: Celery workers registering and heartbeating, discovery, capability routing, and the
pull protocol external agents speak over HTTP."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, update

from omoi.domain.enums import AgentKind, Priority
from omoi.persistence import Agent, Database, Task, Ticket, claims
from omoi.persistence.types import utcnow
from omoi.services import agents
from omoi.services.failures import RetryPolicy
from tests.support.api import submit, wait_finished
from tests.support.procs import ROOT, Proc, start_worker, wait_for
from tests.support.units import unit_of_work


def register(client: Any, caps: list[str], name: str = "ext", capacity: int = 1) -> str:
    resp = client.post(
        "/api/v1/agents/register", json={"name": name, "capabilities": caps, "capacity": capacity}
    )
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def cap() -> str:
    """A capability no other test uses."""
    return f"c{uuid.uuid4().hex[:10]}"


def test_a_celery_worker_registers_and_heartbeats(client: Any, worker: Proc) -> None:
    mine = [
        a
        for a in client.get("/api/v1/agents?kind=celery").get_json()["items"]
        if a["pid"] == worker.pid
    ]
    assert len(mine) == 1
    agent = mine[0]
    assert (agent["capabilities"], agent["capacity"]) == (["default"], 2)
    assert agent["status"] in ("idle", "busy")
    first = agent["last_heartbeat"]
    wait_for(
        lambda: client.get(f"/api/v1/agents/{agent['id']}").get_json()["last_heartbeat"] != first,
        timeout=10,
        what="a heartbeat",
    )
    health = client.get(f"/api/v1/agents/{agent['id']}/health").get_json()
    assert health["healthy"] and health["heartbeat_timeout"] == 4


def test_a_clean_shutdown_marks_the_agent_offline(
    client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    proc, _ = start_worker(env, tmp_path, concurrency=1, capabilities=cap())
    agent_id = wait_for(
        lambda: next(
            (
                a["id"]
                for a in client.get("/api/v1/agents?kind=celery").get_json()["items"]
                if a["pid"] == proc.pid
            ),
            None,
        ),
        what="the worker's agent row",
    )
    proc.stop()
    assert client.get(f"/api/v1/agents/{agent_id}").get_json()["status"] == "offline"


def test_tasks_run_only_on_workers_with_their_capability(
    client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    gpu = cap()
    proc, _ = start_worker(env, tmp_path, concurrency=1, capabilities=gpu)
    try:
        gpu_agent = wait_for(
            lambda: next(
                (
                    a["id"]
                    for a in client.get(f"/api/v1/agents?capability={gpu}").get_json()["items"]
                ),
                None,
            ),
            what="the gpu worker's agent",
        )
        ticket = submit(
            client,
            [{"key": f"g{i}", "task_type": "effect", "capabilities": [gpu]} for i in range(4)]
            + [{"key": "plain", "task_type": "effect"}],
        )
        assert wait_finished(client, ticket["id"])["status"] == "done"
        tasks = client.get(f"/api/v1/tasks?ticket_id={ticket['id']}").get_json()["items"]
        ran_on = {t["key"]: t["agent_id"] for t in tasks}
        assert all(ran_on[f"g{i}"] == gpu_agent for i in range(4))
        assert ran_on["plain"] is not None
    finally:
        proc.stop()


def test_discovery_best_fit_and_statistics(api_client: Any) -> None:
    a, b, c = cap(), cap(), cap()
    both = register(api_client, [a, b], "both")
    only_a = register(api_client, [a], "only-a", capacity=8)
    register(api_client, [c], "other")
    fit = api_client.get(f"/api/v1/agents/best-fit?capabilities={a},{b}").get_json()
    assert fit["id"] == both  # coverage before free capacity
    fit = api_client.get(f"/api/v1/agents/best-fit?capabilities={a}").get_json()
    assert fit["id"] == only_a  # equal coverage: more free capacity wins
    missing = api_client.get(f"/api/v1/agents/best-fit?capabilities={cap()}")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    listed = api_client.get(f"/api/v1/agents?capability={a}").get_json()["items"]
    assert {x["id"] for x in listed} == {both, only_a}
    stats = api_client.get("/api/v1/agents/stats").get_json()
    assert stats["by_kind"]["external"] >= 3 and stats["live_capacity"] >= 10
    bad = api_client.post("/api/v1/agents/register", json={"name": "x", "capabilities": []})
    assert bad.status_code == 422
    assert api_client.get(f"/api/v1/agents/{uuid.uuid4()}").status_code == 404
    assert api_client.post(f"/api/v1/agents/{uuid.uuid4()}/heartbeat").status_code == 404


def test_a_stale_agent_is_listed_and_its_heartbeat_revives_it(
    api_client: Any, db: Database
) -> None:
    agent_id = register(api_client, [cap()])
    with db.session() as session:  # it last beat a minute ago
        session.execute(
            update(Agent)
            .where(Agent.id == uuid.UUID(agent_id))
            .values(last_heartbeat=utcnow() - timedelta(seconds=60))
        )
    agents.sweep_stale(unit_of_work(db), RetryPolicy(), timeout=4)
    assert api_client.get(f"/api/v1/agents/{agent_id}").get_json()["status"] == "stale"
    stale = api_client.get("/api/v1/agents/stale").get_json()["items"]
    assert agent_id in {a["id"] for a in stale}
    assert not api_client.get(f"/api/v1/agents/{agent_id}/health").get_json()["healthy"]
    beat = api_client.post(f"/api/v1/agents/{agent_id}/heartbeat").get_json()
    assert beat["status"] == "idle"
    assert api_client.get(f"/api/v1/agents/{agent_id}/health").get_json()["healthy"]


def test_external_agent_pull_protocol(api_client: Any) -> None:
    ext = cap()
    agent_id = register(api_client, [ext, "extra"])
    ticket = api_client.post(
        "/api/v1/tickets",
        json={
            "title": "ext",
            "tasks": [
                {
                    "key": "low",
                    "task_type": "scan",
                    "capabilities": [ext],
                    "external": True,
                    "priority": "LOW",
                    "payload": {"n": 1},
                },
                {
                    "key": "urgent",
                    "task_type": "scan",
                    "capabilities": [ext],
                    "external": True,
                    "priority": "CRITICAL",
                    "payload": {"n": 2},
                },
                {
                    "key": "after",
                    "task_type": "scan",
                    "capabilities": [ext],
                    "external": True,
                    "depends_on": ["urgent"],
                },
            ],
        },
    ).get_json()
    first = api_client.post(f"/api/v1/agents/{agent_id}/claim")
    assert first.status_code == 200
    claimed = first.get_json()
    assert (claimed["key"], claimed["payload"], claimed["attempt"]) == ("urgent", {"n": 2}, 1)
    assert claimed["idempotency_key"] == f"omoi-task-{claimed['task_id']}"
    assert api_client.get(f"/api/v1/agents/{agent_id}").get_json()["status"] == "busy"

    wrong = api_client.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        json={"lease_token": str(uuid.uuid4()), "result": {"x": 1}},
    )
    assert wrong.status_code == 409
    unstorable = api_client.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        data=f'{{"lease_token": "{claimed["lease_token"]}", "result": {{"x": NaN}}}}',
        content_type="application/json",
    )
    assert unstorable.status_code == 422, unstorable.get_json()
    assert unstorable.get_json()["error"]["code"] == "invalid_value"  # the body guard's
    done = api_client.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        json={"lease_token": claimed["lease_token"], "result": {"found": 3}},
    )
    assert done.status_code == 200 and done.get_json()["status"] == "succeeded"
    assert done.get_json()["agent_id"] == agent_id

    second = api_client.post(f"/api/v1/agents/{agent_id}/claim").get_json()
    assert second["key"] == "after"  # MEDIUM (the ticket's) before LOW, though queued later
    assert second["dependency_results"] == {"urgent": {"found": 3}}
    third = api_client.post(f"/api/v1/agents/{agent_id}/claim").get_json()
    assert third["key"] == "low"
    assert api_client.post(f"/api/v1/agents/{agent_id}/claim").status_code == 204

    failed = api_client.post(
        f"/api/v1/tasks/{second['task_id']}/fail",
        json={
            "lease_token": second["lease_token"],
            "error": {"message": "scanner crashed", "category": "permanent"},
        },
    )
    assert failed.get_json()["status"] == "failed"
    assert failed.get_json()["error"]["message"] == "scanner crashed"
    retried = api_client.post(
        f"/api/v1/tasks/{third['task_id']}/fail",
        json={"lease_token": third["lease_token"], "error": {"message": "busy, try later"}},
    )
    assert (retried.get_json()["status"], retried.get_json()["retry_count"]) == ("retrying", 1)
    late = api_client.post(
        f"/api/v1/tasks/{third['task_id']}/complete",
        json={"lease_token": third["lease_token"], "result": None},
    )
    assert late.status_code == 409
    ticket_now = api_client.get(f"/api/v1/tickets/{ticket['id']}").get_json()
    assert ticket_now["task_counts"] == {"succeeded": 1, "failed": 1, "retrying": 1}


def test_an_external_claim_reaches_past_a_celery_backlog(store: tuple[Database, Any]) -> None:
    """600 queued tasks a live Celery worker will take rank ahead of everything (CRITICAL,
    queued first). An external agent's claim passes over them to the two tasks it may take,
    in claim order across their routes, and then finds nothing: the backlog is not offered."""
    db, client = store
    served, unserved = cap(), cap()
    agents.register(db, name="busy", kind=AgentKind.CELERY, capabilities=[served])
    backlog = {"task_type": "noop", "capabilities": [served], "priority": "CRITICAL"}
    submit(client, [{"key": f"b{i}", **backlog} for i in range(600)])
    submit(
        client,
        [
            {"key": "orphan", "task_type": "noop", "capabilities": [unserved], "priority": "LOW"},
            {"key": "mine", "task_type": "noop", "capabilities": [served], "external": True},
        ],
    )
    agent = register(client, [served, unserved])
    claims = [client.post(f"/api/v1/agents/{agent}/claim") for _ in range(3)]
    assert [c.status_code for c in claims] == [200, 200, 204]
    assert [c.get_json()["key"] for c in claims[:2]] == ["mine", "orphan"]


def allowed(task: dict[str, Any], mine: list[str], served: set[str]) -> bool:
    """The rule, written out plainly."""
    route = task["capabilities"][0] if task["capabilities"] else "default"
    fits = set(task["capabilities"]) <= set(mine)
    return fits and (task["external"] or route not in served)


def test_external_claims_follow_the_rule_in_random_fleets(store: tuple[Database, Any]) -> None:
    """The claim against the rule: a queued task whose capabilities the agent all has, marked
    external or routed (first capability, or default) where no live Celery worker listens; the
    best by priority, then age. Random fleets and tasks, drained claim by claim: each claim is
    one of the best the rule allows, and 204 comes only when the rule allows none."""
    db, client = store
    rng = random.Random(7)
    for scenario in range(25):
        universe = [f"s{scenario}a", f"s{scenario}b", f"s{scenario}c", "default"]
        fleet = []
        for n in range(rng.randint(0, 2)):
            caps = rng.sample(universe, rng.randint(0, 2))
            celery = agents.register(db, name=f"c{n}", kind=AgentKind.CELERY, capabilities=caps)
            fleet.append((celery, caps))
        served = {"default", *(c for _, caps in fleet for c in caps)} if fleet else set()
        mine = rng.sample(universe, rng.randint(1, 3))
        remaining, tickets = [], []
        for age in range(3):  # three tickets, queued one after the other
            specs = [
                {
                    "key": f"t{age}.{n}",
                    "task_type": "noop",
                    "capabilities": rng.sample(universe, rng.randint(0, 2)),
                    "external": rng.random() < 0.4,
                    "priority": rng.choice(list(Priority)).value,
                }
                for n in range(rng.randint(1, 5))
            ]
            tickets.append(uuid.UUID(submit(client, specs)["id"]))
            remaining += [{**spec, "age": age} for spec in specs]
        agent = register(client, mine)
        while True:
            candidates = [t for t in remaining if allowed(t, mine, served)]
            resp = client.post(f"/api/v1/agents/{agent}/claim")
            if not candidates:
                assert resp.status_code == 204, (scenario, resp.get_json())
                break
            best = min((Priority(t["priority"]).rank, t["age"]) for t in candidates)
            keys = {
                t["key"] for t in candidates if (Priority(t["priority"]).rank, t["age"]) == best
            }
            assert resp.status_code == 200, (scenario, keys)
            claimed = resp.get_json()["key"]
            assert claimed in keys, (scenario, claimed, keys)
            remaining = [t for t in remaining if t["key"] != claimed]
        for celery, _ in fleet:
            agents.go_offline(db, celery)
        with db.connect() as conn:
            conn.execute(delete(Ticket).where(Ticket.id.in_(tickets)))


def test_a_claim_locks_only_the_task_it_takes(pg_store: tuple[Database, Any]) -> None:
    """Held open mid-transaction, an external claim that looked at two routes holds a lock on
    the task it took and on nothing else: a concurrent claimer of the other route finds its
    task free (locking every route's head would have left it nothing until the commit)."""
    db, client = pg_store  # SQLite serialises writers: no claim runs beside another there
    x, y = cap(), cap()
    submit(
        client,
        [
            {"key": "on-y", "task_type": "noop", "capabilities": [y], "priority": "HIGH"},
            {"key": "on-x", "task_type": "noop", "capabilities": [x], "priority": "LOW"},
        ],
    )
    agent = uuid.UUID(register(client, [x, y]))
    params = {"agent": agent, "lease": uuid.uuid4(), "now": utcnow()}
    with psycopg.connect(db.url) as holding, psycopg.connect(db.url, autocommit=True) as other:
        assert claims.claim_next_postgres(holding, params).key == "on-y"  # not committed yet
        free = other.execute(
            "SELECT key FROM tasks WHERE status = 'queued' FOR UPDATE SKIP LOCKED"
        ).fetchall()
        assert free == [("on-x",)]
        holding.rollback()


def test_celery_served_tasks_are_not_offered_to_external_agents(
    api_client: Any, worker: Proc
) -> None:
    """The session worker serves cap.default, so an unmarked task without capabilities is
    Celery's; marked external, it is the external agent's."""
    agent_id = register(api_client, ["default"])
    api_client.post(
        "/api/v1/tickets",
        json={
            "title": "mixed",
            "tasks": [
                {"key": "celery", "task_type": "noop"},
                {"key": "mine", "task_type": "noop", "external": True},
            ],
        },
    )
    claimed = api_client.post(f"/api/v1/agents/{agent_id}/claim").get_json()
    assert claimed["key"] == "mine"
    assert api_client.post(f"/api/v1/agents/{agent_id}/claim").status_code == 204


def test_concurrent_claimers_get_each_task_exactly_once(
    api_client: Any, db: Database, env: dict[str, str]
) -> None:
    """Two processes of eight threads each drain 1,000 tasks; no task is claimed twice."""
    ext = cap()
    api_client.post(
        "/api/v1/tickets",
        json={
            "title": "bulk",
            "tasks": [
                {"key": f"t{i}", "task_type": "noop", "capabilities": [ext], "external": True}
                for i in range(1000)
            ],
        },
    )
    agent_ids = [register(api_client, [ext], f"claimer-{n}") for n in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.claimer", agent_id, "8"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for agent_id in agent_ids
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    claimed = [line for out in outputs for line in out.split()]
    assert len(claimed) == 1000
    assert len(set(claimed)) == 1000
    per_process = [len(out.split()) for out in outputs]
    assert min(per_process) > 0, per_process  # both really competed


@pytest.mark.parametrize("path", ["/claim", "/heartbeat", "/health", ""])
def test_unknown_agent_is_404(api_client: Any, path: str) -> None:
    method = api_client.post if path in ("/claim", "/heartbeat") else api_client.get
    assert method(f"/api/v1/agents/{uuid.uuid4()}{path}").status_code == 404


def test_a_task_an_agent_stops_reporting_is_lost_one_that_never_reports_keeps_its_tasks(
    store: tuple[Database, Any],
) -> None:
    """External agents may name their running tasks in the heartbeat. One that does loses the
    task it left out once that has gone unreported for a timeout; one that sends no list
    keeps today's behaviour (its heartbeat alone keeps its tasks)."""
    db, client = store
    ext = cap()
    reporting, silent = register(client, [ext], capacity=2), register(client, [ext])
    task = {"task_type": "noop", "capabilities": [ext], "external": True}
    submit(client, [{"key": f"t{i}", **task} for i in range(3)])
    kept, dropped, unreported = (
        client.post(f"/api/v1/agents/{a}/claim").get_json()["task_id"]
        for a in (reporting, reporting, silent)
    )
    with db.session() as session:  # all three started a minute ago
        session.execute(
            update(Task)
            .where(Task.id.in_([uuid.UUID(t) for t in (kept, dropped, unreported)]))
            .values(started_at=utcnow() - timedelta(seconds=60))
        )
    beat = client.post(f"/api/v1/agents/{reporting}/heartbeat", json={"running": [kept]})
    assert beat.status_code == 200 and beat.get_json()["status"] == "busy"
    assert client.post(f"/api/v1/agents/{silent}/heartbeat").status_code == 200
    bad = client.post(f"/api/v1/agents/{reporting}/heartbeat", json={"running": ["nope"]})
    assert bad.status_code == 422
    assert agents.sweep_stale(unit_of_work(db), RetryPolicy(), timeout=4) == 1
    status = {t: client.get(f"/api/v1/tasks/{t}").get_json() for t in (kept, dropped, unreported)}
    assert [status[t]["status"] for t in (kept, dropped, unreported)] == [
        "running",
        "retrying",
        "running",
    ]
    assert status[dropped]["error"]["category"] == "lost"
    assert "no longer reports running it" in status[dropped]["error"]["message"]
    assert client.get(f"/api/v1/agents/{reporting}").get_json()["status"] == "busy"
