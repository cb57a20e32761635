"""This worker as an agent: registered when it starts, heartbeating from its main process
(which keeps beating while the pool's children run long tasks), offline at a clean shutdown."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any

import structlog
from celery.signals import worker_init, worker_ready, worker_shutdown

from omoi import __version__
from omoi.domain.enums import AgentKind
from omoi.domain.routing import QUEUE_PREFIX
from omoi.models import Database
from omoi.services import agents

log = structlog.get_logger(__name__)


class WorkerAgent:
    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self.id: uuid.UUID | None = None  # set before the pool forks: children inherit it
        self._stop = threading.Event()

    def connect_signals(self) -> None:
        worker_init.connect(self._register, weak=False)
        worker_ready.connect(self._start_beating, weak=False)
        worker_shutdown.connect(self._shutdown, weak=False)

    def _register(self, sender: Any, **_: Any) -> None:
        queues = list(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
        capabilities = [q[len(QUEUE_PREFIX) :] for q in queues if q.startswith(QUEUE_PREFIX)]
        self.id = agents.register(
            self.db,
            name=sender.hostname,
            kind=AgentKind.CELERY,
            capabilities=capabilities,
            capacity=int(sender.concurrency or 1),
            version=__version__,
            hostname=socket.gethostname(),
            pid=os.getpid(),
        )
        log.info("agent_registered", agent_id=str(self.id), capabilities=capabilities)

    def _start_beating(self, **_: Any) -> None:
        threading.Thread(target=self._beat, name="omoi-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.id is not None:
                    agents.heartbeat(self.db, self.id)
            except Exception as exc:  # the database may be restarting: beat again later
                log.warning("heartbeat_failed", agent_id=str(self.id), error=repr(exc))

    def _shutdown(self, **_: Any) -> None:
        self._stop.set()
        if self.id is not None:
            agents.go_offline(self.db, self.id)
