"""tritonclient.http against the real server: exact outputs over JSON and binary tensors,
model and server metadata, model config, health."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

import mserve

pytestmark = pytest.mark.integration


def infer_classifier(
    client: Any, name: str, rows: np.ndarray, input_binary: bool, output_binary: bool
) -> dict[str, np.ndarray]:
    x = httpclient.InferInput("input", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows, binary_data=input_binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=output_binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=output_binary),
    ]
    result = client.infer(name, [x], outputs=outputs)
    return {"label": result.as_numpy("label"), "probabilities": result.as_numpy("probabilities")}


@pytest.mark.parametrize("input_binary", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("output_binary", [False, True], ids=["json-out", "binary-out"])
def test_digits_outputs_equal_onnx_runtime_in_process(
    client: Any, digits_model: Any, ort_run: Any, input_binary: bool, output_binary: bool
) -> None:
    x = digits_model.x_test
    labels = []
    for start in range(0, len(x), 64):  # max_batch_size is 64
        rows = x[start : start + 64]
        served = infer_classifier(client, "digits", rows, input_binary, output_binary)
        expected = ort_run(digits_model.onnx, {"input": rows})
        assert served["label"].dtype == np.int64
        assert served["probabilities"].dtype == np.float32
        assert np.array_equal(served["label"], expected["label"])
        assert np.array_equal(served["probabilities"], expected["probabilities"])
        labels.append(served["label"])
    served_labels = np.concatenate(labels)
    assert np.array_equal(served_labels, digits_model.estimator.predict(x))
    assert np.mean(served_labels == digits_model.y_test) > 0.9


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_model_without_config_serves_exactly(
    client: Any, iris_model: Any, ort_run: Any, binary: bool
) -> None:
    rows = iris_model.x_test
    served = infer_classifier(client, "iris", rows, binary, binary)
    expected = ort_run(iris_model.onnx, {"input": rows})
    assert np.array_equal(served["label"], expected["label"])
    assert np.array_equal(served["probabilities"], expected["probabilities"])
    assert np.mean(served["label"] == iris_model.y_test) > 0.85


def test_default_request_returns_every_output_in_binary(client: Any, digits_model: Any) -> None:
    rows = digits_model.x_test[:3]
    x = httpclient.InferInput("input", [3, 64], "FP32")
    x.set_data_from_numpy(rows)
    result = client.infer("digits", [x], request_id="row-0-2")
    response = result.get_response()
    assert response["id"] == "row-0-2"
    assert (response["model_name"], response["model_version"]) == ("digits", "1")
    assert [o["name"] for o in response["outputs"]] == ["label", "probabilities"]
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert np.array_equal(result.as_numpy("label"), digits_model.estimator.predict(rows))


def test_model_metadata_matches_config_and_model(
    client: Any, ort_run: Any, iris_model: Any
) -> None:
    assert client.get_model_metadata("digits") == {
        "name": "digits",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
    # without config.yaml the signature is the model's own
    session = ort.InferenceSession(iris_model.onnx, providers=["CPUExecutionProvider"])
    md = client.get_model_metadata("iris", model_version="1")
    assert md["versions"] == ["1"]
    assert [(t["name"], t["datatype"]) for t in md["inputs"]] == [
        (a.name, "FP32") for a in session.get_inputs()
    ]
    assert md["inputs"][0]["shape"] == [-1, 4]
    assert md["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_model_config(client: Any) -> None:
    assert client.get_model_config("digits") == {
        "name": "digits",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 64,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [
            {"name": "label", "data_type": "TYPE_INT64", "dims": []},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10]},
        ],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    strings = client.get_model_config("identity_bytes")
    assert strings["input"] == [{"name": "INPUT", "data_type": "TYPE_STRING", "dims": [-1, 2]}]
    assert strings["max_batch_size"] == 0
    policy = client.get_model_config("versions_specific")["version_policy"]
    assert policy == {"specific": {"versions": [1, 3]}}


def test_server_metadata_and_health(client: Any, served: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata() == {
        "name": "mserve",
        "version": mserve.__version__,
        "extensions": [
            "binary_tensor_data",
            "model_repository",
            "statistics",
            "model_configuration",
        ],
    }
    live = served.request("GET", "/v2/health/live")
    assert (live.status, live.json()) == (200, {"live": True})
    ready = served.request("GET", "/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})
    assert ready.headers["content-type"] == "application/json"
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("digits", "2")
    model_ready = served.request("GET", "/v2/models/digits/ready")
    assert (model_ready.status, model_ready.json()) == (200, {"name": "digits", "ready": True})
