"""The migrations run both ways on PostgreSQL and on SQLite and match the models; those that
derive a column from existing rows derive it right."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, func, insert, inspect, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from omoi.domain.enums import PHASE_BLOCKED
from omoi.persistence import Base, Database, Task, TaskLog, Ticket
from omoi.persistence.migrate import compared, downgrade, upgrade
from omoi.services import workflows
from tests.conftest import PG_ADMIN, _pg_url


def assert_no_drift(url: str) -> None:
    database = Database(url)
    with database.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": compared(database.dialect)}
        )
        diff = compare_metadata(context, Base.metadata)
    database.dispose()
    assert diff == []


@contextmanager
def new_pg_database() -> Iterator[str]:
    """An empty database on the test server, dropped afterwards."""
    name = f"omoi_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_upgrade_downgrade_upgrade() -> None:
    with new_pg_database() as url:
        upgrade(url)
        downgrade(url, "base")
        upgrade(url)
        assert_no_drift(url)


def index_definitions(url: str) -> dict[str, str]:
    with psycopg.connect(url) as pg:
        rows = pg.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchall()
    return dict(rows)


def test_postgres_indexes_are_the_models_to_the_letter() -> None:
    """What Alembic's comparison skips: partial-index predicates, expressions, ``ddl_if``."""
    with new_pg_database() as migrated, new_pg_database() as modelled:
        upgrade(migrated)
        database = Database(modelled)
        Base.metadata.create_all(database.engine)
        database.dispose()
        assert index_definitions(migrated) == index_definitions(modelled)


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    assert_no_drift(url)


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables yet, on each database omoi runs on."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite'}"
        return
    with new_pg_database() as url:
        yield url


def test_routes_are_derived_from_the_tasks_capabilities(empty_url: str) -> None:
    """Migration 0011 gives existing tasks the route of their first capability, or default.
    (The models' tables can write rows at 0010: the statements name no ``route``.)"""
    upgrade(empty_url, "0010")
    database = Database(empty_url)
    now = datetime.now(UTC)
    ticket = uuid.uuid4()
    with database.engine.begin() as conn:
        conn.execute(
            insert(Ticket.__table__).values(
                id=ticket,
                title="t",
                workflow="dag",
                phase="PHASE_RUN",
                status="active",
                context={},
            )
        )
        for key, caps in (("gpu", ["gpu", "python"]), ("plain", [])):
            conn.execute(
                insert(Task.__table__).values(
                    ticket_id=ticket,
                    phase="PHASE_RUN",
                    key=key,
                    task_type="noop",
                    capabilities=caps,
                    status="queued",
                    queued_at=now,
                )
            )
    database.dispose()
    upgrade(empty_url)
    database = Database(empty_url)
    with database.engine.connect() as conn:
        routes = dict(conn.execute(select(Task.key, Task.route)).all())
    database.dispose()
    assert routes == {"gpu": "gpu", "plain": "default"}


def test_planned_tasks_move_from_the_context_to_the_plan(empty_url: str) -> None:
    """Migration 0013 moves ``context.planned`` into ``plan`` and out of the context that
    every external claim carries; downgrading puts it back, and neither way loses the
    ticket's tasks (a rebuilt tickets table would cascade to them on SQLite)."""
    upgrade(empty_url, "0012")
    database = Database(empty_url)
    planned = {"PHASE_DESIGN": [{"key": "extra", "task_type": "noop"}]}
    tickets = Ticket.__table__
    later = {"plan", "submitter_token_id", "root_job"}  # 0013's, 0018's and 0019's
    columns = [c for c in tickets.c if c.name not in later]  # the table as 0012 has it
    with database.engine.begin() as conn:
        conn.execute(
            insert(tickets).values(
                id=uuid.uuid4(),
                title="t",
                workflow="gated",
                phase="PHASE_REQUIREMENTS",
                status="active",
                context={"budget": 10, "planned": planned},
            )
        )
        ticket_id = conn.execute(select(tickets.c.id)).scalar_one()
        conn.execute(
            insert(Task.__table__).values(
                ticket_id=ticket_id,
                phase="PHASE_REQUIREMENTS",
                key="draft",
                task_type="noop",
                route="default",
            )
        )
    database.dispose()
    upgrade(empty_url)
    database = Database(empty_url)
    with database.engine.connect() as conn:
        row = conn.execute(select(tickets.c.context, tickets.c.plan)).one()
    assert (row.context, row.plan) == ({"budget": 10}, planned)
    database.dispose()
    downgrade(empty_url, "0012")
    database = Database(empty_url)
    with database.engine.connect() as conn:
        context = conn.execute(select(*columns)).one().context
        kept = conn.execute(select(Task.key)).scalars().all()
    database.dispose()
    assert context == {"budget": 10, "planned": planned}
    assert kept == ["draft"]


