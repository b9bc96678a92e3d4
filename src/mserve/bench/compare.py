"""Two benchmark runs side by side: per step, the change of each figure with a bootstrap
confidence interval over the measurement windows, and a verdict: better, worse, or within noise.

A step's windows (``timeline``) are its repeated measurements under one load. Resampling them
(with replacement, a fixed seed) gives the spread of each run's mean per-window figure; the
change is significant when the 95% interval of the relative difference excludes zero *and* the
change is at least ``min_change_pct``. The windows of one run vary less than two runs of the same
thing do (two runs against an unchanged server on a shared machine differ by 2-4% in
throughput with intervals that exclude zero), so a change below 5% is "within noise" however
steady the windows were. Pure functions of the result documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mserve.bench.result import load_label

#: figure -> (the window field, True when higher is better)
FIGURES = {
    "throughput": ("throughput_rps", True),
    "p50": ("p50_ms", False),
    "p99": ("p99_ms", False),
}


@dataclass(frozen=True, slots=True)
class Delta:
    """One figure of one step: both runs' means, the change and its interval, the verdict."""

    load: str
    figure: str
    a: float
    b: float
    change_pct: float
    ci_low_pct: float
    ci_high_pct: float
    windows: tuple[int, int]
    verdict: str  # "better" | "worse" | "within noise" | "too few windows"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(step: Mapping[str, Any], field: str) -> np.ndarray:
    values = [w.get(field) for w in step.get("timeline", [])]
    return np.array([v for v in values if v is not None], dtype=float)


def bootstrap_change(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """The relative change of the mean from ``a`` to ``b`` in percent, and its 95% interval."""
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, len(a), (resamples, len(a)))].mean(axis=1)
    mb = b[rng.integers(0, len(b), (resamples, len(b)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        changes = 100.0 * (mb - ma) / ma
    changes = changes[np.isfinite(changes)]
    point = 100.0 * (b.mean() - a.mean()) / a.mean() if a.mean() else 0.0
    if not changes.size:
        return point, point, point
    low, high = np.percentile(changes, [2.5, 97.5])
    return float(point), float(low), float(high)


def compare_runs(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    figures: Sequence[str] = ("throughput", "p50", "p99"),
    min_change_pct: float = 5.0,
) -> tuple[list[Delta], list[str]]:
    """Every figure of every step that both runs measured under the same load; and the loads
    only one of them has."""
    steps_a = {load_label(s["load"]): s for s in a.get("steps", [])}
    steps_b = {load_label(s["load"]): s for s in b.get("steps", [])}
    unmatched = sorted(set(steps_a) ^ set(steps_b))
    deltas: list[Delta] = []
    for load, sa in steps_a.items():
        sb = steps_b.get(load)
        if sb is None:
            continue
        for figure in figures:
            field, higher_better = FIGURES[figure]
            va, vb = _values(sa, field), _values(sb, field)
            if len(va) < 2 or len(vb) < 2:
                mean_a = float(va.mean()) if len(va) else 0.0
                mean_b = float(vb.mean()) if len(vb) else 0.0
                change = 100.0 * (mean_b - mean_a) / mean_a if mean_a else 0.0
                deltas.append(
                    Delta(
                        load,
                        figure,
                        mean_a,
                        mean_b,
                        change,
                        change,
                        change,
                        (len(va), len(vb)),
                        "too few windows",
                    )
                )
                continue
            change, low, high = bootstrap_change(va, vb)
            if (low > 0 or high < 0) and abs(change) >= min_change_pct:
                went_up = change > 0
                verdict = "better" if went_up == higher_better else "worse"
            else:
                verdict = "within noise"
            deltas.append(
                Delta(
                    load,
                    figure,
                    float(va.mean()),
                    float(vb.mean()),
                    change,
                    low,
                    high,
                    (len(va), len(vb)),
                    verdict,
                )
            )
    return deltas, unmatched
