"""Parity figures and verdicts, on arrays whose differences are known."""

from __future__ import annotations

import numpy as np
import pytest

from mserve.convert.parity import Tolerance, compare, parse_tolerance
from mserve.errors import ConfigError


def test_identical_outputs_are_exact() -> None:
    x = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    p = compare(["y"], [x.copy()], [x], Tolerance(), exact=True, class_outputs=["y"])
    assert p.ok
    assert p.failures == ()
    o = p.outputs[0]
    assert o.max_abs == 0.0
    assert o.top1 == 1.0
    assert o.cosine_min == pytest.approx(1.0)
    assert p.rows == 8


def test_an_error_over_atol_fails_exact_with_the_figure() -> None:
    want = np.zeros((4, 3), np.float32)
    got = want.copy()
    got[2, 1] = 0.01
    p = compare(["y"], [got], [want], Tolerance(atol=1e-4, rtol=0), exact=True)
    assert not p.ok
    assert p.outputs[0].max_abs == pytest.approx(0.01)
    assert p.failures == ("'y' max abs error 0.01 (max rel 0.01) exceeds atol 0.0001 + rtol 0",)


def test_approximate_judges_cosine_and_top1_not_elements() -> None:
    rng = np.random.default_rng(1)
    want = rng.standard_normal((100, 10))
    got = want + rng.normal(0, 0.01, want.shape)  # small noise: cosine ~0.9999
    p = compare(["scores"], [got], [want], Tolerance(), exact=False, class_outputs=["scores"])
    assert p.ok
    assert not p.outputs[0].allclose  # would fail the exact standard
    assert p.outputs[0].cosine_mean is not None
    assert p.outputs[0].cosine_mean > 0.999


def test_flipped_classes_fail_top1() -> None:
    want = np.tile(np.array([[0.0, 1.0]]), (10, 1))
    got = want.copy()
    got[:3] = [[1.0, 0.0]]  # 3 of 10 rows flip
    p = compare(["p"], [got], [want], Tolerance(top1=0.95), exact=False, class_outputs=["p"])
    assert not p.ok
    assert p.outputs[0].top1 == pytest.approx(0.7)
    assert "'p' top-1 agreement 0.700 < 0.95" in p.failures


def test_integer_outputs_count_agreement() -> None:
    want = np.arange(20)
    got = want.copy()
    got[0] = 99
    p = compare(["label"], [got], [want], Tolerance(top1=0.99), exact=True)
    assert not p.ok
    assert p.outputs[0].agreement == pytest.approx(0.95)


def test_nan_where_the_original_has_none_fails() -> None:
    want = np.ones((2, 2), np.float32)
    got = want.copy()
    got[0, 0] = np.nan
    p = compare(["y"], [got], [want], Tolerance(), exact=False)
    assert not p.ok
    assert p.outputs[0].max_abs == float("inf")


def test_shape_mismatch_is_named() -> None:
    p = compare(["y"], [np.zeros((2, 3))], [np.zeros((2, 4))], Tolerance(), exact=True)
    assert p.failures == ("'y' has shape [2, 3], expected [2, 4]",)


def test_parse_tolerance_overrides_only_what_is_given() -> None:
    t = parse_tolerance("atol=1e-3, top1=0.9")
    assert (t.atol, t.rtol, t.cosine, t.top1) == (1e-3, 1e-3, 0.99, 0.9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speed=2", "--tolerance: field 'speed': expected one of atol, rtol, cosine, top1"),
        ("atol=big", "--tolerance: field 'atol': expected a number, got 'big'"),
        ("cosine=1.5", "--tolerance: field 'cosine': expected a number >= 0 (at most 1"),
    ],
)
def test_parse_tolerance_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tolerance(text)
    assert str(info.value).startswith(message)
