"""The model as every compared system's program serves it: the settings a launcher wrote, one
ONNX Runtime session, and the two request shapes the programs speak.

This file runs inside each system's own virtual environment, where mserve is not installed: it
needs only the standard library, NumPy and ONNX Runtime. The programs beside it import it as
``served_model`` (their launcher puts this folder on ``PYTHONPATH``).

- V2 JSON (``/v2/models/NAME/infer``, metadata at ``/v2/models/NAME``), for the hand-written
  baselines:
  ``{"inputs": [{"name", "shape", "datatype", "data"}]}`` in,
  ``{"model_name", "outputs": [{"name", "shape", "datatype", "data"}]}`` out.
- Plain JSON rows, for the systems without V2: ``{"instances": [ROW, ...]}`` in (a ROW is one
  row of the only input, or ``{input name: row}`` when the model has several),
  ``{"predictions": [{output name: row}, ...]}`` out, one prediction per instance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

#: the environment variable holding the path of the settings file a launcher wrote
SETTINGS_ENV = "MSERVE_COMPARE_MODEL"

_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_DATATYPES = {np.dtype(t): name for name, t in _DTYPES.items()}


@dataclass(frozen=True)
class Tensor:
    """One input or output: V2 name, datatype and shape (-1 for a free axis)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> Any:
        """The NumPy type of its elements."""
        return _DTYPES[self.datatype]


@dataclass(frozen=True)
class Settings:
    """What a launcher tells the program: the model, the ports, the batching."""

    name: str
    onnx_path: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int
    threads: int
    port: int
    grpc_port: int
    metrics_port: int
    batching: bool
    #: the longest a system's batcher may hold a request waiting for more
    max_delay_us: int
    workdir: str


def load_settings(path: str | None = None) -> Settings:
    """The settings at ``path``, else at the path ``$MSERVE_COMPARE_MODEL`` holds."""
    with open(path or os.environ[SETTINGS_ENV], encoding="utf-8") as f:
        raw = json.load(f)
    tensors = {
        key: tuple(Tensor(t["name"], t["datatype"], tuple(t["shape"])) for t in raw[key])
        for key in ("inputs", "outputs")
    }
    return Settings(**{**raw, **tensors})


def session(settings: Settings) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU with ``settings.threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        settings.onnx_path, sess_options=options, providers=["CPUExecutionProvider"]
    )


class ServedModel:
    """One session and the model's signature; safe to call from several threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        self._session = session(settings)
        self._outputs = [t.name for t in settings.outputs]
        self._dtypes = [t.dtype for t in settings.outputs]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs by name for one feed of inputs by name, of the declared types
        (under NumPy 1, ONNX Runtime built for NumPy 2 returns INT64 as ``longlong``, which
        is not ``int64`` there)."""
        results = self._session.run(self._outputs, feed)
        return {
            name: result if result.dtype.type is dtype else result.astype(dtype)
            for name, dtype, result in zip(self._outputs, self._dtypes, results, strict=True)
        }

    def metadata_v2(self) -> dict[str, Any]:
        """The V2 model metadata (what clients read to build their requests)."""
        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "inputs": [_tensor_metadata(t) for t in self.settings.inputs],
            "outputs": [_tensor_metadata(t) for t in self.settings.outputs],
        }

    def infer_v2(self, request: dict[str, Any]) -> dict[str, Any]:
        """A V2 JSON response to a V2 JSON request (KeyError or ValueError when malformed)."""
        feed = {
            x["name"]: np.asarray(x["data"], dtype=_DTYPES[x["datatype"]]).reshape(x["shape"])
            for x in request["inputs"]
        }
        response: dict[str, Any] = {"model_name": self.name, "outputs": v2_outputs(self.run(feed))}
        if "id" in request:
            response["id"] = request["id"]
        return response

    def predict_rows(self, instances: list[Any]) -> list[dict[str, Any]]:
        """One prediction per instance: all instances stacked into one run, split back. A model
        without a batch axis (max_batch_size 0) takes one instance: its whole input."""
        if self.settings.max_batch_size == 0:
            (instance,) = instances
            whole = self.run(self.feed(instance, batched=False))
            return [{name: array.tolist() for name, array in whole.items()}]
        return split(self.run(self.feed(instances, batched=True)), len(instances))

    def feed(self, value: Any, batched: bool) -> dict[str, np.ndarray]:
        """The model's inputs from one instance, or (``batched``) from a list of them."""
        if len(self.settings.inputs) == 1:
            (only,) = self.settings.inputs
            return {only.name: np.asarray(value, dtype=only.dtype)}
        return {
            t.name: np.asarray(
                [row[t.name] for row in value] if batched else value[t.name], dtype=t.dtype
            )
            for t in self.settings.inputs
        }


def _tensor_metadata(t: Tensor) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def v2_outputs(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Outputs as V2 JSON tensors."""
    return [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": _DATATYPES[array.dtype],
            "data": array.reshape(-1).tolist(),
        }
        for name, array in outputs.items()
    ]


def split(outputs: dict[str, np.ndarray], rows: int) -> list[dict[str, Any]]:
    """Batched outputs as one ``{output name: row}`` per row."""
    lists = {name: array.tolist() for name, array in outputs.items()}
    return [{name: values[i] for name, values in lists.items()} for i in range(rows)]
