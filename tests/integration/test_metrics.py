"""``/metrics`` of a real server: after a known number of requests, successes and failures, the
counters and histograms say exactly that; several workers are summed; a real Prometheus scrapes
it; input drift shows when what the model sees moves away from the reference."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from mserve.config import DriftConfig, DynamicBatching, ModelConfig, TensorSpec
from mserve.server.process import free_port

pytestmark = pytest.mark.integration

TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)
LOOKUP = ModelConfig(
    "lookup",
    inputs=(TensorSpec("INDEX", "INT64", (-1, 1)),),
    outputs=(TensorSpec("OUTPUT", "FP32", (-1, 1, 3)),),
    max_batch_size=8,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> tuple[str, Samples]:
    """The content type and every sample of ``/metrics``, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        ctype = r.headers["Content-Type"]
        text = r.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return ctype, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of one histogram series, in bound order."""
    want = set(labels.items())
    found = [
        (float(dict(k)["le"]), v)
        for (n, k), v in samples.items()
        if n == f"{name}_bucket" and want <= set(k) and len(k) == len(want) + 1
    ]
    return sorted(found)


@pytest.fixture
def repository(tmp_path: Path, place: Any, digits_model: Any, onnx_factory: Any) -> Path:
    """digits (dynamic batching, a bounded queue) and lookup (fails on an index off its table)."""
    root = tmp_path / "repo"
    config = replace(digits_model.config, dynamic_batching=DynamicBatching(max_queue_size=32))
    place(root, "digits", {1: digits_model.onnx}, config=config)
    place(root, "lookup", {1: onnx_factory.lookup(TABLE)}, config=LOOKUP)
    return root


def digits_input(rows: np.ndarray) -> list[Any]:
    inp = httpclient.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=True)
    return [inp]


def lookup_input(index: int) -> list[Any]:
    inp = httpclient.InferInput("INDEX", [1, 1], "INT64")
    inp.set_data_from_numpy(np.array([[index]], np.int64))
    return [inp]


def test_counters_and_histograms_say_exactly_what_happened(
    repository: Path, start_server: Any, digits_model: Any
) -> None:
    server = start_server(repository)
    client = httpclient.InferenceServerClient(server.address)
    x = digits_model.x_test
    rows_sent = 0
    try:
        for i in range(30):
            rows = x[i : i + 1 + i % 3]  # 1, 2 or 3 rows
            rows_sent += len(rows)
            result = client.infer("digits", digits_input(rows))
            np.testing.assert_array_equal(
                result.as_numpy("label"), digits_model.estimator.predict(rows)
            )
        for _ in range(4):  # wrong width: 400
            with pytest.raises(InferenceServerException, match="does not match"):
                client.infer("digits", digits_input(x[:1, :10]))
        for _ in range(2):  # no such model: 404, counted without the name
            with pytest.raises(InferenceServerException, match="unknown model"):
                client.infer("no_such_model", digits_input(x[:1]))
        for _ in range(3):  # off the table: the model raises, 500
            with pytest.raises(InferenceServerException, match="failed"):
                client.infer("lookup", lookup_input(99))
        for i in range(5):
            out = client.infer("lookup", lookup_input(i)).as_numpy("OUTPUT")
            np.testing.assert_array_equal(out, TABLE[[i]][:, None, :])
    finally:
        client.close()

    ctype, s = scrape(server.address)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    d = {"model": "digits", "version": "1"}
    total = "mserve_requests_total"
    assert value(s, total, **d, protocol="http", outcome="success") == 30
    assert value(s, total, **d, protocol="http", outcome="bad_request") == 4
    assert value(s, total, model="", version="", protocol="http", outcome="not_found") == 2
    lk = {"model": "lookup", "version": "1", "protocol": "http"}
    assert value(s, total, **lk, outcome="model_error") == 3
    assert value(s, total, **lk, outcome="success") == 5
    assert sum(v for (n, _), v in s.items() if n == total) == 44

    # the end-to-end histogram counts the successes, and its buckets are cumulative
    e2e = buckets(s, "mserve_request_duration_seconds", **d, protocol="http")
    assert e2e[-1] == (float("inf"), 30)
    assert [c for _, c in e2e] == sorted(c for _, c in e2e)
    assert value(s, "mserve_request_duration_seconds_count", **d, protocol="http") == 30
    assert value(s, "mserve_request_duration_seconds_sum", **d, protocol="http") > 0
    # the breakdown is filled: one observation per successful request and phase
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert value(s, f"mserve_{phase}_duration_seconds_count", **d) == 30, phase
    assert value(s, "mserve_compute_infer_duration_seconds_sum", **d) > 0
    e2e_sum = value(s, "mserve_request_duration_seconds_sum", **d, protocol="http")
    assert value(s, "mserve_compute_infer_duration_seconds_sum", **d) < e2e_sum
    # rows per execution: every row sent was computed once
    assert value(s, "mserve_batch_size_sum", **d) == rows_sent
    assert 1 <= value(s, "mserve_batch_size_count", **d) <= 30
    # gauges: the models and the process
    assert value(s, "mserve_model_ready", **d) == 1
    assert value(s, "mserve_model_state", **d, state="READY") == 1
    assert value(s, "mserve_model_load_duration_seconds", **d) > 0
    assert value(s, "mserve_queue_capacity", **d) == 32
    assert value(s, "mserve_queue_capacity", model="lookup", version="1") == 0
    assert value(s, "mserve_queue_depth", **d) == 0
    assert value(s, "mserve_inflight_requests") == 1  # this scrape
    assert value(s, "mserve_workers") == 1
    assert value(s, "process_cpu_seconds_total") > 0
    assert value(s, "process_resident_memory_bytes") > 20e6
    assert value(s, "process_start_time_seconds") > time.time() - 600


def test_every_worker_answers_for_all_of_them(repository: Path, start_server: Any) -> None:
    server = start_server(repository, args=["--workers", "2"])
    body = json.dumps(
        {"inputs": [{"name": "INDEX", "shape": [1, 1], "datatype": "INT64", "data": [3]}]}
    )
    for _ in range(40):  # a connection each, so the kernel spreads them over the workers
        r = server.request("POST", "/v2/models/lookup/infer", body)
        assert r.status == 200, r.body
    key = ("mserve_requests_total", "lookup", "success")
    deadline = time.monotonic() + 10
    seen: list[float] = []
    while time.monotonic() < deadline:
        _, s = scrape(server.address)
        labels = (("model", key[1]), ("outcome", key[2]), ("protocol", "http"), ("version", "1"))
        seen.append(s.get((key[0], labels), 0.0))  # absent until a worker with counts reports
        if seen[-5:] == [40.0] * 5 and value(s, "mserve_workers") == 2:
            break
        time.sleep(0.2)
    assert seen[-5:] == [40.0] * 5, seen
    assert value(s, "mserve_workers") == 2


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """start(target) -> base URL of a real Prometheus scraping ``target`` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is missing (apt-get install prometheus; scripts/test does)")
    procs: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("wb")

    def start(target: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: mserve\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(
            f"prometheus did not start:\n{(tmp_path / 'prometheus.log').read_text()}"
        )

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)
    log.close()


