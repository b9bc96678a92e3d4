"""Interleaved timing: who runs when, and speed-ups from paired rounds (no clocks asserted)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pytest

from mserve.convert.parity import Parity
from mserve.convert.report import VariantReport
from mserve.convert.timing import Latency, interleaved, paired_speedup
from mserve.convert.variants import verdict


def test_every_model_runs_every_round_and_the_order_rotates() -> None:
    calls: list[str] = []

    def runner(name: str):  # type: ignore[no-untyped-def]
        def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            calls.append(name)
            return []

        return run

    feeds = {1: {"x": np.zeros((1, 2))}}
    result = interleaved(
        {n: runner(n) for n in ("a", "b", "c")}, feeds, rounds=3, seconds_per_round=0.0
    )
    assert {name: len(ms[0].rounds) for name, ms in result.items()} == {"a": 3, "b": 3, "c": 3}
    timed = calls[9:]  # after three warm-up runs each
    firsts = [timed[0]]
    for prev, cur in itertools.pairwise(timed):
        if cur != prev:
            firsts.append(cur)
    assert firsts[:9] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_paired_speedup_cancels_a_drift_that_touches_both() -> None:
    # the machine slows down 3x halfway; the variant is 2x faster in every round
    base = Latency(1, 4.0, 4.0, 10, rounds=(2.0, 2.0, 6.0, 6.0, 6.0))
    other = Latency(1, 3.0, 3.0, 10, rounds=(1.0, 1.0, 3.0, 3.0, 3.0))
    assert paired_speedup(base, other) == pytest.approx(2.0)
    assert base.p50_ms / other.p50_ms != pytest.approx(2.0)  # the medians alone would not say
    assert paired_speedup(Latency(1, 4.0, 4.0, 1), Latency(1, 2.0, 2.0, 1)) == 2.0


def _variant(speedup: dict[int, float], requested: bool, ok: bool = True) -> VariantReport:
    v = VariantReport("int8-dynamic", "m-int8-dynamic", requested=requested)
    v.parity = Parity((), exact=False, ok=ok, failures=() if ok else ("'y' bad",), rows=4)
    v.speedup = speedup
    return v


@pytest.mark.parametrize(
    ("speedup", "kept", "reason"),
    [
        ({1: 1.3, 32: 1.2}, True, "faster here and within tolerance: 1.30x at batch 1"),
        ({1: 1.02, 32: 1.03}, False, "not faster than fp32 on this machine"),
        ({1: 0.80, 32: 1.60}, False, "slower than fp32 at one batch size on this machine"),
        ({1: 0.97, 32: 1.30}, True, "faster here"),
    ],
)
def test_auto_keeps_only_what_is_faster(speedup: dict[int, float], kept: bool, reason: str) -> None:
    v = _variant(speedup, requested=False)
    verdict(v, measured=True)
    assert v.kept is kept
    assert v.reason.startswith(reason)


def test_asked_for_is_kept_when_slower_and_says_so() -> None:
    v = _variant({1: 0.7, 32: 0.8}, requested=True)
    verdict(v, measured=True)
    assert v.kept
    assert v.reason.endswith("- slower than fp32 on this machine")


def test_out_of_tolerance_is_dropped_with_the_failure() -> None:
    v = _variant({1: 3.0}, requested=False, ok=False)
    verdict(v, measured=True)
    assert not v.kept
    assert v.reason == "out of tolerance: 'y' bad"
