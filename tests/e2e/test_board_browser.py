"""The web board in headless Chromium (Debian's chromium and chromium-driver, installed by
scripts/browser.sh), against a real API server and prefork worker, used as a person would: a
ticket submitted over HTTP appears on the board, its card moves from column to column, and on
its page a task's node turns from running to succeeded — all without reloading a page; a card
waiting for approval says so, a failed one is not a full bar, the filters narrow the board as
one types; clicking a failed task's node opens its panel with the error. The browser signs in
through the form and its Content-Security-Policy blocks nothing the board needs.

With ``OMOI_SCREENSHOTS=docs`` the tests also save the README's screenshots there
(docs/board.png, docs/ticket-panel.png), at 1,400 pixels wide."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from tests.support.api import ADMIN_TOKEN, bearer
from tests.support.procs import Proc, start_api, wait_for


@pytest.fixture(scope="module")
def board_url(env: dict[str, str], tmp_root: Path) -> Iterator[str]:
    proc, server_env = start_api(env, tmp_root)
    yield f"http://127.0.0.1:{server_env['OMOI_API_PORT']}"
    proc.stop()


@pytest.fixture()
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations land here
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_window_size(1400, 900)  # the window the board is made to fit
    yield driver
    driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    """Save the window as ``$OMOI_SCREENSHOTS/<name>`` when asked (the README's pictures)."""
    folder = os.environ.get("OMOI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def post(url: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        f"{url}{path}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **bearer()},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def probe(driver: webdriver.Chrome, css: str, attribute: str) -> str | None:
    """An attribute of the element, or None while it is absent or being replaced."""
    try:
        return driver.find_element(By.CSS_SELECTOR, css).get_attribute(attribute)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def await_attribute(
    driver: webdriver.Chrome, css: str, attribute: str, value: str, what: str
) -> None:
    """Wait (a minute at most) until the element's attribute reads ``value``."""
    wait_for(lambda: probe(driver, css, attribute) == value, timeout=60, interval=0.1, what=what)


def column_of(driver: webdriver.Chrome, ticket_id: str) -> str | None:
    try:
        card = driver.find_element(By.CSS_SELECTOR, f'[data-ticket="{ticket_id}"]')
        return card.find_element(By.XPATH, "ancestor::section").get_attribute("data-phase")
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def sign_in(driver: webdriver.Chrome, url: str, page: str = "/board") -> None:
    """Open a board page, land on the sign-in form, paste the token, come back to the page."""
    driver.get(f"{url}{page}")
    assert urlsplit(driver.current_url).path == "/board/login"
    driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(
        lambda: urlsplit(driver.current_url).path == page, timeout=20, what=f"{page} after sign-in"
    )


def csp_violations(driver: webdriver.Chrome) -> list[str]:
    return [
        e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
    ]


def open_live(driver: webdriver.Chrome, url: str) -> None:
    """Load a page, mark it (a reload would lose the mark) and wait for its live stream."""
    driver.get(url)
    driver.execute_script("window.omoiLoaded = true")
    wait_for(
        lambda: probe(driver, "#connection", "class") == "online",
        timeout=20,
        what="the page's event stream",
    )


def in_column(driver: webdriver.Chrome, ticket_id: str, phase: str) -> None:
    wait_for(
        lambda: column_of(driver, ticket_id) == phase,
        timeout=60,
        interval=0.1,
        what=f"the card in {phase} (it is in {column_of(driver, ticket_id)})",
    )


def test_a_ticket_moves_across_the_board_and_its_tasks_change_colour(
    board_url: str, browser: webdriver.Chrome, worker: Proc
) -> None:
    sign_in(browser, board_url)
    open_live(browser, f"{board_url}/board")
    board_tab = browser.current_window_handle
    ticket = post(
        board_url,
        "/api/v1/tickets",
        {
            "title": "watch me move",
            "workflow": "gated",
            "tasks": [
                {
                    "key": "slow",
                    "task_type": "effect",
                    "phase": "PHASE_IMPLEMENTATION",
                    "payload": {"seconds": 2},
                }
            ],
        },
    )
    tid = ticket["id"]
    in_column(browser, tid, "PHASE_REQUIREMENTS")  # blocked there: its gate wants a spec
    spec = {"type": "spec", "content": {"text": "# Spec\n\n## Scope\n\nAll of it, carefully."}}
    post(board_url, f"/api/v1/tickets/{tid}/artifacts", spec)
    in_column(browser, tid, "PHASE_DESIGN")  # waiting for an approval

    browser.switch_to.new_window("tab")
    open_live(browser, f"{board_url}/board/tickets/{tid}")
    assert probe(browser, '[data-key="slow"]', "data-status") is None  # not created yet
    post(board_url, f"/api/v1/tickets/{tid}/approve", {"by": "the test"})
    slow = '[data-key="slow"]'
    await_attribute(browser, slow, "class", "node status-running", "the slow node to run")
    await_attribute(browser, slow, "class", "node status-succeeded", "the slow node to succeed")
    assert browser.execute_script("return window.omoiLoaded") is True  # no reload

    post(board_url, f"/api/v1/tickets/{tid}/approve", {"by": "the test"})  # testing's gate
    browser.switch_to.window(board_tab)
    in_column(browser, tid, "PHASE_DONE")
    assert browser.execute_script("return window.omoiLoaded") is True
    card = browser.find_element(By.CSS_SELECTOR, f'[data-ticket="{tid}"]')
    assert "status-done" in (card.get_attribute("class") or "")
    assert csp_violations(browser) == []


def test_the_agents_page_lists_the_worker_as_healthy(
    board_url: str, browser: webdriver.Chrome, worker: Proc
) -> None:
    sign_in(browser, board_url, "/board/agents")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-agent]")
    mine = [r for r in rows if f"({worker.pid})" in r.text]
    assert len(mine) == 1 and "healthy" in mine[0].find_element(By.CLASS_NAME, "healthy").text
    browser.find_element(By.CSS_SELECTOR, "nav form button").click()  # sign out
    wait_for(
        lambda: urlsplit(browser.current_url).path == "/board/login",
        timeout=20,
        what="the sign-in page after signing out",
    )
    browser.get(f"{board_url}/board/agents")
    assert urlsplit(browser.current_url).path == "/board/login"
    assert csp_violations(browser) == []


