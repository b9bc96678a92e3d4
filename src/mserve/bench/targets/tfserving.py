"""TF Serving's REST API: row-format ``:predict`` requests built from the model's metadata.

Works against TensorFlow Serving itself and any server that speaks its REST API (mserve, KServe's
V1 protocol for the predict part): reads ``GET /v1/models/NAME/metadata`` for the inputs of the
``serving_default`` signature, sends ``{"instances": [...]}`` and counts a 200 whose body holds
``predictions`` as right. TF Serving has no per-model statistics, so ``server_stats`` is None.
Over HTTP or HTTPS; the user's headers (``-H``) go with every request, the metadata read included.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mserve.bench.connection import build_request, connector
from mserve.bench.fetch import Endpoint, fetch
from mserve.bench.headers import merged, refused
from mserve.bench.targets.base import Prepared, ServerStats
from mserve.bench.tls import ClientTls, for_scheme
from mserve.bench.workload import InputSpec, Sample, load_samples, random_samples
from mserve.errors import InvalidRequest, ModelNotFound, Unavailable
from mserve.protocol import TF_DATATYPES

SIGNATURE = "serving_default"

#: TF Serving's DataType enum name -> V2 datatype (the inputs mserve can generate).
V2_TYPES = {tf: v2 for v2, tf in TF_DATATYPES.items()}


class TfServingTarget:
    """A model behind TF Serving's REST API."""

    protocol = "tfserving"

    def __init__(
        self,
        url: str,
        *,
        model: str,
        version: str | None = None,
        batch_size: int = 1,
        shapes: dict[str, tuple[int, ...]] | None = None,
        seed: int = 0,
        input_data: Path | None = None,
        distinct: int = 16,
        expect: Path | None = None,
        tolerance: float = 1e-4,
        headers: dict[str, str] | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        """``headers`` go with every request; ``tls`` verifies an https:// server."""
        self.endpoint = Endpoint.parse(url)
        self.tls = for_scheme(self.endpoint.scheme, tls, url)
        self.headers = headers or {}
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.shapes = shapes or {}
        self.seed = seed
        self.input_data = input_data
        self.distinct = distinct
        self.expect = expect
        self.tolerance = tolerance

    @property
    def model_path(self) -> str:
        path = f"/v1/models/{self.model}"
        return path + (f"/versions/{self.version}" if self.version else "")

    async def prepare(self) -> Prepared:
        if self.expect is not None:
            raise InvalidRequest("--expect compares V2 outputs; use it with --protocol v2-json")
        status, body = await fetch(
            self.endpoint, "GET", self.model_path + "/metadata", headers=self.headers, tls=self.tls
        )
        if status == 404:
            raise ModelNotFound(self.model, self.version)
        if status in (401, 403):
            raise refused(status, body, f"GET {self.endpoint}{self.model_path}/metadata")
        if status != 200:
            raise Unavailable(
                f"GET {self.endpoint}{self.model_path}/metadata answered {status}: {body[:200]!r}"
            )
        specs = input_specs(orjson.loads(body))
        if self.input_data is not None:
            samples = load_samples(self.input_data, specs)
        else:
            samples = random_samples(specs, self.batch_size, self.shapes, self.seed, self.distinct)
        path = self.model_path + ":predict"
        requests = [self.encode_request(path, s, specs) for s in samples]
        first = next(iter(samples[0].values()))
        return Prepared(
            host=self.endpoint.host,
            port=self.endpoint.port,
            requests=requests,
            check=PredictionsCheck(),
            keep_body=True,
            connect=connector(self.tls),
            rows_per_request=int(first.shape[0]) if first.ndim else 1,
            description={
                "protocol": self.protocol,
                "url": str(self.endpoint),
                "model": self.model,
                "version": self.version,
                "inputs": {
                    k: [list(v.shape), next(s.datatype for s in specs if s.name == k)]
                    for k, v in samples[0].items()
                },
                "distinct_requests": len(requests),
                "request_bytes": [len(r) for r in requests[:1]],
                "platform": None,
            },
        )

    def encode_request(self, path: str, sample: Sample, specs: list[InputSpec]) -> bytes:
        """The wire bytes of one row-format ``:predict`` request carrying ``sample`` (its
        arrays' first dimension is the rows; a single input's rows go unnamed)."""
        dtypes = {s.name: s.datatype for s in specs}
        columns = {name: _rows(dtypes[name], arr) for name, arr in sample.items()}
        if len(columns) == 1:
            instances: list[Any] = next(iter(columns.values()))
        else:
            n = len(next(iter(columns.values())))
            instances = [{name: rows[i] for name, rows in columns.items()} for i in range(n)]
        body = orjson.dumps({"instances": instances}, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = merged({"Content-Type": "application/json"}, self.headers)
        return build_request("POST", self.endpoint.authority, path, body, headers)

    async def server_stats(self) -> ServerStats | None:
        return None


def input_specs(metadata: dict[str, Any]) -> list[InputSpec]:
    """The inputs of the ``serving_default`` signature of a GetModelMetadataResponse."""
    try:
        signatures = metadata["metadata"]["signature_def"]["signature_def"]
        inputs = signatures[SIGNATURE]["inputs"]
    except (KeyError, TypeError):
        raise InvalidRequest(
            f"the model's metadata has no '{SIGNATURE}' signature with inputs; "
            "expected TF Serving's GetModelMetadataResponse"
        ) from None
    specs = []
    for name, tensor in inputs.items():
        dtype = tensor.get("dtype")
        if dtype not in V2_TYPES:
            raise InvalidRequest(
                f"input '{name}' has dtype {dtype}, which the bench cannot generate; "
                "supported: " + ", ".join(V2_TYPES)
            )
        shape = tensor.get("tensor_shape", {})
        if shape.get("unknown_rank"):
            raise InvalidRequest(
                f"input '{name}' has an unknown rank; the bench needs its shape to build inputs"
            )
        dims = tuple(int(d.get("size", -1)) for d in shape.get("dim", []))
        specs.append(InputSpec(name, V2_TYPES[dtype], dims))
    return specs


def _rows(datatype: str, arr: np.ndarray) -> list[Any]:
    """An array's rows as JSON values: numbers as numpy (orjson writes them), BYTES as
    ``{"b64": ...}``, FP16 widened to FP32."""
    if datatype == "BYTES":
        flat = [{"b64": base64.b64encode(bytes(v)).decode()} for v in arr.flat]
        nested: list[Any] = np.array(flat, dtype=object).reshape(arr.shape).tolist()
        return nested
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return list(np.ascontiguousarray(arr))


class PredictionsCheck:
    """Right when the status is 200 and the body holds ``predictions`` (picklable)."""

    def __call__(self, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"http_{status}"
        return None if b'"predictions"' in body else "bad_response"
