"""The embedded default (SQLite + kombu's SQLAlchemy transport, no servers) runs a ticket end
to end: ``omoi demo`` starts API, prefork worker and beat and walks a software-dev ticket through
every phase."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.procs import ROOT, free_port


def test_demo_runs_a_dag_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
    env.update(OMOI_API_PORT=str(free_port()), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "omoi", "demo", "--timeout", "90"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ticket done in PHASE_DONE" in proc.stdout
    for key in ("requirements", "design", "implement", "unit-tests", "integration-tests", "deploy"):
        assert f"  {key}" in proc.stdout
    for phase in ("PHASE_REQUIREMENTS", "PHASE_IMPLEMENTATION", "PHASE_DEPLOYMENT"):
        assert phase in proc.stdout  # the progress lines walked through the phases
    # a bar per phase: the current one marked while it ran, each full at the end
    assert re.search(r"^> design +\[[#.]{20}\] 0/1", proc.stdout, re.M)
    for name, total in (("requirements", 1), ("implementation", 2), ("deployment", 1)):
        assert re.search(rf"^  {name} +\[#{{20}}\] {total}/{total}  succeeded", proc.stdout, re.M)
    assert (tmp_path / ".omoi" / "omoi.sqlite").exists()
