"""A layered drawing of a task graph, left to right, grouped by phase. Pure geometry.

Each group (a phase) takes a run of columns of its own, in the order given; a node's column is
one past its deepest dependency (never left of its group's first column). An edge that spans
more than one column passes each column in between through a lane of its own, a thin slot no
node occupies (the dummy nodes of a Sugiyama layout; edges from one source share their lanes),
and turns only in the gaps between columns. So every segment runs either inside a gap, or
across a column at a lane's height, or into its own source and target: no edge is drawn
through a node it does not touch. Nodes are ordered within their column by the barycentre of
their neighbours, which keeps crossings down; a collapsed group is drawn as one box.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

NODE_W, NODE_H = 160, 34
SUMMARY_H = 2 * NODE_H  # a collapsed group's box
COL_GAP, GROUP_GAP = 56, 88  # between columns of a group; between groups
ROW_GAP = 14  # below a node, before the next slot of its column
LANE_H, LANE_GAP = 6, 4  # a long edge's slot in a column it crosses, and the space after it
PAD, LABEL_H = 12, 28  # around the drawing; the band of group labels on top
TRACK_MIN = 4  # the least distance between two edges turning in one gap
SWEEPS = 2  # rounds of barycentre ordering (each: once right, once left), then once right


@dataclass(frozen=True)
class Node:
    id: str
    group: str
    depends_on: tuple[str, ...] = ()


@dataclass
class Box:
    """A node's rectangle, or (``summary``) a collapsed group's, whose id is ``group:<name>``."""

    id: str
    group: str
    x: float
    y: float
    w: float
    h: float
    summary: bool = False

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def middle(self) -> float:
        return self.y + self.h / 2


@dataclass
class Route:
    """An edge as a polyline of horizontal and vertical segments, from the right side of its
    source's box to the left side of its target's (where the arrowhead goes)."""

    source: str
    target: str
    points: list[tuple[float, float]]


@dataclass
class Band:
    """A group's area: its columns, label, node count and whether it is collapsed."""

    name: str
    x: float
    w: float
    size: int
    collapsed: bool


@dataclass
class Drawing:
    boxes: list[Box] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    width: float = 2 * PAD
    height: float = 2 * PAD + LABEL_H


def summary_id(group: str) -> str:
    return f"group:{group}"


Vertex = Hashable  # a box's id (str), or a lane: (source, column)


def layout(
    nodes: Sequence[Node], groups: Sequence[str] = (), collapsed: Collection[str] = ()
) -> Drawing:
    """Place ``nodes`` (acyclic; dependencies on unknown ids are ignored) in ``groups``' order
    (groups not listed follow, in order of appearance). A node may depend only on nodes of its
    own group or an earlier one (ValueError otherwise, or on a cycle)."""
    order = list(dict.fromkeys([*groups, *(n.group for n in nodes)]))
    rank = {g: i for i, g in enumerate(order)}
    group_of = {n.id: n.group for n in nodes}

    def rep(node_id: str) -> str:
        group = group_of[node_id]
        return summary_id(group) if group in collapsed else node_id

    vertices: dict[str, str] = {}  # box id -> group, in creation order
    sizes: dict[str, int] = defaultdict(int)
    edges: dict[tuple[str, str], None] = {}
    for n in nodes:
        vertices.setdefault(rep(n.id), n.group)
        sizes[n.group] += 1
        for d in n.depends_on:
            if d not in group_of:
                continue
            if rank[group_of[d]] > rank[n.group]:
                raise ValueError(f"{n.id} ({n.group}) depends on {d} of a later group")
            if rep(d) != rep(n.id):
                edges[(rep(d), rep(n.id))] = None
    column = _columns(vertices, list(edges), order)
    chains, preds, succs = _lanes(list(edges), column)
    columns = _order(vertices, column, chains, preds, succs)
    heights = {v: SUMMARY_H if g in collapsed else NODE_H for v, g in vertices.items()}
    lefts = _lefts(columns, vertices, column)
    middles = _place(columns, heights, preds)
    drawing = Drawing()
    for v, group in vertices.items():
        x, h = lefts[column[v]], heights[v]
        summary = group in collapsed
        drawing.boxes.append(Box(v, group, x, middles[v] - h / 2, NODE_W, h, summary))
    tracks = _tracks(columns, lefts, succs, middles)
    for chain in chains:
        drawing.routes.append(_route(chain, column, lefts, middles, tracks))
    spans: dict[str, list[int]] = defaultdict(list)
    for v, group in vertices.items():
        spans[group].append(column[v])
    for group in order:
        if group in spans:
            first, last = min(spans[group]), max(spans[group])
            x = lefts[first] - PAD / 2
            w = lefts[last] + NODE_W - lefts[first] + PAD
            drawing.bands.append(Band(group, x, w, sizes[group], group in collapsed))
    if drawing.boxes:
        drawing.width = max(b.right for b in drawing.boxes) + PAD
        drawing.height = max(b.bottom for b in drawing.boxes) + PAD
    return drawing


def _columns(
    vertices: dict[str, str], edges: list[tuple[str, str]], order: list[str]
) -> dict[str, int]:
    """Longest-path columns, each group's starting one past the previous group's last."""
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for s, t in edges:
        preds[t].append(s)
        succs[s].append(t)
    by_group: dict[str, list[str]] = defaultdict(list)
    for v, group in vertices.items():
        by_group[group].append(v)
    column: dict[str, int] = {}
    floor = 0
    for group in order:
        members = by_group.get(group, [])
        waiting = {v: sum(1 for p in preds[v] if vertices[p] == group) for v in members}
        ready = deque(v for v in members if waiting[v] == 0)
        while ready:
            v = ready.popleft()
            column[v] = max([floor, *(column[p] + 1 for p in preds[v])])
            for s in succs[v]:
                if vertices[s] == group:
                    waiting[s] -= 1
                    if waiting[s] == 0:
                        ready.append(s)
        if any(v not in column for v in members):
            raise ValueError(f"the graph of group {group} has a cycle")
        if members:
            floor = max(column[v] for v in members) + 1
    return column


