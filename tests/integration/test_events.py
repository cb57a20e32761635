"""The event log over HTTP: cursor pages, and a live SSE stream that resumes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import submit, wait_finished

pytestmark = pytest.mark.usefixtures("worker")


def listed(client: Any, query: str) -> list[dict[str, Any]]:
    items, after = [], None
    while True:
        url = f"/api/v1/events?{query}&limit=3" + (f"&after={after}" if after else "")
        page = client.get(url).get_json()
        items += page["items"]
        after = page["next_cursor"]
        if after is None:
            return items


def read_stream(
    client: Any, url: str, headers: dict[str, str] | None = None, until: str | None = None
) -> list[tuple[int, str]]:
    """(id, type) of every event the stream sends, until ``until`` arrives or it ends."""
    resp = client.get(url, headers=headers or {}, buffered=False)
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    got: list[tuple[int, str]] = []
    buffer = ""
    for chunk in resp.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1)
                for line in block.splitlines()
                if ": " in line and not line.startswith(":")
            )
            if "id" in fields:
                got.append((int(fields["id"]), fields["event"]))
                if fields["event"] == until:
                    resp.close()
                    return got
    return got


def test_events_page_in_order_and_filter(client: Any) -> None:
    ticket = submit(
        client,
        [
            {"key": "a", "task_type": "effect"},
            {"key": "b", "task_type": "effect", "depends_on": ["a"]},
        ],
    )
    wait_finished(client, ticket["id"])
    items = listed(client, f"ticket_id={ticket['id']}")
    ids = [e["id"] for e in items]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    types = [e["type"] for e in items]
    assert types[0] == "ticket.created" and types[-1] == "ticket.completed"
    assert types.count("task.succeeded") == 2
    only_tasks = listed(client, f"ticket_id={ticket['id']}&type=task.")
    assert {e["type"].split(".")[0] for e in only_tasks} == {"task"}
    b = ticket["tasks"][1]["id"]
    assert {e["entity_id"] for e in listed(client, f"entity_id={b}")} == {b}


def test_sse_stream_follows_a_ticket_live_and_resumes(client: Any) -> None:
    ticket = submit(
        client,
        [
            {"key": "a", "task_type": "effect", "payload": {"seconds": 1}},
            {"key": "b", "task_type": "effect", "depends_on": ["a"]},
        ],
    )
    url = f"/api/v1/events/stream?ticket_id={ticket['id']}&timeout=30"
    live = read_stream(client, url, until="ticket.completed")  # opened while a still runs
    stored = [(e["id"], e["type"]) for e in listed(client, f"ticket_id={ticket['id']}")]
    assert live == stored
    resumed = read_stream(
        client, url, headers={"Last-Event-ID": str(live[2][0])}, until="ticket.completed"
    )
    assert resumed == live[3:]
    short = read_stream(
        client, f"/api/v1/events/stream?ticket_id={ticket['id']}&after={live[-1][0]}&timeout=0.5"
    )
    assert short == []  # nothing new: the stream ends at its timeout
