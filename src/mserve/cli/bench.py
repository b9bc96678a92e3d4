"""``mserve bench URL``: load-test a serving endpoint and report figures a user can trust."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK, USAGE
from mserve.errors import ConfigError, NotFound

EPILOG = """
examples:
  mserve bench http://127.0.0.1:8000 -m digits --concurrency 1,4,16
  mserve bench http://127.0.0.1:8000 -m digits --rate 100:1000:300 --arrival poisson
  mserve bench http://127.0.0.1:8000 -m digits --concurrency 1 --slo p99=5ms --json
  mserve bench http://127.0.0.1:9000/score --protocol http --body req.json --rate 200
  mserve bench https://host:8000 -m digits -H 'Authorization: Bearer KEY' --ca-file ca.pem
  mserve bench grpcs://host:8001 -m digits --protocol v2-grpc -H 'Authorization: Bearer KEY'

Latency in open loop (--rate) counts from each request's intended send time, so a server
that stalls cannot hide it (no coordinated omission). Each step is VALID or INVALID with its
reasons (unstable, generator CPU > 90%, sends lagging > 1 ms at p99, achieved rate > 1% under
the requested, requests that could not be started).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        # no abbreviations: -H values are redacted from saved runs by the option's full name
        allow_abbrev=False,
        help="load-test a V2, TF Serving or HTTP endpoint: latency, throughput, SLO search",
        description=(
            "Load-test a model served over the Open Inference Protocol V2, over HTTP or gRPC "
            "(mserve, Triton, KServe, MLServer, ...), over TF Serving's REST API, or any HTTP "
            "endpoint. Closed loop (--concurrency) or open loop (--rate); each step warms up, "
            "then measures in windows until stable."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("-m", "--model", help="model name (V2 and TF Serving protocols)")
    p.add_argument("-x", "--model-version", default=None, help="model version (default: latest)")
    p.add_argument(
        "--protocol",
        default="v2-json",
        choices=["v2-json", "v2-binary", "v2-grpc", "tfserving", "http"],
        help=(
            "how to talk to the target: V2 JSON or binary tensors, V2 over gRPC (URL "
            "grpc://HOST:PORT, or grpcs:// over TLS), TF Serving's REST API (row-format "
            ":predict), or any HTTP endpoint (default: v2-json)"
        ),
    )
    sec = p.add_argument_group("headers and TLS (https:// and grpcs:// URLs)")
    sec.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header for every request, metadata and statistics reads included, e.g. "
        "-H 'Authorization: Bearer KEY' (repeatable; over gRPC as metadata, the name "
        "lower-cased; saved runs keep the name, not the value)",
    )
    sec.add_argument(
        "--ca-file",
        default=None,
        metavar="PEM",
        help="CA certificate(s) that verify the server's certificate (default: the system's)",
    )
    sec.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate: for testing only, never in production",
    )
    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        default=None,
        help="closed loop: concurrent requesters, a list '1,4,16' or START:STOP:STEP",
    )
    load.add_argument(
        "--rate",
        default=None,
        help="open loop: requests/s, a list '100,500' or START:STOP:STEP",
    )
    load.add_argument(
        "--arrival",
        default="constant",
        choices=["constant", "poisson"],
        help="open-loop arrivals (default: constant)",
    )
    load.add_argument("--seed", type=int, default=0, help="seed for data and schedules (default 0)")
    load.add_argument(
        "--workers", type=int, default=1, help="generator processes, merged (default: 1)"
    )
    load.add_argument(
        "--start-at",
        metavar="TIME",
        default=None,
        help="wait until this wall-clock time (Unix seconds, or ISO 8601; UTC unless it says "
        "otherwise) before starting: generators on several machines start together, and "
        "'mserve results merge' finds their steps overlapping",
    )
    load.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open loop: most connections kept open (default: 1024)",
    )
    load.add_argument(
        "--timeout", type=float, default=30.0, help="per-request timeout in s (default: 30)"
    )
    data = p.add_argument_group("inputs (V2 and TF Serving)")
    data.add_argument("--batch-size", type=int, default=1, help="rows per request (default: 1)")
    data.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:D1,D2",
        help="size of an input's free dimensions (repeatable)",
    )
    data.add_argument(
        "--input-data", type=Path, default=None, help="inputs from a .npy, .npz or .json file"
    )
    data.add_argument(
        "--expect",
        type=Path,
        default=None,
        help="JSON {output: values}: count a response whose outputs differ as an error",
    )
    data.add_argument(
        "--tolerance", type=float, default=1e-4, help="tolerance for --expect (default: 1e-4)"
    )
    http = p.add_argument_group("plain HTTP (--protocol http)")
    http.add_argument("--method", default="POST", help="HTTP method (default: POST)")
    http.add_argument("--body", type=Path, default=None, help="file holding the request body")
    http.add_argument(
        "--content-type", default="application/json", help="body content type (default: json)"
    )
    http.add_argument(
        "--expect-status", type=int, default=200, help="status that counts as success"
    )
    http.add_argument("--expect-contains", default=None, help="text a good response contains")
    m = p.add_argument_group("measurement")
    m.add_argument("--warmup", type=float, default=2.0, help="seconds not counted (default: 2)")
    m.add_argument("--window", type=float, default=2.0, help="window length in s (default: 2)")
    m.add_argument(
        "--stability",
        type=float,
        default=10.0,
        help="percent the last 3 windows may differ in throughput and p99 (default: 10)",
    )
    m.add_argument(
        "--max-duration",
        type=float,
        default=30.0,
        help="longest measured time per step; a step not stable by then is INVALID (default 30)",
    )
    m.add_argument(
        "--duration", type=float, default=None, help="fixed measured seconds per step instead"
    )
    m.add_argument(
        "--slo",
        default=None,
        help="find the highest load meeting e.g. p99=20ms, starting from the first load given",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    out.add_argument("-o", "--output", type=Path, default=None, help="write the result JSON here")
    out.add_argument("-q", "--quiet", action="store_true", help="no live view")
    out.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write a report, HTML, CSV or Markdown by the suffix (see 'mserve report')",
    )
    out.add_argument(
        "--db",
        metavar="LOCATION",
        default=None,
        help="results database to save the run in: a path or sqlite:///PATH (default: "
        "$MSERVE_RESULTS_DB, else ~/.local/share/mserve/results.db; see 'mserve results')",
    )
    out.add_argument(
        "--no-save", action="store_true", help="do not save the run in the results database"
    )
    gate = p.add_argument_group("gates (exit status 1 when broken, for CI pipelines)")
    gate.add_argument(
        "--assert",
        dest="asserts",
        default=None,
        metavar="BOUNDS",
        help="bounds every step must meet, e.g. 'p99<20ms,errors==0,throughput>=500' (figures: "
        "p50 p90 p95 p99 p99.9 max mean min in us/ms/s, throughput, errors, error_rate)",
    )
    gate.add_argument(
        "--baseline",
        default=None,
        metavar="RUN",
        help="the run to compare with: a result JSON file, or a run of the results database "
        "(an id, a unique prefix, latest, latest~N)",
    )
    gate.add_argument(
        "--fail-on",
        default=None,
        metavar="CHANGES",
        help="changes against --baseline that fail the run, e.g. 'p99>+10%%,throughput<-5%%'",
    )
    p.set_defaults(run=run)


