"""``mserve results merge``: one result from the results of concurrent ``mserve bench`` runs
(the pods of ``mserve deploy bench-job``); the work is :mod:`mserve.bench.merge`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK, USAGE

DESCRIPTION = """\
Merge the results of N 'mserve bench' runs that ran at the same time against the same target
(the pods of 'mserve deploy bench-job', or N machines) into one result of the same format:
'mserve results show', 'mserve report' and '--baseline' take it like any run.

Steps are matched by position and must have the same load, target, model and measurement
settings; the merged load is the sum (concurrencies add, rates add). Latency histograms add
bucket by bucket, so the percentiles, confidence intervals, mean and max are exact; counts,
errors and throughputs add. A warning says when the workers measured together for less than
90% of their span: their summed throughput is then more than the server carried at once."""
EPILOG = """\
examples:
  mserve results merge worker-0.json worker-1.json worker-2.json -o merged.json
  mserve results merge worker-*.json --save
  mserve results merge worker-*.json --json > merged.json
"""


def register(actions: Any) -> None:
    """Add the ``merge`` action to ``mserve results``."""
    p = actions.add_parser(
        "merge",
        help="combine the results of concurrent bench runs (a bench Job's pods) into one",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files", nargs="+", type=Path, metavar="RESULT.json", help="the workers' result files"
    )
    p.add_argument("-o", "--output", type=Path, help="write the merged result JSON here")
    p.add_argument("--json", action="store_true", help="print the merged result JSON to stdout")
    p.add_argument(
        "--save",
        action="store_true",
        help="store the merged run in the results database (see --db)",
    )
    p.set_defaults(run=run)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such result file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a directory, not a result file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a result JSON file: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from mserve.bench.merge import merge_results
    from mserve.bench.store import default_location, open_store

    command = ["results", "merge", *(str(f) for f in args.files)]
    try:
        sources = [(str(path), _read(path)) for path in args.files]
        doc = merge_results(sources, command)
    except ValueError as exc:  # Mismatch is a ValueError
        print(f"mserve results merge: error: {exc}", file=sys.stderr)
        return USAGE
    text = json.dumps(doc, indent=2)
    if args.output is not None:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(
                f"mserve results merge: error: cannot write {args.output}: {exc}", file=sys.stderr
            )
            return FAILURE
        print(f"wrote {args.output}", file=sys.stderr)
    if args.save:
        with open_store(args.db or default_location(os.environ, Path.home())) as store:
            run_id = store.save(doc)
            where = store.path
        print(f"mserve results merge: saved as run {run_id} in {where}", file=sys.stderr)
    if args.json:
        print(text)
    else:
        from mserve.cli.results import print_run

        print_run(doc)
        print(f"merged from {len(args.files)} results: {', '.join(map(str, args.files))}")
    for warning in doc["merge_warnings"]:
        print(f"mserve results merge: warning: {warning}", file=sys.stderr)
    return OK
