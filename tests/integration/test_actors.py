"""Who did what: every event a request writes names the token that sent it, an approval's
approver is the token (not a name the client typed), the event log filters by token, and an
Idempotency-Key belongs to the token that sent it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Flask
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select

from omoi.persistence import Approval, Database, actors
from omoi.services import events, tokens
from tests.integration.test_agents import cap
from tests.integration.test_events import read_stream
from tests.integration.test_plans import explain
from tests.support.api import bearer, submit, wait_finished


@dataclass(frozen=True)
class Who:
    """A token as a test uses it: what its events must say, and the headers that send it."""

    token_id: str
    name: str
    headers: dict[str, str]


def who(db: Database, role: str, *scopes: str) -> Who:
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    row, secret = tokens.create(db, name, list(scopes))
    return Who(str(row["id"]), name, bearer(secret))


def actor(event: dict[str, Any]) -> tuple[str | None, str | None]:
    return event["actor_token_id"], event["actor_name"]


def of(w: Who) -> tuple[str, str]:
    return w.token_id, w.name


def events_of(client: Any, query: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/events?{query}&limit=1000")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["items"]  # type: ignore[no-any-return]


def test_events_name_the_token_that_changed_state(api_client: Any, db: Database) -> None:
    alice, bob = who(db, "alice", "submit", "read"), who(db, "bob", "submit", "read")
    chain = [
        {"key": "a", "task_type": "noop"},
        {"key": "b", "task_type": "noop", "depends_on": ["a"]},
    ]
    made = api_client.post(
        "/api/v1/tickets", json={"title": "audit", "tasks": chain}, headers=alice.headers
    )
    assert made.status_code == 201
    ticket = made.get_json()
    cancelled = api_client.post(
        f"/api/v1/tickets/{ticket['id']}/cancel", json={"reason": "no"}, headers=bob.headers
    )
    assert cancelled.status_code == 200

    logged = events_of(api_client, f"ticket_id={ticket['id']}")
    by_type = {(e["type"], e["entity_id"]): actor(e) for e in logged}
    a, b = (t["id"] for t in ticket["tasks"])
    assert by_type == {
        ("ticket.created", ticket["id"]): of(alice),
        ("task.cancelled", a): of(bob),
        ("task.cancelled", b): of(bob),
        ("ticket.cancelled", ticket["id"]): of(bob),
    }
    timeline = api_client.get(f"/api/v1/tasks/{a}").get_json()["timeline"]
    assert [(e["type"], actor(e)) for e in timeline] == [("task.cancelled", of(bob))]


def test_a_request_leaves_no_actor_for_what_its_thread_runs_next(
    api_client: Any, db: Database
) -> None:
    """A server's thread (or greenlet) serves request after request: an actor left bound
    would be stamped on the next one's events, or on a worker's or a sweep's."""
    alice = who(db, "alice", "submit")
    body = {"title": "t", "tasks": [{"key": "a", "task_type": "noop"}]}
    assert api_client.post("/api/v1/tickets", json=body, headers=alice.headers).status_code == 201
    assert actors.current() is None
    refused = api_client.post("/api/v1/tickets", json={}, headers=alice.headers)
    assert refused.status_code == 422  # a request that failed
    assert actors.current() is None


def test_workers_changes_name_no_token(client: Any, db: Database, worker: Any) -> None:
    """Only a request has a token: a worker's claim and result are its own, not the
    submitter's, whatever ran in its process before."""
    alice = who(db, "alice", "submit", "read")
    made = client.post(
        "/api/v1/tickets",
        json={"title": "run", "tasks": [{"key": "a", "task_type": "noop"}]},
        headers=alice.headers,
    )
    assert made.status_code == 201
    ticket = wait_finished(client, made.get_json()["id"])
    logged = {e["type"]: actor(e) for e in events_of(client, f"ticket_id={ticket['id']}")}
    assert logged["ticket.created"] == of(alice)
    assert logged["task.started"] == logged["task.succeeded"] == (None, None)


