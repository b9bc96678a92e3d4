"""HDR-style log-linear histogram of integer microseconds, mergeable and encodable.

The layout is HdrHistogram's. With ``significant_figures = d``, ``half = 2 ** (ceil(log2(2 *
10**d)) - 1)`` (1024 for d = 3) and ``unit = 2 ** floor(log2(lowest_us))`` (1 by default):
values below ``2 * half * unit`` fall in sub-buckets ``unit`` wide; above that, each power of two
``[2**k, 2**(k+1))`` is cut into ``half`` equal sub-buckets of width ``w = 2**k / half``.

Error bound: every reported percentile is the *highest equivalent value* of the sub-bucket
holding the requested rank (as in HdrHistogram), clamped to the exact recorded maximum, and the
rank-1 value is the exact minimum. So, for the exact order statistic ``x`` at that rank,
``x <= reported <= x + w - 1`` with ``w <= x / half`` once ``x >= half * unit``: a relative
error below ``1 / half`` (0.098% for d = 3; below ``10**-d`` in general). With the default
lowest_us = 1, values below ``2 * half`` (2048 us for d = 3) are exact. ``min`` and ``max`` are
exact; ``mean`` and ``stddev`` use sub-bucket midpoints (mean within half the bound above).

``record`` is pure Python (``int.bit_length``, a list of counts); ``record_array`` does the same
for a numpy array at once. Merging adds counts, so it is exact and order-free.
"""

from __future__ import annotations

import base64
import json
import math
import statistics
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

_FORMAT = "mserve-hdr-1"
_EMPTY_MIN = 1 << 62
_MAX_HIGHEST = 1 << 53  # record_array finds bit lengths through float64, exact below this


def _rank(p: float, n: int) -> int:
    """The nearest rank ceil(p/100*n) in [1, n], without float noise (64.4% of 1000 is 644)."""
    exact = p * n / 100.0
    nearest = round(exact)
    rank = nearest if abs(exact - nearest) <= 1e-9 * max(1.0, exact) else math.ceil(exact)
    return min(max(rank, 1), n)


