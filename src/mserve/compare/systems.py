"""The serving systems ``mserve compare`` can start, behind one interface: is it installed
(else how to install it), and how to start it serving one ONNX model on a port, with ONNX
Runtime inside, so that ``mserve bench`` can load it exactly as it loads the others.

Each system other than mserve runs from a virtual environment of its own (made by
``scripts/compare-envs``), so that its dependencies never meet ours; a launcher only
starts processes, it never installs anything."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of the model: V2 name, datatype and shape (-1 for a free axis)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelUnderTest:
    """The model every system serves: an ONNX file and its signature."""

    name: str
    onnx_path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    #: the largest batch a server may form (its dynamic batching's limit); 0: no batch axis
    max_batch_size: int
    #: ONNX Runtime's intra-op threads in every system (one per core given to the server)
    threads: int = 1


@dataclass(frozen=True)
class Launch:
    """How to start one system and how to reach it once it runs."""

    argv: list[str]
    #: GET this until it answers 200: the system is ready
    ready_url: str
    #: the URL and ``mserve bench`` options that load it (--protocol and what it needs)
    target: str
    bench_args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    cwd: Path | None = None
    #: the system's own dynamic batching is on (and how, in words, for the report)
    batching: str = ""


class System(Protocol):
    """A serving system that ``mserve compare`` can start."""

    #: the name on the command line (--systems): mserve, triton, mlserver, fastapi, ...
    name: str

    @property
    def title(self) -> str:
        """The name in the report: 'NVIDIA Triton (PyTriton 0.5)', 'FastAPI + uvicorn', ...
        (a property: a launcher reads the installed version when asked)."""
        ...

    def missing(self) -> str | None:
        """None when the system can start here; else why not and the command that installs
        it (e.g. 'no environment at ~/.cache/mserve/compare/triton: run scripts/compare-envs
        triton')."""
        ...

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """How to start it serving ``model`` on 127.0.0.1:``port`` (files it needs go into
        ``workdir``); ``batching``: with its own dynamic batching on, up to
        ``model.max_batch_size``."""
        ...


def envs_root() -> Path:
    """Where scripts/compare-envs makes the systems' virtual environments:
    $MSERVE_COMPARE_ENVS, else ~/.cache/mserve/compare."""
    return Path(os.environ.get("MSERVE_COMPARE_ENVS", Path.home() / ".cache/mserve/compare"))


def env_python(system: str) -> Path:
    """The Python of a system's virtual environment."""
    return envs_root() / system / "bin" / "python"


def names(systems: Sequence[System]) -> list[str]:
    """The command-line names of ``systems``."""
    return [s.name for s in systems]
