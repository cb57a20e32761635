"""The external agent of examples/external_agent.py on ``omoi.client``: registers,
heartbeats, claims tasks it can do, writes to their logs, reports results.

    OMOI_TOKEN=<agent token> python -m examples.python_agent --capabilities translate

It finds the API and the token as the CLI does (``OMOI_API_URL``, ``OMOI_TOKEN`` or the token
``omoi up`` saved); the token needs the ``agent`` scope. ``--once`` drains the queue and
exits. Its skill (``work``) is the standard-library agent's.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator

from examples.external_agent import work
from omoi.client import ApiError, Claim, Client
from omoi.config import Settings


def claims(api: Client, agent_id: str, once: bool) -> Iterator[Claim]:
    """Each task the agent claims; when none is queued, wait a second (``once``: stop)."""
    while True:
        task = api.claim(agent_id)
        if task is not None:
            yield task
        elif once:
            return
        else:
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capabilities", default="translate")
    parser.add_argument("--name", default="python-agent")
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--once", action="store_true", help="exit when nothing is left")
    args = parser.parse_args()

    api = Client.from_settings(Settings.from_env())
    agent_id = api.register(args.name, args.capabilities.split(","))["id"]
    print(f"registered agent {agent_id}", flush=True)

    def beat() -> None:  # keeps running tasks from being recovered as lost
        while True:
            time.sleep(args.heartbeat)
            api.heartbeat(agent_id)

    threading.Thread(target=beat, daemon=True).start()
    for task in claims(api, agent_id, args.once):
        lease = task["lease_token"]
        api.post_logs(task["task_id"], lease, [f"{args.name} took {task['key']}"])
        try:
            result = work(task)
        except Exception as exc:  # report it; omoi retries transient errors
            category = "permanent" if isinstance(exc, ValueError) else "transient"
            api.fail(task["task_id"], lease, str(exc), type=type(exc).__name__, category=category)
            print(f"failed {task['key']}: {exc}", flush=True)
            continue
        try:
            api.complete(task["task_id"], lease, result)
            print(f"completed {task['key']}", flush=True)
        except ApiError as exc:
            if exc.status != 409:
                raise
            print(f"{task['key']}: lease lost (cancelled or reassigned); result dropped")


if __name__ == "__main__":
    main()
