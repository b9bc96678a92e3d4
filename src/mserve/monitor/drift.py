"""Input drift: running statistics of what a model sees, compared with a reference set.

Per input, every element of every request counts (after flattening all but the batch
dimension). The reference fixes:
- the bins: its deciles, so each bin holds about a tenth of the reference's values;
- its overall mean and standard deviation, and each feature's (a feature is one position of the
  flattened non-batch dimensions).

The live side keeps two views. Cumulative bin counts since start (a Prometheus histogram, so
PromQL can compare any window). And a recent window, exponentially decayed with a half-life in
seconds, from which come the mean, the standard deviation, the population stability index (PSI)
of the bins against the reference, and the largest shift of one feature's mean, in that feature's
reference standard deviations. Pure numpy; the caller supplies the clock.

A request only queues its arrays (a list append); they are counted together when the figures
are read (the server does so every second) or when 4 MiB are queued, so the cost per request is
a fraction of a microsecond and the counting is vectorised over many requests. Queued rows count
as seen when they are counted, a second late at most, which a window of a minute ignores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

EPS = 1e-4  # floor of a bin's fraction in the PSI, so an empty bin does not make it infinite
MIN_WINDOW_ROWS = 5.0  # fewer rows than this in the window: no windowed figures yet
FLUSH_BYTES = 4 << 20  # queued request data counted at once when it reaches this size


@dataclass(frozen=True, slots=True)
class InputReference:
    """What one input looked like in the reference set."""

    name: str
    edges: np.ndarray  # inner bin edges (ascending, distinct); bins = len(edges) + 1
    fractions: np.ndarray  # the reference's share of values per bin
    mean: float
    std: float
    feature_mean: np.ndarray
    feature_std: np.ndarray  # floored, so a constant feature still has a scale

    @classmethod
    def of(cls, name: str, values: np.ndarray, bins: int = 10) -> InputReference:
        """The reference of one input from its rows (batch dimension first)."""
        rows = _rows(values)
        if rows.shape[0] < 2:
            raise ValueError(f"input '{name}': the reference needs at least 2 rows")
        flat = rows.ravel()
        if not np.all(np.isfinite(flat)):
            raise ValueError(f"input '{name}': the reference holds NaN or infinite values")
        edges = np.unique(np.quantile(flat, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(_bin(flat, edges), minlength=len(edges) + 1)
        std = float(flat.std())
        floor = max(0.01 * std, 1e-12)
        return cls(
            name=name,
            edges=edges,
            fractions=counts / counts.sum(),
            mean=float(flat.mean()),
            std=std,
            feature_mean=rows.mean(axis=0),
            feature_std=np.maximum(rows.std(axis=0), floor),
        )

    @property
    def features(self) -> int:
        return int(self.feature_mean.shape[0])


def _rows(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    return arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)


def _bin(flat: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value: bin i holds edges[i-1] < v <= edges[i]."""
    return np.searchsorted(edges, flat, side="left")


def psi(live: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index between two distributions over the same bins."""
    p = np.maximum(live / max(float(live.sum()), 1e-300), EPS)
    q = np.maximum(reference, EPS)
    return float(np.sum((p - q) * np.log(p / q)))


@dataclass(frozen=True, slots=True)
class WindowStats:
    """The recent window of one input against its reference."""

    rows: float  # decayed row count in the window
    mean: float
    std: float
    psi: float
    feature_shift: float


class InputDrift:
    """The running statistics of one input."""

    def __init__(self, reference: InputReference, half_life_s: float) -> None:
        self.reference = reference
        self.half_life_s = half_life_s
        bins = len(reference.edges) + 1
        # cumulative since start
        self.counts = np.zeros(bins, dtype=np.int64)
        self.total = 0.0
        # the decayed window
        self._t: float | None = None
        self._rows = 0.0
        self._n = 0.0
        self._sum = 0.0
        self._sumsq = 0.0
        self._bins = np.zeros(bins)
        self._features = np.zeros(reference.features)
        self._pending: list[np.ndarray] = []
        self._pending_bytes = 0

    def _decay(self, now: float) -> None:
        if self._t is not None and now > self._t:
            f = 0.5 ** ((now - self._t) / self.half_life_s)
            self._rows *= f
            self._n *= f
            self._sum *= f
            self._sumsq *= f
            self._bins *= f
            self._features *= f
        self._t = now if self._t is None else max(self._t, now)

    def update(self, values: np.ndarray, now: float) -> None:
        """Take the rows of one request (or batch) seen at time ``now``. They are only queued
        here (a list append); the counting happens in :meth:`flush`, over many requests at once,
        when the figures are read or the queue holds ``FLUSH_BYTES``."""
        self._pending.append(values)
        self._pending_bytes += values.nbytes
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Count the queued rows, as seen at ``now``."""
        if not self._pending:
            return
        batches = [_rows(v) for v in self._pending]
        self._pending.clear()
        self._pending_bytes = 0
        batches = [b for b in batches if b.shape[1] == self.reference.features]
        if not batches:
            return  # shapes the reference does not describe (validation let them through)
        rows = batches[0] if len(batches) == 1 else np.concatenate(batches)
        flat = rows.ravel()
        counts = np.bincount(_bin(flat, self.reference.edges), minlength=len(self.counts))
        self.counts += counts
        total = float(flat.sum())
        self.total += total
        self._decay(now)
        self._rows += rows.shape[0]
        self._n += flat.size
        self._sum += total
        self._sumsq += float(np.dot(flat, flat))
        self._bins += counts
        self._features += rows.sum(axis=0)

    def window(self, now: float) -> WindowStats | None:
        """The recent window's figures at ``now`` (queued rows counted first); None until it
        holds a few rows."""
        self.flush(now)
        self._decay(now)
        if self._rows < MIN_WINDOW_ROWS or self._n <= 0:
            return None
        ref = self.reference
        mean = self._sum / self._n
        var = max(0.0, self._sumsq / self._n - mean * mean)
        shift = np.abs(self._features / self._rows - ref.feature_mean) / ref.feature_std
        return WindowStats(
            rows=self._rows,
            mean=mean,
            std=math.sqrt(var),
            psi=psi(self._bins, ref.fractions),
            feature_shift=float(shift.max()) if shift.size else 0.0,
        )


class DriftMonitor:
    """The running statistics of every input of one model version."""

    def __init__(self, references: Mapping[str, InputReference], half_life_s: float) -> None:
        self.inputs = {name: InputDrift(ref, half_life_s) for name, ref in references.items()}

    def update(self, feed: Mapping[str, np.ndarray], now: float) -> None:
        for name, tracker in self.inputs.items():
            values = feed.get(name)
            if values is not None:
                tracker.update(values, now)

    def flush(self, now: float) -> None:
        """Count every input's queued rows."""
        for tracker in self.inputs.values():
            tracker.flush(now)
