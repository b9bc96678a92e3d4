"""The HTTP side of the server: V2 REST (and TF Serving's REST API under ``/v1``, in
:mod:`mserve.server.http.tfserving`), ``/metrics`` and ``/dashboard``: route, decode, call the
data plane, encode.

No framework in the request path: :mod:`mserve.server.http.protocol` parses HTTP/1.1 and hands
each complete request here; the router is a split of the path, bodies are parsed with orjson and
numpy, and every error leaves as ``{"error": "..."}`` with the status from
:mod:`mserve.server.http.status`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any

from mserve import __version__
from mserve.errors import (
    MalformedRequest,
    MserveError,
    NotFound,
    PayloadTooLarge,
    RouteNotFound,
    ServerBusy,
    Unauthenticated,
)
from mserve.server import dashboard
from mserve.server.auth import INFERENCE, MANAGEMENT, METRICS, ApiKeys, bearer
from mserve.server.dataplane import DataPlane
from mserve.server.http import codec
from mserve.server.http.deadline import deadline_of
from mserve.server.http.status import status_of
from mserve.server.http.tfserving import TfServingApi
from mserve.server.metrics import CONTENT_TYPE as METRICS_TYPE

log = logging.getLogger("mserve.http")

Headers = dict[bytes, bytes]  # lower-case names
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]

_JSON = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class Request:
    """A complete HTTP request as the protocol hands it over."""

    method: str
    path: str
    headers: Headers
    body: bytes
    query: str = ""


def _json(status: int, doc: Any) -> Reply:
    return status, codec.dumps(doc), _JSON


def error_reply(exc: MserveError) -> Reply:
    """The reply for one of our errors: its status, and its message as V2's error body."""
    status, body, headers = _json(status_of(exc), {"error": exc.message})
    if isinstance(exc, ServerBusy):
        headers = [*headers, (b"retry-after", str(exc.retry_after_s).encode())]
    elif isinstance(exc, Unauthenticated):
        headers = [*headers, (b"www-authenticate", b'Bearer realm="mserve"')]
    return status, body, headers


def scope_of(parts: list[str]) -> str | None:
    """The API key scope a path needs (split at '/'); None: open to all (health probes and the
    OpenAPI document). Unknown paths need the inference scope, so that a client without a key
    learns nothing about which routes exist."""
    head = parts[0]
    if head == "v2" and len(parts) >= 2:
        if parts[1] == "health":
            return None
        if parts[1] == "repository":
            return MANAGEMENT
        if parts[1] == "models" and parts[-1] == "stats":
            return METRICS
    elif head in ("metrics", "dashboard"):
        return METRICS
    elif head == "openapi.json" and len(parts) == 1:
        return None
    return INFERENCE


