"""Import directions of DESIGN §6, checked by import-linter (contracts in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

from tests.support.procs import ROOT


def test_import_contracts_hold() -> None:
    exe = Path(sys.executable).parent / "lint-imports"  # installed with the test extras
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
