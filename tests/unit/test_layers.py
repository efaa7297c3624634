"""The import contract (.importlinter) holds: no layer imports a higher one, the core does no I/O.

Runs import-linter (a dependency of the test extra) on the installed tree, so a change that breaks the
layering fails the suite as well as scripts/lint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contract_holds() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache", "--config", str(REPO / ".importlinter")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