def release(word: str) -> dict[str, Any]:
    """A release pipeline whose integration tests fail for good: its publishing is cancelled
    and the ticket blocks, failed (lint → package passes beside unit-tests)."""
    noop = {"task_type": "noop"}
    return {
        "title": f"Release 2.4 {word}",
        "priority": "HIGH",
        "tasks": [
            {"key": "checkout", **noop},
            {"key": "lint", **noop, "depends_on": ["checkout"]},
            {"key": "compile", **noop, "depends_on": ["checkout"]},
            {"key": "unit-tests", **noop, "depends_on": ["compile"]},
            {
                "key": "integration",
                "task_type": "explode",
                "depends_on": ["compile"],
                "payload": {"message": "database fixture missing: orders"},
            },
            {"key": "package", **noop, "depends_on": ["lint", "unit-tests"]},
            {"key": "publish", **noop, "depends_on": ["package", "integration"]},
        ],
    }


def card_state(driver: webdriver.Chrome, ticket_id: str) -> str | None:
    return probe(driver, f'.card[data-ticket="{ticket_id}"]', "data-state")


def shown_cards(driver: webdriver.Chrome) -> set[str]:
    try:
        cards = driver.find_elements(By.CSS_SELECTOR, ".card[data-ticket]")
        return {c.get_attribute("data-ticket") or "" for c in cards}
    except StaleElementReferenceException:
        return set()


