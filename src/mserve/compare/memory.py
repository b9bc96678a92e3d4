"""Resident memory of a process tree, read from /proc, and a sampler that keeps its peak.

A server may fork workers, so its memory is the resident set summed over the process and all
its descendants. Pages shared between them (the interpreter, ONNX Runtime's code, a model
mapped by each) count once per process, as ``ps`` counts them: a multi-process server is
charged for each copy it maps. ``proc`` is injectable: tests pass a fake /proc.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PROC = Path("/proc")
MIB = 1024 * 1024


def _parent(stat: str) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ...": comm may hold spaces and ')'
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(root: int, proc: Path = PROC) -> list[int]:
    """``root`` and every process below it (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = _parent((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not a process
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_rss(root: int, proc: Path = PROC, page_size: int | None = None) -> int:
    """Resident bytes of ``root`` and its descendants (0 when the process is gone)."""
    page = page_size or os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in descendants(root, proc):
        try:
            total += int((proc / str(pid) / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


class RssSampler:
    """Samples ``tree_rss(root)`` every ``interval_s`` on a thread until stopped; ``peak`` is
    the largest sample."""

    def __init__(self, root: int, interval_s: float = 0.25, proc: Path = PROC) -> None:
        self.root = root
        self.interval_s = interval_s
        self.proc = proc
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        """One sample now (it counts towards the peak)."""
        rss = tree_rss(self.root, self.proc)
        self.peak = max(self.peak, rss)
        return rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling (one last sample first); returns the peak in bytes."""
        if self._thread.is_alive():
            self.sample()
            self._stop.set()
            self._thread.join()
        return self.peak
