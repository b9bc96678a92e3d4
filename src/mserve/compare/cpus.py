"""Which cores the server and the load generator run on: taskset's lists, and the default split.

Every system under comparison runs on the same server cores and is loaded from the same bench
cores, so that no system gets more of the machine than another and the load generator never
competes with the server for a core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSplit:
    """The cores of the server and of the load generator, as taskset lists (``0``, ``2-3``)."""

    server: str
    bench: str

    @property
    def server_count(self) -> int:
        return len(parse_cpus(self.server))


def parse_cpus(text: str) -> tuple[int, ...]:
    """The cores of a taskset list such as ``0``, ``0,2`` or ``1-3``, sorted; ValueError for
    anything else."""
    cores: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{text!r}: not a CPU list; expected e.g. 0, 0,2 or 1-3")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"{text!r}: the range {part} runs backwards")
        cores.update(range(first, last + 1))
    return tuple(sorted(cores))


def cpu_list(cores: Iterable[int]) -> str:
    """The taskset list of ``cores``: ``0,1,2,5`` becomes ``0-2,5``."""
    ordered = sorted(set(cores))
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def split(usable: Iterable[int], server: str | None, bench: str | None) -> CpuSplit:
    """The split of the ``usable`` cores: ``server`` and ``bench`` as given, else the first half
    (at least one core) to the server and the rest to the load generator. ValueError when a list
    names a core that is not usable, or the two share one (but on a machine of one core)."""
    cores = sorted(set(usable))
    if not cores:
        raise ValueError("no usable CPU")
    server_cores = parse_cpus(server) if server else tuple(cores[: max(1, len(cores) // 2)])
    rest = [c for c in cores if c not in server_cores]
    bench_cores = parse_cpus(bench) if bench else tuple(rest or cores)
    for flag, chosen in (("--server-cpus", server_cores), ("--bench-cpus", bench_cores)):
        outside = [c for c in chosen if c not in cores]
        if outside:
            raise ValueError(
                f"{flag}: CPU {cpu_list(outside)} is not usable here (usable: {cpu_list(cores)})"
            )
    shared = set(server_cores) & set(bench_cores)
    if shared and len(cores) > 1:
        raise ValueError(
            f"--server-cpus and --bench-cpus share CPU {cpu_list(shared)}: the load generator "
            "would compete with the server"
        )
    return CpuSplit(cpu_list(server_cores), cpu_list(bench_cores))
