"""``mserve results merge`` over three real ``mserve bench`` processes that ran at the same time
against the shared server: sums, an exact merged histogram, percentiles equal to those of the
pooled samples, and refusals of results that are not of one benchmark."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.cli.exit_codes import OK, USAGE
from mserve.cli.main import main

pytestmark = pytest.mark.integration

WORKERS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


@pytest.fixture(scope="module")
def worker_files(served: Any, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three result files of ``mserve bench`` processes started together by ``--start-at``
    (two closed-loop steps of 1 s each); the start time is kept in ``start_at`` beside them."""
    folder = tmp_path_factory.mktemp("workers")
    start_at = time.time() + 5  # time for three interpreters to start on a busy machine
    (folder / "start_at").write_text(repr(start_at))
    files = [folder / f"worker-{i}.json" for i in range(WORKERS)]
    bench = [sys.executable, "-m", "mserve", "bench", f"http://{served.address}", "-m", "digits"]
    common = ["--concurrency", "1,2", "--duration", "1", "--warmup", "0.3", "--window", "0.5"]
    common += ["--start-at", repr(start_at)]
    procs = [
        subprocess.Popen(
            [*bench, *common, "--seed", str(i), "-q", "--no-save", "-o", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, path in enumerate(files)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return files


@pytest.fixture(scope="module")
def merged(
    worker_files: list[Path], tmp_path_factory: pytest.TempPathFactory, mserve_cli: Any
) -> tuple[dict[str, Any], Path, Path]:
    """The merged document (printed by --json, written by -o, saved by --save), its file and
    the database it was saved in."""
    folder = tmp_path_factory.mktemp("merged")
    out, db = folder / "merged.json", folder / "results.db"
    files = [str(f) for f in worker_files]
    proc = mserve_cli(
        "results", "--db", str(db), "merge", *files, "-o", str(out), "--json", "--save"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert f"saved as run {doc['id']}" in proc.stderr
    return doc, out, db


def highest_values(histogram: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each bucket's highest value and count, from the layout histogram.py documents (computed
    here anew): below 2 * half the buckets are 1 us wide, above, each power of two is cut into
    ``half`` buckets."""
    assert histogram["lowest_us"] == 1
    half_magnitude = math.ceil(math.log2(2 * 10 ** histogram["significant_figures"])) - 1
    half = 1 << half_magnitude
    index = np.array([i for i, _ in histogram["buckets"]], dtype=np.int64)
    counts = np.array([c for _, c in histogram["buckets"]], dtype=np.int64)
    power = (index >> half_magnitude) - 1
    sub = (index & (half - 1)) + half
    sub = np.where(power < 0, sub - half, sub)
    power = np.maximum(power, 0)
    return (sub << power) + (1 << power) - 1, counts


def pooled_percentile(histograms: list[dict[str, Any]], p: float) -> int:
    """The nearest-rank percentile (histogram.py's rule) of all the histograms' values."""
    values = np.sort(np.concatenate([np.repeat(*highest_values(h)) for h in histograms]))
    n = len(values)
    exact = p * n / 100.0
    rank = round(exact) if abs(exact - round(exact)) <= 1e-9 * max(1.0, exact) else math.ceil(exact)
    rank = min(max(rank, 1), n)
    if rank == 1:
        return min(h["min"] for h in histograms)
    return min(int(values[rank - 1]), max(h["max"] for h in histograms))


def test_merged_figures_are_sums_and_the_pooled_percentiles(
    worker_files: list[Path], merged: tuple[dict[str, Any], Path, Path]
) -> None:
    doc = merged[0]
    workers = [json.loads(f.read_text()) for f in worker_files]
    assert [m["file"] for m in doc["merged_from"]] == [str(f) for f in worker_files]
    assert [m["id"] for m in doc["merged_from"]] == [w["id"] for w in workers]
    assert doc["schema"] == workers[0]["schema"]
    assert [s["load"]["concurrency"] for s in doc["steps"]] == [3, 6]
    for i, step in enumerate(doc["steps"]):
        parts = [w["steps"][i] for w in workers]
        assert step["count"] == sum(p["count"] for p in parts) > 0
        assert step["error_count"] == sum(p["error_count"] for p in parts)
        assert step["throughput_rps"] == pytest.approx(
            sum(p["throughput_rps"] for p in parts), abs=1e-3
        )
        summed: dict[int, int] = {}
        for p in parts:
            for index, count in p["histogram"]["buckets"]:
                summed[index] = summed.get(index, 0) + count
        assert {i: c for i, c in step["histogram"]["buckets"]} == summed
        histograms = [p["histogram"] for p in parts]
        for key, p in PERCENTILES.items():
            expected = round(pooled_percentile(histograms, p) / 1000, 3)
            assert step["latency_ms"][key] == expected, key
        assert step["latency_ms"]["max"] == max(p["latency_ms"]["max"] for p in parts)
        # the three processes ran at the same time, by their own wall clocks
        for w, p in zip(workers, parts, strict=True):
            created = datetime.strptime(w["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            start, end = p["measured_unix_s"]
            assert created.timestamp() <= start < end < created.timestamp() + 60
            # none measured before the agreed start
            assert start >= float((worker_files[0].parent / "start_at").read_text())
        assert step["overlap"]["overlap_s"] > 0
        assert step["verdict"] in ("VALID", "INVALID")
        if any(p["verdict"] == "INVALID" for p in parts):
            assert step["verdict"] == "INVALID"
            assert all(r.startswith("/") and ".json: " in r for r in step["reasons"])


def test_the_pooled_rule_matches_one_workers_own_figures(worker_files: list[Path]) -> None:
    step = json.loads(worker_files[0].read_text())["steps"][0]
    for key, p in PERCENTILES.items():
        expected = round(pooled_percentile([step["histogram"]], p) / 1000, 3)
        assert step["latency_ms"][key] == expected


def test_the_merged_run_shows_and_reports_like_any_run(
    merged: tuple[dict[str, Any], Path, Path], mserve_cli: Any
) -> None:
    doc, out, db = merged
    shown = mserve_cli("results", "--db", str(db), "show", doc["id"])
    assert shown.returncode == 0, shown.stderr
    assert "c=3" in shown.stdout
    assert "c=6" in shown.stdout
    assert "results merge" in shown.stdout  # the command that made it
    report = mserve_cli("report", str(out), "--format", "md", "-o", "-")
    assert report.returncode == 0, report.stderr
    assert "c=6" in report.stdout


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["target"].update(model="iris"), "target.model is 'iris'"),
        (lambda d: d["steps"][1]["load"].update(concurrency=4), "the load of step 2 is 'c=4'"),
    ],
)
def test_results_of_different_benchmarks_are_refused(
    worker_files: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    field: str,
) -> None:
    other = json.loads(worker_files[2].read_text())
    change(other)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(other))
    code = main(["results", "merge", str(worker_files[0]), str(worker_files[1]), str(odd)])
    assert code == USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"mserve results merge: error: {odd}: {field}")
    assert str(worker_files[0]) in err


def test_the_default_output_is_a_table(
    worker_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["results", "merge", *map(str, worker_files)]) == OK
    out = capsys.readouterr().out
    assert "c=6" in out
    assert f"merged from {WORKERS} results" in out
