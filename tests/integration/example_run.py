"""Runs a scenario of examples/ as CI does (``run.py --quick``) and reads what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_quick(name: str, out: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """``examples/NAME/run.py --quick --out OUT``; the summary.json it wrote. Fails the test
    with the end of the script's output when it exits non-zero."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, (
        f"examples/{name}/run.py exited {done.returncode}:\n"
        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return summary
