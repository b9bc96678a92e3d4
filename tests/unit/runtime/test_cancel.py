"""Stopping a running call from another thread: the handle that decides between a result and a
cancellation, ONNX Runtime's terminate flag inside a Loop, and an instance process killed and
restarted; a child that crashes mid-call."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.config import RuntimeOptions
from mserve.runtime.base import Cancellable, RunCancelled, RunHandle
from mserve.runtime.onnx import OnnxRuntime
from mserve.runtime.process import InstanceProcessError, ProcessRuntime

HANG = 10**9  # Loop iterations: hours
BOUND_S = 60.0  # generous: proves only that nothing hangs


class Started(RunHandle):
    """A handle that tells the test when the call began computing."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def started(self) -> None:
        self.event.set()


def feed(trips: int, x: float = 1.0) -> dict[str, np.ndarray]:
    return {"X": np.full((1, 4), x, np.float32), "N": np.array([[trips]], np.int64)}


def cancel_when_started(run: Started) -> threading.Thread:
    def cancel() -> None:
        assert run.event.wait(BOUND_S)
        time.sleep(0.2)  # let it compute a while
        assert run.cancel()

    t = threading.Thread(target=cancel, daemon=True)
    t.start()
    return t


def bounded(fn: Callable[[], Any]) -> Any:
    start = time.monotonic()
    result = fn()
    assert time.monotonic() - start < BOUND_S
    return result


@pytest.fixture
def loop_path(tmp_path: Path, onnx_factory: Any) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_factory.counting_loop())
    return path


def test_a_handle_ends_once_by_result_or_by_cancel() -> None:
    stopped: list[str] = []

    def stop() -> str:
        stopped.append("stop")
        return "stopped"

    finished = RunHandle()
    finished.begin(stop)
    assert finished.finish()
    assert not finished.cancel()
    assert not finished.cancelled
    assert stopped == []

    cancelled = RunHandle()
    cancelled.begin(stop)
    assert cancelled.cancel()
    assert not cancelled.cancel()
    assert not cancelled.finish()
    assert cancelled.cancelled
    assert cancelled.outcome == "stopped"
    assert stopped == ["stop"]

    early = RunHandle()  # cancelled before it began: stopped as it begins
    assert early.cancel()
    early.begin(stop)
    assert early.outcome == "stopped"
    assert stopped == ["stop", "stop"]

    unstoppable = RunHandle()
    unstoppable.begin(None)
    assert unstoppable.cancel()
    assert unstoppable.outcome == ""


def test_onnx_runtime_terminates_a_loop_and_runs_the_next_call(loop_path: Path) -> None:
    rt = OnnxRuntime(loop_path, RuntimeOptions(intra_op_threads=1))
    assert isinstance(rt, Cancellable)
    try:
        run = Started()
        canceller = cancel_when_started(run)
        with pytest.raises(RunCancelled, match="terminate"):
            bounded(lambda: rt.infer_cancellable(feed(HANG), ["OUTPUT"], run))
        canceller.join(BOUND_S)
        assert run.outcome == "the run was cancelled"
        done = RunHandle()
        out = rt.infer_cancellable(feed(3), ["OUTPUT"], done)
        assert done.finish()
        np.testing.assert_array_equal(out["OUTPUT"], np.full((1, 4), 4.0, np.float32))
        assert rt.infer(feed(2), ["OUTPUT"])["OUTPUT"].tolist() == [[3.0] * 4]
    finally:
        rt.close()


def test_onnx_runtime_errors_of_the_model_are_not_cancellations(
    tmp_path: Path, onnx_factory: Any
) -> None:
    path = tmp_path / "lookup.onnx"
    path.write_bytes(onnx_factory.lookup(np.zeros((2, 3), np.float32)))
    rt = OnnxRuntime(path, RuntimeOptions())
    try:
        with pytest.raises(Exception, match="out of") as info:
            rt.infer_cancellable({"INDEX": np.array([[7]], np.int64)}, ["OUTPUT"], RunHandle())
        assert not isinstance(info.value, RunCancelled)
    finally:
        rt.close()


def test_a_stopped_process_call_kills_the_child_and_a_new_one_serves(loop_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", loop_path, RuntimeOptions(intra_op_threads=1))
    assert isinstance(rt, Cancellable)
    try:
        first = rt.pid
        assert first is not None
        run = Started()
        canceller = cancel_when_started(run)
        with pytest.raises(RunCancelled, match=rf"pid {first}\) was killed"):
            bounded(lambda: rt.infer_cancellable(feed(HANG), ["OUTPUT"], run))
        canceller.join(BOUND_S)
        assert run.outcome == (
            f"the instance process (pid {first}) was killed and a new one is starting"
        )
        out = bounded(lambda: rt.infer(feed(5), ["OUTPUT"]))
        np.testing.assert_array_equal(out["OUTPUT"], np.full((1, 4), 6.0, np.float32))
        assert rt.pid not in (None, first)
        assert rt.restarts == 1
        assert not Path(f"/proc/{first}").exists()  # reaped, not a zombie
    finally:
        rt.close()


def test_a_child_that_crashes_mid_call_fails_that_call_and_is_restarted(loop_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", loop_path, RuntimeOptions(intra_op_threads=1))
    try:
        first = rt.pid
        assert first is not None
        errors: list[BaseException] = []

        def hang() -> None:
            try:
                rt.infer(feed(HANG), ["OUTPUT"])
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=hang, daemon=True)
        caller.start()
        time.sleep(0.3)  # the call is in the child (or about to be: it fails the same way)
        assert caller.is_alive()
        os.kill(first, signal.SIGKILL)  # our own child: a segfault in the model, say
        caller.join(BOUND_S)
        assert not caller.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], InstanceProcessError)
        assert str(errors[0]) == (
            f"the instance process (pid {first}) exited during the call "
            "(killed by SIGKILL (signal 9)); a new one is starting"
        )
        out = bounded(lambda: rt.infer(feed(1, x=2.0), ["OUTPUT"]))
        np.testing.assert_array_equal(out["OUTPUT"], np.full((1, 4), 3.0, np.float32))
        assert rt.pid not in (None, first)
    finally:
        rt.close()


def test_a_closed_process_runtime_starts_no_child(loop_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", loop_path, RuntimeOptions(intra_op_threads=1))
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        rt.infer(feed(1), ["OUTPUT"])
    assert rt.pid is None
