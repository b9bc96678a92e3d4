"""Every bad request gets its status and a message saying what was expected, never a stack
trace, and the server answers the next good request correctly."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

GOOD_INPUT = np.arange(6, dtype=np.float32).reshape(3, 2)


def infer_doc(
    name: str = "INPUT", datatype: str = "FP32", shape: Any = None, data: Any = None
) -> str:
    shape = [3, 2] if shape is None else shape
    data = GOOD_INPUT.ravel().tolist() if data is None else data
    return json.dumps(
        {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    )


def assert_error(reply: Any, status: int, *fragments: str) -> str:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    doc = reply.json()
    assert list(doc) == ["error"]
    message = doc["error"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message
    for leak in ("Traceback", 'File "', "site-packages", "Error:"):
        assert leak not in message
    return message


def assert_still_serving(served: Any) -> None:
    reply = served.request("POST", "/v2/models/identity_fp32/infer", infer_doc())
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["data"] == GOOD_INPUT.ravel().tolist()


CASES = [
    pytest.param(
        "POST", "/v2/models/nope/infer", infer_doc(), {},
        404, ["unknown model 'nope'", "known models:", "digits"],
        id="unknown-model",
    ),
    pytest.param(
        "GET", "/v2/models/nope", "", {},
        404, ["unknown model 'nope'"],
        id="unknown-model-metadata",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/versions/7/infer", infer_doc(), {},
        404, ["unknown version '7' of model 'identity_fp32'", "available versions: 1"],
        id="unknown-version",
    ),
    pytest.param(
        "GET", "/v2/models/versions_latest2/versions/1", "", {},
        404, ["unknown version '1'", "available versions: 2, 3"],
        id="version-outside-policy",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(shape=[2, 3]), {},
        400, ["input 'INPUT'", "shape [2, 3] does not match the expected [-1, 2]"],
        id="wrong-shape",
    ),
    pytest.param(
        "POST", "/v2/models/digits/infer",
        infer_doc(name="input", shape=[64], data=[0.0] * 64), {},
        400, ["shape [64] does not match the expected [-1, 64]", "add it, e.g. [1, ...]"],
        id="missing-batch-dimension",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(datatype="FP64"), {},
        400, ["input 'INPUT'", "datatype FP64 does not match; expected FP32"],
        id="wrong-datatype",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(datatype="FLOAT"), {},
        400, ["datatype 'FLOAT' is not a V2 datatype; expected one of BOOL"],
        id="unknown-datatype",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(datatype=["FP32"]), {},
        400, ["is not a V2 datatype; expected one of"],
        id="datatype-not-a-string",
    ),
    pytest.param(
        "POST", "/v2/models/identity_int32/infer",
        infer_doc(datatype="INT32", data=[1.5, 2, 3, 4, 5, 6]), {},
        400, ["data must be integers for INT32"],
        id="float-data-for-integer-tensor",
    ),
    pytest.param(
        "POST", "/v2/models/identity_uint8/infer",
        infer_doc(datatype="UINT8", data=[1, 2, 3, 4, 5, 256]), {},
        400, ["outside the range of UINT8 (0 to 255)"],
        id="data-out-of-range",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(data=["a", 2, 3, 4, 5, 6]), {},
        400, ["data must be numbers for FP32"],
        id="non-numeric-data",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(data=[1, 2, 3, 4, 5]), {},
        400, ["data has 5 elements but shape [3, 2] needs 6"],
        id="element-count",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", '{"inputs": [{"name": "INPUT",', {},
        400, ["request body is not valid JSON"],
        id="malformed-json",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", "[]", {},
        400, ["must be a JSON object with an 'inputs' list"],
        id="json-not-an-object",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", '{"inputs": []}', {},
        400, ["'inputs': a non-empty list of tensors"],
        id="no-inputs",
    ),
    pytest.param(
        "POST", "/v2/models/addsub/infer",
        infer_doc(name="INPUT0", shape=[1, 4], data=[1, 2, 3, 4]), {},
        400, ["input 'INPUT1': missing; the model expects INPUT0 (FP32 [-1, 4]), INPUT1"],
        id="missing-input",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(name="IN"), {},
        400, ["input 'IN': no such input; the model expects INPUT (FP32 [-1, 2])"],
        id="unknown-input",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer",
        json.dumps({**json.loads(infer_doc()), "outputs": [{"name": "NOPE"}]}), {},
        400, ["has no output 'NOPE'; its outputs are OUTPUT (FP32 [-1, 2])"],
        id="unknown-output",
    ),
    pytest.param(
        "POST", "/v2/models/digits/infer",
        infer_doc(name="input", shape=[65, 64], data=[0.0] * 65 * 64), {},
        400, ["batch of 65 rows exceeds max_batch_size 64"],
        id="batch-too-large",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(),
        {"Inference-Header-Content-Length": "100000"},
        400, ["Inference-Header-Content-Length is 100000 but the body has"],
        id="header-length-past-the-body",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(),
        {"Inference-Header-Content-Length": "20"},
        400, ["inference request header is not valid JSON"],
        id="header-length-too-short",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(),
        {"Inference-Header-Content-Length": "twelve"},
        400, ["Inference-Header-Content-Length must be an integer"],
        id="header-length-not-a-number",
    ),
    pytest.param(
        "POST", "/v2/models/addsub/infer", b"\0" * 32,
        {"Inference-Header-Content-Length": "0"},
        400, ["raw binary) needs a model with one input; 'addsub' has 2"],
        id="raw-binary-multi-input",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", b"\0" * 12,
        {"Inference-Header-Content-Length": "0"},
        400, ["raw binary body of 12 bytes is not a whole number of FP32 tensors"],
        id="raw-binary-ragged",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(), {"Content-Encoding": "br"},
        400, ["Content-Encoding br is not supported; expected gzip, deflate or identity"],
        id="unknown-content-encoding",
    ),
    pytest.param(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(), {"Content-Encoding": "gzip"},
        400, ["body is not valid gzip data"],
        id="not-gzip",
    ),
    pytest.param(
        "GET", "/v2/nothing/here", "", {},
        404, ["no route for GET /v2/nothing/here"],
        id="unknown-route",
    ),
    pytest.param(
        "POST", "/v2/models/broken/infer", infer_doc(), {},
        503, ["model 'broken' is not ready (state: UNAVAILABLE)", "max_batch_size"],
        id="model-that-failed-to-load",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "fragments"), CASES)
def test_bad_request_gets_status_and_message(
    served: Any,
    method: str,
    path: str,
    body: str | bytes,
    headers: dict[str, str],
    status: int,
    fragments: list[str],
) -> None:
    assert_error(served.request(method, path, body, headers), status, *fragments)
    assert_still_serving(served)


def test_binary_header_length_that_lies_about_the_tensor(served: Any) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT",
                    "datatype": "FP32",
                    "shape": [3, 2],
                    "parameters": {"binary_data_size": 24},
                }
            ]
        }
    ).encode()
    body = header + GOOD_INPUT.tobytes()
    too_long = {"Inference-Header-Content-Length": str(len(header) + 8)}
    assert_error(
        served.request("POST", "/v2/models/identity_fp32/infer", body, too_long),
        400,
        "inference request header is not valid JSON",
    )
    assert_still_serving(served)

    short_data = header + GOOD_INPUT.tobytes()[:20]
    fit = {"Inference-Header-Content-Length": str(len(header))}
    assert_error(
        served.request("POST", "/v2/models/identity_fp32/infer", short_data, fit),
        400,
        "declares binary_data_size 24 but only 20 bytes of binary data remain",
    )
    assert_still_serving(served)

    extra = header + GOOD_INPUT.tobytes() + b"\0\0\0\0"
    assert_error(
        served.request("POST", "/v2/models/identity_fp32/infer", extra, fit),
        400,
        "4 bytes of binary data follow the header that no input's binary_data_size accounts for",
    )
    assert_still_serving(served)


def test_errors_reach_tritonclient_as_its_exception(client: Any) -> None:
    x = httpclient.InferInput("INPUT", [2, 3], "FP32")
    x.set_data_from_numpy(np.zeros((2, 3), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("identity_fp32", [x])
    assert info.value.status() == "400"
    assert "shape [2, 3] does not match the expected [-1, 2]" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [x])
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("digits", model_version="9")
    assert info.value.status() == "404"
    assert "unknown version '9' of model 'digits'" in info.value.message()
    good = httpclient.InferInput("INPUT", [3, 2], "FP32")
    good.set_data_from_numpy(GOOD_INPUT)
    assert np.array_equal(client.infer("identity_fp32", [good]).as_numpy("OUTPUT"), GOOD_INPUT)


def test_body_over_the_limit_is_413(
    tmp_path_factory: pytest.TempPathFactory, start_server: Any, onnx_factory: Any, place: Any
) -> None:
    root = tmp_path_factory.mktemp("small-limit")
    place(root, "identity_fp32", {1: onnx_factory.identity("FP32")})
    small = start_server(root, args=["--max-body-mb", "0.01"])  # 10485 bytes
    limit = int(0.01 * 1024 * 1024)
    rows = np.zeros((2000, 2), dtype=np.float32)  # 16000 bytes of binary alone
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT",
                    "datatype": "FP32",
                    "shape": [2000, 2],
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ]
        }
    ).encode()
    body = header + rows.tobytes()
    reply = small.request(
        "POST",
        "/v2/models/identity_fp32/infer",
        body,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert_error(
        reply, 413, f"request body of {len(body)} bytes exceeds the limit of {limit} bytes"
    )
    big_json = small.request(
        "POST", "/v2/models/identity_fp32/infer", infer_doc(shape=[2000, 2], data=[0.0] * 4000)
    )
    assert_error(big_json, 413, "exceeds the limit of 10485 bytes")
    # a request under the limit right after is answered, on a new connection and on the same one
    assert_still_serving(small)
    conn = small.connection()
    try:
        for payload, status in ((body, 413), (infer_doc(), 200), (body, 413), (infer_doc(), 200)):
            headers = {"Inference-Header-Content-Length": str(len(header))} if status == 413 else {}
            conn.request("POST", "/v2/models/identity_fp32/infer", payload, headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == status
            if status == 200:
                assert answer["outputs"][0]["data"] == GOOD_INPUT.ravel().tolist()
    finally:
        conn.close()
    client = httpclient.InferenceServerClient(small.address)
    x = httpclient.InferInput("INPUT", [100, 2], "FP32")
    x.set_data_from_numpy(np.ones((100, 2), np.float32))
    assert client.infer("identity_fp32", [x]).as_numpy("OUTPUT").sum() == 200
    client.close()
