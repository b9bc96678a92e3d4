"""Serving-core benchmark: mserve's V2 REST path against ONNX Runtime alone and a naive wrapper.

What it measures, on a two-core machine (server on one core, load generator on the other):

- the floor: ONNX Runtime's ``session.run`` called in-process at batch 1, one intra-op thread,
  pinned to the server's core;
- ``mserve serve`` (pinned with taskset) with V2 JSON and V2 binary request bodies;
- the naive FastAPI + uvicorn wrapper of the same model (``benchmarks/naive_fastapi.py``), V2
  JSON only, started with uvicorn's defaults on the same core;

each at the given concurrencies with ``wrk -t1`` (closed loop), a warm-up before every measured
run. Every response must be 200; a run with any other status or a socket error fails.

Run from the repository root (about 2.5 minutes with the defaults)::

    python benchmarks/serving_core.py --ref HEAD --out benchmarks/out/serving_core.json \\
        --results benchmarks/RESULTS.md

``--ref REV`` benchmarks ``src/`` as of a git revision instead of the working tree as it is.

``--profile FILE`` adds a py-spy profile of mserve under concurrency 16 with JSON bodies and
prints where the server's time went. wrk is Debian's: ``apt-get install -y wrk``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hoststats import (
    busy_seconds,
    core_busy,
    cpu_ticks,
    git_state,
    package_versions,
    process_cpu_s,
    update_results,
    wait_quiet,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "wrk" / "post_body.lua"
MODEL = "digits"
INFER_PATH = f"/v2/models/{MODEL}/infer"
REF_ENV = "SERVING_CORE_REF"  # set when re-run on a git revision extracted with --ref

# The targets from the issue.
TARGET_RATIO_C16 = 3.0  # mserve JSON req/s >= 3x the naive wrapper's at concurrency 16
TARGET_P99_C16_US = 5000.0  # with p99 under 5 ms
TARGET_P50_OVER_FLOOR_US = 150.0  # at concurrency 1, mserve p50 <= floor p50 + 150 us


# -- set-up -------------------------------------------------------------------------------------


def require_tools() -> None:
    """Exit with instructions when wrk or taskset is missing."""
    if shutil.which("taskset") is None:
        sys.exit("serving_core: taskset is missing; install it with: apt-get install -y util-linux")
    if shutil.which("wrk") is None:
        sys.exit(
            "serving_core: wrk is missing; install Debian's with:\n"
            "  apt-get update && apt-get install -y wrk"
        )


def make_model(repository: Path) -> tuple[Path, np.ndarray, int, np.ndarray]:
    """Train the digits MLP, write it with one intra-op thread; return path, row and outputs."""
    from mserve.config import ModelConfig, RuntimeOptions
    from mserve.convert.sklearn import sklearn_to_onnx
    from mserve.protocol import TensorSpec
    from mserve.quickstart import train_digits
    from mserve.repository import write_model

    model, _, x_test, _, _ = train_digits()
    onx = sklearn_to_onnx(model, n_features=64)
    config = ModelConfig(
        name=MODEL,
        inputs=(TensorSpec("input", "FP32", (-1, 64)),),
        outputs=(
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, 10)),
        ),
        max_batch_size=64,
        runtime=RuntimeOptions(intra_op_threads=1),
    )
    path = write_model(repository, config, 1, onx.SerializeToString())
    row = np.ascontiguousarray(x_test[:1], dtype=np.float32)  # one real test image, [1, 64]
    label = int(model.predict(row)[0])
    probs = model.predict_proba(row).astype(np.float32)
    return path, row, label, probs


def write_bodies(folder: Path, row: np.ndarray) -> dict[str, dict[str, Any]]:
    """The V2 JSON and V2 binary request bodies for one row, written to files for wrk."""
    json_doc = {
        "inputs": [
            {"name": "input", "shape": list(row.shape), "datatype": "FP32", "data": row.ravel()}
        ]
    }
    json_body = json.dumps(json_doc, default=lambda a: [float(v) for v in a]).encode()
    raw = row.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(row.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    bodies = {
        "json": {"body": json_body, "content_type": "application/json", "header_length": None},
        "binary": {
            "body": header + raw,
            "content_type": "application/octet-stream",
            "header_length": len(header),
        },
    }
    for name, b in bodies.items():
        path = folder / f"body-{name}.bin"
        path.write_bytes(b["body"])
        b["path"] = path
        b["bytes"] = len(b["body"])
    return bodies


def machine_facts() -> dict[str, Any]:
    """CPU, cores, versions, date: what a later reader needs to compare a run with theirs."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    cpu_ids = {
        key: m.group(1).strip()
        for key, field in (
            ("family", "cpu family"),
            ("model", "model"),
            ("stepping", "stepping"),
            ("mhz", "cpu MHz"),
            ("cache", "cache size"),
        )
        if (m := re.search(rf"^{field}\s*:\s*(.+)$", cpuinfo, re.M))
    }
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions |= package_versions(
        (
            "mserve",
            "onnxruntime",
            "numpy",
            "orjson",
            "uvicorn",
            "uvloop",
            "httptools",
            "fastapi",
            "starlette",
            "pydantic",
            "scikit-learn",
            "skl2onnx",
        )
    )
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    versions["wrk"] = (wrk.stdout + wrk.stderr).splitlines()[0].split(" Copyright")[0].strip()
    commit, dirty = git_state(ROOT)
    diff = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "HEAD", "--", "src"], capture_output=True
    )
    ref = os.environ.get(REF_ENV)
    if ref:
        source = f"git archive of {ref[:10]} (--ref)"
    else:
        source = f"working tree at {commit}" + (" with uncommitted src/ changes" if dirty else "")
    return {
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_ids": cpu_ids,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "git_commit": commit,
        "mserve_source": source,
        "src_modified": dirty,
        "src_diff_sha256": hashlib.sha256(diff.stdout).hexdigest()[:12] if diff.stdout else None,
        "versions": versions,
    }