def test_an_external_agents_claim_and_result_name_its_token(store: tuple[Database, Any]) -> None:
    """Claims and results run as one statement on PostgreSQL and as several on SQLite
    (persistence/claims.py, persistence/results.py); both stamp the agent's token, the
    dependents it released included."""
    db, admin = store
    agent = who(db, "agent", "agent")
    skill = cap()
    registered = admin.post(
        "/api/v1/agents/register",
        json={"name": "ext", "capabilities": [skill]},
        headers=agent.headers,
    )
    assert registered.status_code == 201
    agent_id = registered.get_json()["id"]
    task = {"task_type": "scan", "capabilities": [skill], "external": True}
    ticket = submit(admin, [{"key": "a", **task}, {"key": "b", "depends_on": ["a"], **task}])
    claimed = admin.post(f"/api/v1/agents/{agent_id}/claim", headers=agent.headers).get_json()
    done = admin.post(
        f"/api/v1/tasks/{claimed['task_id']}/complete",
        json={"lease_token": claimed["lease_token"], "result": {}},
        headers=agent.headers,
    )
    assert done.status_code == 200
    a, b = (t["id"] for t in ticket["tasks"])
    logged = {
        (e["type"], e["entity_id"]): actor(e) for e in events_of(admin, f"ticket_id={ticket['id']}")
    }
    assert logged[("task.started", a)] == of(agent)
    assert logged[("task.succeeded", a)] == of(agent)
    assert logged[("task.queued", b)] == of(agent)


def test_approval_by_is_the_token_not_the_client_supplied_name(
    api_client: Any, db: Database
) -> None:
    alice = who(db, "alice", "submit", "read")
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}])
    approved = api_client.post(
        f"/api/v1/tickets/{ticket['id']}/approve",
        json={"by": "bob", "comment": "lgtm"},
        headers=alice.headers,
    )
    assert approved.status_code == 201
    with db.connect() as conn:
        row = conn.execute(
            select(Approval.by, Approval.note, Approval.comment).where(
                Approval.ticket_id == ticket["id"]
            )
        ).one()
    assert tuple(row) == (alice.name, "bob", "lgtm")
    (event,) = events_of(api_client, f"ticket_id={ticket['id']}&type=gate.approved")
    assert event["payload"]["by"] == alice.name
    assert event["payload"]["note"] == "bob"
    assert actor(event) == of(alice)


def test_transition_by_is_the_token_not_the_client_supplied_name(
    api_client: Any, db: Database
) -> None:
    alice = who(db, "alice", "submit", "read")
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}])
    moved = api_client.post(
        f"/api/v1/tickets/{ticket['id']}/transition",
        json={"to_phase": "PHASE_BLOCKED", "reason": "hold", "by": "bob"},
        headers=alice.headers,
    )
    assert moved.status_code == 200, moved.get_json()
    history = api_client.get(f"/api/v1/tickets/{ticket['id']}/phase-history").get_json()
    last = history["items"][-1]
    assert (last["to_phase"], last["by"], last["note"]) == ("PHASE_BLOCKED", alice.name, "bob")
    (event,) = events_of(api_client, f"ticket_id={ticket['id']}&type=ticket.phase_changed")
    assert actor(event) == of(alice)


def test_events_filter_by_the_actor_token_id_or_name(api_client: Any, db: Database) -> None:
    alice, bob = who(db, "alice", "submit", "read"), who(db, "bob", "submit", "read")
    since = events.latest_id(db)
    body = {"title": "mine", "tasks": [{"key": "a", "task_type": "noop"}]}

    def ticket_of(w: Who) -> str:
        resp = api_client.post("/api/v1/tickets", json=body, headers=w.headers)
        return resp.get_json()["id"]  # type: ignore[no-any-return]

    alices = {ticket_of(alice), ticket_of(alice)}
    ticket_of(bob)
    for key in (alice.name, alice.token_id):
        mine = events_of(api_client, f"actor={key}&after={since}")
        assert {actor(e) for e in mine} == {of(alice)}
        assert {(e["type"], e["ticket_id"]) for e in mine} == {
            ("ticket.created", t) for t in alices
        }
    assert events_of(api_client, f"actor=nobody-{uuid.uuid4().hex}") == []
    assert events_of(api_client, f"actor={uuid.uuid4()}") == []

    streamed = read_stream(
        api_client, f"/api/v1/events/stream?actor={bob.name}&after={since}&timeout=1"
    )
    bobs = events_of(api_client, f"actor={bob.token_id}&after={since}")
    assert streamed == [(e["id"], e["type"]) for e in bobs]
    assert [t for _, t in streamed] == ["ticket.created"]


