"""Reliability: a soak at 80 % of capacity and an overload at 5x capacity, on the real server.

One repository, one ``mserve serve`` subprocess pinned to one core, the load on the other:

1. **The model**: a small CNN trained on the spot on scikit-learn's ``load_digits`` (3x3
   convolutions 1-64-128-128 on the 8x8 image, then a linear layer; 3 epochs), exported with
   ``mserve.convert.pytorch`` as ``benchmarks/conversion.py`` does: about 0.55 ms of compute per
   image at batch 1 and at batch 16 alike, so the model, not the HTTP layer, bounds throughput,
   and capacity does not hinge on how well requests batch. Two models were tried first: the
   64-unit ``MLPClassifier`` of the other scripts serves about 8,000 req/s on one core, 5x that
   is more than one core of load generator can send, and the server would spend its core
   parsing requests before any queue filled; an ``MLPClassifier(4096, 4096)`` streams its 64 MB
   of weights from memory for every batch (4.5 ms at batch 1, 0.6 ms a row at batch 16), so its
   capacity was 180 or 1,650 req/s depending on whether the load batched. Config:
   ``max_batch_size`` 16, ``dynamic_batching`` (2 ms delay, ``max_queue_size`` 256), one
   instance, one intra-op thread. Requests are V2 binary, one digits test image each.
2. **Capacity**: open-loop ``mserve bench`` steps at constant rates (its Python API,
   ``run_step``), doubling, then bisection to 5 % as ``mserve bench --slo`` does. A rate is
   sustained when every request got a 200 (the queue sheds with 503), the rate was sent in full
   and p99 <= 100 ms. ``--slo`` itself also fails a step whose sends lag more than 1 ms at p99,
   which a core shared with other people's tests breaks at any rate (see ``sustained``).
3. **Soak**: ``--soak-minutes`` at 80 % of the best rate the search met, through ``mserve
   bench``'s Python API (``run_step``) so that every 5 s window's latency histogram is kept: p50,
   p99 and p99.9 of the first and the last minute, errors by kind, and the server's RSS (its
   process and children, from /proc/PID/status) sampled every window. Memory growth = median RSS
   of the last minute less that of the first minute after warm-up, over the first.
4. **Overload**: 5x capacity for ``--overload-seconds``. ``mserve bench`` counts a 503 as an
   error kind and keeps no latency for it, so this part uses a small open-loop client of its own
   (``OverloadClient``: the bench's connection, request bytes and histograms; constant arrivals,
   latency from the intended send time), which records every answer's status and latency. A 503
   counts as shed when its body names ``max_queue_size``.
5. **Recovery**: 10 s at the soak rate right after the overload.

Targets (a missed one prints FAIL and still exits 0; a run that fails exits 1):

- soak memory growth < 5 %;
- soak: zero errors (warm-up included);
- overload: p99 of the answered (200) requests <= 10x the soak's p99 (the issue asks for it to
  be bounded; the factor is this script's choice), and not rising from the first to the last
  window;
- overload: shed requests answered 503 with p99 < 10 ms (from the intended send).

Run from the repository root (about 14 minutes; ``--soak-minutes`` sets the soak)::

    python benchmarks/reliability.py --out benchmarks/out/reliability.json \\
        --results benchmarks/RELIABILITY.md

``--quick`` tries it out in about 3 minutes (a 1-minute soak, short probes; nothing to
record). ``--parts`` runs only some parts, in their order (``--parts capacity,overload,recovery``
skips the soak; ``--rate R`` takes R req/s as the capacity instead of searching for it); a
partial run is not recorded, its targets are only those of the parts it ran, and without a soak
the overload's bound and the shed-cost estimate refer to the capacity search's best probe instead.
Only the server this script started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hoststats import (
    busy_seconds,
    cpu_ticks,
    process_cpu_s,
    write_result,
)
from hoststats import (
    machine_facts as host_facts,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"
MODEL = "digits"
SECTION = "reliability"

# The targets from the issue (the overload bound's factor is this script's choice).
TARGET_GROWTH = 0.05  # soak RSS growth, last minute over the first
TARGET_SHED_P99_MS = 10.0  # 503 answers under overload
TARGET_OVERLOAD_RATIO = 10.0  # overload p99 of 200s over the soak's p99
SOAK_SHARE = 0.8
OVERLOAD_FACTOR = 5.0
SLO_P99_MS = 100.0  # a probe sustained its rate only with p99 within this
PARTS = ("capacity", "soak", "overload", "recovery")  # in the order they run
clock = time.perf_counter_ns


# -- the model and its repository ----------------------------------------------------------------


def digits_cnn(channels: tuple[int, int]) -> Any:
    """Conv(1->a)-ReLU-Conv(a->b)-ReLU-Conv(b->b)-ReLU-Linear(64b->10), 3x3 with padding 1 on
    the 8x8 image: small weights (in cache) and about the same compute per row at any batch."""
    from torch import nn

    a, b = channels
    return nn.Sequential(
        nn.Conv2d(1, a, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(a, b, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(b, b, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(b * 64, 10),
    )


def train(channels: tuple[int, int], epochs: int) -> dict[str, Any]:
    """The digits CNN trained (Adam, batch 64, seeded), exported as ``mserve convert`` exports
    PyTorch models; its test rows and its accuracy on them."""
    import torch
    from sklearn.datasets import load_digits

    from mserve.convert.pytorch import pytorch_to_onnx

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    torch.manual_seed(0)
    model = digits_cnn(channels)
    inputs, targets = torch.from_numpy(x[:1500]), torch.from_numpy(y[:1500])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.monotonic()
    for _ in range(epochs):
        for batch in torch.randperm(1500, generator=torch.Generator().manual_seed(0)).split(64):
            optimizer.zero_grad()
            loss_fn(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x[1500:])).argmax(1).numpy()
    exported = pytorch_to_onnx(
        model,
        example_inputs=[x[1500:1504]],
        input_names=["input"],
        output_names=["logits"],
        class_outputs=("logits",),
    )
    return {
        "onnx": bytes(exported.model.SerializeToString()),
        "x_test": np.ascontiguousarray(x[1500:]),
        "accuracy": round(float((predicted == y[1500:]).mean()), 4),
        "train_s": round(time.monotonic() - t0, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """config.yaml: dynamic batching with a bounded queue, one instance, one thread."""
    return {
        "name": MODEL,
        "backend": "onnxruntime",
        "max_batch_size": args.max_batch,
        "dynamic_batching": {
            "max_queue_delay_microseconds": args.delay_us,
            "max_queue_size": args.queue_size,
        },
        "instance_count": 1,
        "runtime": {"intra_op_threads": 1},
    }


def write_repository(root: Path, onnx_bytes: bytes, config: dict[str, Any]) -> None:
    import yaml

    (root / MODEL / "1").mkdir(parents=True)
    (root / MODEL / "1" / "model.onnx").write_bytes(onnx_bytes)
    (root / MODEL / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# -- the server and its memory -------------------------------------------------------------------


@contextlib.contextmanager
def serving(repo: Path, port: int, cpu: int) -> Iterator[subprocess.Popen[bytes]]:
    """``mserve serve REPO`` of the working tree's src/, pinned to ``cpu``, until ready; stopped
    (this process only) on the way out."""
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "mserve", "serve", str(repo)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read back only if the server fails
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready"
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(
                        f"server not ready: {log.read().decode(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants, KiB (0 for processes already gone)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(m.group(1)) if m else 0
        for task in tasks:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def child_env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    )


class Usage:
    """CPU of the server, of this process and of the whole machine between two points."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t0, self.ticks0 = time.monotonic(), cpu_ticks()
        self.server0, self.me0 = process_cpu_s(server_pid), time.process_time()

    def read(self) -> dict[str, float]:
        seconds = time.monotonic() - self.t0
        server = process_cpu_s(self.pid) - self.server0
        me = time.process_time() - self.me0
        busy = busy_seconds(self.ticks0, cpu_ticks())
        return {
            "seconds": round(seconds, 2),
            "server_cpu_s": round(server, 3),
            "server_cpu_percent": round(100 * server / seconds, 1),
            "client_cpu_percent": round(100 * me / seconds, 1),
            # what neither the server nor this script used: other people's work on the machine
            "other_cpu_percent": round(max(0.0, 100 * (busy - server - me) / seconds), 1),
        }


