"""A unit of work for tests that call use cases directly, on a database they choose, and a
dispatcher that records what it was told instead of telling a broker."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from omoi.persistence import Database
from omoi.services.dispatcher import Dispatch, Dispatcher, NullDispatcher
from omoi.services.unit_of_work import UnitOfWork
from omoi.services.workflows import Workflows
from tests.support.procs import ROOT

#: The test workflows (``gated``, ``fanin``) every omoi process of a test session loads too.
TEST_WORKFLOWS = ROOT / "tests" / "support" / "workflows"


@cache
def shipped_workflows() -> Workflows:
    return Workflows.load()


@cache
def session_workflows() -> Workflows:
    """The shipped workflows and those in ``TEST_WORKFLOWS``."""
    return Workflows.load(TEST_WORKFLOWS)


def unit_of_work(
    db: Database, dispatcher: Dispatcher | None = None, workflows: Workflows | None = None
) -> UnitOfWork:
    """``db`` with ``workflows`` (the shipped ones by default); publishes to ``dispatcher``
    (by default nowhere)."""
    return UnitOfWork(db, dispatcher or NullDispatcher(), workflows or shipped_workflows())


class BrokerDown(ConnectionError):
    """What ``Recorded`` raises from ``publish`` while ``down``."""


class Recorded(NullDispatcher):
    """Keeps what it was asked to publish and revoke, in order, instead of sending it; while
    ``down`` it refuses to publish, as a broker that cannot be reached does."""

    def __init__(self) -> None:
        self.published: list[Dispatch] = []
        self.revoked: list[str] = []
        #: ``("publish", batch)`` and ``("revoke", ids)``, in the order they were asked for.
        self.calls: list[tuple[str, list[object]]] = []
        self.down = False

    def publish(self, batch: Sequence[Dispatch]) -> None:
        if self.down:
            raise BrokerDown("the broker is down")
        self.published += batch
        self.calls.append(("publish", list(batch)))

    def revoke(self, message_ids: Sequence[str]) -> None:
        self.revoked += message_ids
        self.calls.append(("revoke", list(message_ids)))
