"""The walk over a deploy net: which layers run, where inputs come from, and the ONNX model.

Caffe builds a TEST-phase net from the prototxt: layers whose include/exclude rules do not match
the net state are dropped, and layers that only feed or score training (data readers, losses,
accuracy) are skipped here. Each remaining layer is converted in order; the blobs written and
never read afterwards are the outputs, as in Caffe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import helper

from mserve.convert.caffe.builder import GraphBuilder
from mserve.convert.caffe.caffe_pb2 import (
    TEST,
    BlobShape,
    LayerParameter,
    NetParameter,
    NetState,
    NetStateRule,
)
from mserve.convert.caffe.layers import CONVERTERS
from mserve.convert.caffe.normalize import batch_norm, fusable_scale
from mserve.convert.caffe.shapes import BATCH, LayerError, Shape, describe
from mserve.convert.caffe.weights import Weights
from mserve.errors import ConversionError

#: Layer types that only matter for training or evaluation; a deploy net needs none of them.
TRAINING_ONLY = frozenset(
    {
        "Accuracy",
        "AnnotatedData",
        "Data",
        "DummyData",
        "HDF5Data",
        "HDF5Output",
        "ImageData",
        "MemoryData",
        "Silence",
        "VideoData",
        "WindowData",
    }
)

#: Every type :func:`convert_net` accepts, as error messages list them.
SUPPORTED = tuple(sorted({*CONVERTERS, "Input"}))


@dataclass(frozen=True, slots=True)
class Converted:
    """A converted net: the model, the outputs that hold class probabilities, and notes."""

    model: onnx.ModelProto
    class_outputs: tuple[str, ...]
    notes: tuple[str, ...]


def convert_net(net: NetParameter, weights: Weights, source: str, opset: int) -> Converted:
    """Convert a deploy net with its learned blobs; ``source`` names the prototxt in errors."""
    state = NetState()
    state.CopyFrom(net.state)
    state.phase = TEST
    layers = [layer for layer in net.layer if _included(layer, state)]
    _check_supported(layers, source)
    graph = GraphBuilder()
    dropped = [layer.name for layer in net.layer if not _included(layer, state)]
    if dropped:
        graph.note(f"left out layers not in the TEST phase: {', '.join(dropped)}")
    written_by: dict[str, str] = {}
    try:
        _net_inputs(net, graph)
    except LayerError as error:
        raise ConversionError(source, str(error)) from None
    index = 0
    while index < len(layers):
        layer = layers[index]
        fused = _fusable_pair(layers, index)
        try:
            _convert(layer, fused, graph, weights)
        except LayerError as error:
            raise ConversionError(source, f"layer '{layer.name}' ({layer.type}): {error}") from None
        last = fused or layer
        written_by.update(dict.fromkeys(last.top, last.type))
        index += 2 if fused else 1
    outputs = graph.outputs()
    if not outputs:
        raise ConversionError(
            source, "the net has no outputs: no layer writes a blob that is not read afterwards"
        )
    if weights.legacy:
        graph.note("read the learned blobs from the pre-2015 (V1) layers of the .caffemodel")
    class_outputs = tuple(
        blob
        for blob in outputs
        if written_by.get(blob) == "Softmax" and len(graph.shape(graph.tensor_of(blob))) == 2
    )
    model = helper.make_model_gen_version(
        graph.graph(net.name or "caffe", outputs),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="mserve",
    )
    return Converted(model, class_outputs, tuple(graph.notes))


def _convert(
    layer: LayerParameter, fused: LayerParameter | None, graph: GraphBuilder, weights: Weights
) -> None:
    if layer.type == "Input":
        shapes = list(layer.input_param.shape)
        if len(shapes) not in (1, len(layer.top)):
            raise LayerError(f"has {len(layer.top)} tops but {len(shapes)} shapes")
        for i, blob in enumerate(layer.top):
            graph.add_input(blob, _batched(shapes[0 if len(shapes) == 1 else i], blob, graph))
    elif _training_only(layer.type):
        graph.note(
            f"skipped layer '{layer.name}' ({layer.type}): a deployed model reads no training "
            "data and computes no loss or accuracy"
        )
    elif fused is not None:
        batch_norm(layer, graph, weights, scale=fused)
        graph.note("folded each BatchNorm and the Scale after it into one BatchNormalization")
    else:
        CONVERTERS[layer.type](layer, graph, weights)


def _net_inputs(net: NetParameter, graph: GraphBuilder) -> None:
    """The net-level ``input`` blobs, shaped by ``input_shape`` or four ``input_dim`` each."""
    names = list(net.input)
    if len(net.input_shape) == len(names):
        shapes = list(net.input_shape)
    elif len(net.input_dim) == 4 * len(names):
        shapes = [BlobShape(dim=net.input_dim[4 * i : 4 * i + 4]) for i in range(len(names))]
    else:
        raise LayerError(
            f"the net declares inputs {names} but not their shapes: give one input_shape per "
            "input (or four input_dim values each), or use an Input layer"
        )
    for name, shape in zip(names, shapes, strict=True):
        graph.add_input(name, _batched(shape, name, graph))


def _batched(shape: BlobShape, blob: str, graph: GraphBuilder) -> Shape:
    """An input's declared shape with its first axis made the free batch axis."""
    dims = list(shape.dim)
    if not dims or min(dims) < 1:
        raise LayerError(f"input '{blob}' has shape {describe(dims)}; dims must be positive")
    graph.note(
        f"input '{blob}' takes any batch size: the prototxt's first dim ({dims[0]}) became "
        f"'{BATCH}'"
    )
    return (BATCH, *dims[1:])


def _fusable_pair(layers: Sequence[LayerParameter], index: int) -> LayerParameter | None:
    """The Scale that follows a BatchNorm at ``index`` when both can become one node."""
    layer = layers[index]
    if layer.type != "BatchNorm" or index + 1 >= len(layers) or len(layer.top) != 1:
        return None
    follower = layers[index + 1]
    blob = layer.top[0]
    if follower.type != "Scale" or not fusable_scale(follower) or follower.bottom[0] != blob:
        return None
    readers = 0
    for later in layers[index + 1 :]:
        readers += list(later.bottom).count(blob)
        if blob in later.top:
            break
    return follower if readers == 1 else None


def _check_supported(layers: Sequence[LayerParameter], source: str) -> None:
    unknown = [
        f"'{layer.name}' ({layer.type or 'no type'})"
        for layer in layers
        if layer.type not in SUPPORTED and not _training_only(layer.type)
    ]
    if unknown:
        raise ConversionError(
            source,
            f"cannot convert layer {', '.join(unknown)}: mserve converts only these Caffe layer "
            f"types: {', '.join(SUPPORTED)}",
        )


def _training_only(kind: str) -> bool:
    return kind in TRAINING_ONLY or kind.endswith("Loss")


def _included(layer: LayerParameter, state: NetState) -> bool:
    """Caffe's Net::FilterNet: with include rules, a layer stays if one of them matches;
    otherwise it stays unless an exclude rule matches."""
    if len(layer.include):
        return any(_meets(rule, state) for rule in layer.include)
    return not any(_meets(rule, state) for rule in layer.exclude)


def _meets(rule: NetStateRule, state: NetState) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)
