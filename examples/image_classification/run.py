"""Image classification end to end: a small CNN trained in PyTorch on scikit-learn's digits,
converted by ``mserve convert`` into fp32, static int8 and channel-pruned ONNX models, served
with dynamic batching by ``mserve serve``, its accuracy measured through the server with
tritonclient, and each variant load-tested by ``mserve bench`` (a concurrency sweep and an SLO
search), with Markdown and HTML reports by ``mserve report``.

    python examples/image_classification/run.py --out /tmp/digits-cnn [--quick] [--record]

Everything it makes goes under --out; it ends with ``summary.json`` there. Exit status: 0 every
check passed, 1 a check failed (accuracy, parity, a bench result), 2 bad options, 3 a step could
not run (a command failed, the server did not start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import scenario  # noqa: E402

NAME = "digits-cnn"
#: The variants, by the name ``mserve convert`` gives them, and the model each is served as.
VARIANTS = {
    "fp32": NAME,
    "int8-static": f"{NAME}-int8-static",
    "pruned-channels-50": f"{NAME}-pruned-channels-50",
}
TRAINED_ACCURACY = 0.95  # the trained CNN on the test images, in PyTorch
#: Least accuracy through the server per variant; pruning removes half the channels.
SERVED_ACCURACY = {"fp32": 0.95, "int8-static": 0.95, "pruned-channels-50": 0.93}
BATCHING = {  # config.yaml's dynamic_batching section for every variant (see docs/serving.md)
    "max_queue_delay_microseconds": 500,
    "preferred_batch_sizes": [16, 32],
    "max_queue_size": 256,
}
MAX_BATCH = 32
FAILED_CHECK, STEP_FAILED = 1, 3


@dataclass(frozen=True, slots=True)
class Profile:
    """How long each step runs: the full scenario, or the quick one for CI."""

    epochs: int
    finetune_seconds: float
    concurrency: str
    measure: tuple[str, ...]  # mserve bench's measurement options
    slo: str
    html: bool  # HTML reports (about 4.6 MB each: plotly is inlined)
    time_variants: bool  # mserve convert's batch-1 / batch-32 timings


FULL = Profile(
    epochs=15,
    finetune_seconds=10.0,
    concurrency="1,2,4,8,16,32,64",
    # fixed-length steps: on a shared machine, windows may never agree within 10%, and the SLO
    # search stops at the first INVALID step
    measure=("--warmup", "2", "--duration", "6"),
    slo="p99=5ms",
    html=True,
    time_variants=True,
)
QUICK = Profile(
    epochs=6,
    finetune_seconds=2.0,
    concurrency="1,8",
    measure=("--warmup", "0.5", "--duration", "1"),
    slo="p99=1ms",  # tight, so that the search ends after a probe or two
    html=False,
    time_variants=False,
)


class CheckFailed(Exception):
    """An outcome below what the scenario promises."""


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; the exit status says how it went."""
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # the commands below read as a user types them, with paths relative to --out
    # mserve convert imports the model's code (--factory digits_cnn:make_cnn) from this folder
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    summary: dict[str, Any] = {
        "schema": "mserve.example.image_classification/1",
        "quick": args.quick,
        "machine": scenario.machine(),
        "profile": asdict(profile),
        "problems": [],
        "seconds": {},
    }
    started = time.perf_counter()
    try:
        run(profile, summary)
    except (RuntimeError, TimeoutError, OSError) as exc:
        summary["problems"].append(f"a step failed: {exc}")
        write_summary(out, summary, started)
        print(f"run.py: error: {exc}", file=sys.stderr)
        return STEP_FAILED
    except CheckFailed as exc:
        summary["problems"].append(str(exc))
    write_summary(out, summary, started)
    if summary["problems"]:
        for problem in summary["problems"]:
            print(f"run.py: check failed: {problem}", file=sys.stderr)
        return FAILED_CHECK
    if args.record:
        record(summary)
    scenario.say(f"done in {summary['seconds']['total']:.0f} s; summary: {out / 'summary.json'}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="working folder (created)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the reduced form for CI: fewer epochs, concurrency 1,8, 1 s steps, no HTML",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the figures into README.md and the Markdown reports into reports/",
    )
    args = parser.parse_args(argv)
    if args.quick and args.record:
        parser.error("--record keeps the figures of a full run: leave out --quick")
    return args


