"""Tabular models end to end: train an XGBoost model, a LightGBM model and a scikit-learn
pipeline on data sets scikit-learn ships; convert each with `mserve convert` (parity checked on
real rows: the test split, then the training rows); serve all three with one `mserve serve`;
send each test split through a TF Serving REST client (rows and columns) and through
tritonclient (http and grpc), checking that every client gets the original model's labels and
probabilities; then measure mserve against the hand-written Flask + gunicorn wrapper (and
FastAPI) with `mserve compare`: a concurrency sweep and an SLO search per model.

Writes into --out: the trained models, the model repository (models/), each comparison
(compare/NAME/), figures.md and summary.json (every figure and check). Exits 1 with the
reasons when any check fails. --record also writes the figures into this folder's README.md
and keeps each comparison's compare.md in compare/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import scenario  # noqa: E402
from clients import BATCH, CLIENTS, Endpoints  # noqa: E402
from figures import render  # noqa: E402
from train import RECIPES, Trained, train, write_data  # noqa: E402

from mserve.compare.report import rows as compare_rows  # noqa: E402
from mserve.server.process import ServerProcess, free_port  # noqa: E402

PROBABILITY_TOLERANCE = 1e-5  # largest difference of a probability from the original's
REQUIRED_SYSTEMS = ("mserve", "flask")  # a comparison without these two fails the scenario


@dataclass(frozen=True)
class Settings:
    """How long and how hard the measurements run."""

    concurrency: str  # the compare sweep
    duration: float  # measured seconds per step
    warmup: float  # warm-up seconds per step
    slo: str | None  # compare's SLO search, or None
    systems: str  # compare's --systems
    protocol_concurrency: int | None  # mserve bench through each protocol; None: skipped
    batch_rows: int = BATCH
    server_cpus: str | None = None
    bench_cpus: str | None = None


FULL = Settings("1,4,16", 5, 1, "p99=10ms", "mserve,flask,fastapi", 4)
QUICK = Settings("1,4", 1, 0.5, None, "mserve,flask", None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python examples/tabular/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="where everything is written")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the reduced run for CI (under a minute): 1 s steps, concurrency 1,4, mserve and "
        "flask only, no SLO search, no per-protocol bench; every check still runs "
        "(default: concurrency 1,4,16, SLO p99=10ms, mserve, flask and fastapi)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the figures into examples/tabular/README.md and keep each compare.md in "
        "examples/tabular/compare/",
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds per step (default 5; --quick 1)"
    )
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per step (default 1; --quick 0.5)"
    )
    return parser.parse_args(argv)


# -- convert --------------------------------------------------------------------------------


def convert(trained: Trained, repo: Path, data: Path, quick: bool) -> dict[str, Any]:
    """``mserve convert`` as a user types it; the fp32 model's parity and accuracy."""
    test, every = write_data(trained, data)
    args = [
        *("convert", trained.source, "--out", repo / trained.name),
        *("--eval", test, "--inputs", every, "--tolerance", "top1=1"),
        *(["--trust"] if trained.trust else []),
        *(["--no-measure"] if quick else []),
        "--json",
    ]
    started = time.monotonic()
    report = json.loads(scenario.mserve_cli(args, quiet=True))
    fp32 = next(v for v in report["variants"] if v["model"] == trained.name)
    parity = fp32["parity"]
    outputs = {o["name"]: o for o in parity["outputs"]}
    figures = {
        "ok": bool(parity["ok"]),
        "rows": parity["rows"],
        "data": report["parity_data"],
        "failures": parity["failures"],
        "label_agreement": outputs["label"].get("agreement"),
        "max_abs": outputs["probabilities"].get("max_abs"),
        "top1": outputs["probabilities"].get("top1"),
    }
    scenario.say(
        f"{trained.name}: parity {'passed' if figures['ok'] else 'FAILED'} on "
        f"{figures['rows']} rows (labels {figures['label_agreement']:.3f} equal, probabilities "
        f"max abs {figures['max_abs']:.1e}); ONNX accuracy {fp32['accuracy']}"
    )
    return {
        "command": "mserve " + " ".join(str(a) for a in args),
        "parity": figures,
        "accuracy": fp32["accuracy"],
        "seconds": round(time.monotonic() - started, 2),
    }


# -- serve and call -------------------------------------------------------------------------


def call_clients(trained: list[Trained], at: Endpoints) -> dict[str, dict[str, Any]]:
    """Every client on every model's test split; per model and client, how the answers agree
    with the original model's predictions."""
    out: dict[str, dict[str, Any]] = {}
    for t in trained:
        out[t.name] = {}
        for key, (title, call) in CLIENTS.items():
            got = call(at, t.name, t.x_test)
            mismatches = int(np.sum(got.labels != t.labels))
            max_abs = float(np.max(np.abs(got.probabilities - t.probabilities)))
            accuracy = float(np.mean(got.labels == t.y_test))
            out[t.name][key] = {
                "title": title,
                "requests": got.requests,
                "rows": len(got.labels),
                "accuracy": accuracy,
                "label_mismatches": mismatches,
                "max_abs": max_abs,
                "ok": mismatches == 0
                and len(got.labels) == len(t.labels)
                and max_abs <= PROBABILITY_TOLERANCE,
            }
        scenario.say(
            f"{t.name}: accuracy {t.accuracy:.4f}; through the server: "
            + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in out[t.name].items())
        )
    return out


