"""Execution backends behind one small interface (see :mod:`mserve.runtime.base`)."""

from __future__ import annotations

from pathlib import Path

from mserve.config import BACKENDS, RuntimeOptions
from mserve.errors import RepositoryError
from mserve.runtime.base import Runtime


def open_runtime(backend: str, path: Path, options: RuntimeOptions) -> Runtime:
    """Load the model file at ``path`` with the named backend."""
    if backend == "onnxruntime":
        from mserve.runtime.onnx import OnnxRuntime

        return OnnxRuntime(path, options)
    if backend == "openvino":
        # the module imports openvino only when it opens a model: the package stays optional
        from mserve.runtime.openvino import OpenVinoRuntime

        return OpenVinoRuntime(path, options)
    raise RepositoryError(str(path), f"unknown backend '{backend}'; expected {', '.join(BACKENDS)}")


#: Backends whose ``infer`` lets other Python threads run while it computes: their instances
#: can be threads of the server; the others need a process each (``instance_kind: auto``).
RELEASES_GIL = {"onnxruntime": True, "openvino": True}


def releases_gil(backend: str) -> bool:
    """Whether the backend computes without holding the GIL."""
    return RELEASES_GIL.get(backend, False)


__all__ = ["Runtime", "open_runtime", "releases_gil"]
