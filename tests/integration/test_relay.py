"""Every event row also reaches Redis pub/sub, through the relay that runs beside beat, under
its deployment's channel prefix. Each test's relays use prefixes of their own, so other relays
publishing on the same Redis server (other deployments, other test sessions) never count."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from omoi.config import Settings
from tests.conftest import own_store
from tests.integration.test_events import listed
from tests.support.api import submit, wait_finished
from tests.support.procs import start_beat, wait_for

pytestmark = pytest.mark.usefixtures("worker")


class Channels:
    """One pub/sub connection on the channels of some prefixes: each message, by channel."""

    def __init__(self, client: redis.Redis, *prefixes: str) -> None:
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe(*prefixes, *(f"{p}.*" for p in prefixes))
        self.got: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def drain(self) -> None:
        message = self.pubsub.get_message(timeout=0.2)
        while message is not None:
            if message["type"] == "pmessage":
                self.got[message["channel"].decode()].append(json.loads(message["data"]))
            message = self.pubsub.get_message(timeout=0.01)

    def tickets(self, prefix: str) -> set[str]:
        """The tickets whose events arrived on the prefix's channels."""
        return {
            m["ticket_id"]
            for channel, messages in self.got.items()
            if channel == prefix or channel.startswith(f"{prefix}.")
            for m in messages
        }


def new_prefix() -> str:
    return f"omoi.test.{uuid.uuid4().hex[:8]}"


def wait_relaying(client: Any, channels: Channels, prefix: str) -> list[str]:
    """Submit probe tickets until the relay on ``prefix`` publishes one of their events (it
    relays only what is committed after it started); returns the probes' ids."""
    probes: list[str] = []

    def relayed() -> bool:
        probes.append(submit(client, [{"key": "probe", "task_type": "noop"}])["id"])
        channels.drain()
        return any(channels.got[f"{prefix}.{p}"] for p in probes)

    wait_for(relayed, timeout=60, interval=0.3, what=f"the relay on {prefix} to publish")
    return probes


@pytest.fixture()
def other_deployment(fresh_database_url: str, settings: Settings) -> Iterator[tuple[str, Any]]:
    """A second deployment: its own database, and an API on it."""
    for _, api in own_store(fresh_database_url, settings):
        yield fresh_database_url, api


def test_a_tickets_events_are_published_in_order(
    client: Any, env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    prefix = new_prefix()
    beat = start_beat({**env, "OMOI_EVENTS_CHANNEL": prefix}, tmp_path)
    channels = Channels(redis_client, prefix)
    try:
        wait_relaying(client, channels, prefix)
        ticket = submit(
            client,
            [
                {"key": "a", "task_type": "effect"},
                {"key": "b", "task_type": "effect", "depends_on": ["a"]},
            ],
        )
        wait_finished(client, ticket["id"])
        expected = [e["id"] for e in listed(client, f"ticket_id={ticket['id']}")]

        def published() -> bool:
            channels.drain()
            return [m["id"] for m in channels.got[f"{prefix}.{ticket['id']}"]] == expected

        wait_for(published, timeout=30, what="the ticket's events on pub/sub")
        assert {m["id"] for m in channels.got[prefix]} >= set(expected)  # the all-events channel
    finally:
        channels.pubsub.close()
        beat.stop()


def test_relays_on_different_prefixes_do_not_hear_each_other(
    client: Any,
    env: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis,
    other_deployment: tuple[str, Any],
) -> None:
    other_url, other_client = other_deployment
    ours, theirs = new_prefix(), new_prefix()
    beats = [
        start_beat({**env, "OMOI_EVENTS_CHANNEL": ours}, tmp_path, "beat-ours"),
        start_beat(
            {**env, "OMOI_DATABASE_URL": other_url, "OMOI_EVENTS_CHANNEL": theirs},
            tmp_path,
            "beat-theirs",
        ),
    ]
    channels = Channels(redis_client, ours, theirs)
    try:
        # each relay is seen publishing its own deployment's probes under its own prefix ...
        our_tickets = set(wait_relaying(client, channels, ours))
        their_tickets = set(wait_relaying(other_client, channels, theirs))
        # ... and after both have, neither prefix carried the other deployment's tickets
        channels.drain()
        assert channels.tickets(ours).isdisjoint(their_tickets)
        assert channels.tickets(theirs).isdisjoint(our_tickets)
    finally:
        channels.pubsub.close()
        for beat in beats:
            beat.stop()
