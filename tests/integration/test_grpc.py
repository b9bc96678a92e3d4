"""tritonclient.grpc against a real server started with ``--grpc-port``: health, metadata and
configuration, exact outputs for every datatype, versions, errors as status codes (and the
server serving on after each), the repository, statistics, the bidirectional stream, and the
HTTP port and ``/metrics`` of the same server."""

from __future__ import annotations

import queue
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

import mserve
from mserve.config import DynamicBatching, ModelConfig, VersionPolicy
from mserve.protocol import DATATYPES, TensorSpec
from mserve.server.process import free_port
from mserve.wire import V2_SERVICE
from mserve.wire import inference_pb2 as pb

pytestmark = pytest.mark.integration

TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)
ADDSUB = ModelConfig(
    name="addsub",
    inputs=(TensorSpec("INPUT0", "FP32", (-1, 4)), TensorSpec("INPUT1", "FP32", (-1, 4))),
    outputs=(TensorSpec("OUTPUT0", "FP32", (-1, 4)), TensorSpec("OUTPUT1", "FP32", (-1, 4))),
    max_batch_size=8,
)
LOOKUP = ModelConfig(  # OUTPUT = TABLE[INDEX]; an index off the table makes the execution fail
    "lookup",
    inputs=(TensorSpec("INDEX", "INT64", (-1, 1)),),
    outputs=(TensorSpec("OUTPUT", "FP32", (-1, 1, 3)),),
    max_batch_size=8,
)
DIGITS_BATCHING = DynamicBatching(
    max_queue_delay_us=200, preferred_batch_sizes=(16, 32), max_queue_size=128
)
X = np.array([[0.5], [-2.0]], dtype=np.float32)

#: per datatype: 3 x 2 values that reach its limits
VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, False, True, True, True],
    "UINT8": [0, 1, 127, 128, 254, 255],
    "UINT16": [0, 1, 256, 40000, 65534, 65535],
    "UINT32": [0, 1, 65536, 3_000_000_000, 2**32 - 2, 2**32 - 1],
    "UINT64": [0, 1, 2**32, 2**63, 2**64 - 2, 2**64 - 1],
    "INT8": [-128, -1, 0, 1, 100, 127],
    "INT16": [-32768, -1, 0, 1, 30000, 32767],
    "INT32": [-(2**31), -1, 0, 1, 2**30, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 1, 2**53 + 1, 2**63 - 1],
    "FP16": [-65504.0, -1.5, 0.0, 6.1035156e-05, 0.33325195, 65504.0],
    "FP32": [-3.4028235e38, -0.1, 0.0, 1e-45, 1 / 3, 3.4028235e38],
    "FP64": [-1.7976931348623157e308, -0.1, 0.0, 5e-324, 1 / 3, 1.7976931348623157e308],
    "BYTES": [b"", b"a", "h\u00e9llo".encode(), b"\x00\x01", b"x" * 1000, "\u2603".encode()],
}


@dataclass
class GrpcServer:
    """A running server with gRPC on; ``http`` is what ``start_server`` gave."""

    http: Any  # conftest's Served
    grpc_address: str

    @property
    def repository(self) -> Path:
        return Path(self.http.repository)


