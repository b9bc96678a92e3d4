"""The README.md that ``mserve deploy kubernetes`` writes beside its manifests: how to apply
them, what each file is, what the cluster needs, and how to try the result. A pure function of
the :class:`~mserve.deploy.kubernetes.KubernetesSpec`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mserve import __version__
from mserve.deploy.container import HTTP_PORT, MODELS_DIR
from mserve.deploy.pod import (
    API_KEYS_KEY,
    METRICS_KEY_KEY,
    READINESS_FAILURES,
    READINESS_PERIOD_S,
)

if TYPE_CHECKING:
    from mserve.deploy.kubernetes import KubernetesSpec

_FILES = {
    "deployment.yaml": "the Deployment: mserve's image, its probes, resources and a locked-down "
    "security context",
    "service.yaml": "a ClusterIP Service: http 8000 (V2, TF Serving REST), grpc 8001, metrics "
    "8002 (/metrics and the health probes alone)",
    "hpa.yaml": "the HorizontalPodAutoscaler (autoscaling/v2)",
    "pdb.yaml": "a PodDisruptionBudget: one pod evicted at a time",
    "servicemonitor.yaml": "a ServiceMonitor: the prometheus-operator scrapes /metrics",
    "prometheusrule.yaml": "mserve's alert rules as a PrometheusRule (see docs/monitoring.md)",
}


def readme(spec: KubernetesSpec, resources: Sequence[str], models: Sequence[str]) -> str:
    """README.md for the folder of ``spec``'s manifests (``resources``: the files the
    kustomization lists; ``models``: the repository's model names)."""
    ns = f" -n {spec.namespace}" if spec.namespace else ""
    pod = spec.pod
    model = models[0] if models else "MODEL"
    lines = [
        f"# {spec.name} on Kubernetes",
        "",
        f"Written by `mserve deploy kubernetes` (mserve {__version__}) for a model repository "
        f"serving {', '.join(f'`{m}`' for m in models) or 'no model'}. Nothing has been applied.",
        "",
        "## Apply",
        "",
        "```bash",
        "kubectl apply -k .            # this folder; kubectl 1.22 or newer (kustomize 4.1+)",
        f"kubectl rollout status deployment/{spec.name}{ns}",
        "```",
        "",
        "## What the cluster needs",
        "",
    ]
    if pod.models_pvc is None:
        lines.append(
            f"- **The image** `{pod.image}`, with the models inside (`mserve deploy docker` "
            "builds it), pushed where the cluster's nodes pull from."
        )
    else:
        lines.append(
            f"- **The image** `{pod.image}` (it need not hold models) and **the "
            f"PersistentVolumeClaim** `{pod.models_pvc}` in the same namespace, holding the "
            f"repository at its root (`NAME/VERSION/model.onnx`, `NAME/config.yaml`). It is "
            f"mounted read-only at `{MODELS_DIR}`, so several pods can share it "
            "(ReadOnlyMany, or ReadWriteOnce on a single node)."
        )
    lines.append(
        "- **metrics-server**, for the CPU metric of the autoscaler (`kubectl top pods` works "
        "when it is there)."
    )
    if spec.prometheus_operator:
        lines.append(
            "- **The prometheus-operator** (for example kube-prometheus-stack), for the "
            "ServiceMonitor and PrometheusRule kinds; without its CRDs `kubectl apply -k` fails "
            "with 'no matches for kind'. Its Prometheus must select them: by default "
            "kube-prometheus-stack wants the label `release: <its Helm release>` "
            "(`--monitor-label release=...`)."
        )
    if spec.target_inflight is not None:
        lines.append(
            "- **prometheus-adapter** with the rule of `prometheus-adapter-rules.yaml` (Helm "
            "chart: under `rules.custom`), for the `mserve_inflight_requests` custom metric. "
            "Check it with `kubectl get --raw "
            '"/apis/custom.metrics.k8s.io/v1beta1/namespaces/'
            f'{spec.namespace or "default"}/pods/*/mserve_inflight_requests"`. Without it the '
            "autoscaler scales on CPU alone and reports the metric as missing "
            "(`--no-custom-metric` leaves it out)."
        )
    if pod.api_keys_secret is not None:
        lines += [
            f"- **The Secret** `{pod.api_keys_secret}`, with the server's key file under "
            f"`{API_KEYS_KEY}` (lines of `KEY SCOPES`, read as `$MSERVE_API_KEYS`) and a key "
            f"with the `metrics` scope under `{METRICS_KEY_KEY}`, sent by Prometheus as a bearer "
            "token:",
            "",
            "  ```bash",
            '  printf \'%s inference\\n%s metrics\\n\' "$CLIENT_KEY" "$METRICS_KEY" > api-keys.txt',
            f"  kubectl create secret generic {pod.api_keys_secret}{ns} \\",
            f"      --from-file={API_KEYS_KEY}=api-keys.txt "
            f'--from-literal={METRICS_KEY_KEY}="$METRICS_KEY"',
            "  ```",
        ]
    lines += ["", "## Files", "", "| file | what |", "| --- | --- |"]
    lines += [f"| `{name}` | {_FILES[name]} |" for name in resources]
    lines.append("| `kustomization.yaml` | lists the files above; sets the namespace and labels |")
    if spec.target_inflight is not None:
        lines.append(
            "| `prometheus-adapter-rules.yaml` | a rule for prometheus-adapter's config; not a "
            "Kubernetes object, not in the kustomization |"
        )
    auth = " -H 'Authorization: Bearer KEY'" if pod.api_keys_secret else ""
    lines += [
        "",
        "## Try it",
        "",
        "```bash",
        f"kubectl port-forward{ns} service/{spec.name} {HTTP_PORT}:{HTTP_PORT} &",
        f"curl -s localhost:{HTTP_PORT}/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'",
        f"mserve bench http://127.0.0.1:{HTTP_PORT} -m {model}{auth} --concurrency 1,4,16",
        "```",
        "",
        "A port-forward goes to one pod; to load every pod, run the bench inside the cluster "
        "(`mserve deploy bench-job`) against the Service.",
        "",
        "## Scaling, shutdown and disruptions",
        "",
        f"- The autoscaler keeps {spec.min_replicas} to {spec.replicas_max} pods, adding pods when "
        f"CPU use passes {spec.target_cpu} % of the request ({pod.resources.cpu} CPU)"
        + (
            f" or when pods hold more than {spec.target_inflight:g} requests in flight on average"
            if spec.target_inflight is not None
            else ""
        )
        + f". It removes pods only after {spec.scale_down_window_s} s of lower load. The "
        "Deployment has no `replicas` of its own: the autoscaler owns the count (a count in the "
        "Deployment would be reset at every apply) and raises a new Deployment to its minimum "
        "at once.",
        f"- On SIGTERM a pod reports unready for {pod.serve.unready_grace_s:g} s while it keeps "
        f"serving (the readiness probe notices after {READINESS_PERIOD_S} s x "
        f"{READINESS_FAILURES}), then answers what it accepted for up to "
        f"{pod.serve.drain_timeout_s:g} s; `terminationGracePeriodSeconds` "
        f"({pod.termination_grace_s}) covers both.",
        f"- The startup probe allows {pod.startup_timeout_s} s for loading the models before "
        "the liveness probe counts.",
        "- The PodDisruptionBudget lets one pod go at a time (`maxUnavailable: 1`), even with a "
        "single replica, so that a node drain never hangs on it; run two or more replicas to "
        "stay up through drains.",
        "",
    ]
    return "\n".join(lines)
