"""PyTorch models -> ONNX: export a loaded model (see :mod:`.pytorch_load`) and keep it as the
reference.

This module imports torch: import it only when a PyTorch model is converted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch

from mserve.convert.base import Exported
from mserve.convert.pytorch_load import TorchModel, TorchSource, brief
from mserve.errors import ConversionError

logger = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
_QUIET_LOGGERS = ("torch", "onnxscript", "onnx_ir")
_FIXED = "the exported graph cannot take the dynamic axes asked for: {}"


def pytorch_to_onnx(
    model: TorchSource | TorchModel,
    *,
    input_shapes: Sequence[Sequence[int]] | None = None,
    example_inputs: Sequence[np.ndarray] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    dtypes: Sequence[str] | None = None,
    opset: int = 17,
    exporter: str = "auto",
    class_outputs: Sequence[str] = (),
) -> Exported:
    """Export a module, TorchScript module or ``torch.export`` program to ONNX.

    Inputs come from ``example_inputs``, else are drawn for ``input_shapes`` (standard normal
    for float ``dtypes``, the default float32; 0 or 1 for integer ones), else from the program's
    own example. ``dynamic_axes`` maps input and output names to ``{axis: label}``; by default
    axis 0 of each is ``"batch"``. ``exporter`` "auto" prefers the torch.export-based exporter
    and falls back to the TorchScript-based one; "dynamo" or "torchscript" forces one. Raises
    :class:`ConversionError` when the model cannot run on the inputs or no exporter succeeds.
    A module is put in eval mode; the reference runs it under ``torch.inference_mode``.
    """
    if isinstance(model, TorchSource):
        name, target, notes = model.name, model.model, list(model.notes)
    else:
        name, target, notes = "pytorch model", model, []
    if exporter not in EXPORTERS:
        raise ConversionError(name, f"unknown exporter {exporter!r}; expected one of {EXPORTERS}")
    run = _runner(target)
    inputs = _inputs(name, target, input_shapes, example_inputs, dtypes)
    in_names = _names(name, "input", input_names, len(inputs))
    outputs = _run(name, run, inputs)
    out_names = _names(name, "output", output_names, len(outputs))
    explicit = dynamic_axes is not None
    axes = _axes(name, dynamic_axes, in_names, inputs, out_names, outputs)
    if explicit and isinstance(target, torch.export.ExportedProgram):
        _check_program_axes(name, target, in_names, axes)
    unknown = sorted(set(class_outputs) - set(out_names))
    if unknown:
        raise ConversionError(name, f"class outputs {unknown} are not among {out_names}")

    args = tuple(
        torch.tensor(_at_least_two(a, axes.get(n, {})))
        for n, a in zip(in_names, inputs, strict=True)
    )
    onnx_model = _export(name, target, exporter, args, in_names, out_names, axes, opset, notes)
    notes.extend(_name_axes(name, onnx_model, axes, set(in_names), explicit))

    def reference(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return _run(name, run, [feeds[n] for n in in_names])

    return Exported(
        model=onnx_model,
        framework="pytorch",
        reference=reference,
        sample=dict(zip(in_names, inputs, strict=True)),
        class_outputs=tuple(class_outputs),
        notes=tuple(notes),
    )


def _runner(model: TorchModel) -> Callable[..., Any]:
    """What computes the model: the module in eval mode, or the program's module."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    return model.eval()


def _inputs(
    name: str,
    model: TorchModel,
    shapes: Sequence[Sequence[int]] | None,
    examples: Sequence[np.ndarray] | None,
    dtypes: Sequence[str] | None,
) -> list[np.ndarray]:
    """The example inputs: given, drawn for the shapes, or the program's own example."""
    if examples is not None:
        return [np.asarray(x) for x in examples]
    if shapes is not None:
        kinds = list(dtypes) if dtypes is not None else ["float32"] * len(shapes)
        if len(kinds) != len(shapes):
            raise ConversionError(name, f"{len(shapes)} input shapes but {len(kinds)} dtypes")
        rng = np.random.default_rng(0)
        drawn = []
        for shape, dtype in zip(shapes, kinds, strict=True):
            if any(d < 1 for d in shape):
                raise ConversionError(name, f"input shape {tuple(shape)} needs sizes >= 1")
            if dtype not in _DTYPES:
                raise ConversionError(name, f"unknown dtype {dtype!r}; expected one of {_DTYPES}")
            if np.issubdtype(np.dtype(dtype), np.floating):
                drawn.append(rng.standard_normal(tuple(shape)).astype(dtype))
            else:
                drawn.append(rng.integers(0, 2, tuple(shape)).astype(dtype))
        return drawn
    example = getattr(model, "example_inputs", None)
    if isinstance(model, torch.export.ExportedProgram) and example and not example[1]:
        return [t.detach().cpu().numpy() for t in example[0]]
    raise ConversionError(
        name,
        "the input shapes are unknown: give them (e.g. --input-shape "
        "1,3,224,224) or example inputs",
    )


