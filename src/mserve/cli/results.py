"""``mserve results``: list, show, export and delete the benchmark runs in the results database;
merge concurrent runs (:mod:`mserve.cli.results_merge`)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mserve.bench.result import load_label
from mserve.bench.store import ResultStore, RunSummary, default_location, open_store
from mserve.cli import results_merge
from mserve.cli.exit_codes import OK, USAGE

DESCRIPTION = """\
Benchmark runs saved in the results database ('mserve bench' saves each run there): list
them, show one, export them as JSON or CSV, delete them; merge the results of concurrent
runs (the pods of a bench Job) into one.

The database is the SQLite file named by --db, else $MSERVE_RESULTS_DB, else
$XDG_DATA_HOME/mserve/results.db, else ~/.local/share/mserve/results.db. It is created on
first use."""
REFS = (
    "A RUN is a run id, a unique prefix of one (at least 4 characters), 'latest', or "
    "'latest~N' (N runs before the latest)."
)
EPILOG = f"""
{textwrap.fill(REFS, 90)}

examples:
  mserve results list --model digits --limit 10
  mserve results show latest
  mserve results export latest latest~1 --format csv -o runs.csv
  mserve results --db sqlite:///team.db delete 3f2a --yes
  mserve results merge worker-*.json -o merged.json --save
