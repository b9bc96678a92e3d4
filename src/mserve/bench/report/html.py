"""The report as one self-contained HTML page: tables, and plotly.js plots inlined, no network.

``to_html`` is a pure function of the result document and the plotly.js source; ``plotly_js``
takes that source from the installed plotly package. Every text from the document is escaped;
the plotted numbers are embedded once, as JSON, in ``<script id="mserve-result">``, and the
page draws each figure from them.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from mserve import __version__
from mserve.bench.report.figures import Figure, figures, knee
from mserve.bench.report.steps import PERCENTILES, errors_text, step_label, steps, with_ci

#: The element id of the embedded plotted numbers (``figures``: id -> {data, layout}).
DATA_ID = "mserve-result"

#: Nothing may be fetched: inline scripts and styles only, images from data: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:"
)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.VALID { color: #14813a; font-weight: 600; } .INVALID { color: #c62828; font-weight: 600; }
.caption, .note, .sub { color: #555; max-width: 60em; } .note { font-style: italic; }
.plot { width: 100%; min-height: 420px; }
code, pre { background: #f5f5f5; padding: 0.2em 0.4em; white-space: pre-wrap; }
ul.reasons { margin: 0; padding-left: 1.2em; }
"""

#: Draws every figure from the embedded JSON; marks <body data-plots="done"> when all are drawn.
RENDER_JS = """
(function () {
  var payload = JSON.parse(document.getElementById("@DATA_ID@").textContent);
  var config = {displaylogo: false, responsive: true};
  var drawing = Object.keys(payload.figures).map(function (id) {
    var fig = payload.figures[id];
    return Plotly.newPlot(id, fig.data, fig.layout, config);
  });
  Promise.all(drawing).then(function () { document.body.dataset.plots = "done"; });
})();
""".replace("@DATA_ID@", DATA_ID)


class PlotlyMissing(RuntimeError):
    """The HTML report needs the plotly package (for its plotly.js bundle)."""

    def __init__(self) -> None:
        super().__init__("the HTML report needs plotly: pip install 'mserve[report]'")


def plotly_js() -> str:
    """The plotly.js bundle shipped inside the installed plotly package."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise PlotlyMissing() from None
    return str(get_plotlyjs())


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: no ``<``, ``>`` or ``&`` left to end it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plotted(doc: dict[str, Any], figs: list[Figure]) -> dict[str, Any]:
    """What the page embeds: the run id and every drawn figure's spec, keyed by element id."""
    return {
        "run_id": doc.get("id"),
        "figures": {f.id: f.spec for f in figs if f.spec is not None},
    }


def to_html(doc: dict[str, Any], plotly_source: str) -> str:
    """The whole page. ``plotly_source`` is plotly.js itself (see ``plotly_js``), inlined once."""
    figs = figures(doc)
    body = [
        _header(doc),
        _steps_table(doc),
        *(figure_section(f) for f in figs),
        _run_details(doc),
        f'<p class="sub">Rendered by mserve {escape(__version__)} from a '
        f"{escape(str(doc.get('schema')))} document.</p>",
    ]
    return page(f"mserve bench report {doc.get('id', '')}", body, plotted(doc, figs), plotly_source)


