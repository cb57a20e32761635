"""Validation of a task graph given as keys and ``depends_on`` lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class GraphProblems:
    """Everything wrong with a graph, so the client can fix it in one go."""

    duplicate_keys: list[str] = field(default_factory=list)
    self_dependencies: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    cycle: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.duplicate_keys or self.self_dependencies or self.missing or self.cycle)

    def message(self) -> str:
        parts = []
        if self.duplicate_keys:
            parts.append(f"duplicate task keys: {', '.join(self.duplicate_keys)}")
        if self.self_dependencies:
            parts.append(f"tasks depending on themselves: {', '.join(self.self_dependencies)}")
        for key, deps in self.missing.items():
            parts.append(f"task {key!r} depends on unknown keys: {', '.join(deps)}")
        if self.cycle:
            parts.append(f"dependency cycle: {' -> '.join(self.cycle)}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v}


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """Return one cycle as ``[a, b, ..., a]`` or ``[]``; iterative, so 10,000 nodes are fine."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, idx = stack[-1]
            deps = graph[node]
            if idx < len(deps):
                stack[-1] = (node, idx + 1)
                nxt = deps[idx]
                if nxt not in colour:
                    continue
                if colour[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if colour[nxt] == white:
                    colour[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return []


def validate(edges: Sequence[tuple[str, Sequence[str]]]) -> GraphProblems:
    """Check ``(key, depends_on)`` pairs: unique keys, known targets, no self-loops, no cycle."""
    problems = GraphProblems()
    graph: dict[str, list[str]] = {}
    for key, deps in edges:
        if key in graph:
            problems.duplicate_keys.append(key)
        graph[key] = list(dict.fromkeys(deps))
    for key, deps in graph.items():
        if key in deps:
            problems.self_dependencies.append(key)
        unknown = [d for d in deps if d not in graph]
        if unknown:
            problems.missing[key] = unknown
    if not problems.self_dependencies:
        problems.cycle = find_cycle(graph)
    return problems


def layers(graph: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's depth: 0 for nodes with no (known) dependency, else one more than its
    deepest dependency — the columns of a left-to-right drawing. ``graph`` must be acyclic;
    dependencies outside it are ignored."""
    depth: dict[str, int] = {}
    for start in graph:
        stack = [start]
        while stack:
            node = stack[-1]
            pending = [d for d in graph[node] if d in graph and d not in depth]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            deps = [depth[d] for d in graph[node] if d in graph]
            depth[node] = 1 + max(deps) if deps else 0
    return depth
