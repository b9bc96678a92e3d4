"""TensorFlow SavedModels and Keras files -> ONNX (through tf2onnx).

Both kinds become one :class:`_Traced`: a ``tf.function`` whose inputs are named tensor specs and
whose output is a dict of named tensors. tf2onnx names the graph's inputs and outputs after those
names, and the same function, run by TensorFlow, is the reference. TensorFlow, Keras and tf2onnx
are imported only when a model is converted (the ``tensorflow`` extra).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mserve.convert.base import Exported
from mserve.convert.tf2onnx_export import run_tf2onnx
from mserve.errors import ConversionError, UntrustedSource

#: What ``tensorflow_to_onnx`` accepts, for error messages.
EXPECTED = "a SavedModel directory (with saved_model.pb), a Keras .keras file or a legacy .h5 file"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SAMPLE_ROWS = 4


@dataclass(frozen=True, slots=True)
class _Traced:
    """A model as a ``tf.function``: named specs in, a dict of named tensors out."""

    function: Callable[..., Mapping[str, Any]]
    specs: list[Any]  # tf.TensorSpec, each named after its input
    outputs: list[str]  # output names in the order the graph should list them
    notes: list[str]


def tensorflow_to_onnx(
    path: Path,
    *,
    signature: str = "serving_default",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    opset: int = 17,
    trust: bool = False,
) -> Exported:
    """Convert a SavedModel directory, a ``.keras`` file or an ``.h5`` file to ONNX.

    A SavedModel is converted through its ``signature``; the graph's inputs and outputs carry the
    signature's keys. A Keras model's inputs carry the Keras input names and its outputs the
    output layer names. ``input_shapes`` gives full shapes (batch first, -1 for a free dimension)
    for inputs whose dimensions the model leaves free; the batch dimension of a Keras model stays
    dynamic whatever is given. Keras files with Lambda layers run Python code when loaded and
    are refused unless ``trust`` is set. Raises :class:`ConversionError` when the path is not a
    model, the signature is missing, or tf2onnx leaves ops ONNX does not define.
    """
    source = str(path)
    is_saved_model = _classify(path)
    _require_tensorflow(source)
    shapes = dict(input_shapes or {})
    if is_saved_model:
        traced = _trace_saved_model(path, signature, shapes, source)
    else:
        traced = _trace_keras(path, shapes, trust, source)
    model, tf2onnx_notes = run_tf2onnx(traced.function, traced.specs, opset, source)
    _order_outputs(model, traced.outputs)
    return Exported(
        model=model,
        framework="tensorflow",
        reference=_reference(traced, model),
        sample=_sample(traced.specs),
        class_outputs=_softmax_outputs(model),
        notes=(*traced.notes, *tf2onnx_notes),
    )


def _classify(path: Path) -> bool:
    """True for a SavedModel directory, False for a Keras file; ConversionError otherwise."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return True
        raise ConversionError(str(path), f"directory has no saved_model.pb; expected {EXPECTED}")
    if path.is_file():
        if path.suffix.lower() in KERAS_SUFFIXES:
            return False
        raise ConversionError(str(path), f"unknown model file type; expected {EXPECTED}")
    raise ConversionError(str(path), f"no such file or directory; expected {EXPECTED}")


def _require_tensorflow(source: str) -> None:
    """Import TensorFlow and tf2onnx quietly, or say which extra to install."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TF's C++ start-up chatter
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise ConversionError(
            source,
            f"converting TensorFlow models needs TensorFlow and tf2onnx ({exc.name or exc} "
            "cannot be imported): pip install 'mserve[tensorflow]'",
        ) from exc


def _trace_saved_model(
    path: Path, signature: str, shapes: dict[str, Sequence[int]], source: str
) -> _Traced:
    """Wrap one signature of a SavedModel; its keys name the inputs and outputs."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many types for unreadable SavedModels
        raise ConversionError(source, f"cannot load the SavedModel: {exc}") from exc
    present = sorted(loaded.signatures.keys())
    if signature not in present:
        raise ConversionError(
            source,
            f"no signature '{signature}'; signatures present: {', '.join(present) or '(none)'}",
        )
    concrete = loaded.signatures[signature]
    _, named = concrete.structured_input_signature
    _check_names(shapes, list(named), source)
    specs, notes = [], [f"SavedModel signature '{signature}'"]
    for key, spec in named.items():
        dims = _resolve_dims(key, _dims(spec.shape), shapes.get(key), source)
        if dims and dims[0] is not None:
            notes.append(f"the signature fixes the batch dimension of '{key}' to {dims[0]}")
        specs.append(tf.TensorSpec(dims, spec.dtype, name=key))
    keys = list(named)

    @tf.function(input_signature=specs)
    def function(*args: Any) -> Mapping[str, Any]:
        # `loaded` is named here so the SavedModel's variables live as long as the function.
        return dict(loaded.signatures[signature](**dict(zip(keys, args, strict=True))))

    return _Traced(function, specs, list(concrete.structured_outputs), notes)


