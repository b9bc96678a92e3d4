"""Live / ready / metadata / infer / repository / statistics: the logic every transport calls.

Transports decode their wire format into :mod:`mserve.protocol` types, call one method here, and
encode what it returns; they decide nothing themselves.
"""

from __future__ import annotations

import time
from typing import Any

from mserve import __version__
from mserve.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    ModelNotFound,
    MserveError,
)
from mserve.protocol import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryEntry,
    ServerMetadata,
)
from mserve.server.metrics import Exchange, merge, outcome_of, pid_alive, render
from mserve.server.models import ModelManager, ModelVersion

EXTENSIONS = (
    "binary_tensor_data",
    "model_repository",
    "statistics",
    "model_configuration",
)

_TRITON_TYPES = {"BYTES": "TYPE_STRING"}


class DataPlane:
    """The server's behaviour, independent of any wire format."""

    def __init__(
        self,
        models: ModelManager,
        name: str = "mserve",
        exchange: Exchange | None = None,
        management: bool = True,
        max_tensor_elements: int = 0,
        request_timeout_s: float = 0.0,
    ) -> None:
        self.models = models
        self.metrics = models.metrics
        self.exchange = exchange  # where the other workers publish their metrics, if any
        self.name = name
        self.management = management  # whether clients may load and unload models
        self.max_tensor_elements = max_tensor_elements  # per request, all inputs; 0: no limit
        self._default_timeout_ns = int(request_timeout_s * 1e9)
        self._ready = False
        self._live = True

    # -- health ---------------------------------------------------------------------------------

    def live(self) -> bool:
        return self._live

    def ready(self) -> bool:
        """True once start-up loading is done and until shutdown begins."""
        return self._live and self._ready

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def metadata(self) -> ServerMetadata:
        return ServerMetadata(self.name, __version__, EXTENSIONS)

    # -- models ---------------------------------------------------------------------------------

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.models.is_ready(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        return self.models.metadata(name, version)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The effective config in Triton's model-configuration JSON shape (for its clients)."""
        mv = self.models.get(name, version)
        cfg = mv.config
        batched = cfg.max_batch_size > 0

        def tensors(specs: tuple[Any, ...]) -> list[dict[str, Any]]:
            return [
                {
                    "name": s.name,
                    "data_type": _TRITON_TYPES.get(s.datatype, f"TYPE_{s.datatype}"),
                    "dims": list(s.shape[1:] if batched else s.shape),
                }
                for s in specs
            ]

        doc: dict[str, Any] = {
            "name": cfg.name,
            "platform": mv.platform,
            "backend": cfg.backend,
            "version_policy": _policy(cfg),
            "max_batch_size": cfg.max_batch_size,
            "input": tensors(cfg.inputs),
            "output": tensors(cfg.outputs),
            "instance_group": [{"count": cfg.instance_count, "kind": "KIND_CPU"}],
        }
        db = cfg.dynamic_batching
        if db is not None:
            doc["dynamic_batching"] = {
                "preferred_batch_size": list(db.preferred_batch_sizes),
                "max_queue_delay_microseconds": db.max_queue_delay_us,
                "default_queue_policy": {
                    "timeout_action": "REJECT",
                    "default_timeout_microseconds": db.default_timeout_us,
                    "max_queue_size": db.max_queue_size,
                },
            }
        return doc

    async def infer(
        self, request: InferRequest, model: ModelVersion | None = None
    ) -> InferResponse:
        """Check the server's limits, settle the request's deadline, and compute it on
        ``model`` (the version :meth:`admit` returned for it) or the one it names."""
        if self.max_tensor_elements:
            elements = sum(t.data.size for t in request.inputs)
            if elements > self.max_tensor_elements:
                raise InvalidRequest(
                    f"the request's inputs have {elements} elements together; this server "
                    f"accepts at most {self.max_tensor_elements} a request (--max-tensor-elements)"
                )
        self._settle_deadline(request)
        if model is None:
            model = self.models.get(request.model_name, request.model_version)
        return await model.infer(request)

    def _settle_deadline(self, request: InferRequest) -> None:
        """The earliest of the transport's deadline (gRPC's, an HTTP header's) and Triton's
        ``timeout`` parameter (microseconds); the server's default when the client set none.
        A deadline already passed is refused here, before any work."""
        now = time.perf_counter_ns()
        deadline = request.deadline_ns
        timeout_us = request.parameters.get("timeout") if request.parameters else None
        if timeout_us is not None:
            if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
                raise InvalidRequest(
                    f"parameter 'timeout' must be a whole number of microseconds >= 0, got "
                    f"{timeout_us!r}"
                )
            if timeout_us:
                mine = now + timeout_us * 1000
                deadline = min(deadline, mine) if deadline else mine
        if not deadline and self._default_timeout_ns:
            deadline = now + self._default_timeout_ns
        request.deadline_ns = deadline
        if deadline and deadline <= now:
            raise DeadlineExceeded(
                request.model_name, request.model_version or "", 0, 0, whose="client"
            )

    def check_version_segment(self, name: str, version: str) -> None:
        """A path's ``/versions/V/`` segment: an empty V names no version (unknown), rather
        than the latest one that no segment at all means."""
        if version == "":
            known = list(self.models.metadata(name).versions)  # ModelNotFound: unknown model
            raise ModelNotFound(name, "", known)

    def admit(self, name: str, version: str | None = None) -> ModelVersion:
        """The model version a request goes to, if it can take one now: ServerBusy while its
        queue is full (transports call this before decoding, so shedding stays cheap)."""
        mv = self.models.get(name, version)
        mv.admit()
        return mv

    def lookup(self, name: str, version: str | None = None) -> ModelVersion:
        """The model version a request would go to (transports use its signature to decode)."""
        return self.models.get(name, version)

    # -- repository and statistics ---------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        rows = self.models.index()
        return [r for r in rows if r.state == "READY"] if ready_only else rows

    def _check_management(self) -> None:
        if not self.management:
            raise Forbidden(
                "the model management API (load / unload) is off; start the server with "
                "--enable-management to use it"
            )

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        self._check_management()
        if parameters:
            unsupported = sorted(parameters)
            raise InvalidRequest(
                f"load parameters {', '.join(unsupported)} are not supported; "
                "place the model in the repository and load it by name"
            )
        await self.models.load_async(name)

    async def unload(self, name: str) -> None:
        self._check_management()
        await self.models.unload_async(name)

    # -- metrics --------------------------------------------------------------------------------

    def record_request(
        self,
        protocol: str,
        model: str,
        version: str | None,
        error: BaseException | None,
        seconds: float,
    ) -> None:
        """Count one inference request of a transport; ``version`` is the one that served it,
        or the one asked for when it failed. Names nobody loaded are counted as model "" so that
        clients cannot create series at will."""
        outcome = outcome_of(error)
        if outcome != "success":
            try:
                version = self.models.get(model, version).version
            except MserveError:
                version = ""
                if outcome == "not_found" and model not in self.models.names():
                    model = ""
        self.metrics.request(model, version or "", protocol, outcome, seconds)

    def metrics_snapshot(self) -> dict[str, Any]:
        """All workers' metrics, summed (this worker's live, the others' as last published)."""
        own = self.metrics.registry.snapshot()
        others = self.exchange.others() if self.exchange is not None else []
        return merge([own, *others], pid_alive)

    def publish_metrics(self) -> None:
        """Write this worker's metrics where the other workers read them."""
        if self.exchange is not None:
            self.exchange.publish(self.metrics.registry.snapshot())

    def metrics_text(self) -> bytes:
        """``/metrics``: Prometheus' text format."""
        return render(self.metrics_snapshot())

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        return {"model_stats": [mv.stats.to_dict() for mv in self.models.versions(name, version)]}


def _policy(cfg: Any) -> dict[str, Any]:
    p = cfg.version_policy
    if p.kind == "all":
        return {"all": {}}
    if p.kind == "specific":
        return {"specific": {"versions": list(p.specific)}}
    return {"latest": {"num_versions": p.latest}}
