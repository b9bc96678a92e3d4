"""The contract between the image that ``mserve deploy docker`` builds and the manifests that
``mserve deploy kubernetes`` / ``kserve`` / ``bench-job`` write: where the models are, which
ports serve what, which user runs the server, and the server's command line. One place, so
that an image and a manifest made by different commands fit together."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mserve import __version__
from mserve.repository import Repository

#: Where the image keeps (or a volume mounts) the model repository.
MODELS_DIR = "/models"
#: The virtual environment inside the image; its bin/ is on PATH.
VENV_DIR = "/opt/mserve"
#: The unprivileged user the server runs as (no login, no home); a numeric id so that
#: Kubernetes' ``runAsNonRoot`` can verify it without reading /etc/passwd.
USER_ID = 10001
HTTP_PORT = 8000  # V2 and TF Serving REST, /metrics, /v2/health/*, /dashboard (as Triton: 8000)
GRPC_PORT = 8001  # V2 over gRPC (as Triton: 8001)
#: /metrics and /v2/health/* alone (as Triton: 8002); /metrics is on the HTTP port as well
METRICS_PORT = 8002
METRICS_PATH = "/metrics"
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class ServeShape:
    """How the server in the container is started: what every target writes the same way."""

    workers: int = 1
    #: seconds of answering with readiness false after SIGTERM, so that endpoints drop the pod
    #: before connections are refused (longer than the readiness probe's period x threshold)
    unready_grace_s: float = 15.0
    #: longest wait for accepted requests at SIGTERM
    drain_timeout_s: float = 30.0
    grpc: bool = True
    metrics_port: bool = True
    extra_args: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """The arguments after ``mserve``: ``serve /models --host 0.0.0.0 ...``."""
        out = ["serve", MODELS_DIR, "--host", "0.0.0.0", "--port", str(HTTP_PORT)]
        if self.grpc:
            out += ["--grpc-port", str(GRPC_PORT)]
        if self.metrics_port:
            out += ["--metrics-port", str(METRICS_PORT)]
        if self.workers != 1:
            out += ["--workers", str(self.workers)]
        out += ["--unready-grace", _num(self.unready_grace_s)]
        out += ["--drain-timeout", _num(self.drain_timeout_s)]
        return out + list(self.extra_args)

    def termination_grace_s(self) -> int:
        """A termination grace period that covers the unready grace and the whole drain, with
        a margin for the process to exit (Kubernetes SIGKILLs after it)."""
        return int(self.unready_grace_s + self.drain_timeout_s + 5.999)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_NAME_RE = re.compile(r"[^a-z0-9-]+")


def resource_name(text: str, default: str = "mserve") -> str:
    """A DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters, starting and
    ending with an alphanumeric) made from ``text``: a Kubernetes object or image name."""
    name = _NAME_RE.sub("-", text.lower()).strip("-")[:63].strip("-")
    return name or default


def default_name(repo: Path) -> str:
    """The name of a deployment of ``repo``: its folder's name as a DNS label, else mserve."""
    return resource_name(repo.resolve().name)


def default_image(name: str) -> str:
    """The image ``mserve deploy docker`` tags by default: ``NAME:VERSION``."""
    return f"{resource_name(name)}:{__version__}"


def repository_models(repo: Path) -> list[str]:
    """The model names of a repository, checked to be one (ValueError with what was expected
    otherwise): deployment files are written only for something that can serve."""
    if not repo.is_dir():
        raise ValueError(f"{repo} is not a directory: expected a model repository (REPO/NAME/1/…)")
    names = Repository(repo).names()
    if not names:
        raise ValueError(
            f"{repo} holds no model folder: expected REPO/NAME/VERSION/model.onnx "
            "(see 'mserve repo --help')"
        )
    return names


def check_args(extra: Sequence[str]) -> tuple[str, ...]:
    """Extra ``mserve serve`` arguments, refused where they would fight the container's own."""
    fixed = {
        "--host", "--port", "--grpc-port", "--metrics-port", "--workers", "--unready-grace",
        "--drain-timeout",
    }  # fmt: skip
    for arg in extra:
        if arg.split("=", 1)[0] in fixed:
            raise ValueError(f"{arg.split('=', 1)[0]} is set by the deployment itself; drop it")
    return tuple(extra)
