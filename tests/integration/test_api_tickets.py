"""The ticket and task read/write contract of the HTTP API."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from sqlalchemy import event, func, select

from omoi.persistence import Database, Ticket

DIAMOND = [
    {"key": "a", "task_type": "noop"},
    {"key": "b", "task_type": "noop", "depends_on": ["a"], "capabilities": ["GPU", "python"]},
    {"key": "c", "task_type": "noop", "depends_on": ["a"], "priority": "HIGH"},
    {"key": "d", "task_type": "noop", "depends_on": ["b", "c", "b"]},
]


def post(client: Any, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/api/v1/tickets", json=body, headers=headers)


def test_create_returns_ticket_tasks_and_counts(api_client: Any) -> None:
    resp = post(api_client, {"title": "diamond", "priority": "LOW", "tasks": DIAMOND})
    assert resp.status_code == 201
    body = resp.get_json()
    assert (body["phase"], body["status"], body["priority"]) == ("PHASE_RUN", "active", "LOW")
    assert body["task_counts"] == {"queued": 1, "pending": 3}
    assert [t["key"] for t in body["tasks"]] == ["a", "b", "c", "d"]
    ids = {t["key"]: t["id"] for t in body["tasks"]}

    b = api_client.get(f"/api/v1/tasks/{ids['b']}").get_json()
    assert b["capabilities"] == ["gpu", "python"]  # lowercase tokens
    assert b["depends_on"] == [ids["a"]]
    assert b["blocks"] == [ids["d"]]
    assert b["priority"] == "LOW"  # inherited from the ticket
    assert api_client.get(f"/api/v1/tasks/{ids['c']}").get_json()["priority"] == "HIGH"
    d = api_client.get(f"/api/v1/tasks/{ids['d']}").get_json()
    assert d["depends_on"] == [ids["b"], ids["c"]]  # duplicates collapse
    assert d["unmet_dependencies"] == 2
    a = api_client.get(f"/api/v1/tasks/{ids['a']}").get_json()
    assert sorted(a["blocks"]) == sorted([ids["b"], ids["c"]])
    assert (a["status"], a["attempt"]) == ("queued", 1)


def test_idempotency_key_returns_the_original(api_client: Any, db: Database) -> None:
    key = f"k-{uuid.uuid4()}"
    first = post(api_client, {"title": "once", "tasks": DIAMOND}, key)
    again = post(api_client, {"title": "once", "tasks": DIAMOND}, key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.get_json()["id"] == again.get_json()["id"]
    assert first.get_json()["tasks"] == again.get_json()["tasks"]
    other = post(api_client, {"title": "different", "tasks": []}, key)
    assert other.status_code == 409
    assert other.get_json()["error"]["details"]["ticket_id"] == first.get_json()["id"]
    with db.session() as session:
        n = session.execute(
            select(func.count()).select_from(Ticket).where(Ticket.idempotency_key == key)
        ).scalar_one()
    assert n == 1


def test_concurrent_submissions_with_one_key_make_one_ticket(
    api_client: Any, app: Flask, db: Database
) -> None:
    key = f"race-{uuid.uuid4()}"

    def submit(_: int) -> tuple[int, str]:
        resp = post(api_client.application.test_client(), {"title": "race", "tasks": DIAMOND}, key)
        return resp.status_code, resp.get_json()["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(16)))
    assert len({ticket_id for _, ticket_id in results}) == 1
    assert sorted(code for code, _ in results) == [200] * 15 + [201]
    with db.session() as session:
        n = session.execute(
            select(func.count()).select_from(Ticket).where(Ticket.idempotency_key == key)
        ).scalar_one()
    assert n == 1


def test_list_tickets_paginates_with_a_cursor_and_filters(api_client: Any) -> None:
    workflow_marker = f"p-{uuid.uuid4().hex[:6]}"
    made = [
        post(api_client, {"title": f"{workflow_marker}-{i}", "tasks": []}).get_json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/tickets?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api_client.get(url).get_json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None or set(made) <= set(seen):
            break
    assert [t for t in seen if t in made] == list(reversed(made))  # newest first, no repeats
    assert len(seen) == len(set(seen))
    done = api_client.get("/api/v1/tickets?status=done&limit=500").get_json()["items"]
    assert set(made) <= {t["id"] for t in done}  # a ticket without tasks is done at once
    assert all(t["status"] == "done" for t in done)
    assert api_client.get("/api/v1/tickets?status=bogus").status_code == 422


def test_list_tasks_pages_oldest_or_newest_first(api_client: Any) -> None:
    tasks = [{"key": f"t{i}", "task_type": "noop"} for i in range(5)]
    ticket = post(api_client, {"title": "ordered", "tasks": tasks}).get_json()["id"]

    def walk(order: str) -> list[str]:
        keys: list[str] = []
        cursor = None
        while True:
            url = f"/api/v1/tasks?ticket_id={ticket}&limit=2&order={order}"
            page = api_client.get(url + (f"&cursor={cursor}" if cursor else "")).get_json()
            keys += [t["key"] for t in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return keys

    assert walk("oldest") == ["t0", "t1", "t2", "t3", "t4"]
    assert walk("newest") == ["t4", "t3", "t2", "t1", "t0"]
    refused = api_client.get("/api/v1/tasks?order=sideways")
    assert refused.status_code == 422 and "order" in refused.get_json()["error"]["details"]["query"]


def test_listing_tickets_counts_their_tasks_in_one_query(api_client: Any, db: Database) -> None:
    made = [post(api_client, {"title": "counted", "tasks": DIAMOND}).get_json() for _ in range(3)]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        items = api_client.get("/api/v1/tickets?limit=3").get_json()["items"]
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert [t["id"] for t in items] == [t["id"] for t in reversed(made)]
    assert all(sum(t["task_counts"].values()) == len(DIAMOND) for t in items)
    assert len([s for s in statements if "FROM tasks" in s]) == 1  # not one per ticket


def test_list_tasks_filters_by_ticket_and_status(api_client: Any) -> None:
    ticket = post(api_client, {"title": "filter", "tasks": DIAMOND}).get_json()
    url = f"/api/v1/tasks?ticket_id={ticket['id']}"
    assert len(api_client.get(url).get_json()["items"]) == 4
    queued = api_client.get(url + "&status=queued").get_json()["items"]
    assert [t["key"] for t in queued] == ["a"]
    first = api_client.get(url + "&limit=3").get_json()
    rest = api_client.get(url + f"&limit=3&cursor={first['next_cursor']}").get_json()
    assert [t["key"] for t in first["items"] + rest["items"]] == ["a", "b", "c", "d"]
    assert rest["next_cursor"] is None


def test_unknown_ids_are_404_with_error_body(api_client: Any) -> None:
    for url in (f"/api/v1/tickets/{uuid.uuid4()}", f"/api/v1/tasks/{uuid.uuid4()}"):
        resp = api_client.get(url)
        assert resp.status_code == 404
        assert resp.get_json()["error"]["code"] == "not_found"
    assert api_client.get("/api/v1/tickets/not-a-uuid").status_code == 404


def test_health_readiness_and_openapi(api_client: Any) -> None:
    assert api_client.get("/healthz").get_json() == {"status": "ok", "instance": ""}
    ready = api_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
    spec = api_client.get("/api/v1/openapi.json").get_json()
    assert {
        "/api/v1/tickets",
        "/api/v1/tickets/{ticket_id}",
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
    } <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["TicketIn"]["additionalProperties"] is False
    assert schemas["TaskIn"]["additionalProperties"] is False
