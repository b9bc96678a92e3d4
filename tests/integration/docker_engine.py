"""A Docker engine of the tests' own: ``dockerd`` with its own data root, exec root and socket,
no bridge, no iptables (containers use the host's network, on loopback), and a base image made
here with debootstrap (no registry can be reached), kept between runs in the data root.

Only what this module starts is stopped, by its PID."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: the base image the tests build on: Debian with Python and its venv module, nothing more
BASE_IMAGE = "mserve-test-base:bookworm"
SUITE = "bookworm"
CACHE = Path(os.environ.get("MSERVE_TEST_CACHE", Path.home() / ".cache" / "mserve-tests"))


class EngineUnavailable(RuntimeError):
    """The engine or the base image cannot be had on this machine; says why."""


@dataclass(frozen=True)
class Engine:
    """A running dockerd: talk to it with ``docker`` and this ``env`` (DOCKER_HOST)."""

    host: str
    pid: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine; AssertionError with its output on failure."""
        proc = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=stdin is None,
            input=stdin,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc  # type: ignore[return-value]


def _missing_tools() -> list[str]:
    return [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]


def _mirror() -> str:
    """The Debian mirror apt is configured with (debootstrap must use one it can reach)."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8")
            m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+" + SUITE, text, re.M
            )
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def docker_engine() -> Iterator[Engine]:
    """Start dockerd for the tests and stop it at the end. The data root lives in the cache
    (so that the base image is made once); a second run at the same time gets a fresh one."""
    missing = _missing_tools()
    if missing:
        raise EngineUnavailable(
            f"not installed: {', '.join(missing)} (Debian: apt-get install docker.io "
            "debootstrap; scripts/test does it)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("dockerd needs root here; run the tests as root")
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CACHE / "docker.lock").open("w")
    with contextlib.ExitStack() as stack:
        stack.callback(lock.close)
        run_dir = Path(tempfile.mkdtemp(prefix="mserve-dockerd-", dir="/tmp"))
        stack.callback(shutil.rmtree, run_dir, True)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data_root = CACHE / "docker"
        except BlockingIOError:  # another run holds the cached data root
            data_root = run_dir / "data"
        socket_path = run_dir / "docker.sock"
        log_path = run_dir / "dockerd.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(data_root),
                    "--exec-root",
                    str(run_dir / "exec"),
                    "--pidfile",
                    str(run_dir / "dockerd.pid"),
                    "-H",
                    f"unix://{socket_path}",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(_stop, proc)
        engine = Engine(f"unix://{socket_path}", proc.pid)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {proc.returncode}: {_tail(log_path)}")
            if engine.docker("version", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"dockerd did not answer within 60 s: {_tail(log_path)}")
            time.sleep(0.3)
        yield engine


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the dockerd this module started (it stops its containerd); kill it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _tail(path: Path, lines: int = 12) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def base_image(engine: Engine) -> str:
    """The tests' base image in this engine, made with debootstrap when missing (a minute or
    two, then kept in the data root)."""
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="mserve-rootfs-", dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3-minimal,python3-venv",
                SUITE,
                str(rootfs),
                _mirror(),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise EngineUnavailable(
                f"debootstrap failed ({proc.returncode}): "
                f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run(
            ["docker", "import", "-", BASE_IMAGE],
            env=engine.env,
            stdin=tar.stdout,
            capture_output=True,
            timeout=300,
            check=False,
        )
        tar.stdout.close()
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise EngineUnavailable(f"docker import failed: {imported.stderr.decode()[-1500:]}")
    return BASE_IMAGE
