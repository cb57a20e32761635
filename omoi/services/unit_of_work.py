"""The unit of work every state change goes through: one transaction, retried when it loses a
deadlock or its database, and only after it commits, what it made ready is published and what
it cancelled is revoked. A message never leaves for a row that was rolled back, and a row that
committed is never left unpublished (if the broker is down, the outbox sweep publishes it).

This is the pattern of cosmicpython's ``unit_of_work.py`` with its message bus: a use case
writes through a ``Transaction`` and appends to ``ready`` and ``revoke``; ``UnitOfWork.run``
commits and then tells the broker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection

from omoi.persistence import Database
from omoi.services.dispatcher import Dispatch, Dispatcher
from omoi.services.outbox import Backlog, publish
from omoi.services.signals import NoSignal, Signal
from omoi.services.workflows import Workflows

T = TypeVar("T")


@dataclass
class Transaction:
    """One run of a unit of work: its connection, the workflows its phase rules read, and
    what the broker must hear of once it commits."""

    conn: Connection
    workflows: Workflows
    #: Tasks this transaction queued: published after the commit.
    ready: list[Dispatch] = field(default_factory=list)
    #: Celery message ids of attempts this transaction cancelled: revoked after the commit.
    revoke: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UnitOfWork:
    """The process's database, broker and workflows, as the use cases need them together.
    Built once by the composition root."""

    db: Database
    dispatcher: Dispatcher
    workflows: Workflows
    #: Where a commit's ready tasks beyond the first thousand go to be published after it
    #: (the API's, so a wide ticket's 201 waits for its first thousand only); ``None``: all
    #: of them are published before ``run`` returns.
    backlog: Backlog | None = None
    #: Told of a commit that made an external agent's task ready, so that long-polling claims
    #: look again at once (they also poll).
    work_signal: Signal = field(default_factory=NoSignal)

    def run(self, work: Callable[[Transaction], T]) -> T:
        """``work`` in one transaction (run again from scratch after a lost race or outage),
        then its revocations and its ready tasks sent to the broker."""

        def attempt() -> tuple[T, Transaction]:
            with self.db.connect() as conn:
                tx = Transaction(conn, self.workflows)
                return work(tx), tx

        value, tx = self.db.retry(attempt)
        self.after_commit(tx.ready, tx.revoke)
        return value

    def after_commit(self, ready: Sequence[Dispatch], revoke: Iterable[str] = ()) -> None:
        """Tell the broker what a committed transaction did. ``run`` calls it; so does a hot
        path whose single statement commits by itself (a PostgreSQL result)."""
        revoked = list(revoke)
        if revoked:
            self.dispatcher.revoke(revoked)
        if self.backlog is None:
            publish(self.db, self.dispatcher, ready)
        else:
            self.backlog.publish(ready)
        external = next((d for d in ready if d.external), None)
        if external is not None:
            self.work_signal.notify(external.task_id)