def test_a_person_tells_the_cards_apart_at_a_glance_and_filters_the_board(
    board_url: str, browser: webdriver.Chrome, worker: Proc
) -> None:
    word = uuid.uuid4().hex[:8]
    failed = post(board_url, "/api/v1/tickets", release(word))["id"]
    waiting = post(
        board_url, "/api/v1/tickets", {"title": f"Pricing page copy {word}", "workflow": "gated"}
    )["id"]
    blocked = post(
        board_url, "/api/v1/tickets", {"title": f"Billing export {word}", "workflow": "gated"}
    )["id"]
    planned = post(
        board_url,
        "/api/v1/tickets",
        {"title": f"Search rewrite {word}", "workflow": "software-dev", "priority": "LOW"},
    )["id"]
    done = post(
        board_url,
        "/api/v1/tickets",
        {"title": f"Rotate API keys {word}", "tasks": [{"key": "rotate", "task_type": "noop"}]},
    )["id"]
    sign_in(browser, board_url)
    open_live(browser, f"{board_url}/board")
    wait_for(lambda: card_state(browser, waiting) == "blocked", timeout=60, what="the spec gate")
    spec = {"type": "spec", "content": {"text": "# Spec\n\n## Scope\n\nThe pricing page."}}
    post(board_url, f"/api/v1/tickets/{waiting}/artifacts", spec)
    expected = {
        waiting: "awaiting_approval",
        failed: "failed",
        blocked: "blocked",
        planned: "active",
        done: "done",
    }
    for ticket_id, state in expected.items():
        wait_for(
            lambda t=ticket_id, s=state: card_state(browser, t) == s,
            timeout=60,
            interval=0.1,
            what=f"the card of {ticket_id} to read {state}",
        )
    approval = browser.find_element(By.CSS_SELECTOR, f'.card[data-ticket="{waiting}"]')
    assert "⚑ awaiting approval" in approval.text and "waiting for approval" in approval.text
    assert column_of(browser, waiting) == "PHASE_DESIGN"
    stopped = browser.find_element(By.CSS_SELECTOR, f'.card[data-ticket="{failed}"]')
    assert "✖ failed" in stopped.text and "tasks not succeeded: integration" in stopped.text
    value = float(stopped.find_element(By.TAG_NAME, "progress").get_attribute("value") or 1)
    assert 0 < value < 1  # not a full bar
    assert (
        "missing artifact: spec"
        in browser.find_element(By.CSS_SELECTOR, f'.card[data-ticket="{blocked}"]').text
    )
    unused = browser.find_element(By.CSS_SELECTOR, '.column[data-phase="PHASE_BACKLOG"]')
    assert "collapsed" in (unused.get_attribute("class") or "")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1400
    screenshot(browser, "board.png")

    search = browser.find_element(By.CSS_SELECTOR, "#filters input[name=q]")
    search.send_keys(word)
    wait_for(
        lambda: shown_cards(browser) == set(expected),
        timeout=20,
        what="only this test's cards",
    )
    Select(browser.find_element(By.CSS_SELECTOR, "#filters select[name=state]")).select_by_value(
        "awaiting_approval"
    )
    wait_for(lambda: shown_cards(browser) == {waiting}, timeout=20, what="the waiting card alone")
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query == {"q": [word], "state": ["awaiting_approval"]}  # a link to this view
    search.clear()
    search.send_keys(f"export {word}")
    Select(browser.find_element(By.CSS_SELECTOR, "#filters select[name=state]")).select_by_value("")
    wait_for(lambda: shown_cards(browser) == {blocked}, timeout=20, what="the billing card")
    assert browser.execute_script("return window.omoiLoaded") is True  # filtered, not reloaded
    assert csp_violations(browser) == []


