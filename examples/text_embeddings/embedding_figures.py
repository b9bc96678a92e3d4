"""The README's figures: Markdown tables rendered from the scenario's summary (summary.json)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scenario


def _texts(summary: dict[str, Any]) -> str:
    t = summary["texts"]
    tok = t["tokens"]
    row = [t["count"], tok["p50"], tok["p90"], tok["max"], tok["mean"], t["truncated"]]
    head = ["texts", "tokens p50", "p90", "max", "mean", "truncated at 128"]
    return scenario.markdown_table(head, [row])


def _parity(summary: dict[str, Any]) -> str:
    rows = []
    for variant in summary["parity"]["variants"]:
        latency = variant.get("latency_ms") or {}
        rows.append(
            [
                variant["model"],
                variant["texts"],
                f"{variant['cosine_mean']:.5f}",
                f"{variant['cosine_min']:.5f}",
                f"{variant['convert_cosine_mean']:.5f}",
                round(variant["size_mb"], 1),
                latency.get("1", "-"),
                latency.get("32", "-"),
            ]
        )
    head = [
        "model",
        "texts",
        "cosine mean",
        "cosine min",
        "convert's parity (cosine)",
        "MB",
        "batch 1 ms",
        "batch 32 ms",
    ]
    tokens = summary["parity"].get("timed_tokens")
    timed = f" on rows of {tokens} tokens" if tokens else ""
    note = (
        f"The batch 1 and batch 32 times are mserve convert's own{timed} (both cores, "
        "ONNX Runtime in-process). "
        f"Padded to 128 tokens instead of the exact length, fp32 embeddings keep a cosine of at "
        f"least {summary['parity']['padded_vs_exact_min_cosine']:.6f} with the exact ones; the "
        f"server answered an embedding with cosine "
        f"{summary['served']['cosine_exact']:.6f} (exact length) and "
        f"{summary['served']['cosine_bucket']:.6f} (bucketed) to sentence-transformers' own."
    )
    return scenario.markdown_table(head, rows) + "\n\n" + note


def _padding(summary: dict[str, Any]) -> str:
    rows = [
        [m["title"], m["shapes"], m["real_tokens"], m["computed_tokens"], round(m["cost"], 2)]
        for m in summary["padding"]
    ]
    head = ["mode", "distinct lengths", "real tokens", "tokens computed", "cost (computed / real)"]
    return scenario.markdown_table(head, rows)


#: Short names of the reasons ``mserve bench`` gives for an INVALID step.
_REASONS = {
    "achieved": "rate",
    "lagged": "lag",
    "not stable": "unstable",
    "windows": "unstable",
    "generator's CPU": "generator CPU",
    "connections were busy": "backlog",
    "succeeded": "no success",
}


def _verdict(step: dict[str, Any]) -> str:
    """VALID, or INVALID with the short names of its reasons."""
    if step["verdict"] == "VALID":
        return "VALID"
    why = {next((v for k, v in _REASONS.items() if k in r), "other") for r in step["reasons"]}
    return f"INVALID ({', '.join(sorted(why))})" if why else "INVALID"


def _errors(step: dict[str, Any]) -> str | int:
    """The error count, with the kinds when there are any."""
    if not step["errors"]:
        return 0
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(step["error_kinds"].items()))
    return f"{step['errors']} ({kinds})"


def _bench(summary: dict[str, Any]) -> str:
    rows = [
        [
            s["model"],
            s["mode_title"],
            s["rate"],
            round(s["throughput_rps"], 1),
            s["p50_ms"],
            s["p99_ms"],
            s["avg_batch_size"] if s["avg_batch_size"] is not None else "-",
            s["queue_ms"] if s["queue_ms"] is not None else "-",
            s["compute_ms"] if s["compute_ms"] is not None else "-",
            _errors(s),
            _verdict(s),
        ]
        for s in summary["bench"]
    ]
    head = [
        "model",
        "mode",
        "offered req/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "avg batch",
        "queue ms",
        "compute ms",
        "errors",
        "verdict",
    ]
    return scenario.markdown_table(head, rows)


def _batches(summary: dict[str, Any]) -> str:
    rows = []
    for b in summary["batches"]:
        sizes = {int(k): v for k, v in b["executions"].items()}
        executions = sum(sizes.values())
        rows_computed = sum(k * v for k, v in sizes.items())
        batched = sum(k * v for k, v in sizes.items() if k > 1)
        rows.append(
            [
                b["model"],
                b["mode_title"],
                executions,
                round(rows_computed / executions, 2) if executions else "-",
                f"{100 * batched / rows_computed:.0f}%" if rows_computed else "-",
                max(sizes) if sizes else "-",
            ]
        )
    head = ["model", "mode", "executions", "requests per execution", "in batches > 1", "largest"]
    return scenario.markdown_table(head, rows)


def render(summary: dict[str, Any]) -> str:
    """Every table, with the line that says when and where they were measured."""
    parts = [
        scenario.machine_line(summary["machine"])
        + f" Server on CPU {summary['cpus']['server']}, load generator on CPU "
        f"{summary['cpus']['generator']}; {summary['plan']['duration']} s per step after "
        f"{summary['plan']['warmup']} s of warm-up, Poisson arrivals.",
        "**The text** (paragraphs of the standard library's docstrings, tokenized):",
        _texts(summary),
        "**Parity** with sentence-transformers' `encode` on the same texts, at exact lengths:",
        _parity(summary),
        "**Padding cost** of the bench's requests in each mode:",
        _padding(summary),
        "**Serving** (one core, dynamic batching):",
        _bench(summary),
        "req/s counts every answer of a step, late ones included, so an overloaded step shows "
        "in its p50, p99 and queue time rather than in req/s. The compute time is per request, "
        "as Triton counts it: the time of the batch it was part of. INVALID (rate): more than 1% "
        "fewer sends than the schedule called for; (lag): sends were over 1 ms late at p99 "
        "(see each result's reasons).",
        "**Batches the server formed** over each mode's whole run (all rates):",
        _batches(summary),
    ]
    return "\n\n".join(parts)
