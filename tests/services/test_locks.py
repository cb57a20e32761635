"""Resource locks: an attempt takes all its locks in name order or parks, holding none, until
a release wakes it; each exclusive acquisition's fencing token is greater than the last; the
sweep frees the locks of holders that stopped running.

Two attempts racing for one lock (the resource row's lock ordering them) need concurrent
writers: the integration suite runs that on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from omoi.domain.enums import ErrorCategory
from omoi.services import locks
from omoi.services.attempts import Claim
from omoi.services.failures import RetryPolicy, fail_attempt
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import error, kinds, start, submit, task_of, tasks_of
from tests.support.units import Recorded


def claims(uow: UnitOfWork, *resources: list[str]) -> list[Claim]:
    """One running task per list of resources, in order (keys t0, t1, …)."""
    made = submit(uow, *(NewTask(f"t{n}", "ok", resources=r) for n, r in enumerate(resources)))
    return [start(uow, r.id) for r in tasks_of(uow.db, made.ticket_id).values()]


def take(uow: UnitOfWork, c: Claim) -> dict[str, int] | None:
    declared = task_of(uow.db, c.task_id).resources
    return locks.acquire_or_wait(uow.db, c.task_id, c.ticket_id, c.lease, declared)


def holders(uow: UnitOfWork) -> list[tuple[str, str, uuid.UUID]]:
    return [(h.name, h.mode, h.holder_task) for h in locks.held_locks(uow.db)]


def test_an_attempt_takes_all_its_locks_in_name_order(uow: UnitOfWork) -> None:
    (c,) = claims(uow, ["zeta", "alpha:shared", "alpha"])
    assert take(uow, c) == {"alpha": 1, "zeta": 1}  # exclusive wins over shared
    taken = sorted(locks.held_locks(uow.db), key=lambda h: h.id)
    assert [(h.name, h.mode) for h in taken] == [("alpha", "exclusive"), ("zeta", "exclusive")]
    assert kinds(uow.db, c.task_id)[-1] == "lock.acquired"


def test_shared_holders_share_and_an_exclusive_one_excludes(uow: UnitOfWork) -> None:
    one, two, sole = claims(uow, ["repo:shared"], ["repo:shared"], ["repo"])
    assert take(uow, one) == take(uow, two) == {"repo": 0}  # a shared lock fences nothing
    assert take(uow, sole) is None
    assert [h[2] for h in holders(uow)] == [one.task_id, two.task_id]


def test_an_attempt_that_cannot_have_every_lock_parks_holding_none(uow: UnitOfWork) -> None:
    first, second = claims(uow, ["b"], ["a", "b"])
    take(uow, first)
    assert take(uow, second) is None
    assert holders(uow) == [("b", "exclusive", first.task_id)]  # not "a" either
    parked = task_of(uow.db, second.task_id)
    assert (parked.status, parked.waiting_for, parked.lease_token) == ("queued", "b", None)
    assert [w.id for w in locks.waiting(uow.db, "b")] == [second.task_id]
    assert kinds(uow.db, second.task_id)[-1] == "task.waiting_for_lock"


def test_a_release_wakes_the_tasks_parked_on_its_locks(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    first, second = claims(uow, ["repo"], ["repo"])
    take(uow, first)
    take(uow, second)
    locks.release(uow, first.task_id)
    woken = task_of(uow.db, second.task_id)
    assert (woken.status, woken.waiting_for) == ("queued", None)
    assert (dispatcher.published[-1].task_id, dispatcher.published[-1].attempt) == (
        second.task_id,
        woken.attempt,
    )
    again = start(uow, second.task_id)  # the woken message claims the same attempt
    assert take(uow, again) == {"repo": 2}


def test_fencing_tokens_grow_with_each_exclusive_holder(uow: UnitOfWork) -> None:
    tokens: list[Any] = []
    for c in claims(uow, ["repo"], ["repo:shared"], ["repo"]):
        tokens.append(take(uow, c))
        locks.release(uow, c.task_id)
    assert tokens == [{"repo": 1}, {"repo": 1}, {"repo": 2}]


def test_the_sweep_frees_the_locks_of_holders_that_stopped_running(
    uow: UnitOfWork, dispatcher: Recorded
) -> None:
    holder, waiter = claims(uow, ["repo"], ["repo"])
    take(uow, holder)
    take(uow, waiter)
    assert locks.sweep(uow) == 0  # the holder still runs
    lost = error(ErrorCategory.LOST, "its worker died")
    assert fail_attempt(uow, RetryPolicy(), holder.task_id, holder.attempt, lost)
    assert locks.sweep(uow) == 1
    assert holders(uow) == []
    assert task_of(uow.db, waiter.task_id).waiting_for is None
    assert waiter.task_id in [d.task_id for d in dispatcher.published]
