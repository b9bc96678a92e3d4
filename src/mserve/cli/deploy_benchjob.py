"""``mserve deploy bench-job``: a Kubernetes Job of N ``mserve bench`` pods against a service
(the work is :mod:`mserve.deploy.benchjob`; this is its skin)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from mserve.cli.console import print_written
from mserve.cli.exit_codes import FAILURE, USAGE

EPILOG = """\
The load (--concurrency or --rate) is the total: each of the N pods runs 1/N of it, with its
own seed, for a fixed --duration. Each pod prints its result JSON (kubectl logs), or writes it
to a PersistentVolumeClaim (--results-pvc) as worker-INDEX.json; 'mserve results merge' makes
one result of the N.

files written into DIR (created if missing, replaced if present):
  bench-job.yaml  the Job (batch/v1, completionMode Indexed, N pods at once, no retries)
  README.md       how to apply it, collect the N results and merge them

examples:
  mserve deploy bench-job --target http://mserve.default.svc:8000 -m digits --workers 4 \\
      --concurrency 64 --duration 120 --out bench/
  mserve deploy bench-job --target http://mserve:8000 -m digits --workers 3 --rate 3000 \\
      --arrival poisson --results-pvc bench-results --namespace ml --out bench/
  mserve deploy bench-job --target grpc://mserve:8001 --protocol v2-grpc -m digits \\
      --workers 2 --concurrency 32 --api-key-secret mserve-keys:bench --out bench/
  kubectl apply -f bench/bench-job.yaml
  mserve results merge worker-*.json --save
"""


def register(targets: Any) -> None:
    """Add the ``bench-job`` target to ``mserve deploy``."""
    p = targets.add_parser(
        "bench-job",
        help="a Kubernetes Job of N 'mserve bench' pods: a load one machine cannot generate",
        description=(
            "Write a Kubernetes Job that runs N 'mserve bench' pods at once against a service "
            "(a distributed load), and a README saying how to collect and merge their results."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="URL",
        help="the server as the pods reach it, e.g. http://mserve.NAMESPACE.svc:8000",
    )
    p.add_argument("-m", "--model", help="model name (V2 and TF Serving protocols)")
    p.add_argument("-x", "--model-version", default=None, help="model version (default: latest)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    p.add_argument(
        "--workers", type=int, required=True, metavar="N", help="pods, all running at once"
    )
    p.add_argument(
        "--protocol",
        default="v2-json",
        choices=["v2-json", "v2-binary", "v2-grpc", "tfserving", "http"],
        help="how the pods talk to the target (default: v2-json)",
    )
    load = p.add_argument_group("load (the total over the N pods)")
    load.add_argument(
        "--concurrency",
        help="closed loop: concurrent requesters in all, '64' or a list '16,32,64' (each a "
        "multiple of N)",
    )
    load.add_argument("--rate", help="open loop: requests/s in all, '3000' or a list")
    load.add_argument(
        "--arrival",
        default="constant",
        choices=["constant", "poisson"],
        help="open-loop arrivals (default: constant)",
    )
    load.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="S",
        help="measured seconds per step (default: 60)",
    )
    load.add_argument(
        "--warmup", type=float, default=10.0, metavar="S", help="seconds not counted (default: 10)"
    )
    load.add_argument("--window", type=float, default=2.0, metavar="S", help="window (default: 2)")
    load.add_argument("--batch-size", type=int, default=1, help="rows per request (default: 1)")
    load.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="per request (default: 30)"
    )
    load.add_argument(
        "--start-at",
        metavar="TIME",
        help="every pod waits until this wall-clock time (Unix seconds or ISO 8601, UTC) "
        "before it starts, so that the N measure together; apply the Job before it, e.g. "
        "--start-at $(date -u -d '+3 min' +%%FT%%TZ) (default: each pod starts when it runs)",
    )
    load.add_argument(
        "--bench-arg",
        action="append",
        default=[],
        metavar="ARGS",
        help="more 'mserve bench' options for every pod, split as a shell would, e.g. "
        "--bench-arg '--workers 2' or --bench-arg=--insecure (repeatable; checked by "
        "mserve bench's own parser)",
    )
    load.add_argument(
        "--api-key-secret",
        metavar="SECRET:KEY",
        help="send 'Authorization: Bearer KEY' with the API key in this Secret's key",
    )
    pod = p.add_argument_group("the pods")
    pod.add_argument("--name", default="mserve-bench", help="the Job's name (default: %(default)s)")
    pod.add_argument("--namespace", help="the Job's namespace (default: kubectl's)")
    pod.add_argument(
        "--image", help="an image with mserve, ENTRYPOINT mserve (default: mserve:VERSION)"
    )
    pod.add_argument(
        "--results-pvc",
        metavar="CLAIM",
        help="write each result to this PersistentVolumeClaim, mounted at /results, as "
        "worker-INDEX.json (default: print it, for kubectl logs)",
    )
    pod.add_argument("--cpu", default="1", help="CPU of each pod, requests = limits (default: 1)")
    pod.add_argument("--memory", default="512Mi", help="memory of each pod (default: 512Mi)")
    p.add_argument("--json", action="store_true", help='print {"files": [...]} to stdout')
    p.set_defaults(run=run)


class _Refusing(argparse.ArgumentParser):
    """A parser that raises ValueError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def check_with_bench_parser(bench_args: list[str]) -> None:
    """Parse a pod's ``bench ...`` arguments with ``mserve bench``'s own parser (the index,
    which Kubernetes fills in, as 0); ValueError with argparse's message when they do not."""
    from mserve.cli import bench
    from mserve.deploy.benchjob import INDEX_ENV

    root = _Refusing(prog="mserve", add_help=False)
    bench.register(root.add_subparsers(parser_class=_Refusing))
    root.parse_args([a.replace(f"$({INDEX_ENV})", "0") for a in bench_args])


def run(args: argparse.Namespace) -> int:
    from mserve.deploy.benchjob import BenchJob, write_bench_job

    try:
        extra = tuple(token for text in args.bench_arg for token in shlex.split(text))
        job = BenchJob(
            target=args.target,
            model=args.model,
            workers=args.workers,
            concurrency=args.concurrency,
            rate=args.rate,
            arrival=args.arrival,
            duration_s=args.duration,
            warmup_s=args.warmup,
            window_s=args.window,
            protocol=args.protocol,
            model_version=args.model_version,
            batch_size=args.batch_size,
            timeout_s=args.timeout,
            start_at=args.start_at,
            extra_args=extra,
            name=args.name,
            namespace=args.namespace,
            image=args.image,
            results_pvc=args.results_pvc,
            cpu=args.cpu,
            memory=args.memory,
            api_key_secret=args.api_key_secret,
        )
        check_with_bench_parser(job.bench_args())
    except ValueError as exc:  # shlex's "No closing quotation" included
        print(f"mserve deploy bench-job: error: {exc}", file=sys.stderr)
        return USAGE
    try:
        paths = write_bench_job(args.out, job)
    except OSError as exc:
        print(f"mserve deploy bench-job: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return FAILURE
    return print_written(paths, args.json)
