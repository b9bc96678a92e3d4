"""Property tests of the protocol decoders: whatever bytes or documents arrive, each decoder
either returns a well-formed request or raises an InvalidRequest whose message says what was
expected; never another exception, never a hang.

Covered: V2 REST (JSON bodies, binary tensors after an Inference-Header-Content-Length JSON
header, raw binary bodies), TF Serving's REST bodies (rows, columns, examples, b64) and V2 gRPC
(built ModelInferRequest messages, and mutated serialised ones parsed as the server parses them).

``MSERVE_FUZZ_EXAMPLES=N`` runs N cases per property (default 300, so the whole file takes a few
seconds); ``MSERVE_FUZZ_REPORT=FILE`` appends one JSON line per property with the cases run and
the seconds they took. Runs are derandomised: the same cases every time.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mserve.errors import InvalidRequest
from mserve.protocol import (
    DATATYPES,
    MAX_DIMS,
    InferRequest,
    Tensor,
    TensorSpec,
    element_size,
)
from mserve.server.grpc import codec as grpc_codec
from mserve.server.http import codec
from mserve.server.http import tfserving_codec as tfc
from mserve.wire import inference_pb2 as pb

EXAMPLES = int(os.environ.get("MSERVE_FUZZ_EXAMPLES", "300"))

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases on every run, so CI is reproducible
    database=None,  # nothing written into the working tree
    deadline=timedelta(seconds=5),  # a decoder taking seconds on a small body is a bug
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the counter is meant to span the cases
    ],
)

T = TypeVar("T")
NAMES = ["INPUT", "INPUT0", "INPUT1", "x", "text"]
TYPES = list(DATATYPES)


# -- counting -------------------------------------------------------------------------------------


class Cases:
    """How many cases each property ran and for how long."""

    def __init__(self) -> None:
        self.count = 0
        self.started = time.perf_counter()

    def run(self, decode: Callable[[], T]) -> T | None:
        """Call a decoder: its result, or None when it refused the input as it should."""
        self.count += 1
        try:
            return decode()
        except InvalidRequest as exc:
            message = exc.message
        assert message.strip(), "an error without a message"
        return None


@pytest.fixture
def cases(request: pytest.FixtureRequest) -> Iterator[Cases]:
    """Counts the cases of one property; reports them when MSERVE_FUZZ_REPORT names a file."""
    c = Cases()
    yield c
    seconds = time.perf_counter() - c.started
    line = {"test": request.node.name, "cases": c.count, "seconds": round(seconds, 3)}
    print(f"fuzz {line['test']}: {c.count} cases in {seconds:.2f} s")
    path = os.environ.get("MSERVE_FUZZ_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


# -- strategies: JSON -----------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 300),
    finite,
    st.floats(),
    st.text(max_size=6),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


class Deep:
    """A value inside ``depth`` nested lists, kept flat until it is written as JSON (Python's
    own JSON encoder would recurse as deep)."""

    def __init__(self, value: Any, depth: int) -> None:
        self.value, self.depth = value, depth


def to_json(value: Any) -> bytes:
    """A document as JSON text; NaN and Infinity are written as Python does (and refused)."""
    if isinstance(value, Deep):
        return b"[" * value.depth + to_json(value.value) + b"]" * value.depth
    if isinstance(value, list):
        return b"[" + b",".join(to_json(v) for v in value) + b"]"
    if isinstance(value, dict):
        items = (json.dumps(str(k)).encode() + b":" + to_json(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    return json.dumps(value).encode()


nested = st.builds(Deep, scalars, st.integers(1, 1100))  # JSON parsers stop at 1024
anything = st.one_of(json_values, nested)

b64 = st.one_of(
    st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=6),
).map(lambda s: {"b64": s})
elements = st.one_of(
    st.integers(-3, 300),
    st.integers(-(2**65), 2**65),
    finite,
    st.booleans(),
    st.text(max_size=4),
    b64,
)
#: the most dimensions numpy holds is 32 (numpy 1) or 64 (numpy 2); beyond, and products too
#: large for memory even with a zero among them, are what shape checks must refuse
huge_shapes = st.one_of(
    st.tuples(st.just(0), st.integers(2**31, 2**62)).map(list),
    st.tuples(st.just(0), st.integers(2**31, 2**40), st.integers(2**31, 2**40)).map(list),
    st.integers(30, 70).map(lambda n: [1] * n),
)
shapes = st.one_of(
    st.lists(st.integers(-2, 2**70) | st.booleans() | st.floats(0, 3) | st.text(max_size=2)),
    huge_shapes,
    anything,
)
PARTS = ["nothing", "name", "datatype", "shape", "data", "parameters"]


def values_of(datatype: object) -> st.SearchStrategy[Any]:
    """Elements for a tensor of a datatype, mostly of its kind."""
    if datatype == "BYTES":
        return st.text(max_size=4) | b64
    if datatype == "BOOL":
        return st.booleans()
    if datatype in ("FP16", "FP32", "FP64"):
        return finite | st.integers(-3, 300) | st.floats(-1e39, 1e39)
    return st.integers(-3, 300) | st.integers(-(2**65), 2**65)


def small_shape(shape: object) -> bool:
    """A shape of at most 64 elements."""
    return (
        isinstance(shape, list)
        and len(shape) <= 8
        and all(type(d) is int and 0 <= d <= 64 for d in shape)
        and math.prod(shape) <= 64
    )


def element_count(shape: Any, draw: st.DrawFn) -> int:
    """The elements of a small shape, else a few (the data is wrong anyway)."""
    return math.prod(shape) if small_shape(shape) else draw(st.integers(0, 4))


def nest(flat: list[Any], shape: list[int]) -> Any:
    """Flat values as nested lists of a shape."""
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def tensor_docs(draw: st.DrawFn, binary: bool = False) -> tuple[dict[str, Any], bytes]:
    """An input tensor of a V2 body, and the binary data it refers to (if any): well-formed but
    for one part at most."""
    broken = draw(st.sampled_from(PARTS))
    datatype = draw(anything if broken == "datatype" else st.sampled_from(TYPES))
    shape = draw(shapes if broken == "shape" else st.lists(st.integers(0, 3), max_size=3))
    count = element_count(shape, draw)
    doc: dict[str, Any] = {
        "name": draw(anything if broken == "name" else st.sampled_from(NAMES)),
        "datatype": datatype,
        "shape": shape,
    }
    if broken == "parameters":
        doc["parameters"] = draw(anything)
    raw = b""
    if binary and draw(st.booleans()):
        raw = draw(raw_data(datatype, count, exact=broken != "data"))
        size = len(raw) if broken != "data" else draw(st.integers(-2, 2**66) | anything)
        params = doc.setdefault("parameters", {})
        if isinstance(params, dict):
            params["binary_data_size"] = size
        return doc, raw
    values = draw(st.lists(values_of(datatype), min_size=count, max_size=count))
    if broken == "data":
        values = draw(st.lists(elements, max_size=count + 2) | anything | nested)
    nestable = small_shape(shape) and isinstance(values, list) and len(values) == count > 0
    doc["data"] = nest(values, shape) if nestable and draw(st.booleans()) else values
    if broken == "data" and draw(st.integers(0, 4)) == 0:
        del doc["data"]
    return doc, raw


@st.composite
def raw_data(draw: st.DrawFn, datatype: object, count: int, exact: bool = True) -> bytes:
    """The raw encoding of ``count`` elements of a datatype or, unless ``exact``, bytes of
    another length or cut short."""
    if datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=5), min_size=count, max_size=count))
        raw = b"".join(struct.pack("<I", len(b)) + b for b in items)
        return raw if exact else draw(st.binary(max_size=24) | st.just(raw[:-1]))
    size = element_size(datatype) if isinstance(datatype, str) and datatype in DATATYPES else 1
    if exact:
        return draw(st.binary(min_size=count * size, max_size=count * size))
    return draw(st.binary(max_size=24))


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A V2 infer body and its Inference-Header-Content-Length (None: all JSON)."""
    binary = draw(st.booleans())
    tensors = draw(st.lists(tensor_docs(binary), min_size=1, max_size=3))
    doc: dict[str, Any] = {"inputs": [t for t, _ in tensors]}
    for key, values in (
        ("outputs", st.lists(st.fixed_dictionaries({"name": st.sampled_from(NAMES)})) | anything),
        ("parameters", st.dictionaries(st.text(max_size=4), anything) | anything),
        ("id", st.text(max_size=4) | anything),
    ):
        if draw(st.booleans()):
            doc[key] = draw(values)
    top = draw(st.just(doc) | st.just(doc) | anything)
    header = to_json(top)
    if not binary:
        return header, None
    tail = b"".join(raw for _, raw in tensors) + draw(st.just(b"") | st.binary(max_size=4))
    length = draw(st.just(len(header)) | st.integers(-3, len(header) + len(tail) + 3))
    return header + tail, length


