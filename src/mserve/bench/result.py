"""The canonical result of a benchmark run (JSON), and the per-step summary and verdict.

Every other output (terminal table, CSV, Markdown, HTML) is rendered from this document. The
schema is versioned by ``SCHEMA``; ``docs/bench.md`` describes every field.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mserve import __version__
from mserve.bench.generator import Load, WindowRecord
from mserve.bench.histogram import Histogram
from mserve.bench.stats import Window, is_stable, ms, stability_spread, summarize
from mserve.bench.targets.base import ServerStats

SCHEMA = "mserve.bench.result/1"

#: Verdict thresholds (MLPerf LoadGen-style: a step is VALID only when none is crossed).
MAX_GENERATOR_CPU = 0.90
MAX_SEND_LAG_P99_US = 1000
MIN_ACHIEVED_RATE = 0.99


def load_label(load: Mapping[str, Any]) -> str:
    """A step's load in a few characters: ``c=16`` (closed loop) or ``500/s poisson``."""
    if load.get("mode") == "closed":
        return f"c={load.get('concurrency')}"
    return f"{load.get('rate', 0):g}/s {load.get('arrival', '')}".strip()


@dataclass(frozen=True, slots=True)
class Settings:
    """How every step is measured."""

    warmup_s: float = 2.0
    window_s: float = 2.0
    stability_pct: float = 10.0
    stable_windows: int = 3
    max_duration_s: float = 30.0
    duration_s: float | None = None  # fixed length instead of stability
    timeout_s: float = 30.0
    workers: int = 1
    seed: int = 0
    max_connections: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_s": self.warmup_s,
            "window_s": self.window_s,
            "stability_pct": self.stability_pct,
            "stable_windows": self.stable_windows,
            "max_duration_s": self.max_duration_s,
            "duration_s": self.duration_s,
            "timeout_s": self.timeout_s,
            "workers": self.workers,
            "seed": self.seed,
            "max_connections": self.max_connections,
        }


def as_stats_windows(records: list[WindowRecord]) -> list[Window]:
    return [Window(r.start_ns, r.end_ns, r.latency, r.ok, r.errors) for r in records]


def summarize_step(
    load: Load,
    settings: Settings,
    windows: list[WindowRecord],
    tail: WindowRecord,
    warmup: WindowRecord,
    rows_per_request: int,
    before: ServerStats | None,
    after: ServerStats | None,
    connections: int,
    wall_offset_ns: int | None = None,
) -> dict[str, Any]:
    """One step's entry of the result: figures, breakdown, timeline and verdict.

    ``wall_offset_ns`` (Unix time minus the windows' monotonic clock, in ns) adds
    ``measured_unix_s``: the wall-clock start and end of the measured windows, by which
    ``mserve results merge`` checks that concurrent runs overlapped."""
    total = WindowRecord(-1, windows[0].start_ns if windows else 0, 0)
    for w in windows:
        total.merge(w)
    measured_s = sum(w.end_ns - w.start_ns for w in windows) / 1e9 if windows else 0.0
    total.merge(tail)  # late answers count: nothing is dropped
    stable = (
        is_stable(as_stats_windows(windows), settings.stability_pct, settings.stable_windows)
        if settings.duration_s is None
        else None
    )
    summary = summarize(total.latency, total.ok, total.errors, measured_s)
    step: dict[str, Any] = {
        "load": _load_dict(load),
        "duration_s": round(measured_s, 3),
        "windows": len(windows),
        "measured_unix_s": [
            round((windows[0].start_ns + wall_offset_ns) / 1e9, 6),
            round((windows[-1].end_ns + wall_offset_ns) / 1e9, 6),
        ]
        if windows and wall_offset_ns is not None
        else None,
        "stable": stable,
        "stability_spread_pct": _finite(
            stability_spread(as_stats_windows(windows), settings.stable_windows)
        )
        if windows
        else None,
        **summary,
        "inferences_per_s": round(summary["throughput_rps"] * rows_per_request, 3),
        "service_ms": _percentiles_ms(total.service),
    }
    sent_rate = sum(w.sent for w in windows) / measured_s if measured_s else 0.0
    if load.mode == "open":
        step["requested_rate_rps"] = load.rate
        step["achieved_rate_rps"] = round(sent_rate, 3)
        # a Poisson schedule holds more or fewer sends than rate x time: judge against its own
        step["scheduled_rate_rps"] = (
            round(sum(w.due for w in windows) / measured_s, 3) if measured_s else 0.0
        )
        step["send_lag_ms"] = {
            "p50": ms(total.lag.value_at_percentile(50)) if total.lag.count else 0.0,
            "p99": ms(total.lag.value_at_percentile(99)) if total.lag.count else 0.0,
            "max": ms(total.lag.max) if total.lag.count else 0.0,
        }
    cpu_s = sum(w.cpu_ns for w in windows) / 1e9
    requests_done = total.ok + sum(total.errors.values())
    step["generator"] = {
        "workers": settings.workers,
        "connections": connections,
        "cpu_percent": round(100 * cpu_s / (measured_s * settings.workers), 1)
        if measured_s
        else 0.0,
        "cpu_us_per_request": round(1e6 * cpu_s / requests_done, 2) if requests_done else None,
        "backlogged": total.backlogged,
    }
    step["warmup"] = {
        "requests": warmup.ok + sum(warmup.errors.values()),
        "ok": warmup.ok,
        "errors": dict(warmup.errors),
    }
    step["server"] = server_breakdown(before, after, step["latency_ms"]["mean"])
    step["timeline"] = [
        {
            "t_s": round((w.start_ns - windows[0].start_ns) / 1e9, 3),
            "throughput_rps": round(w.ok / ((w.end_ns - w.start_ns) / 1e9), 3),
            "p50_ms": ms(w.latency.value_at_percentile(50)) if w.latency.count else None,
            "p99_ms": ms(w.latency.value_at_percentile(99)) if w.latency.count else None,
            "errors": sum(w.errors.values()),
        }
        for w in windows
    ]
    step["histogram"] = total.latency.to_dict()
    verdict, reasons = judge(step, load, settings)
    step["verdict"] = verdict
    step["reasons"] = reasons
    return step


