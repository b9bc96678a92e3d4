"""The ONNX Runtime backend: signature from the model, string tensors, providers, closing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.protocol import TensorSpec
from mserve.runtime import open_runtime
from mserve.runtime.onnx import OnnxRuntime, choose_providers


def write(tmp_path: Path, model: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    return path


def test_signature_and_strings(tmp_path: Path, onnx_factory: Any) -> None:
    rt = OnnxRuntime(write(tmp_path, onnx_factory.identity("BYTES", (-1,))), RuntimeOptions())
    assert rt.inputs == (TensorSpec("INPUT", "BYTES", (-1,)),)
    assert rt.outputs == (TensorSpec("OUTPUT", "BYTES", (-1,)),)
    out = rt.infer({"INPUT": np.array([b"h\xc3\xa9", b"x"], dtype=object)}, ["OUTPUT"])
    assert out["OUTPUT"].tolist() == ["hé", "x"]
    rt.close()


def test_close_is_idempotent(tmp_path: Path, onnx_factory: Any) -> None:
    # a thread-safe runtime is shared by every instance of a model, and each instance closes it
    rt = open_runtime(
        "onnxruntime", write(tmp_path, onnx_factory.identity("FP32")), RuntimeOptions()
    )
    rt.close()
    rt.close()


def test_unknown_backend_and_unreadable_model(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="unknown backend 'tflite'; expected onnxruntime"):
        open_runtime("tflite", tmp_path / "model.onnx", RuntimeOptions())
    with pytest.raises(RepositoryError, match="ONNX Runtime cannot load the model"):
        OnnxRuntime(write(tmp_path, b"\x00junk"), RuntimeOptions())


def test_choose_providers() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers((), available, "m") == available
    assert choose_providers((), ["CPUExecutionProvider"], "m") == ["CPUExecutionProvider"]
    assert choose_providers(("CPUExecutionProvider",), available, "m") == ["CPUExecutionProvider"]
    with pytest.raises(RepositoryError) as info:
        choose_providers(("TensorrtExecutionProvider",), ["CPUExecutionProvider"], "m.onnx")
    assert str(info.value) == (
        "m.onnx: execution provider TensorrtExecutionProvider is not available in this ONNX "
        "Runtime; available: CPUExecutionProvider"
    )
