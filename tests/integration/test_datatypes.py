"""Every V2 datatype round trips over JSON and binary tensors through identity models, with
parameters, requested outputs, request ids, binary_data_output and raw binary requests."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from mserve.protocol import DATATYPES

pytestmark = pytest.mark.integration

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


def as_bytes(arr: np.ndarray) -> list[bytes]:
    """tritonclient gives BYTES as bytes from binary and as str from JSON: compare as bytes."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in arr.reshape(-1)]


def identity(datatype: str) -> str:
    return f"identity_{datatype.lower()}"


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("input_binary", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("output_binary", [False, True], ids=["json-out", "binary-out"])
def test_round_trip_through_tritonclient(
    client: Any, datatype: str, input_binary: bool, output_binary: bool
) -> None:
    data = array(datatype)
    if datatype == "BYTES" and not input_binary:
        data = data.copy()
        data[1, 1] = b"\x01"  # JSON carries text: keep the values valid UTF-8
    x = httpclient.InferInput("INPUT", [3, 2], datatype)
    x.set_data_from_numpy(data, binary_data=input_binary)
    out = httpclient.InferRequestedOutput("OUTPUT", binary_data=output_binary)
    result = client.infer(identity(datatype), [x], outputs=[out], request_id=f"{datatype}-1")
    got = result.as_numpy("OUTPUT")
    response = result.get_response()
    assert response["id"] == f"{datatype}-1"
    (entry,) = response["outputs"]
    assert (entry["name"], entry["datatype"], entry["shape"]) == ("OUTPUT", datatype, [3, 2])
    assert ("binary_data_size" in entry.get("parameters", {})) is output_binary
    assert got.shape == (3, 2)
    if datatype == "BYTES":
        assert as_bytes(got) == as_bytes(data)
    else:
        assert got.dtype == DATATYPES[datatype]
        assert np.array_equal(got, data)


@pytest.mark.parametrize("datatype", [dt for dt in DATATYPES if dt != "BYTES"])
def test_json_body_by_hand_echoes_id_and_answers_exact_values(served: Any, datatype: str) -> None:
    doc = {
        "id": "by-hand",
        "parameters": {"tenant": "tests", "priority": 0},
        "inputs": [
            {
                "name": "INPUT",
                "datatype": datatype,
                "shape": [3, 2],
                "data": [VALUES[datatype][:2], VALUES[datatype][2:4], VALUES[datatype][4:]],
                "parameters": {"note": "nested data"},
            }
        ],
        "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": False}}],
    }
    reply = served.request("POST", f"/v2/models/{identity(datatype)}/infer", json.dumps(doc))
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["id"] == "by-hand"
    assert (body["model_name"], body["model_version"]) == (identity(datatype), "1")
    (entry,) = body["outputs"]
    assert (entry["datatype"], entry["shape"]) == (datatype, [3, 2])
    got = np.array(entry["data"], dtype=DATATYPES[datatype])
    assert np.array_equal(got, np.array(VALUES[datatype], dtype=DATATYPES[datatype]))


def split(reply: Any) -> tuple[dict[str, Any], bytes]:
    length = int(reply.headers["inference-header-content-length"])
    assert reply.headers["content-type"] == "application/octet-stream"
    return json.loads(reply.body[:length]), reply.body[length:]


def test_binary_data_output_makes_every_output_binary_unless_one_says_otherwise(
    served: Any,
) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, dtype=np.float32)
    inputs = [
        {"name": "INPUT0", "datatype": "FP32", "shape": [2, 4], "data": a.ravel().tolist()},
        {"name": "INPUT1", "datatype": "FP32", "shape": [2, 4], "data": b.ravel().tolist()},
    ]
    doc = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    header, binary = split(served.request("POST", "/v2/models/addsub/infer", json.dumps(doc)))
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert [o["name"] for o in header["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert sizes == [32, 32]
    assert len(binary) == 64
    assert np.array_equal(np.frombuffer(binary[:32], "<f4").reshape(2, 4), a + b)
    assert np.array_equal(np.frombuffer(binary[32:], "<f4").reshape(2, 4), a - b)

    doc["outputs"] = [{"name": "OUTPUT1", "parameters": {"binary_data": False}}]
    reply = served.request("POST", "/v2/models/addsub/infer", json.dumps(doc))
    assert reply.status == 200
    assert "inference-header-content-length" not in reply.headers
    (only,) = reply.json()["outputs"]
    assert only["name"] == "OUTPUT1"
    assert only["data"] == (a - b).ravel().tolist()


def test_requested_outputs_through_tritonclient(client: Any) -> None:
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.ones((1, 4), dtype=np.float32)
    x0 = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    x0.set_data_from_numpy(a, binary_data=True)
    x1 = httpclient.InferInput("INPUT1", [1, 4], "FP32")
    x1.set_data_from_numpy(b, binary_data=False)
    result = client.infer(
        "addsub",
        [x0, x1],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)],
        parameters={"custom_flag": True},
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT0"]
    assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert result.as_numpy("OUTPUT1") is None


def test_mixed_binary_and_json_inputs_by_hand(served: Any) -> None:
    a = np.array([[1, 2, 3, 4]], dtype=np.float32)
    header = json.dumps(
        {
            "id": "mixed",
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                },
                {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    reply = served.request(
        "POST",
        "/v2/models/addsub/versions/1/infer",
        header + a.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status == 200, reply.body
    doc, binary = split(reply)
    assert doc["id"] == "mixed"
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(binary, "<f4").tolist() == [2, 3, 4, 5]


def test_raw_binary_request_for_a_single_input_model(served: Any) -> None:
    x = np.arange(8, dtype="<f4")
    reply = served.request(
        "POST",
        "/v2/models/identity_fp32/infer",
        x.tobytes(),
        {"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"},
    )
    assert reply.status == 200, reply.body
    doc, binary = split(reply)
    (entry,) = doc["outputs"]
    assert (entry["name"], entry["datatype"], entry["shape"]) == ("OUTPUT", "FP32", [4, 2])
    assert binary == x.tobytes()


def test_raw_binary_bytes_request(served: Any) -> None:
    items = [b"alpha", b"", "\u00e9".encode(), b"z"]
    raw = b"".join(struct.pack("<I", len(v)) + v for v in items)
    reply = served.request(
        "POST", "/v2/models/identity_bytes/infer", raw, {"Inference-Header-Content-Length": "0"}
    )
    assert reply.status == 200, reply.body
    doc, binary = split(reply)
    assert doc["outputs"][0]["shape"] == [2, 2]
    assert binary == raw


def test_gzip_request_body(client: Any) -> None:
    data = np.arange(6, dtype=np.int32).reshape(3, 2)
    x = httpclient.InferInput("INPUT", [3, 2], "INT32")
    x.set_data_from_numpy(data, binary_data=True)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("identity_int32", [x], request_compression_algorithm=algorithm)
        assert np.array_equal(result.as_numpy("OUTPUT"), data)
