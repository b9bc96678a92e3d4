"""mserve.convert.pytorch: each kind of PyTorch file -> an ONNX graph that computes the same."""

from __future__ import annotations

import importlib
import io
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import onnxruntime as ort
import torch
from torch import nn

from mserve.convert.base import Exported
from mserve.convert.prune import finetune
from mserve.convert.pytorch import pytorch_to_onnx
from mserve.convert.pytorch_load import load_pytorch
from mserve.errors import ConversionError, UntrustedSource

NETS = "mserve_test_digits_nets"  # a module name no other test uses
NETS_SOURCE = '''
"""Factories, as a user's training code would have them."""

from torch import nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def tokens():
    """Token ids [batch, sequence] -> embedding -> mean over the sequence -> 3 scores."""
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(50, 8), nn.Linear(8, 3)

        def forward(self, ids):
            return self.head(self.embed(ids).mean(dim=1))

    return Tokens()


def not_a_module():
    return {"weights": [1, 2, 3]}


def broken():
    raise RuntimeError("this factory needs a GPU")
'''

Digits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class TokenMean(nn.Module):
    """Token ids [batch, sequence] -> embedding -> mean over the sequence -> 3 scores."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export refuses it, TorchScript tracing takes a path."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > -1e9 else -self.fc(x)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: steady step times on a shared machine, and no oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The factories module, written to a folder on sys.path for the tests of this file."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / f"{NETS}.py").write_text(textwrap.dedent(NETS_SOURCE))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield importlib.import_module(NETS)
        sys.modules.pop(NETS, None)


def _train(model: nn.Module, digits: Digits) -> nn.Module:
    torch.manual_seed(0)
    finetune(model, digits[0], digits[1], seconds=60.0, max_steps=100, lr=3e-3)
    return model.eval()


@pytest.fixture(scope="module")
def cnn(nets: ModuleType, digits: Digits) -> nn.Module:
    """The factory's CNN, trained for 100 steps (about 98% on the test split)."""
    torch.manual_seed(0)
    return _train(nets.cnn(), digits)


@pytest.fixture(scope="module")
def mlp(nets: ModuleType, digits: Digits) -> nn.Module:
    """The factory's MLP, trained for 100 steps."""
    torch.manual_seed(0)
    return _train(nets.mlp(), digits)


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.tensor(x)).numpy()


def _check(exported: Exported, x: np.ndarray, batches: tuple[int, ...] = (1, 7)) -> Any:
    """Run the graph at each batch size against the reference; the session, for more runs."""
    assert exported.reference is not None
    session = ort.InferenceSession(exported.model.SerializeToString())
    (name,) = (i.name for i in session.get_inputs())
    for batch in batches:
        got = session.run(None, {name: x[:batch]})
        want = exported.reference({name: x[:batch]})
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-4)
    return session


def _top1_agrees(session: Any, model: nn.Module, digits: Digits) -> None:
    x_test, y_test = digits[2], digits[3]
    (logits,) = session.run(None, {session.get_inputs()[0].name: x_test})
    expected = _predict(model, x_test).argmax(axis=1)
    np.testing.assert_array_equal(logits.argmax(axis=1), expected)
    assert (expected == y_test).mean() > 0.9  # the trained weights, not a fresh initialisation


def _shapes(model: Any) -> dict[str, list[str | int]]:
    graph = model.graph
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.output]
    }


