"""Per-model figures, one point a second over the last minutes, derived from merged metrics.

Each point compares the metrics now with those one second ago (rates) and ten seconds ago
(percentiles and means, which need more than a second of requests to mean anything).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mserve.monitor.rates import histogram_quantile

_SUCCESS = "success"  # every other outcome is an error


def _quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile of per-bucket counts (the last bucket +Inf), as ``histogram_quantile``."""
    cumulative, running = [], 0.0
    for bound, count in zip([*bounds, math.inf], counts, strict=True):
        running += count
        cumulative.append((float(bound), running))
    return histogram_quantile(q, cumulative)


@dataclass(slots=True)
class _Model:
    requests: float = 0.0
    errors: float = 0.0
    duration: list[float] = field(default_factory=list)
    queue_sum: float = 0.0
    queue_count: float = 0.0
    compute_sum: float = 0.0
    batch: list[float] = field(default_factory=list)
    batch_sum: float = 0.0
    queue_depth: float = 0.0
    ready: bool = True
    drift: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(slots=True)
class _State:
    t: float
    models: dict[str, _Model]
    cpu: float
    rss: float
    in_flight: float


def _add(into: list[float], counts: Sequence[float]) -> None:
    if not into:
        into.extend(float(c) for c in counts)
    else:
        for i, c in enumerate(counts):
            into[i] += c


_DRIFT = {
    "mserve_input_drift_psi": "psi",
    "mserve_input_feature_shift": "feature_shift",
    "mserve_input_mean": "mean",
    "mserve_input_std": "std",
}


def _state(merged: Mapping[str, Any], t: float) -> _State:
    models: dict[str, _Model] = {}

    def model(name: str) -> _Model:
        m = models.get(name)
        if m is None:
            m = models[name] = _Model()
        return m

    def samples(name: str) -> dict[tuple[str, ...], Any]:
        fam = merged.get(name)
        return fam["samples"] if fam else {}

    for (name, _v, _p, outcome), value in samples("mserve_requests_total").items():
        if not name:
            continue
        m = model(name)
        m.requests += value
        if outcome != _SUCCESS:
            m.errors += value
    for (name, _v, _p), (counts, _sum, _b) in samples("mserve_request_duration_seconds").items():
        _add(model(name).duration, counts)
    for (name, _v), (counts, total, _b) in samples("mserve_queue_duration_seconds").items():
        model(name).queue_sum += total
        model(name).queue_count += sum(counts)
    for fam in (
        "mserve_compute_input_duration_seconds",
        "mserve_compute_infer_duration_seconds",
        "mserve_compute_output_duration_seconds",
    ):
        for (name, _v), (_counts, total, _b) in samples(fam).items():
            model(name).compute_sum += total
    for (name, _v), (counts, total, _b) in samples("mserve_batch_size").items():
        _add(model(name).batch, counts)
        model(name).batch_sum += total
    for (name, _v), value in samples("mserve_queue_depth").items():
        model(name).queue_depth += value
    for (name, _v), value in samples("mserve_model_ready").items():
        m = model(name)
        m.ready = m.ready and value >= 1
    for fam, key in _DRIFT.items():
        for (name, _v, tensor), value in samples(fam).items():
            slot = model(name).drift.setdefault(tensor, {})
            slot[key] = max(slot.get(key, -math.inf), value)

    def scalar(name: str) -> float:
        return float(samples(name).get((), 0.0))

    return _State(
        t,
        models,
        scalar("process_cpu_seconds_total"),
        scalar("process_resident_memory_bytes"),
        scalar("mserve_inflight_requests"),
    )


def _delta(now: Sequence[float], then: Sequence[float] | None) -> list[float]:
    if not then or len(then) != len(now):
        return list(now)
    return [max(0.0, a - b) for a, b in zip(now, then, strict=True)]


def _bound_label(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else repr(bound)


class History:
    """The last ``window_s`` seconds of per-model figures, one point per :meth:`add`."""

    def __init__(
        self,
        latency_bounds: Sequence[float],
        batch_bounds: Sequence[float],
        window_s: int = 300,
        span_s: int = 10,
    ) -> None:
        self.latency_bounds = list(latency_bounds)
        self.batch_bounds = list(batch_bounds)
        self.window_s = window_s
        self.points: deque[dict[str, Any]] = deque(maxlen=window_s)
        self._states: deque[_State] = deque(maxlen=span_s + 1)

    def add(self, merged: Mapping[str, Any], t: float) -> dict[str, Any]:
        """Record the merged metrics at time ``t``; returns the new point."""
        state = _state(merged, t)
        prev = self._states[-1] if self._states else None
        span = self._states[0] if self._states else None
        self._states.append(state)
        point: dict[str, Any] = {
            "t": round(t, 3),
            "in_flight": state.in_flight,
            "cpu": None,
            "rss_bytes": state.rss,
            "models": {},
        }
        if prev is not None and t > prev.t:
            point["cpu"] = round(max(0.0, state.cpu - prev.cpu) / (t - prev.t), 4)
        for name, m in sorted(state.models.items()):
            # a model that appeared since an earlier state started from zero there
            point["models"][name] = self._model_point(
                m,
                prev.models.get(name, _Model()) if prev else None,
                prev.t if prev else t,
                span.models.get(name, _Model()) if span else None,
                t,
            )
        self.points.append(point)
        return point

    def _model_point(
        self, m: _Model, prev: _Model | None, prev_t: float, span: _Model | None, t: float
    ) -> dict[str, Any]:
        dt = t - prev_t
        out: dict[str, Any] = {
            "rps": None,
            "errors_per_s": None,
            "p50_ms": None,
            "p99_ms": None,
            "queue_ms": None,
            "compute_ms": None,
            "queue_depth": m.queue_depth,
            "batch_avg": None,
            "batch_sizes": {},
            "requests_total": m.requests,
            "errors_total": m.errors,
            "ready": m.ready,
        }
        if prev is not None and dt > 0:
            out["rps"] = round(max(0.0, m.requests - prev.requests) / dt, 3)
            out["errors_per_s"] = round(max(0.0, m.errors - prev.errors) / dt, 3)
        dur = _delta(m.duration, span.duration if span else None)
        for q, key in ((0.5, "p50_ms"), (0.99, "p99_ms")):
            v = _quantile(q, self.latency_bounds, dur) if dur else None
            out[key] = None if v is None else round(v * 1000, 4)
        dcount = m.queue_count - (span.queue_count if span else 0.0)
        if dcount > 0:
            out["queue_ms"] = round(
                (m.queue_sum - (span.queue_sum if span else 0.0)) / dcount * 1000, 4
            )
            out["compute_ms"] = round(
                (m.compute_sum - (span.compute_sum if span else 0.0)) / dcount * 1000, 4
            )
        batch = _delta(m.batch, span.batch if span else None)
        executions = sum(batch)
        if executions > 0:
            rows = m.batch_sum - (span.batch_sum if span else 0.0)
            out["batch_avg"] = round(rows / executions, 3)
            bounds = [*self.batch_bounds, math.inf]
            out["batch_sizes"] = {
                (_bound_label(b) if not math.isinf(b) else "+Inf"): c
                for b, c in zip(bounds, batch, strict=False)
                if c > 0
            }
        if m.drift:
            out["drift"] = {k: dict(v) for k, v in sorted(m.drift.items())}
        return out

    def since(self, t: float | None) -> list[dict[str, Any]]:
        """The points after time ``t`` (all when None)."""
        if t is None:
            return list(self.points)
        return [p for p in self.points if p["t"] > t]
