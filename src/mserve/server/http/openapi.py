"""The OpenAPI 3.0 document of the HTTP API, served at ``GET /openapi.json``.

It describes every route :class:`~mserve.server.http.app.HttpApp` answers: V2 REST (the KServe /
Triton Open Inference Protocol, with its binary tensor extension as an alternative body), TF
Serving's REST API under ``/v1``, ``/metrics``, the dashboard and this document; the schemas and
error responses are in :mod:`mserve.server.http.openapi_components`. Every error leaves as
``{"error": "..."}``; API keys (``Authorization: Bearer KEY``) are optional, and the health probes
and this document never need one. A pure function: the server serves it, tools read it, and the
integration tests fuzz the server against it.
"""

from __future__ import annotations

import copy
import functools

import orjson

from mserve import __version__
from mserve.server.auth import INFERENCE, MANAGEMENT, METRICS
from mserve.server.http.openapi_components import (
    BINARY,
    BOOLEAN,
    ERRORS,
    HEADER_LENGTH,
    JSON,
    NUMBER,
    PARAMETERS,
    PATH,
    RESPONSES,
    SCHEMAS,
    SECURITY,
    SECURITY_SCHEMES,
    STRING,
    Doc,
    json_reply,
    obj,
    ref,
    schema_ref,
)

_BYTES: Doc = {"type": "string", "format": "binary"}


def _op(
    tag: str,
    summary: str,
    ok: Doc,
    *,
    scope: str | None,
    errors: tuple[int, ...] = (),
    body: Doc | None = None,
    params: list[Doc] | None = None,
    replies: Doc | None = None,
) -> Doc:
    """One operation: its 200 answer; the errors it can meet, with every route's 431 and 503,
    401 and 403 where a key is needed, 400 and 413 where a body is read; the key scope it needs
    (None: always open); ``replies`` replaces answers by status."""
    codes = set(errors) | {431, 503}
    if scope is not None:
        codes |= {401, 403}
    if body is not None:
        codes |= {400, 413}
    responses: Doc = {"200": ok}
    responses.update({str(c): ref("responses", ERRORS[c]) for c in sorted(codes)})
    responses.update(replies or {})
    op: Doc = {"tags": [tag], "summary": summary, "responses": responses}
    if scope is None:
        op["security"] = []
    else:
        op["x-mserve-scope"] = scope
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _body(schema: Doc, required: bool = True) -> Doc:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _text(ctype: str, description: str) -> Doc:
    return {"description": description, "content": {ctype: {"schema": STRING}}}


def _flag(key: str, summary: str) -> Doc:
    """A health probe: ``{key: true}`` with 200, ``{key: false}`` with 503."""
    flag = obj([key], **{key: BOOLEAN})
    no = json_reply({"anyOf": [flag, schema_ref("Error")]}, "no, or at the connection limit")
    return _op("health", summary, json_reply(flag, "yes"), scope=None, replies={"503": no})


def _v2_model(prefix: str, params: list[Doc]) -> Doc:
    """The V2 routes of one model (``prefix``: the model, or one version of it)."""
    ready = {"anyOf": [obj(["name", "ready"], name=STRING, ready=BOOLEAN), schema_ref("Error")]}
    infer_ok = {
        "description": "the outputs; binary after a JSON header when asked (binary_data, "
        "binary_data_output)",
        "content": {JSON: {"schema": schema_ref("InferenceResponse")}, BINARY: {"schema": _BYTES}},
        "headers": {HEADER_LENGTH: {"schema": {"type": "integer"}}},
    }
    infer_body = {
        "required": True,
        "description": f"JSON; or, with the binary tensor extension, a JSON header of "
        f"{HEADER_LENGTH} bytes (an InferenceRequest whose inputs carry binary_data_size) "
        "followed by the tensors' little-endian bytes",
        "content": {JSON: {"schema": schema_ref("InferenceRequest")}, BINARY: {"schema": _BYTES}},
    }
    infer_params = [*params, ref("parameters", "HeaderLength"), ref("parameters", "Timeout")]
    return {
        prefix: {
            "get": _op(
                "models",
                "Model metadata",
                json_reply(schema_ref("ModelMetadata"), "its signature and versions"),
                scope=INFERENCE,
                errors=(404,),
                params=params,
            )
        },
        f"{prefix}/ready": {
            "get": _op(
                "health",
                "Is the model ready?",
                json_reply(ready, "ready"),
                scope=INFERENCE,
                replies={"503": json_reply(ready, "not ready, or at the connection limit")},
                errors=(404,),
                params=params,
            )
        },
        f"{prefix}/config": {
            "get": _op(
                "models",
                "Model configuration (Triton's shape)",
                json_reply(schema_ref("ModelConfig"), "the effective configuration"),
                scope=INFERENCE,
                errors=(404,),
                params=params,
            )
        },
        f"{prefix}/stats": {
            "get": _op(
                "models",
                "Model statistics",
                json_reply(schema_ref("ModelStatistics"), "per version"),
                scope=METRICS,
                errors=(404,),
                params=params,
            )
        },
        f"{prefix}/infer": {
            "post": _op(
                "inference",
                "Inference",
                infer_ok,
                scope=INFERENCE,
                errors=(404, 500, 504),
                body=infer_body,
                params=infer_params,
            )
        },
    }


