"""V2 REST bodies <-> protocol types: JSON tensors and the binary tensor data extension.

Pure functions of their inputs: no sockets, no model state. Every malformed body raises a
:class:`~mserve.errors.InvalidRequest` that says what was expected.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

from mserve.errors import InvalidInput, MalformedRequest
from mserve.protocol import (
    DATATYPES,
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
    TensorSpec,
    bytes_elements,
    check_shape,
    element_size,
    json_values,
    raw_bytes,
)

HEADER_LENGTH = "inference-header-content-length"
_LE = {dt: np.dtype(v).newbyteorder("<") for dt, v in DATATYPES.items() if dt != "BYTES"}


def loads(body: bytes, what: str = "request body") -> Any:
    """Parse JSON, or raise MalformedRequest naming what was being parsed."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc}") from None


def decode_infer(
    body: bytes, header_length: int | None, model_name: str, model_version: str | None
) -> InferRequest:
    """Decode a V2 infer body: all JSON, or a JSON header followed by binary tensors."""
    binary: memoryview | bytes
    if header_length is None:
        header, binary = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise MalformedRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes; expected the length of the JSON header at the body's start"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    doc = loads(header, "inference request header" if header_length is not None else "request body")
    if not isinstance(doc, dict):
        raise MalformedRequest("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("request body must have 'inputs': a non-empty list of tensors")
    offset = 0
    inputs: list[Tensor] = []
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, i, binary, offset, model_name)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise MalformedRequest(
            f"{len(binary) - offset} bytes of binary data follow the header that no input's "
            "binary_data_size accounts for"
        )
    outputs = _decode_outputs(doc.get("outputs"), doc.get("parameters"))
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise MalformedRequest("'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise MalformedRequest("'parameters' must be a JSON object")
    return InferRequest(model_name, model_version, inputs, outputs, req_id, params)


def decode_raw(
    body: bytes, spec: TensorSpec, model_name: str, model_version: str | None
) -> InferRequest:
    """Decode a raw binary request (header length 0): the body is the model's single input, its
    one free dimension (if any) sized by the body; the response is binary as well."""
    shape = list(spec.shape)
    free = [i for i, d in enumerate(shape) if d < 0]
    if len(free) > 1:
        raise InvalidInput(
            model_name,
            spec.name,
            f"a raw binary request needs at most one free dimension; shape is {list(spec.shape)}",
        )
    elements = int(np.prod([d for d in shape if d >= 0], dtype=np.int64))
    items: np.ndarray | None = None
    if spec.datatype == "BYTES":
        items = bytes_elements(memoryview(body), None, spec.name, model_name)
        have, unit, need = len(items), "BYTES elements", elements
    else:
        have, unit, need = len(body), "bytes", elements * element_size(spec.datatype)
    if free:
        if need == 0 or have % need:
            raise InvalidInput(
                model_name,
                spec.name,
                f"raw binary body of {have} {unit} is not a whole number of "
                f"{spec.datatype} tensors of shape {list(spec.shape)}",
            )
        shape[free[0]] = have // need
    elif have != need:
        raise InvalidInput(
            model_name, spec.name, f"raw binary body has {have} {unit}; expected {need}"
        )
    arr = items if items is not None else np.frombuffer(body, dtype=_LE[spec.datatype])
    return InferRequest(
        model_name,
        model_version,
        [Tensor(spec.name, spec.datatype, arr.reshape(shape))],
        parameters={"binary_data_output": True},
    )


def _decode_input(
    raw: object, index: int, binary: memoryview | bytes, offset: int, model: str
) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise MalformedRequest(f"inputs[{index}] must be an object with name, shape, datatype")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedRequest(f"inputs[{index}] needs a 'name' (a non-empty string)")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(
            model,
            name,
            f"datatype {datatype!r} is not a V2 datatype; expected one of " + ", ".join(DATATYPES),
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0
        for d in shape  # bool is not a dimension
    ):
        raise InvalidInput(model, name, f"shape must be a list of integers >= 0, got {shape!r}")
    check_shape(shape, name, model)
    count = 1
    for d in shape:
        count *= d
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise MalformedRequest(f"inputs[{index}].parameters must be a JSON object")
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInput(
                model, name, f"binary_data_size must be an integer >= 0, got {size!r}"
            )
        if offset + size > len(binary):
            raise MalformedRequest(
                f"input '{name}' declares binary_data_size {size} but only "
                f"{len(binary) - offset} bytes of binary data remain after the JSON header "
                "(is Inference-Header-Content-Length right?)"
            )
        chunk = binary[offset : offset + size]
        if datatype == "BYTES":
            arr = bytes_elements(chunk, count, name, model)
        else:
            need = count * element_size(datatype)
            if size != need:
                raise InvalidInput(
                    model,
                    name,
                    f"binary_data_size is {size} bytes but shape {shape} of {datatype} "
                    f"needs {need}",
                )
            arr = np.frombuffer(chunk, dtype=_LE[datatype])
        return Tensor(name, datatype, arr.reshape(shape), params), size
    if "data" not in raw:
        raise MalformedRequest(f"input '{name}' has neither 'data' nor a binary_data_size")
    return Tensor(
        name, datatype, _array_from_json(raw["data"], datatype, shape, count, name, model), params
    ), 0


def _array_from_json(
    data: object, datatype: str, shape: list[int], count: int, name: str, model: str
) -> np.ndarray:
    if datatype == "BYTES":
        flat = _flatten(data)
        arr = np.empty(len(flat), dtype=object)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                arr[i] = v.encode()
            elif isinstance(v, dict) and isinstance(v.get("b64"), str):
                try:
                    arr[i] = base64.b64decode(v["b64"])
                except ValueError as exc:  # binascii.Error, or text that is not ASCII
                    raise InvalidInput(
                        model, name, f"element {i} is not valid base64 ({exc})"
                    ) from None
            else:
                raise InvalidInput(model, name, f"BYTES elements must be strings, got {v!r}")
    else:
        arr = numbers_from_json(data, datatype, name, model)
    if arr.size != count:
        raise InvalidInput(
            model,
            name,
            f"data has {arr.size} elements but shape {shape} needs {count}",
        )
    return arr.reshape(shape)


def numbers_from_json(data: object, datatype: str, name: str, model: str) -> np.ndarray:
    """JSON numbers as an array of ``datatype``: the values must be of its kind (integers for
    the integer types, numbers for the float types, true / false for BOOL) and in its range,
    never silently truncated, wrapped or turned into infinity."""
    try:
        natural = np.asarray(data)  # the kind JSON gave: bool, int, float, or something else
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            model, name, f"data is not a list of {datatype} values ({exc})"
        ) from None
    dtype = DATATYPES[datatype]
    kinds, what = _JSON_KINDS[dtype.kind]
    if natural.size == 0:
        return natural.astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if natural.dtype.kind not in kinds:
            # numpy reads small integers mixed with ones above 2**63 as float64: look closer
            if not all(type(v) is int for v in _flatten(data)):
                raise InvalidInput(model, name, f"data must be {what} for {datatype}")
            try:
                return np.asarray(data, dtype=dtype)
            except OverflowError:
                raise _out_of_range(model, name, datatype, f"{info.min} to {info.max}") from None
        if int(natural.min()) < info.min or int(natural.max()) > info.max:
            raise _out_of_range(model, name, datatype, f"{info.min} to {info.max}")
        return natural.astype(dtype)
    if natural.dtype.kind not in kinds:
        raise InvalidInput(model, name, f"data must be {what} for {datatype}")
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            arr = natural.astype(dtype)
        if not np.isfinite(arr).all():
            limit = f"largest magnitude {float(np.finfo(dtype).max):g}"
            raise _out_of_range(model, name, datatype, limit)
        return arr
    return natural.astype(dtype)


