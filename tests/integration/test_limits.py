"""Limits and deadlines on a real server: oversized headers, too many connections, too many
tensor elements, and client deadlines (HTTP header, Triton's ``timeout`` parameter, gRPC's
deadline, the server's default) that drop a queued request before it is computed."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from slow_model import SLOW, slow_body

from mserve.config import DynamicBatching, ModelConfig
from mserve.server.process import free_port


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, place: Any, onnx_factory: Any, start_server: Any
) -> Any:
    repo = tmp_path_factory.mktemp("limits")
    place(repo, "slow", {1: onnx_factory.counting_loop(1)}, config=SLOW)
    unbatched = replace(SLOW, name="slow_unbatched", max_batch_size=0, dynamic_batching=None)
    unbatched = replace(unbatched, inputs=tuple(replace(t, shape=(1, 1)) for t in unbatched.inputs))
    unbatched = replace(
        unbatched, outputs=tuple(replace(t, shape=(1, 1)) for t in unbatched.outputs)
    )
    place(repo, "slow_unbatched", {1: onnx_factory.counting_loop(1)}, config=unbatched)
    one_queued = replace(SLOW, name="slow_q1", dynamic_batching=DynamicBatching(max_queue_size=1))
    place(repo, "slow_q1", {1: onnx_factory.counting_loop(1)}, config=one_queued)
    place(
        repo,
        "plus1",
        {1: onnx_factory.add_const(1.0)},
        config=ModelConfig("plus1", max_batch_size=64),
    )
    grpc_port = free_port()
    args = ["--grpc-port", str(grpc_port), "--max-header-kb", "4", "--max-tensor-elements", "32"]
    args += ["--max-connections", "6"]
    served = start_server(repo, args=args)
    served.grpc_address = f"127.0.0.1:{grpc_port}"
    return served


def plus1_body(rows: int) -> str:
    data = [float(i) for i in range(rows)]
    return json.dumps(
        {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [rows, 1], "data": data}]}
    )


def test_oversized_headers_get_431_and_the_server_goes_on(limited: Any) -> None:
    reply = limited.request("GET", "/v2/health/live", headers={"X-Padding": "a" * 5000})
    assert reply.status == 431
    assert "exceed the limit of 4096 bytes" in reply.json()["error"]
    assert reply.headers["connection"] == "close"
    reply = limited.request("POST", "/v2/models/plus1/infer", plus1_body(2))
    assert reply.status == 200
    assert reply.json()["outputs"][0]["data"] == [1.0, 2.0]


def test_too_many_tensor_elements_get_400(limited: Any) -> None:
    reply = limited.request("POST", "/v2/models/plus1/infer", plus1_body(33))
    assert reply.status == 400
    assert reply.json() == {
        "error": "the request's inputs have 33 elements together; this server accepts at most "
        "32 a request (--max-tensor-elements)"
    }
    assert limited.request("POST", "/v2/models/plus1/infer", plus1_body(32)).status == 200


def test_a_batch_over_max_batch_size_gets_400(limited: Any) -> None:
    body = slow_body(1.0, 0)
    doc = json.loads(body)
    for t in doc["inputs"]:
        t["shape"] = [5, 1]
        t["data"] = t["data"] * 5
    reply = limited.request("POST", "/v2/models/slow/infer", json.dumps(doc))
    assert reply.status == 400
    assert "exceeds max_batch_size 4" in reply.json()["error"]


def test_connections_over_the_limit_get_503_and_the_others_go_on(limited: Any) -> None:
    held = []
    time.sleep(0.3)  # the server has noticed the other tests' connections close
    try:
        # the limit is 6; other tests' connections are closed, so 6 fit and the 7th does not
        for _ in range(6):
            conn = limited.connection()
            conn.request("GET", "/v2/health/live")
            assert conn.getresponse().read() == b'{"live":true}'
            held.append(conn)
        extra = limited.connection()
        extra.request("GET", "/v2/health/live")
        reply = extra.getresponse()
        assert reply.status == 503
        assert "its limit (--max-connections)" in json.loads(reply.read())["error"]
        extra.close()
        held[0].request("POST", "/v2/models/plus1/infer", plus1_body(1))  # a held one serves
        assert held[0].getresponse().status == 200
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closes
        if limited.request("GET", "/v2/health/live").status == 200:
            break
        time.sleep(0.05)
    assert limited.request("GET", "/v2/health/live").status == 200


def occupy(limited: Any, seconds: float, model: str = "slow") -> threading.Thread:
    """Keep a slow model's one instance busy for ``seconds`` (a request in a thread)."""
    started = threading.Event()

    def run() -> None:
        conn = limited.connection()
        try:
            conn.request("POST", f"/v2/models/{model}/infer", slow_body(7.0, seconds))
            started.set()
            assert conn.getresponse().status == 200
        finally:
            conn.close()

    t = threading.Thread(target=run)
    t.start()
    started.wait(10)
    time.sleep(0.2)  # it reached the instance
    return t


