"""Signatures read from ONNX graphs, and inputs generated from them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mserve.convert.signature import (
    batch_is_free,
    generate_inputs,
    graph_inputs,
    graph_outputs,
    resize_batch,
)
from mserve.errors import ConversionError
from mserve.protocol import TensorSpec


def _model(in_dims: list[int | str], elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", elem, in_dims)],
        [helper.make_tensor_value_info("y", elem, in_dims)],
        initializer=[w],
    )
    graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]))
    return helper.make_model(graph)


def test_specs_mark_symbolic_dims_free_and_skip_initializers() -> None:
    m = _model(["batch", 3, "seq"])
    assert graph_inputs(m) == (TensorSpec("x", "FP32", (-1, 3, -1)),)
    assert graph_outputs(m) == (TensorSpec("y", "FP32", (-1, 3, -1)),)
    assert batch_is_free(m)
    assert not batch_is_free(_model([1, 3]))


def test_a_type_v2_lacks_is_named() -> None:
    with pytest.raises(ConversionError, match="'x' has element type COMPLEX64, which V2 lacks"):
        graph_inputs(_model(["n", 2], TensorProto.COMPLEX64))


def test_generated_inputs_fit_the_specs() -> None:
    specs = (
        TensorSpec("f", "FP32", (-1, 3)),
        TensorSpec("ids", "INT64", (-1, -1)),
        TensorSpec("mask", "BOOL", (2, 2)),
    )
    feed = generate_inputs(specs, batch=5, free_dim=7)
    assert feed["f"].shape == (5, 3)
    assert feed["f"].dtype == np.float32
    assert feed["ids"].shape == (5, 7)
    assert feed["ids"].dtype == np.int64
    assert feed["ids"].min() >= 0
    assert feed["ids"].max() < 100
    assert feed["mask"].shape == (2, 2)
    assert feed["mask"].dtype == np.bool_


def test_resize_batch_cuts_and_repeats() -> None:
    feed = {"x": np.arange(3).reshape(3, 1)}
    assert resize_batch(feed, 2)["x"].ravel().tolist() == [0, 1]
    assert resize_batch(feed, 7)["x"].ravel().tolist() == [0, 1, 2, 0, 1, 2, 0]
