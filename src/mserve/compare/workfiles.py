"""What a launcher writes into its work folder for the program it starts: the settings the
program reads (``apps/served_model.py`` reads them back), and the request body ``mserve bench``
sends to the systems that speak plain JSON; and the free ports a system needs beside its own.

The settings are built by pure functions; writing them and finding ports are the only I/O."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np

from mserve.compare.systems import ModelUnderTest, TensorInfo
from mserve.errors import ConfigError

#: the programs the systems run; they import ``served_model`` from this folder
APPS = Path(__file__).resolve().parent / "apps"
#: the file each program reads its settings from, in the work folder
SETTINGS_FILE = "served-model.json"
#: the environment variable that names it (apps/served_model.py's SETTINGS_ENV)
SETTINGS_ENV = "MSERVE_COMPARE_MODEL"
#: the longest any system's batcher holds a request waiting for more (1 ms)
MAX_DELAY_US = 1000
#: the plain-JSON systems' request body, in the work folder
BODY_FILE = "body.json"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tensor_dict(t: TensorInfo) -> dict[str, Any]:
    """A tensor as the V2 metadata (and every settings file here) writes it."""
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def program_settings(
    model: ModelUnderTest,
    port: int,
    workdir: Path,
    batching: bool,
    grpc_port: int = 0,
    metrics_port: int = 0,
) -> dict[str, Any]:
    """The settings a program reads: the model, its ports (0: none), the batching.
    ConfigError when batching is asked of a model without a batch axis."""
    if batching and model.max_batch_size < 1:
        raise ConfigError(
            f"model '{model.name}'",
            "max_batch_size",
            "a value >= 1 to batch (a batch axis)",
            model.max_batch_size,
        )
    return {
        "name": model.name,
        "onnx_path": str(model.onnx_path.resolve()),
        "inputs": [tensor_dict(t) for t in model.inputs],
        "outputs": [tensor_dict(t) for t in model.outputs],
        "max_batch_size": model.max_batch_size,
        "threads": model.threads,
        "port": port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "batching": batching,
        "max_delay_us": MAX_DELAY_US,
        "workdir": str(workdir.resolve()),
    }


def write_settings(workdir: Path, settings: dict[str, Any]) -> dict[str, str]:
    """Write ``settings`` into ``workdir``; returns the environment that points a program at
    them and puts ``apps/`` on its import path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / SETTINGS_FILE
    path.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return {SETTINGS_ENV: str(path.resolve()), "PYTHONPATH": str(APPS)}


def sample_instance(model: ModelUnderTest, seed: int = 0) -> Any:
    """One instance of input, seeded random (free dimensions as 1): one row of the only input
    (the whole input when there is no batch axis), or ``{input name: row}`` for several."""
    rng = np.random.default_rng(seed)
    rows: dict[str, Any] = {}
    for t in model.inputs:
        dims = t.shape[1:] if model.max_batch_size else t.shape
        shape = [1 if d < 0 else d for d in dims]
        if t.datatype.startswith("FP"):
            rows[t.name] = np.round(rng.random(shape), 4).tolist()
        elif t.datatype == "BOOL":
            rows[t.name] = np.zeros(shape, dtype=bool).tolist()
        else:
            rows[t.name] = rng.integers(0, 10, shape).tolist()
    return next(iter(rows.values())) if len(rows) == 1 else rows


def plain_body(model: ModelUnderTest) -> dict[str, Any]:
    """The plain-JSON request: ``{"instances": [one sample instance]}``."""
    return {"instances": [sample_instance(model)]}


def write_body(model: ModelUnderTest, workdir: Path) -> Path:
    """Write the plain-JSON request into ``workdir``; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / BODY_FILE
    path.write_text(json.dumps(plain_body(model)), encoding="utf-8")
    return path.resolve()
