"""A unit of work for tests that call use cases directly, on a database they choose."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from omoi.persistence import Database
from omoi.services.dispatcher import Dispatch, Dispatcher, NullDispatcher
from omoi.services.unit_of_work import UnitOfWork
from omoi.services.workflows import Workflows


@cache
def shipped_workflows() -> Workflows:
    return Workflows.load()


def unit_of_work(db: Database, dispatcher: Dispatcher | None = None) -> UnitOfWork:
    """``db`` with the shipped workflows; publishes to ``dispatcher`` (by default nowhere)."""
    return UnitOfWork(db, dispatcher or NullDispatcher(), shipped_workflows())


class Recorded(NullDispatcher):
    """Keeps what it was asked to publish, in order, instead of sending it."""

    def __init__(self) -> None:
        self.published: list[Dispatch] = []

    def publish(self, batch: Sequence[Dispatch]) -> None:
        self.published += batch
