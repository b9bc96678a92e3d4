"""``mserve serve REPO``: serve a model repository over the Open Inference Protocol V2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mserve.config import ServerSettings
from mserve.server.auth import ENV_VAR


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
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve GET /metrics and the /v2/health routes, and nothing else, on this port, "
        "for a scraper or probe kept apart from inference traffic (Triton uses 8002; default: "
        "/metrics on the HTTP port only)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each loading every model (default: 1)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="rescan REPO this often and act on what changed: reload a model whose files or "
        "config.yaml changed (the new versions load and warm up beside the old ones, then switch "
        "in), load a new model folder, unload a removed one. A broken new version or config "
        "leaves the old versions serving; the error is logged, shown as the reason in the "
        "repository index and counted in mserve_model_load_failures_total, and it is not tried "
        "again until its files change. Each worker polls on its own (default: 0, no polling)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=64.0,
        help="largest request body accepted, in MiB; larger gets 413 (default: 64)",
    )
    limits = p.add_argument_group("limits (each refused with a clear error)")
    limits.add_argument(
        "--max-header-kb",
        type=float,
        default=16.0,
        help="largest request line and headers, in KiB; larger gets 431 (default: 16)",
    )
    limits.add_argument(
        "--max-tensor-elements",
        type=int,
        default=64 * 1024 * 1024,
        help="most elements of all inputs of one request together; more gets 400 "
        "(default: 67108864; batch sizes are bounded by each model's max_batch_size)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="most open HTTP connections per worker; more are answered 503 and closed "
        "(default: 1024)",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="deadline of a request whose client sets none (X-Request-Timeout, the 'timeout' "
        "parameter or gRPC's deadline); past it, a request not yet computed gets 504 "
        "(default: 0, none)",
    )
    limits.add_argument(
        "--unready-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at SIGTERM, keep serving this long while /v2/health/ready says 503, so that load "
        "balancers stop sending before connections are refused (Kubernetes: a few seconds "
        "more than the readiness probe's period; default: 0)",
    )
    limits.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="at SIGTERM, longest wait for accepted requests to be answered (default: 30)",
    )
    security = p.add_argument_group("security")
    security.add_argument(
        "--api-keys",
        metavar="FILE",
        default="",
        help="API keys and their scopes, one 'KEY SCOPE[,SCOPE]' a line (scopes: inference, "
        "management, metrics, *); or set MSERVE_API_KEYS. Without keys the server is open. "
        "Clients send 'Authorization: Bearer KEY' (gRPC: authorization metadata); health "
        "probes and /openapi.json stay open",
    )
    security.add_argument(
        "--enable-management",
        action="store_true",
        help="allow the model load / unload API (off by default: 403)",
    )
    security.add_argument(
        "--tls-cert", metavar="PEM", default="", help="certificate chain: serve HTTPS and gRPC+TLS"
    )
    security.add_argument("--tls-key", metavar="PEM", default="", help="the certificate's key")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: warning)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mserve.server.app import serve

    for flag, value, least in (
        ("--workers", args.workers, 1),
        ("--max-header-kb", args.max_header_kb, 1),
        ("--max-tensor-elements", args.max_tensor_elements, 1),
        ("--max-connections", args.max_connections, 1),
        ("--request-timeout", args.request_timeout, 0),
        ("--drain-timeout", args.drain_timeout, 0),
        ("--unready-grace", args.unready_grace, 0),
        ("--poll-interval", args.poll_interval, 0),
    ):
        if value < least:
            print(f"mserve: error: {flag} must be at least {least}, got {value}", file=sys.stderr)
            return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        workers=args.workers,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        log_level=args.log_level,
        poll_interval_s=args.poll_interval,
        max_header_bytes=int(args.max_header_kb * 1024),
        max_tensor_elements=args.max_tensor_elements,
        max_connections=args.max_connections,
        request_timeout_s=args.request_timeout,
        drain_s=args.drain_timeout,
        unready_s=args.unready_grace,
        api_keys=args.api_keys,
        api_keys_env=os.environ.get(ENV_VAR, ""),
        management=args.enable_management,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )

    def announce(msg: str) -> None:
        print(f"mserve: {msg}", file=sys.stderr, flush=True)

    serve(args.repository, settings, announce)
    return 0
