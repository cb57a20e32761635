"""Who a change is made by. The API binds the request's token once it is authenticated and
unbinds it at teardown; the event writer stamps it on every event the request writes, so no
use case has to pass it along (and none can forget to).

A context variable keeps the services free of Flask and is private to each thread and to each
greenlet (greenlet gives every greenlet its own context, which gevent's monkey-patching
keeps), so concurrent requests never see each other's actor. A server's thread or greenlet
serves many requests in turn: hence the unbinding, and workers and beat, which never bind,
write events with no actor.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    token_id: uuid.UUID
    name: str


_current: ContextVar[Actor | None] = ContextVar("omoi_actor", default=None)


def bind(actor: Actor | None) -> None:
    """Make ``actor`` the author of what this thread or greenlet writes until the next bind."""
    _current.set(actor)


def current() -> Actor | None:
    return _current.get()


def columns() -> dict[str, Any]:
    """The current actor as an event row's columns (both null for none)."""
    actor = _current.get()
    if actor is None:
        return {"actor_token_id": None, "actor_name": None}
    return {"actor_token_id": actor.token_id, "actor_name": actor.name}
