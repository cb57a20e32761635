"""The Celery side of dispatching: the dispatcher that turns ready tasks into
``omoi.run_task`` messages on a Celery app (``omoi.broker.app``). Used by the API, the worker
and beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from omoi.broker.app import RUN_TASK
from omoi.domain.auth import BUILTIN_EXEC_TYPES
from omoi.domain.jobs import clipped
from omoi.domain.routing import publish_queue
from omoi.services.dispatcher import Dispatch


def time_limits(timeout: float | None, grace: float) -> dict[str, float]:
    """Soft limit = the task's timeout (the handler sees it); hard limit = soft + grace."""
    if timeout is None:
        return {}
    return {"soft_time_limit": timeout, "time_limit": timeout + grace}


BROKER_MARKER = "omoi:broker-marker"


def shown(d: Dispatch) -> dict[str, Any]:
    """What Flower (and the worker's log) shows of the job instead of its arguments: named for
    its task's type (a bounded set, as Flower's metrics labels want), the task and attempt as
    its arguments, its key and ticket's title as its keyword arguments, and its lineage."""
    root, parent = d.lineage
    return {
        "shadow": d.task_type or RUN_TASK,
        "argsrepr": f"(task={d.task_id}, attempt={d.attempt})",
        "kwargsrepr": repr({"key": d.key, "ticket": clipped(d.title)}),
        "root_id": root,
        "parent_id": parent,
    }


PIPELINE = 500  # Redis commands sent in one round trip of a batch's publish


class CeleryDispatcher:
    """Publishes a batch of ``run_task(task_id, attempt)`` messages through one producer,
    pipelined (kombu's ``Producer.batch``: on Redis, ``PIPELINE`` pushes per round trip
    instead of one each, so releasing a thousand dependents or accepting a wide ticket costs
    a few round trips, not a thousand). The payload stays in PostgreSQL: the broker, Flower
    and worker logs see the ids, the task's type and key and its ticket's title (``shown``).
    A task of an exec type (``exec_types``) goes to its exec queue, which only the workers
    that enabled the type consume."""

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
        with self.app.producer_or_acquire() as producer, producer.batch(PIPELINE):
            for d in batch:
                self.app.send_task(
                    RUN_TASK,
                    args=(str(d.task_id), d.attempt),
                    task_id=d.message_id,
                    producer=producer,
                    **shown(d),
                    queue=publish_queue(d.queue, d.task_type, self.exec_types),
                    countdown=d.countdown,
                    **time_limits(d.timeout_seconds, self.grace),
                )

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
