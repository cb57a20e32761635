"""Run Alembic migrations from code (``omoi db upgrade``, tests, ``omoi up``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

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
