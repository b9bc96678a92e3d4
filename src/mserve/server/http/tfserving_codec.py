"""TF Serving's REST bodies <-> protocol types: rows, columns, examples, b64, status, metadata.

Pure functions of their inputs: no sockets, no model state. Requests become
:mod:`mserve.protocol` tensors in the model's datatypes; responses take TF Serving's shapes
(``predictions``, ``outputs``, ``results``, GetModelStatusResponse, GetModelMetadataResponse).
Every malformed body raises an :class:`~mserve.errors.InvalidRequest` that says what was
expected; a method a model cannot answer raises :class:`~mserve.errors.Unsupported` (501).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from mserve.errors import InvalidInput, InvalidRequest, MalformedRequest, Unsupported
from mserve.protocol import (
    DATATYPES,
    MAX_DIMS,
    TF_DATATYPES,
    RepositoryEntry,
    Tensor,
    TensorSpec,
)
from mserve.server.http import codec

SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


#: model state -> TF Serving's ModelVersionStatus.State
_STATES = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNAVAILABLE": "END"}
#: the model manager's reasons for UNAVAILABLE that are not failures
_NOT_FAILURES = ("", "unloaded", "not loaded")
_FLOATS = ("FP16", "FP32", "FP64")


# -- requests -----------------------------------------------------------------------------------


def parse_body(body: bytes, verb: str) -> dict[str, Any]:
    """The JSON object of a ``:verb`` request, its ``signature_name`` checked."""
    doc = codec.loads(body)
    if not isinstance(doc, dict):
        raise MalformedRequest(f"a :{verb} body must be a JSON object, got {type(doc).__name__}")
    signature = doc.get("signature_name")
    if signature not in (None, "", SIGNATURE):
        raise InvalidRequest(
            f"signature_name {signature!r} not found; the model has one signature, "
            f"'{SIGNATURE}' (or leave signature_name out)"
        )
    return doc


def decode_predict(
    doc: dict[str, Any], specs: Sequence[TensorSpec], model: str
) -> tuple[list[Tensor], bool]:
    """The input tensors of a ``:predict`` body and whether it used the row format.

    Row format: ``"instances"`` is a list of rows stacked along a new first dimension; a row is
    the value of the model's single input, or an object naming every input. Columnar format:
    ``"inputs"`` is the single input's tensor, or an object of named tensors, taken as they are.
    Numbers become the input's datatype; ``{"b64": ...}`` and strings fill BYTES inputs."""
    rows, cols = "instances" in doc, "inputs" in doc
    if rows == cols:
        raise MalformedRequest(
            "a :predict body needs exactly one of 'instances' (row format) or 'inputs' "
            "(columnar format)"
        )
    if rows:
        return decode_rows(doc["instances"], specs, model, "instances"), True
    value = doc["inputs"]
    by_name = {s.name: s for s in specs}
    if isinstance(value, dict) and not _is_b64(value):
        return [
            Tensor(name, _spec(by_name, name, model).datatype, _array(v, by_name[name], model))
            for name, v in value.items()
        ], False
    spec = _single(specs, model, "'inputs' must be an object of named tensors")
    return [Tensor(spec.name, spec.datatype, _array(value, spec, model))], False


def decode_rows(
    rows: object, specs: Sequence[TensorSpec], model: str, key: str, flat: bool = False
) -> list[Tensor]:
    """Rows (``instances``, or ``examples`` with ``flat``: features are flat lists, reshaped
    to each row's shape) stacked into one tensor per input."""
    if not isinstance(rows, list) or not rows:
        raise MalformedRequest(f"'{key}' must be a non-empty list")
    by_name = {s.name: s for s in specs}
    named = isinstance(rows[0], dict) and not _is_b64(rows[0])
    if named:
        names = list(rows[0])
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or _is_b64(row):
                raise MalformedRequest(
                    f"{key}[{i}] is not an object; when {key} name their inputs, every one must"
                )
            if set(row) != set(names):
                raise InvalidRequest(
                    f"{key}[{i}] names {', '.join(sorted(row))} but {key}[0] names "
                    f"{', '.join(sorted(names))}; every row must name the same inputs"
                )
        # a feature of an example is a flat list; a lone value is a list of one
        columns = {
            n: [row[n] if not flat or isinstance(row[n], list) else [row[n]] for row in rows]
            for n in names
        }
    else:
        spec = _single(specs, model, f"each of '{key}' must be an object naming them")
        columns = {spec.name: rows}
    out = []
    for name, values in columns.items():
        spec = _spec(by_name, name, model)
        arr = _array(values, spec, model, key)
        out.append(Tensor(name, spec.datatype, _fit_rows(arr, spec, model, key, flat)))
    return out


