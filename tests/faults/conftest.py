"""Fixtures of the fault tests: a beat, and workers that may be killed."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import Proc, start_beat, start_worker


@pytest.fixture()
def beat(env: dict[str, str], tmp_path: Path) -> Iterator[Proc]:
    proc = start_beat(env, tmp_path)
    yield proc
    proc.stop()


@pytest.fixture()
def victims(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, list[Proc]]]:
    """Two one-process workers that alone serve a fresh capability."""
    capability = f"victim{uuid.uuid4().hex[:8]}"
    procs = [
        start_worker(env, tmp_path, concurrency=1, capabilities=capability)[0] for _ in range(2)
    ]
    yield capability, procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):  # a test may have killed it
            os.killpg(proc.pid, signal.SIGCONT)
        proc.stop()
