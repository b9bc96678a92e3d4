"""Dynamic batching benchmark: what the batcher buys on a model heavy enough to need it.

The model is an MLP 64-2048-2048-2048-10 in float32 (three ReLU layers of 2048, about 8.5 M
weights, 34 MB), built with the ``onnx`` helper API from seeded He-scaled weights; input
``INPUT`` FP32 [-1, 64], output ``OUTPUT`` FP32 [-1, 10]. It is served from two repositories
that differ only in their ``dynamic_batching`` section (``max_batch_size: 32``,
``instance_count: 1``, one intra-op thread in both):

- ``unbatched``: every request runs alone;
- ``batched``: ``dynamic_batching`` with ``--delay-us`` (2000), ``--preferred`` (none) and
  ``--queue-size`` (256).

What it measures, in one run, on a two-core machine (server on one core, load on the other):

- the floor: ONNX Runtime's ``session.run`` in a subprocess pinned to the server's core, one
  intra-op and one inter-op thread, sequential execution; median time per run at batch 1 and at
  batch 32 after a warm-up, as rows/s. Measured before and after the servers; the faster of the
  two is the bar;
- each repository under ``mserve serve`` (pinned with taskset), loaded by ``mserve bench
  --protocol v2-binary`` (pinned to the other core) at concurrency 64, then 1: throughput,
  p50 / p99, and the server's own breakdown (average batch size, queue time). Before the load,
  64 concurrent requests with distinct rows must each get the model's own answer back.

Every figure is compared with one measured in the same run (the machine is shared and noisy),
against the targets of the issue: batched / unbatched at c=64 >= 3.0, batched c=64 / the
batch-32 floor >= 0.70, batched c=64 p99 < 40 ms, batched / unbatched at c=1 >= 0.90. A missed
target prints FAIL and still exits 0; a run that itself fails (server not ready, bench errors,
wrong answers) exits 1.

Run from the repository root (about 1.5 to 2 minutes; each bench step 12 to 21 s)::

    python benchmarks/batching.py --out benchmarks/out/batching.json \\
        --results benchmarks/RESULTS.md

``--quick`` tries the script out in about 30 s (3 s fixed steps, fewer floor runs; nothing to
record). ``--delay-us``, ``--preferred 8 16 32`` and ``--queue-size`` try batcher variants.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hoststats import (
    busy_seconds,
    core_busy,
    cpu_ticks,
    process_cpu_s,
    wait_quiet,
    write_result,
)
from hoststats import (
    machine_facts as host_facts,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The model.
LAYERS = (64, 2048, 2048, 2048, 10)
SEED = 0
MAX_BATCH = 32
OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: any ONNX Runtime of the last years reads it
CONCURRENCIES = (64, 1)
FLOOD_FACTOR = 10  # the flood: this many times what the batched server answered at c=64
FLOOD_S = 10.0
CHECK_REQUESTS = 64  # concurrent requests with distinct rows checked against the model
FLOOR_WARMUP_RUNS = 20

# The targets from the issue.
TARGET_SPEEDUP_C64 = 3.0  # batched req/s >= 3x unbatched at concurrency 64
TARGET_OF_FLOOR_C64 = 0.70  # batched rows/s at c=64 >= 70% of the batch-32 floor
TARGET_P99_C64_MS = 40.0  # batched p99 at c=64 under 40 ms
TARGET_C1_RATIO = 0.90  # batched req/s at c=1 >= 90% of unbatched (no penalty when alone)


# -- the model ----------------------------------------------------------------------------------


def weights() -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) per layer: He-scaled normal weights and small biases from a fixed seed."""
    rng = np.random.default_rng(SEED)
    out = []
    for fan_in, fan_out in itertools.pairwise(LAYERS):
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(
            np.sqrt(2.0 / fan_in)
        )
        b = rng.standard_normal(fan_out, dtype=np.float32) * np.float32(0.01)
        out.append((w, b))
    return out


