"""The request path against an earlier commit: did a change make an ordinary request slower?

The same repository (the scikit-learn digits MLP as ONNX, dynamic batching, one intra-op thread)
is served by ``mserve serve`` from the working tree and from ``--baseline REV`` (extracted with
``git archive`` into a temporary folder and put first on PYTHONPATH), each pinned to core 1, and
loaded by ``mserve bench`` (closed loop, V2 JSON, one digit image) on core 0 at each
``--concurrency``. Rounds alternate which arm goes first; the ratio is the median of the
per-round ratios. Target: working tree >= 0.95x the baseline's req/s at every concurrency.

    python benchmarks/request_path.py --baseline d496a7b --out benchmarks/out/request_path.json \\
        --results benchmarks/RESULTS.md

Only the servers this script started are stopped.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hoststats import git_state, machine_facts, write_result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET = 0.95


def baseline_src(rev: str, into: Path) -> Path:
    """``src/`` as of ``rev``, extracted into ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def write_repository(repo: Path) -> None:
    import yaml

    from mserve.convert.sklearn import sklearn_to_onnx
    from mserve.quickstart import train_digits

    model, *_ = train_digits()
    (repo / "digits" / "1").mkdir(parents=True)
    onnx = sklearn_to_onnx(model, n_features=64).SerializeToString()
    (repo / "digits" / "1" / "model.onnx").write_bytes(onnx)
    config = {
        "name": "digits",
        "max_batch_size": 64,
        "dynamic_batching": {},
        "runtime": {"intra_op_threads": 1},
    }
    (repo / "digits" / "config.yaml").write_text(yaml.safe_dump(config))


@contextmanager
def server(repo: Path, src: Path, cpu: int) -> Iterator[int]:
    """``mserve serve`` of ``src`` on a free port; yields the port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "mserve", "serve", str(repo)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"server of {src} exited: {proc.stderr.read()}") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


def bench(port: int, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mserve", "bench", f"http://127.0.0.1:{port}", "-m", "digits"]
    cmd += ["--protocol", "v2-json", "--concurrency", str(concurrency), "--no-save", "--json"]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    out = subprocess.run(
        ["taskset", "-c", str(args.client_cpu), *cmd], capture_output=True, text=True, check=True
    )
    step = json.loads(out.stdout)["steps"][0]
    if step["error_count"]:
        raise RuntimeError(f"bench errors: {step['errors']}")
    return {"rps": step["throughput_rps"], "p50_ms": step["latency_ms"]["p50"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=3, help="rounds over both arms")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per step")
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "out" / "request_path.json")
    p.add_argument("--results", type=Path, help="RESULTS.md whose request_path block to replace")
    args = p.parse_args(argv)
    started = time.monotonic()
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        arm: {c: [] for c in args.concurrency} for arm in ("baseline", "now")
    }
    with tempfile.TemporaryDirectory(prefix="mserve-request-path-") as tmp:
        srcs = {"baseline": baseline_src(args.baseline, Path(tmp) / "base"), "now": ROOT / "src"}
        repo = Path(tmp) / "repo"
        write_repository(repo)
        for r in range(args.rounds):
            order = ("baseline", "now") if r % 2 == 0 else ("now", "baseline")
            for arm in order:
                with server(repo, srcs[arm], args.server_cpu) as port:
                    for c in args.concurrency:
                        runs[arm][c].append(bench(port, c, args))
                        print(f"round {r + 1} {arm} c={c}: {runs[arm][c][-1]}", flush=True)
    rows = []
    for c in args.concurrency:
        ratios = [
            n["rps"] / b["rps"] for n, b in zip(runs["now"][c], runs["baseline"][c], strict=True)
        ]
        ratio = statistics.median(ratios)
        base = statistics.median(x["rps"] for x in runs["baseline"][c])
        now = statistics.median(x["rps"] for x in runs["now"][c])
        spread = ", ".join(f"{x:.2f}" for x in ratios)
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        rows.append(f"| {c} | {base:,.0f} | {now:,.0f} | {ratio:.2f}x ({spread}) | {verdict} |")
    commit, dirty = git_state(ROOT)
    facts = machine_facts(ROOT, ("mserve", "onnxruntime", "numpy", "scikit-learn"))
    block = "\n".join(
        [
            f"### Request path: working tree ({commit}{', modified' if dirty else ''}) against "
            f"{args.baseline}",
            "",
            f"{facts['date']}, {facts['cpu_model']}, {args.rounds} alternating rounds of "
            f"{args.duration:g} s steps; `python benchmarks/request_path.py --baseline "
            f"{args.baseline}`. Target: now >= {TARGET}x the baseline's req/s.",
            "",
            "| concurrency | baseline req/s | now req/s | now / baseline (per round) | result |",
            "| ---: | ---: | ---: | --- | --- |",
            *rows,
        ]
    )
    result = {
        "benchmark": "request_path",
        "machine": facts,
        "baseline": args.baseline,
        "runs": runs,
        "summary": {"all_runs_ok": True},  # a failed run raised before this point
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    # a missed target is reported (FAIL), not an error
    return write_result(result, args.out, args.results, "request_path", block)


if __name__ == "__main__":
    sys.exit(main())
