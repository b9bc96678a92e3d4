"""A system's server as a child process: pinned to its cores with taskset, in a process group
of its own (so that stopping it stops every worker it forked), its output in a log file.

Only the group this module started is ever signalled.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from mserve.compare.systems import Launch


class NotReady(RuntimeError):
    """The server exited, or did not answer its ready URL with 200 in time."""


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class ServedSystem:
    """One system's server process, started from its ``Launch``."""

    def __init__(self, launch: Launch, cpus: str, log: Path) -> None:
        self.launch = launch
        self.cpus = cpus
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_ns = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server has not been started")
        return self.proc.pid

    def start(self) -> None:
        """Start the server (``taskset -c CPUS ARGV``); the start-up clock starts here."""
        env = {**os.environ, **self.launch.env}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.started_ns = time.monotonic_ns()
            self.proc = subprocess.Popen(
                ["taskset", "-c", self.cpus, *self.launch.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.launch.cwd,
                start_new_session=True,  # a group of its own: its workers stop with it
            )

    def exit_status(self) -> int | None:
        """The exit status once the server has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, timeout_s: float, poll_s: float = 0.02) -> float:
        """Poll the ready URL until it answers 200; returns the seconds since ``start``.
        NotReady, with the log's tail, when the server exits first or the time runs out."""
        deadline = self.started_ns + int(timeout_s * 1e9)
        while time.monotonic_ns() < deadline:
            status = self.exit_status()
            if status is not None:
                raise NotReady(f"exited with status {status} before it was ready")
            if _answers_200(self.launch.ready_url):
                return (time.monotonic_ns() - self.started_ns) / 1e9
            time.sleep(poll_s)
        raise NotReady(f"not ready after {timeout_s:g} s ({self.launch.ready_url})")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM to the group, SIGKILL to what is left of it after ``timeout_s``; returns the
        server's exit status."""
        if self.proc is None:
            return None
        group = self.proc.pid
        _signal_group(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout_s)
        deadline = time.monotonic() + (timeout_s if self.proc.poll() is not None else 0)
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.05)  # workers finishing after the parent
        _signal_group(group, signal.SIGKILL)
        return self.proc.wait()


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
