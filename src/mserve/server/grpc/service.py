"""``inference.GRPCInferenceService``: decode, call the data plane, encode; errors as status codes.

:meth:`GrpcService.methods` is the table of the service's RPCs by path
(``/inference.GRPCInferenceService/ModelInfer`` ...): for each, how its request is parsed, the
coroutine that answers it and how its answer is serialized. The transport
(:mod:`mserve.server.grpc.h2server`, on the server's event loop) reads frames, calls these and
writes what they return, so inference goes through the same data plane, batcher and in-flight
count as HTTP. Handlers raise mserve's errors; :func:`status_of` turns them into status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mserve.errors import MserveError
from mserve.server.auth import INFERENCE, MANAGEMENT, METRICS, ApiKeys, bearer
from mserve.server.dataplane import DataPlane
from mserve.server.grpc import codec
from mserve.server.grpc.status import Code, code_of
from mserve.server.load import InFlight
from mserve.wire import V2_SERVICE
from mserve.wire import inference_pb2 as pb

log = logging.getLogger("mserve.grpc")

INTERNAL_MESSAGE = "internal server error; see the server log"


@dataclass(frozen=True, slots=True)
class Unary:
    """An RPC with one request and one answer."""

    call: Callable[[Any], Awaitable[Any]]
    parse: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class Streaming:
    """An RPC with a stream of requests and a stream of answers (both ways at once)."""

    call: Callable[[AsyncIterator[Any]], AsyncGenerator[Any, None]]
    parse: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]


Method = Unary | Streaming


def status_of(exc: Exception) -> tuple[int, str]:
    """(gRPC status code, message) for an error a handler raised; an error that is not one of
    mserve's is logged and answered INTERNAL without its details."""
    if isinstance(exc, MserveError):
        return int(code_of(exc)), exc.message
    log.error("unhandled error in a gRPC call", exc_info=exc)
    return int(Code.INTERNAL), INTERNAL_MESSAGE


#: The deadline of the call a handler serves (grpc-timeout), on the perf_counter_ns clock;
#: 0: none. Set by the transport in each call's own task.
CALL_DEADLINE: ContextVar[int] = ContextVar("mserve_grpc_deadline", default=0)

#: Calls anyone may make (health probes); the others need an API key scope when keys are set
_OPEN = {"ServerLive", "ServerReady"}
_SCOPES = {
    "RepositoryIndex": MANAGEMENT,
    "RepositoryModelLoad": MANAGEMENT,
    "RepositoryModelUnload": MANAGEMENT,
    "ModelStatistics": METRICS,
}


