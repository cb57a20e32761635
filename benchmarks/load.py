"""Load on an API over loopback, for ``python -m benchmarks streams`` and
tests/faults/test_stall.py: a crowd of event streams that stay open and of slow clients that
send their headers a byte at a time (slowloris), run in a process of its own so its work
does not slow the probe that times requests beside it.

    python -m benchmarks.load --url http://127.0.0.1:5000 --token T1 --token T2 \\
        --streams 500 --slow 200 [--after N]

prints ``ready`` once every stream has its first bytes and every slow client is connected,
then, once its standard input closes, one JSON line of what happened, and exits. A number
sent on its standard input makes it wait (up to 30 s) until its streams have received that
many events in all: what was sent last is still on its way when the sender stops.
"""

from __future__ import annotations

import argparse
import http.client
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
SLOW_BYTES = b"GET /healthz HTTP/1.1\r\nHost: slow\r\n" + b"X-Slow: " + b"a" * 10_000
SLOW_INTERVAL = 0.5  # seconds between one slow client's bytes


@dataclass
class Tally:
    """What the crowd saw; ``streams_closed`` and ``streams_refused`` should stay 0."""

    streams_open: int = 0
    streams_refused: int = 0  # a status other than 200
    streams_closed: int = 0  # ended by the server while the crowd ran
    stream_bytes: int = 0
    events: int = 0
    slow_connected: int = 0
    slow_cut: int = 0  # disconnected by the server (and replaced)


@dataclass
class _Stream:
    sock: socket.socket
    buffer: bytes = b""
    started: bool = False


@dataclass
class _Slow:
    sock: socket.socket
    sent: int = 0
    due: float = field(default_factory=time.monotonic)


class Crowd:
    """Open streams and slow clients on one selector: a few hundred sockets cost the load
    process one thread."""

    def __init__(self, url: str, tokens: list[str], after: int | None) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.tokens = tokens
        query = "timeout=3600" + (f"&after={after}" if after is not None else "")
        self.path = f"/api/v1/events/stream?{query}"
        self.selector = selectors.DefaultSelector()
        self.tally = Tally()
        self.slow: list[_Slow] = []

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=30)
        sock.setblocking(False)
        return sock

    def open_streams(self, count: int) -> None:
        for i in range(count):
            sock = self._connect()
            token = self.tokens[i % len(self.tokens)]
            sock.sendall(
                f"GET {self.path} HTTP/1.1\r\nHost: load\r\nAuthorization: Bearer {token}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            self.selector.register(sock, selectors.EVENT_READ, _Stream(sock))

    def _new_slow(self) -> _Slow:
        slow = _Slow(self._connect())
        self.selector.register(slow.sock, selectors.EVENT_READ, slow)  # readable: cut off
        return slow

    def open_slow(self, count: int) -> None:
        self.slow = [self._new_slow() for _ in range(count)]
        self.tally.slow_connected = count

    def _replace(self, slow: _Slow) -> None:
        """The server cut a slow client off (closed it, or answered it): another takes its
        place, so the crowd keeps its size."""
        self.selector.unregister(slow.sock)
        slow.sock.close()
        self.tally.slow_cut += 1
        self.slow[self.slow.index(slow)] = self._new_slow()

    def _read(self, stream: _Stream) -> None:
        try:
            data = stream.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(stream.sock)
            stream.sock.close()
            if stream.started:
                self.tally.streams_closed += 1
            else:
                self.tally.streams_refused += 1
            return
        self.tally.stream_bytes += len(data)
        self.tally.events += data.count(b"\nevent: ")
        if not stream.started:
            stream.buffer += data
            if b"\r\n\r\n" in stream.buffer:
                stream.started = True
                if stream.buffer.startswith(b"HTTP/1.1 200"):
                    self.tally.streams_open += 1
                else:  # refused: the server will close it (or we do)
                    self.selector.unregister(stream.sock)
                    stream.sock.close()
                    self.tally.streams_refused += 1
                stream.buffer = b""

    def _drip(self, now: float) -> None:
        """The next byte of each slow client that is due."""
        for slow in self.slow:
            if slow.due > now:
                continue
            slow.due = now + SLOW_INTERVAL
            try:
                slow.sock.send(SLOW_BYTES[slow.sent : slow.sent + 1])
                slow.sent += 1
            except BlockingIOError:
                continue
            except OSError:
                self._replace(slow)

    def step(self, timeout: float = 0.05) -> None:
        for key, _ in self.selector.select(timeout):
            if isinstance(key.data, _Slow):
                self._replace(key.data)
            else:
                self._read(key.data)
        self._drip(time.monotonic())

    def settled(self, streams: int) -> bool:
        """Every stream has answered (opened or refused)."""
        return self.tally.streams_open + self.tally.streams_refused >= streams

    def run(
        self, streams: int, slow: int, stop: threading.Event, events: list[int]
    ) -> Iterator[str]:
        """Yield ``ready`` once set up, then keep the crowd going until ``stop``, and then
        until its streams have ``events[0]`` events (if given)."""
        self.open_streams(streams)
        self.open_slow(slow)
        deadline = time.monotonic() + 120
        while not self.settled(streams):
            if time.monotonic() > deadline:
                raise TimeoutError(f"streams not all answered: {self.tally}")
            self.step()
        yield "ready"
        while not stop.is_set():
            self.step()
        deadline = time.monotonic() + 30
        while events and self.tally.events < events[0] and time.monotonic() < deadline:
            self.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", action="append", required=True)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--after", type=int, default=None)
    args = parser.parse_args()
    stop = threading.Event()
    events: list[int] = []

    def until_stdin_closes() -> None:
        events.extend(int(word) for word in sys.stdin.read().split())
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    crowd = Crowd(args.url, args.token, args.after)
    for line in crowd.run(args.streams, args.slow, stop, events):
        print(line, flush=True)
    print(json.dumps(crowd.tally.__dict__), flush=True)


