"""Memory of loading, unloading and reloading a model: is an unloaded model's memory given back?

Serves a repository with one tiny model through ``mserve serve --enable-management``, places an
ONNX MLP of some size beside it (256 -> 4096 -> 4096 -> 256, FP32: 72 MiB of weights, random,
built with onnx.numpy_helper), and reads the server process's resident memory from
``/proc/PID/status`` (VmRSS, and RssAnon: the heap, without the mapped libraries):

- before the big model is loaded;
- ``--cycles`` times: after ``POST .../big/load`` and after ``POST .../big/unload`` (each read
  once the runtimes have closed on their background thread: ``--settle`` seconds later);
- ``--reloads`` times: after ``POST .../big/load`` of the loaded model (a reload: the new
  session loads and warms up beside the old one, then switches in), with the peak of the
  reload (VmHWM, reset through ``/proc/PID/clear_refs`` before each).

``--no-trim`` runs the same server with ``release_freed_memory`` (glibc's ``malloc_trim``
after runtimes close) replaced by a no-op, to show what it changes; the replacement is made by
the one-line launcher below, never in the server's code.

Run from the repository root (about 40 s; Linux only)::

    python benchmarks/reload_memory.py
    python benchmarks/reload_memory.py --no-trim
    python benchmarks/reload_memory.py --json --out benchmarks/out/reload_memory.json
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from mserve.server.process import free_port

WIDTHS = (256, 4096, 4096, 256)
NO_TRIM = (
    "import sys, mserve.server.models as m; m.release_freed_memory = lambda: None; "
    "from mserve.cli.main import main; sys.argv[0] = 'mserve'; raise SystemExit(main())"
)


def mlp(widths: tuple[int, ...]) -> bytes:
    """INPUT -> MatMul + Relu layers -> OUTPUT (FP32), random weights."""
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "INPUT"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        w = rng.standard_normal((n_in, n_out), dtype=np.float32) / np.float32(np.sqrt(n_in))
        weights.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"M{i}"]))
        x = f"H{i}" if i < len(widths) - 2 else "OUTPUT"
        nodes.append(helper.make_node("Relu", [f"M{i}"], [x]))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["n", widths[0]])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["n", widths[-1]])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def place(root: Path, name: str, model: bytes) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.onnx").write_bytes(model)


def memory(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and VmHWM of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def post(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", path, b"")
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"POST {path}: {reply.status} {body!r}")
    finally:
        conn.close()


def start(repo: Path, port: int, trim: bool) -> subprocess.Popen[bytes]:
    launcher = ["-m", "mserve"] if trim else ["-c", NO_TRIM]
    cmd = [sys.executable, *launcher, "serve", str(repo), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--enable-management"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server was not ready after 60 s")


def measure(cycles: int, reloads: int, settle: float, trim: bool) -> dict[str, Any]:
    """Every figure of one run, in MiB."""
    big = mlp(WIDTHS)
    with tempfile.TemporaryDirectory(prefix="mserve-reload-memory-") as tmp:
        repo = Path(tmp)
        place(repo, "small", mlp((4, 4)))
        port = free_port()
        proc = start(repo, port, trim)
        pid = proc.pid
        try:
            time.sleep(settle)
            result: dict[str, Any] = {
                "model_mib": len(big) / 2**20,
                "trim": trim,
                "before": memory(pid),
                "cycles": [],
                "reloads": [],
            }
            place(repo, "big", big)
            for _ in range(cycles):
                post(port, "/v2/repository/models/big/load")
                time.sleep(settle)
                loaded = memory(pid)
                post(port, "/v2/repository/models/big/unload")
                time.sleep(settle)
                result["cycles"].append({"loaded": loaded, "unloaded": memory(pid)})
            post(port, "/v2/repository/models/big/load")
            time.sleep(settle)
            result["loaded_once"] = memory(pid)
            for _ in range(reloads):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM
                post(port, "/v2/repository/models/big/load")
                time.sleep(settle)
                result["reloads"].append(memory(pid))
        finally:
            proc.terminate()
            proc.wait(30)
    return result


def table(r: dict[str, Any]) -> str:
    """The figures as a Markdown table (MiB; + is the growth over "before")."""
    base = r["before"]["VmRSS"]
    anon = r["before"]["RssAnon"]

    def cell(m: dict[str, float]) -> str:
        return f"{m['VmRSS']:.0f} (+{m['VmRSS'] - base:.0f}; anon +{m['RssAnon'] - anon:.0f})"

    lines = [
        f"model: {r['model_mib']:.0f} MiB of weights; malloc_trim after unload: "
        f"{'on' if r['trim'] else 'off (--no-trim)'}",
        "",
        "| step | RSS MiB (growth over before) |",
        "| --- | --- |",
        f"| before | {base:.0f} |",
    ]
    for i, c in enumerate(r["cycles"], 1):
        lines.append(f"| cycle {i}: loaded | {cell(c['loaded'])} |")
        lines.append(f"| cycle {i}: unloaded | {cell(c['unloaded'])} |")
    lines.append(f"| loaded again | {cell(r['loaded_once'])} |")
    for i, m in enumerate(r["reloads"], 1):
        lines.append(
            f"| reload {i}: after | {cell(m)}; peak during the reload {m['VmHWM']:.0f} "
            f"(+{m['VmHWM'] - base:.0f}) |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=8, help="load / unload cycles (default: 8)")
    ap.add_argument("--reloads", type=int, default=4, help="reloads of the loaded model")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before each reading")
    ap.add_argument("--no-trim", action="store_true", help="without malloc_trim, to compare")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    ap.add_argument("--out", type=Path, help="also write the raw figures to this JSON file")
    args = ap.parse_args()
    if not Path("/proc/self/status").exists():
        print("reload_memory: reads /proc; Linux only", file=sys.stderr)
        return 1
    result = measure(args.cycles, args.reloads, args.settle, not args.no_trim)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
