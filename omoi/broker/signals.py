"""Wake-ups on Redis pub/sub (``omoi.services.signals.Signal``): a writer publishes a task's
id on a channel (``Settings.log_channel`` when it stored lines of the task's log,
``Settings.work_channel`` when the task became ready for external agents); each API process
subscribes once per channel and wakes whoever waits for it. A wake-up only saves a waiter its
next poll, so publishing never waits for a Redis that is away: after a failure it is skipped
for ``QUIET`` seconds."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import redis
import structlog

log = structlog.get_logger(__name__)

QUIET = 5.0  # seconds without publishing after a failed publish
TIMEOUT = 1.0  # seconds a publish may take (connecting included)


class RedisSignal:
    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._client: tuple[int, redis.Redis] | None = None  # this process's (pid, client)
        self._quiet_until = 0.0

    def _publisher(self) -> redis.Redis:
        """A client of this process's own: a pool child does not share its parent's socket."""
        if self._client is None or self._client[0] != os.getpid():
            client = redis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
            self._client = (os.getpid(), client)
        return self._client[1]

    def notify(self, subject: uuid.UUID) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            self._publisher().publish(self.channel, str(subject))
        except redis.RedisError as exc:
            self._quiet_until = time.monotonic() + QUIET
            log.warning("signal_publish_failed", channel=self.channel, error=repr(exc))

    def listen(self, wake: Callable[[uuid.UUID], None]) -> None:
        """Subscribe in a daemon thread (a greenlet under gevent); reconnect a second after
        Redis goes away. Health checks notice a connection that died without closing."""

        def loop() -> None:
            while True:
                try:
                    client = redis.Redis.from_url(self.url, health_check_interval=10)
                    with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                        pubsub.subscribe(self.channel)
                        for message in pubsub.listen():
                            try:
                                wake(uuid.UUID(message["data"].decode()))
                            except (ValueError, AttributeError):
                                continue  # not a task id: someone else's message
                except Exception as exc:
                    log.warning("signal_listen_failed", channel=self.channel, error=repr(exc))
                    time.sleep(1.0)

        name = f"omoi-signal-{self.channel}"
        threading.Thread(target=loop, name=name, daemon=True).start()