def forward(params: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The model in numpy: what every served answer is checked against."""
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    return h


def build_onnx(params: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The MLP as ONNX (MatMul + Add + Relu), input INPUT [-1, 64], output OUTPUT [-1, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = "INPUT"
    for i, (w, b) in enumerate(params):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes += [
            helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"]),
            helper.make_node(
                "Add", [f"mm{i}", f"B{i}"], ["OUTPUT" if i == len(params) - 1 else f"add{i}"]
            ),
        ]
        current = f"add{i}"
        if i < len(params) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "mlp_64_2048x3_10",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", LAYERS[0]])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", LAYERS[-1]])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mserve-benchmarks"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def model_config(name: str, batching: dict[str, Any] | None) -> dict[str, Any]:
    """The config.yaml of one repository (see mserve.config.parse_model_config)."""
    config: dict[str, Any] = {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": MAX_BATCH,
        "instance_count": 1,
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, LAYERS[0]]}],
        "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, LAYERS[-1]]}],
        # one thread, as the floor; on one pinned core mserve would pick 1 anyway
        "runtime": {"intra_op_threads": 1},
    }
    if batching is not None:
        config["dynamic_batching"] = batching
    return config


def write_repositories(work: Path, onnx_bytes: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Two repositories, ``unbatched`` and ``batched``; returns {name: {repo, config, path}}."""
    import yaml

    batching = {
        "max_queue_delay_microseconds": args.delay_us,
        "preferred_batch_sizes": list(args.preferred),
        "max_queue_size": args.queue_size,
    }
    out = {}
    for name, section in (("unbatched", None), ("batched", batching)):
        repo = work / f"repo-{name}"
        model_dir = repo / name / "1"
        model_dir.mkdir(parents=True)
        (model_dir / "model.onnx").write_bytes(onnx_bytes)
        config = model_config(name, section)
        (repo / name / "config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
        )
        out[name] = {"repo": repo, "config": config, "path": model_dir / "model.onnx"}
    return out


# -- the floor ----------------------------------------------------------------------------------


def floor_child(model_path: str, runs: int) -> None:
    """In the pinned subprocess: time ``session.run`` at batch 1 and MAX_BATCH; print JSON."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(SEED + 1)
    clock = time.perf_counter_ns
    result: dict[str, Any] = {"affinity": sorted(os.sched_getaffinity(0)), "runs": runs}
    for batch in (1, MAX_BATCH):
        feed = {"INPUT": rng.standard_normal((batch, LAYERS[0]), dtype=np.float32)}
        for _ in range(FLOOR_WARMUP_RUNS):
            session.run(None, feed)
        times = np.empty(runs, dtype=np.int64)
        for i in range(runs):
            t0 = clock()
            session.run(None, feed)
            times[i] = clock() - t0
        median_s = float(np.median(times)) / 1e9
        result[f"b{batch}"] = {
            "batch": batch,
            "median_ms": round(median_s * 1e3, 4),
            "p90_ms": round(float(np.percentile(times, 90)) / 1e6, 4),
            "mean_ms": round(float(times.mean()) / 1e6, 4),
            "min_ms": round(float(times.min()) / 1e6, 4),
            "rows_per_s": round(batch / median_s, 1),
        }
    print(json.dumps(result))


def measure_floor(model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`floor_child` under ``taskset -c SERVER_CPU``; returns its figures."""
    cmd = ["taskset", "-c", str(args.server_cpu), sys.executable, str(Path(__file__).resolve())]
    cmd += ["--floor-child", str(model_path), "--floor-runs", str(args.floor_runs)]
    ticks0, t0 = cpu_ticks(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"floor subprocess failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["core_busy_percent"] = core_busy(ticks0, cpu_ticks())
    result["seconds"] = round(seconds, 1)
    return result


# -- machine ------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """The machine, and the versions this script depends on."""
    return host_facts(ROOT, ("mserve", "onnxruntime", "onnx", "numpy"))


# -- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str) -> int | None:
    """The status of a GET, None when the server does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


@contextlib.contextmanager
def mserve_server(repo: Path, name: str, cpu: int, log: Path) -> Iterator[tuple[str, int]]:
    """``mserve serve REPO`` pinned to ``cpu``, ready and with ``name`` loaded; yields its URL
    and pid, and stops it (that pid only: SIGTERM, then SIGKILL after 15 s)."""
    port = free_port()
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "mserve", "serve", str(repo)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while http_status(f"{url}/v2/health/ready") != 200:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mserve serve exited with status {proc.returncode}:\n{log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"mserve serve was not ready after 120 s:\n{log.read_text()}")
            time.sleep(0.1)
        status = http_status(f"{url}/v2/models/{name}/ready")
        if status != 200:  # a model that fails to load leaves the others serving
            raise RuntimeError(
                f"mserve serve is ready but model {name!r} is not (GET .../ready: {status}); "
                f"its log:\n{log.read_text()}"
            )
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def infer(url: str, name: str, row: np.ndarray) -> np.ndarray:
    """One V2 JSON request for one row; the OUTPUT it answers."""
    doc = {
        "inputs": [
            {
                "name": "INPUT",
                "shape": [1, LAYERS[0]],
                "datatype": "FP32",
                "data": [float(v) for v in row],
            }
        ]
    }
    req = urllib.request.Request(
        f"{url}/v2/models/{name}/infer",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{name}: infer answered {exc.code}: {exc.read()[:300]!r}") from None
    out = next(o for o in answer["outputs"] if o["name"] == "OUTPUT")
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def check_answers(url: str, name: str, rows: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Send every row at once (one request each, concurrently, so that the batcher stacks them)
    and check each answer is that row's own output."""
    with ThreadPoolExecutor(len(rows)) as pool:
        answers = list(pool.map(lambda r: infer(url, name, r), rows))
    got = np.concatenate(answers)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-3, atol=1e-3):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else None
        raise RuntimeError(
            f"{name}: {len(rows)} concurrent requests got wrong outputs (shape {got.shape}, "
            f"largest difference {worst})"
        )
    return {"requests": len(rows), "max_abs_diff": float(np.max(np.abs(got - expected)))}


# -- load ---------------------------------------------------------------------------------------


def bench_args(args: argparse.Namespace) -> list[str]:
    """How long each step lasts: fixed with --duration (or --quick), else until stable."""
    out = ["--warmup", f"{args.warmup:g}", "--window", f"{args.window:g}"]
    out += ["--stability", f"{args.stability:g}", "--max-duration", f"{args.max_duration:g}"]
    if args.duration:
        out += ["--duration", f"{args.duration:g}"]
    return out


def run_bench(
    url: str, name: str, pid: int, concurrency: int, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One ``mserve bench`` step (closed loop, V2 binary) pinned to the client core, with the
    CPU the server, the generator and everything else used meanwhile."""
    output = work / f"bench-{name}-c{concurrency}.json"
    cmd = ["taskset", "-c", str(args.client_cpu), sys.executable, "-m", "mserve", "bench", url]
    cmd += ["-m", name, "--protocol", "v2-binary", "--concurrency", str(concurrency)]
    cmd += [*bench_args(args), "--json", "-o", str(output), "-q"]
    waited = wait_quiet(args.quiet_wait)
    limit = args.warmup + (args.duration or args.max_duration) + 120
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ticks0, cpu0, t0 = cpu_ticks(), process_cpu_s(pid), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=limit)
    seconds = time.monotonic() - t0
    cpu1, ticks1 = process_cpu_s(pid), cpu_ticks()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    bench_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    foreign = busy_seconds(ticks0, ticks1) - (cpu1 - cpu0) - bench_cpu
    run: dict[str, Any] = {
        "model": name,
        "concurrency": concurrency,
        "command": cmd,
        "exit_status": proc.returncode,
        "wall_s": round(seconds, 1),
        "waited_for_quiet_s": waited,
        "server_cpu_percent": round(100.0 * (cpu1 - cpu0) / seconds, 1),
        "foreign_cpu_percent": round(100.0 * max(foreign, 0.0) / seconds, 1),
        "core_busy_percent": core_busy(ticks0, ticks1),
    }
    if proc.returncode != 0 or not output.exists():
        run.update(
            ok=False, problem=f"mserve bench exited {proc.returncode}: {proc.stderr[-2000:]}"
        )
        return run
    doc = json.loads(output.read_text())
    step = doc["steps"][-1]
    server = step.get("server") or {}
    run.update(
        throughput_rps=step["throughput_rps"],
        count=step["count"],
        duration_s=step["duration_s"],
        p50_ms=step["latency_ms"]["p50"],
        p99_ms=step["latency_ms"]["p99"],
        mean_ms=step["latency_ms"]["mean"],
        errors=step["errors"],
        error_count=step["error_count"],
        avg_batch_size=server.get("avg_batch_size"),
        queue_ms=server.get("queue_ms"),
        infer_ms=server.get("compute_infer_ms"),
        generator_cpu_percent=step["generator"]["cpu_percent"],
        verdict=step["verdict"],
        reasons=step["reasons"],
        bench_result=doc,
    )
    problems = []
    if step["error_count"]:
        problems.append(f"{step['error_count']} errors {step['errors']}")
    if step["count"] == 0:
        problems.append("no request succeeded")
    run["ok"] = not problems
    if problems:
        run["problem"] = "; ".join(problems)
    return run


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def flood(
    url: str, name: str, pid: int, capacity_rps: float, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Open-loop load at FLOOD_FACTOR times what the server answered at c=64, for FLOOD_S
    seconds: the bounded queue must shed the excess with 503 at once, and the server's memory
    must stay flat (sampled every 100 ms)."""
    rate = round(FLOOD_FACTOR * capacity_rps)
    output = work / f"flood-{name}.json"
    cmd = ["taskset", "-c", str(args.client_cpu), sys.executable, "-m", "mserve", "bench", url]
    cmd += ["-m", name, "--protocol", "v2-binary", "--rate", str(rate), "--warmup", "0"]
    cmd += ["--duration", f"{FLOOD_S:g}", "--timeout", "10", "--json", "-o", str(output), "-q"]
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            samples.append(rss_mb(pid))

    before = rss_mb(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=FLOOD_S + 120)
    stop.set()
    sampler.join()
    out: dict[str, Any] = {
        "rate_rps": rate,
        "factor": FLOOD_FACTOR,
        "seconds": FLOOD_S,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(max(samples, default=before), 1),
        "rss_after_mb": round(rss_mb(pid), 1),
    }
    if proc.returncode != 0 or not output.exists():
        out["problem"] = f"mserve bench exited {proc.returncode}: {proc.stderr[-2000:]}"
        return out
    step = json.loads(output.read_text())["steps"][-1]
    out.update(
        answered_rps=step["throughput_rps"],
        ok=step["count"],
        errors=step["errors"],
        p50_ms=step["latency_ms"].get("p50"),
        p99_ms=step["latency_ms"].get("p99"),
    )
    return out


def print_run(run: dict[str, Any]) -> None:
    """One line per bench step, as it finishes."""
    head = f"  {run['model']:<9} c={run['concurrency']:<3}"
    if "throughput_rps" not in run:
        print(f"{head} FAILED: {run.get('problem')}", flush=True)
        return
    flag = "ok" if run["ok"] else f"FAILED ({run['problem']})"
    batch = run["avg_batch_size"]
    queue = run["queue_ms"]
    print(
        f"{head} {run['throughput_rps']:8.1f} req/s  p50 {run['p50_ms']:8.2f} ms  "
        f"p99 {run['p99_ms']:8.2f} ms  batch {batch if batch is not None else '-':>6}  "
        f"queue {queue if queue is not None else '-':>7} ms  {run['verdict']}  "
        f"other {run['foreign_cpu_percent']:.0f}%  {flag}",
        flush=True,
    )


def measure_server(
    name: str,
    info: dict[str, Any],
    check: tuple[np.ndarray, np.ndarray],
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Start one repository's server, check its answers, run both bench steps, stop it."""
    print(f"{name}: mserve serve on core {args.server_cpu}", flush=True)
    out: dict[str, Any] = {"config": info["config"], "runs": []}
    try:
        with mserve_server(info["repo"], name, args.server_cpu, work / f"{name}.log") as (
            url,
            pid,
        ):
            out["check"] = check_answers(url, name, *check)
            for c in CONCURRENCIES:
                run = run_bench(url, name, pid, c, work, args)
                print_run(run)
                out["runs"].append(run)
            c64 = next((r for r in out["runs"] if r["concurrency"] == 64 and r.get("ok")), None)
            if info["config"].get("dynamic_batching") and c64 and not args.no_flood:
                out["flood"] = f = flood(url, name, pid, c64["throughput_rps"], work, args)
                print(
                    f"  {name} flood at {f['rate_rps']} req/s: "
                    + (
                        f"{f['answered_rps']:.0f} req/s answered, errors {f['errors']}, "
                        f"RSS {f['rss_before_mb']} -> peak {f['rss_peak_mb']} MiB"
                        if "problem" not in f
                        else f"FAILED: {f['problem']}"
                    ),
                    flush=True,
                )
                out["check_after_flood"] = check_answers(url, name, *check)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        out["problem"] = str(exc)
        print(f"  {name} FAILED: {exc}", flush=True)
    return out


# -- report -------------------------------------------------------------------------------------


def find(result: dict[str, Any], name: str, c: int) -> dict[str, Any] | None:
    """The bench step of a model at a concurrency, when it ran and succeeded."""
    runs = result["servers"].get(name, {}).get("runs", [])
    return next((r for r in runs if r["concurrency"] == c and r.get("ok")), None)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The ratios, each against a figure of this same run, and the targets."""
    floors = [f for f in (result.get("floor"), result.get("floor_after")) if f]
    b1 = max((f["b1"]["rows_per_s"] for f in floors), default=None)
    b32 = max((f[f"b{MAX_BATCH}"]["rows_per_s"] for f in floors), default=None)
    ub64, bt64 = find(result, "unbatched", 64), find(result, "batched", 64)
    ub1, bt1 = find(result, "unbatched", 1), find(result, "batched", 1)

    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | float | None) -> float | None:
        if a is None or b is None:
            return None
        den = b if isinstance(b, float) else b["throughput_rps"]
        return round(a["throughput_rps"] / den, 3) if den else None

    def target(label: str, value: float | None, passed: bool, shown: str) -> dict[str, Any]:
        return {
            "target": label,
            "measured": shown if value is not None else "n/a (run missing or failed)",
            "value": value,
            "passed": bool(passed) if value is not None else False,
        }

    speedup, of_floor, c1 = ratio(bt64, ub64), ratio(bt64, b32), ratio(bt1, ub1)
    p99 = bt64["p99_ms"] if bt64 else None
    targets = [
        target(
            f"batched c=64 req/s / unbatched c=64 req/s >= {TARGET_SPEEDUP_C64:.1f}",
            speedup,
            speedup is not None and speedup >= TARGET_SPEEDUP_C64,
            f"{speedup:.3f}x" if speedup is not None else "",
        ),
        target(
            f"batched c=64 rows/s / in-process batch-{MAX_BATCH} floor "
            f">= {TARGET_OF_FLOOR_C64:.2f}",
            of_floor,
            of_floor is not None and of_floor >= TARGET_OF_FLOOR_C64,
            f"{of_floor:.3f}" if of_floor is not None else "",
        ),
        target(
            f"batched c=64 p99 < {TARGET_P99_C64_MS:g} ms",
            p99,
            p99 is not None and p99 < TARGET_P99_C64_MS,
            f"{p99:.2f} ms" if p99 is not None else "",
        ),
        target(
            f"batched c=1 req/s / unbatched c=1 req/s >= {TARGET_C1_RATIO:.2f}",
            c1,
            c1 is not None and c1 >= TARGET_C1_RATIO,
            f"{c1:.3f}x" if c1 is not None else "",
        ),
    ]
    return {
        "floor_b1_rows_per_s": b1,
        f"floor_b{MAX_BATCH}_rows_per_s": b32,
        "ratios": {
            "batched_c64_over_unbatched_c64": speedup,
            f"batched_c64_over_floor_b{MAX_BATCH}": of_floor,
            "batched_c1_over_unbatched_c1": c1,
            "unbatched_c64_over_floor_b1": ratio(ub64, b1),
            "unbatched_c1_over_floor_b1": ratio(ub1, b1),
            "batched_c1_over_floor_b1": ratio(bt1, b1),
        },
        "targets": targets,
        "all_runs_ok": all_runs_ok(result),
    }


def all_runs_ok(result: dict[str, Any]) -> bool:
    """Both floors measured, both servers up, every bench step without errors."""
    if not result.get("floor") or not result.get("floor_after"):
        return False
    for server in result["servers"].values():
        if "problem" in server or len(server["runs"]) != len(CONCURRENCIES):
            return False
        if not all(r.get("ok") for r in server["runs"]):
            return False
    return True


def _cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown(result: dict[str, Any]) -> str:
    """The Markdown block for RESULTS.md: machine, settings, runs, floor, ratios, targets."""
    m, cfg, s = result["machine"], result["settings"], result["summary"]
    v = m["versions"]
    src = " with uncommitted src/ changes" if m["src_modified"] else ""
    timing = (
        f"{cfg['warmup']:g} s warm-up, then {cfg['duration']:g} s measured"
        if cfg["duration"]
        else f"{cfg['warmup']:g} s warm-up, then {cfg['window']:g} s windows until the last 3 "
        f"agree within {cfg['stability']:g}% (at most {cfg['max_duration']:g} s)"
    )
    lines = [
        f"Recorded {m['date']} on {m['cpu_model']} ({m['cpu_mhz']} MHz), {m['cpus']} cores "
        f"(kernel {m['kernel']}, load average before the run {' '.join(m['loadavg_before'])}); "
        f"mserve {v['mserve']} at git commit {m['git_commit']}{src}. Python {v['python']}, "
        f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, numpy {v['numpy']}.",
        f"Server on core {cfg['server_cpu']}, `mserve bench --protocol v2-binary` (closed loop) "
        f"on core {cfg['client_cpu']}; each step {timing}."
        + (" **--quick run: not a measurement.**" if cfg["quick"] else ""),
        f"`batched`: dynamic_batching max_queue_delay_microseconds {cfg['delay_us']}, "
        f"preferred_batch_sizes {cfg['preferred']}, max_queue_size {cfg['queue_size']}.",
        "",
        "| model | concurrency | req/s | p50 (ms) | p99 (ms) | avg batch size | server queue (ms) "
        "| server infer (ms) | bench verdict | other processes (% of a core) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, server in result["servers"].items():
        if "problem" in server and not server["runs"]:
            lines.append(f"| {name} **FAILED** | | | | | | | | | |")
        for r in server["runs"]:
            if "throughput_rps" not in r:
                lines.append(f"| {name} **FAILED** | {r['concurrency']} | | | | | | | | |")
                continue
            fail = "" if r["ok"] else " **FAILED**"
            lines.append(
                f"| {name}{fail} | {r['concurrency']} | {r['throughput_rps']:,.1f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {_cell(r['avg_batch_size'], '.2f')} "
                f"| {_cell(r['queue_ms'], '.2f')} | {_cell(r['infer_ms'], '.2f')} "
                f"| {r['verdict']} | {r['foreign_cpu_percent']:.0f} |"
            )
    lines += [
        "",
        f"In-process floor (`session.run`, 1 intra-op thread, sequential, core "
        f"{cfg['server_cpu']}, median of {cfg['floor_runs']} runs after {FLOOR_WARMUP_RUNS} "
        "of warm-up):",
        "",
        f"| when | batch 1 (ms) | batch 1 rows/s | batch {MAX_BATCH} (ms) "
        f"| batch {MAX_BATCH} rows/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for when in ("floor", "floor_after"):
        f = result.get(when)
        if f:
            b1, bn = f["b1"], f[f"b{MAX_BATCH}"]
            lines.append(
                f"| {'before' if when == 'floor' else 'after'} the servers | {b1['median_ms']:.3f} "
                f"| {b1['rows_per_s']:,.1f} | {bn['median_ms']:.3f} | {bn['rows_per_s']:,.1f} |"
            )
    r = s["ratios"]
    lines += [
        "",
        "Other ratios (the faster floor is the bar): unbatched c=64 / floor batch 1 "
        f"{_cell(r['unbatched_c64_over_floor_b1'], '.2f')}, unbatched c=1 / floor batch 1 "
        f"{_cell(r['unbatched_c1_over_floor_b1'], '.2f')}, batched c=1 / floor batch 1 "
        f"{_cell(r['batched_c1_over_floor_b1'], '.2f')}.",
        "",
        "| target | measured | result |",
        "| --- | ---: | --- |",
    ]
    for t in s["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'PASS' if t['passed'] else 'FAIL'} |")
    for name, server in result["servers"].items():
        f = server.get("flood")
        if f and "problem" not in f:
            lines += [
                "",
                f"Flood (`{name}`): open loop at {f['rate_rps']:,} req/s ({f['factor']}x what it "
                f"answered at c=64) for {f['seconds']:g} s: {f['answered_rps']:,.0f} req/s "
                f"answered (p99 {_cell(f['p99_ms'], '.1f')} ms), errors {f['errors']} (http_503: "
                f"refused by the server; not_started: never sent, every connection busy); server "
                f"memory {f['rss_before_mb']} MiB before, {f['rss_peak_mb']} MiB at the peak, "
                f"{f['rss_after_mb']} MiB after; "
                + (
                    "every answer right afterwards."
                    if server.get("check_after_flood")
                    else "answers NOT checked afterwards."
                ),
            ]
    if not s["all_runs_ok"]:
        lines += ["", "**Some runs failed**: see the JSON (`--out`) for what went wrong."]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds")
    p.add_argument(
        "--preferred", type=int, nargs="*", default=[], help="preferred_batch_sizes (default none)"
    )
    p.add_argument("--queue-size", type=int, default=256, help="max_queue_size")
    p.add_argument("--warmup", type=float, default=3.0, help="bench warm-up seconds per step")
    p.add_argument("--window", type=float, default=3.0, help="bench window seconds")
    p.add_argument("--stability", type=float, default=10.0, help="bench stability percent")
    p.add_argument(
        "--max-duration", type=float, default=18.0, help="longest measured seconds per step"
    )
    p.add_argument("--duration", type=float, help="fixed measured seconds per step instead")
    p.add_argument("--floor-runs", type=int, default=300, help="timed session.run per batch size")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="seconds to wait for an idle machine before each step",
    )
    p.add_argument("--server-cpu", type=int, default=0, help="core for the servers and the floor")
    p.add_argument("--client-cpu", type=int, default=1, help="core for mserve bench")
    p.add_argument(
        "--quick",
        action="store_true",
        help="try the script out: 1 s warm-up + 3 s per step, 50 floor runs (nothing to record)",
    )
    p.add_argument(
        "--out", type=Path, default=HERE / "out" / "batching.json", help="JSON of every raw figure"
    )
    p.add_argument("--no-flood", action="store_true", help="skip the 10x open-loop flood")
    p.add_argument("--results", type=Path, help="RESULTS.md whose batching block to replace")
    p.add_argument("--floor-child", help=argparse.SUPPRESS)  # internal: the pinned floor run
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.duration, args.floor_runs, args.quiet_wait = 1.0, 3.0, 50, 2.0
    bad = [b for b in args.preferred if not 1 <= b <= MAX_BATCH]
    if bad or len(set(args.preferred)) != len(args.preferred):
        p.error(
            f"--preferred: distinct sizes from 1 to max_batch_size {MAX_BATCH}, "
            f"got {args.preferred}"
        )
    if min(args.delay_us, args.queue_size) < 0:
        p.error("--delay-us and --queue-size must be >= 0")
    return args


def floor_step(model_path: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """:func:`measure_floor`, printed; None when it failed."""
    try:
        f = measure_floor(model_path, args)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"  floor FAILED: {exc}", flush=True)
        return None
    b1, bn = f["b1"], f[f"b{MAX_BATCH}"]
    print(
        f"  batch 1: {b1['median_ms']:.3f} ms = {b1['rows_per_s']:,.1f} rows/s   "
        f"batch {MAX_BATCH}: {bn['median_ms']:.3f} ms = {bn['rows_per_s']:,.1f} rows/s",
        flush=True,
    )
    return f


def main(argv: list[str] | None = None) -> int:
    """Build the model, measure the floor and both servers, report; 1 when a run failed."""
    args = parse_args(argv)
    if args.floor_child:
        floor_child(args.floor_child, args.floor_runs)
        return 0
    if shutil.which("taskset") is None:
        sys.exit("batching: taskset is missing; install it with: apt-get install -y util-linux")
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "batching",
        "machine": machine_facts(),
        "settings": {
            "model": "MLP " + "-".join(map(str, LAYERS)) + " FP32",
            "max_batch_size": MAX_BATCH,
            "delay_us": args.delay_us,
            "preferred": list(args.preferred),
            "queue_size": args.queue_size,
            "concurrency": list(CONCURRENCIES),
            "warmup": args.warmup,
            "window": args.window,
            "stability": args.stability,
            "max_duration": args.max_duration,
            "duration": args.duration,
            "floor_runs": args.floor_runs,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "quick": args.quick,
        },
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="mserve-batching-") as tmp:
        work = Path(tmp)
        params = weights()
        repos = write_repositories(work, build_onnx(params), args)
        rows = np.random.default_rng(SEED + 2).standard_normal(
            (CHECK_REQUESTS, LAYERS[0]), dtype=np.float32
        )
        check = (rows, forward(params, rows))
        floor_model = repos["unbatched"]["path"]
        print(f"floor: session.run on core {args.server_cpu}, {args.floor_runs} runs", flush=True)
        result["floor"] = floor_step(floor_model, args)
        for name, info in repos.items():
            result["servers"][name] = measure_server(name, info, check, work, args)
        print("floor again (drift check)", flush=True)
        result["floor_after"] = floor_step(floor_model, args)
    result["summary"] = summarise(result)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return write_result(result, args.out, args.results, "batching", markdown(result))


if __name__ == "__main__":
    sys.exit(main())
