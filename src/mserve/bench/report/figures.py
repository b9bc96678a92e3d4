"""The report's plots as plotly figure specs (plain dicts of ``data`` and ``layout``).

Pure functions of the result document: no plotly import, nothing drawn here. ``html.py`` hands
each spec to plotly.js as it is, so what the page plots is exactly what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mserve.bench.report.steps import PERCENTILES, ci, latency, step_label, steps

#: One colour per step, the same in every plot (plotly's default cycle, fixed here so that a
#: step's throughput and p99 traces, drawn on two axes, share theirs).
PALETTE = (
    "#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a",
    "#19d3f3", "#ff6692", "#b6e880", "#ff97ff", "#fecb52",
)  # fmt: skip

#: The server-side phases, bottom to top, as (key in step["server"], label, colour).
PHASES = (
    ("queue_ms", "queue", "#ffa15a"),
    ("compute_input_ms", "compute input", "#19d3f3"),
    ("compute_infer_ms", "compute infer", "#636efa"),
    ("compute_output_ms", "compute output", "#00cc96"),
    ("other_ms", "server other", "#b6b6b6"),
    ("network_protocol_ms", "network + protocol", "#ef553b"),
)

BASE_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 70, "r": 30, "t": 40, "b": 60},
    "legend": {"orientation": "h", "y": -0.2},
    "hovermode": "closest",
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One plot of the report: a stable element id, a title, what it shows, and its spec (None,
    with a ``note`` saying why, when the document has nothing to plot)."""

    id: str
    title: str
    caption: str
    spec: dict[str, Any] | None
    note: str = ""


def figures(doc: dict[str, Any]) -> list[Figure]:
    """Every plot of the report, in page order."""
    return [throughput_latency(doc), percentiles(doc), timeline(doc), server_breakdown(doc)]


def colour(i: int) -> str:
    """The colour of the i-th step (0-based)."""
    return PALETTE[i % len(PALETTE)]


def labels(doc: dict[str, Any]) -> list[str]:
    """One label per step, unique (numbered when two steps ran the same load)."""
    plain = [step_label(s) for s in steps(doc)]
    if len(set(plain)) == len(plain):
        return plain
    return [f"#{i} {text}" for i, text in enumerate(plain, start=1)]


def _layout(**extra: Any) -> dict[str, Any]:
    return {**BASE_LAYOUT, **extra}


def _no_steps(fig_id: str, title: str, caption: str) -> Figure:
    return Figure(fig_id, title, caption, None, "The result has no steps: nothing to plot.")


def _load_order(step: dict[str, Any]) -> float:
    load = step.get("load") or {}
    value = load.get("concurrency") if load.get("mode") == "closed" else load.get("rate")
    return float(value) if isinstance(value, int | float) else 0.0


def _error_bars(values: list[float | None], intervals: list[Any]) -> dict[str, Any] | None:
    """Asymmetric error bars from confidence intervals (None when no value has one)."""
    if not any(intervals):
        return None
    up: list[float] = []
    down: list[float] = []
    for value, interval in zip(values, intervals, strict=True):
        if value is None or interval is None:
            up.append(0.0)
            down.append(0.0)
        else:
            up.append(round(max(0.0, interval[1] - value), 3))
            down.append(round(max(0.0, value - interval[0]), 3))
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down, "thickness": 1}