def decode_examples(doc: dict[str, Any], specs: Sequence[TensorSpec], model: str) -> list[Tensor]:
    """The input tensors of a ``:classify`` or ``:regress`` body: each example (merged with
    ``context``) maps feature names to values or flat lists, one feature per model input."""
    examples = doc.get("examples")
    context = doc.get("context", {})
    if not isinstance(context, dict):
        raise MalformedRequest("'context' must be an object of features")
    if not isinstance(examples, list) or not examples:
        raise MalformedRequest("a :classify or :regress body needs 'examples': a non-empty list")
    if context:
        merged = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise MalformedRequest(f"examples[{i}] must be an object of features")
            both = sorted(set(ex) & set(context))
            if both:
                raise InvalidRequest(
                    f"examples[{i}] repeats context feature(s) {', '.join(both)}; a feature "
                    "goes in the context or in the examples, not both"
                )
            merged.append({**context, **ex})
        examples = merged
    if not isinstance(examples[0], dict):
        raise MalformedRequest("examples[0] must be an object of features")
    return decode_rows(examples, specs, model, "examples", flat=True)


def _spec(by_name: dict[str, TensorSpec], name: str, model: str) -> TensorSpec:
    spec = by_name.get(name)
    if spec is None:
        raise InvalidInput(model, name, "no such input; the model expects " + _names(by_name))
    return spec


def _single(specs: Sequence[TensorSpec], model: str, hint: str) -> TensorSpec:
    if len(specs) != 1:
        raise InvalidRequest(
            f"model '{model}' has {len(specs)} inputs ({_names({s.name: s for s in specs})}); "
            + hint
        )
    return specs[0]


