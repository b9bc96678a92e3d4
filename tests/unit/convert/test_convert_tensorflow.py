"""tensorflow_to_onnx on real Keras models and SavedModels trained here on scikit-learn's digits.

The models train for two epochs in a few seconds; each conversion is run with ONNX Runtime and
compared with the reference the converter returns.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mserve.convert.base import Exported
from mserve.convert.tensorflow import tensorflow_to_onnx
from mserve.errors import ConversionError, UntrustedSource

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
datasets = pytest.importorskip("sklearn.datasets")

ATOL = 1e-4

# TensorFlow and Keras warn about their own internals under NumPy 2; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
]


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """The 8x8 digits, scaled to [0, 1]: 1,400 rows to train on, the rest to test with."""
    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return {"x_train": x[:1400], "y_train": y[:1400], "x_test": x[1400:], "y_test": y[1400:]}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, np.ndarray]) -> Path:
    """Train an MLP and a CNN briefly and save them in every format the converter reads."""
    root = tmp_path_factory.mktemp("tensorflow")
    keras.utils.set_random_seed(0)
    x, y = digits["x_train"], digits["y_train"]

    pixels = keras.Input(shape=(64,), name="pixels")
    hidden = keras.layers.Dense(32, activation="relu")(pixels)
    mlp = keras.Model(pixels, keras.layers.Dense(10, activation="softmax", name="digit")(hidden))
    _fit(mlp, x, y)
    mlp.save(root / "mlp.keras")
    mlp.save(root / "mlp.h5")
    mlp.export(root / "mlp_savedmodel", verbose=False)
    _save_scorer(mlp, root / "scorer_savedmodel")

    cnn = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", name="digit"),
        ]
    )
    _fit(cnn, x.reshape(-1, 8, 8, 1), y)
    cnn.save(root / "cnn.keras")

    gelu_in = keras.Input(shape=(64,), name="pixels")
    gelu = keras.Model(gelu_in, keras.layers.Dense(4, activation="gelu")(gelu_in))  # exact GELU
    gelu.save(root / "gelu.keras")

    lambda_in = keras.Input(shape=(4,), name="x")
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="doubled")(lambda_in)
    keras.Model(lambda_in, doubled).save(root / "lambda.keras")
    return root


def _fit(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)


def _save_scorer(model: Any, directory: Path) -> None:
    """A hand-written SavedModel: one signature 'classify', two outputs of different dtypes."""

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
        def classify(self, pixels: Any) -> dict[str, Any]:
            probabilities = self.model(pixels, training=False)
            return {"probabilities": probabilities, "label": tf.argmax(probabilities, axis=-1)}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(directory), signatures={"classify": scorer.classify})


def _run(exported: Exported) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    session = ort.InferenceSession(
        exported.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return lambda feeds: session.run(None, feeds)


CASES = [
    # file, input name, rows as the model takes them, output names, class outputs
    ("mlp.keras", "pixels", (64,), ["digit"], ("digit",)),
    ("mlp.h5", "pixels", (64,), ["digit"], ("digit",)),
    ("mlp_savedmodel", "pixels", (64,), ["output_0"], ("output_0",)),
    ("cnn.keras", "image", (8, 8, 1), ["digit"], ("digit",)),
]


@pytest.mark.parametrize(("file", "input_name", "row", "outputs", "classes"), CASES)
def test_converted_model_matches_reference(
    models: Path,
    digits: dict[str, np.ndarray],
    file: str,
    input_name: str,
    row: tuple[int, ...],
    outputs: list[str],
    classes: tuple[str, ...],
) -> None:
    exported = tensorflow_to_onnx(models / file)

    assert exported.framework == "tensorflow"
    assert [i.name for i in exported.model.graph.input] == [input_name]
    assert [o.name for o in exported.model.graph.output] == outputs
    assert exported.class_outputs == classes
    batch = exported.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param  # a symbolic batch dimension ...
    assert not batch.HasField("dim_value")  # ... not a fixed one
    assert exported.reference is not None
    run = _run(exported)
    x_test = digits["x_test"].reshape(-1, *row)
    got, want = run({input_name: x_test}), exported.reference({input_name: x_test})
    np.testing.assert_allclose(got[0], want[0], atol=ATOL)
    assert got[0].dtype == want[0].dtype == np.float32
    np.testing.assert_array_equal(got[0].argmax(-1), want[0].argmax(-1))
    for rows in (1, 7):
        batch_got = run({input_name: x_test[:rows]})[0]
        assert batch_got.shape == (rows, 10)
        np.testing.assert_allclose(batch_got, want[0][:rows], atol=ATOL)
    assert exported.sample[input_name].shape == (4, *row)
    np.testing.assert_allclose(
        run(dict(exported.sample))[0], exported.reference(exported.sample)[0], atol=ATOL
    )


def test_savedmodel_signature_keys_name_inputs_and_outputs(
    models: Path, digits: dict[str, np.ndarray]
) -> None:
    exported = tensorflow_to_onnx(models / "scorer_savedmodel", signature="classify")

    names = [o.name for o in exported.model.graph.output]
    assert sorted(names) == ["label", "probabilities"]
    assert exported.class_outputs == ("probabilities",)
    assert exported.reference is not None
    feeds = {"pixels": digits["x_test"][:7]}
    got = dict(zip(names, _run(exported)(feeds), strict=True))
    want = dict(zip(names, exported.reference(feeds), strict=True))
    assert got["label"].dtype == want["label"].dtype == np.int64
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=ATOL)


def test_missing_signature_lists_those_present(models: Path) -> None:
    with pytest.raises(ConversionError, match=r"no signature 'serving_default'.*present: classify"):
        tensorflow_to_onnx(models / "scorer_savedmodel")


def test_exact_gelu_is_refused_naming_erfc(models: Path) -> None:
    # tf2onnx maps no ONNX op to Erfc and leaves it in the graph, which ONNX Runtime refuses.
    with pytest.raises(ConversionError, match=r"Erfc \(from exact GELU"):
        tensorflow_to_onnx(models / "gelu.keras")


def test_lambda_layer_needs_trust(models: Path) -> None:
    with pytest.raises(UntrustedSource, match="--trust"):
        tensorflow_to_onnx(models / "lambda.keras")

    exported = tensorflow_to_onnx(models / "lambda.keras", trust=True)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(_run(exported)({"x": x})[0], x * 2.0)


@pytest.mark.parametrize("name", ["missing.keras", "empty_dir", "model.pkl"])
def test_wrong_path_says_what_was_expected(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "model.pkl").write_bytes(b"not a model")
    with pytest.raises(ConversionError, match="expected a SavedModel directory"):
        tensorflow_to_onnx(tmp_path / name)


def test_input_shapes_must_name_inputs(models: Path) -> None:
    with pytest.raises(ConversionError, match="unknown inputs images; the model's inputs are"):
        tensorflow_to_onnx(models / "mlp.keras", input_shapes={"images": [-1, 64]})


def test_missing_tf2onnx_names_the_extra(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ConversionError, match=r"pip install 'mserve\[tensorflow\]'"):
        tensorflow_to_onnx(models / "mlp.keras")


def test_free_dimension_stays_symbolic_unless_input_shapes_fixes_it(tmp_path: Path) -> None:
    steps = keras.Input(shape=(None, 3), name="steps")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(2)(steps))
    keras.Model(steps, pooled).save(tmp_path / "seq.keras")

    free = tensorflow_to_onnx(tmp_path / "seq.keras")
    dims = free.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, False, True]
    assert free.sample == {}

    fixed = tensorflow_to_onnx(tmp_path / "seq.keras", input_shapes={"steps": [1, 5, 3]})
    dims = fixed.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [5, 3]
    assert dims[0].dim_param  # the batch dimension stays dynamic
    assert fixed.reference is not None
    x = np.ones((7, 5, 3), np.float32)
    np.testing.assert_allclose(_run(fixed)({"steps": x})[0], fixed.reference({"steps": x})[0])
    assert fixed.sample["steps"].shape == (4, 5, 3)