# -- the floor ----------------------------------------------------------------------------------


def measure_floor(model_path: Path, row: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """ONNX Runtime alone: ``session.run`` at batch 1, one intra-op thread, on the server's core.

    Like the served rows, repeated when other processes used more than ``--max-foreign``.
    """
    import onnxruntime as ort

    calls = args.floor_calls
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.server_cpu})
    best: dict[str, Any] | None = None
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(model_path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        feed = {"input": row}
        run = session.run
        clock = time.perf_counter_ns
        for attempt in range(1, args.retries + 2):
            waited = wait_quiet(args.quiet_wait)
            for _ in range(min(calls, 2000)):  # warm-up
                run(names, feed)
            times = np.empty(calls, dtype=np.int64)
            ticks0, own0 = cpu_ticks(), time.process_time()
            start = clock()
            for i in range(calls):
                t0 = clock()
                run(names, feed)
                times[i] = clock() - t0
            total = clock() - start
            foreign = busy_seconds(ticks0, cpu_ticks()) - (time.process_time() - own0)
            result = {
                "calls": calls,
                "calls_per_s": calls / (total / 1e9),
                "p50_us": float(np.percentile(times, 50)) / 1e3,
                "p99_us": float(np.percentile(times, 99)) / 1e3,
                "mean_us": float(times.mean()) / 1e3,
                "foreign_cpu_percent": round(100.0 * max(foreign, 0.0) / (total / 1e9), 1),
                "attempt": attempt,
                "waited_for_quiet_s": waited,
            }
            if best is None or result["foreign_cpu_percent"] < best["foreign_cpu_percent"]:
                best = result
            if result["foreign_cpu_percent"] <= args.max_foreign:
                break
    finally:
        os.sched_setaffinity(0, before)
    assert best is not None
    return best


# -- servers ------------------------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One POST; returns status, headers (lower-case names) and body."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def request_headers(body: dict[str, Any]) -> dict[str, str]:
    """The HTTP headers a body is sent with."""
    headers = {"Content-Type": body["content_type"]}
    if body["header_length"] is not None:
        headers["Inference-Header-Content-Length"] = str(body["header_length"])
    return headers


def check_response(url: str, body: dict[str, Any], label: int, probs: np.ndarray) -> None:
    """Send the body once and check the answer is 200 with the model's label and probabilities."""
    status, headers, raw = post(url, body["body"], request_headers(body))
    if status != 200:
        raise RuntimeError(f"{url} answered {status}: {raw[:300]!r}")
    hlen = headers.get("inference-header-content-length")
    doc = json.loads(raw[: int(hlen)] if hlen else raw)
    outputs: dict[str, np.ndarray] = {}
    offset = int(hlen) if hlen else 0
    for out in doc["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[out["datatype"]]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arr = np.frombuffer(raw[offset : offset + size], dtype=dtype)
            offset += size
        else:
            arr = np.asarray(out["data"], dtype=dtype)
        outputs[out["name"]] = arr.reshape(out["shape"])
    if int(outputs["label"].reshape(-1)[0]) != label or not np.allclose(
        outputs["probabilities"].reshape(probs.shape), probs, atol=1e-4
    ):
        raise RuntimeError(f"{url} answered wrong outputs: {doc}")


@contextlib.contextmanager
def mserve_server(repository: Path, cpu: int) -> Iterator[tuple[str, int]]:
    """``mserve serve`` pinned to ``cpu``; yields its base URL and pid, stops it after."""
    from mserve.server.process import ServerProcess

    server = ServerProcess(repository, cpu=str(cpu)).start()
    try:
        assert server.proc is not None
        yield server.url, server.proc.pid
    finally:
        server.stop()


@contextlib.contextmanager
def naive_server(
    model_path: Path, cpu: int, app: str, body: dict[str, Any], log: Path
) -> Iterator[tuple[str, int]]:
    """``uvicorn naive_fastapi:APP`` with uvicorn's defaults, pinned to ``cpu``."""
    from mserve.server.process import free_port

    port = free_port()
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "uvicorn"]
    cmd += [f"naive_fastapi:{app}", "--app-dir", str(HERE), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    env = dict(os.environ, NAIVE_MODEL_PATH=str(model_path))
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"naive server exited {proc.returncode}:\n{log.read_text()}")
            try:
                if post(url + INFER_PATH, body["body"], request_headers(body))[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"naive server not ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- load ---------------------------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk_text(text: str) -> dict[str, Any]:
    """The figures of wrk's own report: --latency percentiles (us), req/s, non-2xx, errors."""
    out: dict[str, Any] = {"latency_us": {}}
    for q, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        out["latency_us"][q] = float(value) * _UNITS[unit]
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    out["requests_per_s"] = float(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(map(int, m.groups())) if m else 0
    return out


def model_stats(url: str) -> dict[str, Any] | None:
    """mserve's per-model statistics (None for a server without them)."""
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/stats", timeout=5) as r:
            return json.loads(r.read())["model_stats"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Mean microseconds per request in each phase mserve records, between two snapshots."""
    a, b = after["inference_stats"], before["inference_stats"]
    n = a["success"]["count"] - b["success"]["count"]
    if n <= 0:
        return {}
    return {
        phase: round((a[phase]["ns"] - b[phase]["ns"]) / n / 1e3, 1)
        for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output")
    }


def wrk(
    url: str, body: dict[str, Any], concurrency: int, seconds: float, cpu: int
) -> dict[str, Any]:
    """One wrk run (-t1, closed loop); returns its figures, both from Lua and from its text."""
    secs = max(1, round(seconds))  # wrk takes whole seconds
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{secs}s"]
    cmd += ["--latency", "--timeout", "5s", "-s", str(LUA), url + INFER_PATH, "--"]
    cmd += [str(body["path"]), body["content_type"], str(body["header_length"] or "-")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text = proc.stdout
    m = re.search(r"^WRK_JSON (.+)$", text, re.M)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}\n{proc.stderr}")
    figures = json.loads(m.group(1))
    parsed = parse_wrk_text(text)
    errors = figures["errors"]
    failures = sum(errors.values()) + parsed["non_2xx"] + parsed["socket_errors"]
    pct = figures["latency_us"]["percentiles"]
    return {
        "requests": figures["requests"],
        "seconds": figures["duration_us"] / 1e6,
        "requests_per_s": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_us": pct["50"],
        "p75_us": pct["75"],
        "p90_us": pct["90"],
        "p99_us": pct["99"],
        "p999_us": pct["99.9"],
        "mean_us": figures["latency_us"]["mean"],
        "max_us": figures["latency_us"]["max"],
        "errors": errors,
        "failures": failures,
        "ok": failures == 0 and figures["requests"] > 0,
        "wrk_text": parsed,
    }


def measure(
    server: str,
    encoding: str,
    url: str,
    pid: int,
    body: dict[str, Any],
    concurrency: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up, then a measured wrk run, with the CPU the server, wrk and others used.

    The machine may be shared: CPU time used during the run by anything but the server and wrk
    ("foreign", in percent of one core) is recorded, and a run disturbed by more than
    ``--max-foreign`` percent is repeated (up to ``--retries`` times; the least disturbed kept).
    """
    best: dict[str, Any] | None = None
    for attempt in range(1, args.retries + 2):
        waited = wait_quiet(args.quiet_wait)
        wrk(url, body, concurrency, args.warmup, args.client_cpu)
        stats0, ticks0, cpu0 = model_stats(url), cpu_ticks(), process_cpu_s(pid)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = wrk(url, body, concurrency, args.duration, args.client_cpu)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1, ticks1, stats1 = process_cpu_s(pid), cpu_ticks(), model_stats(url)
        wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
        foreign = busy_seconds(ticks0, ticks1) - (cpu1 - cpu0) - wrk_cpu
        run.update(
            server=server,
            encoding=encoding,
            concurrency=concurrency,
            body_bytes=body["bytes"],
            server_cpu_us_per_request=round((cpu1 - cpu0) / max(run["requests"], 1) * 1e6, 1),
            wrk_cpu_percent=round(100.0 * wrk_cpu / run["seconds"], 1),
            foreign_cpu_percent=round(100.0 * max(foreign, 0.0) / run["seconds"], 1),
            core_busy_percent=core_busy(ticks0, ticks1),
            server_phases_us=stats_delta(stats0, stats1) if stats0 and stats1 else None,
            attempt=attempt,
            waited_for_quiet_s=waited,
        )
        if best is None or run["foreign_cpu_percent"] < best["foreign_cpu_percent"]:
            best = run
        if run["foreign_cpu_percent"] <= args.max_foreign:
            break
        print(
            f"  (disturbed: {run['foreign_cpu_percent']:.0f}% of a core used by other "
            "processes; again)",
            flush=True,
        )
    assert best is not None
    flag = "ok" if best["ok"] else f"FAILED ({best['failures']} errors / non-200)"
    print(
        f"  {server:<11} {encoding:<6} c={concurrency:<3} {best['requests_per_s']:9.0f} req/s  "
        f"p50 {best['p50_us']:7.0f} us  p99 {best['p99_us']:7.0f} us  "
        f"server {best['server_cpu_us_per_request']:5.0f} us/req  "
        f"foreign {best['foreign_cpu_percent']:3.0f}%  {flag}",
        flush=True,
    )
    return best


# -- profile ------------------------------------------------------------------------------------


def profile(url: str, pid: int, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """py-spy on mserve under concurrency 16 with JSON bodies: where the server's CPU goes.

    Python frames, sampled without pausing the server (``--nonblocking``; pausing it, as
    ``--native`` needs, slows it down many times and distorts the picture), idle threads left
    out. The raw (collapsed) profile is kept for flame graphs.
    """
    if shutil.which("py-spy") is None:
        sys.exit("serving_core: --profile needs py-spy: pip install py-spy")
    raw = Path(args.profile)
    raw.parent.mkdir(parents=True, exist_ok=True)
    wait_quiet(args.quiet_wait)
    wrk(url, body, 16, args.warmup, args.client_cpu)
    seconds = max(round(args.duration), 5)
    spy = ["taskset", "-c", str(args.client_cpu), "py-spy", "record", "--nonblocking"]
    spy += ["--format", "raw", "-r", "1000", "-d", str(seconds + 2), "-o", str(raw)]
    spy += ["-p", str(pid)]
    with subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        time.sleep(1.0)
        cpu0 = process_cpu_s(pid)
        load = wrk(url, body, 16, seconds, args.client_cpu)
        cpu_us = (process_cpu_s(pid) - cpu0) / max(load["requests"], 1) * 1e6
        _, err = p.communicate(timeout=120)
    if p.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed ({p.returncode}): {err.decode(errors='replace')}")
    return summarise_profile(raw, load["requests_per_s"], cpu_us, args.profile_top)


def _frame(frame: str) -> str:
    """``function (path/file.py:line)`` -> ``function (file.py)``."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, where = m.groups()
    return f"{func} ({Path(where).name})"


#: Where a sample's innermost frame lives -> the part of the request path it is charged to.
#: Checked in order; the first match wins. Runner.run as the innermost Python frame means the
#: thread was in uvloop's C code (epoll, socket reads, wake-ups, callback dispatch).
COMPONENTS = (
    ("onnxruntime/", "ONNX Runtime session.run (instance thread)"),
    ("mserve/runtime/", "ONNX Runtime session.run (instance thread)"),
    ("InstancePool._work", "thread hand-off: queue get, GIL, call_soon_threadsafe (instance)"),
    ("InstancePool.submit", "thread hand-off: submit, future resolve (event loop)"),
    ("_resolve (", "thread hand-off: submit, future resolve (event loop)"),
    ("RequestResponseCycle.send", "uvicorn send: response bytes, socket write syscalls"),
    ("Runner.run (", "uvloop C: epoll, socket reads, callback dispatch"),
    ("uvicorn/", "uvicorn HTTP/1.1 parsing and ASGI plumbing"),
    ("mserve/server/http/", "mserve HTTP app and V2 codec"),
    ("mserve/", "mserve model path: lookup, validate, statistics, types"),
    ("<string>", "mserve model path: lookup, validate, statistics, types"),
    ("numpy/", "numpy (called from the codec)"),
    ("asyncio/", "asyncio Python code (tasks, events)"),
    ("_weakrefset", "asyncio Python code (tasks, events)"),
)


def component(frame: str) -> str:
    """The part of the request path a raw py-spy frame belongs to."""
    for needle, name in COMPONENTS:
        if needle in frame:
            return name
    return "other"


def summarise_profile(raw: Path, rps: float, cpu_us: float, top: int) -> dict[str, Any]:
    """Sample shares of a py-spy raw profile: by thread, by component, by frame (self time).

    Only running threads are sampled, so a share of all samples is a share of the server's CPU
    time, and ``us_per_request`` = share x the server's CPU microseconds per request.
    (Inclusive shares are left out: without pausing the process py-spy often reads an event
    loop callback's stack only up to the C code that called it.)
    """
    self_counts: Counter[str] = Counter()
    components: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        instance = any(f.startswith("InstancePool._work") for f in frames)
        threads["instance thread" if instance else "event loop thread"] += count
        total += count
        self_counts[_frame(frames[-1])] += count
        components[component(frames[-1])] += count

    def share(c: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {
                "frame": f,
                "percent": round(100.0 * k / total, 1),
                "us_per_request": round(k / total * cpu_us, 1),
            }
            for f, k in c.most_common(n)
        ]

    return {
        "file": str(raw),
        "samples": total,
        "requests_per_s_while_sampled": round(rps),
        "server_cpu_us_per_request": round(cpu_us, 1),
        "threads": share(threads, 5),
        "components": share(components, len(COMPONENTS) + 1),
        "self": share(self_counts, top),
    }


# -- report -------------------------------------------------------------------------------------


def _p50(row: dict[str, Any]) -> float:
    return float(row["p50_us"])


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Ratios and the targets, from the raw runs."""
    runs = result["runs"]
    # the floor is measured before and after the servers; the faster of the two is the bar
    floor = min(result["floor"], result.get("floor_after", result["floor"]), key=_p50)

    def find(server: str, encoding: str, c: int) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in runs
                if r["server"] == server and r["encoding"] == encoding and r["concurrency"] == c
            ),
            None,
        )

    ratios = []
    for c in result["settings"]["concurrency"]:
        ms = find("mserve", "json", c)
        row: dict[str, Any] = {"concurrency": c}
        for variant in result["settings"]["naive"]:
            nv = find(variant, "json", c)
            row[variant] = (
                ms["requests_per_s"] / nv["requests_per_s"] if ms and nv and nv["ok"] else None
            )
        ratios.append(row)
    targets = []
    ms16, nv16 = find("mserve", "json", 16), find("naive", "json", 16)
    if ms16 and nv16:
        ratio = ms16["requests_per_s"] / nv16["requests_per_s"]
        targets.append(
            {
                "target": f"c=16 JSON: mserve req/s >= {TARGET_RATIO_C16:g}x naive",
                "measured": f"{ratio:.2f}x",
                "passed": ratio >= TARGET_RATIO_C16 and ms16["ok"] and nv16["ok"],
            }
        )
    if ms16:
        targets.append(
            {
                "target": f"c=16 JSON: mserve p99 < {TARGET_P99_C16_US / 1e3:g} ms",
                "measured": f"{ms16['p99_us'] / 1e3:.2f} ms",
                "passed": ms16["p99_us"] < TARGET_P99_C16_US and ms16["ok"],
            }
        )
    ms1 = find("mserve", "json", 1)
    over = ms1["p50_us"] - floor["p50_us"] if ms1 else None
    if ms1 and over is not None:
        targets.append(
            {
                "target": f"c=1 JSON: mserve p50 <= floor p50 + {TARGET_P50_OVER_FLOOR_US:g} us",
                "measured": f"+{over:.0f} us",
                "passed": over <= TARGET_P50_OVER_FLOOR_US and ms1["ok"],
            }
        )
    msb1 = find("mserve", "binary", 1)
    return {
        "ratios": ratios,
        "floor_p50_us": floor["p50_us"],
        "p50_over_floor_us": {
            "json": over,
            "binary": msb1["p50_us"] - floor["p50_us"] if msb1 else None,
        },
        "targets": targets,
        "all_runs_ok": all(r["ok"] for r in runs),
    }


def markdown(result: dict[str, Any]) -> str:
    """The Markdown block for RESULTS.md: machine, table, ratios, targets."""
    m, f, s = result["machine"], result["floor"], result["summary"]
    v, ids = m["versions"], m.get("cpu_ids", {})
    cfg = result["settings"]
    lines = [
        f"Recorded {m['date']} on {m['cpu_model']} (family {ids.get('family')} model "
        f"{ids.get('model')}, {ids.get('mhz')} MHz, {ids.get('cache')} cache), {m['cpus']} cores "
        f"(kernel {m['kernel']}, "
        f"load average before the run {' '.join(m['loadavg_before'])}); mserve "
        f"{v['mserve']}, {m['mserve_source']}.",
        f"Python {v['python']}, onnxruntime {v['onnxruntime']}, numpy {v['numpy']}, "
        f"orjson {v['orjson']}, uvicorn {v['uvicorn']}, uvloop {v['uvloop']}, "
        f"httptools {v['httptools']}, fastapi {v['fastapi']}, pydantic {v['pydantic']}, "
        f"{v['wrk']}. Server on core {cfg['server_cpu']}, wrk -t1 on core {cfg['client_cpu']}; "
        f"{cfg['warmup']:g} s warm-up, {cfg['duration']:g} s measured per row.",
        "",
        "| server | encoding | concurrency | req/s | p50 (µs) | p90 (µs) | p99 (µs) "
        "| server CPU (µs/req) | other processes (% of a core) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    floors = [("before", f)]
    if "floor_after" in result:
        floors.append(("after", result["floor_after"]))
    for when, fl in floors:
        lines.append(
            f"| ONNX Runtime in-process (floor, {when}) | numpy | 1 | {fl['calls_per_s']:,.0f} "
            f"| {fl['p50_us']:.1f} | | {fl['p99_us']:.1f} | {1e6 / fl['calls_per_s']:.1f} "
            f"| {fl['foreign_cpu_percent']:.0f} |"
        )
    for r in result["runs"]:
        fail = "" if r["ok"] else " **FAILED**"
        lines.append(
            f"| {r['server']}{fail} | {r['encoding']} | {r['concurrency']} "
            f"| {r['requests_per_s']:,.0f} | {r['p50_us']:,} | {r['p90_us']:,} | {r['p99_us']:,} "
            f"| {r['server_cpu_us_per_request']:.0f} | {r['foreign_cpu_percent']:.0f} |"
        )
    naive = cfg["naive"]
    if naive:
        lines += ["", "| concurrency | " + " | ".join(f"mserve JSON ÷ {n}" for n in naive) + " |"]
        lines.append("| ---: |" + " ---: |" * len(naive))
        for row in s["ratios"]:
            cells = [f"{row[n]:.2f}x" if row[n] else "n/a" for n in naive]
            lines.append(f"| {row['concurrency']} | " + " | ".join(cells) + " |")
    over = s["p50_over_floor_us"]
    lines += [
        "",
        f"mserve p50 at concurrency 1 minus the floor's p50 ({s['floor_p50_us']:.1f} µs, the "
        "faster of the two floor runs): "
        + ", ".join(f"{k} +{val:.0f} µs" for k, val in over.items() if val is not None)
        + ".",
        "",
        "| target | measured | result |",
        "| --- | ---: | --- |",
    ]
    for t in s["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'pass' if t['passed'] else 'FAIL'} |")
    phases = [r for r in result["runs"] if r.get("server_phases_us")]
    if phases:
        lines += [
            "",
            "mserve's own statistics, mean µs per request (queue = waiting for the instance "
            "thread; infer = session.run; input/output = validation and hand-back):",
            "",
            "| encoding | concurrency | total in model | queue | input | infer | output |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in phases:
            p = r["server_phases_us"]
            lines.append(
                f"| {r['encoding']} | {r['concurrency']} | {p['success']} | {p['queue']} "
                f"| {p['compute_input']} | {p['compute_infer']} | {p['compute_output']} |"
            )
    prof = result.get("profile")
    if prof:
        lines += [
            "",
            f"Where mserve's CPU time goes at concurrency 16, JSON (py-spy, {prof['samples']:,} "
            f"samples of running threads, self time; {prof['server_cpu_us_per_request']:.0f} µs "
            f"of server CPU per request at {prof['requests_per_s_while_sampled']:,} req/s while "
            "sampled):",
            "",
            "| component | share | µs per request |",
            "| --- | ---: | ---: |",
        ]
        for c in prof["components"]:
            lines.append(f"| {c['frame']} | {c['percent']:.1f}% | {c['us_per_request']:.1f} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def run_at_ref(ref: str, argv: list[str]) -> int:
    """Re-run this script with ``src/`` of a git revision first on PYTHONPATH (others may be
    editing the working tree); returns its exit status."""
    git = ["git", "-C", str(ROOT)]
    sha = subprocess.run(
        [*git, "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True
    )
    if sha.returncode != 0:
        sys.exit(f"serving_core: --ref {ref} is not a commit: {sha.stderr.strip()}")
    with tempfile.TemporaryDirectory(prefix="mserve-ref-") as tmp:
        archive = subprocess.run([*git, "archive", sha.stdout.strip(), "src"], capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        path = os.pathsep.join(p for p in (f"{tmp}/src", os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=path, **{REF_ENV: sha.stdout.strip()})
        return subprocess.run([sys.executable, __file__, *argv], env=env, check=False).returncode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per row")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each row")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 16, 64], help="closed-loop connections"
    )
    p.add_argument("--floor-calls", type=int, default=20000, help="session.run calls timed")
    p.add_argument(
        "--naive",
        nargs="*",
        default=["naive", "naive-lean"],
        choices=["naive", "naive-lean"],
        help="naive wrapper variants: tutorial style (pydantic, def) and lean (dict, async def)",
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=10.0,
        help="repeat a run when other processes used more than this percent of a core",
    )
    p.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run")
    p.add_argument(
        "--quiet-wait", type=float, default=30.0, help="seconds to wait for an idle machine"
    )
    p.add_argument("--server-cpu", type=int, default=1, help="core for the servers and the floor")
    p.add_argument("--client-cpu", type=int, default=0, help="core for wrk")
    p.add_argument(
        "--ref",
        help="benchmark mserve as of this git revision (default: the working tree as it is)",
    )
    p.add_argument("--out", type=Path, default=HERE / "out" / "serving_core.json")
    p.add_argument("--results", type=Path, help="RESULTS.md whose serving-core block to replace")
    p.add_argument(
        "--profile", help="also profile mserve at c=16 with JSON (py-spy); raw profile path"
    )
    p.add_argument("--profile-top", type=int, default=25, help="frames listed from the profile")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, write the JSON, print (and optionally record) the Markdown."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    require_tools()
    if args.ref and not os.environ.get(REF_ENV):
        return run_at_ref(args.ref, argv)
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "serving_core",
        "machine": machine_facts(),
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "floor_calls": args.floor_calls,
            "naive": args.naive,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "wrk": "-t1 --latency --timeout 5s, closed loop",
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="mserve-bench-") as tmp:
        work = Path(tmp)
        print("training and converting the digits model", flush=True)
        model_path, row, label, probs = make_model(work / "models")
        bodies = write_bodies(work, row)
        result["settings"]["body_bytes"] = {k: b["bytes"] for k, b in bodies.items()}
        print(f"floor: {args.floor_calls} session.run calls on core {args.server_cpu}", flush=True)
        result["floor"] = measure_floor(model_path, row, args)
        print(
            f"  {result['floor']['calls_per_s']:,.0f} calls/s  p50 "
            f"{result['floor']['p50_us']:.1f} us  p99 {result['floor']['p99_us']:.1f} us  "
            f"foreign {result['floor']['foreign_cpu_percent']:.0f}%",
            flush=True,
        )
        print("mserve serve", flush=True)
        with mserve_server(work / "models", args.server_cpu) as (url, pid):
            for encoding in ("json", "binary"):
                check_response(url + INFER_PATH, bodies[encoding], label, probs)
                for c in args.concurrency:
                    run = measure("mserve", encoding, url, pid, bodies[encoding], c, args)
                    result["runs"].append(run)
            if args.profile:
                print("profiling mserve at c=16, JSON, with py-spy", flush=True)
                result["profile"] = profile(url, pid, bodies["json"], args)
        apps = {"naive": "app", "naive-lean": "app_lean"}
        for variant in args.naive:
            print(f"{variant}: uvicorn naive_fastapi:{apps[variant]}", flush=True)
            log = work / f"{variant}.log"
            with naive_server(model_path, args.server_cpu, apps[variant], bodies["json"], log) as (
                url,
                pid,
            ):
                check_response(url + INFER_PATH, bodies["json"], label, probs)
                for c in args.concurrency:
                    run = measure(variant, "json", url, pid, bodies["json"], c, args)
                    result["runs"].append(run)
        print("floor again (drift check)", flush=True)
        result["floor_after"] = measure_floor(model_path, row, args)
        print(
            f"  {result['floor_after']['calls_per_s']:,.0f} calls/s  p50 "
            f"{result['floor_after']['p50_us']:.1f} us",
            flush=True,
        )
    result["summary"] = summarise(result)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    block = markdown(result)
    print("\n" + block + "\n")
    if "profile" in result:
        prof = result["profile"]
        print(
            f"profile: {prof['samples']} samples in {prof['file']}; "
            f"{prof['requests_per_s_while_sampled']} req/s while sampled, "
            f"{prof['server_cpu_us_per_request']} us of server CPU per request"
        )
        for kind in ("threads", "components", "self"):
            print(f"  {kind}:   % of samples, us per request")
            for item in prof[kind]:
                print(
                    f"    {item['percent']:5.1f}%  {item['us_per_request']:6.1f}  {item['frame']}"
                )
    if args.results:
        update_results(args.results, "serving_core", block)
        print(f"updated {args.results}")
    print(f"wrote {args.out} in {result['wall_seconds']} s")
    return 0 if result["summary"]["all_runs_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
