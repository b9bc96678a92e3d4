"""A Docker build context for serving a model repository: a two-stage Dockerfile (a slim
Python base as a build argument, mserve in a virtual environment, a non-root user, a
``HEALTHCHECK`` on readiness, the ports exposed, the models copied in or mounted), a
``.dockerignore``, a README with the commands, the pinned requirements and either mserve's
wheel (dependencies from the package index at build time) or a wheelhouse of every wheel (a
build that needs no network: air-gapped users, and the test's engine with no registry)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mserve import __version__
from mserve.deploy.container import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PATH,
    METRICS_PORT,
    MODELS_DIR,
    READY_PATH,
    USER_ID,
    VENV_DIR,
    ServeShape,
    default_image,
    repository_models,
)

#: The default base: Debian's slim image of the Python that the wheels were made for.
DEFAULT_BASE = "python:{major}.{minor}-slim-bookworm"
BUILD_DIR = "/build"
#: mserve's optional dependencies an image may carry (the runtimes and their helpers).
IMAGE_EXTRAS = ("openvino", "gpu")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DockerOptions:
    """What ``mserve deploy docker`` was asked for."""

    name: str
    image: str = ""
    base_image: str = ""
    wheelhouse: bool = False
    bake_models: bool = True
    extras: tuple[str, ...] = ()
    #: no unready grace by default: 'docker stop' waits 10 s before SIGKILL
    shape: ServeShape = field(default_factory=lambda: ServeShape(unready_grace_s=0.0))

    def tag(self) -> str:
        """The image tag: the one given, else ``NAME:VERSION``."""
        return self.image or default_image(self.name)

    def base(self) -> str:
        """The base image: the one given, else the slim image of this Python."""
        return self.base_image or DEFAULT_BASE.format(
            major=sys.version_info.major, minor=sys.version_info.minor
        )


@dataclass(frozen=True)
class MserveSource:
    """Where the image's mserve comes from: a wheel built from a source checkout, or the
    release of this version from the package index."""

    checkout: Path | None
    version: str = __version__


def mserve_source() -> MserveSource:
    """The checkout this mserve is installed from (an editable or local-directory install),
    else the release of its version."""
    try:
        text = metadata.distribution("mserve").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        text = None
    if text:
        info = json.loads(text)
        url = urlparse(info.get("url", ""))
        if url.scheme == "file" and "dir_info" in info:
            root = Path(unquote(url.path))
            if (root / "pyproject.toml").is_file():
                return MserveSource(root)
    return MserveSource(None)


def pinned_requirements(extras: Iterable[str] = ()) -> list[str]:
    """``name==version`` for every distribution that mserve (with ``extras``) needs, as
    installed here: the image runs the versions this machine was tested with. Raises
    ValueError for a needed distribution that is not installed."""
    wanted: dict[str, str] = {}
    missing: list[str] = []
    todo: list[tuple[str, frozenset[str]]] = [("mserve", frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, with_extras = todo.pop()
        key = canonicalize_name(name)
        if (key, with_extras) in seen:
            continue
        seen.add((key, with_extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if key != "mserve":
            wanted[key] = f"{dist.metadata['Name']}=={dist.version}"
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in (with_extras or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    if missing:
        raise ValueError(
            f"not installed here: {', '.join(sorted(set(missing)))}; the image pins the "
            "versions installed on this machine, so install them first (for extras: "
            f"pip install 'mserve[{','.join(extras)}]')"
        )
    return [wanted[key] for key in sorted(wanted)]


def _pip(args: list[str], what: str) -> None:
    """Run pip with this Python; RuntimeError with the end of its output when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (pip exit {proc.returncode}):\n{tail}")


def build_mserve_wheel(source: MserveSource, dest: Path) -> Path:
    """mserve's wheel, built from the checkout into ``dest``."""
    assert source.checkout is not None
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("mserve-*.whl"):
        old.unlink()
    _pip(["wheel", "--no-deps", "-w", str(dest), str(source.checkout)], "building mserve's wheel")
    wheels = sorted(dest.glob("mserve-*.whl"))
    if not wheels:
        raise RuntimeError(f"building mserve's wheel left no mserve-*.whl in {dest}")
    return wheels[-1]


def fill_wheelhouse(requirements: Path, dest: Path) -> list[Path]:
    """Every wheel the pinned requirements need, for this Python and platform, in ``dest``
    (downloaded from the package index, or built where only a source archive exists)."""
    dest.mkdir(parents=True, exist_ok=True)
    _pip(
        ["wheel", "--no-deps", "-w", str(dest), "-r", str(requirements)],
        "collecting the wheelhouse",
    )
    return sorted(dest.glob("*.whl"))


