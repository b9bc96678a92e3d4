"""Pruning of PyTorch models before export: zeroed weights, or whole channels removed.

Both functions prune a copy and never touch the caller's module. This module imports torch:
import it only when a PyTorch model is pruned.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional
from torch.nn.utils import prune

from mserve.errors import ConversionError

#: An example input: one array or tensor, or one per model input.
ExampleInput = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]

#: The layers whose weights are pruned.
_Layer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
#: Modules, functions and methods that act on each value alone: channels and features pass.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.sigmoid, torch.tanh, functional.relu, functional.relu6,
    functional.leaky_relu, functional.elu, functional.gelu, functional.silu, functional.mish,
    functional.sigmoid, functional.tanh, functional.hardswish, functional.dropout,
}  # fmt: skip
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
#: Pooling keeps each channel apart too (before Flatten).
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_FUNCTIONS = {
    functional.max_pool2d, functional.avg_pool2d, functional.adaptive_avg_pool2d,
    functional.adaptive_max_pool2d,
}  # fmt: skip
_JOINS = {operator.add, operator.iadd, torch.add, torch.cat, torch.concat, torch.stack}


@dataclass(frozen=True, slots=True)
class PruneResult:
    """A pruned copy of a model, and what pruning did to it."""

    module: nn.Module
    method: str  # "unstructured" or "channels"
    amount: float
    params_before: int
    params_after: int
    sparsity: float  # fraction of zero weights among the Linear and Conv weights
    layer_sparsity: Mapping[str, float] = field(default_factory=dict)
    shrunk: Mapping[str, tuple[int, int]] = field(
        default_factory=dict
    )  # layer: (outs before, after)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Everything but the module, in JSON types."""
        return {
            "method": self.method,
            "amount": self.amount,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "sparsity": self.sparsity,
            "layer_sparsity": dict(self.layer_sparsity),
            "shrunk": {name: list(sizes) for name, sizes in self.shrunk.items()},
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    """What a time-bounded fine-tuning run did."""

    loss: str  # "cross_entropy" or "mse"
    seconds: float
    steps: int
    epochs: float  # passes over the data, counting a partial last one
    final_loss: float  # over all the data, in eval mode, after training

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return {
            "loss": self.loss,
            "seconds": self.seconds,
            "steps": self.steps,
            "epochs": self.epochs,
            "final_loss": self.final_loss,
        }


def prune_unstructured(module: nn.Module, amount: float) -> PruneResult:
    """Zero the ``amount`` fraction of Linear and Conv weights smallest in magnitude, ranked
    over all those layers together (global L1), and make it permanent in a copy."""
    _check(module, amount)
    pruned = copy.deepcopy(module)
    layers = _prunable(pruned)
    notes: tuple[str, ...] = ()
    if not layers:
        notes = ("nothing could be pruned: the model has no Linear or Conv layers",)
    elif amount == 0:
        notes = ("amount 0: nothing pruned",)
    else:
        targets = [(layer, "weight") for layer in layers.values()]
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        for layer, name in targets:
            prune.remove(layer, name)
    return _result(pruned, "unstructured", amount, _count(module), {}, notes)


def prune_channels(module: nn.Module, amount: float, example_input: ExampleInput) -> PruneResult:
    """Remove the ``amount`` fraction of output channels (Conv2d) or units (Linear) with the
    smallest L1 norm from each layer that can lose them, in a copy that is smaller and dense.

    The layers that read a pruned layer (Conv2d, Linear, through Flatten; BatchNorm on the way)
    shrink to match. Layers feeding the model's output, an add, a concatenation or anything
    else whose channels cannot follow are kept whole, and the notes say why.
    """
    _check(module, amount)
    pruned = copy.deepcopy(module).eval()
    inputs = _tensors(example_input)
    before = _count(module)
    if amount == 0:
        return _result(pruned, "channels", amount, before, {}, ("amount 0: nothing pruned",))
    with torch.no_grad():
        shape = _output_shapes(pruned, inputs)
    try:
        graph = torch.fx.symbolic_trace(pruned)
        with torch.no_grad():
            ShapeProp(graph).propagate(*inputs)
    except Exception as exc:
        note = f"nothing could be pruned: torch.fx cannot trace the model ({exc})"
        return _result(pruned, "channels", amount, before, {}, (note,))
    plans, notes = _plans(graph, _prunable(pruned))
    chosen: list[tuple[_Plan, torch.Tensor]] = []
    for plan in plans:  # every choice from the trained weights, before any layer shrinks
        weight = _layer(pruned, plan.layer).weight.detach()
        outs = int(weight.shape[0])
        keep = outs - round(amount * outs)
        if keep >= outs or keep < 1:
            notes.append(f"kept {plan.layer}: {outs} outputs are too few to prune {amount}")
            continue
        scores = weight.abs().flatten(1).sum(dim=1)
        chosen.append((plan, torch.topk(scores, keep).indices.sort().values))
    shrunk: dict[str, tuple[int, int]] = {}
    with torch.no_grad():
        for plan, kept in chosen:
            shrunk[plan.layer] = (int(_layer(pruned, plan.layer).weight.shape[0]), len(kept))
            _shrink(pruned, plan, kept)
        if not shrunk:
            notes.insert(0, "nothing could be pruned")
        elif _output_shapes(pruned, inputs) != shape:
            raise ConversionError("pruning", "the pruned model's output shape changed")
    return _result(pruned, "channels", amount, before, shrunk, tuple(notes))


@dataclass(frozen=True, slots=True)
class _Plan:
    """One layer whose outputs can shrink, and what must shrink with them."""

    layer: str
    norms: tuple[str, ...]  # BatchNorm layers on the way
    readers: tuple[tuple[str, int], ...]  # (layer, inputs per channel: H*W after Flatten, else 1)


def _plans(
    graph: torch.fx.GraphModule, layers: Mapping[str, _Layer]
) -> tuple[list[_Plan], list[str]]:
    """For each Conv2d and Linear layer: a plan, or a note on why its outputs must stay."""
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    plans: list[_Plan] = []
    notes: list[str] = []
    for name, layer in layers.items():
        sites = calls.get(name, [])
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            reason = f"{type(layer).__name__} layers are not channel-pruned"
        elif isinstance(layer, nn.Conv2d) and layer.groups != 1:
            reason = "a grouped convolution"
        elif len(sites) != 1:
            reason = f"called {len(sites)} times"
        else:
            plan = _follow(graph, sites[0], layer, calls)
            if isinstance(plan, _Plan):
                plans.append(plan)
                continue
            reason = plan
        notes.append(f"kept {name}: {reason}")
    return plans, notes


def _follow(
    graph: torch.fx.GraphModule,
    start: torch.fx.Node,
    layer: nn.Module,
    calls: Mapping[str, list[torch.fx.Node]],
) -> _Plan | str:
    """Walk forward from a layer's output to the layers that read its channels; a plan, or why
    there is none."""
    conv = isinstance(layer, nn.Conv2d)
    norms: list[str] = []
    readers: list[tuple[str, int]] = []
    frontier = [(start, 0)]  # (node carrying the channels, per-channel size once flattened)
    seen: set[torch.fx.Node] = set()
    while frontier:
        node, flat = frontier.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if user.op == "output":
                return "feeds the model's output"
            if user.target in _JOINS:
                return f"feeds {user.name} (an add or a concatenation)"
            if user.args[:1] != (node,):
                return f"feeds {user.name} other than as its first argument"
            target = str(user.target)
            module = graph.get_submodule(target) if user.op == "call_module" else None
            if module is not None and len(calls.get(target, [])) != 1:
                return f"feeds {target}, which is called more than once"
            rank = len(getattr(node.meta.get("tensor_meta"), "shape", ()))
            if isinstance(module, nn.Conv2d) and conv and not flat:
                if module.groups != 1:
                    return f"feeds the grouped convolution {target}"
                readers.append((target, 1))
            elif isinstance(module, nn.Linear) and (flat or not conv):
                readers.append((target, flat or 1))
            elif not flat and _normalises(module, conv, rank):
                norms.append(target)
                frontier.append((user, flat))
            elif _elementwise(user, module) or (not flat and _pools(user, module)):
                frontier.append((user, flat))
            elif not flat and (rank == 2 or (conv and rank > 2)) and _flattens(user, module):
                size = int(np.prod(node.meta["tensor_meta"].shape[2:]))
                frontier.append((user, size))
            else:
                return f"feeds {user.name}, which its channels cannot follow"
    if not readers:
        return "no layer reads its outputs"
    return _Plan(str(start.target), tuple(norms), tuple(readers))


def _elementwise(node: torch.fx.Node, module: nn.Module | None) -> bool:
    """Whether the node acts on each value alone."""
    if module is not None:
        return isinstance(module, _ELEMENTWISE_MODULES)
    if node.op == "call_method":
        return node.target in _ELEMENTWISE_METHODS
    return node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS


def _pools(node: torch.fx.Node, module: nn.Module | None) -> bool:
    """Whether the node pools over space, each channel apart."""
    if module is not None:
        return isinstance(module, _POOL_MODULES)
    return node.op == "call_function" and node.target in _POOL_FUNCTIONS


def _normalises(module: nn.Module | None, conv: bool, rank: int) -> bool:
    """Whether the module is a BatchNorm over the channels a conv or Linear layer made."""
    if conv:
        return isinstance(module, nn.BatchNorm2d)
    return isinstance(module, nn.BatchNorm1d) and rank == 2


def _flattens(node: torch.fx.Node, module: nn.Module | None) -> bool:
    """Whether the node flattens all but the batch axis (channels first, then space)."""
    if module is not None:
        return isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1
    flat = node.op == "call_method" and node.target == "flatten"
    flat = flat or (node.op == "call_function" and node.target is torch.flatten)
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return bool(flat and start == 1 and end == -1)


def _shrink(model: nn.Module, plan: _Plan, kept: torch.Tensor) -> None:
    """Keep only the ``kept`` outputs of the plan's layer, and the matching inputs after it."""
    layer = _layer(model, plan.layer)
    _set(layer, "weight", layer.weight[kept])
    if layer.bias is not None:
        _set(layer, "bias", layer.bias[kept])
    setattr(layer, "out_channels" if isinstance(layer, nn.Conv2d) else "out_features", len(kept))
    for name in plan.norms:
        norm = model.get_submodule(name)
        if not isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
            raise TypeError(f"{name} is a {type(norm).__name__}, not a BatchNorm layer")
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if getattr(norm, attr, None) is not None:
                _set(norm, attr, getattr(norm, attr)[kept])
        norm.num_features = len(kept)
    for name, size in plan.readers:
        reader = _layer(model, name)
        columns = (kept[:, None] * size + torch.arange(size)).flatten()
        _set(reader, "weight", reader.weight[:, columns])
        size_attr = "in_channels" if isinstance(reader, nn.Conv2d) else "in_features"
        setattr(reader, size_attr, len(columns))


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter or buffer of one of our layers with a smaller one."""
    is_parameter = name in dict(module.named_parameters(recurse=False))
    setattr(module, name, nn.Parameter(value.clone()) if is_parameter else value.clone())


def finetune(
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    seconds: float = 15.0,
    lr: float = 1e-3,
    batch_size: int = 64,
    max_steps: int | None = None,
    seed: int = 0,
) -> FinetuneResult:
    """Train ``module`` in place with Adam for about ``seconds`` of wall time, or ``max_steps``
    steps if that comes first: cross-entropy when ``y`` holds integer class labels, mean
    squared error when it holds floats. Batches are drawn with ``seed``."""
    if len(x) != len(y) or len(x) < 2:
        raise ConversionError(
            "fine-tuning",
            f"needs as many labels as rows, and 2 rows or more "
            f"(got {len(x)} rows and {len(y)} labels)",
        )
    classify = np.issubdtype(y.dtype, np.integer)
    inputs = _tensor(x)
    targets = torch.as_tensor(y, dtype=torch.long if classify else torch.float32)
    loss_fn = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    rows = len(inputs)
    steps = seen = 0
    start = time.monotonic()
    module.train()
    limit = max_steps if max_steps is not None else float("inf")

    def over() -> bool:
        return steps >= limit or time.monotonic() - start >= seconds

    while not over():
        for batch in torch.randperm(rows, generator=generator).split(batch_size):
            if len(batch) < 2:  # BatchNorm cannot train on one row
                continue
            optimizer.zero_grad()
            loss = _loss(loss_fn, module(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            steps += 1
            seen += len(batch)
            if over():
                break
    elapsed = time.monotonic() - start
    module.eval()
    with torch.no_grad():
        final = float(_loss(loss_fn, module(inputs), targets))
    return FinetuneResult(
        "cross_entropy" if classify else "mse", elapsed, steps, seen / max(rows, 1), final
    )


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    """The fraction of rows whose highest output is the label, the module in eval mode."""
    module.eval()
    inputs = _tensor(x)
    with torch.inference_mode():
        predicted = torch.cat([module(part).argmax(dim=-1) for part in inputs.split(batch_size)])
    return float((predicted.numpy() == y).mean())


def _loss(loss_fn: nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss, with regression targets shaped like the outputs (e.g. [n] for [n, 1])."""
    if target.is_floating_point() and target.numel() == out.numel():
        target = target.reshape(out.shape)
    return loss_fn(out, target)


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor copy of ``x``; float64 becomes float32, as models are."""
    tensor = torch.as_tensor(np.array(x, copy=True) if isinstance(x, np.ndarray) else x)
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def _tensors(example: ExampleInput) -> list[torch.Tensor]:
    """The example as one tensor per model input."""
    if isinstance(example, np.ndarray | torch.Tensor):
        return [_tensor(example)]
    return [_tensor(x) for x in example]


def _output_shapes(module: nn.Module, inputs: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    """The shapes of the module's outputs on the example, in eval mode."""
    module.eval()
    out = module(*inputs)
    return [tuple(t.shape) for t in (out if isinstance(out, tuple | list) else [out])]


def _check(module: nn.Module, amount: float) -> None:
    """Refuse what cannot be pruned: a non-Module, TorchScript, or an amount outside [0, 1)."""
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise ConversionError(
            "pruning",
            "needs a Python torch.nn.Module (a factory, with or without a checkpoint, "
            "or a trusted pickled module); TorchScript and torch.export programs cannot be pruned",
        )
    if not 0.0 <= amount < 1.0:
        raise ConversionError("pruning", f"the amount must be in [0, 1), got {amount}")


def _prunable(module: nn.Module) -> dict[str, _Layer]:
    """The Linear and Conv layers, by qualified name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, _Layer)}


def _layer(model: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    """The Conv2d or Linear layer of that name."""
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Conv2d | nn.Linear):
        raise TypeError(f"{name} is a {type(layer).__name__}, not a Conv2d or Linear layer")
    return layer


def _count(module: nn.Module) -> int:
    """The number of parameters."""
    return sum(p.numel() for p in module.parameters())


def sparsity(module: nn.Module) -> float:
    """The share of zero weights among the Linear and Conv weights."""
    weights = [layer.weight.detach() for layer in _prunable(module).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


@contextlib.contextmanager
def masks_kept(module: nn.Module) -> Iterator[None]:
    """Within the block, the weights that are zero now stay zero while the module trains (each
    layer's zeros become a pruning mask); on leaving, the masks are made permanent again."""
    layers = [layer for layer in _prunable(module).values() if bool((layer.weight == 0).any())]
    for layer in layers:
        prune.custom_from_mask(layer, "weight", mask=(layer.weight != 0).to(layer.weight.dtype))
    try:
        yield
    finally:
        for layer in layers:
            prune.remove(layer, "weight")


def _result(
    module: nn.Module,
    method: str,
    amount: float,
    before: int,
    shrunk: Mapping[str, tuple[int, int]],
    notes: tuple[str, ...],
) -> PruneResult:
    """A result with the sparsity of the pruned module, overall and per layer."""
    weights = {name: layer.weight.detach() for name, layer in _prunable(module).items()}
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    return PruneResult(
        module=module,
        method=method,
        amount=amount,
        params_before=before,
        params_after=_count(module),
        sparsity=sum(zeros.values()) / total if total else 0.0,
        layer_sparsity={name: zeros[name] / w.numel() for name, w in weights.items()},
        shrunk=dict(shrunk),
        notes=notes,
    )
