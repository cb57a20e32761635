"""Which Celery queue a task goes to, derived from its capabilities and, for an exec task type
(``auth.exec_types``), its type: such a task has a queue of its own that only workers that
enabled the type consume."""

from collections.abc import Collection, Iterable, Sequence

DEFAULT_CAPABILITY = "default"
QUEUE_PREFIX = "cap."
EXEC_SEPARATOR = "/"  # no capability holds it (specs.TOKEN): an exec queue never names one


def normalize_capabilities(capabilities: Iterable[str]) -> list[str]:
    """Lowercase, stripped, de-duplicated, order kept (the first one picks the queue)."""
    return list(dict.fromkeys(c.strip().lower() for c in capabilities if c.strip()))


def route_of(capabilities: Sequence[str]) -> str:
    """The capability that picks a task's queue: its first, or ``default``."""
    return capabilities[0] if capabilities else DEFAULT_CAPABILITY


def queue_for(capabilities: Sequence[str]) -> str:
    return QUEUE_PREFIX + route_of(capabilities)


def exec_queue(queue: str, task_type: str) -> str:
    """The queue of an exec-type task whose capabilities pick ``queue``: ``cap.gpu/shell``."""
    return f"{queue}{EXEC_SEPARATOR}{task_type}"


def publish_queue(queue: str, task_type: str, exec_types: Collection[str]) -> str:
    """Where a task routed to ``queue`` is published: there, or its exec queue when its type
    runs code (a worker that has not enabled the type never receives it)."""
    return exec_queue(queue, task_type) if task_type in exec_types else queue


def external_routes(capabilities: Iterable[str], served: Collection[str]) -> list[tuple[bool, str]]:
    """Where an external agent's next task can be, as (external, route) pairs: a task it may
    take has only capabilities it has, so its route is one of them or ``default``; it is
    marked external, or no live Celery worker serves its route (``served``)."""
    routes = normalize_capabilities([*capabilities, DEFAULT_CAPABILITY])
    return [(True, r) for r in routes] + [(False, r) for r in routes if r not in served]


def queues_for_worker(capabilities: Iterable[str], enabled: Iterable[str] = ()) -> list[str]:
    """A worker serves its capabilities' queues and always the default one, and the exec
    queues of each of them for the exec task types it enabled."""
    caps = normalize_capabilities([*capabilities, DEFAULT_CAPABILITY])
    queues = [queue_for([c]) for c in caps]
    return queues + [exec_queue(q, t) for t in dict.fromkeys(enabled) for q in queues]


def served_by(queues: Iterable[str]) -> tuple[list[str], list[str]]:
    """The capabilities and the exec task types a worker consuming ``queues`` serves."""
    capabilities: list[str] = []
    types: list[str] = []
    for queue in queues:
        if not queue.startswith(QUEUE_PREFIX):
            continue
        capability, separator, task_type = queue[len(QUEUE_PREFIX) :].partition(EXEC_SEPARATOR)
        if separator:
            types.append(task_type)
        else:
            capabilities.append(capability)
    return capabilities, list(dict.fromkeys(types))
