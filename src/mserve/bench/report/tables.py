"""The result as tables: CSV (one row per step, every figure) and a Markdown summary."""

from __future__ import annotations

import csv
import io
from typing import Any

from mserve.bench.report.steps import (
    PERCENTILES,
    ci,
    errors_text,
    latency,
    step_label,
    steps,
    with_ci,
)

#: Percentiles with a confidence interval in the result (``max`` has none).
CI_KEYS = tuple(key for key, _ in PERCENTILES if key != "max")

#: The columns of ``to_csv``, in order.
CSV_FIELDS = (
    "run_id", "step", "load", "mode", "concurrency", "rate", "arrival", "duration_s", "count",
    "throughput_rps", "inferences_per_s",
    *(f"{key}_ms" for key, _ in PERCENTILES), "mean_ms", "min_ms",
    *(f"{key}_ci_{end}_ms" for key in CI_KEYS for end in ("lo", "hi")),
    "error_count", "errors", "stable", "verdict", "reasons",
)  # fmt: skip


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step, keyed by ``CSV_FIELDS`` (None where the step lacks the figure)."""
    rows = []
    for i, s in enumerate(steps(doc), start=1):
        load = s.get("load") or {}
        row: dict[str, Any] = {
            "run_id": doc.get("id"),
            "step": i,
            "load": step_label(s),
            **{k: load.get(k) for k in ("mode", "concurrency", "rate", "arrival")},
            **{k: s.get(k) for k in ("duration_s", "count", "throughput_rps", "inferences_per_s")},
            **{f"{key}_ms": latency(s, key) for key, _ in PERCENTILES},
            "mean_ms": latency(s, "mean"),
            "min_ms": latency(s, "min"),
            "error_count": s.get("error_count"),
            "errors": errors_text(s),
            "stable": s.get("stable"),
            "verdict": s.get("verdict"),
            "reasons": "; ".join(s.get("reasons") or []),
        }
        for key in CI_KEYS:
            lo_hi = ci(s, key)
            row[f"{key}_ci_lo_ms"], row[f"{key}_ci_hi_ms"] = lo_hi if lo_hi else (None, None)
        rows.append(row)
    return rows


def to_csv(doc: dict[str, Any]) -> str:
    """The steps as CSV: a header of ``CSV_FIELDS``, then one row per step."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(doc))
    return buffer.getvalue()


def _cell(text: object) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: dict[str, Any]) -> str:
    """A summary: the run, its target, and a table of its steps with verdicts and reasons."""
    target = doc.get("target") or {}
    machine = doc.get("machine") or {}
    model = target.get("model")
    lines = [
        f"# mserve bench run {_cell(doc.get('id', '?'))}",
        "",
        f"- created: {_cell(doc.get('created', '?'))}",
        f"- command: `mserve {_cell(' '.join(map(str, doc.get('command') or [])))}`",
        f"- target: {_cell(target.get('url', '?'))} ({_cell(target.get('protocol', '?'))}"
        + (f", model {_cell(model)}" if model else "")
        + ")",
        f"- machine: {_cell(machine.get('hostname', '?'))}, {_cell(machine.get('cpu') or '?')}, "
        f"{_cell(machine.get('cpus_usable', '?'))} usable cores, mserve "
        f"{_cell(machine.get('mserve', '?'))}",
        "",
        "| step | load | req/s | p50 ms (95% CI) | p99 ms (95% CI) | p99.9 ms | max ms | errors "
        "| verdict |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, s in enumerate(steps(doc), start=1):
        rate = s.get("throughput_rps")
        errors = str(s.get("error_count", 0)) + (f" ({errors_text(s)})" if errors_text(s) else "")
        cells = [
            str(i),
            step_label(s),
            f"{rate:,.1f}" if isinstance(rate, int | float) else "-",
            with_ci(s, "p50"),
            with_ci(s, "p99"),
            _number(latency(s, "p999")),
            _number(latency(s, "max")),
            errors,
            s.get("verdict") or "-",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    reasons = [
        f"- step {i} ({_cell(step_label(s))}): {_cell(reason)}"
        for i, s in enumerate(steps(doc), start=1)
        for reason in s.get("reasons") or []
    ]
    if reasons:
        lines += ["", "INVALID steps:", "", *reasons]
    slo = doc.get("slo")
    if isinstance(slo, dict):
        lines += ["", f"SLO {_cell(slo.get('objective'))}: best load {_cell(slo.get('best_load'))}"]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
