"""Neural networks from PyTorch, TensorFlow and Caffe, trained or built here, converted with
``mserve convert`` as a user runs it, served by ``mserve serve``, and answered over V2 with the
original network's predictions."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

FACTORY = """
import torch
from torch import nn


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )
"""


CAFFE_MLP = """
name: "digits_mlp"
input: "data"
input_shape { dim: 1 dim: 64 }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
        inner_product_param { num_output: 32 } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2"
        inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
"""


def _caffemodel(prototxt: str, blobs: dict[str, list[np.ndarray]]) -> bytes:
    """The binary NetParameter Caffe saves: the prototxt's layers with their learned blobs."""
    from google.protobuf import text_format

    from mserve.convert.caffe import caffe_pb2

    net = text_format.Parse(prototxt, caffe_pb2.NetParameter())
    for layer in net.layer:
        for array in blobs.get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(array.astype(np.float32).ravel().tolist())
    return net.SerializeToString()


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]  # N, 1, 8, 8
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, x_te, y_tr, y_te


def _train_cnn(module: Any, x: np.ndarray, y: np.ndarray, epochs: int = 8) -> Any:
    import torch

    torch.manual_seed(0)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    module.train()
    for _ in range(epochs):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xt[i : i + 64]), yt[i : i + 64])
            loss.backward()
            opt.step()
    return module.eval()


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory, mserve_cli: Any) -> dict[str, Any]:
    import torch

    work = tmp_path_factory.mktemp("nets")
    repo = work / "models"
    x_tr, x_te, y_tr, y_te = _digits()
    np.savez(work / "train.npz", x=x_tr, labels=y_tr)
    np.savez(work / "test.npz", x=x_te, labels=y_te)

    (work / "digitnets.py").write_text(textwrap.dedent(FACTORY))
    sys.path.insert(0, str(work))
    try:
        import digitnets  # type: ignore[import-not-found]

        cnn = _train_cnn(digitnets.make_cnn(), x_tr, y_tr)
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("digitnets", None)
    torch.save(cnn.state_dict(), work / "cnn.pt")
    with torch.inference_mode():
        cnn_scores = cnn(torch.from_numpy(x_te)).numpy()

    # Caffe: the weights of an MLP trained with scikit-learn, in the layout Caffe stores
    from sklearn.neural_network import MLPClassifier

    flat_tr, flat_te = x_tr.reshape(len(x_tr), 64), x_te.reshape(len(x_te), 64)
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp.fit(flat_tr, y_tr)
    (work / "deploy.prototxt").write_text(CAFFE_MLP)
    blobs = {  # InnerProduct weights are (outputs, inputs)
        "fc1": [mlp.coefs_[0].T, mlp.intercepts_[0]],
        "fc2": [mlp.coefs_[1].T, mlp.intercepts_[1]],
    }
    (work / "mlp.caffemodel").write_bytes(_caffemodel(CAFFE_MLP, blobs))
    caffe = mserve_cli(
        "convert",
        str(work / "deploy.prototxt"),
        "--weights",
        str(work / "mlp.caffemodel"),
        *f"--out {repo / 'caffe_mlp'} --no-measure".split(),
    )
    assert caffe.returncode == 0, caffe.stderr

    # Keras: an MLP trained for a few seconds, saved in Keras 3's own format
    keras_probs = _keras_mlp(flat_tr, y_tr, flat_te, work / "mlp.keras")
    keras = mserve_cli(
        "convert",
        str(work / "mlp.keras"),
        *f"--out {repo / 'keras_mlp'} --no-measure".split(),
        timeout=300,
    )
    assert keras.returncode == 0, keras.stderr

    run = mserve_cli(
        "convert",
        str(work / "cnn.pt"),
        "--factory",
        "digitnets:make_cnn",
        "--input-shape",
        "1,1,8,8",
        "--class-outputs",
        "output",
        "--out",
        str(repo / "cnn"),
        "--variants",
        "int8-static",
        "--calibrate",
        str(work / "train.npz"),
        "--eval",
        str(work / "test.npz"),
        "--prune",
        "channels=0.5",
        "--finetune",
        str(work / "train.npz"),
        "--finetune-seconds",
        "3",
        "--json",
        timeout=300,
        env={"PYTHONPATH": str(work)},
    )
    assert run.returncode == 0, run.stderr
    return {
        "work": work,
        "repo": repo,
        "x": x_te,
        "y": y_te,
        "cnn_scores": cnn_scores,
        "cnn_report": json.loads(run.stdout),
        "flat": flat_te,
        "caffe_probs": mlp.predict_proba(flat_te),
        "keras_probs": keras_probs,
    }


