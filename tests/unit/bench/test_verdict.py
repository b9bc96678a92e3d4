"""The verdict's reasons say who fell behind: the generator, or a server holding every
connection."""

from __future__ import annotations

from typing import Any

from mserve.bench.generator import Load
from mserve.bench.result import Settings, judge


def open_step(backlogged: int) -> dict[str, Any]:
    """An open-loop step at 1,000 req/s that achieved 800 and sent 5 ms late at p99."""
    return {
        "count": 4000,
        "stable": True,
        "generator": {"cpu_percent": 40.0, "backlogged": backlogged},
        "send_lag_ms": {"p50": 1.0, "p99": 5.0, "max": 9.0},
        "achieved_rate_rps": 800.0,
        "scheduled_rate_rps": 1000.0,
    }


def test_a_lagging_generator_is_named() -> None:
    verdict, reasons = judge(open_step(0), Load(mode="open", rate=1000.0), Settings())
    assert verdict == "INVALID"
    assert reasons == [
        "sends lagged behind the schedule: p99 lag 5.000 ms > 1 ms (generator-bound)",
        "achieved 800.0 req/s, more than 1% under the 1000.0 req/s its schedule called for "
        "(requested 1000; generator-bound)",
    ]


def test_lag_behind_busy_connections_is_put_on_them() -> None:
    verdict, reasons = judge(open_step(250), Load(mode="open", rate=1000.0), Settings())
    assert verdict == "INVALID"
    assert reasons[0].startswith("250 requests could not be started on time")
    assert reasons[1].endswith("(every connection was busy)")
    assert reasons[2].endswith("(requested 1000; every connection was busy)")
    assert not any("generator-bound" in r for r in reasons)


def test_a_poisson_schedule_is_judged_against_its_own_count() -> None:
    """Poisson arrivals at 20 req/s hold about 120 +- 11 sends in 6 s: a schedule that held 108
    and sent them all on time is VALID, though 10% under rate x time."""
    step = open_step(0) | {
        "send_lag_ms": {"p50": 0.1, "p99": 0.5, "max": 0.9},
        "achieved_rate_rps": 18.0,
        "scheduled_rate_rps": 18.0,
    }
    assert judge(step, Load(mode="open", rate=20.0, arrival="poisson"), Settings()) == (
        "VALID",
        [],
    )
