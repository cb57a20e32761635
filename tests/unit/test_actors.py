"""The actor the API binds is private to the thread or greenlet serving the request: under
gunicorn's threads and under gevent, two requests served at once never stamp each other's
token on their events."""

from __future__ import annotations

import threading
import uuid

import gevent
from gevent.event import Event

from omoi.persistence import actors

N = 8


def _actor(n: int) -> actors.Actor:
    return actors.Actor(uuid.uuid4(), f"token-{n}")


def test_concurrent_threads_never_see_each_others_actor() -> None:
    everyone_bound = threading.Barrier(N)
    seen: dict[int, str | None] = {}

    def request(n: int) -> None:
        actors.bind(_actor(n))
        everyone_bound.wait(timeout=30)  # every thread has bound before any reads
        current = actors.current()
        seen[n] = current.name if current else None

    threads = [threading.Thread(target=request, args=(n,)) for n in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == {n: f"token-{n}" for n in range(N)}
    assert actors.current() is None  # nor does the thread that started them


def test_concurrent_greenlets_never_see_each_others_actor() -> None:
    """gevent's server spawns a greenlet per request, all on one thread: a thread-local or a
    module global would be shared by all of them."""
    bound = 0
    everyone_bound = Event()

    def request(n: int) -> str | None:
        nonlocal bound
        actors.bind(_actor(n))
        bound += 1
        if bound == N:
            everyone_bound.set()
        everyone_bound.wait(timeout=30)  # yields to the other greenlets until all have bound
        current = actors.current()
        return current.name if current else None

    greenlets = [gevent.spawn(request, n) for n in range(N)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    assert [g.value for g in greenlets] == [f"token-{n}" for n in range(N)]
    assert actors.current() is None
