"""The Celery side of dispatching: a producer app (no result backend) and the dispatcher that
turns ready tasks into ``omoi.run_task`` messages. Used by the API, the worker and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery, group
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as redis_transport
from kombu.transport import sqlalchemy as sqla_transport

import celeryconfig
from omoi.config import Settings
from omoi.domain.auth import BUILTIN_EXEC_TYPES
from omoi.domain.routing import publish_queue
from omoi.services.dispatcher import Dispatch

RUN_TASK = "omoi.run_task"


def make_celery(settings: Settings, main: str = "omoi") -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(celeryconfig.config_for(settings))
    return app


def time_limits(timeout: float | None, grace: float) -> dict[str, float]:
    """Soft limit = the task's timeout (the handler sees it); hard limit = soft + grace."""
    if timeout is None:
        return {}
    return {"soft_time_limit": timeout, "time_limit": timeout + grace}


BROKER_MARKER = "omoi:broker-marker"


class CeleryDispatcher:
    """Publishes a batch as one Celery group of ``run_task(task_id, attempt)`` messages. The
    payload stays in PostgreSQL: the broker, Flower and worker logs see only the ids. A task of
    an exec type (``exec_types``) goes to its exec queue, which only the workers that enabled
    the type consume."""

    def __init__(
        self,
        app: Celery,
        time_limit_grace: float,
        exec_types: frozenset[str] = BUILTIN_EXEC_TYPES,
    ) -> None:
        self.app = app
        self.grace = time_limit_grace
        self.exec_types = exec_types

    def publish(self, batch: Sequence[Dispatch]) -> None:
        signatures = [
            self.app.signature(
                RUN_TASK,
                args=(str(d.task_id), d.attempt),
                argsrepr=f"(task={d.task_id}, attempt={d.attempt})",  # what Flower shows
                kwargsrepr="{}",
                task_id=d.message_id,
                queue=publish_queue(d.queue, d.task_type, self.exec_types),
                countdown=d.countdown,
                **time_limits(d.timeout_seconds, self.grace),
            )
            for d in batch
        ]
        group(signatures).apply_async()

    def revoke(self, message_ids: Sequence[str]) -> None:
        """Revoke with terminate: a worker discards the message if it has not started it, or
        kills the pool process running it. The database cancel already happened; a result that
        arrives anyway is discarded by the lease guard."""
        if message_ids:
            self.app.control.revoke(list(message_ids), terminate=True, signal="SIGTERM")

    def broker_reset(self) -> bool:
        """Redis: a marker key set with NX. Writing it means the key was missing: this is a
        new or emptied Redis (restarted without persistence, flushed, replaced), whose queued
        messages are gone. Other brokers keep their data: never."""
        if not self.app.conf.broker_url.startswith(("redis://", "rediss://")):
            return False
        with self.app.connection_for_write() as conn:
            return bool(conn.default_channel.client.set(BROKER_MARKER, "1", nx=True))

    def ping(self, timeout: float = 2.0) -> None:
        """Raise unless the broker accepts a connection."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)


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
