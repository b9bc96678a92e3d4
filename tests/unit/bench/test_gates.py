"""--assert and --fail-on on result documents with known figures."""

from __future__ import annotations

from typing import Any

import pytest

from mserve.bench.gates import check_asserts, check_fail_on, parse_asserts, parse_fail_on
from mserve.errors import ConfigError


def _step(c: int, p99: float, rps: float, errors: int = 0, count: int = 1000) -> dict[str, Any]:
    return {
        "load": {"mode": "closed", "concurrency": c},
        "latency_ms": {"p50": p99 / 2, "p99": p99, "p999": p99 * 2, "max": p99 * 3},
        "throughput_rps": rps,
        "error_count": errors,
        "count": count,
    }


RESULT = {"steps": [_step(1, 2.0, 500.0), _step(16, 25.0, 900.0, errors=10, count=990)]}


def test_asserts_name_the_step_and_the_figure() -> None:
    failures = check_asserts(RESULT, parse_asserts("p99<20ms,errors==0,throughput>=400"))
    assert failures == [
        "step 2 (c=16): p99 25.000 ms breaks p99<20ms",
        "step 2 (c=16): errors 10 breaks errors==0",
    ]
    assert check_asserts(RESULT, parse_asserts("p99 < 0.03s, error_rate<=1%")) == []
    assert check_asserts(RESULT, parse_asserts("p99.9<45000us")) == [
        "step 2 (c=16): p999 50.000 ms breaks p99.9<45000us"
    ]


def test_fail_on_compares_steps_under_the_same_load() -> None:
    baseline = {"steps": [_step(1, 2.0, 500.0), _step(4, 5.0, 700.0), _step(16, 20.0, 1000.0)]}
    failures, changes, missing = check_fail_on(
        RESULT, baseline, parse_fail_on("p99>+10%,throughput<-5%")
    )
    assert failures == [
        "c=16: p99 20.000 ms -> 25.000 ms (+25.0%) hits p99>+10%",
        "c=16: throughput 1000 -> 900 (-10.0%) hits throughput<-5%",
    ]
    assert [(c.load, c.figure, round(c.percent, 1)) for c in changes] == [
        ("c=1", "p99", 0.0),
        ("c=1", "throughput", 0.0),
        ("c=16", "p99", 25.0),
        ("c=16", "throughput", -10.0),
    ]
    assert missing == []
    _, _, missing = check_fail_on(RESULT, {"steps": [_step(1, 2.0, 500.0)]}, [])
    assert missing == ["c=16"]


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_asserts, "p42<3ms", "--assert: field 'p42<3ms': expected a figure among"),
        (parse_asserts, "p99 about 3", "--assert: field 'p99 about 3': expected FIGURE OP"),
        (parse_asserts, "p99<3kg", "expected a latency in us, ms (the default) or s"),
        (parse_asserts, "throughput>5ms", "expected a plain number for throughput"),
        (parse_fail_on, "p99>10ms", "--fail-on: field 'p99>10ms': expected FIGURE OP CHANGE%"),
    ],
)
def test_bad_gates_say_what_was_expected(parse: Any, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value)