def copy_repository(repo: Path, dest: Path) -> int:
    """Copy the model repository to ``dest`` (hidden files and caches left out); its size in
    bytes."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(repo, dest, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.pyc"))
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def write_docker_context(
    repo: Path, out: Path, options: DockerOptions, progress: Progress | None = None
) -> list[Path]:
    """Write the build context for ``repo`` into ``out`` (created; what this writes is
    replaced, other files are left); returns the files and folders written. ValueError for
    a bad repository or request, RuntimeError when pip cannot make the wheels."""
    say = progress or (lambda _msg: None)
    models = repository_models(repo) if options.bake_models else []
    for extra in options.extras:
        if extra not in IMAGE_EXTRAS:
            raise ValueError(f"unknown extra {extra!r}: expected one of {', '.join(IMAGE_EXTRAS)}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    source = mserve_source()
    lines = pinned_requirements(options.extras)
    wheel = None
    top = f"mserve=={source.version}"  # its extras' dependencies are among the pinned lines
    if source.checkout is not None:
        say(f"building mserve's wheel from {source.checkout}")
        wheel = build_mserve_wheel(source, out / "dist")
        written.append(out / "dist")
        if not options.wheelhouse:  # with a wheelhouse, the wheel is found there
            top = f"{BUILD_DIR}/dist/{wheel.name}"
    requirements = out / "requirements.txt"
    requirements.write_text(
        "# written by 'mserve deploy docker': the versions this image was made from\n"
        + "\n".join([*lines, top])
        + "\n",
        encoding="utf-8",
    )
    written.append(requirements)
    if options.wheelhouse:
        say(f"collecting {len(lines)} pinned wheels into {out / 'wheelhouse'}")
        deps = out / "requirements-deps.txt"
        deps.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            fill_wheelhouse(deps, out / "wheelhouse")
        finally:
            deps.unlink()
        if wheel is not None:
            shutil.copy2(wheel, out / "wheelhouse" / wheel.name)
            shutil.rmtree(out / "dist")
            written.remove(out / "dist")
        else:
            _pip(
                ["download", "--no-deps", "-d", str(out / "wheelhouse"), top],
                f"downloading {top}",
            )
        written.append(out / "wheelhouse")
    if options.bake_models:
        size = copy_repository(repo, out / "models")
        say(f"copied {len(models)} model(s), {size / 2**20:.1f} MiB, into {out / 'models'}")
        written.append(out / "models")
    texts = {
        "Dockerfile": dockerfile(options, wheel_name=wheel.name if wheel else None),
        ".dockerignore": DOCKERIGNORE,
        "README.md": readme(options, models, wheel is not None),
    }
    for name, text in texts.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


DOCKERIGNORE = """\
# the build needs Dockerfile, requirements.txt, dist/ or wheelhouse/, and models/
README.md
**/.git
**/__pycache__
**/*.pyc
**/.ipynb_checkpoints
"""

#: MSERVE_HEALTH_URL: where the check asks, for a server started on another port or with TLS
_HEALTHCHECK = (
    "import os, sys, urllib.request; "
    "url = os.environ.get('MSERVE_HEALTH_URL', "
    f"'http://127.0.0.1:{HTTP_PORT}{READY_PATH}'); "
    "sys.exit(urllib.request.urlopen(url, timeout=3).status != 200)"
)


def dockerfile(options: DockerOptions, wheel_name: str | None) -> str:
    """The Dockerfile's text."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    copies = [f"COPY requirements.txt {BUILD_DIR}/requirements.txt"]
    if options.wheelhouse:
        copies.append(f"COPY wheelhouse/ {BUILD_DIR}/wheelhouse/")
        pip = f"--no-index --find-links={BUILD_DIR}/wheelhouse -r {BUILD_DIR}/requirements.txt"
    else:
        if wheel_name is not None:
            copies.append(f"COPY dist/ {BUILD_DIR}/dist/")
        pip = f"-r {BUILD_DIR}/requirements.txt"
    version_check = (
        'python3 -c "import sys; v = sys.version_info[:2]; '
        f"sys.exit(0 if v == ({py.replace('.', ', ')}) else "
        f"'this image pins wheels for Python {py}; the base image has %d.%d: pass "
        f"--build-arg BASE_IMAGE=<a Python {py} image>' % v)\""
    )
    models = (
        f"COPY models/ {MODELS_DIR}/"
        if options.bake_models
        else f"# the model repository is mounted at run time: docker run -v REPO:{MODELS_DIR}:ro"
    )
    cmd = json.dumps(options.shape.args())
    ports = " ".join(f"-p {p}:{p}" for p in (HTTP_PORT, GRPC_PORT, METRICS_PORT))
    healthcheck = json.dumps(["python3", "-c", _HEALTHCHECK])
    return f"""\
# mserve serving the model repository {options.name!r}; written by 'mserve deploy docker'.
#   docker build -t {options.tag()} .
#   docker run --rm --read-only --tmpfs /tmp {ports} {options.tag()}
# The base is any image with Python {py} and its venv module (python3 -m venv):
#   docker build --build-arg BASE_IMAGE=registry.example.com/python:{py}-slim -t ... .
ARG BASE_IMAGE={options.base()}

# stage 1: the virtual environment, made from the pinned requirements
FROM ${{BASE_IMAGE}} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
{chr(10).join(copies)}
RUN {version_check} \\
 && python3 -m venv {VENV_DIR} \\
 && {VENV_DIR}/bin/pip install --no-cache-dir {pip} \\
 && {VENV_DIR}/bin/mserve --version

# stage 2: the runtime, without pip's build inputs
FROM ${{BASE_IMAGE}}
LABEL org.opencontainers.image.title={json.dumps(options.name)} \\
      org.opencontainers.image.description="mserve: V2 inference over HTTP and gRPC" \\
      org.opencontainers.image.version={json.dumps(__version__)}
# a system user with no login and no home; numeric, so that Kubernetes' runAsNonRoot can check it
RUN groupadd --system --gid {USER_ID} mserve \\
 && useradd --system --no-log-init --uid {USER_ID} --gid {USER_ID} --no-create-home \\
      --home-dir /nonexistent --shell /usr/sbin/nologin mserve
COPY --from=build {VENV_DIR} {VENV_DIR}
{models}
# HOME: libraries that keep a cache or an id find a writable place
ENV PATH={VENV_DIR}/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER {USER_ID}:{USER_ID}
# the server writes only under /tmp: a read-only root works with a tmpfs there
WORKDIR /tmp
# {HTTP_PORT}: V2 and TF Serving REST (and {METRICS_PATH}); {GRPC_PORT}: V2 over gRPC;
# {METRICS_PORT}: {METRICS_PATH} and /v2/health/* alone, for scrapers and probes
EXPOSE {HTTP_PORT} {GRPC_PORT} {METRICS_PORT}
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \\
  CMD {healthcheck}
ENTRYPOINT ["mserve"]
CMD {cmd}
"""


