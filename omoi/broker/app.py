"""The Celery app omoi's processes build: configured from ``Settings`` (``omoi.broker.config``),
no result backend, omoi's kombu transports registered (``omoi.broker.transports``)."""

from __future__ import annotations

from celery import Celery

from omoi.broker import transports  # noqa: F401 - registers omoi's kombu transports
from omoi.broker.config import config_for
from omoi.config import Settings

RUN_TASK = "omoi.run_task"


def make_celery(settings: Settings, main: str = "omoi") -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(config_for(settings))
    return app