def bench_protocols(
    trained: list[Trained], at: Endpoints, settings: Settings, results: Path
) -> dict[str, dict[str, Any]]:
    """``mserve bench`` through each protocol of the one server, per model."""
    if settings.protocol_concurrency is None:
        return {}
    urls = {
        "tfserving": at.http_url,
        "v2-json": at.http_url,
        "v2-binary": at.http_url,
        "v2-grpc": f"grpc://{at.host}:{at.grpc_port}",
    }
    out: dict[str, dict[str, Any]] = {}
    for t in trained:
        out[t.name] = {}
        for protocol, url in urls.items():
            path = results / f"{t.name}.{protocol}.json"
            args = [
                *("bench", url, "-m", t.name, "--protocol", protocol),
                *("--concurrency", settings.protocol_concurrency),
                *("--duration", f"{settings.duration:g}", "--warmup", f"{settings.warmup:g}"),
                *("-q", "--no-save", "-o", path),
            ]
            scenario.mserve_cli(args, cpu=settings.bench_cpus, quiet=True)
            step = scenario.read_json(path)["steps"][0]
            out[t.name][protocol] = {
                "rps": step["throughput_rps"],
                "p99_ms": step["latency_ms"]["p99"],
                "errors": step["error_count"],
            }
    return out


# -- compare --------------------------------------------------------------------------------