def _pct(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:.1f}%"


def judge(step: dict[str, Any], load: Load, settings: Settings) -> tuple[str, list[str]]:
    """VALID or INVALID, with every reason (MLPerf LoadGen prints its verdict the same way)."""
    reasons: list[str] = []
    gen = step["generator"]
    if step["count"] == 0:
        reasons.append("no request succeeded")
    if step["stable"] is False:
        spread = step.get("stability_spread_pct") or {}
        reasons.append(
            f"not stable within {settings.stability_pct:g}% over the last "
            f"{settings.stable_windows} windows before --max-duration "
            f"(spread: throughput {_pct(spread.get('throughput_pct'))}, "
            f"p99 {_pct(spread.get('p99_pct'))})"
        )
    if gen["cpu_percent"] > 100 * MAX_GENERATOR_CPU:
        reasons.append(
            f"the generator's CPU was {gen['cpu_percent']:.0f}% busy (limit "
            f"{100 * MAX_GENERATOR_CPU:.0f}%): the figures may be the generator's, not the "
            "server's; add --workers or cores"
        )
    if gen["backlogged"]:
        reasons.append(
            f"{gen['backlogged']} requests could not be started on time: all "
            f"{settings.max_connections} connections were busy (--max-connections)"
        )
    if load.mode == "open":
        # sends that waited for a free connection lag because the server holds them all, not
        # because the generator is slow
        why = "every connection was busy" if gen["backlogged"] else "generator-bound"
        lag = step["send_lag_ms"]["p99"]
        if lag * 1000 > MAX_SEND_LAG_P99_US:
            reasons.append(
                f"sends lagged behind the schedule: p99 lag {lag:.3f} ms > "
                f"{MAX_SEND_LAG_P99_US / 1000:g} ms ({why})"
            )
        achieved, requested = step["achieved_rate_rps"], load.rate
        scheduled = step.get("scheduled_rate_rps") or requested
        if scheduled and achieved < MIN_ACHIEVED_RATE * scheduled:
            reasons.append(
                f"achieved {achieved:.1f} req/s, more than "
                f"{100 * (1 - MIN_ACHIEVED_RATE):.0f}% under the {scheduled:.1f} req/s its "
                f"schedule called for (requested {requested:g}; {why})"
            )
    return ("VALID" if not reasons else "INVALID"), reasons


def server_breakdown(
    before: ServerStats | None, after: ServerStats | None, client_mean_ms: float
) -> dict[str, Any] | None:
    """Average per-request phases from the server's statistics over the step."""
    if before is None or after is None:
        return None
    n = after.requests - before.requests
    if n <= 0:
        return None

    def avg(a: int, b: int) -> float:
        return round((b - a) / n / 1e6, 3)

    request_ms = avg(before.success_ns, after.success_ns)
    executions = after.executions - before.executions
    return {
        "requests": n,
        "request_ms": request_ms,
        "queue_ms": avg(before.queue_ns, after.queue_ns),
        "compute_input_ms": avg(before.compute_input_ns, after.compute_input_ns),
        "compute_infer_ms": avg(before.compute_infer_ns, after.compute_infer_ns),
        "compute_output_ms": avg(before.compute_output_ns, after.compute_output_ns),
        "network_protocol_ms": round(max(0.0, client_mean_ms - request_ms), 3),
        "avg_batch_size": round((after.inferences - before.inferences) / executions, 3)
        if executions
        else None,
        "failures": after.failures - before.failures,
    }


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    """JSON has no infinity: an unbounded spread (a window with zero throughput) becomes null."""
    return {k: (round(v, 2) if math.isfinite(v) else None) for k, v in d.items()}


def _percentiles_ms(h: Histogram) -> dict[str, float]:
    if not h.count:
        return {}
    ps = h.percentiles([50, 90, 99])
    return {"p50": ms(ps[50]), "p90": ms(ps[90]), "p99": ms(ps[99])}


def _load_dict(load: Load) -> dict[str, Any]:
    if load.mode == "closed":
        return {"mode": "closed", "concurrency": load.concurrency}
    return {"mode": "open", "rate": load.rate, "arrival": load.arrival, "seed": load.seed}


def machine() -> dict[str, Any]:
    """Facts that make two runs comparable."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "python": sys.version.split()[0],
        "mserve": __version__,
    }


def new_result(target: dict[str, Any], settings: Settings, command: list[str]) -> dict[str, Any]:
    """The result document before any step has run."""
    return {
        "schema": SCHEMA,
        "id": uuid.uuid4().hex[:12],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine(),
        "target": target,
        "settings": settings.to_dict(),
        "steps": [],
        "slo": None,
    }
