"""Request payloads: shapes from metadata and overrides, random data, files, and the V2 request
bytes the bench sends, decoded by the server's own codec (both sides must agree)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mserve.bench.workload import (
    InputSpec,
    concrete_shape,
    load_samples,
    parse_shapes,
    random_samples,
)
from mserve.errors import ConfigError, InvalidRequest

IMAGE = InputSpec("input", "FP32", (-1, 64))
TOKENS = InputSpec("ids", "INT64", (-1, -1))


def test_batch_dimension_takes_the_batch_size() -> None:
    assert concrete_shape(IMAGE, 8, {}) == (8, 64)


def test_other_free_dimensions_need_a_shape_and_say_how() -> None:
    with pytest.raises(InvalidRequest, match="--shape ids:D"):
        concrete_shape(TOKENS, 1, {})
    assert concrete_shape(TOKENS, 2, {"ids": (128,)}) == (2, 128)
    assert concrete_shape(TOKENS, 2, {"ids": (3, 128)}) == (3, 128)


def test_an_override_that_does_not_fit_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"does not fit the model's shape \[-1, 64\]"):
        concrete_shape(IMAGE, 1, {"input": (3, 3)})


def test_parse_shapes() -> None:
    assert parse_shapes(["ids:1,128", "mask:128"]) == {"ids": (1, 128), "mask": (128,)}
    with pytest.raises(ConfigError, match="NAME:D1,D2"):
        parse_shapes(["ids=128"])


def test_random_samples_are_reproducible_and_distinct() -> None:
    specs = [IMAGE, InputSpec("flag", "BOOL", (-1, 1)), InputSpec("name", "BYTES", (-1,))]
    a = random_samples(specs, 2, {}, seed=3, count=4)
    b = random_samples(specs, 2, {}, seed=3, count=4)
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert np.array_equal(x[k], y[k])
    assert not np.array_equal(a[0]["input"], a[1]["input"])
    assert a[0]["input"].dtype == np.float32
    assert a[0]["flag"].dtype == np.bool_
    assert a[0]["name"].shape == (2,)


def test_unknown_override_names_the_inputs() -> None:
    with pytest.raises(InvalidRequest, match="the model's inputs are input"):
        random_samples([IMAGE], 1, {"other": (1,)}, 0, 1)


def test_samples_from_files(tmp_path: Path) -> None:
    rows = np.arange(3 * 64, dtype=np.float32).reshape(3, 1, 64)
    np.save(tmp_path / "x.npy", rows)
    got = load_samples(tmp_path / "x.npy", [IMAGE])
    assert len(got) == 3
    assert np.array_equal(got[2]["input"], rows[2])
    np.savez(tmp_path / "x.npz", input=rows)
    assert len(load_samples(tmp_path / "x.npz", [IMAGE])) == 3
    (tmp_path / "x.json").write_text(json.dumps([{"input": [[0.5] * 64]}]))
    got = load_samples(tmp_path / "x.json", [IMAGE])
    assert got[0]["input"].shape == (1, 64)
    np.savez(tmp_path / "bad.npz", other=rows)
    with pytest.raises(InvalidRequest, match="the model's inputs are input"):
        load_samples(tmp_path / "bad.npz", [IMAGE])
    with pytest.raises(InvalidRequest, match="no such file"):
        load_samples(tmp_path / "missing.npy", [IMAGE])
