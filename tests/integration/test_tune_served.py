"""``mserve tune`` end to end: real servers per candidate, real load, the winner applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mserve.config import DynamicBatching, ModelConfig, load_model_config
from mserve.protocol import TensorSpec

pytestmark = pytest.mark.integration

WIDTHS = (512, 1024, 1024, 512)  # heavy enough that an execution takes a while


@pytest.fixture
def repository(tmp_path: Path, onnx_factory: Any, place: Any) -> Path:
    root = tmp_path / "models"
    config = ModelConfig(
        "mlp",
        inputs=(TensorSpec("INPUT", "FP32", (-1, WIDTHS[0])),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, WIDTHS[-1])),),
        max_batch_size=32,
        dynamic_batching=DynamicBatching(max_queue_delay_us=50),
    )
    place(root, "mlp", {1: onnx_factory.mlp(WIDTHS)}, config=config)
    return root


def test_tune_picks_what_its_measurements_say_and_applies_it(
    repository: Path, mserve_cli: Any, tmp_path: Path
) -> None:
    out = tmp_path / "tune.json"
    done = mserve_cli(
        "tune",
        str(repository / "mlp"),
        "--slo",
        "p99=2s",
        "--batch-sizes",
        "0,32",
        "--delays-us",
        "2000",
        "--concurrency",
        "16",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--apply",
        "-o",
        str(out),
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "mserve.tune.result/1"
    assert len(doc["candidates"]) == 2
    meeting = [c for c in doc["candidates"] if c["meets_slo"]]
    assert meeting, doc
    best = max(meeting, key=lambda c: c["throughput_per_core"])
    assert doc["winner"] == best["index"]
    for c in doc["candidates"]:  # every candidate was measured at the same load
        assert [s["load"]["concurrency"] for s in c["steps"]] == [16]
        assert c["best"]["throughput_rps"] == c["steps"][0]["throughput_rps"] > 0
    assert f"winner: {best['label']}" in done.stdout
    assert doc["applied"] == str(repository / "mlp" / "config.yaml")

    applied = load_model_config(repository / "mlp" / "config.yaml", "mlp")
    chosen = best["candidate"]
    if chosen["max_batch_size"]:
        assert applied.dynamic_batching == DynamicBatching(max_queue_delay_us=2000)
    else:
        assert applied.dynamic_batching is None
    assert applied.max_batch_size == 32
    assert applied.inputs[0].shape == (-1, WIDTHS[0])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--batch-sizes", "0,-8"], 2, "--batch-sizes values must be >= 0"),
        (["--slo", "p99=fast"], 2, "--slo"),
        (["--batch-sizes", "0,8,16", "--max-candidates", "2"], 2, "more than --max-candidates 2"),
        (["--variants", "fp16"], 4, "unknown model 'mlp-fp16'"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    repository: Path, mserve_cli: Any, args: list[str], code: int, message: str
) -> None:
    slo = [] if "--slo" in args else ["--slo", "p99=20ms"]
    done = mserve_cli("tune", str(repository / "mlp"), *slo, *args, timeout=30)
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_unknown_model_and_missing_repository(repository: Path, mserve_cli: Any) -> None:
    done = mserve_cli("tune", str(repository / "nope"), "--slo", "p99=20ms", timeout=30)
    assert done.returncode == 4
    assert "unknown model 'nope'; known models: mlp" in done.stderr
    done = mserve_cli("tune", str(repository / "absent" / "m"), "--slo", "p99=20ms", timeout=30)
    assert done.returncode == 3
    assert "not a directory" in done.stderr


def test_slo_search_over_the_variants_present(
    repository: Path, mserve_cli: Any, onnx_factory: Any, place: Any
) -> None:
    # a second copy stands in for what 'mserve convert' writes as mlp-fp16
    place(repository, "mlp-fp16", {1: onnx_factory.mlp(WIDTHS)})
    done = mserve_cli(
        "tune",
        str(repository / "mlp"),
        "--slo",
        "p99=2s",
        "--batch-sizes",
        "0",
        "--max-concurrency",
        "4",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--json",
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["mode"] == "search"
    assert doc["grid"]["variants"] == ["mlp", "mlp-fp16"]
    for c in doc["candidates"]:  # doubling from 1 up to the cap, every step within 2 s
        assert [s["load"]["concurrency"] for s in c["steps"]] == [1, 2, 4]
        assert (
            c["best"]["concurrency"]
            == max(c["steps"], key=lambda s: s["throughput_rps"])["load"]["concurrency"]
        )
    assert doc["winner"] == doc["candidates"][0]["index"]
