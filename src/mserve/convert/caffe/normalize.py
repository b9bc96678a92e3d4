"""BatchNorm, Scale and LRN layers: Caffe's normalisations and learned per-channel factors."""

from __future__ import annotations

import numpy as np

from mserve.convert.caffe.builder import GraphBuilder
from mserve.convert.caffe.caffe_pb2 import LayerParameter, LRNParameter
from mserve.convert.caffe.shapes import LayerError, axis_index, describe, static_dim
from mserve.convert.caffe.weights import Weights


def batch_norm(
    layer: LayerParameter,
    graph: GraphBuilder,
    weights: Weights,
    scale: LayerParameter | None = None,
) -> None:
    """BatchNorm (and the Scale layer after it, if given) -> one BatchNormalization.

    Caffe stores moving sums: the mean and variance are blobs 0 and 1 divided by blob 2 (a
    factor of 0 means no statistics were accumulated: mean and variance 0).
    """
    x = graph.bottom(layer)
    shape = graph.shape(x)
    if len(shape) < 2:
        raise LayerError(f"needs a blob with a channel axis, got {describe(shape)}")
    channels = static_dim(shape[1], "the channel count")
    mean, variance, factor = weights.take(
        layer, [("mean", (channels,)), ("variance", (channels,)), ("scale factor", (1,))]
    )
    inverse = 0.0 if factor[0] == 0 else 1.0 / float(factor[0])
    p = layer.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        graph.note(
            f"BatchNorm '{layer.name}' sets use_global_stats: false, so Caffe would normalise "
            "with each batch's own statistics; the ONNX graph uses the stored ones, as "
            "inference should"
        )
    gamma = np.ones(channels, np.float32)
    beta = np.zeros(channels, np.float32)
    top_layer = layer
    if scale is not None:
        gamma, beta = _scale_blobs(scale, weights, (channels,))
        top_layer = scale
    name = top_layer.name
    inputs = [
        x,
        graph.constant(f"{name}.scale", gamma),
        graph.constant(f"{name}.bias", beta),
        graph.constant(f"{layer.name}.mean", mean * np.float32(inverse)),
        graph.constant(f"{layer.name}.var", variance * np.float32(inverse)),
    ]
    y = graph.top(top_layer, shape)
    graph.node("BatchNormalization", inputs, [y], layer.name, epsilon=p.eps)


def fusable_scale(layer: LayerParameter) -> bool:
    """Whether a Scale layer can fold into the BatchNormalization before it (per channel)."""
    p = layer.scale_param
    return len(layer.bottom) == 1 and p.axis == 1 and p.num_axes == 1


def scale(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Scale with learned factors -> Mul (and Add with bias_term), broadcast from ``axis``."""
    if len(layer.bottom) != 1:
        raise LayerError("a Scale whose factors come from a second bottom is not supported")
    x = graph.bottom(layer)
    shape = graph.shape(x)
    p = layer.scale_param
    start = axis_index(p.axis, len(shape))
    end = len(shape) if p.num_axes == -1 else start + p.num_axes
    if p.num_axes < -1 or end > len(shape):
        raise LayerError(f"num_axes {p.num_axes} runs past the axes of {describe(shape)}")
    covered = tuple(static_dim(d, "a scaled dimension") for d in shape[start:end])
    factors, bias = _scale_blobs(layer, weights, covered)
    broadcast = covered + (1,) * (len(shape) - end)
    y = graph.top(layer, shape)
    product = graph.temp(f"{layer.name}.scaled", shape) if p.bias_term else y
    factor_input = graph.constant(f"{layer.name}.scale", factors.reshape(broadcast))
    graph.node("Mul", [x, factor_input], [product], layer.name)
    if p.bias_term:
        bias_input = graph.constant(f"{layer.name}.bias", bias.reshape(broadcast))
        graph.node("Add", [product, bias_input], [y], f"{layer.name}/bias")


def lrn(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """LRN -> ONNX LRN across channels; within a channel, the pooling form Caffe computes.

    Across channels both divide by ``(k + alpha / size * sum of squares) ** beta`` over the same
    centred window, so the parameters carry over as they are.
    """
    p = layer.lrn_param
    x = graph.bottom(layer)
    shape = graph.shape(x)
    if len(shape) != 4:
        raise LayerError(f"needs a 4-D (N, C, H, W) blob, got {describe(shape)}")
    if p.local_size % 2 == 0:
        raise LayerError(f"local_size must be odd, got {p.local_size}")
    y = graph.top(layer, shape)
    if p.norm_region == LRNParameter.ACROSS_CHANNELS:
        graph.node(
            "LRN", [x], [y], layer.name, size=p.local_size, alpha=p.alpha, beta=p.beta, bias=p.k
        )
        return
    # WITHIN_CHANNEL: x * (1 + alpha * mean of x**2 over a size x size window) ** -beta
    name = layer.name
    pre = (p.local_size - 1) // 2
    square = graph.temp(f"{name}.square", shape)
    mean = graph.temp(f"{name}.mean", shape)
    scaled = graph.temp(f"{name}.scaled", shape)
    shifted = graph.temp(f"{name}.shifted", shape)
    power = graph.temp(f"{name}.power", shape)
    graph.node("Mul", [x, x], [square], f"{name}/square")
    graph.node(
        "AveragePool",
        [square],
        [mean],
        f"{name}/mean",
        kernel_shape=[p.local_size] * 2,
        pads=[pre] * 4,
        count_include_pad=1,
    )
    alpha = graph.constant(f"{name}.alpha", np.asarray(p.alpha, np.float32))
    one = graph.constant(f"{name}.one", np.asarray(1.0, np.float32))
    exponent = graph.constant(f"{name}.beta", np.asarray(-p.beta, np.float32))
    graph.node("Mul", [mean, alpha], [scaled], f"{name}/alpha")
    graph.node("Add", [scaled, one], [shifted], f"{name}/shift")
    graph.node("Pow", [shifted, exponent], [power], f"{name}/power")
    graph.node("Mul", [x, power], [y], name)


def _scale_blobs(
    layer: LayerParameter, weights: Weights, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """A Scale layer's factors and bias (zeros without bias_term)."""
    expected = [("scale", shape)]
    if layer.scale_param.bias_term:
        expected.append(("bias", shape))
    blobs = weights.take(layer, expected)
    bias = blobs[1] if len(blobs) > 1 else np.zeros(shape, np.float32)
    return blobs[0], bias
