"""The model under test, read from a model folder of a repository or a bare .onnx file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.compare.model import DEFAULT_MAX_BATCH, model_under_test
from mserve.compare.systems import TensorInfo
from mserve.config import ModelConfig
from mserve.protocol import TensorSpec
from mserve.repository import write_model


def test_folder_with_config_takes_signature_and_batch_from_it(
    tmp_path: Path, onnx_factory, place
) -> None:
    config = ModelConfig(
        name="adder",
        inputs=(TensorSpec("INPUT", "FP32", (-1, 3)),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, 3)),),
        max_batch_size=16,
    )
    place(
        tmp_path, "adder", {1: onnx_factory.add_const(1.0), 2: onnx_factory.add_const(2.0)}, config
    )
    model = model_under_test(tmp_path / "adder", threads=2)
    assert model.name == "adder"
    assert model.onnx_path == (tmp_path / "adder" / "2" / "model.onnx").resolve()
    assert model.inputs == (TensorInfo("INPUT", "FP32", (-1, 3)),)
    assert model.outputs == (TensorInfo("OUTPUT", "FP32", (-1, 3)),)
    assert (model.max_batch_size, model.threads) == (16, 2)


def test_folder_without_config_reads_the_graph(tmp_path: Path, onnx_factory, place) -> None:
    place(tmp_path, "addsub", {1: onnx_factory.add_sub()})
    model = model_under_test(str(tmp_path / "addsub"))
    assert [t.name for t in model.inputs] == ["INPUT0", "INPUT1"]
    assert model.outputs[1] == TensorInfo("OUTPUT1", "FP32", (-1, 4))
    assert model.max_batch_size == DEFAULT_MAX_BATCH
    assert model.threads == 1


def test_config_without_tensors_takes_them_from_the_graph(tmp_path: Path, onnx_factory) -> None:
    write_model(tmp_path, ModelConfig(name="m", max_batch_size=0), 1, onnx_factory.add_sub())
    model = model_under_test(tmp_path / "m")
    assert [t.name for t in model.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert model.max_batch_size == 0  # the config says so


def test_bare_onnx_file(tmp_path: Path, onnx_factory) -> None:
    path = tmp_path / "identity.onnx"
    path.write_bytes(onnx_factory.identity("INT64", shape=(-1, 2)))
    model = model_under_test(path)
    assert model.name == "identity"
    assert model.inputs == (TensorInfo("INPUT", "INT64", (-1, 2)),)
    assert model.max_batch_size == DEFAULT_MAX_BATCH


def test_bare_onnx_file_without_a_batch_axis_gets_no_batching(tmp_path: Path, onnx_factory) -> None:
    path = tmp_path / "fixed.onnx"
    path.write_bytes(onnx_factory.identity("FP32", shape=(1, 2)))
    assert model_under_test(path).max_batch_size == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "nowhere", "no such file or folder"),
        (lambda root: _write(root / "model.pt", b"x"), "not an ONNX file"),
        (lambda root: _write(root / "broken.onnx", b"\x00garbage"), "not a readable ONNX model"),
        (lambda root: _write(root / "bad name!.onnx", b""), "cannot name a model"),
        (lambda root: _mkdir(root / "empty"), "not a model folder"),
    ],
)
def test_bad_paths_say_what_is_wrong(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_under_test(make(tmp_path))


def test_a_repository_instead_of_a_model_names_one(tmp_path: Path, onnx_factory, place) -> None:
    place(tmp_path / "repo", "digits", {1: onnx_factory.add_sub()})
    with pytest.raises(ValueError, match=r"a model repository, not one model.*repo/digits"):
        model_under_test(tmp_path / "repo")


def test_a_folder_that_cannot_be_served_gives_the_reason(
    tmp_path: Path, onnx_factory, place
) -> None:
    place(tmp_path, "m", {1: onnx_factory.add_sub()}, config_text="max_batch_size: lots\n")
    with pytest.raises(ValueError, match=r"cannot be served.*max_batch_size"):
        model_under_test(tmp_path / "m")


def test_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        model_under_test(tmp_path, threads=0)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
