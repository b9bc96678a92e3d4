"""The bench's request files, one per way of shaping requests, and the ``mserve bench`` runs
over them, with the batches the server formed read from its statistics."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import docstring_texts as texts
import embedding_client as served
import scenario
import sentence_embedder


def write_samples(folder: Path, ids: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """One request file per mode (bench's .json input data) and the padding each costs."""
    folder.mkdir(parents=True, exist_ok=True)
    lengths = [len(x) for x in ids]
    longest = sentence_embedder.MAX_TOKENS
    costs = []
    for mode in texts.MODES:
        shaped = [texts.shaped(x, mode.length(len(x), longest)) for x in ids]
        (folder / f"{mode.name}.json").write_text(json.dumps(shaped), encoding="utf-8")
        computed = sum(mode.length(n, longest) for n in lengths)
        costs.append(
            {
                "mode": mode.name,
                "title": mode.title,
                "shapes": len({mode.length(n, longest) for n in lengths}),
                "real_tokens": sum(lengths),
                "computed_tokens": computed,
                "cost": texts.padding_cost(lengths, mode, longest),
            }
        )
    return costs


def bench(
    url: str,
    models: Sequence[str],
    modes: Sequence[str],
    rates: Sequence[float],
    seconds: tuple[float, float],
    gen_cpu: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``mserve bench`` per model and mode over the rates; one row per step, and the batch sizes
    the server formed per model and mode (its statistics read around each run). ``seconds``:
    (measured, warm-up) per step."""
    titles = {m.name: m.title for m in texts.MODES}
    steps, batches = [], []
    Path("bench").mkdir(exist_ok=True)
    duration, warmup = seconds
    for model in models:
        for mode in modes:
            result = Path("bench") / f"{model}-{mode}.json"
            before = served.batch_executions(url, model)
            scenario.mserve_cli(
                [
                    "bench", url, "-m", model, "--protocol", "v2-binary",
                    "--rate", ",".join(f"{r:g}" for r in rates), "--arrival", "poisson",
                    "--input-data", f"samples/{mode}.json", "--duration", f"{duration:g}",
                    "--warmup", f"{warmup:g}", "--seed", "0", "--no-save", "-q",
                    "-o", str(result),
                ],
                cpu=gen_cpu,
                quiet=True,
            )  # fmt: skip
            after = served.batch_executions(url, model)
            executions = served.executions_between(before, after)
            batches.append({"model": model, "mode": mode, "mode_title": titles[mode],
                            "executions": {str(k): v for k, v in executions.items()}})  # fmt: skip
            for s in scenario.read_json(result)["steps"]:
                server = s.get("server") or {}
                compute = [server.get(f"compute_{p}_ms") for p in ("input", "infer", "output")]
                steps.append(
                    {
                        "model": model,
                        "mode": mode,
                        "mode_title": titles[mode],
                        "rate": s["load"]["rate"],
                        "count": s["count"],
                        "throughput_rps": s["throughput_rps"],
                        "p50_ms": s["latency_ms"].get("p50"),
                        "p99_ms": s["latency_ms"].get("p99"),
                        "errors": s["error_count"],
                        "error_kinds": s["errors"],
                        "avg_batch_size": server.get("avg_batch_size"),
                        "queue_ms": server.get("queue_ms"),
                        "compute_ms": round(sum(compute), 2) if None not in compute else None,
                        "verdict": s["verdict"],
                        "reasons": s.get("reasons", []),
                    }
                )
            scenario.say(
                f"{model} {mode}: "
                + ", ".join(
                    f"{s['rate']:g}/s -> {s['throughput_rps']:.1f} req/s p99 {s['p99_ms']} ms "
                    f"batch {s['avg_batch_size']}"
                    for s in steps[-len(rates) :]
                )
            )
    return steps, batches
