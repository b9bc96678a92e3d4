"""An ONNX graph's inputs and outputs as V2 tensor specs, and inputs generated from them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from mserve.errors import ConversionError
from mserve.protocol import TensorSpec, numpy_dtype

#: ONNX element type -> V2 datatype.
V2_TYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
}


def _spec(value: onnx.ValueInfoProto, source: str) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ConversionError(
            source,
            f"'{value.name}' is a {kind}, not a tensor; V2 serves tensors only "
            "(for scikit-learn classifiers, convert without ZipMap)",
        )
    tensor = value.type.tensor_type
    if tensor.elem_type not in V2_TYPES:
        name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ConversionError(source, f"'{value.name}' has element type {name}, which V2 lacks")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, V2_TYPES[tensor.elem_type], dims)


def graph_inputs(model: onnx.ModelProto, source: str = "model") -> tuple[TensorSpec, ...]:
    """The graph's real inputs (initializers that double as inputs are left out)."""
    weights = {t.name for t in model.graph.initializer}
    return tuple(_spec(v, source) for v in model.graph.input if v.name not in weights)


def graph_outputs(model: onnx.ModelProto, source: str = "model") -> tuple[TensorSpec, ...]:
    """The graph's outputs."""
    return tuple(_spec(v, source) for v in model.graph.output)


def batch_is_free(model: onnx.ModelProto) -> bool:
    """True when every input and output has a free first dimension (a batch axis)."""
    specs = graph_inputs(model) + graph_outputs(model)
    return all(s.shape and s.shape[0] == -1 for s in specs)


def generate_inputs(
    specs: tuple[TensorSpec, ...], batch: int, seed: int = 0, free_dim: int = 8
) -> dict[str, np.ndarray]:
    """Random inputs fitting the specs: ``batch`` rows, ``free_dim`` for other free dimensions.

    Floats are standard normal; integers are small non-negative values (so that they are valid
    indices for embeddings and categorical features); booleans are coin flips.
    """
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(
            (batch if i == 0 else free_dim) if d == -1 else d for i, d in enumerate(spec.shape)
        )
        if spec.datatype == "BYTES":
            raise ConversionError(
                spec.name, "a string input cannot be generated; pass inputs with --inputs DATA.npz"
            )
        dtype = numpy_dtype(spec.datatype)
        if np.issubdtype(dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feed[spec.name] = rng.random(shape) < 0.5
        else:
            feed[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
    return feed


def resize_batch(feed: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The same inputs with ``batch`` rows: cut, or repeated when there are fewer rows."""
    out: dict[str, np.ndarray] = {}
    for name, array in feed.items():
        rows = array.shape[0]
        if rows >= batch:
            out[name] = np.ascontiguousarray(array[:batch])
        else:
            reps = -(-batch // rows)
            out[name] = np.ascontiguousarray(np.concatenate([array] * reps)[:batch])
    return out
