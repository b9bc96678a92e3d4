"""``--metrics-port``: /metrics and the health routes on a port of their own (as Triton's
8002), counting what the HTTP port served, and nothing else there; keys still apply."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import numpy as np

from mserve.server.process import free_port


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_metrics_port_serves_the_scrape_and_probes_only(
    tmp_path: Path, start_server: Any, place: Any, digits_model: Any
) -> None:
    import tritonclient.http as httpclient

    place(tmp_path, "digits", {1: digits_model.onnx}, config=digits_model.config)
    (tmp_path / "keys").write_text(
        "scraper-key-0123456789 metrics\nclient-key-0123456789 inference\n"
    )
    metrics_port = free_port()
    served = start_server(
        tmp_path, args=["--metrics-port", str(metrics_port), "--api-keys", str(tmp_path / "keys")]
    )
    client = httpclient.InferenceServerClient(served.address)
    key = {"Authorization": "Bearer client-key-0123456789"}
    x = digits_model.x_test[:5]
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    labels = client.infer("digits", [inp], headers=key).as_numpy("label")
    np.testing.assert_array_equal(labels, digits_model.estimator.predict(x))

    scraper = {"Authorization": "Bearer scraper-key-0123456789"}
    status, body = _get(metrics_port, "/metrics", scraper)
    assert status == 200
    assert (
        'mserve_requests_total{model="digits",version="1",protocol="http",outcome="success"} 1'
        in body.decode()
    )
    assert _get(metrics_port, "/metrics")[0] == 401  # the metrics scope applies here too
    assert _get(metrics_port, "/metrics", key)[0] == 403
    assert _get(metrics_port, "/v2/health/ready") == (200, b'{"ready":true}')
    assert _get(metrics_port, "/v2/health/live")[0] == 200

    status, body = _get(metrics_port, "/v2/models/digits", scraper)
    assert status == 404
    assert json.loads(body)["error"] == (
        "no route for GET /v2/models/digits: the metrics port serves GET /metrics, "
        "/v2/health/live, /v2/health/ready"
    )
