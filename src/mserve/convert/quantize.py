"""int8 quantisation with ONNX Runtime's tools, in the forms that keep accuracy.

- *dynamic*: weights int8 per output channel, activations quantised on the fly, only for MatMul
  and Gemm. Per-tensor weights (the tool's default) lose accuracy on transformers (cosine 0.96 on
  MiniLM), and dynamically quantised convolutions run slower than fp32 on ONNX Runtime's CPU
  provider, so both are avoided.
- *static*: QDQ format, weights per channel, activation ranges calibrated on data the user gives.
  Quantising every operator statically ruins transformers (cosine 0.42 on MiniLM): the parity
  check rejects such a variant, and the message points to the dynamic form.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx

from mserve.errors import ConversionError

DYNAMIC_OPS = ("MatMul", "Gemm")


def int8_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights int8 per channel, activations quantised at run time (MatMul and Gemm only)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            _preprocessed(model, Path(tmp)),
            out,
            op_types_to_quantize=list(DYNAMIC_OPS),
            per_channel=True,
            weight_type=QuantType.QInt8,
            # DefaultTensorType: a type for values shape inference cannot follow (the fused
            # operators of ONNX Runtime's transformer optimiser)
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return onnx.load(str(out))


def _batches(data: Mapping[str, np.ndarray], batch: int) -> Iterator[dict[str, np.ndarray]]:
    rows = min(int(a.shape[0]) for a in data.values())
    for start in range(0, rows, batch):
        yield {k: np.ascontiguousarray(v[start : start + batch]) for k, v in data.items()}


def int8_static(
    model: onnx.ModelProto,
    calibration: Mapping[str, np.ndarray],
    *,
    batch: int = 16,
    op_types: tuple[str, ...] | None = None,
) -> onnx.ModelProto:
    """QDQ int8 with weights per channel and activation ranges from ``calibration`` (min-max)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise ConversionError("int8-static", "needs calibration data (--calibrate DATA.npz)")

    class Reader(CalibrationDataReader):
        """Feeds calibration batches to ONNX Runtime's calibrator."""

        def __init__(self) -> None:
            self._batches = _batches(calibration, batch)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            _preprocessed(model, Path(tmp)),
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # the bias-scale adjustment fails on per-channel Gemm weights in onnxruntime 1.2x-1.3x
            extra_options={"QDQDisableWeightAdjustForInt32Bias": True},
        )
        return onnx.load(str(out))


def _preprocessed(model: onnx.ModelProto, tmp: Path) -> Path:
    """The model after ONNX Runtime's recommended pre-processing (shape inference and basic
    optimisation), or as it is when the pre-processor cannot follow it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = tmp / "raw.onnx"
    onnx.save(model, str(raw))
    pre = tmp / "pre.onnx"
    try:
        # where symbolic shape inference gives up, it dumps the model (and its weights) into
        # the working directory: make that the temporary one
        with contextlib.chdir(tmp):
            quant_pre_process(str(raw), str(pre), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference cannot follow every graph; quantise as is
        return raw
    return pre
