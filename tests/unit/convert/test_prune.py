"""mserve.convert.prune: pruned copies of real digits classifiers that still classify."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional

from mserve.convert.prune import (
    PruneResult,
    accuracy,
    finetune,
    masks_kept,
    prune_channels,
    prune_unstructured,
    sparsity,
)
from mserve.convert.pytorch import pytorch_to_onnx
from mserve.errors import ConversionError

Digits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU, Conv-ReLU-MaxPool, Flatten, Linear-ReLU, Linear: 8x8 digits -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(functional.relu(self.fc1(self.flatten(x))))


class Residual(nn.Module):
    """A skip connection: the layers feeding the add must keep their channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.body(h)
        h = functional.adaptive_avg_pool2d(torch.relu(self.expand(h)), 1)
        return self.fc(torch.flatten(h, 1))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: steady step times on a shared machine, and no oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cnn(digits: Digits) -> nn.Module:
    """The CNN, trained for 100 steps (about 98% on the test split; about a second)."""
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    model = DigitsCNN()
    finetune(model, x_train, y_train, seconds=60.0, max_steps=100, lr=3e-3)
    return model.eval()


@pytest.fixture(scope="module")
def halved(cnn: nn.Module, digits: Digits) -> PruneResult:
    """The CNN with half the channels of each layer that can lose them."""
    return prune_channels(cnn, 0.5, digits[2][:4])


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_unstructured_zeroes_half_the_weights_of_a_copy(cnn: nn.Module, digits: Digits) -> None:
    before = _state(cnn)
    result = prune_unstructured(cnn, 0.5)
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert set(result.layer_sparsity) == {"conv1", "conv2", "fc1", "fc2"}
    assert result.params_after == result.params_before
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())  # untouched
    assert not any(k.endswith(("_orig", "_mask")) for k in result.module.state_dict())
    x_test, y_test = digits[2], digits[3]
    assert result.module(torch.tensor(x_test[:5])).shape == (5, 10)
    assert accuracy(result.module, x_test, y_test) >= accuracy(cnn, x_test, y_test) - 0.1
    assert json.loads(json.dumps(result.to_dict()))["method"] == "unstructured"


def test_channel_pruning_shrinks_layers_and_keeps_the_classifier(
    cnn: nn.Module, halved: PruneResult
) -> None:
    assert halved.shrunk == {"conv1": (16, 8), "conv2": (32, 16), "fc1": (64, 32)}
    assert halved.params_after < 0.35 * halved.params_before
    model: Any = halved.module
    assert model.conv1.out_channels == model.bn1.num_features == model.conv2.in_channels == 8
    assert model.bn1.running_mean.shape == (8,)
    assert model.fc1.in_features == 16 * 4 * 4
    assert model.fc2.out_features == 10
    assert any(note.startswith("kept fc2: feeds the model's output") for note in halved.notes)
    assert cnn.conv1.out_channels == 16  # type: ignore[comparison-overlap]  # original untouched
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_removing_dead_channels_changes_nothing() -> None:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    with torch.no_grad():  # odd channels of every prunable layer output exact zeros
        for layer in (model.conv1, model.conv2, model.fc1):
            layer.weight[1::2] = 0
            layer.bias[1::2] = 0
        for value in (model.bn1.weight, model.bn1.bias, model.bn1.running_mean):
            value[1::2] = 0
    x = torch.rand(5, 1, 8, 8)
    result = prune_channels(model, 0.5, x)
    assert result.shrunk == {"conv1": (16, 8), "conv2": (32, 16), "fc1": (64, 32)}
    with torch.no_grad():
        torch.testing.assert_close(result.module(x), model(x), atol=1e-5, rtol=1e-5)


def test_channel_pruned_cnn_exports_to_onnx(halved: PruneResult) -> None:
    exported = pytorch_to_onnx(halved.module, input_shapes=[(2, 1, 8, 8)])
    assert exported.reference is not None
    session = ort.InferenceSession(exported.model.SerializeToString())
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.random((batch, 1, 8, 8), dtype=np.float32)
        (got,) = session.run(None, {"input": x})
        np.testing.assert_allclose(got, exported.reference({"input": x})[0], atol=1e-4)


def test_finetuning_recovers_the_accuracy(
    cnn: nn.Module, halved: PruneResult, digits: Digits
) -> None:
    x_train, y_train, x_test, y_test = digits
    original = accuracy(cnn, x_test, y_test)
    model = copy.deepcopy(halved.module)
    torch.manual_seed(0)
    done = finetune(model, x_train, y_train, seconds=3.0, lr=1e-3)
    assert done.loss == "cross_entropy"
    assert done.steps > 0
    assert 3.0 <= done.seconds < 5.0
    assert accuracy(model, x_test, y_test) >= original - 0.05


def test_layers_feeding_an_add_keep_their_channels() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    result = prune_channels(model, 0.5, np.zeros((2, 1, 8, 8), np.float32))
    assert result.shrunk == {"expand": (16, 8)}
    kept = {note.split(":")[0]: note for note in result.notes}
    assert "add" in kept["kept stem"]
    assert "add" in kept["kept body"]
    x = torch.randn(4, 1, 8, 8)
    assert result.module(x).shape == (4, 10)


def test_a_model_with_nothing_to_prune_says_so() -> None:
    result = prune_channels(nn.Sequential(nn.Linear(64, 10)), 0.5, np.zeros((2, 64), np.float32))
    assert result.shrunk == {}
    assert result.notes[0] == "nothing could be pruned"
    assert result.params_after == result.params_before


def test_an_untraceable_model_is_returned_whole_with_a_note() -> None:
    result = prune_channels(Branchy(), 0.5, np.ones((2, 64), np.float32))
    assert result.shrunk == {}
    assert "torch.fx cannot trace" in result.notes[0]


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5])
def test_amounts_outside_zero_to_one_are_refused(amount: float) -> None:
    with pytest.raises(ConversionError, match="amount"):
        prune_unstructured(nn.Linear(2, 2), amount)


def test_torchscript_modules_cannot_be_pruned() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
        scripted = torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ConversionError, match="TorchScript"):
        prune_channels(scripted, 0.5, np.zeros((1, 2), np.float32))


def test_finetune_regresses_with_mse() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        start = float(((model(torch.tensor(x))[:, 0] - torch.tensor(y)) ** 2).mean())
    done = finetune(model, x, y, seconds=0.5, lr=0.05, batch_size=32)
    assert done.loss == "mse"
    assert done.final_loss < start / 10
    assert set(done.to_dict()) == {"loss", "seconds", "steps", "epochs", "final_loss"}


def test_finetuning_inside_masks_kept_leaves_pruned_weights_zero() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    result = prune_unstructured(net, 0.5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    with masks_kept(result.module):
        finetune(result.module, x, y, seconds=5.0, max_steps=50)
    assert sparsity(result.module) == pytest.approx(0.5, abs=0.01)
    # the masks are gone again: plain parameters, as export expects
    assert not any(name.endswith("_orig") for name, _ in result.module.named_parameters())
    finetune(result.module, x, y, seconds=5.0, max_steps=50)  # without the masks they regrow
    assert sparsity(result.module) < 0.1