def test_a_person_clicks_a_failed_task_and_reads_its_error(
    board_url: str, browser: webdriver.Chrome, worker: Proc
) -> None:
    ticket = post(board_url, "/api/v1/tickets", release(uuid.uuid4().hex[:8]))
    sign_in(browser, board_url)
    open_live(browser, f"{board_url}/board/tickets/{ticket['id']}")
    failing = '[data-key="integration"]'
    await_attribute(browser, failing, "data-status", "failed", "the integration node to fail")
    publish = '[data-key="publish"]'
    await_attribute(browser, publish, "data-status", "cancelled", "publishing to be cancelled")
    panel = browser.find_element(By.ID, "task-panel")
    assert not panel.is_displayed()
    browser.find_element(By.CSS_SELECTOR, f"{failing} rect").click()
    wait_for(
        lambda: (
            probe(browser, "#task-panel .error-box .message", "textContent")
            == "database fixture missing: orders"
        ),
        timeout=20,
        what="the error in the task's panel",
    )
    assert panel.is_displayed()
    assert "integration" in browser.find_element(By.ID, "panel-title").text
    assert "permanent · PermanentError" in panel.find_element(By.CLASS_NAME, "error-box").text
    attempts = panel.find_elements(By.CSS_SELECTOR, "table.attempts tr.outcome-failed")
    assert len(attempts) == 1
    browser.find_element(By.CSS_SELECTOR, "#task-panel details summary").click()
    assert "PermanentError" in panel.find_element(By.CLASS_NAME, "traceback").text
    log = browser.find_element(By.ID, "task-log")
    assert log.get_attribute("data-task-id") == probe(browser, failing, "data-task")
    assert urlsplit(browser.current_url).fragment == f"task={log.get_attribute('data-task-id')}"
    browser.find_element(By.CSS_SELECTOR, '[data-zoom="fit"]').click()  # the whole graph
    view = browser.find_element(By.ID, "dag-view")
    wait_for(
        lambda: (
            float(view.find_element(By.TAG_NAME, "svg").get_attribute("width") or 0)
            <= view.size["width"]
        ),
        timeout=10,
        what="the graph to fit beside the panel",
    )
    screenshot(browser, "ticket-panel.png")

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait_for(lambda: not panel.is_displayed(), timeout=10, what="the panel to close")
    browser.find_element(By.CSS_SELECTOR, '[data-key="package"] rect').click()
    wait_for(
        lambda: "package" in browser.find_element(By.ID, "panel-title").text,
        timeout=20,
        what="the package task's panel",
    )
    assert panel.find_elements(By.CLASS_NAME, "error-box") == []
    assert browser.execute_script("return window.omoiLoaded") is True
    assert csp_violations(browser) == []


def log_lines(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """The open panel's log as (text, class) pairs, or [] while it is being replaced."""
    try:
        return [
            (line.text, line.get_attribute("class") or "")
            for line in driver.find_elements(By.CSS_SELECTOR, "#task-log .line")
        ]
    except StaleElementReferenceException:
        return []


def test_a_person_watches_a_running_shell_tasks_log_lines_arrive(
    board_url: str, browser: webdriver.Chrome, worker: Proc, tmp_path: Path
) -> None:
    """The panel of a running ``shell`` task shows the lines the command has written so far,
    while it still runs, then the rest and the attempt's end as they happen."""
    go = tmp_path / "go"
    command = f"echo first; echo oops >&2; while [ ! -e {go} ]; do sleep 0.05; done; echo last"
    task = {"key": "build", "task_type": "shell", "payload": {"command": command}}
    ticket = post(board_url, "/api/v1/tickets", {"title": "logged", "tasks": [task]})
    sign_in(browser, board_url)
    open_live(browser, f"{board_url}/board/tickets/{ticket['id']}")
    node = '[data-key="build"]'
    await_attribute(browser, node, "data-status", "running", "the shell task to run")
    browser.find_element(By.CSS_SELECTOR, f"{node} rect").click()
    wait_for(
        lambda: [text for text, _ in log_lines(browser)] == ["first", "oops"],
        timeout=20,
        what="the command's first lines in the panel",
    )
    assert probe(browser, node, "data-status") == "running"  # shown while it runs
    assert "stderr" in log_lines(browser)[1][1]
    go.touch()
    wait_for(
        lambda: (
            [text for text, _ in log_lines(browser)]
            == ["first", "oops", "last", "attempt 1 ended: succeeded"]
        ),
        timeout=30,
        what="the last line and the attempt's end",
    )
    await_attribute(browser, node, "data-status", "succeeded", "the shell task to succeed")
    assert csp_violations(browser) == []
