"""``mserve deploy kubernetes | kserve | tfserving``: write Kubernetes manifests, a KServe
InferenceService, or a TF Serving layout (the work is :mod:`mserve.deploy.kubernetes`,
:mod:`mserve.deploy.kserve` and :mod:`mserve.deploy.tfserving`; this is their skin)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mserve.cli.console import print_written
from mserve.cli.exit_codes import FAILURE, USAGE

if TYPE_CHECKING:
    from mserve.deploy.pod import PodShape

KUBERNETES_EPILOG = """\
files written into OUT (created if missing, replaced if present):
  deployment.yaml       the Deployment: probes, resources, a locked-down security context
  service.yaml          a ClusterIP Service: http 8000, grpc 8001, metrics 8002
  hpa.yaml              a HorizontalPodAutoscaler on CPU and on requests in flight
  pdb.yaml              a PodDisruptionBudget (one pod evicted at a time)
  servicemonitor.yaml   a prometheus-operator ServiceMonitor scraping /metrics
  prometheusrule.yaml   mserve's alert rules as a PrometheusRule
  kustomization.yaml    lists the files above: kubectl apply -k OUT
  prometheus-adapter-rules.yaml
                        a rule for prometheus-adapter's config (not applied by kustomize)
  README.md             what the cluster needs, how to apply and try it

examples:
  mserve deploy kubernetes models/ --out k8s/
  mserve deploy kubernetes models/ --out k8s/ --namespace ml --image registry.example/mserve:1 \\
      --gpu 1 --models-pvc model-store --api-keys-secret mserve-keys
  mserve deploy kubernetes models/ --out k8s/ --serve-arg=--request-timeout=2
  kubectl apply -k k8s/
"""

KSERVE_EPILOG = """\
files written into OUT (created if missing, replaced if present):
  inferenceservice.yaml  a serving.kserve.io/v1beta1 InferenceService (raw deployment mode)
  README.md              apply, call it through the ingress, bench it

examples:
  mserve deploy kserve models/ --out kserve/ --namespace ml --image registry.example/mserve:1
  mserve deploy kserve models/ --out kserve/ --grpc --min-replicas 2
  kubectl apply -f kserve/inferenceservice.yaml
"""

TFSERVING_EPILOG = """\
files written into OUT (created if missing; a model version already there is replaced):
  models/NAME/VERSION/  each model as a SavedModel (saved_model.pb, variables/)
  models.config         TF Serving's --model_config_file (ModelServerConfig, text format)
  monitoring.config     TF Serving's --monitoring_config_file (Prometheus metrics)
  README.md             the docker run line of tensorflow/serving, curl and mserve bench

examples:
  mserve deploy tfserving exported/iris --out tfs/
  mserve deploy tfserving digits=digits.keras iris=exported/iris --out tfs/ --version 2
  mserve bench http://127.0.0.1:8501 --protocol tfserving -m digits