def readme(options: DockerOptions, models: list[str], from_checkout: bool) -> str:
    """The context's README: what is in it and the commands to build and run it."""
    tag = options.tag()
    run_models = "" if options.bake_models else f" -v $PWD/REPO:{MODELS_DIR}:ro"
    source = (
        "a wheel built from the mserve checkout this was written from (`dist/`)"
        if from_checkout
        else f"mserve {__version__} from the package index"
    )
    install = (
        "every wheel it needs is in `wheelhouse/`: the build uses no network"
        if options.wheelhouse
        else "its dependencies come from the package index at build time (write the context "
        "with `--wheelhouse` for a build without network)"
    )
    served = ", ".join(models) if models else f"the repository mounted at {MODELS_DIR}"
    ports = " ".join(f"-p {p}:{p}" for p in (HTTP_PORT, GRPC_PORT, METRICS_PORT))
    run = f"docker run --rm --read-only --tmpfs /tmp {ports}{run_models} {tag}"
    return f"""\
# Docker image: {options.name}

Written by `mserve deploy docker`. The image serves {served} with mserve, from {source};
{install}. `requirements.txt` pins each dependency to the version it was written with.

## Build and run

```sh
docker build -t {tag} .
{run}
curl -s localhost:{HTTP_PORT}{READY_PATH} -o /dev/null -w '%{{http_code}}\\n'   # 200 once ready
mserve bench http://localhost:{HTTP_PORT} -m MODEL --concurrency 1,8
```

- Another base image (any image with Python {sys.version_info.major}.{sys.version_info.minor} and
  `python3 -m venv`): `--build-arg BASE_IMAGE=...`.
- The server runs as user {USER_ID} (not root) and writes only under `/tmp`, so a read-only
  root file system works (`--read-only --tmpfs /tmp`).
- Ports: {HTTP_PORT} serves V2 over HTTP, TF Serving's REST API, Prometheus metrics at
  `{METRICS_PATH}` and the health routes; {GRPC_PORT} serves V2 over gRPC; {METRICS_PORT} serves
  `{METRICS_PATH}` and the health routes alone (for a scraper kept apart from inference).
- `HEALTHCHECK` asks `{READY_PATH}`; `docker ps` shows the container healthy once every
  model has loaded.
- Server options go after the image name, replacing the default command:
  `docker run ... {tag} serve {MODELS_DIR} --host 0.0.0.0 --workers 2`.
- Kubernetes: `mserve deploy kubernetes REPO --image {tag}` writes manifests for this image.
"""
