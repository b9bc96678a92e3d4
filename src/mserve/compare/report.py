"""The comparison report: one row of figures per system, as a Markdown table and (``html.py``)
a self-contained HTML page with plots.

Everything here but ``write_reports`` is a function of the result document (``compare.json``,
see ``result.py``), so a report can be rendered again from a saved document.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mserve.bench.report.steps import latency, steps
from mserve.compare.result import FAILED, OK, SCHEMA, SKIPPED

#: the baseline of the ratio columns
BASELINE = "mserve"


class NotACompareResult(ValueError):
    """The document is not a comparison result of a schema this report reads."""


@dataclass(frozen=True)
class StepFigures:
    """One sweep step of one system."""

    concurrency: int
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    valid: bool


@dataclass(frozen=True)
class Row:
    """One system's figures, as every report format shows them."""

    key: str
    system: str
    title: str
    status: str
    reason: str
    log_tail: str
    protocol: str
    batching: str  # 'off', or how it batched
    startup_s: float | None
    rss_idle_mib: float | None
    rss_peak_mib: float | None
    steps: dict[int, StepFigures] = field(default_factory=dict)  # by concurrency
    max_rps: float | None = None  # the highest throughput of the sweep
    slo_rps: float | None = None  # the throughput at the best load that met the SLO
    slo_load: int | None = None
    errors: int = 0  # failed requests over every measured step
    max_vs_baseline: float | None = None  # max_rps over mserve's (same batching)
    slo_vs_baseline: float | None = None


def check_document(doc: Any) -> dict[str, Any]:
    """``doc`` itself when it is a comparison result with a list of systems."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise NotACompareResult(f"not a comparison result ({SCHEMA})")
    if not isinstance(doc.get("systems"), list):
        raise NotACompareResult("a comparison result without a list of systems")
    return doc


def rows(doc: dict[str, Any]) -> list[Row]:
    """One row per system that ran (measured or failed), in the order they ran."""
    plain = [_row(run) for run in check_document(doc)["systems"] if run.get("status") != SKIPPED]
    by_key = {r.key: r for r in plain if r.status == OK}
    out = []
    for r in plain:
        base = by_key.get(f"{BASELINE}+batching" if r.key.endswith("+batching") else BASELINE)
        base = base or by_key.get(BASELINE) or by_key.get(f"{BASELINE}+batching")
        out.append(
            replace(
                r,
                max_vs_baseline=_ratio(r.max_rps, base.max_rps if base else None),
                slo_vs_baseline=_ratio(r.slo_rps, base.slo_rps if base else None),
            )
        )
    return out


def skipped(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The systems that were not installed, each with its install hint (``reason``)."""
    return [run for run in check_document(doc)["systems"] if run.get("status") == SKIPPED]


def concurrencies(doc: dict[str, Any]) -> list[int]:
    """The concurrency levels of the sweep."""
    return [int(c) for c in (doc.get("settings") or {}).get("concurrency") or []]


def _row(run: dict[str, Any]) -> Row:
    sweep = run.get("sweep") or {}
    by_level: dict[int, StepFigures] = {}
    for s in steps(sweep):
        level = (s.get("load") or {}).get("concurrency")
        if isinstance(level, int):
            by_level[level] = StepFigures(
                concurrency=level,
                throughput_rps=float(s.get("throughput_rps") or 0.0),
                p50_ms=latency(s, "p50"),
                p99_ms=latency(s, "p99"),
                errors=int(s.get("error_count") or 0),
                valid=s.get("verdict") == "VALID",
            )
    slo = (run.get("slo") or {}).get("slo") or {}
    measured = steps(sweep) + steps(run.get("slo") or {})
    return Row(
        key=str(run.get("key")),
        system=str(run.get("system")),
        title=str(run.get("title")),
        status=str(run.get("status")),
        reason=str(run.get("reason") or ""),
        log_tail=str(run.get("log_tail") or ""),
        protocol=str(run.get("protocol") or "-"),
        batching=_batching(run),
        startup_s=run.get("startup_s"),
        rss_idle_mib=run.get("rss_idle_mib"),
        rss_peak_mib=run.get("rss_peak_mib"),
        steps=by_level,
        max_rps=max((f.throughput_rps for f in by_level.values()), default=None),
        slo_rps=slo.get("best_throughput_rps"),
        slo_load=slo.get("best_load"),
        errors=sum(int(s.get("error_count") or 0) for s in measured),
    )


def _batching(run: dict[str, Any]) -> str:
    if run.get("batching"):
        return str(run["batching"])
    return "none of its own" if run.get("batching_requested") else "off"


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None


# -- Markdown -------------------------------------------------------------------------------


def rate(value: float | None) -> str:
    """Requests per second as the tables show them."""
    return "-" if value is None else f"{value:,.1f}"


