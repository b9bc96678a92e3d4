"""Our V2 gRPC messages against the specification as tritonclient ships it: every message, field,
enum value and RPC of ours exists there with the same number, name, type and cardinality, and
bytes written by one side parse on the other to the same values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import serialize_byte_tensor

from mserve.server.grpc.codec import decode_infer
from mserve.wire import V2_SERVICE
from mserve.wire import inference_pb2 as pb

OURS = pb.DESCRIPTOR
THEIRS = (service_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR)


def relative(full_name: str) -> str:
    """A type's name without its package (ours is mserve.inference, theirs inference)."""
    for package in ("mserve.inference.", "inference."):
        if full_name.startswith(package):
            return full_name[len(package) :]
    raise AssertionError(f"{full_name} is in neither package")


def theirs_message(name: str) -> Descriptor:
    for file in THEIRS:
        if name in file.message_types_by_name:
            return file.message_types_by_name[name]
    raise AssertionError(f"tritonclient has no message {name}")


def theirs_enum(name: str) -> EnumDescriptor:
    for file in THEIRS:
        if name in file.enum_types_by_name:
            return file.enum_types_by_name[name]
    raise AssertionError(f"tritonclient has no enum {name}")


def field_signature(f: FieldDescriptor) -> dict[str, Any]:
    return {
        "name": f.name,
        "number": f.number,
        "type": f.type,
        "repeated": f.is_repeated,
        "required": f.is_required,
        "message": relative(f.message_type.full_name) if f.message_type else None,
        "enum": relative(f.enum_type.full_name) if f.enum_type else None,
        "oneof": f.containing_oneof.name if f.containing_oneof else None,
    }


def assert_same_enum(ours: EnumDescriptor, theirs: EnumDescriptor) -> None:
    for value in ours.values:
        assert value.name in theirs.values_by_name, f"{ours.full_name}.{value.name}"
        assert theirs.values_by_name[value.name].number == value.number, value.name


def assert_compatible(ours: Descriptor, theirs: Descriptor) -> None:
    """Every field of ``ours`` (recursively, nested messages and enums too) is in ``theirs``."""
    for f in ours.fields:
        assert f.name in theirs.fields_by_name, f"{theirs.full_name} has no field {f.name}"
        assert field_signature(f) == field_signature(theirs.fields_by_name[f.name])
    for nested in ours.nested_types:
        assert nested.name in theirs.nested_types_by_name, f"{ours.full_name}.{nested.name}"
        assert nested.GetOptions().map_entry == (
            theirs.nested_types_by_name[nested.name].GetOptions().map_entry
        )
        assert_compatible(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        assert enum.name in theirs.enum_types_by_name, f"{ours.full_name}.{enum.name}"
        assert_same_enum(enum, theirs.enum_types_by_name[enum.name])


@pytest.mark.parametrize("name", list(OURS.message_types_by_name))
def test_every_message_matches_the_specification(name: str) -> None:
    assert_compatible(OURS.message_types_by_name[name], theirs_message(name))


@pytest.mark.parametrize("name", list(OURS.enum_types_by_name))
def test_every_enum_matches_the_specification(name: str) -> None:
    ours = OURS.enum_types_by_name[name]
    assert_same_enum(ours, theirs_enum(name))
    # and the other way round: a data type they send is one we can name
    assert {v.name for v in theirs_enum(name).values} == {v.name for v in ours.values}


def test_every_rpc_matches_the_specification() -> None:
    ours = OURS.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert theirs.full_name == V2_SERVICE  # the name the server registers its handlers under
    assert len(ours.methods) == 12
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert relative(method.input_type.full_name) == relative(other.input_type.full_name)
        assert relative(method.output_type.full_name) == relative(other.output_type.full_name)
        assert (method.client_streaming, method.server_streaming) == (
            other.client_streaming,
            other.server_streaming,
        ), method.name


def test_a_request_from_tritonclient_parses_as_ours() -> None:
    theirs = service_pb2.ModelInferRequest(model_name="addsub", model_version="2", id="req-7")
    theirs.parameters["priority"].int64_param = 3
    theirs.parameters["tenant"].string_param = "tests"
    a = np.arange(8, dtype="<f4").reshape(2, 4)
    t = theirs.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 4])
    t.parameters["note"].bool_param = True
    theirs.raw_input_contents.append(a.tobytes())
    typed = theirs.inputs.add(name="INPUT1", datatype="INT64", shape=[3])
    typed.contents.int64_contents.extend([-(2**63), 0, 2**63 - 1])
    theirs.outputs.add(name="OUTPUT1").parameters["classification"].int64_param = 2

    ours = pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert (ours.model_name, ours.model_version, ours.id) == ("addsub", "2", "req-7")
    assert ours.parameters["priority"].int64_param == 3
    assert ours.parameters["tenant"].string_param == "tests"
    first, second = ours.inputs
    assert (first.name, first.datatype, list(first.shape)) == ("INPUT0", "FP32", [2, 4])
    assert first.parameters["note"].bool_param is True
    assert list(second.contents.int64_contents) == [-(2**63), 0, 2**63 - 1]
    assert list(ours.raw_input_contents) == [a.tobytes()]
    (out,) = ours.outputs
    assert (out.name, out.parameters["classification"].int64_param) == ("OUTPUT1", 2)
    # nothing was left as an unknown field: the bytes mean the same on both sides
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def test_tritonclients_byte_encoding_decodes_to_the_same_arrays() -> None:
    """BYTES and FP16 as tritonclient serializes them come out of our decoder unchanged."""
    words = np.array([b"a", b"", "h\u00e9".encode(), b"\x00"], dtype=object).reshape(2, 2)
    half = np.array([[1.5, -2.0, 65504.0]], dtype=np.float16)
    theirs = service_pb2.ModelInferRequest(model_name="m")
    theirs.inputs.add(name="W", datatype="BYTES", shape=[2, 2])
    theirs.raw_input_contents.append(serialize_byte_tensor(words).item())
    theirs.inputs.add(name="H", datatype="FP16", shape=[1, 3])
    theirs.raw_input_contents.append(half.tobytes())

    decoded = decode_infer(pb.ModelInferRequest.FromString(theirs.SerializeToString()))
    w, h = decoded.inputs
    assert w.data.shape == (2, 2)
    assert w.data.tolist() == words.tolist()
    assert h.data.dtype == np.float16
    np.testing.assert_array_equal(h.data, half)


