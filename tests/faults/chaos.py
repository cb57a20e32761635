"""Repeat each fault scenario and print its pass rate and recovery times.

    python -m tests.faults.chaos --runs 5 [--only redis]

Each run is a fresh pytest session of one scenario (its own database, servers and workers),
on PostgreSQL 127.0.0.1:5432 and Redis 127.0.0.1:6379 like the suite. Recovery is what the
scenario reports: from the fault (or the restart that ends it) until all work is done."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.procs import ROOT

FAULTS = "tests/faults"
SCENARIOS = {
    "kill -9 of a worker (main process)": f"{FAULTS}/test_lost_workers.py::"
    "test_kill_9_mid_task_finishes_exactly_once_elsewhere",
    "kill -9 of a worker, every pool slot busy": f"{FAULTS}/test_lost_workers.py::"
    "test_with_every_pool_slot_busy_beat_still_recovers_and_publishes",
    "kill -9 of one pool child": f"{FAULTS}/test_worker_signals.py::"
    "test_a_killed_pool_child_is_recovered_and_the_worker_keeps_working",
    "SIGTERM of a worker under load": f"{FAULTS}/test_worker_signals.py::"
    "test_sigterm_under_load_finishes_or_requeues_every_task",
    "SIGTERM of a worker mid-task (handed back)": f"{FAULTS}/test_shutdown.py::"
    "test_a_stopped_worker_hands_its_attempt_back_without_spending_a_retry",
    "Redis restart (keeping data), two beats": f"{FAULTS}/test_outages.py::"
    "test_redis_restart_mid_run_loses_nothing[keeping-data]",
    "Redis restart losing all data, two beats": f"{FAULTS}/test_outages.py::"
    "test_redis_restart_mid_run_loses_nothing[losing-all-data]",
    "PostgreSQL restart (503 meanwhile)": f"{FAULTS}/test_outages.py::"
    "test_postgres_restart_mid_run_answers_503_and_recovers",
    "frozen worker resuming late": f"{FAULTS}/test_lost_workers.py::"
    "test_a_frozen_worker_loses_its_task_and_its_late_result_is_refused",
    "duplicate delivery": "tests/integration/test_execution.py::"
    "test_duplicate_delivery_runs_the_effect_once",
    "two beats judging the same tickets": "tests/integration/test_workflows.py::"
    "test_two_beats_judge_each_waiting_ticket_once",
    "flood of 2,000 submissions, 10% repeated keys": f"{FAULTS}/test_flood.py::"
    "test_a_flood_of_submissions_stores_each_ticket_once",
}


def run(node: str, logs: Path) -> tuple[bool, float | None]:
    """One fresh pytest session of the scenario; a failing one's output is kept in ``logs``."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", node],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        kept = logs / f"failed-{len(list(logs.iterdir()))}.log"
        kept.write_text(f"{node}\n\n{proc.stdout}\n{proc.stderr}")
        print(f"{node} failed: {kept}", file=sys.stderr, flush=True)
    recoveries = [
        float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("RECOVERY ")
    ]
    return proc.returncode == 0, (recoveries[0] if recoveries else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="omoi-chaos-"))
    rows = []
    for name, node in SCENARIOS.items():
        if args.only.lower() not in name.lower():
            continue
        outcomes = [run(node, logs) for _ in range(args.runs)]
        times = [r for ok, r in outcomes if ok and r is not None]
        rows.append(
            (
                name,
                args.runs,
                sum(ok for ok, _ in outcomes),
                f"{statistics.median(times):.1f}" if times else "-",
                f"{max(times):.1f}" if times else "-",
            )
        )
        print(f"{name}: {rows[-1][2]}/{args.runs} passed", file=sys.stderr, flush=True)
    header = ("scenario", "runs", "passed", "recovery p50 s", "recovery max s")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(" | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    sys.exit(0 if all(r[1] == r[2] for r in rows) else 1)


if __name__ == "__main__":
    main()
