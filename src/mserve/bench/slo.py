"""SLO search: the highest load (rate, or concurrency) whose steps meet a latency objective.

Exponential growth from the starting load until a step fails the SLO (or is INVALID), then
bisection between the last load that passed and the first that failed, until they are within
``precision`` of each other (rates) or adjacent (concurrency). Every probe is a full step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from mserve.bench.generator import Load
from mserve.errors import ConfigError

_SLO = re.compile(r"^p(\d+(?:\.\d+)?)\s*[=<]=?\s*(\d+(?:\.\d+)?)\s*(us|ms|s)$")
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True, slots=True)
class Slo:
    """A latency objective: the given percentile at or below ``threshold_ms``."""

    percentile: float
    threshold_ms: float

    def key(self) -> str:
        p = f"{self.percentile:g}".replace(".", "")
        return "p" + ("999" if p == "999" else p)

    def __str__(self) -> str:
        return f"p{self.percentile:g}<={self.threshold_ms:g}ms"

    def met_by(self, step: dict[str, Any]) -> tuple[bool, str]:
        """Whether a step meets it: VALID, no errors, and the percentile within the bound."""
        if step["verdict"] != "VALID":
            return False, "step INVALID: " + "; ".join(step["reasons"])
        if step["error_count"]:
            return False, f"{step['error_count']} errors"
        value = percentile_ms(step, self.percentile)
        if value > self.threshold_ms:
            return False, f"p{self.percentile:g} {value:.3f} ms > {self.threshold_ms:g} ms"
        return True, f"p{self.percentile:g} {value:.3f} ms"


def percentile_ms(step: dict[str, Any], percentile: float) -> float:
    """A step's percentile in ms, from its histogram (any percentile, not only the fixed ones)."""
    from mserve.bench.histogram import Histogram

    return Histogram.from_dict(step["histogram"]).value_at_percentile(percentile) / 1000.0


def parse_slo(text: str) -> Slo:
    """Parse ``p99=20ms`` (also ``p99.9<=1.5ms``, ``p50=800us``)."""
    m = _SLO.match(text.strip().replace(" ", ""))
    if not m:
        raise ConfigError("--slo", text, "PERCENTILE=VALUE with a unit, e.g. p99=20ms or p50=800us")
    p = float(m.group(1))
    if p == 999:
        p = 99.9
    if not 0 < p <= 100:
        raise ConfigError("--slo", text, "a percentile between 0 and 100")
    return Slo(p, float(m.group(2)) * _UNITS[m.group(3)])


RunStep = Callable[[Load], Awaitable[dict[str, Any]]]


async def search(
    run_step: RunStep,
    start: Load,
    slo: Slo,
    precision: float = 0.05,
    max_probes: int = 12,
    max_concurrency: int = 1024,
) -> dict[str, Any]:
    """Find the highest load meeting ``slo``; returns the outcome with every probe."""
    probes: list[dict[str, Any]] = []

    async def probe(load: Load) -> bool:
        step = await run_step(load)
        ok, why = slo.met_by(step)
        step["slo"] = {"objective": str(slo), "met": ok, "why": why}
        probes.append(step)
        return ok

    def level(load: Load) -> float:
        return float(load.concurrency if load.mode == "closed" else load.rate)

    def at(value: float) -> Load:
        if start.mode == "closed":
            return replace(start, concurrency=int(value))
        return replace(start, rate=round(value, 3))

    good: float | None = None
    bad: float | None = None
    value = level(start)
    while len(probes) < max_probes:
        if await probe(at(value)):
            good = value
            if start.mode == "closed" and value >= max_concurrency:
                break
            value = min(value * 2, max_concurrency) if start.mode == "closed" else value * 2
        else:
            bad = value
            break
    if good is None and bad is not None and start.mode == "open":
        # even the starting rate fails: search downwards
        while len(probes) < max_probes and good is None:
            bad = value
            value = value / 2
            if value < 1:
                break
            if await probe(at(value)):
                good = value
    while good is not None and bad is not None and len(probes) < max_probes:
        if start.mode == "closed":
            if bad - good <= 1:
                break
            mid = float(math.floor((good + bad) / 2))
        else:
            if (bad - good) / bad <= precision:
                break
            mid = (good + bad) / 2
        if await probe(at(mid)):
            good = mid
        else:
            bad = mid
    best = None
    if good is not None:
        best = next(s for s in reversed(probes) if s["slo"]["met"] and _level(s) == good)
    return {
        "objective": str(slo),
        "percentile": slo.percentile,
        "threshold_ms": slo.threshold_ms,
        "mode": start.mode,
        "best_load": None if good is None else (int(good) if start.mode == "closed" else good),
        "first_failing_load": None
        if bad is None
        else (int(bad) if start.mode == "closed" else bad),
        "best_throughput_rps": None if best is None else best["throughput_rps"],
        "probes": len(probes),
        "_steps": probes,
    }


def _level(step: dict[str, Any]) -> float:
    load = step["load"]
    return float(load["concurrency"] if load["mode"] == "closed" else load["rate"])
