"""Request payloads: random tensors from a model's metadata, or tensors read from files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mserve.errors import ConfigError, InvalidRequest
from mserve.protocol import DATATYPES

Sample = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A model input as the target's metadata describes it (-1: free dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``--shape NAME:D1,D2`` options."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            parsed = tuple(int(d) for d in dims.split(","))
        except ValueError:
            parsed = ()
        if not sep or not name or not parsed or any(d < 0 for d in parsed):
            raise ConfigError(
                "--shape", item, "NAME:D1,D2,... with non-negative integer dimensions"
            )
        shapes[name] = parsed
    return shapes


def concrete_shape(
    spec: InputSpec, batch_size: int, overrides: dict[str, tuple[int, ...]]
) -> tuple[int, ...]:
    """The shape to send: an override (batch dimension added when missing), or the metadata's
    shape with a leading -1 set to the batch size. Any other free dimension needs an override."""
    if spec.name in overrides:
        shape = overrides[spec.name]
        if len(shape) == len(spec.shape) - 1 and spec.shape and spec.shape[0] == -1:
            shape = (batch_size, *shape)
        if len(shape) != len(spec.shape) or any(
            e >= 0 and e != s for e, s in zip(spec.shape, shape, strict=True)
        ):
            raise InvalidRequest(
                f"--shape {spec.name}:{','.join(map(str, overrides[spec.name]))} does not fit "
                f"the model's shape {list(spec.shape)} (-1 is free)"
            )
        return shape
    dims = list(spec.shape)
    if dims and dims[0] == -1:
        dims[0] = batch_size
    if any(d < 0 for d in dims):
        raise InvalidRequest(
            f"input '{spec.name}' has shape {list(spec.shape)} with a free dimension; "
            f"give its size with --shape {spec.name}:"
            + ",".join("D" if d < 0 else str(d) for d in spec.shape[1:])
        )
    return tuple(dims)


def random_samples(
    specs: list[InputSpec],
    batch_size: int,
    overrides: dict[str, tuple[int, ...]],
    seed: int,
    count: int,
) -> list[Sample]:
    """``count`` distinct random samples, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    shapes = {s.name: concrete_shape(s, batch_size, overrides) for s in specs}
    unknown = set(overrides) - set(shapes)
    if unknown:
        raise InvalidRequest(
            f"--shape names unknown input(s) {', '.join(sorted(unknown))}; "
            f"the model's inputs are {', '.join(shapes)}"
        )
    return [{s.name: _random(rng, s.datatype, shapes[s.name]) for s in specs} for _ in range(count)]


def _random(rng: np.random.Generator, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        flat = np.empty(int(np.prod(shape)), dtype=object)
        for i in range(flat.size):
            flat[i] = bytes(rng.integers(97, 123, size=8, dtype=np.uint8))
        return flat.reshape(shape)
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind == "f":
        return rng.random(size=shape, dtype=np.float64).astype(dtype)
    return rng.integers(0, 10, size=shape).astype(dtype)


def load_samples(path: Path, specs: list[InputSpec]) -> list[Sample]:
    """Samples from ``.npy`` (the single input; first axis = samples), ``.npz`` (one array per
    input name; first axis = samples) or ``.json`` (a list of {input: nested list})."""
    if not path.is_file():
        raise InvalidRequest(f"--input-data {path}: no such file")
    by_name = {s.name: s for s in specs}
    if path.suffix == ".npy":
        if len(specs) != 1:
            raise InvalidRequest(
                f"--input-data {path}: a .npy file fits a model with one input; this one has "
                f"{', '.join(by_name)} (use .npz with one array per input)"
            )
        arr = np.load(path, allow_pickle=False)
        return [{specs[0].name: arr[i]} for i in range(len(arr))]
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        _check_names(path, set(arrays), by_name)
        n = min(len(a) for a in arrays.values())
        return [{k: a[i] for k, a in arrays.items()} for i in range(n)]
    if path.suffix == ".json":
        doc: Any = json.loads(path.read_text())
        if not isinstance(doc, list) or not doc or not all(isinstance(d, dict) for d in doc):
            raise InvalidRequest(f"--input-data {path}: expected a JSON list of {{input: data}}")
        samples = []
        for d in doc:
            _check_names(path, set(d), by_name)
            samples.append(
                {
                    k: np.asarray(v, dtype=DATATYPES[by_name[k].datatype])
                    if by_name[k].datatype != "BYTES"
                    else np.asarray([str(x).encode() for x in np.ravel(v)], dtype=object)
                    for k, v in d.items()
                }
            )
        return samples
    raise InvalidRequest(f"--input-data {path}: expected a .npy, .npz or .json file")


def _check_names(path: Path, names: set[str], by_name: dict[str, InputSpec]) -> None:
    if names != set(by_name):
        raise InvalidRequest(
            f"--input-data {path}: holds {', '.join(sorted(names))} but the model's inputs are "
            f"{', '.join(sorted(by_name))}"
        )