def _names(by_name: dict[str, TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in by_name.values())


def _is_b64(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _array(value: object, spec: TensorSpec, model: str, key: str = "inputs") -> np.ndarray:
    """A JSON value as an array of the input's datatype; ragged nesting says where."""
    if spec.datatype == "BYTES":
        shape, flat = _walk(value, spec, model, key)
        arr = np.empty(len(flat), dtype=object)
        for i, v in enumerate(flat):
            arr[i] = _element_bytes(v, i, spec, model)
        return arr.reshape(shape)
    try:
        natural = np.asarray(value)
    except ValueError as exc:
        _walk(value, spec, model, key)  # raises, naming the ragged place
        raise InvalidInput(model, spec.name, f"values do not form a tensor ({exc})") from None
    if natural.ndim > MAX_DIMS:
        _walk(value, spec, model, key)  # raises: nested too deep
    if natural.dtype.kind == "O":
        raise InvalidInput(model, spec.name, f"values must be numbers for {spec.datatype}")
    # a big unsigned integer among small ones reads as float64: let the V2 check see the JSON
    exact = DATATYPES[spec.datatype].kind in "iu" and natural.dtype.kind == "f"
    return codec.numbers_from_json(value if exact else natural, spec.datatype, spec.name, model)


def _walk(
    value: object, spec: TensorSpec, model: str, key: str
) -> tuple[tuple[int, ...], list[Any]]:
    """Shape and row-major elements of nested lists; InvalidInput where they are ragged."""

    def walk(v: object, where: str, depth: int) -> tuple[int, ...]:
        if not isinstance(v, list):
            flat.append(v)
            return ()
        if depth == MAX_DIMS:
            raise InvalidInput(
                model,
                spec.name,
                f"values nest deeper than {MAX_DIMS} lists; expected shape "
                f"{list(spec.shape)} (-1 is free)",
            )
        if not v:
            return (0,)
        first = walk(v[0], f"{where}[0]", depth + 1)
        for i, item in enumerate(v[1:], 1):
            got = walk(item, f"{where}[{i}]", depth + 1)
            if got != first:
                raise InvalidInput(
                    model,
                    spec.name,
                    f"ragged values: {where}[{i}] has shape {list(got)} but {where}[0] has "
                    f"shape {list(first)}; expected shape {list(spec.shape)} (-1 is free)",
                )
        return (len(v), *first)

    flat: list[Any] = []
    return walk(value, key, 0), flat


def _element_bytes(v: object, i: int, spec: TensorSpec, model: str) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, dict) and _is_b64(v):
        try:
            return base64.b64decode(v["b64"], validate=True)
        except ValueError as exc:  # binascii.Error, or text that is not ASCII
            raise InvalidInput(
                model, spec.name, f"element {i} is not valid base64 ({exc})"
            ) from None
    raise InvalidInput(
        model, spec.name, f'BYTES elements must be strings or {{"b64": ...}}, got {v!r}'
    )


def _fit_rows(arr: np.ndarray, spec: TensorSpec, model: str, key: str, flat: bool) -> np.ndarray:
    """Check that stacked rows fit the input's shape; with ``flat``, reshape flat features."""
    row = spec.shape[1:]
    if flat and all(d >= 0 for d in row) and arr.ndim >= 1:
        per_row = int(np.prod(row, dtype=np.int64))
        if arr.size == arr.shape[0] * per_row and arr.shape[1:] != row:
            arr = arr.reshape((arr.shape[0], *row))
    got = arr.shape[1:]
    fits = len(got) == len(row) and all(e < 0 or e == g for e, g in zip(row, got, strict=True))
    if not spec.shape or not fits:
        expected = (
            f"each to have shape {list(row)} (-1 is free), stacked along the first dimension "
            f"of the input's shape {list(spec.shape)}"
            if spec.shape
            else "none: the input is a scalar; send it in the columnar format ('inputs')"
        )
        raise InvalidInput(model, spec.name, f"{key} have shape {list(got)}; expected {expected}")
    return arr


# -- responses ----------------------------------------------------------------------------------


def encode_predict(outputs: Sequence[Tensor], rows: bool) -> dict[str, Any]:
    """TF Serving's answer: ``predictions`` (one entry per row; an object per row when there
    are several outputs) for the row format, ``outputs`` (the tensor, or an object of tensors)
    for the columnar format."""
    if not rows:
        if len(outputs) == 1:
            return {"outputs": _values(outputs[0])}
        return {"outputs": {t.name: _values(t) for t in outputs}}
    counts = {t.data.shape[0] if t.data.ndim else None for t in outputs}
    if len(counts) != 1 or None in counts:
        shapes = ", ".join(f"{t.name} {list(t.data.shape)}" for t in outputs)
        raise InvalidRequest(
            f"the outputs ({shapes}) do not share a first dimension to split into rows; "
            "ask in the columnar format ('inputs') to get them whole"
        )
    if len(outputs) == 1:
        return {"predictions": _values(outputs[0])}
    values = {t.name: _values(t) for t in outputs}
    n = outputs[0].data.shape[0]
    return {"predictions": [{name: v[i] for name, v in values.items()} for i in range(n)]}


def _values(t: Tensor) -> Any:
    """A tensor as nested JSON values: numbers stay numpy (orjson writes them), BYTES become
    text, or ``{"b64": ...}`` when the output's name ends in ``_bytes`` or the bytes are not
    UTF-8."""
    if t.datatype != "BYTES":
        data = np.ascontiguousarray(t.data)
        if data.dtype == np.float16:
            return data.astype(np.float32)
        # the canonical scalar type (numpy.longlong equals int64 but orjson writes only int64)
        canonical = DATATYPES[t.datatype]
        return data.view(canonical) if data.dtype == canonical else data
    as_b64 = t.name.endswith("_bytes")
    flat = [_text(v if isinstance(v, bytes) else str(v).encode(), as_b64) for v in t.data.flat]
    return np.array(flat, dtype=object).reshape(t.data.shape).tolist() if t.data.ndim else flat[0]


def _text(b: bytes, as_b64: bool) -> Any:
    if not as_b64:
        try:
            return b.decode()
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(b).decode()}


