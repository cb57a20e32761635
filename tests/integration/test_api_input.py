"""Bad input: a clear 4xx with the JSON error shape, and nothing written."""

from __future__ import annotations

import dataclasses
import gc
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from omoi.config import Settings
from omoi.persistence import Database, Event, Task, Ticket
from omoi.services.dispatcher import NullDispatcher
from tests.support.api import make_app


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as session:
        return tuple(  # type: ignore[return-value]
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Ticket, Task, Event)
        )


def task(key: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "task_type": "noop", "depends_on": list(deps), **extra}


def ticket(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"title": "t", "tasks": list(tasks), **extra}


def with_payload(value: str) -> str:
    """A ticket body whose one task's payload holds ``value`` as written (not JSON-encoded)."""
    task = '{"key": "a", "task_type": "noop", "payload": {"x": ' + value + "}}"
    return '{"title": "t", "tasks": [' + task + "]}"


def raw(client: Any, body: bytes | str, content_type: str = "application/json") -> Any:
    return client.post("/api/v1/tickets", data=body, content_type=content_type)


CASES: dict[str, tuple[Any, int, str]] = {
    "unknown top-level field": (ticket(task("a"), colour="red"), 422, "colour"),
    "unknown task field": (ticket(task("a", retries=3)), 422, "retries"),
    "title of wrong type": ({"title": 5, "tasks": []}, 422, "title"),
    "tasks not a list": ({"title": "t", "tasks": {"a": 1}}, 422, '"tasks": ["Not a valid list."]'),
    "task not an object": ({"title": "t", "tasks": ["a"]}, 422, "Invalid input type"),
    "max_retries of wrong type": (ticket(task("a", max_retries="x")), 422, "max_retries"),
    "missing title": ({"tasks": []}, 422, "title"),
    "unknown priority": (ticket(task("a"), priority="URGENT"), 422, "priority"),
    "negative timeout": (ticket(task("a", timeout_seconds=-1)), 422, "timeout_seconds"),
    "capability not a token": (ticket(task("a", capabilities=["gp u"])), 422, "capabilities"),
    "cycle": (ticket(task("a", "c"), task("b", "a"), task("c", "b")), 422, "a -> c -> b -> a"),
    "self dependency": (ticket(task("a", "a")), 422, "themselves: a"),
    "dangling dependency": (ticket(task("a", "ghost")), 422, "ghost"),
    "duplicate keys": (ticket(task("a"), task("a")), 422, "duplicate task keys: a"),
    "NUL in a string": (ticket(task("a", payload={"x": "nul\u0000"})), 422, "$.tasks[0]"),
    "NUL in a key": (ticket(task("a", payload={"k\u0000": 1})), 422, "NUL"),
    "unknown workflow": (ticket(task("a"), workflow="nope"), 422, "nope"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_ticket_is_rejected_and_writes_nothing(
    api_client: Any, db: Database, case: str
) -> None:
    body, status, mentions = CASES[case]
    before = counts(db)
    resp = api_client.post("/api/v1/tickets", json=body)
    assert resp.status_code == status
    error = resp.get_json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert mentions in json.dumps(error)
    assert counts(db) == before


def test_cycle_error_names_its_keys(api_client: Any) -> None:
    resp = api_client.post(
        "/api/v1/tickets", json=ticket(task("x", "y"), task("y", "x"), task("z"))
    )
    assert resp.get_json()["error"]["details"]["cycle"] == ["x", "y", "x"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("[" * 200_000, "application/json", 400),
        ('{"title": "t", "tasks": [', "application/json", 400),
        ('{"title": "\\ud800"}', "application/json", 422),
        (
            with_payload("NaN"),
            "application/json",
            422,
        ),
        (
            with_payload("-Infinity"),
            "application/json",
            422,
        ),
        (
            with_payload("1e999"),
            "application/json",
            422,
        ),
        ("title=t", "application/x-www-form-urlencoded", 415),
        ('{"title": "t"}', "text/plain", 415),
    ],
    ids=[
        "deeply nested",
        "malformed",
        "lone surrogate",
        "NaN",
        "-Infinity",
        "1e999",
        "form body",
        "text body",
    ],
)
def test_unparseable_bodies(
    api_client: Any, db: Database, body: str, content_type: str, status: int
) -> None:
    before = counts(db)
    resp = raw(api_client, body, content_type)
    assert resp.status_code == status
    assert set(resp.get_json()["error"]) == {"code", "message", "details"}
    assert counts(db) == before


def test_nesting_deeper_than_the_limit_is_400(
    settings: Settings, db: Database, api_client: Any
) -> None:
    shallow = limited(settings, db, max_json_depth=6)  # api_client purges what it creates
    # the body, its task list, the task and its payload are four levels of the six
    fits = shallow.post("/api/v1/tickets", json=ticket(task("a", payload={"b": [[1]]})))
    assert fits.status_code == 201, fits.get_json()
    before = counts(db)
    deeper = shallow.post("/api/v1/tickets", json=ticket(task("a", payload={"b": [[[1]]]})))
    assert deeper.status_code == 400
    assert deeper.get_json()["error"]["details"] == {"max": 6}
    assert counts(db) == before


def limited(settings: Settings, db: Database, **limits: int) -> Any:
    """A client of an app with tighter limits (and no publishing)."""
    app = make_app(dataclasses.replace(settings, **limits), db=db, dispatcher=NullDispatcher())
    return app.test_client()


def test_body_over_the_limit_is_413(settings: Settings, db: Database) -> None:
    small = limited(settings, db, max_body_bytes=2048)
    before = counts(db)
    resp = small.post("/api/v1/tickets", json=ticket(task("a", payload={"x": "y" * 4096})))
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "request_entity_too_large"
    assert counts(db) == before


def test_too_many_tasks_is_422(settings: Settings, db: Database) -> None:
    small = limited(settings, db, max_tasks_per_ticket=3)
    before = counts(db)
    resp = small.post("/api/v1/tickets", json=ticket(*(task(f"t{i}") for i in range(4))))
    assert resp.status_code == 422
    assert "at most 3 tasks" in resp.get_json()["error"]["message"]
    assert counts(db) == before


def test_too_many_tasks_are_refused_before_any_task_is_validated(
    settings: Settings, db: Database
) -> None:
    """Refusing 100,000 tasks must not cost validating them: the count is checked first, so
    tasks that are each invalid still get the size error, not 100,000 field errors."""
    small = limited(settings, db, max_tasks_per_ticket=3)
    resp = small.post("/api/v1/tickets", json=ticket(*({"colour": i} for i in range(4))))
    assert resp.status_code == 422
    assert resp.get_json()["error"] == {
        "code": "invalid",
        "message": "a ticket holds at most 3 tasks",
        "details": {"tasks": 4},
    }


def test_ten_thousand_task_dag_is_accepted_without_a_full_collection(
    api_client: Any, db: Database
) -> None:
    """The API raises the collector's young threshold (``omoi.process``): with CPython's
    default, this request ran two or three full collections, a quarter of its time."""
    tasks = [task(f"t{i}", *([f"t{i - 1}"] if i % 100 else [])) for i in range(10_000)]
    full: list[dict[str, Any]] = []

    def count_full(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(info)

    gc.collect()  # counts start from nothing pending, whatever ran before
    gc.callbacks.append(count_full)
    try:
        resp = api_client.post("/api/v1/tickets", json=ticket(*tasks))
    finally:
        gc.callbacks.remove(count_full)
    assert resp.status_code == 201
    assert gc.get_threshold()[0] >= 10_000  # what makes it so, whatever this session's heap
    assert full == []
    body = resp.get_json()
    assert len(body["tasks"]) == 10_000
    assert body["task_counts"] == {"queued": 100, "pending": 9_900}


def test_hostile_strings_round_trip(api_client: Any) -> None:
    odd = "'; DROP TABLE tickets;-- \u202eRTL\u200b zero-width \U0001f680 emoji"
    resp = api_client.post("/api/v1/tickets", json=ticket(task("a", payload={"s": odd}), title=odd))
    assert resp.status_code == 201
    got = api_client.get(f"/api/v1/tickets/{resp.get_json()['id']}").get_json()
    assert got["title"] == odd
    task_id = resp.get_json()["tasks"][0]["id"]
    assert api_client.get(f"/api/v1/tasks/{task_id}").get_json()["payload"] == {"s": odd}


def test_every_task_field_is_stored_as_given(api_client: Any) -> None:
    """A ticket's tasks go in by a bulk COPY: each column a spec sets arrives intact, and the
    columns omoi derives (status, attempt, counters, deadlines) are set as for one insert."""
    given = task(
        "a",
        description="described",
        capabilities=["gpu", "python"],
        payload={"n": [1, 2.5, None, True, {"deep": "é"}]},
        priority="HIGH",
        max_retries=7,
        retry_backoff=1.5,
        retry_backoff_max=30.25,
        timeout_seconds=2.5,
        resources=["db", "cache"],
        external=True,
    )
    waiting = task("b", "a", sync={"need": 1, "timeout_seconds": 60})
    resp = api_client.post("/api/v1/tickets", json=ticket(given, waiting))
    assert resp.status_code == 201
    ids = {t["key"]: t["id"] for t in resp.get_json()["tasks"]}
    a = api_client.get(f"/api/v1/tasks/{ids['a']}").get_json()
    assert {k: a[k] for k in given if k != "depends_on"} == {
        k: v for k, v in given.items() if k != "depends_on"
    }
    assert (a["status"], a["attempt"], a["unmet_dependencies"]) == ("queued", 1, 0)
    assert a["queued_at"] == a["created_at"]
    b = api_client.get(f"/api/v1/tasks/{ids['b']}").get_json()
    assert (b["status"], b["attempt"], b["unmet_dependencies"], b["sync_need"]) == (
        "pending",
        0,
        1,
        1,
    )
    assert b["depends_on"] == [ids["a"]]
    assert b["queued_at"] is None
    assert b["sync_deadline"] > b["created_at"]
    assert (b["max_retries"], b["retry_backoff"], b["external"]) == (3, None, False)
