"""What views need from the process: settings, the database and the unit of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from omoi.config import Settings
from omoi.persistence import Database
from omoi.services.events import EventHub, StreamSlots
from omoi.services.external_agents import Doorbell
from omoi.services.failures import RetryPolicy
from omoi.services.logs import LogLimits
from omoi.services.read.logs import LogHub
from omoi.services.signals import Signal
from omoi.services.tokens import Authenticator
from omoi.services.unit_of_work import UnitOfWork


@dataclass
class Runtime:
    settings: Settings
    db: Database
    uow: UnitOfWork  # the database, the dispatcher and the workflows, for the use cases
    policy: RetryPolicy
    broker_ping: Callable[[], None]
    authenticate: Authenticator
    hub: EventHub  # the process's one follower of the event log, shared by its streams
    streams: StreamSlots
    logs: LogHub  # the process's one watcher of the task logs its streams follow
    log_signal: Signal  # wakes every API process's followers of a task's log
    doorbell: Doorbell  # wakes this process's long-polling claims
    log_limits: LogLimits


def runtime() -> Runtime:
    return current_app.extensions["omoi"]  # type: ignore[no-any-return]
