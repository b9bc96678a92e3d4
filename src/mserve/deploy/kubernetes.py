"""Kubernetes manifests for mserve (``mserve deploy kubernetes``): a Deployment of the image
that ``mserve deploy docker`` builds, its Service, a HorizontalPodAutoscaler on CPU and on
requests in flight, a PodDisruptionBudget, a ServiceMonitor and a PrometheusRule for the
prometheus-operator, and the kustomization that applies them together.

Rendering is pure (:func:`kubernetes_manifests`, :func:`kustomization`,
:func:`adapter_rules`); :func:`write_kubernetes` writes the folder. The pod itself is
:mod:`mserve.deploy.pod`'s, shared with the KServe target."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve import __version__
from mserve.deploy.container import GRPC_PORT, HTTP_PORT, METRICS_PATH, METRICS_PORT
from mserve.deploy.files import write_texts, yaml_text
from mserve.deploy.kubernetes_readme import readme
from mserve.deploy.pod import (
    METRICS_KEY_KEY,
    PodShape,
    check_name,
    check_namespace,
    check_replicas,
    container,
    pod_spec,
    scrape_annotations,
)
from mserve.deploy.prometheus import AlertThresholds, alert_rules

__all__ = [
    "ADAPTER_FILE",
    "INFLIGHT_METRIC",
    "KUSTOMIZATION_FILE",
    "KubernetesSpec",
    "adapter_rules",
    "kubernetes_manifests",
    "kustomization",
    "write_kubernetes",
]

INFLIGHT_METRIC = "mserve_inflight_requests"
KUSTOMIZATION_FILE = "kustomization.yaml"
ADAPTER_FILE = "prometheus-adapter-rules.yaml"
README_FILE = "README.md"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF = {"app.kubernetes.io/part-of": "mserve"}

_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"{_LABEL_NAME}?")


@dataclass(frozen=True)
class KubernetesSpec:
    """A deployment of mserve on Kubernetes.

    The HorizontalPodAutoscaler keeps between ``min_replicas`` and ``max_replicas`` pods
    (default four times the minimum), scaling on CPU (``target_cpu`` % of the request) and,
    unless ``target_inflight`` is None, on the requests each pod holds in flight (a custom
    metric served by prometheus-adapter). ``monitor_labels`` go onto the ServiceMonitor and the
    PrometheusRule, for a Prometheus that selects them by label; ``prometheus_operator`` False
    leaves both out, for clusters without its CRDs. ``thresholds``: the alert rules' (default
    :class:`AlertThresholds`)."""

    name: str
    pod: PodShape
    namespace: str | None = None
    min_replicas: int = 2
    max_replicas: int | None = None
    target_cpu: int = 70
    target_inflight: float | None = 8.0
    scale_down_window_s: int = 300
    monitor_labels: tuple[tuple[str, str], ...] = ()
    prometheus_operator: bool = True
    thresholds: AlertThresholds | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.namespace is not None:
            check_namespace(self.namespace)
        check_replicas(self.min_replicas, self.max_replicas)
        if not 1 <= self.target_cpu <= 1000:
            raise ValueError(
                f"the CPU target must be 1 to 1000 % of the request, got {self.target_cpu}"
            )
        if self.target_inflight is not None and not self.target_inflight > 0:
            raise ValueError(f"the in-flight target must be above 0, got {self.target_inflight:g}")
        if self.scale_down_window_s < 0:
            raise ValueError(
                f"the scale-down window must be 0 s or more, got {self.scale_down_window_s}"
            )
        for key, value in self.monitor_labels:
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
                raise ValueError(
                    f"label {key}={value} is not a Kubernetes label: expected [PREFIX/]NAME=VALUE "
                    "of letters, digits, '-', '_' and '.', at most 63 characters each"
                )

    @property
    def replicas_max(self) -> int:
        """The autoscaler's maximum: ``max_replicas``, else four times the minimum."""
        return self.max_replicas if self.max_replicas is not None else 4 * self.min_replicas


