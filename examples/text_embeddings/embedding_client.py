"""The two things the scenario asks a running server directly, over plain HTTP (V2 JSON): one
embedding, and the model's statistics (executions per batch size)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _call(url: str, body: Mapping[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def embed(base_url: str, model: str, inputs: Mapping[str, Sequence[Sequence[int]]]) -> np.ndarray:
    """POST one V2 infer request of INT64 [1, seq] tensors; the embedding it answers, [384]."""
    body = {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows), len(rows[0])],
                "datatype": "INT64",
                "data": [v for row in rows for v in row],
            }
            for name, rows in inputs.items()
        ]
    }
    answer = _call(f"{base_url}/v2/models/{model}/infer", body)
    output = answer["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])[0]


def batch_executions(base_url: str, model: str) -> dict[int, int]:
    """Model executions so far, per batch size (Triton's statistics extension)."""
    stats = _call(f"{base_url}/v2/models/{model}/stats")["model_stats"]
    counts: dict[int, int] = {}
    for version in stats:
        for entry in version.get("batch_stats", []):
            size = int(entry["batch_size"])
            counts[size] = counts.get(size, 0) + int(entry["compute_infer"]["count"])
    return counts


def executions_between(before: Mapping[int, int], after: Mapping[int, int]) -> dict[int, int]:
    """Executions per batch size that happened between two readings."""
    diff = {size: after[size] - before.get(size, 0) for size in after}
    return {size: n for size, n in sorted(diff.items()) if n > 0}
