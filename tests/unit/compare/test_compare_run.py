"""The pure parts of running a comparison: the bench options every system shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.compare.cpus import CpuSplit
from mserve.compare.run import Plan, protocol_of
from mserve.compare.systems import ModelUnderTest

MODEL = ModelUnderTest("m", Path("m.onnx"), (), (), 8, threads=2)


@pytest.mark.parametrize(
    ("args", "protocol"),
    [
        (["--protocol", "http", "--body", "b.json"], "http"),
        (["-m", "digits", "--protocol=v2-binary"], "v2-binary"),
        (["-m", "digits"], "v2-json"),
        (["--protocol"], "v2-json"),
    ],
)
def test_protocol_of(args: list[str], protocol: str) -> None:
    assert protocol_of(args) == protocol


def test_load_args_are_bench_options() -> None:
    plan = Plan(MODEL, Path("out"), CpuSplit("0", "1"), duration_s=1.5, warmup_s=0)
    assert plan.load_args() == ["--duration", "1.5", "--warmup", "0"]
    assert Plan(MODEL, Path("out"), CpuSplit("0", "1")).load_args() == []


def test_bench_time_limit_grows_with_steps() -> None:
    fixed = Plan(MODEL, Path("out"), CpuSplit("0", "1"), duration_s=1, warmup_s=0.5)
    assert fixed.bench_timeout_s(2) == 60 + 2 * 6.5
    stable = Plan(MODEL, Path("out"), CpuSplit("0", "1"))
    assert stable.bench_timeout_s(1) == 60 + 2 + 30 + 5  # bench's warm-up and --max-duration


def test_settings_record_the_plan() -> None:
    plan = Plan(MODEL, Path("out"), CpuSplit("0", "1"), concurrency=(1, 4), slo="p99=5ms")
    assert plan.settings() == {
        "concurrency": [1, 4],
        "duration_s": None,
        "warmup_s": None,
        "slo": "p99=5ms",
        "server_cpus": "0",
        "bench_cpus": "1",
        "threads": 2,
        "ready_timeout_s": 180.0,
    }
