"""V2 gRPC messages <-> mserve's protocol types.

Inputs come as ``raw_input_contents`` (little-endian bytes, one entry per input, BYTES elements
length-prefixed) or as typed ``contents``; outputs always leave as ``raw_output_contents``, as
Triton sends them, which every V2 gRPC client reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mserve.errors import InvalidInput, MalformedRequest
from mserve.protocol import (
    DATATYPES,
    InferRequest,
    InferResponse,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    array_from_raw,
    check_shape,
    raw_bytes,
)
from mserve.wire import inference_pb2 as pb

#: The typed-contents field of each datatype (FP16 and BF16 have none: raw contents only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(p: Any) -> Any:
    """The Python value of an InferParameter or ModelRepositoryParameter (None when unset)."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def parameters(m: Any) -> dict[str, Any]:
    return {k: parameter_value(v) for k, v in m.items()}


def decode_infer(req: pb.ModelInferRequest) -> InferRequest:
    """A ModelInferRequest as mserve's InferRequest; bad tensors raise with what was expected."""
    model = req.model_name
    if not model:
        raise MalformedRequest("model_name is empty; name the model to run")
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise MalformedRequest(
            f"raw_input_contents has {len(raw)} entries but there are {len(req.inputs)} inputs; "
            "send one entry per input, in the order of inputs, or none and use contents"
        )
    tensors = []
    for i, t in enumerate(req.inputs):
        if t.datatype not in DATATYPES:
            raise InvalidInput(
                model,
                t.name,
                f"datatype {t.datatype!r} is not a V2 datatype; expected one of "
                + ", ".join(DATATYPES),
            )
        shape = list(t.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(model, t.name, f"shape must hold integers >= 0, got {shape}")
        check_shape(shape, t.name, model)
        if raw:
            if t.HasField("contents"):
                raise InvalidInput(
                    model,
                    t.name,
                    "has both contents and raw_input_contents; send the data one way only",
                )
            data = array_from_raw(raw[i], t.datatype, shape, t.name, model)
        else:
            data = _from_contents(t, shape, model)
        tensors.append(Tensor(t.name, t.datatype, data, parameters(t.parameters)))
    outputs = [RequestedOutput(o.name, parameters(o.parameters)) for o in req.outputs]
    return InferRequest(
        model_name=model,
        model_version=req.model_version or None,
        inputs=tensors,
        outputs=outputs or None,
        id=req.id or None,
        parameters=parameters(req.parameters),
    )


def _from_contents(t: Any, shape: list[int], model: str) -> np.ndarray:
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise InvalidInput(
            model,
            t.name,
            f"{t.datatype} data must be sent as raw_input_contents (it has no typed contents)",
        )
    count = 1
    for d in shape:
        count *= d
    values = getattr(t.contents, field)
    if len(values) != count:
        others = [f for f in set(CONTENTS_FIELD.values()) if f != field and getattr(t.contents, f)]
        hint = f" (data was found in {', '.join(others)}; a {t.datatype} tensor uses {field})"
        raise InvalidInput(
            model,
            t.name,
            f"contents.{field} holds {len(values)} values but shape {shape} needs {count}"
            + (hint if others else ""),
        )
    if t.datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    dtype = DATATYPES[t.datatype]
    if dtype.kind in "iu":
        wide = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(
                model, t.name, f"values outside {t.datatype}'s range [{info.min}, {info.max}]"
            )
        return wide.astype(dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def encode_infer(response: InferResponse) -> pb.ModelInferResponse:
    """The ModelInferResponse of a response, outputs as raw contents."""
    out = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    for t in response.outputs:
        out.outputs.add(name=t.name, datatype=t.datatype, shape=t.data.shape)
        out.raw_output_contents.append(raw_bytes(t.datatype, t.data))
    for key, value in response.parameters.items():
        _set_parameter(out.parameters[key], value)
    return out


def _set_parameter(p: Any, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def encode_metadata(m: ModelMetadata) -> pb.ModelMetadataResponse:
    out = pb.ModelMetadataResponse(name=m.name, versions=list(m.versions), platform=m.platform)
    for spec in m.inputs:
        out.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in m.outputs:
        out.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    return out


_DATA_TYPES = {
    "TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}": pb.DataType.Value(
        "TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}"
    )
    for dt in DATATYPES
}


def encode_config(doc: dict[str, Any]) -> pb.ModelConfigResponse:
    """The model configuration (the dict the HTTP route returns) as Triton's ModelConfig."""
    c = pb.ModelConfig(
        name=doc["name"],
        platform=doc["platform"],
        backend=doc["backend"],
        max_batch_size=doc["max_batch_size"],
    )
    policy = doc["version_policy"]
    if "all" in policy:
        c.version_policy.all.SetInParent()
    elif "specific" in policy:
        c.version_policy.specific.versions.extend(policy["specific"]["versions"])
    else:
        c.version_policy.latest.num_versions = policy["latest"]["num_versions"]
    for t in doc["input"]:
        c.input.add(name=t["name"], data_type=_DATA_TYPES[t["data_type"]], dims=t["dims"])
    for t in doc["output"]:
        c.output.add(name=t["name"], data_type=_DATA_TYPES[t["data_type"]], dims=t["dims"])
    for g in doc["instance_group"]:
        c.instance_group.add(count=g["count"], kind=pb.ModelInstanceGroup.Kind.Value(g["kind"]))
    db = doc.get("dynamic_batching")
    if db is not None:
        d = c.dynamic_batching
        d.preferred_batch_size.extend(db["preferred_batch_size"])
        d.max_queue_delay_microseconds = db["max_queue_delay_microseconds"]
        q = db["default_queue_policy"]
        d.default_queue_policy.default_timeout_microseconds = q["default_timeout_microseconds"]
        d.default_queue_policy.max_queue_size = q["max_queue_size"]
    return pb.ModelConfigResponse(config=c)


def encode_statistics(doc: dict[str, Any]) -> pb.ModelStatisticsResponse:
    """The statistics (the dict the HTTP route returns) as a ModelStatisticsResponse."""
    out = pb.ModelStatisticsResponse()
    for s in doc["model_stats"]:
        m = out.model_stats.add(
            name=s["name"],
            version=s["version"],
            last_inference=s["last_inference"],
            inference_count=s["inference_count"],
            execution_count=s["execution_count"],
        )
        for phase, d in s["inference_stats"].items():
            getattr(m.inference_stats, phase).MergeFrom(pb.StatisticDuration(**d))
        for b in s["batch_stats"]:
            m.batch_stats.add(
                batch_size=b["batch_size"],
                compute_input=pb.StatisticDuration(**b["compute_input"]),
                compute_infer=pb.StatisticDuration(**b["compute_infer"]),
                compute_output=pb.StatisticDuration(**b["compute_output"]),
            )
    return out