def _names(name: str, what: str, given: Sequence[str] | None, count: int) -> list[str]:
    """The names given (one per tensor), else 'input' / 'input_0', 'input_1', ..."""
    if given is None:
        return [what] if count == 1 else [f"{what}_{i}" for i in range(count)]
    if len(given) != count or len(set(given)) != count:
        raise ConversionError(
            name,
            f"the model has {count} {what}s but {len(given)} distinct "
            f"{what} names were given: {list(given)}",
        )
    return list(given)


def _run(name: str, run: Callable[..., Any], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the model on numpy inputs; its outputs as numpy arrays, flattened in order."""
    shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
    try:
        with torch.inference_mode():
            out = run(*(torch.tensor(x) for x in inputs))
    except Exception as exc:
        raise ConversionError(
            name,
            f"the model fails on inputs of shape {shapes} ({brief(exc)}); check the input shapes",
        ) from exc
    tensors = list(out) if isinstance(out, tuple | list) else [out]
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ConversionError(
            name, f"the model returns {type(out).__name__}; expected a tensor or a tuple of tensors"
        )
    return [t.detach().cpu().numpy() for t in tensors]


def _axes(
    name: str,
    given: Mapping[str, Mapping[int, str]] | None,
    in_names: Sequence[str],
    inputs: Sequence[np.ndarray],
    out_names: Sequence[str],
    outputs: Sequence[np.ndarray],
) -> dict[str, dict[int, str]]:
    """The dynamic axes asked for (checked against names and ranks); a tensor not named keeps
    the default, its axis 0 free as the batch."""
    ranks = {n: a.ndim for n, a in zip([*in_names, *out_names], [*inputs, *outputs], strict=True)}
    if given is None:
        return {n: {0: "batch"} for n, rank in ranks.items() if rank > 0}
    axes: dict[str, dict[int, str]] = {}
    for tensor, labels in given.items():
        if tensor not in ranks:
            raise ConversionError(
                name,
                f"dynamic axes name {tensor!r}, which is not among the "
                f"inputs {list(in_names)} or outputs {list(out_names)}",
            )
        bad = [axis for axis in labels if not 0 <= axis < ranks[tensor]]
        if bad:
            raise ConversionError(
                name, f"{tensor!r} has {ranks[tensor]} axes; dynamic axes {bad} do not exist"
            )
        axes[tensor] = dict(labels)
    for tensor, rank in ranks.items():
        if tensor not in axes and rank > 0:
            axes[tensor] = {0: "batch"}
    return axes


def _check_program_axes(
    name: str,
    program: torch.export.ExportedProgram,
    in_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
) -> None:
    """Refuse dynamic axes that a torch.export program fixed when it was exported."""
    places = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    fixed = []
    for tensor, user in zip(in_names, program.graph_signature.user_inputs, strict=False):
        shape = getattr(places[str(user)].meta.get("val"), "shape", ())
        for axis in axes.get(tensor, {}):
            if axis < len(shape) and isinstance(shape[axis], int):
                fixed.append(f"{tensor!r} axis {axis} is fixed at {shape[axis]}")
    if fixed:
        raise ConversionError(name, _FIXED.format("; ".join(fixed)))


def _at_least_two(array: np.ndarray, axes: Mapping[int, str]) -> np.ndarray:
    """The example, repeated along dynamic axes of size 1 (an exporter fixes those at 1)."""
    for axis in axes:
        if array.shape[axis] == 1:
            array = np.repeat(array, 2, axis=axis)
    return array


def _exporters(model: TorchModel, asked: str) -> list[tuple[str, str]]:
    """The exporters to try, in order, each with why."""
    if asked != "auto":
        return [(asked, "as asked")]
    if isinstance(model, torch.jit.ScriptModule):
        return [("torchscript", "torch.export cannot capture TorchScript modules")]
    if isinstance(model, torch.export.ExportedProgram):
        return [("dynamo", "the only one that takes a torch.export program")]
    return [
        ("dynamo", "the default for this torch version"),
        ("torchscript", "the fallback, as the dynamo exporter failed"),
    ]


def _export(
    name: str,
    model: TorchModel,
    asked: str,
    args: tuple[torch.Tensor, ...],
    in_names: Sequence[str],
    out_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    opset: int,
    notes: list[str],
) -> onnx.ModelProto:
    """Export with the first exporter that succeeds; notes say which, and what failed first."""
    order = _exporters(model, asked)
    for i, (kind, why) in enumerate(order):
        export = _export_dynamo if kind == "dynamo" else _export_torchscript
        try:
            with _quiet():
                onnx_model = export(model, args, in_names, out_names, axes, opset)
            # an exporter can write a graph ONNX rejects (an output named like a value it
            # named itself): that is a failure of this exporter, and the next one gets its turn
            onnx.checker.check_model(onnx_model)
        except Exception as exc:
            if i + 1 == len(order):
                raise ConversionError(name, f"the {kind} exporter failed: {brief(exc)}") from exc
            notes.append(f"the {kind} exporter failed: {brief(exc)}")
            continue
        notes.append(_exporter_note(kind, why, opset, onnx_model))
        return onnx_model
    raise ConversionError(name, "no exporter to try")  # unreachable: order is never empty


def _export_dynamo(
    model: TorchModel,
    args: tuple[torch.Tensor, ...],
    in_names: Sequence[str],
    out_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    opset: int,
) -> onnx.ModelProto:
    """The torch.export-based exporter; dynamic axes become ``torch.export.Dim`` objects."""
    options: dict[str, Any] = {}
    if not isinstance(model, torch.export.ExportedProgram):  # a program's shapes are its own
        labels = sorted({label for n in in_names for label in axes.get(n, {}).values()})
        dims = {label: torch.export.Dim(f"dim{i}") for i, label in enumerate(labels)}
        options["dynamic_shapes"] = tuple(
            {a: dims[lbl] for a, lbl in axes.get(n, {}).items()} or None for n in in_names
        )
    program = torch.onnx.export(
        model,
        () if isinstance(model, torch.export.ExportedProgram) else args,
        dynamo=True,
        verbose=False,
        input_names=list(in_names),
        output_names=list(out_names),
        opset_version=opset,
        **options,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _export_torchscript(
    model: TorchModel,
    args: tuple[torch.Tensor, ...],
    in_names: Sequence[str],
    out_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    opset: int,
) -> onnx.ModelProto:
    """The TorchScript-based exporter (``dynamo=False``), with ``dynamic_axes``."""
    if isinstance(model, torch.export.ExportedProgram):
        raise ValueError("the TorchScript-based exporter cannot export a torch.export program")
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        args,
        buffer,  # type: ignore[arg-type]  # typed as a path, but a file object works too
        dynamo=False,
        input_names=list(in_names),
        output_names=list(out_names),
        opset_version=opset,
        dynamic_axes=dict(axes),
    )
    return onnx.load_from_string(buffer.getvalue())


def _exporter_note(kind: str, why: str, opset: int, onnx_model: onnx.ModelProto) -> str:
    """Which exporter made the graph, why that one, and the opset it reached."""
    got = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    what = {"dynamo": "the torch.export-based (dynamo)", "torchscript": "the TorchScript-based"}
    note = f"exported with {what[kind]} exporter ({why}), opset {got}"
    if got != opset:
        note += f" (opset {opset} was asked for; the exporter could not convert the graph down)"
    return note


def _name_axes(
    name: str,
    model: onnx.ModelProto,
    axes: Mapping[str, Mapping[int, str]],
    in_names: set[str],
    explicit: bool,
) -> list[str]:
    """Give the graph's dynamic dimensions the labels asked for; notes on the ones left fixed."""
    graph = model.graph
    ends = {v.name: v for v in [*graph.input, *graph.output]}
    renames: dict[str, str] = {}
    fixed: list[tuple[str, int, int]] = []
    for tensor, labels in axes.items():
        dims = ends[tensor].type.tensor_type.shape.dim
        for axis, label in labels.items():
            dim = dims[axis]
            if dim.HasField("dim_param"):
                if tensor in in_names:
                    renames.setdefault(dim.dim_param, label)
                elif explicit:
                    dim.dim_param = label
            elif tensor in in_names or explicit:
                fixed.append((tensor, axis, dim.dim_value))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
    if not fixed:
        return []
    said = "; ".join(f"{t!r} axis {a} is fixed at {size}" for t, a, size in fixed)
    if explicit and any(t in in_names for t, _, _ in fixed):
        raise ConversionError(name, _FIXED.format(said))
    return [
        f"not dynamic: {said} (a torch.export program keeps the shapes it was exported with; "
        "export it with dynamic_shapes for a dynamic batch)"
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep one export's chatter off the console: progress lines and graph dumps it prints,
    records it logs, and Python warnings it raises (deprecations, pytree and opset notices).

    They concern torch's internals, not the user's model, and are logged at debug level
    instead; a failure still surfaces as the exception. Redirecting stdout and stderr is
    process-wide, so exports must not run beside other threads that print.
    """
    known = logging.root.manager.loggerDict.items()
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS] + [
        lg  # the few below those that set their own level
        for n, lg in known
        if n.split(".")[0] in _QUIET_LOGGERS and isinstance(lg, logging.Logger) and lg.level
    ]
    levels = [lg.level for lg in loggers]
    printed = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(printed),
        contextlib.redirect_stderr(printed),
    ):
        warnings.simplefilter("always")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
    for warning in caught:
        logger.debug("exporter warning: %s: %s", warning.category.__name__, warning.message)
    if printed.getvalue():
        logger.debug("exporter output:\n%s", printed.getvalue())
