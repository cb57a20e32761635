"""Agents' messages: a durable inbox per agent, addressed to one agent, a capability or
everyone; and handoffs, which only a task's holder asks for and only a pending request's
recipient, covering the task's capabilities, may accept (moving the task under a new lease)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from omoi.domain.enums import AgentKind, MessageType
from omoi.services import agents, attempts, messaging
from omoi.services.attempts import Claim
from omoi.services.errors import Conflict, Forbidden, Invalid, NotFound
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import events_of, start, submit, task_of, tasks_of

HANDOFF = MessageType.HANDOFF_REQUEST


def agent(uow: UnitOfWork, name: str, capabilities: Sequence[str] = ()) -> uuid.UUID:
    return agents.register(uow.db, name=name, kind=AgentKind.EXTERNAL, capabilities=capabilities)


def held_by(uow: UnitOfWork, holder: uuid.UUID, capabilities: Sequence[str] = ()) -> Claim:
    made = submit(uow, NewTask("job", "ok", capabilities=list(capabilities)))
    return start(uow, tasks_of(uow.db, made.ticket_id)["job"].id, agent_id=holder)


def inbox(uow: UnitOfWork, agent_id: uuid.UUID, **options: Any) -> list[Any]:
    return messaging.inbox(uow.db, agent_id, **options)


def test_a_message_waits_in_its_recipients_inbox_until_read(uow: UnitOfWork) -> None:
    alice, bob = agent(uow, "alice"), agent(uow, "bob")
    sent = messaging.send(
        uow.db, type=MessageType.QUESTION, content={"q": "which?"}, sender=alice, to_agent=bob
    )
    (message,) = inbox(uow, bob, unread_only=True)
    assert (message.id, message.from_agent, message.content, message.audience) == (
        sent.message_ids[0],
        alice,
        {"q": "which?"},
        "direct",
    )
    live = events_of(uow.db, bob)[-1]  # what a stream on the recipient sees
    assert (live.type, live.payload["message_id"]) == ("message.sent", message.id)
    assert messaging.mark_read(uow.db, alice, [message.id]) == 0  # not alice's to mark
    assert messaging.mark_read(uow.db, bob, [message.id]) == 1
    assert messaging.mark_read(uow.db, bob, [message.id]) == 0
    assert inbox(uow, bob, unread_only=True) == []
    assert len(inbox(uow, bob)) == 1


def test_a_capability_reaches_every_live_agent_with_it_but_the_sender(uow: UnitOfWork) -> None:
    alice, carol = agent(uow, "alice", ["db"]), agent(uow, "carol", ["db"])
    gone, other = agent(uow, "gone", ["db"]), agent(uow, "other", ["ui"])
    agents.go_offline(uow.db, gone)
    sent = messaging.send(
        uow.db, type=MessageType.DISCOVERY, content="x", sender=alice, capability="db"
    )
    assert len(sent.message_ids) == 1
    assert [m.audience for m in inbox(uow, carol)] == ["capability:db"]
    assert [inbox(uow, a) for a in (alice, gone, other)] == [[], [], []]
    everyone = messaging.send(uow.db, type=MessageType.WARNING, content="y", broadcast=True)
    assert len(everyone.message_ids) == 3  # every agent but the offline one


@pytest.mark.parametrize(
    "address",
    [{}, {"broadcast": True, "capability": "db"}, {"to_agent": uuid.uuid4(), "broadcast": True}],
)
def test_a_message_has_exactly_one_address(uow: UnitOfWork, address: dict[str, Any]) -> None:
    with pytest.raises(Invalid, match="exactly one of"):
        messaging.send(uow.db, type=MessageType.INFO, content="x", **address)


def test_an_unknown_recipient_or_inbox_is_not_found(uow: UnitOfWork) -> None:
    with pytest.raises(NotFound):
        messaging.send(uow.db, type=MessageType.INFO, content="x", to_agent=uuid.uuid4())
    with pytest.raises(NotFound):
        inbox(uow, uuid.uuid4())


def test_a_thread_is_read_on_its_own(uow: UnitOfWork) -> None:
    alice, bob = agent(uow, "alice"), agent(uow, "bob")
    first = messaging.send(uow.db, type=MessageType.INFO, content=1, sender=alice, to_agent=bob)
    messaging.send(uow.db, type=MessageType.INFO, content=2, sender=alice, to_agent=bob)
    messaging.send(
        uow.db,
        type=MessageType.INFO,
        content=3,
        sender=alice,
        to_agent=bob,
        thread_id=first.thread_id,
    )
    assert [m.content for m in inbox(uow, bob, thread_id=first.thread_id)] == [1, 3]


def ask(uow: UnitOfWork, c: Claim, sender: uuid.UUID, to: uuid.UUID) -> messaging.Sent:
    return messaging.send(
        uow.db, type=HANDOFF, content="take it", sender=sender, to_agent=to, task_id=c.task_id
    )


def answer(
    uow: UnitOfWork, c: Claim, request: messaging.Sent, by: uuid.UUID, to: uuid.UUID, yes: bool
) -> messaging.Sent:
    return messaging.send(
        uow.db,
        type=MessageType.HANDOFF_ACCEPTED if yes else MessageType.HANDOFF_DECLINED,
        content="ok" if yes else "no",
        sender=by,
        to_agent=to,
        task_id=c.task_id,
        thread_id=request.thread_id,
    )


def test_only_the_holder_of_a_running_task_asks_to_hand_it_off(uow: UnitOfWork) -> None:
    alice, bob = agent(uow, "alice"), agent(uow, "bob")
    c = held_by(uow, alice)
    with pytest.raises(Forbidden) as refused:
        ask(uow, c, bob, alice)
    assert refused.value.code == "not_task_holder"
    assert attempts.succeed(uow, c, None)
    with pytest.raises(Conflict) as ended:
        ask(uow, c, alice, bob)
    assert ended.value.code == "task_not_running"


def test_an_accepted_handoff_moves_the_task_under_a_new_lease(uow: UnitOfWork) -> None:
    alice, bob = agent(uow, "alice", ["db"]), agent(uow, "bob", ["db", "ui"])
    c = held_by(uow, alice, ["db"])
    request = ask(uow, c, alice, bob)
    accepted = answer(uow, c, request, bob, alice, yes=True)
    task = task_of(uow.db, c.task_id)
    assert (task.agent_id, task.lease_token) == (bob, accepted.lease_token)
    assert accepted.lease_token not in (None, c.lease)
    assert not attempts.succeed(uow, c, "alice's late result")  # the old lease is void
    with pytest.raises(Conflict) as twice:
        answer(uow, c, request, bob, alice, yes=True)
    assert twice.value.code == "no_pending_handoff"


def test_a_declined_handoff_leaves_the_task_with_its_holder(uow: UnitOfWork) -> None:
    alice, bob = agent(uow, "alice"), agent(uow, "bob")
    c = held_by(uow, alice)
    request = ask(uow, c, alice, bob)
    declined = answer(uow, c, request, bob, alice, yes=False)
    assert declined.lease_token is None
    assert (task_of(uow.db, c.task_id).agent_id, task_of(uow.db, c.task_id).lease_token) == (
        alice,
        c.lease,
    )


def test_an_agent_that_lacks_the_tasks_capabilities_cannot_accept(uow: UnitOfWork) -> None:
    alice, bob = agent(uow, "alice", ["db"]), agent(uow, "bob", ["ui"])
    c = held_by(uow, alice, ["db"])
    request = ask(uow, c, alice, bob)
    with pytest.raises(Forbidden) as refused:
        answer(uow, c, request, bob, alice, yes=True)
    assert refused.value.details["missing"] == ["db"]
    assert task_of(uow.db, c.task_id).agent_id == alice


def test_only_the_request_s_recipient_answers_it_and_only_to_the_holder(uow: UnitOfWork) -> None:
    alice, bob, carol = agent(uow, "alice"), agent(uow, "bob"), agent(uow, "carol")
    c = held_by(uow, alice)
    request = ask(uow, c, alice, bob)
    for by, to in ((carol, alice), (bob, carol)):
        with pytest.raises(Conflict) as refused:
            answer(uow, c, request, by, to, yes=True)
        assert refused.value.code == "no_pending_handoff"
    assert task_of(uow.db, c.task_id).agent_id == alice