def _out_of_range(model: str, name: str, datatype: str, limits: str) -> InvalidInput:
    return InvalidInput(model, name, f"data has values outside the range of {datatype} ({limits})")


#: numpy kind of the target dtype -> (numpy kinds JSON values may have, what to say).
_JSON_KINDS = {
    "b": ("b", "true / false"),
    "i": ("iu", "integers"),
    "u": ("iu", "integers"),
    "f": ("iuf", "numbers"),
}


def _flatten(data: object) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _decode_outputs(raw: object, params: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MalformedRequest("'outputs' must be a list of {name, parameters}")
    outs = []
    for i, o in enumerate(raw):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise MalformedRequest(f"outputs[{i}] needs a 'name' (a string)")
        p = o.get("parameters") or {}
        if not isinstance(p, dict):
            raise MalformedRequest(f"outputs[{i}].parameters must be a JSON object")
        outs.append(RequestedOutput(o["name"], p))
    return outs


# -- responses ----------------------------------------------------------------------------------


def encode_infer(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and the JSON header length when binary follows."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.parameters for o in request.outputs} if request.outputs else {}
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for t in response.outputs:
        p = wanted.get(t.name, {})
        as_binary = bool(p.get("binary_data", binary_default))
        entry: dict[str, Any] = {
            "name": t.name,
            "datatype": t.datatype,
            "shape": list(t.data.shape),
        }
        if as_binary:
            raw = tensor_bytes(t)
            chunks.append(raw)
            entry["parameters"] = {"binary_data_size": len(raw)}
        else:
            entry["data"] = json_values(t.datatype, t.data)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def tensor_bytes(t: Tensor) -> bytes:
    """A tensor's binary form: little-endian row-major, or length-prefixed BYTES elements."""
    return raw_bytes(t.datatype, t.data)


def dumps(doc: Any) -> bytes:
    """Encode a JSON document (metadata, statistics, errors)."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
