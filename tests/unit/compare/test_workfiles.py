"""What a launcher writes for its program: the settings, and the plain-JSON request body."""

from __future__ import annotations

import json
from pathlib import Path

from mserve.compare.systems import ModelUnderTest, TensorInfo
from mserve.compare.workfiles import (
    APPS,
    SETTINGS_ENV,
    plain_body,
    program_settings,
    sample_instance,
    write_body,
    write_settings,
)


def _model(*inputs: TensorInfo, max_batch_size: int = 4) -> ModelUnderTest:
    outputs = (TensorInfo("OUTPUT", "FP32", (-1, 1)),)
    return ModelUnderTest("m", Path("m.onnx"), inputs, outputs, max_batch_size)


def test_settings_carry_the_model_its_ports_and_the_batching(tmp_path: Path) -> None:
    model = _model(TensorInfo("INPUT", "FP32", (-1, 3)))
    settings = program_settings(model, 8000, tmp_path, True, grpc_port=8001)
    assert settings["name"] == "m"
    assert settings["onnx_path"] == str(Path("m.onnx").resolve())
    assert settings["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 3]}]
    assert (settings["port"], settings["grpc_port"], settings["metrics_port"]) == (8000, 8001, 0)
    assert (settings["batching"], settings["max_batch_size"], settings["threads"]) == (True, 4, 1)
    env = write_settings(tmp_path / "work", settings)
    assert env["PYTHONPATH"] == str(APPS)
    assert json.loads(Path(env[SETTINGS_ENV]).read_text()) == settings


def test_a_sample_instance_is_one_seeded_row_of_each_input() -> None:
    one = _model(TensorInfo("x", "FP32", (-1, 2, -1)))
    row = sample_instance(one)
    assert row == sample_instance(one)  # the same every time
    assert [len(r) for r in row] == [1, 1]
    assert all(0 <= r[0] < 1 for r in row)
    two = _model(TensorInfo("a", "INT64", (-1, 2)), TensorInfo("b", "BOOL", (-1, 1)))
    rows = sample_instance(two)
    assert set(rows) == {"a", "b"}
    assert all(isinstance(v, int) for v in rows["a"])
    assert rows["b"] == [False]
    whole = _model(TensorInfo("x", "FP32", (3,)), max_batch_size=0)
    assert len(sample_instance(whole)) == 3  # no batch axis: the whole input


def test_the_body_holds_one_instance(tmp_path: Path) -> None:
    model = _model(TensorInfo("INPUT", "FP32", (-1, 3)))
    path = write_body(model, tmp_path)
    assert json.loads(path.read_text()) == plain_body(model)
    assert plain_body(model) == {"instances": [sample_instance(model)]}
