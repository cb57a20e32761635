"""The web board's pages, rendered by the API on real PostgreSQL (and, where tasks must run, a
real prefork worker): cards in phase columns with a state you can tell at a glance and progress
through the workflow's phases, the filters, the collapsed columns, a ticket's phase-grouped
graph, the task panel's data, gate requirements as sentences and the fleet without agents long
gone (signing in: tests/integration/test_board_sessions.py). The browser drives them in
tests/e2e/test_board_browser.py."""

from __future__ import annotations

import dataclasses
import html
import re
import uuid
from typing import Any

import pytest
from flask import Flask

from omoi.config import Settings
from omoi.persistence import Database
from tests.support.api import make_app, submit, tasks_by_key, wait_finished
from tests.support.procs import Proc, start_worker, wait_for


def tag() -> str:
    """A word only this test's tickets carry in their titles, to filter the shared board by."""
    return f"t{uuid.uuid4().hex[:10]}"


def board(client: Any, **query: str) -> str:
    resp = client.get("/board", query_string={**query, "partial": "1"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def column(page: str, phase: str) -> tuple[str, str]:
    """The class and the content of a phase's column."""
    found = re.search(
        rf'<section class="([^"]+)" data-phase="{phase}"[^>]*>(.*?)</section>', page, re.S
    )
    assert found, f"no {phase} column"
    return found.group(1), found.group(2)


def card(page: str, ticket_id: str) -> str:
    found = re.search(rf'<a class="card[^"]*" data-ticket="{ticket_id}".*?</a>', page, re.S)
    assert found, f"no card for {ticket_id}"
    return found.group(0)


def bar(fragment: str) -> float:
    found = re.search(r'<progress class="bar[^"]*" max="1" value="([\d.]+)"', fragment)
    assert found
    return float(found.group(1))


def columns(page: str) -> list[str]:
    """The board's columns, left to right."""
    return re.findall(r'<section class="[^"]*" data-phase="([^"]+)"', page)


def state(fragment: str) -> str:
    found = re.search(r'data-state="(\w+)"', fragment)
    assert found
    return found.group(1)


def text(fragment: str) -> str:
    """What a person reads: the fragment without its tags."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment))).strip()


def test_cards_sit_in_their_phase_column_and_unused_columns_are_collapsed(
    api_client: Any,
) -> None:
    word = tag()
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}], title=f"on the board {word}")
    page = board(api_client, q=word)
    run_class, run = column(page, "PHASE_RUN")
    assert f'data-ticket="{ticket["id"]}"' in run and "collapsed" not in run_class
    assert "collapsed" in column(page, "PHASE_DONE")[0]
    assert columns(page) == ["PHASE_RUN", "PHASE_DONE"]  # the phases of the workflow in use
    assert 'data-phase="PHASE_BLOCKED"' not in page  # blocked cards stay in their phase
    assert state(card(page, ticket["id"])) == "active"
    assert page.startswith('<div class="columns">') and "<html" not in page


def test_the_columns_are_the_phases_of_the_workflows_in_use(api_client: Any) -> None:
    """A workflow's own phases are columns, in its order; two workflows' phases merge, each
    once, in the order their workflows agree on; an empty filter shows the filtered one's."""
    word = tag()
    review = submit(api_client, [], title=f"audit {word}", workflow="review")
    page = board(api_client, q=word)
    assert columns(page) == ["SECURITY_AUDIT", "PHASE_REVIEW", "PHASE_DONE"]
    audit_class, audit = column(page, "SECURITY_AUDIT")
    assert f'data-ticket="{review["id"]}"' in audit and "collapsed" not in audit_class
    assert "security audit" in text(audit)  # the column's heading
    gated = submit(api_client, [], title=f"gated {word}", workflow="gated")
    assert columns(board(api_client, q=word)) == [
        "PHASE_REQUIREMENTS",
        "PHASE_DESIGN",
        "PHASE_IMPLEMENTATION",
        "PHASE_TESTING",
        "SECURITY_AUDIT",
        "PHASE_REVIEW",
        "PHASE_DONE",
    ]
    assert (
        f'data-ticket="{gated["id"]}"' in column(board(api_client, q=word), "PHASE_REQUIREMENTS")[1]
    )
    nothing = board(api_client, q=f"none {word}", workflow="review")
    assert columns(nothing) == ["SECURITY_AUDIT", "PHASE_REVIEW", "PHASE_DONE"]
    for tid in (review["id"], gated["id"]):  # leave no task an external agent could claim
        assert api_client.post(f"/api/v1/tickets/{tid}/cancel", json={}).status_code == 200


def test_done_is_collapsed_to_its_newest_cards_with_a_count(api_client: Any) -> None:
    word = tag()
    done = [submit(api_client, [], title=f"nothing to do {word} {n}")["id"] for n in range(8)]
    page = board(api_client, q=word)
    _, finished = column(page, "PHASE_DONE")
    shown = re.findall(r'data-ticket="([^"]+)"', finished)
    assert shown == done[::-1][:6]  # the newest six, newest first
    assert "<small>8</small>" in column(page, "PHASE_DONE")[1]
    assert "all 8 done tickets" in text(finished)
    everything = board(api_client, q=word, finished="all")
    assert len(re.findall(r"data-ticket=", column(everything, "PHASE_DONE")[1])) == 8
    assert bar(card(page, done[-1])) == 1.0


def test_the_board_filters_by_text_state_and_workflow(api_client: Any) -> None:
    word = tag()
    run = submit(api_client, [{"key": "a", "task_type": "noop"}], title=f"Alpha {word}")
    gated = submit(api_client, [], title=f"beta {word}", workflow="gated")
    percent = submit(api_client, [], title=f"100% sure {word}")

    def shown(**query: str) -> set[str]:
        return set(
            re.findall(r'class="card[^"]*" data-ticket="([^"]+)"', board(api_client, **query))
        )

    assert shown(q=word) == {run["id"], gated["id"], percent["id"]}
    assert shown(q=f"alpha {word}".upper()) == {run["id"]}  # any case
    assert shown(q=word, workflow="gated") == {gated["id"]}
    assert shown(q=word, state="active") == {run["id"], gated["id"]}
    assert shown(q=word, state="done") == {percent["id"]}
    assert shown(q="100%") == {percent["id"]}  # % and _ are plain characters
    assert shown(q=f"{word}_") == set()
    assert shown(q=word, state="", workflow="") == shown(q=word)  # an empty form field
    page = api_client.get("/board", query_string={"q": word, "state": "done"}).get_data(
        as_text=True
    )
    assert 'value="done" selected' in page and f'value="{word}"' in page  # the form keeps them
    assert "partial=1" in re.search(r'data-partial="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def test_progress_counts_the_latest_visit_of_a_phase_only(api_client: Any) -> None:
    """A phase entered again starts from nothing: what its earlier visit finished is not
    progress (its tasks are kept, and still counted on the card)."""
    word, skill = tag(), f"skill-{uuid.uuid4().hex[:8]}"
    task = {"task_type": "scan", "external": True, "capabilities": [skill]}
    ticket = submit(
        api_client,
        [{"key": "a", **task}, {"key": "b", **task, "depends_on": ["a"]}],
        title=f"again {word}",
    )
    tid = ticket["id"]
    agent = api_client.post(
        "/api/v1/agents/register", json={"name": f"ext-{word}", "capabilities": [skill]}
    ).get_json()
    # without a Celery worker up (this module alone), the agent may also be offered this
    # module's earlier quiet tickets' default-route tasks: it takes a batch and keeps ours
    batch = api_client.post(f"/api/v1/agents/{agent['id']}/claims?max=100").get_json()["items"]
    claimed = next(c for c in batch if c["ticket_id"] == tid)
    done = {"lease_token": claimed["lease_token"], "result": {"ok": True}}
    completed = api_client.post(f"/api/v1/tasks/{claimed['task_id']}/complete", json=done)
    assert completed.status_code == 200
    assert bar(card(board(api_client, q=word), tid)) == 0.3333  # a of (a, b, the gate)
    moved = api_client.post(
        f"/api/v1/tickets/{tid}/transition", json={"to_phase": "PHASE_RUN", "force": True}
    )
    assert moved.status_code == 200, moved.get_json()
    fragment = card(board(api_client, q=word), tid)
    assert bar(fragment) == 0.0 and "phase 1 of 1 · 0 %" in text(fragment)
    assert "1 succeeded" in text(fragment) and "1 cancelled" in text(fragment)


@pytest.mark.parametrize(
    "path",
    [
        "/board?state=bogus",
        "/board?workflow=" + "w" * 65,
        "/board?q=" + "x" * 201,
        "/board?finished=some",
        "/board?colour=red",
        "/board/agents?all=maybe",
        "/board/tickets/{ticket}?collapse=PHASE_NOPE",
        "/board/tickets/{ticket}?collapse=" + ",".join(["PHASE_RUN"] * 10),
        "/board/tickets/{ticket}?partial=perhaps",
    ],
)
def test_a_bad_board_query_is_a_json_422(api_client: Any, path: str) -> None:
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}])
    resp = api_client.get(path.format(ticket=ticket["id"]))
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "unprocessable_entity"
    assert "query" in resp.get_json()["error"]["details"]