def credential(headers: Headers) -> bytes | None:
    """The API key a request carries: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    key = bearer(headers.get(b"authorization"))
    if key is None:
        key = headers.get(b"x-api-key") or None
    return key


INTERNAL_ERROR: Reply = _json(500, {"error": "internal server error; see the server log"})


class HttpApp:
    """Serves the Open Inference Protocol V2 over REST from one data plane."""

    def __init__(
        self,
        dataplane: DataPlane,
        max_body_bytes: int = 64 * 1024 * 1024,
        history: dashboard.History | None = None,
        workers: int = 1,
        keys: ApiKeys | None = None,
    ) -> None:
        self.dp = dataplane
        self.max_body_bytes = max_body_bytes
        self.history = history
        self.workers = workers
        self.keys = keys if keys is not None and keys.enabled else None
        self.tfserving = TfServingApi(dataplane, self._body)

    async def handle(self, request: Request) -> Reply:
        """Answer one request; never raises."""
        try:
            if self.keys is not None:
                scope = scope_of(request.path.strip("/").split("/"))
                if scope is not None:
                    self.keys.check(credential(request.headers), scope)
            return await self._dispatch(request)
        except MserveError as exc:
            return error_reply(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return INTERNAL_ERROR

    async def _dispatch(self, request: Request) -> Reply:
        method, path = request.method, request.path
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            n = len(parts)
            if n >= 3 and parts[1] == "models":
                return await self._model_route(request, parts[2:])
            if n == 1 and method == "GET":
                return _json(200, self.dp.metadata().to_dict())
            if n == 3 and parts[1] == "health" and method == "GET":
                if parts[2] == "live":
                    ok = self.dp.live()
                    return _json(200 if ok else 503, {"live": ok})
                if parts[2] == "ready":
                    ok = self.dp.ready()
                    return _json(200 if ok else 503, {"ready": ok})
            if n >= 3 and parts[1] == "repository" and method == "POST":
                return await self._repository_route(request, parts[2:])
        elif parts[0] == "v1":
            return await self.tfserving.route(request, parts[1:])
        elif parts[0] == "metrics" and len(parts) == 1 and method == "GET":
            return 200, self.dp.metrics_text(), [(b"content-type", METRICS_TYPE)]
        elif parts[0] == "dashboard" and method == "GET" and len(parts) <= 2:
            return self._dashboard(request, parts[1] if len(parts) == 2 else "")
        elif parts[0] == "openapi.json" and len(parts) == 1 and method == "GET":
            from mserve.server.http.openapi import document_json  # the one route needing it

            return 200, document_json(), _JSON
        raise RouteNotFound(method, path)

    def _dashboard(self, request: Request, name: str) -> Reply:
        if name == "data":
            return _json(200, self._dashboard_data(request.query))
        found = dashboard.static_file(name or "index.html")
        if found is None:
            raise RouteNotFound(request.method, request.path)
        body, ctype = found
        return 200, body, [(b"content-type", ctype), (b"cache-control", b"no-cache")]

    def _dashboard_data(self, query: str) -> dict[str, Any]:
        since: float | None = None
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key == "since" and value:
                try:
                    since = float(value)
                except ValueError:
                    raise MalformedRequest(
                        f"'since' must be a Unix time in seconds, got {value!r}"
                    ) from None
        history = self.history
        points = history.since(since) if history is not None else []
        return {
            "server": {
                "name": self.dp.name,
                "version": __version__,
                "workers": self.workers,
                "window_s": history.window_s if history is not None else 0,
            },
            "models": sorted(self.dp.models.names()),
            "points": points,
        }

    async def _model_route(self, request: Request, rest: list[str]) -> Reply:
        method = request.method
        name = rest[0]
        if name == "stats" and len(rest) == 1 and method == "GET":
            return _json(200, self.dp.statistics())
        version: str | None = None
        tail = rest[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
            self.dp.check_version_segment(name, version)
        action = tail[0] if len(tail) == 1 else ("" if not tail else None)
        if action == "infer" and method == "POST":
            return await self._infer(request, name, version)
        if method == "GET":
            if action == "":
                return _json(200, self.dp.model_metadata(name, version).to_dict())
            if action == "ready":
                ok = self.dp.model_ready(name, version)
                return _json(200 if ok else 503, {"name": name, "ready": ok})
            if action == "stats":
                return _json(200, self.dp.statistics(name, version))
            if action == "config":
                return _json(200, self.dp.model_config(name, version))
        raise RouteNotFound(method, request.path)

    async def _repository_route(self, request: Request, rest: list[str]) -> Reply:
        if rest == ["index"]:
            body = self._body(request)
            doc = codec.loads(body) if body.strip() else {}
            if not isinstance(doc, dict):
                raise MalformedRequest("repository index body must be a JSON object")
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise MalformedRequest(f"'ready' must be true or false, got {ready!r}")
            return _json(200, [row.to_dict() for row in self.dp.repository_index(ready)])
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            body = self._body(request)
            doc = codec.loads(body) if body.strip() else {}
            if not isinstance(doc, dict):
                raise MalformedRequest("repository request body must be a JSON object")
            if rest[2] == "load":
                params = doc.get("parameters") or {}
                if not isinstance(params, dict):
                    raise MalformedRequest(
                        f"'parameters' must be a JSON object, got {type(params).__name__}"
                    )
                await self.dp.load(rest[1], params)
            else:
                await self.dp.unload(rest[1])
            return 200, b"", []
        raise RouteNotFound("POST", request.path)

    async def _infer(self, request: Request, name: str, version: str | None) -> Reply:
        start = time.perf_counter()
        try:
            reply, served = await self._infer_counted(request, name, version)
        except (Exception, asyncio.CancelledError) as exc:
            self.dp.record_request("http", name, version, exc, time.perf_counter() - start)
            raise
        self.dp.record_request("http", name, served, None, time.perf_counter() - start)
        return reply

    async def _infer_counted(
        self, request: Request, name: str, version: str | None
    ) -> tuple[Reply, str]:
        deadline = deadline_of(request.headers)  # from arrival, decoding included
        model = self.dp.admit(name, version)  # a full queue refuses before any decoding
        header_length: int | None = None
        raw_length = request.headers.get(codec.HEADER_LENGTH.encode())
        if raw_length is not None:
            try:
                header_length = int(raw_length)
            except ValueError:
                raise MalformedRequest(
                    f"Inference-Header-Content-Length must be an integer, got {raw_length!r}"
                ) from None
        body = self._body(request)
        if header_length == 0:
            if len(model.config.inputs) != 1:
                raise MalformedRequest(
                    "Inference-Header-Content-Length 0 (raw binary) needs a model with one input; "
                    f"'{name}' has {len(model.config.inputs)}"
                )
            infer_request = codec.decode_raw(body, model.config.inputs[0], name, version)
        else:
            infer_request = codec.decode_infer(body, header_length, name, version)
        infer_request.deadline_ns = deadline
        response = await self.dp.infer(infer_request, model)
        out, json_length = codec.encode_infer(response, infer_request)
        if json_length is None:
            return (200, out, _JSON), response.model_version
        return (
            200,
            out,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ],
        ), response.model_version

    def _body(self, request: Request) -> bytes:
        """The body, decompressed when the request says so (the size was checked on arrival)."""
        encoding = request.headers.get(b"content-encoding", b"").lower()
        if encoding and encoding != b"identity":
            return _decompress(request.body, encoding, self.max_body_bytes)
        return request.body


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise MalformedRequest(
            f"Content-Encoding {encoding.decode(errors='replace')} is not supported; "
            "expected gzip, deflate or identity"
        )
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"body is not valid {encoding.decode()} data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(len(out), limit)
    return out


#: what the metrics port answers (as Triton's metrics port: the scrape, and the probes)
METRICS_PORT_PATHS = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready"})


class MetricsPortApp:
    """The app of ``--metrics-port``: ``/metrics`` and the health routes of ``app`` (with its
    keys and scopes), and a 404 naming them for anything else."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self.max_body_bytes = 64 * 1024  # nothing here takes a body; a stray one gets the 404

    async def handle(self, request: Request) -> Reply:
        """Answer one request; never raises."""
        if request.path in METRICS_PORT_PATHS and request.method == "GET":
            return await self.app.handle(request)
        return error_reply(
            NotFound(
                f"no route for {request.method} {request.path}: the metrics port serves GET "
                f"{', '.join(sorted(METRICS_PORT_PATHS))}"
            )
        )
