"""`mserve monitor` against a real server of its own: the table and the JSON lines show the
requests the test sent; an unreachable URL and a URL without metrics fail with their codes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from mserve.server.process import free_port

pytestmark = pytest.mark.integration

GOOD = 30
BAD = 3


def send(address: str, rows: np.ndarray, good: int, bad: int) -> None:
    """``good`` one-row requests to digits, and ``bad`` with a shape it refuses."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(address)
    try:
        for i in range(good):
            x = httpclient.InferInput("input", [1, 64], "FP32")
            x.set_data_from_numpy(rows[i % len(rows)].reshape(1, 64))
            client.infer("digits", [x])
        for _ in range(bad):
            x = httpclient.InferInput("input", [1, 3], "FP32")
            x.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
            with pytest.raises(InferenceServerException):
                client.infer("digits", [x])
    finally:
        client.close()


@pytest.fixture(scope="module")
def watched(
    tmp_path_factory: pytest.TempPathFactory,
    start_server: Any,
    place: Any,
    digits_model: Any,
    iris_model: Any,
) -> Any:
    """A server of its own (no other test's traffic), after GOOD + BAD requests to digits."""
    root = tmp_path_factory.mktemp("monitored")
    place(root, "digits", {1: digits_model.onnx}, config=digits_model.config)
    place(root, "iris", {1: iris_model.onnx})
    server = start_server(root)
    send(server.address, digits_model.x_test, GOOD, BAD)
    return server


def test_table_shows_each_model_with_its_totals(watched: Any, mserve_cli: Any) -> None:
    url = f"http://{watched.address}"
    result = mserve_cli("monitor", url, "--count", "2", "--interval", "0.5")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "\x1b[" not in text  # captured: plain text, no terminal codes
    assert text.count(f"{url}/metrics  (mserve)") == 2  # one header per refresh
    digits = [line.split() for line in text.splitlines() if line.startswith("digits ")]
    iris = [line.split() for line in text.splitlines() if line.startswith("iris ")]
    assert len(digits) == len(iris) == 2
    # model ready req/s err/s mean p50 p99 queue compute batch queued requests errors
    assert digits[-1][1] == "yes"
    assert digits[-1][-2:] == [str(GOOD + BAD), str(BAD)]
    assert digits[-1][2:4] == ["0.0", "0.0"]  # nothing was sent while it watched
    assert iris[-1][1] == "yes"
    assert iris[-1][-2:] == ["0", "0"]


def test_json_lines_count_the_requests_sent_while_watching(watched: Any, digits_model: Any) -> None:
    url = f"http://{watched.address}"
    cmd = [sys.executable, "-m", "mserve", "monitor", url, "--json", "--model", "digits"]
    with subprocess.Popen(
        [*cmd, "--count", "12", "--interval", "0.25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            first = json.loads(proc.stdout.readline())
            before = first["models"]["digits"]["requests_total"]
            send(watched.address, digits_model.x_test, 40, 0)  # while it watches
            rest, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    lines = [first] + [json.loads(line) for line in rest.splitlines()]
    assert len(lines) == 12
    for line in lines:
        assert line["flavour"] == "mserve"
        assert list(line["models"]) == ["digits"]  # --model keeps only digits
        assert line["in_flight"] >= 0
        assert line["rss_bytes"] > 0
    assert before >= GOOD + BAD
    figures = [line["models"]["digits"] for line in lines]
    assert figures[-1]["requests_total"] == before + 40
    assert figures[-1]["errors_total"] == BAD
    sent = sum(f["rps"] * line["interval_s"] for f, line in zip(figures, lines, strict=True))
    assert sent == pytest.approx(40, abs=0.5)  # rates over the intervals add up to the traffic
    busy = [f for f in figures[1:] if f["rps"] > 0]
    assert busy
    assert all(f["p50_ms"] > 0 and f["p99_ms"] >= f["p50_ms"] for f in busy)
    assert all(f["batch_avg"] >= 1 for f in busy)


def test_unreachable_url_exits_5_and_says_so(mserve_cli: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = mserve_cli("monitor", url, "--count", "1", "--timeout", "2")
    assert result.returncode == 5
    assert f"cannot reach {url}/metrics: " in result.stderr


def test_url_without_metrics_exits_4_and_says_what_was_expected(
    watched: Any, mserve_cli: Any
) -> None:
    url = f"http://{watched.address}/v2/models/digits/metrics"
    result = mserve_cli("monitor", url, "--count", "1")
    assert result.returncode == 4
    assert f"{url} answered HTTP 404" in result.stderr
    assert "expected Prometheus metrics" in result.stderr
