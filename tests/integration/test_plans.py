"""PostgreSQL reads only the rows a statement is about, whatever its statistics say.

Statistics are taken at a quiet moment (a history of finished tasks, nothing in flight), as
autovacuum may have left them; then a fleet runs 300 attempts with 500 more queued, and a
ticket of chains waits on its first tasks.
A scan that read rows and threw them away ("Rows Removed by Filter") means the planner walked
a whole partial index or a whole ticket where the primary key or the dependency index goes
straight to the rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import event, select, update

from omoi.persistence import Database, Task, actors, results
from omoi.persistence.statements import LEASE_OF, dependents, tasks
from omoi.persistence.tables import RUNNING_ATTEMPTS
from omoi.persistence.types import utcnow
from omoi.services import attempts, locks
from omoi.services.attempts import Claim
from omoi.services.read import queries
from tests.support.api import submit
from tests.support.units import unit_of_work

HISTORY, BACKLOG, CHAINS, LENGTH, RUNNING = 2_000, 500, 10, 50, 300


def discarded(plan: dict[str, Any]) -> int:
    """Rows of ``tasks`` that the plan's scans read and threw away."""
    own = 0
    if plan.get("Relation Name") == "tasks":
        own = plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
    return own + sum(discarded(p) for p in plan.get("Plans", []))


def explain(url: str, statement: str, params: Any) -> dict[str, Any]:
    """The executed plan of ``statement``, whose effects are rolled back."""
    with psycopg.connect(url) as pg:
        (plan,) = pg.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params).fetchone()
        pg.rollback()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]  # type: ignore[no-any-return]


@pytest.fixture()
def busy(pg_store: tuple[Database, Any]) -> tuple[Database, Claim]:
    """Statistics from a quiet moment (a history of finished tasks, nothing in flight), then
    ``RUNNING`` attempts with ``BACKLOG`` tasks queued behind them and a ticket of chains; the
    claim of one chain's first task."""
    db, client = pg_store
    history = submit(client, [{"key": f"h{i}", "task_type": "noop"} for i in range(HISTORY)])
    with psycopg.connect(db.url, autocommit=True) as pg:
        pg.execute(
            "UPDATE tasks SET status = 'succeeded', started_at = now(), finished_at = now()"
            " WHERE ticket_id = %s",
            (history["id"],),
        )
        pg.execute(  # its counter as the finished tasks leave it (the suite checks it)
            "UPDATE tickets SET open_tasks = 0, status = 'done' WHERE id = %s", (history["id"],)
        )
        pg.execute("VACUUM ANALYZE")
    fleet = submit(
        client, [{"key": f"r{i}", "task_type": "noop"} for i in range(RUNNING + BACKLOG)]
    )
    chains = submit(
        client,
        [
            {"key": f"c{i}", "task_type": "noop", "depends_on": [f"c{i - 1}"] if i % LENGTH else []}
            for i in range(CHAINS * LENGTH)
        ],
    )
    with db.connect() as conn:
        ids = {
            r.key: r.id
            for r in conn.execute(
                select(Task.key, Task.id).where(
                    Task.ticket_id.in_([uuid.UUID(fleet["id"]), uuid.UUID(chains["id"])])
                )
            )
        }
    for i in range(RUNNING):
        assert attempts.claim(unit_of_work(db), ids[f"r{i}"], 1) is not None
    claimed = attempts.claim(unit_of_work(db), ids["c0"], 1)
    assert claimed is not None
    return db, claimed[0]


def test_a_result_reads_only_its_task_and_its_dependents(busy: tuple[Database, Claim]) -> None:
    db, c = busy
    params = {
        "id": c.task_id,
        "lease": c.lease,
        "ticket": c.ticket_id,
        "attempt": c.attempt,
        "result": Jsonb({"ok": True}),
        "now": utcnow(),
        "needle": Jsonb({"depends_on": [str(c.task_id)]}),
        **actors.columns(),  # none: a worker's result
    }
    plan = explain(db.url, results.SUCCEED_PG, params)
    assert discarded(plan) == 0


def test_dependents_are_found_without_reading_the_tickets_other_tasks(
    busy: tuple[Database, Claim],
) -> None:
    """The lookup a split and an upstream failure make (``statements.dependents``)."""
    db, c = busy
    lookup = lambda conn: dependents(conn, c.ticket_id, [c.task_id], "pending", tasks.c.id)  # noqa: E731
    assert discarded_by(db, lookup) == 0


def test_a_lookup_of_other_dependents_reads_only_their_ticket(
    busy: tuple[Database, Claim],
) -> None:
    """Dependents in another status (cancelled ones, when a failed task is retried) have no
    index of their own: the lookup reads the ticket's tasks, not the whole table."""
    db, c = busy
    lookup = lambda conn: dependents(conn, c.ticket_id, [c.task_id], "cancelled", tasks.c.id)  # noqa: E731
    assert discarded_by(db, lookup) <= CHAINS * LENGTH


def test_a_read_of_one_running_task_takes_its_primary_key(busy: tuple[Database, Claim]) -> None:
    db, c = busy
    assert discarded_by(db, lambda conn: conn.execute(LEASE_OF, {"b_id": c.task_id})) == 0


def test_the_sweeps_read_running_attempts_through_their_index(
    busy: tuple[Database, Claim],
) -> None:
    """The fleet's 300 attempts among the other tasks: the sweeps' reads of running attempts
    (``RUNNING_ATTEMPTS``, the index's own predicate) reach ``ix_tasks_agent``."""
    db, _ = busy
    with psycopg.connect(db.url, autocommit=True) as pg:
        pg.execute("ANALYZE tasks")  # even with up-to-date statistics it takes the index
    (plan,) = plans_of(db, lambda conn: conn.execute(select(tasks.c.id).where(RUNNING_ATTEMPTS)))
    assert discarded(plan) == 0
    assert "ix_tasks_agent" in json.dumps(plan)


def test_listing_running_tasks_reads_only_running_ones(busy: tuple[Database, Claim]) -> None:
    """``GET /tasks?status=running``: all of them, through the index of running attempts."""
    db, _ = busy
    page: list[Any] = []
    listing = lambda _: page.extend(queries.list_tasks(db, status="running").items)  # noqa: E731
    assert discarded_by(db, listing) == 0
    assert len(page) == 100 and {t.status for t in page} == {"running"}


def test_waking_the_tasks_parked_on_a_lock_reads_only_them(busy: tuple[Database, Claim]) -> None:
    """A released lock wakes its waiters, found through ``ix_tasks_waiting``; not by walking
    the queued tasks (the fleet's backlog) through the claim index."""
    db, _ = busy
    with db.connect() as conn:
        parked = conn.execute(
            update(tasks)
            .where(tasks.c.id == select(tasks.c.id).where(tasks.c.key == "c50").scalar_subquery())
            .values(waiting_for="printer")
            .returning(tasks.c.id)
        ).scalar_one()
    woken: list[Any] = []
    assert discarded_by(db, lambda conn: woken.extend(locks._wake(conn, ["printer"]))) == 0
    assert [d.task_id for d in woken] == [parked]


def plans_of(db: Database, call: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """The executed plans of the statements ``call`` runs on a connection, as the driver
    received them; its transaction is rolled back first, so each sees the state ``call`` saw."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.engine.connect() as conn:  # closed without a commit
            call(conn)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return [explain(db.url, statement, params) for statement, params in seen]


def discarded_by(db: Database, call: Callable[[Any], Any]) -> int:
    return sum(discarded(plan) for plan in plans_of(db, call))
