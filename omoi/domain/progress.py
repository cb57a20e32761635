"""Where a ticket stands, at a glance: its state on the board and how far it has come through
its workflow. Pure: the caller gathers the facts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from omoi.domain.enums import PHASE_DONE, TaskStatus, TicketStatus
from omoi.domain.gates import WAITING_FOR_APPROVAL


class TicketState(StrEnum):
    """A ticket's status made plain: a blocked ticket is either waiting for a person's approval
    and nothing else, or stopped by a failed task, or blocked for another reason."""

    ACTIVE = "active"
    AWAITING_APPROVAL = "awaiting_approval"
    FAILED = "failed"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


def state_of(status: str, reasons: Sequence[str], failed_tasks: int) -> TicketState:
    """``reasons``: why a blocked ticket is blocked (its gate's, or its manual move's);
    ``failed_tasks``: failed tasks in the visit of the phase it is in."""
    if status != TicketStatus.BLOCKED:
        return TicketState(status)
    if failed_tasks:
        return TicketState.FAILED
    if list(reasons) == [WAITING_FOR_APPROVAL]:
        return TicketState.AWAITING_APPROVAL
    return TicketState.BLOCKED


@dataclass(frozen=True)
class Progress:
    """``done`` of the workflow's ``phases`` (its working phases) are behind the ticket, and
    ``fraction`` of the current phase is: ``value`` is ``(done + fraction) / phases``, 1 only
    for a finished workflow."""

    phases: int
    done: int
    fraction: float

    @property
    def value(self) -> float:
        return (self.done + self.fraction) / self.phases if self.phases else 1.0

    @property
    def percent(self) -> int:
        """Rounded down, so only a finished workflow shows 100 %."""
        return int(self.value * 100)


def progress_of(
    workflow_phases: Sequence[str], phase: str, status: str, counts: Mapping[str, int]
) -> Progress:
    """``phase``: the phase the ticket is in (for a blocked ticket, the phase it is blocked
    in); ``counts``: its tasks of that phase's latest visit by status. Phases before it count
    as done (a ticket sent back to an earlier phase has only that many behind it). The
    current phase's steps are its tasks and then its gate: the fraction is its succeeded
    tasks out of its tasks plus one, so a phase whose gate has not passed (awaiting approval,
    say) is never whole, and failed tasks never count."""
    working = [p for p in workflow_phases if p != PHASE_DONE]
    if status == TicketStatus.DONE or phase == PHASE_DONE:
        return Progress(len(working), len(working), 0.0)
    fraction = counts.get(TaskStatus.SUCCEEDED, 0) / (sum(counts.values()) + 1)
    done = working.index(phase) if phase in working else 0
    return Progress(len(working), done, fraction)


def board_columns(orders: Iterable[Sequence[str]], extra: Iterable[str] = ()) -> list[str]:
    """The board's columns for workflows whose phases come in these ``orders``: every working
    phase once, after every phase some workflow puts right before it (the longest workflows'
    order first where they disagree), then ``extra`` phases not placed yet (cards of phases no
    workflow has any more), then PHASE_DONE."""
    seen: dict[str, int] = {}
    before: dict[str, set[str]] = {}
    for order in sorted(orders, key=len, reverse=True):
        working = [p for p in order if p != PHASE_DONE]
        for phase in working:
            seen.setdefault(phase, len(seen))
            before.setdefault(phase, set())
        for earlier, later in pairwise(working):
            before[later].add(earlier)
    placed: list[str] = []
    while before:
        ready = [p for p, earlier in before.items() if earlier <= set(placed)]
        phase = min(ready or before, key=seen.__getitem__)  # in a cycle, the first seen
        placed.append(phase)
        del before[phase]
    rest = [p for p in dict.fromkeys(extra) if p not in seen and p != PHASE_DONE]
    return [*placed, *rest, PHASE_DONE]
