"""Convolution and Pooling layers, with Caffe's rules for their geometry and output sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mserve.convert.caffe.builder import GraphBuilder
from mserve.convert.caffe.caffe_pb2 import ConvolutionParameter, LayerParameter, PoolingParameter
from mserve.convert.caffe.shapes import LayerError, axis_index, describe, static_dim
from mserve.convert.caffe.weights import Weights


def convolution(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Convolution -> Conv, in any number of spatial dimensions, grouped and dilated."""
    p = layer.convolution_param
    x = graph.bottom(layer)
    shape = graph.shape(x)
    if axis_index(p.axis, len(shape)) != 1:
        raise LayerError("only convolution over axis 1 (the channels) is supported")
    n = len(shape) - 2
    if n < 1:
        raise LayerError(f"needs a blob with spatial axes, got {describe(shape)}")
    spatial = [static_dim(d, "a spatial dimension") for d in shape[2:]]
    kernel = _per_axis(p.kernel_size, "kernel_size", n, None, _hw(p, "kernel_h", "kernel_w"))
    pads = _per_axis(p.pad, "pad", n, 0, _hw(p, "pad_h", "pad_w"))
    strides = _per_axis(p.stride, "stride", n, 1, _hw(p, "stride_h", "stride_w"))
    dilations = _per_axis(p.dilation, "dilation", n, 1, None)
    channels = static_dim(shape[1], "the channel count")
    group = p.group
    if group < 1 or channels % group or p.num_output % group:
        raise LayerError(
            f"group {group} must divide both the {channels} input channels and num_output "
            f"{p.num_output}"
        )
    expected = [("weight", (p.num_output, channels // group, *kernel))]
    if p.bias_term:
        expected.append(("bias", (p.num_output,)))
    blobs = weights.take(layer, expected)
    out = [
        (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
        for size, pad, k, stride, dil in zip(spatial, pads, kernel, strides, dilations, strict=True)
    ]
    if min(out) < 1:
        raise LayerError(f"the kernel does not fit the {describe(shape)} input")
    inputs = [x, graph.constant(f"{layer.name}.weight", blobs[0])]
    if p.bias_term:
        inputs.append(graph.constant(f"{layer.name}.bias", blobs[1]))
    y = graph.top(layer, (shape[0], p.num_output, *out))
    graph.node(
        "Conv",
        inputs,
        [y],
        layer.name,
        kernel_shape=kernel,
        pads=pads + pads,
        strides=strides,
        dilations=dilations,
        group=group,
    )


def pooling(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Pooling (MAX, AVE) -> MaxPool / AveragePool, sized the way Caffe sizes its output."""
    p = layer.pooling_param
    x = graph.bottom(layer)
    shape = graph.shape(x)
    if len(shape) != 4:
        raise LayerError(f"needs a 4-D (N, C, H, W) blob, got {describe(shape)}")
    if p.pool not in (PoolingParameter.MAX, PoolingParameter.AVE):
        raise LayerError("only MAX and AVE pooling are supported, not STOCHASTIC")
    average = p.pool == PoolingParameter.AVE
    op = "AveragePool" if average else "MaxPool"
    if p.global_pooling:
        y = graph.top(layer, (*shape[:2], 1, 1))
        graph.node(f"Global{op}", [x], [y], layer.name)
        return
    size = [static_dim(d, "a spatial dimension") for d in shape[2:]]
    kernel, pads, strides = _pool_geometry(p)
    out = caffe_pool_size(size, kernel, pads, strides, ceil=p.round_mode == PoolingParameter.CEIL)
    if min(out) < 1:
        raise LayerError(f"the kernel {kernel} does not fit the {describe(shape)} input")
    y = graph.top(layer, (*shape[:2], *out))
    geometry = list(zip(size, kernel, pads, strides, strict=True))
    floor = tuple(_rounded(*g, ceil=False) for g in geometry)
    ceiled = tuple(_rounded(*g, ceil=True) for g in geometry)
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides}
    if average:
        # Caffe's AVE divides by the window clipped to the padded input: padding counts.
        attrs["count_include_pad"] = 1
    if tuple(out) in (floor, ceiled):
        mode = 0 if tuple(out) == floor else 1
        graph.node(op, [x], [y], layer.name, pads=pads + pads, ceil_mode=mode, **attrs)
        return
    # One axis rounds up while the other drops a last window that would start in the padding:
    # no single ceil_mode fits, so pad the ends so that rounding down gives Caffe's size.
    ends = [
        max(0, (o - 1) * s + k - (i + 2 * pad))
        for o, s, k, i, pad in zip(out, strides, kernel, size, pads, strict=True)
    ]
    if not average:
        ends = [pad + end for pad, end in zip(pads, ends, strict=True)]
        graph.node(op, [x], [y], layer.name, pads=pads + ends, **attrs)
        return
    # AVE: Caffe's padding as real zeros (counted), the extra end as ONNX padding (not counted).
    padded = graph.temp(
        f"{layer.name}.padded",
        (*shape[:2], *(i + 2 * pad for i, pad in zip(size, pads, strict=True))),
    )
    amounts = np.asarray([0, 0, *pads, 0, 0, *pads], np.int64)
    pad_input = graph.constant(f"{layer.name}.pads", amounts)
    graph.node("Pad", [x, pad_input], [padded], f"{layer.name}/pad")
    attrs["count_include_pad"] = 0
    graph.node(op, [padded], [y], layer.name, pads=[0, 0, *ends], **attrs)


def caffe_pool_size(
    size: Sequence[int],
    kernel: Sequence[int],
    pads: Sequence[int],
    strides: Sequence[int],
    *,
    ceil: bool,
) -> list[int]:
    """Caffe's pooled size: rounded up (or down), less a last window that would start in the
    end padding (a rule Caffe applies when any padding is set)."""
    geometry = zip(size, kernel, pads, strides, strict=True)
    out = [_rounded(*g, ceil=ceil) for g in geometry]
    if any(pads):
        out = [
            o - 1 if (o - 1) * s >= i + p else o
            for o, s, i, p in zip(out, strides, size, pads, strict=True)
        ]
    return out


def _rounded(size: int, kernel: int, pad: int, stride: int, *, ceil: bool) -> int:
    steps = (size + 2 * pad - kernel) / stride
    return (math.ceil(steps) if ceil else math.floor(steps)) + 1


def _pool_geometry(p: PoolingParameter) -> tuple[list[int], list[int], list[int]]:
    """Kernel, pads and strides (height, width) as Caffe's PoolingLayer reads them."""
    if p.HasField("kernel_size"):
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise LayerError("give kernel_size or kernel_h and kernel_w, not both")
        kernel = [p.kernel_size, p.kernel_size]
    elif p.HasField("kernel_h") and p.HasField("kernel_w"):
        kernel = [p.kernel_h, p.kernel_w]
    else:
        raise LayerError("needs kernel_size, or kernel_h and kernel_w, or global_pooling")
    hw_pad = p.HasField("pad_h") or p.HasField("pad_w")
    pads = [p.pad_h, p.pad_w] if hw_pad else [p.pad, p.pad]
    hw_stride = p.HasField("stride_h") or p.HasField("stride_w")
    strides = [p.stride_h, p.stride_w] if hw_stride else [p.stride, p.stride]
    if min(kernel) < 1 or min(strides) < 1:
        raise LayerError(f"kernel {kernel} and stride {strides} must be positive")
    if any(pad >= k for pad, k in zip(pads, kernel, strict=True)):
        raise LayerError(f"pad {pads} must be smaller than the kernel {kernel}")
    return kernel, pads, strides


def _per_axis(
    values: Sequence[int], name: str, n: int, default: int | None, hw: tuple[int, int] | None
) -> list[int]:
    """One value per spatial axis, as Caffe's BaseConvolutionLayer reads ``name``: a single
    value for all axes, one per axis, ``default`` when absent, or the ``*_h``/``*_w`` pair."""
    if hw is not None:
        if n != 2 or len(values):
            raise LayerError(f"{name}_h/_w are for 2-D convolution only, without {name}")
        result = list(hw)
    elif len(values) in (1, n):
        result = [values[0]] * n if len(values) == 1 else list(values)
    elif not len(values) and default is not None:
        result = [default] * n
    else:
        raise LayerError(f"{name} needs 1 or {n} values, got {len(values)}")
    if name in ("kernel_size", "stride", "dilation") and min(result) < 1:
        raise LayerError(f"{name} {result} must be positive")
    return result


def _hw(p: ConvolutionParameter, h: str, w: str) -> tuple[int, int] | None:
    """The ``*_h``/``*_w`` pair when either is set."""
    if p.HasField(h) or p.HasField(w):
        return getattr(p, h), getattr(p, w)
    return None
