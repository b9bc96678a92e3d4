"""Stack requests into one batch and split the outputs back: pure functions over arrays."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

Feed = dict[str, np.ndarray]


class SplitError(ValueError):
    """The model's outputs cannot be split back into the requests of a batch."""


def batch_key(feed: Feed) -> Hashable:
    """What requests must share to be stacked: each input's name, dtype and non-batch dims."""
    return tuple(sorted((name, arr.dtype.str, arr.shape[1:]) for name, arr in feed.items()))


def stack(feeds: list[Feed]) -> Feed:
    """One feed holding every request's rows, in order, along the first dimension."""
    if len(feeds) == 1:
        return feeds[0]
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def split(outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """Each request's share of the batch's outputs: consecutive row ranges (views, no copy)."""
    total = sum(rows)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise SplitError(
                f"output '{name}' has shape {list(arr.shape)}, but a batch of {total} rows "
                f"needs {total} as its first dimension; the model does not batch along it"
            )
    if len(rows) == 1:
        return [outputs]
    parts: list[dict[str, np.ndarray]] = []
    start = 0
    for r in rows:
        parts.append({name: arr[start : start + r] for name, arr in outputs.items()})
        start += r
    return parts
