"""``mserve report`` on a real run against the real server, opened in headless Chromium:
the page loads nothing, logs no error, draws every plot, and plots the run's own numbers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

PLOTS = ("plot-throughput-latency", "plot-percentiles", "plot-timeline", "plot-server-breakdown")

#: Every plot's element: how many plotly SVG layers it has and the traces it draws.
READ_PLOTS = """() => Object.fromEntries(Array.from(document.querySelectorAll(".plot")).map(
  (gd) => [gd.id, {
    svgs: gd.querySelectorAll("svg.main-svg").length,
    traces: (gd.data || []).map((t) => ({name: t.name, x: t.x, y: t.y})),
  }]))"""


@pytest.fixture(scope="module")
def result_file(served: Any, mserve_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real closed-loop sweep (c=1, c=4) against the shared server, saved as JSON."""
    path = tmp_path_factory.mktemp("report") / "r.json"
    proc = mserve_cli(
        "bench",
        f"http://{served.address}",
        "-m",
        "digits",
        "--protocol",
        "v2-binary",
        "--concurrency",
        "1,4",
        "--warmup",
        "0.2",
        "--window",
        "0.5",
        "--duration",
        "1.5",
        "-q",
        "-o",
        str(path),
    )
    assert proc.returncode == 0, proc.stderr
    return path


def test_the_html_report_draws_the_runs_numbers_offline(
    result_file: Path,
    mserve_cli: Any,
    page: Any,
    page_log: Any,
    save_artefact: Any,
    tmp_path: Path,
) -> None:
    report = tmp_path / "report.html"
    proc = mserve_cli("report", str(result_file), "-o", str(report))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(result_file.read_text())

    problems, requests = page_log.problems, page_log.requests
    page.goto(report.as_uri())
    page.wait_for_selector("body[data-plots=done]", timeout=30_000)

    assert problems == []
    assert requests == [report.as_uri()]  # the page itself, nothing else
    plots = page.evaluate(READ_PLOTS)
    assert sorted(plots) == sorted(PLOTS)
    assert all(p["svgs"] > 0 for p in plots.values())

    steps = doc["steps"]
    curve = {t["name"]: t for t in plots["plot-throughput-latency"]["traces"]}
    for key in ("p50", "p99"):
        drawn = sorted(zip(curve[key]["x"], curve[key]["y"], strict=True))
        expected = sorted((s["throughput_rps"], s["latency_ms"][key]) for s in steps)
        assert drawn == expected
    spectrum = {t["name"]: t["y"] for t in plots["plot-percentiles"]["traces"]}
    for s in steps:
        lat = s["latency_ms"]
        label = f"c={s['load']['concurrency']}"
        assert spectrum[label] == [lat[k] for k in ("p50", "p90", "p95", "p99", "p999", "max")]
    over_time = {t["name"]: t["y"] for t in plots["plot-timeline"]["traces"]}
    for s in steps:
        label = f"c={s['load']['concurrency']}"
        assert over_time[label] == [w["throughput_rps"] for w in s["timeline"]]
        assert over_time[f"{label} p99"] == [w["p99_ms"] for w in s["timeline"]]
    breakdown = {t["name"]: t["y"] for t in plots["plot-server-breakdown"]["traces"]}
    assert breakdown["compute infer"] == [s["server"]["compute_infer_ms"] for s in steps]

    assert page.locator("#steps tbody tr").count() == len(steps)
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    save_artefact(shot)


def test_csv_and_markdown_reports_of_a_real_run(
    result_file: Path, mserve_cli: Any, tmp_path: Path
) -> None:
    doc = json.loads(result_file.read_text())
    proc = mserve_cli("report", str(result_file), "-o", str(tmp_path / "steps.csv"))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "steps.csv").read_text())))
    assert [float(r["throughput_rps"]) for r in rows] == [s["throughput_rps"] for s in doc["steps"]]
    proc = mserve_cli("report", str(result_file), "--format", "md", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert f"# mserve bench run {doc['id']}" in proc.stdout
    assert "| 2 | c=4 |" in proc.stdout


def test_a_missing_or_foreign_input_exits_2(mserve_cli: Any, tmp_path: Path) -> None:
    proc = mserve_cli("report", str(tmp_path / "missing.json"))
    assert proc.returncode == 2
    assert "no such result file" in proc.stderr
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": "world"}')
    proc = mserve_cli("report", str(foreign))
    assert proc.returncode == 2
    assert "not a benchmark result" in proc.stderr
