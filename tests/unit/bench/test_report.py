"""Reports rendered from hand-made result documents: plotted numbers, tables, escaping."""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mserve.bench.report import (
    NotAResult,
    check_result,
    format_for,
    render,
    report_format,
    to_csv,
    to_html,
    to_markdown,
    write_report,
)
from mserve.bench.report.figures import figures, phases
from mserve.bench.report.html import DATA_ID
from mserve.bench.report.tables import CSV_FIELDS
from mserve.bench.result import SCHEMA
from mserve.cli import report as report_cli

EVIL = "<script>alert(1)</script>"
FAKE_PLOTLY = "window.Plotly = {newPlot: function () { return Promise.resolve(); }};"


def _step(
    c: int, rps: float, p99: float, server: bool = True, valid: bool = True
) -> dict[str, Any]:
    lat = {"p50": p99 / 3, "p90": p99 / 2, "p95": p99 / 1.5, "p99": p99, "p999": p99 * 1.5}
    lat |= {"max": p99 * 2, "mean": p99 / 2.5, "min": p99 / 10}
    step: dict[str, Any] = {
        "load": {"mode": "closed", "concurrency": c},
        "duration_s": 2.0,
        "windows": 2,
        "stable": valid,
        "count": int(rps * 2),
        "throughput_rps": rps,
        "inferences_per_s": rps,
        "latency_ms": lat,
        "latency_ci_ms": {k: [v * 0.9, v * 1.1] for k, v in lat.items() if k.startswith("p")},
        "errors": {} if valid else {"http_503": 3},
        "error_count": 0 if valid else 3,
        "warmup": {"requests": 50, "ok": 50, "errors": {}},
        "server": {
            "requests": 100,
            "request_ms": 0.5,
            "queue_ms": 0.1,
            "compute_input_ms": 0.05,
            "compute_infer_ms": 0.2,
            "compute_output_ms": 0.05,
            "network_protocol_ms": 0.3,
            "avg_batch_size": 1.0,
            "failures": 0,
        }
        if server
        else None,
        "timeline": [
            {"t_s": 0.0, "throughput_rps": rps * 0.9, "p50_ms": 1.0, "p99_ms": p99 * 0.8},
            {"t_s": 1.0, "throughput_rps": rps * 1.1, "p50_ms": 1.0, "p99_ms": p99 * 1.2},
        ],
        "verdict": "VALID" if valid else "INVALID",
        "reasons": [] if valid else [f"not stable {EVIL} | piped"],
    }
    return step


def _doc() -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "id": "abc123def456",
        "created": "2025-01-01T00:00:00Z",
        "command": ["bench", "http://h:1", "-m", EVIL],
        "machine": {"hostname": "box", "cpu": "cpu", "cpus_usable": 2, "mserve": "0.1.0"},
        "target": {"protocol": "v2-binary", "url": "http://h:1", "model": EVIL},
        "settings": {"warmup_s": 0.5, "window_s": 1.0},
        # out of load order on purpose (as an SLO search leaves them)
        "steps": [_step(16, 900.0, 9.0, valid=False), _step(1, 400.0, 1.0), _step(4, 1000.0, 2.0)],
        "slo": None,
    }


def _traces(doc: dict[str, Any], fig_id: str) -> list[dict[str, Any]]:
    fig = {f.id: f for f in figures(doc)}[fig_id]
    assert fig.spec is not None
    return fig.spec["data"]  # type: ignore[no-any-return]


def test_throughput_latency_plots_every_step_in_load_order() -> None:
    doc = _doc()
    by_name = {t["name"]: t for t in _traces(doc, "plot-throughput-latency")}
    assert by_name["p99"]["x"] == [400.0, 1000.0, 900.0]
    assert by_name["p99"]["y"] == [1.0, 2.0, 9.0]
    assert by_name["p50"]["y"] == pytest.approx([1 / 3, 2 / 3, 3.0])
    assert by_name["p99"]["text"] == ["c=1", "c=4", "c=16"]
    assert by_name["p99"]["marker"]["symbol"] == ["circle", "circle", "x"]  # INVALID crossed
    assert by_name["p99"]["error_y"]["array"] == pytest.approx([0.1, 0.2, 0.9])


def test_percentiles_per_step_carry_their_confidence_intervals() -> None:
    traces = _traces(_doc(), "plot-percentiles")
    assert [t["name"] for t in traces] == ["c=16", "c=1", "c=4"]
    assert traces[1]["x"] == ["p50", "p90", "p95", "p99", "p99.9", "max"]
    assert traces[1]["y"] == pytest.approx([1 / 3, 0.5, 1 / 1.5, 1.0, 1.5, 2.0])
    assert traces[1]["error_y"]["array"][-1] == 0.0  # max has no interval


def test_timeline_lays_steps_end_to_end_with_warmup_bands() -> None:
    doc = _doc()
    fig = {f.id: f for f in figures(doc)}["plot-timeline"]
    assert fig.spec is not None
    named = {t["name"]: t for t in fig.spec["data"]}
    assert named["c=4"]["y"] == pytest.approx([900.0, 1100.0])
    assert named["c=4 p99"]["y"] == pytest.approx([1.6, 2.4])
    assert named["c=4 p99"]["yaxis"] == "y2"
    assert named["c=16 (unstable)"]["line"]["dash"] == "dash"
    # step k starts after k * (0.5 s warm-up + 2 s measured); points sit mid-window
    assert named["c=4"]["x"] == pytest.approx([5.0 + 0.5 + 0.5, 5.0 + 0.5 + 1.5])
    assert named["c=1 warm-up"]["y"] == [100.0, 100.0]  # 50 requests in 0.5 s
    assert len(fig.spec["layout"]["shapes"]) == 3


