"""ONNX Runtime backend: session options, execution providers, metadata from the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.protocol import TensorSpec
from mserve.runtime.base import RunCancelled, RunHandle

#: ONNX Runtime's type strings -> V2 datatypes.
ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

#: Providers chosen automatically when present, best first. TensorRT is only used when named,
#: since it compiles engines at load (minutes) and needs a writable cache to be worth it.
AUTO_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build offers."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers(requested: tuple[str, ...], available: list[str], source: str) -> list[str]:
    """The providers to use: those requested (each must be available), else the best present."""
    if not requested:
        return [p for p in AUTO_PROVIDERS if p in available] or available[-1:]
    missing = [p for p in requested if p not in available]
    if missing:
        raise RepositoryError(
            source,
            f"execution provider {', '.join(missing)} is not available in this ONNX Runtime; "
            f"available: {', '.join(available)}",
        )
    return list(requested)


class OnnxRuntime:
    """One ONNX Runtime inference session. Thread safe: ``run`` releases the GIL.

    Cancellable: each call of :meth:`infer_cancellable` runs with a ``RunOptions`` of its own,
    whose ``terminate`` flag the stopping thread sets; ONNX Runtime checks it between kernels
    (inside a ``Loop``'s iterations too) and the call returns with an error.
    """

    platform = "onnxruntime_onnx"
    thread_safe = True

    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        so.graph_optimization_level = ort.GraphOptimizationLevel(
            _LEVELS[options.graph_optimization_level]
        )
        so.log_severity_level = 3
        providers = choose_providers(options.execution_providers, available_providers(), str(path))
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RepositoryError(str(path), f"ONNX Runtime cannot load the model: {exc}") from None
        self.providers = tuple(self._session.get_providers())
        self.inputs = tuple(_spec(a, path) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a, path) for a in self._session.get_outputs())
        self._string_inputs = {s.name for s in self.inputs if s.datatype == "BYTES"}
        self._run_options = ort.RunOptions()

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        feed = self._feed(inputs) if self._string_inputs else inputs
        results = self._session.run(outputs, feed, self._run_options)
        return dict(zip(outputs, results, strict=True))

    def infer_cancellable(
        self, inputs: dict[str, np.ndarray], outputs: list[str], run: RunHandle
    ) -> dict[str, np.ndarray]:
        """Like :meth:`infer`; ``run``'s stop sets ``terminate`` on this call's RunOptions."""
        feed = self._feed(inputs) if self._string_inputs else inputs
        options = type(self._run_options)()  # one per call: terminate stops only this run

        def stop() -> str:
            options.terminate = True
            return "the run was cancelled"

        run.begin(stop)
        try:
            results = self._session.run(outputs, feed, options)
        except Exception:
            if run.cancelled:
                raise RunCancelled("the run was cancelled (RunOptions.terminate)") from None
            raise
        return dict(zip(outputs, results, strict=True))

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        feed: dict[str, Any] = dict(inputs)
        for name in self._string_inputs:
            feed[name] = _to_str(inputs[name])
        return feed

    def close(self) -> None:
        # idempotent: a thread-safe runtime is shared by all instances, and each closes it
        self._session = None


def _spec(arg: Any, path: Path) -> TensorSpec:
    datatype = ORT_TYPES.get(arg.type)
    if datatype is None:
        raise RepositoryError(
            str(path),
            f"tensor '{arg.name}' has type {arg.type}, which the V2 protocol cannot carry; "
            f"expected one of {', '.join(ORT_TYPES)}",
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _to_str(arr: np.ndarray) -> np.ndarray:
    """ONNX Runtime wants str elements for string tensors; V2 BYTES arrive as bytes."""
    out = np.empty(arr.shape, dtype=object)
    flat_in = arr.reshape(-1)
    flat_out = out.reshape(-1)
    for i, v in enumerate(flat_in):
        flat_out[i] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return out
