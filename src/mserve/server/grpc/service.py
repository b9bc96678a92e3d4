"""``inference.GRPCInferenceService``: decode, call the data plane, encode; errors as status codes.

Served by grpc.aio on the server's event loop, so inference goes through the same data plane,
batcher and in-flight count as HTTP. Each RPC is registered by its specified path
(``/inference.GRPCInferenceService/ModelInfer`` ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from mserve.errors import MserveError
from mserve.server.dataplane import DataPlane
from mserve.server.grpc import codec
from mserve.server.grpc.status import code_of
from mserve.server.load import InFlight
from mserve.wire import V2_SERVICE
from mserve.wire import inference_pb2 as pb

log = logging.getLogger("mserve.grpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class GrpcService:
    """The V2 gRPC service of one worker."""

    def __init__(self, dataplane: DataPlane, in_flight: InFlight) -> None:
        self.dp = dataplane
        self.in_flight = in_flight

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler that serves every RPC of the service."""
        unary: dict[str, tuple[Handler, Any, Any]] = {
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
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
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
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                _guarded(fn),
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )
            for name, (fn, req, resp) in unary.items()
        }
        methods["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(V2_SERVICE, methods)

    # -- health and metadata ----------------------------------------------------------------------

    async def server_live(self, req: Any, ctx: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dp.live())

    async def server_ready(self, req: Any, ctx: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dp.ready())

    async def model_ready(self, req: pb.ModelReadyRequest, ctx: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dp.model_ready(req.name, req.version or None))

    async def server_metadata(self, req: Any, ctx: Any) -> pb.ServerMetadataResponse:
        m = self.dp.metadata()
        return pb.ServerMetadataResponse(
            name=m.name, version=m.version, extensions=list(m.extensions)
        )

    async def model_metadata(
        self, req: pb.ModelMetadataRequest, ctx: Any
    ) -> pb.ModelMetadataResponse:
        return codec.encode_metadata(self.dp.model_metadata(req.name, req.version or None))

    async def model_config(self, req: pb.ModelConfigRequest, ctx: Any) -> pb.ModelConfigResponse:
        return codec.encode_config(self.dp.model_config(req.name, req.version or None))

    async def model_statistics(
        self, req: pb.ModelStatisticsRequest, ctx: Any
    ) -> pb.ModelStatisticsResponse:
        doc = self.dp.statistics(req.name or None, req.version or None)
        return codec.encode_statistics(doc)

    # -- repository -------------------------------------------------------------------------------

    async def repository_index(
        self, req: pb.RepositoryIndexRequest, ctx: Any
    ) -> pb.RepositoryIndexResponse:
        out = pb.RepositoryIndexResponse()
        for row in self.dp.repository_index(req.ready):
            out.models.add(
                name=row.name, version=row.version or "", state=row.state, reason=row.reason
            )
        return out

    async def repository_load(
        self, req: pb.RepositoryModelLoadRequest, ctx: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self.dp.load(req.model_name, codec.parameters(req.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, req: pb.RepositoryModelUnloadRequest, ctx: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.dp.unload(req.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference --------------------------------------------------------------------------------

    async def infer(self, req: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One inference, counted in flight and in the metrics; raises mserve errors."""
        start = time.perf_counter()
        self.in_flight.count += 1
        try:
            response = await self.dp.infer(codec.decode_infer(req))
            encoded = codec.encode_infer(response)
        except (Exception, asyncio.CancelledError) as exc:
            version = req.model_version or None
            self.dp.record_request("grpc", req.model_name, version, exc, _since(start))
            raise
        finally:
            self.in_flight.count -= 1
        self.dp.record_request("grpc", req.model_name, response.model_version, None, _since(start))
        return encoded

    async def model_infer(self, req: pb.ModelInferRequest, ctx: Any) -> pb.ModelInferResponse:
        return await self.infer(req)

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
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


def _guarded(fn: Handler) -> Handler:
    """The RPC with mserve's errors turned into status codes and their messages."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except MserveError as exc:
            await context.abort(code_of(exc), exc.message)
        except (grpc.RpcError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unhandled error in %s", getattr(fn, "__name__", "an RPC"))
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the log")

    return call


async def start_grpc(
    service: GrpcService, host: str, port: int, max_message_bytes: int, shared: bool = False
) -> grpc.aio.Server:
    """Listen on ``host:port`` and serve; ``shared`` lets the workers of one server share the
    port (SO_REUSEPORT), which is otherwise off so that a port in use is an error."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1 if shared else 0),
        ]
    )
    server.add_generic_rpc_handlers((service.handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError("the address is in use or not available")
    await server.start()
    return server
