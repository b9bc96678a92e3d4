"""Per model-version statistics in the shape of Triton's statistics extension."""

from __future__ import annotations

from mserve.server.statistics import PHASES, ModelStats

ZERO = {"count": 0, "ns": 0}


def test_fresh_statistics_have_triton_shape_and_zero_counts() -> None:
    doc = ModelStats("m", "3").to_dict()
    assert doc == {
        "name": "m",
        "version": "3",
        "last_inference": 0,
        "inference_count": 0,
        "execution_count": 0,
        "inference_stats": {
            "success": ZERO,
            "fail": ZERO,
            "queue": ZERO,
            "compute_input": ZERO,
            "compute_infer": ZERO,
            "compute_output": ZERO,
            "cache_hit": ZERO,
            "cache_miss": ZERO,
        },
        "response_stats": {},
        "batch_stats": [],
        "memory_usage": [],
    }
    assert set(PHASES) <= set(doc["inference_stats"])


def test_successes_accumulate_counts_and_durations_per_phase_and_batch_size() -> None:
    stats = ModelStats("m", "1")
    stats.record_success(4, total_ns=100, queue_ns=10, input_ns=20, infer_ns=50, output_ns=20)
    stats.record_execution(4, input_ns=20, infer_ns=50, output_ns=20)
    stats.record_success(1, total_ns=30, queue_ns=1, input_ns=2, infer_ns=25, output_ns=2)
    stats.record_execution(1, input_ns=2, infer_ns=25, output_ns=2)
    stats.record_success(4, total_ns=200, queue_ns=20, input_ns=40, infer_ns=100, output_ns=40)
    stats.record_execution(4, input_ns=40, infer_ns=100, output_ns=40)
    doc = stats.to_dict()
    assert doc["inference_count"] == 9  # rows
    assert doc["execution_count"] == 3  # model runs
    assert doc["last_inference"] > 1_600_000_000_000  # a wall-clock timestamp in ms
    s = doc["inference_stats"]
    assert s["success"] == {"count": 3, "ns": 330}
    assert s["fail"] == ZERO
    assert s["queue"] == {"count": 3, "ns": 31}
    assert s["compute_input"] == {"count": 3, "ns": 62}
    assert s["compute_infer"] == {"count": 3, "ns": 175}
    assert s["compute_output"] == {"count": 3, "ns": 62}
    assert doc["batch_stats"] == [  # ascending batch size
        {
            "batch_size": 1,
            "compute_input": {"count": 1, "ns": 2},
            "compute_infer": {"count": 1, "ns": 25},
            "compute_output": {"count": 1, "ns": 2},
        },
        {
            "batch_size": 4,
            "compute_input": {"count": 2, "ns": 60},
            "compute_infer": {"count": 2, "ns": 150},
            "compute_output": {"count": 2, "ns": 60},
        },
    ]


def test_a_batch_counts_one_execution_and_each_request_its_rows() -> None:
    stats = ModelStats("m", "1")
    for rows in (1, 2, 3):  # three requests computed together, six rows
        stats.record_success(rows, total_ns=90, queue_ns=30, input_ns=5, infer_ns=50, output_ns=5)
    stats.record_execution(6, input_ns=5, infer_ns=50, output_ns=5)
    doc = stats.to_dict()
    assert (doc["inference_count"], doc["execution_count"]) == (6, 1)
    assert doc["inference_stats"]["success"]["count"] == 3
    assert [b["batch_size"] for b in doc["batch_stats"]] == [6]
    assert doc["batch_stats"][0]["compute_infer"] == {"count": 1, "ns": 50}


def test_failures_count_apart_from_successes() -> None:
    stats = ModelStats("m", "1")
    stats.record_failure(7)
    stats.record_failure(8)
    doc = stats.to_dict()
    assert doc["inference_stats"]["fail"] == {"count": 2, "ns": 15}
    assert doc["inference_stats"]["success"] == ZERO
    assert (doc["inference_count"], doc["execution_count"], doc["last_inference"]) == (0, 0, 0)
    assert doc["batch_stats"] == []
