"""mserve.convert.convert, the Python API the CLI calls: a PyTorch factory traced on example
rows from a data file, a free sequence axis, pruning, and the report it returns."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from mserve.convert import ConvertOptions, SourceSpec, convert
from mserve.errors import ConversionError

BAG = """
import torch
from torch import nn


class Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


def make() -> nn.Module:
    return Bag()
"""


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "bagnet.py").write_text(textwrap.dedent(BAG))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bagnet:make"


def test_traced_on_rows_from_the_inputs_file_with_a_free_sequence(
    tmp_path: Path, factory: str
) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", ids=rng.integers(0, 50, (6, 9)).astype(np.int64))
    out = tmp_path / "models" / "bag"
    report = convert(
        SourceSpec(None, factory=factory, sequence_axis=1),
        out,
        ConvertOptions(measure=False),
        inputs=tmp_path / "ids.npz",
        prune=[("unstructured", 0.5)],
    )
    assert [v.name for v in report.variants] == ["fp32", "pruned-unstructured-50"]
    assert all(v.kept for v in report.variants)
    assert report.parity_data == "given"
    assert report.inputs[0].shape == (-1, -1)  # batch and sequence both free
    pruned = report.variants[1]
    assert pruned.sparsity == pytest.approx(0.5, abs=0.02)
    session = ort.InferenceSession(str(out / "1" / "model.onnx"))
    for shape in ((1, 3), (5, 17)):  # any batch, any sequence length
        ids = rng.integers(0, 50, shape).astype(np.int64)
        (scores,) = session.run(None, {"input": ids})
        assert scores.shape == (shape[0], 4)
    written = json.loads((out / "conversion.json").read_text())
    assert written["variants"][1]["model"] == "bag-pruned-unstructured-50"
    assert (tmp_path / "models" / "bag-pruned-unstructured-50" / "1" / "model.onnx").is_file()


def test_pruning_a_non_pytorch_model_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ConversionError, match="pruning applies to PyTorch models only"):
        convert(SourceSpec(str(path)), tmp_path / "m" / "relu", prune=[("channels", 0.5)])
