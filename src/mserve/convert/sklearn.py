"""scikit-learn estimators and pipelines -> ONNX (through skl2onnx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mserve.convert.base import Exported
from mserve.errors import ConversionError, UntrustedSource

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def sklearn_to_onnx(model: Any, n_features: int, opset: int | None = None) -> onnx.ModelProto:
    """Convert a fitted estimator taking ``n_features`` float32 columns.

    Classifiers return ``label`` (INT64 [-1]) and ``probabilities`` (FP32 [-1, classes]) as
    plain tensors (no ZipMap), which V2 clients can read.
    """
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[Any, Any] = {}
    if hasattr(model, "predict_proba"):
        options = {id(model): {"zipmap": False}}
    kwargs: dict[str, Any] = {}
    if opset is not None:
        kwargs["target_opset"] = opset
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options=options,
        **kwargs,
    )
    return onx


def load_pickle(path: Path, trust: bool) -> Any:
    """A pickled or joblib-dumped object, loaded only when the caller trusts the file."""
    if not path.is_file():
        raise ConversionError(str(path), "no such file")
    if not trust:
        raise UntrustedSource(str(path), "pickle and joblib")
    import joblib  # scikit-learn's dependency; reads plain pickles too

    try:
        return joblib.load(path)
    except Exception as exc:
        raise ConversionError(str(path), f"cannot be unpickled: {exc}") from None


def n_features_of(model: Any, given: int | None, source: str) -> int:
    """The number of input columns: given, or what the fitted model recorded."""
    n = given if given is not None else getattr(model, "n_features_in_", None)
    if n is None:
        raise ConversionError(
            source, "the model does not record its number of features; pass --input-shape -1,N"
        )
    return int(n)


def sklearn_export(model: Any, n_features: int | None = None, source: str = "model") -> Exported:
    """A fitted scikit-learn estimator or pipeline as an :class:`Exported` with its reference."""
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        raise ConversionError(
            source, "scikit-learn is not installed: pip install 'mserve[sklearn]'"
        ) from None
    if not isinstance(model, BaseEstimator):
        raise ConversionError(
            source, f"holds a {type(model).__name__}, not a scikit-learn estimator or pipeline"
        )
    n = n_features_of(model, n_features, source)
    try:
        onx = sklearn_to_onnx(model, n)
    except Exception as exc:
        raise ConversionError(source, f"skl2onnx cannot convert it: {exc}") from None
    names = [o.name for o in onx.graph.output]
    classifier = hasattr(model, "predict_proba")

    def reference(feed: Any) -> list[np.ndarray]:
        x = np.asarray(feed["input"])
        if classifier:
            return [np.asarray(model.predict(x)), np.asarray(model.predict_proba(x), np.float32)]
        pred = np.asarray(model.predict(x), np.float32)
        return [pred.reshape(len(x), -1)]

    if classifier and names != ["label", "probabilities"]:  # pragma: no cover - converter guard
        raise ConversionError(source, f"unexpected outputs {names} from skl2onnx")
    return Exported(
        model=onx,
        framework="sklearn",
        reference=reference,
        class_outputs=("probabilities",) if classifier else (),
        notes=(f"skl2onnx: {type(model).__name__} with {n} float32 features",),
    )