def executions(limited: Any, model: str = "slow") -> tuple[int, int, int]:
    stats = limited.request("GET", f"/v2/models/{model}/stats").json()["model_stats"][0]
    return (
        stats["execution_count"],
        stats["inference_stats"]["success"]["count"],
        stats["inference_stats"]["fail"]["count"],
    )


def test_deadlines_drop_queued_requests_uncomputed(limited: Any) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    runs, ok, failed = executions(limited)
    busy = occupy(limited, 3.0)
    # 1. the X-Request-Timeout header (seconds)
    reply = limited.request(
        "POST", "/v2/models/slow/infer", slow_body(1.0, 0), {"X-Request-Timeout": "0.2"}
    )
    assert reply.status == 504
    assert "deadline passed after" in reply.json()["error"]
    assert "it was not computed" in reply.json()["error"]
    # 2. Triton's "timeout" parameter (microseconds), from tritonclient.http
    client = httpclient.InferenceServerClient(limited.address)
    x = httpclient.InferInput("X", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), np.float32))
    n = httpclient.InferInput("N", [1, 1], "INT64")
    n.set_data_from_numpy(np.zeros((1, 1), np.int64))
    with pytest.raises(InferenceServerException, match="deadline passed") as info:
        client.infer("slow", [x, n], timeout=200_000)
    assert info.value.status() == "504"
    client.close()
    # 3. the gRPC deadline, set by tritonclient.grpc's client_timeout
    gclient = grpcclient.InferenceServerClient(limited.grpc_address)
    gx = grpcclient.InferInput("X", [1, 1], "FP32")
    gx.set_data_from_numpy(np.ones((1, 1), np.float32))
    gn = grpcclient.InferInput("N", [1, 1], "INT64")
    gn.set_data_from_numpy(np.zeros((1, 1), np.int64))
    with pytest.raises(InferenceServerException) as info:
        gclient.infer("slow", [gx, gn], client_timeout=0.2)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    busy.join(30)
    # the instance came free: only the occupying request was ever computed (the gRPC client
    # may cancel its call at its deadline just before the server drops it: not counted failed)
    deadline = time.monotonic() + 10
    while executions(limited)[2] < failed + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    now_runs, now_ok, now_failed = executions(limited)
    assert (now_runs, now_ok) == (runs + 1, ok + 1)
    assert now_failed in (failed + 2, failed + 3)
    # a deadline that leaves time is met
    result = gclient.infer("slow", [gx, gn], client_timeout=30)
    assert result.as_numpy("OUTPUT").tolist() == [[1.0]]
    gclient.close()


