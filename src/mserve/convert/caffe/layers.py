"""One converter per Caffe layer type, and the table the walk looks them up in.

A converter reads its bottoms from the :class:`GraphBuilder`, takes its blobs from the
:class:`Weights`, appends ONNX nodes and defines its tops with their shapes. It raises
:class:`LayerError` for settings it cannot express.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mserve.convert.caffe.builder import GraphBuilder
from mserve.convert.caffe.caffe_pb2 import EltwiseParameter, LayerParameter
from mserve.convert.caffe.normalize import batch_norm, lrn, scale
from mserve.convert.caffe.shapes import (
    LayerError,
    Shape,
    axis_index,
    caffe_reshape,
    describe,
    product,
    reshape_target,
    static_dim,
)
from mserve.convert.caffe.spatial import convolution, pooling
from mserve.convert.caffe.weights import Weights

Converter = Callable[[LayerParameter, GraphBuilder, Weights], None]


def relu(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """ReLU -> Relu, or LeakyRelu when negative_slope is set."""
    x = graph.bottom(layer)
    y = graph.top(layer, graph.shape(x))
    slope = layer.relu_param.negative_slope
    if slope:
        graph.node("LeakyRelu", [x], [y], layer.name, alpha=slope)
    else:
        graph.node("Relu", [x], [y], layer.name)


def sigmoid(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Sigmoid -> Sigmoid."""
    _unary("Sigmoid", layer, graph)