# -- V2 REST --------------------------------------------------------------------------------------


def check_tensor(t: Tensor) -> None:
    """A decoded tensor: a V2 datatype, data of its numpy type, BYTES elements as bytes."""
    assert isinstance(t, Tensor)
    assert isinstance(t.name, str)
    assert t.datatype in DATATYPES
    assert isinstance(t.data, np.ndarray)
    assert t.data.dtype == DATATYPES[t.datatype]
    assert t.data.ndim <= MAX_DIMS
    if t.datatype == "BYTES":
        assert all(isinstance(v, bytes) for v in t.data.flat)
    assert isinstance(t.parameters, dict)


def check_request(req: InferRequest) -> None:
    """A decoded request: inputs, outputs and parameters of the right types."""
    assert isinstance(req, InferRequest)
    assert req.inputs
    for t in req.inputs:
        check_tensor(t)
    assert req.outputs is None or all(
        isinstance(o.name, str) and isinstance(o.parameters, dict) for o in req.outputs
    )
    assert req.id is None or isinstance(req.id, str)
    assert isinstance(req.parameters, dict)


@FUZZ
@given(body=infer_bodies())
def test_v2_infer_bodies_decode_or_are_refused(
    cases: Cases, body: tuple[bytes, int | None]
) -> None:
    data, length = body
    req = cases.run(lambda: codec.decode_infer(data, length, "m", None))
    if req is not None:
        check_request(req)
        if length is None:
            declared = orjson.loads(data)["inputs"]
            assert [list(t.data.shape) for t in req.inputs] == [d["shape"] for d in declared]