def test_a_missing_ticket_or_task_is_a_json_404(api_client: Any) -> None:
    for path in (f"/board/tickets/{uuid.uuid4()}", f"/board/tasks/{uuid.uuid4()}"):
        resp = api_client.get(path)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_the_ticket_page_groups_the_graph_by_phase_with_arrowed_edges(api_client: Any) -> None:
    ticket = submit(
        api_client,
        [
            {"key": "lint", "task_type": "noop"},
            {"key": "compile", "task_type": "noop"},
            {"key": "unit-tests", "task_type": "noop", "depends_on": ["compile"]},
            {"key": "package", "task_type": "noop", "depends_on": ["lint", "unit-tests"]},
        ],
    )
    page = api_client.get(f"/board/tickets/{ticket['id']}").get_data(as_text=True)
    x = {k: float(v) for k, v in re.findall(r'data-key="([\w-]+)"[^>]*translate\(([\d.]+),', page)}
    assert x["lint"] == x["compile"] < x["unit-tests"] < x["package"]
    edges = re.findall(r'<path class="edge" d="M[^"]+" marker-end="url\(#arrow\)"', page)
    assert len(edges) == 3  # one per dependency, each ending in the arrowhead
    assert '<marker id="arrow"' in page
    assert re.search(r'<g class="band" data-phase="PHASE_RUN">', page)
    assert "run · 4 tasks" in text(page)
    assert 'data-status="queued"' in page and 'data-status="pending"' in page
    assert "Phase history" in page and "Gate" in page
    stream = re.search(r'data-stream="([^"]+)"', page)
    assert stream and stream.group(1).startswith("/board/stream?")
    assert f"ticket_id={ticket['id']}" in stream.group(1)
    assert '<div id="task-log" data-task-id=""></div>' in page  # the panel's log, filled later


