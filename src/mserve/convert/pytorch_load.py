"""PyTorch models from their files: state_dict checkpoints with a factory, TorchScript
archives, ``torch.export`` programs, and (only when trusted) pickled modules.

This module imports torch: import it only when a PyTorch model is converted.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mserve.errors import ConversionError, UntrustedSource

#: What can be exported: a module (TorchScript ones included) or a torch.export program.
TorchModel = torch.nn.Module | torch.export.ExportedProgram

_PLAIN = ("weight_", "tensor_")  # payload files of a .pt2 archive that hold raw tensors
_STATE_DICT_KEYS = ("state_dict", "model_state_dict")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, slots=True)
class TorchSource:
    """A loaded PyTorch model, what it was loaded from, and what a user should know about it."""

    model: TorchModel
    kind: str  # "factory", "checkpoint", "torchscript", "exported_program", "pickled_module"
    name: str  # the file or factory, as errors name it
    notes: tuple[str, ...] = ()


def load_pytorch(
    source: str | Path | None = None, *, factory: str | None = None, trust: bool = False
) -> TorchSource:
    """Load a model from a file, a ``package.module:function`` factory, or a factory and a
    state_dict checkpoint.

    Files may be state_dict checkpoints (with ``factory``), TorchScript archives, ``torch.export``
    programs (``.pt2``) or pickled modules. Pickled modules, and programs with pickled parts,
    run code when loaded and are refused with :class:`UntrustedSource` unless ``trust``.
    Raises :class:`ConversionError` on anything else.
    """
    if source is None:
        if factory is None:
            raise ConversionError("pytorch", "give a model file, a factory, or both")
        module = _call_factory(factory)
        note = f"no checkpoint given: the weights are the ones {factory} initialises"
        return TorchSource(module, "factory", factory, (note,))
    path = Path(source)
    name = str(source)
    if not path.is_file():
        problem = "is a directory, not a model file" if path.is_dir() else "no such file"
        raise ConversionError(name, problem)
    kind = _file_kind(path)
    if kind in ("torchscript", "exported_program") and factory is not None:
        raise ConversionError(
            name, f"holds a complete {kind} model; a factory is only for state_dict checkpoints"
        )
    if kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
            script = torch.jit.load(str(path), map_location="cpu")
        return TorchSource(script.eval(), "torchscript", name)
    if kind == "exported_program":
        if not trust and _program_unpickles(path):
            raise UntrustedSource(name, "a torch.export program with pickled parts")
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ConversionError(
                name, f"cannot load the torch.export program: {brief(exc)}"
            ) from exc
        return TorchSource(program, "exported_program", name)
    if kind == "unknown":
        raise ConversionError(
            name,
            "is not a PyTorch file (a state_dict checkpoint, a TorchScript "
            "archive, a torch.export .pt2 program or a pickled module)",
        )
    return _load_pickle(path, name, factory, trust)


def _file_kind(path: Path) -> str:
    """'torchscript', 'exported_program', 'pickle' (torch.save) or 'unknown', from the bytes."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            # torch archives put everything under one top folder named after the file
            names = {n.split("/", 1)[-1] for n in archive.namelist()}
        if "constants.pkl" in names or any(n.startswith("code/") for n in names):
            return "torchscript"
        if "archive_format" in names or any("serialized_exported_program" in n for n in names):
            return "exported_program"
        return "pickle" if "data.pkl" in names else "unknown"
    with path.open("rb") as file:
        magic = file.read(1)
    return "pickle" if magic == b"\x80" else "unknown"  # torch.save's legacy format: a pickle


