"""The web board's pages, rendered by the API: cards in phase columns, a ticket's graph laid
out by dependency depth, the fleet; sign-in by token cookie. The browser drives them in
tests/e2e/test_board_browser.py."""

from __future__ import annotations

import re
from typing import Any

from omoi.api import create_app
from omoi.config import Settings
from omoi.models import Database
from omoi.services.dispatcher import NullDispatcher
from tests.support.api import ADMIN_TOKEN, submit
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
    assert stream and f"ticket_id={ticket['id']}" in stream.group(1)


def test_the_agents_page_shows_each_agents_health(client: Any, worker: Proc) -> None:
    page = client.get("/board/agents").get_data(as_text=True)
    row = re.search(
        rf'<tr data-agent="[^"]+" class="agent-\w+">(?:(?!</tr>).)*\({worker.pid}\)', page, re.S
    )
    assert row and 'class="healthy"' in row.group(0)


def test_a_token_in_the_url_becomes_a_cookie(settings: Settings, db: Database) -> None:
    browser = create_app(settings, db=db, dispatcher=NullDispatcher()).test_client()
    assert browser.get("/board").status_code == 401
    login = browser.get(f"/board/agents?token={ADMIN_TOKEN}")
    assert login.status_code == 302 and login.headers["Location"] == "/board/agents"
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get("/board").status_code == 200  # the cookie is the token now
    assert browser.get("/api/v1/tickets").status_code == 200
    assert browser.get("/board?token=omoi_wrong").status_code == 401
