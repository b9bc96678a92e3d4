"""The OpenAPI document at ``/openapi.json`` of a live server: valid, complete (every route the
server answers is in it, and every route in it is answered), and true: schemathesis fuzzes each
operation against it, and no request, however malformed, is answered with a 5xx, an undocumented
status or a body unlike its schema.

``MSERVE_FUZZ_EXAMPLES=N`` scales the fuzzing (N / 30 cases per operation for schemathesis' own
generation, N router probes; default 300); ``MSERVE_FUZZ_REPORT=FILE`` appends one JSON line per
test with the requests sent and the seconds they took. Runs are derandomised.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mserve.config import ModelConfig
from mserve.protocol import TensorSpec
from mserve.server.http import openapi
from mserve.server.http.app import scope_of

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("MSERVE_FUZZ_EXAMPLES", "300"))
PER_OPERATION = max(3, EXAMPLES // 30)
#: what every response is checked for: no 5xx (but 501, a TF Serving method the model cannot
#: answer, and 504, an X-Request-Timeout that passed), and a status, content type and body the
#: document describes
CHECKS = {
    "enabled": False,
    "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "4xx", "501", "504"]},
    "status_code_conformance": {"enabled": True},
    "content_type_conformance": {"enabled": True},
    "response_schema_conformance": {"enabled": True},
}

#: the models the fuzzed server serves, by what their path parameters may name
IDENTITIES = ("FP32", "FP16", "INT8", "UINT64", "BOOL", "BYTES")
SERVED = [f"identity_{t.lower()}" for t in IDENTITIES] + ["addsub", "plus_one"]
UNKNOWN = "no_such_model"  # never in the repository: load / unload of it change nothing


def templates(document: dict[str, Any]) -> list[tuple[str, re.Pattern[str]]]:
    """(method, path regex) of every documented operation."""
    out = []
    for path, item in document["paths"].items():
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path))
        out.extend((method.upper(), re.compile(f"^{pattern}/?$")) for method in item)
    return out


DOCUMENT = openapi.document()  # what the server serves (the first test checks that)
ROUTES = templates(DOCUMENT)


def documented(method: str, path: str) -> bool:
    return any(m == method and p.match(path) for m, p in ROUTES)


class Tally:
    """Requests sent by one test, their statuses and how long they took; reported like the
    decoder fuzzing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.statuses: Counter[int] = Counter()
        self.started = time.perf_counter()

    def add(self, status: int) -> None:
        self.count += 1
        self.statuses[status] += 1

    def report(self) -> None:
        seconds = time.perf_counter() - self.started
        statuses = dict(sorted(self.statuses.items()))
        print(f"fuzz {self.name}: {self.count} cases in {seconds:.2f} s; statuses {statuses}")
        path = os.environ.get("MSERVE_FUZZ_REPORT")
        if path:
            line = {
                "test": self.name,
                "cases": self.count,
                "seconds": round(seconds, 3),
                "statuses": statuses,
            }
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """The tally of one test, reported at its end."""
    c = Tally(request.node.name)
    yield c
    c.report()


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, start_server: Any, onnx_factory: Any, place: Any
) -> Any:
    """A server of tiny models: an identity per datatype family (identity_fp32 classifies, its
    FP32 [-1, 2] output read as class scores), two inputs and outputs, and one that regresses
    (plus_one, FP32 [-1, 1])."""
    root: Path = tmp_path_factory.mktemp("openapi-models")
    for datatype in IDENTITIES:
        place(root, f"identity_{datatype.lower()}", {1: onnx_factory.identity(datatype)})
    addsub = ModelConfig(
        name="addsub",
        inputs=(TensorSpec("INPUT0", "FP32", (-1, 4)), TensorSpec("INPUT1", "FP32", (-1, 4))),
        outputs=(TensorSpec("OUTPUT0", "FP32", (-1, 4)), TensorSpec("OUTPUT1", "FP32", (-1, 4))),
        max_batch_size=8,
    )
    place(root, "addsub", {1: onnx_factory.add_sub()}, config=addsub)
    place(root, "plus_one", {1: onnx_factory.add_const(1.0)})
    return start_server(root)


