"""Which Celery queue a task goes to, derived from its capabilities."""

from collections.abc import Collection, Iterable, Sequence

DEFAULT_CAPABILITY = "default"
QUEUE_PREFIX = "cap."


def normalize_capabilities(capabilities: Iterable[str]) -> list[str]:
    """Lowercase, stripped, de-duplicated, order kept (the first one picks the queue)."""
    return list(dict.fromkeys(c.strip().lower() for c in capabilities if c.strip()))


def route_of(capabilities: Sequence[str]) -> str:
    """The capability that picks a task's queue: its first, or ``default``."""
    return capabilities[0] if capabilities else DEFAULT_CAPABILITY


def queue_for(capabilities: Sequence[str]) -> str:
    return QUEUE_PREFIX + route_of(capabilities)


def external_routes(capabilities: Iterable[str], served: Collection[str]) -> list[tuple[bool, str]]:
    """Where an external agent's next task can be, as (external, route) pairs: a task it may
    take has only capabilities it has, so its route is one of them or ``default``; it is
    marked external, or no live Celery worker serves its route (``served``)."""
    routes = normalize_capabilities([*capabilities, DEFAULT_CAPABILITY])
    return [(True, r) for r in routes] + [(False, r) for r in routes if r not in served]


def queues_for_worker(capabilities: Iterable[str]) -> list[str]:
    """A worker serves its capabilities' queues and always the default one."""
    caps = normalize_capabilities([*capabilities, DEFAULT_CAPABILITY])
    return [queue_for([c]) for c in caps]
