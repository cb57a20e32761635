"""The worker's Celery app: ``celery -A omoi.worker.app worker`` (or ``omoi worker``).

Jobs are thin: ids in, one service call. Engines are built per process after fork.
"""

from __future__ import annotations

import uuid

from celery import Celery

from omoi.config import Settings
from omoi.logs import configure as configure_logs
from omoi.models import Database
from omoi.services import execution, outbox
from omoi.transport import RUN_TASK, CeleryDispatcher, make_celery
from omoi.worker.handlers import registry

CONTROL_QUEUE = "omoi.control"


def create_worker_app(settings: Settings) -> Celery:
    configure_logs(settings.log_level)
    app = make_celery(settings)
    db = Database(settings.database_url, pool_size=2, pre_ping=False)
    dispatcher = CeleryDispatcher(app, settings.time_limit_grace)
    registry.load(settings.handlers)
    app.conf.beat_schedule = {
        "sweep-outbox": {
            "task": "omoi.sweep_outbox",
            "schedule": settings.sweep_interval,
            "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval},
        },
    }

    @app.task(name=RUN_TASK, bind=True)
    def run_task(self, task_id: str, attempt: int) -> str:  # type: ignore[no-untyped-def]
        return execution.run_attempt(
            db, dispatcher, registry.get, uuid.UUID(task_id), attempt, self.request.id
        )

    @app.task(name="omoi.sweep_outbox")
    def sweep_outbox() -> int:
        return outbox.sweep(db, dispatcher, settings.outbox_republish_age, settings.outbox_lost_age)

    return app


app = create_worker_app(Settings.from_env())
