"""Real processes for the tests: prefork workers and beat, started as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait(5)
        self._fh.close()


def run_omoi(
    env: dict[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``omoi <args>`` run to its end, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "omoi", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_worker(
    env: dict[str, str],
    tmp: Path,
    *,
    concurrency: int = 2,
    capabilities: str = "",
    name: str | None = None,
    enable: str | None = None,
    events: bool = False,
    celery_app: str | None = None,
) -> tuple[Proc, str]:
    """``omoi worker`` (with ``--enable`` if given; the session's env enables shell and http;
    ``--events`` for Flower; ``--celery-app`` if given) once it is ready; returns it and its
    node name."""
    name = name or f"test-{uuid.uuid4().hex[:8]}@localhost"
    proc = Proc(
        [
            sys.executable,
            "-m",
            "omoi",
            "worker",
            "--concurrency",
            str(concurrency),
            "--capabilities",
            capabilities,
            "--name",
            name,
            "--loglevel",
            "INFO",
            *(["--enable", enable] if enable is not None else []),
            *(["--events"] if events else []),
            *(["--celery-app", celery_app] if celery_app else []),
        ],
        env,
        tmp / f"worker-{name}.log",
    )
    return _ready(proc, name), name


def _ready(proc: Proc, name: str) -> Proc:
    """A Celery worker, omoi's or raw, once it says it is ready."""
    wait_for(
        lambda: "ready." in proc.output() or proc.popen.poll() is not None,
        timeout=60,
        what=f"worker {name} to be ready",
    )
    if proc.popen.poll() is not None:
        raise AssertionError(f"worker exited at start:\n{proc.output()}")
    return proc


def start_celery_worker(
    env: dict[str, str], tmp: Path, redis_url: str, concurrency: int = 2
) -> Proc:
    """A raw Celery prefork worker of the user's app (``tests.support.celery_app``) on
    ``redis_url``, its broker and result backend, with Celery's default settings."""
    name = f"raw-{uuid.uuid4().hex[:8]}@localhost"
    proc = Proc(
        [
            *(sys.executable, "-m", "celery", "-A", "tests.support.celery_app:app", "worker"),
            *("--pool", "prefork", "--concurrency", str(concurrency), "-n", name),
            *("--loglevel", "INFO", "--without-gossip", "--without-mingle"),
        ],
        {**env, "OMOI_TEST_CELERY_REDIS_URL": redis_url},
        tmp / f"celery-{name}.log",
    )
    return _ready(proc, name)


def start_beat(env: dict[str, str], tmp: Path, name: str = "beat") -> Proc:
    """``omoi beat``: the repair sweeps (and, on Redis, the event relay), logging to
    ``tmp/<name>.log``, so a test can run two."""
    return Proc(
        [sys.executable, "-m", "omoi", "beat", "--loglevel", "INFO"], env, tmp / f"{name}.log"
    )


def report_recovery(seconds: float) -> None:
    """The line ``python -m tests.faults.chaos`` reads (pytest shows it with ``-s``)."""
    print(f"RECOVERY {seconds:.2f}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(env: dict[str, str], tmp: Path, workers: int = 1) -> tuple[Proc, dict[str, str]]:
    """``omoi api`` (gunicorn) on a free port; returns it and the environment naming it."""
    port = free_port()
    server_env = {**env, "OMOI_API_PORT": str(port)}
    proc = Proc(
        [sys.executable, "-m", "omoi", "api", "--workers", str(workers)],
        server_env,
        tmp / f"api-{port}.log",
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return proc.popen.poll() is not None

    wait_for(ready, timeout=60, what="the API server")
    if proc.popen.poll() is not None:
        raise AssertionError(f"the API exited at start:\n{proc.output()}")
    return proc, server_env
