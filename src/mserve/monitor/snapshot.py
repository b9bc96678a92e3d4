"""One scrape of ``/metrics``, normalised: per model cumulative counts and sums, in seconds.

Two flavours are recognised. mserve's metrics are those of docs/metrics.md (durations in
seconds, histograms with buckets). Triton's are cumulative counters in microseconds
(``nv_inference_*``), optionally with summaries (``nv_inference_request_summary_us``) whose
quantiles the server computes itself. Both become the same :class:`Snapshot`, summed over the
versions of each model, so everything downstream ignores which server answered.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

MSERVE = "mserve"
TRITON = "triton"

#: samples whose presence tells the flavour (names as normalised by :func:`_samples`)
MSERVE_MARKERS = ("mserve_requests", "mserve_model_ready", "mserve_inflight_requests")
TRITON_MARKERS = ("nv_inference_request_success", "nv_inference_count")

_US = 1e-6


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """One model's cumulative figures, summed over its versions (durations in seconds)."""

    requests: float = 0.0  # every outcome
    errors: float = 0.0  # every outcome but success
    latency_sum: float = 0.0  # successful requests, end to end in the server
    latency_count: float = 0.0
    latency_buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count)
    latency_quantiles: tuple[tuple[float, float], ...] = ()  # (quantile, seconds) from a summary
    queue_sum: float = 0.0
    queue_count: float = 0.0
    compute_sum: float = 0.0  # input + infer + output
    compute_count: float = 0.0
    executions: float = 0.0
    rows: float = 0.0
    queue_depth: float | None = None  # a gauge: now, not cumulative
    ready: bool | None = None  # None: the server does not say


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape says; ``taken`` is the monotonic time of the scrape, seconds."""

    flavour: str
    taken: float
    models: Mapping[str, ModelFigures] = field(default_factory=dict)
    inflight: float | None = None
    workers: float | None = None
    cpu_seconds: float | None = None  # the server's processes, cumulative
    rss_bytes: float | None = None
    host_cpu_utilization: float | None = None  # the whole machine, 0 to 1 (Triton)
    host_memory_used_bytes: float | None = None  # the whole machine (Triton)


class UnrecognisedMetrics(ValueError):
    """The text parses, or not, but holds neither mserve's nor Triton's metrics."""


Labels = dict[str, str]
Samples = dict[str, list[tuple[Labels, float]]]
Fields = dict[str, dict[str, Any]]  # model -> ModelFigures field -> value


def parse(text: str, taken: float) -> Snapshot:
    """The :class:`Snapshot` of Prometheus text ``text`` scraped at monotonic time ``taken``.

    Raises UnrecognisedMetrics when the text is not Prometheus' format or has neither flavour.
    """
    try:
        samples = _samples(text)
    except ValueError as exc:
        raise UnrecognisedMetrics(f"not Prometheus' text format ({exc})") from None
    if any(name in samples for name in MSERVE_MARKERS):
        return _mserve(samples, taken)
    if any(name in samples for name in TRITON_MARKERS):
        return _triton(samples, taken)
    raise UnrecognisedMetrics(
        f"no metrics of mserve ({', '.join(MSERVE_MARKERS)}) nor of Triton "
        f"({', '.join(TRITON_MARKERS)})"
    )


def _samples(text: str) -> Samples:
    """Samples by name; a counter's ``_total`` is dropped, whether or not the server wrote it."""
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name.removesuffix("_total")
            out[name].append((dict(s.labels), float(s.value)))
    return out


def _by_model(samples: Samples, name: str, scale: float = 1.0) -> dict[str, float]:
    """Sample ``name`` summed per model over every other label, times ``scale``."""
    out: dict[str, float] = defaultdict(float)
    for labels, value in samples.get(name, ()):
        if "model" in labels and not math.isnan(value):
            out[labels["model"]] += value * scale
    return out


def _gauge(samples: Samples, name: str) -> float | None:
    values = [v for _, v in samples.get(name, ()) if not math.isnan(v)]
    return sum(values) if values else None


def _buckets(samples: Samples, name: str) -> dict[str, tuple[tuple[float, float], ...]]:
    """Cumulative histogram buckets per model, summed over versions and protocols."""
    per_model: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in samples.get(name + "_bucket", ()):
        if "model" in labels and "le" in labels:
            per_model[labels["model"]][float(labels["le"])] += value
    return {m: tuple(sorted(b.items())) for m, b in per_model.items()}


def _models(fields: Fields) -> dict[str, ModelFigures]:
    return {m: ModelFigures(**f) for m, f in sorted(fields.items())}


