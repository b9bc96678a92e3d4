"""The comparison's result document (``compare.json``): the model, the settings, and per system
how it started, its memory, and the raw ``mserve bench`` results of its sweep and SLO search.

Every report (Markdown, HTML) is rendered from this document; ``docs/compare.md`` describes it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mserve.bench.result import machine
from mserve.compare.systems import ModelUnderTest

SCHEMA = "mserve.compare.result/1"

#: what became of a system: measured, failed on the way (with the reason), or not installed
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class SystemRun:
    """One system, with or without its dynamic batching, as the comparison found it."""

    key: str  # unique in the document: 'mserve', 'mserve+batching'
    system: str  # the name on the command line
    title: str  # the name in the report
    status: str = OK  # OK, FAILED or SKIPPED
    reason: str = ""  # why FAILED or SKIPPED (the install hint for SKIPPED)
    log_tail: str = ""  # FAILED: the last lines of the system's log
    protocol: str = ""  # the bench protocol it was loaded with
    batching: str = ""  # its own dynamic batching, in words; '' when off
    batching_requested: bool = False
    startup_s: float | None = None  # process start to the first ready 200
    rss_idle_mib: float | None = None  # just after ready, before any load
    rss_peak_mib: float | None = None  # the largest sample during the load
    exit_status: int | None = None  # once stopped
    files: dict[str, str] = field(default_factory=dict)  # log, sweep, slo: paths
    sweep: dict[str, Any] | None = None  # mserve bench's result document
    slo: dict[str, Any] | None = None  # mserve bench's result document of the SLO search

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_key(system: str, batching: bool) -> str:
    """The key of a system's run: its name, with '+batching' when batching was on."""
    return f"{system}+batching" if batching else system


def model_dict(model: ModelUnderTest) -> dict[str, Any]:
    """The model's facts for the document."""
    return {
        "name": model.name,
        "onnx_path": str(model.onnx_path),
        "inputs": [asdict(t) for t in model.inputs],
        "outputs": [asdict(t) for t in model.outputs],
        "max_batch_size": model.max_batch_size,
        "threads": model.threads,
    }


def new_document(
    model: ModelUnderTest, settings: dict[str, Any], command: list[str]
) -> dict[str, Any]:
    """The document before any system has run."""
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine(),
        "model": model_dict(model),
        "settings": settings,
        "systems": [],
    }
