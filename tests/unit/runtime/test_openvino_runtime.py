"""The OpenVINO backend against ONNX Runtime on the same model.onnx: outputs, signature, wrong
inputs; the models it cannot run; device and property choice; a missing openvino package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.protocol import DATATYPES, numpy_dtype
from mserve.runtime import open_runtime, releases_gil
from mserve.runtime.onnx import OnnxRuntime
from mserve.runtime.openvino import OpenVinoRuntime, choose_device, compile_properties

pytest.importorskip("openvino")

OPTIONS = RuntimeOptions(intra_op_threads=1)


def write(tmp_path: Path, model: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    return path


def pair(tmp_path: Path, model: bytes) -> tuple[OpenVinoRuntime, OnnxRuntime]:
    path = write(tmp_path, model)
    return OpenVinoRuntime(path, OPTIONS), OnnxRuntime(path, OPTIONS)


def random_feed(rt: OnnxRuntime, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    feed = {}
    for spec in rt.inputs:
        shape = (rows, *spec.shape[1:])
        if spec.datatype == "INT64":
            feed[spec.name] = rng.integers(0, 3, shape, dtype=np.int64)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def string_concat() -> bytes:
    """OUTPUT = INPUT twice side by side (BYTES [-1, 2] -> [-1, 4])."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["INPUT", "INPUT"], ["OUTPUT"], axis=1)],
        "concat",
        [helper.make_tensor_value_info("INPUT", TensorProto.STRING, ["n", 2])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.STRING, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("rows", [1, 7])
@pytest.mark.parametrize("model", ["mlp", "add_sub", "lookup"])
def test_outputs_match_onnx_runtime(
    tmp_path: Path, onnx_factory: Any, model: str, rows: int
) -> None:
    built = {
        "mlp": lambda: onnx_factory.mlp((64, 128, 64, 10)),
        "add_sub": onnx_factory.add_sub,
        "lookup": lambda: onnx_factory.lookup(np.arange(12, dtype=np.float32).reshape(3, 4)),
    }[model]()
    ov_rt, ort_rt = pair(tmp_path, built)
    feed = random_feed(ort_rt, rows)
    names = [s.name for s in ort_rt.outputs]
    got, expected = ov_rt.infer(feed, names), ort_rt.infer(feed, names)
    for name in names:
        assert got[name].dtype == expected[name].dtype
        assert got[name].shape == expected[name].shape
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4)
    assert list(ov_rt.infer(feed, names[-1:])) == names[-1:]  # only the outputs asked for
    ov_rt.close()


def test_inputs_in_any_memory_layout(tmp_path: Path, onnx_factory: Any) -> None:
    # binary requests decode to read-only arrays over the body; slices are not contiguous
    ov_rt, ort_rt = pair(tmp_path, onnx_factory.mlp((8, 16, 3)))
    wide = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    read_only = np.frombuffer(wide[:, :8].tobytes(), dtype=np.float32).reshape(5, 8)
    for x in (read_only, wide[:, ::2], np.asfortranarray(wide[:, 8:])):
        got = ov_rt.infer({"INPUT": x}, ["OUTPUT"])["OUTPUT"]
        expected = ort_rt.infer({"INPUT": x}, ["OUTPUT"])["OUTPUT"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # each answer is a copy: the next call does not overwrite it in the request's memory
    first = ov_rt.infer({"INPUT": read_only}, ["OUTPUT"])["OUTPUT"]
    kept = first.copy()
    ov_rt.infer({"INPUT": wide[:, 8:].copy()}, ["OUTPUT"])
    assert np.array_equal(first, kept)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])  # BYTES: below
def test_signature_and_values_equal_onnx_runtime(
    tmp_path: Path, onnx_factory: Any, datatype: str
) -> None:
    ov_rt, ort_rt = pair(tmp_path, onnx_factory.identity(datatype, (-1, 3)))
    assert (ov_rt.inputs, ov_rt.outputs) == (ort_rt.inputs, ort_rt.outputs)
    assert ov_rt.platform == "openvino"
    x = np.arange(6).reshape(2, 3).astype(numpy_dtype(datatype))
    got = ov_rt.infer({"INPUT": x}, ["OUTPUT"])["OUTPUT"]
    assert got.dtype == x.dtype
    assert np.array_equal(got, x)


