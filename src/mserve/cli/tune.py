"""``mserve tune REPO/NAME --slo p99=20ms``: find the config with the best throughput per core
that meets a latency objective (the work is :func:`mserve.tune.tune`; this is its skin)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK, USAGE
from mserve.errors import ConfigError

EPILOG = """\
every candidate is served alone from a temporary repository by 'mserve serve' on a free port
and measured with the same closed-loop load: the SLO search (the highest concurrency meeting
the SLO, from 1) or the fixed --concurrency steps. Score: the best throughput among the steps
meeting the SLO divided by the cores the candidate may use (instances x intra-op threads, all
cores for threads 0). Batch size 0 means no dynamic batching.

exit status: 0 a config meets the SLO, 1 none does, 2 bad options, 3 a repository problem,
4 an unknown model or variant.

examples:
  mserve tune models/digits --slo p99=20ms
  mserve tune models/digits --slo p99=5ms --batch-sizes 0,8,32 --instances 1,2 --apply
  mserve tune models/digits --slo p99=20ms --concurrency 1,4,16 --json -o tune.json
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="measure a grid of configs of a model and pick the best one meeting an SLO",
        description=textwrap.fill(
            "Measure candidate configs of one model (dynamic batching, queue delay, instances, "
            "intra-op threads, and the variants 'mserve convert' wrote beside it) under the "
            "same load and pick the one with the highest throughput per core that meets a "
            "latency SLO; --apply writes it to the model's config.yaml.",
            width=88,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="REPO/NAME", type=Path, help="the model folder to tune")
    p.add_argument("--slo", required=True, help="latency objective, e.g. p99=20ms or p50=800us")
    p.add_argument(
        "--batch-sizes",
        type=_ints,
        default=(0, 16),
        metavar="N,..",
        help="max_batch_size values with dynamic batching; 0: no batching (default 0,16)",
    )
    p.add_argument(
        "--delays-us",
        type=_ints,
        default=(1000,),
        metavar="US,..",
        help="max_queue_delay_microseconds values for batching candidates (default 1000)",
    )
    p.add_argument(
        "--instances",
        type=_ints,
        default=(1,),
        metavar="N,..",
        help="instance_count values (default 1)",
    )
    p.add_argument(
        "--threads",
        type=_ints,
        default=(0,),
        metavar="N,..",
        help="intra_op_threads values; 0: the runtime chooses (default 0)",
    )
    p.add_argument(
        "--variants",
        default="auto",
        metavar="auto|LIST",
        help="auto: NAME and NAME-fp16, NAME-int8-dynamic, NAME-int8-static where present; or "
        "a list such as fp32,int8-dynamic (default auto)",
    )
    p.add_argument(
        "--max-candidates",
        type=int,
        default=12,
        help="refuse a grid larger than this (default 12)",
    )
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=(),
        metavar="N,..",
        help="fixed closed-loop steps instead of the SLO search, the SLO applied to each",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        help="the SLO search stops here (default 64)",
    )
    p.add_argument("--duration", type=float, default=2.0, help="seconds per step (default 2)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds (default 0.5)")
    p.add_argument(
        "--protocol",
        choices=("v2-binary", "v2-json"),
        default="v2-binary",
        help="how requests are encoded (default v2-binary)",
    )
    p.add_argument("--apply", action="store_true", help="write the winner to its config.yaml")
    p.add_argument("--json", action="store_true", help="print the result document")
    p.add_argument("-o", "--output", type=Path, help="write the result document to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mserve.bench.slo import parse_slo
    from mserve.cli.console import console
    from mserve.tune.grid import Grid
    from mserve.tune.run import TuneOptions

    folder: Path = args.model
    repository, name = folder.parent, folder.name
    try:
        options = TuneOptions(
            slo=parse_slo(args.slo),
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
            max_concurrency=args.max_concurrency,
            max_candidates=args.max_candidates,
            protocol=args.protocol,
        )
        requested = (
            None
            if args.variants == "auto"
            else tuple(v.strip() for v in args.variants.split(",") if v.strip())
        )
        # checked before the repository is read; the grid's size is checked once the variants
        # are known
        options.check()
        Grid((name,), args.batch_sizes, args.delays_us, args.instances, args.threads).check()
        if requested == ():
            raise ValueError("--variants needs 'auto' or at least one variant")
    except (ValueError, ConfigError) as exc:
        print(f"mserve tune: error: {exc}", file=sys.stderr)
        return USAGE
    err = console(stderr=True)
    say = (lambda _: None) if args.quiet else (lambda line: err.print(line, highlight=False))
    from mserve.tune import tune

    try:
        doc = tune(
            repository,
            name,
            options,
            batch_sizes=args.batch_sizes,
            delays_us=args.delays_us,
            instances=args.instances,
            threads=args.threads,
            variant_list=requested,
            apply=args.apply,
            progress=say,
        )
    except ValueError as exc:  # the grid is over --max-candidates
        print(f"mserve tune: error: {exc}", file=sys.stderr)
        return USAGE
    text = json.dumps(doc, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print_table(doc)
    return OK if doc["winner"] is not None else FAILURE


def print_table(doc: dict[str, Any]) -> None:
    """The candidates table, the winner and why, and what --apply did."""
    from rich.table import Table

    from mserve.cli.console import console

    out = console()
    table = Table(title=f"mserve tune {doc['model']}: {doc['slo']}, {doc['mode']}")
    for column in (
        "rank",
        "config",
        "best load",
        "req/s",
        doc["slo"].split("<=")[0] + " ms",
        "cores",
        "req/s per core",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("config", "verdict") else "right")
    for c in doc["candidates"]:
        best = c["best"]
        table.add_row(
            str(c["rank"]),
            c["label"],
            f"concurrency {best['concurrency']}" if best else "-",
            f"{best['throughput_rps']:.1f}" if best else "-",
            f"{best['slo_percentile_ms']:.2f}" if best and best["slo_percentile_ms"] else "-",
            str(c["cores"]),
            f"{c['throughput_per_core']:.1f}" if best else "-",
            c["verdict"],
        )
    out.print(table)
    if doc["winner"] is None:
        out.print(f"no winner: {doc['why']}", highlight=False)
        return
    win = next(c for c in doc["candidates"] if c["index"] == doc["winner"])
    out.print(f"winner: {win['label']}", highlight=False)
    out.print(f"why: {doc['why']}", highlight=False)
    model = win["candidate"]["model"]
    if doc["applied"]:
        out.print(f"applied: wrote {doc['applied']}", highlight=False)
    if model != doc["model"]:
        out.print(
            f"the variant {model} won: serve the model '{model}' (its folder is beside "
            f"'{doc['model']}' in the repository) instead of '{doc['model']}'",
            highlight=False,
        )
    elif not doc["applied"]:
        out.print("run again with --apply to write it to the model's config.yaml", highlight=False)