def compare(name: str, repo: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """``mserve compare`` of one model; per system its status and figures."""
    folder = out / name
    args = [
        *("compare", repo / name, "--systems", settings.systems, "--out", folder),
        *("--concurrency", settings.concurrency),
        *("--duration", f"{settings.duration:g}", "--warmup", f"{settings.warmup:g}"),
        *(["--slo", settings.slo] if settings.slo else []),
    ]
    scenario.say(f"{name}: comparing {settings.systems} (about {_compare_minutes(settings)} min)")
    scenario.mserve_cli(args)
    doc = scenario.read_json(folder / "compare.json")
    systems = {}
    for r in compare_rows(doc):
        systems[r.key] = {
            "title": r.title,
            "status": r.status,
            "reason": r.reason,
            "steps": {
                str(c): {
                    "rps": f.throughput_rps,
                    "p50_ms": f.p50_ms,
                    "p99_ms": f.p99_ms,
                    "errors": f.errors,
                    "valid": f.valid,
                }
                for c, f in r.steps.items()
            },
            "max_rps": r.max_rps,
            "slo_rps": r.slo_rps,
            "slo_load": r.slo_load,
            "errors": r.errors,
            "startup_s": r.startup_s,
            "rss_peak_mib": r.rss_peak_mib,
        }
    for skipped in doc["systems"]:
        if skipped.get("status") == "skipped":
            systems[skipped["key"]] = {
                "title": skipped.get("title"),
                "status": "skipped",
                "reason": skipped.get("reason"),
            }
    return {"dir": str(folder), "systems": systems}


def _compare_minutes(settings: Settings) -> str:
    """A rough length of one comparison, for the progress line."""
    steps = len(settings.concurrency.split(",")) + (6 if settings.slo else 0)
    seconds = len(settings.systems.split(",")) * (5 + steps * (settings.duration + 2 + 1.5))
    return f"{seconds / 60:.1f}"


# -- checks and records ---------------------------------------------------------------------


def problems(summary: dict[str, Any]) -> list[str]:
    """Every check that failed, in words."""
    found = []
    for m in summary["models"]:
        name = m["name"]
        parity = m["convert"]["parity"]
        if not parity["ok"]:
            found.append(f"{name}: parity failed: {'; '.join(parity['failures'])}")
        if m["convert"]["accuracy"] != m["accuracy"]:
            found.append(
                f"{name}: the ONNX model's accuracy {m['convert']['accuracy']} differs from the "
                f"original's {m['accuracy']}"
            )
        for key, c in m["clients"].items():
            if not c["ok"] or c["accuracy"] != m["accuracy"]:
                found.append(
                    f"{name}: {key} disagrees with the original model: {c['label_mismatches']} "
                    f"labels differ, probabilities up to {c['max_abs']:.2g} apart (tolerance "
                    f"{PROBABILITY_TOLERANCE:g}), accuracy {c['accuracy']:.4f} against "
                    f"{m['accuracy']:.4f}"
                )
        for key, s in m["compare"]["systems"].items():
            if s["status"] != "ok":
                if key in REQUIRED_SYSTEMS or s["status"] == "failed":
                    found.append(f"{name}: compare: {key} {s['status']}: {s['reason']}")
                continue
            if s["errors"]:
                found.append(f"{name}: compare: {key} had {s['errors']} failed requests")
            if not s["steps"] or min(step["rps"] for step in s["steps"].values()) <= 0:
                found.append(f"{name}: compare: {key} has a step without throughput")
        for key in REQUIRED_SYSTEMS:
            if key not in m["compare"]["systems"]:
                found.append(f"{name}: compare did not measure {key}")
        for protocol, figures in (m.get("protocols") or {}).items():
            if figures["errors"] or figures["rps"] <= 0:
                found.append(f"{name}: mserve bench --protocol {protocol}: {figures}")
    return found


def record(summary: dict[str, Any], figures: str, out: Path) -> None:
    """The figures into this folder's README, each comparison's compare.md into compare/
    (with the run's own paths replaced by ``OUT`` and ``~``)."""
    scenario.update_block(HERE / "README.md", "figures", figures)
    kept = HERE / "compare"
    kept.mkdir(exist_ok=True)
    for m in summary["models"]:
        text = (Path(m["compare"]["dir"]) / "compare.md").read_text(encoding="utf-8")
        text = text.replace(str(out), "OUT").replace(str(Path.home()), "~")
        (kept / f"{m['name']}.md").write_text(text, encoding="utf-8")
    scenario.say(f"recorded the figures in {HERE / 'README.md'} and {kept}")


# -- the whole run --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every step; the summary (also written as summary.json as soon as it is complete)."""
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    server_cpus, bench_cpus = scenario.bench_cpus()
    settings = replace(
        QUICK if args.quick else FULL, server_cpus=server_cpus, bench_cpus=bench_cpus
    )
    if args.duration is not None:
        settings = replace(settings, duration=args.duration)
    if args.warmup is not None:
        settings = replace(settings, warmup=args.warmup)
    seconds: dict[str, float] = {}
    started = clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    scenario.say(f"training {', '.join(r.name for r in RECIPES)}")
    trained = [train(recipe, out / "trained") for recipe in RECIPES]
    for t in trained:
        scenario.say(f"{t.name}: {t.description}; test accuracy {t.accuracy:.4f}")
    lap("train")

    repo = out / "models"
    shutil.rmtree(repo, ignore_errors=True)
    converted = {t.name: convert(t, repo, out / "data", args.quick) for t in trained}
    lap("convert")

    grpc_port = free_port()
    scenario.say(f"$ mserve serve {repo} --grpc-port {grpc_port}  (pinned to CPU {server_cpus})")
    with ServerProcess(repo, args=["--grpc-port", str(grpc_port)], cpu=server_cpus) as server:
        at = Endpoints(server.host, server.port, grpc_port)
        answers = call_clients(trained, at)
        lap("clients")
        protocols = bench_protocols(trained, at, settings, out / "bench")
        lap("protocols")

    compared = {t.name: compare(t.name, repo, out / "compare", settings) for t in trained}
    lap("compare")
    seconds["total"] = round(time.monotonic() - started, 2)

    summary: dict[str, Any] = {
        "schema": "mserve.example.tabular/1",
        "quick": bool(args.quick),
        "machine": scenario.machine(),
        "settings": asdict(settings),
        "seconds": seconds,
        "models": [
            {
                "name": t.name,
                "framework": t.framework,
                "dataset": t.dataset,
                "description": t.description,
                "test_rows": len(t.y_test),
                "classes": t.classes,
                "accuracy": t.accuracy,
                "convert": converted[t.name],
                "clients": answers[t.name],
                "protocols": protocols.get(t.name),
                "compare": compared[t.name],
            }
            for t in trained
        ],
    }
    summary["problems"] = problems(summary)
    summary["ok"] = not summary["problems"]
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; 0 when every check passed, 1 otherwise."""
    args = parse_args(argv)
    out: Path = args.out.resolve()
    try:
        summary = run(args)
    except Exception as exc:  # any failure: one clear line, and a summary that says so
        out.mkdir(parents=True, exist_ok=True)
        failed = {"schema": "mserve.example.tabular/1", "ok": False, "problems": [str(exc)]}
        (out / "summary.json").write_text(json.dumps(failed, indent=2), encoding="utf-8")
        print(f"tabular scenario failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    figures = render(summary)
    (out / "figures.md").write_text(figures + "\n", encoding="utf-8")
    print(figures, flush=True)
    if not summary["ok"]:
        print("tabular scenario failed:", file=sys.stderr)
        for line in summary["problems"]:
            print(f"  - {line}", file=sys.stderr)
        return 1
    if args.record:
        record(summary, figures, out)
    scenario.say(f"done in {summary['seconds']['total']:.0f} s; summary in {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
