"""Arrival schedules, made up front from a seed (as MLPerf LoadGen does), and load-level specs.

An open-loop step sends request ``i`` at ``step_start + offsets[i]``; the offsets are int64
nanoseconds from the step start, sorted, the first one 0. Building the whole schedule before the
step keeps the send loop free of random draws and makes a run reproducible from its seed.
"""

from __future__ import annotations

import datetime
import math

import numpy as np

ARRIVALS = ("constant", "poisson")
MAX_ARRIVALS = 100_000_000  # 800 MB of offsets: a larger step is a typo, not a test
MAX_LEVELS = 10_000

_NS = 1_000_000_000


def _check_load(rate: float, duration_s: float) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite number > 0 requests/s, got {rate}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a finite number > 0 seconds, got {duration_s}")
    if rate * duration_s > MAX_ARRIVALS:
        raise ValueError(
            f"rate {rate}/s for {duration_s} s is {rate * duration_s:.0f} arrivals; "
            f"expected at most {MAX_ARRIVALS} per step"
        )


def constant_offsets(rate: float, duration_s: float) -> np.ndarray:
    """Send times i/rate for every i with i/rate < duration_s, as int64 ns (rounded)."""
    _check_load(rate, duration_s)
    n = max(1, math.ceil(rate * duration_s - 1e-9))  # 1e-9: 0.1 * 30 is 3.0000000000000004
    return np.rint(np.arange(n, dtype=np.float64) * (_NS / rate)).astype(np.int64)


def poisson_offsets(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Poisson arrivals at ``rate``: 0, then cumulative Exp(rate) gaps while < duration_s.

    Gaps come from ``numpy.random.default_rng(seed)`` in order and are rounded to whole ns
    before summing, so a longer duration with the same seed extends a shorter one's schedule
    exactly (the shorter one is a prefix).
    """
    _check_load(rate, duration_s)
    rng = np.random.default_rng(seed)
    scale_ns, end_ns = _NS / rate, duration_s * _NS
    expected = rate * duration_s
    chunk = int(expected + 6 * math.sqrt(expected)) + 16  # one draw, almost always
    parts = [np.zeros(1, dtype=np.int64)]
    last = 0
    while last < end_ns:
        gaps = np.rint(rng.exponential(scale_ns, size=chunk)).astype(np.int64)
        parts.append(last + np.cumsum(gaps))
        last = int(parts[-1][-1])
    times = np.concatenate(parts)
    return times[times < end_ns]


def offsets(arrival: str, rate: float, duration_s: float, seed: int) -> np.ndarray:
    """The schedule for ``arrival`` ("constant" ignores the seed); ValueError for others."""
    if arrival == "constant":
        return constant_offsets(rate, duration_s)
    if arrival == "poisson":
        return poisson_offsets(rate, duration_s, seed)
    raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}; got {arrival!r}")


def _range(spec: str, start: float, stop: float, step: float) -> list[float]:
    if not start <= stop:
        raise ValueError(f"START {start:g} is above STOP {stop:g}")
    if not step > 0:
        raise ValueError(f"STEP {step:g} is not > 0")
    n = math.floor((stop - start) / step + 1e-9) + 1
    if n > MAX_LEVELS:
        raise ValueError(f"{n} levels, more than {MAX_LEVELS}")
    return [round(start + i * step, 9) for i in range(n)]


def parse_rates(spec: str) -> list[float]:
    """Request rates from "100,500,1000" or "START:STOP:STEP" (STOP included), all > 0."""
    expected = 'expected rates > 0 as "100,500,1000" or START:STOP:STEP such as "100:1000:100"'
    try:
        if ":" in spec:
            fields = [float(f) for f in spec.split(":")]
            if len(fields) != 3:
                raise ValueError(f"{len(fields)} fields, not 3")
            rates = _range(spec, *fields)
        else:
            rates = [float(f) for f in spec.split(",")]
    except ValueError as e:
        raise ValueError(f"rate spec {spec!r}: {e}; {expected}") from e
    bad = [r for r in rates if not (math.isfinite(r) and r > 0)]
    if bad:
        raise ValueError(f"rate spec {spec!r}: {bad[0]:g} is not a finite number > 0; {expected}")
    return rates


def parse_concurrency(spec: str) -> list[int]:
    """Concurrency levels from "1,2,4,8" or "START:STOP[:STEP]" (STOP included, STEP 1), >= 1."""
    expected = (
        'expected whole numbers >= 1 as "1,2,4,8" or START:STOP[:STEP] such as "1:16" or "4:64:4"'
    )
    try:
        if ":" in spec:
            fields = [int(f) for f in spec.split(":")]
            if len(fields) not in (2, 3):
                raise ValueError(f"{len(fields)} fields, not 2 or 3")
            start, stop, step = fields if len(fields) == 3 else (*fields, 1)
            levels = [int(v) for v in _range(spec, start, stop, step)]
        else:
            levels = [int(f) for f in spec.split(",")]
    except ValueError as e:
        raise ValueError(f"concurrency spec {spec!r}: {e}; {expected}") from e
    bad = [c for c in levels if c < 1]
    if bad:
        raise ValueError(f"concurrency spec {spec!r}: {bad[0]} is not >= 1; {expected}")
    return levels


#: --start-at further ahead than this is taken for a mistake
START_AT_HORIZON_S = 24 * 3600


def parse_start_at(text: str, now: float) -> float:
    """The Unix time of ``--start-at`` (seconds, or ISO 8601 read as UTC without a zone);
    ValueError for what is neither, or more than a day ahead."""
    try:
        when = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"--start-at {text!r}: expected Unix seconds (1767225600) or ISO 8601 "
                "(2026-01-01T00:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        when = moment.timestamp()
    if when - now > START_AT_HORIZON_S:
        raise ValueError(f"--start-at {text!r} is more than a day ahead; is it a typo?")
    return when
