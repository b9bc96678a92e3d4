"""``mserve report RESULT.json``: a benchmark result as an HTML page, CSV or Markdown."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK, USAGE

EPILOG = """
formats (by --format, else by the suffix of -o):
  html  one self-contained page (.html): plotly.js inlined, opens without a network
  csv   one row per step with every figure (.csv)
  md    a Markdown summary table (.md)

examples:
  mserve bench http://127.0.0.1:8000 -m digits --concurrency 1,4,16 -o run.json
  mserve report run.json                      # report.html next to run.json
  mserve report run.json -o steps.csv
  mserve report run.json --format md -o -     # Markdown to stdout
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="render a benchmark result as an HTML report, CSV or Markdown",
        description=(
            "Render the result document of 'mserve bench' (--output FILE) as one self-contained "
            "HTML page with plots (latency against throughput, latency percentiles, throughput "
            "and p99 over time, the server-side breakdown) and tables, or as CSV or Markdown."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("result", type=Path, metavar="RESULT.json", help="a result of 'mserve bench'")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write ('-' for stdout; default: report.FORMAT next to RESULT.json)",
    )
    p.add_argument(
        "--format",
        choices=["html", "csv", "md"],
        default=None,
        help="report format (default: from the suffix of -o, else html)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mserve.bench.report import PlotlyMissing, check_result, render, report_format

    to_file = Path(args.output) if args.output and args.output != "-" else None
    try:
        fmt = report_format(to_file, args.format)
        doc = check_result(_load(args.result))
    except (ValueError, PlotlyMissing) as exc:  # NotAResult is a ValueError
        print(f"mserve report: error: {exc}", file=sys.stderr)
        return USAGE
    text = render(doc, fmt)
    if args.output == "-":
        sys.stdout.write(text)
        return OK
    out = Path(args.output) if args.output else args.result.parent / f"report.{fmt}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"mserve report: error: cannot write {out}: {exc}", file=sys.stderr)
        return FAILURE
    print(f"wrote {out}", file=sys.stderr)
    return OK


def _load(path: Path) -> Any:
    """The JSON document in ``path``; ValueError saying what is wrong with the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such result file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a directory, not a result file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a result JSON file: {exc}") from None
