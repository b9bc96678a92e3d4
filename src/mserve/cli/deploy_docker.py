"""``mserve deploy docker REPO --out DIR``: a Docker build context serving REPO (the work is
:mod:`mserve.deploy.docker`); ``--build`` also builds the image when an engine answers."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK, UNAVAILABLE, USAGE

EPILOG = """\
files written into DIR (created if missing; these are replaced, other files are left):
  Dockerfile         two stages: a virtual environment made from the pinned requirements, then
                     the runtime image: non-root user 10001, HEALTHCHECK on /v2/health/ready,
                     EXPOSE 8000 (HTTP), 8001 (gRPC), 8002 (metrics), ENTRYPOINT mserve
  .dockerignore      keeps the README and caches out of the build
  README.md          the build and run commands
  requirements.txt   every dependency pinned to the version installed here
  dist/              mserve's wheel, when this mserve is installed from a source checkout
  wheelhouse/        with --wheelhouse: every wheel, so that the build needs no network
  models/            a copy of REPO (not with --mount-models)

examples:
  mserve deploy docker models/ --out build/ --build
  mserve deploy docker models/ --out build/ --wheelhouse --base-image python:3.11-slim-bookworm
  mserve deploy docker models/ --out build/ --mount-models --image registry.example.com/ml/digits:1
  docker run --rm --read-only --tmpfs /tmp -p 8000:8000 -p 8001:8001 digits:0.1.0

exit codes: 0 written (and built); 2 bad arguments or repository; 1 pip or the build failed;
5 --build with no Docker engine reachable (the context is written; build it yourself)
"""


def register(targets: Any) -> None:
    """Add ``docker`` to the ``mserve deploy`` targets."""
    from mserve.deploy.container import ServeShape
    from mserve.deploy.docker import IMAGE_EXTRAS

    shape = ServeShape()
    p = targets.add_parser(
        "docker",
        help="a Docker build context (Dockerfile, pinned wheels, models) serving REPO",
        description=(
            "Write a Docker build context that serves the model repository REPO with mserve: "
            "a slim Python base (a build argument), mserve and its pinned dependencies in a "
            "virtual environment, a non-root user, a health check on readiness, the HTTP and "
            "gRPC ports exposed, and REPO copied in (or mounted at /models)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("repo", type=Path, metavar="REPO", help="the model repository to serve")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    p.add_argument(
        "--name", help="the deployment's name (default: REPO's folder name as a DNS label)"
    )
    p.add_argument("--image", metavar="TAG", help="the image tag (default: NAME:VERSION)")
    p.add_argument(
        "--base-image",
        metavar="IMAGE",
        help="the default of the BASE_IMAGE build argument: any image with this Python's "
        "version and its venv module (default: python:X.Y-slim-bookworm for this Python)",
    )
    p.add_argument(
        "--wheelhouse",
        action="store_true",
        help="put every wheel into the context (built or downloaded here), so that the build "
        "needs no network: air-gapped builds",
    )
    p.add_argument(
        "--mount-models",
        action="store_true",
        help="leave REPO out of the image; mount it at run time (-v REPO:/models:ro)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        choices=IMAGE_EXTRAS,
        help="an optional part of mserve to install too (openvino: OpenVINO IR models; gpu: "
        "GPU figures in /metrics); repeatable",
    )
    p.add_argument(
        "--workers", type=int, default=shape.workers, help="server processes (default 1)"
    )
    p.add_argument(
        "--build",
        action="store_true",
        help="then run 'docker build' (DOCKER_HOST is honoured); says so when no engine answers",
    )
    p.add_argument("--json", action="store_true", help='print {"files": [...], ...} to stdout')
    p.set_defaults(run=run_docker)


def run_docker(args: argparse.Namespace) -> int:
    from mserve.deploy.container import ServeShape, default_name, resource_name
    from mserve.deploy.docker import DockerOptions, write_docker_context

    if args.workers < 1:
        print("mserve deploy docker: error: --workers must be at least 1", file=sys.stderr)
        return USAGE
    options = DockerOptions(
        name=resource_name(args.name) if args.name else default_name(args.repo),
        image=args.image or "",
        base_image=args.base_image or "",
        wheelhouse=args.wheelhouse,
        bake_models=not args.mount_models,
        extras=tuple(dict.fromkeys(args.extra)),
        shape=ServeShape(workers=args.workers, unready_grace_s=0.0),
    )

    def say(msg: str) -> None:
        print(f"mserve deploy docker: {msg}", file=sys.stderr, flush=True)

    try:
        paths = write_docker_context(args.repo, args.out, options, say)
    except ValueError as exc:
        print(f"mserve deploy docker: error: {exc}", file=sys.stderr)
        return USAGE
    except (RuntimeError, OSError) as exc:
        print(f"mserve deploy docker: error: {exc}", file=sys.stderr)
        return FAILURE
    code = OK
    built = None
    if args.build:
        code = build_image(args.out, options.tag(), say)
        built = code == OK
    if args.json:
        doc = {"files": [str(p) for p in paths], "image": options.tag(), "built": built}
        print(json.dumps(doc))
    else:
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
        if not args.build:
            print(f"build it with: docker build -t {options.tag()} {args.out}", file=sys.stderr)
    return code


def build_image(context: Path, tag: str, say: Any) -> int:
    """``docker build -t TAG CONTEXT`` with the output streamed to stderr; UNAVAILABLE when
    no client or engine answers (saying so), FAILURE when the build fails."""
    docker = shutil.which("docker")
    manual = f"build it where an engine runs: docker build -t {tag} {context}"
    if docker is None:
        say(f"no docker command on PATH; {manual}")
        return UNAVAILABLE
    probe = subprocess.run(
        [docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        say(f"no Docker engine answers ({why}); {manual}")
        return UNAVAILABLE
    say(f"building {tag} with Docker engine {probe.stdout.strip()}")
    proc = subprocess.run(
        [docker, "build", "-t", tag, str(context)], stdout=sys.stderr, check=False
    )
    if proc.returncode != 0:
        say(f"docker build failed (exit {proc.returncode})")
        return FAILURE
    say(f"built {tag}; run it: docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 {tag}")
    return OK
