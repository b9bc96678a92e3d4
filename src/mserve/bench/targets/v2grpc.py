"""Open Inference Protocol V2 over gRPC: ``inference.GRPCInferenceService/ModelInfer``.

Works against any V2 gRPC server (mserve with ``--grpc-port``, Triton, KServe). Before a run,
ModelMetadata tells which inputs to build. Each distinct ModelInferRequest is serialized and
framed once, with its tensors in ``raw_input_contents``. They are sent over the bench's own
HTTP/2 connections (:mod:`mserve.bench.http2`), so no grpcio is needed. ModelStatistics, read
around each step, gives the server's queue and compute times.

URL: ``grpc://HOST:PORT`` or ``HOST:PORT``; ``grpcs://HOST:PORT`` for gRPC over TLS. Without a
port it is 8001, Triton's gRPC port. The user's headers (``-H``) go with every call, the
control-plane ones included, as metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from mserve.bench import http2
from mserve.bench.connection import Connect
from mserve.bench.h2frames import DEFAULT_FRAME, grpc_message, header_block
from mserve.bench.headers import grpc_metadata, refused
from mserve.bench.targets.base import Prepared, ServerStats, StatusCheck
from mserve.bench.tls import ClientTls, for_scheme
from mserve.bench.workload import InputSpec, load_samples, random_samples
from mserve.errors import InvalidRequest, ModelNotFound, Unavailable
from mserve.protocol import raw_bytes
from mserve.wire import V2_SERVICE
from mserve.wire import inference_pb2 as pb

DEFAULT_PORT = 8001
INFER_PATH = f"/{V2_SERVICE}/ModelInfer"
NOT_FOUND = 5  # gRPC status codes
PERMISSION_DENIED = 7
UNAUTHENTICATED = 16


def parse_url(url: str) -> tuple[str, int]:
    """``grpc[s]://host:port`` or ``host:port`` -> (host, port); http(s) URLs are refused."""
    _, host, port = parse_address(url)
    return host, port


def parse_address(url: str) -> tuple[str, str, int]:
    """``grpc://host:port``, ``grpcs://host:port`` (TLS) or ``host:port`` -> (scheme, host,
    port); http(s) URLs are refused with a hint to give the gRPC port."""
    if "://" not in url:
        url = "grpc://" + url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        raise ValueError(
            f"--protocol v2-grpc takes the server's gRPC address, not {url}: give "
            f"grpc://{parts.hostname or '127.0.0.1'}:PORT (mserve serve --grpc-port; Triton: 8001)"
        )
    if parts.scheme not in ("grpc", "grpcs"):
        raise ValueError(
            f"unsupported URL scheme '{parts.scheme}' in {url}; expected grpc:// or grpcs://"
        )
    if not parts.hostname:
        raise ValueError(f"no host in URL {url}; expected e.g. grpc://127.0.0.1:8001")
    if parts.path.strip("/"):
        raise ValueError(f"a gRPC address has no path: {url}; expected grpc://HOST:PORT")
    return parts.scheme, parts.hostname, parts.port or DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class InferConnect:
    """Opens generator connections for ModelInfer calls with the user's metadata, over TLS
    when given (a plain value, so that it pickles for generator processes)."""

    metadata: tuple[tuple[str, str], ...] = ()
    tls: ClientTls | None = None

    async def __call__(
        self, host: str, port: int, on_done: http2.OnDone, keep_body: bool = False
    ) -> http2.GrpcConnection:
        return await http2.connect(
            host, port, on_done, keep_body, INFER_PATH, metadata=self.metadata, tls=self.tls
        )