def test_a_phase_collapses_into_one_box_and_expands_again(api_client: Any) -> None:
    tasks = [{"key": f"k{n}", "task_type": "noop"} for n in range(5)]
    ticket = submit(api_client, tasks)
    path = f"/board/tickets/{ticket['id']}"
    collapsed = api_client.get(path, query_string={"collapse": "PHASE_RUN"}).get_data(as_text=True)
    assert 'class="node ' not in collapsed
    summary = re.search(r'<a href="([^"]+)" class="summary">(.*?)</a>', collapsed, re.S)
    assert summary and "collapse=none" in summary.group(1)
    assert "◷5" in text(summary.group(2))  # five queued
    assert 'class="band collapsed"' in collapsed
    expanded = api_client.get(html.unescape(summary.group(1))).get_data(as_text=True)
    assert expanded.count('class="node ') == 5
    toggle = re.search(r'<a href="([^"]+)" class="band-toggle">', expanded)
    assert toggle and "collapse=PHASE_RUN" in toggle.group(1)


def test_a_big_ticket_shows_only_its_current_phase_in_full(api_client: Any) -> None:
    many = [{"key": f"t{n}", "task_type": "noop"} for n in range(301)]
    ticket = submit(api_client, many)
    page = api_client.get(f"/board/tickets/{ticket['id']}").get_data(as_text=True)
    assert page.count('class="node ') == 301  # the one phase it is in stays open
    assert "Tasks <small>301</small>" in page


