"""Private PostgreSQL and Redis servers on free loopback ports, for tests that restart or kill
them: the shared servers on 5432 and 6379 are never touched."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.support.procs import free_port, wait_for


class RedisServer:
    """``persist``: an append-only file synced on every write, so a restart keeps the data;
    otherwise a restart is a Redis that lost everything."""

    def __init__(self, workdir: Path, *, persist: bool) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + (aof or ["--appendonly", "no"])
            + ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        )
        client = redis.Redis.from_url(self.url())
        wait_for(lambda: _answers(client), timeout=20, what=f"redis on {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file holds survives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wipe(self) -> None:
        """Delete what a stopped server kept on disk: it comes back empty."""
        shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class PostgresServer:
    """A throw-away cluster (initdb as the ``postgres`` user when run as root, trust auth) in
    its own directory under the system temp dir, which that user can reach."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="omoi-pg-"))
        self.data = self.root / "data"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-A", "trust", "-U", "postgres", "-D", str(self.data))

    def _run(self, binary: str, *args: str) -> None:
        """A server binary (Debian keeps them off PATH, in /usr/lib/postgresql/<v>/bin)."""
        found = shutil.which(binary) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{binary}"))
        subprocess.run(
            [*self._as_owner, found, *args], check=True, capture_output=True, timeout=120
        )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, *settings: str) -> None:
        """``settings``: extra ``name=value`` server settings for this start."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        options += "".join(f" -c {setting}" for setting in settings)
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l", log, "start")

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, as in a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def crash(self) -> None:
        """An immediate shutdown: no checkpoint, WAL not yet written is gone, as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
