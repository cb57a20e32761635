"""omoi's kombu transports, registered under their URL schemes on import: ``omoi-sqla`` (the
embedded broker, a SQLite file) and ``redis`` (kombu's, surviving a closed connection)."""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as redis_transport
from kombu.transport import sqlalchemy as sqla_transport


class EmbeddedTransport(sqla_transport.Transport):
    """kombu's SQLAlchemy transport polling every 0.1 s instead of 1 s. Its transport options
    go to ``create_engine``, so the interval cannot be passed as an option."""

    polling_interval = 0.1


TRANSPORT_ALIASES.setdefault("omoi-sqla", f"{__name__}:EmbeddedTransport")


class RedisChannel(redis_transport.Channel):  # type: ignore[misc]
    """Celery 5.7 closes a worker's broken broker connection first, then its channel still
    restores unacknowledged messages and acks the attempts that finished meanwhile; kombu
    then builds a client from the closed connection and fails with ``AttributeError``, which
    kills the worker. Report a closed connection as the connection error it is: Celery and
    kombu handle those (the message stays in Redis's unacked set, restored after the
    visibility timeout, and omoi's outbox re-sends the attempt anyway)."""

    def _create_client(self, asynchronous: bool = False) -> Any:
        if self._pool is None and (self.connection is None or self.connection.client is None):
            raise redis_transport.redis.exceptions.ConnectionError("the connection is closed")
        return super()._create_client(asynchronous)


class RedisTransport(redis_transport.Transport):  # type: ignore[misc]
    Channel = RedisChannel


TRANSPORT_ALIASES["redis"] = f"{__name__}:RedisTransport"
