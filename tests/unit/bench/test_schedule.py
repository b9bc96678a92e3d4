"""Arrival schedules and load-level specs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mserve.bench.schedule import (
    constant_offsets,
    offsets,
    parse_concurrency,
    parse_rates,
    poisson_offsets,
)

NS = 1_000_000_000


def test_constant_has_exact_spacing_and_count() -> None:
    sent = constant_offsets(1_000, 2.0)
    assert sent.dtype == np.int64
    assert len(sent) == 2_000
    assert sent[0] == 0
    assert set(np.diff(sent).tolist()) == {1_000_000}
    assert sent[-1] < 2 * NS


def test_constant_does_not_drift_when_the_interval_is_not_whole_ns() -> None:
    sent = constant_offsets(3, 100.0)
    assert len(sent) == 300
    assert sent[-1] == round(299 * NS / 3)  # i/rate rounded, not a rounded step summed
    assert set(np.diff(sent).tolist()) <= {333_333_333, 333_333_334}


@pytest.mark.parametrize(
    ("rate", "duration_s", "count"),
    # 8.3 * 30 is 249.00000000000003 in floats; the arrival at 249 / 8.3 = 30 s is not before 30 s
    [(3, 1.5, 5), (8.3, 30, 249), (1, 0.5, 1), (1e-6, 1, 1), (250, 4, 1_000)],
)
def test_constant_count_is_arrivals_before_the_end(rate: float, duration_s: float, count: int):
    sent = constant_offsets(rate, duration_s)
    assert len(sent) == count
    assert sent[-1] < duration_s * NS


def test_poisson_mean_rate_and_reproducibility() -> None:
    rate, duration_s = 2_000.0, 10.0
    sent = poisson_offsets(rate, duration_s, seed=42)
    assert sent.dtype == np.int64
    assert sent[0] == 0
    assert sent[-1] < duration_s * NS
    assert np.all(np.diff(sent) >= 0)
    assert len(sent) / duration_s == pytest.approx(rate, rel=0.03)
    assert np.array_equal(sent, poisson_offsets(rate, duration_s, seed=42))
    assert not np.array_equal(sent[:100], poisson_offsets(rate, duration_s, seed=43)[:100])


def test_poisson_gaps_are_exponential() -> None:
    rate = 2_000.0
    gaps = np.diff(poisson_offsets(rate, 10.0, seed=1)) / NS
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # constant would give 0
    # Kolmogorov-Smirnov against Exp(rate): critical value at alpha = 0.01 is 1.63/sqrt(n)
    x = np.sort(gaps)
    cdf = 1 - np.exp(-rate * x)
    n = len(x)
    d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert d < 1.63 / math.sqrt(n)


def test_poisson_shorter_schedule_is_a_prefix_of_a_longer_one() -> None:
    short = poisson_offsets(500, 3.0, seed=7)
    long = poisson_offsets(500, 30.0, seed=7)
    assert np.array_equal(short, long[: len(short)])
    assert long[len(short)] >= 3 * NS


def test_offsets_dispatches_on_arrival() -> None:
    assert np.array_equal(offsets("constant", 100, 1.0, 5), constant_offsets(100, 1.0))
    assert np.array_equal(offsets("poisson", 100, 1.0, 5), poisson_offsets(100, 1.0, 5))
    with pytest.raises(ValueError, match=r"constant, poisson.*'uniform'"):
        offsets("uniform", 100, 1.0, 5)


@pytest.mark.parametrize(
    ("rate", "duration_s", "match"),
    [
        (0, 1, "rate"),
        (-5, 1, "rate"),
        (math.nan, 1, "rate"),
        (math.inf, 1, "rate"),
        (100, 0, "duration_s"),
        (100, -1, "duration_s"),
        (1e9, 3600, "at most"),
    ],
)
def test_schedules_refuse_bad_load(rate: float, duration_s: float, match: str) -> None:
    for arrival in ("constant", "poisson"):
        with pytest.raises(ValueError, match=match):
            offsets(arrival, rate, duration_s, 0)


@pytest.mark.parametrize(
    ("spec", "rates"),
    [
        ("100,500,1000", [100.0, 500.0, 1000.0]),
        ("250", [250.0]),
        (" 10 , 20 ", [10.0, 20.0]),
        ("100:500:100", [100.0, 200.0, 300.0, 400.0, 500.0]),
        ("100:450:100", [100.0, 200.0, 300.0, 400.0]),
        ("0.1:0.3:0.1", [0.1, 0.2, 0.3]),
        ("5:5:1", [5.0]),
        ("1e3", [1000.0]),
    ],
)
def test_parse_rates(spec: str, rates: list[float]) -> None:
    assert parse_rates(spec) == rates


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "could not convert"),
        ("fast", "could not convert"),
        ("100,,200", "could not convert"),
        ("100:200", "2 fields, not 3"),
        ("1:2:3:4", "4 fields, not 3"),
        ("500:100:100", "START 500 is above STOP 100"),
        ("100:500:0", "STEP 0 is not > 0"),
        ("0,100", "0 is not a finite number > 0"),
        ("-100", "-100 is not a finite number > 0"),
        ("nan", "nan is not a finite number > 0"),
        ("1:100000:1", "levels, more than"),
    ],
)
def test_parse_rates_errors_say_what_was_expected(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match="START:STOP:STEP") as caught:
        parse_rates(spec)
    assert problem in str(caught.value)
    assert repr(spec) in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "levels"),
    [
        ("1,2,4,8", [1, 2, 4, 8]),
        ("16", [16]),
        ("1:4", [1, 2, 3, 4]),
        ("4:16:4", [4, 8, 12, 16]),
        ("4:15:4", [4, 8, 12]),
    ],
)
def test_parse_concurrency(spec: str, levels: list[int]) -> None:
    assert parse_concurrency(spec) == levels


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "invalid literal"),
        ("1.5", "invalid literal"),
        ("0", "0 is not >= 1"),
        ("2,-1", "-1 is not >= 1"),
        ("1:2:3:4", "4 fields, not 2 or 3"),
        ("8:1", "START 8 is above STOP 1"),
        ("1:8:0", "STEP 0 is not > 0"),
    ],
)
def test_parse_concurrency_errors_say_what_was_expected(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match="START:STOP") as caught:
        parse_concurrency(spec)
    assert problem in str(caught.value)


def test_start_at_reads_unix_seconds_and_iso_8601() -> None:
    from mserve.bench.schedule import parse_start_at

    now = 1767225000.0
    assert parse_start_at("1767225600", now) == 1767225600.0
    assert parse_start_at("2026-01-01T00:00:00Z", now) == 1767225600.0
    assert parse_start_at("2026-01-01T00:00:00", now) == 1767225600.0  # UTC without a zone
    assert parse_start_at("2026-01-01T01:00:00+01:00", now) == 1767225600.0
    with pytest.raises(ValueError, match="expected Unix seconds"):
        parse_start_at("in a minute", now)
    with pytest.raises(ValueError, match="more than a day ahead"):
        parse_start_at(str(now + 2 * 86400), now)