# -- capacity: the highest constant rate sustained ------------------------------------------------


def sustained(step: dict[str, Any]) -> tuple[bool, str]:
    """Whether an open-loop step was sustained: every request answered 200, the rate sent in
    full (no backlog, within 1 %), p99 within ``SLO_P99_MS``. ``mserve bench --slo`` would also
    fail a step whose sends lagged more than 1 ms at p99; on a core shared with other people's
    tests that rule failed every probe down to 12 req/s, and the lag is charged to the latency
    (measured from the intended send) anyway."""
    if step["error_count"]:
        return False, f"errors {fmt_errors(step['errors'])}"
    if step["generator"]["backlogged"]:
        return False, f"{step['generator']['backlogged']} requests found no free connection"
    if step["achieved_rate_rps"] < 0.99 * step["requested_rate_rps"]:
        return False, f"sent only {step['achieved_rate_rps']:.1f} req/s"
    p99 = step["latency_ms"]["p99"]
    if p99 > SLO_P99_MS:
        return False, f"p99 {p99:.1f} ms > {SLO_P99_MS:g} ms"
    return True, f"p99 {p99:.1f} ms"


async def search(
    probe: Callable[[float], Awaitable[bool]], start: float, precision: float, max_probes: int
) -> tuple[float | None, float | None, int]:
    """Double from ``start`` until a probe fails, then bisect to ``precision``: the highest rate
    that passed, the lowest that failed, and the probes run (as ``mserve bench --slo`` does)."""
    good: float | None = None
    bad: float | None = None
    rate, probes = start, 0
    while probes < max_probes and bad is None:
        probes += 1
        if await probe(rate):
            good, rate = rate, rate * 2
        else:
            bad = rate
    while good is None and bad is not None and probes < max_probes and bad / 2 >= 1:
        probes += 1  # even the start failed: go down
        if await probe(bad / 2):
            good = bad / 2
        else:
            bad = bad / 2
    while good is not None and bad is not None and probes < max_probes:
        if (bad - good) / bad <= precision:
            break
        mid = round((good + bad) / 2, 1)
        probes += 1
        if await probe(mid):
            good = mid
        else:
            bad = mid
    return good, bad, probes


