"""Every committed event, also on a message bus: the relay follows the event log (so it needs
no hook in the many transactions that write events, and misses none committed out of id order)
and hands each row, as JSON, to a publisher once per relay; subscribers de-duplicate by ``id``
if two relays run. The Redis pub/sub publisher, its channels and its thread are
``omoi/broker/relay.py``."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any, Protocol

from sqlalchemy import func, select

from omoi.persistence import Database
from omoi.persistence.statements import events
from omoi.services.events import follow


class Publisher(Protocol):
    def __call__(self, text: str, ticket_id: uuid.UUID | None) -> None:
        """Publish one event's JSON (``ticket_id``: its ticket's, if it has one)."""
        ...


def message(row: Any) -> str:
    return json.dumps(
        {
            "id": row.id,
            "type": row.type,
            "entity_type": row.entity_type,
            "entity_id": str(row.entity_id) if row.entity_id else None,
            "ticket_id": str(row.ticket_id) if row.ticket_id else None,
            "payload": row.payload,
            "created_at": row.created_at.isoformat(),
            "actor_token_id": str(row.actor_token_id) if row.actor_token_id else None,
            "actor_name": row.actor_name,
        },
        default=str,
    )


def run(db: Database, publish: Publisher, stop: threading.Event) -> None:
    """Publish events committed from now on until ``stop`` is set."""
    with db.connect() as conn:
        start = conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one()
    for row in follow(db, after=start, keep_going=lambda: not stop.is_set()):
        if row is None:
            continue
        publish(message(row), row.ticket_id)
