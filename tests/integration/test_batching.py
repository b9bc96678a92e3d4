"""Dynamic batching, parallel instances and overload against the real server.

Concurrent tritonclient requests, each with its own data, must get exactly the answer the model
gives for that input alone; requests of different shapes are never stacked together; a flood
against a tiny queue is shed with 503 and Retry-After and the server serves normally after;
queue timeouts give 504; a failing execution fails only its own batch.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from mserve.config import DynamicBatching, ModelConfig
from mserve.protocol import TensorSpec

HEAVY = (64, 2048, 2048, 2048, 10)  # about a millisecond a row on one core
TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)
WAIT = DynamicBatching(max_queue_delay_us=20_000)  # long enough for a burst to gather


def heavy_config(name: str, max_batch: int, batching: DynamicBatching) -> ModelConfig:
    return ModelConfig(
        name,
        inputs=(TensorSpec("INPUT", "FP32", (-1, 64)),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, 10)),),
        max_batch_size=max_batch,
        dynamic_batching=batching,
    )


@pytest.fixture(scope="module")
def batching_server(
    tmp_path_factory: pytest.TempPathFactory,
    start_server: Any,
    onnx_factory: Any,
    place: Any,
    digits_model: Any,
) -> Any:
    root: Path = tmp_path_factory.mktemp("batching")
    digits = replace(
        digits_model.config,
        name="digits_b",
        max_batch_size=32,
        dynamic_batching=WAIT,
        instance_count=2,
    )
    place(root, "digits_b", {1: digits_model.onnx}, config=digits)
    in_processes = replace(digits, name="digits_proc", instance_kind="process")
    place(root, "digits_proc", {1: digits_model.onnx}, config=in_processes)
    wide = ModelConfig(
        "wide",
        inputs=(TensorSpec("INPUT", "FP32", (-1, -1)),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, -1)), TensorSpec("SLOW", "FP32", (-1, 10))),
        max_batch_size=16,
        dynamic_batching=WAIT,
    )
    place(root, "wide", {1: onnx_factory.slow_identity()}, config=wide)
    heavy = onnx_factory.mlp(HEAVY)
    shed = heavy_config("shed", 2, DynamicBatching(max_queue_size=2))
    place(root, "shed", {1: heavy}, config=shed)
    timeout = heavy_config("timeout", 1, DynamicBatching(default_timeout_us=500))
    place(root, "timeout", {1: heavy}, config=timeout)
    place(root, "heavy_b", {1: heavy}, config=heavy_config("heavy_b", 32, WAIT))
    lookup = ModelConfig(
        "lookup",
        inputs=(TensorSpec("INDEX", "INT64", (-1, 1)),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, 1, 3)),),
        max_batch_size=8,
        dynamic_batching=WAIT,
    )
    place(root, "lookup", {1: onnx_factory.lookup(TABLE)}, config=lookup)
    server = start_server(root)
    server.models = {"digits_b": digits_model.onnx, "heavy": heavy}
    return server


def stats_of(server: Any, model: str) -> dict[str, Any]:
    reply = server.request("GET", f"/v2/models/{model}/stats")
    assert reply.status == 200
    return reply.json()["model_stats"][0]  # type: ignore[no-any-return]


def burst(server: Any, bodies: list[bytes], path: str) -> list[tuple[int, dict[str, str], Any]]:
    """Send every body at the same moment, each on its own connection; (status, headers, doc)."""
    gate = threading.Barrier(len(bodies))

    def one(body: bytes) -> tuple[int, dict[str, str], Any]:
        conn = server.connection()
        try:
            conn.connect()
            gate.wait(timeout=30)
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())
        finally:
            conn.close()

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def infer_concurrently(
    server: Any, model: str, requests: list[tuple[list[Any], list[Any]]], clients: int = 16
) -> list[Any]:
    """Each (inputs, outputs) through tritonclient.http, ``clients`` requests at a time from
    as many threads, each with its own client; results (or the exception) in request order."""
    local = threading.local()
    opened: list[Any] = []
    lock = threading.Lock()

    def one(request: tuple[list[Any], list[Any]]) -> Any:
        if not hasattr(local, "client"):
            local.client = httpclient.InferenceServerClient(server.address)
            with lock:
                opened.append(local.client)
        try:
            return local.client.infer(model, request[0], outputs=request[1] or None)
        except InferenceServerException as exc:
            return exc

    try:
        with ThreadPoolExecutor(clients) as pool:
            return list(pool.map(one, requests))
    finally:
        for c in opened:
            c.close()


def v2_body(name: str, datatype: str, data: np.ndarray) -> bytes:
    doc = {"inputs": [{"name": name, "datatype": datatype, "shape": list(data.shape),
                       "data": data.ravel().tolist()}]}  # fmt: skip
    return json.dumps(doc).encode()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["digits_b", "heavy_b", "digits_proc"])
def test_concurrent_requests_each_get_exactly_the_answer_for_their_input_alone(
    batching_server: Any, digits_model: Any, ort_run: Any, binary: bool, model: str
) -> None:
    before = stats_of(batching_server, model)
    if model.startswith("digits"):
        onnx_bytes, x, name, outputs = (
            digits_model.onnx,
            digits_model.x_test,
            "input",
            ["label", "probabilities"],
        )
    else:
        onnx_bytes, name, outputs = batching_server.models["heavy"], "INPUT", ["OUTPUT"]
        x = np.random.default_rng(1).standard_normal((96, 64)).astype(np.float32)
    sizes = [1 + (i % 3) for i in range(48)]  # 1, 2 or 3 rows each, 96 rows in all
    starts = np.cumsum([0, *sizes[:-1]])
    requests = []
    for start, n in zip(starts, sizes, strict=True):
        inp = httpclient.InferInput(name, [n, 64], "FP32")
        inp.set_data_from_numpy(x[start : start + n], binary_data=binary)
        requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        requests.append(([inp], requested))
    results = infer_concurrently(batching_server, model, requests)
    for start, n, result in zip(starts, sizes, results, strict=True):
        alone = ort_run(onnx_bytes, {name: x[start : start + n]})
        for o in outputs:
            got = result.as_numpy(o)
            assert got.shape == alone[o].shape
            if got.dtype.kind == "f":  # a row's float results may differ in the last bits
                np.testing.assert_allclose(got, alone[o], rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(got, alone[o])
    after = stats_of(batching_server, model)
    ok = (
        after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    )
    assert ok == 48
    assert after["inference_count"] - before["inference_count"] == 96  # rows, not requests
    executions = after["execution_count"] - before["execution_count"]
    for b in after["batch_stats"]:
        assert b["batch_size"] <= 32  # max_batch_size
        assert b["compute_infer"]["count"] > 0
    if model == "heavy_b":
        # a millisecond per execution: the others queue meanwhile and share the next ones
        assert executions < 48
        assert max(b["batch_size"] for b in after["batch_stats"]) > 3  # several requests' rows


def test_requests_of_different_shapes_are_never_stacked_together(batching_server: Any) -> None:
    rng = np.random.default_rng(3)
    inputs = [
        rng.standard_normal((int(rng.integers(1, 3)), int(w))).astype(np.float32)
        for w in rng.choice([2, 3, 5], size=36)
    ]
    requests = []
    for x in inputs:
        inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        requests.append(([inp], [httpclient.InferRequestedOutput("OUTPUT")]))
    results = infer_concurrently(batching_server, "wide", requests, clients=12)
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result.as_numpy("OUTPUT"), x)
    stats = stats_of(batching_server, "wide")
    assert stats["execution_count"] < len(inputs)


def test_a_flood_against_a_tiny_queue_is_shed_with_503_and_serving_goes_on(
    batching_server: Any, ort_run: Any
) -> None:
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(96)]
    replies = burst(
        batching_server, [v2_body("INPUT", "FP32", x) for x in xs], "/v2/models/shed/infer"
    )
    statuses = [status for status, _, _ in replies]
    assert set(statuses) <= {200, 503}
    shed = [(headers, doc) for status, headers, doc in replies if status == 503]
    assert shed, "a flood of 96 against a queue of 2 was not shed"
    assert statuses.count(200) >= 2
    for headers, doc in shed:
        assert headers["retry-after"] == "1"
        assert "model 'shed' version '1' is overloaded" in doc["error"]
        assert "(max_queue_size 2); retry later" in doc["error"]
    heavy = batching_server.models["heavy"]
    for x, (status, _, doc) in zip(xs, replies, strict=True):
        if status == 200:
            want = ort_run(heavy, {"INPUT": x})["OUTPUT"]
            np.testing.assert_allclose(
                np.reshape(doc["outputs"][0]["data"], (1, 10)), want, rtol=1e-5, atol=1e-5
            )
    # after the flood: served as normal, and the refusals were counted as failures
    x = xs[0]
    reply = batching_server.request("POST", "/v2/models/shed/infer", v2_body("INPUT", "FP32", x))
    assert reply.status == 200
    stats = stats_of(batching_server, "shed")
    assert stats["inference_stats"]["fail"]["count"] == len(shed)


def test_requests_queued_past_the_timeout_get_504_and_are_not_computed(
    batching_server: Any,
) -> None:
    x = np.ones((1, 64), np.float32)
    replies = burst(batching_server, [v2_body("INPUT", "FP32", x)] * 12, "/v2/models/timeout/infer")
    statuses = [status for status, _, _ in replies]
    assert set(statuses) <= {200, 504}
    assert 504 in statuses
    for status, _, doc in replies:
        if status == 504:
            assert "model 'timeout' version '1': request timed out after waiting" in doc["error"]
            assert "(timeout 500 us); it was not computed" in doc["error"]
    stats = stats_of(batching_server, "timeout")
    assert stats["inference_count"] == statuses.count(200)  # the timed-out ones never ran


def test_a_failing_execution_fails_only_the_requests_batched_with_it(batching_server: Any) -> None:
    indices = [i % 10 for i in range(24)]
    indices[5] = 99  # outside the 10-row table: ONNX Runtime raises for that execution
    requests = []
    for i in indices:
        inp = httpclient.InferInput("INDEX", [1, 1], "INT64")
        inp.set_data_from_numpy(np.array([[i]], np.int64))
        requests.append(([inp], []))
    outcomes = [
        r if isinstance(r, InferenceServerException) else r.as_numpy("OUTPUT")
        for r in infer_concurrently(batching_server, "lookup", requests, clients=24)
    ]
    client = httpclient.InferenceServerClient(batching_server.address)
    try:
        failed = [o for o in outcomes if isinstance(o, InferenceServerException)]
        assert isinstance(outcomes[5], InferenceServerException)
        assert 1 <= len(failed) <= 8  # the poisoned request's batch at most (max_batch_size 8)
        for exc in failed:
            assert exc.status() == "500"
            assert "model 'lookup' version '1' failed" in exc.message()
        for i, o in zip(indices, outcomes, strict=True):
            if not isinstance(o, InferenceServerException):
                np.testing.assert_array_equal(o, TABLE[[i]][:, None, :])
        inp = httpclient.InferInput("INDEX", [1, 1], "INT64")
        inp.set_data_from_numpy(np.array([[7]], np.int64))
        np.testing.assert_array_equal(
            client.infer("lookup", [inp]).as_numpy("OUTPUT"), TABLE[[7]][:, None, :]
        )
    finally:
        client.close()


def test_model_config_reports_the_batcher_in_tritons_shape(batching_server: Any) -> None:
    client = httpclient.InferenceServerClient(batching_server.address)
    try:
        config = client.get_model_config("shed")
    finally:
        client.close()
    assert config["max_batch_size"] == 2
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [],
        "max_queue_delay_microseconds": 0,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": 0,
            "max_queue_size": 2,
        },
    }


def test_bench_breakdown_shows_the_queue_time_and_batch_size(
    batching_server: Any, mserve_cli: Any
) -> None:
    proc = mserve_cli(
        "bench",
        f"http://{batching_server.address}",
        "-m",
        "digits_b",
        "--protocol",
        "v2-binary",
        "--concurrency",
        "16",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--window",
        "0.5",
        "-q",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    step = json.loads(proc.stdout)["steps"][0]
    assert step["error_count"] == 0
    server = step["server"]
    assert server["avg_batch_size"] > 1
    assert server["queue_ms"] > 0


def instance_processes(server: Any) -> set[int]:
    """The server's children that run model instances (started with multiprocessing spawn)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == server.process.proc.pid and b"spawn_main" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


