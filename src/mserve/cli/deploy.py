"""``mserve deploy TARGET ...``: write the files that deploy and operate mserve (the work is
:mod:`mserve.deploy`; this is its skin). One sub-command per target: ``docker``
(:mod:`mserve.cli.deploy_docker`), ``kubernetes``, ``kserve``, ``tfserving``
(:mod:`mserve.cli.deploy_k8s`), ``bench-job`` (:mod:`mserve.cli.deploy_benchjob`) and
``monitoring`` (here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mserve.cli import deploy_benchjob, deploy_docker, deploy_k8s
from mserve.cli.console import print_written
from mserve.cli.exit_codes import FAILURE, USAGE

if TYPE_CHECKING:
    from mserve.deploy.prometheus import ScrapeSecurity

MONITORING_EPILOG = """\
files written into OUT (created if missing, replaced if present):
  grafana-dashboard.json  a Grafana dashboard; import it and pick the Prometheus data source
  mserve-alerts.yaml      Prometheus alert rules (check with: promtool check rules FILE)
  prometheus.yml          a minimal Prometheus config scraping --target, loading the rules

examples:
  mserve deploy monitoring ops/
  mserve deploy monitoring ops/ --p99-ms 50 --error-ratio 0.001 --target 10.0.0.5:8000
  mserve deploy monitoring ops/ --target host:8000 --scheme https --ca-file /etc/mserve/ca.pem \
      --bearer-token-file /etc/mserve/metrics.key
  prometheus --config.file=ops/prometheus.yml
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "deploy",
        help="write deployment files: Docker, Kubernetes, KServe, TF Serving, monitoring",
        description=(
            "Write the files that deploy and operate mserve: a Docker build context, Kubernetes "
            "manifests, a KServe InferenceService, a TF Serving layout, a distributed load Job, "
            "monitoring assets. Nothing is applied to a cluster; only 'docker --build' runs "
            "anything."
        ),
    )
    targets = p.add_subparsers(dest="deploy_target", metavar="TARGET", required=True)
    deploy_docker.register(targets)
    deploy_k8s.register(targets)
    deploy_benchjob.register(targets)
    _register_monitoring(targets)


def _register_monitoring(targets: Any) -> None:
    from mserve.deploy.monitoring import AlertThresholds

    default = AlertThresholds()
    p = targets.add_parser(
        "monitoring",
        help="a Grafana dashboard, Prometheus alert rules and a scrape config",
        description=(
            "Write a Grafana dashboard, Prometheus alert rules and a minimal prometheus.yml over "
            "the metrics of 'mserve serve' (GET /metrics; see docs/metrics.md)."
        ),
        epilog=MONITORING_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="directory to write the files into")
    p.add_argument(
        "--p99-ms",
        type=float,
        default=default.p99_seconds * 1000,
        metavar="MS",
        help="MserveHighP99Latency: p99 end-to-end latency above MS ms (default %(default)g)",
    )
    p.add_argument(
        "--error-ratio",
        type=float,
        default=default.error_ratio,
        metavar="R",
        help="MserveHighErrorRatio: server-side failures above this share (default %(default)g)",
    )
    p.add_argument(
        "--queue-fraction",
        type=float,
        default=default.queue_fraction,
        metavar="F",
        help="MserveQueueNearFull: queue depth / capacity above F (default %(default)g)",
    )
    p.add_argument(
        "--drift-psi",
        type=float,
        default=default.drift_psi,
        metavar="PSI",
        help="MserveInputDrift: an input's PSI above this (default %(default)g)",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="HOST:PORT",
        help="a server for prometheus.yml to scrape; repeatable (default 127.0.0.1:8000)",
    )
    sec = p.add_argument_group(
        "a secured server (paths as Prometheus sees them; relative to prometheus.yml's folder)"
    )
    sec.add_argument(
        "--scheme",
        choices=["http", "https"],
        default=None,
        help="how prometheus.yml scrapes the targets (default: https with --ca-file, else http)",
    )
    sec.add_argument(
        "--bearer-token-file",
        metavar="PATH",
        default=None,
        help="a file holding an API key with the metrics scope, sent as 'Authorization: "
        "Bearer KEY' (Prometheus' authorization.credentials_file)",
    )
    sec.add_argument(
        "--ca-file",
        metavar="PATH",
        default=None,
        help="CA certificate(s) that verify the targets' certificates (tls_config.ca_file)",
    )
    p.add_argument("--json", action="store_true", help='print {"files": [...]} to stdout')
    p.set_defaults(run=run_monitoring)


def run_monitoring(args: argparse.Namespace) -> int:
    from mserve.deploy.monitoring import AlertThresholds, write_monitoring_assets

    try:
        thresholds = AlertThresholds(
            p99_seconds=args.p99_ms / 1000,
            error_ratio=args.error_ratio,
            queue_fraction=args.queue_fraction,
            drift_psi=args.drift_psi,
        )
        security = _security(args)
        paths = write_monitoring_assets(args.out, thresholds, args.target, security)
    except ValueError as exc:
        print(f"mserve deploy monitoring: error: {exc}", file=sys.stderr)
        return USAGE
    except OSError as exc:
        print(f"mserve deploy monitoring: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return FAILURE
    return print_written(paths, args.json)


def _security(args: argparse.Namespace) -> ScrapeSecurity | None:
    """The ScrapeSecurity of --scheme, --bearer-token-file and --ca-file; None when none is
    given (ValueError for a wrong combination, before any file is written)."""
    from mserve.deploy.prometheus import ScrapeSecurity

    if args.scheme is None and args.bearer_token_file is None and args.ca_file is None:
        return None
    scheme = args.scheme or ("https" if args.ca_file is not None else "http")
    return ScrapeSecurity(scheme, args.bearer_token_file, args.ca_file)