def test_a_deadline_drops_a_request_waiting_for_an_instance_thread(limited: Any) -> None:
    """Without a batcher, requests wait for an instance thread: one whose deadline passes there
    is answered at the deadline, and skipped when the instance comes free."""
    runs, ok, failed = executions(limited, "slow_unbatched")
    busy = occupy(limited, 2.0, "slow_unbatched")
    reply = limited.request(
        "POST", "/v2/models/slow_unbatched/infer", slow_body(1.0, 0), {"X-Request-Timeout": "0.2"}
    )
    assert reply.status == 504
    assert "it was not computed" in reply.json()["error"]
    assert busy.is_alive(), "answered at its deadline, not when the instance came free"
    busy.join(30)
    assert executions(limited, "slow_unbatched") == (runs + 1, ok + 1, failed + 1)
    reply = limited.request("POST", "/v2/models/slow_unbatched/infer", slow_body(3.0, 0))
    assert reply.json()["outputs"][0]["data"] == [3.0]


def test_a_full_queue_refuses_before_decoding(limited: Any) -> None:
    """Shedding is cheap: with the queue full, even an undecodable body gets the 503 (the
    server looked at the model's queue before the body), over HTTP, TF Serving and gRPC."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    busy = occupy(limited, 2.0, "slow_q1")
    queued = occupy(limited, 0.0, "slow_q1")  # waits in the queue of one
    try:
        for path in ("/v2/models/slow_q1/infer", "/v1/models/slow_q1:predict"):
            reply = limited.request("POST", path, "this is not JSON")
            assert reply.status == 503, reply.body
            assert reply.headers["retry-after"] == "1"
            assert (
                "is overloaded: 1 requests are waiting (max_queue_size 1)" in reply.json()["error"]
            )
        client = grpcclient.InferenceServerClient(limited.grpc_address)
        x = grpcclient.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("slow_q1", [x])  # N missing: refused for the queue first
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        client.close()
    finally:
        busy.join(30)
        queued.join(30)
    reply = limited.request("POST", "/v2/models/slow_q1/infer", "this is not JSON")
    assert reply.status == 400  # with room in the queue, the body is read and refused


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan"])
def test_a_bad_timeout_header_gets_400(limited: Any, value: str) -> None:
    reply = limited.request(
        "POST", "/v2/models/plus1/infer", plus1_body(1), {"X-Request-Timeout": value}
    )
    assert reply.status == 400
    assert "X-Request-Timeout must be a positive number of seconds" in reply.json()["error"]


@pytest.mark.parametrize("value", [-5, 1.5, "100", True])
def test_a_bad_timeout_parameter_gets_400(limited: Any, value: Any) -> None:
    doc = json.loads(plus1_body(1))
    doc["parameters"] = {"timeout": value}
    reply = limited.request("POST", "/v2/models/plus1/infer", json.dumps(doc))
    assert reply.status == 400
    assert "parameter 'timeout' must be a whole number of microseconds" in reply.json()["error"]


def test_the_server_default_deadline_applies_when_the_client_sets_none(
    tmp_path: Path, place: Any, onnx_factory: Any, start_server: Any
) -> None:
    place(tmp_path, "slow", {1: onnx_factory.counting_loop(1)}, config=SLOW)
    served = start_server(tmp_path, args=["--request-timeout", "0.3"])
    busy = occupy(served, 2.0)
    reply = served.request("POST", "/v2/models/slow/infer", slow_body(1.0, 0))
    assert reply.status == 504
    assert "the request's deadline passed after" in reply.json()["error"]
    busy.join(30)
    # a client's own longer deadline is its own business
    reply = served.request(
        "POST", "/v2/models/slow/infer", slow_body(2.0, 0), {"X-Request-Timeout": "30"}
    )
    assert reply.status == 200


def test_a_request_that_never_finishes_arriving_does_not_block_others(limited: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", limited.process.port), timeout=10)
    try:
        sock.sendall(b"POST /v2/models/plus1/infer HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        reply = limited.request("POST", "/v2/models/plus1/infer", plus1_body(1))
        assert reply.status == 200
    finally:
        sock.close()
