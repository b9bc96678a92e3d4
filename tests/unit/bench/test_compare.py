"""Run comparison with bootstrap intervals, on window series whose differences are known."""

from __future__ import annotations

from typing import Any

import numpy as np

from mserve.bench.compare import bootstrap_change, compare_runs


def _run(rps: list[float], p99: list[float], c: int = 8) -> dict[str, Any]:
    timeline = [
        {"t_s": float(i), "throughput_rps": r, "p50_ms": q / 3, "p99_ms": q}
        for i, (r, q) in enumerate(zip(rps, p99, strict=True))
    ]
    return {"steps": [{"load": {"mode": "closed", "concurrency": c}, "timeline": timeline}]}


def _noisy(mean: float, n: int, seed: int, spread: float = 0.02) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(mean * (1 + rng.normal(0, spread, n)))


def test_a_real_slowdown_is_worse_and_the_same_thing_is_within_noise() -> None:
    a = _run(_noisy(1000, 8, 1), _noisy(10, 8, 2))
    slower = _run(_noisy(800, 8, 3), _noisy(13, 8, 4))
    again = _run(_noisy(1000, 8, 5), _noisy(10, 8, 6))
    deltas, unmatched = compare_runs(a, slower)
    verdicts = {d.figure: d.verdict for d in deltas}
    assert verdicts == {"throughput": "worse", "p50": "worse", "p99": "worse"}
    throughput = next(d for d in deltas if d.figure == "throughput")
    assert -25 < throughput.ci_low_pct < throughput.change_pct < throughput.ci_high_pct < -15
    assert unmatched == []
    assert {d.verdict for d in compare_runs(a, again)[0]} == {"within noise"}
    faster = {d.figure: d.verdict for d in compare_runs(slower, a)[0]}
    assert faster == {"throughput": "better", "p50": "better", "p99": "better"}


def test_a_tiny_but_steady_change_is_within_noise() -> None:
    a = _run([1000.0, 1000.1, 999.9, 1000.0], [10.0] * 4)
    b = _run([1030.0, 1030.1, 1029.9, 1030.0], [10.0] * 4)  # +3%: below the 5% floor
    assert {d.verdict for d in compare_runs(a, b)[0]} == {"within noise"}


def test_loads_only_one_run_has_are_listed_and_short_steps_are_flagged() -> None:
    a = _run([1.0, 2.0], [1.0, 1.0], c=1)
    b = _run([1.0], [1.0], c=1)
    b["steps"].append(_run([1.0, 1.0], [1.0, 1.0], c=4)["steps"][0])
    deltas, unmatched = compare_runs(a, b)
    assert unmatched == ["c=4"]
    assert {d.verdict for d in deltas} == {"too few windows"}


def test_bootstrap_interval_contains_the_point() -> None:
    point, low, high = bootstrap_change(np.array([10.0, 11, 9, 10]), np.array([12.0, 13, 11, 12]))
    assert point == 20.0
    assert low < point < high