def knee(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The step at the knee of the throughput-latency curve: the one with the highest power
    (throughput over mean latency, Kleinrock's measure); None without a step that has both."""
    best: tuple[float, dict[str, Any]] | None = None
    for s in steps(doc):
        mean = latency(s, "mean") or latency(s, "p50")
        rate = s.get("throughput_rps")
        if mean and isinstance(rate, int | float) and rate > 0:
            power = rate / mean
            if best is None or power > best[0]:
                best = (power, s)
    return best[1] if best else None


def throughput_latency(doc: dict[str, Any]) -> Figure:
    """(a) p50 and p99 against achieved throughput: one point per step, in load order."""
    fig_id, title = "plot-throughput-latency", "Latency against throughput"
    caption = (
        "One point per step, labelled by its load, in load order. While the server keeps up, "
        "throughput grows and latency stays flat; past the knee, more load buys little "
        "throughput and much latency. The knee is marked at the step with the highest "
        "throughput per millisecond of mean latency. Crossed markers are INVALID steps; "
        "error bars are 95% confidence intervals of p99."
    )
    ordered = sorted(steps(doc), key=_load_order)
    if not ordered:
        return _no_steps(fig_id, title, caption)
    x = [s.get("throughput_rps") for s in ordered]
    text = [step_label(s) for s in ordered]
    symbols = ["circle" if s.get("verdict") == "VALID" else "x" for s in ordered]
    data: list[dict[str, Any]] = []
    for key, name, dash, where in (("p50", "p50", "dot", "bottom"), ("p99", "p99", "solid", "top")):
        y = [latency(s, key) for s in ordered]
        trace: dict[str, Any] = {
            "type": "scatter",
            "mode": "lines+markers+text",
            "name": name,
            "x": x,
            "y": y,
            "text": text,
            "textposition": f"{where} center",
            "line": {"dash": dash},
            "marker": {"symbol": symbols, "size": 9},
            "hovertemplate": "%{text}<br>%{x:.1f} req/s<br>"
            + f"{name} %{{y:.3f}} ms<extra></extra>",
        }
        if key == "p99":
            bars = _error_bars(y, [ci(s, key) for s in ordered])
            if bars:
                trace["error_y"] = bars
        data.append(trace)
    layout = _layout(
        xaxis={"title": {"text": "achieved throughput (req/s)"}, "rangemode": "tozero"},
        yaxis={"title": {"text": "latency (ms)"}, "rangemode": "tozero"},
    )
    at = knee(doc)
    if at is not None:
        layout["annotations"] = [
            {
                "x": at.get("throughput_rps"),
                "y": latency(at, "p99"),
                "text": f"knee: {step_label(at)}",
                "showarrow": True,
                "arrowhead": 2,
                "ax": 40,
                "ay": -40,
            }
        ]
    return Figure(fig_id, title, caption, {"data": data, "layout": layout})


def percentiles(doc: dict[str, Any]) -> Figure:
    """(b) the latency percentiles of each step, with their 95% confidence intervals."""
    fig_id, title = "plot-percentiles", "Latency percentiles per step"
    caption = (
        "The latency distribution of each step from p50 to the maximum (log scale), measured "
        "from the intended send time. Error bars are the 95% confidence intervals from order "
        "statistics: a wide bar on p99.9 says there were too few requests to trust it."
    )
    all_steps = steps(doc)
    if not all_steps:
        return _no_steps(fig_id, title, caption)
    data: list[dict[str, Any]] = []
    for i, (s, name) in enumerate(zip(all_steps, labels(doc), strict=True)):
        y = [latency(s, key) for key, _ in PERCENTILES]
        trace: dict[str, Any] = {
            "type": "scatter",
            "mode": "lines+markers",
            "name": name,
            "x": [label for _, label in PERCENTILES],
            "y": y,
            "line": {"color": colour(i)},
            "hovertemplate": f"{name}<br>%{{x}} %{{y:.3f}} ms<extra></extra>",
        }
        bars = _error_bars(y, [ci(s, key) for key, _ in PERCENTILES])
        if bars:
            trace["error_y"] = bars
        data.append(trace)
    layout = _layout(
        xaxis={"title": {"text": "percentile"}, "type": "category"},
        yaxis={"title": {"text": "latency (ms)"}, "type": "log"},
    )
    return Figure(fig_id, title, caption, {"data": data, "layout": layout})


def timeline(doc: dict[str, Any]) -> Figure:
    """(c) throughput and p99 per measurement window, the steps laid end to end, warm-up shaded."""
    fig_id, title = "plot-timeline", "Throughput and p99 over time"
    caption = (
        "Each point is one measurement window; the steps are laid end to end in the order they "
        "ran. Shaded bands are warm-ups (not measured; the dotted segment is the warm-up's "
        "average throughput). A step whose windows still drift or jump was not stable: its "
        "figures depend on when it stopped. Dashed lines are INVALID steps."
    )
    all_steps = steps(doc)
    if not any(s.get("timeline") for s in all_steps):
        note = "The result has no measurement windows: nothing to plot."
        return Figure(fig_id, title, caption, None, note)
    settings = doc.get("settings") or {}
    warmup_s = float(settings.get("warmup_s") or 0.0)
    window_s = float(settings.get("window_s") or 0.0)
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    start = 0.0
    for i, (s, name) in enumerate(zip(all_steps, labels(doc), strict=True)):
        windows = [w for w in s.get("timeline") or [] if isinstance(w, dict)]
        measured_from = start + warmup_s
        group = {"legendgroup": name, "line": {"color": colour(i)}}
        if s.get("verdict") != "VALID":
            group["line"] = {"color": colour(i), "dash": "dash"}
        if warmup_s > 0:
            shapes.append(_band(start, measured_from))
            warm = s.get("warmup") or {}
            if isinstance(warm.get("ok"), int):
                rate = warm["ok"] / warmup_s
                data.append(
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": f"{name} warm-up",
                        "x": [start, measured_from],
                        "y": [rate, rate],
                        "line": {"color": colour(i), "dash": "dot"},
                        "legendgroup": name,
                        "showlegend": False,
                        "hovertemplate": f"{name} warm-up: {warm.get('requests', 0)} requests, "
                        f"{rate:.1f} req/s (not measured)<extra></extra>",
                    }
                )
        x = [measured_from + float(w.get("t_s") or 0.0) + window_s / 2 for w in windows]
        unstable = " (unstable)" if s.get("stable") is False else ""
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{name}{unstable}",
                "x": x,
                "y": [w.get("throughput_rps") for w in windows],
                "yaxis": "y",
                "hovertemplate": f"{name}<br>%{{y:.1f}} req/s<extra></extra>",
                **group,
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{name} p99",
                "x": x,
                "y": [w.get("p99_ms") for w in windows],
                "yaxis": "y2",
                "showlegend": False,
                "hovertemplate": f"{name}<br>p99 %{{y:.3f}} ms<extra></extra>",
                **group,
            }
        )
        duration = s.get("duration_s")
        start = measured_from + (
            float(duration) if isinstance(duration, int | float) else len(windows) * window_s
        )
    layout = _layout(
        xaxis={"title": {"text": "time since the run started (s)"}, "anchor": "y2"},
        yaxis={"title": {"text": "throughput (req/s)"}, "domain": [0.55, 1.0], "anchor": "x"},
        yaxis2={"title": {"text": "p99 (ms)"}, "domain": [0.0, 0.45], "anchor": "x"},
        shapes=shapes,
        height=520,
    )
    return Figure(fig_id, title, caption, {"data": data, "layout": layout})


