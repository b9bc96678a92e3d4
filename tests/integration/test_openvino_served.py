"""A model whose config.yaml says ``backend: openvino``, served by the real server: the answers
ONNX Runtime gives, over tritonclient.http, beside a model OpenVINO cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from mserve.config import DynamicBatching, ModelConfig
from mserve.protocol import TensorSpec

pytest.importorskip("openvino")

pytestmark = pytest.mark.integration

WIDTHS = (16, 64, 32, 4)


def mlp_config(name: str, backend: str) -> ModelConfig:
    """Batched, two instances: requests are stacked and computed by both instances at once."""
    return ModelConfig(
        name=name,
        backend=backend,
        inputs=(TensorSpec("INPUT", "FP32", (-1, WIDTHS[0])),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, WIDTHS[-1])),),
        max_batch_size=8,
        instance_count=2,
        dynamic_batching=DynamicBatching(max_queue_delay_us=500),
    )


@dataclass
class Setup:
    served: Any
    mlp: bytes


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    start_server: Any,
    onnx_factory: Any,
    place: Any,
    digits_model: Any,
) -> Setup:
    """One MLP served by OpenVINO and by ONNX Runtime, and a scikit-learn classifier that
    OpenVINO cannot read."""
    root = tmp_path_factory.mktemp("openvino-repository")
    mlp = onnx_factory.mlp(WIDTHS)
    place(root, "mlp_openvino", {1: mlp}, config=mlp_config("mlp_openvino", "openvino"))
    place(root, "mlp_ort", {1: mlp}, config=mlp_config("mlp_ort", "onnxruntime"))
    digits = replace(digits_model.config, name="digits_openvino", backend="openvino")
    place(root, "digits_openvino", {1: digits_model.onnx}, config=digits)
    return Setup(start_server(root), mlp)


@pytest.fixture
def client(setup: Setup) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(setup.served.address, concurrency=8)
    yield c
    c.close()


def infer(client: Any, model: str, rows: np.ndarray, binary: bool = True) -> np.ndarray:
    x = httpclient.InferInput("INPUT", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT", binary_data=binary)
    result: np.ndarray = client.infer(model, [x], outputs=[out]).as_numpy("OUTPUT")
    return result


def rows_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, WIDTHS[0])).astype(np.float32)


@pytest.mark.parametrize("rows", [1, 7])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_answers_equal_onnx_runtime(
    client: Any, setup: Setup, ort_run: Any, rows: int, binary: bool
) -> None:
    x = rows_of(rows, seed=rows)
    served = infer(client, "mlp_openvino", x, binary)
    assert served.dtype == np.float32
    assert served.shape == (rows, WIDTHS[-1])
    expected = ort_run(setup.mlp, {"INPUT": x})["OUTPUT"]
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served, infer(client, "mlp_ort", x, binary), rtol=1e-4, atol=1e-4)


def test_concurrent_requests_through_the_batcher_are_answered_right(
    client: Any, setup: Setup, ort_run: Any
) -> None:
    requests = [rows_of(1 + i % 3, seed=100 + i) for i in range(48)]
    pending = []
    for x in requests:  # in flight together, up to the client's concurrency (8)
        tensor = httpclient.InferInput("INPUT", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        pending.append(client.async_infer("mlp_openvino", [tensor]))
    for x, request in zip(requests, pending, strict=True):
        served = request.get_result().as_numpy("OUTPUT")
        expected = ort_run(setup.mlp, {"INPUT": x})["OUTPUT"]
        np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
    stats = client.get_inference_statistics("mlp_openvino")["model_stats"][0]
    assert stats["inference_count"] >= sum(len(x) for x in requests)


def test_metadata_and_config_are_onnx_runtimes_but_for_the_backend(client: Any) -> None:
    metadata = client.get_model_metadata("mlp_openvino")
    assert metadata == {
        "name": "mlp_openvino",
        "versions": ["1"],
        "platform": "openvino",
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, WIDTHS[0]]}],
        "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, WIDTHS[-1]]}],
    }
    reference = client.get_model_metadata("mlp_ort")
    assert (metadata["inputs"], metadata["outputs"]) == (reference["inputs"], reference["outputs"])
    config = client.get_model_config("mlp_openvino")
    assert (config["backend"], config["platform"]) == ("openvino", "openvino")
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]


def test_a_wrong_input_is_refused_as_for_onnx_runtime(client: Any) -> None:
    x = np.zeros((2, 5), dtype=np.float32)
    messages = []
    for model in ("mlp_openvino", "mlp_ort"):
        with pytest.raises(InferenceServerException) as info:
            infer(client, model, x)
        assert info.value.status() == "400"
        messages.append(info.value.message().replace(model, "MODEL"))
    assert messages[0] == messages[1]
    assert "shape [2, 5] does not match the expected [-1, 16]" in messages[0]


def test_a_model_openvino_cannot_run_is_unavailable_with_the_operators_named(
    client: Any, setup: Setup
) -> None:
    index = {r["name"]: r for r in client.get_model_repository_index()}
    assert index["digits_openvino"]["state"] == "UNAVAILABLE"
    model_file = setup.served.repository / "digits_openvino" / "1" / "model.onnx"
    assert index["digits_openvino"]["reason"] == (
        f"{model_file}: OpenVINO cannot run the operators ai.onnx.ml.ArrayFeatureExtractor "
        "(ai.onnx.ml operators come from scikit-learn and other classic-ML converters); serve "
        "this model with backend onnxruntime, which runs them"
    )
    x = httpclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits_openvino", [x])
    assert info.value.status() == "503"
    assert client.is_model_ready("mlp_openvino")  # the others load and serve
