"""Arrays a user hands to a conversion: parity inputs, calibration data, labelled data (.npz)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mserve.errors import ConversionError

LABEL_KEYS = ("labels", "y")


def read_npz(
    path: Path | str, input_names: Sequence[str], *, labels: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays named after the model's inputs, and the labels (``labels`` or ``y``) when asked.

    A model with one input also takes a file whose only other array is named anything (``x``).
    """
    source = str(path)
    arrays = _arrays(path)
    label = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if labels and label is None:
        raise ConversionError(source, f"has no labels: expected an array named {LABEL_KEYS[0]}")
    names = list(input_names)
    if len(names) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ConversionError(
            source,
            f"has no array for input(s) {', '.join(missing)}; expected arrays named "
            f"{', '.join(names)}"
            + (f" and {LABEL_KEYS[0]}" if labels else "")
            + f", found {', '.join(sorted(arrays)) or 'none'}",
        )
    rows = {int(arrays[n].shape[0]) for n in names}
    if label is not None:
        rows.add(int(label.shape[0]))
    if len(rows) != 1:
        raise ConversionError(source, f"arrays disagree on the number of rows: {sorted(rows)}")
    return {n: arrays[n] for n in names}, label


def example_rows(path: Path | str, rows: int = 2) -> tuple[np.ndarray, ...]:
    """The first rows of every array but the labels, in the file's order: inputs to trace."""
    return tuple(a[:rows] for k, a in _arrays(path).items() if k not in LABEL_KEYS)


def _arrays(path: Path | str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, in its order; object (pickled) arrays are refused."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ConversionError(str(path), "no such file") from None
    except (ValueError, OSError) as exc:
        raise ConversionError(
            str(path), f"is not a numpy .npz file of plain arrays: {exc}"
        ) from None
