"""A runtime in a child process: same answers, the model's errors, a child that dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.runtime.process import InstanceProcessError, ProcessRuntime

TABLE = np.arange(12, dtype=np.float32).reshape(4, 3)


@pytest.fixture
def lookup_path(tmp_path: Path, onnx_factory: Any) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_factory.lookup(TABLE))
    return path


def test_answers_and_signature_come_from_the_child(lookup_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", lookup_path, RuntimeOptions(intra_op_threads=1))
    try:
        assert rt.pid is not None
        assert rt.pid != os.getpid()
        assert [(s.name, s.datatype) for s in rt.inputs] == [("INDEX", "INT64")]
        out = rt.infer({"INDEX": np.array([[2], [0]], np.int64)}, ["OUTPUT"])
        np.testing.assert_array_equal(out["OUTPUT"], TABLE[[2, 0]][:, None, :])
    finally:
        rt.close()
    assert rt.pid is None


def test_a_failing_call_raises_and_the_child_goes_on(lookup_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", lookup_path, RuntimeOptions(intra_op_threads=1))
    try:
        with pytest.raises(RuntimeError, match="out of") as info:
            rt.infer({"INDEX": np.array([[9]], np.int64)}, ["OUTPUT"])
        assert not isinstance(info.value, InstanceProcessError)
        out = rt.infer({"INDEX": np.array([[1]], np.int64)}, ["OUTPUT"])
        np.testing.assert_array_equal(out["OUTPUT"], TABLE[[1]][:, None, :])
        assert rt.restarts == 0
    finally:
        rt.close()


def test_a_dead_child_fails_one_call_and_the_next_starts_another(lookup_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", lookup_path, RuntimeOptions(intra_op_threads=1))
    try:
        first = rt.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # our own child: a crash inside the model
        with pytest.raises(InstanceProcessError, match=rf"pid {first}\) exited .*SIGKILL"):
            rt.infer({"INDEX": np.array([[1]], np.int64)}, ["OUTPUT"])
        out = rt.infer({"INDEX": np.array([[3]], np.int64)}, ["OUTPUT"])
        np.testing.assert_array_equal(out["OUTPUT"], TABLE[[3]][:, None, :])
        assert rt.restarts == 1
        assert rt.pid not in (None, first)
    finally:
        rt.close()


def test_a_model_that_cannot_open_is_refused_with_the_childs_reason(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(RepositoryError, match=str(path)):
        ProcessRuntime("onnxruntime", path, RuntimeOptions())
