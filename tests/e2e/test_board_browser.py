"""The web board in headless Chromium (Debian's chromium and chromium-driver, installed by
scripts/browser.sh), against a real API server and prefork worker: a ticket submitted over
HTTP appears on the board, its card moves from column to column, and on its page a task's
node turns from running to succeeded — all without reloading a page. The browser signs in
through the form and its Content-Security-Policy blocks nothing the board needs."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

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
    yield driver
    driver.quit()


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
    wait_for(
        lambda: probe(browser, slow, "class") == "node status-running",
        timeout=60,
        interval=0.1,
        what="the slow task's node to turn running",
    )
    wait_for(
        lambda: probe(browser, slow, "class") == "node status-succeeded",
        timeout=60,
        interval=0.1,
        what="the slow task's node to turn succeeded",
    )
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
