"""The board's read models: a card per ticket (a blocked one in the column of the phase it is
blocked in) and one ticket's task graph drawn in dependency layers."""

from __future__ import annotations

import uuid

import pytest

from omoi.domain.enums import Phase
from omoi.services.errors import NotFound
from omoi.services.phases import NewTask
from omoi.services.read import board
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import finish, submit, tasks_of


def test_cards_show_the_newest_tickets_with_their_counts(uow: UnitOfWork) -> None:
    older = submit(uow, NewTask("a", "ok"), NewTask("b", "ok")).ticket_id
    blocked = submit(uow, workflow="gated").ticket_id
    finish(uow, tasks_of(uow.db, blocked)["draft"].id)  # its gate wants a spec: blocked
    finish(uow, tasks_of(uow.db, older)["a"].id)
    cards = board.cards(uow.db)
    assert [(c["id"], c["phase"], c["column"], c["status"]) for c in cards] == [
        (blocked, Phase.BLOCKED, Phase.REQUIREMENTS, "blocked"),
        (older, Phase.RUN, Phase.RUN, "active"),
    ]
    assert (cards[1]["counts"], cards[1]["progress"]) == ({"succeeded": 1, "queued": 1}, 0.5)
    assert [c["id"] for c in board.cards(uow.db, limit=1)] == [blocked]


def test_a_graph_places_each_task_one_layer_below_its_deepest_dependency(
    uow: UnitOfWork,
) -> None:
    made = submit(
        uow,
        NewTask("a", "ok"),
        NewTask("b", "ok", depends_on=["a"]),
        NewTask("c", "ok", depends_on=["a", "b"]),
        NewTask("d", "ok"),
    )
    rows = tasks_of(uow.db, made.ticket_id)
    graph = {n["key"]: n for n in board.graph(uow.db, made.ticket_id)}
    assert {k: n["layer"] for k, n in graph.items()} == {"a": 0, "b": 1, "c": 2, "d": 0}
    assert graph["c"]["depends_on"] == [str(rows["a"].id), str(rows["b"].id)]
    with pytest.raises(NotFound):
        board.graph(uow.db, uuid.uuid4())