async def capacity(
    url: str, inputs: Path, server_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The highest constant rate sustained (see :func:`sustained`), each probe a ``mserve
    bench`` step (``run_step``) of ``args.probe_seconds``."""
    from mserve.bench.generator import Load
    from mserve.bench.result import Settings
    from mserve.bench.runner import run_step
    from mserve.bench.targets import make_target

    target = make_target("v2-binary", url, model=MODEL, input_data=inputs)
    prepared = await target.prepare()
    settings = Settings(
        warmup_s=args.probe_warmup, window_s=1.0, duration_s=args.probe_seconds, timeout_s=30
    )
    probes: list[dict[str, Any]] = []

    async def probe(rate: float) -> bool:
        usage = Usage(server_pid)
        step = await run_step(target, prepared, Load("open", rate=rate), settings)
        cpu = usage.read()
        met, why = sustained(step)
        probes.append(
            {
                "rate": rate,
                "throughput_rps": step["throughput_rps"],
                "answered": step["count"] + step["warmup"]["ok"],  # warm-up included, as the CPU
                "p99_ms": step["latency_ms"]["p99"],
                "send_lag_p99_ms": step["send_lag_ms"]["p99"],
                "errors": step["errors"],
                "met": met,
                "why": why,
                "bench_verdict": step["verdict"],
                **cpu,
            }
        )
        print(
            f"  {rate:8.1f}/s  {'met' if met else 'missed'}  {why}  (server CPU "
            f"{cpu['server_cpu_percent']:.0f} %, other processes {cpu['other_cpu_percent']:.0f} %)",
            flush=True,
        )
        await asyncio.sleep(args.probe_rest)  # let a failed probe's queue drain
        return met

    good, bad, _ = await search(probe, args.start_rate, 0.05, 14)
    if good is None:
        raise RuntimeError(f"no rate was sustained: {probes}")
    best = next(p for p in reversed(probes) if p["met"] and p["rate"] == good)
    return {
        "objective": f"zero errors, rate sent in full, p99 <= {SLO_P99_MS:g} ms",
        "best_rate": good,
        "first_failing_rate": bad,
        "best_throughput_rps": best["throughput_rps"],
        "probes": probes,
    }


# -- soak: mserve bench's Python API, every window kept ------------------------------------------


def mean(values: Iterable[float]) -> float | None:
    got = list(values)
    return round(statistics.fmean(got), 1) if got else None


def percentiles_ms(h: Any) -> dict[str, float | None]:
    """p50 / p99 / p99.9 / max of a bench histogram (integer microseconds), in ms."""
    if not h.count:
        return {"p50": None, "p99": None, "p999": None, "max": None}
    return {
        "p50": h.value_at_percentile(50) / 1000,
        "p99": h.value_at_percentile(99) / 1000,
        "p999": h.value_at_percentile(99.9) / 1000,
        "max": h.max / 1000,
    }


async def soak(
    url: str,
    inputs: Path,
    rate: float,
    minutes: float,
    warmup_s: float,
    server_pid: int,
    window_s: float,
) -> dict[str, Any]:
    """``rate`` req/s for ``minutes`` after ``warmup_s``, in windows of ``window_s``; the
    server's RSS sampled every window."""
    from mserve.bench.generator import Load
    from mserve.bench.result import Settings
    from mserve.bench.runner import run_step
    from mserve.bench.targets import make_target

    target = make_target("v2-binary", url, model=MODEL, input_data=inputs)
    prepared = await target.prepare()
    settings = Settings(warmup_s=warmup_s, window_s=window_s, duration_s=60 * minutes, timeout_s=30)
    windows: list[dict[str, Any]] = []
    rss = [{"t_s": -warmup_s, "rss_kib": rss_kib(server_pid)}]
    start = 0
    usage = lap = Usage(server_pid)

    def progress(event: dict[str, Any]) -> None:
        nonlocal start, lap
        if event["kind"] != "window":
            return
        w = event["window"]
        start = start or w.start_ns
        t = (w.end_ns - start) / 1e9
        cpu, lap = lap.read(), Usage(server_pid)
        windows.append(
            {
                "t_s": t,
                "latency": w.latency,
                "ok": w.ok,
                "errors": dict(w.errors),
                "other_cpu_percent": cpu["other_cpu_percent"],
                "server_cpu_percent": cpu["server_cpu_percent"],
            }
        )
        rss.append({"t_s": round(t, 1), "rss_kib": rss_kib(server_pid)})

    step = await run_step(target, prepared, Load("open", rate=rate), settings, progress)
    return {"step": step, "windows": windows, "rss": rss, "usage": usage.read()}


def summarise_soak(raw: dict[str, Any], minutes: float) -> dict[str, Any]:
    """First and last span (a minute, or a third of a shorter soak) against each other."""
    from mserve.bench.histogram import Histogram

    step, windows, rss = raw["step"], raw["windows"], raw["rss"]
    total_s = 60 * minutes
    span = min(60.0, total_s / 3)

    def part(lo: float, hi: float) -> dict[str, Any]:
        h = Histogram()
        ok = 0
        errors: dict[str, int] = {}
        for w in windows:
            if lo < w["t_s"] <= hi + 1e-6:
                h.merge(w["latency"])
                ok += w["ok"]
                for k, v in w["errors"].items():
                    errors[k] = errors.get(k, 0) + v
        samples = [r["rss_kib"] for r in rss if lo < r["t_s"] <= hi + 1e-6]
        mine = [w for w in windows if lo < w["t_s"] <= hi + 1e-6]
        return {
            "from_s": lo,
            "to_s": hi,
            "throughput_rps": round(ok / (hi - lo), 1),
            "latency_ms": percentiles_ms(h),
            "errors": errors,
            "rss_mib": round(statistics.median(samples) / 1024, 1) if samples else None,
            "server_cpu_percent": mean(w["server_cpu_percent"] for w in mine),
            "other_cpu_percent": mean(w["other_cpu_percent"] for w in mine),
        }

    first, last = part(0, span), part(total_s - span, total_s)
    per_minute = [part(60 * i, min(60 * (i + 1), total_s)) for i in range(math.ceil(minutes))]
    growth = (
        (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"]
        if first["rss_mib"] and last["rss_mib"]
        else None
    )
    errors = dict(step["errors"])
    for k, v in step["warmup"]["errors"].items():
        errors[k] = errors.get(k, 0) + v
    whole = Histogram.from_dict(step["histogram"])
    return {
        "rate": step["requested_rate_rps"],
        "achieved_rate_rps": step["achieved_rate_rps"],
        "send_lag_p99_ms": step["send_lag_ms"]["p99"],
        "requests": step["count"] + step["error_count"] + step["warmup"]["requests"],
        "measured_ok": step["count"],
        "errors": errors,
        "error_count": sum(errors.values()),
        "latency_ms": percentiles_ms(whole),
        "verdict": step["verdict"],
        "reasons": step["reasons"],
        "server": step["server"],
        "span_s": span,
        "first": first,
        "last": last,
        "per_minute": per_minute,
        "rss_mib_before_warmup": round(rss[0]["rss_kib"] / 1024, 1),
        "rss_mib_max": round(max(r["rss_kib"] for r in rss) / 1024, 1),
        "rss_samples": len(rss),
        "memory_growth": None if growth is None else round(growth, 4),
        "usage": raw["usage"],
    }


# -- overload: an open-loop client that keeps every answer's status and latency --------------------


@dataclass
class Tally:
    """What one window (by intended send time) got: latency histograms per outcome."""

    latency: dict[str, Any] = field(default_factory=dict)  # from the intended send
    service: dict[str, Any] = field(default_factory=dict)  # from the actual send
    sent: int = 0


class OverloadClient:
    """Constant-rate open loop over the bench's HTTP/1.1 connections: a request due while every
    connection is busy opens another (up to ``max_connections``) or waits in a backlog, its
    latency still counted from when it was due (no coordinated omission)."""

    MIN_TICK_NS = 100_000

    def __init__(self, prepared: Any, rate: float, duration_s: float, window_s: float) -> None:
        from mserve.bench import schedule

        self.p = prepared
        self.offsets = schedule.constant_offsets(rate, duration_s)
        self.window_ns = int(window_s * 1e9)
        self.windows = [Tally() for _ in range(math.ceil(duration_s / window_s))]
        self.idle: deque[Any] = deque()
        self.backlog: deque[int] = deque()
        self.conns = 0
        self.opening = 0
        self.max_connections = 900  # the server answers 503 past 1024 (max_connections)
        self.outstanding = 0
        self.next_send = 0
        self.next_request = 0
        self.t0 = 0
        self.lag: Any = None
        self.timer: Any = None
        self.connect_errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def outcome(self, status: int, body: bytes, error: str | None) -> str:
        if error is not None:
            return error
        if status == 200:
            return "200" if self.p.check(status, body) is None else "wrong_output"
        if status == 503:
            return "503" if b"max_queue_size" in body else "503_other"
        return f"http_{status}"

    def done(self, conn: Any, status: int, body: bytes, error: str | None) -> None:
        from mserve.bench.histogram import Histogram

        now = clock()
        self.outstanding -= 1
        kind = self.outcome(status, body, error)
        w = self.windows[min((conn.intended_ns - self.t0) // self.window_ns, len(self.windows) - 1)]
        for hists, since in ((w.latency, conn.intended_ns), (w.service, conn.sent_ns)):
            hist = hists.get(kind)
            if hist is None:
                hist = hists[kind] = Histogram()
            hist.record((now - since) // 1000)
        if not conn.alive:
            self.conns -= 1
            if self.backlog:
                self.open_one()
        elif self.backlog:
            self.send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def send(self, conn: Any, intended_ns: int) -> None:
        reqs = self.p.requests
        conn.send(reqs[self.next_request % len(reqs)], intended_ns)
        self.next_request += 1
        self.outstanding += 1
        self.lag.record((conn.sent_ns - intended_ns) // 1000)
        self.windows[
            min((intended_ns - self.t0) // self.window_ns, len(self.windows) - 1)
        ].sent += 1

    def take_idle(self) -> Any:
        """An idle connection still open, or None (the server may close idle ones)."""
        while self.idle:
            conn = self.idle.popleft()
            if conn.alive:
                return conn
            self.conns -= 1
        return None

    def open_one(self) -> None:
        self.opening += 1  # counted now: a tick may ask for many before any of them runs
        task = asyncio.get_running_loop().create_task(self._open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> None:
        try:
            conn = await self.p.connect(self.p.host, self.p.port, self.done, True)
        except OSError:
            self.connect_errors += 1
            return
        finally:
            self.opening -= 1
        self.conns += 1
        if self.backlog:
            self.send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def tick(self) -> None:
        now = clock()
        offsets, n = self.offsets, len(self.offsets)
        i = self.next_send
        while i < n and self.t0 + offsets[i] <= now:
            intended = self.t0 + int(offsets[i])
            i += 1
            conn = self.take_idle()
            if conn is not None:
                self.send(conn, intended)
            else:
                self.backlog.append(intended)
                if self.conns + self.opening < self.max_connections:
                    self.open_one()
        self.next_send = i
        if i < n:
            self.timer.arm(max(self.t0 + int(offsets[i]), now + self.MIN_TICK_NS), self.tick)

    async def run(self, drain_s: float = 30.0) -> dict[str, Any]:
        from mserve.bench.histogram import Histogram
        from mserve.bench.timer import make_timer

        self.lag = Histogram()
        for _ in range(32):  # a pool ready before the first send
            self.open_one()
        await asyncio.gather(*self._tasks)
        self.timer = make_timer(asyncio.get_running_loop())
        self.t0 = clock() + 50_000_000
        self.timer.arm(self.t0, self.tick)
        end = self.t0 + int(self.offsets[-1]) + int(drain_s * 1e9)
        while (self.next_send < len(self.offsets) or self.outstanding or self.backlog) and (
            clock() < end
        ):
            await asyncio.sleep(0.05)
        self.timer.close()
        sent_s = (clock() - self.t0) / 1e9
        for conn in self.idle:
            conn.close()
        return {
            "unanswered": self.outstanding + len(self.backlog),
            "connect_errors": self.connect_errors,
            "connections": self.conns,
            "lag": self.lag,
            "elapsed_s": round(sent_s, 2),
        }


async def overload(
    url: str, inputs: Path, rate: float, server_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    from mserve.bench.targets import make_target

    prepared = await make_target("v2-binary", url, model=MODEL, input_data=inputs).prepare()
    client = OverloadClient(prepared, rate, args.overload_seconds, args.window)
    usage = lap = Usage(server_pid)
    peak = 0
    cpu: list[dict[str, float]] = []  # one a window of wall-clock time, from the start

    async def watch() -> None:
        nonlocal peak, lap
        while True:
            peak = max(peak, rss_kib(server_pid))
            await asyncio.sleep(args.window)
            sample, lap = lap.read(), Usage(server_pid)
            cpu.append(sample)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        end = await client.run()
    finally:
        watcher.cancel()
    return {
        "rate": rate,
        "windows": client.windows,
        "end": end,
        "usage": usage.read(),
        "cpu": cpu,
        "rss_mib_max": round(peak / 1024, 1),
    }


def summarise_overload(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Figures of the windows after the overload's warm-up, and a timeline of every window."""
    from mserve.bench.histogram import Histogram

    skip = math.ceil(args.overload_warmup / args.window)
    measured = raw["windows"][skip:]
    latency: dict[str, Any] = {}
    service: dict[str, Any] = {}
    for w in measured:
        for into, src in ((latency, w.latency), (service, w.service)):
            for kind, h in src.items():
                into.setdefault(kind, Histogram()).merge(h)
    sent = sum(w.sent for w in measured)
    seconds = len(measured) * args.window
    counts = {k: h.count for k, h in latency.items()}
    timeline = []
    cpu = raw.get("cpu", [])
    for i, w in enumerate(raw["windows"]):
        ok, shed = w.latency.get("200"), w.latency.get("503")
        timeline.append(
            {
                "t_s": i * args.window,
                "warmup": i < skip,
                "sent": w.sent,
                "ok": ok.count if ok is not None else 0,
                "shed": shed.count if shed is not None else 0,
                "ok_p99_ms": percentiles_ms(ok)["p99"] if ok is not None else None,
                "shed_p99_ms": percentiles_ms(shed)["p99"] if shed is not None else None,
                # CPU over the same span of wall-clock time (windows above go by intended send)
                "server_cpu_percent": cpu[i]["server_cpu_percent"] if i < len(cpu) else None,
                "other_cpu_percent": cpu[i]["other_cpu_percent"] if i < len(cpu) else None,
            }
        )
    end = raw["end"]
    return {
        "rate": raw["rate"],
        "measured_s": seconds,
        "sent": sent,
        "sent_rate_rps": round(sent / seconds, 1) if seconds else 0.0,
        "send_lag_ms": percentiles_ms(end["lag"]),
        "outcomes": counts,
        "answered_rps": round(counts.get("200", 0) / seconds, 1) if seconds else 0.0,
        "shed_share": round(counts.get("503", 0) / sent, 4) if sent else None,
        "ok_latency_ms": percentiles_ms(latency.get("200", Histogram())),
        "shed_latency_ms": percentiles_ms(latency.get("503", Histogram())),
        "shed_service_ms": percentiles_ms(service.get("503", Histogram())),
        "ok_service_ms": percentiles_ms(service.get("200", Histogram())),
        "unanswered": end["unanswered"],
        "connect_errors": end["connect_errors"],
        "connections": end["connections"],
        "timeline": timeline,
        "usage": raw["usage"],
        "rss_mib_max": raw["rss_mib_max"],
    }


# -- the verdict and the report --------------------------------------------------------------------


def best_probe(result: dict[str, Any]) -> dict[str, Any] | None:
    """The capacity search's probe at the best rate it met (None: no search ran)."""
    cap = result.get("capacity")
    if cap is None:
        return None
    return next(p for p in reversed(cap["probes"]) if p["met"] and p["rate"] == cap["best_rate"])


def reference(result: dict[str, Any]) -> dict[str, Any] | None:
    """What the overload is measured against: the soak, or without one the capacity search's
    best probe; its label, p99 (ms) and server CPU per answered request (µs, sheds' CPU
    included). None when neither ran."""
    if "soak" in result:
        s = result["soak"]
        answered = s["requests"] - s["error_count"]
        return {
            "label": "the soak",
            "p99_ms": s["latency_ms"]["p99"],
            "us_per_answered": 1e6 * s["usage"]["server_cpu_s"] / answered if answered else None,
        }
    probe = best_probe(result)
    if probe is None:
        return None
    answered = probe.get("answered")  # absent from runs before --parts
    return {
        "label": f"the capacity probe at {probe['rate']:,.0f} req/s",
        "p99_ms": probe["p99_ms"],
        "us_per_answered": 1e6 * probe["server_cpu_s"] / answered if answered else None,
    }


def cpu_per_request(result: dict[str, Any]) -> dict[str, Any]:
    """The server's CPU per answered request in the reference (the soak, or the best capacity
    probe), per request of any kind in the overload, and from the two an estimate of what one
    shed request costs it (the overload's CPU less its 200s at the reference's cost, over its
    503s), in µs."""
    o, ref = result["overload"], reference(result)
    ok_us = None if ref is None else ref["us_per_answered"]
    ok = sum(w["ok"] for w in o["timeline"])
    shed = sum(w["shed"] for w in o["timeline"])
    total = sum(w["sent"] for w in o["timeline"])
    cpu = o["usage"]["server_cpu_s"]
    return {
        "reference": None if ref is None else ref["label"],
        "us_per_answered": None if ok_us is None else round(ok_us, 1),
        "overload_us_per_request": round(1e6 * cpu / total, 1) if total else None,
        "shed_us_estimate": round(1e6 * (cpu - ok * 1e-6 * ok_us) / shed, 1)
        if shed and ok_us is not None
        else None,
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS / FAIL of each target from the summaries, for the parts that ran."""
    rows: list[dict[str, Any]] = []
    if "soak" in result:
        rows += soak_targets(result["soak"])
    if "overload" in result:
        rows += overload_targets(result["overload"], reference(result))
    return rows


def soak_targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    growth = s["memory_growth"]
    return [
        {
            "target": f"soak: memory growth < {100 * TARGET_GROWTH:g} % (RSS, last "
            f"{s['span_s']:g} s over first {s['span_s']:g} s)",
            "measured": "n/a" if growth is None else f"{100 * growth:+.2f} %",
            "passed": growth is not None and growth < TARGET_GROWTH,
        },
        {
            "target": "soak: zero errors",
            "measured": f"{s['error_count']:,} of {s['requests']:,}"
            + (f" ({fmt_errors(s['errors'])})" if s["errors"] else ""),
            "passed": s["error_count"] == 0 and s["requests"] > 0,
        },
    ]


def overload_targets(o: dict[str, Any], ref: dict[str, Any] | None) -> list[dict[str, Any]]:
    ref_p99 = None if ref is None else ref["p99_ms"]
    ok_p99 = o["ok_latency_ms"]["p99"]
    ratio = ok_p99 / ref_p99 if ok_p99 is not None and ref_p99 else None
    rows = [w for w in o["timeline"] if not w["warmup"] and w["ok_p99_ms"] is not None]
    rising = bool(rows) and rows[-1]["ok_p99_ms"] > 1.5 * rows[0]["ok_p99_ms"]
    shed = o["shed_latency_ms"]
    against = "" if ref is None or ref["label"] == "the soak" else f" ({ref['label']}: no soak)"
    return [
        {
            "target": f"overload: answered p99 <= {TARGET_OVERLOAD_RATIO:g}x the soak's p99, "
            "not rising",
            "measured": "n/a (no soak or capacity probe to compare with)"
            if ratio is None
            else f"{ok_p99:,.1f} ms = {ratio:.2f}x {ref_p99:,.1f} ms"
            + against
            + (
                f"; rising ({rows[0]['ok_p99_ms']:,.1f} to {rows[-1]['ok_p99_ms']:,.1f} ms)"
                if rising
                else ""
            ),
            "passed": ratio is not None and ratio <= TARGET_OVERLOAD_RATIO and not rising,
        },
        {
            "target": f"overload: shed requests answered 503 in < {TARGET_SHED_P99_MS:g} ms (p99)",
            "measured": "no 503"
            if shed["p99"] is None
            else f"p50 {shed['p50']:,.2f} ms, p99 {shed['p99']:,.2f} ms",
            "passed": shed["p99"] is not None and shed["p99"] < TARGET_SHED_P99_MS,
        },
    ]


def fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in sorted(errors.items()))


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The block between the markers of RELIABILITY.md: the parts that ran, in their order."""
    m, cfg = result["machine"], result["settings"]
    v = m["versions"]
    mc = cfg["model_config"]
    parts = cfg.get("parts", list(PARTS))
    lines = [
        f"Recorded {m['date']} on {m['cpu_model']}, {m['cpus']} cores (kernel {m['kernel']}, "
        f"load average before the run {' '.join(m['loadavg_before'])}), a machine shared with "
        f"other people's test runs. mserve {v['mserve']} (src/ of the working tree at "
        f"{m['git_commit']}{', uncommitted src/ changes' if m['src_modified'] else ''}), Python "
        f"{v['python']}, onnxruntime {v['onnxruntime']}, numpy {v['numpy']}, scikit-learn "
        f"{v['scikit-learn']}, torch {v['torch']}."
        + (" **--quick run: not a measurement.**" if cfg["quick"] else "")
        + ("" if list(parts) == list(PARTS) else f" **Parts run: {', '.join(parts)}.**"),
        "",
        f"Model: a CNN on `load_digits` (3x3 convolutions 1-{cfg['channels'][0]}-"
        f"{cfg['channels'][1]}-{cfg['channels'][1]}, then a linear layer; "
        f"{result['model']['parameters']:,} parameters; {cfg['epochs']} epochs, test accuracy "
        f"{result['model']['accuracy']:.3f}), exported with `mserve.convert.pytorch`; "
        "`max_batch_size: "
        f"{mc['max_batch_size']}`, `dynamic_batching` (delay "
        f"{mc['dynamic_batching']['max_queue_delay_microseconds']} µs, `max_queue_size: "
        f"{mc['dynamic_batching']['max_queue_size']}`), one instance, one intra-op thread. "
        f"Server on core {cfg['server_cpu']}, load on core {cfg['client_cpu']}; V2 binary, one "
        "digits test image a request, constant arrivals, latency from the intended send.",
        "",
    ]
    if "capacity" in result:
        lines += capacity_md(result["capacity"], cfg)
    else:
        lines += [f"Capacity not searched: taken as {cfg['rate']:,.0f} req/s (`--rate`).", ""]
    lines += ["| target | measured | result |", "| --- | --- | --- |"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'PASS' if t['passed'] else 'FAIL'} |")
    if "soak" in result:
        lines += soak_md(result["soak"], cfg)
    if "overload" in result:
        lines += overload_md(result, cfg)
    if "recovery" in result:
        r = result["recovery"]
        rl = r["latency_ms"]
        lines += [
            "",
            f"**Recovery**, right after the overload: {r['requested_rate_rps']:,.0f} req/s for "
            f"{r['duration_s']:g} s: {r['throughput_rps']:,.1f} answered/s, p50 "
            f"{_ms(rl['p50'])} ms, p99 {_ms(rl['p99'])} ms, errors: "
            f"{fmt_errors(r['errors']) or 'none'}.",
        ]
    return "\n".join(lines)


def capacity_md(cap: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    return [
        f"Capacity ({cap['objective']}; `mserve bench` steps of {cfg['probe_seconds']:g} s "
        "at constant rates, doubling then bisection to 5 %): "
        f"**{cap['best_rate']:,.0f} req/s** met it ({cap['best_throughput_rps']:,.0f} answered/s); "
        + (
            f"{cap['first_failing_rate']:,.0f} req/s did not. "
            if cap["first_failing_rate"] is not None
            else "no probe missed it. "
        )
        + "Probes: "
        + "; ".join(
            f"{p['rate']:,.0f}/s {'met' if p['met'] else 'missed'} ({p['why']}; other processes "
            f"{p['other_cpu_percent']:.0f} %)"
            for p in cap["probes"]
        )
        + ".",
        "",
    ]


def soak_md(s: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"**Soak**: {s['rate']:,.0f} req/s ({100 * SOAK_SHARE:.0f} % of capacity) for "
        f"{cfg['soak_minutes']:g} min after {cfg['soak_warmup']:g} s of warm-up; "
        f"{s['requests']:,} requests, achieved {s['achieved_rate_rps']:,.1f} req/s, send lag p99 "
        f"{s['send_lag_p99_ms']:.2f} ms, bench verdict {s['verdict']}"
        + (f" ({'; '.join(s['reasons'])})" if s["reasons"] else "")
        + f". Errors: {fmt_errors(s['errors']) or 'none'}. CPU: server "
        f"{s['usage']['server_cpu_percent']:.0f} % of its core, load generator "
        f"{s['usage']['client_cpu_percent']:.0f} %, other processes "
        f"{s['usage']['other_cpu_percent']:.0f} % of a core. Server RSS "
        f"{s['rss_mib_before_warmup']:.1f} MiB before the warm-up, at most "
        f"{s['rss_mib_max']:.1f} MiB ({s['rss_samples']} samples)."
        + (
            f" Average batch {s['server']['avg_batch_size']:.1f} rows."
            if s["server"] and s["server"].get("avg_batch_size")
            else ""
        ),
        "",
        "| soak | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | errors | RSS (MiB) "
        "| server CPU (%) | other processes (% of a core) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("first", s["first"]), ("last", s["last"])]
    rows += [(f"minute {i + 1}", p) for i, p in enumerate(s["per_minute"])]
    for label, p in rows:
        lat = p["latency_ms"]
        name = label if label.startswith("minute") else f"{label} {p['to_s'] - p['from_s']:g} s"
        lines.append(
            f"| {name} | {p['throughput_rps']:,.1f} | {_ms(lat['p50'])} | {_ms(lat['p99'])} "
            f"| {_ms(lat['p999'])} | {_ms(lat['max'])} | {sum(p['errors'].values()):,} "
            f"| {p['rss_mib'] if p['rss_mib'] is not None else 'n/a'} "
            f"| {_pct(p['server_cpu_percent'])} | {_pct(p['other_cpu_percent'])} |"
        )
    lat = s["latency_ms"]
    lines.append(
        f"| whole soak | {s['measured_ok'] / (60 * cfg['soak_minutes']):,.1f} | {_ms(lat['p50'])} "
        f"| {_ms(lat['p99'])} | {_ms(lat['p999'])} | {_ms(lat['max'])} | {s['error_count']:,} "
        f"| max {s['rss_mib_max']} | {s['usage']['server_cpu_percent']:.0f} "
        f"| {s['usage']['other_cpu_percent']:.0f} |"
    )
    return lines


def overload_md(result: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    o = result["overload"]
    ok, shed, shed_svc = o["ok_latency_ms"], o["shed_latency_ms"], o["shed_service_ms"]
    cost = result["cpu_per_request"]
    others = {k: n for k, n in o["outcomes"].items() if k not in ("200", "503")}
    lines = [
        "",
        f"**Overload**: {o['rate']:,.0f} req/s ({OVERLOAD_FACTOR:g}x capacity) for "
        f"{cfg['overload_seconds']:g} s; figures over the last {o['measured_s']:g} s (the first "
        f"{cfg['overload_warmup']:g} s fill the queue). Sent {o['sent']:,} "
        f"({o['sent_rate_rps']:,.0f}/s, send lag p99 {_ms(o['send_lag_ms']['p99'])} ms) on "
        f"{o['connections']} connections; answered 200: {o['outcomes'].get('200', 0):,} "
        f"({o['answered_rps']:,.0f}/s), shed 503: {o['outcomes'].get('503', 0):,} "
        f"(**{100 * (o['shed_share'] or 0):.1f} %**), other: {fmt_errors(others) or 'none'}, "
        f"unanswered (still due or in flight after a 30 s drain): {o['unanswered']:,}. CPU: "
        f"server {o['usage']['server_cpu_percent']:.0f} % of "
        f"its core, this client {o['usage']['client_cpu_percent']:.0f} %, other processes "
        f"{o['usage']['other_cpu_percent']:.0f} %. Server RSS at most {o['rss_mib_max']} MiB. "
        + shed_cost_text(cost),
        "",
        "| overload | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| answered 200, from the intended send | {_ms(ok['p50'])} | {_ms(ok['p99'])} "
        f"| {_ms(ok['p999'])} | {_ms(ok['max'])} |",
        f"| shed 503, from the intended send | {_ms(shed['p50'])} | {_ms(shed['p99'])} "
        f"| {_ms(shed['p999'])} | {_ms(shed['max'])} |",
        f"| shed 503, from the actual send | {_ms(shed_svc['p50'])} | {_ms(shed_svc['p99'])} "
        f"| {_ms(shed_svc['p999'])} | {_ms(shed_svc['max'])} |",
    ]
    if "soak" in result:
        lat = result["soak"]["latency_ms"]
        lines.append(
            f"| soak at {100 * SOAK_SHARE:.0f} %, for scale | {_ms(lat['p50'])} "
            f"| {_ms(lat['p99'])} | {_ms(lat['p999'])} | {_ms(lat['max'])} |"
        )
    lines += [
        "",
        "| overload window (s) | sent | 200 | 503 | 200 p99 (ms) | 503 p99 (ms) "
        "| server CPU (%) | other processes (% of a core) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in o["timeline"]:
        t = f"{w['t_s']:g} to {w['t_s'] + cfg['window']:g}" + (" (warm-up)" if w["warmup"] else "")
        lines.append(
            f"| {t} | {w['sent']:,} | {w['ok']:,} | {w['shed']:,} | {_ms(w['ok_p99_ms'])} "
            f"| {_ms(w['shed_p99_ms'])} | {_pct(w.get('server_cpu_percent'))} "
            f"| {_pct(w.get('other_cpu_percent'))} |"
        )
    return lines


def shed_cost_text(cost: dict[str, Any]) -> str:
    """The server's CPU per request, and the estimate of a shed request's, in a sentence."""
    here = f"{_f(cost['overload_us_per_request'])} µs per request of any kind here"
    if cost["reference"] is None:
        return f"Server CPU per request: {here}; no soak or capacity search to estimate a shed one."
    return (
        f"Server CPU per request: {_f(cost['us_per_answered'])} µs per answered one in "
        f"{cost['reference']}; {here}; so a shed request costs it about "
        f"{_f(cost['shed_us_estimate'])} µs (an estimate: the overload's CPU less its 200s at the "
        "reference's cost, over its 503s)."
    )


# -- main ----------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """The machine, and the versions this script depends on."""
    return host_facts(ROOT, ("mserve", "onnxruntime", "numpy", "scikit-learn", "torch"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--soak-minutes", type=float, default=10.0, help="soak length (default 10)")
    p.add_argument("--soak-warmup", type=float, default=15.0, help="seconds before the soak counts")
    p.add_argument("--overload-seconds", type=float, default=45.0, help="overload length")
    p.add_argument(
        "--overload-warmup", type=float, default=5.0, help="overload seconds not counted"
    )
    p.add_argument("--window", type=float, default=5.0, help="seconds per window (RSS sample)")
    p.add_argument("--channels", default="64,128", help="the CNN's channels (A,B)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs")
    p.add_argument("--max-batch", type=int, default=16, help="max_batch_size")
    p.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds")
    p.add_argument("--queue-size", type=int, default=256, help="max_queue_size")
    p.add_argument("--start-rate", type=float, default=200.0, help="first rate of the search")
    p.add_argument("--probe-seconds", type=float, default=5.0, help="measured seconds per probe")
    p.add_argument("--probe-warmup", type=float, default=1.0, help="warm-up seconds per probe")
    p.add_argument("--probe-rest", type=float, default=2.0, help="idle seconds after a probe")
    p.add_argument("--server-cpu", type=int, default=1, help="core for the server")
    p.add_argument("--client-cpu", type=int, default=0, help="core for the load")
    p.add_argument(
        "--quick", action="store_true", help="a 1-minute soak and short steps (nothing to record)"
    )
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"the parts to run, comma-separated (default: all, {','.join(PARTS)}); they run in "
        "that order whatever the order given, and a partial run is not recorded",
    )
    p.add_argument(
        "--rate", type=float, help="take this as the capacity (req/s) instead of searching"
    )
    p.add_argument("--out", type=Path, default=HERE / "out" / "reliability.json")
    p.add_argument("--results", type=Path, help="RELIABILITY.md whose block to replace")
    args = p.parse_args(argv)
    if args.quick:
        args.soak_minutes, args.soak_warmup, args.overload_seconds = 1.0, 5.0, 20.0
        args.probe_seconds, args.probe_warmup, args.epochs = 2.0, 0.5, 1
        args.results = None
    if args.soak_minutes <= 0 or args.overload_seconds <= args.overload_warmup:
        p.error("--soak-minutes > 0 and --overload-seconds > --overload-warmup")
    wanted = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not wanted or wanted - set(PARTS):
        p.error(f"--parts takes some of {','.join(PARTS)}, got {args.parts!r}")
    args.parts = [part for part in PARTS if part in wanted]
    if args.rate is not None and args.rate <= 0:
        p.error("--rate > 0")
    if args.rate is None and "capacity" not in wanted:
        p.error("without the capacity part, --rate gives the capacity")
    if args.rate is not None and "capacity" in wanted:
        p.error("--rate replaces the capacity part: drop one")
    if args.results is not None and args.parts != list(PARTS):
        p.error("--results records a full run only (drop --parts)")
    return args


def print_overload(result: dict[str, Any]) -> None:
    """The overload's headline figures and the shed-cost estimate, as soon as it has run."""
    o = result["overload"]
    shed, svc, ok = o["shed_latency_ms"], o["shed_service_ms"], o["ok_latency_ms"]
    print(
        f"  shed {100 * (o['shed_share'] or 0):.1f} %: 503 p50/p99 {_ms(shed['p50'])}/"
        f"{_ms(shed['p99'])} ms from the intended send, {_ms(svc['p50'])}/{_ms(svc['p99'])} ms "
        f"from the actual one; 200 p99 {_ms(ok['p99'])} ms at {o['answered_rps']:,.0f}/s; "
        f"unanswered {o['unanswered']:,}; CPU: server {o['usage']['server_cpu_percent']:.0f} %, "
        f"client {o['usage']['client_cpu_percent']:.0f} %, other processes "
        f"{o['usage']['other_cpu_percent']:.0f} %",
        flush=True,
    )
    print("  " + shed_cost_text(cpu_per_request(result)), flush=True)


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    """Capacity, soak, overload and recovery on one server; 1 when a run failed."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    if shutil.which("taskset") is None:
        sys.exit("reliability: taskset is missing; install it with: apt-get install -y util-linux")
    sys.path.insert(0, str(SRC))  # the working tree's mserve, as the server runs it
    from mserve.server.process import free_port

    started = time.monotonic()
    a, b = (int(c) for c in args.channels.split(","))
    result: dict[str, Any] = {
        "benchmark": SECTION,
        "machine": machine_facts(),
        "settings": {
            "channels": [a, b],
            "epochs": args.epochs,
            "model_config": model_config(args),
            "soak_minutes": args.soak_minutes,
            "soak_warmup": args.soak_warmup,
            "overload_seconds": args.overload_seconds,
            "overload_warmup": args.overload_warmup,
            "window": args.window,
            "probe_seconds": args.probe_seconds,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "quick": args.quick,
            "parts": args.parts,
            "rate": args.rate,
        },
    }
    with tempfile.TemporaryDirectory(prefix="mserve-reliability-") as tmp:
        work = Path(tmp)
        print(f"training the digits CNN ({a}, {b} channels, {args.epochs} epochs)", flush=True)
        model = train((a, b), args.epochs)
        result["model"] = {k: model[k] for k in ("accuracy", "train_s", "parameters")}
        print(f"  accuracy {model['accuracy']:.3f}, {model['train_s']} s", flush=True)
        inputs = work / "rows.npy"
        np.save(inputs, model["x_test"][:, np.newaxis])  # one [1, 1, 8, 8] image a request
        write_repository(work / "repo", model["onnx"], model_config(args))
        os.sched_setaffinity(0, {args.client_cpu})  # the load (this process) on its own core
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        try:
            with serving(work / "repo", port, args.server_cpu) as server:
                rate = args.rate
                if "capacity" in args.parts:
                    print("capacity: doubling, then bisection", flush=True)
                    cap = result["capacity"] = run_async(capacity(url, inputs, server.pid, args))
                    rate = cap["best_rate"]
                if "soak" in args.parts:
                    print(
                        f"soak: {SOAK_SHARE * rate:.0f} req/s for {args.soak_minutes:g} min",
                        flush=True,
                    )
                    raw = run_async(
                        soak(
                            url,
                            inputs,
                            SOAK_SHARE * rate,
                            args.soak_minutes,
                            args.soak_warmup,
                            server.pid,
                            args.window,
                        )
                    )
                    result["soak"] = summarise_soak(raw, args.soak_minutes)
                if "overload" in args.parts:
                    print(f"overload: {OVERLOAD_FACTOR * rate:.0f} req/s", flush=True)
                    raw = run_async(overload(url, inputs, OVERLOAD_FACTOR * rate, server.pid, args))
                    result["overload"] = summarise_overload(raw, args)
                    print_overload(result)
                if "recovery" in args.parts:
                    print("recovery", flush=True)
                    time.sleep(args.probe_rest)
                    rec = run_async(
                        soak(url, inputs, SOAK_SHARE * rate, 10 / 60, 1.0, server.pid, 5.0)
                    )
                    result["recovery"] = {
                        k: rec["step"][k]
                        for k in (
                            "requested_rate_rps",
                            "duration_s",
                            "throughput_rps",
                            "latency_ms",
                            "errors",
                        )
                    }
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            result["problem"] = str(exc)
            print(f"FAILED: {exc}", flush=True)
    ran = all(k in result for k in args.parts)
    if ran and "overload" in result:
        result["cpu_per_request"] = cpu_per_request(result)
    result["targets"] = targets(result) if ran else []
    result["summary"] = {
        "all_runs_ok": ran
        and ("soak" not in result or result["soak"]["measured_ok"] > 0)
        and ("overload" not in result or result["overload"]["sent"] > 0)
    }
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    block = markdown(result) if ran else f"**The run failed**: {result.get('problem')}"
    return write_result(result, args.out, args.results, SECTION, block)


if __name__ == "__main__":
    sys.exit(main())