def tanh(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """TanH -> Tanh."""
    _unary("Tanh", layer, graph)


def softmax(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Softmax over one axis -> Softmax (opset 13 semantics: that axis alone)."""
    x = graph.bottom(layer)
    shape = graph.shape(x)
    axis = axis_index(layer.softmax_param.axis, len(shape))
    y = graph.top(layer, shape)
    graph.node("Softmax", [x], [y], layer.name, axis=axis)


def dropout(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Dropout: the identity at inference time (Caffe scales while training)."""
    x = graph.bottom(layer)
    if len(layer.top) == 1 and layer.top[0] == layer.bottom[0]:
        graph.rewrite_in_place(layer.top[0])
        return
    y = graph.top(layer, graph.shape(x))
    graph.node("Identity", [x], [y], layer.name)


def concat(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Concat -> Concat along ``axis`` (or the older ``concat_dim``)."""
    inputs = graph.bottoms(layer)
    shapes = [graph.shape(t) for t in inputs]
    p = layer.concat_param
    axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
    index = axis_index(axis, len(shapes[0]))
    for shape in shapes[1:]:
        if len(shape) != len(shapes[0]) or any(
            a != b for i, (a, b) in enumerate(zip(shape, shapes[0], strict=True)) if i != index
        ):
            raise LayerError(
                f"bottoms {', '.join(describe(s) for s in shapes)} differ outside axis {index}"
            )
    sizes = [static_dim(s[index], "the concatenated dimension") for s in shapes]
    out = (*shapes[0][:index], sum(sizes), *shapes[0][index + 1 :])
    graph.node("Concat", inputs, [graph.top(layer, out)], layer.name, axis=index)


def eltwise(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Eltwise -> Sum (of inputs times their coeff), Mul, or Max."""
    inputs = graph.bottoms(layer, least=2)
    shapes = {graph.shape(t) for t in inputs}
    if len(shapes) != 1:
        raise LayerError(f"bottoms must have one shape, got {', '.join(map(describe, shapes))}")
    shape = shapes.pop()
    p = layer.eltwise_param
    coeffs = list(p.coeff)
    if coeffs and (p.operation != EltwiseParameter.SUM or len(coeffs) != len(inputs)):
        raise LayerError("coeff is for SUM only, with one value per bottom")
    y = graph.top(layer, shape)
    if p.operation == EltwiseParameter.MAX:
        graph.node("Max", inputs, [y], layer.name)
        return
    if p.operation == EltwiseParameter.PROD:
        result = inputs[0]
        for i, tensor in enumerate(inputs[1:], start=2):
            out = y if i == len(inputs) else graph.temp(f"{layer.name}.product{i}", shape)
            graph.node("Mul", [result, tensor], [out], f"{layer.name}/mul{i}")
            result = out
        return
    terms = []
    for i, (tensor, coeff) in enumerate(zip(inputs, coeffs or [1.0] * len(inputs), strict=True)):
        if coeff == 1.0:
            terms.append(tensor)
            continue
        weighted = graph.temp(f"{layer.name}.term{i}", shape)
        factor = graph.constant(f"{layer.name}.coeff{i}", np.asarray(coeff, np.float32))
        graph.node("Mul", [tensor, factor], [weighted], f"{layer.name}/coeff{i}")
        terms.append(weighted)
    graph.node("Sum", terms, [y], layer.name)


def flatten(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Flatten axes [axis, end_axis] into one -> Flatten, or Reshape when end_axis is not last."""
    x = graph.bottom(layer)
    shape = graph.shape(x)
    p = layer.flatten_param
    start = axis_index(p.axis, len(shape))
    end = axis_index(p.end_axis, len(shape), what="end_axis")
    if end < start:
        raise LayerError(f"end_axis {p.end_axis} comes before axis {p.axis}")
    out = (*shape[:start], product(shape[start : end + 1]), *shape[end + 1 :])
    y = graph.top(layer, out)
    if start == 1 and end == len(shape) - 1:
        graph.node("Flatten", [x], [y], layer.name, axis=1)
    else:
        _reshape_node(layer, graph, x, y, out)


def reshape(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """Reshape (0 copies a dimension, -1 infers one) -> Reshape to the shape Caffe computes."""
    x = graph.bottom(layer)
    p = layer.reshape_param
    out = caffe_reshape(graph.shape(x), list(p.shape.dim), p.axis, p.num_axes)
    _reshape_node(layer, graph, x, graph.top(layer, out), out)


def inner_product(layer: LayerParameter, graph: GraphBuilder, weights: Weights) -> None:
    """InnerProduct over the axes from ``axis`` on -> Gemm (axis 1) or MatMul and Add."""
    p = layer.inner_product_param
    x = graph.bottom(layer)
    shape = graph.shape(x)
    axis = axis_index(p.axis, len(shape))
    inputs = static_dim(product(shape[axis:]), f"the flattened size from axis {axis}")
    outputs = p.num_output
    expected: list[tuple[str, tuple[int, ...]]] = [
        ("weight", (inputs, outputs) if p.transpose else (outputs, inputs))
    ]
    if p.bias_term:
        expected.append(("bias", (outputs,)))
    blobs = weights.take(layer, expected)
    y = graph.top(layer, (*shape[:axis], outputs))
    name = layer.name
    if axis == 1:
        flat = x
        if len(shape) != 2:
            flat = graph.temp(f"{name}.flat", (shape[0], inputs))
            graph.node("Flatten", [x], [flat], f"{name}/flatten", axis=1)
        gemm = [flat, graph.constant(f"{name}.weight", blobs[0])]
        if p.bias_term:
            gemm.append(graph.constant(f"{name}.bias", blobs[1]))
        graph.node("Gemm", gemm, [y], name, transB=0 if p.transpose else 1)
        return
    lumped: Shape = (*shape[:axis], inputs)
    flat = graph.temp(f"{name}.flat", lumped)
    _reshape_node(layer, graph, x, flat, lumped)
    matrix = blobs[0] if p.transpose else np.ascontiguousarray(blobs[0].T)
    product_out = graph.temp(f"{name}.product", (*shape[:axis], outputs)) if p.bias_term else y
    graph.node("MatMul", [flat, graph.constant(f"{name}.weight", matrix)], [product_out], name)
    if p.bias_term:
        bias = graph.constant(f"{name}.bias", blobs[1])
        graph.node("Add", [product_out, bias], [y], f"{name}/bias")


def _unary(op: str, layer: LayerParameter, graph: GraphBuilder) -> None:
    x = graph.bottom(layer)
    graph.node(op, [x], [graph.top(layer, graph.shape(x))], layer.name)


def _reshape_node(layer: LayerParameter, graph: GraphBuilder, x: str, y: str, out: Shape) -> None:
    target = graph.constant(f"{layer.name}.shape", np.asarray(reshape_target(out), np.int64))
    graph.node("Reshape", [x, target], [y], layer.name)


#: Caffe layer type -> converter. Input layers and BatchNorm+Scale pairs are handled by the walk.
CONVERTERS: dict[str, Converter] = {
    "BatchNorm": batch_norm,
    "Concat": concat,
    "Convolution": convolution,
    "Dropout": dropout,
    "Eltwise": eltwise,
    "Flatten": flatten,
    "InnerProduct": inner_product,
    "LRN": lrn,
    "Pooling": pooling,
    "ReLU": relu,
    "Reshape": reshape,
    "Scale": scale,
    "Sigmoid": sigmoid,
    "Softmax": softmax,
    "TanH": tanh,
}
