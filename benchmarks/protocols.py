"""Protocols benchmark: the same models over V2 gRPC, V2 HTTP with binary tensors and V2 HTTP
with JSON tensors, measured with ``mserve bench`` in one run.

Two models, served by one ``mserve serve --grpc-port`` pinned to one core:

- ``digits``: a small MLP trained on the spot on scikit-learn's digits (64 FP32 features in,
  a label and 10 probabilities out; about 300 bytes of tensor data a request);
- ``wide``: one FP32 input of 262,144 values (exactly 1 MiB) summed to one value
  (``ReduceSum``), so the request's size is nearly all that differs from digits.

Each (model, protocol, concurrency) step is ``mserve bench --protocol P --concurrency C`` pinned
to the other core; the protocols take turns within a round (their order rotates each round), and
the figures are the medians over the rounds. Reported: throughput and p50 per step, and the
ratios gRPC / HTTP binary and JSON / HTTP binary in the same round (the machine is shared and
noisy; a ratio of two steps measured a few seconds apart drifts far less than either figure).
Before measuring, each protocol's answer for one known digits row is checked against the model.

There are no pass / fail targets: the issue asks for the figures. A run that fails (server not
ready, bench errors, wrong answers) exits 1.

Run from the repository root (about 3 minutes)::

    python benchmarks/protocols.py --out benchmarks/out/protocols.json \\
        --results benchmarks/RESULTS.md

``--quick`` tries it out in under a minute (one round, short steps; nothing to record).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hoststats import (
    busy_seconds,
    cpu_ticks,
    git_state,
    package_versions,
    process_cpu_s,
    wait_quiet,
    write_result,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROTOCOLS = ("v2-grpc", "v2-binary", "v2-json")
WIDE = 262_144  # FP32 values: 1 MiB
SECTION = "protocols"


def digits_model() -> tuple[bytes, np.ndarray, int]:
    """The digits MLP as ONNX, one test row and its label."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from mserve.convert.sklearn import sklearn_to_onnx

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
        model.fit(x[:1500], data.target[:1500])
    onx = sklearn_to_onnx(model, n_features=64).SerializeToString()
    return onx, x[1500:1501], int(model.predict(x[1500:1501])[0])


def wide_model() -> bytes:
    """INPUT FP32 [-1, 262144] -> OUTPUT FP32 [-1, 1], the sum of each row."""
    import onnx
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["INPUT", "axes"], ["OUTPUT"], keepdims=1)],
        "wide_sum",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", WIDE])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write_repository(root: Path, digits: bytes, wide: bytes) -> None:
    import yaml

    for name, onx, config in (
        ("digits", digits, {"max_batch_size": 64}),
        ("wide", wide, {"max_batch_size": 4}),
    ):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(onx)
        (root / name / "config.yaml").write_text(yaml.safe_dump({"name": name, **config}))


def check_answers(http: int, grpc: int, row: np.ndarray, label: int) -> dict[str, Any]:
    """One digits row through each protocol's client: every answer must be the model's."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    got: dict[str, Any] = {}
    h = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    for binary, name in ((True, "v2-binary"), (False, "v2-json")):
        x = httpclient.InferInput("input", [1, 64], "FP32")
        x.set_data_from_numpy(row, binary_data=binary)
        got[name] = int(h.infer("digits", [x]).as_numpy("label")[0])
    h.close()
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(row)
    got["v2-grpc"] = int(g.infer("digits", [x]).as_numpy("label")[0])
    g.close()
    return {"expected": label, "answers": got, "ok": all(v == label for v in got.values())}


def bench_step(
    url: str,
    model: str,
    protocol: str,
    concurrency: int,
    server_pid: int,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One ``mserve bench`` step pinned to the client core; its throughput, p50 and the CPU
    the server and everything else used meanwhile."""
    out = work / f"{model}-{protocol}-c{concurrency}.json"
    cmd = ["taskset", "-c", str(args.client_cpu), sys.executable, "-m", "mserve", "bench", url]
    cmd += ["-m", model, "--protocol", protocol, "--concurrency", str(concurrency)]
    cmd += ["--warmup", f"{args.warmup:g}", "--duration", f"{args.duration:g}"]
    cmd += ["--timeout", "30", "--no-save", "--json", "-o", str(out), "-q"]
    waited = wait_quiet(args.quiet_wait)
    ticks0, cpu0, t0 = cpu_ticks(), process_cpu_s(server_pid), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    seconds = time.monotonic() - t0
    server_cpu = process_cpu_s(server_pid) - cpu0
    step: dict[str, Any] = {
        "model": model,
        "protocol": protocol,
        "concurrency": concurrency,
        "waited_for_quiet_s": waited,
        "server_cpu_percent": round(100 * server_cpu / seconds, 1),
        "machine_busy_cores": round(busy_seconds(ticks0, cpu_ticks()) / seconds, 2),
    }
    if proc.returncode != 0 or not out.exists():
        step.update(
            ok=False, problem=f"mserve bench exited {proc.returncode}: {proc.stderr[-1500:]}"
        )
        return step
    s = json.loads(out.read_text())["steps"][-1]
    step.update(
        ok=s["error_count"] == 0 and s["count"] > 0,
        throughput_rps=s["throughput_rps"],
        p50_ms=s["latency_ms"]["p50"],
        p99_ms=s["latency_ms"]["p99"],
        count=s["count"],
        errors=s["errors"],
        generator_cpu_percent=s["generator"]["cpu_percent"],
        # the server's CPU over the whole step, warm-up included, so per request of both
        server_cpu_us_per_request=round(
            1e6 * server_cpu / max(1, s["count"] + s["warmup"]["requests"]), 1
        ),
    )
    if not step["ok"]:
        step["problem"] = f"{s['error_count']} errors {s['errors']}"
    return step


