"""Fixtures of the fault tests: a beat, workers that may be killed, servers of a test's own."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import Proc, start_beat, start_worker
from tests.support.services import RedisServer


@pytest.fixture()
def beat(env: dict[str, str], tmp_path: Path) -> Iterator[Proc]:
    proc = start_beat(env, tmp_path)
    yield proc
    proc.stop()


@contextlib.contextmanager
def victim_workers(env: dict[str, str], tmp: Path) -> Iterator[tuple[str, list[Proc]]]:
    """Two one-process workers that alone serve a fresh capability."""
    capability = f"victim{uuid.uuid4().hex[:8]}"
    procs = [start_worker(env, tmp, concurrency=1, capabilities=capability)[0] for _ in range(2)]
    try:
        yield capability, procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):  # a test may have killed it
                os.killpg(proc.pid, signal.SIGCONT)
            proc.stop()


@pytest.fixture()
def victims(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, list[Proc]]]:
    with victim_workers(env, tmp_path) as pair:
        yield pair


@pytest.fixture()
def stack_env(
    env: dict[str, str], fresh_database_url: str, tmp_path: Path
) -> Iterator[tuple[dict[str, str], RedisServer]]:
    """A database and a broker of the test's own (no other test's worker serves them); the
    effect counters stay on shared Redis."""
    broker = RedisServer(tmp_path / "redis", persist=True)
    broker.start()
    yield {**env, "OMOI_DATABASE_URL": fresh_database_url, "OMOI_BROKER_URL": broker.url()}, broker
    broker.kill()
