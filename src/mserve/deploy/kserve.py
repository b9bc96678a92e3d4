"""A KServe InferenceService for mserve (``mserve deploy kserve``): a custom predictor running
the image of ``mserve deploy docker`` with the same command line, probes, resources and
security context as the Kubernetes target (:mod:`mserve.deploy.pod`).

KServe routes one container port: HTTP/1.1 by default (named ``http1``: V2 and TF Serving REST
on 8000) or, with ``grpc``, HTTP/2 (named ``h2c``: V2 over gRPC on 8001). The service runs in
KServe's raw deployment mode (a Deployment, Service and HorizontalPodAutoscaler, no Knative),
where the pod spec passes through unchanged: Knative's serverless mode allows tolerations,
volume claims and pod security contexts only behind its feature flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve import __version__
from mserve.deploy.container import GRPC_PORT, HTTP_PORT
from mserve.deploy.files import write_texts, yaml_text
from mserve.deploy.pod import (
    PodShape,
    check_name,
    check_namespace,
    check_replicas,
    container,
    pod_spec,
    scrape_annotations,
)

__all__ = ["INFERENCE_SERVICE_FILE", "KServeSpec", "inference_service", "write_kserve"]

INFERENCE_SERVICE_FILE = "inferenceservice.yaml"
README_FILE = "README.md"
#: KServe's name for the predictor's serving container
KSERVE_CONTAINER = "kserve-container"
#: raw deployment: plain Deployment, Service and HPA. KServe 0.16 renamed it "Standard" and
#: still reads the old name; older KServe knows only this one.
DEPLOYMENT_MODE = {"serving.kserve.io/deploymentMode": "RawDeployment"}
_PREDICTOR_SUFFIX = "-predictor"  # KServe names the predictor's Service NAME-predictor


@dataclass(frozen=True)
class KServeSpec:
    """An InferenceService of mserve: between ``min_replicas`` and ``max_replicas`` predictor
    pods (default four times the minimum; KServe's autoscaler scales on CPU), served over HTTP,
    or over gRPC when ``grpc`` is set."""

    name: str
    pod: PodShape
    namespace: str | None = None
    min_replicas: int = 1
    max_replicas: int | None = None
    grpc: bool = False

    def __post_init__(self) -> None:
        check_name(self.name)
        if len(self.name) + len(_PREDICTOR_SUFFIX) > 63:
            raise ValueError(
                f"name {self.name!r} is too long for KServe: its predictor Service "
                f"'{self.name}{_PREDICTOR_SUFFIX}' must fit in 63 characters"
            )
        if self.namespace is not None:
            check_namespace(self.namespace)
        check_replicas(self.min_replicas, self.max_replicas)

    @property
    def replicas_max(self) -> int:
        """The autoscaler's maximum: ``max_replicas``, else four times the minimum."""
        return self.max_replicas if self.max_replicas is not None else 4 * self.min_replicas


def inference_service(spec: KServeSpec) -> dict[str, Any]:
    """The serving.kserve.io/v1beta1 InferenceService of ``spec``."""
    pod = dataclasses.replace(spec.pod, serve=dataclasses.replace(spec.pod.serve, grpc=spec.grpc))
    if spec.grpc:
        port = {"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"}
    else:
        port = {"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}
    predictor: dict[str, Any] = {
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.replicas_max,
    }
    annotations = scrape_annotations(pod)
    if annotations:
        predictor["annotations"] = annotations
    predictor.update(pod_spec(pod, [container(pod, KSERVE_CONTAINER, [port])]))
    metadata: dict[str, Any] = {"name": spec.name}
    if spec.namespace is not None:
        metadata["namespace"] = spec.namespace
    metadata["labels"] = {
        "app.kubernetes.io/name": spec.name,
        "app.kubernetes.io/part-of": "mserve",
    }
    metadata["annotations"] = dict(DEPLOYMENT_MODE)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


def readme(spec: KServeSpec, models: Sequence[str]) -> str:
    """README.md for the folder: apply, wait, call through the ingress, bench."""
    ns = f" -n {spec.namespace}" if spec.namespace else ""
    model = models[0] if models else "MODEL"
    auth = " -H 'Authorization: Bearer KEY'" if spec.pod.api_keys_secret else ""
    if spec.grpc:
        bench = f"mserve bench grpc://$SERVICE_HOSTNAME:$INGRESS_PORT --protocol v2-grpc -m {model}"
        local = f"mserve bench grpc://127.0.0.1:{GRPC_PORT} --protocol v2-grpc -m {model}"
        forward = GRPC_PORT
    else:
        bench = f"mserve bench http://$SERVICE_HOSTNAME:$INGRESS_PORT -m {model}"
        local = f"mserve bench http://127.0.0.1:{HTTP_PORT} -m {model}"
        forward = HTTP_PORT
    lines = [
        f"# {spec.name} on KServe",
        "",
        f"Written by `mserve deploy kserve` (mserve {__version__}) for a model repository serving "
        f"{', '.join(f'`{m}`' for m in models) or 'no model'}. Nothing has been applied.",
        "",
        "```bash",
        "kubectl apply -f inferenceservice.yaml",
        f"kubectl wait{ns} --for=condition=Ready inferenceservice/{spec.name} --timeout=600s",
        "```",
        "",
        "## What the cluster needs",
        "",
        "- **KServe** with its raw deployment mode (the annotation "
        "`serving.kserve.io/deploymentMode: RawDeployment`; KServe 0.16 calls it `Standard` and "
        "still reads the old name): KServe makes a Deployment, a Service and a "
        "HorizontalPodAutoscaler (CPU) of the predictor, with the pod spec unchanged.",
        f"- **The image** `{spec.pod.image}`, built by `mserve deploy docker` "
        + (
            f"(the models come from the claim `{spec.pod.models_pvc}`, mounted read-only)"
            if spec.pod.models_pvc
            else "(with the models inside)"
        )
        + ", pushed where the nodes pull from.",
        "- **An ingress** (Istio, or the Gateway API) for the host name KServe gives the service.",
    ]
    if spec.pod.api_keys_secret:
        lines.append(
            f"- **The Secret** `{spec.pod.api_keys_secret}` with the server's key file under "
            "`keys` (see the Kubernetes target's README, or docs/deploy.md)."
        )
    lines += [
        "",
        (
            "The predictor serves V2 over gRPC (`h2c`, port 8001); KServe routes that one "
            "port. Without `--grpc`, it routes HTTP."
            if spec.grpc
            else "The predictor serves V2 and TF Serving REST over HTTP (`http1`, port 8000); "
            "KServe routes that one port. Write it again with `--grpc` to route V2 over gRPC "
            "instead."
        ),
        "",
        "## Call it through the ingress",
        "",
        "```bash",
        f"SERVICE_HOSTNAME=$(kubectl get{ns} inferenceservice {spec.name} "
        "-o jsonpath='{.status.url}' | cut -d/ -f3)",
        "# the ingress gateway's address; for Istio:",
        "INGRESS_HOST=$(kubectl -n istio-system get service istio-ingressgateway "
        "-o jsonpath='{.status.loadBalancer.ingress[0].ip}')",
        "INGRESS_PORT=80",
    ]
    if not spec.grpc:
        lines.append(
            f'curl -H "Host: $SERVICE_HOSTNAME"{auth} '
            f"http://$INGRESS_HOST:$INGRESS_PORT/v2/models/{model}/ready"
        )
    lines += [
        "# mserve bench takes the host name from the URL: resolve it to the ingress",
        'echo "$INGRESS_HOST $SERVICE_HOSTNAME" | sudo tee -a /etc/hosts',
        f"{bench}{auth} --concurrency 1,4,16",
        "```",
        "",
        "Past the ingress, straight to the predictor (one pod):",
        "",
        "```bash",
        f"kubectl port-forward{ns} service/{spec.name}{_PREDICTOR_SUFFIX} {forward}:80 &",
        f"{local}{auth} --concurrency 1,4,16",
        "```",
        "",
        "## Knative (serverless) mode",
        "",
        "Without the deploymentMode annotation, a cluster whose KServe defaults to Knative runs "
        "the predictor as a Knative Service. Knative then refuses, unless its `config-features` "
        "enable them: pod security contexts (`kubernetes.podspec-securitycontext`), "
        "tolerations (`kubernetes.podspec-tolerations`, for `--gpu`) and volume claims "
        "(`kubernetes.podspec-persistent-volume-claim`, for `--models-pvc`).",
        "",
    ]
    return "\n".join(lines)


def render_kserve(spec: KServeSpec, models: Sequence[str]) -> dict[str, str]:
    """File name -> text of everything :func:`write_kserve` writes."""
    header = (
        f"InferenceService {spec.name}: kubectl apply -f {INFERENCE_SERVICE_FILE}\n"
        f"Written by 'mserve deploy kserve' (mserve {__version__})."
    )
    return {
        INFERENCE_SERVICE_FILE: yaml_text(inference_service(spec), header),
        README_FILE: readme(spec, models),
    }


def write_kserve(out: Path, spec: KServeSpec, models: Sequence[str]) -> list[Path]:
    """Write inferenceservice.yaml and README.md into ``out`` (created if missing, files
    replaced); returns their paths. ``models``: the repository's model names, for the README."""
    return write_texts(out, render_kserve(spec, models))
