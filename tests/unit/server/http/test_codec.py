"""V2 REST bodies <-> protocol types: JSON and binary tensors, raw binary, and every error."""

from __future__ import annotations

import base64
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from mserve.errors import InvalidInput, InvalidRequest, MalformedRequest
from mserve.protocol import (
    DATATYPES,
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
    TensorSpec,
)
from mserve.server.http import codec

#: per datatype: values that exercise its range, as JSON carries them
SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, False, True],
    "UINT8": [0, 1, 128, 255],
    "UINT16": [0, 1, 40000, 65535],
    "UINT32": [0, 1, 3_000_000_000, 2**32 - 1],
    "UINT64": [0, 1, 2**63, 2**64 - 1],
    "INT8": [-128, -1, 0, 127],
    "INT16": [-32768, -1, 0, 32767],
    "INT32": [-(2**31), -1, 0, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 2**63 - 1],
    "FP16": [-65504.0, -0.5, 0.0, 0.099975586],
    "FP32": [-3.4028235e38, -0.1, 0.0, 1.5e-45],
    "FP64": [-1.7976931348623157e308, -0.1, 0.0, 5e-324],
    "BYTES": ["", "a", "héllo", "x" * 300],
}
NUMERIC = [dt for dt in DATATYPES if dt != "BYTES"]


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def decode(doc: Any, binary: bytes = b"", header_length: int | None = None) -> InferRequest:
    header = body(doc)
    if binary and header_length is None:
        header_length = len(header)
    return codec.decode_infer(header + binary, header_length, "m", None)


def one_input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", **fields}]}


def expected_array(datatype: str, values: list[Any]) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = [v.encode() for v in values]
        return out
    return np.array(values, dtype=DATATYPES[datatype])


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


# -- decoding: the good cases ---------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_json_tensor_of_every_datatype_decodes_exactly(datatype: str) -> None:
    values = SAMPLES[datatype]
    req = decode(one_input(datatype=datatype, shape=[2, 2], data=values))
    (t,) = req.inputs
    assert (t.name, t.datatype, t.shape) == ("x", datatype, (2, 2))
    assert t.data.dtype == DATATYPES[datatype]
    assert np.array_equal(t.data.reshape(-1), expected_array(datatype, values))


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_binary_tensor_of_every_datatype_decodes_exactly(datatype: str) -> None:
    values = expected_array(datatype, SAMPLES[datatype])
    raw = codec.tensor_bytes(Tensor("x", datatype, values))
    doc = one_input(datatype=datatype, shape=[4], parameters={"binary_data_size": len(raw)})
    (t,) = decode(doc, raw).inputs
    assert t.shape == (4,)
    assert np.array_equal(t.data, values)
    if datatype != "BYTES":
        assert t.data.dtype == DATATYPES[datatype]


def test_nested_json_data_is_accepted_like_flat_data() -> None:
    (t,) = decode(one_input(datatype="INT32", shape=[2, 3], data=[[1, 2, 3], [4, 5, 6]])).inputs
    assert t.data.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_base64_bytes_elements_decode_to_their_bytes() -> None:
    payload = bytes(range(256))
    data = [{"b64": base64.b64encode(payload).decode()}, "text"]
    (t,) = decode(one_input(datatype="BYTES", shape=[2], data=data)).inputs
    assert t.data.tolist() == [payload, b"text"]


def test_binary_and_json_inputs_mix_in_order_of_the_header() -> None:
    a = np.arange(6, dtype=np.float32)
    c = np.array([7, 8], dtype=np.int64)
    doc = {
        "id": "req-1",
        "parameters": {"binary_data_output": True, "custom": "kept"},
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 3],
                "parameters": {"binary_data_size": 24},
            },
            {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["json"]},
            {
                "name": "c",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"binary_data_size": 16},
            },
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    req = decode(doc, a.tobytes() + c.tobytes())
    assert [t.name for t in req.inputs] == ["a", "b", "c"]
    assert np.array_equal(req.inputs[0].data, a.reshape(2, 3))
    assert req.inputs[1].data.tolist() == [b"json"]
    assert np.array_equal(req.inputs[2].data, c)
    assert req.id == "req-1"
    assert req.parameters == {"binary_data_output": True, "custom": "kept"}
    assert req.outputs == [
        RequestedOutput("y", {"binary_data": False}),
        RequestedOutput("z", {}),
    ]
    assert (req.model_name, req.model_version) == ("m", None)


