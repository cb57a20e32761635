"""Reading the event log: a page by cursor, or a live feed that follows it.

Every event names the API token whose request made it (``actor_token_id``, ``actor_name``;
null for workers' and beat's own changes); ``actor`` filters on either.

Event ids come from a sequence, and two transactions can commit their events out of id order;
a follower that only asked for ``id > last`` could skip an event committed late. ``follow``
therefore re-reads a window below its cursor and emits only ids it has not emitted yet.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select

from omoi.models import Database
from omoi.services.sql import events

LOOKBACK = 1000  # ids below the cursor re-read for late commits


def _query(
    ticket_id: uuid.UUID | None,
    entity_id: uuid.UUID | None,
    type_prefix: str | None,
    actor: str | None,
) -> Any:
    query = select(events).order_by(events.c.id)
    if actor:
        query = query.where(_by(actor))
    if ticket_id is not None:
        query = query.where(events.c.ticket_id == ticket_id)
    if entity_id is not None:
        query = query.where(events.c.entity_id == entity_id)
    if type_prefix:
        query = query.where(events.c.type.startswith(type_prefix))
    return query


def _by(actor: str) -> Any:
    """A token id names that token's events, anything else a token name's: each is one
    ordered scan of its partial index (an OR of the two would read and sort all of them)."""
    try:
        return events.c.actor_token_id == uuid.UUID(actor)
    except ValueError:
        return events.c.actor_name == actor


def latest_id(db: Database) -> int:
    """The newest event's id (0 for none): where a live view starts following."""
    with db.connect() as conn:
        return int(conn.execute(select(func.max(events.c.id))).scalar() or 0)


def list_events(
    db: Database,
    *,
    ticket_id: uuid.UUID | None = None,
    entity_id: uuid.UUID | None = None,
    type: str | None = None,
    actor: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> tuple[list[Any], int | None]:
    """Oldest first after ``after``; returns the page and the cursor for the next one."""
    query = _query(ticket_id, entity_id, type, actor).limit(limit + 1)
    if after is not None:
        query = query.where(events.c.id > after)
    with db.connect() as conn:
        rows = list(conn.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


def follow(
    db: Database,
    *,
    ticket_id: uuid.UUID | None = None,
    entity_id: uuid.UUID | None = None,
    type: str | None = None,
    actor: str | None = None,
    after: int | None = None,
    poll: float = 0.25,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[Any | None]:
    """Yield events as they are committed (``None`` when a poll found nothing, so the caller
    can send keep-alives), starting after ``after`` (0: from the beginning)."""
    cursor = floor = after or 0
    emitted: set[int] = set()
    base = _query(ticket_id, entity_id, type, actor)
    while keep_going():
        with db.connect() as conn:
            window = max(floor, cursor - LOOKBACK)
            recent = (
                conn.execute(
                    base.with_only_columns(events.c.id).where(
                        events.c.id > window, events.c.id <= cursor
                    )
                )
                .scalars()
                .all()
            )
            late = [i for i in recent if i not in emitted]
            rows = list(conn.execute(base.where(events.c.id.in_(late)))) if late else []
            rows += list(conn.execute(base.where(events.c.id > cursor).limit(500)))
        for row in rows:
            emitted.add(row.id)
            cursor = max(cursor, row.id)
            yield row
        emitted = {i for i in emitted if i > cursor - LOOKBACK}
        if not rows:
            yield None
            time.sleep(poll)
