"""The ``mserve`` command end to end: version, help, a missing repository, and the quickstart
(train on scikit-learn's digits, serve, call over V2, compare)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mserve
from mserve.server.process import free_port

pytestmark = pytest.mark.integration


def test_version(mserve_cli: Any) -> None:
    result = mserve_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mserve {mserve.__version__}"


def test_serve_help_lists_every_option(mserve_cli: Any) -> None:
    result = mserve_cli("serve", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: mserve serve ")
    for option in (
        "REPO",
        "--host",
        "--port",
        "--grpc-port",
        "--workers",
        "--max-body-mb",
        "--log-level",
    ):
        assert option in result.stdout
    assert "Open Inference Protocol V2" in result.stdout


def test_serve_refuses_a_missing_repository(tmp_path: Path, mserve_cli: Any) -> None:
    missing = tmp_path / "nowhere"
    result = mserve_cli("serve", str(missing), "--port", str(free_port()))
    assert result.returncode == 3  # a config or repository problem
    assert result.stderr.strip() == (
        f"mserve: error: {missing}: not a directory; expected a model repository"
    )


def test_unknown_command_is_a_usage_error(mserve_cli: Any) -> None:
    result = mserve_cli("sever")
    assert result.returncode == 2
    assert "invalid choice: 'sever'" in result.stderr


def test_quickstart_json(tmp_path: Path, mserve_cli: Any) -> None:
    result = mserve_cli("quickstart", "--json", "--dir", str(tmp_path), timeout=150)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == "digits"
    assert doc["agreement"] == 1.0
    assert doc["accuracy_served"] > 0.9
    assert doc["accuracy_served"] == doc["accuracy_in_process"]
    assert doc["max_abs_prob_diff"] < 1e-4
    assert doc["test_rows"] == 450  # a quarter of the 1797 digits
    assert doc["requests"] == 29  # batches of 16
    assert doc["repository"] == str(tmp_path / "models")
    assert (tmp_path / "models" / "digits" / "1" / "model.onnx").is_file()
    assert (tmp_path / "models" / "digits" / "config.yaml").is_file()
    assert set(doc["seconds"]) == {"train", "convert", "start", "infer", "bench"}
    sweep = doc["bench"]["steps"]
    assert [s["load"]["concurrency"] for s in sweep] == [1, 4, 16]
    assert all(s["error_count"] == 0 and s["count"] > 0 for s in sweep)
    # int8 made by mserve convert's pipeline, checked on the test images, measured the same way
    assert doc["conversion"]["kept"] == ["digits", "digits-int8-dynamic"]
    assert doc["conversion"]["accuracy"]["digits"] == doc["accuracy_in_process"]
    assert doc["conversion"]["accuracy"]["digits-int8-dynamic"] > 0.9
    assert (tmp_path / "models" / "digits-int8-dynamic" / "1" / "model.onnx").is_file()
    int8_sweep = doc["bench_int8"]["steps"]
    assert [s["load"]["concurrency"] for s in int8_sweep] == [1, 4, 16]
    assert all(s["error_count"] == 0 and s["count"] > 0 for s in int8_sweep)
    assert doc["reports"] == [
        str(tmp_path / "report.html"),
        str(tmp_path / "report-digits-int8-dynamic.html"),
    ]
    # /metrics watched it all: the test images look like the training set, the bench's
    # uniform random inputs do not
    images, after = doc["monitoring"]["after_test_images"], doc["monitoring"]["after_bench"]
    assert images["requests"] == 29
    assert images["errors"] == 0
    assert images["drift_psi"]["input"] < 0.1
    assert after["drift_psi"]["input"] > 0.25
    bench_requests = sum(s["count"] for s in sweep)  # measured windows only; warm-up adds more
    assert after["requests"] >= 29 + bench_requests
    assert after["errors"] == 0
    assert doc["monitoring"]["assets"] == [
        str(tmp_path / "monitoring" / f)
        for f in ("grafana-dashboard.json", "mserve-alerts.yaml", "prometheus.yml")
    ]
    page = (tmp_path / "report.html").read_text()
    assert 'id="plot-throughput-latency"' in page
    assert doc["bench"]["id"] in page  # the page renders this run


def test_serve_on_a_port_in_use_says_so(tmp_path: Path, mserve_cli: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mserve_cli("serve", str(tmp_path), "--port", str(port))
    assert result.returncode == 5
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
