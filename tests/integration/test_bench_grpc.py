"""`mserve bench --protocol v2-grpc` against mserve's own gRPC port: counts that agree with the
server's statistics and its /metrics, gRPC errors reported by code, addresses checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mserve.server.process import free_port

pytestmark = pytest.mark.integration

QUICK = ["--warmup", "0.5", "--window", "0.5", "--duration", "1", "-q", "--no-save", "--json"]


@pytest.fixture(scope="module")
def grpc_served(
    tmp_path_factory: pytest.TempPathFactory, start_server: Any, place: Any, digits_model: Any
) -> tuple[Any, str]:
    """A server of the digits model with a gRPC port of its own: (served, grpc://address)."""
    root = tmp_path_factory.mktemp("grpc-repository")
    place(root, "digits", {1: digits_model.onnx}, config=digits_model.config)
    port = free_port()
    served = start_server(root, args=["--grpc-port", str(port)])
    return served, f"grpc://127.0.0.1:{port}"


def grpc_requests(served: Any, outcome: str) -> float:
    """What the server's /metrics counted of digits' gRPC inference requests."""
    text = served.request("GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        if family.name == "mserve_requests":
            return sum(
                s.value
                for s in family.samples
                if s.name == "mserve_requests_total"
                and s.labels["model"] == "digits"
                and s.labels["protocol"] == "grpc"
                and s.labels["outcome"] == outcome
            )
    return 0.0


def test_sweep_counts_match_the_servers_statistics_and_metrics(
    grpc_served: tuple[Any, str], mserve_cli: Any
) -> None:
    served, url = grpc_served
    before = grpc_requests(served, "success")
    proc = mserve_cli(
        "bench", url, "-m", "digits", "--protocol", "v2-grpc", "--concurrency", "1,4", *QUICK
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"]["protocol"] == "v2-grpc"
    assert result["target"]["url"] == url
    assert result["target"]["inputs"] == {"input": [[1, 64], "FP32"]}
    assert [s["load"]["concurrency"] for s in result["steps"]] == [1, 4]
    sent = 0
    for step in result["steps"]:
        assert step["error_count"] == 0
        assert step["count"] > 50
        # everything the generator got back, warm-up included, is what ModelStatistics counted
        assert step["warmup"]["ok"] + step["count"] == step["server"]["requests"]
        assert step["server"]["compute_infer_ms"] > 0
        assert step["server"]["queue_ms"] >= 0
        assert step["server"]["failures"] == 0
        sent += step["warmup"]["ok"] + step["count"]
    # and what /metrics counted under protocol="grpc": ModelInfer calls only, exactly
    assert grpc_requests(served, "success") - before == sent


def test_several_generator_processes_share_the_load(
    grpc_served: tuple[Any, str], mserve_cli: Any
) -> None:
    _, url = grpc_served
    args = ["-m", "digits", "--protocol", "v2-grpc", "--concurrency", "4", "--workers", "2"]
    proc = mserve_cli("bench", url, *args, *QUICK)
    assert proc.returncode == 0, proc.stderr
    step = json.loads(proc.stdout)["steps"][0]
    assert step["error_count"] == 0
    assert step["count"] > 50
    assert step["warmup"]["ok"] + step["count"] == step["server"]["requests"]


def test_requests_the_server_refuses_count_as_their_grpc_code(
    grpc_served: tuple[Any, str], mserve_cli: Any, tmp_path: Path
) -> None:
    served, url = grpc_served
    wrong = tmp_path / "wrong.npy"  # rows of 32 values where the model takes 64
    np.save(wrong, np.zeros((4, 1, 32), dtype=np.float32))
    before = grpc_requests(served, "bad_request")
    proc = mserve_cli(
        "bench", url, "-m", "digits", "--protocol", "v2-grpc", "--input-data", str(wrong), *QUICK
    )
    assert proc.returncode == 1  # every request failed
    assert "every request failed" in proc.stderr
    step = json.loads(proc.stdout)["steps"][0]
    assert step["count"] == 0
    assert set(step["errors"]) == {"grpc_3"}  # INVALID_ARGUMENT
    assert step["error_count"] > 0
    refused = step["error_count"] + sum(step["warmup"]["errors"].values())
    assert grpc_requests(served, "bad_request") - before == refused


def test_an_unknown_model_and_a_wrong_address_are_explained(
    grpc_served: tuple[Any, str], mserve_cli: Any
) -> None:
    served, url = grpc_served
    unknown = mserve_cli("bench", url, "-m", "nope", "--protocol", "v2-grpc", *QUICK)
    assert unknown.returncode == 4  # unknown model
    assert "nope" in unknown.stderr
    http = mserve_cli("bench", served.process.url, "-m", "digits", "--protocol", "v2-grpc")
    assert http.returncode == 2
    assert "grpc://127.0.0.1:PORT" in http.stderr
    # the HTTP port given as a gRPC address: it does not answer in HTTP/2
    wrong_port = served.process.url.replace("http://", "grpc://")
    proc = mserve_cli("bench", wrong_port, "-m", "digits", "--protocol", "v2-grpc", *QUICK)
    assert proc.returncode == 5  # target unreachable
    assert "is this the gRPC port?" in proc.stderr
