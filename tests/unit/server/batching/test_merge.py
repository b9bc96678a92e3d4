"""Stacking requests and splitting the outputs back."""

from __future__ import annotations

import numpy as np
import pytest

from mserve.server.batching.merge import SplitError, batch_key, split, stack


def f32(*shape: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.float32) + start).reshape(shape)


def test_requests_share_a_key_only_when_non_batch_dims_and_dtypes_match() -> None:
    a = {"X": f32(1, 4), "Y": np.zeros((1, 2), np.int64)}
    b = {"Y": np.ones((3, 2), np.int64), "X": f32(3, 4)}  # other rows, other order: same key
    assert batch_key(a) == batch_key(b)
    assert batch_key(a) != batch_key({"X": f32(1, 5), "Y": np.zeros((1, 2), np.int64)})
    assert batch_key(a) != batch_key({"X": f32(1, 4), "Y": np.zeros((1, 2), np.int32)})
    assert batch_key(a) != batch_key({"X": f32(1, 4)})


def test_stack_then_split_gives_each_request_exactly_its_rows() -> None:
    feeds = [{"X": f32(1, 3)}, {"X": f32(2, 3, start=100)}, {"X": f32(1, 3, start=200)}]
    merged = stack(feeds)
    assert merged["X"].shape == (4, 3)
    parts = split({"Y": merged["X"] * 2, "Z": merged["X"][:, :1]}, [1, 2, 1])
    for feed, part in zip(feeds, parts, strict=True):
        np.testing.assert_array_equal(part["Y"], feed["X"] * 2)
        np.testing.assert_array_equal(part["Z"], feed["X"][:, :1])


def test_one_request_passes_through_without_a_copy() -> None:
    feed = {"X": f32(2, 2)}
    assert stack([feed]) is feed
    out = {"Y": f32(2, 2)}
    assert split(out, [2])[0] is out


def test_split_refuses_outputs_that_do_not_follow_the_batch() -> None:
    with pytest.raises(SplitError, match=r"output 'Y' has shape \[1, 4\], but a batch of 3 rows"):
        split({"Y": f32(1, 4)}, [1, 2])
    with pytest.raises(SplitError, match="output 'S'"):
        split({"S": np.float32(1.0) * np.ones(())}, [1])
