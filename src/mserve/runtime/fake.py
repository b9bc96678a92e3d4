"""A deterministic in-memory runtime for tests and examples: no model file needed."""

from __future__ import annotations

import threading
import time

import numpy as np

from mserve.protocol import TensorSpec


class FakeRuntime:
    """Computes ``OUTPUT = INPUT * scale`` over one FP32 input, optionally slowly or failing.

    ``fail_when`` makes ``infer`` raise when any input element equals that value, so a test can
    make one request fail while the others succeed.
    """

    platform = "fake"
    thread_safe = True

    def __init__(
        self,
        scale: float = 2.0,
        shape: tuple[int, ...] = (-1, 4),
        delay_s: float = 0.0,
        fail_when: float | None = None,
    ) -> None:
        self.scale = scale
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.inputs = (TensorSpec("INPUT", "FP32", shape),)
        self.outputs = (TensorSpec("OUTPUT", "FP32", shape),)
        self.calls = 0
        self.closed = False
        self._lock = threading.Lock()

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls += 1
        x = inputs["INPUT"]
        if self.fail_when is not None and bool(np.any(x == self.fail_when)):
            raise RuntimeError(f"fake failure on value {self.fail_when}")
        if self.delay_s:
            time.sleep(self.delay_s)
        return {"OUTPUT": (x * np.float32(self.scale)).astype(np.float32)}

    def close(self) -> None:
        self.closed = True