@pytest.fixture(scope="module")
def document(api: Any) -> dict[str, Any]:
    reply = api.request("GET", "/openapi.json")
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    doc: dict[str, Any] = reply.json()
    return doc


def test_the_document_is_valid_openapi_that_schemathesis_loads(document: dict[str, Any]) -> None:
    assert document == DOCUMENT
    assert document["openapi"].startswith("3.0")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI meta-schema
    operations = [op.ok() for op in schema.get_all_operations()]  # raises on a broken one
    assert len(operations) == sum(len(item) for item in document["paths"].values())
    bearer = document["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path in ("/v2/health/live", "/v2/health/ready", "/openapi.json"):
        assert document["paths"][path]["get"]["security"] == []  # open even with API keys


def test_every_operation_names_the_key_scope_the_server_checks() -> None:
    for path, item in DOCUMENT["paths"].items():
        parts = re.sub(r"\{[a-z_]+\}", "x", path).strip("/").split("/")
        for op in item.values():
            assert op.get("x-mserve-scope") == scope_of(parts), path
            assert (op.get("security") == []) == (scope_of(parts) is None), path


# -- every route --------------------------------------------------------------------------------


def no_route(reply: Any) -> bool:
    """The server has no route for the request (not merely no such model)."""
    return reply.status == 404 and reply.json()["error"].startswith("no route for ")


#: what a documented route is called with: its parameters, and a body that suits the model
FILLED = {
    "model_name": "identity_fp32",
    "model_version": "1",
    "label": "stable",
    "file": "dashboard.js",
}
CALLS = {
    "/infer": ("identity_fp32", {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 2],
                                             "data": [1, 2]}]}),
    ":predict": ("identity_fp32", {"instances": [[1.0, 2.0]]}),
    ":classify": ("identity_fp32", {"examples": [{"INPUT": [1.0, 2.0]}]}),
    ":regress": ("plus_one", {"examples": [{"INPUT": [1.0]}]}),
    "/load": (UNKNOWN, {}),  # load / unload must change nothing
    "/unload": (UNKNOWN, {}),
}  # fmt: skip


def test_every_documented_route_is_answered(api: Any, document: dict[str, Any]) -> None:
    for template, item in document["paths"].items():
        model, body = next((c for end, c in CALLS.items() if template.endswith(end)), ("", {}))
        names = {**FILLED, "model_name": model or FILLED["model_name"]}
        path = re.sub(r"\{([a-z_]+)\}", lambda m, names=names: names[m.group(1)], template)
        for method in item:
            reply = api.request(method.upper(), path, json.dumps(body) if method == "post" else "")
            assert not no_route(reply), (method, path)
            assert reply.status < 500, (method, path, reply.body)


#: what path parameters and extra segments are made of when probing the router (never empty:
#: a URL with '//' is outside the API, and the router reads an empty segment as an absent one)
SEGMENTS = [
    "identity_fp32", "plus_one", UNKNOWN, "1", "2", "01", "stats", "versions", "labels", "models",
    "ready", "infer", "metadata", "config", "index.html", "dashboard.js", "data", "v2", "v1", "x",
    "identity_fp32:predict", "plus_one:regress", "x:classify", ":predict",
]  # fmt: skip


EMPTY_VERSION = re.compile(r"/versions/(:|/|$)")
ANY = st.sampled_from(SEGMENTS)
LIKELY = {
    "model_name": st.sampled_from(["identity_fp32", "plus_one"]) | ANY,
    "model_version": st.just("1") | ANY,
}


