"""Serving systems compared: ``mserve compare`` on the digits model and on the heavy model.

Two models, each in a repository of its own:

- ``digits``: the small MLP trained on the spot on scikit-learn's digits (64 FP32 features in,
  a label and 10 probabilities out), as in ``protocols.py``; ``max_batch_size`` 64;
- ``heavy``: the MLP 64-2048-2048-2048-10 of ``batching.py`` (8.5 M weights, seeded);
  ``max_batch_size`` 32.

Each model gets one ``mserve compare`` run over every system (``--systems``, all by default):
the same closed-loop sweep and SLO search, servers pinned to one core and ``mserve bench`` to
the other. The heavy model runs twice per system (``--both``): without, then with, each system's
own dynamic batching. Systems whose environments are missing are skipped by ``mserve compare``
(``scripts/compare-envs SYSTEM`` makes them).

Each system's figures are set against mserve's from the same run, in the same batching mode (the
machine is shared and noisy; mserve's run is minutes, not hours, away from the others). The goal
of the issue: mserve ahead of every other system on throughput at the same p99, read off the SLO
search. A system at or above mserve prints BEHIND; this is a figure to record, not a test, so
the script still exits 0. It exits 1 when a comparison itself fails (mserve not measured).

Run from the repository root (about 45 minutes with all ten systems)::

    python benchmarks/compare_systems.py --results benchmarks/RESULTS.md

``--quick`` tries it out with mserve and the two hand-written baselines, short steps and no SLO
search (about a minute; nothing to record). The reports of each comparison (``compare.md``,
``compare.html``, logs, raw results) stay in ``--out`` (``benchmarks/out/compare``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from batching import MAX_BATCH, build_onnx, weights
from hoststats import machine_facts, update_results, wait_quiet
from mserve.compare.report import BASELINE, Row, number, rate, rows, skipped, times
from protocols import digits_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTION = "compare_systems"
#: name, max_batch_size, the SLO of its search, whether batching is compared too
MODELS = (("digits", 64, "p99=10ms", False), ("heavy", MAX_BATCH, "p99=50ms", True))


def write_repository(root: Path) -> None:
    """The two models, each with a config.yaml giving its name and batch limit."""
    digits, _, _ = digits_model()
    for name, onx in (("digits", digits), ("heavy", build_onnx(weights()))):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(onx)
        batch = dict((m[0], m[1]) for m in MODELS)[name]
        config = {"name": name, "max_batch_size": batch}
        (root / name / "config.yaml").write_text(yaml.safe_dump(config))


def compare(model: Path, out: Path, slo: str | None, both: bool, args: argparse.Namespace) -> int:
    """One ``mserve compare`` run, its progress on stderr; its exit status."""
    argv = [sys.executable, "-m", "mserve", "compare", str(model), "--out", str(out)]
    argv += ["--systems", args.systems, "--concurrency", args.concurrency]
    argv += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    argv += ["--slo", slo] if slo else []
    argv += ["--both"] if both else []
    print("$ " + " ".join(argv), flush=True)
    return subprocess.run(argv, stdout=subprocess.DEVNULL, check=False).returncode


def verdicts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each measured system against mserve in its batching mode, at the SLO (or, without an SLO
    search, at the sweep's best step)."""
    out = []
    for r in rows(doc):
        if r.system == BASELINE or r.status != "ok":
            continue
        at_slo = r.slo_vs_baseline is not None or r.slo_rps is not None
        ratio = r.slo_vs_baseline if at_slo else r.max_vs_baseline
        out.append(
            {
                "key": r.key,
                "figure": "req/s at the SLO" if at_slo else "max req/s",
                "vs_mserve": ratio,
                "mserve_ahead": ratio is not None and ratio < 1.0,
            }
        )
    return out


def _at(row: Row, c: int | None) -> str:
    step = row.steps.get(c) if c is not None else None
    return f"{number(step.p99_ms, 2)}" if step and step.p99_ms is not None else "-"


