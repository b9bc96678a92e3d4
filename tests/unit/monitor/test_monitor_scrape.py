"""The monitor's pure core: metrics text of mserve (hand-made, figures known) and of a real
Triton (captured) -> snapshots -> rates -> the table and JSON; the watch loop over a fake."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from mserve.cli.monitor import watch
from mserve.errors import ModelNotFound, Unavailable
from mserve.monitor.rates import Rates, bucket_increase, histogram_quantile, increase, rates
from mserve.monitor.scrape import metrics_url
from mserve.monitor.snapshot import MSERVE, TRITON, Snapshot, UnrecognisedMetrics, parse
from mserve.monitor.view import as_json, screen

DATA = Path(__file__).parents[2] / "data"
INF = float("inf")


def mserve_text(
    http_ok: int,
    bad: int,
    http_buckets: tuple[int, int, int],  # cumulative counts at le 0.001, 0.002, 0.005
    latency_sum: float,
    queue: tuple[float, int],
    compute: tuple[float, float, float],
    batches: tuple[int, int],  # executions, rows
    cpu: float,
) -> str:
    """mserve's /metrics as docs/metrics.md describes it: digits version 1 over two
    protocols (gRPC fixed at 5 requests), an unloaded version 2, iris loading, and 2 requests
    for an unknown model."""
    b1, b2, b5 = http_buckets
    n = http_ok + 5
    return f"""\
