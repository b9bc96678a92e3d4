"""Reports of a benchmark result: one self-contained HTML page, CSV, or Markdown.

Every function here is a function of the result document, but for ``write_report``, which
writes the rendered text to a file (and the HTML's plotly.js, read from the plotly package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mserve.bench.report.html import PlotlyMissing, plotly_js, to_html
from mserve.bench.report.steps import NotAResult, check_result
from mserve.bench.report.tables import to_csv, to_markdown

__all__ = [
    "FORMATS",
    "NotAResult",
    "PlotlyMissing",
    "check_result",
    "format_for",
    "render",
    "report_format",
    "to_csv",
    "to_html",
    "to_markdown",
    "write_report",
]

#: Report formats and the file suffixes that name them.
FORMATS = {"html": (".html", ".htm"), "csv": (".csv",), "md": (".md", ".markdown")}


def format_for(path: Path) -> str:
    """The format a file name asks for by its suffix; ValueError for any other suffix."""
    suffix = path.suffix.lower()
    for fmt, suffixes in FORMATS.items():
        if suffix in suffixes:
            return fmt
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise ValueError(f"{path}: cannot tell the report format from '{suffix}' (known: {known})")


def report_format(path: Path | None, fmt: str | None = None) -> str:
    """The format to write ``path`` in (``fmt``, else by its suffix, else html), checked before
    any work: ValueError for an unknown one, PlotlyMissing for html without plotly."""
    chosen = fmt or (format_for(path) if path is not None else "html")
    if chosen not in FORMATS:
        raise ValueError(f"unknown report format {chosen!r} (known: {', '.join(FORMATS)})")
    if chosen == "html":
        plotly_js()
    return chosen


def render(doc: dict[str, Any], fmt: str) -> str:
    """The report of a result document as text in ``fmt`` (html, csv or md)."""
    check_result(doc)
    if fmt == "html":
        return to_html(doc, plotly_js())
    if fmt == "csv":
        return to_csv(doc)
    if fmt == "md":
        return to_markdown(doc)
    raise ValueError(f"unknown report format {fmt!r} (known: {', '.join(FORMATS)})")


def write_report(doc: dict[str, Any], path: Path, fmt: str | None = None) -> None:
    """Render the report (``fmt``, else by the file's suffix) and write it to ``path``."""
    text = render(doc, fmt or format_for(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
