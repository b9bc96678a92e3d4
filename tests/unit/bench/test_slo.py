"""The SLO search over a load whose latency the test defines: it must find the knee."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mserve.bench.generator import Load
from mserve.bench.histogram import Histogram
from mserve.bench.slo import Slo, parse_slo, search
from mserve.errors import ConfigError


def step_at(load: Load, p99_ms: float) -> dict[str, Any]:
    h = Histogram()
    h.record(int(p99_ms * 500), 99)  # p99 within the first 99 values
    h.record(int(p99_ms * 1000), 1)
    level = load.concurrency if load.mode == "closed" else load.rate
    return {
        "load": {"mode": load.mode, "concurrency": load.concurrency, "rate": load.rate},
        "verdict": "VALID",
        "reasons": [],
        "error_count": 0,
        "histogram": h.to_dict(),
        "throughput_rps": float(level) * 10,
    }


def knee(threshold: float) -> Any:
    """A server whose p99 is 1 ms per unit of load: it meets p99<=T up to load T."""
    probes: list[float] = []

    async def run(load: Load) -> dict[str, Any]:
        level = load.concurrency if load.mode == "closed" else load.rate
        probes.append(level)
        return step_at(load, float(level) * 1.0 if level <= threshold else level * 3.0)

    return run, probes


def test_closed_loop_finds_the_highest_concurrency() -> None:
    run, probes = knee(threshold=11)
    outcome = asyncio.run(search(run, Load("closed", concurrency=1), Slo(99, 11.0)))
    assert outcome["best_load"] == 11
    assert outcome["first_failing_load"] == 12
    assert probes[:5] == [1, 2, 4, 8, 16]  # doubling, then bisection
    assert outcome["best_throughput_rps"] == 110


def test_open_loop_bisects_to_the_precision() -> None:
    run, _ = knee(threshold=730)
    outcome = asyncio.run(search(run, Load("open", rate=100), Slo(99, 730.0), precision=0.02))
    assert outcome["best_load"] <= 730
    assert (outcome["first_failing_load"] - outcome["best_load"]) / outcome[
        "first_failing_load"
    ] <= 0.02


def test_an_slo_never_met_says_so() -> None:
    run, _ = knee(threshold=0)
    outcome = asyncio.run(search(run, Load("closed", concurrency=1), Slo(99, 0.5)))
    assert outcome["best_load"] is None
    assert outcome["first_failing_load"] == 1


def test_an_invalid_step_does_not_meet_the_slo() -> None:
    step = step_at(Load("closed", concurrency=1), 1.0)
    step["verdict"] = "INVALID"
    step["reasons"] = ["sends lagged"]
    met, why = Slo(99, 100.0).met_by(step)
    assert not met
    assert "sends lagged" in why


@pytest.mark.parametrize(
    ("text", "percentile", "ms"),
    [
        ("p99=20ms", 99, 20),
        ("p50<=800us", 50, 0.8),
        ("p99.9=1.5s", 99.9, 1500),
        ("p999=2ms", 99.9, 2),
    ],
)
def test_parse_slo(text: str, percentile: float, ms: float) -> None:
    slo = parse_slo(text)
    assert slo.percentile == percentile
    assert slo.threshold_ms == pytest.approx(ms)


@pytest.mark.parametrize("text", ["p99", "99=20ms", "p99=20", "p99=fast"])
def test_parse_slo_refuses_with_the_expected_form(text: str) -> None:
    with pytest.raises(ConfigError, match="p99=20ms"):
        parse_slo(text)


def test_parse_slo_refuses_a_percentile_over_100() -> None:
    with pytest.raises(ConfigError, match="between 0 and 100"):
        parse_slo("p120=1ms")
