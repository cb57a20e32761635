"""Bearer tokens: every route but health and the OpenAPI document needs one, scopes decide
what it may do, an agent token acts only as its own agent, and each token is rate limited."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, text

from omoi.api import create_app
from omoi.config import Settings
from omoi.domain.auth import digest, new_secret
from omoi.persistence import ApiToken, Database
from omoi.services import tokens
from omoi.services.dispatcher import NullDispatcher
from tests.integration.test_agents import cap, register
from tests.support.api import bearer, submit
from tests.support.procs import wait_for

PUBLIC = {"/healthz", "/readyz", "/api/v1/openapi.json"}


@pytest.fixture(scope="module")
def bare(settings: Settings, db: Database) -> Flask:
    """An app whose test clients send no token unless told to."""
    return create_app(settings, db=db, dispatcher=NullDispatcher())


def token(db: Database, *scopes: str) -> dict[str, str]:
    _, secret = tokens.create(db, f"test-{uuid.uuid4().hex[:6]}", list(scopes))
    return bearer(secret)


def test_every_route_but_health_and_openapi_needs_a_token(bare: Flask) -> None:
    client = bare.test_client()
    checked = 0
    for rule in bare.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/board"):
            continue  # the board signs in to a session: tests/integration/test_board_sessions.py
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda _: str(uuid.uuid4()), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(path, method=method, json={} if method == "POST" else None)
            if rule.rule in PUBLIC:
                assert resp.status_code == 200, (method, path)
                continue
            assert resp.status_code == 401, (method, path, resp.status_code)
            assert resp.get_json()["error"]["code"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            checked += 1
    assert checked >= 35


def test_a_wrong_or_revoked_token_is_refused(bare: Flask, db: Database) -> None:
    client = bare.test_client()
    assert client.get("/api/v1/tickets", headers=bearer("omoi_guess")).status_code == 401
    row, secret = tokens.create(db, "short-lived", ["read"])
    assert client.get("/api/v1/tickets", headers=bearer(secret)).status_code == 200
    assert tokens.revoke(db, str(row["id"])) == 1
    wait_for(
        lambda: client.get("/api/v1/tickets", headers=bearer(secret)).status_code == 401,
        timeout=10,
        what="the revocation to reach the API",
    )


def test_tokens_are_stored_only_as_digests(db: Database) -> None:
    row, secret = tokens.create(db, "hashed", ["read"])
    with db.session() as session:
        stored = session.scalars(select(ApiToken).where(ApiToken.id == row["id"])).one()
        assert secret not in (stored.digest, stored.name)
        assert len(stored.digest) == 64 and stored.digest != secret


def test_api_processes_starting_together_both_ensure_the_bootstrap_token(db: Database) -> None:
    """Two API processes check for the configured token, both find none, both insert it: the
    second insert waits on the first's unique key, then fails; its process must start anyway.
    The first insert is held open here while ``ensure`` runs into it."""
    secret = new_secret()
    first = db.engine.connect()
    first.execute(
        tokens.tokens.insert().values(
            id=uuid.uuid4(), name="bootstrap", digest=digest(secret), scopes=["admin"]
        )
    )  # not committed: invisible to ensure's check, in the way of its insert
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            tokens.ensure(db, "bootstrap", secret, ["admin"])
            outcome.append(None)
        except BaseException as exc:  # the assertion below reports it
            outcome.append(exc)

    def blocked() -> bool:
        """ensure's insert waits on the first one's key (or ensure already ended: report it)."""
        with db.connect() as conn:  # a fresh transaction: pg_stat_activity is snapshotted
            return bool(outcome) or bool(
                conn.execute(
                    text(
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                        " AND query LIKE 'INSERT INTO api_tokens%'"
                    )
                ).first()
            )

    starter = threading.Thread(target=start)
    starter.start()
    try:
        wait_for(blocked, what="ensure's insert waiting on the first one's key")
        first.commit()
    finally:
        first.close()  # rolls back if it was not committed, freeing ensure's insert
        starter.join(30)
    mine = ApiToken.digest == digest(secret)
    with db.connect() as conn:
        rows = conn.execute(select(ApiToken.id).where(mine)).all()
        conn.execute(tokens.tokens.delete().where(mine))  # an admin token: leave none behind
    assert outcome == [None]
    assert len(rows) == 1


def test_scopes_decide_what_a_token_may_do(bare: Flask, db: Database) -> None:
    client = bare.test_client()
    reader, submitter, agent = token(db, "read"), token(db, "submit"), token(db, "agent")
    ticket = {"title": "scoped", "tasks": [{"key": "a", "task_type": "noop"}]}
    assert client.post("/api/v1/tickets", json=ticket, headers=reader).status_code == 403
    assert client.post("/api/v1/tickets", json=ticket, headers=agent).status_code == 403
    created = client.post("/api/v1/tickets", json=ticket, headers=submitter)
    assert created.status_code == 201
    path = f"/api/v1/tickets/{created.get_json()['id']}"
    assert client.get(path, headers=reader).status_code == 200
    denied = client.get(path, headers=submitter)
    assert denied.status_code == 403 and "read" in denied.get_json()["error"]["message"]
    body = {"name": "x", "capabilities": [cap()]}
    assert client.post("/api/v1/agents/register", json=body, headers=reader).status_code == 403
    assert client.post("/api/v1/agents/register", json=body, headers=agent).status_code == 201
    assert client.get("/metrics", headers=reader).status_code == 200


def test_an_agent_token_acts_only_as_its_own_agent(bare: Flask, db: Database) -> None:
    client = bare.test_client()
    admin = client.application.test_client()
    admin.environ_base.update(HTTP_AUTHORIZATION=bearer()["Authorization"])
    skill = cap()
    other = register(admin, [skill], "other")
    mine_headers = token(db, "agent")
    resp = client.post(
        "/api/v1/agents/register",
        json={"name": "me", "capabilities": [skill]},
        headers=mine_headers,
    )
    mine = resp.get_json()["id"]

    def post(path: str, body: Any = None) -> int:
        return client.post(path, json=body or {}, headers=mine_headers).status_code

    assert post(f"/api/v1/agents/{mine}/heartbeat") == 200
    assert post(f"/api/v1/agents/{other}/heartbeat") == 403
    assert post(f"/api/v1/agents/{other}/claim") == 403
    assert post(f"/api/v1/agents/{other}/claims") == 403
    assert post(f"/api/v1/agents/{mine}/claims") == 200
    assert client.get(f"/api/v1/agents/{other}/messages", headers=mine_headers).status_code == 403
    assert client.get(f"/api/v1/agents/{mine}/messages", headers=mine_headers).status_code == 200
    hello = {"type": "info", "content": "hi"}
    assert post(f"/api/v1/agents/{other}/messages", {**hello, "from_agent": mine}) == 201
    assert post(f"/api/v1/agents/{mine}/messages", {**hello, "from_agent": other}) == 403

    # a task the other agent holds cannot be reported by this one, even with its lease
    submit(admin, [{"key": "x", "task_type": "upper", "capabilities": [skill], "external": True}])
    claimed = admin.post(f"/api/v1/agents/{other}/claim").get_json()
    report = {"lease_token": claimed["lease_token"], "result": {}}
    assert post(f"/api/v1/tasks/{claimed['task_id']}/complete", report) == 403
    done = admin.post(f"/api/v1/tasks/{claimed['task_id']}/complete", json=report)
    assert done.status_code == 200 and done.get_json()["status"] == "succeeded"


def test_each_token_is_rate_limited_with_retry_after(settings: Settings, db: Database) -> None:
    tight = create_app(
        dataclasses.replace(settings, rate_limit="3/minute"), db=db, dispatcher=NullDispatcher()
    )
    client = tight.test_client()
    busy, idle = token(db, "read"), token(db, "read")
    codes = [client.get("/api/v1/workflows", headers=busy).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/workflows", headers=busy)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert client.get("/api/v1/workflows", headers=idle).status_code == 200
    assert client.get("/healthz").status_code == 200  # health is never limited


def test_production_refuses_to_start_without_a_token(
    settings: Settings, fresh_database_url: str
) -> None:
    bare = dataclasses.replace(settings, database_url=fresh_database_url, bootstrap_token="")
    with pytest.raises(RuntimeError, match="no API token is configured"):
        create_app(bare, dispatcher=NullDispatcher())
    db = Database(fresh_database_url)
    try:
        tokens.create(db, "ops", ["admin"])
        assert create_app(bare, db=db, dispatcher=NullDispatcher()) is not None
    finally:
        db.dispose()


def test_a_flood_of_wrong_tokens_is_rate_limited_before_any_token_lookup(
    settings: Settings, db: Database
) -> None:
    """400 wrong tokens from one address: the first few cost a lookup each, the rest a 429
    (Retry-After at least 1) and no query; a token this process already knows, and other
    addresses, are not held up."""
    app = create_app(
        dataclasses.replace(settings, unauthenticated_rate_limit="5/minute"),
        db=db,
        dispatcher=NullDispatcher(),
    )
    client = app.test_client()
    attacker = {"REMOTE_ADDR": f"127.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"}
    known = token(db, "read")
    assert client.get("/api/v1/workflows", headers=known, environ_base=attacker).status_code == 200
    lookups: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_tokens" in statement:
            lookups.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        answers = [
            client.get("/api/v1/workflows", headers=bearer(new_secret()), environ_base=attacker)
            for _ in range(400)
        ]
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    codes = [a.status_code for a in answers]
    assert codes == [401] * 5 + [429] * 395
    assert len(lookups) == 5
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers[5:])
    assert answers[-1].get_json()["error"]["code"] == "too_many_requests"
    assert client.get("/api/v1/workflows", headers=known, environ_base=attacker).status_code == 200
    stranger = {"REMOTE_ADDR": "127.0.255.254"}
    assert (
        client.get("/api/v1/workflows", headers=token(db, "read"), environ_base=stranger)
    ).status_code == 200


def test_retry_after_is_never_zero_while_the_window_is_full(
    settings: Settings, db: Database
) -> None:
    """flask-limiter truncates the wait, so a window's last second said ``Retry-After: 0``:
    a client that obeys it hammers the API. Across several one-second windows every 429 says
    at least 1, and no other answer carries the header."""
    tight = create_app(
        dataclasses.replace(settings, rate_limit="2/second"), db=db, dispatcher=NullDispatcher()
    )
    client = tight.test_client()
    busy = token(db, "read")
    deadline = time.monotonic() + 2.5
    answers = []
    while time.monotonic() < deadline:
        answers.append(client.get("/api/v1/workflows", headers=busy))
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) > 10
    assert all(int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert all("Retry-After" not in a.headers for a in answers if a.status_code == 200)
