"""The V2 REST API as a lean ASGI application: route, decode, call the data plane, encode.

No framework in the request path: the router is a split of the path, bodies are parsed with
orjson and numpy, and every error leaves as ``{"error": "..."}`` with the status from
:mod:`mserve.server.http.status`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from mserve.errors import MalformedRequest, MserveError, PayloadTooLarge, RouteNotFound
from mserve.server.dataplane import DataPlane
from mserve.server.http import codec
from mserve.server.http.status import status_of

log = logging.getLogger("mserve.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]

_JSON = [(b"content-type", b"application/json")]


def _json(status: int, doc: Any) -> Reply:
    return status, codec.dumps(doc), _JSON


class HttpApp:
    """ASGI callable serving the Open Inference Protocol V2 over REST."""

    def __init__(self, dataplane: DataPlane, max_body_bytes: int = 64 * 1024 * 1024) -> None:
        self.dp = dataplane
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body, headers = await self._dispatch(scope, receive)
        except MserveError as exc:
            status, body, headers = _json(status_of(exc), {"error": exc.message})
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            status, body, headers = _json(
                500, {"error": "internal server error; see the server log"}
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.dp.set_ready(False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive) -> Reply:
        method: str = scope["method"]
        path: str = scope["path"]
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            n = len(parts)
            if n >= 3 and parts[1] == "models":
                return await self._model_route(method, path, parts[2:], scope, receive)
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
                return await self._repository_route(parts[2:], scope, receive)
        raise RouteNotFound(method, path)

    async def _model_route(
        self, method: str, path: str, rest: list[str], scope: Scope, receive: Receive
    ) -> Reply:
        name = rest[0]
        if name == "stats" and len(rest) == 1 and method == "GET":
            return _json(200, self.dp.statistics())
        version: str | None = None
        tail = rest[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        action = tail[0] if len(tail) == 1 else ("" if not tail else None)
        if action == "infer" and method == "POST":
            return await self._infer(name, version, scope, receive)
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
        raise RouteNotFound(method, path)

    async def _repository_route(self, rest: list[str], scope: Scope, receive: Receive) -> Reply:
        if rest == ["index"]:
            body = await self._body(scope, receive)
            doc = codec.loads(body) if body.strip() else {}
            if not isinstance(doc, dict):
                raise MalformedRequest("repository index body must be a JSON object")
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise MalformedRequest(f"'ready' must be true or false, got {ready!r}")
            return _json(200, [row.to_dict() for row in self.dp.repository_index(ready)])
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            body = await self._body(scope, receive)
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
        raise RouteNotFound("POST", "/v2/repository/" + "/".join(rest))

    async def _infer(self, name: str, version: str | None, scope: Scope, receive: Receive) -> Reply:
        header_length: int | None = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                try:
                    header_length = int(value)
                except ValueError:
                    raise MalformedRequest(
                        f"Inference-Header-Content-Length must be an integer, got {value!r}"
                    ) from None
        body = await self._body(scope, receive)
        if header_length == 0:
            model = self.dp.lookup(name, version)
            if len(model.config.inputs) != 1:
                raise MalformedRequest(
                    "Inference-Header-Content-Length 0 (raw binary) needs a model with one input; "
                    f"'{name}' has {len(model.config.inputs)}"
                )
            request = codec.decode_raw(body, model.config.inputs[0], name, version)
        else:
            request = codec.decode_infer(body, header_length, name, version)
        response = await self.dp.infer(request)
        out, json_length = codec.encode_infer(response, request)
        if json_length is None:
            return 200, out, _JSON
        return (
            200,
            out,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ],
        )

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        encoding = b""
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise MalformedRequest("Content-Length must be an integer") from None
                if declared > limit:
                    raise PayloadTooLarge(declared, limit)
            elif key == b"content-encoding":
                encoding = value.lower()
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise MalformedRequest("client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(size, limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if encoding and encoding != b"identity":
            body = _decompress(body, encoding, limit)
        return body


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
