"""Execution backends behind one small interface (see :mod:`mserve.runtime.base`)."""

from __future__ import annotations

from pathlib import Path

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.runtime.base import Runtime


def open_runtime(backend: str, path: Path, options: RuntimeOptions) -> Runtime:
    """Load the model file at ``path`` with the named backend."""
    if backend == "onnxruntime":
        from mserve.runtime.onnx import OnnxRuntime

        return OnnxRuntime(path, options)
    raise RepositoryError(str(path), f"unknown backend '{backend}'; expected onnxruntime")


__all__ = ["Runtime", "open_runtime"]
