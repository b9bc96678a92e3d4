"""``mserve convert`` end to end: real models trained here, converted by the command a user runs,
served by ``mserve serve``, and answered over V2 by tritonclient with the original's predictions.

Frameworks whose own tests build their models (PyTorch, TensorFlow, Caffe) are covered at the
bottom with small models built on the spot.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@dataclass
class Case:
    """A model converted into the shared repository, and what it must answer."""

    name: str
    x: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray | None = None


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, x_te, y_tr, y_te


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, mserve_cli: Any) -> dict[str, Any]:
    """Train, save in each framework's own format, convert with the CLI into one repository."""
    import joblib
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.neural_network import MLPClassifier

    work = tmp_path_factory.mktemp("convert")
    repo = work / "models"
    x_tr, x_te, y_tr, y_te = _digits()
    np.savez(work / "test.npz", x=x_te, labels=y_te)
    np.savez(work / "calib.npz", x=x_tr[:256])

    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp.fit(x_tr, y_tr)
    joblib.dump(mlp, work / "mlp.joblib")
    booster = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(x_tr, y_tr)
    booster.save_model(work / "xgb.json")
    lgbm = lgb.train(
        {"objective": "multiclass", "num_class": 10, "verbose": -1, "num_leaves": 8},
        lgb.Dataset(x_tr, y_tr),
        30,
    )
    lgbm.save_model(str(work / "lgbm.txt"))

    runs = {
        "mlp": mserve_cli(
            "convert",
            str(work / "mlp.joblib"),
            "--trust",
            "--out",
            str(repo / "mlp"),
            "--variants",
            "int8-dynamic",
            "--eval",
            str(work / "test.npz"),
            "--json",
        ),
        "xgb": mserve_cli("convert", str(work / "xgb.json"), "--out", str(repo / "xgb"), "--json"),
        "lgbm": mserve_cli(
            "convert", str(work / "lgbm.txt"), "--out", str(repo / "lgbm"), "--json"
        ),
    }
    # ONNX in: the scikit-learn model's own ONNX file, checked and optimised again
    runs["onnx"] = mserve_cli(
        "convert",
        str(repo / "mlp" / "1" / "model.onnx"),
        "--out",
        str(repo / "mlp_onnx"),
        "--json",
        "--no-measure",
    )
    reports = {}
    for name, run in runs.items():
        assert run.returncode == 0, run.stderr
        reports[name] = json.loads(run.stdout)
    cases = {
        "mlp": Case("mlp", x_te, mlp.predict(x_te), mlp.predict_proba(x_te)),
        "mlp-int8-dynamic": Case("mlp-int8-dynamic", x_te, mlp.predict(x_te)),
        "mlp_onnx": Case("mlp_onnx", x_te, mlp.predict(x_te), mlp.predict_proba(x_te)),
        "xgb": Case("xgb", x_te, booster.predict(x_te), booster.predict_proba(x_te)),
        "lgbm": Case("lgbm", x_te, lgbm.predict(x_te).argmax(1), lgbm.predict(x_te)),
    }
    return {"work": work, "repo": repo, "reports": reports, "cases": cases}


@pytest.fixture(scope="module")
def converted_server(converted: dict[str, Any], start_server: Any) -> Any:
    return start_server(converted["repo"])


def _infer(address: str, model: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(address)
    labels, probabilities = [], []
    try:
        for start in range(0, len(x), 64):  # the converted config's max_batch_size
            rows = x[start : start + 64]
            inp = httpclient.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=True)
            result = client.infer(model, [inp])
            labels.append(result.as_numpy("label"))
            probabilities.append(result.as_numpy("probabilities"))
    finally:
        client.close()
    return np.concatenate(labels), np.concatenate(probabilities)


@pytest.mark.parametrize("name", ["mlp", "mlp-int8-dynamic", "mlp_onnx", "xgb", "lgbm"])
def test_converted_models_answer_like_the_originals(
    converted: dict[str, Any], converted_server: Any, name: str
) -> None:
    case: Case = converted["cases"][name]
    labels, probabilities = _infer(converted_server.address, name, case.x)
    if name.endswith("int8-dynamic"):  # approximate: nearly every prediction the same
        assert np.mean(labels == case.labels) >= 0.97
    else:
        np.testing.assert_array_equal(labels, case.labels)
        assert case.probabilities is not None
        np.testing.assert_allclose(probabilities, case.probabilities, atol=1e-4)