def test_server_breakdown_stacks_to_the_clients_mean_and_notes_missing_steps() -> None:
    doc = _doc()
    doc["steps"][1]["server"] = None
    fig = {f.id: f for f in figures(doc)}["plot-server-breakdown"]
    assert fig.spec is not None
    assert {tuple(t["x"]) for t in fig.spec["data"]} == {("c=16", "c=4")}
    assert "c=1" in fig.note
    stacked = phases(doc["steps"][0]["server"])
    assert sum(stacked.values()) == pytest.approx(0.5 + 0.3)
    assert stacked["other_ms"] == pytest.approx(0.1)
    for step in doc["steps"]:
        step["server"] = None
    fig = {f.id: f for f in figures(doc)}["plot-server-breakdown"]
    assert fig.spec is None
    assert "no server-side statistics" in fig.note


def test_every_figure_is_a_valid_plotly_figure() -> None:
    go = pytest.importorskip("plotly.graph_objects")
    for fig in figures(_doc()):
        assert fig.spec is not None
        go.Figure(fig.spec)  # raises on any property plotly does not know


def test_a_result_without_steps_still_renders() -> None:
    doc = {**_doc(), "steps": []}
    assert all(f.spec is None and f.note for f in figures(doc))
    assert "no steps" in to_html(doc, FAKE_PLOTLY)
    assert to_csv(doc).strip() == ",".join(CSV_FIELDS)


def test_csv_has_one_row_per_step_with_every_figure() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(_doc()))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [r["load"] for r in rows] == ["c=16", "c=1", "c=4"]
    first = rows[0]
    assert first["run_id"] == "abc123def456"
    assert float(first["throughput_rps"]) == 900.0
    assert float(first["p99_ms"]) == 9.0
    assert float(first["p99_ci_lo_ms"]) == pytest.approx(8.1)
    assert float(first["p999_ms"]) == pytest.approx(13.5)
    assert first["errors"] == "http_503=3"
    assert first["verdict"] == "INVALID"
    assert EVIL in first["reasons"]


def test_markdown_summarises_each_step_and_escapes_pipes() -> None:
    text = to_markdown(_doc())
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 3  # the header, its rule, and one row per step
    assert "| 2 | c=1 | 400.0 | 0.333 (0.300-0.367) | 1.000 (0.900-1.100) |" in text
    assert "INVALID" in table[2]
    assert "not stable <script>alert(1)</script> \\| piped" in text


def test_html_escapes_every_text_from_the_document() -> None:
    page = to_html(_doc(), FAKE_PLOTLY)
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert len(scripts) == 3  # the data, plotly.js, the drawing code
    assert not [s for s in scripts if "src=" in s]


def test_html_embeds_the_plotted_numbers_and_one_div_per_plot() -> None:
    doc = _doc()
    page = to_html(doc, FAKE_PLOTLY)
    found = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', page, re.S)
    assert found is not None
    embedded = json.loads(found.group(1))
    assert embedded["run_id"] == doc["id"]
    for fig in figures(doc):
        assert f'<div id="{fig.id}" class="plot">' in page
        assert embedded["figures"][fig.id] == fig.spec


def test_the_html_report_needs_no_network() -> None:
    pytest.importorskip("plotly")
    page = render(_doc(), "html")
    assert page.count("<script") == 3
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert not re.search(r"<link[^>]*https?://", page)
    assert "Content-Security-Policy" in page


def test_formats_come_from_the_suffix_and_bad_documents_are_refused() -> None:
    assert format_for(Path("r.HTML")) == "html"
    assert format_for(Path("r.csv")) == "csv"
    assert format_for(Path("r.md")) == "md"
    with pytest.raises(ValueError, match="cannot tell the report format"):
        format_for(Path("r.txt"))
    with pytest.raises(ValueError, match="unknown report format"):
        render(_doc(), "pdf")
    for bad in ([], {"schema": "other/1", "steps": []}, {"schema": SCHEMA}):
        with pytest.raises(NotAResult):
            check_result(bad)


def test_the_report_format_is_checked_before_any_work() -> None:
    pytest.importorskip("plotly")
    assert report_format(None) == "html"
    assert report_format(Path("steps.csv")) == "csv"
    assert report_format(Path("steps.csv"), "md") == "md"
    with pytest.raises(ValueError, match="unknown report format"):
        report_format(None, "pdf")


def test_write_report_writes_the_format_its_name_asks_for(tmp_path: Path) -> None:
    write_report(_doc(), tmp_path / "out" / "r.md")
    assert (tmp_path / "out" / "r.md").read_text().startswith("# mserve bench run")


def _cli(*args: str) -> int:
    parser = argparse.ArgumentParser()
    report_cli.register(parser.add_subparsers())
    ns = parser.parse_args(["report", *args])
    return int(ns.run(ns))


def test_cli_writes_next_to_the_result_or_where_told(tmp_path: Path) -> None:
    result = tmp_path / "run.json"
    result.write_text(json.dumps(_doc()))
    assert _cli(str(result), "-o", str(tmp_path / "steps.csv")) == 0
    assert (tmp_path / "steps.csv").read_text().startswith("run_id,")
    assert _cli(str(result), "--format", "md") == 0
    assert (tmp_path / "report.md").exists()


def test_cli_refuses_a_missing_or_foreign_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(str(tmp_path / "nope.json")) == 2
    assert "no such result file" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something/2"}))
    assert _cli(str(other)) == 2
    assert "not a benchmark result" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert _cli(str(broken)) == 2
    good = tmp_path / "good.json"
    good.write_text(json.dumps(copy.deepcopy(_doc())))
    assert _cli(str(good), "-o", str(tmp_path / "r.txt")) == 2
    assert "cannot tell the report format" in capsys.readouterr().err
