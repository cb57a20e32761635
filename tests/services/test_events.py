"""Reading the event log: pages by cursor with filters, and a follower that emits an event
committed late (below its cursor) exactly once; and each token's cap on open streams.

The shared hub many streams read through, and events committed out of id order by concurrent
PostgreSQL transactions, are the integration suite's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import insert

from omoi.domain.events import EventType
from omoi.persistence import Database
from omoi.persistence.statements import event_row, events
from omoi.services import tokens
from omoi.services.events import StreamSlots, follow, latest_id, list_events


def log(db: Database, event_id: int, kind: EventType, entity: uuid.UUID | None = None) -> None:
    """An event with the id its sequence gave it (``event_id``), committed now."""
    with db.connect() as conn:
        row = event_row(kind, "task", entity or uuid.uuid4(), None)
        conn.execute(insert(events).values(id=event_id, **row))


def test_events_page_oldest_first_by_cursor_and_filter(db: Database) -> None:
    task = uuid.uuid4()
    for n, kind in enumerate([EventType.TASK_QUEUED, EventType.TASK_STARTED] * 3, start=1):
        log(db, n, kind, task if n % 2 else None)
    page, cursor = list_events(db, limit=4)
    assert ([e.id for e in page], cursor) == ([1, 2, 3, 4], 4)
    rest, end = list_events(db, after=cursor, limit=4)
    assert ([e.id for e in rest], end) == ([5, 6], None)
    started, _ = list_events(db, type="task.st")
    assert [e.id for e in started] == [2, 4, 6]
    assert [e.id for e in list_events(db, entity_id=task)[0]] == [1, 3, 5]
    assert latest_id(db) == 6


def test_a_follower_emits_an_event_committed_below_its_cursor_once(db: Database) -> None:
    for event_id in (1, 2, 4):
        log(db, event_id, EventType.TASK_QUEUED)
    feed: Iterator[Any] = follow(db, poll=0)
    assert [next(feed).id for _ in range(3)] == [1, 2, 4]
    assert next(feed) is None  # nothing new: a keep-alive
    log(db, 3, EventType.TASK_QUEUED)  # its transaction began first and committed last
    assert next(feed).id == 3
    assert next(feed) is None


def test_a_token_holds_at_most_its_cap_of_streams_and_learns_of_its_revocation(
    db: Database,
) -> None:
    made, _ = tokens.create(db, "watcher", ["read"])
    slots = StreamSlots(db, cap=2, interval=0)
    assert [slots.take(made["id"]) for _ in range(3)] == [True, True, False]
    slots.give(made["id"])
    assert slots.take(made["id"])
    assert not slots.revoked(made["id"])
    tokens.revoke(db, "watcher")
    assert slots.revoked(made["id"])