def _metadata(spec: KubernetesSpec, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name}
    if spec.namespace is not None:
        out["namespace"] = spec.namespace
    out["labels"] = {NAME_LABEL: spec.name, **(extra_labels or {})}
    return out


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def deployment(spec: KubernetesSpec) -> dict[str, Any]:
    """The Deployment. It has no ``replicas``: the autoscaler owns the count (a count in the
    manifest would reset it at every apply), and raises a new Deployment to its minimum at
    once. Rolling updates add a pod before removing one."""
    template_meta: dict[str, Any] = {"labels": {NAME_LABEL: spec.name}}
    annotations = scrape_annotations(spec.pod)
    if annotations:
        template_meta["annotations"] = annotations
    pod = pod_spec(spec.pod, [container(spec.pod)])
    pod["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {NAME_LABEL: spec.name}},
        }
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec),
        "spec": {
            "selector": {"matchLabels": {NAME_LABEL: spec.name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": template_meta, "spec": pod},
        },
    }


def service(spec: KubernetesSpec) -> dict[str, Any]:
    """A ClusterIP Service: V2 and TF Serving REST (and /metrics) on http 8000, V2 over gRPC
    (HTTP/2 without TLS) on grpc 8001, /metrics and health alone on metrics 8002."""
    ports = [
        {
            "name": "http",
            "port": HTTP_PORT,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    if spec.pod.serve.grpc:
        ports.append(
            {
                "name": "grpc",
                "port": GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    if spec.pod.serve.metrics_port:
        ports.append(
            {
                "name": "metrics",
                "port": METRICS_PORT,
                "targetPort": "metrics",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec),
        "spec": {"type": "ClusterIP", "selector": {NAME_LABEL: spec.name}, "ports": ports},
    }


def autoscaler(spec: KubernetesSpec) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler: CPU utilization (of the request) and, unless
    turned off, the pods' average ``mserve_inflight_requests``. It scales up at once (double or
    4 pods per 15 s, whichever is more) and down slowly (half per minute, after the window)."""
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": spec.target_cpu},
            },
        }
    ]
    if spec.target_inflight is not None:
        target = {"type": "AverageValue", "averageValue": _quantity(spec.target_inflight)}
        metrics.append(
            {"type": "Pods", "pods": {"metric": {"name": INFLIGHT_METRIC}, "target": target}}
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.replicas_max,
            "metrics": metrics,
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": spec.scale_down_window_s,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }


def disruption_budget(spec: KubernetesSpec) -> dict[str, Any]:
    """A PodDisruptionBudget allowing one pod at a time to be evicted. ``maxUnavailable: 1``
    (not ``minAvailable``) so that a single replica never blocks a node drain: with one pod a
    drain is a short outage, which beats a drain that hangs; with more, one pod goes at a time.
    Pods that are not ready may always be evicted, so a broken pod cannot block drains either."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {NAME_LABEL: spec.name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def service_monitor(spec: KubernetesSpec) -> dict[str, Any]:
    """A prometheus-operator ServiceMonitor scraping /metrics on the Service's metrics port (its
    http port when the server has none); with API keys, Prometheus sends the Secret's
    ``metrics-key`` as a bearer token."""
    port = "metrics" if spec.pod.serve.metrics_port else "http"
    endpoint: dict[str, Any] = {"port": port, "path": METRICS_PATH, "interval": "15s"}
    if spec.pod.api_keys_secret is not None:
        credentials = {"name": spec.pod.api_keys_secret, "key": METRICS_KEY_KEY}
        endpoint["authorization"] = {"type": "Bearer", "credentials": credentials}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(spec, dict(spec.monitor_labels)),
        "spec": {"selector": {"matchLabels": {NAME_LABEL: spec.name}}, "endpoints": [endpoint]},
    }


def prometheus_rule(spec: KubernetesSpec) -> dict[str, Any]:
    """The alert rules of :func:`mserve.deploy.prometheus.alert_rules` as a PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(spec, dict(spec.monitor_labels)),
        "spec": alert_rules(spec.thresholds),
    }


def kubernetes_manifests(spec: KubernetesSpec) -> dict[str, dict[str, Any]]:
    """File name -> manifest, for every resource the kustomization lists, in apply order."""
    out = {
        "deployment.yaml": deployment(spec),
        "service.yaml": service(spec),
        "hpa.yaml": autoscaler(spec),
        "pdb.yaml": disruption_budget(spec),
    }
    if spec.prometheus_operator:
        out["servicemonitor.yaml"] = service_monitor(spec)
        out["prometheusrule.yaml"] = prometheus_rule(spec)
    return out


def kustomization(spec: KubernetesSpec, resources: Sequence[str]) -> dict[str, Any]:
    """The kustomization over ``resources``: the namespace when one is set, and the label
    ``app.kubernetes.io/part-of: mserve`` on every object (not on selectors, which a
    Deployment cannot change once created)."""
    out: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    if spec.namespace is not None:
        out["namespace"] = spec.namespace
    out["labels"] = [{"pairs": dict(PART_OF), "includeSelectors": False}]
    out["resources"] = list(resources)
    return out


def adapter_rules() -> dict[str, Any]:
    """A prometheus-adapter rule exposing ``mserve_inflight_requests`` per pod as a custom
    metric of the same name. The gauge counts the scrape that reads it, so one is taken off;
    ``max`` keeps one series per pod when two scrape jobs (a ServiceMonitor and pod
    annotations) collect it."""
    return {
        "rules": [
            {
                "seriesQuery": f'{INFLIGHT_METRIC}{{namespace!="",pod!=""}}',
                "resources": {
                    "overrides": {
                        "namespace": {"resource": "namespace"},
                        "pod": {"resource": "pod"},
                    }
                },
                "name": {"matches": f"^{INFLIGHT_METRIC}$", "as": INFLIGHT_METRIC},
                "metricsQuery": (
                    "clamp_min(max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>}) - 1, 0)"
                ),
            }
        ]
    }


def _header(what: str) -> str:
    return f"{what}\nWritten by 'mserve deploy kubernetes' (mserve {__version__})."


def render_kubernetes(spec: KubernetesSpec, models: Sequence[str]) -> dict[str, str]:
    """File name -> text of everything :func:`write_kubernetes` writes."""
    manifests = kubernetes_manifests(spec)
    texts = {
        name: yaml_text(
            doc, _header(f"{doc['kind']} {spec.name}; apply the folder: kubectl apply -k .")
        )
        for name, doc in manifests.items()
    }
    texts[KUSTOMIZATION_FILE] = yaml_text(
        kustomization(spec, list(manifests)),
        _header(
            "kubectl apply -k DIR applies every resource listed here.\n"
            f"{ADAPTER_FILE} is not listed: it is not a Kubernetes object but a part of\n"
            "prometheus-adapter's own config (see README.md)."
        ),
    )
    if spec.target_inflight is not None:
        texts[ADAPTER_FILE] = yaml_text(
            adapter_rules(),
            _header(
                "Not a Kubernetes object, and not in kustomization.yaml: add this rule to\n"
                "prometheus-adapter's config (its Helm chart: under rules.custom), so that\n"
                f"the HorizontalPodAutoscaler can read {INFLIGHT_METRIC} per pod from\n"
                "custom.metrics.k8s.io."
            ),
        )
    texts[README_FILE] = readme(spec, list(manifests), models)
    return texts


def write_kubernetes(out: Path, spec: KubernetesSpec, models: Sequence[str]) -> list[Path]:
    """Write the manifests, kustomization.yaml, prometheus-adapter-rules.yaml (with the
    in-flight metric) and README.md into ``out`` (created if missing, files replaced); returns
    their paths. ``models``: the repository's model names, for the README's examples."""
    return write_texts(out, render_kubernetes(spec, models))