def test_idempotency_keys_from_before_token_scoping_stay_unique(empty_url: str) -> None:
    """Migration 0018 scopes keys to the token that sent them. A ticket from before has no
    token and keeps its key, unique among such tickets; a token may use the same string.
    Downgrading keeps each key on its first ticket. Neither way loses a task (SQLite rebuilds
    tickets, which would cascade to them with foreign keys on)."""
    upgrade(empty_url, "0017")
    tickets = Ticket.__table__

    def ticket(conn: Any, **extra: Any) -> uuid.UUID:
        """A ticket row naming only columns 0017 has, unless ``extra`` names more."""
        ticket_id = uuid.uuid4()
        values = dict(title="t", workflow="dag", phase="PHASE_RUN", status="active", context={})
        conn.execute(insert(tickets).values(id=ticket_id, **values, **extra))
        return ticket_id

    database = Database(empty_url)
    with database.engine.begin() as conn:
        before = ticket(conn, idempotency_key="deploy")
        conn.execute(
            insert(Task.__table__).values(
                ticket_id=before, phase="PHASE_RUN", key="a", task_type="noop", route="default"
            )
        )
    database.dispose()
    upgrade(empty_url)
    database = Database(empty_url)
    token = uuid.uuid4()
    with database.engine.begin() as conn:
        scoped = ticket(conn, idempotency_key="deploy", submitter_token_id=token)
    for clash in ({}, {"submitter_token_id": token}):
        with pytest.raises(IntegrityError), database.engine.begin() as conn:
            ticket(conn, idempotency_key="deploy", **clash)
    with database.engine.connect() as conn:
        assert conn.execute(select(Task.ticket_id)).scalars().all() == [before]
    database.dispose()
    downgrade(empty_url, "0017")
    database = Database(empty_url)
    with database.engine.connect() as conn:
        keys = dict(conn.execute(select(tickets.c.id, tickets.c.idempotency_key)).all())
        assert conn.execute(select(Task.ticket_id)).scalars().all() == [before]
    assert keys == {before: "deploy", scoped: None}
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        ticket(conn, idempotency_key="deploy")  # 0014's constraint is back
    database.dispose()


def check_constraints(url: str) -> dict[tuple[str, str | None], str]:
    """Every table's CHECK constraints, as the database states them."""
    database = Database(url)
    inspector = inspect(database.engine)
    found = {
        (table, c["name"]): c["sqltext"]
        for table in inspector.get_table_names()
        for c in inspector.get_check_constraints(table)
    }
    database.dispose()
    return found


