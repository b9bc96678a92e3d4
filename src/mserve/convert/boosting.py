"""Gradient-boosted trees -> ONNX: XGBoost and LightGBM (through onnxmltools).

Both libraries' own model files (XGBoost's ``.json`` / ``.ubj``, LightGBM's text ``.txt``) hold
only trees and parameters, and load without running code; pickles of their scikit-learn wrappers
need ``--trust`` (see :func:`mserve.convert.sklearn.load_pickle`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mserve.convert.base import Exported
from mserve.errors import ConversionError

#: The highest default-domain opset onnxmltools' tree converters accept.
TREE_OPSET = 15


def _need(module: str, source: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = {"xgboost": "xgboost-cpu", "lightgbm": "lightgbm"}.get(module, module)
        raise ConversionError(
            source, f"{module} is not installed: pip install onnxmltools {extra}"
        ) from None


def load_xgboost(path: Path) -> Any:
    """An XGBoost model file as the scikit-learn wrapper its objective calls for."""
    xgb = _need("xgboost", str(path))
    try:
        booster = xgb.Booster(model_file=str(path))
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    except Exception as exc:
        raise ConversionError(str(path), f"not an XGBoost model file: {exc}") from None
    wrapper = xgb.XGBClassifier() if objective.startswith(("binary:", "multi:")) else None
    wrapper = wrapper or xgb.XGBRegressor()
    wrapper.load_model(str(path))
    return wrapper


def load_lightgbm(path: Path) -> Any:
    """A LightGBM text model file as a Booster."""
    lgb = _need("lightgbm", str(path))
    with path.open("rb") as file:
        head = file.read(4)
    if head != b"tree":  # checked here: LightGBM's own refusal is printed by its C++ core
        raise ConversionError(
            str(path),
            "not a LightGBM model file: expected the text that Booster.save_model writes "
            "(its first line is 'tree')",
        )
    try:
        return lgb.Booster(model_file=str(path))
    except Exception as exc:
        raise ConversionError(str(path), f"not a LightGBM model file: {exc}") from None


def _free_batch(model: onnx.ModelProto) -> None:
    """Declare the first dimension of every output free (LightGBM's converter says 1)."""
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"


def _is_classifier(model: Any) -> bool:
    if hasattr(model, "predict_proba"):
        return True
    objective = str(getattr(model, "params", {}).get("objective", ""))
    return objective.startswith(("binary", "multiclass", "multiclassova"))


def _n_features(model: Any, given: int | None, source: str) -> int:
    for attr in ("n_features_in_", "num_feature"):
        value = getattr(model, attr, None)
        value = value() if callable(value) else value
        if value:
            return int(value)
    if given is None:
        raise ConversionError(source, "the number of features is unknown; pass --input-shape -1,N")
    return int(given)


def boosting_export(
    model: Any, framework: str, n_features: int | None = None, source: str = "model"
) -> Exported:
    """An XGBoost or LightGBM model (scikit-learn wrapper or Booster) with its reference."""
    _need("onnxmltools", source)
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = _n_features(model, n_features, source)
    initial = [("input", FloatTensorType([None, n]))]
    classifier = _is_classifier(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if framework == "xgboost":
                onx = convert_xgboost(model, initial_types=initial, target_opset=TREE_OPSET)
            else:
                kwargs = {"zipmap": False} if classifier else {}
                onx = convert_lightgbm(
                    model, initial_types=initial, target_opset=TREE_OPSET, **kwargs
                )
    except Exception as exc:
        raise ConversionError(source, f"onnxmltools cannot convert it: {exc}") from None
    _free_batch(onx)

    def reference(feed: Any) -> list[np.ndarray]:
        x = np.asarray(feed["input"])
        if hasattr(model, "predict_proba"):
            return [np.asarray(model.predict(x)), np.asarray(model.predict_proba(x), np.float32)]
        pred = np.asarray(model.predict(x))
        if classifier:  # a LightGBM Booster predicts probabilities
            probs = pred if pred.ndim == 2 else np.stack([1 - pred, pred], axis=1)
            return [np.argmax(probs, axis=1).astype(np.int64), probs.astype(np.float32)]
        return [pred.astype(np.float32).reshape(len(x), -1)]

    return Exported(
        model=onx,
        framework=framework,
        reference=reference,
        class_outputs=("probabilities",) if classifier else (),
        notes=(f"onnxmltools: {type(model).__name__} with {n} float32 features",),
    )
