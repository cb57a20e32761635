"""The worker's Celery app: ``celery -A omoi.worker.app worker`` (or ``omoi worker``).

Jobs are thin: ids in, one service call. Engines are built per process after fork. The only
job is ``omoi.run_task``: the repair sweeps run in ``omoi beat`` itself (``omoi/beat.py``), where
no busy pool can hold them up.
"""

from __future__ import annotations

import uuid
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure

from omoi import process
from omoi.config import Settings
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import TaskError
from omoi.persistence import Database, statements
from omoi.services import execution, failures, locks, outbox, workflows
from omoi.services.failures import RetryPolicy
from omoi.transport import RUN_TASK, CeleryDispatcher, make_celery
from omoi.worker import (
    demo,  # noqa: F401 - registers the demo agents
    shell,
)
from omoi.worker.agent import WorkerAgent
from omoi.worker.handlers import registry


def create_worker_app(settings: Settings) -> Celery:
    process.set_up(settings.log_level)
    app = make_celery(settings)
    db = Database(settings.database_url, pool_size=2, pre_ping=False)
    statements.wait_out_outages(settings.db_outage_patience)  # a result must be stored, not dropped
    dispatcher = CeleryDispatcher(app, settings.time_limit_grace, settings.exec_types)
    policy = RetryPolicy(settings.retry_backoff, settings.retry_backoff_max, settings.retry_eta_max)
    workflows.configure(settings.workflows_dir or None)  # a bad workflow file stops start-up
    registry.load(settings.handlers)
    resolve = registry.resolver(settings.exec_types, settings.enable_task_types)
    shell.configure(settings.shell_env, (settings.database_url, settings.broker_url))

    def interrupt(task_id: uuid.UUID, attempt: int) -> None:
        """Hand back an attempt this worker stopped running because it was told to stop:
        re-queued under a new attempt at once, not counted as a retry, its locks freed."""
        error = TaskError(
            ErrorCategory.INTERRUPTED, "WorkerShutdown", "its worker stopped before it finished"
        )
        counted, retry = failures.fail_attempt(db, policy, task_id, attempt, error)
        if counted:
            locks.release(db, dispatcher, task_id)
        outbox.publish(db, dispatcher, retry)

    agent = WorkerAgent(
        db,
        settings.heartbeat_interval,
        settings.shutdown_grace,
        interrupt,
        settings.enable_task_types,
    )
    agent.connect_signals()

    @app.task(name=RUN_TASK, bind=True)
    def run_task(self, task_id: str, attempt: int) -> str:  # type: ignore[no-untyped-def]
        return execution.run_attempt(
            db,
            dispatcher,
            policy,
            resolve,
            uuid.UUID(task_id),
            attempt,
            self.request.id,
            agent.id,
            settings.exec_types,
        )

    @task_failure.connect(sender=run_task, weak=False)
    def child_died(exception: BaseException, args: Any, **_: Any) -> None:
        """In the worker's main process when the pool child running an attempt died: killed
        by the hard time limit (a timeout), during a shutdown (handed back as interrupted) or
        by anything else (lost). Record it, then retry under a new attempt or fail, as for
        any other failure. Other exceptions were raised in the child, which recorded them."""
        if isinstance(exception, TimeLimitExceeded):
            category, message = ErrorCategory.TIMEOUT, "hard time limit exceeded"
        elif isinstance(exception, WorkerLostError):
            if agent.stopping:  # stopped by the shutdown, or died during it: not its fault
                agent.hand_back(args[0], args[1])
                return
            category, message = ErrorCategory.LOST, "the pool process running it died"
        else:
            return
        error = TaskError(category, type(exception).__name__, f"{message} ({exception})")
        _, retry = failures.fail_attempt(db, policy, uuid.UUID(args[0]), args[1], error)
        outbox.publish(db, dispatcher, retry)

    return app


app = create_worker_app(Settings.from_env())
