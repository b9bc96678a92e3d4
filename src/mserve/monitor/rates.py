"""What happened between two snapshots: per model rates, means and latency percentiles.

Counters are differenced as Prometheus' ``rate`` does: a counter that went down means the
server restarted, and its new value is the increase. Percentiles come from the difference of
the histogram's cumulative buckets, interpolated linearly within the bucket that holds the rank
(as ``histogram_quantile`` does); a server with summaries instead (Triton) gives its own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mserve.monitor.snapshot import ModelFigures, Snapshot


@dataclass(frozen=True, slots=True)
class ModelRates:
    """One model over one interval; ``None`` where the interval says nothing (no requests)."""

    name: str
    rps: float
    errors_per_s: float
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    queue_ms: float | None
    compute_ms: float | None  # input + infer + output
    batch_avg: float | None  # rows per execution
    queue_depth: float | None
    ready: bool | None
    requests_total: float
    errors_total: float


@dataclass(frozen=True, slots=True)
class Rates:
    """The server over one interval of ``interval_s`` seconds, and each model's figures."""

    flavour: str
    interval_s: float
    models: tuple[ModelRates, ...]
    inflight: float | None
    workers: float | None
    cpu: float | None  # CPU seconds per second of the server's processes (1.0: one core)
    rss_bytes: float | None
    host_cpu_utilization: float | None
    host_memory_used_bytes: float | None


def increase(before: float, after: float) -> float:
    """How much a counter grew; a counter that went down was reset, so all of it is new."""
    return after - before if after >= before else after


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0 to 1) of cumulative ``buckets`` (upper bound, count), sorted by
    bound and ending with +Inf. Linear within the bucket holding the rank, the first bucket
    starting at 0; a rank in the +Inf bucket gives the largest finite bound. None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank and count > below:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def bucket_increase(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], ...]:
    """The buckets of the observations made between two scrapes of one histogram."""
    old = dict(before)
    if any(count < old.get(upper, 0.0) for upper, count in after):
        return tuple(after)  # reset: everything in ``after`` is new
    return tuple((upper, count - old.get(upper, 0.0)) for upper, count in after)


def _mean_ms(sum_delta: float, count_delta: float) -> float | None:
    return sum_delta / count_delta * 1000 if count_delta > 0 else None


def model_rates(name: str, before: ModelFigures, after: ModelFigures, seconds: float) -> ModelRates:
    """One model's figures between ``before`` and ``after``, ``seconds`` apart."""
    requests = increase(before.requests, after.requests)
    errors = increase(before.errors, after.errors)
    latency_n = increase(before.latency_count, after.latency_count)
    p50 = p99 = None
    if after.latency_buckets:
        window = bucket_increase(before.latency_buckets, after.latency_buckets)
        p50, p99 = histogram_quantile(0.5, window), histogram_quantile(0.99, window)
    elif after.latency_quantiles and latency_n > 0:
        quantiles = dict(after.latency_quantiles)
        p50, p99 = quantiles.get(0.5), quantiles.get(0.99)
    executions = increase(before.executions, after.executions)
    return ModelRates(
        name=name,
        rps=requests / seconds,
        errors_per_s=errors / seconds,
        mean_ms=_mean_ms(increase(before.latency_sum, after.latency_sum), latency_n),
        p50_ms=None if p50 is None else p50 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        queue_ms=_mean_ms(
            increase(before.queue_sum, after.queue_sum),
            increase(before.queue_count, after.queue_count),
        ),
        compute_ms=_mean_ms(
            increase(before.compute_sum, after.compute_sum),
            increase(before.compute_count, after.compute_count),
        ),
        batch_avg=increase(before.rows, after.rows) / executions if executions > 0 else None,
        queue_depth=after.queue_depth,
        ready=after.ready,
        requests_total=after.requests,
        errors_total=after.errors,
    )


def rates(before: Snapshot, after: Snapshot, models: Collection[str] = ()) -> Rates:
    """Everything between two scrapes of one server; ``models`` keeps only those (all if empty).

    A model that appears only in ``after`` is compared with zero figures.
    """
    seconds = max(after.taken - before.taken, 1e-9)
    empty = ModelFigures()
    rows = tuple(
        model_rates(name, before.models.get(name, empty), figures, seconds)
        for name, figures in sorted(after.models.items())
        if not models or name in models
    )
    cpu = None
    if before.cpu_seconds is not None and after.cpu_seconds is not None:
        cpu = increase(before.cpu_seconds, after.cpu_seconds) / seconds
    return Rates(
        flavour=after.flavour,
        interval_s=seconds,
        models=rows,
        inflight=after.inflight,
        workers=after.workers,
        cpu=cpu,
        rss_bytes=after.rss_bytes,
        host_cpu_utilization=after.host_cpu_utilization,
        host_memory_used_bytes=after.host_memory_used_bytes,
    )