@FUZZ
@given(data=st.binary(max_size=64), length=st.none() | st.integers(-2, 70))
def test_v2_infer_bytes_decode_or_are_refused(
    cases: Cases, data: bytes, length: int | None
) -> None:
    req = cases.run(lambda: codec.decode_infer(data, length, "m", None))
    if req is not None:
        check_request(req)


specs = st.builds(
    TensorSpec,
    st.sampled_from(NAMES),
    st.sampled_from(TYPES),
    st.lists(st.integers(-1, 3), max_size=3).map(tuple),
)


@FUZZ
@given(spec=specs, data=st.data())
def test_v2_raw_bodies_decode_or_are_refused(cases: Cases, spec: TensorSpec, data: Any) -> None:
    body = data.draw(raw_data(spec.datatype, data.draw(st.integers(0, 6))))
    req = cases.run(lambda: codec.decode_raw(body, spec, "m", None))
    if req is not None:
        check_request(req)
        [t] = req.inputs
        assert (t.name, t.datatype) == (spec.name, spec.datatype)
        assert len(t.data.shape) == len(spec.shape)
        assert all(d < 0 or d == g for d, g in zip(spec.shape, t.data.shape, strict=True))


# -- TF Serving REST ------------------------------------------------------------------------------

SIGNATURES = [
    [TensorSpec("x", "FP32", (-1, 3))],
    [TensorSpec("a", "INT64", (-1, 2)), TensorSpec("b", "FP32", (-1,))],
    [TensorSpec("text", "BYTES", (-1,))],
    [TensorSpec("s", "FP32", ())],
    [TensorSpec("u", "UINT8", (-1, 2, 2))],
]
signatures = st.sampled_from(SIGNATURES) | st.lists(specs, min_size=1, max_size=3)


