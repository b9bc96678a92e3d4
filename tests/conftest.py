"""Factories that build tiny real models on the spot: onnx.helper graphs and scikit-learn
classifiers trained on the data sets scikit-learn ships. Nothing is downloaded."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mserve.config import ModelConfig, VersionPolicy
from mserve.convert.sklearn import sklearn_to_onnx
from mserve.protocol import TensorSpec
from mserve.repository import write_model

OPSET = 17

#: V2 datatype -> ONNX element type.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _value_info(name: str, datatype: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    dims: list[int | str] = [f"{name}_d{i}" if d < 0 else d for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, ONNX_TYPES[datatype], dims)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> bytes:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxFactory:
    """Tiny ONNX models built with onnx.helper."""

    def identity(self, datatype: str, shape: tuple[int, ...] = (-1, 2)) -> bytes:
        """OUTPUT = INPUT for one datatype."""
        return _model(
            [helper.make_node("Identity", ["INPUT"], ["OUTPUT"])],
            [_value_info("INPUT", datatype, shape)],
            [_value_info("OUTPUT", datatype, shape)],
        )

    def add_const(self, value: float, shape: tuple[int, ...] = (-1, 1)) -> bytes:
        """OUTPUT = INPUT + value (FP32): tells versions apart by what they add."""
        const = helper.make_tensor("C", TensorProto.FLOAT, [], [value])
        return _model(
            [helper.make_node("Add", ["INPUT", "C"], ["OUTPUT"])],
            [_value_info("INPUT", "FP32", shape)],
            [_value_info("OUTPUT", "FP32", shape)],
            [const],
        )

    def add_sub(self, shape: tuple[int, ...] = (-1, 4)) -> bytes:
        """Two FP32 inputs: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
        return _model(
            [
                helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
                helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
            ],
            [_value_info("INPUT0", "FP32", shape), _value_info("INPUT1", "FP32", shape)],
            [_value_info("OUTPUT0", "FP32", shape), _value_info("OUTPUT1", "FP32", shape)],
        )

    def mlp(self, widths: tuple[int, ...], seed: int = 0) -> bytes:
        """INPUT [-1, widths[0]] -> ReLU dense layers -> OUTPUT [-1, widths[-1]] (FP32): a model
        whose run time grows with its widths, for tests that need executions to take a while."""
        rng = np.random.default_rng(seed)
        nodes: list[onnx.NodeProto] = []
        inits: list[onnx.TensorProto] = []
        x = "INPUT"
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)).astype(np.float32)
            inits.append(helper.make_tensor(f"W{i}", TensorProto.FLOAT, w.shape, w.ravel()))
            last = i == len(widths) - 2
            y = "OUTPUT" if last else f"H{i}"
            nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [y if last else f"M{i}"]))
            if not last:
                nodes.append(helper.make_node("Relu", [f"M{i}"], [y]))
            x = y
        return _model(
            nodes,
            [_value_info("INPUT", "FP32", (-1, widths[0]))],
            [_value_info("OUTPUT", "FP32", (-1, widths[-1]))],
            inits,
        )

    def slow_identity(self, hidden: int = 2048) -> bytes:
        """OUTPUT = INPUT for FP32 [-1, -1] (any width), computed beside a dense stack that
        takes about a millisecond a row (SLOW, [-1, 10]): free shapes that take a while."""
        rng = np.random.default_rng(0)
        weights = [
            (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
            for shape in ((1, hidden), (hidden, hidden), (hidden, hidden), (hidden, 10))
        ]
        inits = [
            helper.make_tensor(f"W{i}", TensorProto.FLOAT, w.shape, w.ravel())
            for i, w in enumerate(weights)
        ]
        inits.append(helper.make_tensor("AXES", TensorProto.INT64, [1], [1]))
        nodes = [
            helper.make_node("Identity", ["INPUT"], ["OUTPUT"]),
            helper.make_node("ReduceSum", ["INPUT", "AXES"], ["S"], keepdims=1),
            helper.make_node("MatMul", ["S", "W0"], ["H0"]),
            helper.make_node("MatMul", ["H0", "W1"], ["H1"]),
            helper.make_node("MatMul", ["H1", "W2"], ["H2"]),
            helper.make_node("MatMul", ["H2", "W3"], ["SLOW"]),
        ]
        return _model(
            nodes,
            [_value_info("INPUT", "FP32", (-1, -1))],
            [_value_info("OUTPUT", "FP32", (-1, -1)), _value_info("SLOW", "FP32", (-1, 10))],
            inits,
        )

    def lookup(self, table: np.ndarray) -> bytes:
        """OUTPUT = table[INDEX] (INDEX INT64 [-1, 1], OUTPUT FP32 [-1, 1, width]): ONNX Runtime
        raises on an index outside the table, so a request can make its execution fail."""
        data = helper.make_tensor("T", TensorProto.FLOAT, table.shape, table.ravel())
        return _model(
            [helper.make_node("Gather", ["T", "INDEX"], ["OUTPUT"], axis=0)],
            [_value_info("INDEX", "INT64", (-1, 1))],
            [_value_info("OUTPUT", "FP32", (-1, 1, table.shape[1]))],
            [data],
        )

    def counting_loop(self, width: int = 4) -> bytes:
        """OUTPUT = X + max(N) (X FP32 [-1, width], N INT64 [-1, 1]), counted out by a ``Loop``
        of max(N) iterations, a MatMul by the identity and an Add each: a request chooses how
        long its execution runs (about 5 us an iteration; N = 10**9 never ends in a test)."""
        eye = np.eye(width, dtype=np.float32)
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                helper.make_node("MatMul", ["y_in", "EYE"], ["m"]),
                helper.make_node("Add", ["m", "ONE"], ["y_out"]),
            ],
            "count",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("y_in", TensorProto.FLOAT, ["rows", width]),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("y_out", TensorProto.FLOAT, ["rows", width]),
            ],
            initializer=[
                helper.make_tensor("EYE", TensorProto.FLOAT, eye.shape, eye.ravel()),
                helper.make_tensor("ONE", TensorProto.FLOAT, [], [1.0]),
            ],
        )
        return _model(
            [
                helper.make_node("ReduceMax", ["N"], ["TRIPS"], keepdims=0),
                helper.make_node("Loop", ["TRIPS", "", "X"], ["OUTPUT"], body=body),
            ],
            [_value_info("X", "FP32", (-1, width)), _value_info("N", "INT64", (-1, 1))],
            [_value_info("OUTPUT", "FP32", (-1, width))],
        )