def _lanes(
    edges: list[tuple[str, str]], column: dict[str, int]
) -> tuple[list[list[Vertex]], dict[Vertex, list[Vertex]], dict[Vertex, list[Vertex]]]:
    """Each edge as a chain of vertices one column apart (its lanes between source and target,
    shared by the edges of one source), and the hops' predecessors and successors."""
    chains: list[list[Vertex]] = []
    preds: dict[Vertex, list[Vertex]] = defaultdict(list)
    succs: dict[Vertex, list[Vertex]] = defaultdict(list)
    hops: set[tuple[Vertex, Vertex]] = set()
    for s, t in edges:
        chain: list[Vertex] = [s, *((s, c) for c in range(column[s] + 1, column[t])), t]
        for u, w in pairwise(chain):
            if (u, w) not in hops:
                hops.add((u, w))
                preds[w].append(u)
                succs[u].append(w)
        chains.append(chain)
    return chains, preds, succs


def _col(v: Vertex, column: dict[str, int]) -> int:
    return v[1] if isinstance(v, tuple) else column[v]  # type: ignore[no-any-return]


def _order(
    vertices: dict[str, str],
    column: dict[str, int],
    chains: list[list[Vertex]],
    preds: dict[Vertex, list[Vertex]],
    succs: dict[Vertex, list[Vertex]],
) -> list[list[Vertex]]:
    """Each column's vertices top to bottom: creation order, then barycentre sweeps."""
    width = max(column.values(), default=-1) + 1
    columns: list[list[Vertex]] = [[] for _ in range(width)]
    for v in vertices:
        columns[column[v]].append(v)
    seen: set[Vertex] = set(vertices)
    for chain in chains:
        for lane in chain[1:-1]:
            if lane not in seen:
                seen.add(lane)
                columns[_col(lane, column)].append(lane)
    position = {v: i for col in columns for i, v in enumerate(col)}

    def sweep(indices: range, neighbours: dict[Vertex, list[Vertex]]) -> None:
        for c in indices:

            def centre(v: Vertex) -> float:
                near = neighbours.get(v)
                return sum(position[n] for n in near) / len(near) if near else position[v]

            columns[c].sort(key=centre)
            for i, v in enumerate(columns[c]):
                position[v] = i

    for _ in range(SWEEPS):
        sweep(range(1, width), preds)
        sweep(range(width - 2, -1, -1), succs)
    sweep(range(1, width), preds)
    return columns


def _lefts(
    columns: list[list[Vertex]], vertices: dict[str, str], column: dict[str, int]
) -> list[float]:
    """Each column's left edge: a wider gap where one group ends and the next begins."""
    group_at: dict[int, str] = {column[v]: g for v, g in vertices.items()}
    lefts: list[float] = []
    x = float(PAD)
    for c in range(len(columns)):
        if c:
            boundary = group_at.get(c) != group_at.get(c - 1)
            x += NODE_W + (GROUP_GAP if boundary else COL_GAP)
        lefts.append(x)
    return lefts


def _place(
    columns: list[list[Vertex]], heights: dict[str, int], preds: dict[Vertex, list[Vertex]]
) -> dict[Vertex, float]:
    """Each vertex's vertical middle: stacked in its column's order, each level with its
    highest predecessor where there is room (so chains and lanes run straight)."""
    middle: dict[Vertex, float] = {}
    for col in columns:
        free = float(PAD + LABEL_H)
        for v in col:
            lane = isinstance(v, tuple)
            h = LANE_H if lane else heights[v]  # type: ignore[index]
            top = free
            near = [middle[p] for p in preds.get(v, ()) if p in middle]
            if near:
                top = max(free, min(near) - h / 2)
            middle[v] = top + h / 2
            free = top + h + (LANE_GAP if lane else ROW_GAP)
    return middle


def _tracks(
    columns: list[list[Vertex]],
    lefts: list[float],
    succs: dict[Vertex, list[Vertex]],
    middles: dict[Vertex, float],
) -> dict[Vertex, float]:
    """Where each vertex's outgoing edges turn: a vertical track of its own in the gap to its
    right (shared only when the gap holds more turning vertices than tracks fit), as an offset
    from its column's right edge."""
    track: dict[Vertex, float] = {}
    for c, col in enumerate(columns[:-1]):
        turning = [v for v in col if any(middles[w] != middles[v] for w in succs.get(v, ()))]
        if not turning:
            continue
        gap = lefts[c + 1] - lefts[c] - NODE_W
        fit = max(1, int(gap / TRACK_MIN) - 1)
        for i, v in enumerate(turning):
            slot = i % fit if len(turning) > fit else i
            slots = min(len(turning), fit)
            track[v] = (slot + 1) * gap / (slots + 1)
    return track


def _route(
    chain: list[Vertex],
    column: dict[str, int],
    lefts: list[float],
    middles: dict[Vertex, float],
    tracks: dict[Vertex, float],
) -> Route:
    source, target = chain[0], chain[-1]
    points = [(lefts[_col(source, column)] + NODE_W, middles[source])]
    for u, w in pairwise(chain):
        if middles[u] != middles[w]:
            x = lefts[_col(u, column)] + NODE_W + tracks[u]
            points += [(x, middles[u]), (x, middles[w])]
    points.append((lefts[_col(target, column)], middles[target]))
    return Route(str(source), str(target), points)
