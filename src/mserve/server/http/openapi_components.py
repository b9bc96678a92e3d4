"""The components of the OpenAPI document (:mod:`mserve.server.http.openapi`): the schemas of
request and response bodies (V2 per the KServe / Triton specification, TF Serving's REST bodies),
the error responses with their statuses, shared parameters and the optional API key schemes."""

from __future__ import annotations

from typing import Any

from mserve.protocol import DATATYPES, MAX_DIMS

Doc = dict[str, Any]

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


def ref(kind: str, name: str) -> Doc:
    """A reference to a component of this document."""
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> Doc:
    """A reference to a schema of :data:`SCHEMAS`."""
    return ref("schemas", name)


def json_reply(schema: Doc, description: str) -> Doc:
    """A response whose body is JSON of ``schema``."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def obj(required: list[str], **properties: Doc) -> Doc:
    """An object schema."""
    out: Doc = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def array(items: Doc, **extra: Any) -> Doc:
    """An array schema."""
    return {"type": "array", "items": items, **extra}


STRING: Doc = {"type": "string"}
INTEGER: Doc = {"type": "integer"}
BOOLEAN: Doc = {"type": "boolean"}
NUMBER: Doc = {"type": "number"}

#: An element of tensor data as JSON carries it: a number (null for NaN), a boolean, a string,
#: or BYTES as ``{"b64": ...}``.
ELEMENT: Doc = {
    "anyOf": [
        {"type": "number", "nullable": True},
        BOOLEAN,
        STRING,
        obj(["b64"], b64={"type": "string", "format": "byte"}),
    ]
}

SCHEMAS: Doc = {
    "Error": obj(
        ["error"], error={"type": "string", "description": "what was wrong and what was expected"}
    ),
    "Datatype": {"type": "string", "enum": list(DATATYPES)},
    "Parameters": {
        "type": "object",
        "description": "request or tensor parameters, e.g. binary_data_size, binary_data, "
        "binary_data_output, timeout (microseconds)",
        "additionalProperties": {"anyOf": [STRING, NUMBER, BOOLEAN]},
    },
    "TensorData": {
        "type": "array",
        "description": "the elements in row-major order, flat or nested as the shape",
        "items": {"anyOf": [ELEMENT, array(ELEMENT)]},
    },
    "RequestInput": obj(
        ["name", "shape", "datatype"],
        name={"type": "string", "minLength": 1},
        shape=array({"type": "integer", "minimum": 0}, maxItems=MAX_DIMS),
        datatype=schema_ref("Datatype"),
        parameters=schema_ref("Parameters"),
        data=schema_ref("TensorData"),
    ),
    "RequestOutput": obj(["name"], name=STRING, parameters=schema_ref("Parameters")),
    "InferenceRequest": obj(
        ["inputs"],
        id=STRING,
        parameters=schema_ref("Parameters"),
        inputs=array(schema_ref("RequestInput"), minItems=1),
        outputs=array(schema_ref("RequestOutput")),
    )
    | {
        "example": {
            "id": "42",
            "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
            "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": False}}],
        }
    },
    "ResponseOutput": obj(
        ["name", "shape", "datatype"],
        name=STRING,
        shape=array(INTEGER),
        datatype=schema_ref("Datatype"),
        parameters=schema_ref("Parameters"),
        data=array(ELEMENT),
    ),
    "InferenceResponse": obj(
        ["model_name", "outputs"],
        model_name=STRING,
        model_version=STRING,
        id=STRING,
        parameters=schema_ref("Parameters"),
        outputs=array(schema_ref("ResponseOutput")),
    ),
    "TensorMetadata": obj(
        ["name", "datatype", "shape"],
        name=STRING,
        datatype=schema_ref("Datatype"),
        shape=array({"type": "integer", "minimum": -1}, description="-1: a free dimension"),
    ),
    "ServerMetadata": obj(
        ["name", "version", "extensions"], name=STRING, version=STRING, extensions=array(STRING)
    ),
    "ModelMetadata": obj(
        ["name", "versions", "platform", "inputs", "outputs"],
        name=STRING,
        versions=array(STRING),
        platform=STRING,
        inputs=array(schema_ref("TensorMetadata")),
        outputs=array(schema_ref("TensorMetadata")),
    ),
    "ModelConfig": {
        "type": "object",
        "description": "the effective configuration in Triton's model-configuration shape",
        "required": ["name", "platform", "backend", "max_batch_size", "input", "output"],
        "properties": {
            "name": STRING,
            "platform": STRING,
            "backend": STRING,
            "max_batch_size": INTEGER,
            "version_policy": {"type": "object"},
            "input": array(
                obj(
                    ["name", "data_type", "dims"],
                    name=STRING,
                    data_type=STRING,
                    dims=array(INTEGER),
                )
            ),
            "output": array(
                obj(
                    ["name", "data_type", "dims"],
                    name=STRING,
                    data_type=STRING,
                    dims=array(INTEGER),
                )
            ),
            "instance_group": array({"type": "object"}),
            "dynamic_batching": {"type": "object"},
        },
    },
    "Duration": obj(["count", "ns"], count=INTEGER, ns=INTEGER),
    "ModelStatistics": obj(
        ["model_stats"],
        model_stats=array(
            obj(
                ["name", "version", "inference_count", "execution_count", "inference_stats"],
                name=STRING,
                version=STRING,
                last_inference=INTEGER,
                inference_count=INTEGER,
                execution_count=INTEGER,
                inference_stats={"type": "object", "additionalProperties": schema_ref("Duration")},
                batch_stats=array({"type": "object"}),
            )
        ),
    ),
    "RepositoryIndexRequest": obj([], ready={"type": "boolean", "default": False}),
    "RepositoryIndex": array(
        obj(
            ["name", "state"],
            name=STRING,
            version=STRING,
            state={"type": "string", "enum": ["READY", "LOADING", "UNAVAILABLE"]},
            reason=STRING,
        )
    ),
    "RepositoryModelRequest": obj(
        [], parameters={"type": "object", "description": "none are supported: leave it empty"}
    ),
    "TfPredictRequest": {
        "type": "object",
        "description": "exactly one of 'instances' (rows, stacked along a new first dimension) "
        "and 'inputs' (columns: the tensor, or an object of named tensors)",
        "properties": {
            "signature_name": {"type": "string", "enum": ["serving_default", ""]},
            "instances": {"type": "array", "minItems": 1, "items": {}},
            "inputs": {},
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        "example": {"instances": [[1.0, 2.0], [3.0, 4.0]]},
    },
    "TfPredictResponse": {
        "type": "object",
        "description": "'predictions' answers rows, 'outputs' answers columns",
        "properties": {"predictions": array({}), "outputs": {}},
    },
    "TfExamplesRequest": obj(
        ["examples"],
        signature_name={"type": "string", "enum": ["serving_default", ""]},
        context={"type": "object", "description": "features every example shares"},
        examples=array(
            {"type": "object", "description": "feature name -> value or flat list"}, minItems=1
        ),
    )
    | {"example": {"examples": [{"INPUT": [1.0, 2.0]}]}},
    "TfClassifyResponse": obj(
        ["results"],
        results=array(array(array({"anyOf": [STRING, NUMBER]}, minItems=2, maxItems=2))),
    ),
    "TfRegressResponse": obj(["results"], results=array(NUMBER)),
    "TfModelStatus": obj(
        ["model_version_status"],
        model_version_status=array(
            obj(
                ["version", "state", "status"],
                version=STRING,
                state=STRING,
                status=obj([], error_code=STRING, error_message=STRING),
            )
        ),
    ),
    "TfModelMetadata": obj(
        ["model_spec", "metadata"], model_spec={"type": "object"}, metadata={"type": "object"}
    ),
    "DashboardData": obj(
        ["server", "models", "points"],
        server={"type": "object"},
        models=array(STRING),
        points=array({"type": "object"}),
    ),
}

_ERROR = {JSON: {"schema": schema_ref("Error")}}


def _error(description: str, **headers: Doc) -> Doc:
    out: Doc = {"description": description, "content": _ERROR}
    if headers:
        out["headers"] = headers
    return out


RESPONSES: Doc = {
    "BadRequest": _error(
        "the request cannot be accepted as sent: the message says what was expected"
    ),
    "Unauthorized": _error(
        "API keys are on and the request carries none, or an unknown one",
        **{"WWW-Authenticate": {"schema": STRING}},
    ),
    "Forbidden": _error("the key lacks the scope this route needs, or the API is turned off"),
    "NotFound": _error("no such model, version or route"),
    "PayloadTooLarge": _error("the body is over the limit (--max-body-mb)"),
    "HeadersTooLarge": _error("the request line and headers are over the limit"),
    "Unavailable": _error(
        "the model is not ready, its queue is full (retry after Retry-After seconds), or the "
        "server is at its connection limit",
        **{"Retry-After": {"schema": INTEGER}},
    ),
    "DeadlineExceeded": _error(
        "the request's deadline (the queue's timeout, X-Request-Timeout "
        "or the 'timeout' parameter) passed before it was computed"
    ),
    "NotImplemented": _error("the model cannot answer this method (use :predict)"),
    "ModelFailure": _error("the model raised while computing"),
}

ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    413: "PayloadTooLarge",
    431: "HeadersTooLarge",
    500: "ModelFailure",
    501: "NotImplemented",
    503: "Unavailable",
    504: "DeadlineExceeded",
}

PATH = {"in": "path", "required": True}
PARAMETERS: Doc = {
    "ModelName": {
        **PATH,
        "name": "model_name",
        "schema": {"type": "string", "pattern": MODEL_NAME},
    },
    "ModelVersion": {
        **PATH,
        "name": "model_version",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Label": {**PATH, "name": "label", "schema": {"type": "string", "minLength": 1}},
    "HeaderLength": {
        "in": "header",
        "name": HEADER_LENGTH,
        "description": "binary tensor extension: the length of the JSON header at the start of "
        "the body (binary tensor data follows it); 0: the body is the raw data of the model's "
        "only input",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Timeout": {
        "in": "header",
        "name": "X-Request-Timeout",
        "description": "seconds the answer stays useful; past it: 504, uncomputed",
        "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
        "example": 2.5,
    },
}

#: optional API keys: no key at all when the server has none
SECURITY: list[Doc] = [{}, {"bearerAuth": []}, {"apiKeyHeader": []}]
SECURITY_SCHEMES: Doc = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key, when the server has any (--api-keys)",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
