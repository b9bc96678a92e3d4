"""mserve tune's pure core: grid expansion, config rendering, cores, scoring and the winner."""

from __future__ import annotations

from typing import Any

import pytest

from mserve.config import (
    DynamicBatching,
    ModelConfig,
    RuntimeOptions,
    model_config_to_dict,
    parse_model_config,
)
from mserve.protocol import TensorSpec
from mserve.tune.grid import (
    Candidate,
    Grid,
    cores,
    expand,
    render,
    resolve_variant,
    variant_names,
)
from mserve.tune.score import SCHEMA, document, rank, score


def step(concurrency: int, rps: float, met: bool, p99: float = 5.0) -> dict[str, Any]:
    return {
        "load": {"mode": "closed", "concurrency": concurrency},
        "throughput_rps": rps,
        "count": 100,
        "error_count": 0,
        "slo": {"objective": "p99<=20ms", "met": met, "why": f"p99 {p99} ms"},
        "slo_percentile_ms": p99,
        "histogram": {"not": "kept"},
    }


def test_expand_orders_the_grid_and_drops_the_delay_without_batching() -> None:
    grid = Grid(("m", "m-fp16"), (0, 8), (500, 2000), (1, 2), (0,))
    got = expand(grid)
    assert len(got) == 2 * (1 + 2) * 2
    assert got[0] == Candidate("m", 0, 0, 1, 0)
    assert got[1] == Candidate("m", 0, 0, 2, 0)
    assert got[2] == Candidate("m", 8, 500, 1, 0)
    assert got[6] == Candidate("m-fp16", 0, 0, 1, 0)
    assert expand(grid) == got  # deterministic


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (Grid(("m",), (), (1,), (1,), (0,)), "--batch-sizes needs"),
        (Grid(("m",), (0, 0), (1,), (1,), (0,)), "twice"),
        (Grid(("m",), (-1,), (1,), (1,), (0,)), "--batch-sizes values must be >= 0"),
        (Grid(("m",), (8,), (1,), (0,), (0,)), "--instances values must be >= 1"),
        (Grid(("m",), (8,), (-5,), (1,), (0,)), "--delays-us"),
    ],
)
def test_bad_knobs_name_the_option(grid: Grid, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand(grid)


def test_variants_auto_and_listed() -> None:
    present = {"m", "m-int8-dynamic", "m-fp16", "other", "m-openvino"}
    assert variant_names("m", present) == ("m", "m-fp16", "m-int8-dynamic")
    assert resolve_variant("m", "fp32") == "m"
    assert resolve_variant("m", "m") == "m"
    assert resolve_variant("m", "int8-static") == "m-int8-static"
    assert resolve_variant("m", "m-fp16") == "m-fp16"


BASE = ModelConfig(
    "m",
    inputs=(TensorSpec("INPUT", "FP32", (-1, 4)),),
    outputs=(TensorSpec("OUTPUT", "FP32", (-1, 4)),),
    max_batch_size=8,
    dynamic_batching=DynamicBatching(max_queue_delay_us=5, preferred_batch_sizes=(4, 8)),
    runtime=RuntimeOptions(inter_op_threads=1, graph_optimization_level="basic"),
)


def test_render_sets_the_knobs_and_keeps_the_rest() -> None:
    config = render(BASE, Candidate("m-fp16", 32, 2000, 2, 1))
    assert config.name == "m-fp16"
    assert config.max_batch_size == 32
    assert config.dynamic_batching == DynamicBatching(2000, (4, 8))
    assert config.instance_count == 2
    assert config.runtime.intra_op_threads == 1
    assert config.runtime.graph_optimization_level == "basic"
    assert config.inputs == BASE.inputs
    # what is written reads back the same, so the server accepts it
    assert parse_model_config(model_config_to_dict(config), "x", "m-fp16") == config


def test_render_without_batching_drops_the_batcher_and_small_preferred_sizes_survive() -> None:
    off = render(BASE, Candidate("m", 0, 0, 1, 0))
    assert off.dynamic_batching is None
    assert off.max_batch_size == 8
    small = render(BASE, Candidate("m", 4, 100, 1, 0))
    assert small.dynamic_batching is not None
    assert small.dynamic_batching.preferred_batch_sizes == (4,)
    fresh = render(ModelConfig("m"), Candidate("m", 16, 100, 1, 0))
    assert fresh.dynamic_batching == DynamicBatching(max_queue_delay_us=100)


@pytest.mark.parametrize(
    ("instances", "threads", "available", "expected"),
    [(1, 0, 2, 2), (1, 1, 2, 1), (2, 1, 2, 2), (4, 2, 2, 2), (1, 0, 16, 16), (3, 2, 16, 6)],
)
def test_cores(instances: int, threads: int, available: int, expected: int) -> None:
    assert cores(Candidate("m", 0, 0, instances, threads), available) == expected


def test_score_takes_the_best_step_meeting_the_slo() -> None:
    steps = [step(1, 100, True), step(2, 180, True), step(4, 300, False, 40.0)]
    s = score(0, Candidate("m"), 2, steps)
    assert s.meets
    assert s.best is steps[1]
    assert s.per_core == 90.0
    assert s.verdict() == "meets SLO"


def test_no_step_meeting_the_slo_says_why_and_ranks_last() -> None:
    missed = score(0, Candidate("m", 32, 1), 1, [step(1, 900, False, 30.0)])
    assert not missed.meets
    assert missed.per_core == 0.0
    assert "no load meets the SLO (concurrency 1: p99 30.0 ms)" in missed.verdict()
    failed = score(1, Candidate("m", 8, 1), 1, [], error="model failed to load")
    assert failed.verdict() == "failed: model failed to load"
    slow = score(2, Candidate("m"), 2, [step(1, 10, True)])
    assert [s.index for s in rank([missed, failed, slow])] == [2, 0, 1]


def test_rank_is_by_throughput_per_core_not_raw_throughput() -> None:
    two_cores = score(0, Candidate("m", 0, 0, 1, 0), 2, [step(8, 300, True)])  # 150 per core
    one_core = score(1, Candidate("m", 0, 0, 1, 1), 1, [step(8, 200, True)])  # 200 per core
    tie = score(2, Candidate("m", 0, 0, 2, 1), 2, [step(8, 400, True)])  # 200 per core
    assert [s.index for s in rank([two_cores, one_core, tie])] == [1, 2, 0]


def test_document_names_the_winner_and_keeps_every_candidate() -> None:
    a = score(0, Candidate("m"), 2, [step(1, 100, True), step(2, 150, False, 25.0)])
    b = score(1, Candidate("m", 16, 1000), 2, [step(1, 120, True, 3.0)])
    configs = {0: {"name": "m"}, 1: {"name": "m", "max_batch_size": 16}}
    doc = document(rank([a, b]), configs, {"model": "m", "slo": "p99<=20ms"})
    assert doc["schema"] == SCHEMA
    assert doc["winner"] == 1
    assert [c["index"] for c in doc["candidates"]] == [1, 0]
    first = doc["candidates"][0]
    assert first["rank"] == 1
    assert first["best"] == {"concurrency": 1, "throughput_rps": 120, "slo_percentile_ms": 3.0}
    assert first["throughput_per_core"] == 60.0
    assert first["config"] == configs[1]
    assert "histogram" not in first["steps"][0]
    assert "highest throughput per core among the 2 of 2 candidates" in doc["why"]
    assert "(+20.0%)" in doc["why"]


def test_document_without_a_winner() -> None:
    a = score(0, Candidate("m"), 2, [step(1, 100, False, 99.0)])
    doc = document([a], {0: {}}, {"model": "m", "slo": "p99<=1ms"})
    assert doc["winner"] is None
    assert doc["why"] == "no candidate meets p99<=1ms at any load measured"
    assert doc["candidates"][0]["best"] is None
