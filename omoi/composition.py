"""The composition root: what a process builds once, and how. ``Root(settings, role)`` holds
the settings, the database, the Celery app and dispatcher, the retry policy, the workflows, the
unit of work the use cases change things through and (in a worker) the handler registry; each
is built on first use, so a CLI command that only needs the database builds no Celery app and
loads no workflow file. The API
(``omoi.api.create_app``), the worker (``omoi.worker.app``), beat (``omoi.beat``) and the CLI
each build one root and take everything from it. Celery and the use cases are imported only
when a root first needs them: a CLI command on the database alone starts as fast as before."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from omoi.config import Settings
from omoi.persistence import Database
from omoi.services.dispatcher import Dispatcher
from omoi.services.workflows import Workflows

if TYPE_CHECKING:
    from celery import Celery

    from omoi.broker.dispatcher import CeleryDispatcher
    from omoi.services.attempts import Handler
    from omoi.services.failures import RetryPolicy
    from omoi.services.logs import LogLimits
    from omoi.services.signals import Signal
    from omoi.services.unit_of_work import UnitOfWork


class Role(StrEnum):
    """The process a root is built for: it sizes the database pool and names the Celery app."""

    API = "api"
    WORKER = "worker"
    BEAT = "beat"
    CLI = "cli"


def _database(settings: Settings, role: Role) -> Database:
    if role is Role.API:
        return Database(settings.database_url, settings.db_pool_size)
    if role is Role.WORKER:  # a pool child: one attempt at a time, its engine built after fork;
        # it waits out an outage, for a finished handler's result must be stored, not dropped
        return Database(
            settings.database_url,
            pool_size=2,
            pre_ping=False,
            outage_patience=settings.db_outage_patience,
        )
    if role is Role.BEAT:
        return Database(settings.database_url, pool_size=2)
    return Database(settings.database_url, pool_size=1)


class HandlerRegistry(Protocol):
    """The worker's handlers by task type (``omoi.worker.handlers.Registry``)."""

    def load(self, modules: Iterable[str]) -> None: ...

    def load_celery_app(self, spec: str) -> None: ...

    def resolver(
        self, exec_types: Collection[str], enabled: Collection[str]
    ) -> Callable[[str], Handler | None]: ...


class Root:
    """One process's long-lived objects, each built once, on first use. ``db`` and
    ``dispatcher`` may be given (tests, tools); ``handlers`` is the worker's registry."""

    def __init__(
        self,
        settings: Settings,
        role: Role,
        *,
        db: Database | None = None,
        dispatcher: Dispatcher | None = None,
        handlers: HandlerRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self._db = db
        self._dispatcher = dispatcher
        self._handlers = handlers

    @cached_property
    def db(self) -> Database:
        return self._db or _database(self.settings, self.role)

    @cached_property
    def celery(self) -> Celery:
        """The Celery app: the worker's own, or the producer the API and beat publish with."""
        from omoi.broker.app import make_celery

        return make_celery(self.settings, "omoi-api" if self.role is Role.API else "omoi")

    @cached_property
    def producer(self) -> CeleryDispatcher:
        """The dispatcher on the broker, whatever ``dispatcher`` was given (its ``ping`` is
        the API's broker health check)."""
        from omoi.broker.dispatcher import CeleryDispatcher

        s = self.settings
        return CeleryDispatcher(self.celery, s.time_limit_grace, s.exec_types)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher or self.producer

    def _signal(self, channel: str) -> Signal:
        """Wake-ups on ``channel``: Redis pub/sub when Redis is the broker; nothing otherwise
        (the waiters poll)."""
        if not self.settings.broker_url.startswith(("redis://", "rediss://")):
            from omoi.services.signals import NoSignal

            return NoSignal()
        from omoi.broker.signals import RedisSignal

        return RedisSignal(self.settings.broker_url, channel)

    @cached_property
    def log_signal(self) -> Signal:
        """What wakes the followers of task logs."""
        return self._signal(self.settings.log_channel)

    @cached_property
    def work_signal(self) -> Signal:
        """What wakes the external agents' long-polling claims when a task they may take
        became ready."""
        return self._signal(self.settings.work_channel)

    @cached_property
    def log_limits(self) -> LogLimits:
        """How much of each attempt's log is kept."""
        from omoi.services.logs import LogLimits

        return LogLimits(self.settings.log_max_lines, self.settings.log_max_line_chars)

    @cached_property
    def policy(self) -> RetryPolicy:
        from omoi.services.failures import RetryPolicy

        s = self.settings
        return RetryPolicy(s.retry_backoff, s.retry_backoff_max, s.retry_eta_max)

    @cached_property
    def workflows(self) -> Workflows:
        """Every workflow, loaded and checked (a bad file raises ``WorkflowError``)."""
        return Workflows.load(self.settings.workflows_dir or None)

    @cached_property
    def uow(self) -> UnitOfWork:
        """What the use cases change the world through: the database, the dispatcher and
        the workflows together."""
        from omoi.services.outbox import Backlog
        from omoi.services.unit_of_work import UnitOfWork

        # the API answers a wide ticket once its first tasks are on the broker
        backlog = Backlog(self.db, self.dispatcher) if self.role is Role.API else None
        return UnitOfWork(self.db, self.dispatcher, self.workflows, backlog, self.work_signal)

    @cached_property
    def resolve(self) -> Callable[[str], Handler | None]:
        """The worker's handler lookup, after importing the ``OMOI_HANDLERS`` modules and
        the tasks of the ``OMOI_CELERY_APP``."""
        if self._handlers is None:
            raise RuntimeError(f"a {self.role} root has no handler registry")
        self._handlers.load(self.settings.handlers)
        if self.settings.celery_app:
            self._handlers.load_celery_app(self.settings.celery_app)
        return self._handlers.resolver(self.settings.exec_types, self.settings.enable_task_types)
