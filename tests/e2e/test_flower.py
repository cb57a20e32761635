"""Flower tells the truth about omoi's jobs. A real Flower, run as the Procfile runs it (its
task list's columns from flowerconfig.py), watches a broker and database of the test's own, a
prefork worker sending events and beat sweeping. A ticket's tasks succeed but its last, which
fails for good: Flower's API shows that job as FAILURE, named for its task's type, with its
key and ticket's title, rooted at the ticket's first job and parented by the job upstream;
its dashboard counts the failure; no payload and no sweep appears anywhere in it. The worker
acknowledged the failed job and logged no traceback, and omoi recorded one failure (Celery's
failure handler did not take it for a lost child). Headless Chromium then shows Flower's task
list; ``OMOI_SCREENSHOT_DIR`` keeps its screenshot (docs/flower-tasks.png is one)."""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from omoi.config import Settings
from omoi.domain.jobs import job_id
from tests.support.api import make_app, tasks_by_key, wait_finished
from tests.support.procs import Proc, free_port, start_beat, start_worker, wait_for
from tests.support.services import RedisServer

AUTH = f"flower:{uuid.uuid4().hex}"
SECRET = "in-the-payload-only-" + uuid.uuid4().hex
TITLE = "Add input validation to the orders API"
SWEEPS = ("agents", "deadlines", "sync_points", "locks", "retries", "gates", "outbox")


@pytest.fixture()
def stack(env: dict[str, str], fresh_database_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A database and a broker of the test's own: Flower sees this test's jobs alone."""
    broker = RedisServer(tmp_path / "redis", persist=False)
    broker.start()
    yield {**env, "OMOI_DATABASE_URL": fresh_database_url, "OMOI_BROKER_URL": broker.url()}
    broker.kill()


def flower_get(url: str, path: str) -> Any:
    auth = base64.b64encode(AUTH.encode()).decode()
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture()
def flower(stack: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        [
            *(sys.executable, "-m", "celery", "-A", "omoi.worker.app", "flower"),
            *("--address=127.0.0.1", f"--port={port}", f"--basic-auth={AUTH}"),
        ],
        {k: v for k, v in stack.items() if k != "OMOI_BOOTSTRAP_TOKEN"},  # as the Procfile
        tmp_path / "flower.log",
    )
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def dashboard(url: str) -> dict[str, dict[str, Any]]:
    """Flower's workers page: each live worker's event counters, by its name."""
    try:
        rows = flower_get(url, "/workers?json=1")["data"]
    except (urllib.error.URLError, ConnectionError):  # Flower is still starting
        return {}
    return {w["hostname"]: w for w in rows if w["status"]}


def test_flower_shows_a_failed_attempt_as_a_failed_job_named_for_its_task(
    stack: dict[str, str], flower: str, tmp_path: Path
) -> None:
    worker, name = start_worker(stack, tmp_path, events=True)
    beat = start_beat(stack, tmp_path)
    try:
        wait_for(lambda: name in dashboard(flower), timeout=60, what="Flower to see the worker")
        client = make_app(Settings.from_env(stack)).test_client()
        effect = {"task_type": "effect", "payload": {"note": SECRET}}
        ticket = client.post(
            "/api/v1/tickets",
            json={
                "title": TITLE,
                "tasks": [
                    {"key": "design", **effect},
                    {"key": "implement", "depends_on": ["design"], **effect},
                    {"key": "write-tests", "depends_on": ["design"], **effect},
                    {
                        "key": "deploy",
                        "task_type": "explode",
                        "depends_on": ["implement"],
                        "payload": {"message": SECRET},
                    },
                ],
            },
        ).get_json()
        wait_finished(client, ticket["id"])
        ids = {key: task["id"] for key, task in tasks_by_key(client, ticket["id"]).items()}
        jobs = {key: job_id(task_id, 1) for key, task_id in ids.items()}

        def shown() -> dict[str, Any] | None:
            listed = flower_get(flower, "/api/tasks")
            states = {listed.get(j, {}).get("state") for j in jobs.values()}
            return listed if states == {"SUCCESS", "FAILURE"} else None

        listed = wait_for(shown, timeout=30, what="Flower to show the ticket's four jobs")
        failed = listed[jobs["deploy"]]
        assert failed["state"] == "FAILURE"
        assert failed["name"] == "explode"
        assert failed["args"] == f"(task={ids['deploy']}, attempt=1)"
        assert failed["kwargs"] == repr({"key": "deploy", "ticket": TITLE})
        assert failed["exception"] == "AttemptFailed(permanent: PermanentError)"
        assert (failed["root_id"], failed["parent_id"]) == (jobs["design"], jobs["implement"])
        for key in ("design", "implement", "write-tests"):
            job = listed[jobs[key]]
            assert (job["state"], job["name"], job["result"]) == (
                "SUCCESS",
                "effect",
                "'succeeded'",
            )
        first = listed[jobs["design"]]
        assert (first["root_id"], first["parent_id"]) == (jobs["design"], None)
        assert listed[jobs["write-tests"]]["parent_id"] == jobs["design"]
        assert SECRET not in json.dumps(listed)  # nor in any other job Flower holds
        names = {job["name"] for job in listed.values()}
        assert names == {"effect", "explode"}, names  # user tasks only: no sweep, no run_task
        assert not any(sweep in n for n in names for sweep in SWEEPS)
        counted = wait_for(
            lambda: dashboard(flower)[name].get("task-failed") == 1 and dashboard(flower)[name],
            timeout=10,
            what="the dashboard to count the failure",
        )
        assert counted["task-succeeded"] == 3

        deploy = client.get(f"/api/v1/tasks/{ids['deploy']}").get_json()
        assert deploy["status"] == "failed"
        assert [(a["outcome"], a["error"]["category"]) for a in deploy["attempts"]] == [
            ("failed", "permanent")
        ]
        assert "task.superseded" not in {e["type"] for e in deploy["timeline"]}
        broker = redis.Redis.from_url(stack["OMOI_BROKER_URL"])
        wait_for(lambda: broker.hlen("unacked") == 0, timeout=10, what="every job acknowledged")
        assert broker.llen("cap.default") == 0  # nothing requeued or redelivered
        log = worker.output()
        assert f"explode[{jobs['deploy']}] raised expected: AttemptFailed(permanent" in log
        assert "Traceback" not in log

        screenshot_of_the_task_list(flower, tmp_path)
    finally:
        beat.stop()
        worker.stop()


def screenshot_of_the_task_list(url: str, tmp_path: Path) -> None:
    """Flower's task list in headless Chromium shows the failed job's row; kept as a PNG."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.set_window_size(2160, 720)
        auth = base64.b64encode(AUTH.encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {auth}"}}
        )
        driver.get(f"{url}/tasks")

        def failed_row() -> str | None:
            rows = driver.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
            text = [r.text for r in rows if "FAILURE" in r.text]
            return text[0] if len(rows) == 4 and text else None

        row = wait_for(failed_row, timeout=30, what="the task list's rows")
        assert "explode" in row and "deploy" in row and TITLE in row
        assert SECRET not in driver.page_source
        folder = Path(os.environ.get("OMOI_SCREENSHOT_DIR") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(folder / "flower-tasks.png"))
    finally:
        driver.quit()