def test_gate_requirements_read_as_sentences(api_client: Any) -> None:
    ticket = submit(api_client, [], title="needs a spec", workflow="gated")
    page = api_client.get(f"/board/tickets/{ticket['id']}").get_data(as_text=True)
    requires = re.search(r'<ul class="requires">(.*?)</ul>', page, re.S)
    assert requires
    assert [text(li) for li in re.findall(r"<li>(.*?)</li>", requires.group(1))] == [
        "every task of the phase succeeded",
        "a spec artifact at least 20 characters long, with the section “scope”",
    ]
    assert "{" not in text(page.split("<h2>Gate</h2>")[1].split("<h2>")[0])
    assert "To leave requirements, the gate requires:" in text(page)


def test_the_agents_page_shows_each_agents_health(client: Any, worker: Proc) -> None:
    page = client.get("/board/agents").get_data(as_text=True)
    row = re.search(
        rf'<tr data-agent="[^"]+" class="agent-\w+">(?:(?!</tr>).)*\({worker.pid}\)', page, re.S
    )
    assert row and 'class="healthy"' in row.group(0)


def test_the_agents_page_hides_agents_offline_longer_than_the_setting(
    settings: Settings, db: Database, env: dict[str, str], tmp_root: Any
) -> None:
    proc, name = start_worker(env, tmp_root, concurrency=1)
    proc.stop()  # a clean shutdown: its agent goes offline
    patient = make_app(settings, db=db).test_client()
    hasty: Flask = make_app(dataclasses.replace(settings, board_hide_offline_after=1), db=db)
    quick = hasty.test_client()

    def listed(client: Any, query: str = "") -> bool:
        return name in client.get(f"/board/agents{query}").get_data(as_text=True)

    wait_for(lambda: not listed(quick), timeout=30, what=f"{name} to be hidden")
    page = quick.get("/board/agents").get_data(as_text=True)
    note = re.search(r"(\d+) agents? offline for more than 1 s hidden", text(page))
    assert note and int(note.group(1)) >= 1
    assert 'href="/board/agents?all=1"' in page
    assert listed(quick, "?all=1")
    assert listed(patient)  # offline for less than the default hour


@pytest.mark.usefixtures("worker")
def test_awaiting_approval_is_its_own_state_and_progress_counts_phases(client: Any) -> None:
    word = tag()
    ticket = submit(client, [], title=f"gated {word}", workflow="gated")
    tid = ticket["id"]

    def standing() -> tuple[str, float, str]:
        fragment = card(board(client, q=word), tid)
        return state(fragment), bar(fragment), text(fragment)

    wait_for(lambda: standing()[0] == "blocked", timeout=60, what="the gate to want a spec")
    _, value, words = standing()
    assert "missing artifact: spec" in words and "phase 1 of 4 · 12 %" in words
    assert value == 0.125  # the first of four phases, its one task of two steps done
    spec = {"type": "spec", "content": {"text": "# Spec\n\n## Scope\n\nAll of it, carefully."}}
    assert client.post(f"/api/v1/tickets/{tid}/artifacts", json=spec).status_code == 201
    wait_for(
        lambda: standing()[0] == "awaiting_approval", timeout=60, what="the design gate to wait"
    )
    _, value, words = standing()
    assert "waiting for approval" in words and "phase 2 of 4 · 37 %" in words
    assert value == 0.375  # one phase behind it, half of design's (task, gate) done
    page = client.get(f"/board/tickets/{tid}").get_data(as_text=True)
    assert state(page) == "awaiting_approval"
    steps = re.findall(r'<li class="step ([\w -]+)">(\w+)</li>', page)
    assert steps == [
        ("done", "requirements"),
        ("current state-awaiting_approval", "design"),
        ("todo", "implementation"),
        ("todo", "testing"),
    ]