@pytest.fixture(params=["postgresql", "sqlite"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases on the same engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.sqlite'}", f"sqlite:///{tmp_path / 'b.sqlite'}"
        return
    with new_pg_database() as first, new_pg_database() as second:
        yield first, second


def test_check_constraints_are_the_models_to_the_letter(two_urls: tuple[str, str]) -> None:
    """What Alembic's comparison skips: the CHECK constraints the migrations leave are those
    the models state for a fresh database (the phase pattern on each engine included)."""
    migrated, modelled = two_urls
    upgrade(migrated)
    database = Database(modelled)
    Base.metadata.create_all(database.engine)
    database.dispose()
    checks = check_constraints(migrated)
    assert checks == check_constraints(modelled)
    assert "PHASE_RUN" not in checks[("tickets", "ck_tickets_phase")]  # a pattern, not names


# the phases the nine-name CHECK allowed: the shipped workflows' and PHASE_BLOCKED
BUILT_IN_PHASES = sorted({p for w in workflows.load().values() for p in w.names} | {PHASE_BLOCKED})


def test_phases_from_before_stay_valid_and_the_pattern_is_checked(empty_url: str) -> None:
    """Migration 0021: rows written under the nine-name CHECK keep their phases (and, on
    SQLite, whose tables it rebuilds, their tasks and logs); afterwards any well-formed name
    is stored and a malformed one refused by the database itself. Downgrading is refused
    while a phase outside the nine is stored, and brings the nine-name CHECK back."""
    upgrade(empty_url, "0020")
    tickets, tasks = Ticket.__table__, Task.__table__
    now = datetime.now(UTC)

    def ticket(conn: Any, phase: str, previous: str | None = None) -> uuid.UUID:
        ticket_id = uuid.uuid4()
        conn.execute(
            insert(tickets).values(
                id=ticket_id,
                title="t",
                workflow="w",
                phase=phase,
                previous_phase=previous,
                status="active",
                context={},
            )
        )
        return ticket_id

    database = Database(empty_url)
    with database.engine.begin() as conn:
        for n, phase in enumerate(BUILT_IN_PHASES):
            owner = ticket(conn, phase, BUILT_IN_PHASES[n - 1] if n else None)
            task_id = uuid.uuid4()
            conn.execute(
                insert(tasks).values(
                    id=task_id, ticket_id=owner, phase=phase, key="a", task_type="noop", route="d"
                )
            )
            conn.execute(
                insert(TaskLog.__table__).values(
                    task_id=task_id, attempt=1, seq=1, at=now, stream="log", line=phase
                )
            )
    with database.engine.connect() as conn:
        before = conn.execute(
            select(tickets.c.phase, tickets.c.previous_phase).order_by(tickets.c.phase)
        ).all()
        tasks_before = conn.execute(select(tasks.c.phase).order_by(tasks.c.phase)).all()
    database.dispose()

    upgrade(empty_url)
    database = Database(empty_url)
    with database.engine.connect() as conn:
        after = conn.execute(
            select(tickets.c.phase, tickets.c.previous_phase).order_by(tickets.c.phase)
        ).all()
        assert conn.execute(select(tasks.c.phase).order_by(tasks.c.phase)).all() == tasks_before
        logs = conn.execute(select(func.count()).select_from(TaskLog.__table__)).scalar()
    assert (after, logs) == (before, len(BUILT_IN_PHASES))
    with database.engine.begin() as conn:
        custom = ticket(conn, "SECURITY_AUDIT", "PHASE_REVIEW")
        conn.execute(
            insert(tasks).values(ticket_id=custom, phase="A", key="a", task_type="noop", route="d")
        )
    for bad in ("security_audit", "PHASE-REVIEW", "1ST_PHASE", "_PHASE", "PHASE REVIEW", ""):
        with pytest.raises(IntegrityError), database.engine.begin() as conn:
            ticket(conn, bad)
        with pytest.raises(IntegrityError), database.engine.begin() as conn:
            ticket(conn, "PHASE_RUN", bad)
        with pytest.raises(IntegrityError), database.engine.begin() as conn:
            conn.execute(
                insert(tasks).values(
                    ticket_id=custom, phase=bad, key="b", task_type="noop", route="d"
                )
            )
    with pytest.raises(DBAPIError), database.engine.begin() as conn:
        ticket(conn, "A" * 33)  # SQLite's CHECK, PostgreSQL's column length
    database.dispose()

    with pytest.raises(RuntimeError, match="outside the nine built-in phases"):
        downgrade(empty_url, "0020")
    database = Database(empty_url)
    with database.engine.begin() as conn:
        conn.execute(delete(tickets).where(tickets.c.id == custom))
    database.dispose()
    downgrade(empty_url, "0020")
    database = Database(empty_url)
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(TaskLog.__table__)).scalar() == len(
            BUILT_IN_PHASES
        )
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        ticket(conn, "SECURITY_AUDIT")  # the nine-name CHECK is back
    database.dispose()
