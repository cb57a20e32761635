"""Run Alembic migrations from code (``omoi db upgrade``, tests, ``omoi up``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from alembic.operations import BatchOperations
from sqlalchemy import inspect
from sqlalchemy.exc import SAWarning

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

# Alembic cannot compare expression indexes (PostgreSQL rewrites the expression's text) and
# does not read an index's ``ddl_if``; its comparison skips them (the tests compare every
# index's definition on PostgreSQL instead).
EXPRESSION_INDEXES = {"ix_tasks_claimable"}
SQLITE_ONLY_INDEXES = {"ix_tasks_pending"}


def compared(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for autogenerate and the drift test on ``dialect``."""

    def include(_obj: Any, name: str | None, *_: Any) -> bool:
        if name in SQLITE_ONLY_INDEXES:
            return dialect == "sqlite"
        return name not in EXPRESSION_INDEXES

    return include


def alembic_config(url: str) -> Config:
    if not (MIGRATIONS / "env.py").exists():
        raise RuntimeError(
            f"migrations not found at {MIGRATIONS}; install omoi from a checkout (pip install -e .)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


@contextmanager
def sqlite_rebuilt(table: str, **batch: Any) -> Iterator[BatchOperations]:
    """For a migration on SQLite, which changes a table's constraints only by rebuilding the
    table: dropping the old one with foreign keys on would cascade to every row that refers
    to it (a ticket's tasks, a task's logs). The pragma takes effect only between
    transactions: this commits what ran before (earlier revisions, each already recorded),
    rebuilds in a transaction of its own with the keys off, puts back the indexes reflection
    cannot copy (expression indexes), and checks the keys before committing."""
    bind = op.get_bind()
    raw = bind.connection.driver_connection
    with warnings.catch_warnings():  # the expression indexes it skips are put back below
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        reflected = {i["name"] for i in inspect(bind).get_indexes(table)}
    unreflectable = [
        (name, sql)
        for name, sql in raw.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (table,),
        )
        if name not in reflected
    ]
    raw.execute("COMMIT")
    raw.execute("PRAGMA foreign_keys=OFF")
    raw.execute("BEGIN IMMEDIATE")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
            with op.batch_alter_table(table, recreate="always", **batch) as rebuild:
                yield rebuild
        for _, sql in unreflectable:
            raw.execute(sql)
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"rebuilding {table} broke foreign keys: {broken[:5]}")
        raw.execute("COMMIT")
    except BaseException:
        raw.execute("ROLLBACK")
        raise
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
        raw.execute("BEGIN IMMEDIATE")  # alembic records the revision in it
