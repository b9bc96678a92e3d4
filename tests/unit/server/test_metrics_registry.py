"""The metrics registry: recording, summing several workers' snapshots, the text format."""

from __future__ import annotations

import math
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mserve.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailure,
    ModelNotFound,
    ModelNotReady,
    ServerBusy,
)
from mserve.server.dashboard import History
from mserve.server.metrics import (
    BATCH_BUCKETS,
    LATENCY_BUCKETS,
    Registry,
    ServerMetrics,
    merge,
    outcome_of,
    render,
)


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


def test_outcomes_follow_the_error_classes() -> None:
    assert outcome_of(None) == "success"
    assert outcome_of(InvalidInput("m", "x", "bad")) == "bad_request"
    assert outcome_of(ModelNotFound("m")) == "not_found"
    assert outcome_of(ModelNotReady("m", "1", "LOADING")) == "unavailable"
    assert outcome_of(ServerBusy("m", "1", 3, 3)) == "overloaded"
    assert outcome_of(DeadlineExceeded("m", "1", 10, 5)) == "timeout"
    assert outcome_of(ModelFailure("m", "1", "boom")) == "model_error"
    assert outcome_of(KeyError("x")) == "internal"


def test_histograms_count_into_the_bucket_whose_bound_is_at_or_above() -> None:
    m = ServerMetrics()
    for seconds in (0.0001, 0.00011, 0.001, 0.5, 60.0):
        m.request("digits", "1", "http", "success", seconds)
    m.request("digits", "1", "http", "bad_request", 0.2)  # counted, not timed
    text = render(merge([m.registry.snapshot()], lambda pid: True))
    s = parse(text)
    lab = (("model", "digits"), ("protocol", "http"), ("version", "1"))

    def bucket(le: str) -> float:
        return s[("mserve_request_duration_seconds_bucket", tuple(sorted((*lab, ("le", le)))))]

    assert bucket("0.0001") == 1  # le is inclusive
    assert bucket("0.00025") == 2
    assert bucket("0.001") == 3
    assert bucket("0.5") == 4
    assert bucket("10") == 4
    assert bucket("+Inf") == 5
    assert s[("mserve_request_duration_seconds_count", lab)] == 5
    assert s[("mserve_request_duration_seconds_sum", lab)] == pytest.approx(60.50121)
    ok = (("model", "digits"), ("outcome", "success"), ("protocol", "http"), ("version", "1"))
    bad = (("model", "digits"), ("outcome", "bad_request"), ("protocol", "http"), ("version", "1"))
    assert s[("mserve_requests_total", ok)] == 5
    assert s[("mserve_requests_total", bad)] == 1


def test_label_values_are_escaped() -> None:
    r = Registry()
    fam = r.counter("x_total", "Odd labels.", ("name",))
    fam.labels('a"b\\c\nd').inc(2)
    s = parse(render(merge([r.snapshot()], lambda pid: True)))
    assert s[("x_total", (("name", 'a"b\\c\nd'),))] == 2


def _snapshot(pid: int, requests: float, in_flight: float, ready: float) -> dict:
    r = Registry()
    r.counter("c_total", "c", ("model",)).labels("a").inc(requests)
    g = r.gauge("g", "g")
    ready_gauge = r.gauge("ready", "r", ("model",), merge="min")
    r.on_collect(lambda: g.set(in_flight))  # gauges are set from live state at each snapshot
    r.on_collect(lambda: ready_gauge.set(ready, "a"))
    r.histogram("h", "h", (), (1.0, 2.0)).labels().observe(requests)
    snap = r.snapshot()
    snap["pid"] = pid
    return snap


