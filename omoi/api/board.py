"""The web board: server-rendered pages that refresh their live region whenever the event
stream says something changed (omoi/api/static/board.js). ``?partial=1`` renders that region
alone. Sign in once with ``/board?token=…``: the token then travels as an HttpOnly cookie."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, render_template, request

from omoi.api.runtime import runtime
from omoi.domain.enums import Phase, TaskStatus
from omoi.domain.events import EventType
from omoi.services import agents, board, events, phases, queries

blp = Blueprint(
    "board",
    __name__,
    url_prefix="/board",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 150, 34, 60, 16, 12


def page(template: str, stream: dict[str, str], **context: Any) -> str:
    """The whole page, following the event stream from now on (filtered by ``stream``), or
    only its live region when the script asks for it."""
    if request.args.get("partial") == "1":
        return render_template(f"board/_{template}.html", statuses=list(TaskStatus), **context)
    query = urlencode({**stream, "after": events.latest_id(runtime().db)})
    return render_template(
        f"board/{template}.html",
        stream=f"/api/v1/events/stream?{query}",
        event_types=[e.value for e in EventType],
        statuses=list(TaskStatus),
        **context,
    )


@blp.get("")
def index() -> str:
    cards = board.cards(runtime().db)
    columns = {
        phase.value: [c for c in cards if c["column"] == phase]
        for phase in Phase
        if phase != Phase.BLOCKED
    }
    return page("index", {}, columns=columns)


def layout(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns by dependency depth, rows in creation order: positions for an SVG drawing."""
    rows: dict[int, int] = {}
    at: dict[str, tuple[int, int]] = {}
    for node in nodes:
        row = rows.get(node["layer"], 0)
        rows[node["layer"]] = row + 1
        node["x"] = PAD + node["layer"] * (NODE_W + COL_GAP)
        node["y"] = PAD + row * (NODE_H + ROW_GAP)
        at[node["id"]] = (node["x"], node["y"])
    edges = [
        {
            "x1": at[d][0] + NODE_W,
            "y1": at[d][1] + NODE_H / 2,
            "x2": n["x"],
            "y2": n["y"] + NODE_H / 2,
        }
        for n in nodes
        for d in n["depends_on"]
        if d in at
    ]
    width = PAD * 2 + (max(rows, default=0) + 1) * (NODE_W + COL_GAP)
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + ROW_GAP)
    return {
        "nodes": nodes,
        "edges": edges,
        "width": width,
        "height": height,
        "w": NODE_W,
        "h": NODE_H,
    }


@blp.get("/tickets/<uuid:ticket_id>")
def ticket(ticket_id: uuid.UUID) -> str:
    db = runtime().db
    row, counts = queries.get_ticket(db, ticket_id)
    return page(
        "ticket",
        {"ticket_id": str(ticket_id)},
        ticket=row,
        counts=counts,
        progress=queries.progress(counts),
        history=phases.history_of(db, ticket_id),
        gate=phases.gate_status(db, ticket_id),
        graph=layout(board.graph(db, ticket_id)),
    )


@blp.get("/agents")
def fleet() -> str:
    rt = runtime()
    rows = [
        (view, *agents.liveness(view.agent, rt.settings.heartbeat_timeout))
        for view in agents.list_agents(rt.db)
    ]
    return page("agents", {"type": "agent."}, agents=rows)