def test_process_instances_survive_a_crashed_child(
    batching_server: Any, digits_model: Any, ort_run: Any
) -> None:
    import os
    import signal

    children = instance_processes(batching_server)
    assert len(children) == 2  # instance_count 2, one process each
    victim = min(children)
    os.kill(victim, signal.SIGKILL)  # a model crash takes down its own process only
    x = digits_model.x_test[:24]
    requests = []
    for i in range(24):
        inp = httpclient.InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(x[i : i + 1])
        requests.append(([inp], [httpclient.InferRequestedOutput("label")]))
    results = infer_concurrently(batching_server, "digits_proc", requests, clients=4)
    failed = [r for r in results if isinstance(r, InferenceServerException)]
    assert len(failed) <= 4  # at most the one batch sent to the dead child (4 clients)
    for exc in failed:
        assert exc.status() == "500"
        assert f"the instance process (pid {victim}) exited during the call" in exc.message()
        assert "killed by SIGKILL" in exc.message()
    want = ort_run(digits_model.onnx, {"input": x})["label"]
    for i, r in enumerate(results):
        if not isinstance(r, InferenceServerException):
            assert r.as_numpy("label")[0] == want[i]
    again = infer_concurrently(batching_server, "digits_proc", requests, clients=4)
    assert [r.as_numpy("label")[0] for r in again] == list(want)
    after = instance_processes(batching_server)
    assert victim not in after
    assert len(after) == 2  # the dead one was replaced
