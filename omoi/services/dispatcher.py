"""The interface through which services hand ready tasks to the transport, after commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from omoi.domain.enums import Priority
from omoi.domain.jobs import job_id, lineage
from omoi.domain.routing import queue_for


@dataclass(frozen=True)
class Dispatch:
    """One attempt to deliver: ids only, plus routing and time limits. Made from the row of a
    task that just became ``queued`` (``of_row``), in the transaction that queued it, and
    handed to a ``Dispatcher`` once that transaction committed; the outbox sweep makes them
    again for rows whose message never went out."""

    #: The task to run. The message carries it and the attempt only: the worker reads
    #: everything else from the task's row when it claims it.
    task_id: uuid.UUID

    #: The attempt this delivery is for: the task row's ``attempt`` once it is queued (or the
    #: next one, for a retry). The claim matches it, so a duplicate or stale message for an
    #: earlier attempt does nothing.
    attempt: int

    #: The Celery queue its capabilities route it to (``cap.<first capability>`` or
    #: ``cap.default``, ``routing.queue_for``); an exec-type task is published to that queue's
    #: ``/<type>`` queue instead (``routing.publish_queue``).
    queue: str

    #: The task's priority, carried from its row. The Celery producer does not send it (a
    #: queue delivers in order); an external agent's claim orders by the row's priority.
    priority: str = Priority.MEDIUM

    #: The task's ``timeout_seconds``: the Celery message's soft time limit, with the hard
    #: limit ``OMOI_TIME_LIMIT_GRACE`` seconds later; ``None``: no limit.
    timeout_seconds: float | None = None

    #: Deliver no earlier than this many seconds from now: a retry's backoff when it is short
    #: enough to travel as a delayed message (``OMOI_RETRY_ETA_MAX``); ``None``: at once.
    countdown: float | None = None

    #: The task is claimed over HTTP by an external agent: never published (``outbox.publish``
    #: drops it from the batch), it waits in the database for a claim.
    external: bool = False

    #: The task's type: an exec type goes to its own queue (``routing.publish_queue``), which
    #: only workers that enabled the type consume. Its job is named for it in Flower.
    task_type: str = ""

    #: What its job shows in Flower besides the ids, never the payload: the task's key and
    #: its ticket's title (at most ``jobs.TITLE_CHARS`` + 1 characters of it).
    key: str = ""
    title: str = ""

    #: The Celery ids of the ticket's first job and of the job upstream of this one (see
    #: ``lineage``); ``None`` when there is none.
    root_job: str | None = None
    parent_job: str | None = None

    @property
    def message_id(self) -> str:
        return job_id(self.task_id, self.attempt)

    @property
    def lineage(self) -> tuple[str, str | None]:
        """The job's root and parent, as Flower links them (``jobs.lineage``)."""
        return lineage(self.message_id, self.root_job, self.parent_job)

    @classmethod
    def of_row(
        cls, row: Any, attempt: int | None = None, countdown: float | None = None
    ) -> Dispatch:
        """From a row of ``statements.DISPATCH_COLUMNS``."""
        return cls(
            row.id,
            row.attempt if attempt is None else attempt,
            queue_for(row.capabilities),
            row.priority,
            row.timeout_seconds,
            countdown,
            row.external,
            row.task_type,
            row.key,
            row.ticket_title,
            row.root_job,
            row.parent_job,
        )


class Dispatcher(Protocol):
    def publish(self, batch: Sequence[Dispatch]) -> None:
        """Send the batch; raise if the broker cannot take it (the outbox sweep retries)."""
        ...

    def revoke(self, message_ids: Sequence[str]) -> None:
        """Ask agents to stop these running attempts: a hint only, the database decides."""
        ...

    def broker_reset(self) -> bool:
        """True (once) when the broker has lost the messages it held since the last call, or
        on the first call: everything published and not yet claimed must be sent again."""
        ...


class NullDispatcher:
    """Publishes nothing: rows stay in the outbox for the sweep (used by tools and tests)."""

    def publish(self, batch: Sequence[Dispatch]) -> None:
        return None

    def revoke(self, message_ids: Sequence[str]) -> None:
        return None

    def broker_reset(self) -> bool:
        return False