def promql(url: str, query: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]  # type: ignore[no-any-return]


def test_a_real_prometheus_scrapes_the_request_rate(
    repository: Path, start_server: Any, prometheus: Any
) -> None:
    server = start_server(repository)
    url = prometheus(server.address)
    stop = threading.Event()
    sent = 0

    def traffic() -> None:  # about 50 requests a second for at most 20 s
        nonlocal sent
        conn = http.client.HTTPConnection(server.process.host, server.process.port, timeout=10)
        body = json.dumps(
            {"inputs": [{"name": "INDEX", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}
        )
        deadline = time.monotonic() + 20
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                conn.request("POST", "/v2/models/lookup/infer", body)
                assert conn.getresponse().read()
                sent += 1
                time.sleep(0.02)
        finally:
            conn.close()

    sender = threading.Thread(target=traffic)
    sender.start()
    rate: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not rate:
            time.sleep(1)
            rate = promql(
                url, 'sum by (model) (rate(mserve_requests_total{outcome="success"}[5s])) > 0'
            )
    finally:
        stop.set()
        sender.join()
    assert rate, "Prometheus never saw a request rate"
    assert rate[0]["metric"] == {"model": "lookup"}
    assert 5 < float(rate[0]["value"][1]) < 500  # about 50/s; wide, the machine is shared
    # once traffic stopped, the next scrape holds the exact count
    deadline = time.monotonic() + 15
    total: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        total = promql(url, 'mserve_requests_total{model="lookup",outcome="success"}')
        if total and float(total[0]["value"][1]) == sent:
            break
        time.sleep(0.5)
    assert total
    assert float(total[0]["value"][1]) == sent
    assert total[0]["metric"]["job"] == "mserve"
    up = promql(url, "up")
    assert [float(u["value"][1]) for u in up] == [1.0]


def test_input_drift_shows_when_inputs_move_away_from_the_reference(
    tmp_path: Path, place: Any, digits_model: Any, start_server: Any
) -> None:
    root = tmp_path / "repo"
    x = digits_model.x_test
    reference, live = x[:225], x[225:]
    config = replace(digits_model.config, drift=DriftConfig("reference.npz", half_life_s=0.5))
    folder = place(root, "digits", {1: digits_model.onnx}, config=config)
    np.savez(folder / "reference.npz", input=reference)
    server = start_server(root)
    client = httpclient.InferenceServerClient(server.address)
    labels = {"model": "digits", "version": "1", "input": "input"}

    def send(rows: np.ndarray) -> None:
        for i in range(0, len(rows), 10):
            client.infer("digits", digits_input(np.ascontiguousarray(rows[i : i + 10])))

    try:
        send(live)
        _, same = scrape(server.address)
        time.sleep(3)  # six half-lives: the window forgets the first traffic
        shifted = np.clip(live * 0.5 + 0.5, 0, 1).astype(np.float32)  # paler and brighter
        send(shifted)
        _, moved = scrape(server.address)
    finally:
        client.close()

    assert value(same, "mserve_input_drift_psi", **labels) < 0.1
    assert value(moved, "mserve_input_drift_psi", **labels) > 0.25
    assert value(moved, "mserve_input_mean", **labels) == pytest.approx(
        float(shifted.mean()), rel=0.02
    )
    assert value(same, "mserve_input_reference_mean", **labels) == pytest.approx(
        float(reference.mean()), rel=1e-5
    )
    assert value(moved, "mserve_input_feature_shift", **labels) > value(
        same, "mserve_input_feature_shift", **labels
    )
    # the cumulative histogram counts every element of both passes, in bins at the deciles
    elements = 2 * live.size
    assert value(moved, "mserve_input_values_count", **labels) == elements
    bins = buckets(moved, "mserve_input_values", **labels)
    assert bins[-1] == (float("inf"), elements)
    assert 2 <= len(bins) <= 11
