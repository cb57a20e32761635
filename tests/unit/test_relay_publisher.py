"""The event relay's Redis publisher: every event under the prefix, a ticket's also under its
ticket's channel, in one round trip."""

from __future__ import annotations

import uuid
from typing import Any

from omoi.broker.relay import RedisPublisher


class Pipeline:
    def __init__(self, sent: list[list[tuple[str, str]]]) -> None:
        self.sent = sent
        self.queued: list[tuple[str, str]] = []

    def publish(self, channel: str, text: str) -> None:
        self.queued.append((channel, text))

    def execute(self) -> None:
        self.sent.append(self.queued)


class Client:
    def __init__(self) -> None:
        self.sent: list[list[tuple[str, str]]] = []

    def pipeline(self, transaction: bool) -> Pipeline:
        assert transaction is False
        return Pipeline(self.sent)


def test_a_tickets_event_goes_to_the_prefix_and_its_tickets_channel() -> None:
    client: Any = Client()
    ticket = uuid.uuid4()
    publish = RedisPublisher(client, "omoi.events.db3")
    publish('{"id": 1}', ticket)
    publish('{"id": 2}', None)
    assert client.sent == [
        [("omoi.events.db3", '{"id": 1}'), (f"omoi.events.db3.{ticket}", '{"id": 1}')],
        [("omoi.events.db3", '{"id": 2}')],
    ]