def run(profile: Profile, summary: dict[str, Any]) -> None:
    """Every step in order; the figures go into ``summary``."""
    seconds = summary["seconds"]
    t = time.perf_counter()
    summary["training"] = train(profile.epochs)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    conversion = convert(profile)
    seconds["convert"] = time.perf_counter() - t
    variants = summary["variants"] = {name: variant_figures(name, conversion) for name in VARIANTS}
    for model in VARIANTS.values():
        configure_batching(Path("models") / model)

    server_cpu, bench_cpu = scenario.bench_cpus()
    t = time.perf_counter()
    from mserve.server.process import ServerProcess

    server = ServerProcess(Path("models"), cpu=server_cpu)
    pin = f"taskset -c {server_cpu} " if server_cpu is not None else ""
    scenario.say(f"$ {pin}mserve serve models --host {server.host} --port {server.port}")
    with server:
        seconds["serve_start"] = time.perf_counter() - t
        t = time.perf_counter()
        x_test, y_test = read_npz("test.npz")
        for name, model in VARIANTS.items():
            accuracy = served_accuracy(server.host, server.port, model, x_test, y_test)
            variants[name]["accuracy_server"] = accuracy
            scenario.say(f"{model}: accuracy through the server {accuracy:.4f}")
        seconds["accuracy"] = time.perf_counter() - t

        t = time.perf_counter()
        Path("results").mkdir(exist_ok=True)
        for name, model in VARIANTS.items():
            variants[name].update(bench(server.url, name, model, profile, bench_cpu))
        seconds["bench"] = time.perf_counter() - t
    t = time.perf_counter()
    for name in VARIANTS:
        for kind in ("sweep", "slo"):
            variants[name][kind]["report"] = report(Path(variants[name][kind]["file"]), profile)
    seconds["report"] = time.perf_counter() - t
    check(summary)


