"""``omoi up`` is one user's stack on loopback: its worker runs the README's shell ticket for
the admin token it saved, on the embedded default (whose transport carries the exec queues)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tests.support.procs import ROOT, Proc, free_port, run_omoi, wait_for


def test_omoi_up_runs_the_readmes_shell_ticket_for_its_admin_token(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
    env.update(OMOI_API_PORT=str(port), OMOI_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    up = Proc([sys.executable, "-m", "omoi", "up"], env, tmp_path / "up.log")
    try:
        wait_for(lambda: "token (admin" in up.output(), timeout=120, what="omoi up")
        done = run_omoi(env, "submit", "examples/ticket.yaml", "--wait")
        assert done.returncode == 0, done.stderr
        assert re.search(r"100\.0%\s+done\s+PHASE_DONE", done.stdout), done.stdout
    finally:
        up.stop()
