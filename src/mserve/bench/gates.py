"""Pass / fail gates on a benchmark result, for CI pipelines.

- ``--assert "p99<20ms,errors==0"``: absolute bounds every measured step must meet;
- ``--fail-on "p99>+10%,throughput<-5%"`` with a baseline run: relative changes that fail the
  run, each step compared with the baseline's step under the same load.

Figures: latency percentiles ``p50 p90 p95 p99 p99.9 max mean min`` (milliseconds; ``us``, ``ms``
and ``s`` suffixes accepted), ``throughput`` (requests/s), ``errors`` (count) and ``error_rate``
(share of requests; a ``%`` suffix accepted). Pure functions of the result documents.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mserve.bench.result import load_label
from mserve.errors import ConfigError

LATENCY = {"p50", "p90", "p95", "p99", "p999", "max", "mean", "min"}
FIGURES = (*sorted(LATENCY), "throughput", "errors", "error_rate")
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_TERM = re.compile(r"^\s*([a-z_0-9.]+)\s*(<=|>=|==|!=|<|>)\s*([+-]?[0-9.eE+-]+)\s*([a-z%]*)\s*$")


@dataclass(frozen=True, slots=True)
class Bound:
    """One condition: ``figure op value`` (absolute), or a change in percent (relative)."""

    figure: str
    op: str
    value: float  # ms for latencies; percent for relative bounds and error_rate in %
    text: str

    def holds(self, measured: float) -> bool:
        return OPS[self.op](measured, self.value)


def _figure(name: str, option: str, text: str) -> str:
    figure = "p999" if name == "p99.9" else name
    if figure not in FIGURES:
        raise ConfigError(option, text, f"a figure among {', '.join(FIGURES)}")
    return figure


def parse_asserts(text: str) -> list[Bound]:
    """``p99<20ms,errors==0,throughput>=500``: absolute bounds."""
    bounds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _TERM.match(part)
        if not m:
            raise ConfigError("--assert", part, "FIGURE OP VALUE[UNIT], e.g. p99<20ms")
        name, op, raw, unit = m.groups()
        figure = _figure(name, "--assert", part)
        value = float(raw)
        if figure in LATENCY:
            if unit not in ("", *_UNITS):
                raise ConfigError("--assert", part, "a latency in us, ms (the default) or s")
            value *= _UNITS.get(unit, 1.0)
        elif figure == "error_rate":
            if unit not in ("", "%"):
                raise ConfigError("--assert", part, "an error rate as a share or in %")
            value = value / 100 if unit == "%" else value
        elif unit:
            raise ConfigError("--assert", part, f"a plain number for {figure}")
        bounds.append(Bound(figure, op, value, part))
    return bounds


def parse_fail_on(text: str) -> list[Bound]:
    """``p99>+10%,throughput<-5%``: relative changes against a baseline that fail the run."""
    bounds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _TERM.match(part)
        if not m or m.group(4) != "%":
            raise ConfigError("--fail-on", part, "FIGURE OP CHANGE%, e.g. p99>+10%")
        name, op, raw, _ = m.groups()
        bounds.append(Bound(_figure(name, "--fail-on", part), op, float(raw), part))
    return bounds


def figure_of(step: Mapping[str, Any], figure: str) -> float:
    """One figure of a step of a result document."""
    if figure in LATENCY:
        return float(step["latency_ms"][figure])
    if figure == "throughput":
        return float(step["throughput_rps"])
    errors = float(step.get("error_count", 0))
    if figure == "errors":
        return errors
    total = errors + float(step.get("count", 0))
    return errors / total if total else 0.0


def _shown(figure: str, value: float) -> str:
    if figure in LATENCY:
        return f"{value:.3f} ms"
    if figure == "error_rate":
        return f"{value:.4%}"
    return f"{value:g}"


def check_asserts(result: Mapping[str, Any], bounds: list[Bound]) -> list[str]:
    """What breaks the bounds, one line per step and bound; empty when all hold."""
    failures = []
    for i, step in enumerate(result.get("steps", [])):
        for bound in bounds:
            measured = figure_of(step, bound.figure)
            if not bound.holds(measured):
                failures.append(
                    f"step {i + 1} ({load_label(step['load'])}): {bound.figure} "
                    f"{_shown(bound.figure, measured)} breaks {bound.text}"
                )
    return failures


@dataclass(frozen=True, slots=True)
class Change:
    """One figure of one step against the baseline's step under the same load."""

    load: str
    figure: str
    baseline: float
    current: float

    @property
    def percent(self) -> float:
        if self.baseline == 0:
            return 0.0 if self.current == 0 else float("inf")
        return 100.0 * (self.current - self.baseline) / self.baseline


def check_fail_on(
    result: Mapping[str, Any], baseline: Mapping[str, Any], bounds: list[Bound]
) -> tuple[list[str], list[Change], list[str]]:
    """Failures, every change compared, and the loads the baseline lacks (not compared)."""
    before = {load_label(s["load"]): s for s in baseline.get("steps", [])}
    failures: list[str] = []
    changes: list[Change] = []
    missing: list[str] = []
    for step in result.get("steps", []):
        load = load_label(step["load"])
        old = before.get(load)
        if old is None:
            missing.append(load)
            continue
        for bound in bounds:
            change = Change(
                load, bound.figure, figure_of(old, bound.figure), figure_of(step, bound.figure)
            )
            changes.append(change)
            if bound.holds(change.percent):
                failures.append(
                    f"{load}: {bound.figure} {_shown(bound.figure, change.baseline)} -> "
                    f"{_shown(bound.figure, change.current)} ({change.percent:+.1f}%) "
                    f"hits {bound.text}"
                )
    return failures, changes, missing