@st.composite
def near_routes(draw: st.DrawFn, templates: list[str]) -> str:
    """A documented path filled in, then perhaps changed: a segment dropped, added or replaced."""
    template = draw(st.sampled_from(templates))
    filled = re.sub(r"\{([a-z_]+)\}", lambda m: draw(LIKELY.get(m.group(1), ANY)), template)
    segments = filled.strip("/").split("/")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(segments)))
        edit = draw(st.sampled_from(["drop", "add", "replace"]))
        if edit == "drop" and at < len(segments) and len(segments) > 1:
            del segments[at]
        elif edit == "add":
            segments.insert(at, draw(st.sampled_from(SEGMENTS)))
        elif at < len(segments):
            segments[at] = draw(st.sampled_from(SEGMENTS))
    if {"load", "unload"} & set(segments):  # never load or unload a served model
        segments = [UNKNOWN if s in SERVED else s for s in segments]
    return "/" + "/".join(segments)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(["GET", "POST"]), path=near_routes(sorted(DOCUMENT["paths"])))
def test_every_route_the_server_answers_is_documented(
    api: Any, tally: Tally, method: str, path: str
) -> None:
    if EMPTY_VERSION.search(path):
        return  # answered as the latest version: see test_an_empty_version_is_unknown below
    reply = api.request(method, path, "{}" if method == "POST" else "")
    tally.add(reply.status)
    assert reply.status < 500 or reply.status == 501, (method, path, reply.body)  # 501: :regress
    if reply.status != 404:  # answered: by a route that must be in the document
        assert documented(method, path.rstrip("/") or "/"), (method, path, reply.status)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/identity_fp32/versions//ready"),
        ("GET", "/v1/models/identity_fp32/versions//metadata"),
        ("POST", "/v1/models/identity_fp32/versions/:predict"),
    ],
)
def test_an_empty_version_is_unknown(api: Any, method: str, path: str) -> None:
    reply = api.request(method, path, json.dumps(CALLS[":predict"][1]))
    assert reply.status == 404, reply.body


def test_a_version_of_unicode_digits_is_unknown_not_a_crash(api: Any) -> None:
    for method, path in (
        ("GET", "/v2/models/identity_fp32/versions/%C2%B2"),
        ("POST", "/v2/models/identity_fp32/versions/%C2%B2/infer"),
    ):
        reply = api.request(method, path, json.dumps(CALLS["/infer"][1]))
        assert reply.status == 404, reply.body


def test_a_huge_request_timeout_is_no_crash(api: Any) -> None:
    model, body = CALLS["/infer"]
    reply = api.request(
        "POST", f"/v2/models/{model}/infer", json.dumps(body), {"X-Request-Timeout": "1e300"}
    )
    assert reply.status == 200, reply.body


# -- schemathesis -------------------------------------------------------------------------------


def narrowed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with model names narrowed to the served ones (and one unknown), so that
    generated requests reach the decoders and the models; repository routes keep the full
    pattern, so load / unload only ever name models that are not there. Unversioned V2 infer
    loses its Inference-Header-Content-Length header (else most bodies are read as raw binary)."""
    doc = copy.deepcopy(document)
    params = doc["components"]["parameters"]
    params["ServedModel"] = {**params["ModelName"], "schema": {"enum": [*SERVED, UNKNOWN]}}
    params["ModelVersion"]["schema"] = {"enum": ["1", "2"]}
    # JSON bodies reach the decoder and the model here; the versioned route fuzzes binary ones
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    infer["parameters"] = [p for p in infer["parameters"] if "HeaderLength" not in p["$ref"]]
    for path, item in doc["paths"].items():
        if path.startswith("/v2/repository/"):
            continue
        for op in item.values():
            for p in op.get("parameters", []):
                if p.get("$ref") == "#/components/parameters/ModelName":
                    p["$ref"] = "#/components/parameters/ServedModel"
    return doc


@pytest.fixture(scope="module")
def api_schema(api: Any, document: dict[str, Any]) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "base-url": api.process.url,
            "request-timeout": 10,
            "checks": CHECKS,
            "generation": {
                "max-examples": PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
        }
    )
    return schemathesis.openapi.from_dict(narrowed(document), config=config)


@pytest.fixture(scope="module")
def sent() -> Iterator[Tally]:
    """The tally of schemathesis' requests over every operation, reported at the end."""
    c = Tally("schemathesis")
    yield c
    c.report()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_no_request_gets_a_server_error_or_an_undocumented_answer(case: Any, sent: Tally) -> None:
    response = case.call_and_validate()
    sent.add(response.status_code)
