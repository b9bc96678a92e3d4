"""TF Serving's REST API (``/v1/models/...``) over the same data plane as V2.

:class:`TfServingApi` routes the ``/v1`` paths that :class:`~mserve.server.http.app.HttpApp`
hands it, decodes with :mod:`mserve.server.http.tfserving_codec`, calls the data plane (the same
models and batchers as V2) and encodes. Errors leave as TF Serving's ``{"error": "..."}`` with
the status of :mod:`mserve.server.http.status`; a method a model cannot answer (``:classify`` on
a model without class scores) is 501.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mserve.errors import NotFound, RouteNotFound
from mserve.protocol import InferRequest
from mserve.server.dataplane import DataPlane
from mserve.server.http import codec
from mserve.server.http import tfserving_codec as tfc
from mserve.server.http.deadline import deadline_of

if TYPE_CHECKING:
    from mserve.server.http.app import Reply, Request

_VERBS = ("predict", "classify", "regress")
_JSON = [(b"content-type", b"application/json")]


class TfServingApi:
    """The ``/v1/models/NAME[/versions/V|/labels/L][:verb|/metadata]`` routes."""

    def __init__(self, dataplane: DataPlane, body: Callable[[Request], bytes]) -> None:
        self.dp = dataplane
        self.body = body  # the request body, decompressed as its Content-Encoding says

    async def route(self, request: Request, parts: list[str]) -> Reply:
        """Answer a path below ``/v1`` (``parts`` leave ``v1`` out); errors are raised, and
        the HTTP app answers them as ``{"error": ...}`` with their status (501 for a method the
        model cannot answer)."""
        method = request.method
        if len(parts) < 2 or parts[0] != "models":
            raise RouteNotFound(method, request.path)
        rest = parts[1:]
        last, _, verb = rest[-1].partition(":")
        rest[-1] = last
        name, tail = rest[0], rest[1:]
        version: str | None = None
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
            self.dp.check_version_segment(name, version)
        elif len(tail) >= 2 and tail[0] == "labels":
            known = ", ".join(self.dp.model_metadata(name).versions)
            raise NotFound(
                f"model '{name}' has no version label '{tail[1]}': mserve has no version labels; "
                f"ask for a version by number with /versions/N (versions: {known})"
            )
        if method == "POST" and verb in _VERBS and not tail:
            return await self._infer(request, verb, name, version)
        if method == "GET" and not verb:
            if not tail:
                return self._reply(self._status(name, version))
            if tail == ["metadata"]:
                mv = self.dp.lookup(name, version)
                cfg = mv.config
                return self._reply(tfc.metadata_doc(name, mv.version, cfg.inputs, cfg.outputs))
        raise RouteNotFound(method, request.path)

    def _status(self, name: str, version: str | None) -> dict[str, Any]:
        index = self.dp.repository_index()
        rows = [r for r in index if r.name == name]
        if not rows:
            raise NotFound(
                f"unknown model '{name}'; known models: "
                + (", ".join(sorted({r.name for r in index})) or "(none)")
            )
        if version is not None:
            versions = [r.version for r in rows if r.version is not None]
            rows = [r for r in rows if r.version == version]
            if not rows:
                raise NotFound(
                    f"unknown version '{version}' of model '{name}'; available versions: "
                    + (", ".join(versions) or "(none)")
                )
        return tfc.status_doc(rows)

    async def _infer(self, request: Request, verb: str, name: str, version: str | None) -> Reply:
        start = time.perf_counter()
        try:
            doc, served = await self._infer_counted(request, verb, name, version)
        except (Exception, asyncio.CancelledError) as exc:
            self.dp.record_request("tfserving", name, version, exc, time.perf_counter() - start)
            raise
        self.dp.record_request("tfserving", name, served, None, time.perf_counter() - start)
        return self._reply(doc)

    async def _infer_counted(
        self, request: Request, verb: str, name: str, version: str | None
    ) -> tuple[dict[str, Any], str]:
        deadline = deadline_of(request.headers)  # from arrival, decoding included
        model = self.dp.admit(name, version)  # a full queue refuses before any decoding
        cfg = model.config
        doc = tfc.parse_body(self.body(request), verb)
        if verb == "predict":
            inputs, rows = tfc.decode_predict(doc, cfg.inputs, name)
        else:
            wanted = (tfc.scores_output if verb == "classify" else tfc.regress_output)(
                cfg.outputs, name
            )
            inputs = tfc.decode_examples(doc, cfg.inputs, name)
        response = await self.dp.infer(
            InferRequest(name, version, inputs, deadline_ns=deadline), model
        )
        if verb == "predict":
            out = tfc.encode_predict(response.outputs, rows)
        elif verb == "classify":
            out = tfc.encode_classify(response.outputs, wanted.name, name)
        else:
            out = tfc.encode_regress(response.outputs, wanted.name)
        return out, response.model_version

    @staticmethod
    def _reply(doc: dict[str, Any]) -> Reply:
        return 200, codec.dumps(doc), _JSON
