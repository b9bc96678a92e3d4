"""scikit-learn estimators and pipelines -> ONNX (through skl2onnx)."""

from __future__ import annotations

from typing import Any

import onnx


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
