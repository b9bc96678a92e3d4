"""OpenVINO backend: the repository's ``model.onnx``, read and compiled by OpenVINO.

Device. ``runtime.execution_providers`` lists ONNX Runtime providers for the onnxruntime
backend; for this one its first entry names the OpenVINO device to compile for: ``CPU``,
``GPU``, ``GPU.1``, ``NPU``, or a virtual device such as ``AUTO:GPU,CPU``. ONNX Runtime's
``CPUExecutionProvider`` reads as ``CPU``, so a config written for onnxruntime works unchanged;
any other ONNX Runtime provider is refused, since it names no OpenVINO device. An empty list
means ``CPU``. Later entries are not used: name ``AUTO:GPU,CPU`` for a fallback.

Compilation, for each device that supports the setting: performance hint LATENCY (one stream,
every thread on each call), ``intra_op_threads`` as INFERENCE_NUM_THREADS when above 0, fp32
precision (on CPUs with bf16 units OpenVINO would otherwise compute in bf16, and the outputs
would drift from ONNX Runtime's), and no CPU pinning: pinned, every process binds its threads to
the same first cores, so the server's workers and process instances would share those cores
while the others idle; unpinned, the OS spreads them. ``inter_op_threads`` and
``graph_optimization_level`` are ONNX Runtime settings; OpenVINO always optimises the graph.

Shapes are the model's: a symbolic dimension stays free (a symbolic first dimension takes any
batch size), a fixed one stays fixed, so the signature is the one ONNX Runtime reports.

Limits of OpenVINO's ONNX reader, reported at load: it has the standard ONNX operators but few
of the ``ai.onnx.ml`` ones that scikit-learn converters write (LinearClassifier,
TreeEnsembleClassifier, ArrayFeatureExtractor, ...); and a string output that is a string input
passed through unchanged makes OpenVINO free the same memory twice when the model is released,
which aborts the process, so such a model is refused.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.protocol import TensorSpec, numpy_dtype

#: OpenVINO element type names -> V2 datatypes.
OV_TYPES = {
    "boolean": "BOOL",
    "u8": "UINT8",
    "u16": "UINT16",
    "u32": "UINT32",
    "u64": "UINT64",
    "i8": "INT8",
    "i16": "INT16",
    "i32": "INT32",
    "i64": "INT64",
    "f16": "FP16",
    "f32": "FP32",
    "f64": "FP64",
    "string": "BYTES",
}

#: Devices that run a model on other devices (``AUTO:GPU,CPU``): OpenVINO checks what they name.
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")

_UNCONVERTED = re.compile(
    r"^-- (?:No conversion rule found for operations|Conversion is failed for): (.+)$", re.M
)
_SOURCE_LINE = re.compile(r"\.(?:cpp|hpp|h):\d+:$")  # "Exception from src/.../core.cpp:84:"


def choose_device(requested: tuple[str, ...], available: list[str], source: str) -> str:
    """The OpenVINO device to compile for: the first of ``requested``, else CPU.

    ``CPUExecutionProvider`` means CPU; another ONNX Runtime provider name, or a device missing
    from ``available`` (OpenVINO's ``Core.available_devices``), is a RepositoryError.
    """
    if not requested:
        return "CPU"
    device = "CPU" if requested[0] == "CPUExecutionProvider" else requested[0]
    choices = ", ".join([*available, *VIRTUAL_DEVICES])
    if device.endswith("ExecutionProvider"):
        raise RepositoryError(
            source,
            f"execution provider {device} is an ONNX Runtime provider; backend openvino takes "
            f"an OpenVINO device instead: {choices}",
        )
    base = device.split(":", 1)[0]
    if (
        base in VIRTUAL_DEVICES
        or base in available
        or any(d.startswith(f"{base}.") for d in available)
    ):
        return device
    raise RepositoryError(
        source, f"OpenVINO device {device} is not available here; available: {choices}"
    )


def compile_properties(options: RuntimeOptions, supported: set[str]) -> dict[str, Any]:
    """The OpenVINO properties to compile with, keeping those the device ``supported``."""
    wanted: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
    }
    if options.intra_op_threads > 0:
        wanted["INFERENCE_NUM_THREADS"] = options.intra_op_threads
    return {key: value for key, value in wanted.items() if key in supported}


class OpenVinoRuntime:
    """One model compiled by OpenVINO, with one infer request: not thread safe, so the server
    gives each instance its own runtime. ``infer`` releases the GIL while it computes."""

    platform = "openvino"
    thread_safe = False

    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RepositoryError(
                str(path), "backend openvino needs the openvino package: pip install openvino"
            ) from None
        source = str(path)
        core = ov.Core()
        device = choose_device(options.execution_providers, core.available_devices, source)
        try:
            model = core.read_model(source)
        except Exception as exc:  # OpenVINO raises RuntimeError, whatever the failure
            raise RepositoryError(source, _read_problem(exc)) from None
        self.inputs = tuple(_spec(port, source) for port in model.inputs)
        self.outputs = tuple(_spec(port, source) for port in model.outputs)
        _refuse_string_pass_through(model, source)
        try:
            supported = set(core.get_property(device.split(":", 1)[0], "SUPPORTED_PROPERTIES"))
            compiled = core.compile_model(model, device, compile_properties(options, supported))
            request = compiled.create_infer_request()
        except Exception as exc:
            raise RepositoryError(
                source, f"OpenVINO cannot compile the model for {device}: {_message(exc)}"
            ) from None
        self.device = device
        self._tensor = ov.Tensor  # the package is imported here only, to stay optional
        self._compiled: Any = compiled
        self._request: Any = request
        self._inputs = {spec.name: (spec, compiled.input(spec.name)) for spec in self.inputs}
        self._outputs = {spec.name: (spec, compiled.output(spec.name)) for spec in self.outputs}
        self._lock = threading.Lock()

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        # OpenVINO converts a wrong dtype silently and keeps the last call's tensor for a
        # missing input; ONNX Runtime refuses both, and so does this runtime
        feed = []
        for name, arr in inputs.items():
            if name not in self._inputs:
                raise ValueError(f"unknown input '{name}'; the model takes {_names(self._inputs)}")
            spec, port = self._inputs[name]
            arr = _checked(spec, arr)
            # lent to OpenVINO without a copy where it can take it: infer returns before the
            # caller can touch the array again (read-only ones, as binary requests decode, and
            # strings are copied)
            shared = arr.dtype.kind != "S" and arr.flags.c_contiguous and arr.flags.writeable
            feed.append((port, self._tensor(arr, shared_memory=shared)))
        missing = [name for name in self._inputs if name not in inputs]
        if missing:
            raise ValueError(
                f"input {', '.join(missing)} missing; the model takes {_names(self._inputs)}"
            )
        wanted = []
        for name in outputs:
            if name not in self._outputs:
                raise ValueError(f"unknown output '{name}'; the model has {_names(self._outputs)}")
            wanted.append(self._outputs[name])
        # set_tensor, infer, get_tensor: about half the overhead of infer(dict) per call
        with self._lock:  # one infer request: one call at a time
            request = self._request
            if request is None:
                raise RuntimeError("the OpenVINO runtime is closed")
            for port, tensor in feed:
                request.set_tensor(port, tensor)
            request.infer()
            return {spec.name: _copied(spec, request.get_tensor(port)) for spec, port in wanted}

    def close(self) -> None:
        with self._lock:
            self._request = None
            self._compiled = None


def _spec(port: Any, source: str) -> TensorSpec:
    name = port.get_any_name()
    type_name = port.get_element_type().get_type_name()
    datatype = OV_TYPES.get(type_name)
    if datatype is None:
        raise RepositoryError(
            source,
            f"tensor '{name}' has type {type_name}, which the V2 protocol cannot carry; "
            f"expected one of {', '.join(OV_TYPES)}",
        )
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return TensorSpec(name, datatype, ())
    return TensorSpec(name, datatype, tuple(d.get_length() if d.is_static else -1 for d in shape))


def _checked(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """The array as OpenVINO takes it, after the checks ONNX Runtime makes."""
    strings = spec.datatype == "BYTES"
    if strings and arr.dtype.kind not in ("O", "S", "U"):
        raise ValueError(f"input '{spec.name}' has dtype {arr.dtype}; expected strings")
    if not strings and arr.dtype != numpy_dtype(spec.datatype):
        raise ValueError(
            f"input '{spec.name}' has dtype {arr.dtype}; expected {numpy_dtype(spec.datatype)}"
        )
    if len(arr.shape) != len(spec.shape) or any(
        d >= 0 and d != n for d, n in zip(spec.shape, arr.shape, strict=True)
    ):
        raise ValueError(
            f"input '{spec.name}' has shape {list(arr.shape)}; expected {list(spec.shape)} "
            "(-1 is a free dimension)"
        )
    return _to_bytes(arr) if strings else arr


def _to_bytes(arr: np.ndarray) -> np.ndarray:
    """OpenVINO wants a bytes (``S``) array for a string tensor; V2 BYTES arrive as objects."""
    flat = [v if isinstance(v, bytes) else str(v).encode() for v in arr.reshape(-1)]
    return np.array(flat, dtype=np.bytes_).reshape(arr.shape)


def _copied(spec: TensorSpec, tensor: Any) -> np.ndarray:
    """An output out of the request's memory, which the next call overwrites; strings as ONNX
    Runtime gives them (str objects)."""
    if spec.datatype == "BYTES":
        out: np.ndarray = tensor.str_data.astype(object)
        return out
    return np.array(tensor.data, copy=True)


def _names(specs: dict[str, Any]) -> str:
    return ", ".join(specs)


def _refuse_string_pass_through(model: Any, source: str) -> None:
    """A string output fed straight by a string input (through Identity nodes at most) aborts
    the process when the compiled model is released (OpenVINO frees those strings twice)."""
    for result in model.get_results():
        node = result.input_value(0).get_node()
        while node.get_type_name() == "Identity":
            node = node.input_value(0).get_node()
        port = result.output(0)
        if (
            node.get_type_name() == "Parameter"
            and port.get_element_type().get_type_name() == "string"
        ):
            raise RepositoryError(
                source,
                f"output '{port.get_any_name()}' is the string input "
                f"'{node.output(0).get_any_name()}' passed through unchanged, which OpenVINO "
                "cannot serve (it frees those strings twice and aborts the process); serve this "
                "model with backend onnxruntime",
            )


def _read_problem(exc: Exception) -> str:
    """What keeps OpenVINO from reading a model: the operators it lacks, when that is it."""
    operators = sorted(
        {op.strip() for ops in _UNCONVERTED.findall(str(exc)) for op in ops.split(",")}
    )
    if not operators:
        return f"OpenVINO cannot read the model: {_message(exc)}"
    hint = ""
    if any(op.startswith("ai.onnx.ml.") for op in operators):
        hint = " (ai.onnx.ml operators come from scikit-learn and other classic-ML converters)"
    return (
        f"OpenVINO cannot run the operators {', '.join(operators)}{hint}; serve this model with "
        "backend onnxruntime, which runs them"
    )


def _message(exc: Exception) -> str:
    """OpenVINO's message without the C++ source locations it stacks up in front."""
    lines = [line.strip() for line in str(exc).splitlines()]
    return " ".join(line for line in lines if line and not _SOURCE_LINE.search(line))