@pytest.fixture(scope="session")
def onnx_factory() -> OnnxFactory:
    """Builds tiny ONNX models (identity per datatype, add-a-constant, add/sub)."""
    return OnnxFactory()


PlaceModel = Callable[..., Path]


def place_model(
    root: Path,
    name: str,
    versions: dict[int, bytes],
    config: ModelConfig | None = None,
    config_text: str | bytes | None = None,
) -> Path:
    """Put a model folder into a repository: version folders, and a config.yaml written from
    ``config`` (with mserve.repository.write_model), taken verbatim from ``config_text``, or
    none at all."""
    folder = root / name
    for version, model_bytes in versions.items():
        if config is not None:
            write_model(root, config, version, model_bytes)
        else:
            (folder / str(version)).mkdir(parents=True, exist_ok=True)
            (folder / str(version) / "model.onnx").write_bytes(model_bytes)
    if config_text is not None:
        data = config_text.encode() if isinstance(config_text, str) else config_text
        (folder / "config.yaml").write_bytes(data)
    return folder


@pytest.fixture(scope="session")
def place() -> PlaceModel:
    """place(root, name, {version: bytes}, config=None, config_text=None) -> model folder."""
    return place_model


@dataclass(frozen=True)
class Trained:
    """A fitted classifier, its ONNX form and held-out rows."""

    name: str
    estimator: Any
    onnx: bytes
    config: ModelConfig
    x_test: np.ndarray  # float32
    y_test: np.ndarray  # int64


def _classifier_config(name: str, features: int, classes: int, max_batch: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        inputs=(TensorSpec("input", "FP32", (-1, features)),),
        outputs=(
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, classes)),
        ),
        max_batch_size=max_batch,
        version_policy=VersionPolicy("latest", 1),
    )


@pytest.fixture(scope="session")
def digits_model() -> Trained:
    """A small MLP trained on scikit-learn's digits (64 features, 10 classes)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    estimator = MLPClassifier(
        hidden_layer_sizes=(32,), max_iter=200, tol=1e-3, n_iter_no_change=5, random_state=0
    )
    with warnings.catch_warnings():
        # an unconverged model serves as well as a converged one; these tests check serving
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(x_train, y_train)
    onx = sklearn_to_onnx(estimator, n_features=64).SerializeToString()
    config = _classifier_config("digits", 64, 10, max_batch=64)
    return Trained("digits", estimator, onx, config, x_test, y_test)


@pytest.fixture(scope="session")
def iris_model() -> Trained:
    """A logistic regression trained on scikit-learn's iris (4 features, 3 classes)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    estimator = LogisticRegression(max_iter=1000).fit(x[::2], y[::2])
    onx = sklearn_to_onnx(estimator, n_features=4).SerializeToString()
    config = _classifier_config("iris", 4, 3, max_batch=0)
    return Trained("iris", estimator, onx, config, x[1::2], y[1::2])


@pytest.fixture(scope="session")
def ort_run() -> Callable[[bytes, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Run a model in process with ONNX Runtime: the reference the server must match."""
    import onnxruntime as ort

    sessions: dict[bytes, Any] = {}

    def run(model_bytes: bytes, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = sessions.get(model_bytes)
        if session is None:
            session = sessions[model_bytes] = ort.InferenceSession(
                model_bytes, providers=["CPUExecutionProvider"]
            )
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


@pytest.fixture(scope="session", autouse=True)
def results_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every run the tests start is saved in a throw-away results database, never the user's."""
    path = tmp_path_factory.mktemp("results") / "results.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MSERVE_RESULTS_DB", str(path))
        yield path