@st.composite
def tf_rows(draw: st.DrawFn, specs: list[TensorSpec], flat: bool = False) -> Any:
    """Rows for the signature (named when it has several inputs), or something else."""
    n = draw(st.integers(0, 3))

    def value(spec: TensorSpec) -> Any:
        row = [d if d >= 0 else draw(st.integers(0, 2)) for d in spec.shape[1:]]
        count = math.prod(row)
        kind = draw(st.sampled_from([values_of(spec.datatype)] * 4 + [elements, anything]))
        values = draw(st.lists(kind, min_size=count, max_size=count))
        return values if flat else nest(values, row) if row else draw(kind)

    if len(specs) == 1 and draw(st.booleans()):
        rows = [value(specs[0]) for _ in range(n)]
    else:
        rows = [{s.name: value(s) for s in specs} for _ in range(n)]
    return draw(st.just(rows) | anything)


@st.composite
def tf_predict_docs(draw: st.DrawFn, specs: list[TensorSpec]) -> Any:
    """A :predict body: rows, columns, both or neither, perhaps a signature name."""
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["instances"] = draw(tf_rows(specs))
    if draw(st.booleans()):
        doc["inputs"] = draw(tf_rows(specs) | st.dictionaries(st.sampled_from(NAMES), anything))
    if draw(st.integers(0, 4)) == 0:
        doc["signature_name"] = draw(st.sampled_from(["serving_default", "", "other"]) | anything)
    return draw(st.just(doc) | st.just(doc) | anything)


def check_tf(tensors: list[Tensor], specs: list[TensorSpec], rows: bool) -> None:
    """Decoded TF Serving tensors: named inputs of the signature, in their datatypes; rows
    stacked to the input's rank, fitting its fixed dimensions."""
    by_name = {s.name: s for s in specs}
    for t in tensors:
        check_tensor(t)
        spec = by_name[t.name]
        assert t.datatype == spec.datatype
        if rows:
            assert t.data.ndim == len(spec.shape)
            assert all(
                d < 0 or d == g for d, g in zip(spec.shape[1:], t.data.shape[1:], strict=True)
            )


@FUZZ
@given(data=st.data())
def test_tfserving_predict_bodies_decode_or_are_refused(cases: Cases, data: Any) -> None:
    specs = data.draw(signatures)
    body = to_json(data.draw(tf_predict_docs(specs)))
    verb = data.draw(st.sampled_from(["predict", "classify", "regress"]))

    def decode() -> tuple[list[Tensor], bool]:
        doc = tfc.parse_body(body, verb)
        if verb == "predict":
            return tfc.decode_predict(doc, specs, "m")
        return tfc.decode_examples(doc, specs, "m"), True

    got = cases.run(decode)
    if got is not None:
        check_tf(got[0], specs, got[1])


@FUZZ
@given(data=st.data())
def test_tfserving_examples_decode_or_are_refused(cases: Cases, data: Any) -> None:
    specs = data.draw(signatures)
    doc: dict[str, Any] = {"examples": data.draw(tf_rows(specs, flat=True))}
    if data.draw(st.booleans()):
        doc["context"] = data.draw(st.dictionaries(st.sampled_from(NAMES), elements) | anything)
    body = to_json(doc)
    got = cases.run(lambda: tfc.decode_examples(codec.loads(body), specs, "m"))
    if got is not None:
        check_tf(got, specs, True)