def test_strings_come_back_as_onnx_runtime_gives_them(tmp_path: Path) -> None:
    ov_rt, ort_rt = pair(tmp_path, string_concat())
    assert (ov_rt.inputs, ov_rt.outputs) == (ort_rt.inputs, ort_rt.outputs)
    x = np.array([[b"h\xc3\xa9", b"x"], [b"", b"yz"]], dtype=object)
    got = ov_rt.infer({"INPUT": x}, ["OUTPUT"])["OUTPUT"]
    expected = ort_rt.infer({"INPUT": x}, ["OUTPUT"])["OUTPUT"]
    assert got.dtype == expected.dtype == np.dtype(object)
    assert got.tolist() == expected.tolist() == [["hé", "x", "hé", "x"], ["", "yz", "", "yz"]]


def test_wrong_inputs_are_refused_as_onnx_runtime_refuses_them(
    tmp_path: Path, onnx_factory: Any
) -> None:
    ov_rt, ort_rt = pair(tmp_path, onnx_factory.mlp((8, 16, 3)))
    good = np.ones((2, 8), dtype=np.float32)
    cases: list[tuple[dict[str, np.ndarray], list[str], str]] = [
        ({"INPUT": good.astype(np.float64)}, ["OUTPUT"], "dtype float64; expected float32"),
        ({"INPUT": good[:, :5]}, ["OUTPUT"], r"shape \[2, 5\]; expected \[-1, 8\]"),
        ({"INPUT": good[0]}, ["OUTPUT"], r"shape \[8\]; expected \[-1, 8\]"),
        ({}, ["OUTPUT"], "input INPUT missing; the model takes INPUT"),
        ({"INPUT": good, "X": good}, ["OUTPUT"], "unknown input 'X'; the model takes INPUT"),
        ({"INPUT": good}, ["NOPE"], "unknown output 'NOPE'; the model has OUTPUT"),
    ]
    for feed, outputs, message in cases:
        with pytest.raises(Exception) as ort_error:  # noqa: PT011 - ONNX Runtime's own classes
            ort_rt.infer(feed, outputs)
        assert not isinstance(ort_error.value, RepositoryError)
        with pytest.raises(ValueError, match=message):
            ov_rt.infer(feed, outputs)
    # nothing of a refused call stays behind: OpenVINO would reuse the last input tensor
    expected = ort_rt.infer({"INPUT": good}, ["OUTPUT"])["OUTPUT"]
    np.testing.assert_allclose(
        ov_rt.infer({"INPUT": good}, ["OUTPUT"])["OUTPUT"], expected, rtol=1e-4, atol=1e-4
    )


def test_scikit_learn_models_are_refused_with_the_operators_named(
    tmp_path: Path, digits_model: Any, iris_model: Any
) -> None:
    # skl2onnx writes ai.onnx.ml operators, which OpenVINO's ONNX reader mostly lacks
    for trained, operators in (
        (digits_model, "ai.onnx.ml.ArrayFeatureExtractor"),
        (iris_model, "ai.onnx.ml.LinearClassifier, ai.onnx.ml.Normalizer"),
    ):
        path = write(tmp_path, trained.onnx)
        with pytest.raises(RepositoryError) as info:
            OpenVinoRuntime(path, OPTIONS)
        assert str(info.value) == (
            f"{path}: OpenVINO cannot run the operators {operators} (ai.onnx.ml operators come "
            "from scikit-learn and other classic-ML converters); serve this model with backend "
            "onnxruntime, which runs them"
        )


def test_a_string_input_passed_through_is_refused(tmp_path: Path, onnx_factory: Any) -> None:
    # OpenVINO frees such strings twice and aborts the process when the model is released
    path = write(tmp_path, onnx_factory.identity("BYTES", (-1,)))
    with pytest.raises(RepositoryError, match="output 'OUTPUT' is the string input 'INPUT'"):
        OpenVinoRuntime(path, OPTIONS)


