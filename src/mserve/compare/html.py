"""The comparison as one self-contained HTML page: the table of ``report.py`` and plotly plots,
plotly.js inlined (nothing is fetched), drawn the way ``mserve bench``'s report draws its own.

``to_html`` is a pure function of the result document and the plotly.js source. Every text
from the document is escaped; the plotted numbers are embedded once, as JSON.
"""

from __future__ import annotations

from html import escape
from typing import Any

from mserve import __version__
from mserve.bench.report.figures import BASE_LAYOUT, Figure, colour
from mserve.bench.report.html import STYLE, figure_section, page
from mserve.compare.report import BASELINE, Row, rows, setup_lines, skipped, table
from mserve.compare.result import FAILED, OK

EXTRA_STYLE = (
    "td.failed { color: #c62828; } .skipped { color: #555; } td.num { white-space: nowrap; }"
)


def figures(doc: dict[str, Any]) -> list[Figure]:
    """Every plot of the page, in page order."""
    measured = [(i, r) for i, r in enumerate(rows(doc)) if r.status == OK or r.steps]
    figs = [throughput_by_concurrency(measured), latency_by_throughput(measured)]
    if (doc.get("settings") or {}).get("slo"):
        figs.append(throughput_at_slo(measured, str(doc["settings"]["slo"])))
    return figs


def _layout(**extra: Any) -> dict[str, Any]:
    return {**BASE_LAYOUT, **extra}


def _nothing(fig_id: str, title: str, caption: str) -> Figure:
    return Figure(fig_id, title, caption, None, "No system was measured: nothing to plot.")


def throughput_by_concurrency(measured: list[tuple[int, Row]]) -> Figure:
    """Throughput against concurrency, one line per system."""
    fig_id, title = "plot-throughput", "Throughput against concurrency"
    caption = (
        "Requests per second each system sustained at each concurrency (closed loop, the same "
        "load for every system). Crossed markers are steps bench judged INVALID."
    )
    if not measured:
        return _nothing(fig_id, title, caption)
    data = []
    levels = sorted({c for _, r in measured for c in r.steps})
    for i, r in measured:
        ordered = [r.steps[c] for c in sorted(r.steps)]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": r.key,
                "x": [f.concurrency for f in ordered],
                "y": [f.throughput_rps for f in ordered],
                "line": {"color": colour(i)},
                "marker": {"symbol": ["circle" if f.valid else "x" for f in ordered], "size": 9},
                "hovertemplate": f"{r.key}<br>c=%{{x}}<br>%{{y:,.1f}} req/s<extra></extra>",
            }
        )
    layout = _layout(
        xaxis={"title": {"text": "concurrency"}, "type": "log", "tickvals": levels},
        yaxis={"title": {"text": "throughput (req/s)"}, "rangemode": "tozero"},
    )
    return Figure(fig_id, title, caption, {"data": data, "layout": layout})


def latency_by_throughput(measured: list[tuple[int, Row]]) -> Figure:
    """p99 against throughput, one line per system, labelled by concurrency."""
    fig_id, title = "plot-latency", "p99 against throughput"
    caption = (
        "Each point is one step, labelled by its concurrency. Further right at the same height "
        "is more throughput at the same p99: the better system. Dotted: p50."
    )
    if not measured:
        return _nothing(fig_id, title, caption)
    data = []
    for i, r in measured:
        ordered = [r.steps[c] for c in sorted(r.steps)]
        for key, dash in (("p99", "solid"), ("p50", "dot")):
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers+text" if key == "p99" else "lines",
                    "name": f"{r.key} {key}",
                    "legendgroup": r.key,
                    "showlegend": key == "p99",
                    "x": [f.throughput_rps for f in ordered],
                    "y": [f.p99_ms if key == "p99" else f.p50_ms for f in ordered],
                    "text": [f"c={f.concurrency}" for f in ordered],
                    "textposition": "top center",
                    "line": {"color": colour(i), "dash": dash},
                    "hovertemplate": f"{r.key} %{{text}}<br>%{{x:,.1f}} req/s<br>"
                    f"{key} %{{y:.3f}} ms<extra></extra>",
                }
            )
    layout = _layout(
        xaxis={"title": {"text": "achieved throughput (req/s)"}, "rangemode": "tozero"},
        yaxis={"title": {"text": "latency (ms)"}, "rangemode": "tozero"},
    )
    return Figure(fig_id, title, caption, {"data": data, "layout": layout})