def _program_unpickles(path: Path) -> bool:
    """Whether torch.export.load would unpickle (and so could run code from) this archive.

    Current archives keep weights and constants as raw tensors and the graph as JSON; pickles
    appear for odd tensors, custom objects, the example inputs (when they are not plain
    tensors) and everything in older archives.
    """
    with zipfile.ZipFile(path) as archive:
        members = {n.split("/", 1)[-1]: n for n in archive.namelist()}
        if "archive_format" not in members or any("aotinductor" in n for n in members):
            return True
        for inner, member in members.items():
            if inner.startswith(("data/weights/", "data/constants/")) and inner.endswith(".json"):
                entries = json.loads(archive.read(member)).get("config", {}).values()
                if any(
                    e.get("use_pickle") or not str(e.get("path_name")).startswith(_PLAIN)
                    for e in entries
                ):
                    return True
            elif inner.startswith("data/sample_inputs/"):
                try:  # torch.export.load retries what this refuses with weights_only=False
                    torch.load(io.BytesIO(archive.read(member)), weights_only=True)
                except Exception:
                    return True
    return False


def _load_pickle(path: Path, name: str, factory: str | None, trust: bool) -> TorchSource:
    """A torch.save file: a state_dict (loaded safely) or a pickled module (only if trusted)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights only load failed" not in str(exc).lower():
            raise ConversionError(name, f"cannot be read by torch.load: {brief(exc)}") from exc
        if not trust:
            raise UntrustedSource(name, "a pickled PyTorch module") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ConversionError(
                name,
                f"cannot be unpickled ({brief(exc2)}); the classes it names must be "
                "importable here",
            ) from exc2
        if not isinstance(obj, torch.nn.Module):
            raise ConversionError(
                name, f"holds a pickled {type(obj).__name__}, not a torch.nn.Module"
            ) from None
        if factory is not None:
            raise ConversionError(
                name,
                "holds a complete pickled module; a factory is only for state_dict checkpoints",
            ) from None
        return TorchSource(obj.eval(), "pickled_module", name)
    state = _state_dict(obj)
    if state is None:
        raise ConversionError(name, f"holds a {type(obj).__name__} that is not a state_dict")
    if factory is None:
        raise ConversionError(
            name,
            "is a state_dict checkpoint: it holds weights but not the "
            "architecture; name the code that builds the model with a "
            "factory (package.module:function)",
        )
    module = _call_factory(factory)
    expected = module.state_dict()
    resized = [
        f"{key} ({tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model)"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{what} {_some(keys)}"
        for what, keys in (
            ("missing keys", [k for k in expected if k not in state]),
            ("unexpected keys", [k for k in state if k not in expected]),
            ("other shapes for", resized),
        )
        if keys
    ]
    if problems:
        raise ConversionError(
            name, f"does not fit the model {factory} builds: {'; '.join(problems)}"
        )
    module.load_state_dict(state)
    return TorchSource(module.eval(), "checkpoint", name)


def _state_dict(obj: object) -> Mapping[str, torch.Tensor] | None:
    """The state_dict in a checkpoint, bare or under a usual key; None if there is none."""
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _state_dict(obj[key])
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def _call_factory(factory: str) -> torch.nn.Module:
    """Import ``package.module:function``, call it with no arguments, check it built a module."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise ConversionError(factory, "a factory is written package.module:function")
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:
        raise ConversionError(factory, f"cannot import {module_name}: {brief(exc)}") from exc
    function: Any = target
    for part in attr.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise ConversionError(factory, f"{module_name} has no attribute {attr}")
    if not callable(function):
        raise ConversionError(factory, f"{attr} is not callable")
    try:
        module = function()
    except Exception as exc:
        raise ConversionError(factory, f"calling {attr}() failed: {brief(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(
            factory, f"{attr}() returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def _some(keys: Sequence[str], limit: int = 5) -> str:
    """A few keys, and how many more."""
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def brief(exc: BaseException) -> str:
    """An exception in one line: its type and first line, or those of its cause."""

    def line(e: BaseException) -> str:
        text = _ANSI.sub("", str(e)).strip().splitlines()
        return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")

    cause = exc.__cause__
    return line(exc) if cause is None else f"{type(exc).__name__}, caused by {line(cause)}"
