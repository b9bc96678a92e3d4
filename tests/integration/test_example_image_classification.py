"""The image classification scenario (``examples/image_classification/run.py --quick``) runs end
to end as a user runs it, and its summary shows what it promises: accuracy through the server,
parity, error-free bench results with throughput, and the Markdown reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from example_run import run_quick

pytestmark = pytest.mark.integration

VARIANTS = ("fp32", "int8-static", "pruned-channels-50")


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Run the quick scenario once; its folder and summary."""
    out = tmp_path_factory.mktemp("image-classification")
    return out, run_quick("image_classification", out)


def test_every_check_passed(scenario_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = scenario_run
    assert summary["ok"] is True
    assert summary["problems"] == []
    assert summary["training"]["test_accuracy"] >= 0.95
    assert set(summary["variants"]) == set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_accurate_through_the_server_and_in_parity(
    scenario_run: tuple[Path, dict[str, Any]], variant: str
) -> None:
    _, summary = scenario_run
    v = summary["variants"][variant]
    assert v["accuracy_server"] >= (0.93 if variant.startswith("pruned") else 0.95)
    assert v["parity"]["ok"] is True
    assert v["parity"]["standard"] == ("approximate" if variant == "int8-static" else "exact")
    assert v["size_bytes"] > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_bench_results_and_reports(
    scenario_run: tuple[Path, dict[str, Any]], variant: str
) -> None:
    out, summary = scenario_run
    v = summary["variants"][variant]
    sweep = json.loads((out / v["sweep"]["file"]).read_text())
    assert [s["load"]["concurrency"] for s in sweep["steps"]] == [1, 8]
    for step in sweep["steps"]:
        assert step["throughput_rps"] > 0
        assert step["error_count"] == 0, step["errors"]
    slo = json.loads((out / v["slo"]["file"]).read_text())
    assert slo["slo"]["objective"].startswith("p99")
    assert slo["steps"]
    assert all(s["throughput_rps"] > 0 for s in slo["steps"])
    assert v["batch_sizes"]  # the server executed batches during the sweep
    for kind in ("sweep", "slo"):
        markdown = (out / v[kind]["report"]["md"]).read_text()
        assert markdown.startswith("# mserve bench run")
        assert v["model"] in markdown
