"""Resource lock rules: ``repo:main`` is exclusive, ``repo:main:shared`` shared."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

EXCLUSIVE, SHARED = "exclusive", "shared"


def parse(resource: str) -> tuple[str, str]:
    """``(name, mode)`` of a declared resource."""
    if resource.endswith(":shared"):
        return resource[: -len(":shared")], SHARED
    return resource, EXCLUSIVE


def requests(resources: Iterable[str]) -> list[tuple[str, str]]:
    """One request per name (exclusive wins over shared), in name order so every task takes
    its locks in the same order."""
    wanted: dict[str, str] = {}
    for name, mode in map(parse, resources):
        wanted[name] = EXCLUSIVE if EXCLUSIVE in (mode, wanted.get(name)) else SHARED
    return sorted(wanted.items())


def conflicts(mode: str, held: Sequence[str]) -> bool:
    """Exclusive excludes every holder; shared excludes only an exclusive one."""
    return bool(held) and (mode == EXCLUSIVE or EXCLUSIVE in held)