@FUZZ
@given(body=st.binary(max_size=48), specs=signatures)
def test_tfserving_bytes_decode_or_are_refused(
    cases: Cases, body: bytes, specs: list[TensorSpec]
) -> None:
    got = cases.run(lambda: tfc.decode_predict(tfc.parse_body(body, "predict"), specs, "m"))
    if got is not None:
        check_tf(got[0], specs, got[1])


# -- V2 gRPC --------------------------------------------------------------------------------------

int64s = st.integers(-(2**63), 2**63 - 1)
param_values = st.one_of(
    st.booleans(), int64s, st.text(max_size=4), st.floats(), st.integers(0, 2**64 - 1)
)


def set_param(p: Any, value: object, unsigned: bool) -> None:
    """Set an InferParameter to a value of the fitting kind."""
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        if unsigned and value >= 0:
            p.uint64_param = value
        else:
            p.int64_param = max(-(2**63), min(value, 2**63 - 1))
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


CONTENTS: dict[str, Any] = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": int64s,
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=4),
}


GRPC_PARTS = ["nothing", "model", "datatype", "shape", "contents", "raw"]


@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A ModelInferRequest: well-formed but for one part at most."""
    broken = draw(st.sampled_from(GRPC_PARTS))
    req = pb.ModelInferRequest(
        model_name=draw(st.text(max_size=3) if broken == "model" else st.just("m")),
        model_version=draw(st.sampled_from(["", "1"]) | st.text(max_size=3)),
        id=draw(st.text(max_size=3)),
    )
    for key, value in draw(st.dictionaries(st.text(max_size=3), param_values, max_size=2)).items():
        set_param(req.parameters[key], value, draw(st.booleans()))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(1, 3))):
        datatype = draw(st.text(max_size=5) if broken == "datatype" else st.sampled_from(TYPES))
        shape = draw(
            st.lists(int64s, max_size=4) | huge_shapes
            if broken == "shape"
            else st.lists(st.integers(0, 3), max_size=3)
        )
        t = req.inputs.add(name=draw(st.sampled_from(NAMES) | st.text(max_size=3)))
        t.datatype = datatype
        t.shape.extend(shape)
        count = element_count(shape, draw)
        if raw:
            req.raw_input_contents.append(draw(raw_data(datatype, count, broken != "raw")))
        if not raw or broken == "contents":
            field = grpc_codec.CONTENTS_FIELD.get(datatype, "fp32_contents")
            n = count
            if broken == "contents":
                field = draw(st.sampled_from([field, *sorted(CONTENTS)]))
                n = draw(st.just(count) | st.integers(0, 5))
            values = draw(st.lists(CONTENTS[field], min_size=n, max_size=n))
            getattr(t.contents, field).extend(values)
        params = draw(st.dictionaries(st.text(max_size=3), param_values, max_size=1))
        for key, value in params.items():
            set_param(t.parameters[key], value, draw(st.booleans()))
    if broken == "raw" and draw(st.booleans()):
        req.raw_input_contents.append(draw(st.binary(max_size=4)))
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=2)):
        req.outputs.add(name=name)
    return req


def check_grpc(req: InferRequest) -> None:
    """A decoded gRPC request; one without inputs passes the codec (the model refuses it)."""
    assert req.model_name
    if req.inputs:
        check_request(req)


@FUZZ
@given(message=grpc_requests())
def test_grpc_requests_decode_or_are_refused(cases: Cases, message: pb.ModelInferRequest) -> None:
    req = cases.run(lambda: grpc_codec.decode_infer(message))
    if req is not None:
        check_grpc(req)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A serialised ModelInferRequest with bytes flipped, cut out or put in."""
    data = bytearray(draw(grpc_requests()).SerializeToString())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "put"]))
        if action == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@FUZZ
