"""Resident memory of a process tree, read from a fake /proc."""

from __future__ import annotations

import os
from pathlib import Path

from mserve.compare.memory import RssSampler, descendants, tree_rss

PAGE = 4096


def _proc(root: Path, pid: int, ppid: int, pages: int, comm: str = "python") -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
    (folder / "statm").write_text(f"{pages * 3} {pages} 10 1 0 {pages} 0\n")


def _fake(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    _proc(proc, 1, 0, 5)
    _proc(proc, 100, 1, 10)  # the server
    _proc(proc, 101, 100, 20, comm="worker (a) b")  # a worker, its name with ') '
    _proc(proc, 102, 101, 30)  # the worker's child
    _proc(proc, 200, 1, 1000)  # not ours
    (proc / "self").mkdir()
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")
    broken = proc / "300"
    broken.mkdir()  # a process gone between the listing and the read
    return proc


def test_descendants_follow_parents(tmp_path: Path) -> None:
    assert sorted(descendants(100, _fake(tmp_path))) == [100, 101, 102]


def test_tree_rss_sums_the_tree(tmp_path: Path) -> None:
    assert tree_rss(100, _fake(tmp_path), page_size=PAGE) == 60 * PAGE
    assert tree_rss(102, _fake(tmp_path / "again"), page_size=PAGE) == 30 * PAGE


def test_a_gone_process_has_none(tmp_path: Path) -> None:
    assert tree_rss(999, _fake(tmp_path), page_size=PAGE) == 0


def test_sampler_keeps_the_peak(tmp_path: Path) -> None:
    proc = _fake(tmp_path)
    sampler = RssSampler(100, interval_s=0.01, proc=proc)
    first = sampler.sample()
    (proc / "102" / "statm").write_text("0 0 0 0 0 0 0\n")  # the child frees its memory
    assert sampler.sample() < first
    assert sampler.peak == first


def test_this_process_has_resident_memory() -> None:
    sampler = RssSampler(os.getpid(), interval_s=0.01).start()
    assert sampler.stop() > 1024 * 1024
