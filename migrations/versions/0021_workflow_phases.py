"""workflows name their own phases: the phase columns check a name pattern, not nine names

``tickets.phase``, ``tickets.previous_phase`` and ``tasks.phase`` accepted only the nine
built-in phase names; they now accept any name matching ``^[A-Z][A-Z0-9_]{0,31}$`` (every
built-in name does, so every existing row stays valid). PostgreSQL checks the pattern with
``~``; SQLite, which has no regular expressions of its own, with the same rule in GLOBs, on
tables rebuilt with foreign keys off (dropping the old tickets or tasks table would cascade).
Which phases a ticket's workflow has is the workflow registry's to check. Downgrading is
refused while a row holds a phase outside the nine.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

from collections.abc import Callable, Sequence

from alembic import op

from omoi.persistence.migrate import sqlite_rebuilt

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

BUILT_IN = (
    "'PHASE_BACKLOG', 'PHASE_REQUIREMENTS', 'PHASE_DESIGN', 'PHASE_IMPLEMENTATION',"
    " 'PHASE_TESTING', 'PHASE_DEPLOYMENT', 'PHASE_RUN', 'PHASE_DONE', 'PHASE_BLOCKED'"
)
PATTERN = "^[A-Z][A-Z0-9_]{0,31}$"
# (table, column, constraint)
CHECKED = {
    "tickets": (("phase", "ck_tickets_phase"), ("previous_phase", "ck_tickets_previous_phase")),
    "tasks": (("phase", "ck_tasks_phase"),),
}


def _named(column: str, sqlite: bool) -> str:
    if not sqlite:
        return f"{column} ~ '{PATTERN}'"
    return f"{column} GLOB '[A-Z]*' AND {column} NOT GLOB '*[^A-Z0-9_]*' AND length({column}) <= 32"


def _built_in(column: str, _sqlite: bool) -> str:
    return f"{column} IN ({BUILT_IN})"


def _recheck(condition: Callable[[str, bool], str]) -> None:
    """Replace each phase column's CHECK with ``condition(column, sqlite)``."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, checks in CHECKED.items():
        if sqlite:
            with sqlite_rebuilt(table) as batch:
                for column, name in checks:
                    batch.drop_constraint(name, type_="check")
                    batch.create_check_constraint(name, condition(column, sqlite))
            continue
        for column, name in checks:
            op.drop_constraint(name, table, type_="check")
            op.create_check_constraint(name, table, condition(column, sqlite))


def upgrade() -> None:
    _recheck(_named)


def downgrade() -> None:
    bind = op.get_bind()
    for table, checks in CHECKED.items():
        for column, _ in checks:
            outside = bind.exec_driver_sql(
                f"SELECT count(*) FROM {table} WHERE {column} NOT IN ({BUILT_IN})"
            ).scalar()
            if outside:
                raise RuntimeError(
                    f"{outside} {table} rows have a {column} outside the nine built-in phases;"
                    " revision 0020 cannot hold them: move or delete them first"
                )
    _recheck(_built_in)
