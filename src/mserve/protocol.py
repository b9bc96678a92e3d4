"""Wire-neutral types of the Open Inference Protocol V2: tensors, requests, responses, metadata.

Transports decode their bytes into these types and encode these types back into bytes; the data
plane and the runtimes see nothing else. Tensor data is always a numpy array whose shape is the
tensor's shape; BYTES tensors are object arrays of ``bytes``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mserve.errors import InvalidInput

Parameters = dict[str, Any]

#: V2 datatype name -> numpy dtype. BYTES travels as an object array of ``bytes``.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

_BY_DTYPE: dict[np.dtype[Any], str] = {v: k for k, v in DATATYPES.items()}

#: V2 datatype -> TensorFlow's DataType name, as TF Serving's metadata spells it.
TF_DATATYPES: dict[str, str] = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype for a V2 datatype name; KeyError when the name is not a V2 datatype."""
    return DATATYPES[datatype]


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name for a numpy array (str, bytes and object arrays are BYTES)."""
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise TypeError(f"numpy dtype {array.dtype} has no V2 datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (0 for BYTES)."""
    return 0 if datatype == "BYTES" else DATATYPES[datatype].itemsize


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as the model declares it; -1 marks a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class Tensor:
    """A named tensor of a request or response."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its parameters (e.g. ``binary_data``)."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """One inference request, as decoded by a transport."""

    model_name: str
    model_version: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: when the answer stops being useful, on the ``time.perf_counter_ns`` clock; 0: never
    deadline_ns: int = 0


@dataclass(slots=True)
class InferResponse:
    """One inference response, ready for a transport to encode."""

    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What ``GET /v2/models/NAME`` answers."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """What ``GET /v2`` answers."""

    name: str
    version: str
    extensions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "extensions": list(self.extensions)}


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    """One row of the model repository index."""

    name: str
    version: str | None
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"name": self.name, "state": self.state, "reason": self.reason}
        if self.version is not None:
            row["version"] = self.version
        return row


def raw_bytes(datatype: str, data: np.ndarray) -> bytes:
    """A tensor's raw V2 encoding (binary extension, gRPC raw contents): little-endian, row-major;
    BYTES elements as a 4-byte little-endian length followed by the bytes."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for v in data.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(len(b).to_bytes(4, "little"))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(data, dtype=DATATYPES[datatype].newbyteorder("<")).tobytes()


def json_values(datatype: str, data: np.ndarray) -> Any:
    """A tensor's data for a V2 JSON body: flat, row-major; BYTES as text (invalid UTF-8
    replaced), FP16 widened to FP32 (JSON numbers); numeric data stays a numpy array for
    orjson's numpy serialisation."""
    if datatype == "BYTES":
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in data.reshape(-1)
        ]
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    return np.ascontiguousarray(data).reshape(-1)


_LITTLE = {dt: v.newbyteorder("<") for dt, v in DATATYPES.items() if dt != "BYTES"}

#: The most dimensions a tensor may have (numpy 1 holds 32, numpy 2 64).
MAX_DIMS = 32
#: The most elements the non-zero dimensions of a shape may multiply to: an empty tensor of
#: shape [0, 2**40, 2**40] holds nothing, yet numpy cannot make one.
MAX_SHAPE_ELEMENTS = 2**48


def check_shape(shape: list[int], name: str, model: str) -> None:
    """Refuse a shape of integers >= 0 that no tensor can take: more than :data:`MAX_DIMS`
    dimensions, or non-zero dimensions multiplying past :data:`MAX_SHAPE_ELEMENTS`."""
    if len(shape) > MAX_DIMS:
        raise InvalidInput(
            model, name, f"shape has {len(shape)} dimensions; expected at most {MAX_DIMS}"
        )
    product = 1
    for d in shape:
        product *= d or 1
        if product > MAX_SHAPE_ELEMENTS:
            raise InvalidInput(
                model,
                name,
                f"shape {shape} is too large; expected dimensions whose non-zero sizes multiply "
                f"to at most {MAX_SHAPE_ELEMENTS}",
            )


def bytes_elements(
    chunk: memoryview | bytes, count: int | None, name: str, model: str
) -> np.ndarray:
    """The BYTES elements of a raw encoding (each a 4-byte little-endian length, then the bytes)
    as an object array; ``count`` elements are expected unless it is None."""
    items: list[bytes] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput(model, name, "BYTES binary data ends inside a 4-byte length prefix")
        (n,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + n > end:
            raise InvalidInput(
                model, name, f"BYTES element of {n} bytes runs past the end of the binary data"
            )
        items.append(bytes(chunk[pos : pos + n]))
        pos += n
    if count is not None and len(items) != count:
        raise InvalidInput(
            model,
            name,
            f"binary data holds {len(items)} BYTES elements but the shape needs {count}",
        )
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def array_from_raw(
    raw: bytes | memoryview, datatype: str, shape: list[int], name: str, model: str
) -> np.ndarray:
    """A tensor from its raw V2 encoding (see :func:`raw_bytes`), checked against its shape;
    numeric data is not copied."""
    count = 1
    for d in shape:
        count *= d
    if datatype == "BYTES":
        return bytes_elements(raw, count, name, model).reshape(shape)
    need = count * element_size(datatype)
    if len(raw) != need:
        raise InvalidInput(
            model,
            name,
            f"raw data is {len(raw)} bytes but shape {shape} of {datatype} needs {need}",
        )
    return np.frombuffer(raw, dtype=_LITTLE[datatype]).reshape(shape)
