"""Which Celery queue a task goes to, derived from its capabilities."""

from collections.abc import Iterable, Sequence

DEFAULT_CAPABILITY = "default"
QUEUE_PREFIX = "cap."


def normalize_capabilities(capabilities: Iterable[str]) -> list[str]:
    """Lowercase, stripped, de-duplicated, order kept (the first one picks the queue)."""
    return list(dict.fromkeys(c.strip().lower() for c in capabilities if c.strip()))


def queue_for(capabilities: Sequence[str]) -> str:
    return QUEUE_PREFIX + (capabilities[0] if capabilities else DEFAULT_CAPABILITY)


def queues_for_worker(capabilities: Iterable[str]) -> list[str]:
    """A worker serves its capabilities' queues and always the default one."""
    caps = normalize_capabilities([*capabilities, DEFAULT_CAPABILITY])
    return [queue_for([c]) for c in caps]
