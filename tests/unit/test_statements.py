"""The catalogue's shared expressions are the ones the PostgreSQL text statements say: the
lease guard and the dispatch column list are written once and rendered into both forms."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from sqlalchemy import bindparam

from omoi.domain.jobs import TITLE_CHARS
from omoi.persistence import claims, results
from omoi.persistence.statements import (
    DISPATCH_COLUMNS,
    LEASE_HELD_SQL,
    dispatch_columns_sql,
    lease_held,
)
from omoi.services.dispatcher import Dispatch


def test_the_lease_guard_renders_as_the_text_statements_say_it() -> None:
    assert LEASE_HELD_SQL == "tasks.status = 'running' AND tasks.lease_token = %(lease)s"
    assert LEASE_HELD_SQL in results.SUCCEED_PG
    core = str(lease_held(bindparam("b_lease")).compile())
    assert core == "tasks.status = :status_1 AND tasks.lease_token = :b_lease"
    assert core in str(results.FINISH.compile())


def test_the_dispatch_columns_are_what_a_dispatch_is_made_of() -> None:
    names = [c.name for c in DISPATCH_COLUMNS]
    row = SimpleNamespace(**{n: None for n in names})
    row.id, row.attempt, row.capabilities, row.priority = uuid.uuid4(), 2, ["gpu"], "HIGH"
    row.key, row.ticket_title, row.root_job = "build", "Ship it", "root:1"
    dispatch = Dispatch.of_row(row)
    assert (dispatch.task_id, dispatch.attempt, dispatch.queue) == (row.id, 2, "cap.gpu")
    assert (dispatch.key, dispatch.title, dispatch.lineage) == ("build", "Ship it", ("root:1",) * 2)
    text = dispatch_columns_sql()  # of a tasks row; its ticket's columns correlated to it
    assert text.startswith(", ".join(f"tasks.{n}" for n in names[:-2]) + ", (SELECT ")
    assert f"substr(tickets.title, 1, {TITLE_CHARS + 1})" in text
    assert text.count("WHERE tickets.id = tasks.ticket_id) AS ") == 2
    assert text.endswith(
        " AS ticket_title, (SELECT tickets.root_job \nFROM tickets \n"
        "WHERE tickets.id = tasks.ticket_id) AS root_job"
    )
    assert dispatch_columns_sql("r") == ", ".join(f"r.{n}" for n in names)
    assert f"RETURNING status, {dispatch_columns_sql()}" in results.SUCCEED_PG
    released = results.release_statement("sqlite").returning_column_descriptions
    assert [d["name"] for d in released] == ["status", *names]


def test_a_claim_is_claimable_on_the_same_terms_in_both_forms() -> None:
    assert (
        "tasks.status = 'queued' OR tasks.status = 'retrying' "
        "AND tasks.next_attempt_at <= %(now)s" in claims.CLAIM_PG
    )
    core = str(claims.CLAIM.compile())
    assert "tasks.status = :status_1 OR tasks.status = :status_2" in core
    assert "tasks.next_attempt_at <= :b_now" in core