def test_factory_and_state_dict_export_quietly(
    cnn: nn.Module, digits: Digits, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    torch.save(cnn.state_dict(), tmp_path / "cnn.pt")
    source = load_pytorch(tmp_path / "cnn.pt", factory=f"{NETS}:cnn")
    assert source.kind == "checkpoint"
    capfd.readouterr()
    exported = pytorch_to_onnx(
        source,
        input_shapes=[(2, 1, 8, 8)],
        input_names=["pixels"],
        output_names=["logits"],
        class_outputs=["logits"],
    )
    assert capfd.readouterr() == ("", "")  # no progress lines, log records or warnings
    assert exported.framework == "pytorch"
    assert exported.class_outputs == ("logits",)
    assert exported.sample["pixels"].shape == (2, 1, 8, 8)
    assert _shapes(exported.model) == {"pixels": ["batch", 1, 8, 8], "logits": ["batch", 10]}
    assert "dynamo" in exported.notes[0]
    session = _check(exported, digits[2])
    _top1_agrees(session, cnn, digits)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict"])
def test_wrapped_state_dicts_load(mlp: nn.Module, digits: Digits, tmp_path: Path, key: str) -> None:
    torch.save({key: mlp.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    source = load_pytorch(tmp_path / "checkpoint.pt", factory=f"{NETS}:mlp")
    x = digits[2][:5]
    np.testing.assert_array_equal(_predict(source.model, x), _predict(mlp, x))  # type: ignore[arg-type]


def test_factory_without_checkpoint_notes_initial_weights(nets: ModuleType) -> None:
    source = load_pytorch(factory=f"{NETS}:mlp")
    assert source.kind == "factory"
    assert "initialises" in source.notes[0]


def test_torchscript_file(cnn: nn.Module, digits: Digits, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
        torch.jit.save(torch.jit.trace(cnn, torch.zeros(2, 1, 8, 8)), tmp_path / "cnn.ts")
    source = load_pytorch(tmp_path / "cnn.ts")
    assert source.kind == "torchscript"
    exported = pytorch_to_onnx(source, input_shapes=[(1, 1, 8, 8)])
    assert "TorchScript-based" in exported.notes[-1]
    assert _shapes(exported.model)["input"] == ["batch", 1, 8, 8]
    _top1_agrees(_check(exported, digits[2]), cnn, digits)


def test_exported_program_file(cnn: nn.Module, digits: Digits, tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    example = (torch.tensor(digits[2][:2]),)
    program = torch.export.export(cnn, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "cnn.pt2")
    source = load_pytorch(tmp_path / "cnn.pt2")
    assert source.kind == "exported_program"
    exported = pytorch_to_onnx(source)  # shapes from the program's own example
    assert _shapes(exported.model) == {"input": ["batch", 1, 8, 8], "output": ["batch", 10]}
    _top1_agrees(_check(exported, digits[2]), cnn, digits)


def test_static_exported_program_keeps_its_batch(mlp: nn.Module, tmp_path: Path) -> None:
    program = torch.export.export(mlp, (torch.zeros(3, 1, 8, 8),))
    torch.export.save(program, tmp_path / "static.pt2")
    source = load_pytorch(tmp_path / "static.pt2")
    exported = pytorch_to_onnx(source)
    assert _shapes(exported.model)["input"] == [3, 1, 8, 8]
    assert any("'input' axis 0 is fixed at 3" in note for note in exported.notes)
    with pytest.raises(ConversionError, match="cannot take the dynamic axes"):
        pytorch_to_onnx(source, dynamic_axes={"input": {0: "batch"}})


def test_the_torchscript_exporter_when_asked(mlp: nn.Module, digits: Digits) -> None:
    exported = pytorch_to_onnx(
        mlp,
        example_inputs=[digits[2][:2]],
        input_names=["pixels"],
        output_names=["logits"],
        exporter="torchscript",
    )
    assert _shapes(exported.model) == {"pixels": ["batch", 1, 8, 8], "logits": ["batch", 10]}
    assert exported.notes == ("exported with the TorchScript-based exporter (as asked), opset 17",)
    _check(exported, digits[2], batches=(1, 5, 7))


def test_programs_with_pickles_need_trust(mlp: nn.Module, tmp_path: Path) -> None:
    program = torch.export.export(mlp, (torch.zeros(2, 1, 8, 8),))
    torch.export.save(program, tmp_path / "plain.pt2")
    pickled = io.BytesIO()
    torch.save(nn.Linear(2, 2), pickled)  # a module where tensors belong: unpickling runs code
    with (
        zipfile.ZipFile(tmp_path / "plain.pt2") as plain,
        zipfile.ZipFile(tmp_path / "tampered.pt2", "w") as tampered,
    ):
        for member in plain.namelist():
            data = plain.read(member)
            tampered.writestr(member, pickled.getvalue() if "sample_inputs" in member else data)
    assert load_pytorch(tmp_path / "plain.pt2").kind == "exported_program"
    with pytest.raises(UntrustedSource, match=r"torch\.export program with pickled parts"):
        load_pytorch(tmp_path / "tampered.pt2")


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_dynamic_sequence_axis(exporter: str) -> None:
    torch.manual_seed(0)
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int64)
    exported = pytorch_to_onnx(
        TokenMean(),
        example_inputs=[ids],
        input_names=["input_ids"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "output": {0: "batch"}},
        exporter=exporter,
    )
    assert _shapes(exported.model) == {"input_ids": ["batch", "sequence"], "output": ["batch", 3]}
    assert exported.reference is not None
    session = ort.InferenceSession(exported.model.SerializeToString())
    rng = np.random.default_rng(0)
    for batch, length in [(1, 3), (4, 11)]:
        feed = {"input_ids": rng.integers(0, 50, (batch, length))}
        (got,) = session.run(None, feed)
        np.testing.assert_allclose(got, exported.reference(feed)[0], atol=1e-5)


def test_falls_back_to_torchscript_when_torch_export_fails() -> None:
    exported = pytorch_to_onnx(Branchy(), input_shapes=[(2, 4)])
    assert exported.notes[0].startswith("the dynamo exporter failed")
    assert "fallback" in exported.notes[1]
    _check(exported, np.ones((7, 4), np.float32))


def test_pickled_modules_need_trust(mlp: nn.Module, tmp_path: Path) -> None:
    torch.save(mlp, tmp_path / "whole.pt")
    with pytest.raises(UntrustedSource, match="pickled PyTorch module"):
        load_pytorch(tmp_path / "whole.pt")
    source = load_pytorch(tmp_path / "whole.pt", trust=True)
    assert source.kind == "pickled_module"
    assert isinstance(source.model, nn.Sequential)


@pytest.mark.parametrize(
    ("factory", "problem"),
    [
        ("mserve_no_such_module:build", "cannot import mserve_no_such_module"),
        (NETS, "package.module:function"),
        (f"{NETS}:missing", "has no attribute missing"),
        (f"{NETS}:not_a_module", "returned a dict, not a torch.nn.Module"),
        (f"{NETS}:broken", "this factory needs a GPU"),
    ],
)
def test_bad_factories(nets: ModuleType, factory: str, problem: str) -> None:
    with pytest.raises(ConversionError, match=problem):
        load_pytorch(factory=factory)


def test_bad_files(cnn: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no such file"):
        load_pytorch(tmp_path / "absent.pt", factory=f"{NETS}:cnn")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ConversionError, match="is not a PyTorch file"):
        load_pytorch(tmp_path / "notes.txt")
    torch.save(cnn.state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(ConversionError, match="state_dict checkpoint"):
        load_pytorch(tmp_path / "cnn.pt")
    with pytest.raises(ConversionError, match=r"unexpected keys 0\.weight.*other shapes for 1\."):
        load_pytorch(tmp_path / "cnn.pt", factory=f"{NETS}:mlp")
    torch.save({"1.weight": torch.zeros(32, 64)}, tmp_path / "part.pt")
    with pytest.raises(ConversionError, match=r"missing keys 1\.bias, 3\.weight, 3\.bias$"):
        load_pytorch(tmp_path / "part.pt", factory=f"{NETS}:mlp")


def test_bad_export_arguments(cnn: nn.Module) -> None:
    with pytest.raises(ConversionError, match=r"fails on inputs of shape \(2, 64\)"):
        pytorch_to_onnx(cnn, input_shapes=[(2, 64)])
    with pytest.raises(ConversionError, match="input shapes are unknown"):
        pytorch_to_onnx(cnn)
    shapes = [(2, 1, 8, 8)]
    with pytest.raises(ConversionError, match="unknown exporter"):
        pytorch_to_onnx(cnn, input_shapes=shapes, exporter="tensorrt")
    with pytest.raises(ConversionError, match="class outputs"):
        pytorch_to_onnx(cnn, input_shapes=shapes, class_outputs=["probabilities"])
    with pytest.raises(ConversionError, match="not among the inputs"):
        pytorch_to_onnx(cnn, input_shapes=shapes, dynamic_axes={"pixels": {0: "batch"}})
    with pytest.raises(ConversionError, match="1 outputs but 2"):
        pytorch_to_onnx(cnn, input_shapes=shapes, output_names=["a", "b"])


class _EmbedMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(100, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).mean(1)


def test_an_invalid_graph_from_one_exporter_falls_back_to_the_other() -> None:
    # the dynamo exporter names the lookup's value "embedding" itself: asking for an output of
    # that name makes a graph that is not in SSA form
    ids = np.random.default_rng(0).integers(0, 100, (2, 5)).astype(np.int64)
    exported = pytorch_to_onnx(_EmbedMean(), example_inputs=[ids], output_names=["embedding"])
    assert any("dynamo exporter failed" in note for note in exported.notes)
    session = ort.InferenceSession(exported.model.SerializeToString())
    (got,) = session.run(None, {"input": ids})
    assert exported.reference is not None
    np.testing.assert_allclose(got, exported.reference({"input": ids})[0], atol=1e-6)


def test_the_cli_traces_integer_inputs_given_a_dtype(nets: ModuleType, tmp_path: Path) -> None:
    """``--input-shape ids=2,6:int64``: token ids traced as integers, both axes left free."""
    import onnx

    from mserve.cli.main import main

    out = tmp_path / "models" / "tokens"
    argv = ["convert", f"{NETS}:tokens", "--input-shape", "ids=2,6:int64", "--sequence-axis", "1"]
    assert main([*argv, "--out", str(out), "--no-measure", "--json"]) == 0
    graph = onnx.load(out / "1" / "model.onnx").graph
    (ids,) = graph.input
    assert ids.name == "ids"
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = [d.dim_param or d.dim_value for d in ids.type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


def test_the_cli_refuses_an_unknown_dtype(
    nets: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mserve.cli.main import main

    argv = ["convert", f"{NETS}:tokens", "--input-shape", "ids=2,6:integer", "--no-measure"]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 3  # a config error, as bad DIMS are
    assert "expected a numpy dtype like int64 after ':'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