def train(epochs: int) -> dict[str, Any]:
    """Train the CNN on 75% of the digits; write the checkpoint and the data files that
    ``mserve convert`` reads. Raises CheckFailed below the expected test accuracy."""
    import torch
    from digits_cnn import make_cnn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scenario.say(f"training the CNN on {len(x_train)} digits images for {epochs} epochs")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as fast as two for this small network, and leaves a core free
    model = make_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 32):
            batch = order[start : start + 32]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            scenario.say(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    accuracy = float(np.mean(predicted == y_test))
    scenario.say(f"test accuracy in PyTorch: {accuracy:.4f} on {len(x_test)} images")
    if accuracy < TRAINED_ACCURACY:
        raise CheckFailed(f"the trained CNN's test accuracy {accuracy:.4f} < {TRAINED_ACCURACY}")
    torch.save(model.state_dict(), "cnn.pt")
    np.savez("train.npz", input=x_train, labels=y_train)  # fine-tuning of the pruned model
    np.savez("calib.npz", input=x_train[:256])  # int8 activation ranges
    np.savez("test.npz", input=x_test, labels=y_test)  # parity inputs and offline accuracy
    return {"epochs": epochs, "train_rows": len(x_train), "test_rows": len(x_test),
            "test_accuracy": accuracy}  # fmt: skip


def convert(profile: Profile) -> dict[str, Any]:
    """``mserve convert`` into fp32, int8-static and pruned-channels-50; its report."""
    args = [
        "convert", "cnn.pt", "--factory", "digits_cnn:make_cnn",
        "--input-shape", "1,1,8,8", "--output-names", "logits", "--class-outputs", "logits",
        "--out", f"models/{NAME}", "--max-batch-size", str(MAX_BATCH),
        "--variants", "int8-static", "--calibrate", "calib.npz",
        "--prune", "channels=0.5", "--finetune", "train.npz",
        "--finetune-seconds", f"{profile.finetune_seconds:g}",
        "--eval", "test.npz",
    ]  # fmt: skip
    try:
        scenario.mserve_cli(args + ([] if profile.time_variants else ["--no-measure"]))
    except RuntimeError as exc:
        if "exited with status 6:" not in str(exc):  # 6: a parity failure, reported below
            raise
        print(exc, file=sys.stderr)
    conversion: dict[str, Any] = scenario.read_json(Path("models") / NAME / "conversion.json")
    return conversion


def variant_figures(name: str, conversion: dict[str, Any]) -> dict[str, Any]:
    """What ``mserve convert`` reported for one variant. Raises CheckFailed when it is missing,
    broke parity or was not written."""
    found = [v for v in conversion["variants"] if v["name"] == name]
    if not found:
        raise CheckFailed(f"mserve convert made no variant {name!r}")
    v = found[0]
    parity = v.get("parity") or {}
    if not parity.get("ok"):
        raise CheckFailed(f"{name}: parity failed: {parity.get('failures') or v.get('reason')}")
    if not v.get("written"):
        raise CheckFailed(f"{name}: not written: {v.get('reason')}")
    out = (parity.get("outputs") or [{}])[0]
    return {
        "model": v["model"],
        "accuracy_offline": v.get("accuracy"),
        "parity": {
            "ok": True,
            "standard": parity.get("standard"),
            "rows": parity.get("rows"),
            "max_abs": out.get("max_abs"),
            "cosine_mean": out.get("cosine_mean"),
            "top1": out.get("top1"),
        },
        "size_bytes": (Path("models") / v["model"] / "1" / "model.onnx").stat().st_size,
        "parameters": v.get("parameters"),
        "speedup": v.get("speedup"),
        "reason": v.get("reason"),
    }


def configure_batching(model_dir: Path) -> None:
    """Give the model's config.yaml our ``dynamic_batching`` section and one instance."""
    import yaml

    path = model_dir / "config.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["max_batch_size"] = MAX_BATCH
    config["dynamic_batching"] = dict(BATCHING)
    config["instance_count"] = 1
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of a data file."""
    with np.load(path) as data:
        return data["input"], data["labels"]


def served_accuracy(
    host: str, port: int, model: str, x: np.ndarray, y: np.ndarray, in_flight: int = 8
) -> float:
    """Accuracy of a served model: one request per image with tritonclient.http, from
    ``in_flight`` threads at once (so that the dynamic batcher stacks them and has to hand each
    request its own row back)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    local = threading.local()
    clients: list[Any] = []
    wanted = [httpclient.InferRequestedOutput("logits", binary_data=True)]

    def label(row: np.ndarray) -> int:
        client = getattr(local, "client", None)
        if client is None:  # one client per thread: a client is not shared between threads
            client = local.client = httpclient.InferenceServerClient(f"{host}:{port}")
            clients.append(client)
        tensor = httpclient.InferInput("input", [1, *row.shape], "FP32")
        tensor.set_data_from_numpy(row[None], binary_data=True)
        return int(client.infer(model, [tensor], outputs=wanted).as_numpy("logits").argmax())

    try:
        with ThreadPoolExecutor(in_flight) as pool:
            predicted = np.array(list(pool.map(label, x)))
    except InferenceServerException as exc:
        raise RuntimeError(f"{model}: the server refused a test image: {exc}") from exc
    finally:
        for client in clients:
            client.close()
    return float(np.mean(predicted == y))


def bench(url: str, name: str, model: str, profile: Profile, cpu: str | None) -> dict[str, Any]:
    """A closed-loop concurrency sweep and an SLO search of one model with ``mserve bench``
    (pinned to ``cpu``), with the test images as requests; their figures."""
    if not Path("bench-inputs.npz").exists():  # one image per request: (N, 1, 1, 8, 8)
        np.savez("bench-inputs.npz", input=read_npz("test.npz")[0][:, None])
    common = [
        "bench", url, "-m", model, "--protocol", "v2-binary",
        "--input-data", "bench-inputs.npz", *profile.measure, "--quiet", "--no-save",
    ]  # fmt: skip
    sweep_file, slo_file = f"results/{name}-sweep.json", f"results/{name}-slo.json"
    scenario.say(f"{model}: concurrency sweep {profile.concurrency}")
    before = batch_counts(url, model)
    scenario.mserve_cli([*common, "--concurrency", profile.concurrency, "-o", sweep_file], cpu=cpu)
    formed = {
        size: count - before.get(size, 0)
        for size, count in batch_counts(url, model).items()
        if count > before.get(size, 0)
    }
    scenario.say(f"{model}: SLO search {profile.slo} from concurrency 1")
    search = ["--concurrency", "1", "--slo", profile.slo, "-o", slo_file]
    scenario.mserve_cli([*common, *search], cpu=cpu)
    slo_doc = scenario.read_json(Path(slo_file))
    slo = {k: v for k, v in slo_doc["slo"].items() if not k.startswith("_")}
    return {
        "sweep": {"file": sweep_file, "steps": steps(scenario.read_json(Path(sweep_file)))},
        "slo": {"file": slo_file, **slo, "steps": steps(slo_doc)},
        "batch_sizes": formed,  # executions per batch size during the sweep
    }


def batch_counts(url: str, model: str) -> dict[int, int]:
    """Executions per batch size so far, from the server's statistics (Triton's extension)."""
    with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=10) as r:
        stats = json.load(r)["model_stats"]
    counts: dict[int, int] = {}
    for version in stats:
        for b in version.get("batch_stats", []):
            size = int(b["batch_size"])
            counts[size] = counts.get(size, 0) + int(b["compute_infer"]["count"])
    return counts


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures of each step of a bench result."""
    return [
        {
            "concurrency": s["load"].get("concurrency"),
            "throughput_rps": s["throughput_rps"],
            "p50_ms": s["latency_ms"].get("p50"),
            "p99_ms": s["latency_ms"].get("p99"),
            "error_count": s["error_count"],
            "errors": s["errors"],
            "verdict": s["verdict"],
            "reasons": s["reasons"],
            "avg_batch_size": (s.get("server") or {}).get("avg_batch_size"),
            "slo_met": (s.get("slo") or {}).get("met"),
        }
        for s in doc["steps"]
    ]


def report(result: Path, profile: Profile) -> dict[str, str]:
    """``mserve report``: Markdown beside the result, and HTML in the full run."""
    written = {"md": str(result.with_suffix(".md"))}
    scenario.mserve_cli(["report", result, "--format", "md", "-o", written["md"]], quiet=True)
    if profile.html:
        written["html"] = str(result.with_suffix(".html"))
        scenario.mserve_cli(["report", result, "-o", written["html"]], quiet=True)
    return written


def check(summary: dict[str, Any]) -> None:
    """Every outcome the scenario promises; what falls short goes to ``summary['problems']``."""
    problems: list[str] = summary["problems"]
    for name, v in summary["variants"].items():
        bound = SERVED_ACCURACY[name]
        if v["accuracy_server"] < bound:
            problems.append(
                f"{name}: accuracy through the server {v['accuracy_server']:.4f} < {bound}"
            )
        for kind in ("sweep", "slo"):
            for s in v[kind]["steps"]:
                at = f"{name} {kind} c={s['concurrency']}"
                if s["throughput_rps"] <= 0:
                    problems.append(f"{at}: no successful request")
                # an SLO probe past the objective may fail requests (a full queue): that is
                # what ends the search; every other step must have none
                if s["error_count"] and (kind == "sweep" or s["slo_met"]):
                    problems.append(f"{at}: {s['error_count']} errors {s['errors']}")
            if not Path(v[kind]["report"]["md"]).is_file():
                problems.append(f"{name} {kind}: no Markdown report")
        if not summary["quick"] and v["slo"]["best_load"] is None:
            problems.append(f"{name}: SLO {v['slo']['objective']} not met even at concurrency 1")


def write_summary(out: Path, summary: dict[str, Any], started: float) -> None:
    """``summary.json``: every figure and check, for the test and for --record."""
    summary["seconds"]["total"] = time.perf_counter() - started
    summary["ok"] = not summary["problems"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def record(summary: dict[str, Any]) -> None:
    """The figures into README.md's block and the Markdown reports into reports/."""
    reports = HERE / "reports"
    reports.mkdir(exist_ok=True)
    for v in summary["variants"].values():
        for kind in ("sweep", "slo"):
            shutil.copyfile(v[kind]["report"]["md"], reports / Path(v[kind]["report"]["md"]).name)
    scenario.update_block(HERE / "README.md", "figures", figures(summary))
    scenario.say(f"recorded the figures in {HERE / 'README.md'} and the reports in {reports}")


