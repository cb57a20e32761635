"""A minimal external agent: registers, heartbeats, claims tasks it can do, writes to their
logs, reports results.

    OMOI_TOKEN=<agent token> python examples/external_agent.py --api http://127.0.0.1:5000 \
        --capabilities translate

The token needs the ``agent`` scope (``omoi token create --scope agent translator``); once the
agent registers with it, the token acts only as that agent.

Any language can do the same with four HTTP calls; this one uses only the standard library.
Run it with ``--once`` to drain the queue and exit.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any


def call(api: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{api}/api/v1{path}",
        method="POST",
        data=json.dumps(body or {}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ['OMOI_TOKEN']}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read()) if resp.status != 204 else None


def work(task: dict[str, Any]) -> Any:
    """The agent's skill: here, upper-casing ``payload.text``."""
    text = task["payload"].get("text")
    if not isinstance(text, str):
        raise ValueError("payload.text must be a string")
    return {"text": text.upper(), "inputs": sorted(task["dependency_results"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", default="http://127.0.0.1:5000")
    parser.add_argument("--capabilities", default="translate")
    parser.add_argument("--name", default="example-agent")
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--once", action="store_true", help="exit when nothing is left")
    args = parser.parse_args()

    agent = call(
        args.api,
        "/agents/register",
        {"name": args.name, "capabilities": args.capabilities.split(",")},
    )
    agent_id = agent["id"]
    print(f"registered agent {agent_id}", flush=True)

    def beat() -> None:  # keeps running tasks from being recovered as lost
        while True:
            time.sleep(args.heartbeat)
            call(args.api, f"/agents/{agent_id}/heartbeat")

    threading.Thread(target=beat, daemon=True).start()
    while True:
        task = call(args.api, f"/agents/{agent_id}/claim")
        if task is None:
            if args.once:
                return
            time.sleep(1)
            continue
        lease = task["lease_token"]
        lines = [f"{args.name} took {task['key']} (attempt {task['attempt']})"]
        call(args.api, f"/tasks/{task['task_id']}/logs", {"lease_token": lease, "lines": lines})
        try:
            result = work(task)
        except Exception as exc:  # report it; omoi retries transient errors
            category = "permanent" if isinstance(exc, ValueError) else "transient"
            call(
                args.api,
                f"/tasks/{task['task_id']}/fail",
                {
                    "lease_token": lease,
                    "error": {
                        "message": str(exc),
                        "type": type(exc).__name__,
                        "category": category,
                    },
                },
            )
            print(f"failed {task['key']}: {exc}", flush=True)
            continue
        try:
            call(
                args.api,
                f"/tasks/{task['task_id']}/complete",
                {"lease_token": lease, "result": result},
            )
            print(f"completed {task['key']}", flush=True)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
            print(f"{task['key']}: lease lost (cancelled or reassigned); result dropped")


if __name__ == "__main__":
    main()
