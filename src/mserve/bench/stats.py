"""Measurement windows, stability (perf_analyzer's rule), errors by kind, step summaries.

A step is measured in consecutive windows; it is stable when the last few windows agree on
throughput and p99 within a bound. Everything here merges: windows of one period from several
workers (``merge_windows``), consecutive windows into a step (``StepSummary.from_windows``),
steps of concurrent workers (``StepSummary.merge``). Error kinds are short strings such as
"http_503", "timeout", "connection".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mserve.bench.histogram import Histogram

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def merge_errors(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """A new dict with the counts of both, by kind, keys sorted."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(a.keys() | b.keys())}


@dataclass(slots=True)
class Window:
    """One measurement window: latencies and outcomes of requests that completed in it."""

    start_ns: int
    end_ns: int
    histogram: Histogram
    ok: int
    errors: dict[str, int]

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise ValueError(
                f"window ends at {self.end_ns} ns, not after its start {self.start_ns}"
            )

    @property
    def duration_s(self) -> float:
        """Length of the window in seconds."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def throughput(self) -> float:
        """Successful responses per second over the window."""
        return self.ok / self.duration_s

    @property
    def p99_us(self) -> int:
        """99th percentile latency in microseconds (0 when no latency was recorded)."""
        return self.histogram.value_at_percentile(99)

    @property
    def error_count(self) -> int:
        """Failed requests of every kind."""
        return sum(self.errors.values())


def merge_windows(windows: Sequence[Window]) -> Window:
    """One window from windows of the same period measured by concurrent workers.

    Counts and histograms add; the period spans the earliest start to the latest end.
    """
    if not windows:
        raise ValueError("merge_windows needs at least one window")
    histogram = windows[0].histogram.copy()
    errors = dict(windows[0].errors)
    for w in windows[1:]:
        histogram.merge(w.histogram)
        errors = merge_errors(errors, w.errors)
    return Window(
        start_ns=min(w.start_ns for w in windows),
        end_ns=max(w.end_ns for w in windows),
        histogram=histogram,
        ok=sum(w.ok for w in windows),
        errors=errors,
    )


def _spread(values: Sequence[float]) -> float:
    lo, hi = min(values), max(values)
    if hi == 0:
        return 0.0
    return float("inf") if lo == 0 else (hi / lo - 1) * 100


def is_stable(windows: Sequence[Window], stability_pct: float, count: int = 3) -> bool:
    """perf_analyzer's rule: the last ``count`` windows agree within ``stability_pct`` percent.

    True when each of throughput and p99 has max/min <= 1 + stability_pct/100 over those
    windows. False with fewer than ``count`` windows, or when any has zero throughput or p99.
    """
    if stability_pct < 0:
        raise ValueError(f"stability_pct must be >= 0, got {stability_pct}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if len(windows) < count:
        return False
    last = windows[-count:]
    throughputs = [w.throughput for w in last]
    p99s = [w.p99_us for w in last]
    if min(throughputs) <= 0 or min(p99s) <= 0:
        return False
    bound = 1 + stability_pct / 100
    return max(throughputs) / min(throughputs) <= bound and max(p99s) / min(p99s) <= bound


def stability_spread(windows: Sequence[Window], count: int = 3) -> dict[str, float]:
    """Observed max/min - 1, in percent, of throughput and p99 over the last ``count`` windows.

    Uses every window when there are fewer. Keys "throughput_pct" and "p99_pct"; a spread is
    ``inf`` when a value is zero and another is not. ValueError without windows.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not windows:
        raise ValueError("stability_spread needs at least one window")
    last = windows[-count:]
    return {
        "throughput_pct": _spread([w.throughput for w in last]),
        "p99_pct": _spread([float(w.p99_us) for w in last]),
    }


def percentile_key(p: float) -> str:
    """The report key of a percentile: 50 -> "p50", 99.9 -> "p999", 99.99 -> "p9999"."""
    return "p" + f"{p:.10g}".replace(".", "")


def ms(us: float) -> float:
    """Microseconds as milliseconds rounded to 3 decimals (the result's unit)."""
    return round(us / 1000, 3)


def summarize(
    histogram: Histogram,
    ok: int,
    errors: Mapping[str, int],
    duration_s: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The JSON-ready summary of one step (latencies in ms rounded to 3 decimals).

    Keys: "count" (successful responses), "throughput_rps" (their rate), "latency_ms" (each
    percentile as ``percentile_key``, plus "max", "mean", "min"), "latency_ci_ms" (each
    percentile's [lo, hi] at ``confidence``, see ``Histogram.percentile_ci``), "errors" (by
    kind), "error_count", "saturated" (latencies above the histogram's range).
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    keys = {p: percentile_key(p) for p in percentiles}
    if len(set(keys.values())) != len(keys):
        raise ValueError(f"percentiles {list(percentiles)} give duplicate keys")
    values = histogram.percentiles(list(percentiles))
    latency = {keys[p]: ms(values[p]) for p in percentiles}
    latency.update(max=ms(histogram.max), mean=ms(histogram.mean), min=ms(histogram.min))
    ci: dict[str, list[float]] = {}
    for p in percentiles:
        lo, hi = histogram.percentile_ci(p, confidence)
        ci[keys[p]] = [ms(lo), ms(hi)]
    return {
        "count": ok,
        "throughput_rps": round(ok / duration_s, 3),
        "latency_ms": latency,
        "latency_ci_ms": ci,
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "saturated": histogram.saturated,
    }


@dataclass(slots=True)
class StepSummary:
    """What one load level measured: latencies, successes, errors by kind, and the time."""

    histogram: Histogram
    ok: int
    errors: dict[str, int]
    duration_s: float

    @classmethod
    def from_windows(cls, windows: Sequence[Window]) -> StepSummary:
        """Consecutive windows of one worker as one step: counts add, durations add."""
        if not windows:
            raise ValueError("from_windows needs at least one window")
        merged = merge_windows(windows)
        return cls(merged.histogram, merged.ok, merged.errors, sum(w.duration_s for w in windows))

    def merge(self, other: StepSummary) -> None:
        """Add a concurrent worker's step: counts add, the duration is the longer one."""
        self.histogram.merge(other.histogram)
        self.ok += other.ok
        self.errors = merge_errors(self.errors, other.errors)
        self.duration_s = max(self.duration_s, other.duration_s)

    def to_dict(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
        """``summarize`` of this step."""
        return summarize(self.histogram, self.ok, self.errors, self.duration_s, percentiles)