def times(value: float | None) -> str:
    """A ratio against the baseline: ``1.25x``."""
    return "-" if value is None else f"{value:.2f}x"


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def step_cells(figures: StepFigures | None) -> tuple[str, str]:
    """A step's throughput and ``p50 / p99`` cells; INVALID steps are marked ``*``."""
    if figures is None:
        return "-", "-"
    mark = "" if figures.valid else "*"
    return (
        f"{rate(figures.throughput_rps)}{mark}",
        f"{number(figures.p50_ms, 2)} / {number(figures.p99_ms, 2)}",
    )


def table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison table: its header and one row of cells per system that ran."""
    levels = concurrencies(doc)
    slo = (doc.get("settings") or {}).get("slo")
    head = ["system", "protocol", "batching", "start-up s", "RSS idle MiB", "RSS peak MiB"]
    for c in levels:
        head += [f"c={c} req/s", f"c={c} p50 / p99 ms"]
    head += ["max req/s", f"vs {BASELINE}"]
    if slo:
        head += [f"req/s at {slo}", f"vs {BASELINE}"]
    head += ["errors"]
    body = []
    for r in rows(doc):
        cells = [
            r.key if r.status == OK else f"{r.key} ({r.status})",
            r.protocol,
            r.batching,
            number(r.startup_s, 2),
            number(r.rss_idle_mib),
            number(r.rss_peak_mib),
        ]
        for c in levels:
            cells += step_cells(r.steps.get(c))
        cells += [rate(r.max_rps), times(r.max_vs_baseline)]
        if slo:
            at = f" (c={r.slo_load})" if r.slo_load is not None else ""
            cells += [f"{rate(r.slo_rps)}{at}", times(r.slo_vs_baseline)]
        cells += [str(r.errors)]
        body.append(cells)
    return head, body


def setup_lines(doc: dict[str, Any]) -> list[str]:
    """How the comparison was made, in sentences."""
    model = doc.get("model") or {}
    settings = doc.get("settings") or {}
    threads = model.get("threads")
    step = (
        f"{settings['duration_s']:g} s measured per step"
        if settings.get("duration_s") is not None
        else "each step measured until stable (bench's windows)"
    )
    warmup = settings.get("warmup_s")
    levels = ", ".join(map(str, concurrencies(doc)))
    lines = [
        f"Model `{model.get('name')}` (`{model.get('onnx_path')}`), max batch "
        f"{model.get('max_batch_size')}, {threads} ONNX Runtime thread"
        f"{'' if threads == 1 else 's'} in every system.",
        f"Servers pinned to CPU {settings.get('server_cpus')}, `mserve bench` to CPU "
        f"{settings.get('bench_cpus')}; closed loop at concurrency {levels}; {step}, after "
        + (f"{warmup:g} s of warm-up." if warmup is not None else "bench's default warm-up."),
    ]
    if settings.get("slo"):
        lines.append(
            f"SLO search: the highest concurrency (from {(concurrencies(doc) or [1])[0]} up) "
            f"whose steps meet {settings['slo']} with no errors and a VALID verdict."
        )
    return lines


def to_markdown(doc: dict[str, Any]) -> str:
    """The report as Markdown: the setup, the table, and the systems that did not run."""
    head, body = table(doc)
    out = [f"# mserve compare: {(doc.get('model') or {}).get('name')}"]
    for line in setup_lines(doc):
        out += ["", line]
    out += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body]
    if not body:
        out.append("| no system ran |" + " |" * (len(head) - 1))
    out += [
        "",
        f"Throughput marked `*` comes from a step bench judged INVALID (see each system's "
        f"`*.sweep.json`). `vs {BASELINE}`: the ratio to {BASELINE} with the same batching.",
    ]
    failed = [r for r in rows(doc) if r.status == FAILED]
    if failed or skipped(doc):
        out += ["", "## Not measured", ""]
        out += [f"- `{r.key}` ({r.title}): failed: {r.reason}" for r in failed]
        out += [f"- `{s['key']}` ({s['title']}): skipped: {s['reason']}" for s in skipped(doc)]
    out += ["", "## Systems", ""]
    out += [
        f"- `{r.key}`: {r.title}" + (f"; batching: {r.batching}" if r.batching != "off" else "")
        for r in rows(doc)
    ]
    machine = doc.get("machine") or {}
    out += [
        "",
        f"Measured {doc.get('created')} on {machine.get('cpu')} ({machine.get('cpus')} CPUs), "
        f"Python {machine.get('python')}, mserve {machine.get('mserve')}.",
        "",
    ]
    return "\n".join(out)


def write_reports(doc: dict[str, Any], out: Path, plotly_source: str | None) -> list[Path]:
    """Write ``compare.md`` and, given plotly.js, ``compare.html`` into ``out``; returns the
    paths written."""
    from mserve.compare.html import to_html  # html.py builds on this module's tables

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "compare.md"]
    written[0].write_text(to_markdown(doc), encoding="utf-8")
    if plotly_source is not None:
        written.append(out / "compare.html")
        written[1].write_text(to_html(doc, plotly_source), encoding="utf-8")
    return written