def _trace_keras(path: Path, shapes: dict[str, Sequence[int]], trust: bool, source: str) -> _Traced:
    """Load a Keras file and wrap the model with a dynamic batch dimension."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ConversionError(
            source, f"Keras runs on '{keras.backend.backend()}'; set KERAS_BACKEND=tensorflow"
        )
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not trust)
    except ValueError as exc:
        if "safe_mode" in str(exc):
            raise UntrustedSource(source, "Lambda-layer Keras") from exc
        raise ConversionError(source, f"cannot load the Keras model: {exc}") from exc
    except Exception as exc:  # h5py, zipfile and Keras raise many types for bad files
        raise ConversionError(source, f"cannot load the Keras model: {exc}") from exc
    inputs = _keras_inputs(model, source)
    names = [_tensor_name(t.name) for t in inputs]
    _check_names(shapes, names, source)
    specs = []
    for name, tensor in zip(names, inputs, strict=True):
        dims = _resolve_dims(name, [None, *_dims(tensor.shape)[1:]], shapes.get(name), source)
        specs.append(tf.TensorSpec(dims, tf.as_dtype(tensor.dtype), name=name))
    outputs = _keras_output_names(model)

    @tf.function(input_signature=specs)
    def function(*args: Any) -> Mapping[str, Any]:
        result = model(args[0] if len(args) == 1 else list(args), training=False)
        if isinstance(result, Mapping):
            return dict(zip(outputs, [result[k] for k in outputs], strict=True))
        flat = result if isinstance(result, list | tuple) else [result]
        return dict(zip(outputs, flat, strict=True))

    return _Traced(function, specs, outputs, [f"Keras {keras.__version__} model"])


def _keras_inputs(model: Any, source: str) -> list[Any]:
    """The model's symbolic inputs; a subclassed model without them cannot be traced here."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise ConversionError(
            source,
            "the Keras model has no defined inputs (a subclassed model?); export it with "
            "model.export(directory) and convert the SavedModel instead",
        )
    return inputs


def _keras_output_names(model: Any) -> list[str]:
    """Output layer names when Keras knows them uniquely, else ``output_0``, ``output_1``..."""
    count = len(model.outputs)
    names = [_tensor_name(n) for n in getattr(model, "output_names", None) or []]
    if not names and count == 1 and model.layers:  # Sequential: the last layer is the output
        names = [_tensor_name(model.layers[-1].name)]
    if len(names) == count and len(set(names)) == count:
        return names
    return [f"output_{i}" for i in range(count)]


def _tensor_name(name: str) -> str:
    """A name TensorFlow accepts for a placeholder (and so ONNX gets unchanged when it can)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0])
    return cleaned if re.match(r"[A-Za-z0-9.]", cleaned) else f"input_{cleaned}"


def _dims(shape: Any) -> list[int | None]:
    """A Keras shape tuple or a TensorShape as a list (empty when even the rank is unknown)."""
    if isinstance(shape, tuple | list):
        return list(shape)
    return [] if shape.rank is None else list(shape.as_list())


def _check_names(shapes: Mapping[str, Sequence[int]], names: list[str], source: str) -> None:
    """Refuse ``input_shapes`` entries that name no input."""
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise ConversionError(
            source,
            f"input_shapes names unknown inputs {', '.join(unknown)}; "
            f"the model's inputs are {', '.join(names)}",
        )


def _resolve_dims(
    name: str, model: list[int | None], given: Sequence[int] | None, source: str
) -> list[int | None] | None:
    """Fill the model's free dimensions from ``given``; None for an unknown rank."""
    if given is None:
        return model or None
    wanted: list[int | None] = [None if d is None or d < 0 else int(d) for d in given]
    if not model:
        return wanted
    if len(wanted) != len(model):
        raise ConversionError(
            source, f"input '{name}' has rank {len(model)}, input_shapes gives {list(given)}"
        )
    resolved: list[int | None] = []
    for i, (have, want) in enumerate(zip(model, wanted, strict=True)):
        if have is not None and want is not None and have != want:
            raise ConversionError(
                source,
                f"input '{name}' dimension {i} is fixed to {have}, input_shapes gives {want}",
            )
        resolved.append(have if have is not None else want)
    if model[0] is None:
        resolved[0] = None  # the batch dimension stays dynamic
    return resolved


def _order_outputs(model: onnx.ModelProto, order: list[str]) -> None:
    """List the graph's outputs in the model's order (tf2onnx sorts dict outputs by name)."""
    by_name = {o.name: o for o in model.graph.output}
    if set(by_name) != set(order):
        return
    reordered = [by_name[name] for name in order]
    copies = [onnx.ValueInfoProto() for _ in reordered]
    for copy, info in zip(copies, reordered, strict=True):
        copy.CopyFrom(info)
    del model.graph.output[:]
    model.graph.output.extend(copies)


def _reference(traced: _Traced, model: onnx.ModelProto) -> Callable[..., list[np.ndarray]]:
    """Run the traced TensorFlow function; outputs in graph order, cast to the graph's dtypes."""
    import tensorflow as tf

    outputs = [
        (o.name, onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type))
        for o in model.graph.output
    ]

    def reference(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        args = [tf.convert_to_tensor(np.asarray(inputs[s.name]), s.dtype) for s in traced.specs]
        result = traced.function(*args)
        return [np.asarray(result[name].numpy(), dtype=dtype) for name, dtype in outputs]

    return reference


def _sample(specs: list[Any]) -> dict[str, np.ndarray]:
    """A few random rows for every input, or nothing when a non-batch dimension is unknown."""
    rng = np.random.default_rng(0)
    sample: dict[str, np.ndarray] = {}
    for spec in specs:
        dims = spec.shape.as_list() if spec.shape.rank is not None else None
        if dims is None or any(d is None for d in dims[1:]):
            return {}
        shape = (SAMPLE_ROWS if dims[0] is None else dims[0], *dims[1:]) if dims else ()
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
        if dtype.kind == "f":
            sample[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            sample[spec.name] = rng.integers(0, 10, shape).astype(dtype)
        elif dtype.kind == "b":
            sample[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            return {}
    return sample


def _softmax_outputs(model: onnx.ModelProto) -> tuple[str, ...]:
    """Graph outputs computed by a Softmax node (through any Identity nodes after it)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = []
    for output in model.graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type == "Identity":
            node = producers.get(node.input[0])
        if node is not None and node.op_type == "Softmax":
            found.append(output.name)
    return tuple(found)