def test_unreadable_model(tmp_path: Path) -> None:
    path = write(tmp_path, b"\x00junk")
    with pytest.raises(RepositoryError) as info:
        OpenVinoRuntime(path, OPTIONS)
    message = str(info.value)
    assert message.startswith(f"{path}: OpenVINO cannot read the model: Unable to read the model")
    assert ".cpp:" not in message  # OpenVINO's C++ source locations are left out


def test_open_runtime_and_close(tmp_path: Path, onnx_factory: Any) -> None:
    rt = open_runtime("openvino", write(tmp_path, onnx_factory.identity("FP32")), OPTIONS)
    assert isinstance(rt, OpenVinoRuntime)
    assert rt.device == "CPU"
    assert not rt.thread_safe  # one infer request: the server opens one runtime per instance
    assert releases_gil("openvino")  # so those instances are threads of the server
    rt.close()
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        rt.infer({"INPUT": np.ones((1, 2), dtype=np.float32)}, ["OUTPUT"])
    with pytest.raises(RepositoryError, match="expected onnxruntime, openvino"):
        open_runtime("tflite", tmp_path / "model.onnx", OPTIONS)


def test_missing_openvino_package(
    tmp_path: Path, onnx_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets without it
    path = write(tmp_path, onnx_factory.identity("FP32"))
    with pytest.raises(RepositoryError) as info:
        open_runtime("openvino", path, OPTIONS)
    assert str(info.value) == (
        f"{path}: backend openvino needs the openvino package: pip install openvino"
    )


def test_choose_device() -> None:
    assert choose_device((), ["CPU"], "m") == "CPU"
    assert choose_device(("CPUExecutionProvider",), ["CPU"], "m") == "CPU"
    assert choose_device(("GPU", "CPU"), ["CPU", "GPU.0", "GPU.1"], "m") == "GPU"
    assert choose_device(("GPU.1",), ["CPU", "GPU.0", "GPU.1"], "m") == "GPU.1"
    assert choose_device(("AUTO:GPU,CPU",), ["CPU"], "m") == "AUTO:GPU,CPU"
    with pytest.raises(RepositoryError) as info:
        choose_device(("GPU",), ["CPU"], "m.onnx")
    assert str(info.value) == (
        "m.onnx: OpenVINO device GPU is not available here; available: CPU, AUTO, HETERO, "
        "MULTI, BATCH"
    )
    with pytest.raises(RepositoryError) as info:
        choose_device(("CUDAExecutionProvider",), ["CPU"], "m.onnx")
    assert str(info.value) == (
        "m.onnx: execution provider CUDAExecutionProvider is an ONNX Runtime provider; backend "
        "openvino takes an OpenVINO device instead: CPU, AUTO, HETERO, MULTI, BATCH"
    )


def test_compile_properties() -> None:
    cpu = {"PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "ENABLE_CPU_PINNING"}
    cpu |= {"INFERENCE_NUM_THREADS"}
    assert compile_properties(RuntimeOptions(intra_op_threads=3), cpu) == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_NUM_THREADS": 3,
    }
    assert "INFERENCE_NUM_THREADS" not in compile_properties(RuntimeOptions(), cpu)
    # a device without a setting (AUTO has no threads of its own) is not given it
    assert compile_properties(RuntimeOptions(intra_op_threads=3), {"PERFORMANCE_HINT"}) == {
        "PERFORMANCE_HINT": "LATENCY"
    }


def test_in_an_instance_process(tmp_path: Path, onnx_factory: Any) -> None:
    # instance_kind: process opens the backend by name in a child process
    from mserve.runtime.process import ProcessRuntime

    rt = ProcessRuntime("openvino", write(tmp_path, onnx_factory.add_const(1.5)), OPTIONS)
    try:
        assert rt.platform == "openvino"
        x = np.array([[1.0], [-2.0]], dtype=np.float32)
        assert rt.infer({"INPUT": x}, ["OUTPUT"])["OUTPUT"].tolist() == [[2.5], [-0.5]]
    finally:
        rt.close()