class CrowdProcess:
    """The crowd in a child process: ready when constructed, ``finish()`` returns its tally."""

    def __init__(
        self, url: str, tokens: list[str], streams: int, slow: int, after: int | None = None
    ) -> None:
        args = [sys.executable, "-m", "benchmarks.load", "--url", url]
        args += [f"--token={t}" for t in tokens]
        args += ["--streams", str(streams), "--slow", str(slow)]
        args += ["--after", str(after)] if after is not None else []
        self.popen = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().strip()
        if line != "ready":
            self.popen.kill()
            raise RuntimeError(f"the load process did not get ready: {line!r}")

    def finish(self, events: int = 0) -> dict[str, Any]:
        """Stop the crowd once its streams have ``events`` events in all; its tally."""
        out, _ = self.popen.communicate(input=str(events), timeout=90)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def timed(url: str, method: str, path: str, token: str, body: Any = None) -> float:
    """Milliseconds for one request on a new connection, from connecting to the last byte
    of the response; a status that is not 2xx fails."""
    parts = urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    elapsed = (time.perf_counter() - start) * 1000
    if not 200 <= resp.status < 300:
        raise AssertionError(f"{method} {path} answered {resp.status}")
    return elapsed


def probe(url: str, token: str, ticket_id: str, rounds: int) -> dict[str, list[float]]:
    """``rounds`` of /healthz, GET of a ticket and POST of a one-task ticket, one after the
    other: each request's latency in ms, by kind."""
    times: dict[str, list[float]] = {"healthz": [], "get": [], "post": []}
    ticket = {"title": "probe", "tasks": [{"key": "a", "task_type": "noop", "external": True}]}
    for _ in range(rounds):
        times["healthz"].append(timed(url, "GET", "/healthz", token))
        times["get"].append(timed(url, "GET", f"/api/v1/tickets/{ticket_id}", token))
        times["post"].append(timed(url, "POST", "/api/v1/tickets", token, ticket))
    return times


if __name__ == "__main__":
    main()