class V2GrpcTarget:
    """A model behind a V2 gRPC endpoint."""

    protocol = "v2-grpc"

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
        """``headers`` go with every call as metadata; ``tls`` verifies a grpcs:// server."""
        if expect is not None:
            raise InvalidRequest("--expect compares JSON outputs; use it with --protocol v2-json")
        scheme, self.host, self.port = parse_address(url)
        self.url = f"{scheme}://{self.host}:{self.port}"
        self.tls = for_scheme(scheme, tls, url)
        self.call_metadata = grpc_metadata(headers or {})
        block = header_block(f"{self.host}:{self.port}", INFER_PATH, self.call_metadata, scheme)
        if len(block) > DEFAULT_FRAME:
            raise ValueError(f"-H: the headers are too long for one HTTP/2 frame ({len(block)} B)")
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.shapes = shapes or {}
        self.seed = seed
        self.input_data = input_data
        self.distinct = distinct
        self.metadata = pb.ModelMetadataResponse()

    async def _call(self, method: str, request: bytes) -> tuple[int, str, bytes]:
        return await http2.unary(
            self.host,
            self.port,
            f"/{V2_SERVICE}/{method}",
            request,
            metadata=self.call_metadata,
            tls=self.tls,
        )

    async def prepare(self) -> Prepared:
        ask = pb.ModelMetadataRequest(name=self.model, version=self.version or "")
        code, message, body = await self._call("ModelMetadata", ask.SerializeToString())
        if code == NOT_FOUND:
            raise ModelNotFound(self.model, self.version)
        if code == UNAUTHENTICATED:
            raise refused(401, message, f"ModelMetadata at {self.url}", "UNAUTHENTICATED")
        if code == PERMISSION_DENIED:
            raise refused(403, message, f"ModelMetadata at {self.url}", "PERMISSION_DENIED")
        if code != 0:
            raise Unavailable(f"ModelMetadata at {self.url} answered gRPC status {code}: {message}")
        try:
            self.metadata = pb.ModelMetadataResponse.FromString(body)
        except DecodeError:
            raise Unavailable(f"ModelMetadata at {self.url}: not a ModelMetadataResponse") from None
        specs = [InputSpec(t.name, t.datatype, tuple(t.shape)) for t in self.metadata.inputs]
        if self.input_data is not None:
            samples = load_samples(self.input_data, specs)
        else:
            samples = random_samples(specs, self.batch_size, self.shapes, self.seed, self.distinct)
        dtypes = {s.name: s.datatype for s in specs}
        requests = []
        for sample in samples:
            req = pb.ModelInferRequest(model_name=self.model, model_version=self.version or "")
            for name, arr in sample.items():
                req.inputs.add(name=name, datatype=dtypes[name], shape=list(arr.shape))
                req.raw_input_contents.append(raw_bytes(dtypes[name], arr))
            requests.append(grpc_message(req.SerializeToString()))
        first = next(iter(samples[0].values()))
        # the same interface as HTTP/1.1's connect, with an HTTP/2 connection
        connect: Connect = InferConnect(self.call_metadata, self.tls)  # type: ignore[assignment]
        return Prepared(
            host=self.host,
            port=self.port,
            requests=requests,
            check=StatusCheck(200),
            connect=connect,
            rows_per_request=int(first.shape[0]) if first.ndim else 1,
            description={
                "protocol": self.protocol,
                "url": self.url,
                "model": self.model,
                "version": self.version,
                "inputs": {k: [list(v.shape), dtypes[k]] for k, v in samples[0].items()},
                "distinct_requests": len(requests),
                "request_bytes": [len(r) for r in requests[:1]],
                "platform": self.metadata.platform or None,
            },
        )

    async def server_stats(self) -> ServerStats | None:
        ask = pb.ModelStatisticsRequest(name=self.model, version=self.version or "")
        try:
            code, _, body = await self._call("ModelStatistics", ask.SerializeToString())
        except Unavailable:
            return None
        if code != 0:
            return None  # a server without the statistics extension
        try:
            rows = pb.ModelStatisticsResponse.FromString(body).model_stats
        except DecodeError:
            return None
        return ServerStats(
            requests=sum(r.inference_stats.success.count for r in rows),
            inferences=sum(r.inference_count for r in rows),
            executions=sum(r.execution_count for r in rows),
            success_ns=sum(r.inference_stats.success.ns for r in rows),
            queue_ns=sum(r.inference_stats.queue.ns for r in rows),
            compute_input_ns=sum(r.inference_stats.compute_input.ns for r in rows),
            compute_infer_ns=sum(r.inference_stats.compute_infer.ns for r in rows),
            compute_output_ns=sum(r.inference_stats.compute_output.ns for r in rows),
            failures=sum(r.inference_stats.fail.count for r in rows),
        )
