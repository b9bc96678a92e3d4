"""The clients a team already has, each sending the whole test set to ``mserve serve`` in
batches of rows: a TF Serving REST client (plain HTTP, the row and the columnar format) and
tritonclient (its http and grpc modules). Each returns the labels and class probabilities the
server answered, row for row, to be compared with the original model's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH = 32  # rows per request; below the converted models' max_batch_size (64)
LABEL, PROBABILITIES = "label", "probabilities"  # the outputs `mserve convert` gives classifiers


@dataclass(frozen=True)
class Endpoints:
    """Where one running ``mserve serve`` answers."""

    host: str
    http_port: int
    grpc_port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


@dataclass(frozen=True)
class Answers:
    """What the server answered for every row, and in how many requests."""

    labels: np.ndarray
    probabilities: np.ndarray
    requests: int


def batches(x: np.ndarray, size: int = BATCH) -> Iterator[np.ndarray]:
    """``x`` in consecutive chunks of at most ``size`` rows."""
    for start in range(0, len(x), size):
        yield x[start : start + size]


def _post_json(url: str, body: dict[str, Any]) -> Any:
    """POST a JSON body; the decoded answer, or an error that carries the server's message."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        message = exc.read().decode(errors="replace")
        raise RuntimeError(f"POST {url}: HTTP {exc.code}: {message}") from None


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> Answers:
    return Answers(
        labels=np.concatenate([p[0] for p in parts]).astype(np.int64),
        probabilities=np.concatenate([p[1] for p in parts]).astype(np.float32),
        requests=len(parts),
    )


def tfserving_rows(at: Endpoints, model: str, x: np.ndarray) -> Answers:
    """TF Serving's row format: ``{"instances": [row, ...]}`` answered by
    ``{"predictions": [{"label": ..., "probabilities": [...]}, ...]}``."""
    url = f"{at.http_url}/v1/models/{model}:predict"
    parts = []
    for chunk in batches(x):
        predictions = _post_json(url, {"instances": chunk.tolist()})["predictions"]
        parts.append(
            (
                np.array([p[LABEL] for p in predictions]),
                np.array([p[PROBABILITIES] for p in predictions]),
            )
        )
    return _joined(parts)


def tfserving_columns(at: Endpoints, model: str, x: np.ndarray) -> Answers:
    """TF Serving's columnar format: ``{"inputs": [[...], ...]}`` (the model's one input, taken
    whole) answered by ``{"outputs": {"label": [...], "probabilities": [[...], ...]}}``."""
    url = f"{at.http_url}/v1/models/{model}:predict"
    parts = []
    for chunk in batches(x):
        outputs = _post_json(url, {"inputs": chunk.tolist()})["outputs"]
        parts.append((np.array(outputs[LABEL]), np.array(outputs[PROBABILITIES])))
    return _joined(parts)


def triton_http(at: Endpoints, model: str, x: np.ndarray) -> Answers:
    """tritonclient.http, V2 over HTTP with binary tensors, as against Triton."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"{at.host}:{at.http_port}")
    try:
        parts = []
        for chunk in batches(x):
            tensor = httpclient.InferInput("input", list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk, binary_data=True)
            wanted = [httpclient.InferRequestedOutput(n) for n in (LABEL, PROBABILITIES)]
            result = client.infer(model, [tensor], outputs=wanted)
            parts.append((result.as_numpy(LABEL), result.as_numpy(PROBABILITIES)))
        return _joined(parts)
    finally:
        client.close()


def triton_grpc(at: Endpoints, model: str, x: np.ndarray) -> Answers:
    """tritonclient.grpc, V2 over gRPC (``mserve serve --grpc-port``), as against Triton."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{at.host}:{at.grpc_port}")
    try:
        parts = []
        for chunk in batches(x):
            tensor = grpcclient.InferInput("input", list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)
            wanted = [grpcclient.InferRequestedOutput(n) for n in (LABEL, PROBABILITIES)]
            result = client.infer(model, [tensor], outputs=wanted)
            parts.append((result.as_numpy(LABEL), result.as_numpy(PROBABILITIES)))
        return _joined(parts)
    finally:
        client.close()


#: every client, by the key the summary uses, with the name the README shows
CLIENTS: dict[str, tuple[str, Callable[[Endpoints, str, np.ndarray], Answers]]] = {
    "tfserving-rows": ("TF Serving REST, rows (`instances`)", tfserving_rows),
    "tfserving-columns": ("TF Serving REST, columns (`inputs`)", tfserving_columns),
    "triton-http": ("tritonclient.http (binary tensors)", triton_http),
    "triton-grpc": ("tritonclient.grpc", triton_grpc),
}
