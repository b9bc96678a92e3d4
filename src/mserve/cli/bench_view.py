"""What ``mserve bench`` shows: a live view while it runs (stderr) and a summary table."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mserve.bench.result import load_label
from mserve.cli.console import console


class LiveView:
    """The current step's progress and the finished steps, refreshed as windows close."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = console(stderr=True)
        self.done: list[dict[str, Any]] = []
        self.current = Text("preparing")
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self.enabled:
            self._live = Live(
                self._render(), console=self.console, refresh_per_second=4, transient=True
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def update(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        load = event["load"]
        if kind == "step":
            self.current = Text(f"step {event['index'] + 1}: {load.label()} - warming up")
        elif kind == "window":
            windows = event["windows"]
            w = event["window"]
            seconds = (w.end_ns - w.start_ns) / 1e9
            p50 = w.latency.value_at_percentile(50) / 1000 if w.latency.count else 0.0
            p99 = w.latency.value_at_percentile(99) / 1000 if w.latency.count else 0.0
            errors = sum(w.errors.values())
            self.current = Text(
                f"{load.label()}: window {len(windows)}  {w.ok / seconds:,.0f} req/s  "
                f"p50 {p50:.3f} ms  p99 {p99:.3f} ms  errors {errors}"
            )
        elif kind == "done":
            self.done.append(event["step"])
            self.current = Text("")
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        return Group(steps_table(self.done, title="mserve bench"), self.current)


def steps_table(steps: list[dict[str, Any]], title: str = "") -> Table:
    """One row per step: load, throughput, percentiles, errors, server breakdown, verdict."""
    table = Table(title=title or None)
    for col in ("load", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"):
        table.add_column(col, justify="right")
    table.add_column("server queue/infer ms", justify="right")
    table.add_column("verdict")
    for s in steps:
        lat = s["latency_ms"]
        server = s.get("server")
        breakdown = f"{server['queue_ms']:.3f}/{server['compute_infer_ms']:.3f}" if server else "-"
        verdict = "[green]VALID[/]" if s["verdict"] == "VALID" else "[red]INVALID[/]"
        table.add_row(
            load_label(s["load"]),
            f"{s['throughput_rps']:,.1f}",
            f"{lat['p50']:.3f}",
            f"{lat['p90']:.3f}",
            f"{lat['p99']:.3f}",
            f"{lat['p999']:.3f}",
            f"{lat['max']:.3f}",
            str(s["error_count"]),
            breakdown,
            verdict,
        )
    return table


def print_summary(result: dict[str, Any]) -> None:
    """The end-of-run table, each INVALID step's reasons, and the SLO outcome."""
    out = console()
    out.print(steps_table(result["steps"], title=f"mserve bench - {result['target'].get('url')}"))
    for s in result["steps"]:
        label = load_label(s["load"])
        for reason in s["reasons"]:
            out.print(f"[red]{label}: INVALID:[/] {reason}")
        server = s.get("server")
        if server:
            batch = server.get("avg_batch_size")
            out.print(
                f"{label}: server per request: queue {server['queue_ms']:.3f} ms, compute input "
                f"{server['compute_input_ms']:.3f}, infer {server['compute_infer_ms']:.3f}, "
                f"output {server['compute_output_ms']:.3f}; network + protocol "
                f"{server['network_protocol_ms']:.3f} ms"
                + (f"; {batch:g} rows per execution" if batch is not None else ""),
                highlight=False,
            )
    slo = result.get("slo")
    if slo:
        if slo["best_load"] is None:
            out.print(f"SLO {slo['objective']}: not met at any load tried")
        else:
            unit = "concurrency" if slo["mode"] == "closed" else "req/s"
            out.print(
                f"SLO {slo['objective']}: highest load meeting it: {slo['best_load']} {unit} "
                f"({slo['best_throughput_rps']:,.1f} req/s); first failing: "
                f"{slo['first_failing_load']}",
                highlight=False,
            )
