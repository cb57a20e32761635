"""The event relay on Redis pub/sub: every committed event (``omoi/services/relay.py``) under
channel ``<prefix>`` and, for a ticket's events, ``<prefix>.<ticket_id>``; the prefix is
``Settings.relay_channel`` (``OMOI_EVENTS_CHANNEL``, else ``omoi.events.db<N>`` for the broker's
database N)."""

from __future__ import annotations

import threading
import uuid

import redis
import structlog

from omoi.persistence import Database
from omoi.services import relay

log = structlog.get_logger(__name__)


class RedisPublisher:
    """Publishes an event under the prefix and, for a ticket's, under its ticket's channel,
    in one round trip."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.client = client
        self.channel = channel

    def __call__(self, text: str, ticket_id: uuid.UUID | None) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.publish(self.channel, text)
        if ticket_id:
            pipe.publish(f"{self.channel}.{ticket_id}", text)
        pipe.execute()


def start(db: Database, redis_url: str, channel: str) -> threading.Event:
    """Run the relay in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    publish = RedisPublisher(redis.Redis.from_url(redis_url), channel)

    def loop() -> None:
        while not stop.is_set():
            try:
                relay.run(db, publish, stop)
            except Exception as exc:  # database or Redis restarting: follow again shortly
                log.warning("event_relay_failed", error=repr(exc))
                stop.wait(1.0)

    threading.Thread(target=loop, name="omoi-event-relay", daemon=True).start()
    return stop