def test_workers_are_summed_and_a_dead_workers_gauges_are_dropped() -> None:
    live = {1, 2}
    merged = merge(
        [_snapshot(1, 3, 2, 1), _snapshot(2, 4, 5, 0), _snapshot(3, 10, 7, 1)],
        lambda pid: pid in live,
    )
    # counters and histograms of all three (the dead worker's counts stay)
    assert merged["c_total"]["samples"][("a",)] == 17
    counts, total, _bounds = merged["h"]["samples"][()]
    assert counts == [0, 0, 3]
    assert total == 17
    # gauges of the live ones: summed, or the smallest for "min"
    assert merged["g"]["samples"][()] == 7
    assert merged["ready"]["samples"][("a",)] == 0
    assert merged["mserve_workers"]["samples"][()] == 2


def test_the_process_figures_are_this_process() -> None:
    s = parse(render(merge([ServerMetrics().registry.snapshot()], lambda pid: True)))
    assert s[("process_cpu_seconds_total", ())] > 0
    assert s[("process_resident_memory_bytes", ())] > 1e6
    assert s[("process_open_fds", ())] >= 3
    assert s[("mserve_workers", ())] == 1
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert f.read()  # Linux: the start time is read from here
    assert s[("process_start_time_seconds", ())] > 1e9


def test_history_derives_rates_percentiles_and_batches() -> None:
    m = ServerMetrics()
    h = History(LATENCY_BUCKETS, BATCH_BUCKETS, window_s=5)
    h.add(merge([m.registry.snapshot()], lambda pid: True), t=100.0)
    mm = m.model("digits", "1")
    for _ in range(50):
        m.request("digits", "1", "http", "success", 0.002)
        mm.success(queue_ns=1_000_000, input_ns=0, infer_ns=500_000, output_ns=0)
    for _ in range(10):
        mm.execution(5)
    m.request("digits", "1", "http", "model_error", 0.001)
    point = h.add(merge([m.registry.snapshot()], lambda pid: True), t=102.0)
    d = point["models"]["digits"]
    assert d["rps"] == pytest.approx(25.5)  # 51 requests over 2 s
    assert d["errors_per_s"] == pytest.approx(0.5)
    # every request took 2 ms, in the (1.5 ms, 2 ms] bucket: interpolated within it
    assert d["p50_ms"] == pytest.approx(1.75)
    assert d["p99_ms"] == pytest.approx(1.995)
    assert d["queue_ms"] == pytest.approx(1.0)
    assert d["compute_ms"] == pytest.approx(0.5)
    assert d["batch_avg"] == 5
    assert d["batch_sizes"] == {"8": 10}
    assert d["requests_total"] == 51
    assert d["errors_total"] == 1
    assert h.since(101.0) == [point]
    for t in range(103, 110):
        h.add(merge([m.registry.snapshot()], lambda pid: True), t=float(t))
    assert len(h.points) == 5  # the window
    assert h.points[-1]["models"]["digits"]["rps"] == 0


def test_nan_gauges_render_as_prometheus_reads_them() -> None:
    r = Registry()
    g = r.gauge("g", "g")
    r.on_collect(lambda: g.set(math.nan))
    s = parse(render(merge([r.snapshot()], lambda pid: True)))
    assert math.isnan(s[("g", ())])


def test_phase_durations_in_nanoseconds_land_in_the_same_buckets_as_seconds() -> None:
    m = ServerMetrics()
    mm = m.model("digits", "1")
    for ns in (100_000, 1_000_000, 1_000_001, 20_000_000_000):  # 0.1 ms, 1 ms, just over, 20 s
        mm.success(queue_ns=ns, input_ns=0, infer_ns=ns, output_ns=0)
    s = parse(render(merge([m.registry.snapshot()], lambda pid: True)))
    lab = (("model", "digits"), ("version", "1"))

    def bucket(le: str) -> float:
        key = tuple(sorted((*lab, ("le", le))))
        return s[("mserve_queue_duration_seconds_bucket", key)]

    assert bucket("0.0001") == 1  # inclusive, as in seconds
    assert bucket("0.001") == 2
    assert bucket("0.0015") == 3
    assert bucket("10") == 3
    assert bucket("+Inf") == 4
    assert s[("mserve_compute_infer_duration_seconds_sum", lab)] == pytest.approx(20.002100001)
    assert s[("mserve_compute_input_duration_seconds_count", lab)] == 4
