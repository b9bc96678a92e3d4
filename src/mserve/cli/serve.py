"""``mserve serve REPO``: serve a model repository over the Open Inference Protocol V2."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mserve.config import ServerSettings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model repository (Open Inference Protocol V2 over HTTP and gRPC)",
        description=(
            "Load every model of REPO and serve it over the Open Inference Protocol V2 (KServe / "
            "Triton) over HTTP, with the binary tensor, model repository, statistics and model "
            "configuration extensions, over gRPC with --grpc-port, and TF Serving's REST API "
            "(/v1/models/NAME:predict) on the HTTP port. Prometheus metrics are at /metrics, a "
            "live dashboard at /dashboard. A model that fails to load is reported; the others "
            "serve."
        ),
    )
    p.add_argument("repository", type=Path, metavar="REPO", help="model repository directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve V2 over gRPC on this port (Triton uses 8001; default: no gRPC)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each loading every model (default: 1)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=64.0,
        help="largest request body accepted, in MiB; larger gets 413 (default: 64)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: warning)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mserve.server.app import serve

    if args.workers < 1:
        print("mserve: error: --workers must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        log_level=args.log_level,
    )

    def announce(msg: str) -> None:
        print(f"mserve: {msg}", file=sys.stderr, flush=True)

    serve(args.repository, settings, announce)
    return 0
