"""The web board's pages, rendered by the API: cards in phase columns, a ticket's graph laid
out by dependency depth, the fleet (signing in: tests/integration/test_board_sessions.py).
The browser drives them in tests/e2e/test_board_browser.py."""

from __future__ import annotations

import re
from typing import Any

from tests.support.api import submit
from tests.support.procs import Proc


def test_cards_sit_in_their_phase_column(api_client: Any) -> None:
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}], title="on the board")
    page = api_client.get("/board").get_data(as_text=True)
    column = re.search(
        r'<section class="column" data-phase="PHASE_RUN">(.*?)</section>', page, re.S
    )
    assert column and f'data-ticket="{ticket["id"]}"' in column.group(1)
    assert "on the board" in column.group(1)
    assert 'data-phase="PHASE_BLOCKED"' not in page  # blocked cards stay in their phase
    partial = api_client.get("/board?partial=1").get_data(as_text=True)
    assert partial.startswith('<div class="columns">') and "<html" not in partial


def test_the_ticket_page_draws_the_graph_by_dependency_depth(api_client: Any) -> None:
    ticket = submit(
        api_client,
        [
            {"key": "root", "task_type": "noop"},
            {"key": "left", "task_type": "noop", "depends_on": ["root"]},
            {"key": "right", "task_type": "noop", "depends_on": ["root"]},
            {"key": "join", "task_type": "noop", "depends_on": ["left", "right"]},
        ],
    )
    page = api_client.get(f"/board/tickets/{ticket['id']}").get_data(as_text=True)
    nodes = dict(re.findall(r'data-key="(\w+)"[^>]*transform="translate\((\d+),\d+\)"', page))
    assert nodes["root"] < nodes["left"] == nodes["right"] < nodes["join"]
    assert page.count("<line ") == 4  # one per dependency
    assert 'data-status="queued"' in page and 'data-status="pending"' in page
    assert "Phase history" in page and "Gate" in page
    stream = re.search(r'data-stream="([^"]+)"', page)
    assert stream and stream.group(1).startswith("/board/stream?")
    assert f"ticket_id={ticket['id']}" in stream.group(1)


def test_the_agents_page_shows_each_agents_health(client: Any, worker: Proc) -> None:
    page = client.get("/board/agents").get_data(as_text=True)
    row = re.search(
        rf'<tr data-agent="[^"]+" class="agent-\w+">(?:(?!</tr>).)*\({worker.pid}\)', page, re.S
    )
    assert row and 'class="healthy"' in row.group(0)
