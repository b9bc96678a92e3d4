"""Windows, stability, errors by kind and step summaries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mserve.bench.histogram import Histogram
from mserve.bench.stats import (
    StepSummary,
    Window,
    is_stable,
    merge_errors,
    merge_windows,
    percentile_key,
    stability_spread,
    summarize,
)

NS = 1_000_000_000


def window(
    index: int, throughput: float, p99_us: int, errors: dict[str, int] | None = None
) -> Window:
    """A 5 s window whose throughput and p99 are exactly the ones asked for: the slowest 2%
    of requests take p99_us, which is also the maximum (so the histogram reports it exactly)."""
    ok = round(throughput * 5)
    slow = max(math.ceil(ok * 0.02), 1)
    h = Histogram()
    h.record(p99_us // 2, count=ok - slow)
    h.record(p99_us, count=slow)
    return Window(index * 5 * NS, (index + 1) * 5 * NS, h, ok, errors or {})


def series(throughputs: list[float], p99s: list[int]) -> list[Window]:
    return [window(i, t, p) for i, (t, p) in enumerate(zip(throughputs, p99s, strict=True))]


def test_window_throughput_and_p99() -> None:
    w = window(0, 200.0, 12_000, {"timeout": 2, "http_503": 1})
    assert w.duration_s == 5.0
    assert w.throughput == 200.0
    assert w.p99_us == 12_000
    assert w.error_count == 3


def test_window_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="not after its start"):
        Window(5, 5, Histogram(), 0, {})


def test_steady_windows_are_stable() -> None:
    steady = series([1000, 1010, 995], [10_000, 10_200, 9_900])
    assert is_stable(steady, 10)
    assert is_stable(steady, 3.1)
    assert not is_stable(steady, 3)  # p99 spreads 10200 / 9900 - 1 = 3.03%
    assert not is_stable(steady, 1.5)  # throughput spreads 1010 / 995 - 1 = 1.51%


def test_throughput_rising_five_percent_per_window_is_not_stable_at_ten() -> None:
    # three windows span 1.05**2 = 1.1025 > 1.10
    drifting = series([1000 * 1.05**i for i in range(6)], [10_000] * 6)
    assert not is_stable(drifting, 10)
    assert is_stable(drifting, 11)
    assert not is_stable(drifting, 11, count=4)  # 1.05**3 = 1.158


def test_drifting_p99_is_not_stable() -> None:
    drifting = series([1000] * 4, [10_000, 11_000, 12_000, 13_000])
    assert not is_stable(drifting, 10)
    assert is_stable(drifting, 20)


def test_only_the_last_windows_count() -> None:
    settling = series([100, 500, 900, 1000, 1000, 1000], [90_000, 40_000, 20_000] + [10_000] * 3)
    assert is_stable(settling, 10)
    assert not is_stable(settling[:5], 10)


def test_exactly_at_the_bound_is_stable() -> None:
    assert is_stable(series([1000, 1100, 1000], [10_000, 11_000, 10_000]), 10)


def test_too_few_windows_or_zero_throughput_is_not_stable() -> None:
    assert not is_stable(series([1000, 1000], [10_000, 10_000]), 10)
    assert not is_stable([], 10)
    idle = series([1000, 1000, 1000], [10_000] * 3)
    idle[1] = Window(5 * NS, 10 * NS, Histogram(), 0, {"connection": 50})
    assert not is_stable(idle, 10)


def test_stability_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="stability_pct"):
        is_stable([], -1)
    with pytest.raises(ValueError, match="count"):
        is_stable([], 10, count=0)


def test_stability_spread() -> None:
    spread = stability_spread(series([1000, 1000, 1010, 995], [10_000, 10_000, 10_200, 9_900]))
    assert spread["throughput_pct"] == pytest.approx((1010 / 995 - 1) * 100)
    assert spread["p99_pct"] == pytest.approx((10_200 / 9_900 - 1) * 100)
    assert stability_spread(series([1000], [10_000])) == {"throughput_pct": 0.0, "p99_pct": 0.0}
    idle = [*series([1000], [10_000]), Window(5 * NS, 10 * NS, Histogram(), 0, {})]
    assert stability_spread(idle)["throughput_pct"] == math.inf
    with pytest.raises(ValueError, match="at least one window"):
        stability_spread([])


def test_merge_errors_adds_by_kind_without_mutating() -> None:
    a = {"timeout": 2, "http_503": 1}
    b = {"http_503": 4, "connection": 1}
    assert merge_errors(a, b) == {"connection": 1, "http_503": 5, "timeout": 2}
    assert list(merge_errors(a, b)) == ["connection", "http_503", "timeout"]
    assert a == {"timeout": 2, "http_503": 1}


def test_merge_windows_of_concurrent_workers() -> None:
    a = window(0, 100.0, 8_000, {"timeout": 1})
    b = Window(a.start_ns + 1_000, a.end_ns + 2_000, Histogram(), 7, {"timeout": 2})
    b.histogram.record(50_000, count=7)
    merged = merge_windows([a, b])
    assert (merged.start_ns, merged.end_ns) == (a.start_ns, b.end_ns)
    assert merged.ok == a.ok + 7
    assert merged.errors == {"timeout": 3}
    assert merged.histogram.count == a.histogram.count + 7
    assert merged.histogram.max == 50_000
    assert a.histogram.max == 8_000  # inputs untouched


def test_summarize_fields() -> None:
    h = Histogram()
    h.record_array(np.arange(1, 1001))  # 1 us .. 1 ms, all exact (below 2048 us)
    out = summarize(h, ok=1000, errors={"timeout": 3, "http_503": 2}, duration_s=2.0)
    assert set(out) == {
        "count",
        "throughput_rps",
        "latency_ms",
        "latency_ci_ms",
        "errors",
        "error_count",
        "saturated",
    }
    assert out["count"] == 1000
    assert out["throughput_rps"] == 500.0
    assert out["latency_ms"] == {
        "p50": 0.5,
        "p90": 0.9,
        "p95": 0.95,
        "p99": 0.99,
        "p999": 0.999,
        "max": 1.0,
        "mean": pytest.approx(0.5005, abs=0.001),
        "min": 0.001,
    }
    assert list(out["latency_ci_ms"]) == ["p50", "p90", "p95", "p99", "p999"]
    for key, (lo, hi) in out["latency_ci_ms"].items():
        assert lo <= out["latency_ms"][key] <= hi
    assert out["errors"] == {"http_503": 2, "timeout": 3}
    assert out["error_count"] == 5
    assert out["saturated"] == 0
    assert json.loads(json.dumps(out)) == out


def test_summarize_rounds_to_microseconds_and_handles_empty() -> None:
    h = Histogram()
    h.record(1_234_567)
    assert summarize(h, 1, {}, 1.0, percentiles=[50])["latency_ms"]["p50"] == 1234.567
    empty = summarize(Histogram(), 0, {"connection": 9}, 1.0)
    assert empty["throughput_rps"] == 0.0
    assert empty["latency_ms"]["p99"] == 0.0
    assert empty["error_count"] == 9


def test_summarize_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        summarize(Histogram(), 0, {}, 0.0)
    with pytest.raises(ValueError, match="duplicate keys"):
        summarize(Histogram(), 0, {}, 1.0, percentiles=[99.9, 9.99])


@pytest.mark.parametrize(
    ("p", "key"), [(50, "p50"), (99.0, "p99"), (99.9, "p999"), (99.99, "p9999"), (0, "p0")]
)
def test_percentile_key(p: float, key: str) -> None:
    assert percentile_key(p) == key


def test_step_summary_from_consecutive_windows() -> None:
    windows = series([1000, 1010, 995], [10_000, 10_200, 9_900])
    step = StepSummary.from_windows(windows)
    assert step.duration_s == 15.0
    assert step.ok == sum(w.ok for w in windows)
    assert step.histogram.count == sum(w.histogram.count for w in windows)
    d = step.to_dict()
    assert d["throughput_rps"] == pytest.approx(step.ok / 15.0, abs=1e-3)
    assert d["latency_ms"]["max"] == 10.2


def test_step_summary_merge_of_concurrent_workers() -> None:
    a = StepSummary.from_windows(series([100, 100], [5_000, 5_000]))
    b = StepSummary.from_windows(series([300, 300], [7_000, 7_000]))
    b.errors = {"timeout": 4}
    a.merge(b)
    assert a.duration_s == 10.0  # the same 10 s, measured twice: not 20 s
    assert a.to_dict()["throughput_rps"] == 400.0
    assert a.errors == {"timeout": 4}
    with pytest.raises(ValueError, match="at least one window"):
        StepSummary.from_windows([])
