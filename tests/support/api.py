"""Helpers for driving the API in tests."""

from __future__ import annotations

from typing import Any

from tests.support.procs import wait_for


def submit(client: Any, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/tickets", json={"title": "test", "tasks": tasks, **extra})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def wait_finished(client: Any, ticket_id: str, timeout: float = 60) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        ticket = client.get(f"/api/v1/tickets/{ticket_id}").get_json()
        return ticket if ticket["status"] != "active" else None

    return wait_for(finished, timeout, interval=0.1, what=f"ticket {ticket_id} to finish")


def tasks_by_key(client: Any, ticket_id: str) -> dict[str, dict[str, Any]]:
    items = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&limit=1000").get_json()["items"]
    return {t["key"]: t for t in items}