def page(title: str, body: list[str], payload: Any, plotly_source: str, style: str = STYLE) -> str:
    """A self-contained page: ``body`` (HTML), the figures' ``payload`` as JSON, plotly.js
    inlined once and the script that draws them; one page shell for every mserve report."""
    if "</script" in plotly_source.lower():
        raise ValueError("the plotly.js source contains '</script': it cannot be inlined")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{style}</style>",
            "</head>",
            "<body>",
            *body,
            f'<script type="application/json" id="{DATA_ID}">{script_json(payload)}</script>',
            f"<script>{plotly_source}</script>",
            f"<script>{RENDER_JS}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _text(value: Any) -> str:
    """A value as escaped text: scalars as they are, lists and dicts as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, dict | list | tuple):
        return escape(json.dumps(value, separators=(", ", ": ")))
    return escape(str(value))


def _header(doc: dict[str, Any]) -> str:
    target = doc.get("target") or {}
    all_steps = steps(doc)
    valid = [s for s in all_steps if s.get("verdict") == "VALID"]
    best = max(valid, key=lambda s: s.get("throughput_rps") or 0.0, default=None)
    at = knee(doc)
    facts = [
        f"{len(all_steps)} steps, {len(valid)} VALID",
        f"best VALID throughput {best.get('throughput_rps', 0):,.1f} req/s at "
        f"{escape(step_label(best))}"
        if best
        else "no VALID step",
    ]
    if at is not None:
        facts.append(f"knee at {escape(step_label(at))}")
    model = target.get("model")
    return "\n".join(
        [
            f"<h1>mserve bench: {_text(model or target.get('url'))}</h1>",
            f'<p class="sub">run {_text(doc.get("id"))}, {_text(doc.get("created"))}, '
            f"{_text(target.get('protocol'))} at {_text(target.get('url'))}</p>",
            f"<p>{'; '.join(facts)}.</p>",
        ]
    )


def _steps_table(doc: dict[str, Any]) -> str:
    head = ["#", "load", "req/s", "inferences/s", "p50 ms (95% CI)", "p99 ms (95% CI)"]
    head += [f"{label} ms" for key, label in PERCENTILES if key in ("p999", "max")]
    head += ["errors", "verdict"]
    rows = []
    for i, s in enumerate(steps(doc), start=1):
        lat = s.get("latency_ms") or {}
        errors = f"{_text(s.get('error_count', 0))}"
        if errors_text(s):
            errors += f"<br><small>{escape(errors_text(s))}</small>"
        verdict = str(s.get("verdict") or "-")
        reasons = "".join(f"<li>{escape(str(r))}</li>" for r in s.get("reasons") or [])
        cells = [
            f'<td class="num">{i}</td>',
            f"<td>{escape(step_label(s))}</td>",
            f'<td class="num">{_rate(s.get("throughput_rps"))}</td>',
            f'<td class="num">{_rate(s.get("inferences_per_s"))}</td>',
            f'<td class="num">{escape(with_ci(s, "p50"))}</td>',
            f'<td class="num">{escape(with_ci(s, "p99"))}</td>',
            f'<td class="num">{_ms(lat.get("p999"))}</td>',
            f'<td class="num">{_ms(lat.get("max"))}</td>',
            f'<td class="num">{errors}</td>',
            f'<td><span class="{"VALID" if verdict == "VALID" else "INVALID"}">'
            f"{escape(verdict)}</span>"
            + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
            + "</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(head)}">no steps</td></tr>')
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        '<h2>Steps</h2>\n<table id="steps"><thead><tr>'
        + header
        + "</tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _rate(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, int | float) else "-"


def _ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def figure_section(fig: Figure) -> str:
    """One figure's section: title, caption, note and the plot's placeholder."""
    parts = [
        f'<section id="section-{escape(fig.id)}">',
        f"<h2>{escape(fig.title)}</h2>",
        f'<p class="caption">{escape(fig.caption)}</p>',
    ]
    if fig.note:
        parts.append(f'<p class="note">{escape(fig.note)}</p>')
    if fig.spec is not None:
        parts.append(f'<div id="{escape(fig.id)}" class="plot"></div>')
    parts.append("</section>")
    return "\n".join(parts)


def _key_values(title: str, values: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in values.items())
    return f"<h3>{escape(title)}</h3>\n<table>{rows or '<tr><td>-</td></tr>'}</table>"


def _run_details(doc: dict[str, Any]) -> str:
    command = " ".join(str(a) for a in doc.get("command") or [])
    parts = [
        '<h2 id="run">The run</h2>',
        f"<p>command: <code>mserve {escape(command)}</code></p>",
        _key_values("Target", dict(doc.get("target") or {})),
        _key_values("Settings", dict(doc.get("settings") or {})),
        _key_values("Machine", dict(doc.get("machine") or {})),
    ]
    slo = doc.get("slo")
    if isinstance(slo, dict):
        parts.append(_key_values("SLO search", slo))
    return "\n".join(parts)
