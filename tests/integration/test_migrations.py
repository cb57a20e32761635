"""The initial migration runs both ways on PostgreSQL and on SQLite and matches the models."""

import uuid
from pathlib import Path

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from omoi.models import Base, Database
from omoi.models.migrate import downgrade, upgrade
from tests.conftest import PG_ADMIN, _pg_url

# Alembic cannot compare expression indexes (PostgreSQL rewrites the expression's text); the
# migration spells out the same text as the model's PRIORITY_RANK.
EXPRESSION_INDEXES = {"ix_tasks_claimable"}


def assert_no_drift(url: str) -> None:
    database = Database(url)
    with database.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"include_object": lambda obj, name, kind, *_: name not in EXPRESSION_INDEXES},
        )
        diff = compare_metadata(context, Base.metadata)
    database.dispose()
    assert diff == []


def test_postgres_upgrade_downgrade_upgrade() -> None:
    name = f"omoi_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _pg_url(name)
        upgrade(url)
        downgrade(url, "base")
        upgrade(url)
        assert_no_drift(url)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    assert_no_drift(url)