# HELP mserve_requests_total inference requests by outcome
# TYPE mserve_requests_total counter
mserve_requests_total{{model="digits",version="1",protocol="http",outcome="success"}} {http_ok}
mserve_requests_total{{model="digits",version="1",protocol="grpc",outcome="success"}} 5
mserve_requests_total{{model="digits",version="1",protocol="http",outcome="bad_request"}} {bad}
mserve_requests_total{{model="",version="",protocol="http",outcome="not_found"}} 2
# TYPE mserve_request_duration_seconds histogram
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="http",le="0.001"}} {b1}
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="http",le="0.002"}} {b2}
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="http",le="0.005"}} {b5}
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="http",le="+Inf"}} {b5}
mserve_request_duration_seconds_sum{{model="digits",version="1",protocol="http"}} {latency_sum}
mserve_request_duration_seconds_count{{model="digits",version="1",protocol="http"}} {b5}
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="grpc",le="0.001"}} 5
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="grpc",le="0.002"}} 5
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="grpc",le="0.005"}} 5
mserve_request_duration_seconds_bucket{{model="digits",version="1",protocol="grpc",le="+Inf"}} 5
mserve_request_duration_seconds_sum{{model="digits",version="1",protocol="grpc"}} 0.004
mserve_request_duration_seconds_count{{model="digits",version="1",protocol="grpc"}} 5
# TYPE mserve_queue_duration_seconds histogram
mserve_queue_duration_seconds_bucket{{model="digits",version="1",le="+Inf"}} {queue[1]}
mserve_queue_duration_seconds_sum{{model="digits",version="1"}} {queue[0]}
mserve_queue_duration_seconds_count{{model="digits",version="1"}} {queue[1]}
# TYPE mserve_compute_input_duration_seconds histogram
mserve_compute_input_duration_seconds_sum{{model="digits",version="1"}} {compute[0]}
mserve_compute_input_duration_seconds_count{{model="digits",version="1"}} {n}
# TYPE mserve_compute_infer_duration_seconds histogram
mserve_compute_infer_duration_seconds_sum{{model="digits",version="1"}} {compute[1]}
mserve_compute_infer_duration_seconds_count{{model="digits",version="1"}} {n}
# TYPE mserve_compute_output_duration_seconds histogram
mserve_compute_output_duration_seconds_sum{{model="digits",version="1"}} {compute[2]}
mserve_compute_output_duration_seconds_count{{model="digits",version="1"}} {n}
# TYPE mserve_batch_size histogram
mserve_batch_size_bucket{{model="digits",version="1",le="+Inf"}} {batches[0]}
mserve_batch_size_sum{{model="digits",version="1"}} {batches[1]}
mserve_batch_size_count{{model="digits",version="1"}} {batches[0]}
# TYPE mserve_queue_depth gauge
mserve_queue_depth{{model="digits",version="1"}} 3
# TYPE mserve_model_ready gauge
mserve_model_ready{{model="digits",version="1"}} 1
mserve_model_ready{{model="digits",version="2"}} 0
mserve_model_ready{{model="iris",version=""}} 0
# TYPE mserve_inflight_requests gauge
mserve_inflight_requests 4
# TYPE mserve_workers gauge
mserve_workers 2
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 104857600
"""


# before: 10 http requests of at most 1 ms; after: 100 more, 50 in (1, 2] ms, 50 in (2, 5] ms
BEFORE = mserve_text(10, 1, (5, 10, 10), 0.015, (0.01, 15), (0.001, 0.01, 0.002), (10, 15), 10.0)
AFTER = mserve_text(110, 3, (5, 60, 110), 0.265, (0.06, 115), (0.011, 0.11, 0.022), (35, 115), 11.5)


def mserve_rates() -> Rates:
    return rates(parse(BEFORE, 100.0), parse(AFTER, 102.0))


def test_mserve_text_becomes_per_model_sums_over_versions_and_protocols() -> None:
    snap = parse(AFTER, 5.0)
    assert (snap.flavour, snap.taken) == (MSERVE, 5.0)
    assert sorted(snap.models) == ["", "digits", "iris"]
    digits = snap.models["digits"]
    assert (digits.requests, digits.errors) == (118, 3)
    assert (digits.latency_count, digits.latency_sum) == (115, pytest.approx(0.269))
    assert digits.latency_buckets == ((0.001, 10), (0.002, 65), (0.005, 115), (INF, 115))
    assert (digits.executions, digits.rows, digits.queue_depth) == (35, 115, 3)
    assert digits.ready is True  # version 1 serves; version 2 does not
    assert snap.models["iris"].ready is False
    assert (snap.models[""].requests, snap.models[""].errors) == (2, 2)
    assert (snap.inflight, snap.workers, snap.cpu_seconds, snap.rss_bytes) == (
        4,
        2,
        11.5,
        100 * 2**20,
    )


def test_mserve_rates_and_percentiles_over_the_interval() -> None:
    r = mserve_rates()
    assert (r.flavour, r.interval_s, r.inflight) == (MSERVE, 2.0, 4)
    assert r.cpu == pytest.approx(0.75)
    digits = next(m for m in r.models if m.name == "digits")
    assert digits.rps == pytest.approx(51.0)  # 100 successes and 2 errors in 2 s
    assert digits.errors_per_s == pytest.approx(1.0)
    assert digits.mean_ms == pytest.approx(2.5)
    assert digits.p50_ms == pytest.approx(2.0)  # rank 50 ends the (1, 2] ms bucket
    assert digits.p99_ms == pytest.approx(4.94)  # 2 + 3 * 49 / 50
    assert digits.queue_ms == pytest.approx(0.5)
    assert digits.compute_ms == pytest.approx(1.3)
    assert digits.batch_avg == pytest.approx(4.0)
    assert (digits.requests_total, digits.errors_total, digits.queue_depth) == (118, 3, 3)
    iris = next(m for m in r.models if m.name == "iris")
    assert (iris.rps, iris.mean_ms, iris.p50_ms, iris.batch_avg, iris.ready) == (
        0,
        None,
        None,
        None,
        False,
    )


def test_model_filter_keeps_only_those_models() -> None:
    r = rates(parse(BEFORE, 0.0), parse(AFTER, 1.0), models={"iris"})
    assert [m.name for m in r.models] == ["iris"]


def test_a_restarted_server_counts_from_zero_not_backwards() -> None:
    assert increase(100, 130) == 30
    assert increase(100, 7) == 7
    r = rates(parse(AFTER, 0.0), parse(BEFORE, 1.0))  # every counter went down
    digits = next(m for m in r.models if m.name == "digits")
    assert digits.rps == 16  # all of BEFORE's requests are new
    assert digits.p50_ms is not None
    assert digits.p50_ms <= 1.0


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (INF, 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.125, buckets) == pytest.approx(0.05)  # the first starts at 0
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.4)
    assert histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None
    # a rank beyond the last finite bound gives that bound, as Prometheus does
    assert histogram_quantile(0.99, [(0.1, 1.0), (INF, 10.0)]) == pytest.approx(0.1)
    assert bucket_increase([(0.1, 2.0), (INF, 3.0)], [(0.1, 5.0), (INF, 9.0)]) == (
        (0.1, 3.0),
        (INF, 6.0),
    )


def test_a_real_triton_scrape_is_recognised() -> None:
    snap = parse((DATA / "triton_metrics.txt").read_text(), 0.0)
    assert snap.flavour == TRITON
    assert list(snap.models) == ["double"]
    m = snap.models["double"]
    # 20 requests of 1 to 4 rows (1+2+3+4 five times), each its own execution
    assert (m.requests, m.errors, m.rows, m.executions) == (20, 0, 50, 20)
    assert m.latency_count == 20
    assert m.latency_sum == pytest.approx(0.130492)  # microseconds -> seconds
    assert m.compute_sum == pytest.approx((1048 + 121844 + 3206) * 1e-6)
    assert m.latency_buckets == ()
    assert dict(m.latency_quantiles)[0.5] == pytest.approx(0.004137)
    assert (m.ready, m.queue_depth) == (None, 0)
    assert snap.host_cpu_utilization == pytest.approx(0.62)
    assert snap.inflight is None


def test_rates_between_two_real_triton_scrapes() -> None:
    # between the captures: 160 one-row requests from 8 threads, batched into 41 executions
    r = rates(
        parse((DATA / "triton_metrics.txt").read_text(), 10.0),
        parse((DATA / "triton_metrics_2.txt").read_text(), 12.0),
    )
    (m,) = r.models
    assert m.rps == pytest.approx(80.0)
    assert m.batch_avg == pytest.approx(160 / 41)
    assert m.mean_ms == pytest.approx((1781058 - 130492) / 160 / 1000)
    assert m.p50_ms is not None
    assert m.p99_ms is not None
    assert 0 < m.p50_ms <= m.p99_ms
    assert m.requests_total == 180
    assert r.cpu is None


def test_triton_without_summaries_shows_the_mean_only() -> None:
    text = "\n".join(
        line
        for line in (DATA / "triton_metrics_2.txt").read_text().splitlines()
        if "_summary_" not in line
    )
    r = rates(parse((DATA / "triton_metrics.txt").read_text(), 0.0), parse(text, 1.0))
    (m,) = r.models
    assert (m.p50_ms, m.p99_ms) == (None, None)
    assert m.mean_ms is not None


@pytest.mark.parametrize(
    "text",
    [
        "# TYPE python_gc_objects_collected counter\npython_gc_objects_collected_total 3\n",
        "",
        "<html><body>Not metrics</body></html>",
    ],
    ids=["other-metrics", "empty", "html"],
)
def test_text_without_known_metrics_is_refused_with_what_was_expected(text: str) -> None:
    with pytest.raises(UnrecognisedMetrics) as info:
        parse(text, 0.0)
    assert "Prometheus" in str(info.value) or "mserve_requests" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/metrics"),
        ("127.0.0.1:8002", "http://127.0.0.1:8002/metrics"),
        ("http://host:9000/metrics", "http://host:9000/metrics"),
        ("http://host/prefix/", "http://host/prefix/metrics"),
    ],
)
def test_metrics_url(url: str, expected: str) -> None:
    assert metrics_url(url) == expected


def test_metrics_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="scheme"):
        metrics_url("ftp://host/metrics")


def test_table_and_json_show_the_figures() -> None:
    r = mserve_rates()
    out = Console(file=io.StringIO(), width=160, color_system=None)
    out.print(screen("http://h:1/metrics", r, 65.0))
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "http://h:1/metrics  (mserve)  up 1:05" in text
    assert "in-flight 4" in text
    assert "CPU 0.75 cores" in text
    assert "RSS 100.0 MiB" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("digits"))
    # model ready req/s err/s mean p50 p99 queue compute batch queued requests errors
    assert " ".join(row) == "digits yes 51.0 1.0 2.500 2.000 4.940 0.500 1.300 4.00 3 118 3"
    assert any(line.startswith("(unknown)") for line in text.splitlines())
    doc = json.loads(json.dumps(as_json("http://h:1/metrics", r, 65.0, 1e9)))
    assert doc["flavour"] == "mserve"
    assert (doc["in_flight"], doc["workers"]) == (4, 2)
    digits = doc["models"]["digits"]
    assert (digits["requests_total"], digits["errors_total"], digits["ready"]) == (118, 3, True)
    assert digits["p99_ms"] == pytest.approx(4.94)


def test_watch_shows_count_refreshes_and_survives_a_failed_scrape() -> None:
    outcomes: list[Snapshot | Exception] = [
        parse(BEFORE, 0.0),
        parse(AFTER, 1.0),
        Unavailable("cannot reach http://x/metrics: refused"),
        parse(AFTER, 3.0),
    ]

    def scrape() -> Snapshot:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    shown: list[tuple[Rates | None, str]] = []
    watch(scrape, lambda r, e: shown.append((r, e)), 1.0, 3, sleep=lambda s: None)
    assert not outcomes
    assert [e for _, e in shown] == ["", "cannot reach http://x/metrics: refused", ""]
    first, _, last = (r for r, _ in shown)
    assert first is not None
    assert last is not None
    assert first.interval_s == 1.0
    assert last.interval_s == 2.0  # against the last good scrape
    assert next(m for m in last.models if m.name == "digits").rps == 0


def test_watch_fails_at_once_on_a_bad_first_scrape_or_an_unknown_model() -> None:
    def unreachable() -> Snapshot:
        raise Unavailable("cannot reach http://x/metrics: refused")

    with pytest.raises(Unavailable):
        watch(unreachable, lambda r, e: None, 1.0, 1, sleep=lambda s: None)
    with pytest.raises(ModelNotFound, match="known models: digits, iris"):
        watch(lambda: parse(BEFORE, 0.0), lambda r, e: None, 1.0, 1, ["resnet"])
