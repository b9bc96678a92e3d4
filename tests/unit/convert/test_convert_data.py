"""Reading user data for a conversion from .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mserve.convert.data import example_rows, read_npz
from mserve.errors import ConversionError


def test_arrays_by_input_name_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((4, 2)), b=np.ones((4, 3)), labels=np.arange(4))
    arrays, labels = read_npz(path, ["a", "b"], labels=True)
    assert sorted(arrays) == ["a", "b"]
    assert arrays["b"].shape == (4, 3)
    assert labels is not None
    assert labels.tolist() == [0, 1, 2, 3]


def test_a_one_input_model_takes_any_single_name(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.arange(4))
    arrays, labels = read_npz(path, ["input"], labels=True)
    assert list(arrays) == ["input"]
    assert labels is not None


def test_missing_input_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((4, 2)), c=np.zeros((4, 2)))
    with pytest.raises(ConversionError) as info:
        read_npz(path, ["a", "b"])
    assert str(info.value) == (
        f"{path}: has no array for input(s) b; expected arrays named a, b, found a, c"
    )


def test_missing_labels_and_row_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)))
    with pytest.raises(ConversionError, match="has no labels: expected an array named labels"):
        read_npz(path, ["x"], labels=True)
    np.savez(path, x=np.zeros((4, 2)), labels=np.zeros(5))
    with pytest.raises(ConversionError, match=r"disagree on the number of rows: \[4, 5\]"):
        read_npz(path, ["x"], labels=True)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConversionError, match=r"not a numpy \.npz file of plain arrays"):
        read_npz(path, ["x"])


def test_example_rows_keep_the_file_order_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, ids=np.arange(12).reshape(4, 3), mask=np.ones((4, 3)), labels=np.arange(4))
    ids, mask = example_rows(path)
    assert ids.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert mask.shape == (2, 3)