@pytest.mark.usefixtures("worker")
def test_a_failed_ticket_is_drawn_failed_with_a_partial_bar(client: Any) -> None:
    word = tag()
    ticket = submit(
        client,
        [
            {"key": "fine", "task_type": "noop"},
            {"key": "boom", "task_type": "explode", "payload": {"message": "no disk left"}},
        ],
        title=f"doomed {word}",
    )
    assert wait_finished(client, ticket["id"])["status"] == "blocked"
    fragment = card(board(client, q=word), ticket["id"])
    assert state(fragment) == "failed" and "✖" in text(fragment)
    assert bar(fragment) == 0.3333  # one of its two tasks (and the gate) done, in one phase
    assert "tasks not succeeded: boom" in text(fragment)
    assert "phase 1 of 1 · 33 %" in text(fragment)
    assert card(board(client, q=word, state="failed"), ticket["id"])
    assert "data-ticket" not in board(client, q=word, state="blocked")


@pytest.mark.usefixtures("worker")
def test_the_task_panel_has_attempts_agents_error_traceback_result_and_payload(
    client: Any, worker: Proc
) -> None:
    ticket = submit(
        client,
        [
            {"key": "boom", "task_type": "explode", "payload": {"message": "no disk left"}},
            {"key": "flaky", "task_type": "flaky", "retry_backoff": 0.2},
            {"key": "after", "task_type": "noop", "depends_on": ["boom"]},
        ],
    )
    wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    agents = client.get("/api/v1/agents").get_json()["items"]
    mine = next(a for a in agents if a["pid"] == worker.pid)

    boom = client.get(f"/board/tasks/{tasks['boom']['id']}").get_json()
    assert (boom["key"], boom["status"], boom["task_type"]) == ("boom", "failed", "explode")
    assert boom["error"]["category"] == "permanent"
    assert boom["error"]["type"] == "PermanentError"
    assert boom["error"]["message"] == "no disk left"
    assert "Traceback" in boom["error"]["traceback"]
    assert "PermanentError: no disk left" in boom["error"]["traceback"]
    [attempt] = boom["attempts"]
    assert attempt["outcome"] == "failed" and attempt["agent_name"] == mine["name"]
    assert attempt["agent_id"] == mine["id"] and attempt["started_at"] and attempt["ended_at"]
    assert '"message": "no disk left"' in boom["payload"]
    assert boom["blocks"] == [{"id": tasks["after"]["id"], "key": "after", "status": "cancelled"}]

    flaky = client.get(f"/board/tasks/{tasks['flaky']['id']}").get_json()
    assert [a["outcome"] for a in flaky["attempts"]] == ["retry_scheduled", "succeeded"]
    assert all(a["agent_name"] == mine["name"] for a in flaky["attempts"])
    assert flaky["attempts"][0]["error"]["message"] == "flaky failure on attempt 1"
    assert flaky["error"] is None and '"attempt": 2' in flaky["result"]

    after = client.get(f"/board/tasks/{tasks['after']['id']}").get_json()
    assert after["error"]["category"] == "upstream_failed" and after["error"]["traceback"] is None
    assert after["depends_on"] == [{"id": tasks["boom"]["id"], "key": "boom", "status": "failed"}]
    assert after["attempts"] == []
