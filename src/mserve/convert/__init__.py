"""Trained models -> verified, optimised ONNX, written into a model repository.

    from mserve.convert import ConvertOptions, SourceSpec, convert

    report = convert(SourceSpec("cnn.pt2"), Path("models/cnn"), ConvertOptions(optimize="auto"))

:func:`convert` is what ``mserve convert`` calls: detect and export (:mod:`.sources`), prune
PyTorch models when asked (:mod:`.prune`), then verify, derive and write the variants
(:mod:`.pipeline`). Framework libraries are imported only when their framework is converted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mserve.convert.base import Exported
from mserve.convert.parity import Tolerance
from mserve.convert.pipeline import ConvertOptions, Progress, Pruned, convert_exported
from mserve.convert.report import ConversionReport
from mserve.convert.signature import graph_inputs
from mserve.convert.sources import SourceSpec, detect, export
from mserve.errors import ConversionError


def _silent(step: str, done: int, total: int) -> None:
    """No progress shown."""


def convert(
    spec: SourceSpec,
    out: Path,
    options: ConvertOptions | None = None,
    *,
    inputs: Path | None = None,
    calibrate: Path | None = None,
    eval_data: Path | None = None,
    prune: Sequence[tuple[str, float]] = (),
    finetune: Path | None = None,
    finetune_seconds: float = 15.0,
    progress: Progress = _silent,
) -> ConversionReport:
    """Convert the model ``spec`` names into ``out`` (``REPO/NAME``); returns the report.

    ``inputs``, ``calibrate``, ``eval_data`` and ``finetune`` are .npz files (see
    :func:`mserve.convert.data.read_npz`); ``prune`` lists ``("unstructured" | "channels",
    amount)`` for PyTorch models, each exported as its own variant. Raises ConversionError (or
    its ParityError, UntrustedSource) with the reason.
    """
    from mserve.convert.data import example_rows, read_npz

    options = options or ConvertOptions()
    if inputs is not None and not spec.input_shapes and detect(spec) == "pytorch":
        spec = dataclasses.replace(spec, examples=example_rows(inputs))
    progress(f"exporting {spec.name}", 0, 0)
    exported, torch_source = export(spec)
    names = [s.name for s in graph_inputs(exported.model, spec.name)]
    changes: dict[str, Any] = {}
    if inputs is not None:
        changes["inputs"] = read_npz(inputs, names)[0]
    if calibrate is not None:
        changes["calibration"] = read_npz(calibrate, names)[0]
    if eval_data is not None:
        changes["eval_inputs"], changes["labels"] = read_npz(eval_data, names, labels=True)
    options = dataclasses.replace(options, **changes)
    pruned: list[Pruned] = []
    if prune:
        if torch_source is None:
            raise ConversionError(spec.name, "pruning applies to PyTorch models only")
        tuning = read_npz(finetune, names, labels=True) if finetune is not None else None
        for kind, amount in prune:
            progress(f"pruning: {kind} {amount:.0%}", 0, 0)
            pruned.append(_pruned(torch_source, exported, kind, amount, tuning, finetune_seconds))
    return convert_exported(
        exported, out, options, pruned=pruned, progress=progress, source=spec.name
    )


def _pruned(
    torch_source: Any,
    exported: Exported,
    kind: str,
    amount: float,
    tuning: Any,
    seconds: float,
) -> Pruned:
    """Prune the PyTorch module, fine-tune it when data is given, export it like the original."""
    import numpy as np
    import torch

    from mserve.convert import prune as pruning
    from mserve.convert.pytorch import pytorch_to_onnx

    module = torch_source.model
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise ConversionError(
            torch_source.name,
            "pruning needs the Python module: give a factory and a state_dict checkpoint",
        )
    names = [s.name for s in graph_inputs(exported.model)]
    example = [np.asarray(exported.sample[n]) for n in names] if exported.sample else None
    if kind == "unstructured":
        result = pruning.prune_unstructured(module, amount)
    else:
        if example is None:
            raise ConversionError(torch_source.name, "channel pruning needs --input-shape")
        result = pruning.prune_channels(module, amount, torch.from_numpy(example[0]))
    notes = list(result.notes)
    if tuning is not None:
        feeds, labels = tuning
        with pruning.masks_kept(result.module):  # fine-tuning must not regrow pruned weights
            tuned = pruning.finetune(result.module, feeds[names[0]], labels, seconds=seconds)
        notes.append(f"fine-tuned for {tuned.seconds:.1f} s ({tuned.steps} steps)")
    if kind == "unstructured":
        sparsity = pruning.sparsity(result.module)
    else:  # the pruned model is dense and smaller: its sparsity is the share removed
        sparsity = 1.0 - result.params_after / result.params_before
    out_names = [o.name for o in exported.model.graph.output]
    again = pytorch_to_onnx(
        result.module,
        example_inputs=example,
        input_names=names,
        output_names=out_names,
        class_outputs=exported.class_outputs,
    )
    name = f"pruned-{kind}-{round(amount * 100)}"
    return Pruned(name, again, sparsity, result.params_after, tuple(notes))


__all__ = [
    "ConversionReport",
    "ConvertOptions",
    "Exported",
    "SourceSpec",
    "Tolerance",
    "convert",
]