class Histogram:
    """Counts of integer microsecond values in log-linear buckets (see module docstring)."""

    __slots__ = (
        "_counts",
        "_half_count",
        "_half_magnitude",
        "_highest",
        "_lowest",
        "_mask",
        "_max",
        "_min",
        "_offset",
        "_saturated",
        "_sig",
        "_sub_magnitude",
        "_total",
        "_unit_magnitude",
    )

    def __init__(
        self, lowest_us: int = 1, highest_us: int = 3_600_000_000, significant_figures: int = 3
    ) -> None:
        if lowest_us < 1:
            raise ValueError(f"lowest_us must be >= 1, got {lowest_us}")
        if not 2 * lowest_us <= highest_us < _MAX_HIGHEST:
            raise ValueError(
                f"highest_us must be in [2 * lowest_us, 2**53), got {highest_us} "
                f"with lowest_us {lowest_us}"
            )
        if not 1 <= significant_figures <= 5:
            raise ValueError(f"significant_figures must be 1..5, got {significant_figures}")
        self._lowest = lowest_us
        self._highest = highest_us
        self._sig = significant_figures
        sub_bucket_magnitude = math.ceil(math.log2(2 * 10**significant_figures))
        self._unit_magnitude = lowest_us.bit_length() - 1
        self._half_magnitude = sub_bucket_magnitude - 1
        self._half_count = 1 << self._half_magnitude
        sub_bucket_count = 1 << sub_bucket_magnitude
        self._mask = (sub_bucket_count - 1) << self._unit_magnitude
        self._sub_magnitude = sub_bucket_magnitude
        # index = ((bucket + 1) << half_mag) + (v >> (bucket + unit_mag)) - half_count, with
        # bucket = bit_length(v | mask) - unit_mag - sub_mag, folded into one offset
        shift = self._unit_magnitude + sub_bucket_magnitude
        self._offset = ((shift - 1) << self._half_magnitude) + self._half_count
        bucket_count = 1
        smallest_untrackable = sub_bucket_count << self._unit_magnitude
        while smallest_untrackable <= highest_us:
            smallest_untrackable <<= 1
            bucket_count += 1
        self._counts: list[int] = [0] * ((bucket_count + 1) * self._half_count)
        self._total = 0
        self._min = _EMPTY_MIN  # sentinels, so that record compares without a branch on total
        self._max = 0
        self._saturated = 0

    # -- recording -------------------------------------------------------------------------

    def record(self, value_us: int, count: int = 1) -> None:
        """Count ``value_us`` (a Python int) ``count`` times; clamps to [1, highest_us]."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if value_us < 1:
            value_us = 1
        elif value_us > self._highest:
            value_us = self._highest
            self._saturated += count
        e = (value_us | self._mask).bit_length()
        self._counts[
            (e << self._half_magnitude) + (value_us >> (e - self._sub_magnitude)) - self._offset
        ] += count
        self._total += count
        if value_us < self._min:
            self._min = value_us
        if value_us > self._max:
            self._max = value_us

    def record_array(self, values_us: np.ndarray | Sequence[int]) -> None:
        """Record every value of an integer array; the same result as ``record`` in a loop."""
        values = np.asarray(values_us, dtype=np.int64)
        if values.size == 0:
            return
        self._saturated += int(np.count_nonzero(values > self._highest))
        values = np.clip(values, 1, self._highest)
        # bit_length via frexp: exact, since values <= highest_us < 2**53
        e = np.frexp((values | self._mask).astype(np.float64))[1].astype(np.int64)
        index = (e << self._half_magnitude) + (values >> (e - self._sub_magnitude)) - self._offset
        added = np.bincount(index, minlength=len(self._counts))
        for i in np.flatnonzero(added).tolist():
            self._counts[i] += int(added[i])
        self._min = min(self._min, int(values.min()))
        self._max = max(self._max, int(values.max()))
        self._total += int(values.size)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this histogram (exact); ValueError if layouts differ."""
        if self.layout != other.layout:
            raise ValueError(f"cannot merge histograms of layouts {self.layout} and {other.layout}")
        if other._total == 0:
            return
        counts = self._counts
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._total += other._total
        self._saturated += other._saturated

    def reset(self) -> None:
        """Forget every recorded value (e.g. at the end of warm-up); the layout stays."""
        self._counts = [0] * len(self._counts)
        self._total = self._max = self._saturated = 0
        self._min = _EMPTY_MIN

    def copy(self) -> Histogram:
        """An independent histogram with the same layout and counts."""
        new = Histogram(self._lowest, self._highest, self._sig)
        new._counts = list(self._counts)
        new._total, new._min, new._max = self._total, self._min, self._max
        new._saturated = self._saturated
        return new

    # -- layout ----------------------------------------------------------------------------

    @property
    def layout(self) -> tuple[int, int, int]:
        """(lowest_us, highest_us, significant_figures): histograms merge only within one."""
        return (self._lowest, self._highest, self._sig)

    def _lowest_at(self, index: int) -> int:
        bucket = (index >> self._half_magnitude) - 1
        sub_bucket = (index & (self._half_count - 1)) + self._half_count
        if bucket < 0:
            sub_bucket -= self._half_count
            bucket = 0
        return sub_bucket << (bucket + self._unit_magnitude)

    def _width_at(self, index: int) -> int:
        return 1 << (max((index >> self._half_magnitude) - 1, 0) + self._unit_magnitude)

    def _indices_at_ranks(self, ranks: Iterable[int]) -> dict[int, int]:
        """Map each rank (1..count) to the index of the sub-bucket holding it, in one pass."""
        wanted = sorted(set(ranks))
        found: dict[int, int] = {}
        if not wanted:
            return found
        k, seen = 0, 0
        for i, c in enumerate(self._counts):
            if not c:
                continue
            seen += c
            while k < len(wanted) and seen >= wanted[k]:
                found[wanted[k]] = i
                k += 1
            if k == len(wanted):
                return found
        raise ValueError(f"ranks {wanted[k:]} are not in 1..{self._total}")

    def _highest_at_rank(self, rank: int, index: int) -> int:
        if rank == 1:
            return self._min
        return min(self._lowest_at(index) + self._width_at(index) - 1, self._max)

    # -- queries ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return self._total

    @property
    def saturated(self) -> int:
        """How many values were above highest_us (recorded as highest_us)."""
        return self._saturated

    @property
    def min(self) -> int:
        """The smallest recorded value, exact (0 when empty)."""
        return self._min if self._total else 0

    @property
    def max(self) -> int:
        """The largest recorded value, exact (0 when empty)."""
        return self._max

    @property
    def mean(self) -> float:
        """Mean from sub-bucket midpoints (0.0 when empty)."""
        if self._total == 0:
            return 0.0
        acc = 0
        for i, c in enumerate(self._counts):
            if c:
                acc += c * (2 * self._lowest_at(i) + self._width_at(i) - 1)
        return acc / (2 * self._total)

    @property
    def stddev(self) -> float:
        """Population standard deviation from sub-bucket midpoints (0.0 when empty)."""
        if self._total == 0:
            return 0.0
        mean = self.mean
        acc = 0.0
        for i, c in enumerate(self._counts):
            if c:
                mid = self._lowest_at(i) + (self._width_at(i) - 1) / 2
                acc += c * (mid - mean) ** 2
        return math.sqrt(acc / self._total)

    def value_at_percentile(self, p: float) -> int:
        """The value at rank ceil(p/100*count) within the bound above; 0 when empty."""
        return self.percentiles([p])[p]

    def percentiles(self, ps: Sequence[float]) -> dict[float, int]:
        """``value_at_percentile`` for each of ``ps``, computed in one pass."""
        for p in ps:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile must be in [0, 100], got {p}")
        if self._total == 0:
            return {p: 0 for p in ps}
        ranks = {p: _rank(p, self._total) for p in ps}
        at = self._indices_at_ranks(ranks.values())
        return {p: self._highest_at_rank(r, at[r]) for p, r in ranks.items()}

    def percentile_ci(self, p: float, confidence: float = 0.95) -> tuple[int, int]:
        """Distribution-free confidence interval (lo, hi) for the population p-th percentile.

        Ranks j <= k around n*p/100 come from the normal approximation of Binomial(n, p/100)
        with continuity correction, clamped to [1, n]; lo is the lowest value of the sub-bucket
        holding rank j, hi the highest of the one holding rank k. With few samples (j = 1 and
        k = n) the true coverage is below ``confidence``. (0, 0) when empty.
        """
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {p}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        n = self._total
        if n == 0:
            return (0, 0)
        q = p / 100
        z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
        half = z * math.sqrt(n * q * (1 - q))
        j = min(max(math.floor(n * q - half + 0.5), 1), n)
        k = min(max(math.ceil(n * q + half + 0.5), 1), n)
        at = self._indices_at_ranks((j, k))
        lo = self._min if j == 1 else max(self._lowest_at(at[j]), self._min)
        return (lo, self._highest_at_rank(k, at[k]))

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe compact form: layout, exact min/max, and non-zero [index, count] pairs."""
        return {
            "format": _FORMAT,
            "lowest_us": self._lowest,
            "highest_us": self._highest,
            "significant_figures": self._sig,
            "min": self.min,
            "max": self._max,
            "saturated": self._saturated,
            "buckets": [[i, c] for i, c in enumerate(self._counts) if c],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        """Rebuild a histogram from ``to_dict``'s output; ValueError if it is malformed."""
        try:
            if d["format"] != _FORMAT:
                raise ValueError(f"format {d['format']!r}, expected {_FORMAT!r}")
            h = cls(int(d["lowest_us"]), int(d["highest_us"]), int(d["significant_figures"]))
            for i, c in d["buckets"]:
                if not (isinstance(i, int) and isinstance(c, int) and c > 0):
                    raise ValueError(f"bucket [{i}, {c}] is not [index, positive count]")
                if not 0 <= i < len(h._counts):
                    raise ValueError(f"bucket index {i} outside 0..{len(h._counts) - 1}")
                h._counts[i] += c
                h._total += c
            if h._total:
                h._min, h._max = int(d["min"]), int(d["max"])
            h._saturated = int(d["saturated"])
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"not a histogram dict: {e!r}") from e
        except ValueError as e:
            raise ValueError(f"not a histogram dict: {e}") from e
        return h

    def encode(self) -> str:
        """Base64 text of the zlib-compressed compact form; ``decode`` reverses it."""
        raw = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")

    @classmethod
    def decode(cls, s: str) -> Histogram:
        """Rebuild a histogram from ``encode``'s output; ValueError if it is not one."""
        try:
            d = json.loads(zlib.decompress(base64.b64decode(s, validate=True)))
        except (ValueError, zlib.error) as e:
            raise ValueError(f"not an encoded histogram: {e}") from e
        if not isinstance(d, dict):
            raise ValueError("not an encoded histogram: payload is not an object")
        return cls.from_dict(d)

    def __repr__(self) -> str:
        return f"Histogram(count={self._total}, min={self.min}, max={self._max})"