def _band(x0: float, x1: float) -> dict[str, Any]:
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": x0,
        "x1": x1,
        "y0": 0,
        "y1": 1,
        "fillcolor": "#888888",
        "opacity": 0.15,
        "line": {"width": 0},
        "layer": "below",
    }


def phases(server: dict[str, Any]) -> dict[str, float]:
    """A step's server breakdown as stacked phases (ms): queue, the three compute phases,
    the rest of the server's own time, and what the client saw beyond it (network and
    protocol). Together they add up to the larger of the client's and the server's mean."""
    values = {key: float(server.get(key) or 0.0) for key, _, _ in PHASES if key != "other_ms"}
    inside = sum(v for k, v in values.items() if k != "network_protocol_ms")
    values["other_ms"] = round(max(0.0, float(server.get("request_ms") or 0.0) - inside), 3)
    return values


def server_breakdown(doc: dict[str, Any]) -> Figure:
    """(d) where each request's time went, by the server's own statistics, stacked per step."""
    fig_id, title = "plot-server-breakdown", "Server-side breakdown of the mean latency"
    caption = (
        "The server's statistics, read before and after each step, give the average time a "
        "request spent queued (waiting for a batch or a free instance) and in the model's "
        "input, inference and output phases; 'server other' is the rest of the server's own "
        "time, and 'network + protocol' what the client's mean latency adds beyond it."
    )
    with_server = [
        (name, s["server"])
        for s, name in zip(steps(doc), labels(doc), strict=True)
        if isinstance(s.get("server"), dict)
    ]
    missing = [name for s, name in zip(steps(doc), labels(doc), strict=True) if not s.get("server")]
    if not with_server:
        note = (
            "The target reported no server-side statistics (V2's statistics extension), so "
            "there is no breakdown."
        )
        return Figure(fig_id, title, caption, None, note)
    stacked = [phases(server) for _, server in with_server]
    data = [
        {
            "type": "bar",
            "name": label,
            "x": [name for name, _ in with_server],
            "y": [p[key] for p in stacked],
            "marker": {"color": colour_},
            "hovertemplate": f"%{{x}}<br>{label} %{{y:.3f}} ms<extra></extra>",
        }
        for key, label, colour_ in PHASES
    ]
    layout = _layout(
        barmode="stack",
        xaxis={"title": {"text": "step (load)"}, "type": "category"},
        yaxis={"title": {"text": "mean time per request (ms)"}},
    )
    note = f"No server statistics for: {', '.join(missing)}." if missing else ""
    return Figure(fig_id, title, caption, {"data": data, "layout": layout}, note)
