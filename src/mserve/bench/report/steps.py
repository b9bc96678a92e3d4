"""The figures of each step, read once from a result document for every report format."""

from __future__ import annotations

from typing import Any

from mserve.bench.result import SCHEMA, load_label

#: Latency percentiles a report shows, as (key in ``latency_ms``, label).
PERCENTILES = (
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
)


class NotAResult(ValueError):
    """The document is not a benchmark result of a schema this report reads."""


def check_result(doc: Any) -> dict[str, Any]:
    """``doc`` itself when it is a result document (``SCHEMA``) with a list of steps."""
    if not isinstance(doc, dict):
        raise NotAResult(f"not a benchmark result ({SCHEMA}): a JSON {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise NotAResult(f"not a benchmark result: schema {doc.get('schema')!r}, not {SCHEMA!r}")
    if not isinstance(doc.get("steps"), list):
        raise NotAResult("a benchmark result without a list of steps")
    return doc


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's steps (an empty list when it has none)."""
    return [s for s in doc.get("steps") or [] if isinstance(s, dict)]


def step_label(step: dict[str, Any]) -> str:
    """The load label of a step."""
    return load_label(step.get("load") or {})


def latency(step: dict[str, Any], key: str) -> float | None:
    """A latency figure of the step in milliseconds, or None when absent."""
    value = (step.get("latency_ms") or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def ci(step: dict[str, Any], key: str) -> tuple[float, float] | None:
    """The 95% confidence interval ``(lo, hi)`` of a percentile, or None when absent."""
    pair = (step.get("latency_ci_ms") or {}).get(key)
    if isinstance(pair, list | tuple) and len(pair) == 2:
        return float(pair[0]), float(pair[1])
    return None


def errors_text(step: dict[str, Any]) -> str:
    """Errors by kind, ``http_503=2, timeout=1``; empty when there were none."""
    return ", ".join(f"{k}={v}" for k, v in sorted((step.get("errors") or {}).items()))


def with_ci(step: dict[str, Any], key: str) -> str:
    """``1.234 (1.200-1.300)``: a percentile with its interval, or ``-`` when absent."""
    value = latency(step, key)
    if value is None:
        return "-"
    interval = ci(step, key)
    return f"{value:.3f}" + (f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")