"""


def register(targets: Any) -> None:
    """Add the kubernetes, kserve and tfserving targets of ``mserve deploy``."""
    _register_kubernetes(targets)
    _register_kserve(targets)
    _register_tfserving(targets)


def _pod_options(p: argparse.ArgumentParser, what: str) -> None:
    """Options of the pod, shared by the kubernetes and kserve targets."""
    p.add_argument("repo", type=Path, metavar="REPO", help="the model repository to deploy")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
    p.add_argument(
        "--name",
        help=f"name of the {what} (default: the repository folder's name)",
    )
    p.add_argument(
        "--image",
        help="the image (default: NAME:VERSION, the tag 'mserve deploy docker' gives)",
    )
    p.add_argument("--namespace", help="Kubernetes namespace (default: the current one)")
    res = p.add_argument_group("resources of each pod")
    res.add_argument("--cpu", default="1", help="CPU request (default %(default)s)")
    res.add_argument("--memory", default="1Gi", help="memory request (default %(default)s)")
    res.add_argument(
        "--cpu-limit", default=None, help="CPU limit, or 'none' (default: none; a limit throttles)"
    )
    res.add_argument(
        "--memory-limit", default="2Gi", help="memory limit, or 'none' (default %(default)s)"
    )
    res.add_argument(
        "--gpu", type=int, default=0, metavar="N", help="NVIDIA GPUs per pod (default 0)"
    )
    srv = p.add_argument_group("the server")
    srv.add_argument(
        "--models-pvc",
        metavar="CLAIM",
        help="mount this PersistentVolumeClaim read-only at /models (default: the models are in "
        "the image)",
    )
    srv.add_argument(
        "--api-keys-secret",
        metavar="SECRET",
        help="a Secret whose key 'keys' holds the server's API keys (set as $MSERVE_API_KEYS) "
        "and whose key 'metrics-key' holds a key Prometheus scrapes with",
    )
    srv.add_argument("--workers", type=int, default=1, help="server processes per pod (default 1)")
    srv.add_argument(
        "--unready-grace",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="at SIGTERM, serve on while unready this long; more than the readiness probe "
        "needs to notice, 10 s (default %(default)g)",
    )
    srv.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="at SIGTERM, longest wait for accepted requests (default %(default)g)",
    )
    srv.add_argument(
        "--startup-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="time allowed for loading the models (default %(default)s)",
    )
    srv.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more 'mserve serve' argument, written --serve-arg=--request-timeout=2 "
        "(repeatable)",
    )
    p.add_argument("--json", action="store_true", help='print {"files": [...]} to stdout')


def _register_kubernetes(targets: Any) -> None:
    p = targets.add_parser(
        "kubernetes",
        help="Kubernetes manifests: Deployment, Service, autoscaler, monitoring",
        description=(
            "Write Kubernetes manifests serving REPO with the image of 'mserve deploy docker': "
            "a Deployment, a Service, a HorizontalPodAutoscaler, a PodDisruptionBudget, a "
            "ServiceMonitor and a PrometheusRule, and a kustomization over them "
            "(kubectl apply -k OUT). Nothing is applied. See docs/deploy.md."
        ),
        epilog=KUBERNETES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _pod_options(p, "Deployment and its objects")
    scale = p.add_argument_group("autoscaling")
    scale.add_argument("--replicas", type=int, default=2, help="pods to run (default %(default)s)")
    scale.add_argument(
        "--min-replicas", type=int, help="the autoscaler's minimum (default: --replicas)"
    )
    scale.add_argument(
        "--max-replicas", type=int, help="the autoscaler's maximum (default: 4 x the minimum)"
    )
    scale.add_argument(
        "--target-cpu",
        type=int,
        default=70,
        metavar="PERCENT",
        help="CPU use, in %% of the request, to scale at (default %(default)s)",
    )
    scale.add_argument(
        "--target-inflight",
        type=float,
        default=8.0,
        metavar="N",
        help="requests in flight per pod to scale at (default %(default)g)",
    )
    scale.add_argument(
        "--no-custom-metric",
        action="store_true",
        help="scale on CPU alone (no prometheus-adapter in the cluster)",
    )
    scale.add_argument(
        "--scale-down-window",
        type=int,
        default=300,
        metavar="SECONDS",
        help="lower load this long before pods are removed (default %(default)s)",
    )
    mon = p.add_argument_group("monitoring (prometheus-operator)")
    mon.add_argument(
        "--monitor-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label for the ServiceMonitor and PrometheusRule, as your Prometheus selects "
        "them, e.g. release=kube-prometheus-stack (repeatable)",
    )
    mon.add_argument(
        "--no-prometheus-operator",
        action="store_true",
        help="leave out the ServiceMonitor and PrometheusRule (no prometheus-operator CRDs)",
    )
    p.set_defaults(run=_guarded("kubernetes", run_kubernetes))


def _register_kserve(targets: Any) -> None:
    p = targets.add_parser(
        "kserve",
        help="a KServe InferenceService",
        description=(
            "Write a KServe InferenceService (serving.kserve.io/v1beta1) whose predictor runs "
            "the image of 'mserve deploy docker' on REPO, in KServe's raw deployment mode, over "
            "HTTP (V2 and TF Serving REST) or, with --grpc, V2 over gRPC. Nothing is applied. "
            "See docs/deploy.md."
        ),
        epilog=KSERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _pod_options(p, "InferenceService")
    p.add_argument(
        "--min-replicas", type=int, default=1, help="fewest predictor pods (default %(default)s)"
    )
    p.add_argument(
        "--max-replicas", type=int, help="most predictor pods (default: 4 x the minimum)"
    )
    p.add_argument(
        "--grpc", action="store_true", help="route V2 over gRPC (h2c, port 8001) instead of HTTP"
    )
    p.set_defaults(run=_guarded("kserve", run_kserve))


def _register_tfserving(targets: Any) -> None:
    p = targets.add_parser(
        "tfserving",
        help="a TensorFlow Serving model layout and configs",
        description=(
            "Lay TensorFlow models out for TensorFlow Serving's own server: each SavedModel "
            "directory is copied, each Keras .keras / .h5 file exported as a SavedModel, under "
            "OUT/models/NAME/VERSION, with models.config, monitoring.config and a README. "
            "Other models (ONNX, ...) are for 'mserve serve'. See docs/deploy.md."
        ),
        epilog=TFSERVING_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="[NAME=]PATH: a SavedModel directory or a Keras file (NAME default: the file's "
        "stem or the directory's name)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--name", help="the model's name, when one MODEL is given")
    p.add_argument("--version", type=int, default=1, metavar="N", help="version folder (default 1)")
    p.add_argument("--json", action="store_true", help='print {"files": [...]} to stdout')
    p.set_defaults(run=_guarded("tfserving", run_tfserving))


def _guarded(
    target: str, run: Callable[[argparse.Namespace], list[Path]]
) -> Callable[[argparse.Namespace], int]:
    """``run`` with its ValueError as a usage error and its OSError as a failure, and the
    written paths printed."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            paths = run(args)
        except ValueError as exc:
            print(f"mserve deploy {target}: error: {exc}", file=sys.stderr)
            return USAGE
        except OSError as exc:
            print(f"mserve deploy {target}: error: cannot write {args.out}: {exc}", file=sys.stderr)
            return FAILURE
        return print_written(paths, args.json)

    return guarded


