"""``mserve quickstart``: the whole story on a real model, with no set-up."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "quickstart",
        help="train a digits model, serve it, call it over V2, and report",
        description=(
            "Train a small MLP on scikit-learn's bundled digits images, convert it with "
            "'mserve convert''s pipeline into a fresh model repository (fp32, and int8 checked "
            "against it on the test images), start 'mserve serve' on a free port, send the test "
            "split through it with tritonclient (JSON and binary tensors), print the accuracy "
            "measured through the server next to the model's own, measure both models with a "
            "short 'mserve bench' concurrency sweep, read the server's /metrics (with the input "
            "drift of the test images against the training set), write an HTML report of each "
            "sweep, a Grafana dashboard and Prometheus alert rules, and show how to call it."
        ),
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="working directory for the model repository (default: a new temporary directory)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mserve import quickstart
    from mserve.cli.console import console as make_console

    console = make_console(stderr=args.json)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="mserve-quickstart-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with console.status("starting") as status:

        def step(msg: str) -> None:
            console.log(msg)
            status.update(msg)

        result = quickstart.run(workdir, step)
    ok = result.agreement == 1.0 and result.max_abs_prob_diff < 1e-4
    if args.json:
        doc = asdict(result)
        doc["repository"] = str(result.repository)
        print(json.dumps(doc, indent=2))
        return OK if ok else FAILURE
    table = Table(title="digits through mserve (Open Inference Protocol V2)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("test images", str(result.test_rows))
    table.add_row("requests sent (tritonclient.http)", str(result.requests))
    table.add_row("accuracy, model in process", f"{result.accuracy_in_process:.4f}")
    table.add_row("accuracy, through the server", f"{result.accuracy_served:.4f}")
    table.add_row("labels agreeing", f"{result.agreement:.4f}")
    table.add_row("max |probability difference|", f"{result.max_abs_prob_diff:.2e}")
    images = result.monitoring.get("after_test_images", {})
    bench = result.monitoring.get("after_bench", {})
    for name, psi in images.get("drift_psi", {}).items():
        table.add_row(f"/metrics: input drift (PSI) of '{name}', test images", f"{psi:.4f}")
    if bench:
        for name, psi in bench.get("drift_psi", {}).items():
            table.add_row(
                f"/metrics: input drift (PSI) of '{name}', bench's random inputs", f"{psi:.4f}"
            )
        table.add_row("/metrics: requests (failed)", f"{bench['requests']} ({bench['errors']})")
        per_execution = bench["rows"] / max(1, bench["executions"])
        table.add_row("/metrics: rows per execution", f"{per_execution:.2f}")
    for k, v in result.seconds.items():
        table.add_row(f"time: {k}", f"{v:.2f} s")
    console.print(table)
    if result.bench:
        from mserve.cli.bench_view import steps_table

        console.print(steps_table(result.bench["steps"], title="mserve bench: digits, V2 binary"))
    if result.bench_int8:
        console.print(
            steps_table(result.bench_int8["steps"], title=f"mserve bench: {quickstart.INT8}")
        )
    for model, accuracy in result.conversion.get("accuracy", {}).items():
        parity = result.conversion.get("parity", {}).get(model, "")
        console.print(f"converted {model}: test accuracy {accuracy:.4f} ({parity})")
    if result.conversion.get("problem"):
        console.print(f"[yellow]int8 not kept: {result.conversion['problem']}[/]")
    for path in result.reports:
        console.print(f"report: {path}")
    console.print(f"model repository: {result.repository}\n")
    console.print(
        quickstart.how_to_call(result.repository), markup=False, highlight=False, soft_wrap=True
    )
    if not ok:
        console.print("[red]the served model disagrees with the model in process[/]")
    return OK if ok else FAILURE
