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
    }


def test_a_lagging_generator_is_named() -> None:
    verdict, reasons = judge(open_step(0), Load(mode="open", rate=1000.0), Settings())
    assert verdict == "INVALID"
    assert reasons == [
        "sends lagged behind the schedule: p99 lag 5.000 ms > 1 ms (generator-bound)",
        "achieved 800.0 req/s, more than 1% under the requested 1000 (generator-bound)",
    ]


def test_lag_behind_busy_connections_is_put_on_them() -> None:
    verdict, reasons = judge(open_step(250), Load(mode="open", rate=1000.0), Settings())
    assert verdict == "INVALID"
    assert reasons[0].startswith("250 requests could not be started on time")
    assert reasons[1].endswith("(every connection was busy)")
    assert reasons[2].endswith("(every connection was busy)")
    assert not any("generator-bound" in r for r in reasons)
