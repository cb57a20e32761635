"""Celery configuration for omoi, derived from ``OMOI_*`` settings (see omoi/config.py); the
top-level ``celeryconfig`` module points here.

Crash safety: acks late + reject on worker lost + prefetch 1, and a Redis visibility timeout
longer than any time limit so a long task is never redelivered while it still runs. No result
backend: results live in Postgres.
"""

from __future__ import annotations

from typing import Any

from omoi.config import Settings


def config_for(settings: Settings) -> dict[str, Any]:
    redis = settings.broker_url.startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        # a failed attempt's job fails (omoi.worker.app.AttemptFailed) once omoi recorded the
        # failure and published its retry as a new message: acknowledge it, never requeue it
        # (Celery 5.7's names; earlier versions ack on failure and timeout by default)
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        # a pool child that dies is recorded by omoi (RunTask.on_failure, in the main process)
        # as a lost attempt and retried under a new one; requeueing its message would only
        # bring back an attempt the database already holds as running
        "task_reject_on_worker_lost": False,
        # a broker connection loss must not kill running attempts: they finish and store their
        # result in PostgreSQL; the message, redelivered later, finds the attempt done
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cap.default",
        "task_create_missing_queues": True,
        # kombu's SQLAlchemy transport hands these options to create_engine: Redis only.
        "broker_transport_options": (
            {"visibility_timeout": settings.visibility_timeout} if redis else {}
        ),
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 10,
        "timezone": "UTC",
    }
