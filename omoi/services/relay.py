"""Every committed event, also on Redis pub/sub: channel ``<prefix>`` and, for a ticket's
events, ``<prefix>.<ticket_id>``; the prefix is ``Settings.relay_channel`` (``OMOI_EVENTS_CHANNEL``,
else ``omoi.events.db<N>`` for the broker's database N). The relay follows the event log (so it
needs no hook in the many transactions that write events, and misses none committed out of id
order) and publishes each row once per relay; subscribers de-duplicate by ``id`` if two relays
run."""

from __future__ import annotations

import json
import threading
from typing import Any

import redis
import structlog
from sqlalchemy import func, select

from omoi.persistence import Database
from omoi.persistence.statements import events
from omoi.services.events import follow

log = structlog.get_logger(__name__)


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


def run(db: Database, client: redis.Redis, channel: str, stop: threading.Event) -> None:
    """Publish events committed from now on, under ``channel``, until ``stop`` is set."""
    with db.connect() as conn:
        start = conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one()
    for row in follow(db, after=start, keep_going=lambda: not stop.is_set()):
        if row is None:
            continue
        text = message(row)
        pipe = client.pipeline(transaction=False)
        pipe.publish(channel, text)
        if row.ticket_id:
            pipe.publish(f"{channel}.{row.ticket_id}", text)
        pipe.execute()


def start(db: Database, redis_url: str, channel: str) -> threading.Event:
    """Run the relay in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    client = redis.Redis.from_url(redis_url)

    def loop() -> None:
        while not stop.is_set():
            try:
                run(db, client, channel, stop)
            except Exception as exc:  # database or Redis restarting: follow again shortly
                log.warning("event_relay_failed", error=repr(exc))
                stop.wait(1.0)

    threading.Thread(target=loop, name="omoi-event-relay", daemon=True).start()
    return stop
