"""A config and request bodies for ``onnx_factory.counting_loop(1)``, the real ONNX model whose
compute time the request chooses (OUTPUT = X + max(N), a Loop of max(N) iterations), for tests
that need an instance busy: deadlines, draining at shutdown."""

from __future__ import annotations

import json
from typing import Any

from mserve.config import DynamicBatching, ModelConfig, RuntimeOptions
from mserve.protocol import TensorSpec

#: the loop's iterations per second of computing, roughly (a few microseconds each)
ITERATIONS_PER_S = 200_000

SLOW = ModelConfig(
    name="slow",
    inputs=(TensorSpec("X", "FP32", (-1, 1)), TensorSpec("N", "INT64", (-1, 1))),
    outputs=(TensorSpec("OUTPUT", "FP32", (-1, 1)),),
    max_batch_size=4,
    dynamic_batching=DynamicBatching(),
    # warm-up runs no iteration; inline on the event loop it would block every other request
    runtime=RuntimeOptions(execution="thread"),
)


def iterations(seconds: float) -> int:
    return int(seconds * ITERATIONS_PER_S)


def slow_body(x: float, seconds: float) -> str:
    """One row: X = x, computing for about ``seconds`` (the answer is x + iterations)."""
    doc: dict[str, Any] = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [x]},
            {"name": "N", "datatype": "INT64", "shape": [1, 1], "data": [iterations(seconds)]},
        ]
    }
    return json.dumps(doc)