def _keras_mlp(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, path: Path) -> np.ndarray:
    """Train and save a Keras MLP; returns its probabilities on ``x_test``."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    model.save(path)
    return np.asarray(model.predict(x_test, verbose=0))


@pytest.fixture(scope="module")
def nets_server(nets: dict[str, Any], start_server: Any) -> Any:
    return start_server(nets["repo"])


def _scores(address: str, model: str, x: np.ndarray, inp: str, out: str) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(address)
    chunks = []
    try:
        for start in range(0, len(x), 64):
            rows = np.ascontiguousarray(x[start : start + 64])
            tensor = httpclient.InferInput(inp, list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=True)
            chunks.append(client.infer(model, [tensor]).as_numpy(out))
    finally:
        client.close()
    return np.concatenate(chunks)


def test_pytorch_cnn_served_matches_torch(nets: dict[str, Any], nets_server: Any) -> None:
    scores = _scores(nets_server.address, "cnn", nets["x"], "input", "output")
    np.testing.assert_allclose(scores, nets["cnn_scores"], atol=1e-4, rtol=1e-4)
    assert np.mean(scores.argmax(1) == nets["y"]) > 0.9


def test_pytorch_int8_static_keeps_accuracy(nets: dict[str, Any], nets_server: Any) -> None:
    scores = _scores(nets_server.address, "cnn-int8-static", nets["x"], "input", "output")
    fp32_accuracy = np.mean(nets["cnn_scores"].argmax(1) == nets["y"])
    assert np.mean(scores.argmax(1) == nets["y"]) >= fp32_accuracy - 0.02


def test_pruned_cnn_is_smaller_and_served(nets: dict[str, Any], nets_server: Any) -> None:
    report = nets["cnn_report"]
    pruned = next(v for v in report["variants"] if v["name"] == "pruned-channels-50")
    fp32 = report["variants"][0]
    assert pruned["kept"]
    assert pruned["size_bytes"] < 0.6 * fp32["size_bytes"]
    assert any("fine-tuned for" in note for note in pruned["notes"])
    scores = _scores(nets_server.address, "cnn-pruned-channels-50", nets["x"], "input", "output")
    served_accuracy = float(np.mean(scores.argmax(1) == nets["y"]))
    assert served_accuracy == pytest.approx(pruned["accuracy"], abs=1e-9)
    assert served_accuracy > 0.8


def test_caffe_mlp_served_matches_the_trained_weights(
    nets: dict[str, Any], nets_server: Any
) -> None:
    probs = _scores(nets_server.address, "caffe_mlp", nets["flat"], "data", "prob")
    np.testing.assert_allclose(probs, nets["caffe_probs"], atol=1e-5)


def test_keras_mlp_served_matches_keras(nets: dict[str, Any], nets_server: Any) -> None:
    probs = _scores(nets_server.address, "keras_mlp", nets["flat"], "pixels", "probs")
    np.testing.assert_allclose(probs, nets["keras_probs"], atol=1e-5)
    assert np.mean(probs.argmax(1) == nets["y"]) > 0.8


def test_pytorch_checkpoint_without_factory_is_refused(
    nets: dict[str, Any], mserve_cli: Any
) -> None:
    work: Path = nets["work"]
    run = mserve_cli("convert", str(work / "cnn.pt"), "--out", str(work / "x" / "cnn"))
    assert run.returncode == 1
    assert "state_dict" in run.stderr
    assert "with a factory (package.module:function)" in run.stderr
