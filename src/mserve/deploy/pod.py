"""The pod that runs mserve's image on Kubernetes, shared by ``mserve deploy kubernetes`` (a
Deployment's template) and ``mserve deploy kserve`` (an InferenceService's predictor): the
server's command line, probes, resources, the restricted security context, volumes and API
keys. Pure functions returning dicts ready for YAML; nothing here reads or writes files.

The probes and the shutdown fit together: on SIGTERM the server answers ``/v2/health/ready``
with 503 for the unready grace while still serving, so the grace must outlast what the
readiness probe needs to notice (period x failure threshold); then it drains accepted requests
for up to the drain timeout; the termination grace period covers both."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mserve.deploy.container import (
    GRPC_PORT,
    HTTP_PORT,
    LIVE_PATH,
    METRICS_PATH,
    METRICS_PORT,
    MODELS_DIR,
    READY_PATH,
    USER_ID,
    ServeShape,
)

READINESS_PERIOD_S = 5
READINESS_FAILURES = 2
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURES = 3
STARTUP_PERIOD_S = 5
PROBE_TIMEOUT_S = 2
#: the unready grace the deployment targets use unless told: the readiness probe notices in
#: 10 s (5 s x 2), and endpoints and load balancers take a few seconds more to follow
UNREADY_GRACE_S = 15.0

#: the keys of the Secret named by ``api_keys_secret``
API_KEYS_KEY = "keys"  # the server's key file: 'KEY SCOPES' lines, read as $MSERVE_API_KEYS
METRICS_KEY_KEY = "metrics-key"  # one key with the metrics scope, sent by Prometheus
API_KEYS_ENV = "MSERVE_API_KEYS"
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "mserve"

_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # Service names, InferenceService names
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # namespaces
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?")
_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    **{
        suffix: Decimal(2 ** (10 * (i + 1)))
        for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))
    },
}


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it can name a Service or an InferenceService (a DNS-1035 label: lowercase
    letters, digits and '-', starting with a letter, at most 63 characters); else ValueError."""
    if len(name) > 63 or not _DNS1035.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} cannot name Kubernetes objects: expected lowercase letters, digits "
            "and '-', starting with a letter and ending with a letter or digit, at most 63 "
            "characters"
        )
    return name


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a DNS-1123 label; else ValueError."""
    if len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
        raise ValueError(
            f"namespace {namespace!r} is not valid: expected lowercase letters, digits and '-', "
            "at most 63 characters"
        )
    return namespace


def check_replicas(min_replicas: int, max_replicas: int | None) -> None:
    """ValueError unless 1 <= min_replicas <= max_replicas (None: no maximum given)."""
    if min_replicas < 1:
        raise ValueError(f"min replicas must be 1 or more, got {min_replicas}")
    if max_replicas is not None and max_replicas < min_replicas:
        raise ValueError(
            f"max replicas ({max_replicas}) must be at least the min replicas ({min_replicas})"
        )


def _check_object_name(name: str, what: str) -> None:
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not a Kubernetes object name: expected lowercase letters, "
            "digits, '-' and '.'"
        )


def quantity(text: str, what: str) -> Decimal:
    """The value of a Kubernetes resource quantity (``500m``, ``2``, ``1.5Gi``); ValueError
    saying what is expected otherwise."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{what} {text!r} is not a Kubernetes quantity: expected a number with an optional "
            "suffix, e.g. 500m or 2 (CPUs), 512Mi or 4Gi (memory)"
        )
    return Decimal(match.group(1)) * _SCALE[match.group(2) or ""]


@dataclass(frozen=True)
class Resources:
    """Requests and limits of the server's container. ``cpu_limit`` None leaves CPU unlimited
    (a CPU limit throttles a busy server and stretches its tail latency); ``gpus`` NVIDIA GPUs
    go into the limits (and so the requests), with a toleration for GPU-tainted nodes."""

    cpu: str = "1"
    memory: str = "1Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = "2Gi"
    gpus: int = 0

    def __post_init__(self) -> None:
        if quantity(self.cpu, "cpu request") <= 0:
            raise ValueError(
                f"the cpu request must be above 0 (CPU autoscaling is relative to it), "
                f"got {self.cpu}"
            )
        quantity(self.memory, "memory request")
        for limit, request, what in (
            (self.cpu_limit, self.cpu, "cpu"),
            (self.memory_limit, self.memory, "memory"),
        ):
            if limit is not None and quantity(limit, f"{what} limit") < quantity(request, what):
                raise ValueError(
                    f"the {what} limit {limit} is below the {what} request {request}: expected a "
                    "limit at least as large"
                )
        if self.gpus < 0:
            raise ValueError(f"gpus must be 0 or more, got {self.gpus}")

    def requirements(self) -> dict[str, Any]:
        """The container's ``resources``."""
        limits: dict[str, Any] = {}
        if self.cpu_limit is not None:
            limits["cpu"] = self.cpu_limit
        if self.memory_limit is not None:
            limits["memory"] = self.memory_limit
        if self.gpus:
            limits[GPU_RESOURCE] = self.gpus
        out: dict[str, Any] = {"requests": {"cpu": self.cpu, "memory": self.memory}}
        if limits:
            out["limits"] = limits
        return out


