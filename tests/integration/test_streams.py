"""Event streams a stranger cannot use to stall the API: one follower of the log per process
shared by every stream (which keeps ``follow``'s guarantees), a cap on the streams a token
holds, and streams that end when their token is revoked or their client hangs up. The
stream tests run against a real API process (gunicorn's gevent workers)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import event as sa_event

from omoi.persistence import Database
from omoi.persistence.statements import events
from omoi.persistence.types import utcnow
from omoi.services import tokens
from omoi.services.events import EventHub, latest_id
from tests.support.procs import Proc, start_api, wait_for

CAP = 3
STREAM_AFTER = 2**62  # streams of the API process start past every event (no replay)


def add_event(db: Database, kind: str = "ticket.created", ticket: uuid.UUID | None = None) -> int:
    """One committed event row; its id."""
    with db.connect() as conn:
        return int(
            conn.execute(
                events.insert()
                .values(type=kind, entity_type="ticket", ticket_id=ticket, payload={})
                .values(created_at=utcnow())
                .returning(events.c.id)
            ).scalar_one()
        )


def collect(
    hub: EventHub,
    got: list[int],
    after: int,
    *,
    count: int | None = None,
    seconds: float = 20,
    **filters: Any,
) -> None:
    """Append to ``got`` the ids a stream of ``hub`` yields, for ``seconds`` or until it has
    ``count`` of them."""
    deadline = time.monotonic() + seconds
    with closing(
        hub.follow(after=after, keep_going=lambda: time.monotonic() < deadline, **filters)
    ) as feed:
        for rows in feed:
            got.extend(row.id for row in rows)
            if count is not None and len(got) >= count:
                return


def test_many_streams_cost_one_poll_of_the_log(db: Database) -> None:
    """50 streams follow one hub for 3 s while events are written: every stream gets every
    event once, in order, and in the last 2 s the database is read by the hub's poll alone
    (each stream reads it only to catch up as it opens), not once per stream and poll. The hub
    has a database object of its own, so only its reads are counted (other tests' hubs on the
    session's linger on after their streams end)."""
    own = Database(db.url)
    hub = EventHub(own, poll=0.25, linger=0)
    start = latest_id(db)
    added = [add_event(db) for _ in range(3)]  # before the streams open: caught up
    results: list[list[int]] = [[] for _ in range(50)]
    reads: list[float] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM events" in statement:
            reads.append(time.monotonic())

    sa_event.listen(own.engine, "before_cursor_execute", count)
    try:
        threads = [
            threading.Thread(target=collect, args=(hub, got, start), kwargs={"seconds": 3})
            for got in results
        ]
        for t in threads:
            t.start()
        # a stream that has the three events caught up and reads the database no more
        wait_for(lambda: all(len(got) == 3 for got in results), what="50 streams to catch up")
        window = time.monotonic()
        added += [add_event(db) for _ in range(3)]
        for t in threads:
            t.join(30)
        polled = [t for t in reads if t >= window]
    finally:
        sa_event.remove(own.engine, "before_cursor_execute", count)
        own.dispose()
    assert all(got == added for got in results), "every stream gets every event once, in order"
    # the hub's poll reads at most 3 statements per 0.25 s: about 24 until the streams end;
    # 50 streams each polling would have made over 1,000
    assert len(polled) <= 40


def test_a_stream_gets_an_event_committed_out_of_id_order(db: Database, settings: Any) -> None:
    """Event N is written first but committed after N+1: a stream that already passed N+1
    still gets N (the hub re-reads a window below its cursor, as ``follow`` does)."""
    hub = EventHub(db, poll=0.1, linger=0)
    ticket = uuid.uuid4()
    after = latest_id(db)
    got: list[int] = []
    with psycopg.connect(settings.database_url) as slow:
        first = slow.execute(
            "INSERT INTO events (type, entity_type, ticket_id, payload, created_at)"
            " VALUES ('ticket.created', 'ticket', %s, '{}', now()) RETURNING id",
            (ticket,),
        ).fetchone()[0]  # type: ignore[index]
        second = add_event(db, "ticket.completed", ticket)
        assert second > first
        reader = threading.Thread(
            target=collect, args=(hub, got, after), kwargs={"count": 2, "ticket_id": ticket}
        )
        reader.start()
        wait_for(lambda: got == [second], what="the stream to pass the later event")
        slow.commit()
        reader.join(30)
    assert got == [second, first]


def test_a_stream_that_falls_behind_the_ring_catches_up_from_the_database(db: Database) -> None:
    """A reader slower than the ring (5 rows here) misses nothing and repeats nothing: what
    fell out of the ring is read from the database."""
    hub = EventHub(db, poll=0.05, capacity=5, linger=0)
    kind = f"test.{uuid.uuid4().hex[:8]}"
    after = latest_id(db)
    with closing(hub.follow(after=after, type=kind, tick=0.1)) as lagging:
        assert next(lagging) == []  # open and caught up; it reads nothing more for now
        added = [add_event(db, kind) for _ in range(25)]
        reader: list[int] = []  # a stream that keeps up: the hub has read all 25 when it has
        collect(hub, reader, after, count=25, type=kind)
        assert reader == added
        got: list[int] = []
        while len(got) < len(added):
            got.extend(row.id for row in next(lagging))
    assert got == added


@pytest.fixture(scope="module")
def api(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API process whose tokens may hold ``CAP`` streams each."""
    proc: Proc
    proc, server_env = start_api(
        {**env, "OMOI_MAX_STREAMS_PER_TOKEN": str(CAP)}, tmp_path_factory.mktemp("api")
    )
    yield f"http://127.0.0.1:{server_env['OMOI_API_PORT']}"
    proc.stop()


def open_stream(url: str, token: str) -> tuple[int, dict[str, str], socket.socket, bytes]:
    """A stream of events from now on, requested on a raw socket: its status, headers,
    socket and the body so far."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(
        f"GET /api/v1/events/stream?timeout=600&after={STREAM_AFTER} HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection before answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, sock, body


def read_token(db: Database) -> tuple[uuid.UUID, str]:
    row, secret = tokens.create(db, f"stream-{uuid.uuid4().hex[:6]}", ["read"])
    return row["id"], secret


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not ended the stream (what it sent meanwhile is dropped)."""
    sock.setblocking(False)
    tail = b""
    try:
        while chunk := sock.recv(65536):
            tail = (tail + chunk)[-5:]
    except BlockingIOError:
        return not tail.endswith(b"0\r\n\r\n")
    return False


def seconds_until_ended(sock: socket.socket, timeout: float) -> float:
    """How long until the server ends the stream: its last chunk, or the end of the
    connection (what it sends before is dropped)."""
    start = time.monotonic()
    sock.settimeout(timeout)
    tail = b""
    while not tail.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        tail = (tail + chunk)[-5:]
    return time.monotonic() - start


def test_a_token_beyond_its_stream_cap_gets_429_and_others_still_stream(
    api: str, db: Database
) -> None:
    """One token opens ``CAP`` streams; the next is refused with a JSON 429 and a Retry-After
    of at least a second, while another token still gets a stream; closing one of the first
    token's streams frees its slot."""
    _, hog = read_token(db)
    held = [open_stream(api, hog) for _ in range(CAP)]
    assert [status for status, *_ in held] == [200] * CAP
    status, headers, sock, body = open_stream(api, hog)
    try:
        assert status == 429
        assert int(headers["retry-after"]) >= 1
        length = int(headers["content-length"])
        while len(body) < length:
            body += sock.recv(65536)
        assert json.loads(body)["error"]["code"] == "too_many_streams"
    finally:
        sock.close()
    _, other = read_token(db)
    status, _, other_sock, _ = open_stream(api, other)
    other_sock.close()
    assert status == 200
    held.pop()[2].close()  # the client hangs up: the server sees it within a tick

    def reopened() -> socket.socket | None:
        status, _, sock, _ = open_stream(api, hog)
        if status == 200:
            return sock
        sock.close()
        return None

    wait_for(reopened, timeout=5, interval=0.2, what="the closed stream's slot").close()
    for *_, sock, _ in held:
        sock.close()


def test_revoking_a_token_ends_its_open_streams_within_the_revocation_delay(
    api: str, db: Database
) -> None:
    """A revoked token's open streams end within the 2 s in which its requests are refused
    (half a second of slack for a busy machine); another token's stream stays open."""
    token_id, secret = read_token(db)
    _, bystander = read_token(db)
    streams = [open_stream(api, secret) for _ in range(2)]
    status, _, kept, _ = open_stream(api, bystander)
    assert status == 200 and all(s[0] == 200 for s in streams)
    tokens.revoke(db, str(token_id))
    for *_, sock, _ in streams:
        assert seconds_until_ended(sock, timeout=10) < 2.5
        sock.close()
    assert still_open(kept)
    kept.close()
