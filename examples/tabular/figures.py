"""The scenario's figures as Markdown tables, from its summary (``summary.json``) alone, so that
they can be rendered again from a saved run."""

from __future__ import annotations

from typing import Any

import scenario


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _exp(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def models_table(summary: dict[str, Any]) -> str:
    """One row per model: what it is, its accuracy before and after conversion, its parity."""
    rows = []
    for m in summary["models"]:
        convert = m["convert"]
        parity = convert["parity"]
        rows.append(
            [
                f"`{m['name']}`",
                m["description"],
                f"`{m['dataset']}` ({m['test_rows']} test rows, {m['classes']} classes)",
                f"{m['accuracy']:.4f}",
                "-" if convert["accuracy"] is None else f"{convert['accuracy']:.4f}",
                f"{parity['rows']} rows: labels {parity['label_agreement']:.3f} equal, "
                f"max abs {_exp(parity['max_abs'])}",
                "passed" if parity["ok"] else "FAILED",
            ]
        )
    head = ["model", "trained", "data set", "accuracy", "ONNX accuracy", "parity", "verdict"]
    return scenario.markdown_table(head, rows)


def clients_table(summary: dict[str, Any]) -> str:
    """One row per model and client: the test set's predictions through the server."""
    rows = []
    for m in summary["models"]:
        for key, c in m["clients"].items():
            rows.append(
                [
                    f"`{m['name']}`",
                    c.get("title", key),
                    c["requests"],
                    f"{c['accuracy']:.4f}",
                    f"{c['rows'] - c['label_mismatches']} / {c['rows']}",
                    _exp(c["max_abs"]),
                    "yes" if c["ok"] else "NO",
                ]
            )
    head = [
        "model",
        "client",
        "requests",
        "accuracy",
        "labels equal to the original's",
        "max abs diff of probabilities",
        "agrees",
    ]
    return scenario.markdown_table(head, rows)


def compare_table(summary: dict[str, Any]) -> str:
    """One row per model and system: throughput and p99 at the lowest and highest concurrency
    of the sweep, the throughput at the SLO, and how mserve's figures compare."""
    settings = summary["settings"]
    levels = [int(c) for c in str(settings["concurrency"]).split(",")]
    low, high = levels[0], levels[-1]
    slo = settings.get("slo")
    head = [
        "model",
        "system",
        f"c={low} req/s",
        f"c={low} p99 ms",
        f"c={high} req/s",
        f"c={high} p99 ms",
        "max req/s",
    ]
    if slo:
        head.append(f"req/s at {slo}")
    head += ["errors", "mserve's max req/s over this"]
    if slo:
        head.append("at the SLO")
    rows = []
    for m in summary["models"]:
        systems = m["compare"]["systems"]
        mine = systems.get("mserve") or {}
        for key, s in systems.items():
            if s["status"] != "ok":
                rows.append([f"`{m['name']}`", key, s["status"], *["-"] * (len(head) - 3)])
                continue
            lo, hi = s["steps"].get(str(low), {}), s["steps"].get(str(high), {})
            row = [
                f"`{m['name']}`",
                s["title"],
                _rps(lo.get("rps")),
                _ms(lo.get("p99_ms")),
                _rps(hi.get("rps")),
                _ms(hi.get("p99_ms")),
                _rps(s["max_rps"]),
            ]
            if slo:
                at = f" (c={s['slo_load']})" if s["slo_load"] is not None else ""
                row.append(_rps(s["slo_rps"]) + at)
            row += [s["errors"], _times(_ratio(mine.get("max_rps"), s["max_rps"]))]
            if slo:
                row.append(_times(_ratio(mine.get("slo_rps"), s["slo_rps"])))
            rows.append(row)
    return scenario.markdown_table(head, rows)


def protocols_table(summary: dict[str, Any]) -> str:
    """One row per model: throughput and p99 through each protocol of one ``mserve serve``."""
    measured = [m for m in summary["models"] if m.get("protocols")]
    if not measured:
        return ""
    names = list(measured[0]["protocols"])
    head = ["model", *(f"{p} req/s (p99 ms)" for p in names)]
    rows = []
    for m in measured:
        cells = [f"`{m['name']}`"]
        for p in names:
            figures = m["protocols"].get(p) or {}
            cells.append(f"{_rps(figures.get('rps'))} ({_ms(figures.get('p99_ms'))})")
        rows.append(cells)
    return scenario.markdown_table(head, rows)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def render(summary: dict[str, Any]) -> str:
    """Every table, with the machine line and how they were measured."""
    settings = summary["settings"]
    parts = [
        scenario.machine_line(summary["machine"]),
        "",
        "**The models** (accuracy on the test split; parity as `mserve convert` checked it, on "
        "the test split and the training rows, at most 512 rows):",
        "",
        models_table(summary),
        "",
        "**Through each client** (the whole test split, in requests of up to "
        f"{settings['batch_rows']} rows, against the original model's predictions):",
        "",
        clients_table(summary),
        "",
        f"**mserve against the hand-written wrappers** (`mserve compare`, servers on CPU "
        f"{settings['server_cpus']}, load on CPU {settings['bench_cpus']}, closed loop at "
        f"concurrency {settings['concurrency']}, {settings['duration']:g} s per step after "
        f"{settings['warmup']:g} s of warm-up, V2 JSON, one row per request):",
        "",
        compare_table(summary),
    ]
    protocols = protocols_table(summary)
    if protocols:
        parts += [
            "",
            "**One `mserve serve`, through each protocol** (`mserve bench`, concurrency "
            f"{settings['protocol_concurrency']}, one row per request, "
            f"{settings['duration']:g} s):",
            "",
            protocols,
        ]
    return "\n".join(parts)
