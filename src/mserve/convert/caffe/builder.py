"""The ONNX graph under construction, with Caffe's blob names mapped to SSA tensor names.

Caffe lets a layer write the blob it reads (``bottom: "conv1" top: "conv1"`` for an in-place
ReLU); ONNX needs every tensor written once. Each write of a blob therefore makes a new tensor
(``conv1``, ``conv1@2``, ...), reads see the latest one, and :meth:`GraphBuilder.graph` gives the
final version of every output blob the blob's own name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mserve.convert.caffe.caffe_pb2 import LayerParameter
from mserve.convert.caffe.shapes import Dim, LayerError, Shape


class GraphBuilder:
    """Nodes, constants, inputs and tensor shapes of the graph being built."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.notes: list[str] = []
        self._constants: list[TensorProto] = []
        self._constant_names: set[str] = set()
        self._inputs: list[str] = []
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._shapes: dict[str, Shape] = {}
        self._current: dict[str, str] = {}  # blob -> its latest tensor
        self._consumed: dict[str, bool] = {}  # blob -> its latest tensor was read by a layer
        self._writes: list[str] = []  # blobs, in the order of their latest write

    # -- blobs ---------------------------------------------------------------------------------

    def add_input(self, blob: str, shape: Shape) -> None:
        """Declare a graph input that holds ``blob``."""
        if blob in self._current:
            raise LayerError(f"input blob '{blob}' is declared twice")
        self._inputs.append(self.define(blob, shape))

    def bottom(self, layer: LayerParameter, index: int = 0) -> str:
        """The tensor holding the layer's ``index``-th bottom blob."""
        if index >= len(layer.bottom):
            raise LayerError(f"needs a bottom #{index + 1}, but has {len(layer.bottom)}")
        blob = layer.bottom[index]
        if blob not in self._current:
            raise LayerError(
                f"bottom '{blob}' is not produced by any earlier layer (a deploy net declares "
                "its inputs with an Input layer or input_shape)"
            )
        self._consumed[blob] = True
        return self._current[blob]

    def bottoms(self, layer: LayerParameter, least: int = 1) -> list[str]:
        """The tensors of all bottom blobs; at least ``least`` of them."""
        if len(layer.bottom) < least:
            raise LayerError(f"needs at least {least} bottoms, but has {len(layer.bottom)}")
        return [self.bottom(layer, i) for i in range(len(layer.bottom))]

    def top(self, layer: LayerParameter, shape: Shape, index: int = 0) -> str:
        """A new tensor for the layer's ``index``-th top blob, with its shape."""
        if index >= len(layer.top):
            raise LayerError(f"needs a top #{index + 1}, but has {len(layer.top)}")
        return self.define(layer.top[index], shape)

    def define(self, blob: str, shape: Shape) -> str:
        """Make a new tensor for ``blob``; later reads of the blob see it."""
        tensor = self._unique(blob)
        self._shapes[tensor] = shape
        self._current[blob] = tensor
        self._consumed[blob] = False
        if blob in self._writes:
            self._writes.remove(blob)
        self._writes.append(blob)
        return tensor

    def rewrite_in_place(self, blob: str) -> None:
        """Record that a layer computing nothing (in-place Dropout) wrote ``blob``."""
        self._consumed[blob] = False
        self._writes.remove(blob)
        self._writes.append(blob)

    def shape(self, tensor: str) -> Shape:
        """The shape of a tensor made by this builder."""
        return self._shapes[tensor]

    # -- nodes ---------------------------------------------------------------------------------

    def temp(self, hint: str, shape: Shape) -> str:
        """A tensor that holds no blob: a step inside one layer."""
        tensor = self._unique(hint)
        self._shapes[tensor] = shape
        return tensor

    def constant(self, hint: str, value: np.ndarray) -> str:
        """Store ``value`` as an initializer and return its name."""
        name = self._unique(hint)
        self._constant_names.add(name)
        self._constants.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(
        self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: Any
    ) -> None:
        """Append an ONNX node; ``name`` is made unique."""
        unique = name
        count = 1
        while unique in self._node_names:
            count += 1
            unique = f"{name}/{count}"
        self._node_names.add(unique)
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), unique, **attrs))

    def note(self, text: str) -> None:
        """Record something about the conversion a user should know."""
        if text not in self.notes:
            self.notes.append(text)

    # -- result --------------------------------------------------------------------------------

    def outputs(self) -> list[str]:
        """Blobs written and never read afterwards (Caffe's net outputs), in write order."""
        inputs = set(self._inputs)
        return [
            blob
            for blob in self._writes
            if not self._consumed[blob] and self._current[blob] not in inputs
        ]

    def tensor_of(self, blob: str) -> str:
        """The latest tensor of ``blob``."""
        return self._current[blob]

    def graph(self, name: str, outputs: Sequence[str]) -> onnx.GraphProto:
        """The finished graph; every output blob's final tensor is renamed to the blob."""
        renames: dict[str, str] = {}
        for blob in outputs:
            tensor = self._current[blob]
            if tensor == blob or blob in self._inputs or blob in self._constant_names:
                continue
            renames[blob] = self._unique(f"{blob}@1")  # the first version gives way
            renames[tensor] = blob
        for node in self.nodes:
            node.input[:] = [renames.get(t, t) for t in node.input]
            node.output[:] = [renames.get(t, t) for t in node.output]
        return helper.make_graph(
            self.nodes,
            name,
            [_value_info(t, self._shapes[t]) for t in self._inputs],
            [_value_info(b, self._shapes[self._current[b]]) for b in outputs],
            self._constants,
        )

    def _unique(self, base: str) -> str:
        name, count = base, 1
        while name in self._names:
            count += 1
            name = f"{base}@{count}"
        self._names.add(name)
        return name


def _value_info(name: str, shape: Shape) -> onnx.ValueInfoProto:
    dims: list[Dim] = list(shape)
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
