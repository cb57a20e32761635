"""``omoi up`` and ``omoi demo`` start-up on the embedded default, as real processes: a taken
port is refused in one line, ``--port`` and ``--concurrency`` shape the stack, a process that
dies at start-up is named with the end of its log, and the demo succeeds on a busy machine."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import bearer
from tests.support.procs import ROOT, Proc, free_port, wait_for
from tests.support.procs import run_omoi as omoi


@pytest.fixture()
def embedded(tmp_path: Path) -> dict[str, str]:
    """No ``OMOI_*`` from the session: the embedded default, its data in the test's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
    env.update(OMOI_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    return env


class Impostor(http.server.BaseHTTPRequestHandler):
    """Answers every GET like a healthy, ready omoi would."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ready", "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture()
def taken_port() -> Iterator[int]:
    """A port where another server answers /readyz with 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_up_refuses_a_taken_port_in_one_line(embedded: dict[str, str], taken_port: int) -> None:
    result = omoi(embedded, "up", "--port", str(taken_port), timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""  # never "omoi is up" on the strength of another server
    [line] = result.stderr.splitlines()
    assert f"127.0.0.1:{taken_port}" in line and "Address already in use" in line, line
    assert not (Path(embedded["OMOI_DATA_DIR"]) / "logs").exists()  # nothing was started


def test_up_serves_on_its_port_with_its_concurrency(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**embedded, "OMOI_API_PORT": "1"}  # --port wins over the setting
    proc = Proc(
        [sys.executable, "-m", "omoi", "up", "--port", str(port), "--concurrency", "3"],
        env,
        tmp_path / "up.log",
    )
    try:
        line = wait_for(
            lambda: (
                next((ln for ln in proc.output().splitlines() if "token (admin" in ln), None)
                or proc.popen.poll() is not None
            ),
            timeout=330,
            what="omoi up to be up",
        )
        assert isinstance(line, str), proc.output()
        url = f"http://127.0.0.1:{port}"
        assert f"omoi is up; the board is at {url}/board\nAPI {url}/api/v1," in proc.output()
        secret = line.rsplit(" ", 1)[1]
        request = urllib.request.Request(f"{url}/api/v1/agents?kind=celery", headers=bearer(secret))
        with urllib.request.urlopen(request, timeout=10) as resp:
            [agent] = json.loads(resp.read())["items"]
        assert agent["capacity"] == 3 and agent["status"] == "idle"
        pool = ["pgrep", "-P", str(agent["pid"])]
        wait_for(
            lambda: len(subprocess.run(pool, capture_output=True, text=True).stdout.split()) == 3,
            timeout=60,
            what="the worker's three pool processes",
        )
    finally:
        proc.stop()
    assert proc.popen.returncode == 0, proc.output()


def test_a_process_that_dies_at_start_up_is_named_with_its_log(embedded: dict[str, str]) -> None:
    port = free_port()
    env = {**embedded, "OMOI_HANDLERS": "omoi_no_such_handlers"}  # worker and beat import it
    result = omoi(env, "up", "--port", str(port))
    assert result.returncode != 0 and "omoi is up" not in result.stdout
    logs = Path(env["OMOI_DATA_DIR"]) / "logs"
    named = [
        n
        for n in ("worker", "beat")
        if f"the {n} stopped (exit code 1); the end of {logs / n}.log:" in result.stderr
    ]
    assert named, result.stderr
    assert "ModuleNotFoundError: No module named 'omoi_no_such_handlers'" in result.stderr
    with pytest.raises(ConnectionRefusedError):  # nothing of the stack is left listening
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_broken_workflow_file_stops_up_with_its_name(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: [unclosed\n")
    result = omoi(
        {**embedded, "OMOI_WORKFLOWS_DIR": str(folder)},
        "up",
        "--port",
        str(free_port()),
        timeout=60,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{folder / 'broken.yaml'}: not valid YAML" in result.stderr


def test_up_prints_a_token_for_the_local_user(embedded: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    data = Path(embedded["OMOI_DATA_DIR"])
    proc = Proc(
        [sys.executable, "-m", "omoi", "up", "--port", str(port)], embedded, tmp_path / "up.log"
    )
    children: list[str] = []
    try:
        line = wait_for(
            lambda: next((ln for ln in proc.output().splitlines() if "token (admin" in ln), None),
            timeout=330,
            what="omoi up to print its token",
        )
        secret = line.rsplit(" ", 1)[1]
        assert (data / "token").read_text().strip() == secret
        assert (data / "token").stat().st_mode & 0o077 == 0
        assert f"sign in to the board at http://127.0.0.1:{port}/board/login" in proc.output()
        assert proc.output().count(secret) == 1  # printed once, in no address
        url = f"http://127.0.0.1:{port}/api/v1/workflows"
        with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(secret))) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url)
        assert refused.value.code == 401
        pgrep = ["pgrep", "-P", str(proc.pid)]
        children = subprocess.run(pgrep, capture_output=True, text=True).stdout.split()
    finally:
        proc.stop()
    assert proc.popen.returncode == 0 and len(children) == 3  # API, worker, beat
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
        timeout=30,
        what="SIGTERM to omoi up to stop API, worker and beat",
    )


@pytest.fixture()
def busy_cpus() -> Iterator[None]:
    """Every core kept busy by a process of the test's own, killed afterwards."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


@pytest.mark.usefixtures("busy_cpus")
def test_demo_succeeds_while_every_core_is_busy(embedded: dict[str, str], tmp_path: Path) -> None:
    result = omoi(embedded, "demo", "--port", str(free_port()), "--timeout", "400", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ticket done in PHASE_DONE" in result.stdout