class GrpcService:
    """The V2 gRPC service of one worker."""

    def __init__(
        self, dataplane: DataPlane, in_flight: InFlight, keys: ApiKeys | None = None
    ) -> None:
        self.dp = dataplane
        self.in_flight = in_flight
        self.keys = keys if keys is not None and keys.enabled else None

    def authorize(self, path: str, authorization: bytes) -> tuple[int, str] | None:
        """None when a call to ``path`` with this ``authorization`` metadata may start, else
        the (status, message) that refuses it: UNAUTHENTICATED or PERMISSION_DENIED."""
        if self.keys is None:
            return None
        name = path.rpartition("/")[2]
        if name in _OPEN:
            return None
        try:
            self.keys.check(bearer(authorization), _SCOPES.get(name, INFERENCE))
        except MserveError as exc:
            return int(code_of(exc)), exc.message
        return None

    def methods(self) -> dict[str, Method]:
        """Every RPC of the service, by the path clients call it with."""
        unary: dict[str, tuple[Callable[[Any], Awaitable[Any]], Any, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            "ModelMetadata": (
                self.model_metadata,
                pb.ModelMetadataRequest,
                pb.ModelMetadataResponse,
            ),
            "ModelInfer": (self.infer, pb.ModelInferRequest, pb.ModelInferResponse),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelStatistics": (
                self.model_statistics,
                pb.ModelStatisticsRequest,
                pb.ModelStatisticsResponse,
            ),
            "RepositoryIndex": (
                self.repository_index,
                pb.RepositoryIndexRequest,
                pb.RepositoryIndexResponse,
            ),
            "RepositoryModelLoad": (
                self.repository_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
            ),
            "RepositoryModelUnload": (
                self.repository_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        }
        methods: dict[str, Method] = {
            f"/{V2_SERVICE}/{name}": Unary(fn, req.FromString, resp.SerializeToString)
            for name, (fn, req, resp) in unary.items()
        }
        methods[f"/{V2_SERVICE}/ModelStreamInfer"] = Streaming(
            self.model_stream_infer,
            pb.ModelInferRequest.FromString,
            pb.ModelStreamInferResponse.SerializeToString,
        )
        return methods

    # -- health and metadata ----------------------------------------------------------------------

    async def server_live(self, req: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dp.live())

    async def server_ready(self, req: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dp.ready())

    async def model_ready(self, req: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dp.model_ready(req.name, req.version or None))

    async def server_metadata(self, req: Any) -> pb.ServerMetadataResponse:
        m = self.dp.metadata()
        return pb.ServerMetadataResponse(
            name=m.name, version=m.version, extensions=list(m.extensions)
        )

    async def model_metadata(self, req: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        return codec.encode_metadata(self.dp.model_metadata(req.name, req.version or None))

    async def model_config(self, req: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        return codec.encode_config(self.dp.model_config(req.name, req.version or None))

    async def model_statistics(self, req: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        doc = self.dp.statistics(req.name or None, req.version or None)
        return codec.encode_statistics(doc)

    # -- repository -------------------------------------------------------------------------------

    async def repository_index(self, req: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        out = pb.RepositoryIndexResponse()
        for row in self.dp.repository_index(req.ready):
            out.models.add(
                name=row.name, version=row.version or "", state=row.state, reason=row.reason
            )
        return out

    async def repository_load(
        self, req: pb.RepositoryModelLoadRequest
    ) -> pb.RepositoryModelLoadResponse:
        await self.dp.load(req.model_name, codec.parameters(req.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, req: pb.RepositoryModelUnloadRequest
    ) -> pb.RepositoryModelUnloadResponse:
        await self.dp.unload(req.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference --------------------------------------------------------------------------------

    async def infer(self, req: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One inference, counted in flight and in the metrics; raises mserve errors."""
        start = time.perf_counter()
        self.in_flight.count += 1
        try:
            # a full queue refuses before any decoding (an empty name: decoding says so)
            model = (
                self.dp.admit(req.model_name, req.model_version or None) if req.model_name else None
            )
            request = codec.decode_infer(req)
            request.deadline_ns = CALL_DEADLINE.get()
            response = await self.dp.infer(request, model)
            encoded = codec.encode_infer(response)
        except (Exception, asyncio.CancelledError) as exc:
            version = req.model_version or None
            self.dp.record_request("grpc", req.model_name, version, exc, _since(start))
            raise
        finally:
            self.in_flight.count -= 1
        self.dp.record_request("grpc", req.model_name, response.model_version, None, _since(start))
        return encoded

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest]
    ) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
        """Each request of the stream is computed as it arrives (several at once); answers
        leave in the order they finish, errors as ``error_message`` on the stream (Triton's
        behaviour), so one bad request does not end the stream."""
        done: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def one(req: pb.ModelInferRequest) -> None:
            try:
                answer = pb.ModelStreamInferResponse(infer_response=await self.infer(req))
            except MserveError as exc:
                answer = pb.ModelStreamInferResponse(
                    error_message=exc.message,
                    infer_response=pb.ModelInferResponse(
                        model_name=req.model_name, model_version=req.model_version, id=req.id
                    ),
                )
            except Exception:
                log.exception("unhandled error in ModelStreamInfer")
                answer = pb.ModelStreamInferResponse(
                    error_message="internal server error; see the server log"
                )
            await done.put(answer)

        async def read() -> None:
            async for req in requests:
                task = asyncio.get_running_loop().create_task(one(req))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*list(running), return_exceptions=True)
            await done.put(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (answer := await done.get()) is not None:
                yield answer
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


def _since(start: float) -> float:
    return time.perf_counter() - start