def wait_for_grpc(address: str, timeout: float = 20.0) -> None:
    """HTTP readiness says nothing about the gRPC port: wait until ServerLive answers."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        live = channel.unary_unary(
            f"/{V2_SERVICE}/ServerLive",
            request_serializer=pb.ServerLiveRequest.SerializeToString,
            response_deserializer=pb.ServerLiveResponse.FromString,
        )
        while not live(pb.ServerLiveRequest(), timeout=5).live:
            assert time.monotonic() < deadline, "gRPC never said live"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    start_server: Any,
    onnx_factory: Any,
    place: Any,
    digits_model: Any,
) -> GrpcServer:
    """digits (dynamic batching), an identity model per datatype, addsub, lookup, three
    versions under the "all" policy, a broken config, and models for the statistics, load /
    unload and metrics tests (one each, so their counts are theirs alone)."""
    root = tmp_path_factory.mktemp("grpc-repository")
    digits = replace(digits_model.config, dynamic_batching=DIGITS_BATCHING)
    place(root, "digits", {1: digits_model.onnx}, config=digits)
    for datatype in DATATYPES:
        place(root, identity(datatype), {1: onnx_factory.identity(datatype)})
    place(root, "addsub", {1: onnx_factory.add_sub()}, config=ADDSUB)
    place(root, "lookup", {1: onnx_factory.lookup(TABLE)}, config=LOOKUP)
    place(
        root,
        "versions_all",
        {v: onnx_factory.add_const(float(v)) for v in (1, 2, 3)},
        config=ModelConfig("versions_all", version_policy=VersionPolicy("all")),
    )
    place(root, "broken", {1: onnx_factory.identity("FP32")}, config_text="max_batch_size: lots\n")
    stats = ModelConfig("stats_probe", max_batch_size=8)
    place(root, "stats_probe", {1: onnx_factory.identity("FP32")}, config=stats)
    place(root, "swappable", {1: onnx_factory.add_const(10.0)}, config=ModelConfig("swappable"))
    place(root, "metered", {1: onnx_factory.identity("FP32")})
    port = free_port()
    served = start_server(root, args=["--grpc-port", str(port), "--enable-management"])
    address = f"127.0.0.1:{port}"
    wait_for_grpc(address)
    return GrpcServer(served, address)


@pytest.fixture(scope="module")
def client(server: GrpcServer) -> Iterator[Any]:
    c = grpcclient.InferenceServerClient(server.grpc_address)
    yield c
    c.close()


def identity(datatype: str) -> str:
    return f"identity_{datatype.lower()}"


def tensor(name: str, data: np.ndarray, datatype: str | None = None) -> Any:
    t = grpcclient.InferInput(name, list(data.shape), datatype or dtype_name(data))
    t.set_data_from_numpy(data)
    return t


def dtype_name(data: np.ndarray) -> str:
    return {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[data.dtype]


def array(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(6, dtype=object)
        out[:] = VALUES[datatype]
        return out.reshape(3, 2)
    return np.array(VALUES[datatype], dtype=DATATYPES[datatype]).reshape(3, 2)


def add_const(client: Any, model: str, version: str = "") -> np.ndarray:
    out: np.ndarray = client.infer(model, [tensor("INPUT", X)], model_version=version).as_numpy(
        "OUTPUT"
    )
    return out


def assert_still_serving(client: Any) -> None:
    pair = np.array([[1.0, 2.0]], np.float32)
    assert client.infer("identity_fp32", [tensor("INPUT", pair)]).as_numpy("OUTPUT").tolist() == [
        [1.0, 2.0]
    ]


# -- health, metadata, configuration -------------------------------------------------------------


def test_health_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    md = client.get_server_metadata()
    assert (md.name, md.version) == ("mserve", mserve.__version__)
    assert list(md.extensions) == [
        "binary_tensor_data",
        "model_repository",
        "statistics",
        "model_configuration",
    ]
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("broken")
    assert client.is_model_ready("versions_all", "2")
    # a version or model nobody has is NOT_FOUND, as HTTP's 404 (tritonclient.http says False)
    for args in (("digits", "2"), ("no_such_model",)):
        with pytest.raises(InferenceServerException) as info:
            client.is_model_ready(*args)
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_model_metadata_matches_the_config(client: Any, server: GrpcServer) -> None:
    md = client.get_model_metadata("digits")
    assert (md.name, list(md.versions), md.platform) == ("digits", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [("input", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in md.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 10]),
    ]
    assert list(client.get_model_metadata("versions_all").versions) == ["1", "2", "3"]
    assert list(client.get_model_metadata("versions_all", "2").versions) == ["2"]
    # the same answer as the HTTP port's
    for name in ("identity_bytes", "versions_all", "addsub"):
        md = client.get_model_metadata(name)
        assert {
            "name": md.name,
            "versions": list(md.versions),
            "platform": md.platform,
            "inputs": [tensor_spec(t) for t in md.inputs],
            "outputs": [tensor_spec(t) for t in md.outputs],
        } == server.http.request("GET", f"/v2/models/{name}").json()


def tensor_spec(t: Any) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def test_model_config_matches_the_http_config(client: Any, server: GrpcServer) -> None:
    c = client.get_model_config("digits").config
    assert (c.name, c.platform, c.backend, c.max_batch_size) == (
        "digits",
        "onnxruntime_onnx",
        "onnxruntime",
        64,
    )
    assert c.version_policy.latest.num_versions == 1
    type_name = grpcclient.model_config_pb2.DataType.Name
    assert [(t.name, type_name(t.data_type), list(t.dims)) for t in c.input] == [
        ("input", "TYPE_FP32", [64])
    ]
    assert [(t.name, list(t.dims)) for t in c.output] == [("label", []), ("probabilities", [10])]
    assert [(g.count, g.kind) for g in c.instance_group] == [
        (1, grpcclient.model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    db = c.dynamic_batching
    assert list(db.preferred_batch_size) == [16, 32]
    assert db.max_queue_delay_microseconds == 200
    assert db.default_queue_policy.max_queue_size == 128

    http = server.http.request("GET", "/v2/models/digits/config").json()
    assert http["dynamic_batching"]["preferred_batch_size"] == [16, 32]
    grpc_json = client.get_model_config("digits", as_json=True)["config"]
    for key in ("name", "platform", "backend", "max_batch_size", "version_policy"):
        assert grpc_json[key] == http[key], key
    strings = client.get_model_config("identity_bytes").config
    assert strings.max_batch_size == 0
    assert [(t.data_type, list(t.dims)) for t in strings.input] == [
        (grpcclient.model_config_pb2.TYPE_STRING, [-1, 2])
    ]
    assert not strings.HasField("dynamic_batching")
    policy = client.get_model_config("versions_all").config.version_policy
    assert policy.WhichOneof("policy_choice") == "all"


# -- inference ----------------------------------------------------------------------------------


def test_digits_answers_as_the_estimator(client: Any, digits_model: Any, ort_run: Any) -> None:
    x = digits_model.x_test
    labels, probabilities = [], []
    for start in range(0, len(x), 64):  # max_batch_size is 64
        rows = x[start : start + 64]
        result = client.infer("digits", [tensor("input", rows)])
        expected = ort_run(digits_model.onnx, {"input": rows})
        assert result.as_numpy("label").dtype == np.int64
        np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
        np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
        labels.append(result.as_numpy("label"))
        probabilities.append(result.as_numpy("probabilities"))
    np.testing.assert_array_equal(np.concatenate(labels), digits_model.estimator.predict(x))
    np.testing.assert_allclose(
        np.concatenate(probabilities), digits_model.estimator.predict_proba(x), atol=1e-5
    )


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(
    client: Any, digits_model: Any
) -> None:
    x = digits_model.x_test[:48]
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for i in range(len(x)):
        client.async_infer(
            "digits",
            [tensor("input", x[i : i + 1])],
            lambda result, error, i=i: answers.put((i, result, error)),
            request_id=str(i),
        )
    labels = {}
    for _ in range(len(x)):
        i, result, error = answers.get(timeout=30)
        assert error is None, error
        assert result.get_response().id == str(i)
        labels[i] = int(result.as_numpy("label")[0])
    assert [labels[i] for i in range(len(x))] == digits_model.estimator.predict(x).tolist()


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_exactly(client: Any, datatype: str) -> None:
    data = array(datatype)
    out = grpcclient.InferRequestedOutput("OUTPUT")
    result = client.infer(
        identity(datatype), [tensor("INPUT", data, datatype)], outputs=[out], request_id=datatype
    )
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        identity(datatype),
        "1",
        datatype,
    )
    (entry,) = response.outputs
    assert (entry.name, entry.datatype, list(entry.shape)) == ("OUTPUT", datatype, [3, 2])
    got = result.as_numpy("OUTPUT")
    assert got.shape == (3, 2)
    if datatype == "BYTES":
        assert got.tolist() == data.tolist()
    else:
        assert got.dtype == DATATYPES[datatype]
        np.testing.assert_array_equal(got, data)


def test_two_inputs_and_requested_outputs(client: Any) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, dtype=np.float32)
    inputs = [tensor("INPUT0", a), tensor("INPUT1", b)]
    both = client.infer("addsub", inputs)
    assert [o.name for o in both.get_response().outputs] == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(both.as_numpy("OUTPUT1"), a - b)

    only = client.infer(
        "addsub",
        inputs,
        outputs=[grpcclient.InferRequestedOutput("OUTPUT1")],
        parameters={"tenant": "tests", "priority_hint": 2},
    )
    assert [o.name for o in only.get_response().outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - b)
    assert only.as_numpy("OUTPUT0") is None


def test_a_specific_version_answers(client: Any) -> None:
    for version in ("1", "2", "3"):
        np.testing.assert_array_equal(add_const(client, "versions_all", version), X + int(version))
    np.testing.assert_array_equal(add_const(client, "versions_all"), X + 3)  # the highest
    assert (
        client.infer("versions_all", [tensor("INPUT", X)], model_version="2")
        .get_response()
        .model_version
        == "2"
    )
    with pytest.raises(InferenceServerException) as info:
        add_const(client, "versions_all", "9")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert info.value.message() == (
        "unknown version '9' of model 'versions_all'; available versions: 1, 2, 3"
    )


# -- errors as status codes ----------------------------------------------------------------------

ERRORS = [
    pytest.param(
        "no_such_model",
        lambda: [tensor("INPUT", X)],
        "NOT_FOUND",
        "unknown model 'no_such_model'; known models: ",
        id="unknown-model",
    ),
    pytest.param(
        "identity_fp32",
        lambda: [tensor("INPUT", np.zeros((2, 3), np.float32))],
        "INVALID_ARGUMENT",
        "model 'identity_fp32', input 'INPUT': shape [2, 3] does not match the expected [-1, 2]",
        id="wrong-shape",
    ),
    pytest.param(
        "identity_fp32",
        lambda: [tensor("INPUT", np.zeros((1, 2), np.float64), "FP64")],
        "INVALID_ARGUMENT",
        "model 'identity_fp32', input 'INPUT': datatype FP64 does not match; expected FP32",
        id="wrong-datatype",
    ),
    pytest.param(
        "",
        lambda: [tensor("INPUT", X)],
        "INVALID_ARGUMENT",
        "model_name is empty; name the model to run",
        id="no-model-name",
    ),
    pytest.param(
        "broken",
        lambda: [tensor("INPUT", np.zeros((1, 2), np.float32))],
        "UNAVAILABLE",
        "field 'max_batch_size': expected an integer >= 0, got 'lots'",
        id="broken-model",
    ),
    pytest.param(
        "lookup",
        lambda: [tensor("INDEX", np.array([[99]], np.int64))],
        "INTERNAL",
        "model 'lookup' version '1' failed: ",
        id="model-failure",
    ),
]


@pytest.mark.parametrize(("model", "inputs", "code", "message"), ERRORS)
def test_errors_have_their_status_code_and_the_server_serves_on(
    client: Any, model: str, inputs: Any, code: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs())
    assert info.value.status() == f"StatusCode.{code}"
    assert message in info.value.message()
    assert "Traceback" not in info.value.message()
    assert_still_serving(client)
    if model == "lookup":  # the failure was the request's, not the model's
        out = client.infer("lookup", [tensor("INDEX", np.array([[7]], np.int64))])
        np.testing.assert_array_equal(out.as_numpy("OUTPUT"), TABLE[[7]][:, None, :])


def test_errors_of_the_other_rpcs(client: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("broken")
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert "field 'max_batch_size'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.get_system_shared_memory_status()  # an RPC of Triton's that mserve does not serve
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert_still_serving(client)


# -- the repository and statistics ----------------------------------------------------------------


def test_repository_index_unload_and_load(client: Any, server: GrpcServer) -> None:
    rows = {(r.name, r.version): r for r in client.get_model_repository_index().models}
    broken = rows["broken", ""]
    assert broken.state == "UNAVAILABLE"
    config_path = server.repository / "broken" / "config.yaml"
    assert f"{config_path}: field 'max_batch_size': expected an integer >= 0" in broken.reason
    assert rows["swappable", "1"].state == "READY"
    assert [v for (n, v) in rows if n == "versions_all"] == ["1", "2", "3"]
    http_rows = server.http.request("POST", "/v2/repository/index", "").json()
    assert {(r["name"], r.get("version", ""), r["state"]) for r in http_rows} == {
        (r.name, r.version, r.state) for r in rows.values()
    }
    with grpc.insecure_channel(server.grpc_address) as channel:  # tritonclient has no ready=
        index = channel.unary_unary(
            f"/{V2_SERVICE}/RepositoryIndex",
            request_serializer=pb.RepositoryIndexRequest.SerializeToString,
            response_deserializer=pb.RepositoryIndexResponse.FromString,
        )
        ready = index(pb.RepositoryIndexRequest(ready=True), timeout=10).models
    assert {r.state for r in ready} == {"READY"}
    assert "broken" not in {r.name for r in ready}

    assert np.array_equal(add_const(client, "swappable"), X + 10)
    client.unload_model("swappable")
    assert not client.is_model_ready("swappable")
    with pytest.raises(InferenceServerException) as info:
        add_const(client, "swappable")
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert info.value.message() == "model 'swappable' is not ready (state: UNAVAILABLE): unloaded"
    rows = {(r.name, r.version): r for r in client.get_model_repository_index().models}
    unloaded = [r for (n, _), r in rows.items() if n == "swappable"]
    assert [(r.state, r.reason) for r in unloaded] == [("UNAVAILABLE", "unloaded")]
    assert client.is_model_ready("digits")  # the others keep serving

    client.load_model("swappable")
    assert client.is_model_ready("swappable")
    assert np.array_equal(add_const(client, "swappable"), X + 10)
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call("not_in_repository")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "unknown model 'not_in_repository'" in info.value.message()


def test_statistics_count_the_requests_sent(client: Any, server: GrpcServer) -> None:
    sizes = [1, 3, 3, 8]
    before_ms = time.time() * 1000
    for rows in sizes:
        client.infer("stats_probe", [tensor("INPUT", np.full((rows, 2), rows, np.float32))])
    for bad in (np.zeros((9, 2), np.float32), np.zeros((1, 3), np.float32)):
        with pytest.raises(InferenceServerException) as info:
            client.infer("stats_probe", [tensor("INPUT", bad)])  # over max_batch_size; width
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"

    (stats,) = client.get_inference_statistics("stats_probe").model_stats
    assert (stats.name, stats.version) == ("stats_probe", "1")
    assert stats.inference_count == sum(sizes)
    assert stats.execution_count == len(sizes)
    assert before_ms - 1000 <= stats.last_inference <= time.time() * 1000 + 1000
    assert stats.inference_stats.success.count == len(sizes)
    assert stats.inference_stats.fail.count == 2
    assert stats.inference_stats.compute_infer.ns > 0
    by_size = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
    assert by_size == {1: 1, 3: 2, 8: 1}
    # the same numbers as the HTTP port's
    (http,) = server.http.request("GET", "/v2/models/stats_probe/stats").json()["model_stats"]
    assert (http["inference_count"], http["execution_count"]) == (
        stats.inference_count,
        stats.execution_count,
    )
    assert http["inference_stats"]["success"] == {
        "count": stats.inference_stats.success.count,
        "ns": stats.inference_stats.success.ns,
    }
    everything = client.get_inference_statistics().model_stats
    names = {s.name for s in everything}
    assert {"digits", "stats_probe", "identity_bool", "versions_all"} <= names


# -- the stream ---------------------------------------------------------------------------------


def test_stream_answers_every_request_and_reports_a_bad_one_without_ending(client: Any) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        sent = {}
        for i in range(20):
            data = np.array([[i, -i]], np.float32)
            sent[str(i)] = data
            client.async_stream_infer("identity_fp32", [tensor("INPUT", data)], request_id=str(i))
            if i == 9:  # one bad request in the middle of the stream
                bad = [tensor("INPUT", np.zeros((1, 5), np.float32))]
                client.async_stream_infer("identity_fp32", bad, request_id="bad")
        a = np.ones((1, 4), np.float32)
        client.async_stream_infer(
            "addsub", [tensor("INPUT0", a), tensor("INPUT1", a)], request_id="two-inputs"
        )
        got: dict[str, Any] = {}
        errors = []
        for _ in range(len(sent) + 2):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result
    finally:
        client.stop_stream()
    assert len(errors) == 1
    assert "input 'INPUT': shape [1, 5] does not match the expected [-1, 2]" in (
        errors[0].message()
    )
    assert set(got) == {*sent, "two-inputs"}
    for request_id, data in sent.items():
        np.testing.assert_array_equal(got[request_id].as_numpy("OUTPUT"), data)
    np.testing.assert_array_equal(got["two-inputs"].as_numpy("OUTPUT0"), a + a)
    np.testing.assert_array_equal(got["two-inputs"].as_numpy("OUTPUT1"), a - a)
    assert answers.empty()
    assert_still_serving(client)


# -- the same server's HTTP port and /metrics -----------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests_total(
    samples: Samples, model: str, version: str, protocol: str, outcome: str
) -> float:
    labels = {"model": model, "version": version, "protocol": protocol, "outcome": outcome}
    return samples.get(("mserve_requests_total", tuple(sorted(labels.items()))), 0.0)


def test_http_still_serves_and_metrics_count_grpc_requests(client: Any, server: GrpcServer) -> None:
    before = scrape(server.http.address)
    pair = np.array([[1.0, 2.0]], np.float32)
    for _ in range(5):
        client.infer("metered", [tensor("INPUT", pair)])
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for _ in range(3):
            client.async_stream_infer("metered", [tensor("INPUT", pair)])
        assert all(answers.get(timeout=30)[1] is None for _ in range(3))
    finally:
        client.stop_stream()
    for _ in range(2):
        with pytest.raises(InferenceServerException):
            client.infer("metered", [tensor("INPUT", np.zeros((1, 3), np.float32))])
    with pytest.raises(InferenceServerException):
        client.infer("lookup", [tensor("INDEX", np.array([[99]], np.int64))])
    with pytest.raises(InferenceServerException):
        client.infer("metered", [tensor("INPUT", pair)], model_version="7")

    http = httpclient.InferenceServerClient(server.http.address)
    try:
        x = httpclient.InferInput("INPUT", [1, 2], "FP32")
        x.set_data_from_numpy(pair)
        assert http.infer("metered", [x]).as_numpy("OUTPUT").tolist() == [[1.0, 2.0]]
        assert http.is_server_ready()
    finally:
        http.close()

    after = scrape(server.http.address)

    def delta(model: str, protocol: str, outcome: str, version: str = "1") -> float:
        return requests_total(after, model, version, protocol, outcome) - requests_total(
            before, model, version, protocol, outcome
        )

    assert delta("metered", "grpc", "success") == 5 + 3  # unary and streamed alike
    assert delta("metered", "grpc", "bad_request") == 2
    assert delta("metered", "grpc", "not_found", version="") == 1
    assert delta("lookup", "grpc", "model_error") == 1
    assert delta("metered", "http", "success") == 1
    labels = {"model": "metered", "version": "1", "protocol": "grpc"}
    count = ("mserve_request_duration_seconds_count", tuple(sorted(labels.items())))
    assert after[count] - before.get(count, 0.0) == 8


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_grpc_port_in_use_is_refused_with_a_clear_message(
    tmp_path: Path, mserve_cli: Any, workers: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mserve_cli(
            "serve",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--grpc-port",
            str(port),
            "--workers",
            workers,
            timeout=60,
        )
    assert result.returncode == 5, result.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in result.stderr
    assert "choose another --grpc-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_share_the_grpc_port_and_the_size_limit_holds(
    tmp_path: Path, start_server: Any, onnx_factory: Any, place: Any
) -> None:
    place(tmp_path, "identity_fp32", {1: onnx_factory.identity("FP32")})
    port = free_port()
    served = start_server(
        tmp_path, args=["--grpc-port", str(port), "--workers", "2", "--max-body-mb", "1"]
    )
    address = f"127.0.0.1:{port}"
    wait_for_grpc(address)
    sent = 24
    for i in range(sent):  # a channel each, so the kernel spreads them over the workers
        c = grpcclient.InferenceServerClient(address)
        try:
            data = np.array([[i, -i]], np.float32)
            out = c.infer("identity_fp32", [tensor("INPUT", data)]).as_numpy("OUTPUT")
            np.testing.assert_array_equal(out, data)
        finally:
            c.close()

    c = grpcclient.InferenceServerClient(address)
    try:
        big = np.zeros((200_000, 2), np.float32)  # 1.6 MB of raw contents, over 1 MiB
        with pytest.raises(InferenceServerException) as info:
            c.infer("identity_fp32", [tensor("INPUT", big)])
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "vs. 1048576)" in info.value.message()  # gRPC's own words name the limit
        assert_still_serving(c)
    finally:
        c.close()

    labels = {"model": "identity_fp32", "version": "1", "protocol": "grpc"}
    key = ("mserve_requests_total", tuple(sorted({**labels, "outcome": "success"}.items())))
    deadline = time.monotonic() + 10
    seen: list[float] = []
    while time.monotonic() < deadline:  # each worker publishes its counts twice a second
        samples = scrape(served.address)
        seen.append(samples.get(key, 0.0))
        if seen[-3:] == [sent + 1] * 3 and samples[("mserve_workers", ())] == 2:
            break
        time.sleep(0.2)
    assert seen[-3:] == [sent + 1] * 3, seen