@given(data=mutated() | st.binary(max_size=64))
def test_grpc_bytes_parse_and_decode_or_are_refused(cases: Cases, data: bytes) -> None:
    try:
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError:  # the transport answers this itself, before the codec
        cases.count += 1
        return
    req = cases.run(lambda: grpc_codec.decode_infer(message))
    if req is not None:
        check_grpc(req)


# -- what the fuzzing found ---------------------------------------------------------------------


def v2(shape: Any, data: Any = None, datatype: str = "FP32", binary: bytes | None = None) -> Any:
    """A V2 infer call of one tensor (binary when ``binary`` is given)."""
    tensor: dict[str, Any] = {"name": "x", "datatype": datatype, "shape": shape}
    if binary is None:
        tensor["data"] = data
    else:
        tensor["parameters"] = {"binary_data_size": len(binary)}
    header = orjson.dumps({"inputs": [tensor]})
    length = None if binary is None else len(header)
    return lambda: codec.decode_infer(header + (binary or b""), length, "m", None)


def tf(doc: Any, spec: TensorSpec) -> Any:
    """A TF Serving :predict call on a one-input signature (``doc`` may be JSON text)."""
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return lambda: tfc.decode_predict(tfc.parse_body(body, "predict"), [spec], "m")


def grpc(shape: list[int], datatype: str = "FP32", raw: bytes = b"") -> Any:
    """A gRPC call of one tensor with raw contents."""
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[raw])
    message.inputs.add(name="x", datatype=datatype, shape=shape)
    return lambda: grpc_codec.decode_infer(message)


def deep(key: str, depth: int, value: str = "1") -> bytes:
    """A body whose ``key`` holds ``value`` inside ``depth`` lists, as JSON text."""
    return b'{"%s": ' % key.encode() + b"[" * depth + value.encode() + b"]" * depth + b"}"


FOUND = [
    pytest.param(
        v2([1], [{"b64": "\u00e9"}], "BYTES"),
        "element 0 is not valid base64",
        id="v2-b64-not-ascii",
    ),
    pytest.param(v2([0, 2**40, 2**40], []), "is too large", id="v2-empty-but-huge-shape"),
    pytest.param(v2([1] * 70, [1.0]), "expected at most 32", id="v2-70-dimensions"),
    pytest.param(
        v2([0, 2**40, 2**40], binary=b""), "is too large", id="v2-binary-empty-but-huge-shape"
    ),
    pytest.param(
        v2([1] * 70, datatype="BYTES", binary=b"\x01\0\0\0a"),
        "expected at most 32",
        id="v2-binary-bytes-70-dimensions",
    ),
    pytest.param(
        tf({"instances": [{"b64": "\u00e9"}]}, TensorSpec("x", "BYTES", (-1,))),
        "element 0 is not valid base64",
        id="tf-b64-not-ascii",
    ),
    pytest.param(
        tf(deep("instances", 1020), TensorSpec("x", "FP32", (-1,))),
        "nest deeper than 32",
        id="tf-1020-deep-recursion",
    ),
    pytest.param(
        tf(deep("instances", 100, '"a"'), TensorSpec("x", "BYTES", (-1,))),
        "nest deeper than 32",
        id="tf-bytes-100-deep",
    ),
    pytest.param(
        tf(deep("inputs", 40), TensorSpec("x", "FP32", (-1,))),
        "nest deeper than 32",
        id="tf-columns-40-deep",
    ),
    pytest.param(grpc([0, 2**62]), "is too large", id="grpc-empty-but-huge-shape"),
    pytest.param(grpc([1] * 70, raw=b"\0" * 4), "expected at most 32", id="grpc-70-dimensions"),
]


@pytest.mark.parametrize(("decode", "fragment"), FOUND)
def test_inputs_the_fuzzing_found_are_refused_with_what_was_expected(
    decode: Callable[[], Any], fragment: str
) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        decode()