def _name(args: argparse.Namespace) -> str:
    from mserve.deploy.container import default_name
    from mserve.deploy.pod import check_name

    if args.name is not None:
        return check_name(args.name, "--name")
    name = default_name(args.repo)
    try:
        return check_name(name, "the name taken from the repository folder,")
    except ValueError as exc:
        raise ValueError(f"{exc}; pass --name NAME") from None


def _pod(args: argparse.Namespace, name: str) -> PodShape:
    from mserve.deploy.container import ServeShape, check_args, default_image
    from mserve.deploy.pod import PodShape, Resources

    cpu_limit = None if args.cpu_limit in (None, "none", "") else args.cpu_limit
    memory_limit = None if args.memory_limit in ("none", "") else args.memory_limit
    return PodShape(
        image=args.image or default_image(name),
        serve=ServeShape(
            workers=args.workers,
            unready_grace_s=args.unready_grace,
            drain_timeout_s=args.drain_timeout,
            extra_args=check_args(args.serve_arg),
        ),
        resources=Resources(args.cpu, args.memory, cpu_limit, memory_limit, args.gpu),
        models_pvc=args.models_pvc,
        api_keys_secret=args.api_keys_secret,
        startup_timeout_s=args.startup_timeout,
    )


def _labels(texts: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for text in texts:
        key, eq, value = text.partition("=")
        if not eq or not key:
            raise ValueError(f"--monitor-label {text!r}: expected KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def run_kubernetes(args: argparse.Namespace) -> list[Path]:
    from mserve.deploy.container import repository_models
    from mserve.deploy.kubernetes import KubernetesSpec, write_kubernetes

    models = repository_models(args.repo)
    name = _name(args)
    spec = KubernetesSpec(
        name=name,
        pod=_pod(args, name),
        namespace=args.namespace,
        min_replicas=args.min_replicas if args.min_replicas is not None else args.replicas,
        max_replicas=args.max_replicas,
        target_cpu=args.target_cpu,
        target_inflight=None if args.no_custom_metric else args.target_inflight,
        scale_down_window_s=args.scale_down_window,
        monitor_labels=_labels(args.monitor_label),
        prometheus_operator=not args.no_prometheus_operator,
    )
    return write_kubernetes(args.out, spec, models)


def run_kserve(args: argparse.Namespace) -> list[Path]:
    from mserve.deploy.container import repository_models
    from mserve.deploy.kserve import KServeSpec, write_kserve

    models = repository_models(args.repo)
    name = _name(args)
    spec = KServeSpec(
        name=name,
        pod=_pod(args, name),
        namespace=args.namespace,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        grpc=args.grpc,
    )
    return write_kserve(args.out, spec, models)


def run_tfserving(args: argparse.Namespace) -> list[Path]:
    from mserve.deploy.tfserving import (
        TFServingModel,
        default_model_name,
        parse_model_arg,
        write_tfserving,
    )

    if args.name is not None and len(args.models) != 1:
        raise ValueError(
            f"--name names one model, but {len(args.models)} were given: write NAME=PATH for each"
        )
    models = []
    for text in args.models:
        name, path = parse_model_arg(text)
        if args.name is not None:
            name = args.name
        models.append(TFServingModel(name or default_model_name(path), path))
    return write_tfserving(args.out, models, args.version)