def test_header_length_equal_to_the_body_means_all_json() -> None:
    doc = body(one_input(datatype="FP32", shape=[1], data=[1.0]))
    req = codec.decode_infer(doc, len(doc), "m", "3")
    assert req.inputs[0].data.tolist() == [1.0]
    assert req.model_version == "3"


def test_empty_tensor_is_allowed() -> None:
    (t,) = decode(one_input(datatype="FP32", shape=[0, 4], data=[])).inputs
    assert t.shape == (0, 4)


# -- decoding: every error ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b'{"inputs": [', MalformedRequest, "request body is not valid JSON"),
        (b"", MalformedRequest, "request body is not valid JSON"),
        (b"[1, 2]", MalformedRequest, "must be a JSON object with an 'inputs' list"),
        (b"{}", MalformedRequest, "'inputs': a non-empty list of tensors"),
        (b'{"inputs": []}', MalformedRequest, "'inputs': a non-empty list of tensors"),
        (b'{"inputs": {"x": 1}}', MalformedRequest, "'inputs': a non-empty list of tensors"),
        (b'{"inputs": [3]}', MalformedRequest, "inputs[0] must be an object"),
        (b'{"inputs": [{"datatype": "FP32"}]}', MalformedRequest, "inputs[0] needs a 'name'"),
    ],
)
def test_malformed_body(raw: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        codec.decode_infer(raw, None, "m", None)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"datatype": "FP8", "shape": [1], "data": [1]}, "datatype 'FP8' is not a V2 datatype"),
        (
            {"datatype": ["FP32"], "shape": [1], "data": [1]},
            "is not a V2 datatype; expected one of",
        ),
        (
            {"datatype": {"a": 1}, "shape": [1], "data": [1]},
            "is not a V2 datatype; expected one of",
        ),
        ({"shape": [1], "data": [1]}, "datatype None is not a V2 datatype"),
        ({"datatype": "FP32", "shape": [-1], "data": [1]}, "shape must be a list of integers >= 0"),
        (
            {"datatype": "FP32", "shape": [1.0], "data": [1]},
            "shape must be a list of integers >= 0",
        ),
        (
            {"datatype": "FP32", "shape": [True], "data": [1]},
            "shape must be a list of integers >= 0",
        ),
        ({"datatype": "FP32", "shape": "2", "data": [1]}, "shape must be a list of integers >= 0"),
        (
            {"datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]},
            "data has 3 elements but shape [2, 2] needs 4",
        ),
        (
            {"datatype": "FP32", "shape": [1], "data": [1, 2]},
            "data has 2 elements but shape [1] needs 1",
        ),
        (
            {"datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]},
            "data is not a list of FP32 values",
        ),
        ({"datatype": "FP32", "shape": [1], "data": ["1.5"]}, "must be numbers for FP32"),
        ({"datatype": "FP32", "shape": [1], "data": [None]}, "must be numbers for FP32"),
        ({"datatype": "FP32", "shape": [1], "data": [True]}, "must be numbers for FP32"),
        ({"datatype": "FP32", "shape": [1], "data": [{"x": 1}]}, "must be numbers for FP32"),
        ({"datatype": "FP16", "shape": [1], "data": [70000.0]}, "outside the range of FP16"),
        ({"datatype": "FP32", "shape": [1], "data": [1e39]}, "outside the range of FP32"),
        ({"datatype": "INT32", "shape": [2], "data": [1.5, 2]}, "must be integers for INT32"),
        ({"datatype": "INT64", "shape": [1], "data": [1.0]}, "must be integers for INT64"),
        ({"datatype": "INT8", "shape": [1], "data": [True]}, "must be integers for INT8"),
        ({"datatype": "UINT8", "shape": [1], "data": [256]}, "outside the range of UINT8"),
        ({"datatype": "UINT8", "shape": [1], "data": [-1]}, "outside the range of UINT8"),
        ({"datatype": "INT8", "shape": [1], "data": [-129]}, "outside the range of INT8"),
        (
            {"datatype": "UINT64", "shape": [2], "data": [2**64 - 1, -1]},
            "outside the range of UINT64",
        ),
        (
            {"datatype": "UINT64", "shape": [2], "data": [2**64 - 1, 0.5]},
            "must be integers for UINT64",
        ),
        ({"datatype": "INT64", "shape": [2], "data": [2**63, 0]}, "outside the range of INT64"),
        ({"datatype": "BOOL", "shape": [2], "data": [1, 0]}, "must be true / false for BOOL"),
        ({"datatype": "BOOL", "shape": [1], "data": ["true"]}, "must be true / false for BOOL"),
        ({"datatype": "BYTES", "shape": [2], "data": ["a", 3]}, "BYTES elements must be strings"),
        (
            {"datatype": "BYTES", "shape": [1], "data": [{"b64": 3}]},
            "BYTES elements must be strings",
        ),
        ({"datatype": "FP32", "shape": [1]}, "has neither 'data' nor a binary_data_size"),
    ],
)
def test_invalid_input_names_model_tensor_and_expectation(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode(one_input(**fields))
    assert message in str(info.value)
    if isinstance(info.value, InvalidInput):
        assert str(info.value).startswith("model 'm', input 'x': ")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": 3}
                ]
            },
            "inputs[0].parameters must be a JSON object",
        ),
        ({**one_input(datatype="FP32", shape=[1], data=[1]), "id": 5}, "'id' must be a string"),
        (
            {**one_input(datatype="FP32", shape=[1], data=[1]), "parameters": [1]},
            "'parameters' must be a JSON object",
        ),
        (
            {**one_input(datatype="FP32", shape=[1], data=[1]), "outputs": "y"},
            "'outputs' must be a list",
        ),
        (
            {**one_input(datatype="FP32", shape=[1], data=[1]), "outputs": [{"nam": "y"}]},
            "outputs[0] needs a 'name'",
        ),
        (
            {
                **one_input(datatype="FP32", shape=[1], data=[1]),
                "outputs": [{"name": "y", "parameters": 1}],
            },
            "outputs[0].parameters must be a JSON object",
        ),
    ],
)
def test_malformed_fields(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedRequest) as info:
        decode(doc)
    assert message in str(info.value)


