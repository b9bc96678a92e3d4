"""The HDR histogram against exact percentiles of the same samples."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from mserve.bench.histogram import Histogram

PERCENTILES = (0, 1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100)


def nearest_rank(samples: np.ndarray, p: float) -> int:
    """The exact order statistic at rank ceil(p/100*n), in exact arithmetic."""
    n = len(samples)
    rank = max(1, math.ceil(Fraction(str(p)) * n / 100))
    return int(np.sort(samples)[rank - 1])


def uniform(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(1, 1_000_000, size=20_000)


def lognormal(rng: np.random.Generator) -> np.ndarray:
    return np.rint(rng.lognormal(mean=np.log(5_000), sigma=0.8, size=20_000)).astype(np.int64)


def bimodal_with_stall(rng: np.random.Generator) -> np.ndarray:
    """Most requests near 2 ms; 3% stuck behind a 1 s stall."""
    fast = rng.normal(2_000, 300, size=19_400)
    stalled = rng.uniform(1_000_000, 1_050_000, size=600)
    return np.rint(np.clip(np.concatenate([fast, stalled]), 1, None)).astype(np.int64)


def small(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(1_000, 500_000, size=7)


DISTRIBUTIONS = [uniform, lognormal, bimodal_with_stall, small]


def histogram_of(samples: np.ndarray) -> Histogram:
    h = Histogram()
    h.record_array(samples)
    return h


def float_noise_free(p: float, n: int) -> bool:
    """Whether numpy's float n*q gives the exact rank: for 99.9% of 20,000 it computes
    19980.000000000004 and takes rank 19981 (those points are checked against nearest_rank)."""
    return math.ceil(p / 100 * n) == math.ceil(Fraction(str(p)) * n / 100)


@pytest.mark.parametrize("make", DISTRIBUTIONS, ids=lambda f: f.__name__)
def test_percentiles_match_numpy_inverted_cdf_within_one_percent(make) -> None:
    samples = make(np.random.default_rng(7))
    h = histogram_of(samples)
    got = h.percentiles(PERCENTILES)
    compared = [p for p in PERCENTILES if float_noise_free(p, len(samples))]
    assert len(compared) >= len(PERCENTILES) - 3
    for p in compared:
        numpy_value = float(np.percentile(samples, p, method="inverted_cdf"))
        assert got[p] == pytest.approx(numpy_value, rel=0.01), p


@pytest.mark.parametrize("make", DISTRIBUTIONS, ids=lambda f: f.__name__)
def test_percentiles_are_within_the_documented_bound_of_the_exact_rank(make) -> None:
    samples = make(np.random.default_rng(11))
    h = histogram_of(samples)
    for p in PERCENTILES:
        exact = nearest_rank(samples, p)
        got = h.value_at_percentile(p)
        # never below the exact order statistic, at most 1/1024 of it above (3 figures)
        assert exact <= got <= exact + exact / 1024, p


def test_nearest_rank_reference_is_numpy_inverted_cdf() -> None:
    samples = lognormal(np.random.default_rng(3))
    for p in (1, 50, 90, 99):  # points where p/100*n has no float noise
        assert nearest_rank(samples, p) == np.percentile(samples, p, method="inverted_cdf")


def test_rank_has_no_float_noise() -> None:
    h = histogram_of(np.arange(1, 1001))
    # 64.4 * 1000 / 100 is 644.0000000000001 in floats; the rank is 644
    assert h.value_at_percentile(64.4) == 644
    assert h.value_at_percentile(99.9) == 999
    assert h.value_at_percentile(99.95) == 1000


def test_values_below_two_thousand_are_exact() -> None:
    samples = np.arange(1, 2048)
    h = histogram_of(samples)
    for p in PERCENTILES:
        assert h.value_at_percentile(p) == nearest_rank(samples, p)


def test_min_max_ends_and_moments() -> None:
    samples = lognormal(np.random.default_rng(5))
    h = histogram_of(samples)
    assert (h.count, h.min, h.max) == (len(samples), samples.min(), samples.max())
    assert h.value_at_percentile(0) == samples.min()
    assert h.value_at_percentile(100) == samples.max()
    assert h.mean == pytest.approx(samples.mean(), rel=1e-3)
    assert h.stddev == pytest.approx(samples.std(), rel=1e-3)


def test_ends_are_exact_where_buckets_are_wide() -> None:
    h = histogram_of(np.array([10_001, 10_002, 20_000, 900_001]))  # 8 and 512 us wide there
    assert h.value_at_percentile(0) == h.value_at_percentile(25) == 10_001
    assert h.value_at_percentile(50) == 10_007  # highest equivalent of 10_002's bucket
    assert h.value_at_percentile(100) == 900_001
    assert h.percentile_ci(0) == (10_001, 10_001)


def test_record_loop_equals_record_array() -> None:
    samples = bimodal_with_stall(np.random.default_rng(1))[::7]
    one_by_one = Histogram()
    for v in samples.tolist():
        one_by_one.record(v)
    assert one_by_one.to_dict() == histogram_of(samples).to_dict()


def test_record_with_count_equals_repeated_records() -> None:
    a, b = Histogram(), Histogram()
    a.record(12_345, count=5)
    for _ in range(5):
        b.record(12_345)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(ValueError, match="count"):
        a.record(10, count=0)


def test_out_of_range_values_are_clamped_and_counted() -> None:
    h = Histogram(highest_us=1_000_000)
    h.record(5_000_000)
    h.record(0)
    h.record(-3)
    h.record_array(np.array([2_000_000, 0]))
    assert h.saturated == 2
    assert (h.count, h.min, h.max) == (5, 1, 1_000_000)
    assert h.value_at_percentile(100) == 1_000_000


def test_merge_of_split_samples_equals_histogram_of_union() -> None:
    samples = bimodal_with_stall(np.random.default_rng(9))
    parts = np.array_split(samples, 3)
    merged = Histogram(highest_us=1_040_000)
    for part in parts:
        h = Histogram(highest_us=1_040_000)
        h.record_array(part)
        merged.merge(h)
    union = Histogram(highest_us=1_040_000)
    union.record_array(samples)
    assert merged.to_dict() == union.to_dict()
    assert merged.count == len(samples)
    assert merged.saturated == union.saturated > 0


def test_merge_refuses_another_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        Histogram().merge(Histogram(significant_figures=2))
    with pytest.raises(ValueError, match="layout"):
        Histogram().merge(Histogram(highest_us=60_000_000))


def test_merge_with_empty_histograms() -> None:
    h = histogram_of(np.array([5, 7]))
    h.merge(Histogram())
    empty = Histogram()
    empty.merge(h)
    assert empty.to_dict() == h.to_dict()
    assert (empty.min, empty.max) == (5, 7)


def test_encode_decode_round_trip() -> None:
    h = histogram_of(lognormal(np.random.default_rng(2)))
    h.record(10**10)  # saturated
    back = Histogram.decode(h.encode())
    assert back.to_dict() == h.to_dict()
    assert back.percentiles(PERCENTILES) == h.percentiles(PERCENTILES)
    assert back.saturated == 1
    assert len(h.encode()) < 40_000  # compact: only non-zero buckets


def test_to_dict_is_json_and_compact() -> None:
    h = histogram_of(np.array([3, 3, 3, 100_000]))
    d = h.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert len(d["buckets"]) == 2
    assert Histogram.from_dict(json.loads(json.dumps(d))).to_dict() == d


@pytest.mark.parametrize(
    "payload", ["not base64!", "aGVsbG8=", Histogram().encode()[:-8], "W10="], ids=repr
)
def test_decode_refuses_garbage(payload: str) -> None:
    with pytest.raises(ValueError, match=r"not an encoded histogram|not a histogram dict"):
        Histogram.decode(payload)


@pytest.mark.parametrize(
    "bad",
    [
        {"buckets": [[-1, 3]]},
        {"buckets": [[10**9, 3]]},
        {"buckets": [[5, 0]]},
        {"buckets": [[5]]},
        {"format": "other"},
        {"significant_figures": 9},
    ],
    ids=repr,
)
def test_from_dict_refuses_malformed(bad: dict) -> None:
    d = histogram_of(np.array([5])).to_dict() | bad
    with pytest.raises(ValueError, match="not a histogram dict"):
        Histogram.from_dict(d)


def test_empty_histogram() -> None:
    h = Histogram()
    assert (h.count, h.min, h.max, h.mean, h.stddev) == (0, 0, 0, 0.0, 0.0)
    assert h.percentiles([50, 99]) == {50: 0, 99: 0}
    assert h.percentile_ci(99) == (0, 0)


def test_reset_and_copy() -> None:
    h = histogram_of(np.array([10, 20, 30]))
    c = h.copy()
    h.reset()
    assert (h.count, h.min, h.max) == (0, 0, 0)
    assert h.to_dict() == Histogram().to_dict()
    assert (c.count, c.min, c.max) == (3, 10, 30)
    h.record(40)
    assert c.count == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"lowest_us": 0}, {"highest_us": 1}, {"significant_figures": 0}, {"highest_us": 2**60}],
    ids=repr,
)
def test_constructor_refuses_bad_layout(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        Histogram(**kwargs)


def test_percentile_out_of_range() -> None:
    h = histogram_of(np.array([1, 2]))
    for p in (-1, 100.1):
        with pytest.raises(ValueError, match="percentile"):
            h.value_at_percentile(p)
    with pytest.raises(ValueError, match="confidence"):
        h.percentile_ci(50, confidence=1.0)


def test_coarser_layouts_keep_their_bound() -> None:
    samples = lognormal(np.random.default_rng(4))
    for figures, bound in ((1, 1 / 16), (2, 1 / 128), (4, 1 / 8192)):
        h = Histogram(significant_figures=figures)
        h.record_array(samples)
        for p in PERCENTILES:
            exact = nearest_rank(samples, p)
            assert exact <= h.value_at_percentile(p) <= exact * (1 + bound), (figures, p)


def test_confidence_interval_covers_the_population_percentile() -> None:
    """Exponential latencies of mean 1 ms, rounded to whole microseconds: the population p-th
    percentile is the integer k = ceil(-ln(1 - p/100) * 1000 - 0.5)."""
    rng = np.random.default_rng(2024)
    for p in (50, 99):
        population = math.ceil(-math.log(1 - p / 100) * 1_000 - 0.5)
        covered = 0
        for _ in range(200):
            h = histogram_of(np.rint(rng.exponential(1_000, size=2_000)).astype(np.int64))
            lo, hi = h.percentile_ci(p, 0.95)
            assert lo <= h.value_at_percentile(p) <= hi
            covered += lo <= population <= hi
        assert covered >= 180, (p, covered)


def test_confidence_interval_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(8)
    few = histogram_of(np.rint(rng.exponential(1_000, size=200)).astype(np.int64))
    many = histogram_of(np.rint(rng.exponential(1_000, size=50_000)).astype(np.int64))
    lo_few, hi_few = few.percentile_ci(99)
    lo_many, hi_many = many.percentile_ci(99)
    assert hi_many - lo_many < (hi_few - lo_few) / 4


def test_confidence_interval_ranks_clamp_to_the_samples() -> None:
    samples = np.arange(101, 121)  # n = 20: the upper rank for p99 would be 22
    h = histogram_of(samples)
    assert h.percentile_ci(99) == (119, 120)
    assert h.percentile_ci(0) == (101, 101)
    assert h.percentile_ci(100) == (120, 120)