def _loads(args: argparse.Namespace) -> list[Any]:
    from mserve.bench import schedule
    from mserve.bench.generator import Load

    if args.concurrency and args.rate:
        raise ValueError("give either --concurrency (closed loop) or --rate (open loop), not both")
    if args.rate:
        return [
            Load(
                "open",
                rate=r,
                arrival=args.arrival,
                seed=args.seed,
                max_connections=args.max_connections,
            )
            for r in schedule.parse_rates(args.rate)
        ]
    levels = schedule.parse_concurrency(args.concurrency or "1")
    return [Load("closed", concurrency=c, seed=args.seed) for c in levels]


def _target(args: argparse.Namespace) -> Any:
    from mserve.bench.headers import parse_headers
    from mserve.bench.targets import make_target
    from mserve.bench.tls import ClientTls
    from mserve.bench.workload import parse_shapes

    headers = parse_headers(args.headers)
    tls = ClientTls.from_options(args.ca_file, args.insecure)
    if args.protocol == "http":
        return make_target(
            "http",
            args.url,
            method=args.method,
            body=args.body,
            content_type=args.content_type,
            expect_status=args.expect_status,
            expect_contains=args.expect_contains,
            headers=headers,
            tls=tls,
        )
    if not args.model:
        raise ValueError(f"--protocol {args.protocol} needs the model's name: -m MODEL")
    return make_target(
        args.protocol,
        args.url,
        model=args.model,
        version=args.model_version,
        batch_size=args.batch_size,
        shapes=parse_shapes(args.shape),
        seed=args.seed,
        input_data=args.input_data,
        expect=args.expect,
        tolerance=args.tolerance,
        headers=headers,
        tls=tls,
    )


