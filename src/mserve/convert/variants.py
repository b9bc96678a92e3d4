"""The named variants of an fp32 graph: when each applies, how it is built, whether it is kept.

- ``fp16``, ``int8-dynamic``, ``int8-static``: new graphs (see :mod:`.optimize`, :mod:`.quantize`);
- ``openvino``: the same graph under OpenVINO;
- ``cuda``, ``tensorrt``: the same graph on another ONNX Runtime execution provider.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from mserve.convert import optimize, quantize
from mserve.convert.report import VariantReport
from mserve.convert.timing import Run, openvino_session, ort_session
from mserve.errors import ConversionError

#: Variants that can be asked for by name, in the order they are tried.
VARIANTS = ("fp16", "int8-dynamic", "int8-static", "openvino", "cuda", "tensorrt")
#: Variants judged by the exact standard (the others by the approximate one, see parity).
EXACT = ("openvino",)
#: Variants that are the fp32 graph on another ONNX Runtime execution provider.
PROVIDERS = {
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
#: ``--optimize auto`` keeps a variant only when its speed-up, the geometric mean over the batch
#: sizes timed, is at least this ...
MIN_SPEEDUP = 1.05
#: ... and it is not slower than this at any batch size timed (0.95: within timing noise).
MIN_SPEEDUP_ANY = 0.95


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its class name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def session(model: onnx.ModelProto, source: str, threads: int) -> Run:
    """An ONNX Runtime session of ``model``; ConversionError when the runtime refuses it."""
    try:
        return ort_session(model, threads)
    except Exception as exc:
        raise ConversionError(
            source, f"ONNX Runtime cannot load the converted model: {first_line(exc)}"
        ) from None


def _has_ops(model: onnx.ModelProto, ops: Sequence[str]) -> bool:
    return any(node.op_type in ops for node in model.graph.node)


def not_applicable(name: str, model: onnx.ModelProto, has_calibration: bool) -> str:
    """Why variant ``name`` cannot be made of ``model`` here, or "" when it can."""
    ml_only = not _has_ops(model, ("MatMul", "Gemm", "Conv", "ConvTranspose"))
    if name in ("fp16", "int8-dynamic", "int8-static") and ml_only:
        return "no MatMul, Gemm or Conv to convert (a tree or classical model)"
    if name == "int8-dynamic" and not _has_ops(model, quantize.DYNAMIC_OPS):
        return "no MatMul or Gemm: dynamic int8 would quantise nothing"
    if name == "int8-static" and not has_calibration:
        return "needs calibration data: --calibrate DATA.npz"
    if name in PROVIDERS:
        import onnxruntime as ort

        if PROVIDERS[name][0] not in ort.get_available_providers():
            return f"this ONNX Runtime has no {PROVIDERS[name][0]} (no GPU build or no GPU)"
    if name == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed: pip install openvino"
        if any(node.domain == "ai.onnx.ml" for node in model.graph.node):
            return "OpenVINO does not run ai.onnx.ml operators (trees, classical models)"
    return ""


def build(
    name: str,
    fp32: onnx.ModelProto,
    calibration: Mapping[str, np.ndarray],
    threads: int,
    source: str,
) -> tuple[onnx.ModelProto, Run]:
    """The variant's graph and a function running it; ConversionError when it cannot be made."""
    try:
        if name == "openvino":
            return fp32, openvino_session(fp32, threads)
        if name in PROVIDERS:
            return fp32, ort_session(fp32, threads, PROVIDERS[name])
        if name == "fp16":
            model = optimize.to_fp16(fp32)
        elif name == "int8-dynamic":
            model = quantize.int8_dynamic(fp32)
        elif name == "int8-static":
            model = quantize.int8_static(fp32, calibration)
        else:
            raise ConversionError(name, f"unknown variant; expected one of {', '.join(VARIANTS)}")
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(name, f"could not be built: {first_line(exc)}") from None
    return model, session(model, source, threads)


def speed(variant: VariantReport) -> str:
    """The speed-ups in words, e.g. ``2.10x at batch 1 / 1.60x at batch 32``."""
    return " / ".join(f"{variant.speedup[b]:.2f}x at batch {b}" for b in sorted(variant.speedup))


def verdict(variant: VariantReport, measured: bool) -> None:
    """Keep or drop a named variant once it is compared and timed, with the reason in words.

    Asked for by name: kept when within tolerance, even if slower (the reason says so). Tried
    by ``--optimize auto``: kept only when also ``MIN_SPEEDUP`` faster on the whole and not
    slower than ``MIN_SPEEDUP_ANY`` at any batch size.
    """
    parity = variant.parity
    if parity is None:  # never built: the reason is already there
        return
    if not parity.ok:
        variant.reason = "out of tolerance: " + "; ".join(parity.failures)
        if variant.name == "int8-static":
            variant.reason += (
                " (static int8 of every operator loses accuracy on some models, transformers "
                "above all; int8-dynamic keeps activations in float)"
            )
        return
    best = statistics.geometric_mean(variant.speedup.values()) if variant.speedup else None
    said = speed(variant)
    if best is None:
        variant.kept = variant.requested or not measured
        variant.reason = "within tolerance (not timed)"
    elif variant.requested:
        variant.kept = True
        variant.reason = f"within tolerance; {said}"
        if best < 1.0:
            variant.reason += " - slower than fp32 on this machine"
    elif best >= MIN_SPEEDUP and min(variant.speedup.values()) >= MIN_SPEEDUP_ANY:
        variant.kept = True
        variant.reason = f"faster here and within tolerance: {said}"
    elif best >= MIN_SPEEDUP:
        variant.reason = f"slower than fp32 at one batch size on this machine: {said}"
    else:
        variant.reason = f"not faster than fp32 on this machine: {said}"
