"""What the benchmark scripts read off the machine: CPU counters per core and per process, a wait
for the machine to go quiet, and the marked blocks of RESULTS.md. Imported by the scripts beside
it (``python benchmarks/NAME.py`` puts this folder on the path)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_ticks() -> dict[str, list[int]]:
    """Per-core tick counters from /proc/stat."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *values = line.split()
            ticks[name] = [int(v) for v in values]
    return ticks


def core_busy(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, float]:
    """Percent busy per core (and steal) between two samples."""
    out = {}
    for name, a in after.items():
        d = [x - y for x, y in zip(a, before[name], strict=False)]
        total = sum(d[:8]) or 1
        idle = d[3] + d[4]
        out[name] = round(100.0 * (total - idle) / total, 1)
        out[name + "_steal"] = round(100.0 * d[7] / total, 1)
    return out


def busy_seconds(before: dict[str, list[int]], after: dict[str, list[int]]) -> float:
    """CPU seconds all cores spent busy between two /proc/stat samples."""
    total = 0
    for name, a in after.items():
        d = [x - y for x, y in zip(a, before[name], strict=False)]
        total += sum(d[:8]) - d[3] - d[4]
    return total / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit_s``) until the machine is idle: other work would skew a run."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        t0 = cpu_ticks()
        time.sleep(0.5)
        if busy_seconds(t0, cpu_ticks()) / 0.5 < threshold:
            break
    return round(time.monotonic() - start, 1)


def package_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each package (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def git_state(root: Path) -> tuple[str, bool]:
    """The short commit of HEAD, and whether src/ has uncommitted changes."""
    git = ["git", "-C", str(root)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True
    )
    return commit.stdout.strip(), bool(dirty.stdout.strip())


def machine_facts(root: Path, packages: tuple[str, ...]) -> dict[str, Any]:
    """CPU, cores, kernel, versions of ``packages``, commit, date and load: what a later reader
    needs to compare a run with theirs."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*(.+)$", cpuinfo, re.M)
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions |= package_versions(packages)
    commit, dirty = git_state(root)
    return {
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_mhz": mhz.group(1).strip() if mhz else None,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "git_commit": commit,
        "src_modified": dirty,
        "versions": versions,
    }


def update_results(path: Path, name: str, block: str) -> None:
    """Replace the block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a results
    file (append it when absent); everything outside the markers is left as it is."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    new = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + new + "\n"
    path.write_text(text)


def write_result(
    result: dict[str, Any],
    out: Path,
    results: Path | None,
    section: str,
    block: str,
) -> int:
    """Save a run: the JSON result to ``out``, its Markdown ``block`` printed and put in the
    results file's ``section``; the exit code (0 when every run of it was sound)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n" + block + "\n")
    if results:
        update_results(results, section, block)
        print(f"updated {results}")
    print(f"wrote {out} in {result['wall_seconds']} s")
    return 0 if result["summary"]["all_runs_ok"] else 1