"""

#: The columns of ``export --format csv``: one row per step.
CSV_FIELDS = (
    "run_id", "created", "model", "target", "protocol", "step", "mode", "concurrency", "rate",
    "arrival", "duration_s", "count", "throughput_rps", "inferences_per_s", "p50_ms",
    "p50_ci_lo_ms", "p50_ci_hi_ms", "p90_ms", "p99_ms", "p99_ci_lo_ms", "p99_ci_hi_ms",
    "p999_ms", "max_ms", "mean_ms", "error_count", "achieved_rate_rps", "stable", "verdict",
    "reasons",
)  # fmt: skip
_STEP_FIELDS = (
    "duration_s", "count", "throughput_rps", "inferences_per_s", "error_count",
    "achieved_rate_rps", "stable", "verdict",
)  # fmt: skip


def register(sub: Any) -> None:
    p = sub.add_parser(
        "results",
        help="list, show, export and delete saved benchmark runs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db",
        metavar="LOCATION",
        help="the results database: a file path or a sqlite:///PATH URL (default: see above)",
    )
    actions = p.add_subparsers(dest="results_command", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "list",
        help="saved runs, newest first",
        description="One line per saved run, newest first: target, best throughput, verdicts.",
    )
    ls.add_argument("--limit", type=_positive, metavar="N", help="show at most N runs")
    ls.add_argument("--model", metavar="M", help="only runs against the model named M")
    ls.add_argument("--target", metavar="TEXT", help="only runs whose target URL contains TEXT")
    ls.add_argument("--json", action="store_true", help="print the runs as JSON")
    ls.set_defaults(run=run_list)
    show = actions.add_parser(
        "show",
        help="one run: its command, target and a table of its steps",
        description=f"Show one run: command, target, machine and every step. {REFS}",
    )
    show.add_argument("run_ref", metavar="RUN", help="the run to show")
    show.add_argument("--json", action="store_true", help="print the stored result document")
    show.set_defaults(run=run_show)
    export = actions.add_parser(
        "export",
        help="write runs as JSON documents or as CSV (one row per step)",
        description=(
            "Write runs out. JSON: the result document of one run, or a list of them for "
            f"several. CSV: one row per step with the run's id and the main figures. {REFS}"
        ),
    )
    export.add_argument("run_refs", nargs="+", metavar="RUN", help="the runs to export")
    export.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    export.add_argument(
        "--format", choices=["json", "csv"], default="json", help="output format (default: json)"
    )
    export.set_defaults(run=run_export)
    delete = actions.add_parser(
        "delete",
        help="delete runs",
        description=(
            f"Delete runs (all or none: every RUN must name a saved run). {REFS} Asks first "
            "on a terminal; elsewhere --yes is required."
        ),
    )
    delete.add_argument("run_refs", nargs="+", metavar="RUN", help="the runs to delete")
    delete.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    delete.set_defaults(run=run_delete)
    compare = actions.add_parser(
        "compare",
        help="two runs side by side: per-step changes with confidence intervals and verdicts",
        description=(
            "Compare run B with run A, step by step (steps matched by load). For throughput, "
            "p50 and p99: both runs' means over their measurement windows, the change in "
            "percent with a 95%% bootstrap interval over the windows, and a verdict: better, "
            "worse (the interval excludes zero and the change is at least --min-change), or "
            f"within noise. {REFS}"
        ),
    )
    compare.add_argument("run_a", metavar="A", help="the earlier run (the baseline)")
    compare.add_argument("run_b", metavar="B", help="the run to judge")
    compare.add_argument(
        "--min-change",
        type=float,
        default=5.0,
        metavar="PCT",
        help="smallest change in percent that counts as better or worse (default 5: two runs "
        "of the same thing on a shared machine differ by a few percent)",
    )
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.set_defaults(run=run_compare)
    results_merge.register(actions)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def _open(args: argparse.Namespace) -> ResultStore:
    return open_store(args.db or default_location(os.environ, Path.home()))


def run_list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        runs = store.list(args.limit, args.model, args.target)
        path = store.path
    if args.json:
        print(json.dumps({"database": str(path), "runs": [r.to_dict() for r in runs]}, indent=2))
        return OK
    if not runs:
        print(f"no runs saved in {path}")
        return OK
    from rich.markup import escape
    from rich.table import Table

    from mserve.cli.console import console

    table = Table(title=f"saved runs - {escape(str(path))}")
    for col in ("run", "created", "model", "target", "host"):
        table.add_column(col)
    for col in ("steps", "best req/s", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    table.add_column("verdicts")
    for r in runs:
        table.add_row(
            r.id,
            r.created.replace("T", " "),
            escape(r.model or "-"),
            escape(r.target or "-"),
            escape(r.host or "-"),
            str(r.steps),
            "-" if r.best_throughput_rps is None else f"{r.best_throughput_rps:,.1f}",
            "-" if r.p99_ms is None else f"{r.p99_ms:.3f}",
            str(r.errors),
            f"{r.valid} VALID" + (f", [red]{r.invalid} INVALID[/]" if r.invalid else ""),
        )
    console().print(table)
    return OK


def run_show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        doc = store.get(args.run_ref)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_run(doc)
    return OK


def _with_ci(step: dict[str, Any], key: str) -> str:
    value = (step.get("latency_ms") or {}).get(key)
    if value is None:
        return "-"
    ci = (step.get("latency_ci_ms") or {}).get(key)
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _settings_line(settings: dict[str, Any]) -> str:
    until = (
        f"for a fixed {settings['duration_s']:g} s"
        if settings.get("duration_s") is not None
        else f"until stable within {settings.get('stability_pct', 0):g}% "
        f"(at most {settings.get('max_duration_s', 0):g} s)"
    )
    return (
        f"settings: warm-up {settings.get('warmup_s', 0):g} s, windows of "
        f"{settings.get('window_s', 0):g} s, measured {until}, {settings.get('workers', 1)} "
        "generator worker(s)"
    )


def print_run(doc: dict[str, Any]) -> None:
    """A run as a reader wants it: where and how it ran, a table of its steps, the verdicts."""
    from rich.markup import escape
    from rich.table import Table

    from mserve.cli.console import console

    out = console()
    run = RunSummary.of(doc)
    target = doc.get("target") or {}
    machine = doc.get("machine") or {}
    model = f", model {target.get('model')}" if target.get("model") else ""
    lines = [
        f"run {run.id}, {run.created.replace('T', ' ')}, mserve {run.mserve_version or '?'}",
        f"command: mserve {run.command}",
        f"target: {run.target} ({run.protocol}{model})",
        f"machine: {run.host}, {machine.get('cpu') or '?'}, {machine.get('cpus_usable')} "
        f"usable cores, {machine.get('os') or '?'}",
        _settings_line(doc.get("settings") or {}),
    ]
    for line in lines:
        out.print(escape(line), highlight=False)
    table = Table()
    for col in ("step", "load", "req/s", "p50 ms (95% CI)", "p99 ms (95% CI)", "errors"):
        table.add_column(col, justify="right")
    table.add_column("verdict")
    for i, s in enumerate(doc.get("steps") or [], start=1):
        table.add_row(
            str(i),
            load_label(s.get("load") or {}),
            f"{s.get('throughput_rps', 0):,.1f}",
            _with_ci(s, "p50"),
            _with_ci(s, "p99"),
            str(s.get("error_count", 0)),
            "[green]VALID[/]" if s.get("verdict") == "VALID" else "[red]INVALID[/]",
        )
    out.print(table)
    for s in doc.get("steps") or []:
        for reason in s.get("reasons") or []:
            out.print(f"[red]{load_label(s.get('load') or {})}: INVALID:[/] {escape(reason)}")
    slo = doc.get("slo")
    if slo:
        best = slo.get("best_load")
        outcome = (
            "not met at any load tried"
            if best is None
            else f"highest load meeting it: {best} ({slo.get('best_throughput_rps', 0):,.1f} "
            f"req/s); first failing: {slo.get('first_failing_load')}"
        )
        out.print(f"SLO {escape(str(slo.get('objective')))}: {outcome}", highlight=False)


def csv_rows(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step of every document, keyed by ``CSV_FIELDS``."""
    rows: list[dict[str, Any]] = []
    for doc in docs:
        run = RunSummary.of(doc)
        for i, s in enumerate(doc.get("steps") or [], start=1):
            load = s.get("load") or {}
            lat = s.get("latency_ms") or {}
            ci = s.get("latency_ci_ms") or {}
            row: dict[str, Any] = {
                "run_id": run.id,
                "created": run.created,
                "model": run.model,
                "target": run.target,
                "protocol": run.protocol,
                "step": i,
                "reasons": "; ".join(s.get("reasons") or []),
            }
            row.update({k: load.get(k) for k in ("mode", "concurrency", "rate", "arrival")})
            row.update(
                {f"{k}_ms": lat.get(k) for k in ("p50", "p90", "p99", "p999", "max", "mean")}
            )
            for k in ("p50", "p99"):
                row[f"{k}_ci_lo_ms"], row[f"{k}_ci_hi_ms"] = ci.get(k) or (None, None)
            row.update({k: s.get(k) for k in _STEP_FIELDS})
            rows.append(row)
    return rows


