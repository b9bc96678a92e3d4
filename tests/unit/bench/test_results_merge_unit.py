"""Merging concurrent workers' results: exact histograms and sums, loads that add up, verdicts
that keep each worker's reasons, the overlap check, and refusals that name the file and field."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from mserve.bench import gates
from mserve.bench.generator import Load, WindowRecord
from mserve.bench.histogram import Histogram
from mserve.bench.merge import Mismatch, merge_results
from mserve.bench.report import render
from mserve.bench.result import Settings, new_result, summarize_step
from mserve.bench.store import RunSummary
from mserve.bench.targets.base import ServerStats

SETTINGS = Settings(warmup_s=0.5, window_s=1.0, duration_s=2.0)
TARGET = {"protocol": "v2-json", "url": "http://svc:8000", "model": "digits", "version": None}
T0 = 1_700_000_000.0  # a wall-clock time, Unix seconds


def window(index: int, latencies_us: np.ndarray, errors: int = 0) -> WindowRecord:
    w = WindowRecord(index, index * 1_000_000_000, (index + 1) * 1_000_000_000)
    w.latency.record_array(latencies_us)
    w.service.record_array(latencies_us)
    w.ok = w.sent = len(latencies_us)
    w.errors = {"http_503": errors} if errors else {}
    return w


def worker_step(
    seed: int,
    load: Load,
    start_s: float = T0,
    errors: int = 0,
    server: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """A step as summarize_step writes it from two 1-second windows of log-normal latencies,
    measured from ``start_s`` on the wall clock; and the latencies themselves."""
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(np.log(3000), 0.6, size=(2, 400 + 50 * seed)).astype(np.int64)
    windows = [window(i, samples[i], errors) for i in range(2)]
    before = after = None
    if server:
        before = ServerStats(0, 0, 0, 0, 0, 0, 0, 0)
        after = ServerStats(1000, 1000, 500, 2_000_000_000, 1_000_000_000, 0, 500_000_000, 0)
    step = summarize_step(
        load,
        SETTINGS,
        windows,
        WindowRecord(-1, 0, 0),
        WindowRecord(-1, 0, 0),
        1,
        before,
        after,
        4,
        int(start_s * 1e9),
    )
    return step, samples.ravel()


def doc(steps: list[dict[str, Any]], **target: Any) -> dict[str, Any]:
    d = new_result({**TARGET, **target}, SETTINGS, ["bench", "http://svc:8000", "-m", "digits"])
    d["steps"] = steps
    return d


CLOSED = Load("closed", concurrency=2)


def three_workers(load: Load = CLOSED, skew_s: float = 0.0) -> Any:
    """Three workers' documents (one step each) and their pooled latencies."""
    sources, pooled = [], []
    for i in range(3):
        step, samples = worker_step(i, load, T0 + i * skew_s, errors=i, server=i == 1)
        sources.append((f"worker-{i}.json", doc([step])))
        pooled.append(samples)
    return sources, np.concatenate(pooled)


def test_counts_histograms_and_percentiles_are_exact() -> None:
    sources, pooled = three_workers()
    merged = merge_results(sources, ["results", "merge"])
    step = merged["steps"][0]
    parts = [s["steps"][0] for _, s in sources]
    assert step["count"] == sum(p["count"] for p in parts) == len(pooled)
    assert step["errors"] == {"http_503": 2 * (1 + 2)}
    assert step["error_count"] == 6
    assert step["throughput_rps"] == pytest.approx(sum(p["throughput_rps"] for p in parts))
    # bucket by bucket, the merged histogram is the sum of the three
    expected: dict[int, int] = {}
    for p in parts:
        for i, c in p["histogram"]["buckets"]:
            expected[i] = expected.get(i, 0) + c
    assert dict(map(tuple, step["histogram"]["buckets"])) == expected
    # every figure is that of one histogram of all the samples
    whole = Histogram()
    whole.record_array(pooled)
    ps = whole.percentiles([50, 90, 99, 99.9])
    lat = step["latency_ms"]
    assert [lat["p50"], lat["p90"], lat["p99"], lat["p999"]] == [
        round(ps[p] / 1000, 3) for p in (50, 90, 99, 99.9)
    ]
    assert lat["max"] == round(int(pooled.max()) / 1000, 3)
    assert lat["min"] == round(int(pooled.min()) / 1000, 3)
    assert step["latency_ci_ms"]["p99"] == [round(v / 1000, 3) for v in whole.percentile_ci(99)]
    assert merged["steps"][0]["load"] == {"mode": "closed", "concurrency": 6}
    assert merged["settings"]["workers"] == 3