def run(args: argparse.Namespace) -> int:
    from mserve.bench import gates, schedule
    from mserve.bench.headers import redact_command
    from mserve.bench.report import PlotlyMissing, report_format, write_report
    from mserve.bench.result import Settings
    from mserve.bench.runner import benchmark
    from mserve.bench.slo import parse_slo
    from mserve.bench.store import default_location, location_path, open_store
    from mserve.cli.bench_view import LiveView, print_summary

    try:
        loads = _loads(args)
        target = _target(args)
        slo = parse_slo(args.slo) if args.slo else None
        if args.workers < 1 or args.batch_size < 1:
            raise ValueError("--workers and --batch-size must be at least 1")
        for name, value in (("--warmup", args.warmup), ("--window", args.window)):
            if value < 0 or (name == "--window" and value <= 0):
                raise ValueError(f"{name} must be positive")
        asserts = gates.parse_asserts(args.asserts) if args.asserts else []
        fail_on = gates.parse_fail_on(args.fail_on) if args.fail_on else []
        if bool(fail_on) != bool(args.baseline):
            raise ValueError("--fail-on and --baseline go together")
        location = None
        if not args.no_save:
            location = location_path(args.db or default_location(os.environ, Path.home()))
        baseline = _baseline(args.baseline, args.db) if args.baseline else None
        report_fmt = report_format(args.report) if args.report else None
        start_at = schedule.parse_start_at(args.start_at, time.time()) if args.start_at else None
    except (ValueError, ConfigError, NotFound, PlotlyMissing) as exc:
        print(f"mserve bench: error: {exc}", file=sys.stderr)
        return USAGE
    settings = Settings(
        warmup_s=args.warmup,
        window_s=args.window,
        stability_pct=args.stability,
        max_duration_s=args.max_duration,
        duration_s=args.duration,
        timeout_s=args.timeout,
        workers=args.workers,
        seed=args.seed,
        max_connections=args.max_connections,
    )
    if start_at is not None:
        wait_until(start_at)
    view = LiveView(enabled=not args.quiet)
    with view:
        command = redact_command(sys.argv[1:])  # a key never reaches a saved run
        result = _run_loop(benchmark(target, loads, settings, slo, view.update, command))
    doc = json.dumps(result, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(doc + "\n")
    if args.report:
        write_report(result, args.report, report_fmt)
    if location is not None:
        with open_store(location) as store:
            run_id = store.save(result)
        print(f"mserve bench: saved as run {run_id} in {location}", file=sys.stderr)
    if args.json:
        print(doc)
    else:
        print_summary(result)
    if all(step["count"] == 0 for step in result["steps"]):
        print(f"mserve bench: every request failed{_refusal_hint(result)}", file=sys.stderr)
        return FAILURE
    broken = gates.check_asserts(result, asserts)
    if baseline is not None:
        regressions, _, missing = gates.check_fail_on(result, baseline, fail_on)
        broken += regressions
        if missing:
            print(f"mserve bench: not in the baseline: {', '.join(missing)}", file=sys.stderr)
    for line in broken:
        print(f"mserve bench: gate broken: {line}", file=sys.stderr)
    return FAILURE if broken else OK


def _refusal_hint(result: dict[str, Any]) -> str:
    """What to do when the server refused the requests (401 / 403, gRPC UNAUTHENTICATED or
    PERMISSION_DENIED), as a plain HTTP target, which reads nothing first, learns it."""
    from mserve.bench.headers import NEEDS_KEY

    refusals = {"http_401", "http_403", "grpc_16", "grpc_7"}
    kinds = {
        kind
        for step in result["steps"]
        for errors in (step.get("errors", {}), step.get("warmup", {}).get("errors", {}))
        for kind in errors
    }
    return f" ({', '.join(sorted(kinds & refusals))}): {NEEDS_KEY}" if kinds & refusals else ""


def _baseline(ref: str, db: str | None) -> dict[str, Any]:
    """The baseline run: a result JSON file, else a run of the results database."""
    from mserve.bench.result import SCHEMA
    from mserve.bench.store import default_location, open_store

    path = Path(ref)
    if not path.is_file() and (path.suffix == ".json" or "/" in ref):
        raise ValueError(f"--baseline {ref}: no such result file")
    if not path.is_file():
        with open_store(db or default_location(os.environ, Path.home())) as store:
            return store.get(ref)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--baseline {ref}: not a result JSON file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"--baseline {ref}: not a benchmark result ({SCHEMA})")
    return doc


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def wait_until(when: float) -> None:
    """Sleep until the wall-clock time ``when``; say so when it has already passed."""
    ahead = when - time.time()
    if ahead < -1:
        print(f"mserve bench: --start-at passed {-ahead:.1f} s ago; starting now", file=sys.stderr)
    elif ahead > 0:
        print(f"mserve bench: waiting {ahead:.1f} s for --start-at", file=sys.stderr, flush=True)
        time.sleep(ahead)