def _tfserving_model(prefix: str, params: list[Doc], labels: bool = False) -> Doc:
    """TF Serving's routes of one model (``prefix``: the model, one version, or a label)."""
    note = " (mserve has no version labels: always 404, naming the versions)" if labels else ""
    timeout = [*params, ref("parameters", "Timeout")]
    examples = _body(schema_ref("TfExamplesRequest"))
    return {
        prefix: {
            "get": _op(
                "tfserving",
                "Model status" + note,
                json_reply(schema_ref("TfModelStatus"), "one entry per version"),
                scope=INFERENCE,
                errors=(404,),
                params=params,
            )
        },
        f"{prefix}/metadata": {
            "get": _op(
                "tfserving",
                "Signature" + note,
                json_reply(schema_ref("TfModelMetadata"), "the serving_default signature"),
                scope=INFERENCE,
                errors=(404,),
                params=params,
            )
        },
        f"{prefix}:predict": {
            "post": _op(
                "tfserving",
                "Predict" + note,
                json_reply(schema_ref("TfPredictResponse"), "predictions or outputs"),
                errors=(404, 500, 504),
                body=_body(schema_ref("TfPredictRequest")),
                scope=INFERENCE,
                params=timeout,
            )
        },
        f"{prefix}:classify": {
            "post": _op(
                "tfserving",
                "Classify" + note,
                json_reply(schema_ref("TfClassifyResponse"), "[label, score] per class"),
                errors=(404, 500, 501, 504),
                body=examples,
                scope=INFERENCE,
                params=timeout,
            )
        },
        f"{prefix}:regress": {
            "post": _op(
                "tfserving",
                "Regress" + note,
                json_reply(schema_ref("TfRegressResponse"), "one value per example"),
                errors=(404, 500, 501, 504),
                body=examples,
                scope=INFERENCE,
                params=timeout,
            )
        },
    }


def _monitoring() -> Doc:
    """``/metrics`` and the dashboard."""
    since = {"in": "query", "name": "since", "schema": NUMBER, "description": "a Unix time"}
    file = {**PATH, "name": "file", "schema": {"type": "string", "pattern": r"^\w[\w.\-]*$"}}
    files = ("text/html", "text/javascript", "text/css", "image/svg+xml")
    return {
        "/metrics": {
            "get": _op(
                "monitoring",
                "Prometheus metrics",
                _text("text/plain", "Prometheus' text format 0.0.4"),
                scope=METRICS,
            )
        },
        "/dashboard": {
            "get": _op(
                "monitoring", "The live dashboard", _text("text/html", "the page"), scope=METRICS
            )
        },
        "/dashboard/data": {
            "get": _op(
                "monitoring",
                "The dashboard's figures since a time",
                json_reply(schema_ref("DashboardData"), "the points after 'since'"),
                scope=METRICS,
                errors=(400,),
                params=[since],
            )
        },
        "/dashboard/{file}": {
            "get": _op(
                "monitoring",
                "A file of the dashboard page",
                {"description": "the file", "content": {t: {"schema": STRING} for t in files}},
                scope=METRICS,
                errors=(404,),
                params=[file],
            )
        },
    }


def document(version: str = __version__) -> Doc:
    """The OpenAPI 3.0.3 document of every HTTP route (a new dict on every call)."""
    name = ref("parameters", "ModelName")
    versioned = [name, ref("parameters", "ModelVersion")]
    repository_body = _body(schema_ref("RepositoryModelRequest"), required=False)
    paths: Doc = {
        "/v2": {
            "get": _op(
                "server",
                "Server metadata",
                json_reply(schema_ref("ServerMetadata"), "name, version, extensions"),
                scope=INFERENCE,
            )
        },
        "/v2/health/live": {"get": _flag("live", "Is the server process up?")},
        "/v2/health/ready": {"get": _flag("ready", "Is start-up loading done?")},
        "/v2/models/stats": {
            "get": _op(
                "models",
                "Statistics of every model",
                json_reply(schema_ref("ModelStatistics"), "per model version"),
                scope=METRICS,
            )
        },
        **_v2_model("/v2/models/{model_name}", [name]),
        **_v2_model("/v2/models/{model_name}/versions/{model_version}", versioned),
        "/v2/repository/index": {
            "post": _op(
                "repository",
                "The repository's models and their states",
                json_reply(schema_ref("RepositoryIndex"), "one row per model version"),
                scope=MANAGEMENT,
                body=_body(schema_ref("RepositoryIndexRequest"), required=False),
            )
        },
        **{
            f"/v2/repository/models/{{model_name}}/{verb}": {
                "post": _op(
                    "repository",
                    summary,
                    {"description": "done (an empty body)"},
                    scope=MANAGEMENT,
                    errors=(404,),
                    body=repository_body,
                    params=[name],
                )
            }
            for verb, summary in (
                ("load", "(Re)load a model from the repository"),
                ("unload", "Stop serving a model"),
            )
        },
        **_tfserving_model("/v1/models/{model_name}", [name]),
        **_tfserving_model("/v1/models/{model_name}/versions/{model_version}", versioned),
        **_tfserving_model(
            "/v1/models/{model_name}/labels/{label}", [name, ref("parameters", "Label")], True
        ),
        **_monitoring(),
        "/openapi.json": {
            "get": _op(
                "server",
                "This document",
                json_reply({"type": "object"}, "OpenAPI 3.0.3"),
                scope=None,
            )
        },
    }
    tags = ("server", "health", "models", "inference", "repository", "tfserving", "monitoring")
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "mserve",
            "version": version,
            "description": "The Open Inference Protocol V2 over REST (KServe / Triton), TF "
            "Serving's REST API, Prometheus metrics and a live dashboard. Every error is "
            '{"error": "..."}, saying what was wrong and what was expected.',
        },
        "tags": [{"name": t} for t in tags],
        "security": SECURITY,
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    return copy.deepcopy(doc)  # the components are shared module constants


@functools.cache
def document_json() -> bytes:
    """The document as the server sends it: JSON, encoded once per process."""
    return orjson.dumps(document())
