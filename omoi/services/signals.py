"""Wake-ups across processes: a writer says that something changed (a task's log got lines,
an external agent's task became ready) and the API processes waiting for it look again at
once instead of at their next poll. Only a hint: every waiter also polls, so a wake-up lost
(Redis away, the embedded default without a bus) costs latency, never correctness."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol


class Signal(Protocol):
    """One channel of wake-ups, heard by every API process."""

    def notify(self, subject: uuid.UUID) -> None:
        """``subject`` (a task) changed; best effort, never waits for an absent bus."""
        ...

    def listen(self, wake: Callable[[uuid.UUID], None]) -> None:
        """Call ``wake(subject)`` for each notification from now on (in a thread of its own)."""
        ...


class NoSignal:
    """No bus (the embedded default): waiters find changes by polling alone."""

    def notify(self, subject: uuid.UUID) -> None:
        return None

    def listen(self, wake: Callable[[uuid.UUID], None]) -> None:
        return None
