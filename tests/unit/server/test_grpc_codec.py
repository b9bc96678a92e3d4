"""The gRPC codec without sockets: ModelInferRequest -> InferRequest for raw and typed contents
of every datatype, the errors a bad request meets, and the responses, configurations and
statistics as the messages clients read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.config import DynamicBatching, ModelConfig, VersionPolicy
from mserve.errors import InvalidInput, MalformedRequest, MserveError
from mserve.protocol import (
    DATATYPES,
    InferRequest,
    InferResponse,
    ModelMetadata,
    Tensor,
    TensorSpec,
)
from mserve.repository import Repository
from mserve.server.dataplane import DataPlane
from mserve.server.grpc.codec import (
    CONTENTS_FIELD,
    decode_infer,
    encode_config,
    encode_infer,
    encode_metadata,
    encode_statistics,
)
from mserve.server.models import ModelManager
from mserve.wire import inference_pb2 as pb

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


def array(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(6, dtype=object)
        out[:] = VALUES[datatype]
        return out.reshape(3, 2)
    return np.array(VALUES[datatype], dtype=DATATYPES[datatype]).reshape(3, 2)


def little_endian(datatype: str, data: np.ndarray) -> bytes:
    """The raw encoding, written independently of the codec: numpy's little-endian bytes, or
    each BYTES element after its 4-byte little-endian length."""
    if datatype == "BYTES":
        return b"".join(len(v).to_bytes(4, "little") + v for v in data.reshape(-1))
    return data.astype(DATATYPES[datatype].newbyteorder("<")).tobytes()


def request(*inputs: tuple[str, str, list[int]], model: str = "m") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape in inputs:
        req.inputs.add(name=name, datatype=datatype, shape=shape)
    return req


# -- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_raw_contents_of_every_datatype(datatype: str) -> None:
    data = array(datatype)
    req = request(("INPUT", datatype, [3, 2]))
    req.raw_input_contents.append(little_endian(datatype, data))
    (tensor,) = decode_infer(req).inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("INPUT", datatype, (3, 2))
    if datatype == "BYTES":
        assert tensor.data.dtype == object
        assert tensor.data.tolist() == data.tolist()
    else:
        assert tensor.data.dtype == DATATYPES[datatype]  # native order, whatever was sent
        np.testing.assert_array_equal(tensor.data, data)


@pytest.mark.parametrize("datatype", list(CONTENTS_FIELD))
def test_typed_contents_of_every_datatype_that_has_a_field(datatype: str) -> None:
    data = array(datatype)
    req = request(("INPUT", datatype, [3, 2]))
    getattr(req.inputs[0].contents, CONTENTS_FIELD[datatype]).extend(VALUES[datatype])
    (tensor,) = decode_infer(req).inputs
    assert tensor.shape == (3, 2)
    if datatype == "BYTES":
        assert tensor.data.tolist() == data.tolist()
    else:
        assert tensor.data.dtype == DATATYPES[datatype]
        np.testing.assert_array_equal(tensor.data, data)


def test_contents_fields_follow_the_specification() -> None:
    assert set(CONTENTS_FIELD) == set(DATATYPES) - {"FP16"}  # no BF16 in mserve's datatypes
    for field in CONTENTS_FIELD.values():
        assert field in pb.InferTensorContents.DESCRIPTOR.fields_by_name


def test_request_fields_parameters_and_requested_outputs() -> None:
    req = request(("INPUT0", "FP32", [1, 2]), ("INPUT1", "INT32", [2]), model="addsub")
    req.model_version = "3"
    req.id = "req-1"
    req.parameters["priority"].int64_param = 2
    req.parameters["tenant"].string_param = "tests"
    req.parameters["fast"].bool_param = True
    req.parameters["scale"].double_param = 0.5
    req.parameters["big"].uint64_param = 2**64 - 1
    req.inputs[0].parameters["note"].string_param = "first"
    req.raw_input_contents.extend(
        [np.array([1.5, -2], "<f4").tobytes(), np.array([1, -1], "<i4").tobytes()]
    )
    req.outputs.add(name="OUTPUT1").parameters["classification"].int64_param = 2
    req.outputs.add(name="OUTPUT0")

    decoded = decode_infer(req)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("addsub", "3", "req-1")
    assert decoded.parameters == {
        "priority": 2,
        "tenant": "tests",
        "fast": True,
        "scale": 0.5,
        "big": 2**64 - 1,
    }
    first, second = decoded.inputs
    assert first.parameters == {"note": "first"}
    assert first.data.tolist() == [[1.5, -2.0]]
    assert second.parameters == {}
    assert second.data.tolist() == [1, -1]
    assert decoded.outputs is not None
    assert [(o.name, o.parameters) for o in decoded.outputs] == [
        ("OUTPUT1", {"classification": 2}),
        ("OUTPUT0", {}),
    ]


def test_unset_version_id_and_outputs_mean_the_defaults() -> None:
    req = request(("INPUT", "FP32", [0, 2]))
    req.raw_input_contents.append(b"")
    decoded = decode_infer(req)
    assert (decoded.model_version, decoded.id, decoded.outputs) == (None, None, None)
    assert decoded.parameters == {}
    assert decoded.inputs[0].data.shape == (0, 2)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        pytest.param(
            lambda: request(("INPUT", "FP32", [1, 2]), model=""),
            MalformedRequest,
            "model_name is empty; name the model to run",
            id="empty-model-name",
        ),
        pytest.param(
            lambda: raw(request(("INPUT", "FP32", [1, 2])), b"\0" * 7),
            InvalidInput,
            "model 'm', input 'INPUT': raw data is 7 bytes but shape [1, 2] of FP32 needs 8",
            id="wrong-raw-size",
        ),
        pytest.param(
            lambda: raw(request(("A", "FP32", [1]), ("B", "FP32", [1])), b"\0" * 4),
            MalformedRequest,
            "raw_input_contents has 1 entries but there are 2 inputs; send one entry per "
            "input, in the order of inputs, or none and use contents",
            id="raw-count-not-inputs",
        ),
        pytest.param(
            lambda: raw(typed(request(("INPUT", "FP32", [1])), "fp32_contents", [1.0]), b"\0" * 4),
            InvalidInput,
            "model 'm', input 'INPUT': has both contents and raw_input_contents; send the data "
            "one way only",
            id="raw-and-typed",
        ),
        pytest.param(
            lambda: typed(request(("INPUT", "INT8", [3])), "int_contents", [0, 127, 128]),
            InvalidInput,
            "model 'm', input 'INPUT': values outside INT8's range [-128, 127]",
            id="int8-out-of-range",
        ),
        pytest.param(
            lambda: typed(request(("INPUT", "INT8", [1])), "int_contents", [-129]),
            InvalidInput,
            "model 'm', input 'INPUT': values outside INT8's range [-128, 127]",
            id="int8-below-range",
        ),
        pytest.param(
            lambda: typed(request(("INPUT", "UINT16", [1])), "uint_contents", [65536]),
            InvalidInput,
            "model 'm', input 'INPUT': values outside UINT16's range [0, 65535]",
            id="uint16-out-of-range",
        ),
        pytest.param(
            lambda: typed(request(("INPUT", "FP16", [2])), "fp32_contents", [1.0, 2.0]),
            InvalidInput,
            "model 'm', input 'INPUT': FP16 data must be sent as raw_input_contents "
            "(it has no typed contents)",
            id="fp16-via-contents",
        ),
        pytest.param(
            lambda: raw(request(("INPUT", "FP32", [-1, 2])), b""),
            InvalidInput,
            "model 'm', input 'INPUT': shape must hold integers >= 0, got [-1, 2]",
            id="negative-shape",
        ),
        pytest.param(
            lambda: raw(request(("INPUT", "FP8", [1])), b"\0"),
            InvalidInput,
            "model 'm', input 'INPUT': datatype 'FP8' is not a V2 datatype; expected one of "
            + ", ".join(DATATYPES),
            id="unknown-datatype",
        ),
        pytest.param(
            lambda: typed(request(("INPUT", "INT64", [2, 2])), "int_contents", [1, 2, 3, 4]),
            InvalidInput,
            "model 'm', input 'INPUT': contents.int64_contents holds 0 values but shape [2, 2] "
            "needs 4 (data was found in int_contents; a INT64 tensor uses int64_contents)",
            id="contents-in-the-wrong-field",
        ),
        pytest.param(
            lambda: typed(request(("INPUT", "FP32", [3])), "fp32_contents", [1.0]),
            InvalidInput,
            "model 'm', input 'INPUT': contents.fp32_contents holds 1 values but shape [3] needs 3",
            id="too-few-values",
        ),
        pytest.param(
            lambda: raw(request(("INPUT", "BYTES", [1])), b"\x05\0\0\0abc"),
            InvalidInput,
            "model 'm', input 'INPUT': BYTES element of 5 bytes runs past the end of the "
            "binary data",
            id="bytes-element-truncated",
        ),
        pytest.param(
            lambda: raw(request(("INPUT", "BYTES", [2])), b"\x01\0\0\0a"),
            InvalidInput,
            "model 'm', input 'INPUT': binary data holds 1 BYTES elements but the shape needs 2",
            id="bytes-too-few-elements",
        ),
    ],
)
def test_bad_requests_say_what_was_expected(build: Any, error: type, message: str) -> None:
    with pytest.raises(MserveError) as info:
        decode_infer(build())
    assert type(info.value) is error
    assert info.value.message == message


def raw(req: pb.ModelInferRequest, *chunks: bytes) -> pb.ModelInferRequest:
    req.raw_input_contents.extend(chunks)
    return req


def typed(req: pb.ModelInferRequest, field: str, values: list[Any]) -> pb.ModelInferRequest:
    getattr(req.inputs[0].contents, field).extend(values)
    return req


# -- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_outputs_leave_as_little_endian_raw_contents(datatype: str) -> None:
    data = array(datatype)
    response = InferResponse("m", "2", [Tensor("OUTPUT", datatype, data)], id="r")
    out = encode_infer(response)
    assert (out.model_name, out.model_version, out.id) == ("m", "2", "r")
    (tensor,) = out.outputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("OUTPUT", datatype, [3, 2])
    assert not tensor.HasField("contents")  # raw only, as Triton answers
    assert list(out.raw_output_contents) == [little_endian(datatype, data)]


def test_big_endian_and_strided_arrays_leave_little_endian_and_row_major() -> None:
    base = np.arange(6, dtype=">f4").reshape(2, 3)
    transposed = base.T  # (3, 2), not contiguous, big-endian
    ints = np.array([[1, -2]], dtype=">i8")
    response = InferResponse(
        "m", "1", [Tensor("A", "FP32", transposed), Tensor("B", "INT64", ints)]
    )
    out = encode_infer(response)
    expected = np.ascontiguousarray(transposed.astype("<f4")).tobytes()
    assert out.raw_output_contents[0] == expected
    assert np.frombuffer(out.raw_output_contents[0], "<f4").tolist() == [0, 3, 1, 4, 2, 5]
    assert out.raw_output_contents[1] == np.array([1, -2], "<i8").tobytes()
    assert [list(t.shape) for t in out.outputs] == [[3, 2], [1, 2]]


def test_response_without_id_and_with_parameters() -> None:
    response = InferResponse(
        "m",
        "1",
        [Tensor("OUTPUT", "BYTES", np.array(["h\u00e9", b"x"], dtype=object))],
        parameters={"done": True, "count": 3, "ratio": 0.25, "note": "ok"},
    )
    out = encode_infer(response)
    assert out.id == ""
    assert out.raw_output_contents[0] == b"\x03\0\0\0h\xc3\xa9\x01\0\0\0x"
    p = out.parameters
    assert p["done"].WhichOneof("parameter_choice") == "bool_param"
    assert (p["done"].bool_param, p["count"].int64_param) == (True, 3)
    assert (p["ratio"].double_param, p["note"].string_param) == (0.25, "ok")


def test_encoded_output_decodes_back_to_the_same_tensor() -> None:
    """Our encoder and decoder agree: what a server sends, an mserve client reads back."""
    tensors = [Tensor(dt, dt, array(dt)) for dt in DATATYPES]
    out = encode_infer(InferResponse("m", "1", tensors))
    req = pb.ModelInferRequest(model_name="m")
    for t in out.outputs:
        req.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
    req.raw_input_contents.extend(out.raw_output_contents)
    for sent, got in zip(tensors, decode_infer(req).inputs, strict=True):
        assert got.data.tolist() == sent.data.tolist(), sent.datatype


def test_metadata() -> None:
    md = ModelMetadata(
        "digits",
        ("1", "2"),
        "onnxruntime_onnx",
        (TensorSpec("input", "FP32", (-1, 64)),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("text", "BYTES", (2,))),
    )
    out = encode_metadata(md)
    assert (out.name, list(out.versions), out.platform) == (
        "digits",
        ["1", "2"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in out.inputs] == [
        ("input", "FP32", [-1, 64])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in out.outputs] == [
        ("label", "INT64", [-1]),
        ("text", "BYTES", [2]),
    ]


# -- configuration and statistics, from a real data plane ---------------------------------------


@pytest.fixture
def dataplane(tmp_path: Path, onnx_factory: Any, place: Any) -> Iterator[DataPlane]:
    place(
        tmp_path,
        "batched",
        {1: onnx_factory.identity("FP32"), 2: onnx_factory.identity("FP32")},
        config=ModelConfig(
            "batched",
            max_batch_size=16,
            instance_count=2,
            version_policy=VersionPolicy("specific", specific=(1, 2)),
            dynamic_batching=DynamicBatching(
                max_queue_delay_us=300,
                preferred_batch_sizes=(4, 8),
                max_queue_size=32,
                default_timeout_us=5000,
            ),
        ),
    )
    place(tmp_path, "strings", {3: onnx_factory.identity("BYTES", (2,))})
    place(
        tmp_path,
        "every",
        {1: onnx_factory.identity("INT8")},
        config=ModelConfig("every", version_policy=VersionPolicy("all")),
    )
    models = ModelManager(Repository(tmp_path))
    models.load_all()
    yield DataPlane(models)
    models.close()


def test_config_of_a_batched_model_with_a_dynamic_batcher(dataplane: DataPlane) -> None:
    doc = dataplane.model_config("batched")
    c = encode_config(doc).config
    assert (c.name, c.platform, c.backend, c.max_batch_size) == (
        "batched",
        "onnxruntime_onnx",
        "onnxruntime",
        16,
    )
    assert c.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(c.version_policy.specific.versions) == [1, 2]
    assert [(t.name, t.data_type, list(t.dims)) for t in c.input] == [("INPUT", pb.TYPE_FP32, [2])]
    assert [(t.name, t.data_type, list(t.dims)) for t in c.output] == [
        ("OUTPUT", pb.TYPE_FP32, [2])
    ]
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
    assert c.WhichOneof("scheduling_choice") == "dynamic_batching"
    db = c.dynamic_batching
    assert list(db.preferred_batch_size) == [4, 8]
    assert db.max_queue_delay_microseconds == 300
    q = db.default_queue_policy
    assert (q.timeout_action, q.default_timeout_microseconds, q.max_queue_size) == (
        pb.ModelQueuePolicy.REJECT,
        5000,
        32,
    )


def test_config_of_unbatched_models_and_other_policies(dataplane: DataPlane) -> None:
    strings = encode_config(dataplane.model_config("strings")).config
    assert strings.max_batch_size == 0
    assert strings.version_policy.latest.num_versions == 1
    assert strings.WhichOneof("scheduling_choice") is None
    assert [(t.data_type, list(t.dims)) for t in strings.input] == [(pb.TYPE_STRING, [2])]
    every = encode_config(dataplane.model_config("every")).config
    assert every.version_policy.WhichOneof("policy_choice") == "all"
    assert [(t.data_type, list(t.dims)) for t in every.input] == [(pb.TYPE_INT8, [-1, 2])]


def test_statistics(dataplane: DataPlane) -> None:
    x = Tensor("INPUT", "FP32", np.ones((3, 2), np.float32))
    one_row = Tensor("INPUT", "FP32", np.ones((1, 2), np.float32))

    async def send() -> None:  # one loop for all: the dynamic batcher lives on it
        for _ in range(2):
            await dataplane.infer(InferRequest("batched", "2", [x]))
        await dataplane.infer(InferRequest("batched", "1", [one_row]))

    asyncio.run(send())
    doc = dataplane.statistics("batched")
    out = encode_statistics(doc)
    assert len(out.model_stats) == len(doc["model_stats"]) == 2
    for s, m in zip(doc["model_stats"], out.model_stats, strict=True):
        assert (m.name, m.version, m.last_inference) == (
            s["name"],
            s["version"],
            s["last_inference"],
        )
        assert (m.inference_count, m.execution_count) == (
            s["inference_count"],
            s["execution_count"],
        )
        for phase, d in s["inference_stats"].items():
            got = getattr(m.inference_stats, phase)
            assert (got.count, got.ns) == (d["count"], d["ns"]), phase
        assert [
            (b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in m.batch_stats
        ] == [
            (b["batch_size"], b["compute_infer"]["count"], b["compute_infer"]["ns"])
            for b in s["batch_stats"]
        ]
    one, two = out.model_stats
    assert (one.version, one.inference_count, one.execution_count) == ("1", 1, 1)
    assert (two.version, two.inference_count, two.execution_count) == ("2", 6, 2)
    assert two.inference_stats.success.count == 2
    assert two.inference_stats.compute_infer.ns > 0
    assert [b.batch_size for b in two.batch_stats] == [3]
    assert two.last_inference > 0
    everything = encode_statistics(dataplane.statistics())
    assert [(m.name, m.version) for m in everything.model_stats] == [
        ("batched", "1"),
        ("batched", "2"),
        ("every", "1"),
        ("strings", "3"),
    ]
