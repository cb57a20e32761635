"""Statistics from a quiet moment: the cost of a result with many tasks running or pending.

    python -m benchmarks.plans [--runs 3]

Autovacuum takes statistics when it likes. A partial index over one status that held nothing
then looks free to the planner, which picked it for statements about one task and walked
every row in it (migration 0012). This times a task's result (``attempts.succeed``: store it,
release its dependents, count the ticket, stamp the released ones published) in two states,
each with statistics taken before the state arose ("stale": a history of 20,000 finished
tasks and nothing in flight) and after it ("fresh"): with 5,000 attempts running, and along a
10,000-task ticket of 100-task chains (9,900 tasks pending at first). Stale should cost what
fresh does. Needs PostgreSQL and Redis as ``python -m benchmarks`` does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import select

from benchmarks.__main__ import REDIS_DB, Omoi, summary
from omoi.persistence import Task
from omoi.services import attempts
from omoi.services.dispatcher import Dispatch, NullDispatcher
from omoi.services.unit_of_work import UnitOfWork
from omoi.services.workflows import Workflows

HISTORY, RUNNING, CHAINS, LENGTH, RESULTS = 20_000, 5_000, 100, 100, 3_000


def queued(omoi: Omoi, ticket: str) -> list[uuid.UUID]:
    with omoi.db.connect() as conn:
        return list(
            conn.execute(
                select(Task.id)
                .where(Task.ticket_id == uuid.UUID(ticket), Task.status == "queued")
                .order_by(Task.id)
            ).scalars()
        )


class Collected(NullDispatcher):
    """Keeps the tasks each result released, for the loop to finish next."""

    def __init__(self) -> None:
        self.batch: list[Dispatch] = []

    def publish(self, batch: Sequence[Dispatch]) -> None:
        self.batch += batch

    def take(self) -> list[Dispatch]:
        taken, self.batch = self.batch, []
        return taken


def timed_results(omoi: Omoi, todo: list[uuid.UUID]) -> float:
    """Claim and finish tasks from ``todo`` (and the dependents each releases), ``RESULTS`` of
    them; milliseconds per result, the claims not counted."""
    attempts = dict.fromkeys(todo, 1)
    spent, done = 0.0, 0
    released = Collected()
    uow = UnitOfWork(omoi.db, released, Workflows.load())
    while todo and done < RESULTS:
        task_id = todo.pop(0)
        claimed = attempts.claim(uow, task_id, attempts[task_id])
        assert claimed is not None
        start = time.perf_counter()
        landed = attempts.succeed(uow, claimed[0], {"ok": True})
        spent += time.perf_counter() - start
        assert landed
        for d in released.take():
            todo.append(d.task_id)
            attempts[d.task_id] = d.attempt
        done += 1
    return spent * 1000 / done


def with_running(omoi: Omoi, stale: bool) -> float:
    ticket = omoi.submit(
        [{"key": f"t{i}", "task_type": "noop"} for i in range(RUNNING + RESULTS)], quiet=True
    )
    ids = queued(omoi, ticket)
    for task_id in ids[:RUNNING]:  # claimed and left running
        assert attempts.claim(omoi.uow, task_id, 1) is not None
    if not stale:
        omoi.vacuum()
    return timed_results(omoi, ids[RUNNING:])


def along_chains(omoi: Omoi, stale: bool) -> float:
    ticket = omoi.submit(
        [
            {"key": f"c{i}", "task_type": "noop", "depends_on": [f"c{i - 1}"] if i % LENGTH else []}
            for i in range(CHAINS * LENGTH)
        ],
        quiet=True,
    )
    if not stale:
        omoi.vacuum()
    return timed_results(omoi, queued(omoi, ticket))


SCENARIOS: list[tuple[str, Callable[[Omoi, bool], float]]] = [
    (f"result, {RUNNING:,} attempts running, ms", with_running),
    (f"result along {CHAINS} chains of {LENGTH}, ms", along_chains),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, bool], list[float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="omoi-plans-"))
    for _ in range(args.runs):
        for label, scenario in SCENARIOS:
            for stale in (True, False):
                omoi = Omoi(0, REDIS_DB, tmp)  # a database of its own each time
                try:
                    omoi.seed_finished(HISTORY)  # and vacuumed: the quiet moment's statistics
                    results.setdefault((label, stale), []).append(scenario(omoi, stale))
                finally:
                    omoi.drop()
    print(f"\nresults with statistics from a quiet moment: {args.runs} runs, median (min..max)")
    print(f"{'':<44}{'stale statistics':<26}{'fresh statistics':<26}{'stale / fresh':>13}")
    for label, _ in SCENARIOS:
        stale, fresh = results[label, True], results[label, False]
        ratio = statistics.median(stale) / statistics.median(fresh)
        print(f"  {label:<42}{summary(stale):<26}{summary(fresh):<26}{ratio:13.2f}")


if __name__ == "__main__":
    main()
