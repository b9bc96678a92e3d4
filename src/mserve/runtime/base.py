"""The interface every execution backend implements: load, describe, infer a batch."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from mserve.protocol import TensorSpec


class Runtime(Protocol):
    """A loaded model that computes outputs from inputs.

    ``infer`` may be called from several threads at once when the runtime says it is
    ``thread_safe``; otherwise the server gives each instance its own runtime.
    """

    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    thread_safe: bool

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Compute the named outputs; every declared input is present with a matching dtype."""
        ...

    def close(self) -> None:
        """Release what the runtime holds (sessions, memory); calling it again does nothing."""
        ...


def warmup_inputs(specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Zero-filled inputs for a warm-up run: free dimensions become 1."""
    from mserve.protocol import numpy_dtype

    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            arr = np.empty(shape, dtype=object)
            arr.fill(b"")
        else:
            arr = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
        feed[spec.name] = arr
    return feed
