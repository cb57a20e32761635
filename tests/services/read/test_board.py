"""The board's read models: a card per ticket (a blocked one in the column of the phase it is
blocked in) and one ticket's task graph drawn in dependency layers."""

from __future__ import annotations

import uuid

from omoi.domain.progress import TicketState
from omoi.services.phases import NewTask
from omoi.services.read import board
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import finish, submit, tasks_of


def test_cards_show_the_newest_tickets_with_their_counts_and_standing(uow: UnitOfWork) -> None:
    older = submit(uow, NewTask("a", "ok"), NewTask("b", "ok")).ticket_id
    blocked = submit(uow, workflow="gated").ticket_id
    finish(uow, tasks_of(uow.db, blocked)["draft"].id)  # its gate wants a spec: blocked
    finish(uow, tasks_of(uow.db, older)["a"].id)
    phases_of = {w.name: w.names for w in uow.workflows.all()}
    cards = board.board(uow.db, phases_of).cards
    assert [(c["id"], c["phase"], c["column"], c["status"]) for c in cards] == [
        (blocked, "PHASE_BLOCKED", "PHASE_REQUIREMENTS", "blocked"),
        (older, "PHASE_RUN", "PHASE_RUN", "active"),
    ]
    assert cards[1]["counts"] == {"succeeded": 1, "queued": 1}
    assert (cards[0]["standing"].state, cards[1]["standing"].state) == (
        TicketState.BLOCKED,
        TicketState.ACTIVE,
    )
    assert cards[0]["standing"].reasons  # the gate's first reason, for the card
    only = board.board(uow.db, phases_of, state=TicketState.BLOCKED).cards
    assert [c["id"] for c in only] == [blocked]


def test_a_graph_lists_every_task_with_its_phase_status_and_dependencies(
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
    assert list(graph) == ["a", "b", "c", "d"]  # in creation order; domain/layout places them
    assert {(n["phase"], n["status"]) for n in graph.values()} == {
        ("PHASE_RUN", "queued"),
        ("PHASE_RUN", "pending"),
    }
    assert graph["c"]["depends_on"] == [str(rows["a"].id), str(rows["b"].id)]
    assert board.graph(uow.db, uuid.uuid4()) == []  # the page 404s on the ticket itself
