"""What every scenario script shares: running ``mserve`` commands as a user would type them,
reading their JSON, the machine's facts, and the figures block of a scenario's README.

Each scenario imports it with its own folder's parent on the path (the scripts do that first).
Nothing here knows about any one scenario.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mserve

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "benchmarks"))  # last: a scenario's own modules come first

import hoststats  # noqa: E402 - the benchmarks' helpers, shared with the scenarios

#: update_block(readme, NAME, text): replaces what lies between ``<!-- NAME:begin -->`` and
#: ``<!-- NAME:end -->`` (appends the block when there is none); the rest is kept
update_block = hoststats.update_results


def say(message: str) -> None:
    """A progress line, flushed at once (the scripts run for minutes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def mserve_cli(args: Sequence[str], *, cpu: str | None = None, quiet: bool = False) -> str:
    """``mserve ARGS`` in a subprocess, printed first as the command a user would type; its
    stdout. Raises with the command's output when it fails."""
    argv = [sys.executable, "-m", "mserve", *map(str, args)]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    shown = shlex.join(["mserve", *map(str, args)])
    say(f"$ {shown}")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{shown} exited with status {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    if not quiet and done.stdout.strip():
        print(done.stdout.rstrip(), flush=True)
    return done.stdout


def read_json(path: Path) -> Any:
    """A JSON file a command wrote."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def bench_cpus() -> tuple[str | None, str | None]:
    """(server CPU, load generator CPU): one core each when there are two or more, so that the
    load generator never competes with the server; (None, None) on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return str(cores[0]), str(cores[1])


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare our figures with theirs (the benchmarks' own, cut
    down to one line's worth)."""
    facts = hoststats.machine_facts(ROOT, ())
    return {
        "date": facts["date"],
        "cpu": facts["cpu_model"] or "unknown CPU",
        "cpus": len(os.sched_getaffinity(0)),
        "python": facts["versions"]["python"],
        "mserve": mserve.__version__,
        "commit": facts["git_commit"] or None,
    }


def machine_line(facts: dict[str, Any]) -> str:
    """One sentence: when and where the figures were measured."""
    at = f" at {facts['commit']}" if facts.get("commit") else ""
    return (
        f"Measured {facts['date']} on {facts['cpu']} ({facts['cpus']} CPUs), Python "
        f"{facts['python']}, mserve {facts['mserve']}{at}."
    )


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers right-aligned."""
    numeric = [
        all(isinstance(r[i], int | float) for r in rows) if rows else False
        for i in range(len(head))
    ]
    lines = ["| " + " | ".join(head) + " |"]
    lines.append("|" + "".join(" ---: |" if n else " --- |" for n in numeric))
    for r in rows:
        lines.append("| " + " | ".join(_cell(v) for v in r) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")
