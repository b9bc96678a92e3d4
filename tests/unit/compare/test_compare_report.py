"""The comparison report rendered from hand-made result documents: figures, ratios, the
Markdown table, the HTML page and its escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mserve.bench.report.html import DATA_ID
from mserve.compare.html import figures, to_html
from mserve.compare.report import NotACompareResult, rows, table, to_markdown, write_reports
from mserve.compare.result import SCHEMA

EVIL = "<script>alert(1)</script>"
FAKE_PLOTLY = "window.Plotly = {newPlot: function () { return Promise.resolve(); }};"


def _step(c: int, rps: float, p99: float, errors: int = 0, valid: bool = True) -> dict[str, Any]:
    return {
        "load": {"mode": "closed", "concurrency": c},
        "throughput_rps": rps,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "error_count": errors,
        "verdict": "VALID" if valid else "INVALID",
    }


def _bench(steps: list[dict[str, Any]], best: tuple[int, float] | None = None) -> dict[str, Any]:
    slo = None
    if best is not None:
        slo = {"objective": "p99<=20ms", "best_load": best[0], "best_throughput_rps": best[1]}
    return {"schema": "mserve.bench.result/1", "steps": steps, "slo": slo}


def _run(key: str, **fields: Any) -> dict[str, Any]:
    system = key.split("+")[0]
    return {
        "key": key,
        "system": system,
        "title": f"{system} title",
        "status": "ok",
        "reason": "",
        "log_tail": "",
        "protocol": "v2-json",
        "batching": "",
        "batching_requested": key.endswith("+batching"),
        "startup_s": 0.5,
        "rss_idle_mib": 80.0,
        "rss_peak_mib": 90.0,
        "exit_status": 0,
        "files": {},
        "sweep": None,
        "slo": None,
        **fields,
    }


def _doc(slo: str | None = "p99=20ms") -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": "2026-01-01T00:00:00Z",
        "command": ["compare", "models/digits"],
        "machine": {"cpu": "test CPU", "cpus": 2, "python": "3.11", "mserve": "0"},
        "model": {"name": "digits", "onnx_path": "/m/1/model.onnx", "max_batch_size": 64,
                  "threads": 1},
        "settings": {"concurrency": [1, 4], "duration_s": 1.0, "warmup_s": 0.5, "slo": slo,
                     "server_cpus": "0", "bench_cpus": "1"},
        "systems": [
            _run(
                "mserve",
                sweep=_bench([_step(1, 1000.0, 2.0), _step(4, 2000.0, 4.0)]),
                slo=_bench([_step(1, 1000.0, 2.0), _step(8, 3000.0, 9.0, errors=0)], (8, 3000.0)),
            ),
            _run(
                "fastapi",
                sweep=_bench([_step(1, 500.0, 3.0), _step(4, 800.0, 9.0, errors=2, valid=False)]),
                slo=_bench([_step(1, 500.0, 3.0, errors=1)], (1, 500.0)),
            ),
            _run("flask", status="failed", reason=f"never ready {EVIL}", log_tail="Traceback x",
                 startup_s=None, rss_idle_mib=None, rss_peak_mib=None),
            _run("triton", status="skipped", reason="run scripts/compare-envs triton"),
        ],
    }  # fmt: skip


def test_rows_carry_the_figures_and_the_ratios() -> None:
    mserve, fastapi, flask = rows(_doc())
    assert (mserve.max_rps, mserve.slo_rps, mserve.slo_load) == (2000.0, 3000.0, 8)
    assert (mserve.max_vs_baseline, mserve.slo_vs_baseline) == (1.0, 1.0)
    assert (fastapi.max_vs_baseline, fastapi.slo_vs_baseline) == (0.4, round(500 / 3000, 3))
    assert fastapi.errors == 3  # the sweep's and the SLO search's
    assert fastapi.steps[4].valid is False
    assert fastapi.steps[1].p50_ms == 1.5
    assert (flask.status, flask.max_rps, flask.max_vs_baseline) == ("failed", None, None)


def test_a_skipped_system_has_no_row() -> None:
    assert [r.key for r in rows(_doc())] == ["mserve", "fastapi", "flask"]


def test_batching_rows_compare_with_mserve_batching() -> None:
    doc = _doc()
    doc["systems"] = [
        _run("mserve", sweep=_bench([_step(1, 1000.0, 1.0)])),
        _run("mserve+batching", batching="up to 64 rows", sweep=_bench([_step(1, 4000.0, 1.0)])),
        _run("fastapi+batching", sweep=_bench([_step(1, 2000.0, 1.0)])),
    ]
    by_key = {r.key: r for r in rows(doc)}
    assert by_key["fastapi+batching"].max_vs_baseline == 0.5
    assert by_key["fastapi+batching"].batching == "none of its own"
    assert by_key["mserve+batching"].batching == "up to 64 rows"
    assert by_key["mserve"].batching == "off"


def test_markdown_table() -> None:
    text = to_markdown(_doc())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| system |"))
    assert "| c=1 req/s | c=1 p50 / p99 ms | c=4 req/s |" in header
    assert "| req/s at p99=20ms | vs mserve | errors |" in header
    row = next(line for line in lines if line.startswith("| mserve |"))
    assert row == (
        "| mserve | v2-json | off | 0.50 | 80.0 | 90.0 | 1,000.0 | 1.00 / 2.00 | 2,000.0 | "
        "2.00 / 4.00 | 2,000.0 | 1.00x | 3,000.0 (c=8) | 1.00x | 0 |"
    )
    fastapi = next(line for line in lines if line.startswith("| fastapi |"))
    assert "| 800.0* |" in fastapi
    assert "| 0.40x |" in fastapi
    assert fastapi.endswith("| 3 |")
    assert any(line.startswith("| flask (failed) |") for line in lines)
    assert "- `triton` (triton title): skipped: run scripts/compare-envs triton" in lines
    assert f"- `flask` (flask title): failed: never ready {EVIL}" in lines


def test_markdown_without_slo_has_no_slo_columns() -> None:
    head, body = table(_doc(slo=None))
    assert not any("SLO" in h or "p99=" in h for h in head)
    assert all(len(cells) == len(head) for cells in body)


def test_pipes_in_cells_do_not_break_the_table() -> None:
    doc = _doc()
    doc["systems"][0]["protocol"] = "a|b"
    assert "| a\\|b |" in to_markdown(doc)


def test_html_is_escaped_and_embeds_the_plotted_numbers() -> None:
    page = to_html(_doc(), FAKE_PLOTLY)
    assert EVIL not in page
    assert "never ready &lt;script&gt;" in page
    assert page.count(FAKE_PLOTLY) == 1
    assert '<table id="compare">' in page
    payload = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', page)
    assert payload is not None
    specs = json.loads(payload.group(1))["figures"]
    assert set(specs) == {"plot-throughput", "plot-latency", "plot-slo"}
    mserve, fastapi = specs["plot-throughput"]["data"][:2]
    assert (mserve["x"], mserve["y"]) == ([1, 4], [1000.0, 2000.0])
    assert fastapi["marker"]["symbol"] == ["circle", "x"]
    assert specs["plot-slo"]["data"][0]["y"][:2] == [3000.0, 500.0]


def test_html_without_slo_has_no_slo_plot() -> None:
    assert [f.id for f in figures(_doc(slo=None))] == ["plot-throughput", "plot-latency"]


def test_html_refuses_plotly_that_would_end_its_script() -> None:
    with pytest.raises(ValueError, match="cannot be inlined"):
        to_html(_doc(), "x</script>")


def test_nothing_measured_still_renders() -> None:
    doc = _doc()
    doc["systems"] = [doc["systems"][3]]
    assert "| no system ran |" in to_markdown(doc)
    assert "No system was measured" in to_html(doc, FAKE_PLOTLY)


@pytest.mark.parametrize("doc", [[], {"schema": "other"}, {"schema": SCHEMA, "systems": 3}])
def test_other_documents_are_refused(doc: Any) -> None:
    with pytest.raises(NotACompareResult):
        rows(doc)


def test_write_reports(tmp_path: Path) -> None:
    written = write_reports(_doc(), tmp_path / "out", FAKE_PLOTLY)
    assert [p.name for p in written] == ["compare.md", "compare.html"]
    assert all(p.is_file() for p in written)
    assert [p.name for p in write_reports(_doc(), tmp_path / "md", None)] == ["compare.md"]