def markdown_table(doc: dict[str, Any]) -> list[str]:
    """A narrower table than compare.md's: the figures the goal is read from."""
    slo = (doc.get("settings") or {}).get("slo")
    head = ["system", "protocol", "start-up s", "RSS peak MiB", "c=1 req/s", "c=1 p99 ms"]
    head += ["max req/s (c)", "p99 ms there", "vs mserve"]
    head += [f"req/s at {slo} (c)", "vs mserve"] if slo else []
    head += ["errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows(doc):
        if r.status != "ok":
            lines.append(f"| {r.key} | failed: {r.reason} |" + " |" * (len(head) - 2))
            continue
        best = max(r.steps.values(), key=lambda s: s.throughput_rps, default=None)
        c1 = r.steps.get(1)
        cells = [
            r.key,
            r.protocol,
            number(r.startup_s, 2),
            number(r.rss_peak_mib, 0),
            rate(c1.throughput_rps) if c1 else "-",
            number(c1.p99_ms, 2) if c1 else "-",
            f"{rate(r.max_rps)} ({best.concurrency})" if best else "-",
            _at(r, best.concurrency if best else None),
            times(r.max_vs_baseline),
        ]
        if slo:
            at = f" ({r.slo_load})" if r.slo_load is not None else ""
            cells += [f"{rate(r.slo_rps)}{at}", times(r.slo_vs_baseline)]
        cells.append(str(r.errors))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The RESULTS.md section: how it was run, a table per model, the verdicts."""
    facts = result["machine"]
    out = [
        "## Serving systems compared: `mserve compare`",
        "",
        f"`python benchmarks/compare_systems.py` at {facts['git_commit']}"
        f"{' (src modified)' if facts['src_modified'] else ''}, {facts['date']}, "
        f"{facts['cpu_model']}, {facts['cpus']} CPUs. Every system serves the same ONNX model "
        "with "
        f"ONNX Runtime (one intra-op thread) pinned to one core; `mserve bench` on the other; "
        f"closed loop at concurrency {result['concurrency']}, {result['duration_s']:g} s per "
        f"step after {result['warmup_s']:g} s of warm-up, then bench's SLO search. "
        "`vs mserve`: the ratio to mserve's figure in the same run and batching mode. Full "
        "reports: `compare.md` / `compare.html` in each model's output folder.",
    ]
    for model in result["models"]:
        doc = model["document"]
        slo = f" (SLO {model['slo']})" if model["slo"] else ""
        out += ["", f"### {model['name']}{slo}", ""]
        out += markdown_table(doc)
        for s in skipped(doc):
            out.append(f"\n`{s['key']}` skipped: {s['reason']}")
        ahead = [v for v in model["verdicts"] if v["mserve_ahead"]]
        behind = [v for v in model["verdicts"] if not v["mserve_ahead"]]
        out += [
            "",
            f"Goal (mserve ahead on throughput at the same p99): ahead of {len(ahead)} of "
            f"{len(model['verdicts'])} runs"
            + (
                "; BEHIND: " + ", ".join(f"{v['key']} {times(v['vs_mserve'])}" for v in behind)
                if behind
                else ""
            )
            + ".",
        ]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=HERE / "out" / "compare", help="report folders")
    ap.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    ap.add_argument("--systems", default="all", help="mserve compare's --systems")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--duration", type=float, default=6.0, help="measured seconds per step")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--models", default="digits,heavy", help="which of digits,heavy to run")
    ap.add_argument("--quick", action="store_true", help="a short trial; nothing to record")
    args = ap.parse_args(argv)
    if args.quick:
        args.systems, args.concurrency, args.results = "mserve,fastapi,flask", "1,16", None
        args.duration, args.warmup = 1.0, 0.5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    wanted = args.models.split(",")
    result: dict[str, Any] = {
        "machine": machine_facts(ROOT, ("onnxruntime", "numpy")),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "systems": args.systems,
        "models": [],
    }
    status = 0
    with tempfile.TemporaryDirectory(prefix="mserve-compare-bench-") as tmp:
        repo = Path(tmp) / "repo"
        write_repository(repo)
        for name, _, slo_given, both in MODELS:
            if name not in wanted:
                continue
            slo = None if args.quick else slo_given
            print(f"waited {wait_quiet(30.0)} s for a quiet machine", flush=True)
            out = args.out / name
            rc = compare(repo / name, out, slo, both, args)
            doc = json.loads((out / "compare.json").read_text(encoding="utf-8"))
            mserve_ok = any(r.system == BASELINE and r.status == "ok" for r in rows(doc))
            if rc != 0 or not mserve_ok:
                print(f"{name}: mserve compare exited {rc}; mserve measured: {mserve_ok}")
                status = 1
            model = {"name": name, "slo": slo, "document": doc, "verdicts": verdicts(doc)}
            result["models"].append(model)
            for v in model["verdicts"]:
                word = "ahead" if v["mserve_ahead"] else "BEHIND"
                print(f"{name}: {v['key']}: {v['figure']} {times(v['vs_mserve'])} of mserve: "
                      f"mserve {word}")  # fmt: skip
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    block = markdown(result)
    print("\n" + block + "\n")
    summary = args.out / "compare_systems.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.results:
        update_results(args.results, SECTION, block)
        print(f"updated {args.results}")
    print(f"wrote {summary} in {result['wall_seconds']} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