def run_export(args: argparse.Namespace) -> int:
    with _open(args) as store:
        ids = dict.fromkeys(store.resolve(ref) for ref in args.run_refs)
        docs = [store.get(run_id) for run_id in ids]
    if args.format == "json":
        text = json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(docs))
        text = buffer.getvalue()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {len(docs)} run(s) to {args.output}", file=sys.stderr)
    return OK


def run_delete(args: argparse.Namespace) -> int:
    with _open(args) as store:
        ids = list(dict.fromkeys(store.resolve(ref) for ref in args.run_refs))
        if not args.yes:
            if not sys.stdin.isatty():
                print(
                    "mserve results delete: not deleting without confirmation in a "
                    "non-interactive run; pass --yes",
                    file=sys.stderr,
                )
                return USAGE
            try:
                answer = input(
                    f"delete {len(ids)} run(s) ({', '.join(ids)}) from {store.path}? [y/N] "
                )
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return OK
        deleted = store.delete(ids)
        print(f"deleted {deleted} run(s) from {store.path}")
    return OK


def run_compare(args: argparse.Namespace) -> int:
    """Print the per-step deltas of B against A; exit 0 (a comparison is not a gate)."""
    from mserve.bench.compare import compare_runs

    with _open(args) as store:
        a, b = store.get(args.run_a), store.get(args.run_b)
    deltas, unmatched = compare_runs(a, b, min_change_pct=args.min_change)
    if args.json:
        doc = {
            "a": a.get("id"),
            "b": b.get("id"),
            "deltas": [d.to_dict() for d in deltas],
            "unmatched_loads": unmatched,
        }
        print(json.dumps(doc, indent=2))
        return OK
    from rich.table import Table

    from mserve.cli.console import console

    table = Table(title=f"{b.get('id')} against {a.get('id')}")
    for column in ("load", "figure", "A", "B", "change", "95% interval", "windows", "verdict"):
        table.add_column(column)
    styles = {"better": "green", "worse": "red"}
    for d in deltas:
        unit = " req/s" if d.figure == "throughput" else " ms"
        table.add_row(
            d.load,
            d.figure,
            f"{d.a:.3f}{unit}",
            f"{d.b:.3f}{unit}",
            f"{d.change_pct:+.1f}%",
            f"{d.ci_low_pct:+.1f}% .. {d.ci_high_pct:+.1f}%",
            f"{d.windows[0]} / {d.windows[1]}",
            f"[{styles[d.verdict]}]{d.verdict}[/]" if d.verdict in styles else d.verdict,
        )
    out = console()
    out.print(table)
    if unmatched:
        out.print(f"loads in only one of the runs (not compared): {', '.join(unmatched)}")
    return OK
