"""Retention on PostgreSQL: the sweep deletes a history of old finished tickets in batches
while a real prefork worker runs a live ticket beside it, which never waits for it; two
sweepers never run at once (the advisory lock). The selection rules are tests/services'."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text

from benchmarks.seed import SEED_TITLE, seed_history
from omoi.domain.events import EventType
from omoi.persistence import Database
from omoi.persistence.statements import SWEEP_LOCKS, events, tasks, tickets
from omoi.services import retention
from omoi.services.events import LOOKBACK
from tests.conftest import assert_consistent
from tests.support.api import submit, tasks_by_key
from tests.support.procs import Proc, wait_for

DAY = 24 * 3600.0


def seed(db: Database, count: int, per_ticket: int) -> None:
    """A history ten days old, then ``LOOKBACK`` events of no ticket: a live follower's
    window of the log is past it, as it is once the log has moved on."""
    filler = {"type": EventType.AGENT_REGISTERED, "entity_type": "agent", "payload": {}}
    with db.connect() as conn:
        seed_history(conn, count, per_ticket, age=10 * DAY)
        conn.execute(insert(events), [{**filler, "entity_id": uuid.uuid4()}] * LOOKBACK)


def seeded(db: Database) -> dict[str, int]:
    """The seeded tickets left, and their tasks and events."""
    with db.connect() as conn:
        ids = select(tickets.c.id).where(tickets.c.title == SEED_TITLE)
        return {
            "tickets": conn.execute(select(func.count()).select_from(ids.subquery())).scalar_one(),
            "tasks": conn.execute(
                select(func.count()).where(tasks.c.ticket_id.in_(ids))
            ).scalar_one(),
            "events": conn.execute(
                select(func.count()).where(events.c.ticket_id.in_(ids))
            ).scalar_one(),
        }


def others(db: Database) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).where(tickets.c.title != SEED_TITLE)).scalar_one()


def test_the_sweep_deletes_a_history_beside_a_live_ticket_without_stalling_it(
    client: Any, worker: Proc, db: Database, database_url: str
) -> None:
    seed(db, 12_000, per_ticket=4)
    assert seeded(db) == {"tickets": 3_000, "tasks": 12_000, "events": 24_000}
    kept = others(db)
    chain = [
        {"key": f"c{i}", "task_type": "noop", "depends_on": [f"c{i - 1}"] if i else []}
        for i in range(40)
    ]
    live = submit(client, chain)["id"]

    def status() -> str:
        return str(client.get(f"/api/v1/tickets/{live}").get_json()["status"])

    # Beat's rounds back to back, in batches of 5 tickets, while the chain is worked on
    rounds: list[tuple[bool, int, float]] = []  # (ticket still active, deleted, seconds)
    while (active := status() == "active") or seeded(db)["tickets"]:
        began = time.perf_counter()
        gone = retention.sweep(db, DAY, tickets_per_batch=5)
        rounds.append((active, gone, time.perf_counter() - began))

    assert any(active and gone for active, gone, _ in rounds), rounds  # overlapped the chain
    assert seeded(db) == {"tickets": 0, "tasks": 0, "events": 0}
    assert sum(gone for _, gone, _ in rounds) == 3_000
    assert status() == "done" and others(db) == kept + 1
    steps = tasks_by_key(client, live)
    assert {t["status"] for t in steps.values()} == {"succeeded"}
    hops = [
        _at(steps[f"c{i}"]["started_at"]) - _at(steps[f"c{i - 1}"]["finished_at"])
        for i in range(1, 40)
    ]
    assert max(hops) < 1.0, hops  # a sweep's transaction is milliseconds; a stall is not
    assert_consistent(database_url)


def test_a_second_sweeper_waits_for_none_and_deletes_nothing_while_one_runs(
    db: Database,
) -> None:
    seed(db, 20, per_ticket=2)
    with db.connect() as holder:  # another beat's sweep, mid-transaction
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SWEEP_LOCKS["tickets"]})
        began = time.perf_counter()
        assert retention.sweep(db, DAY) == 0
        assert time.perf_counter() - began < 1.0
    assert wait_for(lambda: retention.sweep(db, DAY), what="the sweep, once free") == 10
    assert seeded(db)["tickets"] == 0


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()
