"""The task graph's drawing (omoi/domain/layout.py): on every shape, from the board's old
failure (``lint → package`` drawn through ``unit-tests``) to 2,000 tasks, no edge runs through
a node it does not touch, every edge leaves its source's right side and enters its target's
left side in horizontal and vertical segments, and groups keep to columns of their own."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections import defaultdict
from itertools import pairwise

import pytest

from omoi.domain.layout import Box, Drawing, Node, Route, layout, summary_id


def shape(edges: dict[str, list[str]], group: str = "PHASE_RUN") -> list[Node]:
    return [Node(k, group, tuple(v)) for k, v in edges.items()]


def random_dag(n: int, seed: int, groups: int = 1) -> list[Node]:
    """``n`` nodes in ``groups`` runs, each depending on up to three recent ones of its run."""
    rng = random.Random(seed)
    per = n // groups
    nodes = []
    for i in range(n):
        g, start = i // per, (i // per) * per
        window = range(max(start, i - 150), i)
        deps = rng.sample(list(window), min(len(window), rng.randint(0, 3)))
        nodes.append(Node(f"n{i}", f"P{g}", tuple(f"n{d}" for d in deps)))
    return nodes


LINT = {"lint": [], "compile": [], "unit-tests": ["compile"], "package": ["lint", "unit-tests"]}
SHAPES: dict[str, list[Node]] = {
    "lint → package beside unit-tests": shape(LINT),
    "diamond": shape({"root": [], "left": ["root"], "right": ["root"], "join": ["left", "right"]}),
    "long skips over a chain": shape(
        {f"c{i}": [f"c{j}" for j in (i - 1, i - 4, i - 7) if j >= 0] for i in range(30)}
    ),
    "fan-out and fan-in of 1,998": shape(
        {
            "start": [],
            **{f"m{i}": ["start"] for i in range(1998)},
            "end": [f"m{i}" for i in range(1998)],
        }
    ),
    "phases side by side": [
        *shape({"spec": [], "review": ["spec"]}, "PHASE_REQUIREMENTS"),
        *shape(LINT, "PHASE_IMPLEMENTATION"),
        *shape({"deploy": [], "smoke": ["deploy"], "notify": ["deploy"]}, "PHASE_DEPLOYMENT"),
    ],
    "2,000 random tasks in one phase": random_dag(2000, seed=21),
    "2,000 random tasks in four phases": random_dag(2000, seed=7, groups=4),
}


def overlaps(lo: float, hi: float, a: float, b: float) -> bool:
    """Whether the closed ranges [lo, hi] and [a, b] meet."""
    return lo <= b and a <= hi


class Boxes:
    """The drawing's boxes, by column and then by height, to find those a segment meets."""

    def __init__(self, boxes: list[Box]) -> None:
        by_x: dict[float, list[Box]] = defaultdict(list)
        for b in boxes:
            by_x[b.x].append(b)
        self.xs = sorted(by_x)
        self.columns = [sorted(by_x[x], key=lambda b: b.y) for x in self.xs]
        self.tops = [[b.y for b in col] for col in self.columns]
        self.width = max((b.w for b in boxes), default=0)
        self.height = max((b.h for b in boxes), default=0)

    def meeting(self, x1: float, y1: float, x2: float, y2: float) -> list[Box]:
        """Boxes whose closed rectangle the segment from (x1, y1) to (x2, y2) meets."""
        lo_x, hi_x, lo_y, hi_y = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        found = []
        for c in range(bisect_left(self.xs, lo_x - self.width), bisect_right(self.xs, hi_x)):
            col, tops = self.columns[c], self.tops[c]
            for b in col[max(0, bisect_left(tops, lo_y - self.height)) : bisect_right(tops, hi_y)]:
                if overlaps(lo_x, hi_x, b.x, b.right) and overlaps(lo_y, hi_y, b.y, b.bottom):
                    found.append(b)
        return found


def inside(b: Box, x: float, y: float) -> bool:
    """Strictly inside the box (its border excluded)."""
    return b.x < x < b.right and b.y < y < b.bottom


def segments(route: Route) -> list[tuple[float, float, float, float]]:
    return [(*a, *b) for a, b in pairwise(route.points)]


def trespasses(drawing: Drawing) -> list[str]:
    """Every segment that meets a box other than its edge's two ends, or runs inside them."""
    index = Boxes(drawing.boxes)
    found = []
    for route in drawing.routes:
        ends = {route.source, route.target}
        for x1, y1, x2, y2 in segments(route):
            for b in index.meeting(x1, y1, x2, y2):
                middle = ((x1 + x2) / 2, (y1 + y2) / 2)
                if b.id not in ends or inside(b, *middle):
                    found.append(f"{route.source} → {route.target} crosses {b.id}")
    return found


@pytest.mark.parametrize("name", list(SHAPES))
def test_no_edge_runs_through_a_node_it_does_not_touch(name: str) -> None:
    drawing = layout(SHAPES[name])
    assert drawing.routes, "the shape has edges"
    assert trespasses(drawing) == []


