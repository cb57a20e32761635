"""The interface through which services hand ready tasks to the transport, after commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from omoi.domain.enums import Priority
from omoi.domain.routing import queue_for


@dataclass(frozen=True)
class Dispatch:
    """One attempt to deliver: ids only, plus routing and time limits."""

    task_id: uuid.UUID
    attempt: int
    queue: str
    priority: str = Priority.MEDIUM
    timeout_seconds: float | None = None
    countdown: float | None = None  # deliver no earlier than this many seconds from now
    external: bool = False  # claimed over HTTP by an external agent, never published
    task_type: str = ""  # an exec type goes to its own queue (``routing.publish_queue``)

    @property
    def message_id(self) -> str:
        """``<task_id>:<attempt>``: lets anyone address (revoke, trace) one attempt."""
        return f"{self.task_id}:{self.attempt}"

    @classmethod
    def of_row(
        cls, row: Any, attempt: int | None = None, countdown: float | None = None
    ) -> Dispatch:
        """From a task row (id, attempt, capabilities, priority, timeout_seconds, external,
        task_type)."""
        return cls(
            row.id,
            row.attempt if attempt is None else attempt,
            queue_for(row.capabilities),
            row.priority,
            row.timeout_seconds,
            countdown,
            row.external,
            row.task_type,
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