def scores_output(outputs: Sequence[TensorSpec], model: str) -> TensorSpec:
    """The output :classify reads: class scores of shape [-1, C] (Unsupported without)."""
    candidates = [o for o in outputs if o.datatype in _FLOATS and len(o.shape) == 2]
    for name in ("probabilities", "scores", "probs"):
        for o in candidates:
            if o.name == name:
                return o
    if len(candidates) == 1:
        return candidates[0]
    raise Unsupported(
        f"model '{model}' has no single class-score output (a float output of shape [-1, C], "
        f"best named 'probabilities' or 'scores'; its outputs are "
        f"{_names({o.name: o for o in outputs})}), so it cannot answer :classify; use :predict"
    )


def regress_output(outputs: Sequence[TensorSpec], model: str) -> TensorSpec:
    """The output :regress reads: the one float output of shape [-1] or [-1, 1]."""
    candidates = [o for o in outputs if o.datatype in _FLOATS and o.shape in ((-1,), (-1, 1))]
    if len(candidates) == 1:
        return candidates[0]
    raise Unsupported(
        f"model '{model}' has no single regression output (a float output of shape [-1] or "
        f"[-1, 1]; its outputs are {_names({o.name: o for o in outputs})}), so it cannot "
        "answer :regress; use :predict"
    )


def encode_classify(outputs: Sequence[Tensor], scores: str, model: str) -> dict[str, Any]:
    """``{"results": [[[label, score], ...], ...]}``: labels from a BYTES ``classes`` output,
    else the score columns' indices, checked against an integer ``label`` output if any."""
    by_name = {t.name: t for t in outputs}
    probs = _values(by_name[scores])
    n, width = probs.shape
    classes = by_name.get("classes")
    if classes is not None and classes.datatype == "BYTES" and classes.data.shape == probs.shape:
        labels = [[_label(v) for v in row] for row in classes.data]
    else:
        if not _indices_are_labels(by_name.get("label"), probs):
            raise Unsupported(
                f"model '{model}' labels its classes otherwise than 0..{width - 1}, and "
                f"its outputs do not name them (a BYTES 'classes' output [-1, {width}]); "
                "use :predict and its label output"
            )
        labels = [[str(j) for j in range(width)]] * n
    return {
        "results": [
            [[lab, p] for lab, p in zip(labels[i], probs[i], strict=True)] for i in range(n)
        ]
    }


def _indices_are_labels(label: Tensor | None, probs: np.ndarray) -> bool:
    """False when an integer label output shows the classes are not 0..C-1 (True without one)."""
    if label is None or label.data.dtype.kind not in "iu" or label.data.size != len(probs):
        return True
    return bool(np.array_equal(label.data.reshape(-1), probs.argmax(axis=1)))


def _label(v: object) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def encode_regress(outputs: Sequence[Tensor], name: str) -> dict[str, Any]:
    """``{"results": [value, ...]}``, one float per example."""
    t = next(o for o in outputs if o.name == name)
    return {"results": _values(t).reshape(-1)}


def status_doc(rows: Sequence[RepositoryEntry]) -> dict[str, Any]:
    """GetModelStatusResponse: one entry per version (``"0"`` for a model with none loaded)."""
    out = []
    for row in rows:
        failed = row.state == "UNAVAILABLE" and row.reason not in _NOT_FAILURES
        out.append(
            {
                "version": row.version or "0",
                "state": _STATES.get(row.state, "UNKNOWN"),
                "status": {
                    "error_code": "UNKNOWN" if failed else "OK",
                    "error_message": row.reason if failed else "",
                },
            }
        )
    return {"model_version_status": out}


def metadata_doc(
    name: str, version: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """GetModelMetadataResponse with the one signature, ``serving_default``."""

    def tensors(specs: Sequence[TensorSpec]) -> dict[str, Any]:
        return {
            s.name: {
                "dtype": TF_DATATYPES[s.datatype],
                "tensor_shape": {
                    "dim": [{"size": str(d), "name": ""} for d in s.shape],
                    "unknown_rank": False,
                },
                "name": s.name,
            }
            for s in specs
        }

    signature = {
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
        "method_name": PREDICT_METHOD,
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": version},
        "metadata": {
            "signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signature_def": {SIGNATURE: signature},
            }
        },
    }
