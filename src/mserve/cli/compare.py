"""``mserve compare REPO/NAME --systems mserve,fastapi,... --out DIR``: the same model in several
serving systems, each on the same cores under the same ``mserve bench`` load, and one report
(the work is :mod:`mserve.compare.run`; this is its skin)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mserve.cli.exit_codes import FAILURE, OK, USAGE

if TYPE_CHECKING:
    from mserve.compare.run import Plan
    from mserve.compare.systems import System

PROG = "mserve compare"

EPILOG = """\
systems:
{systems}

Every system but mserve runs from a virtual environment of its own, made by
  scripts/compare-envs SYSTEM      (in $MSERVE_COMPARE_ENVS, else ~/.cache/mserve/compare)
A system without one is skipped with that hint; nothing is installed by this command.

Each system in turn: started pinned to --server-cpus (taskset) in a process group of its own,
ready when its ready URL answers 200 (start-up time: process start to that answer), loaded by
'mserve bench' pinned to --bench-cpus with the same closed-loop sweep (and, with --slo, the
same SLO search), its resident memory sampled from /proc (idle after ready, peak under load),
then stopped (SIGTERM, then SIGKILL) before the next one starts.

writes into --out: compare.md, compare.html (needs plotly), compare.json (every system's raw
bench results), SYSTEM.log (each server's output), SYSTEM.sweep.json, SYSTEM.slo.json.

exit status: 0 at least one system was measured (failures are in the report), 1 none was,
2 bad options.

examples:
  mserve compare models/digits --systems mserve,fastapi,flask --out compare/digits
  mserve compare models/digits --systems mserve,triton --slo p99=20ms --duration 10 --out cmp
  mserve compare models/resnet --systems mserve,triton,mlserver --both --out cmp/resnet
"""


def _systems_epilog() -> str:
    from mserve.compare import launchers

    lines = []
    for name in launchers.ALL:
        doc = (type(launchers.get(name)).__doc__ or "").strip().splitlines()
        lines.append(f"  {name:<12}{doc[0] if doc else ''}")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1 such as 1,4,16, got {text!r}")
    return values


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="serve one model in several serving systems and compare them under the same load",
        description=textwrap.fill(
            "Serve the same ONNX model (ONNX Runtime inside each) in mserve and in other "
            "serving systems, one at a time on the same cores; load each with the same "
            "'mserve bench' sweep (and SLO search); report throughput, p50 / p99, the "
            "throughput at the SLO, start-up time and memory per system, in Markdown and "
            "HTML.",
            width=88,
        ),
        epilog=EPILOG.format(systems=_systems_epilog()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="REPO/NAME|MODEL.onnx",
        help="a model folder of a repository, or a bare .onnx file",
    )
    p.add_argument(
        "--systems",
        default="all",
        metavar="LIST",
        help="the systems to compare, in order, e.g. mserve,fastapi,triton (default: all)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where results go")
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=(1, 4, 16),
        metavar="N,..",
        help="the closed-loop sweep, the same for every system (default 1,4,16)",
    )
    p.add_argument(
        "--duration",
        type=_seconds,
        default=None,
        metavar="S",
        help="measured seconds per step (default: bench's windows, until stable)",
    )
    p.add_argument(
        "--warmup",
        type=_seconds,
        default=None,
        metavar="S",
        help="warm-up seconds before each step (default: bench's, 2)",
    )
    p.add_argument(
        "--slo",
        default=None,
        help="also search the highest concurrency meeting it, e.g. p99=20ms (from the first "
        "--concurrency up)",
    )
    batching = p.add_mutually_exclusive_group()
    batching.add_argument(
        "--batching",
        action="store_true",
        help="each system with its own dynamic batching on (up to the model's max batch)",
    )
    batching.add_argument(
        "--both", action="store_true", help="each system without, then with, its batching"
    )
    p.add_argument(
        "--server-cpus",
        default=None,
        metavar="CPUS",
        help="taskset list for every server (default: the first half of the usable cores, "
        "core 0 of 2)",
    )
    p.add_argument(
        "--bench-cpus",
        default=None,
        metavar="CPUS",
        help="taskset list for the load generator (default: the other cores)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="ONNX Runtime intra-op threads in every system (default: one per server core)",
    )
    p.add_argument(
        "--ready-timeout",
        type=_seconds,
        default=180.0,
        metavar="S",
        help="longest wait for a system to be ready (default 180)",
    )
    p.add_argument("--json", action="store_true", help="print the result document (compare.json)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mserve.compare.cpus import parse_cpus, split
    from mserve.compare.model import model_under_test
    from mserve.compare.run import Plan

    try:
        systems = _systems(args.systems)
        cpus = split(os.sched_getaffinity(0), args.server_cpus, args.bench_cpus)
        threads = args.threads if args.threads is not None else len(parse_cpus(cpus.server))
        model = model_under_test(args.model, threads)
        modes = (False, True) if args.both else (args.batching,)
        if True in modes and model.max_batch_size < 1:
            raise ValueError(
                f"{args.model}: max_batch_size 0 (no batch axis): there is nothing to batch"
            )
        _check_slo(args.slo)
        if args.duration == 0:
            raise ValueError("--duration must be above 0")
        if shutil.which("taskset") is None:
            raise ValueError("taskset is not installed (Debian: apt-get install util-linux)")
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return USAGE
    plan = Plan(
        model=model,
        out=args.out,
        cpus=cpus,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        slo=args.slo,
        ready_timeout_s=args.ready_timeout,
    )
    return _compare(plan, [(s, b) for s in systems for b in modes], args.json)


def _compare(plan: Plan, runs: list[tuple[System, bool]], as_json: bool) -> int:
    from mserve.bench.report import PlotlyMissing
    from mserve.bench.report.html import plotly_js
    from mserve.compare.report import table, write_reports
    from mserve.compare.result import OK as MEASURED
    from mserve.compare.result import SKIPPED
    from mserve.compare.run import compare

    def say(line: str) -> None:
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)

    say(
        f"{plan.model.name}: servers on CPU {plan.cpus.server}, mserve bench on CPU "
        f"{plan.cpus.bench}, {plan.model.threads} ONNX Runtime thread(s); results in {plan.out}"
    )
    doc = compare(runs, plan, say, command=sys.argv[1:])
    try:
        source: str | None = plotly_js()
    except PlotlyMissing as exc:
        source = None
        say(f"compare.html not written: {exc}")
    for path in write_reports(doc, plan.out, source):
        say(f"wrote {path}")
    say(f"wrote {plan.out / 'compare.json'}")
    if as_json:
        print(json.dumps(doc, indent=1))
    else:
        head, body = table(doc)
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for cells in body:
            print("| " + " | ".join(cells) + " |")
    statuses = [s["status"] for s in doc["systems"]]
    if MEASURED in statuses:
        return OK
    if all(s == SKIPPED for s in statuses):
        say("no system could run: every one was skipped (see the hints above)")
    else:
        say("no system was measured")
    return FAILURE


def _systems(text: str) -> list[System]:
    from mserve.compare import launchers

    known = list(launchers.ALL)
    if text.strip() == "all":
        return [launchers.get(name) for name in known]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"--systems: unknown system {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--systems: a system named twice in {text!r}")
    return [launchers.get(name) for name in names]


def _check_slo(text: str | None) -> None:
    from mserve.bench.slo import parse_slo
    from mserve.errors import ConfigError

    if text is None:
        return
    try:
        parse_slo(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
