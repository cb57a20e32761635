"""Every event row also reaches Redis pub/sub, through the relay that runs beside beat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.test_events import listed
from tests.support.api import submit, wait_finished
from tests.support.procs import start_beat, wait_for

pytestmark = pytest.mark.usefixtures("worker")


def test_a_tickets_events_are_published_in_order(
    client: Any, env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    beat = start_beat(env, tmp_path)
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("omoi.events.*")
    try:

        def relaying() -> bool:
            """Submit a probe ticket; true once the relay publishes anything."""
            submit(client, [{"key": "probe", "task_type": "noop"}])
            message = pubsub.get_message(timeout=1.0)
            while message is not None and message["type"] != "pmessage":
                message = pubsub.get_message(timeout=1.0)
            return message is not None

        wait_for(relaying, timeout=60, what="the relay to publish")
        ticket = submit(
            client,
            [
                {"key": "a", "task_type": "effect"},
                {"key": "b", "task_type": "effect", "depends_on": ["a"]},
            ],
        )
        wait_finished(client, ticket["id"])
        expected = [e["id"] for e in listed(client, f"ticket_id={ticket['id']}")]
        got: list[int] = []

        def collect() -> bool:
            msg = pubsub.get_message(timeout=0.2)
            while msg is not None:
                if msg["type"] == "pmessage" and msg["channel"] == (
                    f"omoi.events.{ticket['id']}".encode()
                ):
                    got.append(json.loads(msg["data"])["id"])
                msg = pubsub.get_message(timeout=0.05)
            return got == expected

        wait_for(collect, timeout=30, what="the ticket's events on pub/sub")
    finally:
        pubsub.close()
        beat.stop()