def test_a_response_of_ours_reads_in_tritonclient() -> None:
    ours = pb.ModelInferResponse(model_name="digits", model_version="1", id="r1")
    ours.parameters["sequence_end"].bool_param = True
    probs = np.array([[0.25, 0.75], [1.0, 0.0]], dtype="<f4")
    labels = np.array([1, 0], dtype="<i8")
    ours.outputs.add(name="probabilities", datatype="FP32", shape=[2, 2])
    ours.raw_output_contents.append(probs.tobytes())
    ours.outputs.add(name="label", datatype="INT64", shape=[2])
    ours.raw_output_contents.append(labels.tobytes())
    ours.outputs.add(name="text", datatype="BYTES", shape=[2])
    ours.raw_output_contents.append(b"\x02\x00\x00\x00hi\x00\x00\x00\x00")

    theirs = service_pb2.ModelInferResponse.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.model_version, theirs.id) == ("digits", "1", "r1")
    assert theirs.parameters["sequence_end"].bool_param is True
    result = grpcclient.InferResult(theirs)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    assert result.as_numpy("text").tolist() == [b"hi", b""]
    assert result.get_output("label").shape == [2]


def test_a_model_config_of_ours_reads_in_tritonclient() -> None:
    config = pb.ModelConfig(name="digits", platform="onnxruntime_onnx", max_batch_size=64)
    config.backend = "onnxruntime"
    config.version_policy.specific.versions.extend([1, 3])
    config.input.add(name="input", data_type=pb.TYPE_FP32, dims=[64])
    config.output.add(name="label", data_type=pb.TYPE_STRING, dims=[])
    config.instance_group.add(count=2, kind=pb.ModelInstanceGroup.KIND_CPU)
    config.dynamic_batching.preferred_batch_size.extend([4, 8])
    config.dynamic_batching.max_queue_delay_microseconds = 500
    config.dynamic_batching.default_queue_policy.max_queue_size = 16
    wire = pb.ModelConfigResponse(config=config).SerializeToString()

    theirs = service_pb2.ModelConfigResponse.FromString(wire).config
    assert (theirs.name, theirs.backend, theirs.max_batch_size) == ("digits", "onnxruntime", 64)
    assert list(theirs.version_policy.specific.versions) == [1, 3]
    assert theirs.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(theirs.input[0].dims) == [64]
    assert theirs.output[0].data_type == model_config_pb2.TYPE_STRING
    assert theirs.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert theirs.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(theirs.dynamic_batching.preferred_batch_size) == [4, 8]
    assert theirs.dynamic_batching.default_queue_policy.max_queue_size == 16
    assert theirs.SerializeToString(deterministic=True) == config.SerializeToString(
        deterministic=True
    )
