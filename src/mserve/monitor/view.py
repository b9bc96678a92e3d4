"""How the monitor shows :class:`Rates`: a header line and a table (rich), or a JSON object."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from mserve.monitor.rates import ModelRates, Rates

COLUMNS = (
    "model",
    "ready",
    "req/s",
    "err/s",
    "mean ms",
    "p50 ms",
    "p99 ms",
    "queue ms",
    "compute ms",
    "batch",
    "queued",
    "requests",
    "errors",
)

_MIB = 1024 * 1024


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _int(value: float | None) -> int | float | None:
    """A count as an int when it is whole (counters travel as floats in Prometheus' text)."""
    return int(value) if value is not None and value.is_integer() else value


def _ready(value: bool | None) -> str:
    return "-" if value is None else ("[green]yes[/]" if value else "[red]no[/]")


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def header(url: str, rates: Rates, elapsed_s: float, error: str = "") -> Text:
    """One line: what is watched, for how long, and the server's process figures."""
    parts = [f"mserve monitor  {url}  ({rates.flavour})  up {_uptime(elapsed_s)}"]
    if rates.workers is not None:
        parts.append(f"workers {rates.workers:.0f}")
    if rates.inflight is not None:
        parts.append(f"in-flight {rates.inflight:.0f}")
    if rates.cpu is not None:
        parts.append(f"CPU {rates.cpu:.2f} cores")
    if rates.rss_bytes is not None:
        parts.append(f"RSS {rates.rss_bytes / _MIB:,.1f} MiB")
    if rates.host_cpu_utilization is not None:
        parts.append(f"host CPU {rates.host_cpu_utilization:.0%}")
    if rates.host_memory_used_bytes is not None:
        parts.append(f"host memory used {rates.host_memory_used_bytes / _MIB:,.0f} MiB")
    line = Text("  ".join(parts))
    if error:
        line.append(f"  last scrape failed: {error}", style="red")
    return line


def table(rates: Rates) -> Table:
    """One row per model over the last interval; ``-`` where the interval has no figure."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, col in enumerate(COLUMNS):
        t.add_column(col, justify="left" if i < 2 else "right", no_wrap=True)
    for m in rates.models:
        t.add_row(*_cells(m))
    return t


def _cells(m: ModelRates) -> tuple[str | Text, ...]:
    return (
        Text(m.name or "(unknown)"),  # a name is not markup
        _ready(m.ready),
        _num(m.rps, 1),
        _num(m.errors_per_s, 1),
        _num(m.mean_ms),
        _num(m.p50_ms),
        _num(m.p99_ms),
        _num(m.queue_ms),
        _num(m.compute_ms),
        _num(m.batch_avg, 2),
        _count(m.queue_depth),
        _count(m.requests_total),
        _count(m.errors_total),
    )


def screen(url: str, rates: Rates, elapsed_s: float, error: str = "") -> Group:
    """The whole view: the header line above the table."""
    return Group(header(url, rates, elapsed_s, error), table(rates))


def as_json(url: str, rates: Rates, elapsed_s: float, t: float) -> dict[str, Any]:
    """The view as one JSON-ready object (``t``: Unix time of the scrape); field names as in
    the dashboard's data (docs/monitoring.md), plus ``mean_ms``."""
    return {
        "t": round(t, 3),
        "url": url,
        "flavour": rates.flavour,
        "elapsed_s": round(elapsed_s, 3),
        "interval_s": round(rates.interval_s, 3),
        "workers": _int(rates.workers),
        "in_flight": _int(rates.inflight),
        "cpu": rates.cpu,
        "rss_bytes": rates.rss_bytes,
        "host_cpu_utilization": rates.host_cpu_utilization,
        "host_memory_used_bytes": rates.host_memory_used_bytes,
        "models": {
            m.name: {
                "rps": m.rps,
                "errors_per_s": m.errors_per_s,
                "mean_ms": m.mean_ms,
                "p50_ms": m.p50_ms,
                "p99_ms": m.p99_ms,
                "queue_ms": m.queue_ms,
                "compute_ms": m.compute_ms,
                "batch_avg": m.batch_avg,
                "queue_depth": _int(m.queue_depth),
                "requests_total": _int(m.requests_total),
                "errors_total": _int(m.errors_total),
                "ready": m.ready,
            }
            for m in rates.models
        },
    }