def post_keyed(client: Any, w: Who, key: str, title: str = "keyed") -> Any:
    body = {"title": title, "tasks": [{"key": "a", "task_type": "noop"}]}
    return client.post("/api/v1/tickets", json=body, headers={**w.headers, "Idempotency-Key": key})


def test_idempotency_key_of_another_token_does_not_return_its_ticket(
    store: tuple[Database, Any],
) -> None:
    db, client = store
    alice, bob = who(db, "alice", "submit"), who(db, "bob", "submit")
    key = f"deploy-{uuid.uuid4().hex[:6]}"
    first = post_keyed(client, alice, key)
    other = post_keyed(client, bob, key)
    assert (first.status_code, other.status_code) == (201, 201)
    assert first.get_json()["id"] != other.get_json()["id"]
    again = post_keyed(client, alice, key)
    assert (again.status_code, again.get_json()["id"]) == (200, first.get_json()["id"])
    assert again.headers["Idempotent-Replayed"] == "true"
    assert post_keyed(client, bob, key).get_json()["id"] == other.get_json()["id"]
    # another token's key, reused with a different body, is no conflict naming its ticket
    carol = who(db, "carol", "submit")
    fresh = post_keyed(client, carol, key, title="something else")
    assert fresh.status_code == 201
    assert fresh.get_json()["id"] not in (first.get_json()["id"], other.get_json()["id"])
    # the same token reusing its key with a different body still is one
    assert post_keyed(client, alice, key, title="something else").status_code == 409


def test_concurrent_tokens_sharing_a_key_each_make_one_ticket(
    api_client: Any, app: Flask, db: Database
) -> None:
    """The unique index holds (token, key): two tokens racing with one key each win once."""
    alice, bob = who(db, "alice", "submit"), who(db, "bob", "submit")
    key = f"race-{uuid.uuid4().hex[:6]}"

    def race(n: int) -> tuple[str, int, str]:
        w = (alice, bob)[n % 2]
        resp = post_keyed(api_client.application.test_client(), w, key)
        return w.name, resp.status_code, resp.get_json()["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(race, range(16)))
    for w in (alice, bob):
        mine = [(code, tid) for name, code, tid in results if name == w.name]
        assert len({tid for _, tid in mine}) == 1
        assert sorted(code for code, _ in mine) == [200] * 7 + [201]
    assert len({tid for _, _, tid in results}) == 2


def test_events_of_one_actor_are_read_from_its_index(pg_store: tuple[Database, Any]) -> None:
    """``?actor=`` walks the actor's partial index in id order: none of the other events (a
    fleet's, here 20,000 by workers and 5,000 by another token) is read and thrown away."""
    db, client = pg_store
    alice = who(db, "alice", "submit")
    with psycopg.connect(db.url, autocommit=True) as pg:
        pg.execute(
            "INSERT INTO events (type, entity_type, payload, created_at, actor_token_id,"
            " actor_name) SELECT 'task.started', 'task', '{}', now(),"
            " CASE WHEN i %% 5 = 0 THEN %s::uuid END, CASE WHEN i %% 5 = 0 THEN 'ops' END"
            " FROM generate_series(1, 25000) AS i",
            (uuid.uuid4(),),
        )
        pg.execute("VACUUM ANALYZE events")
    body = {"title": "t", "tasks": [{"key": "a", "task_type": "noop"}]}
    for _ in range(3):
        assert client.post("/api/v1/tickets", json=body, headers=alice.headers).status_code == 201
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM events" in statement:
            statements.append((statement, params))

    sqlalchemy_event.listen(db.engine, "before_cursor_execute", capture)
    try:
        for key in (alice.name, alice.token_id):
            assert len(events.list_events(db, actor=key, limit=2)[0]) == 2
    finally:
        sqlalchemy_event.remove(db.engine, "before_cursor_execute", capture)
    for (statement, params), index in zip(
        statements, ("ix_events_actor_name", "ix_events_actor_token"), strict=True
    ):
        plan = explain(db.url, statement, params)
        scans = list(relation_scans(plan, "events"))
        assert [s.get("Index Name") for s in scans] == [index], scans
        assert sum(s.get("Rows Removed by Filter", 0) for s in scans) == 0
        assert scans[0]["Actual Rows"] <= 3


def relation_scans(plan: dict[str, Any], relation: str) -> Iterator[dict[str, Any]]:
    if plan.get("Relation Name") == relation:
        yield plan
    for child in plan.get("Plans", []):
        yield from relation_scans(child, relation)
