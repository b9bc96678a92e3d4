"""Run ``mserve serve`` as a child process on a free port and wait until it is ready.

Used by ``mserve quickstart``, by tools that launch our server for measurement, and by the
integration tests. Only the process this object started is ever signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``mserve serve REPO`` in a subprocess; a context manager that stops it on exit."""

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cpu: str | None = None,
        keep_log: bool = False,
        ca_file: str | None = None,
    ) -> None:
        """``ca_file``: the server serves TLS (its args carry --tls-cert / --tls-key), and this
        CA certificate verifies it."""
        self.repository = Path(repository)
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args or [])
        self.env = env
        self.cpu = cpu  # e.g. "1": pin with taskset, for measurements
        self.keep_log = keep_log  # else the log is removed after a clean stop
        self.ca_file = ca_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="mserve-server-", suffix=".log", delete=False
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self._log.name)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 60.0) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "mserve",
            "serve",
            str(self.repository),
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]
        if self.cpu is not None:
            cmd = ["taskset", "-c", self.cpu, *cmd]
        env = dict(os.environ if self.env is None else self.env)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/v2/health/ready`` until 200; raise with the server's log when it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"mserve serve exited with status {self.proc.returncode}:\n{self.log()}"
                )
            try:
                context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
                url = f"{self.url}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=1, context=context) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"mserve serve was not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self.proc.returncode in (0, -signal.SIGTERM) and not self.keep_log:
            self.log_path.unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
