"""The model as the systems' programs serve it (apps/served_model.py, which runs in each
system's environment): the settings a launcher wrote read back, V2 JSON and plain-JSON rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.compare.apps.served_model import ServedModel, Tensor, load_settings
from mserve.compare.systems import ModelUnderTest, TensorInfo
from mserve.compare.workfiles import SETTINGS_ENV, program_settings, write_settings


def _served(tmp_path: Path, onnx: bytes, model: ModelUnderTest) -> ServedModel:
    path = tmp_path / f"{model.name}.onnx"
    path.write_bytes(onnx)
    model = ModelUnderTest(
        model.name, path, model.inputs, model.outputs, model.max_batch_size, model.threads
    )
    env = write_settings(tmp_path, program_settings(model, 8000, tmp_path, False))
    return ServedModel(load_settings(env[SETTINGS_ENV]))


@pytest.fixture
def adder(tmp_path: Path, onnx_factory) -> ServedModel:
    """OUTPUT = INPUT + 1 on rows of 3."""
    fp32 = (TensorInfo("INPUT", "FP32", (-1, 3)),), (TensorInfo("OUTPUT", "FP32", (-1, 3)),)
    return _served(
        tmp_path, onnx_factory.add_const(1.0, (-1, 3)), ModelUnderTest("adder", Path(), *fp32, 8)
    )


def test_settings_read_back_as_the_launcher_wrote_them(adder: ServedModel) -> None:
    settings = adder.settings
    assert settings.name == "adder"
    assert settings.inputs == (Tensor("INPUT", "FP32", (-1, 3)),)
    assert (settings.port, settings.threads, settings.batching) == (8000, 1, False)


def test_v2_json_in_and_out(adder: ServedModel) -> None:
    tensor = {"name": "INPUT", "shape": [2, 3], "datatype": "FP32", "data": [0, 1, 2, 3, 4, 5]}
    answer = {"name": "OUTPUT", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}
    assert adder.infer_v2({"id": "r1", "inputs": [tensor]}) == {
        "model_name": "adder",
        "id": "r1",
        "outputs": [answer],
    }
    metadata = adder.metadata_v2()
    assert metadata["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 3]}]
    with pytest.raises(KeyError):
        adder.infer_v2({"inputs": [{"name": "INPUT", "shape": [1, 3]}]})


def test_instances_are_run_together_and_answered_one_by_one(adder: ServedModel) -> None:
    assert adder.predict_rows([[0, 0, 0], [1, 2, 3]]) == [
        {"OUTPUT": [1.0, 1.0, 1.0]},
        {"OUTPUT": [2.0, 3.0, 4.0]},
    ]


def test_instances_of_a_model_with_several_inputs_name_them(tmp_path: Path, onnx_factory) -> None:
    tensors = tuple(TensorInfo(f"INPUT{i}", "FP32", (-1, 2)) for i in range(2))
    outputs = tuple(TensorInfo(f"OUTPUT{i}", "FP32", (-1, 2)) for i in range(2))
    model = _served(
        tmp_path,
        onnx_factory.add_sub((-1, 2)),
        ModelUnderTest("addsub", Path(), tensors, outputs, 4),
    )
    rows: list[Any] = [{"INPUT0": [3, 4], "INPUT1": [1, 1]}]
    assert model.predict_rows(rows) == [{"OUTPUT0": [4.0, 5.0], "OUTPUT1": [2.0, 3.0]}]


def test_a_model_without_batch_axis_takes_one_whole_instance(tmp_path: Path, onnx_factory) -> None:
    spec = (TensorInfo("INPUT", "FP32", (3,)),), (TensorInfo("OUTPUT", "FP32", (3,)),)
    model = _served(
        tmp_path, onnx_factory.add_const(2.0, (3,)), ModelUnderTest("whole", Path(), *spec, 0)
    )
    assert model.predict_rows([[1, 2, 3]]) == [{"OUTPUT": [3.0, 4.0, 5.0]}]


def test_outputs_have_exactly_the_declared_types(tmp_path: Path, digits_model: Any) -> None:
    config = digits_model.config
    model = _served(
        tmp_path,
        digits_model.onnx,
        ModelUnderTest(
            "digits",
            Path(),
            tuple(TensorInfo(t.name, t.datatype, t.shape) for t in config.inputs),
            tuple(TensorInfo(t.name, t.datatype, t.shape) for t in config.outputs),
            64,
        ),
    )
    outputs = model.run({"input": digits_model.x_test[:5]})
    assert outputs["label"].dtype.type is np.int64  # not longlong, which NumPy 1 tells apart
    expected = digits_model.estimator.predict(digits_model.x_test[:5])
    assert outputs["label"].tolist() == expected.tolist()
    predictions = model.predict_rows(digits_model.x_test[:2].tolist())
    assert [p["label"] for p in predictions] == outputs["label"][:2].tolist()