@pytest.mark.parametrize("name", list(SHAPES))
def test_edges_leave_the_sources_right_side_and_enter_the_targets_left(name: str) -> None:
    drawing = layout(SHAPES[name])
    box = {b.id: b for b in drawing.boxes}
    for route in drawing.routes:
        source, target = box[route.source], box[route.target]
        assert route.points[0] == (source.right, source.middle)
        assert route.points[-1] == (target.x, target.middle)  # the arrowhead's tip
        for x1, y1, x2, y2 in segments(route):
            assert x1 == x2 or y1 == y2, f"{route} is not orthogonal"
            assert x2 >= x1, f"{route} runs backwards"


@pytest.mark.parametrize("name", list(SHAPES))
def test_no_two_boxes_overlap_and_every_node_and_edge_is_drawn(name: str) -> None:
    nodes = SHAPES[name]
    drawing = layout(nodes)
    assert [b.id for b in drawing.boxes] == [n.id for n in nodes]
    known = {n.id for n in nodes}
    assert {(r.source, r.target) for r in drawing.routes} == {
        (d, n.id) for n in nodes for d in n.depends_on if d in known
    }
    index = Boxes(drawing.boxes)
    for b in drawing.boxes:
        assert index.meeting(b.x, b.y, b.right, b.bottom) == [b]
    assert all(b.right < drawing.width and b.bottom < drawing.height for b in drawing.boxes)


def test_the_check_sees_an_edge_drawn_straight_through_a_node() -> None:
    """The old drawing's lint → package, one straight line, fails the check above."""
    drawing = layout(SHAPES["lint → package beside unit-tests"])
    box = {b.id: b for b in drawing.boxes}
    lint, package, tests = box["lint"], box["package"], box["unit-tests"]
    tests.y = lint.y  # the old layout: one row per column, in creation order
    drawing.routes = [
        Route("lint", "package", [(lint.right, lint.middle), (package.x, lint.middle)])
    ]
    assert trespasses(drawing) == ["lint → package crosses unit-tests"]


def test_the_lint_edge_passes_beside_unit_tests_in_a_lane_of_its_own() -> None:
    drawing = layout(SHAPES["lint → package beside unit-tests"])
    box = {b.id: b for b in drawing.boxes}
    lint = next(r for r in drawing.routes if (r.source, r.target) == ("lint", "package"))
    tests = box["unit-tests"]
    crossing = [(x1, y1) for x1, y1, x2, _ in segments(lint) if x1 <= tests.x and x2 >= tests.right]
    assert crossing, "the edge passes the column of unit-tests"
    assert all(not tests.y <= y <= tests.bottom for _, y in crossing)
    assert box["lint"].right < tests.x < tests.right < box["package"].x


def test_a_chain_is_one_straight_line() -> None:
    drawing = layout(shape({"a": [], "b": ["a"], "c": ["b"]}))
    assert [len(r.points) for r in drawing.routes] == [2, 2]
    assert len({b.y for b in drawing.boxes}) == 1


def test_groups_take_columns_of_their_own_in_the_order_given() -> None:
    nodes = SHAPES["phases side by side"]
    order = ["PHASE_REQUIREMENTS", "PHASE_IMPLEMENTATION", "PHASE_DEPLOYMENT"]
    drawing = layout(nodes, groups=order)
    assert [b.name for b in drawing.bands] == order
    assert [b.size for b in drawing.bands] == [2, 4, 3]
    for left, right in pairwise(drawing.bands):
        assert left.x + left.w < right.x
    for b in drawing.boxes:
        band = next(band for band in drawing.bands if band.name == b.group)
        assert band.x < b.x and b.right < band.x + band.w


def test_a_collapsed_group_is_one_box_and_keeps_the_edges_that_leave_it() -> None:
    nodes = [
        *shape({"spec": [], "review": ["spec"]}, "A"),
        Node("build", "B", ("review",)),
        Node("ship", "B", ("build", "spec")),
    ]
    drawing = layout(nodes, groups=["A", "B"], collapsed={"A"})
    assert [b.id for b in drawing.boxes] == [summary_id("A"), "build", "ship"]
    assert next(b for b in drawing.boxes if b.id == summary_id("A")).summary
    assert {(r.source, r.target) for r in drawing.routes} == {
        (summary_id("A"), "build"),
        (summary_id("A"), "ship"),
        ("build", "ship"),
    }
    assert [(b.name, b.size, b.collapsed) for b in drawing.bands] == [
        ("A", 2, True),
        ("B", 2, False),
    ]
    assert trespasses(drawing) == []


def test_a_dependency_on_a_later_group_or_a_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="later group"):
        layout([Node("a", "A", ("b",)), Node("b", "B")], groups=["A", "B"])
    with pytest.raises(ValueError, match="cycle"):
        layout(shape({"a": ["b"], "b": ["a"]}))


def test_an_empty_graph_is_an_empty_drawing() -> None:
    drawing = layout([])
    assert drawing.boxes == drawing.routes == drawing.bands == []
    assert drawing.width > 0 and drawing.height > 0
