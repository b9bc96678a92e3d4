"""``mserve monitor URL``: a live terminal view of a serving server's ``/metrics``."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Collection
from typing import Any

from rich.console import RenderableType
from rich.live import Live
from rich.text import Text

from mserve.bench.headers import parse_headers
from mserve.bench.tls import ClientTls
from mserve.cli.console import console
from mserve.cli.exit_codes import OK, USAGE
from mserve.errors import ModelNotFound, MserveError
from mserve.monitor.rates import Rates, rates
from mserve.monitor.scrape import HttpScraper, Scraper, metrics_url
from mserve.monitor.view import as_json, screen

EPILOG = """
figures (each over the last interval):
  req/s, err/s    requests (every outcome), and those that failed, per second
  mean/p50/p99    time in the server of successful requests, ms (p50/p99 from the histogram's
                  buckets; a Triton server gives them only with summaries enabled)
  queue, compute  mean ms waiting for an instance, and computing (input + infer + output)
  batch           rows per model execution; queued: requests waiting now

servers: mserve (mserve_* metrics) and Triton (nv_inference_*; its metrics port, 8002 by
default). Exit codes: 0 done, 1 the server refuses the key (401 / 403), 4 the URL answers
without such metrics, 5 it cannot be reached.

examples:
  mserve monitor http://127.0.0.1:8000
  mserve monitor http://127.0.0.1:8002/metrics --model resnet --interval 2
  mserve monitor 127.0.0.1:8000 --json --count 60 > figures.jsonl
  mserve monitor https://host:8000 -H 'Authorization: Bearer KEY' --ca-file ca.pem
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "monitor",
        # no abbreviations: -H values are redacted from saved runs by the option's full name
        allow_abbrev=False,
        help="watch a serving server's metrics live in the terminal",
        description=(
            "Scrape URL/metrics of an mserve or Triton server every --interval seconds and show "
            "per model requests/s, errors/s, latency (mean, p50, p99), queue and compute time, "
            "batch size and queue depth, with the server's in-flight requests, CPU and memory."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL", help="the server (http[s]://host:port) or its metrics URL")
    p.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        metavar="S",
        help="seconds between refreshes (default: 1.0)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="stop after N refreshes (default: until Ctrl-C)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per refresh, one a line, instead of the table",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="show only this model (repeatable; default: every model)",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        metavar="S",
        help="seconds to wait for each scrape (default: 5.0)",
    )
    p.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header for every scrape, e.g. -H 'Authorization: Bearer KEY' (a key with the "
        "metrics scope; repeatable)",
    )
    p.add_argument(
        "--ca-file",
        default=None,
        metavar="PEM",
        help="CA certificate(s) that verify an https server (default: the system's)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate: for testing only, never in production",
    )
    p.set_defaults(run=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        url = metrics_url(args.url)
        tls = ClientTls.from_options(args.ca_file, args.insecure)
        scrape = HttpScraper(url, args.timeout, parse_headers(args.headers), tls)
    except ValueError as exc:
        print(f"mserve monitor: error: {exc}", file=sys.stderr)
        return USAGE
    if args.count is not None and args.count < 1:
        print("mserve monitor: error: --count must be at least 1", file=sys.stderr)
        return USAGE
    out = console()
    started = time.monotonic()
    try:
        if args.json:
            watch(scrape, _json_lines(url, started), args.interval, args.count, args.model)
        elif out.is_terminal:
            with Live(console=out, auto_refresh=False) as live:
                view = _Screen(url, started, lambda r: live.update(r, refresh=True))
                watch(scrape, view.show, args.interval, args.count, args.model)
        else:  # captured: each refresh printed below the last, without ANSI codes

            def emit(renderable: RenderableType) -> None:
                out.print(renderable)
                out.print()

            view = _Screen(url, started, emit)
            watch(scrape, view.show, args.interval, args.count, args.model)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch without --count ends
    return OK


Show = Callable[[Rates | None, str], None]


def watch(
    scrape: Scraper,
    show: Show,
    interval: float,
    count: int | None,
    models: Collection[str] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Scrape once (its errors propagate: the URL or a --model is wrong), then every
    ``interval`` seconds scrape and ``show`` the rates since the previous good scrape, ``count``
    times (None: until interrupted). A later failed scrape is shown as ``show(None, message)``
    and the watch goes on."""
    previous = scrape()
    missing = [m for m in models if m not in previous.models]
    if missing:
        raise ModelNotFound(missing[0], known=sorted(m for m in previous.models if m))
    next_at = time.monotonic()
    for _ in itertools.repeat(None) if count is None else range(count):
        next_at += interval
        sleep(max(0.0, next_at - time.monotonic()))
        try:
            latest = scrape()
        except MserveError as exc:
            show(None, str(exc))
            continue
        show(rates(previous, latest, models), "")
        previous = latest


class _Screen:
    """The table view: each refresh rendered and handed to ``emit`` (a Live, or a print)."""

    def __init__(self, url: str, started: float, emit: Callable[[RenderableType], object]):
        self.url = url
        self.started = started
        self.emit = emit
        self.last: Rates | None = None

    def show(self, r: Rates | None, error: str) -> None:
        self.last = r or self.last
        elapsed = time.monotonic() - self.started
        if self.last is None:
            self.emit(Text(f"mserve monitor  {self.url}  last scrape failed: {error}"))
        else:
            self.emit(screen(self.url, self.last, elapsed, error))


def _json_lines(url: str, started: float) -> Show:
    def show(r: Rates | None, error: str) -> None:
        now = round(time.time(), 3)
        line = (
            {"t": now, "url": url, "error": error}
            if r is None
            else (as_json(url, r, time.monotonic() - started, now))
        )
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    return show
