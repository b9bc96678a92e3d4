"""A Kubernetes Job (batch/v1, Indexed) that runs N ``mserve bench`` pods against one service
at once, for a load that one machine cannot generate; ``mserve results merge`` then makes one
result of their N results.

The load given is the total: each pod runs 1/N of it (concurrency divided, which must divide
evenly; rates divided), with its own seed (its completion index). Every pod measures a fixed
``--duration`` so that the N measurements can overlap; the merge checks how far they did. A pod
prints its result JSON to stdout (collected with ``kubectl logs``), or writes
``worker-INDEX.json`` into a PersistentVolumeClaim mounted at /results. Nothing is written to
the read-only root filesystem: the run is not saved in a results database (``--no-save``), and
/tmp is an emptyDir. Pure rendering; nothing here runs kubectl.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from mserve.bench import schedule
from mserve.deploy.container import USER_ID, default_image

JOB_FILE = "bench-job.yaml"
README_FILE = "README.md"
RESULTS_DIR = "/results"
#: The env var holding the pod's completion index, from the downward API: Kubernetes expands
#: ``$(WORKER_INDEX)`` in the container's arguments.
INDEX_ENV = "WORKER_INDEX"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
API_KEY_ENV = "MSERVE_API_KEY"
PROTOCOLS = ("v2-json", "v2-binary", "v2-grpc", "tfserving", "http")
#: Seconds a pod may take to be scheduled and pull its image, beyond its measurement.
START_ALLOWANCE_S = 600

#: ``mserve bench`` options the Job sets itself, or that make no sense in one of N pods.
OWNED_OPTIONS = frozenset(
    {
        "-m", "--model", "-x", "--model-version", "--protocol", "--concurrency", "--rate",
        "--arrival", "--seed", "--duration", "--warmup", "--window", "--batch-size",
        "--timeout", "--json", "-o", "--output", "-q", "--quiet", "--db", "--no-save",
        "--report", "--max-duration", "--stability", "--slo", "--baseline", "--fail-on",
        "-h", "--help",
    }
)  # fmt: skip

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _number(value: float) -> str:
    """A number as a command-line argument: ``2``, ``0.5``, ``333.333333333333`` (15 figures:
    N pods' rates add up to the total within 1e-6 of it)."""
    return f"{value:.15g}"


@dataclass(frozen=True)
class BenchJob:
    """What the Job runs (the load is the total over ``workers`` pods) and how it is placed.

    ``__post_init__`` checks every field (ValueError saying what was expected); ``extra_args``
    are further ``mserve bench`` options, refused when the Job sets them itself
    (``OWNED_OPTIONS``)."""

    target: str
    model: str | None
    workers: int
    concurrency: str | None = None
    rate: str | None = None
    arrival: str = "constant"
    duration_s: float = 60.0
    warmup_s: float = 10.0
    window_s: float = 2.0
    protocol: str = "v2-json"
    model_version: str | None = None
    batch_size: int = 1
    timeout_s: float = 30.0
    start_at: str | None = None  # passed to each pod's mserve bench --start-at
    extra_args: tuple[str, ...] = ()
    name: str = "mserve-bench"
    namespace: str | None = None
    image: str | None = None  # default_image("mserve")
    results_pvc: str | None = None
    cpu: str = "1"
    memory: str = "512Mi"
    api_key_secret: str | None = None  # SECRET:KEY, sent as 'Authorization: Bearer ...'

    def __post_init__(self) -> None:
        if self.start_at is not None:
            schedule.parse_start_at(self.start_at, time.time())
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
        if self.protocol != "http" and not self.model:
            raise ValueError(f"--protocol {self.protocol} needs the model's name: -m MODEL")
        _check_target(self.target, self.protocol)
        self.pod_levels()  # checks the load
        if not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0 seconds, got {self.duration_s:g}")
        if self.warmup_s < 0 or not self.window_s > 0:
            raise ValueError("--warmup must be >= 0 and --window > 0 seconds")
        if self.batch_size < 1 or not self.timeout_s > 0:
            raise ValueError("--batch-size must be at least 1 and --timeout > 0 seconds")
        if len(self.name) > 52 or not _DNS_LABEL.fullmatch(self.name):
            raise ValueError(
                f"--name {self.name!r}: expected a DNS label of at most 52 characters "
                "(lowercase letters, digits and '-'), so that its pods' names fit"
            )
        if self.namespace is not None and not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"--namespace {self.namespace!r}: expected a DNS label")
        if self.results_pvc is not None and not _DNS_SUBDOMAIN.fullmatch(self.results_pvc):
            raise ValueError(f"--results-pvc {self.results_pvc!r}: expected a claim's name")
        for option, quantity in (("--cpu", self.cpu), ("--memory", self.memory)):
            if not _QUANTITY.fullmatch(quantity):
                raise ValueError(f"{option} {quantity!r}: expected a quantity such as 2, 500m, 1Gi")
        image = self.image
        if image is not None and (not image or image[0] == "-" or any(c.isspace() for c in image)):
            raise ValueError(f"--image {self.image!r}: expected an image reference")
        if self.api_key_secret is not None:
            secret, _, key = self.api_key_secret.partition(":")
            if not (_DNS_SUBDOMAIN.fullmatch(secret) and _SECRET_KEY.fullmatch(key)):
                raise ValueError(
                    f"--api-key-secret {self.api_key_secret!r}: expected SECRET:KEY, a Secret "
                    "of the namespace and the key holding the API key"
                )
        check_extra_args(self.extra_args)

    @property
    def image_ref(self) -> str:
        """The image the pods run."""
        return self.image or default_image("mserve")

    def pod_levels(self) -> tuple[str, list[str]]:
        """The load option and each level's per-pod share: ``("--concurrency", ["2", "4"])``."""
        if self.concurrency and self.rate:
            raise ValueError("give either --concurrency (closed loop) or --rate (open loop)")
        if self.rate:
            return "--rate", [_number(r / self.workers) for r in schedule.parse_rates(self.rate)]
        if not self.concurrency:
            raise ValueError("give the total load: --concurrency N or --rate R")
        levels = schedule.parse_concurrency(self.concurrency)
        uneven = [c for c in levels if c % self.workers]
        if uneven:
            raise ValueError(
                f"--concurrency {uneven[0]} does not split evenly over {self.workers} pods: "
                f"give multiples of {self.workers}"
            )
        return "--concurrency", [str(c // self.workers) for c in levels]

    def bench_args(self) -> list[str]:
        """Each pod's arguments after ``mserve``: ``bench URL ...``, with ``$(WORKER_INDEX)``
        for Kubernetes to expand."""
        option, levels = self.pod_levels()
        args = ["bench", self.target, "--protocol", self.protocol]
        if self.model:
            args += ["-m", self.model]
        if self.model_version:
            args += ["-x", self.model_version]
        args += [option, ",".join(levels)]
        if option == "--rate":
            args += ["--arrival", self.arrival]
        args += ["--duration", _number(self.duration_s), "--warmup", _number(self.warmup_s)]
        args += ["--window", _number(self.window_s), "--batch-size", str(self.batch_size)]
        args += ["--timeout", _number(self.timeout_s), "--seed", f"$({INDEX_ENV})"]
        if self.start_at is not None:
            args += ["--start-at", self.start_at]
        if self.api_key_secret is not None:
            args += ["-H", f"Authorization: Bearer $({API_KEY_ENV})"]
        args += list(self.extra_args)
        if self.results_pvc is not None:
            args += ["-o", f"{RESULTS_DIR}/worker-$({INDEX_ENV}).json"]
        else:
            args += ["--json"]
        return [*args, "-q", "--no-save"]

    def deadline_s(self) -> int:
        """The Job's activeDeadlineSeconds: every step's warm-up, measurement and drain, and
        time to start."""
        steps = len(self.pod_levels()[1])
        per_step = self.warmup_s + self.duration_s + self.window_s + self.timeout_s + 5
        wait = 0.0
        if self.start_at is not None:  # the pods wait for it, at most from now on
            now = time.time()
            wait = max(0.0, schedule.parse_start_at(self.start_at, now) - now)
        return int(steps * per_step + START_ALLOWANCE_S + wait)


def check_extra_args(extra: Sequence[str]) -> tuple[str, ...]:
    """Further ``mserve bench`` arguments, refused where the Job sets the option itself."""
    for arg in extra:
        option = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if arg.startswith("-") and option in OWNED_OPTIONS:
            raise ValueError(
                f"{option} is set by the bench Job itself or makes no sense in one of its pods; "
                "use the option of 'mserve deploy bench-job', or drop it"
            )
    return tuple(extra)


def _check_target(url: str, protocol: str) -> None:
    has_scheme = "://" in url
    parts = urlsplit(url if has_scheme else f"grpc://{url}")
    allowed = ("grpc", "grpcs") if protocol == "v2-grpc" else ("http", "https")
    if (has_scheme or protocol != "v2-grpc") and parts.scheme not in allowed:
        raise ValueError(
            f"--target {url!r}: expected a {' or '.join(s + '://' for s in allowed)} URL for "
            f"--protocol {protocol}"
        )
    if not parts.hostname:
        raise ValueError(f"--target {url!r}: no host")
    if parts.hostname in _LOOPBACK or parts.hostname.startswith("127."):
        raise ValueError(
            f"--target {url!r}: inside a pod, {parts.hostname} is the pod itself; give the "
            "server's Service name, e.g. http://mserve.NAMESPACE.svc:8000"
        )


def _labels(job: BenchJob) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mserve-bench",
        "app.kubernetes.io/instance": job.name,
        "app.kubernetes.io/component": "load-generator",
    }


def job_manifest(job: BenchJob) -> dict[str, Any]:
    """The batch/v1 Job: Indexed, N pods at once, no retries, non-root on a read-only root,
    spread over nodes where it can be."""
    labels = _labels(job)
    env: list[dict[str, Any]] = [
        {
            "name": INDEX_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
        },
        # never the read-only root, should a --no-save be dropped: the emptyDir
        {"name": "MSERVE_RESULTS_DB", "value": "/tmp/results.db"},
    ]
    if job.api_key_secret is not None:
        secret, _, key = job.api_key_secret.partition(":")
        env.append(
            {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        )
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if job.results_pvc is not None:
        mounts.append({"name": "results", "mountPath": RESULTS_DIR})
        volumes.append({"name": "results", "persistentVolumeClaim": {"claimName": job.results_pvc}})
    resources = {"cpu": job.cpu, "memory": job.memory}
    container = {
        "name": "bench",
        "image": job.image_ref,
        "imagePullPolicy": "IfNotPresent",
        "command": ["mserve"],
        "args": job.bench_args(),
        "env": env,
        # requests = limits: Guaranteed QoS, so that the generator is neither starved nor evicted
        "resources": {"requests": resources, "limits": dict(resources)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    metadata: dict[str, Any] = {"name": job.name, "labels": labels}
    if job.namespace is not None:
        metadata["namespace"] = job.namespace
    spread = {
        "weight": 100,
        "podAffinityTerm": {
            "labelSelector": {"matchLabels": dict(labels)},
            "topologyKey": "kubernetes.io/hostname",
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": job.workers,
            "parallelism": job.workers,
            "backoffLimit": 0,  # a pod run again later would not overlap the others
            "activeDeadlineSeconds": job.deadline_s(),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [spread]
                        }
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def write_bench_job(out: Path, job: BenchJob) -> list[Path]:
    """Write bench-job.yaml and README.md into ``out`` (created if missing, files replaced);
    returns their paths."""
    from mserve.deploy.benchjob_readme import readme  # it reads this module's constants

    texts = {
        JOB_FILE: yaml.safe_dump(job_manifest(job), sort_keys=False, width=1000),
        README_FILE: readme(job),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
