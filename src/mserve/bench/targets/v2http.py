"""Open Inference Protocol V2 over HTTP: JSON tensors or the binary tensor data extension.

Works against any V2 server (mserve, Triton, KServe, MLServer), over HTTP or HTTPS; reads model
metadata to build inputs and, where the server has the statistics extension, its per-phase
durations. The user's headers (``-H``) go with every request, these reads included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mserve.bench.connection import build_request, connector
from mserve.bench.fetch import Endpoint, fetch
from mserve.bench.headers import merged, refused
from mserve.bench.targets.base import Check, Prepared, ServerStats, StatusCheck
from mserve.bench.tls import ClientTls, for_scheme
from mserve.bench.workload import InputSpec, Sample, load_samples, random_samples
from mserve.errors import InvalidRequest, ModelNotFound, Unavailable
from mserve.protocol import json_values, raw_bytes


class V2HttpTarget:
    """A model behind a V2 REST endpoint."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        version: str | None = None,
        binary: bool = False,
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
        self.binary = binary
        self.protocol = "v2-binary" if binary else "v2-json"
        self.batch_size = batch_size
        self.shapes = shapes or {}
        self.seed = seed
        self.input_data = input_data
        self.distinct = distinct
        self.expect = expect
        self.tolerance = tolerance
        self.metadata: dict[str, Any] = {}

    @property
    def model_path(self) -> str:
        path = f"/v2/models/{self.model}"
        return path + (f"/versions/{self.version}" if self.version else "")

    async def prepare(self) -> Prepared:
        status, body = await self._fetch(self.model_path)
        if status == 404:
            raise ModelNotFound(self.model, self.version)
        if status in (401, 403):
            raise refused(status, body, f"GET {self.endpoint}{self.model_path}")
        if status != 200:
            raise Unavailable(
                f"GET {self.endpoint}{self.model_path} answered {status}: {body[:200]!r}"
            )
        self.metadata = orjson.loads(body)
        specs = [
            InputSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in self.metadata["inputs"]
        ]
        if self.input_data is not None:
            samples = load_samples(self.input_data, specs)
        else:
            samples = random_samples(specs, self.batch_size, self.shapes, self.seed, self.distinct)
        path = self.model_path + "/infer"
        requests = [self.encode_request(path, s, specs) for s in samples]
        first = next(iter(samples[0].values()))
        rows = int(first.shape[0]) if first.ndim else 1
        check, keep = self._check()
        return Prepared(
            host=self.endpoint.host,
            port=self.endpoint.port,
            requests=requests,
            check=check,
            keep_body=keep,
            connect=connector(self.tls),
            rows_per_request=rows,
            description={
                "protocol": self.protocol,
                "url": str(self.endpoint),
                "model": self.model,
                "version": self.version,
                "inputs": {k: [list(v.shape), specs_dt(specs, k)] for k, v in samples[0].items()},
                "distinct_requests": len(requests),
                "request_bytes": [len(r) for r in requests[:1]],
                "platform": self.metadata.get("platform"),
            },
        )

    def encode_request(self, path: str, sample: Sample, specs: list[InputSpec]) -> bytes:
        """The complete wire bytes of one infer request carrying ``sample``."""
        dtypes = {s.name: s.datatype for s in specs}
        outputs = [
            {"name": o["name"], "parameters": {"binary_data": self.binary}}
            for o in self.metadata.get("outputs", [])
        ]
        host = self.endpoint.authority
        if not self.binary:
            doc = {
                "inputs": [
                    {
                        "name": name,
                        "shape": list(arr.shape),
                        "datatype": dtypes[name],
                        "data": json_values(dtypes[name], arr),
                    }
                    for name, arr in sample.items()
                ],
                "outputs": outputs,
            }
            body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
            headers = merged({"Content-Type": "application/json"}, self.headers)
            return build_request("POST", host, path, body, headers)
        chunks = [raw_bytes(dtypes[name], arr) for name, arr in sample.items()]
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": name,
                        "shape": list(arr.shape),
                        "datatype": dtypes[name],
                        "parameters": {"binary_data_size": len(chunk)},
                    }
                    for (name, arr), chunk in zip(sample.items(), chunks, strict=True)
                ],
                "outputs": outputs,
            }
        )
        return build_request(
            "POST",
            host,
            path,
            header + b"".join(chunks),
            merged(
                {
                    "Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(len(header)),
                },
                self.headers,
            ),
        )

    def _check(self) -> tuple[Check, bool]:
        if self.expect is None:
            return StatusCheck(200), False
        if self.binary:
            raise InvalidRequest("--expect compares JSON outputs; use it with --protocol v2-json")
        return OutputCheck(_load_expected(self.expect), self.tolerance), True

    async def _fetch(self, path: str) -> tuple[int, bytes]:
        return await fetch(self.endpoint, "GET", path, headers=self.headers, tls=self.tls)

    async def server_stats(self) -> ServerStats | None:
        try:
            status, body = await self._fetch(self.model_path + "/stats")
        except Unavailable:
            return None
        if status != 200:
            return None
        try:
            rows = orjson.loads(body)["model_stats"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return _sum_stats(rows)


class OutputCheck:
    """Right when the status is 200 and each expected output matches (JSON responses)."""

    def __init__(self, expected: dict[str, np.ndarray], tolerance: float) -> None:
        self.expected = expected
        self.tolerance = tolerance

    def __call__(self, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"http_{status}"
        try:
            outs = {o["name"]: o["data"] for o in orjson.loads(body)["outputs"]}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "bad_response"
        tol = self.tolerance
        for name, want in self.expected.items():
            got = outs.get(name)
            if got is None or len(got) != want.size:
                return "wrong_output"
            if want.dtype.kind in "fc":
                if not np.allclose(np.asarray(got, dtype=np.float64), want, atol=tol, rtol=tol):
                    return "wrong_output"
            elif not np.array_equal(np.asarray(got), want):
                return "wrong_output"
        return None


def specs_dt(specs: list[InputSpec], name: str) -> str:
    return next(s.datatype for s in specs if s.name == name)


def _load_expected(path: Path) -> dict[str, np.ndarray]:
    """``--expect FILE``: a JSON object {output name: flat or nested expected values}."""
    if not path.is_file():
        raise InvalidRequest(f"--expect {path}: no such file")
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"--expect {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not doc:
        raise InvalidRequest(f"--expect {path}: expected a JSON object {{output: values}}")
    return {k: np.ravel(np.asarray(v)) for k, v in doc.items()}


def _sum_stats(rows: list[dict[str, Any]]) -> ServerStats:
    def total(key: str, field: str = "ns") -> int:
        return sum(int(r["inference_stats"][key][field]) for r in rows)

    return ServerStats(
        requests=total("success", "count"),
        inferences=sum(int(r.get("inference_count", 0)) for r in rows),
        executions=sum(int(r.get("execution_count", 0)) for r in rows),
        success_ns=total("success"),
        queue_ns=total("queue"),
        compute_input_ns=total("compute_input"),
        compute_infer_ns=total("compute_infer"),
        compute_output_ns=total("compute_output"),
        failures=total("fail", "count"),
    )