@dataclass(frozen=True)
class PodShape:
    """What a pod running mserve's image is made of. The models are in the image (as
    ``mserve deploy docker`` bakes them) unless ``models_pvc`` names a PersistentVolumeClaim
    to mount read-only at /models; ``api_keys_secret`` names a Secret whose key ``keys`` holds
    the server's API keys; ``startup_timeout_s`` bounds model loading before the pod is
    restarted."""

    image: str
    serve: ServeShape = field(default_factory=lambda: ServeShape(unready_grace_s=UNREADY_GRACE_S))
    resources: Resources = field(default_factory=Resources)
    models_pvc: str | None = None
    api_keys_secret: str | None = None
    startup_timeout_s: int = 300

    def __post_init__(self) -> None:
        if not self.image or any(c.isspace() for c in self.image):
            raise ValueError(f"image {self.image!r} is not an image reference: expected NAME:TAG")
        noticed = READINESS_PERIOD_S * READINESS_FAILURES
        if not self.serve.unready_grace_s > noticed:
            raise ValueError(
                f"the unready grace (--unready-grace) of {self.serve.unready_grace_s:g} s is too "
                f"short: the readiness probe notices a pod going unready only after its period x "
                f"failure threshold ({READINESS_PERIOD_S} s x {READINESS_FAILURES} = {noticed} "
                f"s), so the grace must be longer than {noticed} s (a few seconds more lets "
                f"endpoints follow; {UNREADY_GRACE_S:g} s is the default)"
            )
        if self.serve.drain_timeout_s < 0:
            raise ValueError(
                f"the drain timeout must be 0 s or more, got {self.serve.drain_timeout_s:g}"
            )
        if self.serve.workers < 1:
            raise ValueError(f"workers must be 1 or more, got {self.serve.workers}")
        if self.startup_timeout_s < STARTUP_PERIOD_S:
            raise ValueError(
                f"the startup timeout must be at least {STARTUP_PERIOD_S} s (one startup probe "
                f"period), got {self.startup_timeout_s} s"
            )
        if self.models_pvc is not None:
            _check_object_name(self.models_pvc, "PersistentVolumeClaim")
        if self.api_keys_secret is not None:
            _check_object_name(self.api_keys_secret, "Secret")

    @property
    def termination_grace_s(self) -> int:
        """Seconds Kubernetes waits after SIGTERM before SIGKILL: the unready grace, the whole
        drain and a margin to exit."""
        return self.serve.termination_grace_s()


def probe_port(shape: PodShape) -> int:
    """Where probes and scrapes go: the metrics port (8002) when the server has one, kept
    apart from inference traffic, else the HTTP port (8000)."""
    return METRICS_PORT if shape.serve.metrics_port else HTTP_PORT


def probes(shape: PodShape) -> dict[str, Any]:
    """The container's liveness, readiness and startup probes, over HTTP on the port of
    :func:`probe_port`: live restarts a hung server, ready takes a loading or draining one out
    of the endpoints, and the startup probe (on live: the server listens once its models are
    loaded) gives loading up to ``startup_timeout_s`` before liveness counts."""
    port = probe_port(shape)

    def _http_get(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port, "scheme": "HTTP"}}

    common = {"timeoutSeconds": PROBE_TIMEOUT_S, "successThreshold": 1}
    return {
        "livenessProbe": {
            **_http_get(LIVE_PATH),
            "periodSeconds": LIVENESS_PERIOD_S,
            "failureThreshold": LIVENESS_FAILURES,
            **common,
        },
        "readinessProbe": {
            **_http_get(READY_PATH),
            "periodSeconds": READINESS_PERIOD_S,
            "failureThreshold": READINESS_FAILURES,
            **common,
        },
        "startupProbe": {
            **_http_get(LIVE_PATH),
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": math.ceil(shape.startup_timeout_s / STARTUP_PERIOD_S),
            **common,
        },
    }


def container(
    shape: PodShape, name: str = CONTAINER_NAME, ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The server's container: the image's ``mserve`` entrypoint with the serve arguments of
    ``shape.serve``, the named ``ports`` (default: http 8000, grpc 8001 and metrics 8002 as
    the server serves them), probes, resources, API keys from the Secret, the volume mounts and a
    security context that drops every privilege and keeps the root filesystem read-only."""
    if ports is None:
        ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
        if shape.serve.grpc:
            ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
        if shape.serve.metrics_port:
            ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    out: dict[str, Any] = {
        "name": name,
        "image": shape.image,
        "imagePullPolicy": "IfNotPresent",
        "args": shape.serve.args(),
        "ports": ports,
    }
    if shape.api_keys_secret is not None:
        ref = {"name": shape.api_keys_secret, "key": API_KEYS_KEY}
        out["env"] = [{"name": API_KEYS_ENV, "valueFrom": {"secretKeyRef": ref}}]
    out["resources"] = shape.resources.requirements()
    out.update(probes(shape))
    out["securityContext"] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if shape.models_pvc is not None:
        mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    out["volumeMounts"] = mounts
    return out


def pod_spec(shape: PodShape, containers: list[dict[str, Any]]) -> dict[str, Any]:
    """A pod spec around ``containers``: the unprivileged user and group of the image, the
    runtime's default seccomp profile, no service account token (the server never calls the
    API), a termination grace that covers the unready grace and the drain, an emptyDir at /tmp
    (the server's one writable place), the models' claim, and a GPU toleration."""
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": shape.termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
    }
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if shape.models_pvc is not None:
        claim = {"claimName": shape.models_pvc, "readOnly": True}
        volumes.append({"name": "models", "persistentVolumeClaim": claim})
    spec["volumes"] = volumes
    if shape.resources.gpus:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def scrape_annotations(shape: PodShape) -> dict[str, str]:
    """The ``prometheus.io/*`` pod annotations that annotation-based Prometheus configs follow;
    none when the server needs an API key (those configs cannot send one)."""
    if shape.api_keys_secret is not None:
        return {}
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(probe_port(shape)),
        "prometheus.io/path": METRICS_PATH,
    }