def test_the_merged_document_is_a_run_like_any_other() -> None:
    sources, _ = three_workers()
    merged = merge_results(sources, ["results", "merge", "a", "b", "c"], run_id="abcdef123456")
    assert RunSummary.of(merged).id == "abcdef123456"
    assert [m["file"] for m in merged["merged_from"]] == [
        "worker-0.json",
        "worker-1.json",
        "worker-2.json",
    ]
    assert merged["merged_from"][0]["command"] == ["bench", "http://svc:8000", "-m", "digits"]
    assert "c=6" in render(merged, "md")
    regressions, changes, missing = gates.check_fail_on(
        merged, copy.deepcopy(merged), gates.parse_fail_on("p99>+10%")
    )
    assert (regressions, missing) == ([], [])
    assert changes


def test_server_breakdown_is_one_workers_and_says_which() -> None:
    sources, _ = three_workers()
    server = merge_results(sources, [])["steps"][0]["server"]
    assert server["scraped_by"] == "worker-1.json"
    assert server["requests"] == 1000  # not summed: every worker read the same counters


def test_timeline_merges_by_window_index() -> None:
    sources, _ = three_workers()
    merged = merge_results(sources, [])["steps"][0]
    parts = [s["steps"][0]["timeline"] for _, s in sources]
    assert len(merged["timeline"]) == 2
    for k, w in enumerate(merged["timeline"]):
        assert w["throughput_rps"] == pytest.approx(sum(p[k]["throughput_rps"] for p in parts))
        assert w["p99_ms"] == max(p[k]["p99_ms"] for p in parts)  # an upper bound
        assert w["errors"] == sum(p[k]["errors"] for p in parts)


def test_open_loop_rates_add_up() -> None:
    share = Load("open", rate=1000 / 3, arrival="poisson")
    sources, _ = three_workers(share)
    step = merge_results(sources, [])["steps"][0]
    assert step["load"]["rate"] == 1000.0
    assert step["load"]["arrival"] == "poisson"
    assert step["requested_rate_rps"] == 1000.0
    lags = [s["steps"][0]["send_lag_ms"]["max"] for _, s in sources]
    assert step["send_lag_ms"]["max"] == max(lags)


def test_an_invalid_worker_makes_the_step_invalid_with_its_name() -> None:
    sources, _ = three_workers()
    bad = sources[2][1]["steps"][0]
    bad["verdict"], bad["reasons"] = "INVALID", ["the generator's CPU was 97% busy"]
    step = merge_results(sources, [])["steps"][0]
    assert step["verdict"] == "INVALID"
    assert step["reasons"] == ["worker-2.json: the generator's CPU was 97% busy"]


def test_overlap_of_the_measurements() -> None:
    together, _ = three_workers(skew_s=0.05)
    merged = merge_results(together, [])
    overlap = merged["steps"][0]["overlap"]
    assert overlap == {"span_s": 2.1, "overlap_s": 1.9, "pct": 90.5}
    assert merged["merge_warnings"] == []
    assert merged["steps"][0]["measured_unix_s"] == [T0, T0 + 2.1]
    apart, _ = three_workers(skew_s=0.5)
    merged = merge_results(apart, [])
    assert merged["steps"][0]["overlap"]["pct"] == pytest.approx(33.3)
    [warning] = merged["merge_warnings"]
    assert warning.startswith("step 1 (c=6): the workers measured together for 1.0 s of a 3.0 s")


def test_results_without_wall_clock_times_merge_with_a_warning() -> None:
    sources, _ = three_workers()
    del sources[1][1]["steps"][0]["measured_unix_s"]
    merged = merge_results(sources, [])
    assert merged["steps"][0]["overlap"] is None
    assert "worker-1.json: no wall-clock interval" in merged["merge_warnings"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["target"].update(model="iris"), "target.model is 'iris', but 'digits'"),
        (lambda d: d["settings"].update(window_s=2.0), "settings.window_s is 2.0, but 1.0"),
        (lambda d: d["steps"][0]["load"].update(concurrency=4), "the load of step 1 is 'c=4'"),
        (lambda d: d["steps"].append(d["steps"][0]), "the number of steps is 2, but 1"),
        (
            lambda d: d["steps"][0].update(histogram=Histogram(significant_figures=2).to_dict()),
            "the histogram layout is (1, 3600000000, 2)",
        ),
    ],
)
def test_mismatches_name_the_file_and_the_field(change: Any, message: str) -> None:
    sources, _ = three_workers()
    change(sources[2][1])
    with pytest.raises(Mismatch) as info:
        merge_results(sources, [])
    assert str(info.value).startswith(f"worker-2.json: {message}")
    assert "in worker-0.json" in str(info.value)


def test_what_cannot_be_merged_at_all() -> None:
    sources, _ = three_workers()
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_results([], [])
    with pytest.raises(ValueError, match=r"worker-1\.json: not a benchmark result"):
        merge_results([sources[0], ("worker-1.json", {"schema": "other"})], [])
    sources[0][1]["slo"] = {"objective": "p99<=5ms"}
    with pytest.raises(ValueError, match=r"worker-0\.json: an SLO search"):
        merge_results(sources, [])