def test_reports_say_what_was_made(converted: dict[str, Any]) -> None:
    mlp = converted["reports"]["mlp"]
    assert mlp["schema"] == "mserve.convert.report/1"
    assert mlp["framework"] == "sklearn"
    assert mlp["parity_data"] == "given"
    fp32, int8 = mlp["variants"]
    assert (fp32["name"], fp32["kept"], fp32["parity"]["standard"]) == ("fp32", True, "exact")
    assert int8["name"] == "int8-dynamic"
    assert int8["kept"]
    assert int8["model"] == "mlp-int8-dynamic"
    assert int8["parity"]["standard"] == "approximate"
    assert int8["parity"]["ok"]
    assert int8["accuracy"] > 0.9
    assert fp32["accuracy"] > 0.9
    assert {m["batch"] for m in fp32["latency"]} == {1, 32}
    repo: Path = converted["repo"]
    on_disk = json.loads((repo / "mlp" / "conversion.json").read_text())
    assert on_disk["variants"][0]["written"] == str(repo / "mlp" / "1" / "model.onnx")
    config = (repo / "mlp-int8-dynamic" / "config.yaml").read_text()
    assert "max_batch_size: 64" in config
    assert "dynamic_batching:" in config
    onnx_in = converted["reports"]["onnx"]
    assert onnx_in["framework"] == "onnx"
    assert "the graph as given is the reference" in onnx_in["notes"]
    for name in ("xgb", "lgbm"):
        report = converted["reports"][name]
        assert report["framework"] == ("xgboost" if name == "xgb" else "lightgbm")
        assert report["variants"][0]["parity"]["ok"]


def test_a_pickle_without_trust_is_refused(converted: dict[str, Any], mserve_cli: Any) -> None:
    work: Path = converted["work"]
    run = mserve_cli("convert", str(work / "mlp.joblib"), "--out", str(work / "r" / "m"))
    assert run.returncode == 2
    assert "pickle and joblib files run arbitrary code when they are loaded" in run.stderr
    assert "pass --trust only if you made this file" in run.stderr
    assert not (work / "r").exists()


def test_a_parity_failure_exits_6_with_figures(converted: dict[str, Any], mserve_cli: Any) -> None:
    work: Path = converted["work"]
    run = mserve_cli(
        "convert",
        str(work / "mlp.joblib"),
        "--trust",
        "--out",
        str(work / "strict" / "mlp"),
        "--variants",
        "int8-dynamic",
        "--tolerance",
        "cosine=0.9999999,top1=1",
        "--inputs",
        str(work / "test.npz"),
        "--no-measure",
    )
    assert run.returncode == 6, run.stderr
    assert "variant 'int8-dynamic' does not compute the same function" in run.stderr
    assert "mean cosine similarity 0.99" in run.stderr
    assert "(tolerance: mean cosine >= 1, top-1 >= 1)" in run.stderr
    # the baseline was still written, the failed variant was not
    assert (work / "strict" / "mlp" / "1" / "model.onnx").is_file()
    assert not (work / "strict" / "mlp-int8-dynamic").exists()


def test_a_wrong_framework_is_a_clear_error(converted: dict[str, Any], mserve_cli: Any) -> None:
    work: Path = converted["work"]
    run = mserve_cli(
        "convert", str(work / "xgb.json"), "--framework", "lightgbm", "--out", str(work / "w" / "m")
    )
    assert run.returncode == 1
    assert run.stderr.startswith(f"mserve: error: {work / 'xgb.json'}: not a LightGBM model file:")
    run = mserve_cli("convert", str(work / "xgb.json"), "--framework", "mxnet", "--out", "x/y")
    assert run.returncode == 1
    assert "unknown framework 'mxnet'; expected one of pytorch, tensorflow" in run.stderr


def test_a_caffe_net_without_weights_is_refused(tmp_path: Path, mserve_cli: Any) -> None:
    proto = tmp_path / "deploy.prototxt"
    proto.write_text('name: "n"\ninput: "data"\ninput_dim: 1\ninput_dim: 4\n')
    run = mserve_cli("convert", str(proto), "--out", str(tmp_path / "m" / "n"))
    assert run.returncode == 1
    assert "a deploy.prototxt needs its weights: --weights MODEL.caffemodel" in run.stderr


def test_an_unsupported_caffe_layer_is_named(tmp_path: Path, mserve_cli: Any) -> None:
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(
        'name: "n"\ninput: "data"\ninput_shape { dim: 1 dim: 4 }\n'
        'layer { name: "odd" type: "PReLU" bottom: "data" top: "out" }\n'
    )
    from mserve.convert.caffe import caffe_pb2

    model = caffe_pb2.NetParameter(name="n")
    model.layer.add(name="odd", type="PReLU").blobs.add(data=[0.25]).shape.dim.append(1)
    weights = tmp_path / "n.caffemodel"
    weights.write_bytes(model.SerializeToString())
    run = mserve_cli(
        "convert", str(proto), "--weights", str(weights), "--out", str(tmp_path / "m" / "n")
    )
    assert run.returncode == 1
    assert "'odd'" in run.stderr
    assert "PReLU" in run.stderr
    assert "InnerProduct" in run.stderr  # the supported types are listed