def serve(repo: Path, http: int, grpc: int, cpu: int) -> subprocess.Popen[bytes]:
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "mserve", "serve", str(repo)]
    cmd += ["--port", str(http), "--grpc-port", str(grpc), "--max-body-mb", "16"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read back only if the server fails
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server not ready after 60 s")


def free_port() -> int:
    from mserve.server.process import free_port as free

    return free()


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Medians per (model, protocol, concurrency), and per-round ratios against HTTP binary."""
    steps = [s for r in result["rounds"] for s in r]
    ok = bool(steps) and all(s.get("ok") for s in steps) and result["check"]["ok"]
    table: dict[str, Any] = {}
    for model in result["models"]:
        for c in result["concurrency"]:
            row: dict[str, Any] = {}
            for p in PROTOCOLS:
                mine = [
                    s
                    for s in steps
                    if (s["model"], s["protocol"], s["concurrency"]) == (model, p, c)
                    and s.get("ok")
                ]
                if mine:
                    row[p] = {
                        "throughput_rps": round(
                            statistics.median(s["throughput_rps"] for s in mine), 1
                        ),
                        "p50_ms": round(statistics.median(s["p50_ms"] for s in mine), 3),
                        "server_cpu_us_per_request": round(
                            statistics.median(s["server_cpu_us_per_request"] for s in mine), 1
                        ),
                    }
            for p in ("v2-grpc", "v2-json"):
                ratios = []
                for r in result["rounds"]:
                    by = {
                        s["protocol"]: s
                        for s in r
                        if (s["model"], s["concurrency"]) == (model, c) and s.get("ok")
                    }
                    if p in by and "v2-binary" in by:
                        ratios.append(by[p]["throughput_rps"] / by["v2-binary"]["throughput_rps"])
                if ratios:
                    row[f"{p}_over_binary"] = round(statistics.median(ratios), 3)
            table[f"{model} c={c}"] = row
    return {"all_runs_ok": ok, "table": table}


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "## Protocols: V2 gRPC against V2 HTTP binary and JSON",
        "",
        f"`python benchmarks/protocols.py` at {result['commit']}"
        f"{' (uncommitted changes)' if result['dirty'] else ''}, {result['date']}, "
        f"{result['rounds_n']} rounds, steps of {result['duration_s']:g} s after "
        f"{result['warmup_s']:g} s warm-up; server on core {result['server_cpu']}, "
        f"`mserve bench` on core {result['client_cpu']}. Medians over the rounds; ratios are "
        "per round, against HTTP binary in the same round.",
        "",
        "| model, load | gRPC req/s | binary req/s | JSON req/s | gRPC / binary | JSON / binary "
        "| p50 ms gRPC / binary / JSON | server CPU us/req gRPC / binary / JSON |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for key, row in s["table"].items():

        def f(p: str, k: str, row: dict[str, Any] = row) -> str:
            v = row.get(p, {}).get(k)
            return "-" if v is None else (f"{v:,.0f}" if k == "throughput_rps" else f"{v:g}")

        lines.append(
            f"| {key} | {f('v2-grpc', 'throughput_rps')} | {f('v2-binary', 'throughput_rps')} "
            f"| {f('v2-json', 'throughput_rps')} | {row.get('v2-grpc_over_binary', '-')} "
            f"| {row.get('v2-json_over_binary', '-')} "
            f"| {f('v2-grpc', 'p50_ms')} / {f('v2-binary', 'p50_ms')} / {f('v2-json', 'p50_ms')} "
            f"| {f('v2-grpc', 'server_cpu_us_per_request')} / "
            f"{f('v2-binary', 'server_cpu_us_per_request')} / "
            f"{f('v2-json', 'server_cpu_us_per_request')} |"
        )
    lines += ["", f"Answers checked: {result['check']}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=HERE / "out" / "protocols.json")
    ap.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--quiet-wait", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="one short round; nothing to record")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.duration, args.results = 1, 0.3, 1.0, None
    started = time.monotonic()
    commit, dirty = git_state(ROOT)
    result: dict[str, Any] = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds_n": args.rounds,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "models": ["digits", "wide"],
        "concurrency": args.concurrency,
        "versions": package_versions(("onnxruntime", "grpcio", "numpy", "tritonclient")),
        "rounds": [],
    }
    with tempfile.TemporaryDirectory(prefix="mserve-protocols-") as tmp:
        work = Path(tmp)
        digits, row, label = digits_model()
        write_repository(work / "repo", digits, wide_model())
        http, grpc = free_port(), free_port()
        server = serve(work / "repo", http, grpc, args.server_cpu)
        try:
            result["check"] = check_answers(http, grpc, row, label)
            print(f"answers: {result['check']}", flush=True)
            urls = {"v2-grpc": f"grpc://127.0.0.1:{grpc}"}
            urls["v2-binary"] = urls["v2-json"] = f"http://127.0.0.1:{http}"
            for r in range(args.rounds):
                order = PROTOCOLS[r % 3 :] + PROTOCOLS[: r % 3]
                steps = []
                for model in result["models"]:
                    for c in args.concurrency:
                        for p in order:
                            step = bench_step(urls[p], model, p, c, server.pid, work, args)
                            steps.append(step)
                            print(
                                f"round {r + 1} {model:<6} c={c:<2} {p:<9} "
                                f"{step.get('throughput_rps', 0):9.1f} req/s  "
                                f"p50 {step.get('p50_ms', 0):7.3f} ms  "
                                f"{'ok' if step.get('ok') else step.get('problem')}",
                                flush=True,
                            )
                result["rounds"].append(steps)
        finally:
            server.terminate()
            server.wait(timeout=30)
    result["summary"] = summarise(result)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return write_result(result, args.out, args.results, SECTION, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
