"""The conversion report: every variant tried, its size, parity, speed and whether it was kept.

Written as JSON next to the model (``conversion.json``, schema ``mserve.convert.report/1``) and
shown as a table on the terminal; this module only holds and renders data.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from mserve.convert.parity import Parity
from mserve.convert.timing import Latency
from mserve.protocol import TensorSpec

SCHEMA = "mserve.convert.report/1"


@dataclass(slots=True)
class VariantReport:
    """One variant: how it was made, what it computes, how fast it runs, and the verdict."""

    name: str  # fp32, fp16, int8-dynamic, int8-static, openvino, pruned-channels-50, ...
    model: str  # its model name in the repository
    backend: str = "onnxruntime"
    requested: bool = True  # asked for by name (or the baseline), not only tried by --optimize auto
    size_bytes: int = 0
    nodes: int = 0
    parity: Parity | None = None
    latency: list[Latency] = field(default_factory=list)
    speedup: dict[int, float] = field(default_factory=dict)  # batch -> fp32 p50 / this p50
    accuracy: float | None = None  # on the labelled --eval data, for classifiers
    sparsity: float | None = None  # pruned variants: share of zero (or removed) weights
    parameters: int | None = None
    kept: bool = False
    written: str | None = None  # the model file's path when written
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def p50(self, batch: int) -> float | None:
        """The median latency at ``batch`` rows, when measured."""
        return next((m.p50_ms for m in self.latency if m.batch == batch), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "backend": self.backend,
            "requested": self.requested,
            "size_bytes": self.size_bytes,
            "nodes": self.nodes,
            "parity": self.parity.to_dict() if self.parity else None,
            "latency": [m.to_dict() for m in self.latency],
            "speedup": {str(k): v for k, v in self.speedup.items()},
            "accuracy": self.accuracy,
            "sparsity": self.sparsity,
            "parameters": self.parameters,
            "kept": self.kept,
            "written": self.written,
            "reason": self.reason,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class ConversionReport:
    """A whole conversion: the source, the signature, every variant."""

    source: str
    framework: str
    model: str
    version: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    variants: list[VariantReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parity_rows: int = 0
    parity_data: str = "generated"  # "given" when compared on the user's data
    threads: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def kept(self) -> list[VariantReport]:
        return [v for v in self.variants if v.kept]

    def recommended(self, batch: int = 1) -> VariantReport | None:
        """The fastest kept variant at ``batch`` (the baseline when nothing beats it)."""
        timed = [v for v in self.kept if v.p50(batch) is not None]
        if not timed:
            return self.kept[0] if self.kept else None
        return min(timed, key=lambda v: v.p50(batch) or float("inf"))

    def to_dict(self) -> dict[str, Any]:
        best = self.recommended()
        return {
            "schema": SCHEMA,
            "source": self.source,
            "framework": self.framework,
            "model": self.model,
            "version": self.version,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "parity_rows": self.parity_rows,
            "parity_data": self.parity_data,
            "recommended": best.model if best else None,
            "variants": [v.to_dict() for v in self.variants],
            "notes": self.notes,
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "threads": self.threads,
                "python": platform.python_version(),
            },
            "versions": self.versions,
            "seconds": round(self.seconds, 3),
        }


def versions(framework: str) -> dict[str, str]:
    """Versions of what made the conversion: ONNX, ONNX Runtime and the source framework."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {
        "pytorch": "torch",
        "tensorflow": "tensorflow-cpu",
        "sklearn": "scikit-learn",
        "xgboost": "xgboost-cpu",
        "lightgbm": "lightgbm",
    }
    found: dict[str, str] = {}
    for name in ("onnx", "onnxruntime", "onnxslim", "openvino", packages.get(framework, "")):
        if not name:
            continue
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def table_rows(report: ConversionReport) -> list[list[str]]:
    """One row per variant: name, model, size, parity, p50 at batch 1 and 32, speedup, verdict."""
    rows = []
    for v in report.variants:
        b1, b32 = v.p50(1), v.p50(32)
        rows.append(
            [
                v.name,
                v.model if v.kept else "-",
                f"{v.size_bytes / 1e6:.2f} MB" if v.size_bytes else "-",
                v.parity.summary() if v.parity else "-",
                f"{v.accuracy:.4f}" if v.accuracy is not None else "-",
                f"{b1:.3f}" if b1 is not None else "-",
                f"{b32:.3f}" if b32 is not None else "-",
                " / ".join(f"{v.speedup[b]:.2f}x" for b in sorted(v.speedup)) or "-",
                ("kept" if v.kept else "dropped") + (f": {v.reason}" if v.reason else ""),
            ]
        )
    return rows


TABLE_HEADER = [
    "variant",
    "model",
    "size",
    "parity",
    "accuracy",
    "p50 b=1 ms",
    "p50 b=32 ms",
    "speedup",
    "verdict",
]
