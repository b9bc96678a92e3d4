"""Graph-level rewrites that keep fp32 arithmetic (slimming, offline ONNX Runtime passes) and fp16.

Only portable rewrites are saved: ONNX Runtime's *basic* level (constant folding, redundant node
elimination, and the like) gives a graph that any execution provider runs. The hardware-specific
levels (fused CPU kernels, NCHWc layouts) are applied by the server at load time instead, on the
machine that serves, as ONNX Runtime advises.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx

from mserve.errors import ConversionError


def check(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model passed through ONNX's checker and shape inference; raises with the reason."""
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(source, f"not a valid ONNX model: {first}") from None
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # shape inference is an aid; a model it cannot follow may still run
        return model


def node_count(model: onnx.ModelProto) -> int:
    """Nodes in the main graph."""
    return len(model.graph.node)


def slim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The graph simplified by onnxslim when it is installed, with a note on what it did."""
    try:
        import onnxslim
    except ImportError:
        return model, "onnxslim not installed; skipped"
    before = node_count(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slimmed = onnxslim.slim(model)
    except Exception as exc:  # a simplifier bug must not fail a conversion that works without it
        return model, f"onnxslim failed ({type(exc).__name__}); kept the graph as exported"
    if not isinstance(slimmed, onnx.ModelProto):
        return model, "onnxslim returned nothing; kept the graph as exported"
    return slimmed, f"onnxslim: {before} -> {node_count(slimmed)} nodes"


def ort_offline(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """ONNX Runtime's portable (basic) graph optimisations, saved into the model."""
    import onnxruntime as ort

    before = node_count(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(str(out))
    return optimized, f"onnxruntime basic passes: {before} -> {node_count(optimized)} nodes"


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and arithmetic in fp16; inputs and outputs keep their types, so clients do not
    change. Operators without fp16 kernels (the ai.onnx.ml ones) stay in fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True)
    if not isinstance(converted, onnx.ModelProto):  # pragma: no cover - API guard
        raise ConversionError("fp16", "the fp16 converter returned no model")
    return converted
