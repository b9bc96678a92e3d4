"""Run the comparison: each system in turn started on the server cores, loaded by ``mserve
bench`` from the bench cores (the same sweep, then the same SLO search, for every system), its
start-up time and memory recorded, then stopped before the next one starts.

A system that is not installed is skipped with its install hint; one that fails (its launcher
raises, it never gets ready, it crashes, the bench fails) is recorded as failed with the reason,
and the others still run. ``compare.json`` is rewritten after every system, so an interrupted
comparison keeps what it measured.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve.compare.cpus import CpuSplit
from mserve.compare.memory import MIB, RssSampler
from mserve.compare.process import NotReady, ServedSystem, tail
from mserve.compare.result import FAILED, SKIPPED, SystemRun, new_document, run_key
from mserve.compare.systems import Launch, ModelUnderTest, System

#: A progress line for the user (the CLI prints it on stderr).
Progress = Callable[[str], None]

#: bench's defaults, for the time limit of a run that does not set them
BENCH_WARMUP_S, BENCH_MAX_DURATION_S = 2.0, 30.0
#: the most probes bench's SLO search makes
SLO_MAX_PROBES = 12


class BenchFailed(RuntimeError):
    """``mserve bench`` exited with an error, ran past its time, or wrote no result."""


@dataclass(frozen=True)
class Plan:
    """What every system is measured with: the same for all of them."""

    model: ModelUnderTest
    out: Path  # reports, logs and each system's working folder
    cpus: CpuSplit
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float | None = None  # fixed measured seconds per step; None: bench's stability
    warmup_s: float | None = None  # None: bench's default
    slo: str | None = None  # e.g. 'p99=20ms': also search the highest load that meets it
    ready_timeout_s: float = 180.0
    stop_timeout_s: float = 15.0

    def settings(self) -> dict[str, Any]:
        """The plan as the result document records it."""
        return {
            "concurrency": list(self.concurrency),
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "slo": self.slo,
            "server_cpus": self.cpus.server,
            "bench_cpus": self.cpus.bench,
            "threads": self.model.threads,
            "ready_timeout_s": self.ready_timeout_s,
        }

    def load_args(self) -> list[str]:
        """The bench options every run shares: step length and warm-up."""
        args: list[str] = []
        if self.duration_s is not None:
            args += ["--duration", f"{self.duration_s:g}"]
        if self.warmup_s is not None:
            args += ["--warmup", f"{self.warmup_s:g}"]
        return args

    def bench_timeout_s(self, steps: int) -> float:
        """The longest a bench run of ``steps`` steps may take before it counts as hung."""
        warmup = BENCH_WARMUP_S if self.warmup_s is None else self.warmup_s
        measured = BENCH_MAX_DURATION_S if self.duration_s is None else self.duration_s
        return 60.0 + steps * (warmup + measured + 5.0)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def protocol_of(bench_args: Sequence[str]) -> str:
    """The ``--protocol`` among bench options (bench's default, v2-json, when absent)."""
    for i, arg in enumerate(bench_args):
        if arg == "--protocol" and i + 1 < len(bench_args):
            return bench_args[i + 1]
        if arg.startswith("--protocol="):
            return arg.partition("=")[2]
    return "v2-json"


def compare(
    runs: Sequence[tuple[System, bool]],
    plan: Plan,
    progress: Progress,
    command: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure each (system, batching) in turn; returns the result document, which is also
    written to ``plan.out / 'compare.json'`` after every system."""
    plan.out.mkdir(parents=True, exist_ok=True)
    doc = new_document(plan.model, plan.settings(), list(command))
    for system, batching in runs:
        doc["systems"].append(run_system(system, batching, plan, progress).to_dict())
        save_document(doc, plan.out / "compare.json")
    return doc


def save_document(doc: dict[str, Any], path: Path) -> None:
    """Write the result document (atomically: a reader never sees half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_system(system: System, batching: bool, plan: Plan, progress: Progress) -> SystemRun:
    """Start one system, measure it, stop it; what became of it, never an exception for a
    failure of the system itself."""
    key = run_key(system.name, batching)
    run = SystemRun(key, system.name, system.title, batching_requested=batching)
    hint = system.missing()
    if hint is not None:
        run.status, run.reason = SKIPPED, hint
        progress(f"{key}: skipped: {hint}")
        return run
    workdir = plan.out / key
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        launch = system.launch(plan.model, free_port(), workdir, batching)
    except Exception as exc:  # a launcher is outside code: whatever it raises fails the system
        return _failed(run, f"its launcher failed: {type(exc).__name__}: {exc}", progress)
    run.protocol, run.batching = protocol_of(launch.bench_args), launch.batching
    log = plan.out / f"{key}.log"
    run.files["log"] = str(log)
    served = ServedSystem(launch, plan.cpus.server, log)
    progress(f"{key}: starting on CPU {plan.cpus.server}" + (" with batching" if batching else ""))
    try:
        served.start()
        _measure(run, served, launch, plan, progress)
    except OSError as exc:
        _failed(run, f"cannot start {launch.argv[0]}: {exc.strerror or exc}", progress)
    except NotReady as exc:
        _failed(run, str(exc), progress, tail(log))
    except BenchFailed as exc:
        _failed(run, str(exc), progress, tail(log))
    finally:
        run.exit_status = served.stop(plan.stop_timeout_s)
    return run


def _measure(
    run: SystemRun, served: ServedSystem, launch: Launch, plan: Plan, progress: Progress
) -> None:
    run.startup_s = round(served.wait_ready(plan.ready_timeout_s), 3)
    sampler = RssSampler(served.pid)
    run.rss_idle_mib = round(sampler.sample() / MIB, 1)
    progress(f"{run.key}: ready in {run.startup_s:.2f} s, {run.rss_idle_mib:.0f} MiB resident")
    sampler.start()
    try:
        levels = ",".join(map(str, plan.concurrency))
        progress(f"{run.key}: measuring concurrency {levels}")
        sweep = ["--concurrency", levels]
        run.sweep = _bench(run, launch, plan, "sweep", sweep, len(plan.concurrency))
        progress(f"{run.key}: {_sweep_line(run.sweep)}")
        if plan.slo:
            start = str(plan.concurrency[0])
            args = ["--concurrency", start, "--slo", plan.slo]
            progress(f"{run.key}: searching the highest concurrency that meets {plan.slo}")
            run.slo = _bench(run, launch, plan, "slo", args, SLO_MAX_PROBES)
            progress(f"{run.key}: {_slo_line(run.slo)}")
    finally:
        run.rss_peak_mib = round(sampler.stop() / MIB, 1)
    status = served.exit_status()
    if status is not None:
        raise NotReady(f"exited with status {status} during the load")


def _bench(
    run: SystemRun, launch: Launch, plan: Plan, part: str, args: list[str], steps: int
) -> dict[str, Any]:
    """One ``mserve bench`` run against the system, pinned to the bench cores."""
    result = plan.out / f"{run.key}.{part}.json"
    log = plan.out / f"{run.key}.bench.log"
    run.files[part] = str(result)
    run.files["bench_log"] = str(log)
    result.unlink(missing_ok=True)
    argv = ["taskset", "-c", plan.cpus.bench, sys.executable, "-m", "mserve", "bench"]
    argv += [launch.target, *launch.bench_args, *args, *plan.load_args()]
    argv += ["-o", str(result), "--no-save", "-q"]
    timeout_s = plan.bench_timeout_s(steps)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        status = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"mserve bench ({part}) ran past {timeout_s:g} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if status != 0 or not result.is_file():
        raise BenchFailed(f"mserve bench ({part}) exited with status {status}: {_why(log, start)}")
    doc: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return doc


def _why(log: Path, start: int) -> str:
    """What bench said last about its failure: its own error line, else its last lines."""
    with log.open("rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").strip().splitlines()
    said = [line for line in lines if line.startswith("mserve")]
    return said[-1] if said else " / ".join(lines[-3:]) or "(no output)"


def _failed(run: SystemRun, reason: str, progress: Progress, log_tail: str = "") -> SystemRun:
    run.status, run.reason, run.log_tail = FAILED, reason, log_tail
    progress(f"{run.key}: failed: {reason}")
    if log_tail:
        progress(f"{run.key}: the last lines of its log:\n{log_tail}")
    return run


def _sweep_line(doc: dict[str, Any]) -> str:
    parts = [
        f"c={s['load'].get('concurrency')} {s.get('throughput_rps', 0):,.1f} req/s "
        f"p99 {s.get('latency_ms', {}).get('p99', 0):.2f} ms"
        for s in doc.get("steps", [])
    ]
    return "; ".join(parts) or "no steps"


def _slo_line(doc: dict[str, Any]) -> str:
    slo = doc.get("slo") or {}
    if slo.get("best_load") is None:
        return f"no concurrency met {slo.get('objective')}"
    return (
        f"{slo.get('best_throughput_rps', 0):,.1f} req/s at c={slo['best_load']} "
        f"within {slo.get('objective')}"
    )