def throughput_at_slo(measured: list[tuple[int, Row]], slo: str) -> Figure:
    """The throughput at the SLO, one bar per system."""
    fig_id, title = "plot-slo", f"Throughput within {slo}"
    caption = (
        f"The throughput at the highest concurrency whose step met {slo}, with no errors and a "
        "VALID verdict (bench's SLO search). A missing bar: not even the first load met it."
    )
    if not measured:
        return _nothing(fig_id, title, caption)
    data = [
        {
            "type": "bar",
            "x": [r.key for _, r in measured],
            "y": [r.slo_rps for _, r in measured],
            "text": [f"c={r.slo_load}" if r.slo_load is not None else "" for _, r in measured],
            "marker": {"color": [colour(i) for i, _ in measured]},
            "hovertemplate": "%{x}<br>%{y:,.1f} req/s at %{text}<extra></extra>",
        }
    ]
    layout = _layout(
        showlegend=False,
        xaxis={"title": {"text": "system"}, "type": "category"},
        yaxis={"title": {"text": "throughput (req/s)"}, "rangemode": "tozero"},
    )
    return Figure(fig_id, title, caption, {"data": data, "layout": layout})


def to_html(doc: dict[str, Any], plotly_source: str) -> str:
    """The whole page. ``plotly_source`` is plotly.js itself, inlined once."""
    figs = figures(doc)
    name = (doc.get("model") or {}).get("name")
    payload = {"figures": {f.id: f.spec for f in figs if f.spec is not None}}
    body = [
        f"<h1>mserve compare: {escape(str(name))}</h1>",
        *(f"<p>{_inline_code(line)}</p>" for line in setup_lines(doc)),
        _table(doc),
        _not_measured(doc),
        *(figure_section(f) for f in figs),
        f'<p class="sub">Rendered by mserve {escape(__version__)} from a '
        f"{escape(str(doc.get('schema')))} document, measured {escape(str(doc.get('created')))}."
        "</p>",
    ]
    return page(f"mserve compare: {name}", body, payload, plotly_source, STYLE + EXTRA_STYLE)


def _inline_code(line: str) -> str:
    """Markdown's `code` spans as <code>, the rest escaped."""
    parts = line.split("`")
    return "".join(f"<code>{escape(p)}</code>" if i % 2 else escape(p) for i, p in enumerate(parts))


def _table(doc: dict[str, Any]) -> str:
    head, body = table(doc)
    statuses = [r.status for r in rows(doc)]
    lines = ['<table id="compare"><thead><tr>']
    lines.append("".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for status, cells in zip(statuses, body, strict=True):
        first = '<td class="failed">' if status == FAILED else "<td>"
        rest = "".join(f'<td class="num">{escape(c)}</td>' for c in cells[1:])
        lines.append(f"<tr>{first}{escape(cells[0])}</td>{rest}</tr>")
    if not body:
        lines.append(f'<tr><td colspan="{len(head)}">no system ran</td></tr>')
    lines.append("</tbody></table>")
    lines.append(
        f'<p class="caption">Throughput marked * comes from a step bench judged INVALID. '
        f"'vs {escape(BASELINE)}': the ratio to {escape(BASELINE)} with the same batching.</p>"
    )
    return "\n".join(lines)


def _not_measured(doc: dict[str, Any]) -> str:
    items = [
        f"<li><code>{escape(r.key)}</code> ({escape(r.title)}): failed: {escape(r.reason)}"
        + (f"<pre>{escape(r.log_tail)}</pre>" if r.log_tail else "")
        + "</li>"
        for r in rows(doc)
        if r.status == FAILED
    ]
    items += [
        f'<li class="skipped"><code>{escape(str(s.get("key")))}</code> '
        f"({escape(str(s.get('title')))}): skipped: {escape(str(s.get('reason')))}</li>"
        for s in skipped(doc)
    ]
    return f"<h2>Not measured</h2>\n<ul>{''.join(items)}</ul>" if items else ""