def binary_doc(datatype: str, shape: list[int], size: object) -> dict[str, Any]:
    return one_input(datatype=datatype, shape=shape, parameters={"binary_data_size": size})


@pytest.mark.parametrize(
    ("doc", "binary", "error", "message"),
    [
        (
            binary_doc("FP32", [2], 8),
            b"\0" * 4,
            MalformedRequest,
            "declares binary_data_size 8 but only 4 bytes",
        ),
        (
            binary_doc("FP32", [2], 4),
            b"\0" * 4,
            InvalidInput,
            "binary_data_size is 4 bytes but shape [2] of FP32 needs 8",
        ),
        (
            binary_doc("FP32", [1], -4),
            b"\0" * 4,
            InvalidInput,
            "binary_data_size must be an integer >= 0",
        ),
        (
            binary_doc("FP32", [1], "4"),
            b"\0" * 4,
            InvalidInput,
            "binary_data_size must be an integer >= 0",
        ),
        (
            binary_doc("FP32", [1], 4),
            b"\0" * 6,
            MalformedRequest,
            "2 bytes of binary data follow the header",
        ),
        (
            binary_doc("BYTES", [2], 9),
            length_prefixed([b"abcde"]),
            InvalidInput,
            "holds 1 BYTES elements but the shape needs 2",
        ),
        (
            binary_doc("BYTES", [1], 3),
            b"\x01\0\0",
            InvalidInput,
            "ends inside a 4-byte length prefix",
        ),
        (
            binary_doc("BYTES", [1], 6),
            b"\x09\0\0\0ab",
            InvalidInput,
            "element of 9 bytes runs past the end",
        ),
    ],
)
def test_binary_errors(
    doc: dict[str, Any], binary: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        decode(doc, binary)
    assert message in str(info.value)


@pytest.mark.parametrize("lie", [-1, 10_000])
def test_header_length_beyond_the_body_is_refused(lie: int) -> None:
    raw = body(binary_doc("FP32", [1], 4)) + b"\0" * 4
    with pytest.raises(MalformedRequest) as info:
        codec.decode_infer(raw, lie, "m", None)
    assert f"Inference-Header-Content-Length is {lie} but the body has {len(raw)} bytes" in str(
        info.value
    )


@pytest.mark.parametrize("delta", [-3, 2])
def test_header_length_that_cuts_the_json_wrong_is_refused(delta: int) -> None:
    header = body(binary_doc("FP32", [1], 4))
    with pytest.raises(MalformedRequest, match="inference request header is not valid JSON"):
        codec.decode_infer(header + b"\0" * 4, len(header) + delta, "m", None)


# -- raw binary (Inference-Header-Content-Length: 0) -----------------------------------------


def test_raw_binary_fills_the_free_dimension() -> None:
    x = np.arange(12, dtype=np.float32)
    req = codec.decode_raw(x.tobytes(), TensorSpec("x", "FP32", (-1, 4)), "m", "2")
    (t,) = req.inputs
    assert (t.name, t.datatype, t.shape) == ("x", "FP32", (3, 4))
    assert np.array_equal(t.data, x.reshape(3, 4))
    assert req.model_version == "2"
    assert req.parameters == {"binary_data_output": True}


def test_raw_binary_of_a_fixed_shape() -> None:
    x = np.array([1, -2], dtype=np.int16)
    (t,) = codec.decode_raw(x.tobytes(), TensorSpec("x", "INT16", (2,)), "m", None).inputs
    assert t.data.tolist() == [1, -2]


@pytest.mark.parametrize(
    ("shape", "items", "expected_shape"),
    [
        ((-1,), [b"a", b"", b"ccc"], (3,)),
        ((-1, 2), [b"a", b"b", b"c", b"d"], (2, 2)),
        ((2,), [b"a", b"b"], (2,)),
    ],
)
def test_raw_binary_bytes(
    shape: tuple[int, ...], items: list[bytes], expected_shape: tuple[int, ...]
) -> None:
    req = codec.decode_raw(length_prefixed(items), TensorSpec("x", "BYTES", shape), "m", None)
    (t,) = req.inputs
    assert t.shape == expected_shape
    assert t.data.reshape(-1).tolist() == items
    assert req.parameters == {"binary_data_output": True}


@pytest.mark.parametrize(
    ("spec", "raw", "message"),
    [
        (
            TensorSpec("x", "FP32", (-1, 4)),
            b"\0" * 20,
            "20 bytes is not a whole number of FP32 tensors of shape [-1, 4]",
        ),
        (TensorSpec("x", "FP32", (2,)), b"\0" * 4, "raw binary body has 4 bytes; expected 8"),
        (TensorSpec("x", "FP32", (2,)), b"\0" * 16, "raw binary body has 16 bytes; expected 8"),
        (TensorSpec("x", "FP32", (-1, -1)), b"\0" * 4, "at most one free dimension"),
        (TensorSpec("x", "BYTES", (-1, -1)), length_prefixed([b"a"]), "at most one free dimension"),
        (TensorSpec("x", "BYTES", (2,)), length_prefixed([b"a", b"b", b"c"]), "3 BYTES elements"),
        (
            TensorSpec("x", "BYTES", (-1, 2)),
            length_prefixed([b"a", b"b", b"c"]),
            "3 BYTES elements",
        ),
        (TensorSpec("x", "BYTES", (-1,)), b"\x05\0\0\0ab", "runs past the end"),
    ],
)
def test_raw_binary_errors(spec: TensorSpec, raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        codec.decode_raw(raw, spec, "m", None)
    assert message in str(info.value)


# -- encoding ---------------------------------------------------------------------------------


def response(*tensors: Tensor, id: str | None = None) -> InferResponse:
    return InferResponse("m", "1", list(tensors), id=id)


def request(outputs: list[RequestedOutput] | None = None, **parameters: Any) -> InferRequest:
    x = Tensor("x", "FP32", np.zeros(1, np.float32))
    return InferRequest("m", None, [x], outputs, parameters=parameters)


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_json_response_of_every_datatype(datatype: str) -> None:
    values = expected_array(datatype, SAMPLES[datatype]).reshape(2, 2)
    out, json_length = codec.encode_infer(response(Tensor("y", datatype, values)), request())
    assert json_length is None
    (entry,) = orjson.loads(out)["outputs"]
    assert {k: entry[k] for k in ("name", "datatype", "shape")} == {
        "name": "y",
        "datatype": datatype,
        "shape": [2, 2],
    }
    if datatype == "BYTES":
        assert entry["data"] == SAMPLES[datatype]
    else:  # floats may be written shorter (1e-45 for 1.5e-45), but read back exactly
        assert np.array_equal(
            np.array(entry["data"], dtype=DATATYPES[datatype]), values.reshape(-1)
        )


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_binary_response_of_every_datatype_round_trips(datatype: str) -> None:
    values = expected_array(datatype, SAMPLES[datatype]).reshape(2, 2)
    out, json_length = codec.encode_infer(
        response(Tensor("y", datatype, values)), request(binary_data_output=True)
    )
    assert json_length is not None
    doc = orjson.loads(out[:json_length])
    (entry,) = doc["outputs"]
    size = entry["parameters"]["binary_data_size"]
    assert json_length + size == len(out)
    assert "data" not in entry
    back = decode(binary_doc(datatype, entry["shape"], size), out[json_length:]).inputs[0].data
    assert np.array_equal(back, values)


def test_fp32_json_is_the_shortest_exact_repr() -> None:
    values = np.array([0.1, 1 / 3, 3.4028235e38], dtype=np.float32)
    out, _ = codec.encode_infer(response(Tensor("y", "FP32", values)), request())
    data = orjson.loads(out)["outputs"][0]["data"]
    assert np.array_equal(np.array(data, dtype=np.float32), values)


def test_per_output_binary_choice_overrides_the_request_default() -> None:
    y = Tensor("y", "INT32", np.array([1, 2], dtype=np.int32))
    z = Tensor("z", "FP64", np.array([0.5], dtype=np.float64))
    wanted = [RequestedOutput("y", {"binary_data": False}), RequestedOutput("z", {})]
    out, json_length = codec.encode_infer(response(y, z), request(wanted, binary_data_output=True))
    assert json_length is not None
    entries = orjson.loads(out[:json_length])["outputs"]
    assert entries[0] == {"name": "y", "datatype": "INT32", "shape": [2], "data": [1, 2]}
    assert entries[1]["parameters"] == {"binary_data_size": 8}
    assert out[json_length:] == np.array([0.5]).tobytes()

    out, json_length = codec.encode_infer(
        response(y, z), request([RequestedOutput("z", {"binary_data": True})])
    )
    assert json_length is not None
    entries = orjson.loads(out[:json_length])["outputs"]
    assert "data" in entries[0]
    assert entries[1]["parameters"] == {"binary_data_size": 8}


def test_id_and_response_parameters_are_echoed() -> None:
    resp = response(Tensor("y", "BOOL", np.array([True])), id="abc")
    resp.parameters = {"note": "x"}
    doc = orjson.loads(codec.encode_infer(resp, request())[0])
    assert doc == {
        "model_name": "m",
        "model_version": "1",
        "id": "abc",
        "parameters": {"note": "x"},
        "outputs": [{"name": "y", "datatype": "BOOL", "shape": [1], "data": [True]}],
    }
    no_id = orjson.loads(
        codec.encode_infer(response(Tensor("y", "BOOL", np.array([True]))), request())[0]
    )
    assert "id" not in no_id
    assert "parameters" not in no_id


def test_bytes_from_a_string_model_encode_as_utf8() -> None:
    # ONNX Runtime hands string outputs back as str; the wire carries their UTF-8 bytes
    arr = np.array(["héllo", ""], dtype=object)
    t = Tensor("y", "BYTES", arr)
    assert codec.tensor_bytes(t) == length_prefixed(["héllo".encode(), b""])
    out, _ = codec.encode_infer(response(t), request())
    assert orjson.loads(out)["outputs"][0]["data"] == ["héllo", ""]


def test_tensor_bytes_is_little_endian_row_major() -> None:
    arr = np.array([[1, 2], [3, 4]], dtype=">i4").T  # big-endian and not C-contiguous
    assert codec.tensor_bytes(Tensor("y", "INT32", arr)) == struct.pack("<4i", 1, 3, 2, 4)


def test_loads_names_what_was_parsed() -> None:
    assert codec.loads(b'{"a": 1}') == {"a": 1}
    with pytest.raises(MalformedRequest, match=r"^repository request is not valid JSON"):
        codec.loads(b"{", "repository request")