def _mserve(samples: Samples, taken: float) -> Snapshot:
    fields: Fields = defaultdict(dict)
    requests = _by_model(samples, "mserve_requests")
    success: dict[str, float] = defaultdict(float)
    for labels, value in samples.get("mserve_requests", ()):
        if labels.get("outcome") == "success":
            success[labels.get("model", "")] += value
    for m, n in requests.items():
        fields[m]["requests"] = n
        fields[m]["errors"] = n - success.get(m, 0.0)
    for field_name, metric in (
        ("latency", "mserve_request_duration_seconds"),
        ("queue", "mserve_queue_duration_seconds"),
    ):
        for m, v in _by_model(samples, metric + "_sum").items():
            fields[m][field_name + "_sum"] = v
        for m, v in _by_model(samples, metric + "_count").items():
            fields[m][field_name + "_count"] = v
    for m, b in _buckets(samples, "mserve_request_duration_seconds").items():
        fields[m]["latency_buckets"] = b
    compute: dict[str, float] = defaultdict(float)
    for phase in ("input", "infer", "output"):
        for m, v in _by_model(samples, f"mserve_compute_{phase}_duration_seconds_sum").items():
            compute[m] += v
    for m, v in compute.items():
        fields[m]["compute_sum"] = v
    for m, v in _by_model(samples, "mserve_compute_infer_duration_seconds_count").items():
        fields[m]["compute_count"] = v
    for m, v in _by_model(samples, "mserve_batch_size_count").items():
        fields[m]["executions"] = v
    for m, v in _by_model(samples, "mserve_batch_size_sum").items():
        fields[m]["rows"] = v
    for m, v in _by_model(samples, "mserve_queue_depth").items():
        fields[m]["queue_depth"] = v
    ready: dict[str, bool] = {}
    for labels, value in samples.get("mserve_model_ready", ()):
        m = labels.get("model", "")
        ready[m] = ready.get(m, False) or value >= 1
    for m, r in ready.items():
        fields[m]["ready"] = r
    return Snapshot(
        flavour=MSERVE,
        taken=taken,
        models=_models(fields),
        inflight=_gauge(samples, "mserve_inflight_requests"),
        workers=_gauge(samples, "mserve_workers"),
        cpu_seconds=_gauge(samples, "process_cpu_seconds"),
        rss_bytes=_gauge(samples, "process_resident_memory_bytes"),
    )


def _triton(samples: Samples, taken: float) -> Snapshot:
    fields: Fields = defaultdict(dict)
    success = _by_model(samples, "nv_inference_request_success")
    failure = _by_model(samples, "nv_inference_request_failure")
    for m in set(success) | set(failure):
        fields[m]["requests"] = success.get(m, 0.0) + failure.get(m, 0.0)
        fields[m]["errors"] = failure.get(m, 0.0)
        # Triton's durations are those of successful requests, as are mserve's histograms
        fields[m]["latency_count"] = success.get(m, 0.0)
        fields[m]["queue_count"] = success.get(m, 0.0)
        fields[m]["compute_count"] = success.get(m, 0.0)
    for m, v in _by_model(samples, "nv_inference_request_duration_us", _US).items():
        fields[m]["latency_sum"] = v
    for m, v in _by_model(samples, "nv_inference_queue_duration_us", _US).items():
        fields[m]["queue_sum"] = v
    compute: dict[str, float] = defaultdict(float)
    for phase in ("input", "infer", "output"):
        for m, v in _by_model(samples, f"nv_inference_compute_{phase}_duration_us", _US).items():
            compute[m] += v
    for m, v in compute.items():
        fields[m]["compute_sum"] = v
    for m, v in _by_model(samples, "nv_inference_exec_count").items():
        fields[m]["executions"] = v
    for m, v in _by_model(samples, "nv_inference_count").items():
        fields[m]["rows"] = v
    for m, v in _by_model(samples, "nv_inference_pending_request_count").items():
        fields[m]["queue_depth"] = v
    for m, q in _summary_quantiles(samples, "nv_inference_request_summary_us").items():
        fields[m]["latency_quantiles"] = q
    return Snapshot(
        flavour=TRITON,
        taken=taken,
        models=_models(fields),
        host_cpu_utilization=_gauge(samples, "nv_cpu_utilization"),
        host_memory_used_bytes=_gauge(samples, "nv_cpu_memory_used_bytes"),
    )


def _summary_quantiles(samples: Samples, name: str) -> dict[str, tuple[tuple[float, float], ...]]:
    """Per model, each quantile in seconds; over several versions the largest (a bound, since
    quantiles do not add up)."""
    per_model: dict[str, dict[float, float]] = defaultdict(dict)
    for labels, value in samples.get(name, ()):
        if "model" in labels and "quantile" in labels and not math.isnan(value):
            q = float(labels["quantile"])
            seen = per_model[labels["model"]].get(q, 0.0)
            per_model[labels["model"]][q] = max(seen, value * _US)
    return {m: tuple(sorted(q.items())) for m, q in per_model.items()}