def figures(summary: dict[str, Any]) -> str:
    """The README's figures: when and where, then one row per variant."""
    slo = next(iter(summary["variants"].values()))["slo"]["objective"]
    head = [
        "variant", "accuracy via server", "parity", "size KB", "req/s c=1",
        "p50 / p99 ms c=1", "best req/s", "p50 / p99 ms at best", f"req/s at {slo}",
        "batch sizes formed",
    ]  # fmt: skip
    rows = []
    for name, v in summary["variants"].items():
        sweep = [s for s in v["sweep"]["steps"] if not s["error_count"]]
        one = next(s for s in sweep if s["concurrency"] == 1)
        best = max(sweep, key=lambda s: s["throughput_rps"])
        at_slo = "not met"
        if v["slo"]["best_load"] is not None:
            at_slo = f"{v['slo']['best_throughput_rps']:,.0f} (c={v['slo']['best_load']})"
        rows.append(
            [
                f"{name} (`{v['model']}`)",
                round(v["accuracy_server"], 4),
                parity_text(v["parity"]),
                round(v["size_bytes"] / 1024, 1),
                round(one["throughput_rps"]),
                f"{one['p50_ms']:.2f} / {one['p99_ms']:.2f}",
                f"{best['throughput_rps']:,.0f} (c={best['concurrency']})",
                f"{best['p50_ms']:.2f} / {best['p99_ms']:.2f}",
                at_slo,
                batch_text(v),
            ]
        )
    levels = summary["profile"]["concurrency"]
    return "\n\n".join(
        [
            scenario.machine_line(summary["machine"]),
            scenario.markdown_table(head, rows),
            f"Closed loop, V2 binary tensors, one test image per request, concurrency {levels}; "
            f"the server on one core, `mserve bench` on the other. Accuracy on "
            f"{summary['training']['test_rows']} test images; reports in `reports/`.",
        ]
    )


def parity_text(parity: dict[str, Any]) -> str:
    """Parity in a few words: the largest difference (exact) or top-1 and cosine."""
    if parity["standard"] == "exact":
        return f"exact, max abs {parity['max_abs']:.1e}"
    return f"top-1 {parity['top1']:.3f}, cosine {parity['cosine_mean']:.4f}"


def batch_text(v: dict[str, Any]) -> str:
    """The batches the server formed in the sweep: mean size at the lowest and highest load,
    and the largest."""
    steps_ = [s for s in v["sweep"]["steps"] if s["avg_batch_size"] is not None]
    largest = max(map(int, v["batch_sizes"]), default=0)
    if not steps_:
        return f"up to {largest}"
    lo, hi = steps_[0], steps_[-1]
    return (
        f"mean {lo['avg_batch_size']:.1f} at c={lo['concurrency']}, "
        f"{hi['avg_batch_size']:.1f} at c={hi['concurrency']}; up to {largest}"
    )


if __name__ == "__main__":
    sys.exit(main())
